//! The seam a Mercure hub plugs into (design.md, "Mercure"): a Pusher event published on a
//! channel of an app also reaches that app's Mercure subscribers of the same topic.
//!
//! The hub does not know Mercure: the transport attaches a [`PusherBridge`] to an app's
//! [`AppHub`] once and says whether it has subscribers. A publish of an app with none pays one
//! relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::AppHub;

/// Where an app's Pusher events go besides its Pusher subscribers.
pub trait PusherBridge: Send + Sync + std::fmt::Debug {
    /// An event published (or relayed: a client event) on `channel`, as the frame serialized for
    /// the channel's Pusher subscribers; returns the copies delivered.
    fn pusher_event(&self, channel: &str, frame: &Bytes) -> usize;
}

/// An app's bridge, when one is attached, and whether it has anyone to deliver to.
#[derive(Debug, Default)]
pub(super) struct Bridge {
    active: AtomicBool,
    sink: OnceLock<Arc<dyn PusherBridge>>,
}

impl Bridge {
    /// Hands `frame` to the bridge when it has subscribers; the copies it delivered.
    #[inline]
    pub(super) fn deliver(&self, channel: &str, frame: &Bytes) -> usize {
        if !self.active.load(Ordering::Relaxed) {
            return 0;
        }
        self.sink
            .get()
            .map_or(0, |sink| sink.pusher_event(channel, frame))
    }
}

impl AppHub {
    /// Attaches `bridge` to this app (the first attached stays).
    pub fn attach_bridge(&self, bridge: Arc<dyn PusherBridge>) {
        let _ = self.bridge.sink.set(bridge);
    }

    /// Whether the attached bridge has subscribers (publishes skip it while it has none).
    pub fn set_bridge_active(&self, active: bool) {
        self.bridge.active.store(active, Ordering::Relaxed);
    }
}
