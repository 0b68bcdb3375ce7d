//! The live console's event taps: the dashboard watches an app's events (connections,
//! subscriptions, errors, webhook attempts) through a broadcast channel per watched app.
//! Sessions, the REST API and the webhook worker emit; the dashboard adapter subscribes.
//!
//! In a cluster, the cluster tells the taps which apps are watched on other nodes
//! ([`Taps::set_remote`]) and takes their events from a bounded queue ([`Taps::forward_to`]:
//! full, an event is dropped), and hands other nodes' events to this node's watchers
//! ([`Taps::deliver`]). On a single node none of it is set, and emitting costs what it did.

use crate::locks::RwLockExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use arc_swap::ArcSwap;

use herald_dashboard::DebugEvent;
use tokio::sync::{broadcast, mpsc};

use crate::clock::Clock;

/// The live console's event streams, one per watched app. Emitting costs one atomic load while
/// nobody watches.
#[derive(Debug)]
pub struct Taps {
    watched: AtomicUsize,
    /// Shutdown began: no new watcher, and every open console stream has ended.
    closed: AtomicBool,
    // A std lock: held for a map lookup or insert only.
    by_app: RwLock<HashMap<String, broadcast::Sender<DebugEvent>>>,
    /// Stamps each event.
    clock: Clock,
    /// In a cluster: this node's id, on each event it emits.
    node: OnceLock<String>,
    /// In a cluster: how many apps are watched on other nodes (0: nothing to forward).
    remote_watched: AtomicUsize,
    /// The apps watched on other nodes, each with the events forwarded since the last
    /// [`Taps::set_remote`] (at most [`FORWARD_PER_APP`]: one busy app cannot fill the queue
    /// every app's console shares).
    /// Swapped whole once a second and read without a lock: every emit on every node looks
    /// here while any app is watched anywhere.
    remote: ArcSwap<HashMap<String, AtomicUsize>>,
    /// In a cluster: where events of apps watched elsewhere go (the cluster sends them on).
    forward: OnceLock<mpsc::Sender<(String, DebugEvent)>>,
}

/// Most events of one app forwarded to other nodes between two [`Taps::set_remote`] calls (the
/// cluster makes them once a second), beside the cluster's node-wide cap.
pub const FORWARD_PER_APP: usize = 50;

/// Longest detail text in a console event.
const DETAIL_CHARS: usize = 300;

/// `text` cut to the console's width.
pub fn clip(text: &str) -> String {
    if text.chars().count() <= DETAIL_CHARS {
        text.to_owned()
    } else {
        let mut clipped: String = text.chars().take(DETAIL_CHARS).collect();
        clipped.push('…');
        clipped
    }
}

impl Taps {
    /// No watcher yet; events are stamped with `clock`.
    pub fn new(clock: Clock) -> Taps {
        Taps {
            watched: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            by_app: RwLock::default(),
            clock,
            node: OnceLock::new(),
            remote_watched: AtomicUsize::new(0),
            remote: ArcSwap::default(),
            forward: OnceLock::new(),
        }
    }

    /// Cluster mode: stamps this node's id on every event, and sends the events of apps watched
    /// on other nodes (see [`Taps::set_remote`]) to `forward` (never waiting: full, an event is
    /// dropped).
    pub fn forward_to(&self, node_id: &str, forward: mpsc::Sender<(String, DebugEvent)>) {
        let _ = self.node.set(node_id.to_owned());
        let _ = self.forward.set(forward);
    }

    /// Cluster mode: the apps watched on other nodes now; each app's forwarding budget
    /// ([`FORWARD_PER_APP`]) starts again.
    pub fn set_remote(&self, apps: HashSet<String>) {
        let fresh: HashMap<String, AtomicUsize> = apps
            .into_iter()
            .map(|app_id| (app_id, AtomicUsize::new(0)))
            .collect();
        self.remote_watched.store(fresh.len(), Ordering::Relaxed);
        self.remote.store(Arc::new(fresh));
    }

    /// The apps someone watches on this node.
    pub fn watched_apps(&self) -> Vec<String> {
        if self.watched.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let taps = self.by_app.read_or_recover();
        taps.iter()
            .filter(|(_, sender)| sender.receiver_count() > 0)
            .map(|(app_id, _)| app_id.clone())
            .collect()
    }

    /// Shows another node's event to this node's watchers of app `app_id` (not forwarded on).
    pub fn deliver(&self, app_id: &str, event: DebugEvent) {
        let taps = self.by_app.read_or_recover();
        if let Some(sender) = taps.get(app_id).filter(|s| s.receiver_count() > 0) {
            let _ = sender.send(event);
        }
    }

    /// Sends an event to app `app_id`'s console, if someone watches it.
    pub fn emit(
        &self,
        app_id: &str,
        kind: &'static str,
        channel: Option<&str>,
        socket_id: Option<&str>,
        detail: impl FnOnce() -> String,
    ) {
        let watched_here = self.watched.load(Ordering::Relaxed) > 0;
        if !watched_here && self.remote_watched.load(Ordering::Relaxed) == 0 {
            return;
        }
        let sender = if watched_here {
            let taps = self.by_app.read_or_recover();
            taps.get(app_id).filter(|s| s.receiver_count() > 0).cloned()
        } else {
            None
        };
        // Watched elsewhere, and within the app's forwarding budget.
        let elsewhere = self.remote_watched.load(Ordering::Relaxed) > 0
            && self
                .remote
                .load()
                .get(app_id)
                .is_some_and(|sent| sent.fetch_add(1, Ordering::Relaxed) < FORWARD_PER_APP);
        if sender.is_none() && !elsewhere {
            return;
        }
        let event = DebugEvent {
            at_ms: self.clock.now_millis(),
            kind,
            channel: channel.map(str::to_owned),
            socket_id: socket_id.map(str::to_owned),
            detail: clip(&detail()),
            node: self.node.get().cloned(),
        };
        if elsewhere {
            if let Some(forward) = self.forward.get() {
                let _ = forward.try_send((app_id.to_owned(), event.clone()));
            }
        }
        if let Some(sender) = sender {
            let _ = sender.send(event);
        }
    }

    /// Ends every console stream (their senders are dropped) and refuses new ones: shutdown must
    /// not wait for an open dashboard tab.
    pub fn close_all(&self) {
        let mut taps = self.by_app.write_or_recover();
        self.closed.store(true, Ordering::SeqCst);
        taps.clear();
        self.watched.store(0, Ordering::Relaxed);
    }

    /// A new watcher of app `app_id` (after [`Taps::close_all`], a stream that ends at once).
    pub fn subscribe(&self, app_id: &str) -> broadcast::Receiver<DebugEvent> {
        let mut taps = self.by_app.write_or_recover();
        if self.closed.load(Ordering::SeqCst) {
            return broadcast::channel(1).1;
        }
        taps.retain(|_, sender| sender.receiver_count() > 0);
        let receiver = taps
            .entry(app_id.to_owned())
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe();
        self.watched.store(taps.len(), Ordering::Relaxed);
        receiver
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast::error::RecvError;

    use super::*;

    #[tokio::test]
    async fn a_watcher_gets_events_stamped_by_the_clock_until_close_all_ends_every_stream() {
        let clock = Clock::manual(1_700_000_000_000);
        let taps = Taps::new(clock.clone());
        // Nobody watches: nothing is built.
        taps.emit("1", "connection", None, None, || {
            unreachable!("not watched")
        });
        let mut watcher = taps.subscribe("1");
        clock.set_millis(1_700_000_000_500);
        taps.emit("1", "connection", None, Some("1.2"), || "x".repeat(400));
        taps.emit("2", "connection", None, None, || {
            unreachable!("app 2 is not watched")
        });
        let event = watcher.recv().await.expect("the event");
        assert_eq!(event.at_ms, 1_700_000_000_500);
        assert_eq!(event.socket_id.as_deref(), Some("1.2"));
        assert_eq!(
            event.detail.chars().count(),
            DETAIL_CHARS + 1,
            "clipped, with an ellipsis"
        );
        taps.close_all();
        assert!(matches!(watcher.recv().await, Err(RecvError::Closed)));
        // A watcher arriving during shutdown gets a stream that has already ended.
        let mut late = taps.subscribe("1");
        assert!(matches!(late.recv().await, Err(RecvError::Closed)));
    }

    #[tokio::test]
    async fn events_of_apps_watched_on_other_nodes_are_forwarded_without_waiting_and_bounded() {
        let taps = Taps::new(Clock::manual(1_000));
        let (tx, mut rx) = mpsc::channel(2);
        taps.forward_to("node-a", tx);
        // Nobody watches anywhere: nothing is built.
        taps.emit("1", "connection", None, None, || {
            unreachable!("not watched")
        });
        taps.set_remote(HashSet::from(["1".to_owned()]));
        for n in 0..5 {
            taps.emit("1", "subscribed", Some("c"), None, || format!("{n}"));
        }
        taps.emit("2", "connection", None, None, || {
            unreachable!("app 2 is watched nowhere")
        });
        // The queue holds 2; the rest were dropped, and emitting never waited.
        let (app, first) = rx.recv().await.expect("forwarded");
        assert_eq!((app.as_str(), first.detail.as_str()), ("1", "0"));
        assert_eq!(first.node.as_deref(), Some("node-a"));
        assert_eq!(rx.recv().await.expect("forwarded").1.detail, "1");
        assert!(rx.try_recv().is_err(), "bounded by the queue");
        // Another node's event reaches this node's watchers, and is not forwarded again.
        let mut watcher = taps.subscribe("1");
        let mut remote = first.clone();
        remote.node = Some("node-b".into());
        taps.deliver("1", remote);
        assert_eq!(
            watcher.recv().await.unwrap().node.as_deref(),
            Some("node-b")
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(taps.watched_apps(), vec!["1".to_owned()]);
    }

    #[tokio::test]
    async fn one_busy_app_cannot_use_up_the_forwarding_queue_of_every_app() {
        let taps = Taps::new(Clock::manual(1_000));
        let (tx, mut rx) = mpsc::channel(1024);
        taps.forward_to("node-a", tx);
        taps.set_remote(HashSet::from(["busy".to_owned(), "quiet".to_owned()]));
        for n in 0..1_000 {
            taps.emit("busy", "subscribed", Some("c"), None, || format!("{n}"));
        }
        taps.emit("quiet", "subscribed", Some("q"), None, String::new);
        let mut forwarded = HashMap::<String, usize>::new();
        while let Ok((app, _)) = rx.try_recv() {
            *forwarded.entry(app).or_default() += 1;
        }
        assert_eq!(forwarded.get("busy"), Some(&FORWARD_PER_APP));
        assert_eq!(
            forwarded.get("quiet"),
            Some(&1),
            "the quiet app's event gets through"
        );
        // The next second, the busy app has a fresh budget.
        taps.set_remote(HashSet::from(["busy".to_owned(), "quiet".to_owned()]));
        taps.emit("busy", "subscribed", Some("c"), None, String::new);
        assert!(rx.try_recv().is_ok());
    }
}
