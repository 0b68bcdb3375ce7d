//! Transports: the WebSocket upgrade and its refusals (`upgrade.rs`), the per-connection loop
//! (`ws.rs`), pusher-js's HTTP fallbacks (`xhr/`), the admission both share (`admit.rs`) and the
//! protocol logic they feed (`session.rs`). The Mercure hub's SSE
//! subscribers and publishes are in `mercure/`.

mod admit;
pub mod deferral;
pub mod mercure;
pub mod session;
pub mod upgrade;
pub mod ws;
pub mod xhr;

#[cfg(test)]
mod session_tests;
#[cfg(test)]
pub(crate) mod testing;
