//! Keeping the node in step with the store: the app cache follows the store's revision (polled,
//! and refreshed at once after a write made here), connections of disabled or deleted apps and of
//! expired keys are closed, and usage counters are written in the background and at shutdown.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::{Node, SharedNode};
use crate::protocol::CloseCode;
use crate::tenants::{AppChange, Dependency, StoreError};

/// How often expired cache-channel events are dropped.
const CACHE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often expired dashboard sessions and audit entries past their retention are deleted from
/// the store (every node does it; starting a session and finding an expired one delete them
/// too).
const SESSION_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

/// How long the shutdown flush waits before trying again after the store refused it.
const FINAL_FLUSH_RETRY: Duration = Duration::from_millis(250);

impl Node {
    /// Reloads the app cache when the store's revision moved, and closes the sockets of apps
    /// that were disabled or deleted.
    pub async fn refresh_apps(&self) -> Result<(), StoreError> {
        let revision = self.store.revision().await?;
        if self.apps.revision() == Some(revision) {
            return Ok(());
        }
        let (revision, apps) = self.store.snapshot().await?;
        let webhooks = self.store.list_webhooks(None).await?;
        for (app_id, mask) in self.webhooks.replace(webhooks) {
            self.hub.set_interest(&app_id, mask);
        }
        self.webhooks.rescan();
        // The caps on what each app's publishes keep in memory (cache channels and bytes).
        for app in &apps {
            self.hub.set_limits(&app.id, &app.limits);
        }
        for change in self
            .apps
            .replace(revision, apps, self.settings.clock.now_seconds())
        {
            let (app_id, code) = match &change {
                AppChange::Disabled(id) => (id, CloseCode::AppDisabled),
                AppChange::Deleted(id) => (id, CloseCode::AppDoesNotExist),
                AppChange::KeysRevoked(id, keys) => {
                    if let Some(app_hub) = self.hub.existing_app(id) {
                        let closed: usize = keys.iter().map(|k| app_hub.close_key(k)).sum();
                        tracing::info!(app_id = %id, closed, "closed the connections of revoked keys");
                    }
                    continue;
                }
                AppChange::MercureAuthChanged(id) => {
                    // The Mercure subscribers are the app's connections without a Pusher key.
                    if let Some(app_hub) = self.hub.existing_app(id) {
                        let closed = app_hub.close_key("");
                        tracing::info!(app_id = %id, closed, "ended the Mercure streams: the app's Mercure authorization changed");
                    }
                    continue;
                }
            };
            tracing::info!(app_id = %app_id, ?change, "closing the app's connections");
            if matches!(change, AppChange::Deleted(_)) {
                self.usage.forget(app_id);
                self.rates.retain(|id| id != app_id.as_str());
            }
            if let Some(app_hub) = self.hub.existing_app(app_id) {
                app_hub.close_all(code);
            }
        }
        Ok(())
    }

    /// Follows the store until shutdown, every `revision_poll`: refreshes the app cache (and
    /// records the store's read health), closes the connections of keys whose grace ended,
    /// sends throttled subscription counts, drops expired cache-channel events and (every
    /// [`SESSION_SWEEP_INTERVAL`]) expired dashboard sessions and audit entries older than
    /// `HERALD_AUDIT_RETENTION_DAYS`.
    pub async fn poll_revision(self: SharedNode) {
        let mut interval = tokio::time::interval(self.settings.revision_poll);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_sweep = Instant::now();
        let mut last_session_sweep = Instant::now();
        let mut expired_keys = HashSet::new();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let outcome = self.refresh_apps().await;
            if let Err(error) = &outcome {
                tracing::debug!(%error, "could not refresh the app cache");
            }
            self.store.health().record(
                Dependency::Reads,
                outcome.map_err(|error| format!("app cache refresh: {error}")),
            );
            self.close_expired_keys(&mut expired_keys);
            self.hub.flush_subscription_counts();
            if last_sweep.elapsed() >= CACHE_SWEEP_INTERVAL {
                last_sweep = Instant::now();
                self.hub.sweep_caches();
            }
            if last_session_sweep.elapsed() >= SESSION_SWEEP_INTERVAL {
                last_session_sweep = Instant::now();
                // In its own task: a slow store must not hold up the cache refresh above.
                let store = self.store.clone();
                let retention_days = self.settings.audit_retention_days;
                tokio::spawn(async move {
                    if let Err(error) = store.sweep_sessions().await {
                        tracing::debug!(%error, "could not sweep expired dashboard sessions");
                    }
                    if let Err(error) = store.sweep_tokens().await {
                        tracing::debug!(%error, "could not sweep dead API tokens");
                    }
                    match store.cap_audit(crate::tenants::AUDIT_MAX_PER_TENANT).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            deleted = n,
                            "audit entries over a tenant's cap deleted (oldest first)"
                        ),
                        Err(error) => {
                            tracing::debug!(%error, "could not cap the audit log per tenant")
                        }
                    }
                    if retention_days > 0 {
                        let keep_ms =
                            i64::try_from(retention_days * 86_400_000).unwrap_or(i64::MAX);
                        let before = store.clock().now_millis().saturating_sub(keep_ms);
                        match store.sweep_audit(before).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(
                                deleted = n,
                                "audit entries past their retention deleted"
                            ),
                            Err(error) => {
                                tracing::debug!(%error, "could not sweep old audit entries")
                            }
                        }
                    }
                });
            }
        }
    }

    /// Closes the connections opened with a previous key whose grace period has just ended
    /// (once per key: `handled` remembers them).
    fn close_expired_keys(&self, handled: &mut HashSet<(String, String)>) {
        let now = self.settings.clock.now_seconds();
        for app in self.apps.all() {
            let Some(previous) = &app.previous_key else {
                continue;
            };
            if previous.active_at(now) {
                continue;
            }
            if handled.insert((app.id.clone(), previous.key.clone())) {
                if let Some(app_hub) = self.hub.existing_app(&app.id) {
                    let closed = app_hub.close_key(&previous.key);
                    tracing::info!(app_id = %app.id, closed, "a previous key's grace period ended");
                }
            }
        }
    }

    /// Writes usage counters to the store every `usage_flush`, until shutdown (never stopping
    /// mid-write, which would lose the counts it took).
    pub async fn flush_usage(self: SharedNode) {
        let mut interval = tokio::time::interval(self.settings.usage_flush);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let outcome = self.flush_usage_once().await;
            if let Err(error) = &outcome {
                tracing::debug!(%error, "could not flush usage counters; they are kept for the next flush");
            }
            self.store.health().record(
                Dependency::Writes,
                outcome
                    .map(|_| ())
                    .map_err(|error| format!("usage flush: {error}")),
            );
        }
    }

    /// One usage flush. In cluster mode the counts it takes leave this node's unflushed counts
    /// in Redis before they are written to the store, so the dashboard's cluster-wide count
    /// never has them twice ([`crate::cluster::unflushed`]).
    async fn flush_usage_once(&self) -> Result<usize, StoreError> {
        match &self.cluster {
            Some(cluster) => {
                self.usage
                    .flush_then(&self.store, || cluster.announce_unflushed(&self.usage))
                    .await
            }
            None => self.usage.flush(&self.store).await,
        }
    }

    /// The shutdown flush: writes the final counts, retrying until `deadline`. Returns whether
    /// they were all written.
    pub async fn final_flush(&self, deadline: Instant) -> bool {
        loop {
            match tokio::time::timeout_at(deadline, self.flush_usage_once()).await {
                Ok(Ok(apps)) => {
                    tracing::info!(apps, "usage counters flushed");
                    return true;
                }
                Ok(Err(error)) => {
                    self.store
                        .health()
                        .record(Dependency::Writes, Err(format!("usage flush: {error}")));
                    let retry = Instant::now() + FINAL_FLUSH_RETRY;
                    if retry >= deadline {
                        tracing::error!(%error, "could not flush usage counters at shutdown");
                        return false;
                    }
                    tokio::time::sleep_until(retry).await;
                }
                Err(_) => {
                    tracing::error!(
                        "the usage flush did not finish within the shutdown grace period"
                    );
                    return false;
                }
            }
        }
    }
}
