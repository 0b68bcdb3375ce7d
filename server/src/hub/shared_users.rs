//! Signed-in users decided by the cluster (cluster mode): whether a user is online is a
//! cluster-wide fact kept in Redis, so the local hub neither announces online/offline changes nor
//! answers a new watcher's initial statuses itself; the cluster tells it both, through these
//! methods. On a single node ([`super::Hub::with_shared_users`] not called) none of this is used
//! and the hub decides alone, as before.

use super::{lock, AppHub, ConnHandle};
use crate::protocol::server;

impl AppHub {
    /// Whether the cluster decides this app's online/offline changes (cluster mode).
    pub fn shared_users(&self) -> bool {
        self.shared_users
    }

    /// Tells this node's watchers of `user_id` that it came online or went offline
    /// cluster-wide (the cluster's script saw the transition). Returns how many were told.
    pub fn user_status_changed(&self, user_id: &str, online: bool) -> usize {
        let state = lock(&self.state);
        state.notify_watchers(user_id, online)
    }

    /// Sends `conn` the initial statuses of its watchlist as the cluster answered them
    /// (`online` ids; the rest of `watchlist` offline). Nothing for an empty watchlist.
    pub fn send_watchlist_statuses(
        &self,
        conn: &ConnHandle,
        watchlist: &[String],
        online: &[bool],
    ) {
        if watchlist.is_empty() {
            return;
        }
        let mut on = Vec::new();
        let mut off = Vec::new();
        for (n, id) in watchlist.iter().enumerate() {
            if online.get(n).copied().unwrap_or(false) {
                on.push(id.as_str());
            } else {
                off.push(id.as_str());
            }
        }
        conn.outbox().push(server::watchlist_events(&on, &off));
    }

    /// Sends `conn` the initial statuses of its watchlist as this node alone knows them (the
    /// cluster could not answer: Redis is unreachable).
    pub fn send_local_watchlist_statuses(&self, conn: &ConnHandle, watchlist: &[String]) {
        if watchlist.is_empty() {
            return;
        }
        let state = lock(&self.state);
        let online: Vec<bool> = watchlist
            .iter()
            .map(|id| state.users.contains_key(id.as_str()))
            .collect();
        drop(state);
        self.send_watchlist_statuses(conn, watchlist, &online);
    }
}
