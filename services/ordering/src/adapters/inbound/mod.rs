//! The driving adapters: HTTP in (Baedal's contract, `legacy`; the
//! service's own API, `native`), and Baedal's facts in (`messaging`).

pub mod legacy;
pub mod messaging;
pub mod native;
