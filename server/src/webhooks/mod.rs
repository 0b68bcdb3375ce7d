//! Webhooks: durable, signed, batched and retried.
//!
//! ```text
//! hub / session ──HubEvent──▶ delay (3 s for vacate / member_removed) ──▶ writer ──▶ store outbox
//!                                                                          │ (every batch window)
//!                                                                          ▼
//!                                                     worker (per-endpoint queues, HTTP, retries)
//! ```
//!
//! The hub only reports the kinds some endpoint of the app wants (an interest mask per app, set
//! when endpoints are loaded). Nothing on the handshake or subscribe path waits: the hub sends to
//! an unbounded channel. The writer appends one delivery row per endpoint per batch window
//! (at most 100 ms) before any attempt is made; the worker delivers pending rows in id order per
//! channel, retries with exponential backoff for the retry window (5 minutes), then marks them
//! failed. Pending rows are picked up again after a restart.

mod delay;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::HubEvent;
use crate::node::SharedNode;
use crate::protocol::WebhookKind;
use crate::tenants::{Delivery, NewDelivery, Webhook};

pub use worker::backoff;

type Registry = HashMap<String, Vec<Webhook>>;

/// The webhook endpoints in force and the handles the pipeline shares.
#[derive(Debug, Default)]
pub struct Webhooks {
    // A std lock: held to swap or clone an `Arc`.
    registry: RwLock<Arc<Registry>>,
    /// Wakes the worker to look for pending deliveries in the store (a retry from the CLI).
    rescan: Notify,
    last_id: AtomicI64,
}

impl Webhooks {
    fn current(&self) -> Arc<Registry> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// App `app_id`'s endpoints.
    pub fn endpoints(&self, app_id: &str) -> Vec<Webhook> {
        self.current().get(app_id).cloned().unwrap_or_default()
    }

    /// One endpoint.
    pub fn endpoint(&self, app_id: &str, webhook_id: &str) -> Option<Webhook> {
        self.current()
            .get(app_id)
            .and_then(|hooks| hooks.iter().find(|h| h.id == webhook_id).cloned())
    }

    /// Installs `webhooks` and returns every app's interest mask, including a zero mask for apps
    /// that no longer have endpoints.
    pub fn replace(&self, webhooks: Vec<Webhook>) -> Vec<(String, u8)> {
        let previous = self.current();
        let mut next: Registry = HashMap::new();
        for hook in webhooks {
            next.entry(hook.app_id.clone()).or_default().push(hook);
        }
        let apps: HashSet<&String> = previous.keys().chain(next.keys()).collect();
        let masks = apps
            .into_iter()
            .map(|app| {
                let mask = next.get(app).map_or(0, |hooks| {
                    hooks
                        .iter()
                        .flat_map(|h| h.events.iter())
                        .fold(0u8, |m, k| m | k.bit())
                });
                (app.clone(), mask)
            })
            .collect();
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        masks
    }

    /// Asks the worker to look for pending deliveries it does not know (retried from outside).
    pub fn rescan(&self) {
        self.rescan.notify_one();
    }

    /// Seeds the id sequence above every id in the store.
    pub fn seed_ids(&self, max_in_store: i64) {
        self.last_id.fetch_max(max_in_store, Ordering::SeqCst);
    }

    /// A fresh delivery id: growing, and near `now_ms * 1000` so ids keep growing across
    /// restarts.
    pub fn next_id(&self, now_ms: i64) -> i64 {
        let floor = now_ms.saturating_mul(1000);
        let mut last = self.last_id.load(Ordering::SeqCst);
        loop {
            let next = (last + 1).max(floor);
            match self
                .last_id
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }
}

/// The running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    stop_delay: CancellationToken,
    stop_worker: CancellationToken,
    /// Shutdown's deadline passed: the writer stops retrying and counts what it drops.
    give_up: CancellationToken,
    /// Events the writer dropped after `give_up`.
    lost: Arc<std::sync::atomic::AtomicUsize>,
    delay: JoinHandle<()>,
    writer: JoinHandle<()>,
    worker: JoinHandle<()>,
}

/// Starts the delay stage, the writer and the worker for `node`, reading the hub's `events`.
pub fn start(node: SharedNode, events: UnboundedReceiver<HubEvent>) -> Pipeline {
    let stop_delay = CancellationToken::new();
    let stop_worker = CancellationToken::new();
    let (delayed_tx, delayed_rx) = mpsc::unbounded_channel();
    let (written_tx, written_rx) = mpsc::unbounded_channel();
    let delay = tokio::spawn(delay::run(
        events,
        delayed_tx,
        node.settings.webhooks.vacate_delay,
        stop_delay.clone(),
    ));
    let give_up = CancellationToken::new();
    let lost = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = tokio::spawn(write_loop(
        node.clone(),
        delayed_rx,
        written_tx,
        Abandon {
            token: give_up.clone(),
            lost: lost.clone(),
        },
    ));
    let worker = tokio::spawn(worker::run(node, written_rx, stop_worker.clone()));
    Pipeline {
        stop_delay,
        stop_worker,
        give_up,
        lost,
        delay,
        writer,
        worker,
    }
}

impl Pipeline {
    /// Shutdown: releases held events, writes everything to the outbox until `deadline`, then
    /// stops the worker (requests in flight get a short grace; what is not delivered stays
    /// pending in the store). Returns how many events could not be written to the outbox (the
    /// store refused writes until the deadline).
    pub async fn drain(self, deadline: Instant) -> usize {
        self.stop_delay.cancel();
        let Pipeline {
            give_up,
            lost,
            delay,
            writer,
            worker,
            stop_worker,
            ..
        } = self;
        let mut written = tokio::spawn(async move {
            let _ = delay.await;
            let _ = writer.await;
        });
        if tokio::time::timeout_at(deadline, &mut written)
            .await
            .is_err()
        {
            // The writer drops what it holds and what is still queued, counting it.
            give_up.cancel();
            let _ = written.await;
        }
        stop_worker.cancel();
        let _ = worker.await;
        lost.load(Ordering::SeqCst)
    }
}

/// One endpoint's share of a batch window.
struct Batch {
    webhook: Webhook,
    events: Vec<String>,
    channels: Vec<String>,
}

/// Turns a window's events into one delivery per endpoint (split at the per-request maximum).
fn build(node: &SharedNode, events: Vec<HubEvent>, now_ms: i64) -> Vec<NewDelivery> {
    let mut batches: Vec<Batch> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for hub_event in events {
        let kind: WebhookKind = hub_event.event.kind();
        let channel = hub_event.event.channel_name().to_owned();
        let endpoints = node.webhooks.endpoints(&hub_event.app_id);
        if endpoints.is_empty() {
            continue;
        }
        let Ok(json) = serde_json::to_string(&hub_event.event) else {
            continue;
        };
        for webhook in endpoints {
            if !webhook.wants(kind, &channel) {
                continue;
            }
            let slot = *index.entry(webhook.id.clone()).or_insert_with(|| {
                batches.push(Batch {
                    webhook: webhook.clone(),
                    events: Vec::new(),
                    channels: Vec::new(),
                });
                batches.len() - 1
            });
            let batch = &mut batches[slot];
            batch.events.push(json.clone());
            batch.channels.push(channel.clone());
        }
    }
    let max = node.settings.webhooks.max_events_per_request.max(1);
    let mut deliveries = Vec::new();
    for batch in batches {
        for (events, channels) in batch.events.chunks(max).zip(batch.channels.chunks(max)) {
            let mut unique: Vec<String> = Vec::new();
            for channel in channels {
                if !unique.contains(channel) {
                    unique.push(channel.clone());
                }
            }
            deliveries.push(NewDelivery {
                id: node.webhooks.next_id(now_ms),
                webhook_id: batch.webhook.id.clone(),
                app_id: batch.webhook.app_id.clone(),
                events: format!("[{}]", events.join(",")),
                channels: unique,
                created_at: now_ms,
            });
        }
    }
    deliveries
}

/// Shutdown's "stop retrying" signal for the writer and its count of dropped events.
struct Abandon {
    token: CancellationToken,
    lost: Arc<std::sync::atomic::AtomicUsize>,
}

/// Collects events for one batch window at a time and appends them to the outbox, then hands
/// the written deliveries to the worker. Ends when its input closes (after a final write), or
/// when shutdown abandons it (counting the events it could not write).
async fn write_loop(
    node: SharedNode,
    mut input: UnboundedReceiver<HubEvent>,
    worker: UnboundedSender<Delivery>,
    abandon: Abandon,
) {
    let window = node.settings.webhooks.batch_window;
    let mut closed = false;
    while !closed {
        let Some(first) = input.recv().await else {
            break;
        };
        let mut events = vec![first];
        let deadline = Instant::now() + window;
        loop {
            tokio::select! {
                next = input.recv() => match next {
                    Some(event) => events.push(event),
                    None => {
                        closed = true;
                        break;
                    }
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let now_ms = crate::clock::Clock::system().now_millis();
        let count = events.len();
        let deliveries = build(&node, events, now_ms);
        if deliveries.is_empty() {
            continue;
        }
        loop {
            let outcome = tokio::select! {
                outcome = node.store.insert_deliveries(&deliveries) => outcome,
                () = abandon.token.cancelled() => Err(crate::tenants::StoreError::Invalid("shutdown deadline".into())),
            };
            match outcome {
                Ok(()) => {
                    node.store
                        .health()
                        .record(crate::tenants::Dependency::Writes, Ok(()));
                    break;
                }
                Err(error) => {
                    if abandon.token.is_cancelled() {
                        // Shutdown's deadline: this batch and everything still queued is lost.
                        let mut dropped = count;
                        input.close();
                        while let Ok(_event) = input.try_recv() {
                            dropped += 1;
                        }
                        abandon.lost.fetch_add(dropped, Ordering::SeqCst);
                        return;
                    }
                    node.store.health().record(
                        crate::tenants::Dependency::Writes,
                        Err(format!("webhook outbox: {error}")),
                    );
                    tracing::debug!(%error, requests = deliveries.len(), "could not write webhooks to the outbox; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        () = abandon.token.cancelled() => {}
                    }
                }
            }
        }
        for delivery in deliveries {
            let _ = worker.send(delivery.into_delivery());
        }
    }
}
