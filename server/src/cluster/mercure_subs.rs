//! The Mercure hub's active subscriptions cluster-wide: what the subscriptions API lists on any
//! node, and the subscription events every node's watchers get.
//!
//! Keys (`P` = the cluster's name, `tag` = a node's socket id tag):
//! - `P:mercure:{app}:subs:{tag}`: hash subscription id (the document's `id`) -> its document
//!   (JSON, `active: true`), the app's active subscriptions on node `tag`;
//! - `P:mercure:{app}:subs`: the tags holding such a hash;
//! - `P:mercure:{app}:watch`: set while some node has a subscriber of the app's subscriptions
//!   namespace (subscription events are published only then).
//!
//! Each node writes its own hash, in order, through [`SYNC_SCRIPT`] (the node's Mercure sync
//! task, `transport/mercure/cluster.rs`), which also publishes the subscription events on the
//! app's channel as kind-6 messages with no entry (never in the history), so every node, the
//! writer included, delivers them when it hears them. The keys expire [`SUBS_TTL`] after their
//! last sync (a node with subscribers of the app syncs at least every
//! [`super::mercure::LIVE_REFRESH`]).
//!
//! Bounds: at most [`MAX_SHARED`] documents per app, all nodes together (past it a node's new
//! subscriptions are listed by that node alone until there is room), and a document of more
//! than [`MAX_DOCUMENT_BYTES`] is never shared (listed by its node alone).
//!
//! Dead nodes: a tag whose tag key (`P:socket-tag:{tag}`, [`super::HEARTBEAT_TTL`]) is gone is
//! skipped by [`READ_SCRIPT`] at once, and removed with its hash by the next sync of any node
//! (its hash expires by itself otherwise). A killed node's subscriptions leave the API within
//! the heartbeat TTL (10 s); a gracefully stopped node's at once (it deletes its tag key).
//! The sync that removes a dead node's hash answers its documents (one script call removes it,
//! so one node gets them, cluster-wide), and that node sends their inactive events in its next
//! sync (`transport/mercure/shared.rs`), to every node's watchers allowed to read them.

use std::time::Duration;

use bytes::Bytes;

use super::mercure::{EntryId, LIVE_TTL};
use super::registry::tag_key;
use super::Cluster;

/// Documents one app may share in Redis, all nodes together (the subscriptions API lists at
/// most this many in one answer too).
pub const MAX_SHARED: usize = 1_000;

/// The largest document shared in Redis (a token's payload is part of it).
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024;

/// How long a node's subscriptions of an app stay in Redis without a sync.
pub const SUBS_TTL: Duration = LIVE_TTL;

/// How long the subscriptions API waits for Redis before answering with this node's
/// subscriptions alone.
pub const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// Removes the dead tags of the app's tag set (`KEYS[1]`) with their hashes, applies this
/// node's changes to its hash (`KEYS[2]`: replaced whole when `ARGV[6]` is 1; removals, then
/// additions within the app's cap, counting the live nodes' documents), refreshes the keys'
/// TTL, sets the watch key (`KEYS[3]`) when this node has watchers, and publishes the events
/// on the app's channel when some node watches. Answers `{watched, held, others, dead, had}`:
/// whether the watch key is set, how many documents this node's hash holds, how many the other
/// live nodes' hold, the documents of the dead nodes' hashes this call removed (at most the
/// app's cap of them; none when nobody watches), and whether this node's hash existed before this call (1/0).
///
/// ARGV: this node's tag, the tag key prefix, the hash prefix, the cap, the TTL (ms), replace
/// (1/0), watch (1/0), the app's Redis channel, the number of removals, of additions and of
/// events; then the removals (ids), the additions (id, document pairs) and the events (kind-6
/// bodies).
pub const SYNC_SCRIPT: &str = r"
local tag = ARGV[1]
local others = 0
local dead = {}
local had = redis.call('EXISTS', KEYS[2])
-- The dead nodes' documents are collected only for a watcher (their inactive events).
local collect = ARGV[7] == '1' or redis.call('EXISTS', KEYS[3]) == 1
for _, t in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if t ~= tag then
    if redis.call('EXISTS', ARGV[2] .. t) == 0 then
      redis.call('SREM', KEYS[1], t)
      if collect then
        for _, document in ipairs(redis.call('HVALS', ARGV[3] .. t)) do
          if #dead < tonumber(ARGV[4]) then dead[#dead + 1] = document end
        end
      end
      redis.call('DEL', ARGV[3] .. t)
    else
      others = others + redis.call('HLEN', ARGV[3] .. t)
    end
  end
end
if ARGV[6] == '1' then redis.call('DEL', KEYS[2]) end
local ttl = tonumber(ARGV[5])
local removals, additions, events = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local at = 12
for _ = 1, removals do
  redis.call('HDEL', KEYS[2], ARGV[at])
  at = at + 1
end
local own = redis.call('HLEN', KEYS[2])
local cap = tonumber(ARGV[4])
for _ = 1, additions do
  if redis.call('HEXISTS', KEYS[2], ARGV[at]) == 1 or others + own < cap then
    own = own + redis.call('HSET', KEYS[2], ARGV[at], ARGV[at + 1])
  end
  at = at + 2
end
if own > 0 then
  redis.call('SADD', KEYS[1], tag)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[1], tag)
end
if ARGV[7] == '1' then redis.call('SET', KEYS[3], '1', 'PX', ttl) end
local watched = redis.call('EXISTS', KEYS[3])
if watched == 1 then
  for _ = 1, events do
    redis.call('PUBLISH', ARGV[8], 'H' .. string.char(6) .. string.char(0) .. ARGV[at])
    at = at + 1
  end
end
return {watched, own, others, dead, had}
";

/// The other live nodes' documents of the app whose id is `ARGV[4]` or starts with `ARGV[5]`
/// (at most `ARGV[6]` documents and `ARGV[7]` bytes of them), and the history stream's
/// (`KEYS[2]`) last entry. Answers `{entry, update id, id, document, id, document, ...}`
/// (`entry` empty when the stream is empty).
///
/// KEYS: the app's tag set, its history stream. ARGV: this node's tag, the tag key prefix, the
/// hash prefix, the path, the path's prefix, the most documents, the most bytes.
pub const READ_SCRIPT: &str = r"
local out = {'', ''}
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if last then
  out[1] = last[1]
  out[2] = last[2][2]
end
local max = tonumber(ARGV[6])
local budget = tonumber(ARGV[7])
local found = 0
for _, t in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if t ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. t) == 1 then
    local all = redis.call('HGETALL', ARGV[3] .. t)
    for i = 1, #all, 2 do
      if found >= max then return out end
      local id = all[i]
      if id == ARGV[4] or string.sub(id, 1, #ARGV[5]) == ARGV[5] then
        budget = budget - #all[i + 1]
        if budget < 0 then return out end
        out[#out + 1] = id
        out[#out + 1] = all[i + 1]
        found = found + 1
      end
    end
  end
end
return out
";

static SYNC: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(SYNC_SCRIPT));
static READ: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(READ_SCRIPT));

/// A node's changes to its shared subscriptions of one app, sent in one [`SYNC_SCRIPT`] call.
#[derive(Debug, Default)]
pub struct SubsSync {
    /// The node's hash is replaced whole by `added`.
    pub replace: bool,
    /// The node has subscribers of the app's subscriptions namespace.
    pub watch: bool,
    /// Subscription ids no longer active here.
    pub removed: Vec<String>,
    /// Subscriptions active here: their ids and documents.
    pub added: Vec<(String, String)>,
    /// Subscription events, as kind-6 bodies (`message::encode_mercure_body`).
    pub events: Vec<Bytes>,
}

/// What a sync answered.
#[derive(Debug, Clone)]
pub struct SubsSynced {
    /// Some node watches the app's subscriptions namespace (the events were published).
    pub watched: bool,
    /// Documents this node's hash holds.
    pub held: usize,
    /// Documents the other live nodes' hashes hold.
    pub others: usize,
    /// The documents (JSON, `active: true`) of the dead nodes' subscriptions this sync
    /// removed: their inactive events are this node's to send.
    pub dead: Vec<String>,
    /// This node's hash existed before this sync (gone: expired, or removed by a node that
    /// took this one for dead and announced its subscriptions inactive).
    pub had: bool,
}

/// What the subscriptions API reads from Redis.
#[derive(Debug, Default)]
pub struct SharedSubs {
    /// The history's last entry and its update id (empty for a bridged event), if any.
    pub last: Option<(EntryId, String)>,
    /// The other live nodes' documents: their ids and JSON text.
    pub documents: Vec<(String, String)>,
}

fn subs_keys(cluster: &str, app_id: &str) -> (String, String) {
    let base = format!("{cluster}:mercure:{app_id}:subs");
    let prefix = format!("{base}:");
    (base, prefix)
}

fn watch_key(cluster: &str, app_id: &str) -> String {
    format!("{cluster}:mercure:{app_id}:watch")
}

/// The tag key of tag `t` is this prefix followed by `t`.
fn tag_prefix(cluster: &str) -> String {
    let key = tag_key(cluster, 0);
    key[..key.len() - 1].to_owned()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Cluster {
    /// Applies `sync` to this node's shared subscriptions of app `app_id` (see
    /// [`SYNC_SCRIPT`]).
    pub async fn mercure_subs_sync(
        &self,
        app_id: &str,
        sync: &SubsSync,
    ) -> Result<SubsSynced, String> {
        let inner = &self.inner;
        let name = &inner.settings.name;
        let (set, prefix) = subs_keys(name, app_id);
        let tag = inner.tag.to_string();
        let mut invocation = SYNC.prepare_invoke();
        invocation
            .key(&set)
            .key(format!("{prefix}{tag}"))
            .key(watch_key(name, app_id))
            .arg(&tag)
            .arg(tag_prefix(name))
            .arg(&prefix)
            .arg(MAX_SHARED)
            .arg(millis(SUBS_TTL))
            .arg(u8::from(sync.replace))
            .arg(u8::from(sync.watch))
            .arg(Cluster::app_channel(name, app_id))
            .arg(sync.removed.len())
            .arg(sync.added.len())
            .arg(sync.events.len());
        for id in &sync.removed {
            invocation.arg(id);
        }
        for (id, document) in &sync.added {
            invocation.arg(id).arg(document);
        }
        for event in &sync.events {
            invocation.arg(event.as_ref());
        }
        let mut conn = inner.manager.get();
        let answer = tokio::time::timeout(
            super::COMMAND_TIMEOUT,
            invocation.invoke_async::<(i64, i64, i64, Vec<String>, i64)>(&mut conn),
        )
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        Ok(SubsSynced {
            watched: answer.0 == 1,
            held: usize::try_from(answer.1).unwrap_or(0),
            others: usize::try_from(answer.2).unwrap_or(0),
            dead: answer.3,
            had: answer.4 == 1,
        })
    }

    /// The other live nodes' subscription documents of app `app_id` whose id is `path` or is
    /// under it (at most `max`, and `max_bytes` of JSON), and the history's last entry (see
    /// [`READ_SCRIPT`]); `Err` when Redis did not answer within [`READ_TIMEOUT`].
    pub async fn mercure_subs_read(
        &self,
        app_id: &str,
        path: &str,
        max: usize,
        max_bytes: usize,
    ) -> Result<SharedSubs, String> {
        let inner = &self.inner;
        let name = &inner.settings.name;
        let (set, prefix) = subs_keys(name, app_id);
        let mut invocation = READ.prepare_invoke();
        invocation
            .key(&set)
            .key(format!("{name}:mercure:{app_id}:log"))
            .arg(inner.tag.to_string())
            .arg(tag_prefix(name))
            .arg(&prefix)
            .arg(path)
            .arg(format!("{}/", path.trim_end_matches('/')))
            .arg(max)
            .arg(max_bytes);
        let mut conn = inner.manager.get();
        let answer = tokio::time::timeout(
            READ_TIMEOUT,
            invocation.invoke_async::<Vec<String>>(&mut conn),
        )
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        let mut values = answer.into_iter();
        let entry = values.next().unwrap_or_default();
        let id = values.next().unwrap_or_default();
        let mut documents = Vec::new();
        while let (Some(id), Some(document)) = (values.next(), values.next()) {
            documents.push((id, document));
        }
        Ok(SharedSubs {
            last: EntryId::parse(&entry).map(|entry| (entry, id)),
            documents,
        })
    }
}
