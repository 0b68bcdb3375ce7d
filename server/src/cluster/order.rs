//! Sequential REST publishes keep their order cluster-wide.
//!
//! A backend that triggers one event after the other through a round-robin balancer expects
//! its subscribers to see them in that order. Delivering a publish locally at once breaks it: a
//! later publish handled by the subscriber's own node would overtake an earlier one still on
//! its way through Redis from the other node. Redis pub/sub hands the messages of one Redis
//! channel to every listener in the order it executed the `PUBLISH`es, so when this node listens
//! to the app's Redis channel, a REST publish is not delivered here at once: it goes out marked
//! "echo" with a sequence number of this process ([`super::message`]), the node delivers it when
//! it comes back (in Redis's order, `bus.rs`' `deliver`), and the REST handler answers only
//! after that (so the backend's next trigger is published after it).
//!
//! When Redis refuses the publish (the publishing connection failed, or is paused after a
//! failure, or the queue is full) or it does not come back by the handler's deadline, the
//! handler delivers locally itself (out of order, as every publish was before) and forgets the
//! sequence number, so an echo arriving later is skipped: exactly once either way. Whoever takes
//! the number out of [`Echoes`] first (the echo or the handler giving up) delivers.
//!
//! The Mercure bridge of a publish given up on is decided once, by whoever learns first whether
//! the bridge script kept it in the Mercure history (then its kind-6 message brings it to this
//! node's Mercure subscribers, under the id every node gives it): the handler, when the
//! pipeline's reply is in already; else the reply itself when it comes (kept: nothing to do;
//! not kept, or never run: bridged here); else, when the pipeline timed out (the script may
//! still run), the late echo, whose `IN_HISTORY` flag says it; else, after [`LATE_BRIDGE`]
//! without any of them, this node bridges it itself. So a late "kept" copy never comes on top
//! of a local one (exactly once), unless Redis runs the script more than [`LATE_BRIDGE`] after
//! the give-up.
//!
//! Only REST publishes (trigger and batch) wait. Client events are delivered at once (the
//! session never waits for them), so the order between client events and REST events is not
//! defined, as on Pusher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{message, Cluster, Inner};
use crate::hub::AppHub;
use crate::locks::MutexExt;
use crate::protocol::{ChannelName, SocketId};
use crate::tenants::{AppUsage, Usage};

/// How long a REST handler waits for its publishes' echoes (a batch's together) before it
/// delivers them locally itself: one Redis command's timeout.
pub const ECHO_TIMEOUT: std::time::Duration = super::COMMAND_TIMEOUT;

/// Publishes waiting for their echo at most (node-wide); past it a publish is delivered locally
/// at once, as when the node does not listen (so the set is bounded whatever the load).
pub(super) const MAX_WAITING: usize = super::OUTGOING_QUEUE;

/// Publishes of one app waiting for their echo at most: one tenant's burst cannot take every
/// slot of the node (the others' publishes would lose their order).
pub(super) const MAX_WAITING_PER_APP: usize = MAX_WAITING / 8;

/// How long a given-up publish whose bridge outcome is unknown (the pipeline timed out) waits
/// for its late echo before this node bridges it to its Mercure subscribers itself.
pub(super) const LATE_BRIDGE: std::time::Duration = std::time::Duration::from_secs(10);

/// The sequence numbers of this process's publishes waiting for their echo, each with the
/// handler to tell how many copies the echo delivered here.
#[derive(Debug, Default)]
pub(super) struct Echoes {
    next: AtomicU64,
    // A std lock: one insert or remove at a time, never held across an await.
    waiting: Mutex<Waiting>,
    /// Publishes given up on whose Mercure bridge is not decided yet (at most
    /// [`MAX_WAITING`]): decided by their bridge reply, their late echo or [`LATE_BRIDGE`].
    late: Mutex<HashMap<u64, Arc<Decision>>>,
}

/// The Mercure bridge of one ordered publish on this node, decided once (see the module doc).
#[derive(Default)]
struct Decision(Mutex<DecisionState>);

#[derive(Default)]
struct DecisionState {
    /// The bridge script's reply, once told.
    told: Option<super::Bridged>,
    /// Set by a give-up that could not decide: bridges the publish here (taken once).
    parked: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decision")
    }
}

impl Decision {
    /// The bridge script's reply: runs a parked bridge unless the history kept the publish
    /// (an unknown outcome leaves it parked, for the late echo). True when it decided.
    fn tell(&self, outcome: super::Bridged) -> bool {
        let mut state = self.0.lock_or_recover();
        state.told = Some(outcome);
        let parked = match outcome {
            super::Bridged::Unknown => None,
            _ => state.parked.take(),
        };
        drop(state);
        match parked {
            Some(bridge) => {
                if outcome != super::Bridged::Kept {
                    bridge();
                }
                true
            }
            None => false,
        }
    }

    /// The late echo (`kept`: flagged `IN_HISTORY`), or the wait's end (`kept` false): runs the
    /// parked bridge unless kept.
    fn settle(&self, kept: bool) {
        let parked = self.0.lock_or_recover().parked.take();
        if let (Some(bridge), false) = (parked, kept) {
            bridge();
        }
    }
}

#[derive(Debug, Default)]
struct Waiting {
    by_sequence: HashMap<u64, (Arc<str>, oneshot::Sender<usize>)>,
    per_app: HashMap<Arc<str>, usize>,
}

impl Echoes {
    /// A new sequence number waiting for its echo, or `None` when [`MAX_WAITING`] wait already,
    /// or [`MAX_WAITING_PER_APP`] of app `app_id`.
    fn register(&self, app_id: &Arc<str>) -> Option<(u64, oneshot::Receiver<usize>)> {
        let mut waiting = self.waiting.lock_or_recover();
        if waiting.by_sequence.len() >= MAX_WAITING {
            return None;
        }
        let mine = waiting.per_app.get(app_id).copied().unwrap_or(0);
        if mine >= MAX_WAITING_PER_APP {
            return None;
        }
        waiting.per_app.insert(app_id.clone(), mine + 1);
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        waiting.by_sequence.insert(sequence, (app_id.clone(), tx));
        Some((sequence, rx))
    }

    /// Takes `sequence` out: `Some` for the first caller (who delivers), `None` after.
    pub(super) fn take(&self, sequence: u64) -> Option<oneshot::Sender<usize>> {
        let mut waiting = self.waiting.lock_or_recover();
        let (app_id, tx) = waiting.by_sequence.remove(&sequence)?;
        if let Some(count) = waiting.per_app.get_mut(&app_id) {
            *count -= 1;
            if *count == 0 {
                waiting.per_app.remove(&app_id);
            }
        }
        Some(tx)
    }

    /// Parks `decision` under `sequence` until its late echo, its bridge reply or
    /// [`LATE_BRIDGE`]; false when [`MAX_WAITING`] are parked already (the caller bridges).
    fn park(inner: &Arc<Inner>, sequence: u64, decision: &Arc<Decision>) -> bool {
        let mut late = inner.echoes.late.lock_or_recover();
        if late.len() >= MAX_WAITING {
            return false;
        }
        late.insert(sequence, decision.clone());
        drop(late);
        let inner = inner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LATE_BRIDGE).await;
            inner.echoes.settle_late(sequence, false);
        });
        true
    }

    /// The late echo of a given-up publish (`kept`: flagged `IN_HISTORY`), or its wait's end:
    /// decides its Mercure bridge if nothing did yet.
    pub(super) fn settle_late(&self, sequence: u64, kept: bool) {
        let decision = self.late.lock_or_recover().remove(&sequence);
        if let Some(decision) = decision {
            decision.settle(kept);
        }
    }

    fn forget_late(&self, sequence: u64) {
        self.late.lock_or_recover().remove(&sequence);
    }
}

/// A REST publish sent to Redis without a local delivery, to be delivered here when it comes
/// back. Await [`Ordered::delivered`]; dropped before that (the request was cancelled), it is
/// delivered locally unless its echo was already.
pub struct Ordered {
    inner: Arc<Inner>,
    sequence: u64,
    acked: Option<oneshot::Receiver<bool>>,
    /// The bridge script's reply for it, and who bridges it here (see the module doc).
    bridged: Arc<Decision>,
    echoed: oneshot::Receiver<usize>,
    app: Arc<AppHub>,
    usage: Arc<AppUsage>,
    channel: Box<str>,
    frame: Bytes,
    except: Option<SocketId>,
    /// The pub/sub connections lost before it was sent.
    losses: u64,
    settled: bool,
}

impl std::fmt::Debug for Ordered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ordered")
            .field("sequence", &self.sequence)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Sends a REST publish (`frame` as serialized here, on `channel`, `except` excluded) to
    /// every node, this one included, when this node listens to the app's Redis channel: the
    /// local copies are delivered on the echo, in Redis's order ([`Ordered::delivered`]).
    /// `None` when it does not listen (no local subscriber waits for it, or no pub/sub
    /// connection is up) or too many publishes wait already: then the caller delivers locally
    /// and calls [`Cluster::forward`], as before.
    pub fn publish_ordered(
        &self,
        app: &Arc<AppHub>,
        usage: &Usage,
        channel: &ChannelName,
        frame: &Bytes,
        except: Option<SocketId>,
        keep: Option<super::cache::Keep>,
    ) -> Option<Ordered> {
        let channel = channel.as_str();
        let inner = &self.inner;
        let app_id = app.id();
        // Read before looking: a connection lost from here on ends the wait for the echo.
        let losses = inner.listening.losses();
        if !inner.listening.acked(&app_id) {
            return None;
        }
        let (sequence, echoed) = inner.echoes.register(&app_id)?;
        let payload = message::encode_echo(
            &inner.instance,
            channel,
            except,
            true,
            Some(sequence),
            frame,
        );
        let (ack, acked) = oneshot::channel();
        // Refused (queue full): the ack is dropped, so the wait ends at once, delivering locally.
        // A cache channel's last event is also stored cluster-wide, in the same pipeline
        // ([`Cluster::forward_kept`]'s rule).
        let cache = keep.map(|mut keep| {
            keep.at = payload.len() - frame.len();
            keep
        });
        let bridged = Arc::new(Decision::default());
        let told = bridged.clone();
        let echoes = inner.clone();
        let bridge_ack = super::BridgeAck::new(move |outcome| {
            if told.tell(outcome) {
                echoes.echoes.forget_late(sequence);
            }
        });
        self.enqueue_full(&app_id, payload, cache, Some(ack), Some(bridge_ack));
        Some(Ordered {
            inner: inner.clone(),
            sequence,
            acked: Some(acked),
            bridged,
            echoed,
            app: app.clone(),
            usage: usage.app(&app_id),
            channel: channel.into(),
            frame: frame.clone(),
            except,
            losses,
            settled: false,
        })
    }
}

impl Ordered {
    /// The Pusher channel it was published on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Waits until Redis took the publish and its echo was delivered here, at most until
    /// `deadline`; delivers it locally instead when Redis refused it or did not answer in time.
    /// Returns the copies delivered on this node (counted in usage already).
    pub async fn delivered(mut self, deadline: Instant) -> usize {
        let acked = match self.acked.take() {
            Some(acked) => matches!(tokio::time::timeout_at(deadline, acked).await, Ok(Ok(true))),
            None => false,
        };
        if acked {
            if let Some(copies) = self.echo(deadline).await {
                self.settled = true;
                return copies;
            }
        }
        self.give_up()
    }

    /// Waits for the echo until `deadline`, or until the node stops listening to the app's
    /// channel or loses the pub/sub connection it was sent under (the echo may never come
    /// then, even if a new connection listens again); the copies it delivered, `None` when it
    /// did not come.
    async fn echo(&mut self, deadline: Instant) -> Option<usize> {
        let listening = &self.inner.listening;
        let app_id = self.app.id();
        loop {
            let lost = listening.lost.notified();
            tokio::pin!(lost);
            lost.as_mut().enable();
            if listening.losses() != self.losses || !listening.acked(&app_id) {
                return None;
            }
            tokio::select! {
                copies = &mut self.echoed => return copies.ok(),
                () = tokio::time::sleep_until(deadline) => return None,
                () = lost => {}
            }
        }
    }

    /// Leaves this publish's Mercure bridge here to whoever decides it later (its bridge
    /// reply, its late echo, [`LATE_BRIDGE`]); true when the caller must bridge it now after
    /// all (too many parked already).
    fn park(&self) -> bool {
        let (app, channel, frame) = (self.app.clone(), self.channel.clone(), self.frame.clone());
        let usage = self.usage.clone();
        let mut state = self.bridged.0.lock_or_recover();
        match state.told {
            Some(super::Bridged::Kept) => return false,
            Some(super::Bridged::NotKept | super::Bridged::Failed) => return true,
            Some(super::Bridged::Unknown) | None => {}
        }
        state.parked = Some(Box::new(move || {
            usage.count(app.bridge_unkept(&channel, &frame) as u64);
        }));
        drop(state);
        if Echoes::park(&self.inner, self.sequence, &self.bridged) {
            return false;
        }
        // Too many parked: bridged here now, unless the reply took it meanwhile.
        self.bridged.0.lock_or_recover().parked.take().is_some()
    }

    /// Delivers locally unless the echo did (then its copies).
    fn give_up(&mut self) -> usize {
        self.settled = true;
        if self.inner.echoes.take(self.sequence).is_none() {
            // The echo came in meanwhile and delivered (and counted) the copies.
            return self.echoed.try_recv().unwrap_or(0);
        }
        // Kept in the Mercure history: its kind-6 message brings it to this node's Mercure
        // subscribers (or, the bus lost, their resume does); not kept: bridged here. Not known
        // yet: decided once, later (see the module doc).
        let told = self.bridged.0.lock_or_recover().told;
        let bridge_here = match told {
            Some(super::Bridged::Kept) => false,
            Some(super::Bridged::NotKept | super::Bridged::Failed) => true,
            Some(super::Bridged::Unknown) | None => self.park(),
        };
        let copies = self.app.deliver_serialized_to(
            &self.channel,
            &self.frame,
            self.except,
            true,
            bridge_here,
        );
        self.usage.count(copies as u64);
        copies
    }
}

impl Drop for Ordered {
    fn drop(&mut self) {
        if !self.settled {
            self.give_up();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waiting_set_is_bounded_per_app_and_in_all_and_each_number_is_taken_once() {
        let echoes = Echoes::default();
        let apps: Vec<Arc<str>> = (0..9).map(|n| Arc::from(n.to_string())).collect();
        let mut waiting = Vec::with_capacity(MAX_WAITING);
        for _ in 0..MAX_WAITING_PER_APP {
            waiting.push(echoes.register(&apps[0]).expect("room"));
        }
        assert!(
            echoes.register(&apps[0]).is_none(),
            "past {MAX_WAITING_PER_APP} of one app, its publish is delivered at once instead"
        );
        for app in &apps[1..8] {
            for _ in 0..MAX_WAITING_PER_APP {
                waiting.push(echoes.register(app).expect("room for another app"));
            }
        }
        assert!(
            echoes.register(&apps[8]).is_none(),
            "past {MAX_WAITING} in all, a publish is delivered at once instead"
        );
        let (first, mut told) = waiting.swap_remove(0);
        let taken = echoes.take(first).expect("the first taker delivers");
        assert!(echoes.take(first).is_none(), "the second does not");
        taken.send(3).expect("the handler still waits");
        assert_eq!(told.try_recv(), Ok(3));
        let (again, _) = echoes.register(&apps[0]).expect("room again for that app");
        assert!(
            waiting.iter().all(|(sequence, _)| *sequence != again),
            "sequence numbers are not reused"
        );
    }
}
