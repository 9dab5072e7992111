//! Cancels decided in ordering (ADR 0020), on real parts: ordering as
//! `make up` runs it, Baedal with its board, the ACL with sync-back and
//! its cancel command, the payment sandbox. The shop's deadline is driven
//! by calling the saga's sweeper with a clock past it; a crash between
//! Baedal taking the cancel and ordering recording it is made by stopping
//! there, as after `kill -9`.

#[path = "../../../acl/tests/support/mod.rs"]
mod legacy;
mod running;
mod support;

use std::time::Duration;

use chassis::http_client::{ClientMetrics, DependencySettings};
use legacy::{Rig, eventually};
use ordering::adapters::outbound::acl::AclUpstream;
use ordering::adapters::outbound::payment_gateway::PaymentGateway;
use ordering::adapters::outbound::postgres::PgOrders;
use ordering::application::place::{Deadlines, Placing, Swept, to_micros};
use ordering::application::ports::{LegacyCancel, Orders, Saga, Step, Upstream};
use ordering::domain::{CancelReason, OrderNo, OrderStatus, Refund};
use running::RunningOrdering;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use time::OffsetDateTime;

struct World {
    rig: Rig,
    acl: legacy::app::RunningAcl,
    ordering: RunningOrdering,
    orders: PgOrders,
    upstream: AclUpstream,
    /// The saga on ordering's store, swept by hand with the clock a test
    /// gives it (the running service's own sweeper uses the real clock and
    /// a ten-minute deadline, which no test reaches).
    placing: Placing<PgOrders, PaymentGateway, AclUpstream>,
}

impl World {
    async fn start(options: &PgConnectOptions) -> Self {
        let rig = Rig::start(options).await;
        let acl = rig.start_acl(rig.acl_settings()).await;
        // The saga is swept by hand here, and the gateway given time: a
        // slow sandbox holds a charge in flight while the test acts.
        let ordering = RunningOrdering::start_with(
            &rig,
            options,
            &acl.url,
            running::Tuning {
                payment_timeout_ms: 8_000,
                sweep_interval_ms: 3_600_000,
                ..running::Tuning::default()
            },
        )
        .await;
        let orders = PgOrders::new(ordering.pool().clone());
        let upstream = AclUpstream::new(
            &acl.url,
            DependencySettings::default(),
            ClientMetrics::default(),
        )
        .expect("an ACL client");
        let payments = PaymentGateway::new(
            &rig.pg_url,
            legacy::API_KEY.to_owned().into(),
            DependencySettings::default(),
            ClientMetrics::default(),
        )
        .expect("a gateway client");
        let placing = Placing::new(
            orders.clone(),
            payments,
            upstream.clone(),
            Deadlines::default(),
        );
        Self {
            rig,
            acl,
            ordering,
            orders,
            upstream,
            placing,
        }
    }

    async fn finish(self) {
        self.ordering.stop(&self.rig).await;
        self.acl.stop().await;
        self.rig.finish().await;
    }

    /// Member 1's order at shop 1, placed with ordering and on Baedal's
    /// board; its number and total.
    async fn placed(&self) -> (OrderNo, i64) {
        let (order_no, total) = self.ordering.place_on_the_board(&self.rig).await;
        (OrderNo::parse(&order_no).expect("a number"), total)
    }

    async fn stored(&self, order_no: &OrderNo) -> ordering::application::ports::Stored {
        self.orders
            .get(order_no)
            .await
            .expect("read")
            .expect("found")
    }

    async fn baedal(&self, path: &str) -> Value {
        self.rig.get(path).await.json().await.expect("JSON")
    }

    /// Baedal's view of the order: (status, cancel reason, payment status).
    async fn on_baedal(&self, order_no: &OrderNo) -> (Value, Value, Value) {
        let view = self.baedal(&format!("/api/orders/{order_no}")).await;
        (
            view["status"].clone(),
            view["cancel_reason"].clone(),
            view["payment"]["status"].clone(),
        )
    }

    async fn accept_on_the_board(&self, order_no: &OrderNo) -> u16 {
        self.rig
            .post(
                &format!("/api/shops/1/orders/{order_no}/accept"),
                &json!({}),
            )
            .await
            .status()
            .as_u16()
    }

    async fn ledger(&self, order_no: &OrderNo) -> Vec<(String, i64)> {
        running::ledger(&self.rig, order_no.as_str()).await
    }

    async fn published(&self, order_no: &OrderNo) -> Vec<String> {
        running::published(self.ordering.pool(), order_no.as_str()).await
    }
}

fn past_the_deadline() -> OffsetDateTime {
    to_micros(OffsetDateTime::now_utc()) + Deadlines::default().decision + Duration::from_secs(1)
}

#[sqlx::test(migrations = false)]
async fn a_shop_that_never_decides_is_cancelled_at_the_deadline_and_refunded_once(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let (order_no, total) = world.placed().await;

    let swept = world
        .placing
        .sweep(past_the_deadline(), 10)
        .await
        .expect("swept");
    assert_eq!(swept, [(order_no.clone(), Swept::Moved(Step::Done))]);
    let stored = world.stored(&order_no).await;
    assert_eq!(
        (
            stored.value.status(),
            stored.value.cancel_reason(),
            stored.value.refund(),
            stored.saga.step
        ),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::NoDecision),
            Refund::Refunded,
            Step::Done
        )
    );
    assert_eq!(
        world.on_baedal(&order_no).await,
        (json!("CANCELLED"), json!("NO_DECISION"), json!("RFND")),
        "cancelled on Baedal too, its payment a refund ordering made"
    );
    assert_eq!(world.accept_on_the_board(&order_no).await, 409, "too late");
    assert_eq!(
        world.ledger(&order_no).await,
        [("refunded".to_owned(), total)],
        "one charge, given back once"
    );
    assert_eq!(
        world.published(&order_no).await,
        [
            "ordering.order.placed.v1",
            "ordering.order.paid.v1",
            "ordering.order.cancelled.v1",
            "ordering.order.refunded.v1",
        ]
    );
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn the_shops_acceptance_before_the_deadline_wins_over_its_cancel(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let (order_no, total) = world.placed().await;
    assert_eq!(world.accept_on_the_board(&order_no).await, 200);

    // Baedal's row took the acceptance: the deadline's cancel loses there.
    let stored = world.stored(&order_no).await;
    assert_eq!(
        world
            .upstream
            .cancel_on_legacy(
                &order_no,
                CancelReason::NoDecision,
                stored.value.payment_id().expect("paid")
            )
            .await,
        Ok(LegacyCancel::Decided(OrderStatus::Accepted))
    );
    // Whether the fact came first or the sweeper asked, the order ends
    // accepted and charged.
    world
        .placing
        .sweep(past_the_deadline(), 10)
        .await
        .expect("swept");
    eventually("ordering follows the acceptance", || async {
        let stored = world.orders.get(&order_no).await.expect("read");
        stored.is_some_and(|s| s.value.status() == OrderStatus::Accepted && s.saga == Saga::DONE)
    })
    .await;
    assert_eq!(
        world.on_baedal(&order_no).await,
        (json!("ACCEPTED"), Value::Null, json!("AUTH"))
    );
    assert_eq!(
        world.ledger(&order_no).await,
        [("approved".to_owned(), total)],
        "charged, nothing given back"
    );
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_members_cancel_whose_answer_was_lost_is_asked_again_and_refunded_once(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let (order_no, total) = world.placed().await;
    // What a member's cancel does before it asks Baedal's side: the intent
    // kept as the saga's step, due once the answer should have come.
    let now = to_micros(OffsetDateTime::now_utc());
    let stored = world.stored(&order_no).await;
    let cancelling = Saga::at(Step::Cancelling, now + Duration::from_secs(5));
    world
        .orders
        .save(&stored.value, stored.version, &[], &cancelling)
        .await
        .expect("saved");
    // Baedal's side takes the cancel; the answer never reaches ordering.
    assert_eq!(
        world
            .upstream
            .cancel_on_legacy(
                &order_no,
                CancelReason::Member,
                stored.value.payment_id().expect("paid")
            )
            .await,
        Ok(LegacyCancel::Cancelled(CancelReason::Member))
    );
    // The shop's board is closed to it already.
    assert_eq!(world.accept_on_the_board(&order_no).await, 409);

    let swept = world
        .placing
        .sweep(now + Duration::from_secs(6), 10)
        .await
        .expect("swept");
    assert_eq!(swept, [(order_no.clone(), Swept::Moved(Step::Done))]);
    let stored = world.stored(&order_no).await;
    assert_eq!(
        (
            stored.value.status(),
            stored.value.cancel_reason(),
            stored.value.refund()
        ),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::Member),
            Refund::Refunded
        )
    );
    assert_eq!(
        world.on_baedal(&order_no).await,
        (json!("CANCELLED"), json!("MEMBER"), json!("RFND"))
    );
    assert_eq!(
        world.ledger(&order_no).await,
        [("refunded".to_owned(), total)],
        "one charge, given back once"
    );
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_members_cancel_after_the_deadlines_cancel_won_is_refunded_once_for_the_deadline(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let (order_no, total) = world.placed().await;
    let stored = world.stored(&order_no).await;
    // The deadline's cancel took Baedal's row; the sweeper died before it
    // recorded the answer.
    assert_eq!(
        world
            .upstream
            .cancel_on_legacy(
                &order_no,
                CancelReason::NoDecision,
                stored.value.payment_id().expect("paid")
            )
            .await,
        Ok(LegacyCancel::Cancelled(CancelReason::NoDecision))
    );
    // The member cancels now: Baedal's side says the deadline's cancel
    // won, so ordering settles that one, and tells the member the order
    // is cancelled already (Baedal's answer to a second cancel).
    let response = world
        .rig
        .http
        .post(format!(
            "{}/api/orders/{order_no}/cancel",
            world.ordering.url
        ))
        .json(&json!({"member_id": 1}))
        .send()
        .await
        .expect("ordering answers");
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.expect("JSON");
    assert_eq!(problem["order_status"], "CANCELLED");
    let stored = world.stored(&order_no).await;
    assert_eq!(
        (
            stored.value.status(),
            stored.value.cancel_reason(),
            stored.value.refund(),
            stored.saga
        ),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::NoDecision),
            Refund::Refunded,
            Saga::DONE
        )
    );
    assert_eq!(
        world.on_baedal(&order_no).await,
        (json!("CANCELLED"), json!("NO_DECISION"), json!("RFND"))
    );
    assert_eq!(
        world.ledger(&order_no).await,
        [("refunded".to_owned(), total)],
        "one charge, given back once"
    );
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn a_cancel_while_the_charge_is_in_flight_releases_the_charge_once(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    // A slow gateway: the charge is taken, its answer comes late.
    let behaviour = world
        .rig
        .http
        .put(format!("{}/admin/behaviour", world.rig.pg_url))
        .bearer_auth("admin")
        .json(&json!({"latency_ms": 4_000}))
        .send()
        .await
        .expect("the sandbox answers");
    assert!(behaviour.status().is_success());
    let http = world.rig.http.clone();
    let url = world.ordering.url.clone();
    let placing = tokio::spawn(async move {
        http.post(format!("{url}/api/orders"))
            .json(&json!({"member_id": 1, "shop_id": 1, "items": [{"menu_id": 1, "quantity": 2}, {"menu_id": 2, "quantity": 1}]}))
            .send()
            .await
            .expect("ordering answers")
    });
    // The order is stored, waiting for the gateway's answer.
    let waiting = || async {
        sqlx::query_scalar::<_, String>("SELECT order_no FROM orders WHERE status = 'placed'")
            .fetch_optional(world.ordering.pool())
            .await
            .expect("read")
    };
    eventually("the order stored, its charge asked for", || async {
        waiting().await.is_some()
    })
    .await;
    let order_no: String = waiting().await.expect("a number");
    let cancelled = world
        .rig
        .http
        .post(format!(
            "{}/api/orders/{order_no}/cancel",
            world.ordering.url
        ))
        .json(&json!({"member_id": 1}))
        .send()
        .await
        .expect("ordering answers");
    assert_eq!(cancelled.status(), 200);
    let view: Value = cancelled.json().await.expect("JSON");
    assert_eq!(
        (
            &view["status"],
            &view["cancel_reason"],
            &view["payment"]["status"]
        ),
        (&json!("CANCELLED"), &json!("MEMBER"), &json!("REQ")),
        "as Baedal answers a cancel of an order still being paid"
    );
    // The charge's answer arrives for a cancelled order.
    let placed = placing.await.expect("the request ran");
    assert_eq!(placed.status(), 201);
    let order_no = OrderNo::parse(&order_no).expect("a number");
    let stored = world.stored(&order_no).await;
    assert_eq!(
        (
            stored.value.status(),
            stored.value.cancel_reason(),
            stored.value.refund(),
            stored.saga
        ),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::Member),
            Refund::Refunded,
            Saga::DONE
        )
    );
    let total = stored.value.total().amount();
    assert_eq!(
        world.ledger(&order_no).await,
        [("refunded".to_owned(), total)],
        "the late charge released once"
    );
    world.finish().await;
}

#[sqlx::test(migrations = false)]
async fn the_service_shows_an_order_with_where_its_saga_stands(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let (order_no, total) = world.placed().await;
    let get = |path: String| {
        let http = world.rig.http.clone();
        let url = format!("{}{path}", world.ordering.url);
        async move { http.get(url).send().await.expect("ordering answers") }
    };

    let response = get(format!("/v1/orders/{order_no}")).await;
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.expect("JSON");
    assert_eq!(
        (
            &view["status"],
            &view["refund"],
            &view["saga"]["step"],
            &view["total_amount"],
            &view["cancel_reason"]
        ),
        (
            &json!("paid"),
            &json!("not_owed"),
            &json!("awaiting_decision"),
            &json!(total),
            &Value::Null
        )
    );
    assert!(view["payment_id"].is_string() && view["saga"]["due"].is_string());

    // Every field the document requires is there.
    let document: Value = get("/v1/openapi.json".into())
        .await
        .json()
        .await
        .expect("the document is JSON");
    let mut paths: Vec<&str> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/v1/openapi.json", "/v1/orders/{order_no}"]);
    for field in document["components"]["schemas"]["Order"]["required"]
        .as_array()
        .expect("required fields")
    {
        let field = field.as_str().expect("a name");
        assert!(view.get(field).is_some(), "{field} is missing: {view}");
    }

    for (path, status, kind) in [
        ("/v1/orders/abc", 400, "/problems/invalid-order-number"),
        ("/v1/orders/20991231-999999", 404, "/problems/not-found"),
    ] {
        let response = get(path.into()).await;
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let problem: Value = response.json().await.expect("JSON");
        assert_eq!(problem["type"], kind, "{path}");
    }
    world.finish().await;
}

/// The ACL as a member's cancel meets it when the answer is lost on the
/// way back: every command is carried out, and no answer arrives.
#[derive(Clone)]
struct LosesAnswers(AclUpstream);

impl Upstream for LosesAnswers {
    async fn shop(
        &self,
        shop_id: i64,
    ) -> Result<Option<ordering::domain::Shop>, ordering::application::ports::UpstreamUnavailable>
    {
        self.0.shop(shop_id).await
    }

    async fn menu(
        &self,
        shop_id: i64,
    ) -> Result<Vec<ordering::domain::MenuItem>, ordering::application::ports::UpstreamUnavailable>
    {
        self.0.menu(shop_id).await
    }

    async fn member_address(
        &self,
        member_id: i64,
    ) -> Result<Option<String>, ordering::application::ports::UpstreamUnavailable> {
        self.0.member_address(member_id).await
    }

    async fn next_order_no(
        &self,
    ) -> Result<OrderNo, ordering::application::ports::UpstreamUnavailable> {
        self.0.next_order_no().await
    }

    async fn cancel_legacy_order(
        &self,
        order_no: &OrderNo,
        member_id: i64,
    ) -> Result<
        ordering::application::ports::LegacyOrderCancel,
        ordering::application::ports::UpstreamUnavailable,
    > {
        self.0.cancel_legacy_order(order_no, member_id).await
    }

    async fn cancel_on_legacy(
        &self,
        order_no: &OrderNo,
        reason: CancelReason,
        payment_id: &str,
    ) -> Result<LegacyCancel, ordering::application::ports::UpstreamUnavailable> {
        let _ = self.0.cancel_on_legacy(order_no, reason, payment_id).await;
        Err(ordering::application::ports::UpstreamUnavailable(
            "the answer was lost".into(),
        ))
    }
}

#[sqlx::test(migrations = false)]
async fn a_members_cancel_taken_on_baedal_whose_answer_was_lost_is_completed_by_the_sweeper(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let world = World::start(&options).await;
    let (order_no, total) = world.placed().await;
    let payments = PaymentGateway::new(
        &world.rig.pg_url,
        legacy::API_KEY.to_owned().into(),
        DependencySettings::default(),
        ClientMetrics::default(),
    )
    .expect("a gateway client");
    let losing = Placing::new(
        world.orders.clone(),
        payments,
        LosesAnswers(world.upstream.clone()),
        Deadlines::default(),
    );
    let now = to_micros(OffsetDateTime::now_utc());
    let answer = losing.cancel_by_member(&order_no, 1, now).await;
    assert!(
        matches!(
            answer,
            Err(ordering::application::place::PlaceError::Upstream(_))
        ),
        "the member is told the cancel is unconfirmed: {answer:?}"
    );
    // Baedal's row took it; ordering kept the intent.
    assert_eq!(world.accept_on_the_board(&order_no).await, 409);
    let stored = world.stored(&order_no).await;
    assert_eq!(
        (stored.value.status(), stored.saga.step),
        (OrderStatus::Paid, Step::Cancelling)
    );

    // Once due, the sweeper asks again, is told the cancel won, refunds.
    let due = stored.saga.due.expect("a due time");
    let swept = world
        .placing
        .sweep(due + Duration::from_secs(1), 10)
        .await
        .expect("swept");
    assert_eq!(swept, [(order_no.clone(), Swept::Moved(Step::Done))]);
    let stored = world.stored(&order_no).await;
    assert_eq!(
        (
            stored.value.status(),
            stored.value.cancel_reason(),
            stored.value.refund()
        ),
        (
            OrderStatus::Cancelled,
            Some(CancelReason::Member),
            Refund::Refunded
        )
    );
    assert_eq!(
        world.ledger(&order_no).await,
        [("refunded".to_owned(), total)],
        "one charge, given back once"
    );
    world.finish().await;
}
