//! Cluster mode (`HERALD_REDIS_URL`): nodes on one Redis and one PostgreSQL store.
//!
//! This increment: each node registers itself (a heartbeat key with a TTL, [`registry`]) and
//! claims the node-specific part of its socket ids, so they are unique cluster-wide; a publish
//! (REST trigger and batch, client events) is serialized once on its node, delivered there, and
//! sent to the others as one `PUBLISH` on the app's Redis channel `{cluster}:app:{app_id}`
//! ([`message`]); so is a REST `terminate_connections` (every node closes the user's signed-in
//! sockets); a node listens to an app's channel only while it has subscribers or signed-in
//! users of that app ([`bus`]). Redis unreachable: local delivery goes on, forwarding is
//! dropped and counted, `/ready` shows `redis: degraded` ([`health`]). A REST publish on a
//! node that listens to the app's channel is delivered there on its echo from Redis, so
//! sequential REST publishes through any node keep their order ([`order`]).
//!
//! An app's connection quota holds cluster-wide: each node's slots are counted in Redis by a
//! script and expire with its heartbeat ([`slots`]; the rule while Redis is unreachable is
//! documented there).
//!
//! The dashboard's sign-in budgets ([`signin`]), its connection figures ([`stats`]) and its
//! live console ([`console`]) cover every node.
//!
//! Channel occupancy and presence are kept in Redis and decided there by scripts, so each
//! transition (occupied, vacated, member added or removed, subscription count) and its webhook
//! fires once per cluster; REST channel queries read them; a dead node's state is cleaned by one
//! survivor; a node re-registers its state after Redis lost it ([`state`]). A subscribe waits
//! for its script through the session's deferral ([`crate::transport::deferral`]).
//!
//! Signed-in users and watchlists are cluster-wide ([`users`]: Redis scripts decide online and
//! offline), and so are cache channels' last events ([`cache`]).
//!
//! pusher-js's HTTP fallback sessions are held by the node that opened them, and their
//! requests landing on other nodes are forwarded there through Redis ([`relay`]: the holds and
//! a mailbox channel per node).
//!
//! An app's daily message quota holds cluster-wide too: nodes lease blocks of it from Redis and
//! admit publishes from them without a round trip ([`lease`], which also shares the apps' REST
//! rate limits between the live nodes).
//!
//! Layer: above `webhooks`, below `node` (it sees the hub, the tenants' usage counters, the
//! protocol, the config and the clock; the node holds an `Option<Cluster>`).

mod bus;
pub mod cache;
mod conn;
pub mod console;
pub mod health;
pub mod lease;
pub mod mercure;
pub mod mercure_subs;
pub mod message;
mod misses;
mod order;
mod registry;
pub mod relay;
pub mod signin;
pub mod slots;
mod state;
mod state_queries;
mod state_scripts;
pub mod stats;
#[cfg(test)]
mod test_redis;
pub mod unflushed;
pub mod users;
mod users_scripts;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManagerConfig;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::ClusterSettings;
use crate::hub::{Hub, OccupancyReceiver, RateLimits, Taps};
use crate::locks::MutexExt;
use crate::protocol::{ChannelName, SocketId};
use crate::tenants::{DependencyState, Usage};

pub use health::{Part, RedisHealth};
pub use lease::Daily;
pub use order::{Ordered, ECHO_TIMEOUT};
pub use relay::RelayError;
pub use slots::{OverQuota, Slot};
pub use state::{JoinAnswer, Members, StateUnavailable};

/// How long a node's heartbeat key lives without a refresh.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// How often the heartbeat key is refreshed.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

/// How often each node looks for dead nodes (tag keys gone) to clean up their channels, members
/// and users: a killed node is cleaned up within [`HEARTBEAT_TTL`] plus this (11 s), below the
/// 15 s target even on a loaded machine.
pub const DEAD_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long one Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a subscribe waits at most for its node to listen to the app's Redis channel
/// ([`Cluster::listen`]). The pub/sub task turns to a newly wanted app within one turn of its
/// loop, whose every Redis call is bounded (a `SUBSCRIBE`, an `UNSUBSCRIBE` and a `PING` by
/// [`COMMAND_TIMEOUT`] each, a watchers' re-sync by 500 ms), then sends the app's `SUBSCRIBE`
/// (bounded the same way); a call past its bound drops the connection, which releases every
/// waiter (no pub/sub connection: local traffic only). So a waiter is released by the
/// acknowledgement or by the connection's loss within 8.5 s; this bound is only reached if the
/// task itself is stuck. (It was 500 ms, the script round trip's bound: under load a `SUBSCRIBE`
/// acknowledged later let a publish from another node fall between the client's
/// `subscription_succeeded` and the node's listening, and be missed on that node.)
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes waiting for the publishing connection; past it they are dropped and counted.
const OUTGOING_QUEUE: usize = 8_192;

/// The bytes of the publishes waiting for the publishing connection (node-wide); past it they
/// are dropped and counted too (a queue of large frames stays bounded in memory).
const OUTGOING_BYTES: usize = 64 * 1024 * 1024;

/// How long [`Running::stop`] may send the queued publishes (never past the grace deadline);
/// removing the heartbeat key has as long again.
const STOP_BUDGET: Duration = Duration::from_secs(1);

/// At most one warning about dropped forwards per this interval.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the cluster needs of the node it runs in (implemented by `node::Node`).
pub trait Local: Send + Sync + 'static {
    /// The node's hub.
    fn hub(&self) -> &Hub;
    /// The node's usage counters.
    fn usage(&self) -> &Usage;
    /// The node's live console taps.
    fn taps(&self) -> &Taps;
    /// The node's REST rate limits (shared by the live nodes, [`lease`]).
    fn rates(&self) -> &RateLimits;
    /// The node's meters (Redis round trips, for `/metrics`).
    fn meters(&self) -> &crate::meters::Meters;
    /// App `app_id`'s daily message quota, if it has one (its deliveries here are reported to
    /// the cluster-wide count, [`lease`]).
    fn daily_quota(&self, app_id: &str) -> Option<u64>;

    /// How long `channel_vacated` / `member_removed` webhooks wait for a comeback (kept in
    /// Redis in cluster mode, see [`state`]).
    fn vacate_delay(&self) -> Duration {
        crate::config::WebhookSettings::default().vacate_delay
    }
}

/// What became of a forwarded Pusher publish's Mercure history append (the bridge script's
/// reply for that forward, `mercure.rs`' `BRIDGE_SCRIPT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bridged {
    /// Kept in the history: its kind-6 message follows on the app's channel.
    Kept,
    /// Not kept (no Mercure subscriber anywhere, or not bridgeable): no kind-6 follows.
    NotKept,
    /// The append failed, or the publish never reached Redis (dropped, refused).
    Failed,
    /// Redis did not answer the pipeline in time (or the connection was lost while waiting):
    /// the script may still run, and its kind-6 message still come.
    Unknown,
}

/// Told once what became of a forward's Mercure history append; told [`Bridged::Failed`] when
/// dropped untold (the publish was dropped, the pipeline failed, the node stopped).
pub struct BridgeAck(Option<Box<dyn FnOnce(Bridged) + Send>>);

impl BridgeAck {
    /// An ack that calls `then` with the outcome.
    pub fn new(then: impl FnOnce(Bridged) + Send + 'static) -> BridgeAck {
        BridgeAck(Some(Box::new(then)))
    }

    fn tell(mut self, outcome: Bridged) {
        if let Some(then) = self.0.take() {
            then(outcome);
        }
    }
}

impl Drop for BridgeAck {
    fn drop(&mut self) {
        if let Some(then) = self.0.take() {
            then(Bridged::Failed);
        }
    }
}

impl std::fmt::Debug for BridgeAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BridgeAck")
    }
}

/// One publish on its way to Redis.
#[derive(Debug)]
struct Outgoing {
    redis_channel: String,
    payload: Bytes,
    /// A kept publish to a cache channel: stored (within the app's caps) and published by one
    /// script call instead of a plain `PUBLISH` ([`cache::KEEP_SCRIPT`]).
    cache: Option<cache::Keep>,
    /// Told whether Redis took it (dropped unanswered when the publish is dropped): a REST
    /// publish delivered on its echo waits for it ([`order`]).
    ack: Option<tokio::sync::oneshot::Sender<bool>>,
    /// Told the bridge script's reply for this publish (the origin's own Mercure subscribers
    /// get a Pusher event it did not keep from the origin's bridge, per publish).
    bridge_ack: Option<BridgeAck>,
}

#[derive(Debug, Default)]
struct Drops {
    total: AtomicU64,
    // A std lock: taken only when a forward is dropped, to compare and set an instant.
    logged: Mutex<(Option<Instant>, u64)>,
}

impl Drops {
    fn add(&self, count: u64, why: &str) {
        self.total.fetch_add(count, Ordering::Relaxed);
        let mut logged = self.logged.lock_or_recover();
        logged.1 += count;
        let now = Instant::now();
        if logged.0.is_none_or(|at| now >= at + DROP_LOG_INTERVAL) {
            tracing::warn!(
                dropped = logged.1,
                total = self.total.load(Ordering::Relaxed),
                why,
                "publishes not forwarded to the other nodes"
            );
            *logged = (Some(now), 0);
        }
    }
}

struct Inner {
    settings: ClusterSettings,
    client: redis::Client,
    /// The publishing connection (one multiplexed connection: publishes go out in order), also
    /// used by the heartbeat.
    manager: conn::Conn,
    /// The dashboard's connection (sign-in budgets, live figures): its own, made at first use,
    /// so a tenant's large publishes queued on `manager` cannot push a sign-in past its timeout.
    ops: conn::Conn,
    /// Live nodes as last counted (at least 1), for the sign-in budgets' local share.
    live_nodes: AtomicU64,
    /// The live nodes' ids as last read, sorted: tenant admins see "node 1", "node 2", … in
    /// this order, not the ids.
    // A std lock: held to clone or replace an `Arc`.
    node_ids: Mutex<Arc<Vec<String>>>,
    outgoing: mpsc::Sender<Outgoing>,
    /// The payload bytes queued in `outgoing`.
    outgoing_bytes: AtomicUsize,
    outgoing_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    health: RedisHealth,
    dropped: Drops,
    /// Publishes received from other nodes and delivered here.
    received: AtomicU64,
    /// Forward scripts that answered an error (their publish ran: `bus.rs`).
    script_errors: AtomicU64,
    /// The heartbeats that found this node's tag key gone (other nodes may have taken it for
    /// dead and removed its shared state meanwhile).
    tag_losses: AtomicU64,
    /// The node-specific part of this node's socket ids.
    tag: u64,
    /// This process's random instance id: the value of its node key and the origin of its
    /// messages (two processes started with one `HERALD_NODE_ID` never take each other's
    /// messages for their own).
    instance: String,
    clock: Clock,
    /// This node's slots of the apps' connection quotas.
    slots: slots::Slots,
    /// This node's signed-in users, cluster-wide.
    users: users::Users,
    /// This node's leases of the apps' daily message quotas.
    leases: lease::Leases,
    /// The apps whose Redis channel the pub/sub connection listens to.
    listening: bus::Listening,
    /// The cluster-wide channel state's task queue and flags.
    state: state::Shared,
    /// This process's REST publishes waiting for their echo ([`order`]).
    echoes: order::Echoes,
    /// The `cache_miss` reports waiting for Redis ([`misses`]).
    misses: misses::Budget,
    /// The writers of this node's unflushed message counts ([`unflushed`]).
    unflushed: unflushed::Shared,
    /// The fallback sessions' holds and this node's mailbox ([`relay`]).
    relay: relay::Shared,
}

/// This node's membership in the cluster: cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.inner.settings.name)
            .field("node_id", &self.inner.settings.node_id)
            .field("tag", &self.inner.tag)
            .finish_non_exhaustive()
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
#[error("HERALD_REDIS_URL: {0}")]
pub struct ClusterError(String);

impl Cluster {
    /// Opens the Redis client (connections are made lazily and re-made after a failure) and
    /// claims a socket id tag no other live node holds (a random one, unclaimed, when Redis
    /// cannot be reached: the node starts anyway, degraded).
    pub async fn connect(settings: ClusterSettings, clock: Clock) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(settings.redis_url.expose())
            .map_err(|e| ClusterError(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        // Each replaced by a fresh one when it times out ([`conn`]).
        let made =
            |name| conn::Conn::new(name, &client, &config).map_err(|e| ClusterError(e.to_string()));
        let manager = made("publishing")?;
        let slots_manager = made("slots")?;
        let users_manager = made("users")?;
        let ops = made("dashboard")?;
        let relay_manager = made("fallback relay")?;
        let health = RedisHealth::new(clock.clone());
        let instance = format!("{:016x}:{}", rand::random::<u64>(), settings.node_id);
        registry::claim_node(&settings, &instance, &manager, &health).await?;
        let tag = registry::claim_tag(&settings, &manager, &health).await;
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        tracing::info!(
            cluster = %settings.name,
            node_id = %settings.node_id,
            socket_tag = tag,
            "cluster mode"
        );
        Ok(Cluster {
            inner: Arc::new(Inner {
                settings,
                client,
                manager,
                ops,
                live_nodes: AtomicU64::new(1),
                node_ids: Mutex::default(),
                outgoing,
                outgoing_bytes: AtomicUsize::new(0),
                outgoing_rx: Mutex::new(Some(outgoing_rx)),
                health,
                dropped: Drops::default(),
                received: AtomicU64::new(0),
                script_errors: AtomicU64::new(0),
                tag_losses: AtomicU64::new(0),
                tag,
                instance,
                clock,
                leases: lease::Leases::new(slots_manager.clone()),
                slots: slots::Slots::new(slots_manager),
                users: users::Users::new(users_manager),
                listening: bus::Listening::default(),
                state: state::Shared::new(),
                echoes: order::Echoes::default(),
                misses: misses::Budget::default(),
                unflushed: unflushed::Shared::default(),
                relay: relay::Shared::new(relay_manager),
            }),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.settings.node_id
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.inner.settings.name
    }

    /// The node-specific part of this node's socket ids (for [`Hub::with_node_tag`]).
    pub fn socket_tag(&self) -> u64 {
        self.inner.tag
    }

    /// `redis` in `/ready`.
    pub fn health(&self) -> DependencyState {
        self.inner.health.state()
    }

    /// Publishes not forwarded since the start (Redis unreachable, or the queue full).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.total.load(Ordering::Relaxed)
    }

    /// How many heartbeats found this node's tag key gone (the other nodes may have taken it
    /// for dead meanwhile).
    pub fn tag_losses(&self) -> u64 {
        self.inner.tag_losses.load(Ordering::Relaxed)
    }

    /// Publishes from other nodes delivered here since the start.
    pub fn received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }

    /// Whether this node listens to app `app_id`'s Redis channel (or cannot: no pub/sub
    /// connection is up), so a subscriber may be answered at once.
    pub fn is_listening(&self, app_id: &str) -> bool {
        self.inner.listening.ready(app_id)
    }

    /// Waits until this node listens to app `app_id`'s Redis channel, or until it has no
    /// pub/sub connection (then it serves local traffic only, as documented for an outage).
    /// Called for the app's first subscriber on this node, so its `subscription_succeeded`
    /// promises only what the node will deliver: no publish from another node can fall in a gap
    /// between the answer and the node's `SUBSCRIBE`. [`LISTEN_TIMEOUT`] is a backstop only
    /// (see there); answers whether the node listens (or cannot).
    pub async fn listen(&self, app_id: &str) -> bool {
        if self.is_listening(app_id) {
            return true;
        }
        let _ = tokio::time::timeout(LISTEN_TIMEOUT, self.inner.listening.wait(app_id)).await;
        self.is_listening(app_id)
    }

    /// The Redis key of node `node_id`'s heartbeat.
    pub fn node_key(cluster: &str, node_id: &str) -> String {
        format!("{cluster}:node:{node_id}")
    }

    /// The Redis channel of app `app_id`'s publishes.
    pub fn app_channel(cluster: &str, app_id: &str) -> String {
        format!("{cluster}:app:{app_id}")
    }

    /// Sends a publish this node delivered locally to the other nodes: `frame` as serialized
    /// here, `except` excluded everywhere, `keep` for a REST publish (a cache channel keeps it).
    /// Never waits: the message joins the publishing connection's queue (in order), or is
    /// dropped and counted when the queue is full (by count or by bytes).
    pub fn forward(
        &self,
        app_id: &str,
        channel: &str,
        frame: &[u8],
        except: Option<SocketId>,
        keep: bool,
    ) {
        self.forward_bridged(app_id, channel, frame, except, keep, None);
    }

    /// [`Cluster::forward`], telling `bridge_ack` what became of its Mercure history append.
    pub fn forward_bridged(
        &self,
        app_id: &str,
        channel: &str,
        frame: &[u8],
        except: Option<SocketId>,
        keep: bool,
        bridge_ack: Option<BridgeAck>,
    ) {
        let payload = message::encode(&self.inner.instance, channel, except, keep, frame);
        self.enqueue_full(app_id, payload, None, None, bridge_ack);
    }

    /// [`Cluster::forward`] for a REST publish (kept): to a cache channel, the frame is also
    /// stored as the channel's last event cluster-wide (`{cluster}:cache:{app_id}:{channel}`,
    /// [`crate::hub::CACHE_TTL`]) by the script that publishes it, within the app's cache caps
    /// (`limits`: cache channels and bytes, counted as the local cache counts them, cluster-wide
    /// in Redis; past them the event is published but not kept, [`cache::KEEP_SCRIPT`]). A
    /// frame larger than the whole byte budget is not even offered.
    /// Returns, for a stored event, what tells whether Redis took it.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_kept(
        &self,
        app_id: &str,
        channel: &ChannelName,
        frame: &[u8],
        data: &str,
        except: Option<SocketId>,
        limits: &crate::protocol::Limits,
        bridge_ack: Option<BridgeAck>,
    ) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let Some(mut keep) = self.keep_for(app_id, channel, frame.len(), data.len(), limits) else {
            self.forward_bridged(app_id, channel.as_str(), frame, except, true, bridge_ack);
            return None;
        };
        let payload = message::encode(&self.inner.instance, channel.as_str(), except, true, frame);
        keep.at = payload.len() - frame.len();
        // The REST answer waits for it: once a trigger is answered, a subscriber on any node
        // finds the event in Redis.
        let (ack, stored) = tokio::sync::oneshot::channel();
        self.enqueue_full(app_id, payload, Some(keep), Some(ack), bridge_ack);
        Some(stored)
    }

    /// What a REST publish to `channel` (its frame and data this long) stores as the channel's
    /// last event cluster-wide: nothing unless it is a cache channel and fits the app's cache
    /// budget (counted as the local cache counts it: data and frame), which the local cache would
    /// refuse too. The frame's offset in the message (`at`) is set by the caller.
    pub(crate) fn keep_for(
        &self,
        app_id: &str,
        channel: &ChannelName,
        frame_len: usize,
        data_len: usize,
        limits: &crate::protocol::Limits,
    ) -> Option<cache::Keep> {
        let cost = frame_len + data_len;
        let max_bytes = limits.cache_bytes();
        if !channel.is_cache() || max_bytes.is_some_and(|max| cost > max) {
            return None;
        }
        let cluster = &self.inner.settings.name;
        Some(cache::Keep {
            key: Cluster::cache_key(cluster, app_id, channel.as_str()),
            index: Cluster::cache_index_key(cluster, app_id),
            channel: channel.as_str().to_owned(),
            at: 0,
            cost,
            max_channels: limits.cache_channels().unwrap_or(0),
            max_bytes: max_bytes.unwrap_or(0),
        })
    }

    /// The Redis key of cache channel `channel`'s last event cluster-wide.
    pub fn cache_key(cluster: &str, app_id: &str, channel: &str) -> String {
        format!("{cluster}:cache:{app_id}:{channel}")
    }

    /// The Redis key of app `app_id`'s index of its cache channels' last events (channel ->
    /// bytes, and the total), which bounds them cluster-wide ([`cache::KEEP_SCRIPT`]).
    pub fn cache_index_key(cluster: &str, app_id: &str) -> String {
        format!("{cluster}:cache:idx:{app_id}")
    }

    /// Sends a REST `terminate_connections` to the other nodes (this node closed its own
    /// sockets of the user already): each closes `user_id`'s signed-in sockets of the app with
    /// 4009. Queued like [`Cluster::forward`], in order with the publishes.
    pub fn terminate_user(&self, app_id: &str, user_id: &str) {
        let payload = message::encode_terminate(&self.inner.instance, user_id);
        self.enqueue(app_id, payload);
    }

    /// Queues `payload` for the app's Redis channel without waiting, or drops and counts it when
    /// the queue is full (by count or by bytes).
    fn enqueue(&self, app_id: &str, payload: Bytes) {
        self.enqueue_full(app_id, payload, None, None, None);
    }

    /// Queues `payload` (with what it keeps and its ack, if any) for the app's Redis channel.
    fn enqueue_full(
        &self,
        app_id: &str,
        payload: Bytes,
        cache: Option<cache::Keep>,
        ack: Option<tokio::sync::oneshot::Sender<bool>>,
        bridge_ack: Option<BridgeAck>,
    ) {
        let inner = &self.inner;
        let size = payload.len();
        let queued = inner.outgoing_bytes.fetch_add(size, Ordering::Relaxed);
        if queued.saturating_add(size) > OUTGOING_BYTES {
            inner.outgoing_bytes.fetch_sub(size, Ordering::Relaxed);
            inner.dropped.add(1, "the publishing queue is full (bytes)");
            return;
        }
        let outgoing = Outgoing {
            redis_channel: Cluster::app_channel(&inner.settings.name, app_id),
            payload,
            cache,
            ack,
            bridge_ack,
        };
        let refused = match inner.outgoing.try_send(outgoing) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(_)) => "the publishing queue is full",
            Err(mpsc::error::TrySendError::Closed(_)) => "the node has stopped publishing",
        };
        inner.outgoing_bytes.fetch_sub(size, Ordering::Relaxed);
        inner.dropped.add(1, refused);
    }

    /// Starts the heartbeat, the publishing connection's task and the pub/sub task, which
    /// delivers other nodes' publishes through `local`'s hub and follows `occupancy` (from
    /// [`Hub::with_occupancy`]). All three run until [`Running::stop`] (sockets stay open and
    /// requests in flight forward their publishes during the drain, so the node and socket-tag
    /// keys must not expire meanwhile), which then removes the heartbeat key.
    pub fn start(&self, local: Arc<dyn Local>, occupancy: OccupancyReceiver) -> Running {
        let outgoing = self.inner.outgoing_rx.lock_or_recover().take();
        let stop_publishing = CancellationToken::new();
        let publisher = outgoing.map(|rx| {
            tokio::spawn(bus::publish_loop(
                self.inner.clone(),
                rx,
                stop_publishing.clone(),
            ))
        });
        let leases = tokio::spawn(lease::lease_loop(self.inner.clone(), local.clone()));
        let subscriber = tokio::spawn(bus::subscribe_loop(
            self.inner.clone(),
            local.clone(),
            occupancy,
        ));
        let slots = tokio::spawn(slots::slot_loop(self.inner.clone()));
        let heartbeat = tokio::spawn(registry::heartbeat_loop(self.inner.clone()));
        let watchdog = tokio::spawn(conn::watch_loop(self.inner.clone(), local.clone()));
        let mailbox = tokio::spawn(relay::mailbox_loop(self.inner.clone()));
        let stats = tokio::spawn(stats::stats_loop(self.inner.clone(), local.clone()));
        let unflushed = tokio::spawn(unflushed::unflushed_loop(self.inner.clone(), local.clone()));
        let console_events = console::attach(&self.inner, &*local);
        let console = tokio::spawn(console::console_loop(
            self.inner.clone(),
            local.clone(),
            console_events,
        ));
        let users = [
            tokio::spawn(users::users_loop(
                self.inner.clone(),
                stop_publishing.clone(),
            )),
            tokio::spawn(users::sweep_loop(self.inner.clone())),
        ];
        let stop_state = CancellationToken::new();
        let state = self.inner.state.take_receiver().map(|rx| {
            tokio::spawn(state::state_loop(
                self.inner.clone(),
                local.clone(),
                rx,
                stop_state.clone(),
            ))
        });
        let stop_vacates = CancellationToken::new();
        let vacates = tokio::spawn(state::vacate_loop(
            self.inner.clone(),
            local.clone(),
            stop_vacates.clone(),
        ));
        Running {
            stop_vacates,
            vacates,
            stats,
            unflushed,
            console,
            users,
            stop_state,
            state,
            slots,
            leases,
            inner: self.inner.clone(),
            stop_publishing,
            publisher,
            subscriber,
            heartbeat,
            watchdog,
            mailbox,
        }
    }

    /// Redis connections replaced after timing out since the start ([`conn`]).
    pub fn connections_replaced(&self) -> u64 {
        let inner = &self.inner;
        [
            &inner.manager,
            &inner.ops,
            &inner.slots.manager,
            &inner.users.manager,
            &inner.relay.conn,
        ]
        .iter()
        .map(|conn| conn.replaced())
        .sum()
    }
}

/// The cluster's running tasks.
#[derive(Debug)]
pub struct Running {
    inner: Arc<Inner>,
    stop_state: CancellationToken,
    state: Option<tokio::task::JoinHandle<()>>,
    /// The pending vacates' sweep ([`state::vacate_loop`]).
    stop_vacates: CancellationToken,
    vacates: tokio::task::JoinHandle<()>,
    stop_publishing: CancellationToken,
    publisher: Option<tokio::task::JoinHandle<()>>,
    subscriber: tokio::task::JoinHandle<()>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Replaces the connections that time out ([`conn`]).
    watchdog: tokio::task::JoinHandle<()>,
    /// This node's mailbox for forwarded fallback requests ([`relay`]).
    mailbox: tokio::task::JoinHandle<()>,
    slots: tokio::task::JoinHandle<()>,
    /// Writes this node's live figures ([`stats`]).
    stats: tokio::task::JoinHandle<()>,
    /// Writes this node's unflushed message counts ([`unflushed`]).
    unflushed: tokio::task::JoinHandle<()>,
    /// The live console across nodes ([`console`]).
    console: tokio::task::JoinHandle<()>,
    /// The users task and the dead-node sweep.
    users: [tokio::task::JoinHandle<()>; 2],
    leases: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Once every socket and request has ended: sends the queued publishes (for at most
    /// [`STOP_BUDGET`], and not past `deadline`; with Redis unreachable the rest is dropped at
    /// the first failure), stops the tasks and removes this node's heartbeat key (within as
    /// long again, and not past `deadline`). Meant to run alongside the webhook drain and the
    /// final usage flush, so a partitioned Redis cannot take their time.
    pub async fn stop(self, deadline: Instant) {
        // The leaves the closed sockets queued go out first (they publish member_removed and
        // count frames, so before the publishing task drains). A vacates sweep under way
        // confirms what it fired meanwhile (else they would be fired again after their lease).
        self.stop_state.cancel();
        self.stop_vacates.cancel();
        let budget = deadline.min(Instant::now() + STOP_BUDGET);
        let state = async {
            if let Some(mut state) = self.state {
                if tokio::time::timeout_at(budget, &mut state).await.is_err() {
                    state.abort();
                    tracing::warn!("channel state changes still queued were dropped at shutdown");
                }
            }
        };
        let mut vacates = self.vacates;
        let vacating = async {
            if tokio::time::timeout_at(budget, &mut vacates).await.is_err() {
                vacates.abort();
            }
        };
        tokio::join!(state, vacating);
        self.subscriber.abort();
        self.stop_publishing.cancel();
        let budget = deadline.min(Instant::now() + STOP_BUDGET);
        let publishing = async {
            if let Some(mut publisher) = self.publisher {
                if tokio::time::timeout_at(budget, &mut publisher)
                    .await
                    .is_err()
                {
                    publisher.abort();
                    tracing::warn!(
                        "publishes still queued for the other nodes were dropped at shutdown"
                    );
                }
            }
        };
        // The sockets have closed: their sign-outs are queued, and the users task sends them
        // (in the same budget, alongside the publishes); the rest is left to the survivors'
        // sweep once this node's tag key is gone.
        let [mut users, sweep] = self.users;
        sweep.abort();
        let signing_out = async {
            if tokio::time::timeout_at(budget, &mut users).await.is_err() {
                users.abort();
                tracing::warn!("sign-outs still queued were not sent at shutdown");
            }
        };
        tokio::join!(publishing, signing_out);
        self.heartbeat.abort();
        self.watchdog.abort();
        self.mailbox.abort();
        self.slots.abort();
        self.stats.abort();
        self.unflushed.abort();
        self.console.abort();
        self.leases.abort();
        let _ = self.leases.await;
        lease::give_back_all(&self.inner, deadline.min(Instant::now() + STOP_BUDGET)).await;
        let _ = self.heartbeat.await;
        let _ = self.stats.await;
        let _ = self.unflushed.await;
        // Side by side: removing the figures must not eat the leave's budget.
        let leave_by = deadline.min(Instant::now() + STOP_BUDGET);
        tokio::join!(
            stats::forget(&self.inner, deadline),
            unflushed::forget(&self.inner, deadline),
            registry::leave(&self.inner, leave_by)
        );
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("node_id", &self.settings.node_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_publishing_queue_is_bounded_by_bytes_as_well_as_by_count() {
        // Nothing listens on port 1: the node starts degraded, and nothing takes from the queue.
        let settings = ClusterSettings::new("redis://127.0.0.1:1/", "bytes-test");
        let cluster = Cluster::connect(settings, Clock::manual(0))
            .await
            .expect("starts degraded");
        let frame = vec![b'x'; 1024 * 1024];
        let fits = OUTGOING_BYTES / (frame.len() + 64);
        for _ in 0..fits {
            cluster.forward("1", "big", &frame, None, true);
        }
        assert_eq!(cluster.dropped(), 0, "{fits} frames of 1 MiB fit");
        cluster.forward("1", "big", &frame, None, true);
        assert_eq!(
            cluster.dropped(),
            1,
            "past the byte budget a forward is dropped"
        );
        // Small ones still fit into what is left.
        cluster.forward("1", "small", b"{}", None, true);
        assert_eq!(cluster.dropped(), 1);
        assert!(cluster.inner.outgoing_bytes.load(Ordering::Relaxed) <= OUTGOING_BYTES);
    }
}
