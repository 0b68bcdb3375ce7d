//! Transports: the WebSocket upgrade and its refusals (`upgrade.rs`), the per-connection loop
//! (`ws.rs`) and the protocol logic it feeds (`session.rs`). Later issues add the pusher-js HTTP
//! fallbacks and SSE beside them, reusing the session logic.

mod admit;
pub mod deferral;
pub mod session;
pub mod upgrade;
pub mod ws;
pub mod xhr;

#[cfg(test)]
mod session_tests;
#[cfg(test)]
pub(crate) mod testing;
