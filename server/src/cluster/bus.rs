//! The two Redis connections of the fan-out: the publishing one (one task, pipelined, in queue
//! order, so a node's publishes keep their order per channel) and the pub/sub one (one per node,
//! subscribed to the Redis channel of each app this node has subscribers of, re-made and
//! resubscribed after a failure).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{message, Cluster, Inner, Local, Outgoing, Part, COMMAND_TIMEOUT};
use crate::hub::OccupancyReceiver;

/// Publishes sent in one pipeline at most.
const BATCH: usize = 256;

/// After a failed pipeline, publishes are dropped (counted) for this long instead of trying
/// Redis again for each one.
const PUBLISH_PAUSE: Duration = Duration::from_secs(1);

/// How often the pub/sub connection is pinged (a connection that silently died is re-made).
const PING_EVERY: Duration = Duration::from_secs(3);

/// The longest wait between two attempts to re-make the pub/sub connection.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Sends queued publishes in order, a pipeline at a time, until `stop`; then sends what is
/// still queued once.
pub(super) async fn publish_loop(
    inner: Arc<Inner>,
    mut rx: mpsc::Receiver<Outgoing>,
    stop: CancellationToken,
) {
    let mut conn = inner.manager.clone();
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
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                send(&inner, &mut conn, &mut batch, &mut None).await;
            }
            return;
        }
        send(&inner, &mut conn, &mut batch, &mut paused_until).await;
    }
}

/// Sends `batch` as one pipeline (or drops it while paused after a failure), and empties it.
async fn send(
    inner: &Inner,
    conn: &mut redis::aio::ConnectionManager,
    batch: &mut Vec<Outgoing>,
    paused_until: &mut Option<Instant>,
) {
    let count = batch.len() as u64;
    if paused_until.is_some_and(|until| Instant::now() < until) {
        inner.dropped.add(count, "redis is unreachable");
        batch.clear();
        return;
    }
    let mut pipe = redis::pipe();
    for outgoing in batch.iter() {
        pipe.publish(&outgoing.redis_channel, outgoing.payload.as_ref())
            .ignore();
    }
    batch.clear();
    let outcome = match tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(conn)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("publishing timed out".to_owned()),
    };
    if outcome.is_err() {
        inner.dropped.add(count, "redis is unreachable");
        *paused_until = Some(Instant::now() + PUBLISH_PAUSE);
    }
    inner.health.record(Part::Publish, outcome);
}

/// Keeps one pub/sub connection subscribed to the Redis channel of every app this node has
/// subscribers of, and delivers what other nodes publish there, until `shutdown`.
pub(super) async fn subscribe_loop(
    inner: Arc<Inner>,
    local: Arc<dyn Local>,
    mut occupancy: OccupancyReceiver,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connect = tokio::time::timeout(COMMAND_TIMEOUT, inner.client.get_async_pubsub());
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = connect => connected,
        };
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                let reason = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "connecting timed out".to_owned(),
                };
                inner.health.record(Part::Subscribe, Err(reason));
                // Changes meanwhile do not matter: every app is looked at after reconnecting.
                while occupancy.try_recv().is_ok() {}
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        inner.health.record(Part::Subscribe, Ok(()));
        let outcome = serve(&inner, &*local, pubsub, &mut occupancy, &shutdown).await;
        match outcome {
            Served::Shutdown => return,
            Served::Lost(reason) => {
                inner.health.record(Part::Subscribe, Err(reason));
            }
        }
    }
}

enum Served {
    Shutdown,
    Lost(String),
}

/// Runs one pub/sub connection until it fails or the node shuts down.
async fn serve(
    inner: &Inner,
    local: &dyn Local,
    pubsub: redis::aio::PubSub,
    occupancy: &mut OccupancyReceiver,
    shutdown: &CancellationToken,
) -> Served {
    let cluster = inner.settings.name.as_str();
    let prefix = Cluster::app_channel(cluster, "");
    let (mut sink, mut stream) = pubsub.split();
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    // Every app with subscribers now; later changes come through `occupancy`.
    while occupancy.try_recv().is_ok() {}
    let mut dirty: HashSet<Arc<str>> = local
        .hub()
        .all_apps()
        .iter()
        .filter(|app| app.is_occupied())
        .map(|app| app.id())
        .collect();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.reset();
    loop {
        for app_id in dirty.drain() {
            let wanted = local
                .hub()
                .existing_app(&app_id)
                .is_some_and(|app| app.is_occupied());
            let channel = Cluster::app_channel(cluster, &app_id);
            let change = match (wanted, subscribed.contains(&app_id)) {
                (true, false) => {
                    tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channel)).await
                }
                (false, true) => {
                    tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(&channel)).await
                }
                _ => continue,
            };
            match change {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Served::Lost(error.to_string()),
                Err(_) => return Served::Lost("no answer to a (un)subscribe".to_owned()),
            }
            if wanted {
                subscribed.insert(app_id);
            } else {
                subscribed.remove(&app_id);
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Served::Shutdown,
            changed = occupancy.recv() => {
                let Some(app_id) = changed else { return Served::Shutdown };
                dirty.insert(app_id);
                while let Ok(app_id) = occupancy.try_recv() {
                    dirty.insert(app_id);
                }
            }
            received = stream.next() => {
                let Some(msg) = received else {
                    return Served::Lost("the pub/sub connection closed".to_owned());
                };
                if let Some(app_id) = msg.get_channel_name().strip_prefix(prefix.as_str()) {
                    deliver(inner, local, app_id, msg.get_payload_bytes());
                }
            }
            _ = ping.tick() => {
                let pong = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<String>()).await;
                match pong {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Served::Lost(error.to_string()),
                    Err(_) => return Served::Lost("no answer to a ping".to_owned()),
                }
            }
        }
    }
}

/// Delivers another node's publish to this node's subscribers, counting the copies.
fn deliver(inner: &Inner, local: &dyn Local, app_id: &str, payload: &[u8]) {
    let Some(message) = message::decode(payload) else {
        tracing::debug!(app_id, "an unreadable message on the app's Redis channel");
        return;
    };
    if message.origin == inner.settings.node_id {
        return;
    }
    let Some(app) = local.hub().existing_app(app_id) else {
        return;
    };
    let frame = Bytes::copy_from_slice(message.frame);
    let delivered = app.deliver_serialized(message.channel, &frame, message.except, message.keep);
    inner.received.fetch_add(1, Ordering::Relaxed);
    if delivered > 0 {
        local.usage().app(app_id).count(delivered as u64);
    }
}
