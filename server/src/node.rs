//! `Node`: what every request handler and session of one Herald process shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::RateLimits;
use crate::config::Settings;
use crate::hub::Hub;
use crate::tenants::{AppCache, Store, Usage};
use crate::webhooks::Webhooks;

/// One Herald process: settings, the app cache, the hub, the store and the shutdown signal.
#[derive(Debug)]
pub struct Node {
    /// The settings the node started with.
    pub settings: Settings,
    /// Apps by key and id, following the store's revision.
    pub apps: AppCache,
    /// Live channels and connections.
    pub hub: Hub,
    /// The tenant store (never used on the handshake, subscribe or trigger path).
    pub store: Store,
    /// Message counts and connection peaks, in memory, flushed to the store in the background.
    pub usage: Usage,
    /// Per-app REST rate limiters.
    pub rates: RateLimits,
    /// Bytes of REST bodies buffered before their signature is verified, node-wide
    /// (`Settings::body_buffer_bytes`).
    pub body_budget: crate::budget::BodyBudget,
    /// Webhook endpoints in force and the delivery pipeline's shared state.
    pub webhooks: Webhooks,
    /// The dashboard's live console streams.
    pub taps: crate::admin::Taps,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for their close frames.
    pub connections: TaskTracker,
}

/// The handle handlers receive.
pub type SharedNode = Arc<Node>;
