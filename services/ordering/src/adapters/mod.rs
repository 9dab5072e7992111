//! The adapters around the application. So far the outbound ones: the
//! PostgreSQL order store, and the translation of the domain's events
//! into the published language (`translate`, the only module that sees
//! `contracts`).

pub mod outbound;
pub mod translate;
