//! Connection slots: an app's connection quota (`max_connections`, 4004) held cluster-wide.
//!
//! Redis keeps, per app, a hash `{cluster}:conns:{app_id}` of node -> connections that node
//! holds, and the set `{cluster}:nodes` of the nodes (each added by its heartbeat). A node is
//! named there by its socket id tag, which is new at each start: a node is live while its tag key
//! `{cluster}:socket-tag:{tag}` (refreshed with the heartbeat, value the node id) exists, and a
//! node restarted under the same id never inherits the counts of its previous run. One script
//! ([`SCRIPT`]) does every change atomically: it sums the fields of live nodes only (a dead
//! node's field is removed, so its slots come back within the heartbeat TTL), then takes a slot for this node when the sum is below the
//! quota, or gives one back (never below 0). It answers the live sum and the number of live
//! nodes, which this node remembers per app as the last known state.
//!
//! A handshake of an app with a quota waits for the script (at most [`ADMIT_TIMEOUT`]); an app
//! without one never touches Redis. A slot given back is sent after the one taken (the
//! connection's slot is released only once it was admitted) through this node's slot task, in
//! order, on the one multiplexed connection.
//!
//! Redis unreachable (a script fails or times out, or the heartbeat fails): the node is
//! *detached* and decides alone. Its share of an app's quota is what it held when Redis last
//! answered for that app plus an even part of the slots then free: `mine + (quota - total) /
//! live_nodes` (never above the quota; the whole quota only when it was the only live node). An
//! app it never asked Redis about gets `quota / live_nodes` (the live nodes last seen for any
//! app, 2 when it never reached Redis). While detached every admission and release is counted
//! locally only. When Redis answers again (and when the heartbeat finds its key gone, i.e. Redis
//! lost its data or the node was taken for dead), the node re-registers: it sets its field of
//! every app to the connections it holds (an idempotent `HSET`/`HDEL`), repeated until no local
//! change happened meanwhile, then goes back to the scripts. Connections admitted while detached
//! are kept, so the sum may stay above the quota until enough of them close.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, Notify};
use tokio::time::MissedTickBehavior;

use super::registry::tag_key;
use super::{Cluster, Inner, COMMAND_TIMEOUT, HEARTBEAT_TTL};
use crate::locks::MutexExt;

/// How long a handshake waits for the slot script before deciding alone.
pub const ADMIT_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a detached node tries to re-register its connections.
const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// Live nodes assumed by a node that never reached Redis.
const UNKNOWN_NODES: u64 = 2;

/// Takes (`ARGV[3]` = 1, below the quota `ARGV[4]`) or gives back (`ARGV[3]` = -1) one of this
/// node's slots of an app. KEYS: the app's hash, the node set. ARGV: the tag key prefix, this
/// node's tag, the change, the quota. Answers `{admitted, live sum, live nodes}`.
const SCRIPT: &str = r"
local prefix, me = ARGV[1], ARGV[2]
local delta, quota = tonumber(ARGV[3]), tonumber(ARGV[4])
local nodes = 1
for _, node in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if node ~= me then
    if redis.call('EXISTS', prefix .. node) == 1 then
      nodes = nodes + 1
    else
      redis.call('SREM', KEYS[2], node)
    end
  end
end
local others, mine = 0, 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local node, count = fields[i], tonumber(fields[i + 1])
  if node == me then
    mine = count
  elseif redis.call('EXISTS', prefix .. node) == 1 then
    others = others + count
  else
    redis.call('HDEL', KEYS[1], node)
  end
end
local admitted = 0
if delta > 0 then
  if others + mine < quota then
    mine = mine + 1
    admitted = 1
  end
elseif mine > 0 then
  mine = mine - 1
end
if mine > 0 then
  redis.call('HSET', KEYS[1], me, mine)
else
  redis.call('HDEL', KEYS[1], me)
end
return {admitted, others + mine, nodes}
";

/// The Redis hash of app `app_id`'s connections per node.
pub fn conns_key(cluster: &str, app_id: &str) -> String {
    format!("{cluster}:conns:{app_id}")
}

/// The Redis set of the cluster's nodes (each adds itself with its heartbeat).
pub fn nodes_key(cluster: &str) -> String {
    format!("{cluster}:nodes")
}

/// The app's state as Redis last answered it.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// The live nodes' sum, this node's slots included.
    total: u64,
    /// This node's slots then.
    mine: u64,
    /// Live nodes, this one included.
    nodes: u64,
}

#[derive(Debug, Default)]
struct AppSlots {
    /// Connections of the app this node holds a slot for.
    held: u64,
    last: Option<Known>,
}

#[derive(Debug, Default)]
struct State {
    apps: HashMap<Box<str>, AppSlots>,
    /// Deciding alone until the next re-registration succeeds.
    detached: bool,
    /// Bumped at each detachment: a release queued before it is already in the counts the
    /// re-registration sends.
    epoch: u64,
    /// Bumped at each local change of `held`: the re-registration repeats until it is stable.
    version: u64,
    /// Live nodes as Redis last answered (any app).
    nodes: Option<u64>,
}

impl State {
    /// This node's share of `quota` while detached.
    fn share(&self, app: Option<&AppSlots>, quota: u64) -> u64 {
        let share = match app.and_then(|a| a.last) {
            Some(known) => known.mine + quota.saturating_sub(known.total) / known.nodes.max(1),
            None => quota / self.nodes.unwrap_or(UNKNOWN_NODES).max(1),
        };
        share.min(quota)
    }
}

/// A slot given back, queued for the slot task.
#[derive(Debug)]
struct Release {
    app_id: Box<str>,
    epoch: u64,
}

/// This node's connection slots (part of the cluster's state).
#[derive(Debug)]
pub(super) struct Slots {
    state: Mutex<State>,
    script: redis::Script,
    /// Its own multiplexed connection: handshakes do not queue behind publishes, and a timed
    /// out command runs before anything sent after it, or not at all.
    pub(super) manager: super::conn::Conn,
    releases: mpsc::UnboundedSender<Release>,
    releases_rx: Mutex<Option<mpsc::UnboundedReceiver<Release>>>,
    /// Wakes the slot task at a detachment, to re-register at once.
    detached: Notify,
}

impl Slots {
    pub(super) fn new(manager: super::conn::Conn) -> Slots {
        let (releases, releases_rx) = mpsc::unbounded_channel();
        Slots {
            state: Mutex::new(State::default()),
            script: redis::Script::new(SCRIPT),
            manager,
            releases,
            releases_rx: Mutex::new(Some(releases_rx)),
            detached: Notify::new(),
        }
    }

    /// Redis failed (or lost this node's state): decide alone until the next re-registration.
    pub(super) fn detach(&self) {
        let mut state = self.state.lock_or_recover();
        if !state.detached {
            tracing::warn!("connection quotas: deciding locally until Redis answers");
            state.detached = true;
            state.epoch += 1;
            self.detached.notify_one();
        }
    }

    fn note(&self, app_id: &str, answer: (u64, u64, u64)) {
        let (_, total, nodes) = answer;
        let mut state = self.state.lock_or_recover();
        state.nodes = Some(nodes);
        if let Some(app) = state.apps.get_mut(app_id) {
            app.last = Some(Known {
                total,
                mine: app.held,
                nodes,
            });
        }
    }

    fn take_local(state: &mut State, app_id: &str) {
        state.apps.entry(app_id.into()).or_default().held += 1;
        state.version += 1;
    }
}

async fn run_script(
    inner: &Inner,
    conn: &mut ConnectionManager,
    app_id: &str,
    delta: i64,
    quota: u64,
) -> Result<(u64, u64, u64), String> {
    let name = &inner.settings.name;
    let prefix = tag_key(name, 0);
    let prefix = prefix.strip_suffix('0').unwrap_or(&prefix);
    let call = async {
        inner
            .slots
            .script
            .key(conns_key(name, app_id))
            .key(nodes_key(name))
            .arg(prefix)
            .arg(inner.tag)
            .arg(delta)
            .arg(quota)
            .invoke_async::<(u64, u64, u64)>(conn)
            .await
    };
    match tokio::time::timeout(ADMIT_TIMEOUT, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// A connection's slot of its app's quota: given back when dropped.
#[derive(Debug)]
pub struct Slot {
    inner: Arc<Inner>,
    app_id: Box<str>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = &self.inner.slots;
        let mut state = slots.state.lock_or_recover();
        if let Some(app) = state.apps.get_mut(&*self.app_id) {
            app.held = app.held.saturating_sub(1);
        }
        state.version += 1;
        if !state.detached {
            let epoch = state.epoch;
            drop(state);
            let _ = slots.releases.send(Release {
                app_id: std::mem::take(&mut self.app_id),
                epoch,
            });
        }
    }
}

/// The app is at its connection quota (4004).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota;

impl Cluster {
    /// Takes a slot of app `app_id`'s connection `quota` for a handshake: `Ok(None)` without a
    /// quota (no Redis), `Ok(Some(slot))` admitted (give it back by dropping it when the
    /// connection ends), `Err(OverQuota)` at the quota cluster-wide (or past this node's share
    /// while Redis cannot be reached).
    pub async fn admit(
        &self,
        app_id: &str,
        quota: Option<usize>,
    ) -> Result<Option<Slot>, OverQuota> {
        let Some(quota) = quota else {
            return Ok(None);
        };
        let quota = quota as u64;
        let inner = &self.inner;
        let slot = || Slot {
            inner: inner.clone(),
            app_id: app_id.into(),
        };
        {
            let mut state = inner.slots.state.lock_or_recover();
            if state.detached {
                let share = state.share(state.apps.get(app_id), quota);
                let held = state.apps.get(app_id).map_or(0, |a| a.held);
                if held >= share {
                    return Err(OverQuota);
                }
                Slots::take_local(&mut state, app_id);
                return Ok(Some(slot()));
            }
            state.apps.entry(app_id.into()).or_default();
        }
        let mut conn = inner.slots.manager.get();
        match run_script(inner, &mut conn, app_id, 1, quota).await {
            Ok(answer) => {
                let admitted = answer.0 == 1;
                if admitted {
                    Slots::take_local(&mut inner.slots.state.lock_or_recover(), app_id);
                }
                inner.slots.note(app_id, answer);
                if admitted {
                    Ok(Some(slot()))
                } else {
                    Err(OverQuota)
                }
            }
            Err(reason) => {
                tracing::warn!(app_id, %reason, "connection quota: Redis did not answer");
                inner.slots.detach();
                let mut state = inner.slots.state.lock_or_recover();
                let share = state.share(state.apps.get(app_id), quota);
                let held = state.apps.get(app_id).map_or(0, |a| a.held);
                if held >= share {
                    return Err(OverQuota);
                }
                Slots::take_local(&mut state, app_id);
                Ok(Some(slot()))
            }
        }
    }
}

/// The slot task: sends the releases in order and, once detached, re-registers this node's
/// counts at once and then every [`RESYNC_EVERY`] until it succeeds; until `shutdown`.
pub(super) async fn slot_loop(inner: Arc<Inner>) {
    let Some(mut releases) = inner.slots.releases_rx.lock_or_recover().take() else {
        return;
    };
    let mut tick = tokio::time::interval(RESYNC_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            release = releases.recv() => {
                let Some(release) = release else { return };
                let current = {
                    let state = inner.slots.state.lock_or_recover();
                    !state.detached && state.epoch == release.epoch
                };
                if current {
                    match run_script(&inner, &mut inner.slots.manager.get(), &release.app_id, -1, 0).await {
                        Ok(answer) => inner.slots.note(&release.app_id, answer),
                        Err(reason) => {
                            tracing::warn!(%reason, "connection quota: a release failed");
                            inner.slots.detach();
                        }
                    }
                }
            }
            () = inner.slots.detached.notified() => reregister(&inner, &mut inner.slots.manager.get()).await,
            _ = tick.tick() => reregister(&inner, &mut inner.slots.manager.get()).await,
        }
    }
}

/// Sets this node's field of every app it knows to the connections it holds, repeated until
/// nothing changed locally meanwhile; then the scripts take over again.
async fn reregister(inner: &Inner, conn: &mut ConnectionManager) {
    let name = &inner.settings.name;
    let me = inner.tag;
    for _ in 0..8 {
        // Only while detached: attached, the releases queued are still to be sent, and the
        // counts below would already include them.
        if !inner.slots.state.lock_or_recover().detached {
            return;
        }
        let (version, counts) = {
            let state = inner.slots.state.lock_or_recover();
            let counts: Vec<(Box<str>, u64)> = state
                .apps
                .iter()
                .map(|(app_id, app)| (app_id.clone(), app.held))
                .collect();
            (state.version, counts)
        };
        let mut pipe = redis::pipe();
        // Live before the fields count: the heartbeat may not have run since Redis came back.
        pipe.cmd("SET")
            .arg(tag_key(name, me))
            .arg(&inner.settings.node_id)
            .arg("EX")
            .arg(HEARTBEAT_TTL.as_secs())
            .arg("NX")
            .ignore()
            .sadd(nodes_key(name), me)
            .ignore();
        for (app_id, held) in &counts {
            if *held > 0 {
                pipe.hset(conns_key(name, app_id), me, *held).ignore();
            } else {
                pipe.hdel(conns_key(name, app_id), me).ignore();
            }
        }
        let sent = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(conn)).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "connection quota: re-registering failed");
                return;
            }
            Err(_) => return,
        }
        let mut state = inner.slots.state.lock_or_recover();
        if state.version == version {
            state.detached = false;
            state
                .apps
                .retain(|_, app| app.held > 0 || app.last.is_some());
            tracing::info!(
                apps = counts.len(),
                "connection quota: counts re-registered in Redis"
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_while_detached_is_what_was_held_plus_an_even_part_of_the_free_slots() {
        let state = State::default();
        let app = AppSlots {
            held: 1,
            last: Some(Known {
                total: 3,
                mine: 1,
                nodes: 3,
            }),
        };
        // 9 slots, 3 taken (1 here), 3 nodes: 1 + 6 / 3.
        assert_eq!(state.share(Some(&app), 9), 3);
        // The quota lowered meanwhile: never above it.
        assert_eq!(state.share(Some(&app), 1), 1);
        // An app never seen: an even part of the quota, 2 nodes assumed when none was seen.
        assert_eq!(state.share(None, 9), 4);
        let seen = State {
            nodes: Some(3),
            ..State::default()
        };
        assert_eq!(seen.share(None, 9), 3);
        // Alone in the cluster: the whole quota.
        let alone = AppSlots {
            held: 0,
            last: Some(Known {
                total: 0,
                mine: 0,
                nodes: 1,
            }),
        };
        assert_eq!(state.share(Some(&alone), 9), 9);
    }
}
