//! The dashboard's live console across nodes. A node with a watcher of app X says so once a
//! second in the sorted set `{cluster}:stats:tapwatch` (member `{app_id} {tag}`, scored with
//! its expiry on Redis's clock: 3 s), reads back which apps are watched on other nodes, and
//! subscribes to `{cluster}:tap:{app_id}` for its own watched apps; every node publishes its
//! console events of apps watched elsewhere there (JSON, with its node id), so each watcher sees
//! the whole cluster, each line naming its node. Apps nobody watches cost nothing: no event is
//! even built. Bounded: the set holds at most one member per watched app and node (expired ones
//! removed on every call); forwarded events go through a queue of [`QUEUE`] (full: dropped) and
//! at most [`PER_SECOND`] a second leave a node, and at most
//! [`crate::hub::FORWARD_PER_APP`] of one app (the taps drop the rest before they are
//! queued, so one busy app cannot use up every tenant's console; like a lagging local console); the pub/sub connection exists only while this node has watchers, and is pinged each
//! second then (re-made when it does not answer within [`PUBSUB_TIMEOUT`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herald_dashboard::DebugEvent;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{Inner, Local, COMMAND_TIMEOUT};

/// Events waiting to be published to other nodes' consoles.
pub const QUEUE: usize = 1024;

/// Most console events one node publishes to other nodes per second.
pub const PER_SECOND: usize = 200;

/// How often the watched apps are refreshed (and read back).
const EVERY: Duration = Duration::from_secs(1);

/// How long a new watcher's stream waits before it opens, so that every node forwards to it
/// by then: this node registers the watch within one [`EVERY`] and the other nodes read it
/// within one more (a console that said "live" earlier would miss another node's events).
pub const WATCH_PROPAGATION: Duration = Duration::from_millis(2_200);

/// How long a ping, subscribe or unsubscribe on the pub/sub connection may take before the
/// connection is re-made (the loop also forwards this node's events: it must never block for
/// seconds).
const PUBSUB_TIMEOUT: Duration = Duration::from_millis(500);

/// How long making the pub/sub connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a node's claim to watch an app lasts without a refresh.
const WATCH_TTL_MS: u64 = 3_000;

/// Refreshes this node's watched apps (`ARGV[2..]`, each `{app_id} {tag}`) in `KEYS[1]` with
/// expiry `ARGV[1]` ms from now (Redis's clock), drops the expired ones and answers every
/// member left.
const WATCH: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// The sorted set of watched apps.
pub fn watch_key(cluster: &str) -> String {
    format!("{cluster}:stats:tapwatch")
}

/// The Redis channel of app `app_id`'s console events.
pub fn tap_channel(cluster: &str, app_id: &str) -> String {
    format!("{cluster}:tap:{app_id}")
}

/// A console event on Redis.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The publishing process (it ignores its own).
    origin: String,
    at_ms: i64,
    kind: String,
    channel: Option<String>,
    socket_id: Option<String>,
    detail: String,
    node: Option<String>,
}

/// The kinds of console events (`DebugEvent::kind` is a static string).
const KINDS: [&str; 8] = [
    "connection",
    "disconnection",
    "subscribed",
    "unsubscribed",
    "publish",
    "client_event",
    "webhook",
    "error",
];

fn decode(payload: &[u8], me: &str) -> Option<DebugEvent> {
    let wire: Wire = serde_json::from_slice(payload).ok()?;
    if wire.origin == me {
        return None;
    }
    let kind = KINDS.iter().find(|kind| **kind == wire.kind)?;
    Some(DebugEvent {
        at_ms: wire.at_ms,
        kind,
        channel: wire.channel,
        socket_id: wire.socket_id,
        detail: crate::hub::clip(&wire.detail),
        node: wire.node,
    })
}

/// Creates the queue the taps forward into, and hands its sender to `local`'s taps.
pub(super) fn attach(inner: &Inner, local: &dyn Local) -> mpsc::Receiver<(String, DebugEvent)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    local.taps().forward_to(&inner.settings.node_id, tx);
    rx
}

/// Runs until aborted: the watched apps once a second, publishing this node's events of apps
/// watched elsewhere, and delivering other nodes' events to this node's watchers.
pub(super) async fn console_loop(
    inner: Arc<Inner>,
    local: Arc<dyn Local>,
    mut events: mpsc::Receiver<(String, DebugEvent)>,
) {
    let cluster = inner.settings.name.clone();
    let script = redis::Script::new(WATCH);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sink: Option<redis::aio::PubSubSink> = None;
    let mut stream: Option<redis::aio::PubSubStream> = None;
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut sent_this_second = 0usize;
    let mut batch = Vec::with_capacity(64);
    let prefix = tap_channel(&cluster, "");
    let me = inner.instance.clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                sent_this_second = 0;
                let watched = local.taps().watched_apps();
                let mut invocation = script.key(watch_key(&cluster));
                invocation.arg(WATCH_TTL_MS);
                for app_id in &watched {
                    invocation.arg(format!("{app_id} {}", inner.tag));
                }
                // The current connection: a timed-out one is replaced ([`super::conn`]).
                let mut conn = inner.manager.get();
                let call = invocation.invoke_async::<Vec<String>>(&mut conn);
                match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
                    Ok(Ok(members)) => {
                        let mine = inner.tag.to_string();
                        let elsewhere: HashSet<String> = members
                            .iter()
                            .filter_map(|m| m.rsplit_once(' '))
                            .filter(|(_, tag)| *tag != mine)
                            .map(|(app_id, _)| app_id.to_owned())
                            .collect();
                        local.taps().set_remote(elsewhere);
                    }
                    // Unknown: forward nothing rather than guess.
                    _ => local.taps().set_remote(HashSet::new()),
                }
                let wanted: HashSet<String> = watched.into_iter().collect();
                if wanted.is_empty() {
                    // Nobody watches here: no pub/sub connection.
                    sink = None;
                    stream = None;
                    subscribed.clear();
                    continue;
                }
                // A connection that died silently (no reset seen) would leave the console blind:
                // ping it each tick, and re-make it at once when it does not answer.
                if let Some(s) = sink.as_mut() {
                    let pong = tokio::time::timeout(PUBSUB_TIMEOUT, s.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::debug!("the console's pub/sub connection did not answer a ping");
                        sink = None;
                        stream = None;
                        subscribed.clear();
                    }
                }
                if sink.is_none() {
                    match tokio::time::timeout(CONNECT_TIMEOUT, inner.client.get_async_pubsub()).await {
                        Ok(Ok(pubsub)) => {
                            let (s, r) = pubsub.split();
                            sink = Some(s);
                            stream = Some(r);
                            subscribed.clear();
                        }
                        _ => continue,
                    }
                }
                let Some(s) = sink.as_mut() else { continue };
                let add: Vec<String> = wanted
                    .difference(&subscribed)
                    .map(|app_id| tap_channel(&cluster, app_id))
                    .collect();
                let remove: Vec<String> = subscribed
                    .difference(&wanted)
                    .map(|app_id| tap_channel(&cluster, app_id))
                    .collect();
                let mut ok = true;
                if !add.is_empty() {
                    ok &= matches!(tokio::time::timeout(PUBSUB_TIMEOUT, s.subscribe(&add)).await, Ok(Ok(())));
                }
                if ok && !remove.is_empty() {
                    ok &= matches!(tokio::time::timeout(PUBSUB_TIMEOUT, s.unsubscribe(&remove)).await, Ok(Ok(())));
                }
                if ok {
                    subscribed = wanted;
                } else {
                    // Made again at the next tick.
                    sink = None;
                    stream = None;
                    subscribed.clear();
                }
            }
            received = events.recv_many(&mut batch, 64) => {
                if received == 0 {
                    return;
                }
                let mut pipe = redis::pipe();
                for (app_id, event) in batch.drain(..) {
                    if sent_this_second >= PER_SECOND {
                        continue;
                    }
                    sent_this_second += 1;
                    let wire = Wire {
                        origin: me.clone(),
                        at_ms: event.at_ms,
                        kind: event.kind.to_owned(),
                        channel: event.channel,
                        socket_id: event.socket_id,
                        detail: event.detail,
                        node: event.node,
                    };
                    if let Ok(json) = serde_json::to_vec(&wire) {
                        pipe.publish(tap_channel(&cluster, &app_id), json).ignore();
                    }
                }
                if pipe.is_empty() {
                    continue;
                }
                let mut conn = inner.manager.get();
                let send = pipe.query_async::<()>(&mut conn);
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, send).await;
            }
            message = async { stream.as_mut()?.next().await }, if stream.is_some() => {
                let Some(message) = message else {
                    sink = None;
                    stream = None;
                    subscribed.clear();
                    continue;
                };
                if let Some(app_id) = message.get_channel_name().strip_prefix(prefix.as_str()) {
                    if let Some(event) = decode(message.get_payload_bytes(), &me) {
                        local.taps().deliver(app_id, event);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_a_node_ignores_its_own_and_unknown_kinds() {
        let wire = Wire {
            origin: "p1".into(),
            at_ms: 5,
            kind: "subscribed".into(),
            channel: Some("c".into()),
            socket_id: Some("1.2".into()),
            detail: "d".into(),
            node: Some("node-a".into()),
        };
        let bytes = serde_json::to_vec(&wire).unwrap();
        let event = decode(&bytes, "p2").expect("another node's event");
        assert_eq!(event.kind, "subscribed");
        assert_eq!(event.node.as_deref(), Some("node-a"));
        assert!(decode(&bytes, "p1").is_none(), "its own");
        let odd = serde_json::to_vec(&Wire {
            kind: "made-up".into(),
            ..wire
        })
        .unwrap();
        assert!(decode(&odd, "p2").is_none());
        assert!(decode(b"garbage", "p2").is_none());
    }
}
