//! Admitting a connection, whatever carries it (a WebSocket, or a pusher-js HTTP fallback
//! session): the app's connection quota (cluster-wide in a cluster), its share of the node, the
//! usage counters, the dashboard's live view, `pusher:connection_established` and the look again
//! at the app after the (possibly slow) admission. The transport has already taken a node slot
//! with `Hub::reserve_connection`; [`Admitted::end`] gives everything back.

use std::sync::Arc;

use crate::cluster::Slot;
use crate::hub::{AppHub, ConnectRefusal, Connection};
use crate::meters::{Live, Transport};
use crate::node::SharedNode;
use crate::outbox::Outbox;
use crate::protocol::ws::opcode;
use crate::protocol::{server, CloseCode, ACTIVITY_TIMEOUT_SECS};
use crate::tenants::{AppRef, AppUsage};

/// A connection registered with its app.
pub(super) struct Admitted {
    pub(super) conn: Arc<Connection>,
    pub(super) app_hub: Arc<AppHub>,
    pub(super) app_id: String,
    usage: Arc<AppUsage>,
    socket_id: String,
    /// The cluster-wide quota slot, given back when dropped.
    _slot: Option<Slot>,
    /// The connection in `/metrics`' count by transport, given back when dropped.
    _live: Live,
}

/// Registers a connection whose frames go to `outbox` with `app`; on a refusal the node slot is
/// given back and the close code to send is returned.
pub(super) async fn admit(
    node: &SharedNode,
    app: &AppRef,
    key: &str,
    origin: Option<&str>,
    outbox: Outbox,
    transport: Transport,
) -> Result<Admitted, CloseCode> {
    let app_hub = node.hub.app(&app.id);
    let conn = Arc::new(Connection::with_outbox(
        node.hub.next_socket_id(),
        key,
        outbox,
    ));
    let slot = match take_quota(node, app, &app_hub, &conn).await {
        Ok(slot) => slot,
        // Over the app's own quota: 4004. Over its share of the node (so one app's public key
        // cannot take every slot from the other tenants): 4100, as for a full node.
        Err(ConnectRefusal::Quota) => return Err(CloseCode::OverConnectionQuota),
        Err(ConnectRefusal::NodeShare) => return Err(CloseCode::OverCapacity),
    };
    let usage = node.usage.app(&app.id);
    usage.connected();
    let socket_id = conn.socket_id().to_string();
    node.taps.emit(
        &app.id,
        "connection",
        None,
        Some(&socket_id),
        || match origin {
            Some(origin) => format!("connected from origin {origin}"),
            None => "connected (no Origin header)".to_owned(),
        },
    );
    // Past any close requested meanwhile: pusher-js hears of its connection first, then why it
    // closes.
    conn.outbox().force_push(
        opcode::TEXT,
        server::connection_established(conn.socket_id(), ACTIVITY_TIMEOUT_SECS),
    );
    // The app may have been disabled or deleted, or the node may have begun shutting down, while
    // this connection was admitted; the sweep that closes connections may already have run, so
    // look again.
    match node.apps.by_id(&app.id) {
        None => conn.outbox().close_with_error(
            CloseCode::AppDoesNotExist,
            CloseCode::AppDoesNotExist.reason(),
        ),
        Some(current) if !current.enabled => conn
            .outbox()
            .close_with_error(CloseCode::AppDisabled, CloseCode::AppDisabled.reason()),
        Some(_) if node.shutdown.is_cancelled() => {
            conn.outbox().request_close(CloseCode::ReconnectNow, false)
        }
        Some(_) => {}
    }
    Ok(Admitted {
        conn,
        app_hub,
        app_id: app.id.clone(),
        usage,
        socket_id,
        _slot: slot,
        _live: node.meters.live(transport),
    })
}

/// Registers `conn` with `app_hub` within the app's connection quota (cluster-wide in a cluster:
/// a slot is taken in Redis first, no round trip for an app without a quota, and given back when
/// the returned slot drops) and its share of the node. On a refusal the node slot is given back
/// and the refusal counted.
pub(super) async fn take_quota(
    node: &SharedNode,
    app: &AppRef,
    app_hub: &AppHub,
    conn: &Arc<Connection>,
) -> Result<Option<Slot>, ConnectRefusal> {
    let quota = app.limits.connections();
    let slot = match &node.cluster {
        Some(cluster) => match cluster.admit(&app.id, quota).await {
            Ok(slot) => slot,
            Err(crate::cluster::OverQuota) => {
                node.hub.release_connection();
                node.meters.refused("connection_quota");
                return Err(ConnectRefusal::Quota);
            }
        },
        None => None,
    };
    let share = node.settings.app_share_of_node();
    if let Err(refusal) = app_hub.connect_within(conn, quota, share) {
        node.hub.release_connection();
        node.meters.refused(match refusal {
            ConnectRefusal::Quota => "connection_quota",
            ConnectRefusal::NodeShare => "app_share_of_node",
        });
        return Err(refusal);
    }
    Ok(slot)
}

impl Admitted {
    /// Once the connection's session has finished: the counters, the live view and the node
    /// slot (the quota slot goes with `self`).
    pub(super) fn end(self, node: &SharedNode) {
        self.end_keeping_node_slot(node);
        node.hub.release_connection();
    }

    /// [`Admitted::end`] but the node slot, which the caller gives back later.
    pub(super) fn end_keeping_node_slot(self, node: &SharedNode) {
        self.usage.disconnected();
        node.taps.emit(
            &self.app_id,
            "disconnection",
            None,
            Some(&self.socket_id),
            || "disconnected".to_owned(),
        );
    }
}
