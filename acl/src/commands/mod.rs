//! Commands to legacy: where a new service must act on an order the
//! monolith owns (a member now served by ordering cancels an order placed
//! earlier on Baedal), the ACL takes the command in the new language and
//! carries it out through Baedal's own API, never by writing its tables.
//! Who owns which order: docs/adr/0015-order-ownership.md.
//!
//! Pattern: anti-corruption layer, commands to legacy —
//! docs/patterns/anti-corruption-layer.md#commands-to-legacy.
//!
//! | route | body | answers |
//! |---|---|---|
//! | `POST /v1/orders/{order_no}/cancel` | `{"member_id": 7}` | `200` the order as the cancel left it (its state, and `order`: the whole order as legacy holds it, the export's shape); `404 unknown-order`; `409 order-not-cancellable` (with `order_status`); `409 order-owned-by-ordering`; `422` bad input; `502`/`503`/`504` when the monolith fails, is away or is slow |
//! | `POST /v1/ordering/orders/{order_no}/cancel` | `{"reason": "member" \| "no_decision", "payment_id": "…"}` | `200 {"outcome": "cancelled", "reason": …}` with the reason that was applied (the first cancel's, when asked again); `409 order-decided` (with `order_status`, Baedal's code) when the shop or the member decided there first; `404 unknown-order` for an order not placed in ordering; `422` bad input; `503` when the legacy database is away |
//!
//! The second is ordering's own cancel of a paid order it owns (ADR 0020):
//! not through Baedal's API (which would refund), but applied to Baedal's
//! rows as sync-back applies ordering's facts, under the row lock Baedal's
//! board decides under, and answered at once, so ordering refunds only a
//! cancel that won.

pub mod monolith;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use chassis::Problem;
use chassis::http::Json;
use chassis::trace_context::TraceContext;
use serde::Deserialize;
use sqlx::PgPool;

pub use monolith::{Baedal, CommandError, MonolithSettings, OrderState};

use crate::syncback::{self, order_numbers};

#[derive(Debug, Clone)]
pub struct CommandState {
    pub monolith: Baedal,
    /// The legacy database as the `acl` role: who placed an order.
    pub legacy: PgPool,
}

pub fn router(state: CommandState) -> Router {
    Router::new()
        .route("/v1/orders/{order_no}/cancel", post(cancel))
        .route("/v1/ordering/orders/{order_no}/cancel", post(cancel_own))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelOwn {
    reason: OwnReason,
    payment_id: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OwnReason {
    Member,
    NoDecision,
}

async fn cancel_own(
    State(state): State<CommandState>,
    Path(order_no): Path<String>,
    Json(command): Json<CancelOwn>,
) -> Result<Json<serde_json::Value>, Problem> {
    if !order_numbers::is_well_formed(&order_no) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-order-number",
            "Invalid order number",
        )
        .with_detail("An order number is YYYYMMDD-NNNNNN."));
    }
    if command.payment_id.is_empty() || command.payment_id.len() > 64 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-payment-id",
            "Invalid payment id",
        )
        .with_detail(
            "payment_id is the gateway's id of the order's payment: 1 to 64 characters.",
        ));
    }
    let reason = match command.reason {
        OwnReason::Member => contracts::ordering::CancelReason::Member,
        OwnReason::NoDecision => contracts::ordering::CancelReason::NoDecision,
    };
    let unavailable = |error: &dyn std::fmt::Display| {
        tracing::warn!(%error, order_no, "ordering's cancel not applied");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "legacy-unavailable",
            "The legacy database is unavailable",
        )
        .with_detail("The cancel was not applied; ask again shortly.")
    };
    let mut tx = state.legacy.begin().await.map_err(|e| unavailable(&e))?;
    let outcome = syncback::apply::cancel_own(&mut tx, &order_no, reason, &command.payment_id)
        .await
        .map_err(|e| unavailable(&e))?;
    tx.commit().await.map_err(|e| unavailable(&e))?;
    match outcome {
        syncback::apply::OwnCancel::Cancelled(applied) => {
            tracing::info!(order_no, ?applied, "ordering's cancel applied to the legacy order");
            let applied = match applied {
                contracts::ordering::CancelReason::NoDecision => "no_decision",
                _ => "member",
            };
            Ok(Json(
                serde_json::json!({"outcome": "cancelled", "reason": applied}),
            ))
        }
        syncback::apply::OwnCancel::Decided(status) => Err(Problem::new(
            StatusCode::CONFLICT,
            "order-decided",
            "Decided on the legacy side first",
        )
        .with_detail("The shop or the member decided on the monolith first; order_status is its status code there. Nothing was written.")
        .with_extension("order_status", status)),
        syncback::apply::OwnCancel::Unknown => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-order",
            "Unknown order",
        )
        .with_detail(format!("Order {order_no} was not placed in the ordering service."))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelOrder {
    member_id: i64,
}

async fn cancel(
    State(state): State<CommandState>,
    Extension(trace): Extension<TraceContext>,
    Path(order_no): Path<String>,
    Json(command): Json<CancelOrder>,
) -> Result<Json<Cancelled>, Problem> {
    // Checked before anything else: the number goes into the monolith's path.
    if !order_numbers::is_well_formed(&order_no) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-order-number",
            "Invalid order number",
        )
        .with_detail("An order number is YYYYMMDD-NNNNNN."));
    }
    if command.member_id <= 0 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-member",
            "Invalid member",
        )
        .with_detail("member_id is a positive integer."));
    }
    let owned_by_ordering = syncback::placed_by_ordering(&state.legacy, &order_no)
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot tell who owns the order");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "legacy-unavailable",
                "The legacy database is unavailable",
            )
            .with_detail("Who owns the order could not be read; ask again shortly.")
        })?;
    if owned_by_ordering {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "order-owned-by-ordering",
            "Order owned by the ordering service",
        )
        .with_detail(format!(
            "Order {order_no} was placed in the ordering service, which owns it: cancel it there."
        )));
    }
    match state
        .monolith
        .cancel_order(&trace, &order_no, command.member_id)
        .await
    {
        Ok(state_after) => {
            // The whole order as the cancel left it, for a caller that
            // must show it (ordering answers Baedal's contract with it).
            let order = crate::facade::legacy::order(&state.legacy, &order_no)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, order_no, "the cancelled order could not be read back");
                    None
                });
            Ok(Json(Cancelled {
                state: state_after,
                order,
            }))
        }
        Err(error) => Err(problem(&order_no, command.member_id, error)),
    }
}

/// The answer to a cancel carried out: the order's state in the new
/// language, and (added later, so optional) the whole order as legacy now
/// holds it.
#[derive(Debug, serde::Serialize)]
struct Cancelled {
    #[serde(flatten)]
    state: OrderState,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<contracts::legacy::OrderSnapshot>,
}

/// The HTTP answer for a command that did not happen.
fn problem(order_no: &str, member_id: i64, error: CommandError) -> Problem {
    match error {
        CommandError::UnknownOrder => Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-order",
            "Unknown order",
        )
        .with_detail(format!("Member {member_id} has no order {order_no}.")),
        CommandError::NotAllowed { status } => {
            let problem = Problem::new(
                StatusCode::CONFLICT,
                "order-not-cancellable",
                "Order cannot be cancelled",
            )
            .with_detail(
                "Only an order the shop has not accepted can be cancelled; order_status says where it is.",
            );
            match status {
                Some(status) => problem.with_extension("order_status", status),
                None => problem,
            }
        }
        CommandError::TimedOut => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "monolith-timeout",
            "The monolith did not answer in time",
        )
        .with_detail(
            "The cancel may or may not have happened. Ask again: an order already cancelled answers 409 with order_status cancelled.",
        ),
        CommandError::Unavailable(reason) => {
            tracing::warn!(%reason, "command not carried out");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "monolith-unavailable",
                "The monolith is unavailable",
            )
            .with_detail(
                "Ask again shortly: an order already cancelled answers 409 with order_status cancelled.",
            )
        }
        error @ (CommandError::Unexpected(_) | CommandError::Untranslatable(_)) => {
            tracing::error!(%error, order_no, "the monolith's answer to a command");
            Problem::new(
                StatusCode::BAD_GATEWAY,
                "monolith-failed",
                "The monolith failed the command",
            )
            .with_detail(error.to_string())
        }
    }
}
