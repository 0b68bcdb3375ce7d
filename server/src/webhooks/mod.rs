//! Webhooks: durable, signed, batched and retried.
//!
//! ```text
//! hub / session ──HubEvent──▶ bounded channel ──▶ writer ──▶ store outbox
//!               (full: dropped, counted)          │ (every batch window)
//!                                                 ▼
//!                                  worker (per-endpoint queues, HTTP, retries)
//! ```
//!
//! The hub only reports the kinds some endpoint of the app wants (an interest mask per app, set
//! when endpoints are loaded). Nothing on the handshake or subscribe path waits: the hub sends to
//! a bounded channel without waiting, and a full channel drops the event and counts it (a writer
//! stuck on a failing store cannot grow memory). The writer appends one delivery row per
//! endpoint per batch window (at most 100 ms) before any attempt is made; a mark queued behind
//! events ([`crate::hub::EventSender::mark`]) is done once their window is written. `channel_vacated` and
//! `member_removed` go into one more row per endpoint per window, due after the vacate delay, so
//! a crash loses none; a comeback within the delay takes its event out of that row (the row is
//! rewritten, or deleted once empty), a window's comebacks in one store transaction (see
//! `delay`). `cache_miss` reports are bounded
//! per channel and per app (see `misses`). The worker delivers pending rows in id order per
//! channel, retries with exponential backoff for the retry window (5 minutes), then marks them
//! failed; failed rows are kept for the retention, then pruned. Pending rows are picked up again
//! after a restart. Requests only reach permitted destinations (see `target`).
//!
//! Several nodes may share the outbox (cluster mode, PostgreSQL): each process has a random
//! owner id, made here at `start`; the writer inserts rows claimed by it when its node holds
//! every pending row of the endpoint, and the worker delivers only what its node holds (see
//! `worker`, and `tenants::claims` for the claim and order rule).

mod delay;
mod misses;
mod target;
mod worker;

use crate::locks::RwLockExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::WebhookSettings;
use crate::hub::{HubEvent, Mark, Reported, Taps};
use crate::protocol::WebhookKind;
use crate::tenants::{AppCache, Delivery, Lease, NewDelivery, Store, Usage, Webhook};

use delay::{HeldEvent, HeldKey};

pub use crate::config::parse_cidr_list;
pub use crate::hub::{event_channel, EventReceiver, EventSender, NotSent};
pub use target::{header_allowed, Destinations};
pub use worker::{backoff, coarse_outcome};

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
        self.registry.read_or_recover().clone()
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
        *self.registry.write_or_recover() = Arc::new(next);
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

/// What the pipeline needs of the node: the store (outbox and attempts), the apps (signing
/// keys), the usage counters (a request counts toward the daily quota), the endpoints in force,
/// the live console, its settings and the clock. The node builds it
/// (`Node::webhook_context`); the pipeline never sees the node itself.
#[derive(Debug, Clone)]
pub struct Context {
    /// The tenant store: the outbox of deliveries.
    pub store: Store,
    /// Apps by id, for the key pair each request is signed with.
    pub apps: Arc<AppCache>,
    /// Usage counters: each webhook request counts once toward the app's daily quota.
    pub usage: Arc<Usage>,
    /// The endpoints in force, the rescan signal and the delivery id sequence.
    pub endpoints: Arc<Webhooks>,
    /// The live console, told about each attempt.
    pub taps: Arc<Taps>,
    /// Batching, delays, retries and destinations.
    pub settings: WebhookSettings,
    /// The wall clock (delivery ids, due times, `time_ms`).
    pub clock: Clock,
    /// Requests by outcome and their latency, for `/metrics`.
    pub meters: Arc<crate::meters::Meters>,
}

/// The context the writer and the worker share.
type Shared = Arc<Context>;

/// This process's id as the holder of outbox claims: random, made when the pipeline starts.
type Owner = Arc<str>;

fn new_owner() -> Owner {
    use rand::Rng;
    let id: u64 = rand::rng().random();
    Arc::from(format!("{id:016x}"))
}

/// A lease from now for `owner`.
fn lease(context: &Context, owner: &Owner) -> Lease {
    let now_ms = context.clock.now_millis();
    let length = i64::try_from(context.settings.claim_lease.as_millis()).unwrap_or(i64::MAX);
    Lease {
        owner: owner.to_string(),
        now_ms,
        until_ms: now_ms.saturating_add(length),
    }
}

/// Refuses a webhook URL whose destination requests may not reach (checked again at every
/// request): for the dashboard and the CLI, before an endpoint is created or changed.
pub async fn check_destination(
    settings: &WebhookSettings,
    url: &str,
) -> Result<(), crate::tenants::StoreError> {
    Destinations::new(settings.allow_private.clone())
        .check_url(url.trim())
        .await
        .map_err(crate::tenants::StoreError::Invalid)
}

/// The running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    stop_writer: CancellationToken,
    stop_worker: CancellationToken,
    /// Shutdown's deadline passed: the writer stops retrying and counts what it drops.
    give_up: CancellationToken,
    /// Events the writer dropped after `give_up`.
    lost: Arc<AtomicUsize>,
    writer: JoinHandle<()>,
    worker: JoinHandle<()>,
}

/// Starts the writer and the worker over `context`, reading the hub's `events`.
pub fn start(context: Context, events: EventReceiver) -> Pipeline {
    let context = Arc::new(context);
    let stop_writer = CancellationToken::new();
    let stop_worker = CancellationToken::new();
    let give_up = CancellationToken::new();
    let lost = Arc::new(AtomicUsize::new(0));
    let (written_tx, written_rx) = mpsc::unbounded_channel();
    let owner = new_owner();
    let writer = tokio::spawn(write_loop(
        context.clone(),
        owner.clone(),
        events,
        written_tx,
        stop_writer.clone(),
        Abandon {
            token: give_up.clone(),
            lost: lost.clone(),
        },
    ));
    let worker = tokio::spawn(worker::run(context, owner, written_rx, stop_worker.clone()));
    Pipeline {
        stop_writer,
        stop_worker,
        give_up,
        lost,
        writer,
        worker,
    }
}

impl Pipeline {
    /// Shutdown: writes every queued event to the outbox (held ones with their due time) until
    /// `deadline`, then stops the worker (requests in flight get a short grace; what is not
    /// delivered stays pending in the store). Returns how many events could not be written to
    /// the outbox (the store refused writes until the deadline).
    pub async fn drain(self, deadline: Instant) -> usize {
        let Pipeline {
            stop_writer,
            stop_worker,
            give_up,
            lost,
            mut writer,
            worker,
        } = self;
        stop_writer.cancel();
        if tokio::time::timeout_at(deadline, &mut writer)
            .await
            .is_err()
        {
            // The writer drops what it holds and what is still queued, counting it. A store
            // call that hangs (a blackholed connection) must not hold shutdown past its bound
            // either: the writer is aborted after a short while.
            give_up.cancel();
            if tokio::time::timeout(Duration::from_secs(1), &mut writer)
                .await
                .is_err()
            {
                writer.abort();
                // It held a window it could not write: at least one event is lost, so the exit
                // status must say so (the exact count died with the task).
                lost.fetch_add(1, Ordering::SeqCst);
                tracing::error!("the webhook outbox writer did not stop; aborted");
            }
        }
        stop_worker.cancel();
        let mut worker = worker;
        if tokio::time::timeout(Duration::from_secs(2), &mut worker)
            .await
            .is_err()
        {
            // Undelivered rows stay pending in the store; nothing is lost by stopping it.
            worker.abort();
        }
        lost.load(Ordering::SeqCst)
    }
}

/// What the writer tells the worker.
#[derive(Debug)]
pub(crate) enum ToWorker {
    /// Rows just written, claimed by this node until the time given (Unix ms).
    Written(Delivery, i64),
    /// Take a window's comebacks out of their held rows (queue and store, one transaction),
    /// each only if none of its rows has started; answers which comebacks were taken out.
    Cancel(delay::Cancel, oneshot::Sender<Vec<bool>>),
}

/// One endpoint's share of a batch window.
struct Batch {
    webhook: Webhook,
    events: Vec<String>,
    channels: Vec<String>,
}

/// A window's rows: batched ones (due at once) and held ones (due after the vacate delay).
#[derive(Default)]
struct Window {
    now: Vec<NewDelivery>,
    /// The keys held in this window (some may have no row: no endpoint wants them).
    held_keys: Vec<HeldKey>,
    /// One row per endpoint (split at the per-request maximum) with its held events.
    held: Vec<(NewDelivery, Vec<HeldEvent>)>,
}

/// Each channel once, in order of first appearance.
fn distinct<'a>(channels: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut unique = Vec::new();
    for channel in channels {
        if seen.insert(channel.as_str()) {
            unique.push(channel.clone());
        }
    }
    unique
}

/// Turns a window's events into rows: held events go into one row per endpoint (due later); a
/// comeback in `cancelled` (its held event was taken out of its rows) or for an event held in
/// this same window is dropped with it; the rest go into one delivery per endpoint. Both kinds
/// are split at the per-request maximum.
fn build(
    context: &Context,
    events: Vec<HubEvent>,
    cancelled: &mut HashSet<HeldKey>,
    now_ms: i64,
) -> Window {
    let mut window = Window::default();
    let mut batches: Vec<Batch> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut held: Vec<Option<(HeldKey, HubEvent)>> = Vec::new();
    let mut held_at: HashMap<HeldKey, usize> = HashMap::new();
    for hub_event in events {
        match delay::held_key(&hub_event).filter(|_| !context.settings.delayed_upstream) {
            Some((key, true)) => {
                if let Some(at) = held_at.insert(key.clone(), held.len()) {
                    held[at] = None;
                }
                held.push(Some((key, hub_event)));
                continue;
            }
            Some((key, false)) => {
                if cancelled.remove(&key) {
                    continue;
                }
                if let Some(at) = held_at.remove(&key) {
                    held[at] = None;
                    continue;
                }
            }
            None => {}
        }
        let kind: WebhookKind = hub_event.event.kind();
        let channel = hub_event.event.channel_name().to_owned();
        let endpoints = context.endpoints.endpoints(&hub_event.app_id);
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
    let max = context.settings.max_events_per_request.max(1);
    for batch in batches {
        for (events, channels) in batch.events.chunks(max).zip(batch.channels.chunks(max)) {
            window.now.push(NewDelivery {
                id: context.endpoints.next_id(now_ms),
                webhook_id: batch.webhook.id.clone(),
                app_id: batch.webhook.app_id.clone(),
                events: format!("[{}]", events.join(",")),
                channels: distinct(channels.iter()),
                created_at: now_ms,
            });
        }
    }
    // The held events, per endpoint in order of occurrence.
    let mut per_endpoint: Vec<(Webhook, Vec<HeldEvent>)> = Vec::new();
    let mut slots: HashMap<String, usize> = HashMap::new();
    for (key, hub_event) in held.into_iter().flatten() {
        let kind = hub_event.event.kind();
        let channel = hub_event.event.channel_name().to_owned();
        let json = serde_json::to_string(&hub_event.event).ok();
        window.held_keys.push(key.clone());
        let Some(json) = json else {
            continue;
        };
        for webhook in context.endpoints.endpoints(&hub_event.app_id) {
            if !webhook.wants(kind, &channel) {
                continue;
            }
            let slot = *slots.entry(webhook.id.clone()).or_insert_with(|| {
                per_endpoint.push((webhook.clone(), Vec::new()));
                per_endpoint.len() - 1
            });
            per_endpoint[slot].1.push(HeldEvent {
                key: key.clone(),
                json: json.clone(),
                channel: channel.clone(),
            });
        }
    }
    for (webhook, events) in per_endpoint {
        for chunk in events.chunks(max) {
            let json: Vec<&str> = chunk.iter().map(|e| e.json.as_str()).collect();
            window.held.push((
                NewDelivery {
                    id: context.endpoints.next_id(now_ms),
                    webhook_id: webhook.id.clone(),
                    app_id: webhook.app_id.clone(),
                    events: format!("[{}]", json.join(",")),
                    channels: distinct(chunk.iter().map(|e| &e.channel)),
                    created_at: now_ms,
                },
                chunk.to_vec(),
            ));
        }
    }
    window
}

/// Shutdown's "stop retrying" signal for the writer and its count of dropped events.
struct Abandon {
    token: CancellationToken,
    lost: Arc<AtomicUsize>,
}

/// The writer's state across windows.
struct Writer {
    context: Shared,
    owner: Owner,
    worker: UnboundedSender<ToWorker>,
    held: delay::Held,
    misses: misses::MissLimiter,
    abandon: Abandon,
}

impl Writer {
    /// Asks the worker to take every comeback in `events` out of its held rows, all of this
    /// window's in one request (one store transaction); returns the keys taken out (those
    /// comebacks are not reported).
    async fn cancel_comebacks(&mut self, events: &[HubEvent], now: Instant) -> HashSet<HeldKey> {
        let mut cancelled = HashSet::new();
        let mut comebacks: Vec<(HeldKey, Vec<i64>)> = Vec::new();
        for event in events {
            if self.context.settings.delayed_upstream {
                break;
            }
            let Some((key, false)) = delay::held_key(event) else {
                continue;
            };
            let Some(ids) = self.held.take(&key, now) else {
                continue;
            };
            if ids.is_empty() {
                cancelled.insert(key);
            } else {
                comebacks.push((key, ids));
            }
        }
        if comebacks.is_empty() {
            return cancelled;
        }
        let request = self.held.cancel(&comebacks);
        let (reply, answer) = oneshot::channel();
        let removed = if self.worker.send(ToWorker::Cancel(request, reply)).is_ok() {
            answer.await.unwrap_or_default()
        } else {
            Vec::new()
        };
        self.held.cancelled(&comebacks, &removed);
        for ((key, _), ok) in comebacks.into_iter().zip(removed) {
            if ok {
                cancelled.insert(key);
            }
        }
        cancelled
    }

    /// Drops the `cache_miss` reports beyond the bound.
    fn bound_misses(&mut self, events: &mut Vec<HubEvent>, now: Instant) {
        let before = self.misses.dropped();
        events.retain(|e| {
            e.event.kind() != WebhookKind::CacheMiss
                || self.misses.admit(&e.app_id, e.event.channel_name(), now)
        });
        let dropped = self.misses.dropped() - before;
        if dropped > 0 {
            tracing::debug!(
                dropped,
                total = self.misses.dropped(),
                "cache_miss webhooks over the per-channel or per-app bound were not reported"
            );
        }
    }

    /// Writes one window, retrying until it is written or shutdown's deadline abandons it;
    /// returns false when abandoned (its events are counted as lost).
    async fn write(&mut self, mut events: Vec<HubEvent>) -> bool {
        let count = events.len();
        if self.abandon.token.is_cancelled() {
            self.abandon.lost.fetch_add(count, Ordering::SeqCst);
            return false;
        }
        let now = Instant::now();
        let now_ms = self.context.clock.now_millis();
        self.held.expire(now);
        self.bound_misses(&mut events, now);
        let mut cancelled = self.cancel_comebacks(&events, now).await;
        let window = build(&self.context, events, &mut cancelled, now_ms);
        let delay = self.context.settings.vacate_delay;
        let due_ms = now_ms + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let mut rows: Vec<(NewDelivery, i64)> =
            window.now.into_iter().map(|d| (d, now_ms)).collect();
        rows.extend(window.held.iter().map(|(d, _)| (d.clone(), due_ms)));
        if rows.is_empty() {
            return true;
        }
        let health = || self.context.store.health();
        let mut held = window.held;
        let mut quick_retries = 0;
        let (claimed, until) = loop {
            let lease = lease(&self.context, &self.owner);
            let outcome = tokio::select! {
                outcome = self.context.store.insert_claimed_deliveries(&rows, &lease) => Some(outcome),
                () = self.abandon.token.cancelled() => None,
            };
            match outcome {
                Some(Ok(claimed)) => {
                    health().record(crate::tenants::Dependency::Writes, Ok(()));
                    break (claimed, lease.until_ms);
                }
                Some(Err(error)) => {
                    // Another node sharing the store may have used these ids (the same
                    // millisecond): continue above every id in the store, at once the first
                    // few times.
                    if !error.is_unreachable()
                        && self.renumber(&mut rows, &mut held, now_ms).await
                        && quick_retries < 3
                    {
                        quick_retries += 1;
                        tracing::debug!(%error, "webhook outbox ids taken meanwhile; renumbered");
                        continue;
                    }
                    health().record(
                        crate::tenants::Dependency::Writes,
                        Err(format!("webhook outbox: {error}")),
                    );
                    tracing::debug!(%error, requests = rows.len(), "could not write webhooks to the outbox; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                        () = self.abandon.token.cancelled() => {}
                    }
                }
                None => {
                    // Shutdown's deadline: this window is lost (startup logs the count).
                    self.abandon.lost.fetch_add(count, Ordering::SeqCst);
                    return false;
                }
            }
        };
        self.held.hold(
            window.held_keys,
            held.into_iter().map(|(d, events)| (d.id, events)),
            now + delay,
        );
        // A row written unclaimed (another node holds its endpoint) is that node's to deliver.
        for ((delivery, due), claimed) in rows.into_iter().zip(claimed) {
            if !claimed {
                continue;
            }
            let mut delivery = delivery.into_delivery();
            delivery.next_attempt_at = due;
            let _ = self.worker.send(ToWorker::Written(delivery, until));
        }
        true
    }

    /// Gives a window's rows fresh ids above every id in the store (batched rows first, then
    /// held ones, as `rows` lists them); false when the store could not say its largest.
    async fn renumber(
        &self,
        rows: &mut [(NewDelivery, i64)],
        held: &mut [(NewDelivery, Vec<HeldEvent>)],
        now_ms: i64,
    ) -> bool {
        let Ok(max) = self.context.store.max_delivery_id().await else {
            return false;
        };
        self.context.endpoints.seed_ids(max);
        let batched = rows.len() - held.len();
        for (at, (row, _)) in rows.iter_mut().enumerate() {
            row.id = self.context.endpoints.next_id(now_ms);
            if let Some((held_row, _)) = at.checked_sub(batched).and_then(|j| held.get_mut(j)) {
                held_row.id = row.id;
            }
        }
        true
    }
}

/// Collects events for one batch window at a time and appends them to the outbox, then hands
/// the written deliveries to the worker; the marks queued among them are done once the window
/// is written ([`crate::hub::EventSender::mark`]). At `stop`, writes what is queued and ends.
async fn write_loop(
    context: Shared,
    owner: Owner,
    mut input: EventReceiver,
    worker: UnboundedSender<ToWorker>,
    stop: CancellationToken,
    abandon: Abandon,
) {
    let window = context.settings.batch_window;
    let misses = misses::MissLimiter::new(
        context.settings.cache_miss_interval,
        context.settings.cache_miss_per_second,
    );
    let mut writer = Writer {
        context,
        owner,
        worker,
        held: delay::Held::default(),
        misses,
        abandon,
    };
    let mut confirms = Confirms::default();
    loop {
        let first = tokio::select! {
            biased;
            queued = input.recv_queued() => queued,
            () = stop.cancelled() => None,
        };
        let Some(first) = first else {
            break;
        };
        let mut events = Vec::new();
        let mut marks = Vec::new();
        sort(first, &mut events, &mut marks);
        let deadline = Instant::now() + window;
        let mut stopping = false;
        loop {
            tokio::select! {
                biased;
                next = input.recv_queued() => match next {
                    Some(queued) => sort(queued, &mut events, &mut marks),
                    None => break,
                },
                () = stop.cancelled() => {
                    stopping = true;
                    break;
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let written = events.is_empty() || writer.write(events).await;
        confirms.settle(marks, written);
        if !written || stopping {
            break;
        }
    }
    // Shutdown: what the hub queued is written too.
    let mut rest = Vec::new();
    let mut marks = Vec::new();
    while let Some(queued) = input.try_recv_queued() {
        sort(queued, &mut rest, &mut marks);
    }
    let written = rest.is_empty() || writer.write(rest).await;
    confirms.settle(marks, written);
}

/// Confirms the marks of the windows written, until one is abandoned: from then on none (a
/// mark says every event before it is written, and some were lost).
#[derive(Debug, Default)]
struct Confirms {
    abandoned: bool,
}

impl Confirms {
    /// Settles a window's marks: done if it was `written` and no window was abandoned before.
    fn settle(&mut self, marks: Vec<Mark>, written: bool) {
        self.abandoned |= !written;
        if !self.abandoned {
            marks.into_iter().for_each(Mark::done);
        }
    }
}

/// Puts a queued item with the window's events or its marks.
fn sort(queued: Reported, events: &mut Vec<HubEvent>, marks: &mut Vec<Mark>) {
    match queued {
        Reported::Event(event) => events.push(event),
        Reported::Mark(mark) => marks.push(mark),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::event_channel;

    /// A mark queued on a fresh channel, and its waiter.
    fn mark() -> (Mark, tokio::sync::oneshot::Receiver<()>) {
        let (events, mut queued) = event_channel(4);
        let waiter = events.mark().expect("queued");
        match queued.try_recv_queued() {
            Some(Reported::Mark(mark)) => (mark, waiter),
            _ => panic!("a mark"),
        }
    }

    #[test]
    fn no_mark_is_confirmed_after_an_abandoned_window() {
        let mut confirms = Confirms::default();
        let (first, mut first_waiter) = mark();
        confirms.settle(vec![first], true);
        assert_eq!(
            first_waiter.try_recv(),
            Ok(()),
            "a written window's mark is done"
        );
        let (lost, mut lost_waiter) = mark();
        confirms.settle(vec![lost], false);
        assert!(
            lost_waiter.try_recv().is_err(),
            "an abandoned window's is not"
        );
        // Shutdown's rest: nothing left to write, but events before the mark were lost.
        let (after, mut after_waiter) = mark();
        confirms.settle(vec![after], true);
        assert!(after_waiter.try_recv().is_err(), "nor any later one");
    }
}
