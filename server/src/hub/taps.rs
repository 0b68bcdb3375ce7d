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
use std::sync::{OnceLock, RwLock};

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
    // A std lock: held for a set lookup, or to replace the set once a second.
    remote: RwLock<HashSet<String>>,
    /// In a cluster: where events of apps watched elsewhere go (the cluster sends them on).
    forward: OnceLock<mpsc::Sender<(String, DebugEvent)>>,
}

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
            remote: RwLock::default(),
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

    /// Cluster mode: the apps watched on other nodes now.
    pub fn set_remote(&self, apps: HashSet<String>) {
        let mut remote = self.remote.write_or_recover();
        self.remote_watched.store(apps.len(), Ordering::Relaxed);
        *remote = apps;
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
        let elsewhere = self.remote_watched.load(Ordering::Relaxed) > 0
            && self.remote.read_or_recover().contains(app_id);
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
}
