//! The dependency rule of the hexagon, the same as order-history's: the
//! check is read from its test file, so the two services can never hold
//! different rules. `src/domain/` imports no infrastructure crate, not the
//! published language, and not the layers around it.
//!
//! Until ordering's adapters land the crate depends on no infrastructure
//! crate at all, so a violation would not even compile; the check earns
//! its keep when they do (in order-history it was seen failing, naming the
//! file and line of a `use sqlx::PgPool;` added to the domain).

#[path = "../../order-history/tests/domain_is_pure.rs"]
mod rule;
