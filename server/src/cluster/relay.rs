//! What the HTTP fallback sessions (pusher-js's `xhr_streaming` and `xhr_polling`) need of the
//! cluster so that a session's requests may land on any node: who holds a session, and a
//! mailbox per node to forward requests and their answers through Redis (no node-to-node
//! connection, no node addresses).
//!
//! - Holds: `{cluster}:xs:{session}` holds the id of the node that runs the session (`SET` by
//!   [`HOLD_SCRIPT`] when a node opens it, refreshed by the holder every [`HOLD_REFRESH`] with
//!   a TTL of [`HOLD_TTL`], deleted by the holder when the session ends). A hold whose node's
//!   heartbeat key (`{cluster}:node:{id}`, [`super::registry`]) is gone names nobody.
//! - Mailboxes: each node listens to `{cluster}:xhr:{node_id}` on a pub/sub connection of its
//!   own ([`mailbox_loop`]) and hands what arrives, as opaque bytes, to the transport layer
//!   ([`Cluster::take_mailbox`]), which defines the messages. [`Cluster::post`] publishes to a
//!   node's mailbox and tells whether anyone heard it.
//!
//! Every call is bounded by the cluster's command timeout; Redis unreachable is an error the
//! caller maps (the transport answers 503 or serves the request on its own node).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::{Cluster, Inner, COMMAND_TIMEOUT};
use crate::locks::MutexExt;

/// How long a session's hold lives without a refresh.
pub const HOLD_TTL: Duration = Duration::from_secs(60);

/// How often a node refreshes the holds of its sessions.
pub const HOLD_REFRESH: Duration = Duration::from_secs(20);

/// Messages received on this node's mailbox and not yet taken by the transport, and their bytes;
/// past either they are dropped (a forwarded answer that loses a part is ended by its reader,
/// which notices the gap, and its session closed), except urgent ones (see
/// [`MAILBOX_URGENT_QUEUE`]).
const MAILBOX_QUEUE: usize = 1_024;
const MAILBOX_BYTES: usize = 16 * 1024 * 1024;
/// A message its sender marked urgent (the transport's small control messages: an answer's
/// head and end, a cancel, a beat), at most [`MAILBOX_URGENT_BYTES`] long, is queued past
/// [`MAILBOX_QUEUE`] and [`MAILBOX_BYTES`], up to this many messages: losing one would leave a
/// request hanging or served for nobody until a timeout. Decided by the sender's mark, not by
/// size: small bulk messages (short answer parts) cannot use up these places.
const MAILBOX_URGENT_QUEUE: usize = 8 * MAILBOX_QUEUE;
/// The longest urgent message queued past the bulk bounds (a longer one is queued as bulk).
const MAILBOX_URGENT_BYTES: usize = 4 * 1024;
/// The first byte of an urgent message published to a mailbox (a bulk one is published as it
/// is). A space: a node of an older version, which reads its mailbox's messages as JSON without
/// this mark, reads a marked message all the same.
const MARK_URGENT: u8 = b' ';

/// How often the mailbox's pub/sub connection is pinged (a silently dead one is re-made).
const PING_EVERY: Duration = Duration::from_secs(3);

/// The longest wait between two attempts to re-make the mailbox's pub/sub connection.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Answers the live holder of session key `KEYS[1]`: its node id when the hold names another
/// node whose heartbeat key (`ARGV[2]` .. id) exists; otherwise, when `ARGV[4]` is `1`, this
/// node (`ARGV[1]`) takes the hold for `ARGV[3]` seconds and is answered; else nil.
const HOLD_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. holder) == 1 then
  return holder
end
if ARGV[4] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  return ARGV[1]
end
if holder == ARGV[1] then return holder end
return false
";

/// Refreshes the holds `KEYS` for node `ARGV[1]` (`ARGV[2]` seconds): each that is missing or
/// already this node's (another node's is left alone).
const REFRESH_SCRIPT: &str = r"
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if not holder or holder == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
  end
end
return 1
";

/// Deletes hold `KEYS[1]` if it still names node `ARGV[1]`.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

/// Holds refreshed per script call at most.
const REFRESH_CHUNK: usize = 500;

/// Redis could not be asked (unreachable, timed out, or an error).
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RelayError(String);

/// The relay's part of the cluster's state.
pub(super) struct Shared {
    /// Its own connection: a tenant's large publishes queued on the publishing one cannot push a
    /// forwarded answer past its bounds.
    pub(super) conn: super::conn::Conn,
    inbox: Inbox,
    // A std lock: taken once, to hand the receiver over.
    rx: Mutex<Option<Mailbox>>,
}

/// The messages and bytes in a mailbox.
#[derive(Debug, Default)]
struct Queued {
    messages: AtomicUsize,
    bytes: AtomicUsize,
}

/// A node's mailbox: what other nodes published to it, in order.
#[derive(Debug)]
pub struct Mailbox {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<Queued>,
}

impl Mailbox {
    /// The next message (`None` once the node stopped listening).
    pub async fn recv(&mut self) -> Option<Bytes> {
        let payload = self.rx.recv().await?;
        self.queued.messages.fetch_sub(1, Ordering::AcqRel);
        self.queued.bytes.fetch_sub(payload.len(), Ordering::AcqRel);
        Some(payload)
    }
}

/// The sending side of a mailbox.
#[derive(Debug)]
struct Inbox {
    tx: mpsc::UnboundedSender<Bytes>,
    /// What the mailbox holds (bounded as [`MAILBOX_QUEUE`] and [`MAILBOX_BYTES`] say).
    queued: Arc<Queued>,
}

fn mailbox() -> (Inbox, Mailbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(Queued::default());
    (
        Inbox {
            tx,
            queued: queued.clone(),
        },
        Mailbox { rx, queued },
    )
}

impl Shared {
    pub(super) fn new(conn: super::conn::Conn) -> Shared {
        let (inbox, mailbox) = mailbox();
        Shared {
            conn,
            inbox,
            rx: Mutex::new(Some(mailbox)),
        }
    }
}

impl Inbox {
    /// Queues `payload` (`urgent` as its sender marked it) in the mailbox, if it has room:
    /// whether it was queued.
    fn queue(&self, payload: Bytes, urgent: bool) -> bool {
        let len = payload.len();
        let messages = self.queued.messages.fetch_add(1, Ordering::AcqRel);
        let bytes = self.queued.bytes.fetch_add(len, Ordering::AcqRel);
        let room = if urgent && len <= MAILBOX_URGENT_BYTES {
            messages < MAILBOX_URGENT_QUEUE
        } else {
            messages < MAILBOX_QUEUE && bytes + len <= MAILBOX_BYTES
        };
        if room && self.tx.send(payload).is_ok() {
            return true;
        }
        self.queued.messages.fetch_sub(1, Ordering::AcqRel);
        self.queued.bytes.fetch_sub(len, Ordering::AcqRel);
        false
    }
}

/// A message as published: `payload`, after the urgent mark if `urgent`.
fn marked(payload: &[u8], urgent: bool) -> Vec<u8> {
    let mut message = Vec::with_capacity(payload.len() + 1);
    if urgent {
        message.push(MARK_URGENT);
    }
    message.extend_from_slice(payload);
    message
}

/// A published message's payload and whether it is urgent (one without the mark, bulk or from
/// a node older than the mark, is bulk).
fn unmarked(message: &[u8]) -> (Bytes, bool) {
    match message.split_first() {
        Some((&MARK_URGENT, payload)) => (Bytes::copy_from_slice(payload), true),
        _ => (Bytes::copy_from_slice(message), false),
    }
}

fn hold_key(cluster: &str, session: &str) -> String {
    format!("{cluster}:xs:{session}")
}

/// Node `node_id`'s mailbox channel.
pub fn mailbox_channel(cluster: &str, node_id: &str) -> String {
    format!("{cluster}:xhr:{node_id}")
}

async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, RelayError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(RelayError(error.to_string())),
        Err(_) => Err(RelayError("timed out".to_owned())),
    }
}

impl Cluster {
    /// What arrives in this node's mailbox (taken once, by the transport layer).
    pub fn take_mailbox(&self) -> Option<Mailbox> {
        self.inner.relay.rx.lock_or_recover().take()
    }

    /// The live node that holds session `session` (a name unique within the cluster): another
    /// node's id, or this node's when `claim` took the hold (or it held it already); `None`
    /// when nobody live holds it and `claim` is false.
    pub async fn session_holder(
        &self,
        session: &str,
        claim: bool,
    ) -> Result<Option<String>, RelayError> {
        let inner = &self.inner;
        let script = redis::Script::new(HOLD_SCRIPT);
        let mut invocation = script.key(hold_key(&inner.settings.name, session));
        invocation
            .arg(&inner.settings.node_id)
            .arg(Cluster::node_key(&inner.settings.name, ""))
            .arg(HOLD_TTL.as_secs())
            .arg(if claim { "1" } else { "0" });
        let mut conn = inner.relay.conn.get();
        bounded(invocation.invoke_async::<Option<String>>(&mut conn)).await
    }

    /// Refreshes this node's holds of `sessions` (and takes those that lapsed).
    pub async fn refresh_holds(&self, sessions: &[String]) -> Result<(), RelayError> {
        let inner = &self.inner;
        let script = redis::Script::new(REFRESH_SCRIPT);
        for chunk in sessions.chunks(REFRESH_CHUNK) {
            let mut invocation = script.prepare_invoke();
            for session in chunk {
                invocation.key(hold_key(&inner.settings.name, session));
            }
            invocation
                .arg(&inner.settings.node_id)
                .arg(HOLD_TTL.as_secs());
            let mut conn = inner.relay.conn.get();
            bounded(invocation.invoke_async::<()>(&mut conn)).await?;
        }
        Ok(())
    }

    /// Gives up this node's hold of `session` (another node's is left alone).
    pub async fn release_hold(&self, session: &str) -> Result<(), RelayError> {
        let inner = &self.inner;
        let script = redis::Script::new(RELEASE_SCRIPT);
        let mut invocation = script.key(hold_key(&inner.settings.name, session));
        invocation.arg(&inner.settings.node_id);
        let mut conn = inner.relay.conn.get();
        bounded(invocation.invoke_async::<()>(&mut conn)).await
    }

    /// Publishes `payload` to node `node_id`'s mailbox (`urgent`: queued there past the bulk
    /// bounds, for small control messages whose loss would leave a request hanging): whether a
    /// node listened to it.
    pub async fn post(
        &self,
        node_id: &str,
        payload: &[u8],
        urgent: bool,
    ) -> Result<bool, RelayError> {
        let channel = mailbox_channel(&self.inner.settings.name, node_id);
        let mut conn = self.inner.relay.conn.get();
        let mut command = redis::cmd("PUBLISH");
        command.arg(channel).arg(marked(payload, urgent));
        let heard = bounded(command.query_async::<i64>(&mut conn)).await?;
        Ok(heard > 0)
    }
}

/// Keeps one pub/sub connection subscribed to this node's mailbox and queues what arrives for
/// the transport layer, until aborted.
pub(super) async fn mailbox_loop(inner: Arc<Inner>) {
    let channel = mailbox_channel(&inner.settings.name, &inner.settings.node_id);
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected =
            tokio::time::timeout(COMMAND_TIMEOUT, inner.client.get_async_pubsub()).await;
        let Ok(Ok(pubsub)) = connected else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
            continue;
        };
        let (mut sink, mut stream) = pubsub.split();
        if !matches!(
            tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channel)).await,
            Ok(Ok(()))
        ) {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
            continue;
        }
        backoff = Duration::from_millis(100);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.reset();
        let mut dropped = 0u64;
        loop {
            tokio::select! {
                received = stream.next() => {
                    let Some(msg) = received else { break };
                    let (payload, urgent) = unmarked(msg.get_payload_bytes());
                    if !inner.relay.inbox.queue(payload, urgent) {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(dropped, "fallback relay mailbox full: messages dropped");
                        }
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::debug!("the fallback relay's pub/sub connection was lost; re-making it");
    }
}

/// Refreshes this node's holds every [`HOLD_REFRESH`]: `sessions` lists them each time.
pub async fn refresh_loop(cluster: Cluster, sessions: impl Fn() -> Vec<String>) {
    let mut tick = tokio::time::interval(HOLD_REFRESH);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held = sessions();
        if held.is_empty() {
            continue;
        }
        if let Err(error) = cluster.refresh_holds(&held).await {
            tracing::debug!(%error, "refreshing the fallback sessions' holds failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_redis::redis_server;
    use super::*;

    #[tokio::test]
    async fn a_full_mailbox_drops_bulk_messages_but_queues_urgent_ones() {
        let (inbox, mut mailbox) = mailbox();
        let part = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut queued = 0;
        while inbox.queue(part.clone(), false) {
            queued += 1;
        }
        // Bounded in bytes (16 MiB of 64 KiB parts: 256) before the count (1,024).
        assert_eq!(queued, MAILBOX_BYTES / part.len());
        let end = Bytes::from_static(br#"{"t":"end","id":1,"seq":3}"#);
        assert!(
            inbox.queue(end.clone(), true),
            "an urgent message still goes in"
        );
        for _ in 0..queued {
            assert_eq!(mailbox.recv().await.expect("a part").len(), part.len());
        }
        assert_eq!(mailbox.recv().await, Some(end));
        // Taken messages give their room back.
        assert!(inbox.queue(part, false));
    }

    #[test]
    fn small_bulk_messages_do_not_use_up_the_urgent_places() {
        let (inbox, _mailbox) = mailbox();
        let part = Bytes::from_static(br#"{"t":"part","id":1,"seq":0,"text":"h\n"}"#);
        let mut queued = 0;
        while inbox.queue(part.clone(), false) {
            queued += 1;
        }
        assert_eq!(queued, MAILBOX_QUEUE, "small parts are bounded as bulk");
        for _ in 0..MAILBOX_URGENT_QUEUE - MAILBOX_QUEUE {
            assert!(inbox.queue(Bytes::from_static(b"{}"), true));
        }
        assert!(!inbox.queue(Bytes::from_static(b"{}"), true), "bounded too");
    }

    #[test]
    fn a_mark_travels_before_the_payload_and_an_unmarked_message_is_bulk() {
        assert_eq!(
            unmarked(&marked(b"{}", true)),
            (Bytes::from_static(b"{}"), true)
        );
        assert_eq!(
            unmarked(&marked(b"{}", false)),
            (Bytes::from_static(b"{}"), false)
        );
        // A JSON reader without the mark (an older node) reads an urgent message too.
        let old: serde_json::Value =
            serde_json::from_slice(&marked(br#"{"t":1}"#, true)).expect("JSON");
        assert_eq!(old["t"], 1);
    }
    use crate::clock::Clock;
    use crate::config::ClusterSettings;

    #[tokio::test]
    async fn a_hold_names_its_live_node_and_only_its_node_refreshes_or_releases_it() {
        let server = redis_server().await;
        let a = Cluster::connect(ClusterSettings::new(&server.url, "relay"), Clock::manual(0))
            .await
            .expect("node a");
        let b = Cluster::connect(ClusterSettings::new(&server.url, "relay"), Clock::manual(0))
            .await
            .expect("node b");
        let (a_id, b_id) = (a.node_id().to_owned(), b.node_id().to_owned());
        assert_eq!(a.session_holder("k/1/s", false).await.unwrap(), None);
        assert_eq!(
            a.session_holder("k/1/s", true).await.unwrap(),
            Some(a_id.clone()),
            "nobody held it: a takes it"
        );
        for claim in [false, true] {
            assert_eq!(
                b.session_holder("k/1/s", claim).await.unwrap(),
                Some(a_id.clone()),
                "a lives: b is told a holds it (claim {claim})"
            );
        }
        // b neither refreshes nor releases a's hold.
        b.refresh_holds(&["k/1/s".to_owned()]).await.unwrap();
        b.release_hold("k/1/s").await.unwrap();
        assert_eq!(
            b.session_holder("k/1/s", false).await.unwrap(),
            Some(a_id.clone())
        );
        // a's heartbeat key gone (killed): its hold names nobody, and b may take it.
        let (_, mut conn) = server.connect().await;
        redis::cmd("DEL")
            .arg(Cluster::node_key("relay", &a_id))
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        assert_eq!(b.session_holder("k/1/s", false).await.unwrap(), None);
        assert_eq!(
            b.session_holder("k/1/s", true).await.unwrap(),
            Some(b_id.clone())
        );
        // A refresh takes a lapsed hold; a release removes only one's own.
        a.refresh_holds(&["k/1/t".to_owned()]).await.unwrap();
        assert_eq!(
            b.session_holder("k/1/t", false).await.unwrap(),
            None,
            "a (dead here) holds it"
        );
        b.release_hold("k/1/s").await.unwrap();
        assert_eq!(b.session_holder("k/1/s", false).await.unwrap(), None);
        let ttl: i64 = redis::cmd("TTL")
            .arg(hold_key("relay", "k/1/t"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= HOLD_TTL.as_secs() as i64, "{ttl}");
        // Nobody listens to a mailbox yet: a post says so.
        assert!(!a.post(&b_id, b"x", false).await.unwrap());
    }
}
