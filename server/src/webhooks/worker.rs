//! The delivery worker: per-endpoint queues in id order, at most `concurrency` requests in flight
//! per endpoint, and never two deliveries touching the same channel out of order (a delivery
//! waits while an earlier one about one of its channels is pending, in flight or backing off).
//!
//! Several nodes may share the outbox (cluster mode): the worker delivers only rows its process
//! holds a claim on (see `tenants::claims` for the claim and order rule: an endpoint's pending
//! rows are held by one node at a time). It claims at start, on a rescan and every quarter of
//! the lease (at most every 2 s), which also renews its leases and drops from its queues the
//! rows it no longer holds; on a store other nodes may share (PostgreSQL) it starts no attempt
//! once less than a third of its lease is left (renewals failing: the store is down); it
//! records an attempt and edits a held row (comebacks) only while it still holds the row, and
//! releases its rows when it stops.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use axum::http::header;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::delay::{Cancel, Plan};
use super::target::Destinations;
use super::{Owner, Shared, ToWorker};
use crate::auth::webhook_signature;
use crate::clock::Clock;
use crate::protocol::webhook_body;
use crate::tenants::{Attempt, Delivery, DeliveryStatus};

/// The delay before retry number `attempts` (1 = the first retry): `base` doubled each time, at
/// most `cap`.
pub fn backoff(attempts: i64, base: Duration, cap: Duration) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    base.saturating_mul(2u32.saturating_pow(exponent)).min(cap)
}

#[derive(Debug)]
struct Entry {
    delivery: Delivery,
    in_flight: bool,
}

#[derive(Debug)]
enum Outcome {
    Delivered {
        status: u16,
    },
    /// `detail` goes to the operator's log only; tenants see [`coarse_outcome`].
    Failed {
        status: u16,
        detail: String,
    },
    /// The app or the endpoint is gone: drop the delivery.
    Gone,
}

impl Outcome {
    fn failed(status: u16, detail: String) -> Outcome {
        Outcome::Failed { status, detail }
    }
}

/// What a tenant is told about a failed attempt: the HTTP status class, or only that it failed.
/// Connection refused, timeouts, DNS failures and refused destinations read the same, so the
/// outcome is no port scanner.
pub fn coarse_outcome(http_status: i64) -> String {
    if (100..600).contains(&http_status) {
        format!("failed (HTTP {}xx)", http_status / 100)
    } else {
        "failed".to_owned()
    }
}

#[derive(Debug)]
struct Done {
    webhook_id: String,
    id: i64,
    at: i64,
    latency_ms: i64,
    outcome: Outcome,
}

struct Worker {
    context: Shared,
    /// Per endpoint, in id order.
    queues: HashMap<String, VecDeque<Entry>>,
    /// Every queued id, with its endpoint (its queue).
    known: HashMap<i64, String>,
    client: reqwest::Client,
    destinations: Destinations,
    tasks: JoinSet<Done>,
    clock: Clock,
    /// This process's id on its claims.
    owner: Owner,
    /// When the latest lease this worker knows it holds ends, Unix ms.
    lease_until: i64,
    /// No claim has succeeded yet since the start.
    first_claim: bool,
    /// Rows dropped because this node does not know their app or endpoint (deleted, or its
    /// cache is behind the store's): not queued again by a claim until the time given.
    gone: HashMap<i64, tokio::time::Instant>,
    /// The last claim failed (warned once per outage).
    claim_failing: bool,
}

/// How long a row whose app or endpoint this node did not know waits before it is tried again
/// (a row still pending in the store has both: this node's cache was behind).
const GONE_RETRY: Duration = Duration::from_secs(30);

/// Most rows one node holds claimed (more are claimed as these are delivered).
const CLAIM_LIMIT: i64 = 1000;

/// How long shutdown waits for the store to release this node's claims.
const RELEASE_WAIT: Duration = Duration::from_millis(500);

impl Worker {
    fn insert(&mut self, delivery: Delivery) {
        if self.known.contains_key(&delivery.id) {
            return;
        }
        self.known.insert(delivery.id, delivery.webhook_id.clone());
        let queue = self.queues.entry(delivery.webhook_id.clone()).or_default();
        let at = queue.partition_point(|e| e.delivery.id < delivery.id);
        queue.insert(
            at,
            Entry {
                delivery,
                in_flight: false,
            },
        );
    }

    /// Where queued delivery `id` is: its endpoint and its position in that queue.
    fn locate(&self, id: i64) -> Option<(&str, usize)> {
        let webhook_id = self.known.get(&id)?;
        let queue = self.queues.get(webhook_id)?;
        let at = queue.binary_search_by_key(&id, |e| e.delivery.id).ok()?;
        Some((webhook_id.as_str(), at))
    }

    /// Whether queued delivery `id` has not started (never attempted, not in flight).
    fn idle(&self, id: i64) -> bool {
        self.locate(id).is_some_and(|(webhook_id, at)| {
            let entry = &self.queues[webhook_id][at];
            !entry.in_flight && entry.delivery.attempts == 0
        })
    }

    /// Takes a window's comebacks out of their held rows, in the store (one transaction) and in
    /// the queues; says which comebacks were taken out (all of whose rows had not started).
    async fn cancel(&mut self, request: &Cancel) -> Vec<bool> {
        let Plan {
            taken: ok,
            rewrite: edits,
            remove,
        } = request.plan(|id| self.idle(id));
        if edits.is_empty() && remove.is_empty() {
            return ok;
        }
        // Nothing starts while this waits: `pump` runs in this same loop.
        match self
            .context
            .store
            .edit_held_deliveries(&edits, &remove, &self.owner)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // A row started elsewhere, or went to another node (a lease that ended).
                tracing::debug!(
                    "held webhook rows changed meanwhile; their events will be delivered"
                );
                return vec![false; ok.len()];
            }
            Err(error) => {
                tracing::warn!(%error, "could not cancel held webhook events; they will be delivered");
                return vec![false; ok.len()];
            }
        }
        for edit in edits {
            if let Some((webhook_id, at)) = self.locate(edit.id) {
                let webhook_id = webhook_id.to_owned();
                if let Some(entry) = self.queues.get_mut(&webhook_id).and_then(|q| q.get_mut(at)) {
                    entry.delivery.events = edit.events;
                    entry.delivery.channels = edit.channels;
                }
            }
        }
        for id in remove {
            if let Some((webhook_id, at)) = self.locate(id) {
                let webhook_id = webhook_id.to_owned();
                if let Some(queue) = self.queues.get_mut(&webhook_id) {
                    queue.remove(at);
                    if queue.is_empty() {
                        self.queues.remove(&webhook_id);
                    }
                }
            }
            self.known.remove(&id);
        }
        ok
    }

    /// Claims rows (renewing the leases held) and makes the queues what this node holds: rows
    /// it no longer holds leave them (unless in flight: their outcome is not recorded).
    async fn claim(&mut self) {
        let lease = super::lease(&self.context, &self.owner);
        let before: Vec<i64> = self.known.keys().copied().collect();
        let held = match self
            .context
            .store
            .claim_deliveries(&lease, CLAIM_LIMIT, self.first_claim)
            .await
        {
            Ok(held) => held,
            Err(error) => {
                if self.claim_failing {
                    tracing::debug!(%error, "could not claim pending webhook deliveries");
                } else {
                    tracing::warn!(%error, "could not claim pending webhook deliveries; retrying");
                }
                self.claim_failing = true;
                return;
            }
        };
        self.claim_failing = false;
        self.first_claim = false;
        self.lease_until = self.lease_until.max(lease.until_ms);
        let ids: HashSet<i64> = held.iter().map(|d| d.id).collect();
        let now = tokio::time::Instant::now();
        self.gone
            .retain(|id, until| ids.contains(id) && *until > now);
        for id in before {
            if !ids.contains(&id) {
                self.forget(id, false);
            }
        }
        for delivery in held {
            if !self.gone.contains_key(&delivery.id) {
                self.insert(delivery);
            }
        }
    }

    /// Takes row `id` out of its queue (one in flight only when `in_flight_too`).
    fn forget(&mut self, id: i64, in_flight_too: bool) {
        let Some((webhook_id, at)) = self.locate(id) else {
            return;
        };
        let webhook_id = webhook_id.to_owned();
        let Some(queue) = self.queues.get_mut(&webhook_id) else {
            return;
        };
        if queue[at].in_flight && !in_flight_too {
            return;
        }
        queue.remove(at);
        if queue.is_empty() {
            self.queues.remove(&webhook_id);
        }
        self.known.remove(&id);
    }

    /// The lease margin: no attempt starts with less of the lease left.
    fn margin(&self) -> i64 {
        i64::try_from(self.context.settings.claim_lease.as_millis() / 3).unwrap_or(i64::MAX)
    }

    /// Starts every attempt that may start now; returns when the next waiting one is due.
    fn pump(&mut self) -> Option<i64> {
        let now = self.clock.now_millis();
        if self.context.store.shared_by_nodes()
            && now.saturating_add(self.margin()) >= self.lease_until
        {
            // The leases may end before an attempt would (another node could take the rows
            // over): wait for a renewal. A single-node store keeps delivering through an outage.
            return None;
        }
        let concurrency = self.context.settings.concurrency.max(1);
        let mut next_due: Option<i64> = None;
        let mut starts = Vec::new();
        for (webhook_id, queue) in &mut self.queues {
            let mut busy: HashSet<&str> = HashSet::new();
            let mut in_flight = queue.iter().filter(|e| e.in_flight).count();
            for entry in queue.iter_mut() {
                let blocked = entry
                    .delivery
                    .channels
                    .iter()
                    .any(|c| busy.contains(c.as_str()));
                // A held row (a vacate waiting for its delay) does not hold back later events
                // on its channel until it is due: it is reported when due, after them.
                let held = entry.delivery.attempts == 0
                    && entry.delivery.next_attempt_at > entry.delivery.created_at
                    && entry.delivery.next_attempt_at > now;
                if !blocked && !entry.in_flight {
                    if entry.delivery.next_attempt_at <= now {
                        if in_flight < concurrency {
                            entry.in_flight = true;
                            in_flight += 1;
                            starts.push((webhook_id.clone(), entry.delivery.clone()));
                        }
                    } else {
                        let due = entry.delivery.next_attempt_at;
                        next_due = Some(next_due.map_or(due, |d: i64| d.min(due)));
                    }
                }
                if !held {
                    busy.extend(entry.delivery.channels.iter().map(String::as_str));
                }
            }
        }
        for (webhook_id, delivery) in starts {
            self.start(webhook_id, delivery);
        }
        next_due
    }

    fn start(&mut self, webhook_id: String, delivery: Delivery) {
        let context = self.context.clone();
        let client = self.client.clone();
        let destinations = self.destinations.clone();
        let clock = self.clock.clone();
        if delivery.attempts == 0 {
            // Each webhook request counts toward the daily quota once; retries are free.
            context.usage.app(&delivery.app_id).count(1);
        }
        self.tasks.spawn(async move {
            let at = clock.now_millis();
            let started = tokio::time::Instant::now();
            let outcome = attempt(&context, &client, &destinations, &delivery, at).await;
            Done {
                webhook_id,
                id: delivery.id,
                at,
                latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
                outcome,
            }
        });
    }

    /// Releases the rows this node holds but those in `keep`; says whether it did. Bounded: a
    /// store that does not answer must not hold shutdown (the leases end by themselves).
    async fn release(&self, keep: &[i64]) -> bool {
        let release = self.context.store.release_deliveries(&self.owner, keep);
        match tokio::time::timeout(RELEASE_WAIT, release).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not release claimed webhook deliveries; other nodes take them when the lease ends");
                false
            }
            Err(_) => {
                tracing::warn!("the store did not answer the release of claimed webhook deliveries; other nodes take them when the lease ends");
                false
            }
        }
    }

    async fn complete(&mut self, done: Done) {
        let settings = &self.context.settings;
        let Some(queue) = self.queues.get_mut(&done.webhook_id) else {
            return;
        };
        let Ok(position) = queue.binary_search_by_key(&done.id, |e| e.delivery.id) else {
            return;
        };
        let entry = &mut queue[position];
        entry.in_flight = false;
        let url = self
            .context
            .endpoints
            .endpoint(&entry.delivery.app_id, &done.webhook_id)
            .map(|w| w.url)
            .unwrap_or_default();
        self.context
            .taps
            .emit(&entry.delivery.app_id, "webhook", None, None, || {
                let attempt = entry.delivery.attempts + 1;
                match &done.outcome {
                    Outcome::Delivered { status } => format!(
                        "request {} to {url} delivered: HTTP {status} in {} ms (attempt {attempt})",
                        done.id, done.latency_ms
                    ),
                    // Coarse, without the time taken: the console is tenant-facing.
                    Outcome::Failed { status, .. } => format!(
                        "request {} to {url} {}, will retry (attempt {attempt})",
                        done.id,
                        coarse_outcome(i64::from(*status))
                    ),
                    Outcome::Gone => format!(
                        "request {} to {url} dropped: the endpoint or app is gone",
                        done.id
                    ),
                }
            });
        let delivery = &mut entry.delivery;
        let attempts = delivery.attempts + 1;
        let outcome = match &done.outcome {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Failed { .. } => "failed",
            Outcome::Gone => "gone",
        };
        let meters = &self.context.meters;
        meters
            .webhook_deliveries
            .get_or_create(&[("outcome", outcome.to_owned())])
            .inc();
        meters
            .webhook_seconds
            .observe(done.latency_ms as f64 / 1000.0);
        let record = match &done.outcome {
            Outcome::Gone => None,
            Outcome::Delivered { status } => Some(Attempt {
                status: DeliveryStatus::Delivered,
                attempts,
                at: done.at,
                next_attempt_at: 0,
                http_status: i64::from(*status),
                error: String::new(),
                latency_ms: done.latency_ms,
            }),
            Outcome::Failed { status, detail } => {
                let now = self.clock.now_millis();
                let window_end = delivery.created_at
                    + i64::try_from(settings.retry_window.as_millis()).unwrap_or(i64::MAX);
                let wait = backoff(attempts, settings.backoff_base, settings.backoff_cap);
                let next =
                    (now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)).min(window_end);
                let status_now = if now >= window_end {
                    tracing::warn!(webhook_id = %done.webhook_id, delivery = done.id, attempts, %detail, "webhook delivery failed for the whole retry window; kept as failed");
                    DeliveryStatus::Failed
                } else {
                    tracing::debug!(webhook_id = %done.webhook_id, delivery = done.id, attempts, %detail, "webhook delivery failed; will retry");
                    DeliveryStatus::Pending
                };
                Some(Attempt {
                    status: status_now,
                    attempts,
                    at: done.at,
                    next_attempt_at: next,
                    http_status: i64::from(*status),
                    // The store keeps the coarse outcome only: tenants read it.
                    error: coarse_outcome(i64::from(*status)),
                    latency_ms: done.latency_ms,
                })
            }
        };
        let finished = match &record {
            None => true,
            Some(attempt) => attempt.status != DeliveryStatus::Pending,
        };
        if let Some(attempt) = &record {
            delivery.attempts = attempt.attempts;
            delivery.next_attempt_at = attempt.next_attempt_at;
            delivery.status = attempt.status;
        }
        if finished {
            queue.remove(position);
            // Recorded below before anything else runs, so a rescan cannot see it pending.
            self.known.remove(&done.id);
            if queue.is_empty() {
                self.queues.remove(&done.webhook_id);
            }
        }
        if record.is_none() {
            self.gone
                .insert(done.id, tokio::time::Instant::now() + GONE_RETRY);
        }
        if let Some(attempt) = record {
            match self
                .context
                .store
                .record_claimed_attempt(&self.owner, done.id, &attempt)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // The lease ended and another node took the row: it is that node's now.
                    tracing::debug!(
                        delivery = done.id,
                        "webhook row no longer held; not recorded"
                    );
                    self.forget(done.id, true);
                }
                Err(error) => {
                    tracing::warn!(%error, delivery = done.id, "could not record a webhook attempt");
                }
            }
        }
    }
}

/// One HTTP attempt, signed with the app's current key pair.
async fn attempt(
    context: &Shared,
    client: &reqwest::Client,
    destinations: &Destinations,
    delivery: &Delivery,
    now_ms: i64,
) -> Outcome {
    let Some(app) = context.apps.by_id(&delivery.app_id) else {
        return Outcome::Gone;
    };
    let Some(webhook) = context
        .endpoints
        .endpoint(&delivery.app_id, &delivery.webhook_id)
    else {
        return Outcome::Gone;
    };
    // Checked here for IP-literal hosts; names are checked by the client's resolver. Userinfo is
    // never sent (registration refuses it; older rows may carry it).
    let Ok(mut url) = reqwest::Url::parse(&webhook.url) else {
        return Outcome::failed(0, "the URL does not parse".into());
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if !destinations.literal_permitted(&url) {
        tracing::warn!(webhook_id = %webhook.id, host = url.host_str().unwrap_or(""), "webhook request refused: a private or reserved address (HERALD_WEBHOOK_ALLOW_PRIVATE)");
        return Outcome::failed(0, "refused: private or reserved destination".into());
    }
    // `time_ms` is the time of sending: receivers check it is recent (pusher-http-python allows
    // 5 minutes), and a delivery retried later must still validate.
    let body = webhook_body(now_ms, &delivery.events);
    let signature = webhook_signature(app.secret.expose(), body.as_bytes());
    let mut request = client
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .header("X-Pusher-Key", app.key.as_str())
        .header("X-Pusher-Signature", signature);
    for (name, value) in &webhook.headers {
        if !super::header_allowed(name) {
            continue;
        }
        request = request.header(name.as_str(), value.as_str());
    }
    match request.body(body).send().await {
        Ok(response) if response.status().is_success() => Outcome::Delivered {
            status: response.status().as_u16(),
        },
        Ok(response) => {
            let status = response.status().as_u16();
            Outcome::failed(status, format!("HTTP {status}"))
        }
        Err(error) => Outcome::failed(
            0,
            if error.is_timeout() {
                "timed out".to_owned()
            } else if error.is_connect() {
                // The resolver's refusal is a connect error too; it logged itself.
                "connection failed or refused".to_owned()
            } else {
                "request failed".to_owned()
            },
        ),
    }
}

/// How long delivered requests stay listed.
const DELIVERED_KEPT_MS: i64 = 24 * 3600 * 1000;

/// Runs until `stop`: delivers what the writer hands over and what the store holds as pending.
pub(super) async fn run(
    context: Shared,
    owner: Owner,
    mut written: UnboundedReceiver<ToWorker>,
    stop: CancellationToken,
) {
    let destinations = Destinations::new(context.settings.allow_private.clone());
    let client = match reqwest::Client::builder()
        .timeout(context.settings.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        // No proxy from the environment (it would resolve names itself, past the check), and
        // names resolve through the guard that refuses private addresses.
        .no_proxy()
        .dns_resolver(destinations.resolver())
        .http1_title_case_headers()
        .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook HTTP client; webhooks stay in the outbox");
            return;
        }
    };
    let mut worker = Worker {
        clock: context.clock.clone(),
        context,
        queues: HashMap::new(),
        known: HashMap::new(),
        client,
        destinations,
        tasks: JoinSet::new(),
        owner,
        lease_until: 0,
        first_claim: true,
        gone: HashMap::new(),
        claim_failing: false,
    };
    let claim_every = (worker.context.settings.claim_lease / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(2));
    tokio::select! {
        () = worker.claim() => {}
        () = stop.cancelled() => {}
    }
    let mut next_claim = tokio::time::Instant::now() + claim_every;
    let mut writer_open = true;
    let mut last_prune = tokio::time::Instant::now() - Duration::from_secs(3600);
    loop {
        if last_prune.elapsed() >= Duration::from_secs(600) {
            last_prune = tokio::time::Instant::now();
            let now = worker.clock.now_millis();
            let retention = i64::try_from(worker.context.settings.failed_retention.as_millis())
                .unwrap_or(i64::MAX);
            match worker
                .context
                .store
                .prune_deliveries(now - DELIVERED_KEPT_MS, now.saturating_sub(retention))
                .await
            {
                Ok(0) => {}
                Ok(pruned) => {
                    tracing::info!(pruned, "pruned old delivered and failed webhook deliveries")
                }
                Err(error) => tracing::warn!(%error, "could not prune old webhook deliveries"),
            }
        }
        let next_due = worker.pump();
        let wait = next_due.map(|due| {
            Duration::from_millis(u64::try_from(due - worker.clock.now_millis()).unwrap_or(0))
        });
        tokio::select! {
            () = stop.cancelled() => break,
            delivery = written.recv(), if writer_open => match delivery {
                Some(ToWorker::Written(delivery, until)) => {
                    worker.lease_until = worker.lease_until.max(until);
                    worker.insert(delivery);
                }
                Some(ToWorker::Cancel(request, reply)) => {
                    let removed = worker.cancel(&request).await;
                    let _ = reply.send(removed);
                }
                None => writer_open = false,
            },
            Some(done) = worker.tasks.join_next() => {
                if let Ok(done) = done {
                    worker.complete(done).await;
                }
            }
            // A claim on a store that does not answer must not hold shutdown (dropped, its
            // transaction rolls back).
            () = worker.context.endpoints.rescan.notified() => tokio::select! {
                () = worker.claim() => {}
                () = stop.cancelled() => break,
            },
            () = tokio::time::sleep_until(next_claim) => {
                tokio::select! {
                    () = worker.claim() => {}
                    () = stop.cancelled() => break,
                }
                next_claim = tokio::time::Instant::now() + claim_every;
            }
            () = async {
                match wait {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    // What is not in flight goes back to the outbox for the other nodes at once; requests in
    // flight may finish (and be recorded) within a short grace, then the rest are released too.
    let in_flight: Vec<i64> = worker
        .queues
        .values()
        .flat_map(|q| q.iter().filter(|e| e.in_flight).map(|e| e.delivery.id))
        .collect();
    let released = worker.release(&in_flight).await;
    let grace = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(grace);
    while !worker.tasks.is_empty() {
        tokio::select! {
            () = &mut grace => break,
            Some(done) = worker.tasks.join_next() => {
                if let Ok(done) = done {
                    worker.complete(done).await;
                }
            }
        }
    }
    if released {
        worker.release(&[]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n, base, cap).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(1000, base, cap), cap);
    }
}
