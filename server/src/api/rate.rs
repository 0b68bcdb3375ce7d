//! The per-app REST rate limiters live in the hub, next to the per-app usage state
//! (design invariant 10); the api keeps its old path.

pub use crate::hub::{Budget, RateLimits};
