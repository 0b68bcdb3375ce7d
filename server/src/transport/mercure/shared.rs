//! Active subscriptions in a cluster (`cluster/mercure_subs.rs` holds the Redis side): each
//! node keeps its own subscriptions of an app in Redis, so the subscriptions API on any node
//! lists every node's from one read (no node asks another and waits), and the subscription
//! events go through Redis to every node's watchers.
//!
//! A subscribe or an unsubscribe records its change (and its events) in the app's
//! [`Outgoing`] and wakes the node's sync task, which sends each app's changes in one script
//! call, in order. The task also syncs every app with subscribers here every
//! [`LIVE_REFRESH`] (the keys' TTL, the watch key, the dead nodes' cleanup), replacing the
//! node's entries whole when they were lost or refused (a full queue, a Redis failure, the
//! app's cap reached, Redis restarted empty).
//!
//! Redis unreachable: the events are delivered on this node only (as on a single node) and the
//! entries are replaced once Redis answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::cluster::mercure::LIVE_REFRESH;
use crate::cluster::mercure_subs::{SharedSubs, SubsSync, MAX_DOCUMENT_BYTES, MAX_SHARED};
use crate::cluster::message::encode_mercure_body;
use crate::cluster::Cluster;
use crate::locks::MutexExt;

use super::registry::{AppMercure, Hubs, Update};
use super::subscriptions::{self, Subscriber};

/// Changes (and events) one app may queue for the sync task; past it they are dropped and the
/// node's entries are replaced whole at the next sync.
pub(super) const MAX_OUTGOING: usize = 4_096;

/// Bytes (documents and event bodies) one app may queue for the sync task; past it, as past
/// [`MAX_OUTGOING`].
pub(super) const MAX_OUTGOING_BYTES: usize = 1 << 20;

/// Bytes every app together may queue on this node; past it, an app's queue is dropped as
/// past [`MAX_OUTGOING`].
pub(super) const MAX_NODE_OUTGOING_BYTES: usize = 16 << 20;

/// How long one Redis read of an app's shared subscriptions serves the subscriptions API on
/// this node (every caller meanwhile, whatever path it asks, is answered from it).
pub(super) const READ_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

/// The most bytes of documents one subscriptions API answer lists (and one Redis read
/// brings); past it the collection holds the first ones found.
pub(super) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A Redis read of an app's shared subscriptions (or its failure), and when it was made.
pub(super) type SharedRead = (tokio::time::Instant, Result<Arc<SharedSubs>, String>);

/// Syncs that failed since the start (logged at the first and every 100th).
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// How long a new watcher's subscribe waits for the sync that sets the watch key (and sends its
/// own subscription's events) before its stream opens anyway.
pub(super) const WATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The inactive event of a dead node's subscription, from its shared document (`None` for an
/// unreadable one): as the node would have sent it, with a new id.
fn inactive_event(document: &str) -> Option<Update> {
    let mut document: serde_json::Value = serde_json::from_str(document).ok()?;
    let topic = document.get("id")?.as_str()?.to_owned();
    // Draft-08 documents name their match type; their events have the type `mercure`.
    let event_type = document.get("match_type").is_some().then_some("mercure");
    document
        .as_object_mut()?
        .insert("active".into(), serde_json::Value::Bool(false));
    Some(Update::new(
        super::registry::new_id(),
        vec![topic],
        true,
        event_type,
        None,
        &document.to_string(),
    ))
}

/// An app's changes not yet in Redis.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    /// By subscription id: its document (active here) or `None` (gone); the last change wins.
    changes: HashMap<String, Option<String>>,
    /// Subscription events, in order.
    events: Vec<Update>,
    /// The node's entries are replaced whole at the next sync.
    replace: bool,
    /// The documents' and events' bytes queued (also counted in [`Signal::bytes`]).
    bytes: usize,
    /// The next sync runs even with nothing else to send (a new watcher waits for it to set
    /// the watch key).
    force: bool,
    /// The syncs that took this app's changes so far (a change queued now goes with the next).
    taken: u64,
    /// The cluster's tag losses ([`Cluster::tag_losses`]) this app's syncs saw so far.
    losses_seen: u64,
    /// This node's hash held documents after the last sync that succeeded.
    shared_before: bool,
    /// A tag loss seen while the hash held documents, not yet handled by a sync that
    /// succeeded.
    lost: bool,
}

/// The size an event takes in the queue.
fn event_bytes(event: &Update) -> usize {
    event.event.len() + event.id.len() + event.topics.iter().map(String::len).sum::<usize>()
}

/// A subscription's events (and, in a cluster, its change to the shared subscriptions) not
/// sent yet: [`Announcement::send`] sends them.
#[must_use]
pub(super) struct Announcement {
    pub(super) subscriber: Option<Subscriber>,
    pub(super) active: bool,
    pub(super) events: Vec<Update>,
}

impl Announcement {
    /// Sends them (see [`AppMercure::announce`]); in a cluster, the number of the sync that
    /// takes them. `force`: that sync runs (and sets the watch key) even with nothing to send.
    pub(super) fn send(self, app: &AppMercure, force: bool) -> Option<u64> {
        app.announce(self.subscriber.as_ref(), self.active, self.events, force)
    }
}

/// What a sync took from an app's [`Outgoing`]: the changes, the events, replace, force,
/// whether the node's tag was lost since its hash last held documents.
type Taken = (
    HashMap<String, Option<String>>,
    Vec<Update>,
    bool,
    bool,
    bool,
);

/// The apps with changes, and the sync task's wake-up.
#[derive(Debug, Default)]
pub(super) struct Signal {
    dirty: std::sync::Mutex<Vec<Arc<str>>>,
    notify: Notify,
    /// Bytes queued in every app's [`Outgoing`] on this node.
    bytes: std::sync::atomic::AtomicUsize,
}

/// The documents (id, JSON) of `subscriber`'s subscriptions that may be shared, one per id
/// (a repeated topic gives one document).
fn documents_of(hub_path: &str, subscriber: &Subscriber) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    subscriber
        .selectors
        .iter()
        .filter(|selector| seen.insert(subscriptions::topic(hub_path, &subscriber.id, selector)))
        .map(|selector| {
            let one = Subscriber {
                id: subscriber.id.clone(),
                selectors: vec![selector.clone()],
            };
            (
                subscriptions::topic(hub_path, &subscriber.id, selector),
                subscriptions::document(hub_path, &one, selector, true).to_string(),
            )
        })
        .filter(|(_, document)| document.len() <= MAX_DOCUMENT_BYTES)
        .collect()
}

impl AppMercure {
    /// The other live nodes' subscriptions of this app (the whole namespace, within
    /// [`MAX_SHARED`] documents and [`MAX_ANSWER_BYTES`]) and the history's last entry: one
    /// Redis read per app per [`READ_CACHE`] on this node, however often the API is called
    /// (callers meanwhile wait for the same read; a failure is kept as long).
    pub(super) async fn shared_read(&self, cluster: &Cluster) -> Result<Arc<SharedSubs>, String> {
        let mut cached = self.shared_read.lock().await;
        if let Some((at, read)) = &*cached {
            if at.elapsed() < READ_CACHE {
                return read.clone();
            }
        }
        let app_id = self.app_id().ok_or_else(|| "the app is gone".to_owned())?;
        let namespace = format!("{}/subscriptions", self.hub_path);
        let read = cluster
            .mercure_subs_read(&app_id, &namespace, MAX_SHARED, MAX_ANSWER_BYTES)
            .await
            .map(Arc::new);
        *cached = Some((tokio::time::Instant::now(), read.clone()));
        read
    }

    /// Whether some node watched the app's subscriptions namespace at the last sync (within the
    /// watch key's TTL): in a cluster, events are sent to Redis only then or while this node
    /// has watchers, not shipped to Redis to be dropped there.
    pub(super) fn watched_elsewhere(&self) -> bool {
        self.watched_until
            .lock_or_recover()
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// Records a subscription of `subscriber` becoming active (or not) and its `events` for the
    /// sync task; the number of the sync that takes them ([`AppMercure::wait_synced`]).
    pub(super) fn share(
        self: &AppMercure,
        subscriber: &Subscriber,
        active: bool,
        events: Vec<Update>,
        force: bool,
    ) -> u64 {
        // An event over the shared documents' bound (a big token payload) is not sent through
        // Redis: delivered to this node's watchers alone, as its document is listed here alone.
        let (events, big): (Vec<Update>, Vec<Update>) = events
            .into_iter()
            .partition(|e| e.event.len() <= MAX_DOCUMENT_BYTES);
        for event in big {
            self.deliver(event, false);
        }
        let changes: Vec<(String, Option<String>)> = if active {
            documents_of(&self.hub_path, subscriber)
                .into_iter()
                .map(|(id, document)| (id, Some(document)))
                .collect()
        } else {
            subscriber
                .selectors
                .iter()
                .map(|selector| {
                    (
                        subscriptions::topic(&self.hub_path, &subscriber.id, selector),
                        None,
                    )
                })
                .collect()
        };
        let bytes = changes
            .iter()
            .map(|(id, document)| id.len() + document.as_ref().map_or(0, String::len))
            .sum::<usize>()
            + events.iter().map(event_bytes).sum::<usize>();
        let mut outgoing = self.shared.lock_or_recover();
        let first = outgoing.changes.is_empty() && outgoing.events.is_empty() && !outgoing.force;
        outgoing.force |= force;
        let ticket = outgoing.taken + 1;
        let node_bytes = self.sync.bytes.load(Ordering::Relaxed);
        if outgoing.changes.len() + outgoing.events.len() + changes.len() > MAX_OUTGOING
            || outgoing.bytes + bytes > MAX_OUTGOING_BYTES
            || node_bytes + bytes > MAX_NODE_OUTGOING_BYTES
        {
            outgoing.changes.clear();
            outgoing.events.clear();
            outgoing.replace = true;
            self.sync
                .bytes
                .fetch_sub(std::mem::take(&mut outgoing.bytes), Ordering::Relaxed);
        } else {
            outgoing.changes.extend(changes);
            outgoing.events.extend(events);
            outgoing.bytes += bytes;
            self.sync.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        drop(outgoing);
        if first {
            self.wake_sync();
        }
        ticket
    }

    /// Queues the inactive events of a dead node's subscriptions (their shared `documents`)
    /// for the next sync, within the queue's bounds (past them the rest are dropped, logged).
    fn announce_dead(&self, documents: &[String]) {
        let events = documents
            .iter()
            .map(String::as_str)
            .filter_map(inactive_event);
        self.queue_events(events, "inactive events of a dead node's subscriptions");
    }

    /// Queues the active events of this node's subscriptions again, after another node took
    /// it for dead and removed its shared documents (announcing them inactive): within the
    /// app's events budget and the queue's bounds, shareable ones only, as when they began.
    fn reannounce(&self) {
        let subscribers: Vec<Subscriber> = self
            .lock()
            .subscriptions
            .values()
            .map(|s| s.subscriber.clone())
            .take(MAX_SHARED)
            .collect();
        let events: Vec<Update> = subscribers
            .iter()
            .flat_map(|s| self.events(s, true))
            .filter(|e| e.event.len() <= MAX_DOCUMENT_BYTES)
            .collect();
        tracing::info!(
            app_id = self.app_id().as_deref().unwrap_or(""),
            events = events.len(),
            "this node was taken for dead: its subscriptions announced active again"
        );
        self.queue_events(events.into_iter(), "active events announced again");
    }

    /// Queues `events` for the next sync, within the queue's bounds (past them the rest are
    /// dropped, logged as `what`).
    fn queue_events(&self, events: impl Iterator<Item = Update>, what: &str) {
        let mut outgoing = self.shared.lock_or_recover();
        let mut dropped = 0;
        for event in events {
            let bytes = event_bytes(&event);
            if outgoing.changes.len() + outgoing.events.len() >= MAX_OUTGOING
                || outgoing.bytes + bytes > MAX_OUTGOING_BYTES
                || self.sync.bytes.load(Ordering::Relaxed) + bytes > MAX_NODE_OUTGOING_BYTES
            {
                dropped += 1;
                continue;
            }
            outgoing.bytes += bytes;
            self.sync.bytes.fetch_add(bytes, Ordering::Relaxed);
            outgoing.events.push(event);
        }
        drop(outgoing);
        if dropped > 0 {
            tracing::warn!(
                app_id = self.app_id().as_deref().unwrap_or(""),
                dropped,
                "{what} dropped (the queue is full)"
            );
        }
        self.wake_sync();
    }

    /// Waits (at most [`WATCH_WAIT`]) until the sync numbered `ticket` (or a later one) is done.
    pub(super) async fn wait_synced(&self, ticket: u64) {
        let mut synced = self.synced.subscribe();
        let _ = tokio::time::timeout(WATCH_WAIT, synced.wait_for(|done| *done >= ticket)).await;
    }

    /// Puts this app in the sync task's next turn.
    fn wake_sync(&self) {
        let Some(app_id) = self.app_id() else {
            return;
        };
        let mut dirty = self.sync.dirty.lock_or_recover();
        if !dirty.contains(&app_id) {
            dirty.push(app_id);
        }
        drop(dirty);
        self.sync.notify.notify_one();
    }

    /// Every active subscription's shareable documents here (at most [`MAX_SHARED`]).
    fn all_documents(&self) -> Vec<(String, String)> {
        let subscribers: Vec<Subscriber> = self
            .lock()
            .subscriptions
            .values()
            .map(|s| s.subscriber.clone())
            .take(MAX_SHARED)
            .collect();
        subscribers
            .iter()
            .flat_map(|s| documents_of(&self.hub_path, s))
            .take(MAX_SHARED)
            .collect()
    }

    /// Sends this app's changes to Redis (the whole set when `refresh` finds it short).
    async fn sync_shared(&self, cluster: &Cluster, refresh: bool) {
        let Some(app_id) = self.app_id() else {
            return;
        };
        let losses = cluster.tag_losses();
        let (changes, events, replace, force, lost, taken) = {
            let mut outgoing = self.shared.lock_or_recover();
            // A heartbeat found the node's tag gone since the last sync: its hash is written
            // whole again (and its subscriptions announced again if another node removed it).
            outgoing.lost |= losses != outgoing.losses_seen && outgoing.shared_before;
            outgoing.losses_seen = losses;
            let lost = outgoing.lost;
            outgoing.replace |= lost;
            self.sync
                .bytes
                .fetch_sub(std::mem::take(&mut outgoing.bytes), Ordering::Relaxed);
            outgoing.taken += 1;
            (
                std::mem::take(&mut outgoing.changes),
                std::mem::take(&mut outgoing.events),
                std::mem::take(&mut outgoing.replace),
                std::mem::take(&mut outgoing.force),
                lost,
                outgoing.taken,
            )
        };
        let took = (changes, events, replace, force, lost);
        self.sync_taken(cluster, &app_id, refresh, took).await;
        self.synced.send_replace(taken);
    }

    /// [`AppMercure::sync_shared`] of the changes it took.
    async fn sync_taken(
        &self,
        cluster: &Cluster,
        app_id: &str,
        refresh: bool,
        (changes, events, replace, force, lost): Taken,
    ) {
        let (local, watch) = {
            let state = self.lock();
            (
                state
                    .subscriptions
                    .values()
                    .map(|s| s.subscriber.selectors.len())
                    .sum::<usize>(),
                state.watchers > 0,
            )
        };
        if !refresh && !replace && !force && changes.is_empty() && events.is_empty() {
            return;
        }
        let mut sync = SubsSync {
            replace,
            watch,
            ..SubsSync::default()
        };
        if replace {
            sync.added = self.all_documents();
        } else {
            for (id, change) in changes {
                match change {
                    Some(document) => sync.added.push((id, document)),
                    None => sync.removed.push(id),
                }
            }
        }
        // Events go to Redis only while some node watches (else the script drops them); held
        // back, they are sent at once if this sync finds a watcher after all.
        let ship = watch || self.watched_elsewhere();
        if ship {
            sync.events = events
                .iter()
                .map(|u| encode_mercure_body(u.private, &u.topics, &u.id, &u.event))
                .collect();
        }
        match cluster.mercure_subs_sync(app_id, &sync).await {
            Ok(synced) => {
                // The dead nodes' subscriptions this sync removed: their inactive events are
                // this node's to send (nobody else got their documents), while someone watches.
                if synced.watched && !synced.dead.is_empty() {
                    self.announce_dead(&synced.dead);
                }
                let expected = {
                    let mut outgoing = self.shared.lock_or_recover();
                    outgoing.lost &= !lost;
                    std::mem::replace(&mut outgoing.shared_before, synced.held > 0)
                };
                // Its hash, holding documents after the last sync, was gone before this one:
                // another node took this one for dead and removed it (announcing its
                // subscriptions inactive). Written whole and announced active again, once, in
                // the next turn.
                if expected && !synced.had {
                    if !replace {
                        self.shared.lock_or_recover().replace = true;
                    }
                    self.reannounce();
                }
                *self.watched_until.lock_or_recover() = synced
                    .watched
                    .then(|| tokio::time::Instant::now() + crate::cluster::mercure_subs::SUBS_TTL);
                if !ship && synced.watched && !events.is_empty() {
                    // A watch began elsewhere since the last sync: the held events go next
                    // turn, before any newer ones.
                    let bytes = events.iter().map(event_bytes).sum::<usize>();
                    let mut outgoing = self.shared.lock_or_recover();
                    outgoing.bytes += bytes;
                    self.sync.bytes.fetch_add(bytes, Ordering::Relaxed);
                    outgoing.events.splice(0..0, events);
                    drop(outgoing);
                    self.wake_sync();
                }
                // Lost (Redis restarted empty) or refused earlier (the app's cap, now with
                // room): replaced whole in the task's next turn. Counted from the distinct
                // shareable documents (built only when the selectors' count says some may be
                // missing), and not while the cap leaves no room: a node whose documents are
                // all there, or cannot be, does not rewrite its hash every refresh.
                if refresh
                    && !replace
                    && synced.held < local.min(MAX_SHARED)
                    && synced.others + synced.held < MAX_SHARED
                    && synced.held < self.all_documents().len()
                {
                    self.shared.lock_or_recover().replace = true;
                    self.wake_sync();
                }
            }
            Err(error) => {
                let count = FAILURES.fetch_add(1, Ordering::Relaxed) + 1;
                if count == 1 || count % 100 == 0 {
                    tracing::warn!(
                        app_id,
                        %error,
                        failures = count,
                        "the Mercure subscriptions were not shared (their events delivered on this node)"
                    );
                }
                self.shared.lock_or_recover().replace = true;
                for event in events {
                    self.deliver(event, false);
                }
            }
        }
    }
}

/// Runs the node's sync of shared subscriptions while the runtime runs: each woken app's
/// changes, and every [`LIVE_REFRESH`] every app with subscribers here. Supervised: a panic in
/// it is logged as an error and the task restarted a second later (without it every cluster
/// subscription event, local watchers' included, and every refresh would stop silently).
pub(super) fn start_sync(hubs: &Hubs) {
    let hubs = hubs.clone();
    tokio::spawn(supervise(move || run_sync(hubs.clone())));
}

/// Runs the task `make` makes, again a second after each panic (logged); returns when a run
/// ends without one.
async fn supervise<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut panics = 0u64;
    loop {
        match tokio::spawn(make()).await {
            Ok(()) => return,
            Err(error) if error.is_panic() => {
                panics += 1;
                tracing::error!(
                    panics,
                    "the Mercure subscriptions sync task panicked; restarting it in 1 s"
                );
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(_) => return,
        }
    }
}

/// The sync task's loop (see [`start_sync`]).
async fn run_sync(hubs: Hubs) {
    let mut tick = tokio::time::interval(LIVE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let refresh = tokio::select! {
            () = hubs.sync.notify.notified() => false,
            _ = tick.tick() => true,
        };
        let Some(cluster) = hubs.cluster.get() else {
            continue;
        };
        let dirty = std::mem::take(&mut *hubs.sync.dirty.lock_or_recover());
        let apps: Vec<Arc<AppMercure>> = if refresh {
            hubs.all()
        } else {
            dirty.iter().filter_map(|id| hubs.existing(id)).collect()
        };
        for app in apps {
            let idle = app.subscribers() == 0;
            app.sync_shared(cluster, refresh && !idle).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::AppHub;
    use crate::protocol::mercure::SelectorKind;

    fn subscriber(n: usize) -> Subscriber {
        Subscriber {
            id: format!("urn:uuid:{n}"),
            selectors: vec![subscriptions::Described {
                kind: SelectorKind::Draft07,
                raw: "books".into(),
                payload: None,
            }],
        }
    }

    /// Subscribes that come faster than Redis takes them: the changes waiting for the sync task
    /// stay within [`MAX_OUTGOING`], and the node's entries are then replaced whole.
    #[test]
    fn the_changes_waiting_for_redis_are_bounded() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 20);
        let app = hubs.app("1", &app_hub);
        for n in 0..MAX_OUTGOING + 10 {
            app.share(&subscriber(n), true, Vec::new(), false);
            let outgoing = app.shared.lock_or_recover();
            assert!(outgoing.changes.len() + outgoing.events.len() <= MAX_OUTGOING);
        }
        assert!(app.shared.lock_or_recover().replace, "replaced whole next");
        assert_eq!(
            hubs.sync.dirty.lock_or_recover().len(),
            1,
            "woken once per app"
        );
        // The last change of a subscription wins (removed, then active again: active).
        let mut outgoing = Outgoing::default();
        std::mem::swap(&mut outgoing, &mut app.shared.lock_or_recover());
        app.share(&subscriber(1), false, Vec::new(), false);
        app.share(&subscriber(1), true, Vec::new(), false);
        let outgoing = app.shared.lock_or_recover();
        assert_eq!(outgoing.changes.len(), 1);
        assert!(outgoing.changes.values().all(Option::is_some));
    }

    fn event(bytes: usize) -> Update {
        Update::new(
            "urn:uuid:e".into(),
            vec!["t".into()],
            true,
            None,
            None,
            &"x".repeat(bytes),
        )
    }

    /// Events that come faster than Redis takes them stay within [`MAX_OUTGOING_BYTES`] per app
    /// and [`MAX_NODE_OUTGOING_BYTES`] per node, and an event over [`MAX_DOCUMENT_BYTES`] is not
    /// queued for Redis at all.
    /// A panicking sync task is run again (and the supervisor ends when a run ends normally).
    #[tokio::test(start_paused = true)]
    async fn a_panicking_sync_task_is_restarted() {
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        supervise(move || {
            let run = counted.fetch_add(1, Ordering::Relaxed);
            async move {
                assert!(run >= 2, "run {run} panics");
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_bytes_waiting_for_redis_are_bounded_per_app_and_per_node() {
        let hubs = Hubs::new(1 << 20);
        let app_hub = Arc::new(AppHub::new("1", None));
        let app = hubs.app("1", &app_hub);
        app.share(
            &subscriber(0),
            true,
            vec![event(MAX_DOCUMENT_BYTES + 1)],
            false,
        );
        assert!(app.shared.lock_or_recover().events.is_empty(), "not queued");
        for n in 0..(MAX_OUTGOING_BYTES / 4_000) + 10 {
            app.share(&subscriber(n), true, vec![event(4_000)], false);
            assert!(app.shared.lock_or_recover().bytes <= MAX_OUTGOING_BYTES);
        }
        assert!(app.shared.lock_or_recover().replace, "replaced whole next");
        // Many apps at once: the node's total stays bounded.
        let apps: Vec<_> = (0..40)
            .map(|a| {
                let id = format!("app{a}");
                hubs.app(&id, &Arc::new(AppHub::new(&id, None)))
            })
            .collect();
        for n in 0..200 {
            for app in &apps {
                app.share(&subscriber(n), true, vec![event(4_000)], false);
                assert!(hubs.sync.bytes.load(Ordering::Relaxed) <= MAX_NODE_OUTGOING_BYTES);
            }
        }
        assert!(apps.iter().any(|a| a.shared.lock_or_recover().replace));
    }
}
