//! The adapters around the application: HTTP in (`inbound`), the
//! PostgreSQL store, the gateway's and the ACL's clients out
//! (`outbound`), and the translation of the domain's events into the
//! published language (`translate`), and the copy of the catalog that
//! answers pricing without a call upstream (`catalog_copy`, ADR 0023). The
//! domain's words meet the published language in `translate`, and in the
//! two consumers, which read Baedal's facts.

pub mod catalog_copy;
pub mod inbound;
pub mod outbound;
pub mod translate;
pub mod words;
