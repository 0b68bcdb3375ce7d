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

use crate::cluster::mercure::{EntryId, HistoryBounds, Page, ReadFrom, Unavailable};
use crate::cluster::message::{decode_mercure, decode_mercure_body, encode_mercure_body};
use crate::cluster::Cluster;
use crate::hub::{Connection, Queued};
use crate::locks::MutexExt;
use crate::protocol::mercure::Selector;

use super::registry::{
    wants, AppMercure, Resume, Subscribed, Update, MAX_REPLAY, REPLAYS_PER_SECOND,
};
use super::subscriptions::Subscriber;

/// History entries read from Redis per round trip.
const PAGE: usize = 512;

/// What a subscribe read from the history in Redis.
#[derive(Debug)]
struct Missed {
    /// Whether the resume point was found (else everything still there was read).
    found: bool,
    /// The last entry the read saw (or the one it read after).
    last: EntryId,
    /// The updates the subscriber wants, oldest first (at most one past [`MAX_REPLAY`]).
    updates: Vec<Arc<Update>>,
}

/// An update as a history entry's body holds it.
fn update_of(body: &[u8]) -> Option<Update> {
    let decoded = decode_mercure_body(body)?;
    Some(Update::formatted(
        decoded.id.to_owned(),
        decoded.topics.iter().map(|t| (*t).to_owned()).collect(),
        decoded.private,
        Bytes::copy_from_slice(decoded.event),
    ))
}

/// Publishes `update` of app `app_id`: through Redis in a cluster (0 copies here: every node
/// delivers it when it hears it), else (or when Redis does not take it) on this node; returns
/// the copies delivered here.
pub(super) async fn publish(
    cluster: Option<&Cluster>,
    mercure: &AppMercure,
    app_id: &str,
    update: Update,
) -> usize {
    let Some(cluster) = cluster else {
        return mercure.publish(update);
    };
    let body = encode_mercure_body(update.private, &update.topics, &update.id, &update.event);
    let limits = mercure.limits();
    let bounds = HistoryBounds {
        size: limits.size,
        age: limits.age,
        bytes: mercure.history_share(),
    };
    match cluster
        .mercure_publish(app_id, &update.id, &body, true, bounds)
        .await
    {
        Ok(_) => 0,
        Err(error) => {
            tracing::warn!(
                app_id,
                %error,
                "a Mercure update delivered on this node only (degraded mode)"
            );
            mercure.publish(update)
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
        Resume::After(id) => ReadFrom::AfterId(id.clone()),
        _ => ReadFrom::Start,
    };
    let mut missed: Option<Missed> = None;
    loop {
        let Page {
            found,
            start,
            entries,
        } = cluster.mercure_history(app_id, &from, PAGE, age).await?;
        let missed = missed.get_or_insert(Missed {
            found,
            last: start,
            updates: Vec::new(),
        });
        let full = entries.len() == PAGE;
        for (entry, body) in entries {
            missed.last = entry;
            let Some(update) = update_of(&body) else {
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
                        },
                    ));
                }
            }
        }
        if !full {
            break;
        }
        from = ReadFrom::AfterEntry(missed.last);
    }
    Ok(missed.unwrap_or(Missed {
        found: true,
        last: EntryId(0, 0),
        updates: Vec::new(),
    }))
}

impl AppMercure {
    /// A Mercure update heard on the cluster's bus (kind 6): delivered to the subscriptions it
    /// matches (held by the pending ones) and, when the stream keeps it, kept in this node's
    /// history too. Returns the copies delivered.
    pub(super) fn heard(&self, message: &[u8]) -> usize {
        let Some(heard) = decode_mercure(message) else {
            tracing::debug!("an unreadable Mercure update on the app's Redis channel");
            return 0;
        };
        let entry = heard.entry.and_then(EntryId::parse);
        let update = Update::formatted(
            heard.id.to_owned(),
            heard.topics.iter().map(|t| (*t).to_owned()).collect(),
            heard.private,
            Bytes::copy_from_slice(heard.event),
        );
        self.deliver_entry(Arc::new(update), entry.is_some(), entry)
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
        let subscription = self.subscription(conn, selectors, readable, subscriber, true);
        let id = self.register(self.lock(), subscription);
        // Updates published from now on reach this node (or the wait timed out: as for a
        // Pusher subscriber, one published in the gap may be missed here).
        cluster.listen(app_id).await;
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
        self.go_live(id, resume, read)
    }

    /// Queues subscription `id`'s replay (`read` from Redis; this node's history when Redis
    /// failed) and the live updates held meanwhile that the replay does not hold, and marks it
    /// live, all under the app's lock.
    fn go_live(
        &self,
        id: u64,
        resume: &Resume,
        read: Option<Result<Missed, Unavailable>>,
    ) -> Subscribed {
        let limits = self.limits();
        let mut state = self.lock();
        let (replay, after, resume_point) = match read {
            None => (Vec::new(), None, None),
            Some(Ok(missed)) => {
                let point = match resume {
                    Resume::After(id) if missed.found => id.clone(),
                    _ => "earliest".to_owned(),
                };
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
        let conn = subscription.conn.clone();
        let mut replays = self.replays.lock_or_recover();
        let allowed = MAX_REPLAY.min(replays.left(REPLAYS_PER_SECOND));
        let mut replayed = 0;
        let mut cut = pending.overflowed;
        for update in replay.iter().filter(|u| subscription.wants(u)) {
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
        drop(replays);
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
