//! The Mercure hub's history and fan-out in a cluster.
//!
//! Every Mercure update enters Redis once, through [`APPEND_SCRIPT`]: it appends the update to
//! the app's history stream (`{cluster}:mercure:{app_id}:log`, a Redis Stream) and `PUBLISH`es
//! it as a kind-6 bus message ([`super::message`]) on the app's channel, in one step, so the
//! stream's order is the order every node delivers in, and any node can replay it.
//!
//! The stream is bounded like a node's history: by the app's history size and age, and by
//! bytes (a per-app counter, `{...}:bytes`; the bound is the node-wide history bytes divided
//! by 8, the share one app gets when the node pool is contended). The script removes the
//! oldest entries while over any bound (their index entries too) and sets the three keys to
//! expire `history_seconds` after the last write, so an idle app's history leaves Redis by
//! itself. An index (`{...}:idx`, a hash from update id to entry id) finds a `Last-Event-ID`
//! without scanning; a publisher-given id that repeats points at its latest entry.
//!
//! [`READ_SCRIPT`] reads a page of the stream after a resume point (an update id looked up in
//! the index, an entry id, or the start), dropping entries past the age bound first.

use std::time::Duration;

use bytes::Bytes;

use super::{Cluster, Part, COMMAND_TIMEOUT};

/// The Lua function both append scripts share: appends `body` (update id `id`, empty for a
/// bridged Pusher event) to the stream, indexes it, trims the oldest entries while over a bound
/// (count, age in ms against Redis's clock, bytes), sets the keys' TTL; returns the entry id.
macro_rules! append_fn {
    () => {
        r"
local function append(id, body, max_count, max_age, max_bytes, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local cost = #id + #body + 64
  -- Larger than the whole bound: not kept (it would wipe the app's history).
  if cost > max_bytes then return '' end
  local entry = redis.call('XADD', KEYS[1], '*', 'i', id, 'u', body)
  if id ~= '' then
    redis.call('HSET', KEYS[2], id, entry)
  end
  local count = redis.call('XLEN', KEYS[1])
  local bytes
  if count == 1 then
    -- The stream was empty (or gone: evicted, deleted): the counter restarts from it.
    bytes = cost
    redis.call('SET', KEYS[3], cost)
  else
    bytes = redis.call('INCRBY', KEYS[3], cost)
  end
  -- At most TRIM_MAX deletions per call (Redis is not blocked by a large backlog: each append
  -- deletes more than it adds, so the stream still converges).
  local trimmed = 0
  while count > 0 and trimmed < 128 do
    local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
    if oldest == nil then break end
    local ms = tonumber(string.match(oldest[1], '^(%d+)'))
    if count > max_count or bytes > max_bytes or ms < now - max_age then
      local old_id, old_body = oldest[2][2], oldest[2][4]
      redis.call('XDEL', KEYS[1], oldest[1])
      if old_id ~= '' and redis.call('HGET', KEYS[2], old_id) == oldest[1] then
        redis.call('HDEL', KEYS[2], old_id)
      end
      bytes = redis.call('DECRBY', KEYS[3], #old_id + #old_body + 64)
      count = count - 1
      trimmed = trimmed + 1
    else
      break
    end
  end
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
  return entry
end
"
    };
}

/// Appends an update to the app's history stream (unless `keep` is 0 or the size bound is 0)
/// and publishes it as a kind-6 message; returns the entry id (empty when not kept).
///
/// KEYS: the stream, the index, the byte counter. ARGV: the app's Redis channel, the update id,
/// the update's body, keep (1/0), max entries, max age (ms), max bytes, the keys' TTL (ms).
pub const APPEND_SCRIPT: &str = concat!(
    append_fn!(),
    r"
local entry = ''
if ARGV[4] == '1' and tonumber(ARGV[5]) > 0 then
  entry = append(ARGV[2], ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]),
    tonumber(ARGV[8]))
end
redis.call('PUBLISH', ARGV[1], 'H' .. string.char(6) .. string.char(#entry) .. entry .. ARGV[3])
return entry
"
);

/// A Pusher publish forwarded by its origin (replacing its plain `PUBLISH`, or after the cache
/// script that stored it without publishing): when the app has Mercure subscribers somewhere
/// (its live key, whose value is `size:age_ms:bytes`, the history's bounds), appends it to the
/// history as a bridged event (body: flags 2, the channel, the frame); then publishes the
/// Pusher message (when ARGV[3] is 1), flagged `IN_HISTORY` (16, byte 3) when the append
/// succeeded, so every node decides per message whether its own bridge must make the Mercure
/// update (`cluster/message.rs`); then publishes the kept event as a kind-6 message. A failing
/// append (Redis out of memory, say) does not stop the Pusher publish: it runs under `pcall`,
/// and the script then answers an error reply the pipeline counts (`bus.rs`). Returns the entry
/// id, or an empty string.
///
/// KEYS: the stream, the index, the byte counter, the live key. ARGV: the app's Redis channel,
/// the bus message, publish (1/0), the frame's offset in the message, the Pusher channel.
pub const BRIDGE_SCRIPT: &str = concat!(
    append_fn!(),
    r"
local entry, body, failed = nil, nil, nil
local live = redis.call('GET', KEYS[4])
if live then
  local size, age, max_bytes = string.match(live, '^(%d+):(%d+):(%d+)$')
  if size then
    local channel = ARGV[5]
    body = string.char(2, math.floor(#channel / 256) % 256, #channel % 256) .. channel
      .. string.sub(ARGV[2], tonumber(ARGV[4]) + 1)
    local ok, result = pcall(append, '', body, tonumber(size), tonumber(age),
      tonumber(max_bytes), tonumber(age))
    if not ok then failed = result elseif result ~= '' then entry = result end
  end
end
if ARGV[3] == '1' then
  local message = ARGV[2]
  if entry then
    message = string.sub(message, 1, 2) .. string.char(bit.bor(string.byte(message, 3), 16))
      .. string.sub(message, 4)
  end
  redis.call('PUBLISH', ARGV[1], message)
end
if failed then
  local reason = failed
  if type(failed) == 'table' then reason = failed.err end
  return redis.error_reply('ERR mercure history: ' .. tostring(reason))
end
if not entry then return '' end
redis.call('PUBLISH', ARGV[1], 'H' .. string.char(6) .. string.char(#entry) .. entry .. body)
return entry
"
);

/// Reads up to `count` entries after a resume point, oldest first, after dropping the entries
/// past the age bound. Returns `{found, start, entry, body, entry, body, ...}`: `found` is 1
/// when the resume point was found (0: an update id not in the index, read from the start),
/// `start` the entry id read after (`0-0`: from the start).
///
/// With a byte budget (ARGV[5], 0 for none), the page ends after the entry whose body takes
/// the bodies read past it (so the caller tells a page cut by its budget from the stream's end).
///
/// KEYS: the stream, the index, the byte counter. ARGV: mode (`e` from the start, `i` after
/// update id ARGV[2], `x` after entry id ARGV[2], `y` after entry id ARGV[2] if the stream
/// still holds it, else from the start), ARGV[2], count, max age (ms), byte budget.
pub const READ_SCRIPT: &str = r"
local max_age = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- At most 128 deletions per call, as in the append (the read skips what is still too old).
for _ = 1, 128 do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if oldest == nil then break end
  local ms = tonumber(string.match(oldest[1], '^(%d+)'))
  if ms >= now - max_age then break end
  local id, body = oldest[2][2], oldest[2][4]
  redis.call('XDEL', KEYS[1], oldest[1])
  if redis.call('HGET', KEYS[2], id) == oldest[1] then
    redis.call('HDEL', KEYS[2], id)
  end
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('DECRBY', KEYS[3], #id + #body + 64)
  end
end
local found = 1
local start = '0-0'
if ARGV[1] == 'i' then
  local at = redis.call('HGET', KEYS[2], ARGV[2])
  if at then start = at else found = 0 end
elseif ARGV[1] == 'x' then
  start = ARGV[2]
elseif ARGV[1] == 'y' then
  if #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2]) > 0 then start = ARGV[2] else found = 0 end
end
local out = {found, start}
local budget = tonumber(ARGV[5] or '0')
local used = 0
local entries = redis.call('XRANGE', KEYS[1], '(' .. start, '+', 'COUNT', tonumber(ARGV[3]))
for _, e in ipairs(entries) do
  if tonumber(string.match(e[1], '^(%d+)')) < now - max_age then
    -- Still too old (past this call's deletions): not replayed.
    out[#out + 1] = e[1]
    out[#out + 1] = ''
  else
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][4]
    used = used + #e[2][4]
    if budget > 0 and used > budget then break end
  end
end
return out
";

/// A stream entry id (`<ms>-<seq>`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(pub u64, pub u64);

impl EntryId {
    /// Parses `<ms>-<seq>`.
    pub fn parse(text: &str) -> Option<EntryId> {
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// What bounds an app's history in Redis.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    /// Entries kept (0: none).
    pub size: usize,
    /// Age past which an entry leaves (also the keys' TTL after the last write).
    pub age: Duration,
    /// Bytes kept.
    pub bytes: usize,
}

/// Where a history read starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    /// From the stream's start.
    Start,
    /// After the entry of this update id (from the start when the index lacks it).
    AfterId(String),
    /// After this entry (the next page).
    AfterEntry(EntryId),
    /// After this entry if the stream still holds it (a bridged event's id), else from the
    /// start.
    AfterHeldEntry(EntryId),
}

/// One page of a history read.
#[derive(Debug)]
pub struct Page {
    /// Whether the resume point was found (an update id the index lacks reads from the start).
    pub found: bool,
    /// The entry read after.
    pub start: EntryId,
    /// The entries, oldest first: their ids and bodies ([`super::message::decode_mercure_body`]).
    pub entries: Vec<(EntryId, Bytes)>,
}

/// Redis is unreachable (or answered something unreadable): the caller falls back to the
/// node's own history.
#[derive(Debug, thiserror::Error)]
#[error("the Mercure history in Redis is unreachable: {0}")]
pub struct Unavailable(String, bool);

impl Unavailable {
    fn definite(reason: impl Into<String>) -> Unavailable {
        Unavailable(reason.into(), false)
    }

    /// A Redis error: an I/O failure other than a refused connection (a timeout, a connection
    /// lost while waiting) may have let the script run (ambiguous); an error reply did not.
    fn of(error: &redis::RedisError) -> Unavailable {
        let definite = error.is_connection_refusal() || !error.is_io_error();
        Unavailable(error.to_string(), !definite)
    }

    /// Whether the script may have run although its answer never came (a timeout, a
    /// connection lost while waiting): its effects (a publish) may still arrive.
    pub fn may_have_run(&self) -> bool {
        self.1
    }
}

static APPEND: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(APPEND_SCRIPT));
static READ: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(READ_SCRIPT));

/// The three keys of app `app_id`'s history.
fn keys(cluster: &str, app_id: &str) -> [String; 3] {
    let base = format!("{cluster}:mercure:{app_id}");
    [
        format!("{base}:log"),
        format!("{base}:idx"),
        format!("{base}:bytes"),
    ]
}

/// Live keys Redis did not take since the start ([`Cluster::mercure_live`]).
static LIVE_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

static BRIDGE: std::sync::LazyLock<(&str, String)> = std::sync::LazyLock::new(|| {
    let script = redis::Script::new(BRIDGE_SCRIPT);
    (BRIDGE_SCRIPT, script.get_hash().to_owned())
});

/// How long an app's live key lasts without a refresh (nodes with Mercure subscribers of the
/// app refresh it every [`LIVE_REFRESH`]).
pub const LIVE_TTL: Duration = Duration::from_secs(30);

/// How often a node refreshes the live keys of the apps it has Mercure subscribers of.
pub const LIVE_REFRESH: Duration = Duration::from_secs(10);

/// App `app_id`'s live key: set while some node has Mercure subscribers of the app (then its
/// Pusher events are bridged into the history, [`BRIDGE_SCRIPT`]).
fn live_key(cluster: &str, app_id: &str) -> String {
    format!("{cluster}:mercure:{app_id}:live")
}

/// Whether a forwarded Pusher frame may become a Mercure update (protocol events never do:
/// frames are serialized with `event` first).
pub(super) fn bridgeable(frame: &[u8]) -> bool {
    !frame.starts_with(b"{\"event\":\"pusher:")
        && !frame.starts_with(b"{\"event\":\"pusher_internal:")
}

/// Adds [`BRIDGE_SCRIPT`] for a forwarded Pusher publish (`payload`, its frame at `at`) of
/// app `app_id` on `channel` to `pipe` (the script publishes it too). Its reply is
/// not ignored: the caller counts the error replies of a failed append (`bus.rs`).
pub(super) fn bridge(
    pipe: &mut redis::Pipeline,
    cluster: &str,
    app_id: &str,
    redis_channel: &str,
    payload: &[u8],
    at: usize,
    channel: &str,
) {
    let keys = keys(cluster, app_id);
    pipe.cmd("EVALSHA")
        .arg(&BRIDGE.1)
        .arg(4)
        .arg(&keys[0])
        .arg(&keys[1])
        .arg(&keys[2])
        .arg(live_key(cluster, app_id))
        .arg(redis_channel)
        .arg(payload)
        .arg(1)
        .arg(at)
        .arg(channel);
}

/// Loads [`BRIDGE_SCRIPT`] in `pipe` (a restarted Redis forgot it).
pub(super) fn load_bridge(pipe: &mut redis::Pipeline) {
    pipe.cmd("SCRIPT").arg("LOAD").arg(BRIDGE.0).ignore();
}

/// The id of a bridged Pusher event kept as stream entry `entry`: the same on every node, a
/// `urn:uuid:` (version 8) holding the entry's two numbers (the milliseconds, 48 bits, and the
/// sequence, 62 bits), with a marker (`0x4d5`) telling it apart.
pub fn bridged_id(entry: EntryId) -> String {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&entry.0.to_be_bytes()[2..]);
    bytes[6..8].copy_from_slice(&0x04d5u16.to_be_bytes());
    bytes[8..].copy_from_slice(&(entry.1 & ((1 << 62) - 1)).to_be_bytes());
    // Version 8 (custom), RFC 4122 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    format!("urn:uuid:{}", uuid::Uuid::from_bytes(bytes))
}

/// The stream entry a [`bridged_id`] names, if it is one.
pub fn entry_of_bridged_id(id: &str) -> Option<EntryId> {
    let uuid = uuid::Uuid::parse_str(id.strip_prefix("urn:uuid:")?).ok()?;
    if uuid.get_version_num() != 8 {
        return None;
    }
    let bytes = uuid.as_bytes();
    if u16::from_be_bytes([bytes[6], bytes[7]]) & 0x0fff != 0x04d5 {
        return None;
    }
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&bytes[..6]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[8..]);
    Some(EntryId(
        u64::from_be_bytes(ms),
        u64::from_be_bytes(seq) & ((1 << 62) - 1),
    ))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Runs [`APPEND_SCRIPT`] on `conn`.
pub(super) async fn append(
    conn: &mut impl redis::aio::ConnectionLike,
    cluster: &str,
    app_id: &str,
    id: &str,
    body: &[u8],
    keep: bool,
    bounds: HistoryBounds,
) -> Result<Option<EntryId>, Unavailable> {
    let keys = keys(cluster, app_id);
    let mut invocation = APPEND.prepare_invoke();
    invocation
        .key(&keys[0])
        .key(&keys[1])
        .key(&keys[2])
        .arg(Cluster::app_channel(cluster, app_id))
        .arg(id)
        .arg(body)
        .arg(u8::from(keep))
        .arg(bounds.size)
        .arg(millis(bounds.age))
        .arg(bounds.bytes)
        .arg(millis(bounds.age));
    let answer = tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<String>(conn))
        .await
        .map_err(|_| Unavailable("timed out".into(), true))?
        .map_err(|e| Unavailable::of(&e))?;
    Ok(EntryId::parse(&answer))
}

/// Runs [`READ_SCRIPT`] on `conn`.
pub(super) async fn read(
    conn: &mut impl redis::aio::ConnectionLike,
    cluster: &str,
    app_id: &str,
    from: &ReadFrom,
    count: usize,
    age: Duration,
    max_bytes: usize,
) -> Result<Page, Unavailable> {
    let keys = keys(cluster, app_id);
    let (mode, arg) = match from {
        ReadFrom::Start => ("e", String::new()),
        ReadFrom::AfterId(id) => ("i", id.clone()),
        ReadFrom::AfterEntry(entry) => ("x", entry.to_string()),
        ReadFrom::AfterHeldEntry(entry) => ("y", entry.to_string()),
    };
    let mut invocation = READ.prepare_invoke();
    invocation
        .key(&keys[0])
        .key(&keys[1])
        .key(&keys[2])
        .arg(mode)
        .arg(arg)
        .arg(count.max(1))
        .arg(millis(age))
        .arg(max_bytes);
    let answer = tokio::time::timeout(
        COMMAND_TIMEOUT,
        invocation.invoke_async::<Vec<redis::Value>>(conn),
    )
    .await
    .map_err(|_| Unavailable::definite("timed out"))?
    .map_err(|e| Unavailable::definite(e.to_string()))?;
    let unreadable = || Unavailable::definite("an unreadable answer");
    let mut values = answer.into_iter();
    let found: i64 =
        redis::from_redis_value(values.next().ok_or_else(unreadable)?).map_err(|_| unreadable())?;
    let start: String =
        redis::from_redis_value(values.next().ok_or_else(unreadable)?).map_err(|_| unreadable())?;
    let start = EntryId::parse(&start).ok_or_else(unreadable)?;
    let mut entries = Vec::new();
    while let (Some(entry), Some(body)) = (values.next(), values.next()) {
        let entry: String = redis::from_redis_value(entry).map_err(|_| unreadable())?;
        let body: Vec<u8> = redis::from_redis_value(body).map_err(|_| unreadable())?;
        entries.push((
            EntryId::parse(&entry).ok_or_else(unreadable)?,
            Bytes::from(body),
        ));
    }
    Ok(Page {
        found: found == 1,
        start,
        entries,
    })
}

impl Cluster {
    /// Sends a Mercure update to every node, this one included (each delivers it when it hears
    /// it, in the history stream's order), appending it to the app's history in Redis when
    /// `keep`. Returns its entry id (`None` when not kept); `Err` when Redis did not take it
    /// (then the caller delivers it here alone).
    pub async fn mercure_publish(
        &self,
        app_id: &str,
        id: &str,
        body: &[u8],
        keep: bool,
        bounds: HistoryBounds,
    ) -> Result<Option<EntryId>, Unavailable> {
        let inner = &self.inner;
        let mut conn = inner.manager.get();
        let outcome = append(
            &mut conn,
            &inner.settings.name,
            app_id,
            id,
            body,
            keep,
            bounds,
        )
        .await;
        inner.health.record(
            Part::Publish,
            outcome.as_ref().map(|_| ()).map_err(|e| e.0.clone()),
        );
        outcome
    }

    /// One page of app `app_id`'s history in Redis after `from`: at most `count` entries, and
    /// (with `max_bytes` above 0) ending after the entry whose body takes the page's bodies
    /// past `max_bytes` (see [`READ_SCRIPT`]).
    pub async fn mercure_history(
        &self,
        app_id: &str,
        from: &ReadFrom,
        count: usize,
        age: Duration,
        max_bytes: usize,
    ) -> Result<Page, Unavailable> {
        let inner = &self.inner;
        let mut conn = inner.manager.get();
        read(
            &mut conn,
            &inner.settings.name,
            app_id,
            from,
            count,
            age,
            max_bytes,
        )
        .await
    }

    /// Sets app `app_id`'s live key for [`LIVE_TTL`] with the history's `bounds`: some node
    /// has Mercure subscribers of the app, so its Pusher events are bridged into the history.
    pub async fn mercure_live(&self, app_id: &str, bounds: HistoryBounds) {
        let inner = &self.inner;
        let mut conn = inner.manager.get();
        let value = format!("{}:{}:{}", bounds.size, millis(bounds.age), bounds.bytes);
        let mut command = redis::cmd("SET");
        let set = command
            .arg(live_key(&inner.settings.name, app_id))
            .arg(value)
            .arg("PX")
            .arg(millis(LIVE_TTL))
            .query_async::<()>(&mut conn);
        let failed = match tokio::time::timeout(COMMAND_TIMEOUT, set).await {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        // Without the key, Pusher events are not put in the history (nodes bridge them on
        // their own, under their own ids): worth a warning, at the first and every 100th.
        let count = LIVE_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if count == 1 || count % 100 == 0 {
            tracing::warn!(app_id, error = %failed, failures = count, "the Mercure live key was not set");
        }
    }

    /// Whether Redis is reachable as far as this node knows (`/ready`'s `redis: ok`).
    pub fn redis_ok(&self) -> bool {
        self.inner.health.state().status == "ok"
    }

    /// Whether this node hears app `app_id`'s Redis channel on a live pub/sub connection (so
    /// a Mercure update sent through Redis comes back here).
    pub fn hears(&self, app_id: &str) -> bool {
        self.inner.listening.acked(app_id)
    }

    /// The [`super::BridgeAck`] of a Pusher publish on `channel` (`frame`) this node delivered
    /// locally to app `app`'s Pusher subscribers: its Mercure subscribers here get it from the
    /// bridge unless the forward's bridge script kept it in the history (its kind-6 message then
    /// brings it), decided per publish. `None` when the app has no Mercure subscriber here or
    /// the node does not hear the app's channel (its bridge delivered it at once).
    pub fn bridge_ack_for(
        &self,
        app: &std::sync::Arc<crate::hub::AppHub>,
        channel: &str,
        frame: &Bytes,
        usage: std::sync::Arc<crate::tenants::AppUsage>,
    ) -> Option<super::BridgeAck> {
        if !app.bridge_active() || !self.hears(&app.id()) {
            return None;
        }
        let (app, channel, frame) = (app.clone(), channel.to_owned(), frame.clone());
        Some(super::BridgeAck::new(move |outcome| {
            if outcome != super::Bridged::Kept {
                usage.count(app.bridge_unkept(&channel, &frame) as u64);
            }
        }))
    }

    /// Sends the Pusher side of a Mercure update to the other nodes (their Pusher subscribers
    /// only: their Mercure subscribers get the update itself).
    pub fn forward_unbridged(&self, app_id: &str, channel: &str, frame: &[u8]) {
        let payload = super::message::encode_unbridged(&self.inner.instance, channel, frame);
        self.enqueue(app_id, payload);
    }
}

#[cfg(test)]
mod tests;
