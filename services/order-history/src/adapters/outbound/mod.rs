//! Driven adapters: the store (PostgreSQL) and the owner of legacy's
//! orders (the ACL's HTTP API).

pub mod acl;
pub mod postgres;
