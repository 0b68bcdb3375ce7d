//! What the cluster needs of an app's hub: whether this node has subscribers of the app at all,
//! and delivering a frame another node published and serialized, without serializing it again.

use bytes::Bytes;

use super::{enqueue_all, flush_all, lock, AppHub};
use crate::protocol::{server, ChannelName, SocketId};

impl AppHub {
    /// The app's id.
    pub fn id(&self) -> std::sync::Arc<str> {
        self.hooks.app_id.clone()
    }

    /// Whether any channel of the app has a subscriber on this node, or any connection of it is
    /// signed in (what the cluster's subscription to the app's Redis channel follows: a
    /// signed-in socket need not subscribe to anything, and a `terminate_connections` from
    /// another node must still reach it), or it has Mercure subscribers (the bridge).
    pub fn is_occupied(&self) -> bool {
        if self.bridge_active() {
            return true;
        }
        let state = lock(&self.state);
        !state.channels.is_empty() || !state.users.is_empty()
    }

    /// Fans out `frame`, published and serialized on another node, to this node's subscribers
    /// of `channel` but `except`, the way [`AppHub::publish_frame`] does (queued under the
    /// lock, written after it). With `keep`, a cache channel keeps it as its last event here too
    /// (the cluster-wide cache in Redis is a later increment). Returns the copies delivered.
    pub fn deliver_serialized(
        &self,
        channel: &str,
        frame: &Bytes,
        except: Option<SocketId>,
        keep: bool,
    ) -> usize {
        self.deliver_serialized_to(channel, frame, except, keep, true)
    }

    /// [`AppHub::deliver_serialized`], handed to the Mercure bridge only when `bridged` (the
    /// Pusher side of a Mercure update is not: its Mercure subscribers get the update itself;
    /// nor is an event the cluster put in the Mercure history: its kind-6 message follows).
    pub fn deliver_serialized_to(
        &self,
        channel: &str,
        frame: &Bytes,
        except: Option<SocketId>,
        keep: bool,
        bridged: bool,
    ) -> usize {
        // Only a kept publish needs its data back (rare: a cache channel's REST publish).
        let cache = keep
            .then(|| ChannelName::parse(channel, usize::MAX).ok())
            .flatten()
            .filter(ChannelName::is_cache)
            .and_then(|_| server::channel_event_data(frame));
        let mut to_flush = Vec::new();
        let mut state = lock(&self.state);
        if let Some(data) = &cache {
            self.keep(&mut state, channel, data, frame, true);
        }
        let delivered = state
            .channels
            .get(channel)
            .map_or(0, |c| enqueue_all(c, frame, except, &mut to_flush));
        drop(state);
        flush_all(to_flush);
        if !bridged {
            return delivered;
        }
        delivered + self.bridge.deliver_heard(channel, frame)
    }
}
