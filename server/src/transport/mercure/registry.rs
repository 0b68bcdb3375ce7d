//! Each app's Mercure state on this node: its subscriptions (exact topics indexed, the others in
//! a list), its history, and the bridge from its Pusher channels.
//!
//! A publish takes the app's lock for in-memory work only: it keeps the update in the history,
//! finds the subscriptions it matches, and queues the update's SSE bytes (formatted once) in
//! their outboxes; the outboxes are woken once the lock is released. A subscribe registers and
//! reads the history under the same lock, so its replay is queued before any live update and
//! nothing falls between the two (no gap, no duplicate).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::Instant;

use crate::auth::mercure::{KeyError, Verifier};
use crate::cluster::mercure::EntryId;
use crate::hub::{AppHub, Connection, PusherBridge, Queued};
use crate::locks::MutexExt;
use crate::protocol::mercure::{any_matches, Selector};
use crate::protocol::{ChannelKind, ChannelName};
use crate::tenants::AppRef;

use super::form::is_forbidden_char;
use super::shared::{Announcement, Outgoing, Signal};
use super::subscriptions::{self, Subscriber};

/// The most history updates one subscribe replays; past it the stream ends after them, and the
/// client reconnects from the last one it got (no gap, and no unbounded replay).
pub const MAX_REPLAY: usize = 256;

/// History updates one app's subscribers may get replayed per second, all together (each counts
/// against the app's daily message quota, so an anonymous loop of `Last-Event-ID: earliest`
/// requests may not burn it at will). A subscribe past the budget replays what is left of it
/// and its stream ends after them, as at [`MAX_REPLAY`]: the client reconnects from the last
/// update it got, a retry later.
pub(super) const REPLAYS_PER_SECOND: usize = 2 * MAX_REPLAY;

/// Subscription events one app may emit per second; past it they are dropped (they are
/// ephemeral: never kept in the history, and only sent to subscribers of the namespace).
pub(super) const SUBSCRIPTION_EVENTS_PER_SECOND: usize = 256;

/// The node-wide history bytes are shared by the apps holding some: with `n` of them, one app
/// may hold at most `1 / min(n, 8)` of the bound (all of it when alone, an eighth at least).
/// When the node-wide bound is reached, the app holding the most gives up its oldest first.
pub(super) const HISTORY_SHARES: usize = 8;

/// A budget of `per_second` units, refilled each second.
#[derive(Debug)]
pub(super) struct Budget {
    window: Instant,
    used: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            window: Instant::now(),
            used: 0,
        }
    }
}

impl Budget {
    /// Units left in this second's window.
    pub(super) fn left(&mut self, per_second: usize) -> usize {
        let now = Instant::now();
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        per_second.saturating_sub(self.used)
    }

    pub(super) fn spend(&mut self, units: usize) {
        self.used += units;
    }
}

/// The bytes every app's history holds together, and how many apps hold some.
#[derive(Debug)]
struct Pool {
    bytes: AtomicUsize,
    holders: AtomicUsize,
    max: usize,
}

/// One update, formatted once for every subscriber.
#[derive(Debug)]
pub struct Update {
    /// Its id (the publisher's, or a generated `urn:uuid:`).
    pub id: String,
    /// Its topics, the canonical one first.
    pub topics: Vec<String>,
    /// Whether only subscribers allowed to read one of its topics get it.
    pub private: bool,
    /// The SSE event, as written.
    pub event: Bytes,
    /// When it was published (for the history's age bound).
    at: Instant,
}

impl Update {
    /// An update with its SSE event formatted.
    pub fn new(
        id: String,
        topics: Vec<String>,
        private: bool,
        event_type: Option<&str>,
        retry: Option<u64>,
        data: &str,
    ) -> Update {
        let event = format_event(&id, event_type, retry, data);
        Update::formatted(id, topics, private, event)
    }

    /// An update as another node formatted it (heard from the cluster's bus or read from the
    /// history in Redis).
    pub(super) fn formatted(
        id: String,
        topics: Vec<String>,
        private: bool,
        event: Bytes,
    ) -> Update {
        Update {
            id,
            topics,
            private,
            event,
            at: Instant::now(),
        }
    }

    /// Bytes this update holds (what the history's byte bound counts).
    fn cost(&self) -> usize {
        self.event.len()
            + self.id.len()
            + self.topics.iter().map(|t| t.len() + 24).sum::<usize>()
            + 96
    }
}

/// A generated update id.
pub(super) fn new_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

/// One SSE event: `id`, `event`, `retry`, then one `data:` line per line of `data` (split on CR,
/// LF and CRLF, so no line of data can start another field). The id and type are checked before
/// (no control characters); any that slipped through is dropped here, never written.
pub fn format_event(id: &str, event_type: Option<&str>, retry: Option<u64>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + id.len() + 48);
    let field = |out: &mut BytesMut, name: &str, value: &str| {
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        for c in value.chars().filter(|c| !is_forbidden_char(*c)) {
            let mut buf = [0u8; 4];
            out.put_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        out.put_u8(b'\n');
    };
    field(&mut out, "id", id);
    if let Some(event_type) = event_type.filter(|t| !t.is_empty()) {
        field(&mut out, "event", event_type);
    }
    if let Some(retry) = retry {
        out.put_slice(format!("retry: {retry}\n").as_bytes());
    }
    let data = data.replace("\r\n", "\n").replace('\r', "\n");
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// Every app's Mercure state on this node, and the bytes their histories hold together.
#[derive(Debug, Clone)]
pub struct Hubs {
    apps: Apps,
    pool: Arc<Pool>,
    /// The node's cluster membership, in cluster mode (set once at startup).
    pub(super) cluster: Arc<std::sync::OnceLock<crate::cluster::Cluster>>,
    /// Wakes the cluster's sync of shared subscriptions (`shared.rs`).
    pub(super) sync: Arc<Signal>,
}

type Apps = Arc<Mutex<HashMap<Box<str>, Arc<AppMercure>>>>;

impl Hubs {
    /// No app yet; histories hold at most `max_history_bytes` together.
    pub fn new(max_history_bytes: usize) -> Hubs {
        Hubs {
            apps: Arc::default(),
            pool: Arc::new(Pool {
                bytes: AtomicUsize::new(0),
                holders: AtomicUsize::new(0),
                max: max_history_bytes,
            }),
            cluster: Arc::default(),
            sync: Arc::default(),
        }
    }

    /// App `app_id`'s state, made (and bridged to its Pusher channels) on first use.
    pub fn app(&self, app_id: &str, app_hub: &Arc<AppHub>) -> Arc<AppMercure> {
        let mut apps = self.apps.lock_or_recover();
        apps.entry(app_id.into())
            .or_insert_with(|| {
                let app = Arc::new(AppMercure {
                    hub_path: format!("/apps/{app_id}/.well-known/mercure"),
                    state: Mutex::default(),
                    app_hub: Arc::downgrade(app_hub),
                    pool: self.pool.clone(),
                    peers: Arc::downgrade(&self.apps),
                    limits: Mutex::new(HistoryLimits::default()),
                    events: Mutex::default(),
                    replays: Mutex::default(),
                    verifier: Mutex::new(None),
                    cluster: self.cluster.clone(),
                    shared: Mutex::default(),
                    sync: self.sync.clone(),
                    shared_read: tokio::sync::Mutex::default(),
                    watched_until: Mutex::default(),
                    synced: tokio::sync::watch::Sender::new(0),
                });
                app_hub.attach_bridge(app.clone());
                app
            })
            .clone()
    }

    /// Every app's state here.
    pub(super) fn all(&self) -> Vec<Arc<AppMercure>> {
        self.apps.lock_or_recover().values().cloned().collect()
    }

    /// App `app_id`'s state, if it has any here.
    pub fn existing(&self, app_id: &str) -> Option<Arc<AppMercure>> {
        self.apps.lock_or_recover().get(app_id).cloned()
    }

    /// Bytes the histories hold, all apps together.
    pub fn history_bytes(&self) -> usize {
        self.pool.bytes.load(Ordering::Relaxed)
    }

    /// Trims every app's history by age (idle apps release their bytes too) and drops the
    /// whole history of the apps `keep` refuses (deleted or disabled).
    pub fn sweep(&self, keep: impl Fn(&str) -> bool) {
        let apps: Vec<(Box<str>, Arc<AppMercure>)> = self
            .apps
            .lock_or_recover()
            .iter()
            .map(|(id, app)| (id.clone(), app.clone()))
            .collect();
        let now = Instant::now();
        for (id, app) in apps {
            let limits = if keep(&id) {
                app.limits()
            } else {
                HistoryLimits {
                    size: 0,
                    age: Duration::ZERO,
                }
            };
            app.lock().history.trim(limits, now, &self.pool);
        }
    }

    /// Sweeps every `every` while the runtime runs (see [`Hubs::sweep`]).
    pub fn start_sweeper(
        &self,
        every: Duration,
        keep: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) {
        let hubs = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                hubs.sweep(&keep);
            }
        });
    }
}

/// What an app's history keeps (from its settings, refreshed on every publish and subscribe).
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Updates kept.
    pub size: usize,
    /// Age past which an update leaves.
    pub age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> HistoryLimits {
        HistoryLimits {
            size: crate::tenants::DEFAULT_HISTORY_SIZE as usize,
            age: Duration::from_secs(u64::from(crate::tenants::DEFAULT_HISTORY_SECONDS)),
        }
    }
}

/// One subscriber's registration.
#[derive(Debug)]
pub(super) struct Subscription {
    pub(super) conn: Arc<Connection>,
    selectors: Vec<Selector>,
    /// The topics its token lets it read privately.
    readable: Vec<Selector>,
    /// Who it is, for the subscription documents.
    pub(super) subscriber: Subscriber,
    /// Whether it selects the subscriptions namespace by name.
    pub(super) watches: bool,
    /// While a cluster subscribe reads the history from Redis: the live updates it wants,
    /// held until the replay is queued (`cluster.rs`).
    pub(super) pending: Option<Pending>,
    /// The last stream entry its replay read: an update heard later with an entry up to it
    /// was replayed already (the read can overtake the update's message on the bus).
    pub(super) seen: Option<EntryId>,
}

/// The live updates a subscription registered in a cluster gets while its replay is read.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// With their stream entry ids (`None`: delivered here only, Redis being unreachable).
    pub(super) buffered: Vec<(Option<EntryId>, Arc<Update>)>,
    /// More than [`PENDING_MAX`] came: the stream ends after the replay.
    pub(super) overflowed: bool,
}

/// Live updates one pending subscription holds at most (past it, its stream ends after the
/// replay and the client reconnects from the last update it got).
pub(super) const PENDING_MAX: usize = 1_024;

impl Subscription {
    pub(super) fn wants(&self, update: &Update) -> bool {
        wants(&self.selectors, &self.readable, update)
    }
}

/// Whether a subscriber of `selectors` (reading private updates of `readable`) gets `update`.
pub(super) fn wants(selectors: &[Selector], readable: &[Selector], update: &Update) -> bool {
    any_matches(selectors, &update.topics)
        && (!update.private || any_matches(readable, &update.topics))
}

/// An app's history: the last updates, oldest first, bounded by count, age and (node-wide)
/// bytes. The cluster's history (Redis Streams) would replace this struct behind the same
/// three calls (`push`, `since`, `trim`).
#[derive(Debug, Default)]
pub(super) struct History {
    updates: VecDeque<Arc<Update>>,
    bytes: usize,
}

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No `Last-Event-ID`: live updates only.
    Live,
    /// Everything the history holds (`earliest`).
    Earliest,
    /// After this id.
    After(String),
}

impl History {
    fn trim(&mut self, limits: HistoryLimits, now: Instant, pool: &Pool) {
        while let Some(oldest) = self.updates.front() {
            let old = now.saturating_duration_since(oldest.at) > limits.age;
            if self.updates.len() <= limits.size && !old {
                break;
            }
            self.pop(pool);
        }
    }

    fn pop(&mut self, pool: &Pool) -> bool {
        let Some(oldest) = self.updates.pop_front() else {
            return false;
        };
        let cost = oldest.cost();
        self.bytes -= cost;
        pool.bytes.fetch_sub(cost, Ordering::Relaxed);
        if self.bytes == 0 {
            pool.holders.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }

    fn push(&mut self, update: Arc<Update>, limits: HistoryLimits, pool: &Pool) {
        let cost = update.cost();
        if limits.size == 0 || cost > pool.max {
            return;
        }
        // This app's share of the node-wide bound (see HISTORY_SHARES).
        let holders = pool.holders.load(Ordering::Relaxed) + usize::from(self.bytes == 0);
        let share = pool.max / holders.clamp(1, HISTORY_SHARES);
        while self.bytes + cost > share {
            if !self.pop(pool) {
                break;
            }
        }
        if self.bytes + cost > share {
            return;
        }
        // The node-wide bound: the largest app gave up its oldest before (make_room); what
        // is still missing comes from this app's own oldest, else the update is not kept.
        while pool.bytes.load(Ordering::Relaxed) + cost > pool.max {
            if !self.pop(pool) {
                return;
            }
        }
        if self.bytes == 0 {
            pool.holders.fetch_add(1, Ordering::Relaxed);
        }
        self.bytes += cost;
        pool.bytes.fetch_add(cost, Ordering::Relaxed);
        self.updates.push_back(update);
        self.trim(limits, Instant::now(), pool);
    }

    /// The updates after `resume`, and the resume point to announce (the id found, or
    /// `earliest` when the history is read from its start).
    pub(super) fn since(&self, resume: &Resume) -> (Vec<Arc<Update>>, Option<String>) {
        match resume {
            Resume::Live => (Vec::new(), None),
            Resume::Earliest => (
                self.updates.iter().cloned().collect(),
                Some("earliest".into()),
            ),
            Resume::After(id) => match self.updates.iter().position(|u| &u.id == id) {
                Some(at) => (
                    self.updates.iter().skip(at + 1).cloned().collect(),
                    Some(id.clone()),
                ),
                // Too old (or never seen): everything still here, announced as `earliest` so
                // the subscriber can tell updates may be missing.
                None => (
                    self.updates.iter().cloned().collect(),
                    Some("earliest".into()),
                ),
            },
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    next: u64,
    pub(super) subscriptions: HashMap<u64, Subscription>,
    /// Subscriptions by the exact topics they select (keyed by the selectors' own text).
    exact: HashMap<Arc<str>, Vec<u64>>,
    /// Subscriptions with a selector that is not an exact topic.
    others: Vec<u64>,
    /// Subscriptions that select the subscriptions namespace by name (subscription events are
    /// made only while there are some, or in a cluster).
    pub(super) watchers: usize,
    pub(super) history: History,
}

/// One app's Mercure state.
#[derive(Debug)]
pub struct AppMercure {
    /// The app's hub path (the subscriptions namespace is under it).
    pub(super) hub_path: String,
    state: Mutex<State>,
    app_hub: std::sync::Weak<AppHub>,
    pool: Arc<Pool>,
    /// Every app (to take room from the largest when the node-wide bound is reached).
    peers: std::sync::Weak<Mutex<HashMap<Box<str>, Arc<AppMercure>>>>,
    limits: Mutex<HistoryLimits>,
    /// This second's subscription events.
    events: Mutex<Budget>,
    /// This second's replayed updates.
    pub(super) replays: Mutex<Budget>,
    /// The app's token verifier, kept for the app version and public URL it was built for.
    verifier: Mutex<Option<(AppRef, String, Verifier)>>,
    /// The node's cluster membership, in cluster mode.
    pub(super) cluster: Arc<std::sync::OnceLock<crate::cluster::Cluster>>,
    /// In a cluster: the changes to this node's shared subscriptions not yet in Redis.
    pub(super) shared: Mutex<Outgoing>,
    /// Wakes the node's sync task when `shared` has changes.
    pub(super) sync: Arc<Signal>,
    /// In a cluster: the last Redis read of the other nodes' subscriptions, and when it was
    /// made (the subscriptions API reads Redis at most once a second per app here).
    pub(super) shared_read: tokio::sync::Mutex<Option<super::shared::SharedRead>>,
    /// In a cluster: until when some node is known to watch the app's subscriptions namespace
    /// (the last sync's answer, good for the watch key's TTL); events are shipped to Redis only
    /// then or while this node has watchers.
    pub(super) watched_until: Mutex<Option<tokio::time::Instant>>,
    /// In a cluster: the number of the last sync of this app's shared subscriptions done (see
    /// `Outgoing::taken`).
    pub(super) synced: tokio::sync::watch::Sender<u64>,
}

/// What a subscribe got.
#[derive(Debug)]
pub(super) struct Subscribed {
    /// Its registration (`None`: the replay was cut at [`MAX_REPLAY`], the stream ends after
    /// it).
    pub(super) id: Option<u64>,
    /// Updates replayed (queued before any live one).
    pub(super) replayed: usize,
    /// The resume point to announce, when a `Last-Event-ID` was given.
    pub(super) resume_point: Option<String>,
}

impl AppMercure {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock_or_recover()
    }

    /// The verifier of `app`'s tokens under `public_url`, built once per app version (the app
    /// cache makes a new `App` on every change) and kept.
    pub(super) fn verifier(&self, app: &AppRef, public_url: &str) -> Result<Verifier, KeyError> {
        let mut kept = self.verifier.lock_or_recover();
        if let Some((version, url, verifier)) = &*kept {
            if Arc::ptr_eq(version, app) && url == public_url {
                return Ok(verifier.clone());
            }
        }
        let verifier = app.mercure_verifier(public_url)?;
        *kept = Some((app.clone(), public_url.to_owned(), verifier.clone()));
        Ok(verifier)
    }

    /// Sets what the history keeps (the app's settings).
    pub fn set_limits(&self, limits: HistoryLimits) {
        *self.limits.lock_or_recover() = limits;
    }

    pub(super) fn limits(&self) -> HistoryLimits {
        *self.limits.lock_or_recover()
    }

    /// Subscriptions registered.
    pub fn subscribers(&self) -> usize {
        self.lock().subscriptions.len()
    }

    /// Registers `conn` for `selectors` (reading private updates of `readable`) and queues in its
    /// outbox the history after `resume` it may see, all under the app's lock.
    pub(super) fn subscribe(
        &self,
        conn: &Arc<Connection>,
        selectors: Vec<Selector>,
        readable: Vec<Selector>,
        subscriber: Subscriber,
        resume: &Resume,
    ) -> Subscribed {
        let limits = self.limits();
        let mut state = self.lock();
        state.history.trim(limits, Instant::now(), &self.pool);
        let (missed, resume_point) = state.history.since(resume);
        let subscription = self.subscription(conn, selectors, readable, subscriber, false);
        let (replayed, cut) = self.replay(conn, &subscription, &missed);
        if cut {
            return Subscribed {
                id: None,
                replayed,
                resume_point,
            };
        }
        let id = self.register(state, subscription);
        Subscribed {
            id: Some(id),
            replayed,
            resume_point,
        }
    }

    /// Queues in `conn`'s outbox the updates of `missed` that `subscription` wants, within
    /// [`MAX_REPLAY`] and the app's replay budget (spent by what is queued): how many were
    /// queued, and whether a bound cut the replay (the stream then ends after them). A full
    /// outbox stops the replay without a cut (the connection is being closed).
    pub(super) fn replay(
        &self,
        conn: &Connection,
        subscription: &Subscription,
        missed: &[Arc<Update>],
    ) -> (usize, bool) {
        let mut replays = self.replays.lock_or_recover();
        let allowed = MAX_REPLAY.min(replays.left(REPLAYS_PER_SECOND));
        let mut replayed = 0;
        let mut cut = false;
        for update in missed.iter().filter(|u| subscription.wants(u)) {
            if replayed == allowed {
                cut = true;
                break;
            }
            if conn.outbox().enqueue(&update.event) == Queued::No {
                break;
            }
            replayed += 1;
        }
        replays.spend(replayed);
        (replayed, cut)
    }

    /// This node's history after `resume` (trimmed first), and the resume point to announce.
    pub(super) fn local_since(
        &self,
        state: &mut State,
        limits: HistoryLimits,
        resume: &Resume,
    ) -> (Vec<Arc<Update>>, Option<String>) {
        state.history.trim(limits, Instant::now(), &self.pool);
        state.history.since(resume)
    }

    /// A subscription of `conn` (pending: its live updates held until [`Pending`] is taken).
    pub(super) fn subscription(
        &self,
        conn: &Arc<Connection>,
        selectors: Vec<Selector>,
        readable: Vec<Selector>,
        subscriber: Subscriber,
        pending: bool,
    ) -> Subscription {
        let watches = selectors
            .iter()
            .any(|s| subscriptions::watches(&self.hub_path, s));
        Subscription {
            conn: conn.clone(),
            selectors,
            readable,
            subscriber,
            watches,
            pending: pending.then(Pending::default),
            seen: None,
        }
    }

    /// The app's id (`None` once its hub is gone).
    pub(super) fn app_id(&self) -> Option<Arc<str>> {
        self.app_hub.upgrade().map(|app_hub| app_hub.id())
    }

    /// The history bytes one app keeps in Redis: the share of the node-wide bound one app gets
    /// when the node's pool is contended.
    pub(super) fn history_share(&self) -> usize {
        self.pool.max / HISTORY_SHARES
    }

    /// Registers `subscription` (its lock held by `state`, released here), marks the app's
    /// bridge active and sends its subscription events; its id.
    pub(super) fn register(&self, state: MutexGuard<'_, State>, subscription: Subscription) -> u64 {
        let (id, announcement) = self.register_unannounced(state, subscription);
        announcement.send(self, false);
        id
    }

    /// [`AppMercure::register`] without sending the subscription's events: the caller sends
    /// them (a cluster watcher's once its node hears the app's channel, `cluster.rs`).
    pub(super) fn register_unannounced(
        &self,
        mut state: MutexGuard<'_, State>,
        subscription: Subscription,
    ) -> (u64, Announcement) {
        state.next += 1;
        let id = state.next;
        let mut exact_only = true;
        for selector in &subscription.selectors {
            match selector {
                Selector::Exact(topic) => {
                    let ids = state.exact.entry(topic.clone()).or_default();
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                _ => exact_only = false,
            }
        }
        if !exact_only {
            state.others.push(id);
        }
        state.watchers += usize::from(subscription.watches);
        let clustered = self.cluster.get().is_some();
        let events =
            (state.watchers > 0 || clustered).then(|| self.events(&subscription.subscriber, true));
        let subscriber = clustered.then(|| subscription.subscriber.clone());
        state.subscriptions.insert(id, subscription);
        drop(state);
        if let Some(app_hub) = self.app_hub.upgrade() {
            app_hub.set_bridge_active(true);
        }
        let announcement = Announcement {
            subscriber,
            active: true,
            events: events.unwrap_or_default(),
        };
        (id, announcement)
    }

    /// Removes subscription `id`.
    pub fn unsubscribe(&self, id: u64) {
        let mut state = self.lock();
        let Some(subscription) = state.subscriptions.remove(&id) else {
            return;
        };
        for selector in &subscription.selectors {
            if let Selector::Exact(topic) = selector {
                if let Some(ids) = state.exact.get_mut(&**topic) {
                    ids.retain(|other| *other != id);
                    if ids.is_empty() {
                        state.exact.remove(&**topic);
                    }
                }
            }
        }
        state.others.retain(|other| *other != id);
        state.watchers -= usize::from(subscription.watches);
        let clustered = self.cluster.get().is_some();
        let events =
            (state.watchers > 0 || clustered).then(|| self.events(&subscription.subscriber, false));
        let empty = state.subscriptions.is_empty();
        drop(state);
        if empty {
            if let Some(app_hub) = self.app_hub.upgrade() {
                app_hub.set_bridge_active(false);
            }
        }
        let subscriber = clustered.then_some(&subscription.subscriber);
        self.announce(subscriber, false, events.unwrap_or_default(), false);
    }

    /// Sends a subscription's events: in a cluster, with the change to this node's shared
    /// subscriptions (`subscriber`), through Redis (`shared.rs`: the number of the sync that
    /// takes them); else delivered here.
    pub(super) fn announce(
        &self,
        subscriber: Option<&Subscriber>,
        active: bool,
        events: Vec<Update>,
        force: bool,
    ) -> Option<u64> {
        match subscriber {
            Some(subscriber) => Some(self.share(subscriber, active, events, force)),
            None => {
                for event in events {
                    self.deliver(event, false);
                }
                None
            }
        }
    }

    /// The subscription events of `subscriber` (one per selector): private, type `mercure`.
    /// Past [`SUBSCRIPTION_EVENTS_PER_SECOND`] for the app, none.
    pub(super) fn events(&self, subscriber: &Subscriber, active: bool) -> Vec<Update> {
        let mut budget = self.events.lock_or_recover();
        let allowed = budget.left(SUBSCRIPTION_EVENTS_PER_SECOND);
        if allowed < subscriber.selectors.len() {
            return Vec::new();
        }
        budget.spend(subscriber.selectors.len());
        drop(budget);
        subscriber
            .selectors
            .iter()
            .map(|selector| {
                let doc = subscriptions::document(&self.hub_path, subscriber, selector, active);
                let event_type = (selector.kind != crate::protocol::mercure::SelectorKind::Draft07)
                    .then_some("mercure");
                Update::new(
                    new_id(),
                    vec![subscriptions::topic(
                        &self.hub_path,
                        &subscriber.id,
                        selector,
                    )],
                    true,
                    event_type,
                    None,
                    &doc.to_string(),
                )
            })
            .collect()
    }

    /// Every active subscription's documents, and the id of the last update in history
    /// (`earliest` when none).
    ///
    /// Only the documents whose id is `path` or under it, at most
    /// [`subscriptions::MAX_DOCUMENTS`] of them; the documents are built after the app's lock
    /// is released.
    pub(super) fn documents(&self, path: &str) -> (Vec<serde_json::Value>, String) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let mut found: Vec<(Subscriber, usize)> = Vec::new();
        let state = self.lock();
        'all: for s in state.subscriptions.values() {
            for (at, selector) in s.subscriber.selectors.iter().enumerate() {
                let id = subscriptions::topic(&self.hub_path, &s.subscriber.id, selector);
                if id == path || id.starts_with(&prefix) {
                    if found.len() == subscriptions::MAX_DOCUMENTS {
                        break 'all;
                    }
                    let one = Subscriber {
                        id: s.subscriber.id.clone(),
                        selectors: vec![selector.clone()],
                    };
                    found.push((one, at));
                }
            }
        }
        let last = state
            .history
            .updates
            .back()
            .map_or_else(|| "earliest".to_owned(), |u| u.id.clone());
        drop(state);
        let docs = found
            .iter()
            .map(|(one, _)| subscriptions::document(&self.hub_path, one, &one.selectors[0], true))
            .collect();
        (docs, last)
    }

    /// Keeps `update` in the history and queues it for every subscription it matches; returns
    /// the copies delivered.
    pub fn publish(&self, update: Update) -> usize {
        self.deliver(update, true)
    }

    /// Takes room for `cost` more history bytes from the app holding the most (when the
    /// node-wide bound is reached), one app's lock at a time. When this app holds the most,
    /// its own push makes the room.
    fn make_room(&self, cost: usize) {
        if self.pool.bytes.load(Ordering::Relaxed) + cost <= self.pool.max {
            return;
        }
        let Some(peers) = self.peers.upgrade() else {
            return;
        };
        let apps: Vec<Arc<AppMercure>> = peers.lock_or_recover().values().cloned().collect();
        drop(peers);
        let largest = apps
            .iter()
            .map(|app| (app.lock().history.bytes, app))
            .max_by_key(|(bytes, _)| *bytes);
        if let Some((_, largest)) = largest {
            if std::ptr::eq(Arc::as_ptr(largest), self) {
                return;
            }
            let mut state = largest.lock();
            while self.pool.bytes.load(Ordering::Relaxed) + cost > self.pool.max {
                if !state.history.pop(&self.pool) {
                    break;
                }
            }
        }
    }

    /// Queues `update` for every subscription it matches, keeping it in the history when
    /// `keep` (subscription events are not kept).
    pub(super) fn deliver(&self, update: Update, keep: bool) -> usize {
        self.deliver_entry(Arc::new(update), keep, None)
    }

    /// [`AppMercure::deliver`] of an update with its stream entry id, if any (a pending
    /// subscription holds it with its entry id).
    pub(super) fn deliver_entry(
        &self,
        update: Arc<Update>,
        keep: bool,
        entry: Option<EntryId>,
    ) -> usize {
        let limits = self.limits();
        if keep {
            self.make_room(update.cost());
        }
        let mut to_wake: Vec<Arc<Connection>> = Vec::new();
        let mut state = self.lock();
        if keep {
            state.history.push(update.clone(), limits, &self.pool);
        }
        let mut candidates: Vec<u64> = Vec::new();
        for topic in &update.topics {
            if let Some(ids) = state.exact.get(topic.as_str()) {
                candidates.extend_from_slice(ids);
            }
        }
        candidates.extend_from_slice(&state.others);
        if update.topics.len() > 1 || !state.others.is_empty() {
            candidates.sort_unstable();
            candidates.dedup();
        }
        let mut delivered = 0;
        for id in candidates {
            let Some(subscription) = state.subscriptions.get_mut(&id) else {
                continue;
            };
            if !subscription.wants(&update) {
                continue;
            }
            if let (Some(seen), Some(entry)) = (subscription.seen, entry) {
                if entry <= seen {
                    continue;
                }
                subscription.seen = None;
            }
            if let Some(pending) = &mut subscription.pending {
                if pending.buffered.len() < PENDING_MAX {
                    pending.buffered.push((entry, update.clone()));
                } else {
                    pending.overflowed = true;
                }
                continue;
            }
            match subscription.conn.outbox().enqueue(&update.event) {
                Queued::No => {}
                Queued::Behind => delivered += 1,
                Queued::First => {
                    delivered += 1;
                    to_wake.push(subscription.conn.clone());
                }
            }
        }
        drop(state);
        for conn in to_wake {
            conn.outbox().flush();
        }
        delivered
    }
}

/// A Pusher event frame's parts the bridge needs.
#[derive(serde::Deserialize)]
struct PusherFrame<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    data: Box<serde_json::value::RawValue>,
}

impl PusherBridge for AppMercure {
    fn mercure_update(&self, message: &[u8]) -> usize {
        self.heard(message)
    }

    fn cluster_bus_lost(&self) {
        self.end_streams();
    }

    fn pusher_event(&self, channel: &str, frame: &Bytes) -> usize {
        // This node's own publish: in a cluster the bridge script brings it (kind 6, one id
        // everywhere), unless this node cannot hear it (Redis unreachable: degraded mode,
        // delivered here alone).
        if self.bridged_by_cluster() {
            return 0;
        }
        self.pusher_event_heard(channel, frame)
    }

    fn pusher_event_heard(&self, channel: &str, frame: &Bytes) -> usize {
        // The cluster did not put it in the history (no Mercure subscriber anywhere when it
        // was forwarded, or the append failed): bridged here, under this node's own id.
        pusher_update(channel, frame, new_id()).map_or(0, |update| self.publish(update))
    }
}

/// The Mercure update a Pusher event `frame` on `channel` makes, with id `id` (`None` for a
/// protocol event or an unreadable frame).
pub(super) fn pusher_update(channel: &str, frame: &[u8], id: String) -> Option<Update> {
    let parsed = serde_json::from_slice::<PusherFrame<'_>>(frame).ok()?;
    // Protocol frames (member events, counts) stay Pusher's.
    if parsed.event.starts_with("pusher:") || parsed.event.starts_with("pusher_internal:") {
        return None;
    }
    // A REST event's data is a JSON string (delivered as its text); a client event's may be
    // any JSON (delivered as written).
    let raw = parsed.data.get();
    let data = serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned());
    let private = ChannelName::parse(channel, usize::MAX)
        .map_or(true, |name| name.kind() != ChannelKind::Public);
    Some(Update::new(
        id,
        vec![channel.to_owned()],
        private,
        Some(&parsed.event),
        None,
        &data,
    ))
}

#[cfg(test)]
mod tests;
