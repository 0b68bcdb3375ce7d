//! What the hub reports: [`HubEvent`]s (channel occupied or vacated, member added or removed,
//! cache miss, subscription count, and the session's client events), sent for the kinds an app
//! wants, into one bounded queue read by the webhook pipeline's outbox writer.
//!
//! The queue is bounded, so a writer stuck on a failing store cannot grow memory without bound.
//! The hub never waits: when the queue is full the event is dropped, counted, and logged at warn
//! level (at most once per [`DROP_LOG_INTERVAL`], with the count since the last line).

use crate::locks::MutexExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::protocol::{WebhookEvent, WebhookKind};

/// Something that happened in an app's channels, for webhooks (and later the live console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubEvent {
    /// The app.
    pub app_id: Arc<str>,
    /// What happened, in webhook form.
    pub event: WebhookEvent,
}

/// Where an app's events go, and which kinds it wants.
#[derive(Debug, Default)]
pub(super) struct Hooks {
    pub(super) app_id: Arc<str>,
    pub(super) events: Option<EventSender>,
    pub(super) interest: AtomicU8,
    /// Told when the app becomes occupied or stops being so ([`super::AppHub::is_occupied`],
    /// cluster mode).
    pub(super) occupancy: Option<OccupancySender>,
    /// Cluster mode: transitions are the cluster's to fire ([`super::Hub::with_cluster_state`]).
    pub(super) clustered: bool,
}

/// Where an app's occupancy changes go: the app's id, each time it becomes occupied (a first
/// occupied channel, or a first signed-in socket) or stops being so (the receiver reads the
/// app's state itself). Only set in cluster mode, so a single node pays one `None` check per
/// such transition.
///
/// Coalescing, so bounded by the number of apps: a set of changed apps plus a wake-up; an app
/// that toggles a thousand times before the receiver looks is in the set once.
#[derive(Debug, Clone)]
pub struct OccupancySender(Arc<OccupancyShared>);

/// The cluster's end of [`OccupancySender`].
#[derive(Debug)]
pub struct OccupancyReceiver(Arc<OccupancyShared>);

#[derive(Debug, Default)]
struct OccupancyShared {
    changed: Mutex<HashSet<Arc<str>>>,
    wake: Notify,
}

/// A connected [`OccupancySender`] and [`OccupancyReceiver`].
pub fn occupancy_channel() -> (OccupancySender, OccupancyReceiver) {
    let shared = Arc::new(OccupancyShared::default());
    (OccupancySender(shared.clone()), OccupancyReceiver(shared))
}

impl OccupancySender {
    /// Marks `app_id` as changed (once, however often) and wakes the receiver.
    pub fn send(&self, app_id: Arc<str>) {
        let inserted = self.0.changed.lock_or_recover().insert(app_id);
        if inserted {
            self.0.wake.notify_one();
        }
    }
}

impl OccupancyReceiver {
    /// Waits until some app changed, then takes every changed app.
    pub async fn changed(&mut self) -> HashSet<Arc<str>> {
        loop {
            let taken = self.take();
            if !taken.is_empty() {
                return taken;
            }
            self.0.wake.notified().await;
        }
    }

    /// Takes every changed app without waiting.
    pub fn take(&mut self) -> HashSet<Arc<str>> {
        std::mem::take(&mut *self.0.changed.lock_or_recover())
    }

    /// Takes one changed app, if any.
    pub fn try_recv(&mut self) -> Option<Arc<str>> {
        let mut changed = self.0.changed.lock_or_recover();
        let app_id = changed.iter().next().cloned()?;
        changed.remove(&app_id);
        Some(app_id)
    }
}

impl Hooks {
    pub(super) fn wants(&self, kind: WebhookKind) -> bool {
        self.events.is_some() && self.interest.load(Ordering::Relaxed) & kind.bit() != 0
    }

    /// Reports that the app went from unoccupied (no occupied channel, no signed-in socket) to
    /// occupied, or back.
    pub(super) fn occupancy_changed(&self) {
        if let Some(occupancy) = &self.occupancy {
            occupancy.send(self.app_id.clone());
        }
    }

    pub(super) fn emit(&self, kind: WebhookKind, make: impl FnOnce() -> WebhookEvent) {
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

/// At most one warning about dropped events per this interval.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Drops {
    total: AtomicU64,
    /// Events sent after the writer had stopped (late in a shutdown).
    after_close: AtomicU64,
    // A std lock: held to compare and set an instant.
    logged: Mutex<(Option<Instant>, u64)>,
}

/// What the queue carries: events, and marks asking to be told once the events queued before
/// them are handled ([`EventSender::mark`]).
#[derive(Debug)]
pub enum Reported {
    /// An event to write.
    Event(HubEvent),
    /// Done once every event before it is handled.
    Mark(Mark),
}

/// A mark in the queue ([`EventSender::mark`]): the writer calls [`Mark::done`] once every event
/// queued before it is written to the outbox (or was not to be written: no endpoint wants it);
/// dropped undone when they could not be (the waiter then learns nothing was confirmed).
#[derive(Debug)]
pub struct Mark(oneshot::Sender<()>);

impl Mark {
    /// Tells the waiter that every event before the mark is handled.
    pub fn done(self) {
        let _ = self.0.send(());
    }
}

/// The hub's end: never waits. Bounded, and the hub never waits on it: when the webhook
/// writer is behind, events are dropped and counted.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Reported>,
    drops: Arc<Drops>,
}

/// The writer's end.
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::Receiver<Reported>,
}

impl EventReceiver {
    /// The next event or mark, waiting for one; `None` once every sender is gone.
    pub async fn recv_queued(&mut self) -> Option<Reported> {
        self.rx.recv().await
    }

    /// The next event or mark, if one is queued.
    pub fn try_recv_queued(&mut self) -> Option<Reported> {
        self.rx.try_recv().ok()
    }

    /// The next queued event, without waiting (marks on the way are dropped undone).
    pub fn try_recv(&mut self) -> Result<HubEvent, TryRecvError> {
        loop {
            match self.rx.try_recv()? {
                Reported::Event(event) => return Ok(event),
                Reported::Mark(_) => {}
            }
        }
    }
}

/// A channel holding at most `capacity` events.
pub fn event_channel(capacity: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        EventSender {
            tx,
            drops: Arc::new(Drops::default()),
        },
        EventReceiver { rx },
    )
}

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// The channel is full: dropped and counted.
    Dropped,
    /// The writer is gone (shutdown).
    Closed,
}

impl EventSender {
    /// Queues `event`, or drops and counts it when the channel is full.
    pub fn send(&self, event: HubEvent) -> Result<(), NotSent> {
        match self.tx.try_send(Reported::Event(event)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => {
                self.drops.after_close.fetch_add(1, Ordering::Relaxed);
                Err(NotSent::Closed)
            }
            Err(TrySendError::Full(_)) => {
                let total = self.drops.total.fetch_add(1, Ordering::Relaxed) + 1;
                let mut logged = self.drops.logged.lock_or_recover();
                let due = logged.0.is_none_or(|at| at.elapsed() >= DROP_LOG_INTERVAL);
                if due {
                    let since = total - logged.1;
                    *logged = (Some(Instant::now()), total);
                    drop(logged);
                    tracing::warn!(
                        dropped = since,
                        dropped_total = total,
                        capacity = self.tx.max_capacity(),
                        "webhook events dropped: the outbox writer is behind (is the store failing?)"
                    );
                }
                Err(NotSent::Dropped)
            }
        }
    }

    /// Queues a mark after every event queued so far (from this task: events other tasks queue
    /// concurrently may land on either side); the answer comes once the writer has handled all
    /// of them (written to the outbox, or not to be written), and is dropped unanswered when it
    /// could not (shutdown's deadline). Takes a place in the queue; refused, not counted as a
    /// dropped event, when the queue is full.
    pub fn mark(&self) -> Result<oneshot::Receiver<()>, NotSent> {
        let (done, answer) = oneshot::channel();
        match self.tx.try_send(Reported::Mark(Mark(done))) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Closed(_)) => Err(NotSent::Closed),
            Err(TrySendError::Full(_)) => Err(NotSent::Dropped),
        }
    }

    /// Events dropped since the start.
    pub fn dropped(&self) -> u64 {
        self.drops.total.load(Ordering::Relaxed)
    }

    /// Events lost since the start: dropped on a full channel, or sent after the writer stopped.
    pub fn lost(&self) -> u64 {
        self.dropped() + self.drops.after_close.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> HubEvent {
        HubEvent {
            app_id: "1".into(),
            event: WebhookEvent::channel(WebhookKind::ChannelOccupied, &format!("c{n}")),
        }
    }

    #[tokio::test]
    async fn a_stuck_writer_holds_at_most_the_capacity_and_the_rest_is_counted_as_dropped() {
        let (tx, mut rx) = event_channel(100);
        // Nobody reads: the writer is stuck.
        for n in 0..130 {
            let _ = tx.send(event(n));
        }
        assert_eq!(tx.dropped(), 30);
        assert_eq!(tx.send(event(999)), Err(NotSent::Dropped));
        assert_eq!(tx.dropped(), 31);
        // The first 100 are kept, in order.
        for n in 0..100 {
            let got = rx.try_recv().expect("queued");
            assert_eq!(got.event.channel_name(), format!("c{n}"));
        }
        assert!(rx.try_recv().is_err());
        // Room again once the writer reads.
        assert_eq!(tx.send(event(1000)), Ok(()));
        drop(rx);
        assert_eq!(tx.send(event(1001)), Err(NotSent::Closed));
        // Both kinds count as lost (shutdown's exit status reads this).
        assert_eq!(tx.lost(), 32);
    }

    #[tokio::test]
    async fn a_mark_comes_after_the_events_queued_before_it_and_is_told_when_done() {
        let (tx, mut rx) = event_channel(3);
        tx.send(event(1)).expect("fits");
        let mut done = tx.mark().expect("fits");
        tx.send(event(2)).expect("fits");
        assert!(tx.mark().is_err(), "a mark takes a place in the queue");
        assert_eq!(tx.dropped(), 0, "a refused mark is no dropped event");
        assert!(matches!(rx.recv_queued().await, Some(Reported::Event(_))));
        let Some(Reported::Mark(mark)) = rx.recv_queued().await else {
            panic!("the mark comes next");
        };
        assert!(done.try_recv().is_err(), "not done yet");
        mark.done();
        assert_eq!(done.await, Ok(()));
        // Dropped undone (the writer gave up): the waiter learns it.
        let undone = tx.mark();
        assert_eq!(
            rx.try_recv().map(|e| e.event.channel_name().to_owned()),
            Ok("c2".into())
        );
        assert!(rx.try_recv().is_err(), "try_recv drops the mark");
        assert!(undone.expect("fits").await.is_err());
    }
}
