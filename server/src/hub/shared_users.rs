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
        let mut state = lock(&self.state);
        if let Some(told) = state.told.get_mut(user_id) {
            *told = online;
        } else if state.watchers.contains_key(user_id) {
            state.told.insert(user_id.into(), online);
        }
        state.notify_watchers(user_id, online)
    }

    /// Whether socket `socket_id` is still connected to this app here.
    pub fn is_connected(&self, socket_id: crate::protocol::SocketId) -> bool {
        lock(&self.state).connections.contains_key(&socket_id)
    }

    /// The ids this node's sockets watch (for a re-sync, [`AppHub::resync_statuses`]).
    pub fn watched_ids(&self) -> Vec<Box<str>> {
        lock(&self.state).watchers.keys().cloned().collect()
    }

    /// Tells this node's watchers of each of `ids` its status as the cluster has it now
    /// (`online`, in order) where it differs from what they were last told (ids not told
    /// anything yet are left alone: their initial statuses are on their way): the transitions
    /// missed while this node did not hear the app's Redis channel, or while Redis had lost
    /// them. Returns how many ids changed.
    pub fn resync_statuses(&self, ids: &[Box<str>], online: &[bool]) -> usize {
        let mut state = lock(&self.state);
        let mut changed = 0;
        for (id, &now) in ids.iter().zip(online) {
            // An id never told is skipped: its watchers' initial statuses are on their way
            // (the signin script's answer), and they are as new as this read.
            if !state.watchers.contains_key(&**id)
                || state.told.get(&**id).is_none_or(|told| *told == now)
            {
                continue;
            }
            state.told.insert(id.clone(), now);
            state.notify_watchers(id, now);
            changed += 1;
        }
        changed
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
        let mut state = lock(&self.state);
        for (n, id) in watchlist.iter().enumerate() {
            let now = online.get(n).copied().unwrap_or(false);
            if now {
                on.push(id.as_str());
            } else {
                off.push(id.as_str());
            }
            // Only ids with watchers are remembered (the socket may have closed meanwhile).
            if state.watchers.contains_key(id.as_str()) {
                state.told.insert(id.as_str().into(), now);
            }
        }
        drop(state);
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
