//! Herald: a self-hostable, multi-tenant server for the Pusher Channels protocol.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of modules and their invariants.

pub mod admin;
pub mod api;
pub mod auth;
pub mod budget;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod locks;
pub mod mail;
pub mod meters;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod protocol;
pub mod serve;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod tenants;
pub mod tls;
pub mod transport;
pub mod webhooks;
