//! The Mercure hub in a cluster (`cluster/mercure.rs` holds the Redis side).
//!
//! A publish enters Redis once: one script appends the update to the app's history stream and
//! publishes it on the app's channel, and every node, this one included, delivers it when it
//! hears it ([`AppMercure::heard`]), so every node delivers the stream's updates in the
//! stream's order, with the ids the origin gave them, and keeps them in its own history too (the
//! fallback while Redis is unreachable).
//!
//! A subscribe registers first, pending: the live updates it wants are held (at most
//! [`super::registry::PENDING_MAX`]); then it waits until the node listens to the app's channel, reads the
//! history after its resume point from Redis in pages, and under the app's lock queues the
//! replay and the held updates whose stream entry is past the last one the read saw, and goes
//! live: nothing falls between the two and nothing comes twice.
//!
//! Redis unreachable (degraded mode): a publish is delivered on this node alone and kept in its
//! own history; a subscribe replays this node's history.

use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::mercure::{
    bridged_id, entry_of_bridged_id, EntryId, HistoryBounds, Page, ReadFrom, Unavailable,
    LIVE_REFRESH,
};
use crate::cluster::message::{
    decode_bridged_body, decode_mercure, decode_mercure_body, encode_mercure_body,
};
use crate::cluster::Cluster;
use crate::hub::{Connection, Queued};
use crate::protocol::mercure::Selector;

use super::registry::{
    pusher_update, wants, AppMercure, Hubs, Resume, Subscribed, Update, MAX_REPLAY,
};
use super::subscriptions::Subscriber;

/// Mercure publishes delivered on this node only since the start (Redis did not take them).
static DEGRADED_PUBLISHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// History entries read from Redis per round trip.
const PAGE: usize = 512;

/// The most history entries one subscribe reads from Redis (whether the subscriber wants them
/// or not): past it the stream ends after the replay with a resume point at the last entry
/// read (see [`Missed::spent`]), and the client's reconnection reads on from there.
pub(super) const MAX_READ_ENTRIES: usize = 4 * PAGE;

/// The most history bytes (entries' bodies) one subscribe reads from Redis, as
/// [`MAX_READ_ENTRIES`] (a page ends after the entry that crosses it).
pub(super) const MAX_READ_BYTES: usize = 1024 * 1024;

/// What a subscribe read from the history in Redis.
#[derive(Debug)]
struct Missed {
    /// Whether the resume point was found (else everything still there was read).
    found: bool,
    /// The last entry the read saw (or the one it read after).
    last: EntryId,
    /// The updates the subscriber wants, oldest first (at most one past [`MAX_REPLAY`]).
    updates: Vec<Arc<Update>>,
    /// The read stopped at its budget ([`MAX_READ_ENTRIES`], [`MAX_READ_BYTES`]) before the
    /// stream's end: after the replay the subscriber gets an event with only an `id:` (the
    /// bridged id of `last`: no data, so `EventSource` dispatches nothing but takes it as its
    /// last event id) and the stream ends, so its reconnection reads on after `last`.
    spent: bool,
}

/// An update as a history entry's body holds it (a bridged Pusher event gets the id its entry
/// names, the same on every node).
fn update_of(entry: Option<EntryId>, body: &[u8]) -> Option<Update> {
    if let Some((channel, frame)) = decode_bridged_body(body) {
        return pusher_update(channel, frame, bridged_id(entry?));
    }
    let decoded = decode_mercure_body(body)?;
    Some(Update::formatted(
        decoded.id.to_owned(),
        decoded.topics.iter().map(|t| (*t).to_owned()).collect(),
        decoded.private,
        Bytes::copy_from_slice(decoded.event),
    ))
}

/// Publishes `update` of app `app_id`: through Redis in a cluster (0 copies here: every node
/// delivers it when it hears it), else (or when Redis did not take it: a definite failure) on
/// this node; returns the copies delivered here. `Err` when Redis's answer never came (a
/// timeout, a connection lost while waiting): the script may have run and its kind-6 message
/// may still arrive, so the update is not delivered here too (that would be a second copy under
/// the same id); the publisher is answered 503 and retries with its id.
pub(super) async fn publish(
    cluster: Option<&Cluster>,
    mercure: &AppMercure,
    app_id: &str,
    update: Update,
) -> Result<usize, Unavailable> {
    let Some(cluster) = cluster else {
        return Ok(mercure.publish(update));
    };
    let body = encode_mercure_body(update.private, &update.topics, &update.id, &update.event);
    match cluster
        .mercure_publish(app_id, &update.id, &body, true, mercure.bounds())
        .await
    {
        Ok(_) => Ok(0),
        Err(error) if error.may_have_run() => Err(error),
        Err(error) => {
            // Logged at the first and every 1,000th, not per publish while Redis is down.
            let count = DEGRADED_PUBLISHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if count == 1 || count % 1_000 == 0 {
                tracing::warn!(
                    app_id,
                    %error,
                    degraded_publishes = count,
                    "a Mercure update delivered on this node only (degraded mode)"
                );
            }
            Ok(mercure.publish(update))
        }
    }
}

/// Reads the history after `resume` from Redis, page by page, keeping what the subscriber of
/// `selectors` / `readable` wants (stops one past [`MAX_REPLAY`]: the replay is cut there).
async fn read_missed(
    cluster: &Cluster,
    app_id: &str,
    resume: &Resume,
    age: std::time::Duration,
    selectors: &[Selector],
    readable: &[Selector],
) -> Result<Missed, Unavailable> {
    let mut from = match resume {
        Resume::After(id) => match entry_of_bridged_id(id) {
            Some(entry) => ReadFrom::AfterHeldEntry(entry),
            None => ReadFrom::AfterId(id.clone()),
        },
        _ => ReadFrom::Start,
    };
    let mut missed: Option<Missed> = None;
    let (mut entries_left, mut bytes_left) = (MAX_READ_ENTRIES, MAX_READ_BYTES);
    loop {
        let count = PAGE.min(entries_left);
        let Page {
            found,
            start,
            entries,
        } = cluster
            .mercure_history(app_id, &from, count, age, bytes_left)
            .await?;
        let missed = missed.get_or_insert(Missed {
            found,
            last: start,
            updates: Vec::new(),
            spent: false,
        });
        let read_bytes: usize = entries.iter().map(|(_, body)| body.len()).sum();
        let cut_by_bytes = read_bytes > bytes_left;
        let full = entries.len() == count || cut_by_bytes;
        entries_left -= entries.len().min(entries_left);
        bytes_left = bytes_left.saturating_sub(read_bytes);
        for (entry, body) in entries {
            missed.last = entry;
            let Some(update) = update_of(Some(entry), &body) else {
                continue;
            };
            if wants(selectors, readable, &update) {
                missed.updates.push(Arc::new(update));
                if missed.updates.len() > MAX_REPLAY {
                    return Ok(std::mem::replace(
                        missed,
                        Missed {
                            found,
                            last: entry,
                            updates: Vec::new(),
                            spent: false,
                        },
                    ));
                }
            }
        }
        if !full {
            break;
        }
        if entries_left == 0 || bytes_left == 0 || cut_by_bytes {
            missed.spent = true;
            break;
        }
        from = ReadFrom::AfterEntry(missed.last);
    }
    Ok(missed.unwrap_or(Missed {
        found: true,
        last: EntryId(0, 0),
        updates: Vec::new(),
        spent: false,
    }))
}

/// Refreshes, every [`LIVE_REFRESH`], the live keys of the apps with Mercure subscribers here
/// (while the runtime runs).
pub(super) fn start_live_refresher(hubs: &Hubs) {
    let hubs = hubs.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(LIVE_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cluster) = hubs.cluster.get() else {
                continue;
            };
            for app in hubs.all() {
                if app.subscribers() == 0 {
                    continue;
                }
                if let Some(app_id) = app.app_id() {
                    cluster.mercure_live(&app_id, app.bounds()).await;
                }
            }
        }
    });
}

/// A subscription registered by a subscribe still under way: removed when dropped unless the
/// subscribe went on to `go_live` (which keeps it, or removes it itself).
struct Registration<'a> {
    app: &'a AppMercure,
    /// `None` once `go_live` took over.
    id: Option<u64>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.app.unsubscribe(id);
        }
    }
}

impl AppMercure {
    /// What bounds the app's history in Redis.
    pub(super) fn bounds(&self) -> HistoryBounds {
        let limits = self.limits();
        HistoryBounds {
            size: limits.size,
            age: limits.age,
            bytes: self.history_share(),
        }
    }

    /// Whether the cluster bridges this node's own Pusher events to its Mercure subscribers
    /// here (in cluster mode, while this node hears the app's channel): decided per publish by
    /// the forward's bridge script reply (`Cluster::bridge_ack_for`).
    pub(super) fn bridged_by_cluster(&self) -> bool {
        let Some(cluster) = self.cluster.get() else {
            return false;
        };
        self.app_id().is_some_and(|app_id| cluster.hears(&app_id))
    }

    /// A Mercure update heard on the cluster's bus (kind 6): delivered to the subscriptions it
    /// matches (held by the pending ones) and, when the stream keeps it, kept in this node's
    /// history too. Returns the copies delivered.
    pub(super) fn heard(&self, message: &[u8]) -> usize {
        let heard = decode_mercure(message).and_then(|(entry, body)| {
            let entry = entry.and_then(EntryId::parse);
            Some((entry, update_of(entry, body)?))
        });
        let Some((entry, update)) = heard else {
            tracing::debug!("an unreadable Mercure update on the app's Redis channel");
            return 0;
        };
        self.deliver_entry(Arc::new(update), entry.is_some(), entry)
    }

    /// Ends every subscription's stream here (the node's pub/sub connection was lost, so
    /// updates may have been missed): EventSource clients reconnect with `Last-Event-ID` and
    /// get what they missed from the history in Redis. Returns how many.
    pub(super) fn end_streams(&self) -> usize {
        let state = self.lock();
        for subscription in state.subscriptions.values() {
            subscription
                .conn
                .outbox()
                .request_close(crate::protocol::CloseCode::ReconnectNow, true);
        }
        let ended = state.subscriptions.len();
        drop(state);
        if ended > 0 {
            tracing::info!(
                app_id = self.app_id().as_deref().unwrap_or(""),
                ended,
                "Mercure streams ended: the cluster's pub/sub connection was lost (they resume)"
            );
        }
        ended
    }

    /// Subscribes in a cluster (see the module doc): the replay comes from the history in
    /// Redis, whichever node kept it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn subscribe_in_cluster(
        &self,
        cluster: &Cluster,
        app_id: &str,
        conn: &Arc<Connection>,
        selectors: Vec<Selector>,
        readable: Vec<Selector>,
        subscriber: Subscriber,
        resume: &Resume,
    ) -> Subscribed {
        let read_with = (resume != &Resume::Live).then(|| (selectors.clone(), readable.clone()));
        // A subscriber without a resume point is not held: nothing is read, so it gets what is
        // heard from now on (review M7: a busy topic would overflow the hold and cut it).
        let held = read_with.is_some();
        let subscription = self.subscription(conn, selectors, readable, subscriber, held);
        let watches = subscription.watches;
        let (id, announcement) = self.register_unannounced(self.lock(), subscription);
        // A watcher's own events wait until this node hears the app's channel (below).
        let mut announcement = Some(announcement);
        if !watches {
            if let Some(announcement) = announcement.take() {
                announcement.send(self, false);
            }
        }
        // Until `go_live` decides, a subscribe dropped while it waits for Redis (the client
        // went away, the node stops) takes its registration and its held updates with it.
        let mut registration = Registration {
            app: self,
            id: Some(id),
        };
        // The app's Pusher events are bridged into the history from now on.
        cluster.mercure_live(app_id, self.bounds()).await;
        // Updates published from now on reach this node (or no pub/sub connection is up, or
        // the backstop `LISTEN_TIMEOUT` passed).
        let _ = cluster.listen(app_id).await;
        // A watcher (of the subscriptions namespace): its stream opens once a sync after this
        // point is done, which set the watch key (so every node's later subscription events
        // go through Redis, which this node now hears) and sent its own subscription's
        // events (which come back here, to it among others). See ARCHITECTURE.md, "What a
        // watcher sees".
        if let Some(announcement) = announcement {
            if let Some(ticket) = announcement.send(self, true) {
                self.wait_synced(ticket).await;
            }
        }
        // Not heard yet although a pub/sub connection is up (the backstop passed): updates after
        // the read may be missed, so the stream ends after the replay and the client resumes
        // (a bus lost meanwhile ends it too: `end_streams`).
        // (A subscriber without a resume point has nothing to resume from: it stays.)
        let deaf = held && !cluster.is_listening(app_id);
        let read = match &read_with {
            None => None,
            Some((selectors, readable)) => Some(
                read_missed(
                    cluster,
                    app_id,
                    resume,
                    self.limits().age,
                    selectors,
                    readable,
                )
                .await,
            ),
        };
        registration.id = None;
        self.go_live(id, resume, read, deaf)
    }

    /// Queues subscription `id`'s replay (`read` from Redis; this node's history when Redis
    /// failed) and the live updates held meanwhile that the replay does not hold, and marks it
    /// live, all under the app's lock.
    fn go_live(
        &self,
        id: u64,
        resume: &Resume,
        read: Option<Result<Missed, Unavailable>>,
        deaf: bool,
    ) -> Subscribed {
        let limits = self.limits();
        let mut state = self.lock();
        let mut spent = false;
        let (replay, after, resume_point) = match read {
            None => (Vec::new(), None, None),
            Some(Ok(missed)) => {
                let point = match resume {
                    Resume::After(id) if missed.found => id.clone(),
                    _ => "earliest".to_owned(),
                };
                spent = missed.spent;
                (missed.updates, Some(missed.last), Some(point))
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "a Mercure replay from this node's history (degraded mode)");
                let (missed, point) = self.local_since(&mut state, limits, resume);
                (missed, None, point)
            }
        };
        let Some(subscription) = state.subscriptions.get_mut(&id) else {
            // Gone meanwhile (its app's connections closed).
            return Subscribed {
                id: None,
                replayed: 0,
                resume_point,
            };
        };
        let pending = subscription.pending.take().unwrap_or_default();
        // Updates up to the last entry read may still be on their way on the bus.
        subscription.seen = after;
        let conn = subscription.conn.clone();
        let (replayed, cut_short) = self.replay(&conn, subscription, &replay);
        if spent && !cut_short && replayed == replay.len() {
            // The whole replay read is queued: the client resumes after the last entry read.
            if let Some(last) = after {
                let marker = format!("id: {}\n\n", bridged_id(last));
                let _ = conn.outbox().enqueue(&Bytes::from(marker));
            }
        }
        let cut = pending.overflowed || deaf || cut_short || spent;
        let mut live = 0;
        if !cut {
            for (entry, update) in pending.buffered {
                let fresh = match (entry, after) {
                    (Some(entry), Some(last)) => entry > last,
                    _ => true,
                };
                if !fresh || replay.iter().any(|r| Arc::ptr_eq(r, &update)) {
                    continue;
                }
                if conn.outbox().enqueue(&update.event) == Queued::No {
                    break;
                }
                live += 1;
            }
        }
        drop(state);
        if cut {
            self.unsubscribe(id);
        }
        Subscribed {
            id: (!cut).then_some(id),
            replayed: replayed + live,
            resume_point,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::AppHub;
    use crate::protocol::SocketId;

    fn update(id: &str) -> Arc<Update> {
        Arc::new(Update::new(
            id.into(),
            vec!["t".into()],
            false,
            None,
            None,
            id,
        ))
    }

    /// A pending subscription to topic `t` on `app`, of a connection with `capacity` in its
    /// outbox: the connection, its outbox's receiver and the subscription's id.
    fn pending(
        app: &AppMercure,
        capacity: usize,
    ) -> (Arc<Connection>, crate::hub::DetachedOutbox, u64) {
        let (conn, rx) = Connection::new(SocketId::new(1, 1), capacity);
        let subscriber = Subscriber {
            id: "urn:uuid:0".into(),
            selectors: Vec::new(),
        };
        let selectors = vec![Selector::Exact("t".into())];
        let subscription = app.subscription(&conn, selectors, Vec::new(), subscriber, true);
        let id = app.register(app.lock(), subscription);
        (conn, rx, id)
    }

    fn received(rx: &mut crate::hub::DetachedOutbox) -> Vec<String> {
        let mut ids = Vec::new();
        while let Some(event) = rx.try_recv() {
            let text = String::from_utf8_lossy(&event).into_owned();
            ids.push(
                text.lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("id: ")
                    .to_owned(),
            );
        }
        ids
    }

    #[test]
    fn going_live_replays_then_the_held_updates_past_the_read_and_skips_late_echoes() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 20);
        let app = hubs.app("1", &app_hub);
        let (_conn, mut rx, id) = pending(&app, 64);
        // Heard while pending: entries 2 and 3 (2 the read also saw), held, not sent.
        assert_eq!(
            app.deliver_entry(update("u2"), true, Some(EntryId(2, 0))),
            0
        );
        assert_eq!(
            app.deliver_entry(update("u3"), true, Some(EntryId(3, 0))),
            0
        );
        assert!(received(&mut rx).is_empty(), "held while pending");
        // The read saw entries 1 and 2.
        let missed = Missed {
            found: true,
            last: EntryId(2, 0),
            updates: vec![update("u1"), update("u2")],
            spent: false,
        };
        let resume = Resume::After("u0".into());
        let subscribed = app.go_live(id, &resume, Some(Ok(missed)), false);
        assert_eq!(subscribed.id, Some(id));
        assert_eq!(subscribed.resume_point.as_deref(), Some("u0"));
        assert_eq!(
            received(&mut rx),
            ["u1", "u2", "u3"],
            "no gap, no duplicate"
        );
        // An update the read overtook on the bus arrives late: skipped; newer ones are live.
        app.deliver_entry(update("u2"), true, Some(EntryId(2, 0)));
        app.deliver_entry(update("u4"), true, Some(EntryId(4, 0)));
        assert_eq!(received(&mut rx), ["u4"]);
    }

    #[test]
    fn a_pending_subscription_past_its_bound_ends_after_its_replay() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 24);
        let app = hubs.app("1", &app_hub);
        let (_conn, _rx, id) = pending(&app, 4096);
        for n in 0..=super::super::registry::PENDING_MAX as u64 {
            app.deliver_entry(update(&format!("u{n}")), false, Some(EntryId(n + 1, 0)));
        }
        let subscribed = app.go_live(id, &Resume::Live, None, false);
        assert_eq!(subscribed.id, None, "the stream ends: the client resumes");
        assert_eq!(app.subscribers(), 0);
    }

    /// H2 of the review: when the node's pub/sub connection is lost, every Mercure stream of
    /// the app ends (the client resumes from Redis), through the hub's bridge as the bus calls
    /// it.
    #[test]
    fn a_lost_bus_ends_every_stream_of_the_app() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 20);
        let app = hubs.app("1", &app_hub);
        app_hub.attach_bridge(app.clone());
        let mut conns = Vec::new();
        for n in 1..=2 {
            let (conn, _rx) = Connection::new(SocketId::new(1, n), 64);
            let subscriber = Subscriber {
                id: format!("urn:uuid:{n}"),
                selectors: Vec::new(),
            };
            let selectors = vec![Selector::Exact("t".into())];
            let subscription = app.subscription(&conn, selectors, Vec::new(), subscriber, false);
            app.register(app.lock(), subscription);
            assert!(conn.outbox().close_request().is_none());
            conns.push((conn, _rx));
        }
        app_hub.cluster_bus_lost();
        for (conn, _) in &conns {
            assert!(conn.outbox().close_request().is_some(), "ended");
        }
    }

    /// A subscribe dropped before it went live (its client gone, the node stopping while the
    /// history is read from Redis) leaves no registration behind; one that went live stays.
    #[test]
    fn a_registration_dropped_before_going_live_is_removed() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 20);
        let app = hubs.app("1", &app_hub);
        let (_conn, _rx, id) = pending(&app, 64);
        drop(Registration {
            app: &app,
            id: Some(id),
        });
        assert_eq!(app.subscribers(), 0, "removed with its held updates");
        let (_conn, _rx, id) = pending(&app, 64);
        let mut registration = Registration {
            app: &app,
            id: Some(id),
        };
        registration.id = None;
        drop(registration);
        assert_eq!(app.go_live(id, &Resume::Live, None, false).id, Some(id));
        assert_eq!(app.subscribers(), 1);
    }

    /// A read stopped at its budget: the replay, then an event with only the id of the last
    /// entry read (the client's resume point), and the stream ends.
    #[test]
    fn a_read_past_its_budget_ends_with_a_resume_point_at_the_last_entry_read() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 20);
        let app = hubs.app("1", &app_hub);
        let (_conn, mut rx, id) = pending(&app, 64);
        let last = EntryId(7, 3);
        let missed = Missed {
            found: true,
            last,
            updates: vec![update("u1")],
            spent: true,
        };
        let subscribed = app.go_live(id, &Resume::Earliest, Some(Ok(missed)), false);
        assert_eq!(subscribed.id, None, "the stream ends");
        assert_eq!(received(&mut rx), ["u1".to_owned(), bridged_id(last)]);
        assert_eq!(app.subscribers(), 0);
    }

    /// H2: a subscribe whose node did not hear the app's channel in time ends after its replay
    /// (it would miss what is published before the channel is heard).
    #[test]
    fn a_subscribe_not_heard_in_time_ends_after_its_replay() {
        let app_hub = Arc::new(AppHub::new("1", None));
        let hubs = Hubs::new(1 << 20);
        let app = hubs.app("1", &app_hub);
        let (_conn, mut rx, id) = pending(&app, 64);
        let missed = Missed {
            found: true,
            last: EntryId(1, 0),
            updates: vec![update("u1")],
            spent: false,
        };
        let subscribed = app.go_live(id, &Resume::After("u0".into()), Some(Ok(missed)), true);
        assert_eq!(subscribed.id, None, "the stream ends after the replay");
        assert_eq!(received(&mut rx), ["u1"]);
        assert_eq!(app.subscribers(), 0);
    }
}
