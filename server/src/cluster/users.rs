//! Signed-in users and watchlists, cluster-wide (cluster mode).
//!
//! Redis keeps, per app, the hash `{cluster}:su:u:{app_id}` of user -> signed-in sockets in the
//! whole cluster, and per node (named by its socket id tag, new at each start) the hash
//! `{cluster}:su:n:{app_id}:{tag}` of user -> that node's sockets, the set
//! `{cluster}:su:apps:{tag}` of the apps it has users of, and the set `{cluster}:su:nodes` of
//! the tags that have any. Every change is one Lua script ([`SIGN_IN`], [`SIGN_OUT`],
//! [`REREGISTER`], [`CLEANUP`]), which moves the node's count and the cluster's total together
//! and, when the total goes from 0 to 1 (the user comes online) or back to 0 (offline), publishes
//! a user status message (kind 5, [`super::message`]) on the app's Redis channel from inside the
//! script: every node, the deciding one included, hears each transition once and in Redis's
//! order, and tells its own watchers (`AppHub::user_status_changed`). The signin script also
//! answers which of the new socket's watchlist ids are online cluster-wide; the node sends them
//! as the socket's initial `pusher_internal:watchlist_events`.
//!
//! The sessions queue signins and sign-outs (never waiting for them) to this node's users task,
//! which runs them in order on a connection of its own. A sign-out is queued when the socket
//! closes, after its signin, so the two never cross. The node's signed-in counts (the truth a
//! re-registration sends) are kept as the ops are queued, with an epoch: the queue is bounded
//! ([`USERS_QUEUE`]); past it an op is dropped and the node registers again, and ops queued
//! before a re-registration are in what it sent, so they skip Redis. A signin whose socket has
//! already closed skips Redis, and so does its sign-out. An app's first signin waits (bounded)
//! until this node listens to the app's Redis channel; meanwhile that app's ops are parked
//! (in order) and the other apps' ops go on.
//!
//! A node is alive while its tag key (`registry::tag_key`) exists. Every [`DEAD_SWEEP_EVERY`]
//! each node looks for tags in `{cluster}:su:nodes` whose tag key is gone; one survivor claims
//! such a tag ([`CLAIM`], recorded in the hash `{cluster}:su:dead`: a claim whose holder died is
//! taken over), removes the dead node's users app by app ([`CLEANUP`], idempotent: the node's
//! hash goes in the same step as the totals it moved, publishing the offline transitions), then
//! forgets the tag ([`FINISH`]). A killed node's users are offline within the tag key's TTL
//! plus one sweep period (10 s + 3 s).
//!
//! Redis unreachable (a script fails or times out): the node is *detached*: it keeps counting its
//! signed-in sockets locally, answers a watchlist from its own users only, and every second tries
//! to register again. Registering again ([`REREGISTER`], per app) sets the node's hash to what it
//! holds now and moves the totals by the difference (publishing the transitions that makes), so
//! it is idempotent and the cluster converges. The heartbeat also asks for it when it finds the
//! node's tag key gone (Redis lost its data, or the node was taken for dead and cleaned up).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::registry::tag_key;
use super::users_scripts::{CHANGE, CLAIM, CLEANUP, FINISH, REREGISTER, SIGN_IN, SIGN_OUT};
use super::{Cluster, Inner, COMMAND_TIMEOUT, DEAD_SWEEP_EVERY};
use crate::hub::{AppHub, ConnHandle};
use crate::locks::MutexExt;

/// How often a detached node tries to register its users again.
const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// Signins and sign-outs waiting for the users task (node-wide); past it an op is dropped and
/// the node registers its users again (a dropped signin gets its statuses from this node).
pub(super) const USERS_QUEUE: usize = 16_384;

/// Ops parked while their app's Redis channel is being listened to (node-wide); past it an op
/// is dropped like a full queue's.
const PARKED_MAX: usize = 4_096;

/// The hash of app `app_id`'s signed-in sockets per user, cluster-wide.
pub fn totals_key(cluster: &str, app_id: &str) -> String {
    format!("{cluster}:su:u:{app_id}")
}

/// The hash of app `app_id`'s signed-in sockets per user on the node with tag `tag`.
pub fn node_users_key(cluster: &str, app_id: &str, tag: &str) -> String {
    format!("{cluster}:su:n:{app_id}:{tag}")
}

/// The set of the apps the node with tag `tag` has signed-in users of.
pub fn node_apps_key(cluster: &str, tag: &str) -> String {
    format!("{cluster}:su:apps:{tag}")
}

/// The set of the tags of nodes with signed-in users.
pub fn nodes_key(cluster: &str) -> String {
    format!("{cluster}:su:nodes")
}

/// The hash of dead tags -> the tag of the node cleaning them up.
pub fn dead_key(cluster: &str) -> String {
    format!("{cluster}:su:dead")
}

/// The scripts, loaded once per process.
struct Scripts {
    sign_in: redis::Script,
    sign_out: redis::Script,
    reregister: redis::Script,
    claim: redis::Script,
    cleanup: redis::Script,
    finish: redis::Script,
}

impl Scripts {
    fn new() -> Scripts {
        let with_change = |body: &str| redis::Script::new(&format!("{CHANGE}{body}"));
        Scripts {
            sign_in: with_change(SIGN_IN),
            sign_out: with_change(SIGN_OUT),
            reregister: with_change(REREGISTER),
            claim: redis::Script::new(CLAIM),
            cleanup: with_change(CLEANUP),
            finish: redis::Script::new(FINISH),
        }
    }
}

/// A signin or sign-out on its way to Redis.
enum Op {
    SignIn {
        app: Arc<AppHub>,
        conn: ConnHandle,
        user: Box<str>,
        watchlist: Vec<String>,
        /// Told once the socket has its watchlist's initial statuses.
        answered: oneshot::Sender<()>,
        /// The [`Ledger::epoch`] it was counted in.
        epoch: u64,
    },
    SignOut {
        app_id: Arc<str>,
        user: Box<str>,
        epoch: u64,
    },
}

impl Op {
    fn app_id(&self) -> Arc<str> {
        match self {
            Op::SignIn { app, .. } => app.id(),
            Op::SignOut { app_id, .. } => app_id.clone(),
        }
    }
}

/// This node's signed-in sockets per app and user, counted as the ops are queued (the truth a
/// re-registration sends), and the epoch: bumped by each re-registration, so an op queued
/// before it (its effect is in what it sent) is not sent again.
#[derive(Default)]
struct Ledger {
    apps: HashMap<Arc<str>, HashMap<Box<str>, u32>>,
    epoch: u64,
}

impl Ledger {
    fn count(&mut self, app_id: &str, user: &str, signed_in: bool) {
        let users = match self.apps.get_mut(app_id) {
            Some(users) => users,
            None => self.apps.entry(app_id.into()).or_default(),
        };
        if signed_in {
            *users.entry(user.into()).or_default() += 1;
        } else if let Some(count) = users.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // The app's entry, even empty, tells a re-registration to clear it in Redis.
                users.remove(user);
            }
        }
    }
}

/// This node's signed-in users (part of the cluster's state).
pub(super) struct Users {
    scripts: Scripts,
    /// Its own multiplexed connection: signins do not queue behind publishes or handshakes
    /// (cache channels' reads use it too).
    pub(super) manager: super::conn::Conn,
    /// Bounded ([`USERS_QUEUE`]): past it an op is dropped and the node registers again.
    ops: mpsc::Sender<Op>,
    ops_rx: Mutex<Option<mpsc::Receiver<Op>>>,
    // A std lock: a few map updates per signin or sign-out (cluster mode only).
    ledger: Mutex<Ledger>,
    /// The heartbeat found this node's tag key gone, or an op was dropped: register again.
    lost: Notify,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").finish_non_exhaustive()
    }
}

impl Users {
    pub(super) fn new(manager: super::conn::Conn) -> Users {
        let (ops, ops_rx) = mpsc::channel(USERS_QUEUE);
        Users {
            scripts: Scripts::new(),
            manager,
            ops,
            ops_rx: Mutex::new(Some(ops_rx)),
            ledger: Mutex::default(),
            lost: Notify::new(),
        }
    }

    /// Redis lost this node's state (its tag key was found gone): register the users again.
    pub(super) fn lost(&self) {
        self.lost.notify_one();
    }
}

impl Cluster {
    /// Queues the signin of `conn` as `user_id` with `watchlist` (the hub registered it
    /// locally already): the user's count goes up cluster-wide (online on every node's watchers
    /// when it is its first socket anywhere), and `conn` gets its watchlist's initial statuses
    /// as the whole cluster has them. Never waits: the answer tells when `conn` has its
    /// statuses (the session waits for it before handling the client's next frames).
    pub fn sign_in(
        &self,
        app: &Arc<AppHub>,
        conn: &ConnHandle,
        user_id: &str,
        watchlist: &[String],
    ) -> oneshot::Receiver<()> {
        let (answered, answer) = oneshot::channel();
        let users = &self.inner.users;
        let mut ledger = users.ledger.lock_or_recover();
        ledger.count(&app.id(), user_id, true);
        let op = Op::SignIn {
            app: app.clone(),
            conn: conn.clone(),
            user: user_id.into(),
            watchlist: watchlist.to_vec(),
            answered,
            epoch: ledger.epoch,
        };
        // Under the ledger's lock: an op is queued in its epoch's order.
        let refused = users.ops.try_send(op);
        drop(ledger);
        if let Err(refused) = refused {
            dropped(&self.inner, refused.into_inner());
        }
        answer
    }

    /// Queues the sign-out of one socket of `user_id` (the socket closed), after its signin.
    /// Never waits.
    pub fn sign_out(&self, app_id: &str, user_id: &str) {
        let users = &self.inner.users;
        let mut ledger = users.ledger.lock_or_recover();
        ledger.count(app_id, user_id, false);
        let op = Op::SignOut {
            app_id: app_id.into(),
            user: user_id.into(),
            epoch: ledger.epoch,
        };
        let refused = users.ops.try_send(op);
        drop(ledger);
        if let Err(refused) = refused {
            dropped(&self.inner, refused.into_inner());
        }
    }
}

/// An op the users task cannot take (its queue is full, or it has stopped): the node registers
/// again (the ledger has the op's effect); a signin gets its statuses from this node's users.
fn dropped(inner: &Inner, op: Op) {
    tracing::warn!("signed-in users: the queue is full, an op was dropped; registering again");
    if let Op::SignIn {
        app,
        conn,
        watchlist,
        answered,
        ..
    } = op
    {
        app.send_local_watchlist_statuses(&conn, &watchlist);
        let _ = answered.send(());
    }
    inner.users.lost();
}

/// What the users task keeps: whether Redis has this node's users, and the signins it did not
/// send because their socket had closed (per app and user: their sign-outs are not sent either).
#[derive(Default)]
struct Local {
    detached: bool,
    skipped: HashMap<(Arc<str>, Box<str>), u32>,
}

/// Names of one app's keys for this node.
struct Keys {
    totals: String,
    mine: String,
    apps: String,
    nodes: String,
    tag: String,
    channel: String,
}

impl Keys {
    fn new(inner: &Inner, app_id: &str) -> Keys {
        let name = &inner.settings.name;
        let me = inner.tag.to_string();
        Keys {
            totals: totals_key(name, app_id),
            mine: node_users_key(name, app_id, &me),
            apps: node_apps_key(name, &me),
            nodes: nodes_key(name),
            tag: tag_key(name, inner.tag),
            channel: Cluster::app_channel(name, app_id),
        }
    }
}

/// Runs `call` within [`COMMAND_TIMEOUT`].
async fn timed<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// The users task: runs the queued signins and sign-outs in order (an app's ops wait, parked,
/// while the node starts listening to its Redis channel; the other apps' go on) and, once
/// detached, registers this node's users again every [`RESYNC_EVERY`] until it succeeds; until
/// `stop`, after which it runs what is still queued (the sockets' last sign-outs) and ends.
pub(super) async fn users_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let Some(mut ops) = inner.users.ops_rx.lock_or_recover().take() else {
        return;
    };
    let mut local = Local::default();
    let mut tick = tokio::time::interval(RESYNC_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut parked: HashMap<Arc<str>, VecDeque<Op>> = HashMap::new();
    let mut parked_count = 0usize;
    let mut waits: FuturesUnordered<Pin<Box<dyn Future<Output = Arc<str>> + Send>>> =
        FuturesUnordered::new();
    loop {
        tokio::select! {
            op = ops.recv() => {
                let Some(op) = op else { return };
                let app_id = op.app_id();
                if let Some(queue) = parked.get_mut(&app_id) {
                    if parked_count >= PARKED_MAX {
                        dropped(&inner, op);
                    } else {
                        queue.push_back(op);
                        parked_count += 1;
                    }
                } else if matches!(op, Op::SignIn { .. })
                    && !local.detached
                    && !inner.listening.ready(&app_id)
                    && parked_count < PARKED_MAX
                {
                    // The app's first signed-in socket on this node: listen to the app's Redis
                    // channel first, so no transition published after the script's answer is
                    // missed here (bounded; the other apps' ops do not wait for it).
                    parked.insert(app_id.clone(), VecDeque::from([op]));
                    parked_count += 1;
                    let waiting = inner.clone();
                    waits.push(Box::pin(async move {
                        let _ = tokio::time::timeout(
                            super::slots::ADMIT_TIMEOUT,
                            waiting.listening.wait(&app_id),
                        )
                        .await;
                        app_id
                    }));
                } else {
                    run(&inner, &mut inner.users.manager.get(), &mut local, op).await;
                }
            }
            Some(app_id) = waits.next(), if !waits.is_empty() => {
                for op in parked.remove(&app_id).unwrap_or_default() {
                    parked_count -= 1;
                    run(&inner, &mut inner.users.manager.get(), &mut local, op).await;
                }
            }
            () = inner.users.lost.notified() => {
                local.detached = true;
                reregister(&inner, &mut inner.users.manager.get(), &mut local).await;
            }
            _ = tick.tick(), if local.detached => reregister(&inner, &mut inner.users.manager.get(), &mut local).await,
            () = stop.cancelled() => {
                for (_, queue) in parked.drain() {
                    for op in queue {
                        run(&inner, &mut inner.users.manager.get(), &mut local, op).await;
                    }
                }
                while let Ok(op) = ops.try_recv() {
                    run(&inner, &mut inner.users.manager.get(), &mut local, op).await;
                }
                return;
            }
        }
    }
}

/// Whether an op counted in `epoch` is already in what the last re-registration sent.
fn stale(inner: &Inner, epoch: u64) -> bool {
    inner.users.ledger.lock_or_recover().epoch != epoch
}

/// The statuses of `watchlist` in Redis (a signin a re-registration already sent).
async fn statuses(
    inner: &Inner,
    conn: &mut ConnectionManager,
    app_id: &str,
    watchlist: &[String],
) -> Option<Vec<bool>> {
    let mut read = redis::cmd("HMGET");
    read.arg(totals_key(&inner.settings.name, app_id));
    for watched in watchlist {
        read.arg(watched);
    }
    let counts = timed(read.query_async::<Vec<Option<i64>>>(conn))
        .await
        .ok()?;
    Some(counts.iter().map(|n| n.is_some_and(|n| n > 0)).collect())
}

/// Runs one op in Redis unless detached, already sent by a re-registration, or its socket had
/// closed (a failure detaches).
async fn run(inner: &Inner, conn: &mut ConnectionManager, local: &mut Local, op: Op) {
    match op {
        Op::SignIn {
            app,
            conn: socket,
            user,
            watchlist,
            answered,
            epoch,
        } => {
            let app_id = app.id();
            if !app.is_connected(socket.socket_id()) {
                // Closed already: its sign-out is queued; neither goes to Redis.
                *local.skipped.entry((app_id, user)).or_default() += 1;
                let _ = answered.send(());
                return;
            }
            if !local.detached && stale(inner, epoch) {
                if watchlist.is_empty() {
                    let _ = answered.send(());
                    return;
                }
                if let Some(online) = statuses(inner, conn, &app_id, &watchlist).await {
                    app.send_watchlist_statuses(&socket, &watchlist, &online);
                    let _ = answered.send(());
                    return;
                }
                local.detached = true;
            }
            if !local.detached {
                let keys = Keys::new(inner, &app_id);
                let mut call = inner.users.scripts.sign_in.key(&keys.totals);
                call.key(&keys.mine)
                    .key(&keys.apps)
                    .key(&keys.nodes)
                    .key(&keys.tag)
                    .arg(&keys.channel)
                    .arg(&*app_id)
                    .arg(inner.tag)
                    .arg(&*user);
                for watched in &watchlist {
                    call.arg(watched);
                }
                match timed(call.invoke_async::<Vec<i64>>(conn)).await {
                    Ok(answer) if answer.first() == Some(&1) => {
                        let online: Vec<bool> = answer[1..].iter().map(|n| *n == 1).collect();
                        app.send_watchlist_statuses(&socket, &watchlist, &online);
                        let _ = answered.send(());
                        return;
                    }
                    Ok(_) => {
                        tracing::warn!("signed-in users: this node's state is gone from Redis");
                        local.detached = true;
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "signed-in users: Redis did not answer a signin");
                        local.detached = true;
                    }
                }
            }
            // Redis cannot answer: this node's own users, until it registers again.
            app.send_local_watchlist_statuses(&socket, &watchlist);
            let _ = answered.send(());
        }
        Op::SignOut {
            app_id,
            user,
            epoch,
        } => {
            let skipped = (app_id, user);
            if let Some(count) = local.skipped.get_mut(&skipped) {
                *count -= 1;
                if *count == 0 {
                    local.skipped.remove(&skipped);
                }
                return;
            }
            let (app_id, user) = skipped;
            if local.detached || stale(inner, epoch) {
                return;
            }
            let keys = Keys::new(inner, &app_id);
            let mut call = inner.users.scripts.sign_out.key(&keys.totals);
            call.key(&keys.mine)
                .key(&keys.tag)
                .arg(&keys.channel)
                .arg(&*user);
            match timed(call.invoke_async::<i64>(conn)).await {
                Ok(1) => {}
                Ok(_) => {
                    tracing::warn!("signed-in users: this node's state is gone from Redis");
                    local.detached = true;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "signed-in users: Redis did not answer a sign-out");
                    local.detached = true;
                }
            }
        }
    }
}

/// Registers every app's users of this node again (apps Redis lists for this node but it no
/// longer has included, so they are cleared); attached again once every app succeeded.
async fn reregister(inner: &Inner, conn: &mut ConnectionManager, local: &mut Local) {
    let name = &inner.settings.name;
    let apps_key = node_apps_key(name, &inner.tag.to_string());
    let listed = match timed(
        redis::cmd("SMEMBERS")
            .arg(&apps_key)
            .query_async::<Vec<String>>(conn),
    )
    .await
    {
        Ok(listed) => listed,
        Err(reason) => {
            tracing::debug!(%reason, "signed-in users: registering again failed");
            return;
        }
    };
    // What this node holds now; the ops queued before are in it (they skip Redis from now on,
    // and so do the signins skipped for a closed socket: their sign-outs are stale too, or in
    // it). A later op runs after this (same task).
    let apps = {
        let mut ledger = inner.users.ledger.lock_or_recover();
        ledger.epoch += 1;
        for app_id in listed {
            ledger.apps.entry(app_id.into()).or_default();
        }
        ledger.apps.clone()
    };
    local.skipped.clear();
    for (app_id, users) in &apps {
        let keys = Keys::new(inner, app_id);
        let mut call = inner.users.scripts.reregister.key(&keys.totals);
        call.key(&keys.mine)
            .key(&keys.apps)
            .key(&keys.nodes)
            .key(&keys.tag)
            .arg(&keys.channel)
            .arg(&**app_id)
            .arg(inner.tag);
        for (user, count) in users {
            call.arg(&**user).arg(*count);
        }
        match timed(call.invoke_async::<i64>(conn)).await {
            Ok(1) => {}
            Ok(_) => {
                tracing::debug!("signed-in users: the tag key is gone; waiting for the heartbeat");
                return;
            }
            Err(reason) => {
                tracing::debug!(%reason, "signed-in users: registering again failed");
                return;
            }
        }
    }
    inner
        .users
        .ledger
        .lock_or_recover()
        .apps
        .retain(|_, users| !users.is_empty());
    local.detached = false;
    // Transitions Redis lost (or this node missed) meanwhile: the watchers here learn the
    // statuses as they are now.
    inner.listening.resync_all();
    tracing::info!(
        apps = apps.len(),
        "signed-in users: registered again in Redis"
    );
}

/// Every [`DEAD_SWEEP_EVERY`]: finds the nodes whose tag key is gone and removes their users
/// (the survivor that claims a tag fires its offline transitions); until aborted.
pub(super) async fn sweep_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(DEAD_SWEEP_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The current connection: a timed-out one is replaced ([`super::conn`]).
        let mut conn = inner.users.manager.get();
        if let Err(reason) = sweep(&inner, &mut conn).await {
            tracing::debug!(%reason, "signed-in users: the dead-node sweep failed");
        }
    }
}

/// One sweep; answers how many dead nodes this node cleaned up.
async fn sweep(inner: &Inner, conn: &mut ConnectionManager) -> Result<usize, String> {
    let name = &inner.settings.name;
    let me = inner.tag.to_string();
    let tags: Vec<String> = timed(
        redis::cmd("SMEMBERS")
            .arg(nodes_key(name))
            .query_async(conn),
    )
    .await?;
    let others: Vec<u64> = tags
        .iter()
        .filter(|tag| **tag != me)
        .filter_map(|tag| tag.parse().ok())
        .collect();
    if others.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for tag in &others {
        pipe.exists(tag_key(name, *tag));
    }
    let alive: Vec<bool> = timed(pipe.query_async(conn)).await?;
    let prefix = tag_key(name, 0);
    let prefix = prefix.strip_suffix('0').unwrap_or(&prefix);
    let mut cleaned = 0;
    for (tag, alive) in others.iter().zip(alive) {
        if alive {
            continue;
        }
        let claimed: i64 = timed(
            inner
                .users
                .scripts
                .claim
                .key(dead_key(name))
                .arg(prefix)
                .arg(*tag)
                .arg(&me)
                .invoke_async(conn),
        )
        .await?;
        if claimed == 1 {
            clean_up(inner, conn, *tag).await?;
            cleaned += 1;
        }
    }
    Ok(cleaned)
}

/// Removes dead node `tag`'s users, app by app, then forgets it.
async fn clean_up(inner: &Inner, conn: &mut ConnectionManager, tag: u64) -> Result<(), String> {
    let name = &inner.settings.name;
    let dead = tag.to_string();
    let apps_key = node_apps_key(name, &dead);
    let apps: Vec<String> = timed(redis::cmd("SMEMBERS").arg(&apps_key).query_async(conn)).await?;
    let mut users = 0;
    for app_id in &apps {
        let moved: i64 = timed(
            inner
                .users
                .scripts
                .cleanup
                .key(totals_key(name, app_id))
                .key(node_users_key(name, app_id, &dead))
                .key(&apps_key)
                .key(tag_key(name, tag))
                .arg(Cluster::app_channel(name, app_id))
                .arg(app_id)
                .invoke_async(conn),
        )
        .await?;
        if moved < 0 {
            return Ok(());
        }
        users += moved;
    }
    timed(
        inner
            .users
            .scripts
            .finish
            .key(&apps_key)
            .key(nodes_key(name))
            .key(dead_key(name))
            .key(tag_key(name, tag))
            .arg(&dead)
            .invoke_async::<i64>(conn),
    )
    .await?;
    tracing::info!(
        dead_tag = tag,
        apps = apps.len(),
        users,
        "signed-in users of a dead node removed"
    );
    Ok(())
}

#[cfg(test)]
#[path = "users_tests.rs"]
mod tests;
