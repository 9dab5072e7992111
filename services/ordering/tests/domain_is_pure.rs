//! The dependency rule of the hexagon, the same as order-history's: the
//! check is read from its test file, so the two services can never hold
//! different rules. `src/domain/` imports no infrastructure crate, not the
//! published language, and not the layers around it.
//!
//! Seen failing here too: with `use sqlx::PgPool;` added to
//! `src/domain/order.rs` in a scratch build, it named that file and line.

#[path = "../../order-history/tests/domain_is_pure.rs"]
mod rule;
