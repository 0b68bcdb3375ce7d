//! The session's deferral: work that must wait for Redis (cluster mode only), and the frames
//! that arrive behind it.
//!
//! The session is synchronous: the transport feeds it frames from inside its reader. In cluster
//! mode some operations need an answer from Redis before the client may be answered (a
//! subscribe: the node must be listening to the app's Redis channel, and later the cluster-wide
//! channel state decides occupancy, presence and the member limit). Such an operation is queued
//! as [`Pending`] work instead of being done at once; from then on, every text frame the session
//! is fed is queued behind it, so the client's frames still take effect in the order it sent
//! them. The transport sees [`super::session::Session::pending`], stops reading the socket and
//! awaits [`super::session::Session::drive`], which runs the pending work, then the queued frames
//! in order (any of which may defer again; the next one then waits for it).
//!
//! Bound: the transport reads nothing more while work is pending, so the queue holds at most
//! the frames of one read (the transport's read buffer, 64 KiB) plus one frame that was
//! incomplete before it. [`MAX_DEFERRED_BYTES`] makes that explicit: a frame past it is refused
//! with a `pusher:error` and dropped (a well-behaved transport never gets there).
//!
//! A single node never defers: without a cluster every operation is decided in memory at once,
//! exactly as before.
//!
//! Adding an operation: add a variant to [`Pending`] carrying what the synchronous part worked
//! out, queue it with `Session::defer`, and complete it in `Session::run_pending` (an
//! `async` match arm that awaits Redis with a timeout, at most [`REDIS_ANSWER_TIMEOUT`], and on
//! timeout or error decides locally as a single node would).

use std::collections::VecDeque;
use std::time::Duration;

use crate::hub::{PresenceMember, SubscribeOptions};
use crate::protocol::ChannelName;

/// The text bytes queued behind pending work at most (two reads' worth: one read of the
/// transport's 64 KiB buffer, plus an incomplete frame of up to as much again).
pub const MAX_DEFERRED_BYTES: usize = 256 * 1024;

/// How long pending work waits for Redis before the node decides locally.
pub const REDIS_ANSWER_TIMEOUT: Duration = crate::cluster::slots::ADMIT_TIMEOUT;

/// Work the session waits on Redis for before it handles anything else.
#[derive(Debug)]
pub enum Pending {
    /// A subscribe that passed every local check (rate, name, cap, signature): the cluster
    /// answers before the hub registers it.
    Subscribe(PendingSubscribe),
}

/// A subscribe waiting for the cluster.
#[derive(Debug)]
pub struct PendingSubscribe {
    /// The channel.
    pub name: ChannelName,
    /// The presence member joining, if a presence channel.
    pub member: Option<PresenceMember>,
    /// The app's options for the hub.
    pub options: SubscribeOptions,
    /// The connection's subscriptions cap (for the cache replay bookkeeping).
    pub max_subscriptions: usize,
}

/// Pending work and the frames queued behind it.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    work: Option<Pending>,
    frames: VecDeque<Box<str>>,
    bytes: usize,
}

impl Deferred {
    /// Whether anything waits (work, or frames behind work).
    pub(super) fn pending(&self) -> bool {
        self.work.is_some() || !self.frames.is_empty()
    }

    /// Queues `work`; the session defers at most one operation at a time (everything after it
    /// is queued as frames).
    pub(super) fn set_work(&mut self, work: Pending) {
        debug_assert!(self.work.is_none(), "one deferred operation at a time");
        self.work = Some(work);
    }

    /// Queues a frame behind the work; false (not queued) past [`MAX_DEFERRED_BYTES`].
    pub(super) fn push_frame(&mut self, text: &str) -> bool {
        if self.bytes + text.len() > MAX_DEFERRED_BYTES {
            return false;
        }
        self.bytes += text.len();
        self.frames.push_back(text.into());
        true
    }

    /// Takes the work, if any.
    pub(super) fn take_work(&mut self) -> Option<Pending> {
        self.work.take()
    }

    /// Takes the next queued frame.
    pub(super) fn next_frame(&mut self) -> Option<Box<str>> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.len();
        Some(frame)
    }

    /// Forgets everything (the connection ended).
    pub(super) fn clear(&mut self) {
        self.work = None;
        self.frames.clear();
        self.bytes = 0;
    }
}
