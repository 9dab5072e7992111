//! The driving adapters: HTTP in (the legacy contract).

pub mod legacy;
