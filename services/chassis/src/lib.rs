//! The microservice chassis: the building blocks every component of the kit
//! shares, written once so that each service reads the same way.
//!
//! Pattern: microservice chassis — `docs/patterns/microservice-chassis.md`.
//!
//! Where to start reading:
//!
//! - [`app`]: the [`Application`] skeleton (`build` → `port` →
//!   `run_until_stopped`), the shape of every `main.rs`.
//! - [`http`]: the standard HTTP surface a component gets for free — request
//!   ids, trace context, access log, metrics, health endpoints and
//!   `application/problem+json` errors — wrapped around the component's own
//!   routes by [`http::Service`].
//! - [`config`]: layered settings (defaults → optional file → environment).
//! - [`telemetry`]: `tracing` output, pretty or JSON; [`trace_context`]: the
//!   W3C `traceparent` header.
//! - [`health`]: readiness checks, and [`db`] for the PostgreSQL pool and its
//!   check.
//! - [`messaging`]: RabbitMQ topology, the transactional outbox and its
//!   relay, the idempotent consumer with retries and dead letters.
//! - [`http_client`]: calls to other components and third parties with a
//!   timeout, a bulkhead, safe retries and a fallback hook, behind the
//!   circuit breaker of [`breaker`] (which the strangler uses too).
//! - [`cache`]: answers kept for a while and dropped when the change feed
//!   says they changed (the ACL's façade and ordering's catalog copy).
//!
//! The monolith does not use the chassis on purpose: it is the legacy system.

pub mod app;
pub mod breaker;
pub mod cache;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod http_client;
pub mod messaging;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod trace_context;

pub use app::Application;
pub use http::problem::Problem;
