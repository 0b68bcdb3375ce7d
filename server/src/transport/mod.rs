//! Transports: the WebSocket endpoint (`ws.rs`) and the per-connection loop (`session.rs`).
//! Later issues add the pusher-js HTTP fallbacks and SSE beside them, reusing the session logic.

pub mod session;
pub mod ws;
