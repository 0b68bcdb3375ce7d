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
//! closes, after its signin, so the two never cross.
//!
//! A node is alive while its tag key (`registry::tag_key`) exists. Every [`HEARTBEAT_EVERY`]
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::registry::tag_key;
use super::{Cluster, Inner, COMMAND_TIMEOUT, HEARTBEAT_EVERY, HEARTBEAT_TTL};
use crate::hub::{AppHub, ConnHandle};
use crate::locks::MutexExt;

/// How often a detached node tries to register its users again.
const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// Lua shared by the scripts: moves user `user`'s cluster-wide total (hash `total`) by `d` and
/// publishes the transition, if any, on `channel` (a kind 5 message: `H`, 5, online, user id).
const CHANGE: &str = r"
local function change(total, channel, user, d)
  local t = redis.call('HINCRBY', total, user, d)
  if t <= 0 then
    redis.call('HDEL', total, user)
    if t - d > 0 then
      redis.call('PUBLISH', channel, string.char(72, 5, 0) .. user)
    end
  elseif t - d <= 0 then
    redis.call('PUBLISH', channel, string.char(72, 5, 1) .. user)
  end
end
";

/// A signin. KEYS: the app's totals, this node's hash of the app, this node's app set, the node
/// set, this node's tag key. ARGV: the app's Redis channel, the app id, this node's tag, the
/// user, then the watchlist ids. Answers `{1, online...}` (1 or 0 per watchlist id, in order),
/// or `{0}` when this node's tag key is gone (nothing is changed: the node registers again).
const SIGN_IN: &str = r"
if redis.call('EXISTS', KEYS[5]) == 0 then return {0} end
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
change(KEYS[1], ARGV[1], ARGV[4], 1)
local answer = {1}
for i = 5, #ARGV do
  answer[#answer + 1] = redis.call('HEXISTS', KEYS[1], ARGV[i])
end
return answer
";

/// A sign-out. KEYS: the app's totals, this node's hash of the app, this node's tag key. ARGV:
/// the app's Redis channel, the user. Answers 1, or 0 when this node's tag key is gone.
const SIGN_OUT: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local n = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if n <= 0 then return 1 end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
change(KEYS[1], ARGV[1], ARGV[2], -1)
return 1
";

/// Registers this node's users of one app again: its hash becomes exactly the given counts and
/// the totals move by the difference. KEYS: the app's totals, this node's hash of the app, this
/// node's app set, the node set, this node's tag key. ARGV: the app's Redis channel, the app
/// id, this node's tag, its node id, the tag key's TTL, then user, count pairs.
const REREGISTER: &str = r"
if redis.call('EXISTS', KEYS[5]) == 0 then
  redis.call('SET', KEYS[5], ARGV[4], 'EX', ARGV[5])
end
local before = {}
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do before[held[i]] = tonumber(held[i + 1]) end
redis.call('DEL', KEYS[2])
local any = false
for i = 6, #ARGV, 2 do
  local user, n = ARGV[i], tonumber(ARGV[i + 1])
  if n > 0 then
    redis.call('HSET', KEYS[2], user, n)
    any = true
  end
  local d = n - (before[user] or 0)
  before[user] = nil
  if d ~= 0 then change(KEYS[1], ARGV[1], user, d) end
end
for user, n in pairs(before) do
  if n ~= 0 then change(KEYS[1], ARGV[1], user, -n) end
end
if any then
  redis.call('SADD', KEYS[3], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[3])
else
  redis.call('SREM', KEYS[3], ARGV[2])
end
return 1
";

/// Claims the cleanup of dead tag `ARGV[2]`. KEYS: the claims hash. ARGV: the tag key prefix,
/// the dead tag, this node's tag. Answers 1 when this node holds the claim (taken now, or held
/// already), 0 when the tag is alive or a live node holds the claim.
const CLAIM: &str = r"
if redis.call('EXISTS', ARGV[1] .. ARGV[2]) == 1 then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 0
end
local holder = redis.call('HGET', KEYS[1], ARGV[2])
if holder and holder ~= ARGV[3] and redis.call('EXISTS', ARGV[1] .. holder) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
";

/// Removes a dead node's users of one app (idempotent). KEYS: the app's totals, the dead node's
/// hash of the app, its app set, its tag key. ARGV: the app's Redis channel, the app id.
/// Answers the users whose count moved, or -1 when the node is alive again (nothing changed).
const CLEANUP: &str = r"
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local n = tonumber(held[i + 1])
  if n ~= 0 then change(KEYS[1], ARGV[1], held[i], -n) end
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[2])
return #held / 2
";

/// Forgets a dead node once its users are gone. KEYS: its app set, the node set, the claims
/// hash, its tag key. ARGV: its tag. Answers 1 when forgotten, 0 when not (yet).
const FINISH: &str = r"
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
";

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
    },
    SignOut {
        app_id: Arc<str>,
        user: Box<str>,
    },
}

/// This node's signed-in users (part of the cluster's state).
pub(super) struct Users {
    scripts: Scripts,
    /// Its own multiplexed connection: signins do not queue behind publishes or handshakes
    /// (cache channels' reads use it too).
    pub(super) manager: ConnectionManager,
    /// Unbounded, yet bounded by the connections: a session queues at most one signin and one
    /// sign-out.
    ops: mpsc::UnboundedSender<Op>,
    ops_rx: Mutex<Option<mpsc::UnboundedReceiver<Op>>>,
    /// The heartbeat found this node's tag key gone: register again.
    lost: Notify,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").finish_non_exhaustive()
    }
}

impl Users {
    pub(super) fn new(manager: ConnectionManager) -> Users {
        let (ops, ops_rx) = mpsc::unbounded_channel();
        Users {
            scripts: Scripts::new(),
            manager,
            ops,
            ops_rx: Mutex::new(Some(ops_rx)),
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
        let _ = self.inner.users.ops.send(Op::SignIn {
            app: app.clone(),
            conn: conn.clone(),
            user: user_id.into(),
            watchlist: watchlist.to_vec(),
            answered,
        });
        answer
    }

    /// Queues the sign-out of one socket of `user_id` (the socket closed), after its signin.
    /// Never waits.
    pub fn sign_out(&self, app_id: &str, user_id: &str) {
        let _ = self.inner.users.ops.send(Op::SignOut {
            app_id: app_id.into(),
            user: user_id.into(),
        });
    }
}

/// What the users task keeps: this node's signed-in sockets per app and user, as the ops it ran
/// left them (the truth a re-registration sends), and whether Redis has them.
#[derive(Default)]
struct Local {
    apps: HashMap<Arc<str>, HashMap<Box<str>, u32>>,
    detached: bool,
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

/// The users task: runs the queued signins and sign-outs in order and, once detached, registers
/// this node's users again every [`RESYNC_EVERY`] until it succeeds; until `stop`, after which
/// it runs what is still queued (the sockets' last sign-outs) and ends.
pub(super) async fn users_loop(inner: Arc<Inner>, stop: CancellationToken) {
    let Some(mut ops) = inner.users.ops_rx.lock_or_recover().take() else {
        return;
    };
    let mut conn = inner.users.manager.clone();
    let mut local = Local::default();
    let mut tick = tokio::time::interval(RESYNC_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            op = ops.recv() => {
                let Some(op) = op else { return };
                run(&inner, &mut conn, &mut local, op).await;
            }
            () = inner.users.lost.notified() => {
                local.detached = true;
                reregister(&inner, &mut conn, &mut local).await;
            }
            _ = tick.tick(), if local.detached => reregister(&inner, &mut conn, &mut local).await,
            () = stop.cancelled() => {
                while let Ok(op) = ops.try_recv() {
                    run(&inner, &mut conn, &mut local, op).await;
                }
                return;
            }
        }
    }
}

/// Runs one op: locally always, in Redis unless detached (a failure detaches).
async fn run(inner: &Inner, conn: &mut ConnectionManager, local: &mut Local, op: Op) {
    match op {
        Op::SignIn {
            app,
            conn: socket,
            user,
            watchlist,
            answered,
        } => {
            let app_id = app.id();
            *local
                .apps
                .entry(app_id.clone())
                .or_default()
                .entry(user.clone())
                .or_default() += 1;
            if !local.detached {
                // The app's first signed-in socket on this node: listen to the app's Redis
                // channel first, so no transition published after the script's answer is missed
                // here (bounded; usually the app is listened to already).
                if !inner.listening.ready(&app_id) {
                    let _ = tokio::time::timeout(
                        super::slots::ADMIT_TIMEOUT,
                        inner.listening.wait(&app_id),
                    )
                    .await;
                }
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
        Op::SignOut { app_id, user } => {
            let Some(users) = local.apps.get_mut(&app_id) else {
                return;
            };
            let Some(count) = users.get_mut(&user) else {
                return;
            };
            *count = count.saturating_sub(1);
            if *count == 0 {
                users.remove(&user);
            }
            if local.detached {
                return;
            }
            if users.is_empty() {
                local.apps.remove(&app_id);
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
            if local.detached {
                // The app's entry, even empty, tells the re-registration to clear it in Redis.
                local.apps.entry(app_id).or_default();
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
    for app_id in listed {
        local.apps.entry(app_id.into()).or_default();
    }
    for (app_id, users) in &local.apps {
        let keys = Keys::new(inner, app_id);
        let mut call = inner.users.scripts.reregister.key(&keys.totals);
        call.key(&keys.mine)
            .key(&keys.apps)
            .key(&keys.nodes)
            .key(&keys.tag)
            .arg(&keys.channel)
            .arg(&**app_id)
            .arg(inner.tag)
            .arg(&inner.settings.node_id)
            .arg(HEARTBEAT_TTL.as_secs());
        for (user, count) in users {
            call.arg(&**user).arg(*count);
        }
        if let Err(reason) = timed(call.invoke_async::<i64>(conn)).await {
            tracing::debug!(%reason, "signed-in users: registering again failed");
            return;
        }
    }
    local.apps.retain(|_, users| !users.is_empty());
    local.detached = false;
    // Transitions Redis lost (or this node missed) meanwhile: the watchers here learn the
    // statuses as they are now.
    inner.listening.resync_all();
    tracing::info!(
        apps = local.apps.len(),
        "signed-in users: registered again in Redis"
    );
}

/// Every [`HEARTBEAT_EVERY`]: finds the nodes whose tag key is gone and removes their users
/// (the survivor that claims a tag fires its offline transitions); until aborted.
pub(super) async fn sweep_loop(inner: Arc<Inner>) {
    let mut conn = inner.users.manager.clone();
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
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
mod tests {
    //! The scripts against a real `redis-server` of the test's own (from PATH; the test fails
    //! without it).

    use super::*;
    use futures_util::StreamExt;

    struct Server {
        child: std::process::Child,
        url: String,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    async fn redis_server() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Killed and waited for on drop, even when the test fails.
        let server = Server {
            child: std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("these tests need redis-server on PATH"),
            url: format!("redis://127.0.0.1:{port}/"),
        };
        let client = redis::Client::open(server.url.as_str()).expect("a URL");
        for _ in 0..100 {
            if client.get_multiplexed_async_connection().await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    const P: &str = "t";
    const APP: &str = "app1";

    fn channel() -> String {
        Cluster::app_channel(P, APP)
    }

    async fn sign_in(
        conn: &mut redis::aio::MultiplexedConnection,
        tag: u64,
        user: &str,
        watchlist: &[&str],
    ) -> Vec<i64> {
        let me = tag.to_string();
        let scripts = Scripts::new();
        let mut call = scripts.sign_in.key(totals_key(P, APP));
        call.key(node_users_key(P, APP, &me))
            .key(node_apps_key(P, &me))
            .key(nodes_key(P))
            .key(tag_key(P, tag))
            .arg(channel())
            .arg(APP)
            .arg(tag)
            .arg(user);
        for id in watchlist {
            call.arg(*id);
        }
        call.invoke_async(conn).await.expect("SIGN_IN")
    }

    async fn sign_out(conn: &mut redis::aio::MultiplexedConnection, tag: u64, user: &str) -> i64 {
        Scripts::new()
            .sign_out
            .key(totals_key(P, APP))
            .key(node_users_key(P, APP, &tag.to_string()))
            .key(tag_key(P, tag))
            .arg(channel())
            .arg(user)
            .invoke_async(conn)
            .await
            .expect("SIGN_OUT")
    }

    async fn total(conn: &mut redis::aio::MultiplexedConnection, user: &str) -> Option<i64> {
        redis::cmd("HGET")
            .arg(totals_key(P, APP))
            .arg(user)
            .query_async(conn)
            .await
            .expect("HGET")
    }

    async fn set_alive(conn: &mut redis::aio::MultiplexedConnection, tag: u64) {
        redis::cmd("SET")
            .arg(tag_key(P, tag))
            .arg("node")
            .query_async::<()>(conn)
            .await
            .expect("SET");
    }

    #[tokio::test]
    async fn transitions_are_decided_once_cluster_wide_and_published_by_the_script() {
        let server = redis_server().await;
        let client = redis::Client::open(server.url.as_str()).expect("a URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
        pubsub.subscribe(channel()).await.expect("SUBSCRIBE");
        let mut messages = pubsub.into_on_message();
        set_alive(&mut conn, 1).await;
        set_alive(&mut conn, 2).await;

        // A node whose tag key is gone changes nothing and is told so.
        assert_eq!(sign_in(&mut conn, 3, "u1", &[]).await, vec![0]);
        assert_eq!(total(&mut conn, "u1").await, None);

        // u1 on node 1 (online), again on node 2 (no transition); the watchlist answer sees both
        // nodes.
        assert_eq!(sign_in(&mut conn, 1, "u1", &["u2"]).await, vec![1, 0]);
        assert_eq!(
            sign_in(&mut conn, 2, "u2", &["u1", "u3"]).await,
            vec![1, 1, 0]
        );
        assert_eq!(sign_in(&mut conn, 2, "u1", &[]).await, vec![1]);
        assert_eq!(total(&mut conn, "u1").await, Some(2));
        assert_eq!(sign_out(&mut conn, 1, "u1").await, 1);
        // A sign-out of a socket this node never counted moves nothing.
        assert_eq!(sign_out(&mut conn, 1, "u1").await, 1);
        assert_eq!(total(&mut conn, "u1").await, Some(1));
        assert_eq!(sign_out(&mut conn, 2, "u1").await, 1);
        assert_eq!(total(&mut conn, "u1").await, None);

        let mut heard = Vec::new();
        for _ in 0..3 {
            let message = tokio::time::timeout(Duration::from_secs(2), messages.next())
                .await
                .expect("a status message")
                .expect("the stream");
            let payload: Vec<u8> = message.get_payload_bytes().to_vec();
            let status = super::super::message::decode_user_status(&payload).expect("kind 5");
            heard.push((status.user_id.to_owned(), status.online));
        }
        assert_eq!(
            heard,
            vec![
                ("u1".to_owned(), true),
                ("u2".to_owned(), true),
                ("u1".to_owned(), false)
            ]
        );
    }

    #[tokio::test]
    async fn a_dead_nodes_users_are_removed_once_and_registering_again_converges() {
        let server = redis_server().await;
        let client = redis::Client::open(server.url.as_str()).expect("a URL");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        set_alive(&mut conn, 1).await;
        set_alive(&mut conn, 2).await;
        sign_in(&mut conn, 1, "u1", &[]).await;
        sign_in(&mut conn, 1, "u1", &[]).await;
        sign_in(&mut conn, 2, "u1", &[]).await;
        sign_in(&mut conn, 2, "u2", &[]).await;
        assert_eq!(total(&mut conn, "u1").await, Some(3));

        let scripts = Scripts::new();
        let prefix = tag_key(P, 0);
        let prefix = prefix.strip_suffix('0').expect("ends with the tag");
        let claim = |tag: u64, me: u64| {
            let mut call = scripts.claim.key(dead_key(P));
            call.arg(prefix).arg(tag).arg(me);
            call
        };
        // Alive: nobody claims it.
        let claimed: i64 = claim(1, 2).invoke_async(&mut conn).await.expect("CLAIM");
        assert_eq!(claimed, 0);
        redis::cmd("DEL")
            .arg(tag_key(P, 1))
            .query_async::<()>(&mut conn)
            .await
            .expect("DEL");
        // Dead: node 2 claims it, a third live node then may not.
        set_alive(&mut conn, 3).await;
        let claimed: i64 = claim(1, 2).invoke_async(&mut conn).await.expect("CLAIM");
        assert_eq!(claimed, 1);
        let claimed: i64 = claim(1, 3).invoke_async(&mut conn).await.expect("CLAIM");
        assert_eq!(claimed, 0);
        let cleanup = || {
            let mut call = scripts.cleanup.key(totals_key(P, APP));
            call.key(node_users_key(P, APP, "1"))
                .key(node_apps_key(P, "1"))
                .key(tag_key(P, 1))
                .arg(channel())
                .arg(APP);
            call
        };
        let moved: i64 = cleanup().invoke_async(&mut conn).await.expect("CLEANUP");
        assert_eq!(moved, 1);
        assert_eq!(
            total(&mut conn, "u1").await,
            Some(1),
            "node 2's socket stays"
        );
        // Idempotent: a second run (a claim taken over midway) moves nothing.
        let moved: i64 = cleanup().invoke_async(&mut conn).await.expect("CLEANUP");
        assert_eq!(moved, 0);
        assert_eq!(total(&mut conn, "u1").await, Some(1));
        let finished: i64 = scripts
            .finish
            .key(node_apps_key(P, "1"))
            .key(nodes_key(P))
            .key(dead_key(P))
            .key(tag_key(P, 1))
            .arg(1)
            .invoke_async(&mut conn)
            .await
            .expect("FINISH");
        assert_eq!(finished, 1);

        // Node 2 registers again with what it holds now (u1 twice, u2 gone): twice in a row
        // gives the same totals.
        for _ in 0..2 {
            let mut call = scripts.reregister.key(totals_key(P, APP));
            call.key(node_users_key(P, APP, "2"))
                .key(node_apps_key(P, "2"))
                .key(nodes_key(P))
                .key(tag_key(P, 2))
                .arg(channel())
                .arg(APP)
                .arg(2)
                .arg("node-2")
                .arg(10)
                .arg("u1")
                .arg(2);
            let _: i64 = call.invoke_async(&mut conn).await.expect("REREGISTER");
            assert_eq!(total(&mut conn, "u1").await, Some(2));
            assert_eq!(total(&mut conn, "u2").await, None);
        }
        // After Redis lost everything, the same registration restores the totals and the tag.
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut conn)
            .await
            .expect("FLUSHALL");
        let mut call = scripts.reregister.key(totals_key(P, APP));
        call.key(node_users_key(P, APP, "2"))
            .key(node_apps_key(P, "2"))
            .key(nodes_key(P))
            .key(tag_key(P, 2))
            .arg(channel())
            .arg(APP)
            .arg(2)
            .arg("node-2")
            .arg(10)
            .arg("u1")
            .arg(2);
        let _: i64 = call.invoke_async(&mut conn).await.expect("REREGISTER");
        assert_eq!(total(&mut conn, "u1").await, Some(2));
        let alive: bool = redis::cmd("EXISTS")
            .arg(tag_key(P, 2))
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        assert!(alive);
    }
}
