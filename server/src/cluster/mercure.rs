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
/// KEYS: the stream, the index, the byte counter. ARGV: mode (`e` from the start, `i` after
/// update id ARGV[2], `x` after entry id ARGV[2], `y` after entry id ARGV[2] if the stream
/// still holds it, else from the start), ARGV[2], count, max age (ms).
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
local entries = redis.call('XRANGE', KEYS[1], '(' .. start, '+', 'COUNT', tonumber(ARGV[3]))
for _, e in ipairs(entries) do
  if tonumber(string.match(e[1], '^(%d+)')) < now - max_age then
    -- Still too old (past this call's deletions): not replayed.
    out[#out + 1] = e[1]
    out[#out + 1] = ''
  else
  out[#out + 1] = e[1]
  out[#out + 1] = e[2][4]
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
        .arg(millis(age));
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

    /// One page of app `app_id`'s history in Redis after `from` (see [`READ_SCRIPT`]).
    pub async fn mercure_history(
        &self,
        app_id: &str,
        from: &ReadFrom,
        count: usize,
        age: Duration,
    ) -> Result<Page, Unavailable> {
        let inner = &self.inner;
        let mut conn = inner.manager.get();
        read(&mut conn, &inner.settings.name, app_id, from, count, age).await
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
        match tokio::time::timeout(COMMAND_TIMEOUT, set).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(app_id, %error, "the Mercure live key was not set"),
            Err(_) => tracing::debug!(app_id, "the Mercure live key was not set (timed out)"),
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

    /// Sends the Pusher side of a Mercure update to the other nodes (their Pusher subscribers
    /// only: their Mercure subscribers get the update itself).
    pub fn forward_unbridged(&self, app_id: &str, channel: &str, frame: &[u8]) {
        let payload = super::message::encode_unbridged(&self.inner.instance, channel, frame);
        self.enqueue(app_id, payload);
    }
}

#[cfg(test)]
mod tests {
    use super::super::message;
    use super::super::test_redis::redis_server;
    use super::*;

    const BOUNDS: HistoryBounds = HistoryBounds {
        size: 3,
        age: Duration::from_secs(60),
        bytes: 1 << 20,
    };

    fn body(id: &str) -> Bytes {
        message::encode_mercure_body(false, &["t".to_owned()], id, b"data: x\n\n")
    }

    async fn ids(
        conn: &mut redis::aio::MultiplexedConnection,
        from: ReadFrom,
    ) -> (bool, Vec<String>) {
        let page = read(conn, "c", "1", &from, 100, BOUNDS.age).await.unwrap();
        let ids = page
            .entries
            .iter()
            .map(|(_, body)| message::decode_mercure_body(body).unwrap().id.to_owned())
            .collect();
        (page.found, ids)
    }

    #[tokio::test]
    async fn appends_publish_in_stream_order_and_reads_resume_after_an_id() {
        let server = redis_server().await;
        let (client, mut conn) = server.connect().await;
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe("c:app:1").await.unwrap();
        let mut heard = pubsub.into_on_message();
        let mut entries = Vec::new();
        for id in ["a", "b", "c", "d"] {
            let entry = append(&mut conn, "c", "1", id, &body(id), true, BOUNDS)
                .await
                .unwrap();
            entries.push(entry.expect("kept"));
        }
        use futures_util::StreamExt;
        for (id, entry) in ["a", "b", "c", "d"].iter().zip(&entries) {
            let msg = heard.next().await.unwrap();
            let payload: Vec<u8> = msg.get_payload().unwrap();
            let (got, body) = message::decode_mercure(&payload).unwrap();
            assert_eq!(message::decode_mercure_body(body).unwrap().id, *id);
            assert_eq!(got, Some(entry.to_string().as_str()));
        }
        assert!(entries.windows(2).all(|w| w[0] < w[1]), "ordered");
        // Size 3: `a` was trimmed, and its index entry with it.
        assert_eq!(
            ids(&mut conn, ReadFrom::Start).await,
            (true, vec!["b".into(), "c".into(), "d".into()])
        );
        assert_eq!(
            ids(&mut conn, ReadFrom::AfterId("c".into())).await,
            (true, vec!["d".into()])
        );
        assert_eq!(
            ids(&mut conn, ReadFrom::AfterId("d".into())).await,
            (true, vec![])
        );
        assert_eq!(
            ids(&mut conn, ReadFrom::AfterId("a".into())).await,
            (false, vec!["b".into(), "c".into(), "d".into()]),
            "too old: everything still there"
        );
        assert_eq!(
            ids(&mut conn, ReadFrom::AfterEntry(entries[2])).await,
            (true, vec!["d".into()])
        );
        let indexed: usize = redis::cmd("HLEN")
            .arg("c:mercure:1:idx")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(indexed, 3);
        // A repeated id: the latest wins, and trimming the older entry keeps the index.
        append(&mut conn, "c", "1", "b", &body("b"), true, BOUNDS)
            .await
            .unwrap();
        assert_eq!(
            ids(&mut conn, ReadFrom::AfterId("b".into())).await,
            (true, vec![])
        );
        append(&mut conn, "c", "1", "e", &body("e"), true, BOUNDS)
            .await
            .unwrap();
        assert_eq!(
            ids(&mut conn, ReadFrom::AfterId("b".into())).await,
            (true, vec!["e".into()])
        );
        // Not kept: published, not appended.
        let entry = append(&mut conn, "c", "1", "s", &body("s"), false, BOUNDS)
            .await
            .unwrap();
        assert_eq!(entry, None);
        assert_eq!(ids(&mut conn, ReadFrom::Start).await.1.len(), 3);
    }

    #[tokio::test]
    async fn the_stream_is_bounded_by_bytes_and_age_and_expires() {
        let server = redis_server().await;
        let (_client, mut conn) = server.connect().await;
        let one = body("x0").len() + 2 + 64;
        let bounds = HistoryBounds {
            size: 100,
            age: Duration::from_millis(800),
            bytes: one * 2,
        };
        for n in 0..5 {
            let id = format!("x{n}");
            append(&mut conn, "c", "1", &id, &body(&id), true, bounds)
                .await
                .unwrap();
        }
        let page = read(&mut conn, "c", "1", &ReadFrom::Start, 100, bounds.age)
            .await
            .unwrap();
        assert_eq!(page.entries.len(), 2, "two fit the byte bound");
        let bytes: usize = redis::cmd("GET")
            .arg("c:mercure:1:bytes")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(bytes, one * 2, "the counter follows the trims");
        let ttl: i64 = redis::cmd("PTTL")
            .arg("c:mercure:1:log")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 800, "expires with the age bound: {ttl}");
        // Past the age, a read finds nothing (and removes them), then the keys expire.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let page = read(
            &mut conn,
            "c",
            "1",
            &ReadFrom::Start,
            100,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert!(page.entries.is_empty(), "older than the age bound");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let exists: usize = redis::cmd("EXISTS")
            .arg("c:mercure:1:log")
            .arg("c:mercure:1:idx")
            .arg("c:mercure:1:bytes")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0, "an idle app's history leaves Redis");
        // A history of size 0 keeps nothing.
        let none = HistoryBounds { size: 0, ..bounds };
        assert_eq!(
            append(&mut conn, "c", "1", "z", &body("z"), true, none)
                .await
                .unwrap(),
            None
        );
    }

    #[test]
    fn bridged_ids_name_their_entry_and_nothing_else() {
        for entry in [
            EntryId(1_700_000_000_123, 0),
            EntryId(1, 7),
            EntryId((1 << 48) - 1, (1 << 62) - 1),
        ] {
            let id = bridged_id(entry);
            assert!(id.starts_with("urn:uuid:"), "{id}");
            assert_eq!(
                uuid::Uuid::parse_str(&id[9..]).unwrap().get_version_num(),
                8
            );
            assert_eq!(entry_of_bridged_id(&id), Some(entry), "{id}");
        }
        assert_ne!(bridged_id(EntryId(5, 1)), bridged_id(EntryId(5, 2)));
        assert_eq!(
            entry_of_bridged_id(&format!("urn:uuid:{}", uuid::Uuid::new_v4())),
            None
        );
        assert_eq!(entry_of_bridged_id("urn:uuid:not-a-uuid"), None);
        assert_eq!(entry_of_bridged_id("p-1"), None);
    }

    #[test]
    fn protocol_frames_are_not_bridgeable() {
        assert!(bridgeable(
            br#"{"event":"created","channel":"c","data":"{}"}"#
        ));
        assert!(!bridgeable(
            br#"{"event":"pusher_internal:member_added","channel":"c"}"#
        ));
        assert!(!bridgeable(
            br#"{"event":"pusher:subscription_count","channel":"c"}"#
        ));
    }

    #[test]
    fn entry_ids_parse_and_order_numerically() {
        let a = EntryId::parse("9-5").unwrap();
        let b = EntryId::parse("10-0").unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "10-0");
        assert_eq!(EntryId::parse("x-1"), None);
        assert_eq!(EntryId::parse("1"), None);
    }

    /// H3 and H1 of the review: app 1's history append fails (its stream key holds a string),
    /// app 2's works. In one pipeline (as `bus.rs` sends them, errors per command), app 1's
    /// Pusher message is still published, unflagged (nodes bridge it themselves) and with no
    /// kind-6 message, its reply alone is an error, and app 2's is flagged and followed by its
    /// kind-6 message. Without a live key nothing is flagged either.
    #[tokio::test]
    async fn a_failing_append_fails_only_its_reply_and_the_message_says_what_was_kept() {
        use futures_util::StreamExt;
        let server = redis_server().await;
        let (client, mut conn) = server.connect().await;
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub
            .subscribe(&["c:app:1", "c:app:2", "c:app:3"])
            .await
            .unwrap();
        let mut heard = pubsub.into_on_message();
        let _: () = redis::cmd("SET")
            .arg("c:mercure:1:log")
            .arg("not a stream")
            .query_async(&mut conn)
            .await
            .unwrap();
        for app in ["1", "2"] {
            let _: () = redis::cmd("SET")
                .arg(live_key("c", app))
                .arg("10:60000:100000")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let frame = br#"{"event":"created","channel":"orders","data":"{}"}"#;
        let payload = message::encode("node-a", "orders", None, false, frame);
        let at = payload.len() - frame.len();
        let mut pipe = redis::pipe();
        load_bridge(&mut pipe);
        for app in ["1", "2", "3"] {
            let to = format!("c:app:{app}");
            bridge(&mut pipe, "c", app, &to, &payload, at, "orders");
        }
        pipe.ignore_errors();
        let replies: Vec<redis::Value> = pipe.query_async(&mut conn).await.expect("not failed");
        assert_eq!(replies.len(), 3, "{replies:?}");
        assert!(
            matches!(&replies[0], redis::Value::ServerError(e) if format!("{e:?}").contains("mercure history: WRONGTYPE")),
            "{replies:?}"
        );
        assert!(matches!(&replies[1], redis::Value::BulkString(b) if !b.is_empty()));
        assert!(matches!(&replies[2], redis::Value::BulkString(b) if b.is_empty()));
        let mut got = Vec::new();
        for _ in 0..4 {
            let msg = tokio::time::timeout(Duration::from_secs(2), heard.next())
                .await
                .expect("a message")
                .unwrap();
            let bytes: Vec<u8> = msg.get_payload().unwrap();
            got.push((msg.get_channel_name().to_owned(), bytes));
        }
        let in_history = |bytes: &[u8]| message::decode(bytes).map(|m| m.in_history);
        assert_eq!(got[0].0, "c:app:1");
        assert_eq!(
            in_history(&got[0].1),
            Some(false),
            "app 1: not kept, not flagged"
        );
        assert_eq!(got[1].0, "c:app:2");
        assert_eq!(in_history(&got[1].1), Some(true), "app 2: kept, flagged");
        let decoded = message::decode(&got[1].1).unwrap();
        assert_eq!((decoded.channel, decoded.frame), ("orders", &frame[..]));
        assert_eq!(got[2].0, "c:app:2");
        assert!(
            message::decode_mercure(&got[2].1).is_some(),
            "app 2's kind 6"
        );
        assert_eq!(got[3].0, "c:app:3");
        assert_eq!(in_history(&got[3].1), Some(false), "app 3: no live key");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), heard.next())
                .await
                .is_err(),
            "no kind 6 for app 1 or 3"
        );
    }

    /// H4 of the review: an append whose answer does not come in time (Redis paused past the
    /// command timeout) may still run: it says so, and its kind-6 message does arrive later. An
    /// error reply is a definite failure.
    #[tokio::test]
    async fn an_append_that_timed_out_may_have_run_and_an_error_reply_did_not() {
        use futures_util::StreamExt;
        let server = redis_server().await;
        let (client, mut conn) = server.connect().await;
        let (_, mut admin) = server.connect().await;
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.subscribe("c:app:1").await.unwrap();
        let mut heard = pubsub.into_on_message();
        // The script is loaded (else the paused EVALSHA would find none and not run).
        append(&mut conn, "c", "3", "z", &body("z"), true, BOUNDS)
            .await
            .unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(COMMAND_TIMEOUT.as_millis() as u64 + 1_000)
            .arg("WRITE")
            .query_async(&mut admin)
            .await
            .unwrap();
        let error = append(&mut conn, "c", "1", "a", &body("a"), true, BOUNDS)
            .await
            .expect_err("timed out");
        assert!(error.may_have_run(), "{error}");
        let msg = tokio::time::timeout(Duration::from_secs(3), heard.next())
            .await
            .expect("the script ran after all")
            .unwrap();
        let payload: Vec<u8> = msg.get_payload().unwrap();
        let (_, body_heard) = message::decode_mercure(&payload).unwrap();
        assert_eq!(message::decode_mercure_body(body_heard).unwrap().id, "a");
        let _: () = redis::cmd("SET")
            .arg("c:mercure:2:log")
            .arg("not a stream")
            .query_async(&mut admin)
            .await
            .unwrap();
        let error = append(&mut conn, "c", "2", "b", &body("b"), true, BOUNDS)
            .await
            .expect_err("an error reply");
        assert!(!error.may_have_run(), "{error}");
    }

    /// M3 of the review: a script call deletes at most 128 entries (a lowered size does not
    /// block Redis for every tenant); the stream still converges, as each append deletes more
    /// than it adds.
    #[tokio::test]
    async fn one_append_trims_at_most_128_entries_and_the_stream_converges() {
        let server = redis_server().await;
        let (_, mut conn) = server.connect().await;
        let large = HistoryBounds {
            size: 1_000,
            ..BOUNDS
        };
        for n in 0..300 {
            let id = format!("a{n}");
            append(&mut conn, "c", "1", &id, &body(&id), true, large)
                .await
                .unwrap();
        }
        let one = HistoryBounds { size: 1, ..BOUNDS };
        let len = |conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("XLEN")
                    .arg("c:mercure:1:log")
                    .query_async::<usize>(&mut conn)
                    .await
                    .unwrap()
            }
        };
        append(&mut conn, "c", "1", "b0", &body("b0"), true, one)
            .await
            .unwrap();
        assert_eq!(len(&mut conn).await, 301 - 128);
        append(&mut conn, "c", "1", "b1", &body("b1"), true, one)
            .await
            .unwrap();
        assert_eq!(len(&mut conn).await, 301 - 128 + 1 - 128);
        append(&mut conn, "c", "1", "b2", &body("b2"), true, one)
            .await
            .unwrap();
        assert_eq!(len(&mut conn).await, 1, "converged");
        assert_eq!(
            ids(&mut conn, ReadFrom::Start).await,
            (true, vec!["b2".into()])
        );
    }

    /// M4 and M6 of the review: a byte counter that outlived its stream (the stream evicted or
    /// deleted) restarts from the next append instead of emptying the history forever; an
    /// update larger than the byte bound is published but not kept (the history stays).
    #[tokio::test]
    async fn the_byte_counter_heals_and_an_oversized_update_does_not_wipe_the_history() {
        let server = redis_server().await;
        let (_, mut conn) = server.connect().await;
        append(&mut conn, "c", "1", "a", &body("a"), true, BOUNDS)
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg("c:mercure:1:log")
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("c:mercure:1:bytes")
            .arg(BOUNDS.bytes * 4)
            .query_async(&mut conn)
            .await
            .unwrap();
        append(&mut conn, "c", "1", "b", &body("b"), true, BOUNDS)
            .await
            .unwrap()
            .expect("kept");
        append(&mut conn, "c", "1", "c", &body("c"), true, BOUNDS)
            .await
            .unwrap()
            .expect("kept");
        assert_eq!(
            ids(&mut conn, ReadFrom::Start).await,
            (true, vec!["b".into(), "c".into()])
        );
        let bytes: usize = redis::cmd("GET")
            .arg("c:mercure:1:bytes")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(bytes, 2 * (1 + body("b").len() + 64));
        let small = HistoryBounds {
            bytes: 300,
            ..BOUNDS
        };
        let big = message::encode_mercure_body(false, &["t".to_owned()], "big", &[b'x'; 400]);
        let entry = append(&mut conn, "c", "1", "big", &big, true, small)
            .await
            .unwrap();
        assert_eq!(entry, None, "not kept");
        assert_eq!(
            ids(&mut conn, ReadFrom::Start).await,
            (true, vec!["b".into(), "c".into()]),
            "the history stays"
        );
    }
}
