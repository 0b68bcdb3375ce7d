//! The node registry: each node keeps `{cluster}:node:{id}` alive (TTL [`HEARTBEAT_TTL`],
//! refreshed every [`HEARTBEAT_EVERY`]) and removes it at a graceful shutdown; after a kill the
//! key expires within its TTL. With it, the node holds `{cluster}:socket-tag:{tag}`, the
//! node-specific part of its socket ids, so no two live nodes hand out the same socket id, and
//! is a member (by its tag) of `{cluster}:nodes` (the live ones are counted by the connection
//! slots' script).
//!
//! The node key holds this process's instance id: it is claimed with `SET NX` at start (a
//! second live process with the same `HERALD_NODE_ID` refuses to start), refreshed and removed
//! only while it still holds that instance id.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::{
    slots, Cluster, ClusterError, Inner, Part, RedisHealth, COMMAND_TIMEOUT, HEARTBEAT_EVERY,
    HEARTBEAT_TTL,
};
use crate::config::ClusterSettings;

/// Sets the tag key (`KEYS[2]`) to `ARGV[4]`, adds tag `ARGV[5]` to the live-node set
/// (`KEYS[3]`), and sets the node key (`KEYS[1]`) to `ARGV[1]` unless another instance (one
/// whose value does not contain `ARGV[3]`) holds it, keys for `ARGV[2]` seconds. Answers
/// `{set, had_tag}`: `set` 1 when the node key was set, 0 when another instance holds it;
/// `had_tag` 0 when the tag key was gone (Redis lost this node's state: its connection slots
/// are registered again).
const REFRESH: &str = r"
local previous = redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[2], 'GET')
redis.call('SADD', KEYS[3], ARGV[5])
local had_tag = 0
if previous then had_tag = 1 end
local held = redis.call('GET', KEYS[1])
if held and not string.find(held, ARGV[3], 1, true) then return {0, had_tag} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {1, had_tag}
";

/// Deletes the node key (`KEYS[1]`) if it holds instance `ARGV[1]`, the tag key (`KEYS[2]`)
/// if it holds `ARGV[2]`, and tag `ARGV[3]` from the live-node set (`KEYS[3]`).
const LEAVE: &str = r"
local held = redis.call('GET', KEYS[1])
if held and string.find(held, ARGV[1], 1, true) then redis.call('DEL', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
redis.call('SREM', KEYS[3], ARGV[3])
return 1
";

/// How `instance` appears in its node key's value (what [`REFRESH`] and [`LEAVE`] look for).
fn instance_marker(instance: &str) -> String {
    serde_json::json!({ "instance": instance }).to_string()[1..]
        .trim_end_matches('}')
        .to_owned()
}

/// The node key's value.
fn node_value(
    settings: &ClusterSettings,
    instance: &str,
    tag: u64,
    started: i64,
    seen: i64,
) -> String {
    serde_json::json!({
        "instance": instance,
        "node_id": settings.node_id,
        "socket_tag": tag,
        "started": started,
        "seen": seen,
    })
    .to_string()
}

/// Claims `{cluster}:node:{id}` for `instance` with `SET NX`. While another instance holds it,
/// tries again for one heartbeat TTL (a killed node's key expires by then); a key still held
/// after that is refreshed by a live process with the same `HERALD_NODE_ID`, and the node
/// refuses to start. Redis unreachable: the node starts (degraded), the heartbeat claims later.
pub(super) async fn claim_node(
    settings: &ClusterSettings,
    instance: &str,
    manager: &super::conn::Conn,
    health: &RedisHealth,
) -> Result<(), ClusterError> {
    let mut conn = manager.get();
    let key = Cluster::node_key(&settings.name, &settings.node_id);
    let give_up = Instant::now() + HEARTBEAT_TTL + Duration::from_secs(1);
    let mut warned = false;
    loop {
        let mut command = redis::cmd("SET");
        command
            .arg(&key)
            .arg(node_value(settings, instance, 0, 0, 0))
            .arg("NX")
            .arg("EX")
            .arg(HEARTBEAT_TTL.as_secs());
        let claim = command.query_async::<Option<String>>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, claim).await {
            Ok(Ok(Some(_))) => return Ok(()),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                health.record(Part::Heartbeat, Err(error.to_string()));
                return Ok(());
            }
            Err(_) => {
                health.record(Part::Heartbeat, Err("timed out".into()));
                return Ok(());
            }
        }
        if Instant::now() >= give_up {
            return Err(ClusterError(format!(
                "another live node holds HERALD_NODE_ID={:?} in cluster {:?} (its key {key} is \
                 still refreshed); give every node its own HERALD_NODE_ID",
                settings.node_id, settings.name
            )));
        }
        if !warned {
            warned = true;
            tracing::warn!(
                node_key = key,
                "another process holds this node id; waiting for its key to expire"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The key that holds socket id tag `tag` (its value: the node's id) while its node runs.
pub(super) fn tag_key(cluster: &str, tag: u64) -> String {
    format!("{cluster}:socket-tag:{tag}")
}

/// A random tag, claimed with `SET NX` so no live node holds it; after a few taken ones, or when
/// Redis cannot be reached, the last random one unclaimed (the heartbeat claims it later).
pub(super) async fn claim_tag(
    settings: &ClusterSettings,
    manager: &super::conn::Conn,
    health: &RedisHealth,
) -> u64 {
    let mut conn = manager.get();
    let mut tag = 0;
    for _ in 0..8 {
        tag = u64::from(rand::random::<u32>().max(1));
        let mut command = redis::cmd("SET");
        command
            .arg(tag_key(&settings.name, tag))
            .arg(&settings.node_id)
            .arg("NX")
            .arg("EX")
            .arg(HEARTBEAT_TTL.as_secs());
        let claim = command.query_async::<Option<String>>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, claim).await {
            Ok(Ok(Some(_))) => return tag,
            Ok(Ok(None)) => continue,
            Ok(Err(error)) => {
                health.record(Part::Heartbeat, Err(error.to_string()));
                break;
            }
            Err(_) => {
                health.record(Part::Heartbeat, Err("timed out".into()));
                break;
            }
        }
    }
    tracing::warn!(
        tag,
        "could not claim a socket id tag in Redis; using a random one"
    );
    tag
}

/// Refreshes the heartbeat and the tag until aborted, recording Redis's health (a successful
/// heartbeat also clears a publishing failure: the same connection works again).
pub(super) async fn heartbeat_loop(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(HEARTBEAT_EVERY);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let node_key = Cluster::node_key(&inner.settings.name, &inner.settings.node_id);
    let tag_key = tag_key(&inner.settings.name, inner.tag);
    let started = inner.clock.now_millis();
    let mut beaten = false;
    let marker = instance_marker(&inner.instance);
    let script = redis::Script::new(REFRESH);
    loop {
        interval.tick().await;
        let value = node_value(
            &inner.settings,
            &inner.instance,
            inner.tag,
            started,
            inner.clock.now_millis(),
        );
        let ttl = HEARTBEAT_TTL.as_secs();
        let mut invocation = script.key(&node_key);
        invocation
            .key(&tag_key)
            .key(slots::nodes_key(&inner.settings.name))
            .arg(value)
            .arg(ttl)
            .arg(&marker)
            .arg(&inner.settings.node_id)
            .arg(inner.tag);
        // The current connection each time: a timed-out one is replaced ([`super::conn`]).
        let (mut conn, on) = inner.manager.get_tracked();
        let beat = invocation.invoke_async::<(i64, i64)>(&mut conn);
        // Redis answering "another process holds this node id" is not Redis unreachable: the
        // connection slots stay attached (detaching would only make them flap).
        let (outcome, unreachable) = match tokio::time::timeout(COMMAND_TIMEOUT, beat).await {
            Ok(Ok((1, had_tag))) => {
                inner.manager.succeeded(on);
                if had_tag == 0 && beaten {
                    inner.tag_losses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    inner.slots.detach();
                    inner.users.lost();
                    inner.state.needs_resync();
                }
                beaten = true;
                (Ok(()), false)
            }
            Ok(Ok(_)) => (
                Err(format!(
                    "another process holds this node id ({node_key}); give every node its own HERALD_NODE_ID"
                )),
                false,
            ),
            Ok(Err(error)) => {
                inner.manager.failed(on, &error);
                (Err(error.to_string()), true)
            }
            Err(_) => {
                inner.manager.timed_out(on);
                (Err("the heartbeat timed out".to_owned()), true)
            }
        };
        if unreachable {
            inner.slots.detach();
            // Redis may come back empty, and the slots' re-registration restores the tag key
            // before the next beat could notice: the users register again too (idempotent).
            inner.users.lost();
            inner.state.needs_resync();
        }
        if outcome.is_ok() {
            inner.health.record(Part::Publish, Ok(()));
        }
        inner.health.record(Part::Heartbeat, outcome);
    }
}

/// Removes this node's heartbeat and tag (a graceful shutdown), within `deadline`.
pub(super) async fn leave(inner: &Inner, deadline: Instant) {
    // On the slots' connection: one multiplexed connection keeps command order, so a slot
    // re-registration already sent (it sets the tag key) cannot land after this and bring the
    // stopped node back to life.
    let mut conn = inner.slots.manager.get();
    let node_key = Cluster::node_key(&inner.settings.name, &inner.settings.node_id);
    let script = redis::Script::new(LEAVE);
    let mut invocation = script.key(&node_key);
    invocation
        .key(tag_key(&inner.settings.name, inner.tag))
        .key(slots::nodes_key(&inner.settings.name))
        .arg(instance_marker(&inner.instance))
        .arg(&inner.settings.node_id)
        .arg(inner.tag);
    let remove = invocation.invoke_async::<i64>(&mut conn);
    match tokio::time::timeout_at(deadline.min(Instant::now() + COMMAND_TIMEOUT), remove).await {
        Ok(Ok(_)) => tracing::info!(node_key, "left the cluster"),
        Ok(Err(error)) => tracing::warn!(%error, "could not remove the heartbeat key"),
        Err(_) => tracing::warn!("removing the heartbeat key timed out"),
    }
}
