//! The query façade: the legacy system's shops, menus and members, asked
//! in the new language, and every order as a snapshot for rebuilds.
//!
//! - [`model`]: what the façade answers; the legacy model stops there.
//! - [`cache`]: answers kept between `fresh_for` and the staleness bound.

pub mod cache;
pub mod model;
