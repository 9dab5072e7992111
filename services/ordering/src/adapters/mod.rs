//! The adapters around the application: HTTP in (`inbound`), the
//! PostgreSQL store, the gateway's and the ACL's clients out
//! (`outbound`), and the translation of the domain's events into the
//! published language (`translate`, the only module that sees
//! `contracts`).

pub mod inbound;
pub mod outbound;
pub mod translate;
pub mod words;
