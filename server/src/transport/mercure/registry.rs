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
use crate::hub::{AppHub, Connection, PusherBridge, Queued};
use crate::locks::MutexExt;
use crate::protocol::mercure::{any_matches, Selector};
use crate::protocol::{ChannelKind, ChannelName};
use crate::tenants::AppRef;

use super::form::is_forbidden_char;
use super::subscriptions::{self, Subscriber};

/// The most history updates one subscribe replays; past it the stream ends after them, and the
/// client reconnects from the last one it got (no gap, and no unbounded replay).
pub const MAX_REPLAY: usize = 256;

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
    apps: Arc<Mutex<HashMap<Box<str>, Arc<AppMercure>>>>,
    history_bytes: Arc<AtomicUsize>,
    max_history_bytes: usize,
}

impl Hubs {
    /// No app yet; histories hold at most `max_history_bytes` together.
    pub fn new(max_history_bytes: usize) -> Hubs {
        Hubs {
            apps: Arc::default(),
            history_bytes: Arc::default(),
            max_history_bytes,
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
                    history_bytes: self.history_bytes.clone(),
                    max_history_bytes: self.max_history_bytes,
                    limits: Mutex::new(HistoryLimits::default()),
                    verifier: Mutex::new(None),
                });
                app_hub.attach_bridge(app.clone());
                app
            })
            .clone()
    }

    /// App `app_id`'s state, if it has any here.
    pub fn existing(&self, app_id: &str) -> Option<Arc<AppMercure>> {
        self.apps.lock_or_recover().get(app_id).cloned()
    }

    /// Bytes the histories hold, all apps together.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes.load(Ordering::Relaxed)
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
struct Subscription {
    conn: Arc<Connection>,
    selectors: Vec<Selector>,
    /// The topics its token lets it read privately.
    readable: Vec<Selector>,
    /// Who it is, for the subscription documents.
    subscriber: Subscriber,
    /// Whether it selects the subscriptions namespace by name.
    watches: bool,
}

impl Subscription {
    fn wants(&self, update: &Update) -> bool {
        any_matches(&self.selectors, &update.topics)
            && (!update.private || any_matches(&self.readable, &update.topics))
    }
}

/// One app's history holds at most this fraction of the node-wide bytes bound.
pub(super) const HISTORY_SHARES: usize = 8;

/// An app's history: the last updates, oldest first, bounded by count, age and (node-wide)
/// bytes. The cluster's history (Redis Streams) would replace this struct behind the same
/// three calls (`push`, `since`, `trim`).
#[derive(Debug, Default)]
struct History {
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
    fn trim(&mut self, limits: HistoryLimits, now: Instant, shared: &AtomicUsize) {
        while let Some(oldest) = self.updates.front() {
            let old = now.saturating_duration_since(oldest.at) > limits.age;
            if self.updates.len() <= limits.size && !old {
                break;
            }
            self.pop(shared);
        }
    }

    fn pop(&mut self, shared: &AtomicUsize) -> bool {
        let Some(oldest) = self.updates.pop_front() else {
            return false;
        };
        let cost = oldest.cost();
        self.bytes -= cost;
        shared.fetch_sub(cost, Ordering::Relaxed);
        true
    }

    fn push(
        &mut self,
        update: Arc<Update>,
        limits: HistoryLimits,
        shared: &AtomicUsize,
        max: usize,
    ) {
        let cost = update.cost();
        // One app's share of the node-wide bound: its own oldest go first, so one tenant
        // cannot take every other app's history.
        while self.bytes + cost > max / HISTORY_SHARES {
            if !self.pop(shared) {
                return;
            }
        }
        // The node-wide bound: this app's oldest go first; if others hold it all, not kept.
        while shared.load(Ordering::Relaxed) + cost > max {
            if !self.pop(shared) {
                return;
            }
        }
        if limits.size == 0 {
            return;
        }
        self.bytes += cost;
        shared.fetch_add(cost, Ordering::Relaxed);
        self.updates.push_back(update);
        self.trim(limits, Instant::now(), shared);
    }

    /// The updates after `resume`, and the resume point to announce (the id found, or
    /// `earliest` when the history is read from its start).
    fn since(&self, resume: &Resume) -> (Vec<Arc<Update>>, Option<String>) {
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
struct State {
    next: u64,
    subscriptions: HashMap<u64, Subscription>,
    /// Subscriptions by the exact topics they select.
    exact: HashMap<Box<str>, Vec<u64>>,
    /// Subscriptions with a selector that is not an exact topic.
    others: Vec<u64>,
    /// Subscriptions that select the subscriptions namespace by name (subscription events are
    /// made only while there are some).
    watchers: usize,
    history: History,
}

/// One app's Mercure state.
#[derive(Debug)]
pub struct AppMercure {
    /// The app's hub path (the subscriptions namespace is under it).
    hub_path: String,
    state: Mutex<State>,
    app_hub: std::sync::Weak<AppHub>,
    history_bytes: Arc<AtomicUsize>,
    max_history_bytes: usize,
    limits: Mutex<HistoryLimits>,
    /// The app's token verifier, kept for the app version and public URL it was built for.
    verifier: Mutex<Option<(AppRef, String, Verifier)>>,
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
    fn lock(&self) -> MutexGuard<'_, State> {
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

    fn limits(&self) -> HistoryLimits {
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
        state
            .history
            .trim(limits, Instant::now(), &self.history_bytes);
        let (missed, resume_point) = state.history.since(resume);
        let watches = selectors
            .iter()
            .any(|s| subscriptions::watches(&self.hub_path, s));
        let subscription = Subscription {
            conn: conn.clone(),
            selectors,
            readable,
            subscriber,
            watches,
        };
        let mut replayed = 0;
        let mut cut = false;
        for update in missed.iter().filter(|u| subscription.wants(u)) {
            if replayed == MAX_REPLAY {
                cut = true;
                break;
            }
            if conn.outbox().enqueue(&update.event) == Queued::No {
                break;
            }
            replayed += 1;
        }
        if cut {
            return Subscribed {
                id: None,
                replayed,
                resume_point,
            };
        }
        state.next += 1;
        let id = state.next;
        let mut exact_only = true;
        for selector in &subscription.selectors {
            match selector {
                Selector::Exact(topic) => {
                    let ids = state.exact.entry(topic.as_str().into()).or_default();
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
        state.watchers += usize::from(watches);
        let events = (state.watchers > 0).then(|| self.events(&subscription.subscriber, true));
        state.subscriptions.insert(id, subscription);
        drop(state);
        if let Some(app_hub) = self.app_hub.upgrade() {
            app_hub.set_bridge_active(true);
        }
        for event in events.into_iter().flatten() {
            self.announce(event);
        }
        Subscribed {
            id: Some(id),
            replayed,
            resume_point,
        }
    }

    /// Removes subscription `id`.
    pub fn unsubscribe(&self, id: u64) {
        let mut state = self.lock();
        let Some(subscription) = state.subscriptions.remove(&id) else {
            return;
        };
        for selector in &subscription.selectors {
            if let Selector::Exact(topic) = selector {
                if let Some(ids) = state.exact.get_mut(topic.as_str()) {
                    ids.retain(|other| *other != id);
                    if ids.is_empty() {
                        state.exact.remove(topic.as_str());
                    }
                }
            }
        }
        state.others.retain(|other| *other != id);
        state.watchers -= usize::from(subscription.watches);
        let events = (state.watchers > 0).then(|| self.events(&subscription.subscriber, false));
        let empty = state.subscriptions.is_empty();
        drop(state);
        if empty {
            if let Some(app_hub) = self.app_hub.upgrade() {
                app_hub.set_bridge_active(false);
            }
        }
        for event in events.into_iter().flatten() {
            self.announce(event);
        }
    }

    /// The subscription events of `subscriber` (one per selector): private, type `mercure`.
    fn events(&self, subscriber: &Subscriber, active: bool) -> Vec<Update> {
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
    pub(super) fn documents(&self) -> (Vec<serde_json::Value>, String) {
        let state = self.lock();
        let docs = state
            .subscriptions
            .values()
            .flat_map(|s| {
                s.subscriber.selectors.iter().map(|selector| {
                    subscriptions::document(&self.hub_path, &s.subscriber, selector, true)
                })
            })
            .collect();
        let last = state
            .history
            .updates
            .back()
            .map_or_else(|| "earliest".to_owned(), |u| u.id.clone());
        (docs, last)
    }

    /// Keeps `update` in the history and queues it for every subscription it matches; returns
    /// the copies delivered.
    pub fn publish(&self, update: Update) -> usize {
        self.deliver(update, true)
    }

    /// Queues a subscription event for the subscriptions it matches, without keeping it in the
    /// history: connecting and disconnecting in a loop must not flush the app's real updates
    /// (nor take node-wide history bytes).
    fn announce(&self, event: Update) {
        self.deliver(event, false);
    }

    fn deliver(&self, update: Update, keep: bool) -> usize {
        let update = Arc::new(update);
        let limits = self.limits();
        let mut to_wake: Vec<Arc<Connection>> = Vec::new();
        let mut state = self.lock();
        if keep {
            state.history.push(
                update.clone(),
                limits,
                &self.history_bytes,
                self.max_history_bytes,
            );
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
            let Some(subscription) = state.subscriptions.get(&id) else {
                continue;
            };
            if !subscription.wants(&update) {
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
    fn pusher_event(&self, channel: &str, frame: &Bytes) -> usize {
        let Ok(parsed) = serde_json::from_slice::<PusherFrame<'_>>(frame) else {
            return 0;
        };
        // Protocol frames (member events, counts) stay Pusher's.
        if parsed.event.starts_with("pusher:") || parsed.event.starts_with("pusher_internal:") {
            return 0;
        }
        // A REST event's data is a JSON string (delivered as its text); a client event's may be
        // any JSON (delivered as written).
        let raw = parsed.data.get();
        let data = serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned());
        let private = ChannelName::parse(channel, usize::MAX)
            .map_or(true, |name| name.kind() != ChannelKind::Public);
        self.publish(Update::new(
            new_id(),
            vec![channel.to_owned()],
            private,
            Some(&parsed.event),
            None,
            &data,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SocketId;

    fn exact(topic: &str) -> Selector {
        Selector::Exact(topic.into())
    }

    fn nobody() -> Subscriber {
        Subscriber {
            id: "urn:uuid:0".into(),
            selectors: Vec::new(),
        }
    }

    fn update(id: &str, topic: &str, private: bool) -> Update {
        Update::new(id.into(), vec![topic.into()], private, None, None, id)
    }

    #[test]
    fn events_split_data_lines_and_cannot_inject_fields() {
        let event = format_event("u1", Some("up\ndata: x"), Some(10), "a\r\nb\rc\nid: evil");
        assert_eq!(
            &event[..],
            b"id: u1\nevent: updata: x\nretry: 10\ndata: a\ndata: b\ndata: c\ndata: id: evil\n\n"
        );
    }

    #[test]
    fn matching_filters_private_updates_and_history_replays_after_an_id() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 20);
        let app = hubs.app("1", &app_hub);
        let (public, mut public_rx) = Connection::new(SocketId::new(1, 1), 64);
        let (reader, mut reader_rx) = Connection::new(SocketId::new(2, 1), 64);
        app.subscribe(&public, vec![exact("a")], vec![], nobody(), &Resume::Live);
        app.subscribe(
            &reader,
            vec![Selector::Any],
            vec![exact("a")],
            nobody(),
            &Resume::Live,
        );
        assert_eq!(app.publish(update("1", "a", false)), 2);
        assert_eq!(app.publish(update("2", "a", true)), 1);
        assert_eq!(app.publish(update("3", "b", true)), 0);
        assert_eq!(app.publish(update("4", "b", false)), 1);
        assert!(public_rx.try_recv().unwrap().starts_with(b"id: 1\n"));
        assert!(public_rx.try_recv().is_none());
        for id in ["1", "2", "4"] {
            assert!(reader_rx
                .try_recv()
                .unwrap()
                .starts_with(format!("id: {id}\n").as_bytes()));
        }
        let (late, mut late_rx) = Connection::new(SocketId::new(3, 1), 64);
        let subscribed = app.subscribe(
            &late,
            vec![Selector::Any],
            vec![],
            nobody(),
            &Resume::After("1".into()),
        );
        assert_eq!(
            subscribed.replayed, 1,
            "private 2 and 3 skipped, 4 replayed"
        );
        assert_eq!(subscribed.resume_point.as_deref(), Some("1"));
        assert!(late_rx.try_recv().unwrap().starts_with(b"id: 4\n"));
        let (gone, _rx) = Connection::new(SocketId::new(4, 1), 64);
        let too_old = app.subscribe(
            &gone,
            vec![Selector::Any],
            vec![],
            nobody(),
            &Resume::After("x".into()),
        );
        assert_eq!(too_old.resume_point.as_deref(), Some("earliest"));
        assert_eq!(too_old.replayed, 2);
    }

    #[test]
    fn history_is_bounded_by_count_and_node_wide_bytes() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(2_000 * HISTORY_SHARES);
        let app = hubs.app("1", &app_hub);
        app.set_limits(HistoryLimits {
            size: 3,
            age: Duration::from_secs(60),
        });
        for i in 0..10 {
            app.publish(update(&i.to_string(), "a", false));
        }
        assert_eq!(app.lock().history.updates.len(), 3);
        let big = "x".repeat(900);
        for i in 0..10 {
            app.publish(Update::new(
                i.to_string(),
                vec!["a".into()],
                false,
                None,
                None,
                &big,
            ));
        }
        assert!(hubs.history_bytes() <= 2_000, "{}", hubs.history_bytes());
        assert_eq!(hubs.history_bytes(), app.lock().history.bytes);
    }

    #[test]
    fn one_app_cannot_take_every_other_app_s_history() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let other_hub = Arc::new(AppHub::new("2", None));
        let hubs = Hubs::new(64 * 1024);
        let hostile = hubs.app("1", &app_hub);
        let quiet = hubs.app("2", &other_hub);
        for i in 0..1_000 {
            hostile.publish(update(&format!("h{i}"), "a", false));
        }
        assert!(hostile.lock().history.bytes <= 64 * 1024 / HISTORY_SHARES);
        for i in 0..50 {
            quiet.publish(update(&format!("q{i}"), "a", false));
        }
        assert_eq!(quiet.lock().history.updates.len(), 50);
        assert_eq!(
            hubs.history_bytes(),
            hostile.lock().history.bytes + quiet.lock().history.bytes
        );
    }

    #[test]
    fn subscription_events_stay_out_of_the_history() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 24);
        let app = hubs.app("1", &app_hub);
        for i in 0..100 {
            app.publish(update(&i.to_string(), "a", false));
        }
        let bytes = hubs.history_bytes();
        // A watcher of the subscriptions namespace: events are made for every (un)subscribe.
        let (watcher, _watcher_rx) = Connection::new(SocketId::new(1, 1), 64);
        let namespace = format!("{}/subscriptions", app.hub_path);
        app.subscribe(
            &watcher,
            vec![exact(&namespace)],
            vec![],
            nobody(),
            &Resume::Live,
        );
        assert_eq!(app.lock().watchers, 1);
        let many = Subscriber {
            id: "urn:uuid:1".into(),
            selectors: (0..32)
                .map(|i| subscriptions::Described {
                    kind: crate::protocol::mercure::SelectorKind::Draft07,
                    raw: format!("t{i}"),
                    payload: None,
                })
                .collect(),
        };
        for round in 0..20 {
            let (conn, _rx) = Connection::new(SocketId::new(2, round), 64);
            let selectors = (0..32).map(|i| exact(&format!("t{i}"))).collect();
            let id = app
                .subscribe(&conn, selectors, vec![], many.clone(), &Resume::Live)
                .id
                .unwrap();
            app.unsubscribe(id);
        }
        assert_eq!(app.lock().history.updates.len(), 100);
        assert_eq!(app.lock().history.updates.back().unwrap().id, "99");
        assert_eq!(hubs.history_bytes(), bytes);
    }

    #[test]
    fn a_replay_past_its_bound_ends_the_stream_instead_of_registering() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 24);
        let app = hubs.app("1", &app_hub);
        for i in 0..MAX_REPLAY + 5 {
            app.publish(update(&i.to_string(), "a", false));
        }
        let (conn, _rx) = Connection::new(SocketId::new(1, 1), MAX_REPLAY + 64);
        let subscribed =
            app.subscribe(&conn, vec![exact("a")], vec![], nobody(), &Resume::Earliest);
        assert_eq!(subscribed.replayed, MAX_REPLAY);
        assert!(subscribed.id.is_none());
        assert_eq!(app.subscribers(), 0);
    }
}
