//! The in-memory engine: channels, presence (refcounted per user), cache-channel last events,
//! signed-in users and watchlists, and fan-out into bounded per-connection outboxes.
//!
//! The hub moves pre-serialized `Bytes` and knows nothing of HTTP, WebSocket framing or SQL.
//! Each app has its own state behind one lock, held only for in-memory work (never across an
//! await), so apps never contend with each other.

mod connection;
mod rate;
mod taps;

pub use connection::{CloseRequest, Connection, Outbox, Queued};
pub use rate::{Budget, RateLimits};
pub use taps::{clip, Taps};

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::protocol::{server, ChannelName, CloseCode, SocketId, WebhookEvent, WebhookKind};

/// Something that happened in an app's channels, for webhooks (and later the live console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEvent {
    /// The app.
    pub app_id: Arc<str>,
    /// What happened, in webhook form.
    pub event: WebhookEvent,
}

/// Where the hub sends its events. Bounded, and the hub never waits on it: when the webhook
/// writer is behind, events are dropped and counted (see `webhooks::events`).
pub type EventSender = crate::webhooks::EventSender;

/// A shared handle on a connection.
pub type ConnHandle = Arc<Connection>;

/// How long a cache channel keeps its last event.
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// Above this many subscribers, `subscription_count` events are sent at most every 5 seconds.
const SUBSCRIPTION_COUNT_THROTTLE_ABOVE: usize = 100;
const SUBSCRIPTION_COUNT_INTERVAL: Duration = Duration::from_secs(5);

/// Every app's live state, and the node-wide connection count.
#[derive(Debug)]
pub struct Hub {
    // A std mutex: held for a map lookup only.
    apps: Mutex<HashMap<Box<str>, Arc<AppHub>>>,
    connections: AtomicUsize,
    next_socket: AtomicU64,
    node_tag: u64,
    events: Option<EventSender>,
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
        }
    }

    /// Webhook events this hub could not hand to the outbox writer since the start (its queue
    /// was full, or the writer had stopped).
    pub fn lost_webhook_events(&self) -> u64 {
        self.events.as_ref().map_or(0, EventSender::lost)
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
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.entry(app_id.into())
            .or_insert_with(|| Arc::new(AppHub::new(app_id, self.events.clone())))
            .clone()
    }

    /// The state of app `app_id` if it has ever been used on this node.
    pub fn existing_app(&self, app_id: &str) -> Option<Arc<AppHub>> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.get(app_id).cloned()
    }

    /// Every app's state.
    pub fn all_apps(&self) -> Vec<Arc<AppHub>> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
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

#[derive(Debug)]
struct Member {
    info: Option<Box<RawValue>>,
    sockets: u32,
}

#[derive(Debug, Default)]
struct Channel {
    subscribers: HashMap<SocketId, ConnHandle>,
    members: HashMap<Box<str>, Member>,
    last_count_sent: Option<Instant>,
    /// A cache channel (counted against the app's cache-channel cap while occupied).
    cache: bool,
}

#[derive(Debug)]
struct CachedEvent {
    data: Box<str>,
    frame: Bytes,
    expires: Instant,
    /// Which event this is (unique in the app), so a connection replays each one at most once
    /// toward the quota.
    seq: u64,
}

impl CachedEvent {
    /// The bytes it holds, as accounted against the app's cache budget.
    fn cost(&self) -> usize {
        self.data.len() + self.frame.len()
    }
}

#[derive(Debug, Default)]
struct AppState {
    connections: HashMap<SocketId, ConnHandle>,
    channels: HashMap<Box<str>, Channel>,
    cache: HashMap<Box<str>, CachedEvent>,
    users: HashMap<Box<str>, Vec<ConnHandle>>,
    watchers: HashMap<Box<str>, Vec<ConnHandle>>,
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

/// Where an app's events go, and which kinds it wants.
#[derive(Debug, Default)]
struct Hooks {
    app_id: Arc<str>,
    events: Option<EventSender>,
    interest: AtomicU8,
}

impl Hooks {
    fn wants(&self, kind: WebhookKind) -> bool {
        self.events.is_some() && self.interest.load(Ordering::Relaxed) & kind.bit() != 0
    }

    fn emit(&self, kind: WebhookKind, make: impl FnOnce() -> WebhookEvent) {
        if !self.wants(kind) {
            return;
        }
        if let Some(events) = &self.events {
            let _ = events.send(HubEvent {
                app_id: self.app_id.clone(),
                event: make(),
            });
        }
    }
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
}

/// An app's caps on its cached events; 0 means unlimited.
#[derive(Debug, Default)]
struct CacheCaps {
    channels: AtomicUsize,
    bytes: AtomicUsize,
}

/// What one app holds in memory on this node, as accounted against its caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppMemory {
    /// Open connections.
    pub connections: usize,
    /// Occupied channels.
    pub channels: usize,
    /// Occupied cache channels.
    pub cache_channels: usize,
    /// Cache channels holding an event.
    pub cached_events: usize,
    /// Bytes of those events.
    pub cache_bytes: usize,
    /// Publishes whose event was delivered but not kept because the app was at a cache cap.
    pub cache_refused: u64,
    /// Occupied cache channels whose miss was already reported to webhooks.
    pub reported_misses: usize,
}

/// A presence member joining a channel.
#[derive(Debug, Clone)]
pub struct PresenceMember {
    /// The user id (numbers already turned into strings).
    pub user_id: String,
    /// The `user_info` JSON, if any.
    pub user_info: Option<Box<RawValue>>,
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

/// What a channel looks like from the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Connections subscribed.
    pub subscription_count: usize,
    /// Distinct presence users.
    pub user_count: usize,
    /// The cached event's data and remaining TTL in seconds.
    pub cache: Option<(String, u64)>,
}

fn lock(state: &Mutex<AppState>) -> MutexGuard<'_, AppState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Queues `frame` for every subscriber but `except` under the app's lock, collecting the
/// connections whose outbox was empty: the caller writes those with [`flush_all`] once the lock
/// is released, so no socket write ever happens under the app's lock.
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
        match conn.enqueue(frame) {
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

/// Sockets one task writes to in a fan-out; a larger fan-out is shared with idle workers.
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
                        let _ = conn.flush();
                    }
                });
            }
        }
    }
    for conn in to_flush {
        let _ = conn.flush();
    }
}

fn broadcast(channel: &Channel, frame: &Bytes, except: Option<SocketId>) -> usize {
    let mut delivered = 0;
    for (id, conn) in &channel.subscribers {
        if Some(*id) != except && conn.push(frame.clone()) {
            delivered += 1;
        }
    }
    delivered
}

/// Sends the channel's `subscription_count` to its subscribers (when `clients`) and as a webhook
/// event (when wanted), unless the 5-second throttle holds it back; returns whether it was held
/// back (the caller records it for the next flush).
#[must_use]
fn maybe_send_count(
    name: &str,
    channel: &mut Channel,
    force: bool,
    clients: bool,
    hooks: &Hooks,
) -> bool {
    let count = channel.subscribers.len();
    if count == 0 {
        return false;
    }
    if count > SUBSCRIPTION_COUNT_THROTTLE_ABOVE && !force {
        if let Some(last) = channel.last_count_sent {
            if last.elapsed() < SUBSCRIPTION_COUNT_INTERVAL {
                return true;
            }
        }
    }
    channel.last_count_sent = Some(Instant::now());
    if clients {
        broadcast(channel, &server::subscription_count(name, count), None);
    }
    hooks.emit(WebhookKind::SubscriptionCount, || {
        WebhookEvent::count(name, count)
    });
    false
}

/// `subscription_count` events apply to every channel kind but presence and the internal
/// `#server-to-user-` channels.
fn counts_subscriptions(channel: &str) -> bool {
    !channel.starts_with("presence-") && !channel.starts_with('#')
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
        let mut delivered = 0;
        if let Some(user_id) = presence_user {
            if let Entry::Occupied(mut member) = state.members.entry(user_id.into()) {
                member.get_mut().sockets -= 1;
                if member.get().sockets == 0 {
                    member.remove();
                    delivered = broadcast(state, &server::member_removed(channel, user_id), None);
                    hooks.emit(WebhookKind::MemberRemoved, || {
                        WebhookEvent::member(WebhookKind::MemberRemoved, channel, user_id)
                    });
                }
            }
        }
        let hook_counts = hooks.wants(WebhookKind::SubscriptionCount);
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
            hooks.emit(WebhookKind::ChannelVacated, || {
                WebhookEvent::channel(WebhookKind::ChannelVacated, channel)
            });
        } else if (subscription_count || hook_counts)
            && counts_subscriptions(channel)
            && maybe_send_count(channel, state, false, subscription_count, hooks)
        {
            self.pending_counts
                .insert(channel.into(), subscription_count);
        }
        delivered
    }

    fn notify_watchers(&self, user_id: &str, online: bool) {
        if let Some(watchers) = self.watchers.get(user_id) {
            let frame = if online {
                server::watchlist_events(&[user_id], &[])
            } else {
                server::watchlist_events(&[], &[user_id])
            };
            for watcher in watchers {
                watcher.push(frame.clone());
            }
        }
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
            },
            caps: CacheCaps::default(),
            cache_refused: AtomicU64::new(0),
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
                state.notify_watchers(user_id, false);
            }
        }
        for watched in watchlist {
            if let Some(watchers) = state.watchers.get_mut(watched.as_str()) {
                watchers.retain(|c| c.socket_id() != socket_id);
                if watchers.is_empty() {
                    state.watchers.remove(watched.as_str());
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
        if let (Some(member), Some(max)) = (&member, options.max_presence_members) {
            if let Some(existing) = state.channels.get(name) {
                let known = existing.members.contains_key(member.user_id.as_str());
                if !known && existing.members.len() >= max {
                    return Err(SubscribeRefusal::PresenceFull(max));
                }
            }
        }
        let hooks = &self.hooks;
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
        if entry.subscribers.is_empty() {
            hooks.emit(WebhookKind::ChannelOccupied, || {
                WebhookEvent::channel(WebhookKind::ChannelOccupied, name)
            });
        }
        if let Some(member) = member {
            let known = entry.members.contains_key(member.user_id.as_str());
            if !known {
                let added =
                    server::member_added(name, &member.user_id, member.user_info.as_deref());
                result.member_events_delivered = broadcast(entry, &added, None);
                hooks.emit(WebhookKind::MemberAdded, || {
                    WebhookEvent::member(WebhookKind::MemberAdded, name, &member.user_id)
                });
                entry.members.insert(
                    member.user_id.as_str().into(),
                    Member {
                        info: member.user_info,
                        sockets: 1,
                    },
                );
            } else if let Some(existing) = entry.members.get_mut(member.user_id.as_str()) {
                existing.sockets += 1;
            }
            entry.subscribers.insert(conn.socket_id(), conn.clone());
            conn.push(server::presence_subscription_succeeded(
                name,
                entry
                    .members
                    .iter()
                    .map(|(id, m)| (id.as_ref(), m.info.as_deref())),
            ));
        } else {
            entry.subscribers.insert(conn.socket_id(), conn.clone());
            conn.push(server::subscription_succeeded(name));
        }
        let hook_counts = hooks.wants(WebhookKind::SubscriptionCount);
        if (options.subscription_count || hook_counts) && counts_subscriptions(name) {
            // The subscriber's own count goes through its outbox, after subscription_succeeded.
            let first = entry.subscribers.len() <= 1;
            if maybe_send_count(name, entry, first, options.subscription_count, hooks) {
                state
                    .pending_counts
                    .insert(name.into(), options.subscription_count);
            }
        }
        if channel.is_cache() {
            let now = Instant::now();
            match state.cache.get(name) {
                Some(cached) if cached.expires > now => {
                    if conn.push(cached.frame.clone()) {
                        result.cache_replayed = Some(cached.seq);
                    }
                }
                _ => {
                    if let Some(expired) = state.cache.remove(name) {
                        state.cache_bytes -= expired.cost();
                    }
                    result.cache_miss = true;
                    conn.push(server::cache_miss(name));
                    // One webhook per miss, however many clients hit the empty cache.
                    if hooks.wants(WebhookKind::CacheMiss)
                        && state.reported_misses.insert(name.into())
                    {
                        hooks.emit(WebhookKind::CacheMiss, || {
                            WebhookEvent::channel(WebhookKind::CacheMiss, name)
                        });
                    }
                }
            }
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
        let mut to_flush = Vec::new();
        let mut state = lock(&self.state);
        if channel.is_cache() {
            self.keep(&mut state, channel.as_str(), data, &frame);
        }
        let delivered = state
            .channels
            .get(channel.as_str())
            .map_or(0, |c| enqueue_all(c, &frame, except, &mut to_flush));
        drop(state);
        flush_all(to_flush);
        delivered
    }

    /// Keeps `frame` as `channel`'s cached event, within the app's caps: past them the event is
    /// still delivered but not kept (later subscribers get `pusher:cache_miss`), and counted in
    /// [`AppMemory::cache_refused`].
    fn keep(&self, state: &mut AppState, channel: &str, data: &str, frame: &Bytes) {
        let max_channels = self.caps.channels.load(Ordering::Relaxed);
        let max_bytes = self.caps.bytes.load(Ordering::Relaxed);
        let replaced = state.cache.remove(channel);
        if let Some(old) = &replaced {
            state.cache_bytes -= old.cost();
        }
        state.cache_seq += 1;
        let cached = CachedEvent {
            data: data.into(),
            frame: frame.clone(),
            expires: Instant::now() + CACHE_TTL,
            seq: state.cache_seq,
        };
        let over = |state: &AppState| {
            (max_channels != 0 && state.cache.len() >= max_channels)
                || (max_bytes != 0 && state.cache_bytes + cached.cost() > max_bytes)
        };
        if over(state) {
            // Expired events still count until the sweep: drop them first.
            let now = Instant::now();
            let mut freed = 0;
            state.cache.retain(|_, c| {
                let keep = c.expires > now;
                if !keep {
                    freed += c.cost();
                }
                keep
            });
            state.cache_bytes -= freed;
        }
        if over(state) {
            self.cache_refused.fetch_add(1, Ordering::Relaxed);
            // Nothing is cached for the channel now: the next subscriber hears of a miss.
            return;
        }
        state.reported_misses.remove(channel);
        state.cache_bytes += cached.cost();
        state.cache.insert(channel.into(), cached);
    }

    /// Sets the caps on what the app's publishes keep (from its limits).
    pub fn set_limits(&self, limits: &crate::protocol::Limits) {
        self.caps
            .channels
            .store(limits.cache_channels().unwrap_or(0), Ordering::Relaxed);
        self.caps
            .bytes
            .store(limits.cache_bytes().unwrap_or(0), Ordering::Relaxed);
    }

    /// What the app holds in memory on this node.
    pub fn memory(&self) -> AppMemory {
        let state = lock(&self.state);
        AppMemory {
            connections: state.connections.len(),
            channels: state.channels.len(),
            cache_channels: state.occupied_cache,
            cached_events: state.cache.len(),
            cache_bytes: state.cache_bytes,
            cache_refused: self.cache_refused.load(Ordering::Relaxed),
            reported_misses: state.reported_misses.len(),
        }
    }

    /// Relays an already-encoded client event to everyone on `channel` but the sender.
    pub fn relay(&self, channel: &str, frame: Bytes, sender: SocketId) -> usize {
        let mut to_flush = Vec::new();
        let state = lock(&self.state);
        let delivered = state
            .channels
            .get(channel)
            .map_or(0, |c| enqueue_all(c, &frame, Some(sender), &mut to_flush));
        drop(state);
        flush_all(to_flush);
        delivered
    }

    /// Records a signin and registers the watchlist. The initial statuses of the watched ids are
    /// queued to `conn` under the lock, so no later online/offline change can overtake them.
    pub fn sign_in(&self, conn: &ConnHandle, user_id: &str, watchlist: &[String]) {
        let mut state = lock(&self.state);
        let sockets = state.users.entry(user_id.into()).or_default();
        let first = sockets.is_empty();
        sockets.push(conn.clone());
        if first {
            state.notify_watchers(user_id, true);
        }
        for watched in watchlist {
            state
                .watchers
                .entry(watched.as_str().into())
                .or_default()
                .push(conn.clone());
        }
        if !watchlist.is_empty() {
            let (online, offline): (Vec<&str>, Vec<&str>) = watchlist
                .iter()
                .map(String::as_str)
                .partition(|id| state.users.contains_key(*id));
            conn.push(server::watchlist_events(&online, &offline));
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
            conn.push(frame.clone());
            conn.request_close(code, true);
        }
        sockets.len()
    }

    /// Closes the connections opened with app key `key` (revoked, or past its grace period)
    /// with `pusher:error` 4009; returns how many.
    pub fn close_key(&self, key: &str) -> usize {
        let state = lock(&self.state);
        let mut closed = 0;
        for conn in state.connections.values().filter(|c| c.key() == key) {
            conn.close_with_error(
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
                conn.close_with_error(code, code.reason());
            } else {
                conn.request_close(code, true);
            }
        }
    }

    /// Sends the `subscription_count` updates that the 5-second throttle held back.
    pub fn flush_subscription_counts(&self) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        for (name, clients) in std::mem::take(&mut state.pending_counts) {
            if let Some(channel) = state.channels.get_mut(&name) {
                if maybe_send_count(&name, channel, false, clients, &self.hooks) {
                    state.pending_counts.insert(name, clients);
                }
            }
        }
    }

    /// Drops cached events whose TTL has passed, so channels nobody reads again do not keep
    /// memory. Returns how many were dropped.
    pub fn sweep_cache(&self) -> usize {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let now = Instant::now();
        let before = state.cache.len();
        let mut freed = 0;
        state.cache.retain(|_, cached| {
            let keep = cached.expires > now;
            if !keep {
                freed += cached.cost();
            }
            keep
        });
        state.cache_bytes -= freed;
        before - state.cache.len()
    }

    /// Connections open for this app on this node.
    pub fn connection_count(&self) -> usize {
        lock(&self.state).connections.len()
    }

    /// The live state of one channel.
    pub fn channel_info(&self, channel: &str) -> ChannelInfo {
        let state = lock(&self.state);
        let (subscription_count, user_count) = state
            .channels
            .get(channel)
            .map_or((0, 0), |c| (c.subscribers.len(), c.members.len()));
        let now = Instant::now();
        let cache = state
            .cache
            .get(channel)
            .filter(|c| c.expires > now)
            .map(|c| (c.data.to_string(), (c.expires - now).as_secs()));
        ChannelInfo {
            subscription_count,
            user_count,
            cache,
        }
    }

    /// Occupied channels whose name starts with `prefix`, with their subscriber and user counts.
    /// Internal `#` channels are left out.
    pub fn channels(&self, prefix: &str) -> Vec<(String, usize, usize)> {
        let state = lock(&self.state);
        let mut list: Vec<_> = state
            .channels
            .iter()
            .filter(|(name, c)| {
                name.starts_with(prefix) && !name.starts_with('#') && !c.subscribers.is_empty()
            })
            .map(|(name, c)| (name.to_string(), c.subscribers.len(), c.members.len()))
            .collect();
        list.sort();
        list
    }

    /// The user ids present on a presence channel.
    pub fn presence_users(&self, channel: &str) -> Vec<String> {
        let state = lock(&self.state);
        let mut ids: Vec<String> = state
            .channels
            .get(channel)
            .map(|c| c.members.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }
}
