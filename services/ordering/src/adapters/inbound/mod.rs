//! The driving adapters: HTTP in (the legacy contract), and Baedal's
//! facts in (`messaging`).

pub mod legacy;
pub mod messaging;
