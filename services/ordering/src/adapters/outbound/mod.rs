pub mod acl;
pub mod payment_gateway;
pub mod postgres;
