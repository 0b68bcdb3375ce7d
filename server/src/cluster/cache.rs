//! Cache channels' last event, cluster-wide: the node that publishes a kept event to a cache
//! channel also sets `{cluster}:cache:{app_id}:{channel}` to the serialized frame (TTL
//! [`crate::hub::CACHE_TTL`]) in the same script call as its `PUBLISH` ([`KEEP_SCRIPT`],
//! [`Cluster::forward_kept`], `bus.rs`: atomic, so no node hears of an event Redis has not
//! stored yet); a node whose own cache misses when a client subscribes reads it
//! ([`Cluster::cached_event`], bounded by [`CACHE_READ_TIMEOUT`]) and replays it (keeping it
//! locally from then on, for the rest of its TTL in Redis; a local copy not known to be the
//! newest is replayed only when Redis has none or does not answer), so a subscriber on any node gets the last event published on any
//! node, and `pusher:cache_miss` (and its webhook) only when the cluster has nothing. The REST
//! API's `cache` attribute (`GET /channels/{name}?info=cache`) is read from Redis too
//! ([`Cluster::read_cached_event`]; this node's copy only when Redis does not answer), so a
//! trigger answered by one node is what the next query on any node sees.
//!
//! Bounds: the app's cache caps hold cluster-wide in Redis: the script keeps an index per app
//! (`{cluster}:cache:idx:{app_id}`: channel -> bytes, and the total under `#b`, a name no
//! channel can have), and past the app's cache channels or bytes (counted as the local cache
//! counts them: data and frame) it publishes without storing (and drops the channel's older
//! event, as the local cache does), after pruning the entries whose keys expired. Each key
//! expires with the TTL; the index lives as long as its newest key.

use std::time::Duration;

use bytes::Bytes;

use super::{Cluster, Part};

/// What a kept publish to a cache channel stores, and within which caps (0: unlimited).
#[derive(Debug)]
pub struct Keep {
    /// The channel's last-event key.
    pub(super) key: String,
    /// The app's index of its stored events.
    pub(super) index: String,
    pub(super) channel: String,
    /// Where the frame starts in the publish's payload.
    pub(super) at: usize,
    /// Its bytes as the caps count them (data and frame).
    pub(super) cost: usize,
    pub(super) max_channels: usize,
    pub(super) max_bytes: usize,
}

/// Stores a cache channel's last event within the app's caps and publishes the message, in one
/// atomic step. KEYS: the channel's key, the app's index. ARGV: the channel, the TTL (seconds),
/// the cost, the caps on channels and bytes (0: none), the prefix of the app's cache keys, the
/// Redis channel (empty: not published here, the Mercure bridge script that follows it publishes
/// it), the payload, and where the frame starts in it. Returns 1 when stored.
pub(super) const KEEP_SCRIPT: &str = r"
local key, idx = KEYS[1], KEYS[2]
local channel, ttl, cost = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local max_n, max_b, prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local payload, at = ARGV[8], tonumber(ARGV[9])
redis.call('HINCRBY', idx, '#b', 0)
local old = redis.call('HGET', idx, channel)
old = old and tonumber(old) or 0
local had = redis.call('HEXISTS', idx, channel) == 1
local function over()
  local n = redis.call('HLEN', idx) - 1
  local b = tonumber(redis.call('HGET', idx, '#b'))
  if had then
    n = n - 1
    b = b - old
  end
  return (max_n > 0 and n >= max_n) or (max_b > 0 and b + cost > max_b)
end
if over() then
  -- Entries whose key expired still count: drop them first.
  for _, f in ipairs(redis.call('HKEYS', idx)) do
    if f ~= '#b' and f ~= channel and redis.call('EXISTS', prefix .. f) == 0 then
      local c = tonumber(redis.call('HGET', idx, f)) or 0
      redis.call('HDEL', idx, f)
      redis.call('HINCRBY', idx, '#b', -c)
    end
  end
end
local kept = 0
if over() then
  -- Nothing is kept for the channel now, as on the local cache: no older event is replayed.
  if had then
    redis.call('HDEL', idx, channel)
    redis.call('HINCRBY', idx, '#b', -old)
  end
  redis.call('DEL', key)
else
  redis.call('SET', key, string.sub(payload, at + 1), 'EX', ttl)
  redis.call('HSET', idx, channel, cost)
  redis.call('HINCRBY', idx, '#b', cost - old)
  kept = 1
end
redis.call('EXPIRE', idx, ttl)
if ARGV[7] ~= '' then
  redis.call('PUBLISH', ARGV[7], payload)
end
return kept
";

/// How long a subscribe waits for Redis's copy before answering from the local cache alone.
pub const CACHE_READ_TIMEOUT: Duration = Duration::from_millis(500);

impl Cluster {
    /// Cache channel `channel`'s last event cluster-wide (the frame as its publisher serialized
    /// it) and how long it has left to live, `None` when there is none or Redis did not answer
    /// within [`CACHE_READ_TIMEOUT`].
    pub async fn cached_event(&self, app_id: &str, channel: &str) -> Option<(Bytes, Duration)> {
        self.read_cached_event(app_id, channel).await.ok().flatten()
    }

    /// Like [`Cluster::cached_event`], telling "none in Redis" (`Ok(None)`) from "Redis did not
    /// answer" (`Err`): the REST API answers a channel's `cache` attribute from Redis, and from
    /// this node's copy only when Redis cannot say.
    pub async fn read_cached_event(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<Option<(Bytes, Duration)>, ()> {
        let key = Cluster::cache_key(&self.inner.settings.name, app_id, channel);
        let mut conn = self.inner.users.manager.get();
        let mut pipe = redis::pipe();
        pipe.get(&key).pttl(&key);
        let read = pipe.query_async::<(Option<Vec<u8>>, i64)>(&mut conn);
        match tokio::time::timeout(CACHE_READ_TIMEOUT, read).await {
            Ok(Ok((Some(value), ttl))) if ttl > 0 => Ok(Some((
                Bytes::from(value),
                Duration::from_millis(ttl.unsigned_abs()),
            ))),
            Ok(Ok(_)) => Ok(None),
            Ok(Err(error)) => {
                self.inner
                    .health
                    .record(Part::Publish, Err(error.to_string()));
                Err(())
            }
            Err(_) => {
                tracing::debug!(app_id, "reading a cache channel's last event timed out");
                Err(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::ClusterSettings;
    use crate::locks::MutexExt;

    #[tokio::test]
    async fn only_kept_cache_channel_publishes_within_the_apps_budget_are_stored() {
        // Nothing listens on port 1: the node starts degraded and nothing takes from the queue.
        let settings = ClusterSettings::new("redis://127.0.0.1:1/", "cache-test");
        let cluster = Cluster::connect(settings, Clock::manual(0))
            .await
            .expect("starts degraded");
        let mut queue = cluster
            .inner
            .outgoing_rx
            .lock_or_recover()
            .take()
            .expect("the queue");
        let channel = |name: &str| crate::protocol::ChannelName::parse(name, 200).expect("a name");
        let frame = br#"{"event":"e","channel":"cache-a","data":"12345"}"#;
        let unlimited = crate::protocol::Limits::default();
        // Larger than the app's cache budget (data and frame, as the local cache counts it).
        let small = crate::protocol::Limits {
            max_cache_channels: 1,
            max_event_payload_bytes: (frame.len() + 4) as u64,
            ..Default::default()
        };
        let enough = crate::protocol::Limits {
            max_event_payload_bytes: (frame.len() + 5) as u64,
            ..small
        };
        cluster.forward_kept(
            "1",
            &channel("cache-a"),
            frame,
            "12345",
            None,
            &unlimited,
            None,
        );
        cluster.forward_kept(
            "1",
            &channel("plain"),
            frame,
            "12345",
            None,
            &unlimited,
            None,
        );
        cluster.forward_kept("1", &channel("cache-b"), frame, "12345", None, &small, None);
        cluster.forward_kept(
            "1",
            &channel("cache-c"),
            frame,
            "12345",
            None,
            &enough,
            None,
        );
        type Stored = Option<(String, String, Vec<u8>, usize, usize, usize)>;
        let stored: Vec<Stored> = (0..4)
            .map(|_| {
                let outgoing = queue.try_recv().expect("queued");
                outgoing.cache.map(|keep| {
                    (
                        keep.key,
                        keep.index,
                        outgoing.payload[keep.at..].to_vec(),
                        keep.cost,
                        keep.max_channels,
                        keep.max_bytes,
                    )
                })
            })
            .collect();
        let index = "cache-test:cache:idx:1".to_owned();
        let cost = frame.len() + 5;
        assert_eq!(
            stored,
            vec![
                Some((
                    "cache-test:cache:1:cache-a".to_owned(),
                    index.clone(),
                    frame.to_vec(),
                    cost,
                    0,
                    0
                )),
                None,
                None,
                Some((
                    "cache-test:cache:1:cache-c".to_owned(),
                    index,
                    frame.to_vec(),
                    cost,
                    1,
                    cost
                )),
            ]
        );
    }
}
