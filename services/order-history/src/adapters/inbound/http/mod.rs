//! HTTP in: the legacy contract's read routes ([`legacy`]), the service's
//! own routes under `/v1` ([`native`]), and the admin plane ([`admin`]).

pub mod admin;
pub mod legacy;
pub mod native;

use axum::http::StatusCode;
use chassis::Problem;

use crate::adapters::outbound::acl::AclOwner;
use crate::adapters::outbound::postgres::{PgImportJobs, PgReader};
use crate::application::lag::Lag;
use crate::application::ports::StoreError;
use crate::application::queries::{MAX_PAGE_SIZE, QueryError};

/// What the routes share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub reader: PgReader,
    pub owner: AclOwner,
    pub jobs: PgImportJobs,
    pub lag: Lag,
}

/// A query's failure as the legacy contract says it (Baedal's problem
/// types, titles and details).
pub fn query_problem(error: &QueryError) -> Problem {
    match error {
        QueryError::UnknownOrder(order_no) => {
            Problem::new(StatusCode::NOT_FOUND, "unknown-order", "Unknown order")
                .with_detail(format!("There is no order {order_no}."))
        }
        QueryError::UnknownMember(member_id) => {
            Problem::new(StatusCode::NOT_FOUND, "unknown-member", "Unknown member")
                .with_detail(format!("There is no member {member_id}."))
        }
        QueryError::InvalidPage => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-page",
            "Invalid page",
        )
        .with_detail(format!("page starts at 1; size is 1 to {MAX_PAGE_SIZE}.")),
        QueryError::Store(error) => store_problem(error),
        QueryError::Owner(error) => {
            tracing::warn!(%error, "the ACL could not say whether a member exists");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "owner-unavailable",
                "The owner of the data is unavailable",
            )
            .with_detail("Whether this member exists cannot be told now; try again shortly.")
        }
    }
}

/// The store failed: 503 when it is away, 500 otherwise (logged).
pub fn store_problem(error: &StoreError) -> Problem {
    match error {
        StoreError::Unavailable(_) | StoreError::Conflict(_) => {
            tracing::warn!(%error, "the views are unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "The order history is unavailable",
            )
            .with_detail("Try again shortly.")
        }
        StoreError::Failed(_) => Problem::internal(error),
    }
}
