//! `Node`: what every request handler and session of one Herald process shares, and the loops
//! that keep its app cache and usage counters in step with the store (see [`sync`]).

pub mod accounts;
mod sync;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::Settings;
use crate::hub::{Hub, RateLimits, Taps};
use crate::tenants::{AppCache, Store, Usage};
use crate::webhooks::Webhooks;

/// One Herald process: settings, the app cache, the hub, the store and the shutdown signal.
#[derive(Debug)]
pub struct Node {
    /// The settings the node started with.
    pub settings: Settings,
    /// Apps by key and id, following the store's revision.
    pub apps: Arc<AppCache>,
    /// Live channels and connections.
    pub hub: Hub,
    /// The tenant store (never used on the handshake, subscribe or trigger path).
    pub store: Store,
    /// Message counts and connection peaks, in memory, flushed to the store in the background.
    pub usage: Arc<Usage>,
    /// Per-app REST rate limiters.
    pub rates: RateLimits,
    /// Bytes of REST bodies buffered before their signature is verified, node-wide
    /// (`Settings::body_buffer_bytes`).
    pub body_budget: crate::budget::BodyBudget,
    /// Webhook endpoints in force and the delivery pipeline's shared state.
    pub webhooks: Arc<Webhooks>,
    /// The dashboard's live console streams.
    pub taps: Arc<Taps>,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for their close frames.
    pub connections: TaskTracker,
    /// This node's membership in a cluster (`HERALD_REDIS_URL`); `None` on a single node.
    pub cluster: Option<Cluster>,
    /// Outgoing email (`HERALD_SMTP_URL`, else the log).
    pub mailer: crate::mail::Mailer,
    /// Self-service sign-ups and password resets (the dashboard's forms).
    pub accounts: accounts::Accounts,
    /// The counters `/metrics` exports beside what it reads from the hub and the usage.
    pub meters: Arc<crate::meters::Meters>,
}

impl crate::cluster::Local for Node {
    fn hub(&self) -> &Hub {
        &self.hub
    }

    fn usage(&self) -> &Usage {
        &self.usage
    }

    fn taps(&self) -> &Taps {
        &self.taps
    }

    fn rates(&self) -> &RateLimits {
        &self.rates
    }

    fn meters(&self) -> &crate::meters::Meters {
        &self.meters
    }

    fn daily_quota(&self, app_id: &str) -> Option<u64> {
        self.apps
            .by_id(app_id)
            .and_then(|app| app.limits.daily_messages())
    }

    fn vacate_delay(&self) -> std::time::Duration {
        self.settings.webhooks.vacate_delay
    }
}

/// The handle handlers receive.
pub type SharedNode = Arc<Node>;

impl Node {
    /// What the webhook pipeline needs of the node, and no more.
    pub fn webhook_context(&self) -> crate::webhooks::Context {
        crate::webhooks::Context {
            store: self.store.clone(),
            apps: self.apps.clone(),
            usage: self.usage.clone(),
            endpoints: self.webhooks.clone(),
            taps: self.taps.clone(),
            settings: crate::config::WebhookSettings {
                // The cluster's state scripts delay `channel_vacated` / `member_removed`.
                delayed_upstream: self.cluster.is_some(),
                ..self.settings.webhooks.clone()
            },
            clock: self.settings.clock.clone(),
            meters: self.meters.clone(),
        }
    }
}
