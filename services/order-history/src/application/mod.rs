//! Use cases and the ports they need. Nothing here knows PostgreSQL,
//! RabbitMQ or HTTP: adapters implement the [`ports`] and call the use
//! cases.
//!
//! - [`projection`]: a fact in, the view it changes saved; and what the
//!   non-order facts ask for (a shop renamed, legacy reset, the feed
//!   restarted).
//! - [`queries`]: an order, a member's orders page by page.
//! - [`import`]: rebuilds from the owners' export APIs, full or partial,
//!   resumable, into the live tables or a fresh set swapped in at the end.
//! - [`lag`]: how far behind the facts the views are, per source.

pub mod import;
pub mod lag;
pub mod ports;
pub mod projection;
pub mod queries;
