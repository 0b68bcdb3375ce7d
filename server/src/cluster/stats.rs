//! Live figures across the cluster: every heartbeat, each node writes its per-app connection
//! counts to the hash `{cluster}:stats:{tag}` (field `_node`: its node id; one field per app it
//! holds connections of), replaced whole and expiring with the node (the heartbeat TTL; deleted
//! at a graceful shutdown), so the dashboard shows the cluster's total and each node's share
//! without asking the nodes. Bounded by the apps a node holds; a node that dies drops out
//! within the TTL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use super::{Cluster, Inner, Local, COMMAND_TIMEOUT, HEARTBEAT_EVERY, HEARTBEAT_TTL};
use crate::locks::MutexExt;

/// The field of a stats hash that names its node.
const NODE_FIELD: &str = "_node";

/// How long the dashboard waits for the figures before showing this node's alone.
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// The stats hash of the node with socket id tag `tag`.
pub fn stats_key(cluster: &str, tag: u64) -> String {
    format!("{cluster}:stats:{tag}")
}

/// One node's connections of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCount {
    /// The node's id (`HERALD_NODE_ID`).
    pub node_id: String,
    /// Its open connections of the app.
    pub connections: u64,
}

/// The ids (`_node`) of the live nodes' stats hashes: `KEYS[1]` the node set, `ARGV[1]` the
/// stats keys' prefix.
const NODE_IDS: &str = r"
local ids = {}
for _, tag in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local id = redis.call('HGET', ARGV[1] .. tag, '_node')
  if id then ids[#ids + 1] = id end
end
return ids
";

/// Remembers the live nodes' ids (this node's always among them).
fn note_nodes(inner: &Inner, mut ids: Vec<String>) {
    ids.push(inner.settings.node_id.clone());
    ids.sort();
    ids.dedup();
    inner
        .live_nodes
        .store(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
    *inner.node_ids.lock_or_recover() = Arc::new(ids);
}

/// Writes this node's counts every heartbeat until aborted.
pub(super) async fn stats_loop(inner: Arc<Inner>, local: Arc<dyn Local>) {
    let mut interval = tokio::time::interval(HEARTBEAT_EVERY);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let key = stats_key(&inner.settings.name, inner.tag);
    loop {
        interval.tick().await;
        // The current connection: a timed-out one is replaced ([`super::conn`]).
        let mut conn = inner.ops.get();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).ignore();
        let mut fields = vec![(NODE_FIELD.to_owned(), inner.settings.node_id.clone())];
        for app in local.hub().all_apps() {
            let count = app.connection_count();
            if count > 0 {
                fields.push((app.id().to_string(), count.to_string()));
            }
        }
        pipe.hset_multiple(&key, &fields).ignore();
        pipe.pexpire(&key, HEARTBEAT_TTL.as_millis() as i64)
            .ignore();
        // The live nodes' ids: the sign-in budgets' local share while Redis is skipped, and
        // the nodes' names for tenant admins.
        pipe.cmd("EVAL")
            .arg(NODE_IDS)
            .arg(1)
            .arg(super::slots::nodes_key(&inner.settings.name))
            .arg(format!("{}:stats:", inner.settings.name));
        let write = pipe.query_async::<(Vec<String>,)>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, write).await {
            Ok(Ok((ids,))) => note_nodes(&inner, ids),
            Ok(Err(error)) => tracing::debug!(%error, "could not write this node's live figures"),
            Err(_) => {}
        }
    }
}

/// Removes this node's figures (a graceful shutdown), within `deadline` (and 500 ms).
pub(super) async fn forget(inner: &Inner, deadline: tokio::time::Instant) {
    // On the figures' own connection: it goes out after any write of them already sent.
    let mut conn = inner.ops.get();
    let key = stats_key(&inner.settings.name, inner.tag);
    let until = deadline.min(tokio::time::Instant::now() + Duration::from_millis(500));
    let _ = tokio::time::timeout_at(
        until,
        redis::cmd("DEL").arg(&key).query_async::<()>(&mut conn),
    )
    .await;
}

impl Cluster {
    /// How a tenant admin sees node `node_id`: "node N", N its place among the live nodes' ids
    /// as last read (stable while the nodes are), so internal node ids stay with the operator.
    pub fn node_label(&self, node_id: &str) -> String {
        let ids = self.inner.node_ids.lock_or_recover().clone();
        match ids.binary_search_by(|id| id.as_str().cmp(node_id)) {
            Ok(place) => format!("node {}", place + 1),
            Err(_) => "another node".to_owned(),
        }
    }

    /// The live nodes' connections of each of `app_ids` (in that order), as they wrote them at
    /// their last heartbeat (at most 3 s old), nodes sorted by id; `None` when Redis does not
    /// answer within 500 ms.
    pub async fn connections_by_node(&self, app_ids: &[&str]) -> Option<Vec<Vec<NodeCount>>> {
        let inner = &self.inner;
        let mut conn = inner.ops.get();
        let read = async {
            let tags: Vec<u64> = redis::cmd("SMEMBERS")
                .arg(super::slots::nodes_key(&inner.settings.name))
                .query_async(&mut conn)
                .await?;
            if tags.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for tag in &tags {
                pipe.cmd("HMGET")
                    .arg(stats_key(&inner.settings.name, *tag))
                    .arg(NODE_FIELD)
                    .arg(app_ids);
            }
            pipe.query_async::<Vec<Vec<Option<String>>>>(&mut conn)
                .await
        };
        let rows = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(error)) => {
                tracing::debug!(%error, "could not read the cluster's live figures");
                return None;
            }
            Err(_) => return None,
        };
        let mut by_app: Vec<HashMap<String, u64>> = vec![HashMap::new(); app_ids.len()];
        let mut live = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = row.into_iter();
            // No `_node`: the node is gone (its hash expired).
            let Some(Some(node_id)) = values.next() else {
                continue;
            };
            live.push(node_id.clone());
            for (app, value) in by_app.iter_mut().zip(values) {
                if let Some(count) = value.and_then(|v| v.parse::<u64>().ok()) {
                    *app.entry(node_id.clone()).or_default() += count;
                }
            }
        }
        note_nodes(inner, live);
        Some(
            by_app
                .into_iter()
                .map(|counts| {
                    let mut nodes: Vec<NodeCount> = counts
                        .into_iter()
                        .map(|(node_id, connections)| NodeCount {
                            node_id,
                            connections,
                        })
                        .collect();
                    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
                    nodes
                })
                .collect(),
        )
    }
}
