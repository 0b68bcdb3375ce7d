//! The in-memory engine: channels, presence (refcounted per user), cache-channel last events,
//! signed-in users and watchlists, and fan-out into bounded per-connection outboxes.
//!
//! The hub moves pre-serialized `Bytes` and knows nothing of HTTP, WebSocket framing, sockets
//! or SQL: it queues frames in each connection's [`crate::outbox::Outbox`] and asks it to write
//! them once the app's lock is released. Each app has its own state behind one lock, held only
//! for in-memory work (never across an await), so apps never contend with each other.

mod bridge;
mod cache;
mod connection;
mod counts;
mod events;
mod presence;
mod rate;
mod remote;
mod shared_users;
mod stats;
mod taps;

pub use bridge::PusherBridge;
pub use cache::CACHE_TTL;
pub use connection::{Connection, DetachedOutbox};
pub use events::{
    event_channel, occupancy_channel, EventReceiver, EventSender, HubEvent, Mark, NotSent,
    OccupancyReceiver, OccupancySender, Reported,
};
pub use presence::{ListedMember, PresenceMember};
pub use rate::{Budget, RateLimits};
pub use stats::{AppMemory, ChannelInfo, LocalState};
pub use taps::{clip, Taps, FORWARD_PER_APP};

/// Kept at their old paths: the outbox moved below the hub.
pub use crate::outbox::{CloseRequest, Queued};

use crate::locks::MutexExt;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::time::Instant;

use crate::protocol::{server, ChannelName, CloseCode, SocketId, WebhookEvent, WebhookKind};

use cache::{CacheCaps, CachedEvent};
use events::Hooks;
use presence::Member;

/// A shared handle on a connection.
pub type ConnHandle = Arc<Connection>;

/// Every app's live state, and the node-wide connection count.
#[derive(Debug)]
pub struct Hub {
    // A std mutex: held for a map lookup only.
    apps: Mutex<HashMap<Box<str>, Arc<AppHub>>>,
    connections: AtomicUsize,
    next_socket: AtomicU64,
    node_tag: u64,
    events: Option<EventSender>,
    occupancy: Option<OccupancySender>,
    /// Cluster mode: online/offline is decided by the cluster (see `shared_users.rs`).
    shared_users: bool,
    /// Cluster mode: cache channels' last events are kept in Redis (see `cache.rs`).
    shared_cache: bool,
    /// Cluster mode: channel and presence transitions are decided by the cluster, not here.
    clustered: bool,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Hub {
        Hub {
            apps: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            next_socket: AtomicU64::new(1),
            node_tag: u64::from(rand::random::<u32>()),
            events: None,
            occupancy: None,
            shared_users: false,
            shared_cache: false,
            clustered: false,
        }
    }

    /// This hub leaving channel and presence transitions to the cluster (cluster mode): it
    /// still keeps this node's subscribers and members, but sends no `channel_occupied` /
    /// `channel_vacated` / `member_added` / `member_removed` / `subscription_count` (webhooks or
    /// frames) and does not check the presence member limit itself; the cluster decides those
    /// from the cluster-wide state and fires them once. A single node never sets this.
    pub fn with_cluster_state(self) -> Hub {
        Hub {
            clustered: true,
            ..self
        }
    }

    /// This hub with `tag` as the node-specific part of its socket ids (cluster mode claims a
    /// tag no other live node holds, so socket ids are unique cluster-wide).
    pub fn with_node_tag(self, tag: u64) -> Hub {
        Hub {
            node_tag: tag,
            ..self
        }
    }

    /// This hub reporting to `occupancy` each app that becomes occupied (a first channel with a
    /// subscriber, or a first signed-in socket) or stops being so (cluster mode: the node
    /// listens to an app's Redis channel only while it has subscribers or signed-in sockets of
    /// that app).
    pub fn with_occupancy(self, occupancy: OccupancySender) -> Hub {
        Hub {
            occupancy: Some(occupancy),
            ..self
        }
    }

    /// This hub leaving online/offline decisions to the cluster (cluster mode): a signin or the
    /// last socket of a user gone no longer notifies this node's watchers by itself, nor does a
    /// signin answer the watchlist's initial statuses; the cluster does both, cluster-wide
    /// (through [`AppHub::user_status_changed`] and [`AppHub::send_watchlist_statuses`]).
    pub fn with_shared_users(self) -> Hub {
        Hub {
            shared_users: true,
            ..self
        }
    }

    /// This hub in a cluster whose cache channels' last events are kept in Redis: an event a
    /// publish keeps here is trusted (a subscribe replays it without asking Redis) only while
    /// this node has subscribers or signed-in users of the app, so hears the other nodes'
    /// publishes; otherwise a subscribe asks Redis first.
    pub fn with_shared_cache(self) -> Hub {
        Hub {
            shared_cache: true,
            ..self
        }
    }

    /// The node-specific part of this hub's socket ids.
    pub fn node_tag(&self) -> u64 {
        self.node_tag
    }

    /// Webhook events this hub could not hand to the outbox writer since the start (its queue
    /// was full, or the writer had stopped).
    pub fn lost_webhook_events(&self) -> u64 {
        self.events.as_ref().map_or(0, EventSender::lost)
    }

    /// Reports `make()` for app `app_id` without creating the app's state here (cluster sweeps
    /// fire webhooks of apps this node may not host): through the app's hooks when it has state
    /// on this node (its interest decides), else straight to the writer, which looks the app's
    /// endpoints up itself and writes nothing when none wants it. `Ok(true)`: queued;
    /// `Ok(false)`: not wanted (or no webhook pipeline).
    pub fn report(
        &self,
        app_id: &str,
        kind: WebhookKind,
        make: impl FnOnce() -> WebhookEvent,
    ) -> Result<bool, NotSent> {
        let Some(events) = &self.events else {
            return Ok(false);
        };
        if let Some(app) = self.existing_app(app_id) {
            if !app.wants(kind) {
                return Ok(false);
            }
        }
        events
            .send(HubEvent {
                app_id: app_id.into(),
                event: make(),
            })
            .map(|()| true)
    }

    /// A mark queued after the events reported so far ([`EventSender::mark`]); `None` without a
    /// webhook pipeline (nothing is ever written).
    pub fn mark_reported(&self) -> Option<Result<tokio::sync::oneshot::Receiver<()>, NotSent>> {
        self.events.as_ref().map(EventSender::mark)
    }

    /// A hub that reports channel events (for the kinds each app is interested in) to `events`.
    pub fn with_events(events: EventSender) -> Hub {
        Hub {
            events: Some(events),
            ..Hub::new()
        }
    }

    /// Sets which event kinds app `app_id` wants reported (a mask of [`WebhookKind::bit`]s).
    pub fn set_interest(&self, app_id: &str, mask: u8) {
        let current = self.existing_app(app_id);
        match current {
            Some(app) => app.hooks.interest.store(mask, Ordering::Relaxed),
            None if mask != 0 => self
                .app(app_id)
                .hooks
                .interest
                .store(mask, Ordering::Relaxed),
            None => {}
        }
    }

    /// A fresh socket id, unique on this node.
    pub fn next_socket_id(&self) -> SocketId {
        SocketId::new(
            self.next_socket.fetch_add(1, Ordering::Relaxed),
            self.node_tag,
        )
    }

    /// The state of app `app_id`, created on first use.
    pub fn app(&self, app_id: &str) -> Arc<AppHub> {
        let mut apps = self.apps.lock_or_recover();
        apps.entry(app_id.into())
            .or_insert_with(|| {
                let mut app = AppHub::new(app_id, self.events.clone());
                app.hooks.occupancy = self.occupancy.clone();
                app.shared_users = self.shared_users;
                app.shared_cache = self.shared_cache;
                app.hooks.clustered = self.clustered;
                Arc::new(app)
            })
            .clone()
    }

    /// The state of app `app_id` if it has ever been used on this node.
    pub fn existing_app(&self, app_id: &str) -> Option<Arc<AppHub>> {
        let apps = self.apps.lock_or_recover();
        apps.get(app_id).cloned()
    }

    /// Every app's state.
    pub fn all_apps(&self) -> Vec<Arc<AppHub>> {
        let apps = self.apps.lock_or_recover();
        apps.values().cloned().collect()
    }

    /// Sets app `app_id`'s caps on what its publishes keep (see [`AppHub::set_limits`]).
    pub fn set_limits(&self, app_id: &str, limits: &crate::protocol::Limits) {
        match self.existing_app(app_id) {
            Some(app) => app.set_limits(limits),
            None if limits.cache_channels().is_some() || limits.cache_bytes().is_some() => {
                self.app(app_id).set_limits(limits)
            }
            None => {}
        }
    }

    /// Reserves a node-wide connection slot, refusing past `max` (if any).
    pub fn reserve_connection(&self, max: Option<usize>) -> bool {
        let previous = self.connections.fetch_add(1, Ordering::AcqRel);
        if max.is_some_and(|max| previous >= max) {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Gives back a slot taken by [`Hub::reserve_connection`].
    pub fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections open on this node.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Sends held-back `subscription_count` updates in every app.
    pub fn flush_subscription_counts(&self) {
        for app in self.all_apps() {
            app.flush_subscription_counts();
        }
    }

    /// Drops expired cache-channel events in every app.
    pub fn sweep_caches(&self) -> usize {
        self.all_apps().iter().map(|app| app.sweep_cache()).sum()
    }

    /// Asks every connection of every app to close with `code`.
    pub fn close_all(&self, code: CloseCode) {
        for app in self.all_apps() {
            app.close_all(code);
        }
    }
}

#[derive(Debug, Default)]
struct Channel {
    subscribers: HashMap<SocketId, ConnHandle>,
    members: HashMap<Box<str>, Member>,
    last_count_sent: Option<Instant>,
    /// A cache channel (counted against the app's cache-channel cap while occupied).
    cache: bool,
}

#[derive(Debug, Default)]
struct AppState {
    connections: HashMap<SocketId, ConnHandle>,
    channels: HashMap<Box<str>, Channel>,
    cache: HashMap<Box<str>, CachedEvent>,
    users: HashMap<Box<str>, Vec<ConnHandle>>,
    watchers: HashMap<Box<str>, Vec<ConnHandle>>,
    /// Cluster mode only: what this node last told the watchers of each watched id (online or
    /// not), so a re-sync tells only the differences (a key of `watchers` at most).
    told: HashMap<Box<str>, bool>,
    /// Channels whose `subscription_count` update the throttle held back (and whether clients
    /// get it, or only webhooks); the periodic flush visits only these.
    pending_counts: HashMap<Box<str>, bool>,
    /// Cache channels whose miss was already reported (until something is cached again or the
    /// channel is vacated).
    reported_misses: HashSet<Box<str>>,
    /// Occupied cache channels (part of `channels`).
    occupied_cache: usize,
    /// Bytes held by `cache` (see [`CachedEvent::cost`]).
    cache_bytes: usize,
    /// The last [`CachedEvent::seq`] handed out.
    cache_seq: u64,
}

/// One app's channels, members, users and connections.
#[derive(Debug, Default)]
pub struct AppHub {
    // A std mutex: held for in-memory bookkeeping and non-blocking pushes only.
    state: Mutex<AppState>,
    hooks: Hooks,
    /// The app's caps on what publishes keep (set from its limits by [`Hub::set_limits`]).
    caps: CacheCaps,
    /// Publishes to a cache channel that were delivered but not kept (the app was at a cap).
    cache_refused: AtomicU64,
    /// Cluster mode: online/offline is decided by the cluster (see `shared_users.rs`).
    shared_users: bool,
    /// Cluster mode: cache channels' last events are kept in Redis (see `cache.rs`).
    shared_cache: bool,
    /// The app's Mercure subscribers of Pusher channels (see `bridge.rs`).
    bridge: bridge::Bridge,
}

/// Options of a subscribe that come from the app's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeOptions {
    /// Members allowed in one presence channel.
    pub max_presence_members: Option<usize>,
    /// Whether `subscription_count` events are sent.
    pub subscription_count: bool,
    /// Occupied channels the app may have on this node.
    pub max_channels: Option<usize>,
    /// Occupied cache channels the app may have on this node.
    pub max_cache_channels: Option<usize>,
}

/// A refused subscribe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeRefusal {
    /// The presence channel is full.
    #[error("The maximum members per presence channel limit ({0}) was reached")]
    PresenceFull(usize),
    /// The app has as many occupied channels as it may.
    #[error("The app's limit of {0} occupied channels was reached")]
    ChannelsFull(usize),
    /// The app has as many occupied cache channels as it may.
    #[error("The app's limit of {0} cache channels was reached")]
    CacheChannelsFull(usize),
}

/// Why a connection was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// The app's own connection quota (4004).
    Quota,
    /// The app's share of this node's capacity (`HERALD_MAX_APP_SHARE`, 4100).
    NodeShare,
}

/// What a successful subscribe did. The subscriber's own frames (`subscription_succeeded`,
/// then the cache replay or `pusher:cache_miss`) are queued in its outbox under the channel lock,
/// so no event published meanwhile can overtake them.
#[derive(Debug)]
pub struct Subscribed {
    /// Whether a cache channel had nothing cached.
    pub cache_miss: bool,
    /// The cached event a cache channel replayed to the subscriber (a delivery), by its
    /// sequence number in the app: the session counts each one once per connection.
    pub cache_replayed: Option<u64>,
    /// How many member events were delivered to others (they count toward usage).
    pub member_events_delivered: usize,
}

fn lock(state: &Mutex<AppState>) -> MutexGuard<'_, AppState> {
    state.lock_or_recover()
}

/// Queues `frame` for every subscriber but `except` under the app's lock, collecting the
/// connections whose outbox was empty: the caller writes those with [`flush_all`] once the lock
/// is released, so no write ever happens under the app's lock.
fn enqueue_all(
    channel: &Channel,
    frame: &Bytes,
    except: Option<SocketId>,
    to_flush: &mut Vec<ConnHandle>,
) -> usize {
    let mut delivered = 0;
    to_flush.reserve(channel.subscribers.len());
    for (id, conn) in &channel.subscribers {
        if Some(*id) == except {
            continue;
        }
        match conn.outbox().enqueue(frame) {
            Queued::No => {}
            Queued::Behind => delivered += 1,
            Queued::First => {
                delivered += 1;
                to_flush.push(conn.clone());
            }
        }
    }
    delivered
}

/// Outboxes one task writes in a fan-out; a larger fan-out is shared with idle workers.
const FLUSH_CHUNK: usize = 128;

/// Writes the outboxes [`enqueue_all`] filled. A large fan-out is cut into chunks: the caller
/// writes the first and the others become tasks that idle worker threads take, so the last
/// subscriber of a big channel does not wait for one thread to make every system call. Order
/// per connection does not depend on who writes: each writes its connection's queue in order.
fn flush_all(mut to_flush: Vec<ConnHandle>) {
    if to_flush.len() > FLUSH_CHUNK {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            while to_flush.len() > FLUSH_CHUNK {
                let chunk = to_flush.split_off(to_flush.len() - FLUSH_CHUNK);
                runtime.spawn(async move {
                    for conn in chunk {
                        let _ = conn.outbox().flush();
                    }
                });
            }
        }
    }
    for conn in to_flush {
        let _ = conn.outbox().flush();
    }
}

/// Queues `frame` for every subscriber but `except`, written by their own tasks (safe under the
/// app's lock); returns how many took it.
fn broadcast(channel: &Channel, frame: &Bytes, except: Option<SocketId>) -> usize {
    let mut delivered = 0;
    for (id, conn) in &channel.subscribers {
        if Some(*id) != except && conn.outbox().push(frame.clone()) {
            delivered += 1;
        }
    }
    delivered
}

impl AppState {
    /// Removes `socket_id` from `channel`; returns member events delivered.
    fn leave(
        &mut self,
        socket_id: SocketId,
        channel: &str,
        presence_user: Option<&str>,
        subscription_count: bool,
        hooks: &Hooks,
    ) -> usize {
        let Some(state) = self.channels.get_mut(channel) else {
            return 0;
        };
        if state.subscribers.remove(&socket_id).is_none() {
            return 0;
        }
        let delivered = match presence_user {
            Some(user_id) => presence::leave(state, channel, user_id, hooks),
            None => 0,
        };
        let hook_counts = hooks.wants(WebhookKind::SubscriptionCount) && !hooks.clustered;
        let subscription_count = subscription_count && !hooks.clustered;
        if state.subscribers.is_empty() {
            if state.cache {
                self.occupied_cache -= 1;
                // A miss is remembered only while its channel is occupied, so the set is bounded
                // by the occupied cache channels (an anonymous client cycling through fresh cache
                // channel names cannot grow it); a later subscriber reports a new miss.
                self.reported_misses.remove(channel);
            }
            self.channels.remove(channel);
            self.pending_counts.remove(channel);
            if !hooks.clustered {
                hooks.emit(WebhookKind::ChannelVacated, || {
                    WebhookEvent::channel(WebhookKind::ChannelVacated, channel)
                });
            }
            if self.channels.is_empty() && self.users.is_empty() {
                hooks.occupancy_changed();
            }
        } else if (subscription_count || hook_counts)
            && counts::counts_subscriptions(channel)
            && counts::maybe_send_count(channel, state, false, subscription_count, hooks)
        {
            self.pending_counts
                .insert(channel.into(), subscription_count);
        }
        delivered
    }

    /// Tells the watchers of `user_id` it came online or went offline; returns how many.
    fn notify_watchers(&self, user_id: &str, online: bool) -> usize {
        let Some(watchers) = self.watchers.get(user_id) else {
            return 0;
        };
        let frame = if online {
            server::watchlist_events(&[user_id], &[])
        } else {
            server::watchlist_events(&[], &[user_id])
        };
        for watcher in watchers {
            watcher.outbox().push(frame.clone());
        }
        watchers.len()
    }
}

impl AppHub {
    /// An app's state, reporting to `events` (if any) the kinds set with [`Hub::set_interest`].
    pub fn new(app_id: &str, events: Option<EventSender>) -> AppHub {
        AppHub {
            state: Mutex::default(),
            hooks: Hooks {
                app_id: app_id.into(),
                events,
                interest: AtomicU8::new(0),
                occupancy: None,
                clustered: false,
            },
            caps: CacheCaps::default(),
            cache_refused: AtomicU64::new(0),
            shared_users: false,
            shared_cache: false,
            bridge: bridge::Bridge::default(),
        }
    }

    /// Whether `kind` events are wanted for this app.
    pub fn wants(&self, kind: WebhookKind) -> bool {
        self.hooks.wants(kind)
    }

    /// Reports an event that happened outside the hub (a client event) when it is wanted.
    pub fn emit(&self, kind: WebhookKind, make: impl FnOnce() -> WebhookEvent) {
        self.hooks.emit(kind, make);
    }

    /// Registers a connection, refusing it past `quota` connections for this app.
    /// The check and the insert happen under the app's lock, so parallel handshakes can never
    /// take the app past its quota.
    pub fn connect(&self, conn: &ConnHandle, quota: Option<usize>) -> bool {
        self.connect_within(conn, quota, None).is_ok()
    }

    /// Registers a connection, refusing it past `quota` connections for this app (the app's
    /// own limit, 4004) or past `share` (its share of the node's capacity, 4100), under the
    /// app's lock like [`AppHub::connect`].
    pub fn connect_within(
        &self,
        conn: &ConnHandle,
        quota: Option<usize>,
        share: Option<usize>,
    ) -> Result<(), ConnectRefusal> {
        let mut state = lock(&self.state);
        let open = state.connections.len();
        if quota.is_some_and(|q| open >= q) {
            return Err(ConnectRefusal::Quota);
        }
        if share.is_some_and(|s| open >= s) {
            return Err(ConnectRefusal::NodeShare);
        }
        state.connections.insert(conn.socket_id(), conn.clone());
        Ok(())
    }

    /// Removes a connection from everything: its channels (with member events), its signin
    /// and its watchlist. `channels` lists `(channel, presence user id)`.
    pub fn disconnect(
        &self,
        conn: &ConnHandle,
        channels: &[(Box<str>, Option<Box<str>>)],
        signed_in: Option<&str>,
        watchlist: &[String],
        subscription_count: bool,
    ) -> usize {
        let socket_id = conn.socket_id();
        let mut state = lock(&self.state);
        state.connections.remove(&socket_id);
        let mut delivered = 0;
        for (channel, user) in channels {
            delivered += state.leave(
                socket_id,
                channel,
                user.as_deref(),
                subscription_count,
                &self.hooks,
            );
        }
        if let Some(user_id) = signed_in {
            let mut last = false;
            if let Some(sockets) = state.users.get_mut(user_id) {
                sockets.retain(|c| c.socket_id() != socket_id);
                last = sockets.is_empty();
            }
            if last {
                state.users.remove(user_id);
                if !self.shared_users {
                    state.notify_watchers(user_id, false);
                }
                if state.users.is_empty() && state.channels.is_empty() {
                    self.hooks.occupancy_changed();
                }
            }
        }
        for watched in watchlist {
            if let Some(watchers) = state.watchers.get_mut(watched.as_str()) {
                watchers.retain(|c| c.socket_id() != socket_id);
                if watchers.is_empty() {
                    state.watchers.remove(watched.as_str());
                    state.told.remove(watched.as_str());
                }
            }
        }
        delivered
    }

    /// Subscribes `conn` to `channel`.
    pub fn subscribe(
        &self,
        conn: &ConnHandle,
        channel: &ChannelName,
        member: Option<PresenceMember>,
        options: SubscribeOptions,
    ) -> Result<Subscribed, SubscribeRefusal> {
        self.subscribe_with_members(conn, channel, member, options, None)
    }

    /// Subscribes `conn` to `channel` like [`AppHub::subscribe`]; on a presence channel,
    /// `members` (the cluster-wide member list, cluster mode) is what the subscriber's
    /// `subscription_succeeded` lists instead of this node's members.
    pub fn subscribe_with_members(
        &self,
        conn: &ConnHandle,
        channel: &ChannelName,
        member: Option<PresenceMember>,
        options: SubscribeOptions,
        members: Option<&[ListedMember]>,
    ) -> Result<Subscribed, SubscribeRefusal> {
        let name = channel.as_str();
        let mut guard = lock(&self.state);
        // Borrow the fields separately: the channel entry and the pending set at once.
        let state = &mut *guard;
        let mut result = Subscribed {
            cache_miss: false,
            cache_replayed: None,
            member_events_delivered: 0,
        };
        if !state.channels.contains_key(name) {
            if let Some(max) = options.max_channels {
                if state.channels.len() >= max {
                    return Err(SubscribeRefusal::ChannelsFull(max));
                }
            }
            if channel.is_cache() {
                if let Some(max) = options.max_cache_channels {
                    if state.occupied_cache >= max {
                        return Err(SubscribeRefusal::CacheChannelsFull(max));
                    }
                }
            }
        }
        // In cluster mode the member limit was checked cluster-wide already (unless Redis did
        // not answer: then the cluster's members are unknown and the node checks its own).
        let room_checked = self.hooks.clustered && members.is_some();
        if let (Some(member), Some(max), false) =
            (&member, options.max_presence_members, room_checked)
        {
            if let Some(existing) = state.channels.get(name) {
                presence::check_room(existing, member, max)?;
            }
        }
        let hooks = &self.hooks;
        if state.channels.is_empty() && state.users.is_empty() {
            hooks.occupancy_changed();
        }
        let entry = match state.channels.entry(name.into()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(vacant) => {
                if channel.is_cache() {
                    state.occupied_cache += 1;
                }
                vacant.insert(Channel {
                    cache: channel.is_cache(),
                    ..Channel::default()
                })
            }
        };
        if entry.subscribers.is_empty() && !hooks.clustered {
            hooks.emit(WebhookKind::ChannelOccupied, || {
                WebhookEvent::channel(WebhookKind::ChannelOccupied, name)
            });
        }
        if let Some(member) = member {
            result.member_events_delivered =
                presence::join(entry, name, conn, member, hooks, members);
        } else {
            entry.subscribers.insert(conn.socket_id(), conn.clone());
            conn.outbox().push(server::subscription_succeeded(name));
        }
        let hook_counts = hooks.wants(WebhookKind::SubscriptionCount);
        if (options.subscription_count || hook_counts)
            && counts::counts_subscriptions(name)
            && !hooks.clustered
        {
            // The subscriber's own count goes through its outbox, after subscription_succeeded.
            let first = entry.subscribers.len() <= 1;
            if counts::maybe_send_count(name, entry, first, options.subscription_count, hooks) {
                state
                    .pending_counts
                    .insert(name.into(), options.subscription_count);
            }
        }
        if channel.is_cache() {
            state.replay(name, conn, hooks, &mut result);
        }
        Ok(result)
    }

    /// Unsubscribes `socket_id` from `channel`; returns member events delivered.
    pub fn unsubscribe(
        &self,
        socket_id: SocketId,
        channel: &str,
        presence_user: Option<&str>,
        subscription_count: bool,
    ) -> usize {
        lock(&self.state).leave(
            socket_id,
            channel,
            presence_user,
            subscription_count,
            &self.hooks,
        )
    }

    /// Publishes an event with string `data` to `channel`, skipping `except`. Cache channels
    /// remember it. Returns the number of copies delivered.
    pub fn publish(
        &self,
        channel: &ChannelName,
        event: &str,
        data: &str,
        except: Option<SocketId>,
    ) -> usize {
        let frame = server::channel_event(event, channel.as_str(), data);
        self.publish_frame(channel, &frame, data, except)
    }

    /// Publishes `frame`, already serialized from an event with string `data`, to `channel`,
    /// skipping `except`, like [`AppHub::publish`] (cluster mode serializes the frame first, to
    /// send the same bytes to the other nodes).
    pub fn publish_frame(
        &self,
        channel: &ChannelName,
        frame: &Bytes,
        data: &str,
        except: Option<SocketId>,
    ) -> usize {
        self.publish_local(channel, frame, data, except)
            + self.bridge.deliver(channel.as_str(), frame)
    }

    /// [`AppHub::publish_frame`] with the bridge decided by the caller, once (cluster mode: the
    /// caller took a `BridgeAck` for the forward, or not): `bridge_here` false leaves this
    /// node's Mercure subscribers to the ack; true hands the event to the bridge now, whatever
    /// the node hears meanwhile. Every event is thus either bridged here or acked, never neither.
    pub fn publish_frame_bridged(
        &self,
        channel: &ChannelName,
        frame: &Bytes,
        data: &str,
        except: Option<SocketId>,
        bridge_here: bool,
    ) -> usize {
        let bridged = if bridge_here {
            self.bridge.deliver_heard(channel.as_str(), frame)
        } else {
            0
        };
        self.publish_local(channel, frame, data, except) + bridged
    }

    /// Publishes `frame` to `channel`'s Pusher subscribers only, like
    /// [`AppHub::publish_frame`] but not to the bridge (a Mercure publish reaching pusher-js
    /// subscribers: its Mercure subscribers already have it).
    pub fn publish_unbridged(&self, channel: &ChannelName, frame: &Bytes, data: &str) -> usize {
        self.publish_local(channel, frame, data, None)
    }

    /// [`AppHub::publish_frame`]'s delivery to this node's Pusher subscribers (and the cache).
    fn publish_local(
        &self,
        channel: &ChannelName,
        frame: &Bytes,
        data: &str,
        except: Option<SocketId>,
    ) -> usize {
        let mut to_flush = Vec::new();
        let mut state = lock(&self.state);
        if channel.is_cache() {
            // In a cluster, known to stay the last event only while this node hears the app's
            // other publishes.
            let confirmed =
                !self.shared_cache || !state.channels.is_empty() || !state.users.is_empty();
            self.keep(&mut state, channel.as_str(), data, frame, confirmed);
        }
        let delivered = state
            .channels
            .get(channel.as_str())
            .map_or(0, |c| enqueue_all(c, frame, except, &mut to_flush));
        drop(state);
        flush_all(to_flush);
        delivered
    }

    /// Relays an already-encoded client event to everyone on `channel` but the sender.
    pub fn relay(&self, channel: &str, frame: Bytes, sender: SocketId) -> usize {
        self.relay_local(channel, &frame, sender) + self.bridge.deliver(channel, &frame)
    }

    /// [`AppHub::relay`] with the bridge decided by the caller, once, as
    /// [`AppHub::publish_frame_bridged`].
    pub fn relay_bridged(
        &self,
        channel: &str,
        frame: Bytes,
        sender: SocketId,
        bridge_here: bool,
    ) -> usize {
        let bridged = if bridge_here {
            self.bridge.deliver_heard(channel, &frame)
        } else {
            0
        };
        self.relay_local(channel, &frame, sender) + bridged
    }

    /// [`AppHub::relay`]'s delivery to this node's Pusher subscribers.
    fn relay_local(&self, channel: &str, frame: &Bytes, sender: SocketId) -> usize {
        let mut to_flush = Vec::new();
        let state = lock(&self.state);
        let delivered = state
            .channels
            .get(channel)
            .map_or(0, |c| enqueue_all(c, frame, Some(sender), &mut to_flush));
        drop(state);
        flush_all(to_flush);
        delivered
    }

    /// Records a signin and registers the watchlist. The initial statuses of the watched ids are
    /// queued to `conn` under the lock, so no later online/offline change can overtake them.
    pub fn sign_in(&self, conn: &ConnHandle, user_id: &str, watchlist: &[String]) {
        let mut state = lock(&self.state);
        if state.users.is_empty() && state.channels.is_empty() {
            self.hooks.occupancy_changed();
        }
        let sockets = state.users.entry(user_id.into()).or_default();
        let first = sockets.is_empty();
        sockets.push(conn.clone());
        if first && !self.shared_users {
            state.notify_watchers(user_id, true);
        }
        for watched in watchlist {
            state
                .watchers
                .entry(watched.as_str().into())
                .or_default()
                .push(conn.clone());
        }
        // In cluster mode the cluster answers the initial statuses (every node's users).
        if !watchlist.is_empty() && !self.shared_users {
            let (online, offline): (Vec<&str>, Vec<&str>) = watchlist
                .iter()
                .map(String::as_str)
                .partition(|id| state.users.contains_key(*id));
            conn.outbox()
                .push(server::watchlist_events(&online, &offline));
        }
    }

    /// Closes every signed-in connection of `user_id` with 4009. Returns how many.
    pub fn terminate_user(&self, user_id: &str) -> usize {
        let state = lock(&self.state);
        let Some(sockets) = state.users.get(user_id) else {
            return 0;
        };
        let code = CloseCode::Unauthorized;
        let frame = server::error(
            Some(code.code()),
            "Connection terminated by the application",
        );
        for conn in sockets {
            conn.outbox().push(frame.clone());
            conn.outbox().request_close(code, true);
        }
        sockets.len()
    }

    /// Closes the connections opened with app key `key` (revoked, or past its grace period)
    /// with `pusher:error` 4009; returns how many.
    pub fn close_key(&self, key: &str) -> usize {
        let state = lock(&self.state);
        let mut closed = 0;
        for conn in state.connections.values().filter(|c| c.key() == key) {
            conn.outbox().close_with_error(
                CloseCode::Unauthorized,
                "The app key this connection was opened with was revoked",
            );
            closed += 1;
        }
        closed
    }

    /// Asks every connection of the app to close with `code` (after a `pusher:error` where the
    /// code is announced that way).
    pub fn close_all(&self, code: CloseCode) {
        let state = lock(&self.state);
        for conn in state.connections.values() {
            if code.announced_with_error_frame() {
                conn.outbox().close_with_error(code, code.reason());
            } else {
                conn.outbox().request_close(code, true);
            }
        }
    }
}

#[cfg(test)]
mod tests;
