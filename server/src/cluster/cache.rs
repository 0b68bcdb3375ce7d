//! Cache channels' last event, cluster-wide: the node that publishes a kept event to a cache
//! channel also sets `{cluster}:cache:{app_id}:{channel}` to the serialized frame (TTL
//! [`crate::hub::CACHE_TTL`]) in the same pipeline as its `PUBLISH` ([`Cluster::forward_kept`],
//! `bus.rs`); a node whose own cache misses when a client subscribes reads it
//! ([`Cluster::cached_event`], bounded by [`CACHE_READ_TIMEOUT`]) and replays it (keeping it
//! locally from then on, for the rest of its TTL in Redis; a local copy not known to be the
//! newest is replayed only when Redis has none or does not answer), so a subscriber on any node gets the last event published on any
//! node, and `pusher:cache_miss` (and its webhook) only when the cluster has nothing.
//!
//! Bounds: a value is one frame, never larger than the app's cache budget (a larger one is not
//! stored, as the local cache would not keep it); each key expires with the TTL.

use std::time::Duration;

use bytes::Bytes;

use super::{Cluster, Part};

/// How long a subscribe waits for Redis's copy before answering from the local cache alone.
pub const CACHE_READ_TIMEOUT: Duration = Duration::from_millis(500);

impl Cluster {
    /// Cache channel `channel`'s last event cluster-wide (the frame as its publisher serialized
    /// it) and how long it has left to live, `None` when there is none or Redis did not answer
    /// within [`CACHE_READ_TIMEOUT`].
    pub async fn cached_event(&self, app_id: &str, channel: &str) -> Option<(Bytes, Duration)> {
        let key = Cluster::cache_key(&self.inner.settings.name, app_id, channel);
        let mut conn = self.inner.users.manager.get();
        let mut pipe = redis::pipe();
        pipe.get(&key).pttl(&key);
        let read = pipe.query_async::<(Option<Vec<u8>>, i64)>(&mut conn);
        match tokio::time::timeout(CACHE_READ_TIMEOUT, read).await {
            Ok(Ok((Some(value), ttl))) if ttl > 0 => Some((
                Bytes::from(value),
                Duration::from_millis(ttl.unsigned_abs()),
            )),
            Ok(Ok(_)) => None,
            Ok(Err(error)) => {
                self.inner
                    .health
                    .record(Part::Publish, Err(error.to_string()));
                None
            }
            Err(_) => {
                tracing::debug!(app_id, "reading a cache channel's last event timed out");
                None
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
        cluster.forward_kept("1", &channel("cache-a"), frame, "12345", None, None);
        cluster.forward_kept("1", &channel("plain"), frame, "12345", None, None);
        // Larger than the app's cache budget (data and frame, as the local cache counts it).
        cluster.forward_kept(
            "1",
            &channel("cache-b"),
            frame,
            "12345",
            None,
            Some(frame.len()),
        );
        cluster.forward_kept(
            "1",
            &channel("cache-c"),
            frame,
            "12345",
            None,
            Some(frame.len() + 5),
        );
        let stored: Vec<Option<(String, Vec<u8>)>> = (0..4)
            .map(|_| {
                let outgoing = queue.try_recv().expect("queued");
                outgoing
                    .cache
                    .map(|(key, at)| (key, outgoing.payload[at..].to_vec()))
            })
            .collect();
        assert_eq!(
            stored,
            vec![
                Some(("cache-test:cache:1:cache-a".to_owned(), frame.to_vec())),
                None,
                None,
                Some(("cache-test:cache:1:cache-c".to_owned(), frame.to_vec())),
            ]
        );
    }
}
