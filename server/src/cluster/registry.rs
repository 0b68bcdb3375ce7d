//! The node registry: each node keeps `{cluster}:node:{id}` alive (TTL [`HEARTBEAT_TTL`],
//! refreshed every [`HEARTBEAT_EVERY`]) and removes it at a graceful shutdown; after a kill the
//! key expires within its TTL. With it, the node holds `{cluster}:socket-tag:{tag}`, the
//! node-specific part of its socket ids, so no two live nodes hand out the same socket id, and
//! is a member (by its tag) of `{cluster}:nodes` (the live ones are counted by the connection
//! slots' script).

use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{
    slots, Cluster, Inner, Part, RedisHealth, COMMAND_TIMEOUT, HEARTBEAT_EVERY, HEARTBEAT_TTL,
};
use crate::config::ClusterSettings;

/// The key that holds socket id tag `tag` (its value: the node's id) while its node runs.
pub(super) fn tag_key(cluster: &str, tag: u64) -> String {
    format!("{cluster}:socket-tag:{tag}")
}

/// A random tag, claimed with `SET NX` so no live node holds it; after a few taken ones, or when
/// Redis cannot be reached, the last random one unclaimed (the heartbeat claims it later).
pub(super) async fn claim_tag(
    settings: &ClusterSettings,
    manager: &ConnectionManager,
    health: &RedisHealth,
) -> u64 {
    let mut conn = manager.clone();
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

/// Refreshes the heartbeat and the tag until `shutdown`, recording Redis's health.
pub(super) async fn heartbeat_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut conn = inner.manager.clone();
    let mut interval = tokio::time::interval(HEARTBEAT_EVERY);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let node_key = Cluster::node_key(&inner.settings.name, &inner.settings.node_id);
    let tag_key = tag_key(&inner.settings.name, inner.tag);
    let started = inner.clock.now_millis();
    let mut beaten = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let value = serde_json::json!({
            "node_id": inner.settings.node_id,
            "socket_tag": inner.tag,
            "started": started,
            "seen": inner.clock.now_millis(),
        })
        .to_string();
        let ttl = HEARTBEAT_TTL.as_secs();
        let mut pipe = redis::pipe();
        // The tag key's previous value (`GET`): none after a first beat means Redis lost this
        // node's state (restarted, or the key expired) and its connection slots are registered
        // again (which sets the tag key first, so this fires once per loss).
        pipe.set_ex(&node_key, value, ttl)
            .ignore()
            .cmd("SET")
            .arg(&tag_key)
            .arg(&inner.settings.node_id)
            .arg("EX")
            .arg(ttl)
            .arg("GET")
            .sadd(slots::nodes_key(&inner.settings.name), inner.tag)
            .ignore();
        let beat = pipe.query_async::<(Option<String>,)>(&mut conn);
        let outcome = match tokio::time::timeout(COMMAND_TIMEOUT, beat).await {
            Ok(Ok((previous,))) => {
                if previous.is_none() && beaten {
                    inner.slots.detach();
                }
                beaten = true;
                Ok(())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the heartbeat timed out".to_owned()),
        };
        if outcome.is_err() {
            inner.slots.detach();
        }
        inner.health.record(Part::Heartbeat, outcome);
    }
}

/// Removes this node's heartbeat and tag (a graceful shutdown), within `deadline`.
pub(super) async fn leave(inner: &Inner, deadline: Instant) {
    let mut conn = inner.manager.clone();
    let node_key = Cluster::node_key(&inner.settings.name, &inner.settings.node_id);
    let mut pipe = redis::pipe();
    pipe.del(&node_key)
        .ignore()
        .del(tag_key(&inner.settings.name, inner.tag))
        .ignore()
        .srem(slots::nodes_key(&inner.settings.name), inner.tag)
        .ignore();
    let remove = pipe.query_async::<()>(&mut conn);
    match tokio::time::timeout_at(deadline.min(Instant::now() + COMMAND_TIMEOUT), remove).await {
        Ok(Ok(())) => tracing::info!(node_key, "left the cluster"),
        Ok(Err(error)) => tracing::warn!(%error, "could not remove the heartbeat key"),
        Err(_) => tracing::warn!("removing the heartbeat key timed out"),
    }
}
