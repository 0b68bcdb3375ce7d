//! The two Redis connections of the fan-out: the publishing one (one task, pipelined, in queue
//! order, so a node's publishes keep their order per channel) and the pub/sub one (one per node,
//! subscribed to the Redis channel of each app this node has subscribers or signed-in users of
//! (a signed-in socket need not subscribe to anything, and a `terminate_connections` must still
//! reach it), re-made and resubscribed after a failure).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{message, Cluster, Inner, Local, Outgoing, Part, COMMAND_TIMEOUT};
use crate::hub::OccupancyReceiver;
use crate::locks::MutexExt;

/// Which apps' Redis channels the pub/sub connection has acknowledged, so a subscribe can wait
/// (a little) for its app's channel before answering the client (see [`super::Cluster::listen`]).
#[derive(Debug, Default)]
pub(super) struct Listening {
    // A std lock: set lookups only.
    state: Mutex<ListenState>,
    /// Whether a pub/sub connection is up (without one, nobody waits).
    connected: AtomicBool,
    /// Woken at each acknowledged SUBSCRIBE.
    acked: Notify,
    /// Wakes the pub/sub task when an app is wanted.
    wake: Notify,
    /// Woken when channels stop being listened to (unsubscribed, or the connection lost): a
    /// REST publish waiting for its echo there stops waiting ([`super::order`]).
    pub(super) lost: Notify,
    /// Pub/sub connections lost so far (a waiter that saw another number knows its echo may
    /// have been lost with one, even if a new connection listens again by the time it looks).
    losses: AtomicU64,
    /// The users task registered this node again: re-sync the watchers of every app listened
    /// to ([`resync_watchers`]).
    resync: AtomicBool,
}

#[derive(Debug, Default)]
struct ListenState {
    /// Apps whose Redis channel is subscribed and acknowledged.
    acked: HashSet<Arc<str>>,
    /// Apps a subscribe waits for (before the hub has their subscriber): each waiting session
    /// adds its app and removes it when done, so the set is bounded by the sessions waiting.
    wanted: HashMap<Arc<str>, usize>,
}

impl Listening {
    /// Whether app `app_id`'s Redis channel is subscribed, or no pub/sub connection is up (then
    /// nothing is worth waiting for).
    pub(super) fn ready(&self, app_id: &str) -> bool {
        !self.connected.load(Ordering::Acquire)
            || self.state.lock_or_recover().acked.contains(app_id)
    }

    /// Waits until app `app_id`'s channel is acknowledged (the caller bounds the wait).
    pub(super) async fn wait(&self, app_id: &str) {
        {
            let mut state = self.state.lock_or_recover();
            *state.wanted.entry(app_id.into()).or_default() += 1;
        }
        self.wake.notify_one();
        let _unwant = Unwant(self, app_id);
        loop {
            let acked = self.acked.notified();
            tokio::pin!(acked);
            acked.as_mut().enable();
            if self.ready(app_id) {
                return;
            }
            acked.await;
        }
    }

    /// Whether app `app_id`'s Redis channel is subscribed and acknowledged on a live pub/sub
    /// connection (so a publish there comes back to this node).
    pub(super) fn acked(&self, app_id: &str) -> bool {
        self.connected.load(Ordering::Acquire)
            && self.state.lock_or_recover().acked.contains(app_id)
    }

    /// Pub/sub connections lost so far.
    pub(super) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Acquire)
    }

    /// Asks the pub/sub task to re-sync the watchers of every app it listens to (after this
    /// node registered its users again: Redis may have lost transitions meanwhile).
    pub(super) fn resync_all(&self) {
        self.resync.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn wanted(&self, app_id: &str) -> bool {
        self.state.lock_or_recover().wanted.contains_key(app_id)
    }

    fn all_wanted(&self) -> Vec<Arc<str>> {
        self.state
            .lock_or_recover()
            .wanted
            .keys()
            .cloned()
            .collect()
    }

    fn set(&self, apps: &[Arc<str>], on: bool) {
        let mut state = self.state.lock_or_recover();
        for app_id in apps {
            if on {
                state.acked.insert(app_id.clone());
            } else {
                state.acked.remove(app_id);
            }
        }
        drop(state);
        if on {
            self.acked.notify_waiters();
        } else {
            self.lost.notify_waiters();
        }
    }

    fn connected(&self, up: bool) {
        if !up {
            self.state.lock_or_recover().acked.clear();
        }
        if !up {
            self.losses.fetch_add(1, Ordering::AcqRel);
        }
        self.connected.store(up, Ordering::Release);
        // Waiters look again: without a connection nobody waits.
        self.acked.notify_waiters();
        if !up {
            self.lost.notify_waiters();
        }
    }
}

/// Removes a waiting session's want when it is done (or its wait is cut short).
struct Unwant<'a>(&'a Listening, &'a str);

impl Drop for Unwant<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock_or_recover();
        if let Some(count) = state.wanted.get_mut(self.1) {
            *count -= 1;
            if *count == 0 {
                state.wanted.remove(self.1);
            }
        }
    }
}

/// Publishes sent in one pipeline at most.
const BATCH: usize = 256;

/// After a failed pipeline, publishes are dropped (counted) for this long instead of trying
/// Redis again for each one.
const PUBLISH_PAUSE: Duration = Duration::from_secs(1);

/// How often the pub/sub connection is pinged (a connection that silently died is re-made).
const PING_EVERY: Duration = Duration::from_secs(3);

/// The longest wait between two attempts to re-make the pub/sub connection.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// How long an app's Redis channel stays subscribed after its last local subscriber left (a
/// subscribe/unsubscribe loop costs Redis nothing, and a comeback within it misses nothing).
pub(super) const LINGER: Duration = Duration::from_secs(30);

/// How often lingering subscriptions are looked at.
const LINGER_SWEEP: Duration = Duration::from_secs(1);

/// Sends queued publishes in order, a pipeline at a time, until `stop`; then sends what is
/// still queued once (while paused after a failure, or from the first failure on, the rest is
/// dropped and counted: a partitioned Redis does not get one timeout per batch).
pub(super) async fn publish_loop(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Outgoing>,
    stop: CancellationToken,
) {
    let mut conn = inner.manager.get();
    let mut batch = Vec::with_capacity(BATCH);
    let mut paused_until: Option<Instant> = None;
    loop {
        let stopping = tokio::select! {
            received = rx.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
                false
            }
            () = stop.cancelled() => true,
        };
        if stopping {
            rx.close();
            let mut failed = false;
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                taken(&inner, &batch);
                if failed {
                    inner
                        .dropped
                        .add(batch.len() as u64, "redis is unreachable");
                    batch.clear();
                } else {
                    failed = !send(&inner, &mut conn, &mut batch, &mut paused_until).await;
                }
            }
            return;
        }
        taken(&inner, &batch);
        // The current connection: a timed-out one is replaced ([`super::conn`]).
        conn = inner.manager.get();
        send(&inner, &mut conn, &mut batch, &mut paused_until).await;
    }
}

/// Releases `batch`'s bytes from the queue's byte budget.
fn taken(inner: &Inner, batch: &[Outgoing]) {
    let bytes = batch.iter().map(|outgoing| outgoing.payload.len()).sum();
    inner.outgoing_bytes.fetch_sub(bytes, Ordering::Relaxed);
}

/// Sends `batch` as one pipeline (or drops it while paused after a failure), and empties it;
/// false when it was dropped. Each publish's ack is told the outcome.
async fn send(
    inner: &Inner,
    conn: &mut redis::aio::ConnectionManager,
    batch: &mut Vec<Outgoing>,
    paused_until: &mut Option<Instant>,
) -> bool {
    let count = batch.len() as u64;
    if paused_until.is_some_and(|until| Instant::now() < until) {
        inner.dropped.add(count, "redis is unreachable");
        batch.clear();
        return false;
    }
    let mut pipe = redis::pipe();
    let app_prefix = Cluster::app_channel(&inner.settings.name, "");
    // The Pusher publishes a Mercure subscriber somewhere may want ([`super::mercure`]).
    let bridged: Vec<Option<(usize, String)>> = batch
        .iter()
        .map(|outgoing| {
            let message = message::decode(&outgoing.payload)?;
            (!message.unbridged && super::mercure::bridgeable(message.frame)).then(|| {
                (
                    outgoing.payload.len() - message.frame.len(),
                    message.channel.to_owned(),
                )
            })
        })
        .collect();
    if bridged.iter().any(Option::is_some) {
        super::mercure::load_bridge(&mut pipe);
    }
    if batch.iter().any(|outgoing| outgoing.cache.is_some()) {
        // Loaded once per pipeline that needs it (cheap when loaded): a restarted Redis has
        // forgotten it, and a NOSCRIPT would fail the whole pipeline.
        pipe.cmd("SCRIPT").arg("LOAD").arg(KEEP.0).ignore();
    }
    // The reply index of each publish's bridge script (replies come for the commands not
    // ignored: the keep and bridge scripts).
    let mut replies_before = 0;
    let mut bridge_replies: Vec<Option<usize>> = Vec::with_capacity(batch.len());
    for (outgoing, bridged) in batch.iter().zip(&bridged) {
        if outgoing.cache.is_some() {
            replies_before += 1;
        }
        if bridged.is_some() {
            bridge_replies.push(Some(replies_before));
            replies_before += 1;
        } else {
            bridge_replies.push(None);
        }
        let app_id = outgoing
            .redis_channel
            .strip_prefix(app_prefix.as_str())
            .unwrap_or_default();
        let (cluster, payload) = (&inner.settings.name, outgoing.payload.as_ref());
        let to = &outgoing.redis_channel;
        match (&outgoing.cache, bridged) {
            // Stored (within the app's caps) and published in one step; cached again, the
            // channel's next miss is reported again (`misses.rs`). A bridgeable one is
            // published by the bridge script that follows (flagged when it is in the Mercure
            // history), right after it is stored.
            (Some(keep), _) => {
                keep_and_publish(&mut pipe, outgoing, keep, bridged.is_none());
                if let Some(missed) = super::misses::missed_key_of(&inner.settings.name, &keep.key)
                {
                    pipe.del(missed).ignore();
                }
                if let Some((at, channel)) = bridged {
                    super::mercure::bridge(&mut pipe, cluster, app_id, to, payload, *at, channel);
                }
            }
            (None, Some((at, channel))) => {
                super::mercure::bridge(&mut pipe, cluster, app_id, to, payload, *at, channel);
            }
            (None, None) => {
                pipe.publish(to, payload).ignore();
            }
        }
    }
    let mut bridge_acks = Vec::new();
    let acks: Vec<_> = batch
        .drain(..)
        .zip(bridge_replies)
        .filter_map(|(mut outgoing, reply)| {
            match (outgoing.bridge_ack.take(), reply) {
                // Not bridgeable: nothing goes into the history for it.
                (Some(ack), None) => ack.tell(super::Bridged::NotKept),
                (Some(ack), Some(at)) => bridge_acks.push((ack, at)),
                (None, _) => {}
            }
            outgoing.ack
        })
        .collect();
    // Errors are per command: one app's failing script (its Mercure history append refused,
    // out of memory, say) neither fails the others' publishes nor pauses the queue. Only a
    // connection failure or a timeout does.
    pipe.ignore_errors();
    let outcome =
        match tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<Vec<redis::Value>>(conn))
            .await
        {
            Ok(Ok(replies)) => {
                for (ack, at) in bridge_acks.drain(..) {
                    ack.tell(bridge_outcome(replies.get(at)));
                }
                let failed = replies
                    .iter()
                    .filter(|reply| matches!(reply, redis::Value::ServerError(_)))
                    .count();
                if failed > 0 {
                    let first = replies.iter().find_map(|reply| match reply {
                        redis::Value::ServerError(error) => Some(format!("{error:?}")),
                        _ => None,
                    });
                    script_errors(inner, failed as u64, first.as_deref().unwrap_or(""));
                }
                Ok(())
            }
            // Refused: nothing ran (the bridge acks, dropped, say `Failed`).
            Ok(Err(error)) if error.is_connection_refusal() => Err(error.to_string()),
            Ok(Err(error)) => {
                // Lost while waiting: the scripts may still run.
                for (ack, _) in bridge_acks.drain(..) {
                    ack.tell(super::Bridged::Unknown);
                }
                Err(error.to_string())
            }
            Err(_) => {
                // No reply in time: the scripts may still run.
                for (ack, _) in bridge_acks.drain(..) {
                    ack.tell(super::Bridged::Unknown);
                }
                Err("publishing timed out".to_owned())
            }
        };
    let sent = outcome.is_ok();
    if !sent {
        inner.dropped.add(count, "redis is unreachable");
        *paused_until = Some(Instant::now() + PUBLISH_PAUSE);
    }
    inner.health.record(Part::Publish, outcome);
    for ack in acks {
        let _ = ack.send(sent);
    }
    sent
}

/// What a bridge script's reply says of its append: an entry id (kept), an empty string (not
/// kept), or an error.
fn bridge_outcome(reply: Option<&redis::Value>) -> super::Bridged {
    match reply {
        Some(redis::Value::BulkString(entry)) if !entry.is_empty() => super::Bridged::Kept,
        Some(redis::Value::SimpleString(entry)) if !entry.is_empty() => super::Bridged::Kept,
        Some(redis::Value::BulkString(_) | redis::Value::SimpleString(_) | redis::Value::Nil) => {
            super::Bridged::NotKept
        }
        _ => super::Bridged::Failed,
    }
}

/// Counts `failed` script error replies of one pipeline (the publishes themselves ran) and
/// logs them at the first and every 1,000th.
fn script_errors(inner: &Inner, failed: u64, first: &str) {
    let before = inner.script_errors.fetch_add(failed, Ordering::Relaxed);
    if before == 0 || before / 1_000 != (before + failed) / 1_000 {
        tracing::warn!(
            failed,
            total = before + failed,
            error = first,
            "a forward's script failed in Redis (its publish was sent; the Mercure history \
             or the cache did not keep it)"
        );
    }
}

/// [`super::cache::KEEP_SCRIPT`] and its SHA1.
static KEEP: std::sync::LazyLock<(&str, String)> = std::sync::LazyLock::new(|| {
    let script = redis::Script::new(super::cache::KEEP_SCRIPT);
    (super::cache::KEEP_SCRIPT, script.get_hash().to_owned())
});

/// Adds a kept publish to a cache channel to `pipe`: one `EVALSHA` of
/// [`super::cache::KEEP_SCRIPT`].
/// `publish`: the script publishes it too (else the bridge script that follows does).
fn keep_and_publish(
    pipe: &mut redis::Pipeline,
    outgoing: &Outgoing,
    keep: &super::cache::Keep,
    publish: bool,
) {
    pipe.cmd("EVALSHA")
        .arg(&KEEP.1)
        .arg(2)
        .arg(&keep.key)
        .arg(&keep.index)
        .arg(&keep.channel)
        .arg(crate::hub::CACHE_TTL.as_secs())
        .arg(keep.cost)
        .arg(keep.max_channels)
        .arg(keep.max_bytes)
        .arg(keep.key.strip_suffix(keep.channel.as_str()).unwrap_or(""))
        .arg(if publish {
            outgoing.redis_channel.as_str()
        } else {
            ""
        })
        .arg(outgoing.payload.as_ref())
        .arg(keep.at);
}

/// Keeps one pub/sub connection subscribed to the Redis channel of every app this node has
/// subscribers or signed-in users of (and of those vacated less than [`LINGER`] ago), and
/// delivers what other nodes publish there, until the task is aborted ([`super::Running::stop`]).
pub(super) async fn subscribe_loop(
    inner: Arc<Inner>,
    local: Arc<dyn Local>,
    mut occupancy: OccupancyReceiver,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected =
            tokio::time::timeout(COMMAND_TIMEOUT, inner.client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                let reason = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "connecting timed out".to_owned(),
                };
                inner.health.record(Part::Subscribe, Err(reason));
                // Changes meanwhile do not matter: every app is looked at after reconnecting.
                occupancy.take();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        inner.health.record(Part::Subscribe, Ok(()));
        inner.listening.connected(true);
        let reason = serve(&inner, &*local, pubsub, &mut occupancy).await;
        inner.listening.connected(false);
        // What other nodes published meanwhile was not heard here: the Mercure streams end, and
        // their clients resume with `Last-Event-ID` from the history in Redis (nothing lost).
        for app in local.hub().all_apps() {
            app.cluster_bus_lost();
        }
        inner.health.record(Part::Subscribe, Err(reason));
    }
}

/// The (un)subscribes one turn of [`serve`] sends: every app whose state changed, in one
/// `SUBSCRIBE` and one `UNSUBSCRIBE` at most.
fn plan(
    local: &dyn Local,
    listening: &Listening,
    dirty: &mut HashSet<Arc<str>>,
    subscribed: &HashSet<Arc<str>>,
    vacated: &mut HashMap<Arc<str>, Instant>,
    now: Instant,
) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
    let mut subscribe = Vec::new();
    for app_id in dirty.drain() {
        let wanted = listening.wanted(&app_id)
            || local
                .hub()
                .existing_app(&app_id)
                .is_some_and(|app| app.is_occupied());
        if wanted {
            vacated.remove(&app_id);
            if !subscribed.contains(&app_id) {
                subscribe.push(app_id);
            }
        } else if subscribed.contains(&app_id) {
            // Kept for a while: a comeback within it costs nothing.
            vacated.entry(app_id).or_insert(now);
        }
    }
    let mut unsubscribe = Vec::new();
    vacated.retain(|app_id, since| {
        if now < *since + LINGER {
            return true;
        }
        let occupied = listening.wanted(app_id)
            || local
                .hub()
                .existing_app(app_id)
                .is_some_and(|app| app.is_occupied());
        if !occupied {
            unsubscribe.push(app_id.clone());
        }
        false
    });
    (subscribe, unsubscribe)
}

/// Runs one pub/sub connection until it fails (the reason).
async fn serve(
    inner: &Inner,
    local: &dyn Local,
    pubsub: redis::aio::PubSub,
    occupancy: &mut OccupancyReceiver,
) -> String {
    let cluster = inner.settings.name.as_str();
    let prefix = Cluster::app_channel(cluster, "");
    let (mut sink, mut stream) = pubsub.split();
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    let mut vacated: HashMap<Arc<str>, Instant> = HashMap::new();
    // Every app with subscribers now; later changes come through `occupancy`.
    occupancy.take();
    // Publishes may have been missed while not connected: cached events kept here may be stale
    // (Redis has the cluster's last ones; a subscribe asks it first).
    for app in local.hub().all_apps() {
        app.unconfirm_cache();
    }
    let mut dirty: HashSet<Arc<str>> = local
        .hub()
        .all_apps()
        .iter()
        .filter(|app| app.is_occupied())
        .map(|app| app.id())
        .collect();
    dirty.extend(inner.listening.all_wanted());
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.reset();
    let mut sweep = tokio::time::interval(LINGER_SWEEP);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let (subscribe, unsubscribe) = plan(
            local,
            &inner.listening,
            &mut dirty,
            &subscribed,
            &mut vacated,
            Instant::now(),
        );
        for (on, apps) in [(true, subscribe), (false, unsubscribe)] {
            if apps.is_empty() {
                continue;
            }
            let channels: Vec<String> = apps
                .iter()
                .map(|app_id| Cluster::app_channel(cluster, app_id))
                .collect();
            let change = if on {
                tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channels)).await
            } else {
                tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(&channels)).await
            };
            match change {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return error.to_string(),
                Err(_) => return "no answer to a (un)subscribe".to_owned(),
            }
            inner.listening.set(&apps, on);
            if on {
                // Transitions published while this node did not hear the app were missed.
                resync_watchers(inner, local, &apps).await;
            }
            for app_id in apps {
                if on {
                    subscribed.insert(app_id);
                } else {
                    // No longer hearing the app: its cached events here may go stale.
                    if let Some(app) = local.hub().existing_app(&app_id) {
                        app.unconfirm_cache();
                    }
                    subscribed.remove(&app_id);
                }
            }
        }
        tokio::select! {
            changed = occupancy.changed() => dirty.extend(changed),
            () = inner.listening.wake.notified() => {
                dirty.extend(inner.listening.all_wanted());
                if inner.listening.resync.swap(false, Ordering::AcqRel) {
                    let apps: Vec<Arc<str>> = subscribed.iter().cloned().collect();
                    resync_watchers(inner, local, &apps).await;
                }
            }
            received = stream.next() => {
                let Some(msg) = received else {
                    return "the pub/sub connection closed".to_owned();
                };
                if let Some(app_id) = msg.get_channel_name().strip_prefix(prefix.as_str()) {
                    deliver(inner, local, app_id, msg.get_payload_bytes());
                }
            }
            _ = sweep.tick(), if !vacated.is_empty() => {}
            _ = ping.tick() => {
                let pong = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                match pong {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return error.to_string(),
                    Err(_) => return "no answer to a ping".to_owned(),
                }
            }
        }
    }
}

/// Watched ids read from Redis per command at most.
const RESYNC_CHUNK: usize = 500;

/// How long a watchers' re-sync may hold the pub/sub task (its reads go out as one pipeline).
const RESYNC_TIMEOUT: Duration = Duration::from_millis(500);

/// Tells this node's watchers of `apps` the statuses that changed while it may not have heard
/// them: reads the watched ids' totals (`HMGET`) and pushes the differences. Run by the pub/sub
/// task between two messages, so the transitions it hears next are newer than what it read.
/// Best effort: a failure leaves the watchers as they were (the next re-sync corrects them).
async fn resync_watchers(inner: &Inner, local: &dyn Local, apps: &[Arc<str>]) {
    // Every app's reads go out as one pipeline, answered within RESYNC_TIMEOUT: the pub/sub
    // task reads no message meanwhile (REST publishes waiting for their echo among them), so
    // the pause stays short however many apps and watched ids there are.
    let mut pipe = redis::pipe();
    let mut reads = Vec::new();
    for app_id in apps {
        let Some(app) = local.hub().existing_app(app_id) else {
            continue;
        };
        if !app.shared_users() {
            continue;
        }
        let totals = super::users::totals_key(&inner.settings.name, app_id);
        let ids = app.watched_ids();
        for chunk in ids.chunks(RESYNC_CHUNK) {
            let read = pipe.cmd("HMGET").arg(&totals);
            for id in chunk {
                read.arg(&**id);
            }
            reads.push((app.clone(), chunk.to_vec()));
        }
    }
    if reads.is_empty() {
        return;
    }
    let mut conn = inner.users.manager.get();
    let answer = tokio::time::timeout(
        RESYNC_TIMEOUT,
        pipe.query_async::<Vec<Vec<Option<i64>>>>(&mut conn),
    )
    .await;
    let Ok(Ok(answers)) = answer else {
        tracing::debug!("re-syncing watchers failed");
        return;
    };
    for ((app, chunk), counts) in reads.iter().zip(answers) {
        let online: Vec<bool> = counts.iter().map(|n| n.is_some_and(|n| n > 0)).collect();
        let changed = app.resync_statuses(chunk, &online);
        if changed > 0 {
            tracing::info!(app_id = &*app.id(), changed, "watchers re-synced");
        }
    }
}

/// Delivers another node's publish to this node's subscribers, counting the copies, or closes
/// the user's sockets another node's `terminate_connections` names.
fn deliver(inner: &Inner, local: &dyn Local, app_id: &str, payload: &[u8]) {
    // Published by the deciding script itself: every node, this one included, tells its
    // watchers.
    if let Some(status) = message::decode_user_status(payload) {
        if let Some(app) = local.hub().existing_app(app_id) {
            app.user_status_changed(status.user_id, status.online);
        }
        return;
    }
    // Published by the Mercure history script: every node, the origin included, delivers it.
    if payload.get(..2) == Some(&[b'H', message::MERCURE_UPDATE][..]) {
        inner.received.fetch_add(1, Ordering::Relaxed);
        // The kept copy of a publish this node bridged itself when its echo was late.
        if inner.echoes.skips_update(app_id, payload) {
            return;
        }
        if let Some(app) = local.hub().existing_app(app_id) {
            let delivered = app.deliver_mercure(payload);
            if delivered > 0 {
                super::lease::count_delivered(inner, local, app_id, delivered as u64);
            }
        }
        return;
    }
    if let Some(terminate) = message::decode_terminate(payload) {
        if terminate.origin != inner.instance {
            if let Some(app) = local.hub().existing_app(app_id) {
                let closed = app.terminate_user(terminate.user_id);
                tracing::info!(
                    app_id,
                    closed,
                    "terminated a user's connections (another node asked)"
                );
            }
        }
        return;
    }
    let Some(message) = message::decode(payload) else {
        tracing::debug!(app_id, "an unreadable message on the app's Redis channel");
        return;
    };
    let echo = message.origin == inner.instance;
    // This node's own publish: delivered already, or delivered now on its echo (in Redis's
    // order) unless the REST handler gave up on it and delivered it itself.
    let waiting = match message.echo {
        Some(sequence) if echo => match inner.echoes.take(sequence) {
            Some(waiting) => Some(waiting),
            None => {
                // Given up on: its Mercure bridge here may still wait for this echo's word.
                inner.echoes.late_echo(
                    app_id,
                    sequence,
                    message.in_history,
                    message.channel,
                    message.frame,
                );
                return;
            }
        },
        _ if echo => return,
        _ => None,
    };
    let Some(app) = local.hub().existing_app(app_id) else {
        if let Some(waiting) = waiting {
            let _ = waiting.send(0);
        }
        return;
    };
    let frame = Bytes::copy_from_slice(message.frame);
    // Bridged by this node only when the bridge script did not put it in the Mercure history
    // (decided per message: then no kind-6 follows it).
    let delivered = app.deliver_serialized_to(
        message.channel,
        &frame,
        message.except,
        message.keep,
        !message.unbridged && !message.in_history,
    );
    if !echo {
        inner.received.fetch_add(1, Ordering::Relaxed);
    }
    if delivered > 0 {
        super::lease::count_delivered(inner, local, app_id, delivered as u64);
    }
    if let Some(waiting) = waiting {
        let _ = waiting.send(delivered);
    }
}
