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

    /// An event another node published, heard from the cluster's bus, that the cluster did not
    /// bridge itself (the message says so: `cluster/message.rs`, `IN_HISTORY`); returns the
    /// copies delivered.
    fn pusher_event_heard(&self, channel: &str, frame: &Bytes) -> usize {
        self.pusher_event(channel, frame)
    }

    /// The node's cluster bus (its pub/sub connection) was lost: updates may have been missed
    /// until it is back.
    fn cluster_bus_lost(&self) {}

    /// A Mercure update heard from the cluster's bus (kind 6, `cluster/message.rs`), as
    /// received; returns the copies delivered.
    fn mercure_update(&self, _message: &[u8]) -> usize {
        0
    }
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

    /// [`Bridge::deliver`] for an event heard from another node that the cluster did not bridge.
    #[inline]
    pub(super) fn deliver_heard(&self, channel: &str, frame: &Bytes) -> usize {
        if !self.active.load(Ordering::Relaxed) {
            return 0;
        }
        self.sink
            .get()
            .map_or(0, |sink| sink.pusher_event_heard(channel, frame))
    }
}

impl AppHub {
    /// Tells the attached bridge that the node's cluster bus was lost (see
    /// [`PusherBridge::cluster_bus_lost`]).
    pub fn cluster_bus_lost(&self) {
        if let Some(sink) = self.bridge.sink.get() {
            sink.cluster_bus_lost();
        }
    }

    /// Attaches `bridge` to this app (the first attached stays).
    pub fn attach_bridge(&self, bridge: Arc<dyn PusherBridge>) {
        let _ = self.bridge.sink.set(bridge);
    }

    /// Whether the attached bridge has subscribers (publishes skip it while it has none). A
    /// change is reported like an occupancy change: in a cluster the node then listens to the
    /// app's publishes from other nodes for its Mercure subscribers too
    /// ([`AppHub::is_occupied`]).
    pub fn set_bridge_active(&self, active: bool) {
        if self.bridge.active.swap(active, Ordering::Relaxed) != active {
            self.hooks.occupancy_changed();
        }
    }

    /// Hands a Mercure update heard from the cluster's bus to the attached bridge, when it has
    /// subscribers; the copies it delivered.
    pub fn deliver_mercure(&self, message: &[u8]) -> usize {
        if !self.bridge.active.load(Ordering::Relaxed) {
            return 0;
        }
        self.bridge
            .sink
            .get()
            .map_or(0, |sink| sink.mercure_update(message))
    }

    /// Whether the attached bridge has subscribers.
    pub fn bridge_active(&self) -> bool {
        self.bridge.active.load(Ordering::Relaxed)
    }

    /// Hands an event this node published to the attached bridge after all (in a cluster, the
    /// history did not keep it: [`PusherBridge::pusher_event_heard`]); the copies delivered.
    pub fn bridge_unkept(&self, channel: &str, frame: &Bytes) -> usize {
        self.bridge.deliver_heard(channel, frame)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::hub::Connection;
    use crate::protocol::{ChannelName, SocketId};

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    impl PusherBridge for Counting {
        fn pusher_event(&self, _channel: &str, _frame: &Bytes) -> usize {
            self.0.fetch_add(1, Ordering::Relaxed);
            1
        }
    }

    /// A bridge whose own-publish path says "the cluster brings it" (as `AppMercure` does while
    /// the node hears the app's channel), counting the events bridged here.
    #[derive(Debug, Default)]
    struct ClusterBridged(AtomicUsize);

    impl PusherBridge for ClusterBridged {
        fn pusher_event(&self, _channel: &str, _frame: &Bytes) -> usize {
            0
        }

        fn pusher_event_heard(&self, _channel: &str, _frame: &Bytes) -> usize {
            self.0.fetch_add(1, Ordering::Relaxed);
            1
        }
    }

    /// The caller's one decision is what happens: told to bridge here, the event is bridged
    /// even though the bridge itself would now leave it to the cluster; told not to, it is
    /// not (the forward's ack answers for it).
    #[test]
    fn a_decided_bridge_is_followed_not_decided_again() {
        let app = AppHub::new("1", None);
        let channel = ChannelName::parse("news", 200).unwrap();
        let bridge = Arc::new(ClusterBridged::default());
        app.attach_bridge(bridge.clone());
        app.set_bridge_active(true);
        let frame = crate::protocol::server::channel_event("e", "news", "d");
        assert_eq!(app.publish_frame(&channel, &frame, "d", None), 0);
        assert_eq!(bridge.0.load(Ordering::Relaxed), 0);
        assert_eq!(
            app.publish_frame_bridged(&channel, &frame, "d", None, true),
            1
        );
        assert_eq!(
            app.relay_bridged("news", frame.clone(), SocketId::new(9, 9), true),
            1
        );
        assert_eq!(
            bridge.0.load(Ordering::Relaxed),
            2,
            "bridged here as decided"
        );
        app.publish_frame_bridged(&channel, &frame, "d", None, false);
        app.relay_bridged("news", frame, SocketId::new(9, 9), false);
        assert_eq!(bridge.0.load(Ordering::Relaxed), 2, "left to the ack");
    }

    #[test]
    fn the_bridge_hears_publishes_and_relays_only_while_active_and_its_copies_count() {
        let app = AppHub::new("1", None);
        let channel = ChannelName::parse("news", 200).unwrap();
        let (conn, _rx) = Connection::new(SocketId::new(1, 1), 8);
        app.subscribe(&conn, &channel, None, Default::default())
            .unwrap();
        let bridge = Arc::new(Counting::default());
        app.attach_bridge(bridge.clone());
        assert_eq!(app.publish(&channel, "e", "d", None), 1);
        assert_eq!(bridge.0.load(Ordering::Relaxed), 0, "inactive: not called");
        app.set_bridge_active(true);
        assert_eq!(app.publish(&channel, "e", "d", None), 2);
        assert_eq!(
            app.relay("news", Bytes::from_static(b"{}"), SocketId::new(9, 9)),
            2
        );
        let frame = crate::protocol::server::channel_event("e", "news", "d");
        assert_eq!(app.publish_unbridged(&channel, &frame, "d"), 1);
        assert_eq!(
            bridge.0.load(Ordering::Relaxed),
            2,
            "not for an unbridged publish"
        );
        app.set_bridge_active(false);
        app.publish(&channel, "e", "d", None);
        assert_eq!(bridge.0.load(Ordering::Relaxed), 2);
    }
}
