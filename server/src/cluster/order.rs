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
//! of a local one (exactly once). The handler takes the sequence number out and parks the
//! undecided bridge under one lock, so an echo arriving meanwhile finds one or the other. When
//! Redis runs the script more than [`LATE_BRIDGE`] after the give-up, the node has bridged the
//! publish itself: it remembers that (for [`BRIDGED_MEMORY`], at most [`MAX_WAITING`]), and a
//! late echo flagged `IN_HISTORY` then marks the kind-6 copy the same script publishes right
//! after it on the app's channel as one to skip here ([`Echoes::skips_update`]).
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

/// How long this node remembers a publish it bridged itself after [`LATE_BRIDGE`], for a
/// still later echo (Redis stalled that long) to tell its kept copy apart.
pub(super) const BRIDGED_MEMORY: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a kept copy to skip is looked for: the script publishes it right after the echo.
const SKIP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// Publishes this node bridged itself after [`LATE_BRIDGE`], and when (at most
    /// [`MAX_WAITING`], for [`BRIDGED_MEMORY`]).
    bridged_here: Mutex<HashMap<u64, Instant>>,
    /// Kept copies (kind-6 bodies, per app) not to deliver here: their publish was bridged here
    /// already (at most [`MAX_WAITING`], each looked for [`SKIP_WAIT`]).
    skip: Mutex<Vec<(Box<str>, Bytes, Instant)>>,
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

    /// Takes `sequence` out (as [`Echoes::take`]) and, when it was there, runs `then` on the
    /// parked decisions before anyone else sees them: a late echo finds the sequence waiting or
    /// its decision parked, never neither. `None` when it was taken already.
    fn take_then<R>(
        &self,
        sequence: u64,
        then: impl FnOnce(&mut HashMap<u64, Arc<Decision>>) -> R,
    ) -> Option<R> {
        // Lock order: `waiting`, then `late`, then a decision's own (nobody takes them the
        // other way round).
        let mut waiting = self.waiting.lock_or_recover();
        let (app_id, _tx) = waiting.by_sequence.remove(&sequence)?;
        if let Some(count) = waiting.per_app.get_mut(&app_id) {
            *count -= 1;
            if *count == 0 {
                waiting.per_app.remove(&app_id);
            }
        }
        let mut late = self.late.lock_or_recover();
        Some(then(&mut late))
    }

    /// The late echo of a given-up publish (`kept`: flagged `IN_HISTORY`; `channel` and `frame`
    /// as published on app `app_id`'s channel): decides its Mercure bridge if nothing did yet;
    /// when this node bridged it itself already and the history kept it too, the kept copy
    /// that follows is skipped here.
    pub(super) fn late_echo(
        &self,
        app_id: &str,
        sequence: u64,
        kept: bool,
        channel: &str,
        frame: &[u8],
    ) {
        let decision = self.late.lock_or_recover().remove(&sequence);
        if let Some(decision) = decision {
            decision.settle(kept);
            return;
        }
        let now = Instant::now();
        let bridged = self.bridged_here.lock_or_recover().remove(&sequence);
        if !kept || bridged.is_none_or(|at| now.duration_since(at) > BRIDGED_MEMORY) {
            return;
        }
        let mut skip = self.skip.lock_or_recover();
        skip.retain(|(_, _, at)| now.duration_since(*at) <= SKIP_WAIT);
        if skip.len() < MAX_WAITING {
            let body = message::encode_bridged_body(channel, frame);
            skip.push((app_id.into(), body, now));
        }
    }

    /// The wait for a late echo ended ([`LATE_BRIDGE`]): bridged here if nothing decided yet,
    /// and remembered so.
    fn late_expired(&self, sequence: u64) {
        // Remembered before `late` lets go of it: an echo arriving meanwhile finds one or the
        // other (and the bridge, taken here, runs for sure).
        let bridge = {
            let mut late = self.late.lock_or_recover();
            let Some(decision) = late.remove(&sequence) else {
                return;
            };
            let Some(bridge) = decision.0.lock_or_recover().parked.take() else {
                return;
            };
            let now = Instant::now();
            let mut bridged = self.bridged_here.lock_or_recover();
            if bridged.len() >= MAX_WAITING {
                bridged.retain(|_, at| now.duration_since(*at) <= BRIDGED_MEMORY);
            }
            if bridged.len() < MAX_WAITING {
                bridged.insert(sequence, now);
            }
            bridge
        };
        bridge();
    }

    /// Whether kind-6 message `payload` on app `app_id`'s channel is the kept copy of a publish
    /// this node bridged itself (then it is not delivered here; looked for once).
    pub(super) fn skips_update(&self, app_id: &str, payload: &[u8]) -> bool {
        let mut skip = self.skip.lock_or_recover();
        if skip.is_empty() {
            return false;
        }
        let Some((Some(_), body)) = message::decode_mercure(payload) else {
            return false;
        };
        let now = Instant::now();
        skip.retain(|(_, _, at)| now.duration_since(*at) <= SKIP_WAIT);
        let found = skip
            .iter()
            .position(|(app, expected, _)| &**app == app_id && expected[..] == *body);
        found.map(|at| skip.swap_remove(at)).is_some()
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

    /// Whether this node bridges the publish now: kept in the Mercure history, its kind-6
    /// message brings it to this node's Mercure subscribers (or, the bus lost, their resume
    /// does); not kept: bridged here. Not known yet: parked in `late` for whoever decides it
    /// later (its bridge reply, its late echo, [`LATE_BRIDGE`]), unless too many are parked
    /// already or no runtime runs the wait's timer (then bridged now).
    fn decide(&self, late: &mut HashMap<u64, Arc<Decision>>) -> bool {
        let mut state = self.bridged.0.lock_or_recover();
        match state.told {
            Some(super::Bridged::Kept) => return false,
            Some(super::Bridged::NotKept | super::Bridged::Failed) => return true,
            Some(super::Bridged::Unknown) | None => {}
        }
        if late.len() >= MAX_WAITING {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return true;
        };
        let (app, channel, frame) = (self.app.clone(), self.channel.clone(), self.frame.clone());
        let usage = self.usage.clone();
        state.parked = Some(Box::new(move || {
            usage.count(app.bridge_unkept(&channel, &frame) as u64);
        }));
        late.insert(self.sequence, self.bridged.clone());
        let (inner, sequence) = (self.inner.clone(), self.sequence);
        runtime.spawn(async move {
            tokio::time::sleep(LATE_BRIDGE).await;
            inner.echoes.late_expired(sequence);
        });
        false
    }

    /// Delivers locally unless the echo did (then its copies).
    fn give_up(&mut self) -> usize {
        self.settled = true;
        let inner = self.inner.clone();
        let Some(bridge_here) = inner
            .echoes
            .take_then(self.sequence, |late| self.decide(late))
        else {
            // The echo came in meanwhile and delivered (and counted) the copies.
            return self.echoed.try_recv().unwrap_or(0);
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

    /// A decision whose parked bridge counts its runs.
    fn parked(runs: &Arc<std::sync::atomic::AtomicUsize>) -> Arc<Decision> {
        let decision = Arc::new(Decision::default());
        let runs = runs.clone();
        decision.0.lock_or_recover().parked = Some(Box::new(move || {
            runs.fetch_add(1, Ordering::Relaxed);
        }));
        decision
    }

    #[test]
    fn an_echo_arriving_while_the_handler_gives_up_finds_the_parked_bridge() {
        let echoes = Echoes::default();
        let app: Arc<str> = Arc::from("1");
        let (sequence, _told) = echoes.register(&app).expect("room");
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let decision = parked(&runs);
        let (inside, entered) = std::sync::mpsc::channel();
        let (_hold, held) = std::sync::mpsc::channel::<()>();
        let echo = &echoes;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                // The echo, as `bus.rs`' `deliver` handles it, while the handler is between
                // taking the sequence out and parking its bridge.
                entered.recv().expect("the handler took the sequence");
                if echo.take(sequence).is_none() {
                    echo.late_echo("1", sequence, true, "ch", b"frame");
                }
            });
            echoes.take_then(sequence, |late| {
                inside.send(()).expect("the echo waits");
                // Room for the echo to try now (it must wait for the park).
                let _ = held.recv_timeout(std::time::Duration::from_millis(200));
                late.insert(sequence, decision.clone());
            });
        });
        assert!(
            decision.0.lock_or_recover().parked.is_none(),
            "the echo's IN_HISTORY answer decided the parked bridge"
        );
        assert_eq!(runs.load(Ordering::Relaxed), 0, "kept: not bridged here");
        echoes.late_expired(sequence);
        assert_eq!(runs.load(Ordering::Relaxed), 0, "nor after the wait");
    }

    #[test]
    fn a_kept_copy_later_than_the_wait_is_skipped_once_where_the_node_bridged_itself() {
        let echoes = Echoes::default();
        let app: Arc<str> = Arc::from("1");
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let park = || {
            let (sequence, _) = echoes.register(&app).expect("room");
            let decision = parked(&runs);
            echoes.take_then(sequence, |late| late.insert(sequence, decision));
            sequence
        };
        let (kept, unkept) = (park(), park());
        echoes.late_expired(kept);
        echoes.late_expired(unkept);
        assert_eq!(
            runs.load(Ordering::Relaxed),
            2,
            "both bridged here after the wait"
        );
        let copy = |channel: &str, frame: &[u8]| {
            message::encode_mercure("1-0", &message::encode_bridged_body(channel, frame))
        };
        echoes.late_echo("1", unkept, false, "ch", b"other");
        assert!(
            !echoes.skips_update("1", &copy("ch", b"other")),
            "an echo the history did not keep marks nothing"
        );
        echoes.late_echo("1", kept, true, "ch", b"frame");
        assert!(
            !echoes.skips_update("2", &copy("ch", b"frame")),
            "another app's"
        );
        assert!(
            !echoes.skips_update("1", &copy("ch", b"else")),
            "another update"
        );
        assert!(
            echoes.skips_update("1", &copy("ch", b"frame")),
            "its kept copy"
        );
        assert!(
            !echoes.skips_update("1", &copy("ch", b"frame")),
            "skipped once: a later identical publish is delivered"
        );
        echoes.late_echo("1", kept, true, "ch", b"frame");
        assert!(
            !echoes.skips_update("1", &copy("ch", b"frame")),
            "the memory of the local bridge is used once"
        );
    }
}
