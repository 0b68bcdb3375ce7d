//! Cluster-wide channel state and presence, kept in Redis and decided there by scripts
//! ([`super::state_scripts`]), so each transition happens once per cluster.
//!
//! Keys (`P` = the cluster's name, `tag` = a node's socket id tag, new at each start):
//! - `P:st:ch:{app}:{tag}`: hash channel -> subscriptions held on node `tag`;
//! - `P:st:occ:{app}`: hash channel -> subscriptions cluster-wide (a channel is present iff
//!   occupied: `GET /channels` is one `HGETALL`);
//! - `P:st:pm:{app}:{channel}`: hash user -> the user's sockets cluster-wide (`user_count` is its
//!   `HLEN`), `P:st:pi:{app}:{channel}`: hash user -> `user_info` JSON (present iff a member);
//! - `P:st:pn:{app}:{tag}`: hash `"channel\nuser"` -> the user's sockets on node `tag`;
//! - `P:st:apps:{tag}`: the apps node `tag` has state of; `P:st:nodes`: the tags with state;
//!   `P:st:dead`: tags whose node is gone and whose state is being cleaned;
//! - `P:st:vacating:{app}`, `P:st:vacate-lease:{app}`: the pending and leased vacates (ZSETs
//!   by due time / lease end); `P:st:vacating-apps`: ZSET of their apps by earliest due
//!   ([`vacate`]).
//!
//! A subscribe (deferred by the session, see [`crate::transport::deferral`]) runs the join
//! script through this node's state task and waits for its answer (at most
//! [`super::slots::ADMIT_TIMEOUT`]): the member limit, checked cluster-wide (a known user's
//! extra socket always gets in), the counts, and whether the channel became occupied and the
//! user a member; the subscriber gets the cluster-wide member list. An unsubscribe or a
//! disconnect takes the socket off the local hub at once and queues a leave for the state task
//! (never awaited by the session). The task fires what the scripts answer, once, on this node:
//! `channel_occupied` / `channel_vacated` / `member_added` / `member_removed` webhooks through
//! the hub's event queue, the `member_added` / `member_removed` / `subscription_count` frames to
//! the local subscribers and, as one publish on the app's Redis channel, to the other nodes.
//! The hub runs in its cluster mode ([`crate::hub::Hub::with_cluster_state`]) and decides none
//! of these itself.
//!
//! Dead nodes: every [`DEAD_SWEEP_EVERY`] (1 s) each node sweeps. A script moves the tags of
//! `P:st:nodes` whose tag key is gone into `P:st:dead`; then for each (dead tag, app) a cleanup
//! script subtracts the node's counts and answers the channels vacated and the members removed;
//! it acts only for the caller that removed the app from the tag's set, so exactly one node
//! fires them (the `member_removed` frames at once; with a vacate delay the webhooks wait in
//! Redis like a leave's, [`vacate`]). Bound: a killed node's tag key expires within
//! [`super::HEARTBEAT_TTL`] (10 s), and a survivor sweeps within [`DEAD_SWEEP_EVERY`] (1 s)
//! after that: its members are removed and its channels vacated within 11 s, their webhooks
//! reported within the delay (3 s) and a vacates sweep (0.5 s) more: 14.5 s, below the 15 s
//! target. The apps cleaned are looked up on this node without creating their state (a
//! survivor need not host them; webhooks go straight to the writer, which knows every app's
//! endpoints). A node restarted under the same `HERALD_NODE_ID` has a new tag, so its
//! previous run is cleaned like a dead node.
//!
//! Redis unreachable (a script fails or times out, or the state queue is full): the session
//! decides locally (the subscriber gets this node's members; no transition is fired meanwhile:
//! a node alone cannot tell whether a user leaving here is still present on another node, and
//! a wrong local `member_removed` would never be repaired) and the node marks its state for a
//! resync. When Redis answers again (or the heartbeat finds
//! this node's tag key gone: Redis lost its data, or the node was taken for dead), the task
//! re-registers the node's whole state per app with one idempotent script that replaces the
//! node's hashes and applies the differences to the totals, and fires the transitions it
//! answers (through the vacate delay like a join and a leave: a channel or member back within
//! the delay cancels its pending vacate, and a vacate waits); connections admitted meanwhile
//! are kept. What "exact" allows: while Redis answers, every transition is decided
//! atomically and fired once; while it does not, members joining or leaving on a node are seen by that node only, and the transitions of the difference are
//! fired at the resync (a user who joined and left during an outage is never announced); a
//! `member_added` from another node may reach a subscriber whose member list already had the
//! user (clients treat it as a refresh). After Redis lost its data (restarted empty), the
//! re-registrations cannot tell what was occupied before from what is new: `channel_occupied`
//! and `member_added` (webhooks and frames) fire again for what every node still holds, and
//! the subscribers get `member_added` for members they knew (a refresh).
//!
//! The vacate delay is kept in Redis too ([`vacate`]): `channel_vacated` / `member_removed`
//! webhooks wait 3 s for a comeback on any node; a sweep task of its own leases the due ones,
//! reports them and confirms them once the webhook writer has written them (at least once).
//!
//! `subscription_count` comes from the cluster-wide count, sent by the node whose script
//! changed it; above [`COUNT_THROTTLE_ABOVE`] subscriptions each node sends a channel's count at
//! most every [`COUNT_INTERVAL`] (the throttle is per node: with changes on several nodes a
//! channel's subscribers may get one update per node per interval), and a held-back count goes
//! out at the next flush (every second).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

mod answers;
mod recover;
#[cfg(test)]
mod scripts_tests;
mod vacate;

pub(super) use vacate::vacate_loop;

use super::state_scripts;
use super::{slots, Cluster, Inner, Local, COMMAND_TIMEOUT, DEAD_SWEEP_EVERY};
use crate::hub::{AppHub, PresenceMember};
use crate::locks::MutexExt;
use crate::protocol::{server, SocketId, WebhookEvent, WebhookKind};
use answers::{info_of, int, list, texts};

/// State changes waiting for the state task; past it a change is dropped and the node resyncs.
const STATE_QUEUE: usize = 65_536;

/// State changes sent in one pipeline at most.
const BATCH: usize = 256;

/// After a failed script, changes are not sent to Redis for this long (the resync covers them).
const STATE_PAUSE: Duration = Duration::from_secs(1);

/// Above this many subscriptions cluster-wide, a channel's `subscription_count` is sent at most
/// every [`COUNT_INTERVAL`] by each node (as on a single node).
const COUNT_THROTTLE_ABOVE: i64 = 100;

/// See [`COUNT_THROTTLE_ABOVE`].
const COUNT_INTERVAL: Duration = Duration::from_secs(5);

/// How often held-back counts are looked at.
const COUNT_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// At most one warning about answering from local state per this interval.
pub(super) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// A presence channel's members: user id and `user_info`.
pub type Members = Vec<crate::hub::ListedMember>;

/// The cluster's answer to a subscribe.
#[derive(Debug)]
pub enum JoinAnswer {
    /// Counted: the subscriber may be registered. `members`: the cluster-wide member list of a
    /// presence channel. `subscriptions`: the channel's subscriptions cluster-wide.
    Joined {
        /// The presence channel's members (with the subscriber's user).
        members: Option<Members>,
        /// Subscriptions of the channel cluster-wide, the new one included.
        subscriptions: u64,
    },
    /// The presence channel has its limit of members cluster-wide.
    PresenceFull(usize),
}

/// The cluster state could not be reached in time: decide locally.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the cluster state in Redis did not answer")]
pub struct StateUnavailable;

pub(super) struct Join {
    app: Arc<str>,
    channel: Box<str>,
    user: Option<(String, Option<Box<RawValue>>)>,
    max_members: Option<usize>,
    socket: SocketId,
    counts: bool,
    epoch: u64,
    reply: oneshot::Sender<JoinAnswer>,
}

pub(super) struct Leave {
    app: Arc<str>,
    channel: Box<str>,
    user: Option<Box<str>>,
    counts: bool,
    epoch: u64,
}

pub(super) enum Op {
    Join(Join),
    Leave(Leave),
}

/// The state task's shared part (in [`Inner`]).
pub(super) struct Shared {
    tx: mpsc::Sender<Op>,
    rx: Mutex<Option<mpsc::Receiver<Op>>>,
    /// The node's state in Redis may be wrong: re-register it when Redis answers.
    resync: AtomicBool,
    /// Bumped at each resync: changes made before it are in the state it registered.
    epoch: AtomicU64,
    /// When the REST API last warned it answered from local state.
    pub(super) warned: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn new() -> Shared {
        let (tx, rx) = mpsc::channel(STATE_QUEUE);
        Shared {
            tx,
            rx: Mutex::new(Some(rx)),
            resync: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            warned: Mutex::new(None),
        }
    }

    /// Marks this node's state in Redis for a resync.
    pub(super) fn needs_resync(&self) {
        self.resync.store(true, Ordering::Release);
    }

    pub(super) fn take_receiver(&self) -> Option<mpsc::Receiver<Op>> {
        self.rx.lock_or_recover().take()
    }
}

/// The key prefix of the state.
pub(super) fn prefix(cluster: &str) -> String {
    format!("{cluster}:st:")
}

impl Cluster {
    /// Counts a subscribe cluster-wide (the session awaits it, at most
    /// [`slots::ADMIT_TIMEOUT`]): the presence member limit `max_members` is checked against
    /// the cluster's members, and the transitions (occupied, member added, subscription count
    /// to the others but `socket`) are fired by this node.
    pub async fn join(
        &self,
        app_id: &str,
        channel: &str,
        member: Option<&PresenceMember>,
        max_members: Option<usize>,
        socket: SocketId,
        counts: bool,
    ) -> Result<JoinAnswer, StateUnavailable> {
        let shared = &self.inner.state;
        let (reply, answer) = oneshot::channel();
        let op = Op::Join(Join {
            app: app_id.into(),
            channel: channel.into(),
            user: member.map(|m| (m.user_id.clone(), m.user_info.clone())),
            max_members,
            socket,
            counts,
            epoch: shared.epoch.load(Ordering::Acquire),
            reply,
        });
        if shared.tx.try_send(op).is_err() {
            shared.needs_resync();
            return Err(StateUnavailable);
        }
        match tokio::time::timeout(slots::ADMIT_TIMEOUT, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            _ => {
                shared.needs_resync();
                Err(StateUnavailable)
            }
        }
    }

    /// Takes a subscription off the cluster-wide state (the local hub removed it already);
    /// queued for this node's state task, in order after its earlier changes, never awaited.
    pub fn leave(&self, app_id: &str, channel: &str, user: Option<&str>, counts: bool) {
        let shared = &self.inner.state;
        let op = Op::Leave(Leave {
            app: app_id.into(),
            channel: channel.into(),
            user: user.map(Into::into),
            counts,
            epoch: shared.epoch.load(Ordering::Acquire),
        });
        if shared.tx.try_send(op).is_err() {
            shared.needs_resync();
        }
    }
}

/// The task's scripts and connection.
struct Task {
    inner: Arc<Inner>,
    local: Arc<dyn Local>,
    conn: ConnectionManager,
    prefix: String,
    join: redis::Script,
    leave: redis::Script,
    claim: redis::Script,
    cleanup: redis::Script,
    resync: redis::Script,
    /// The vacate delay in ms ([`vacate`]; 0: none).
    vacate_delay_ms: u64,
    paused_until: Option<Instant>,
    /// Channels above [`COUNT_THROTTLE_ABOVE`]: when this node last sent their count, and the
    /// count held back since (with whether clients get it). Bounded by such channels: an entry
    /// goes when its channel drops to the threshold or is vacated.
    throttled: HashMap<ChannelKey, Throttled>,
}

/// An app's channel.
type ChannelKey = (Arc<str>, Box<str>);

#[derive(Debug)]
struct Throttled {
    last: Instant,
    held: Option<(i64, bool)>,
}

/// Runs this node's state changes in order, sweeps dead nodes every [`DEAD_SWEEP_EVERY`] and
/// resyncs when needed, until `stop`; then sends the changes still queued (the caller bounds
/// how long).
pub(super) async fn state_loop(
    inner: Arc<Inner>,
    local: Arc<dyn Local>,
    mut rx: mpsc::Receiver<Op>,
    stop: CancellationToken,
) {
    let mut task = Task {
        conn: inner.manager.get(),
        prefix: prefix(&inner.settings.name),
        inner,
        join: redis::Script::new(state_scripts::JOIN),
        leave: redis::Script::new(state_scripts::LEAVE),
        claim: redis::Script::new(state_scripts::CLAIM),
        cleanup: redis::Script::new(state_scripts::CLEANUP),
        resync: redis::Script::new(state_scripts::RESYNC),
        vacate_delay_ms: u64::try_from(local.vacate_delay().as_millis()).unwrap_or(u64::MAX),
        paused_until: None,
        throttled: HashMap::new(),
        local,
    };
    let mut sweep = tokio::time::interval(DEAD_SWEEP_EVERY);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(COUNT_FLUSH_EVERY);
    flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            op = rx.recv() => {
                let Some(op) = op else { return };
                let mut ops = vec![op];
                while ops.len() < BATCH {
                    match rx.try_recv() {
                        Ok(op) => ops.push(op),
                        Err(_) => break,
                    }
                }
                task.resync_if_needed().await;
                task.run(ops).await;
            }
            _ = sweep.tick() => {
                task.resync_if_needed().await;
                task.sweep().await;
            }
            _ = flush.tick(), if !task.throttled.is_empty() => task.flush_counts(),
            () = stop.cancelled() => {
                rx.close();
                let mut ops = Vec::with_capacity(BATCH);
                while rx.recv_many(&mut ops, BATCH).await > 0 {
                    task.run(std::mem::take(&mut ops)).await;
                }
                return;
            }
        }
    }
}

impl Task {
    fn cluster(&self) -> Cluster {
        Cluster {
            inner: self.inner.clone(),
        }
    }

    fn paused(&self) -> bool {
        self.paused_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Runs `invocation`; a failure pauses the task and marks the state for a resync.
    async fn invoke(&mut self, invocation: redis::ScriptInvocation<'_>) -> Option<Value> {
        if self.paused() {
            self.inner.state.needs_resync();
            return None;
        }
        let call = invocation.invoke_async::<Value>(&mut self.conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::debug!(%error, "a cluster state script failed");
                self.failed();
                None
            }
            Err(_) => {
                self.failed();
                None
            }
        }
    }

    fn failed(&mut self) {
        self.paused_until = Some(Instant::now() + STATE_PAUSE);
        self.inner.state.needs_resync();
    }

    fn app(&self, app_id: &str) -> Arc<AppHub> {
        self.local.hub().app(app_id)
    }

    /// Runs `ops` (taken from the queue in order) as one pipeline of scripts: Redis runs them in
    /// order, and each answer is then fired in order.
    async fn run(&mut self, ops: Vec<Op>) {
        let epoch = self.inner.state.epoch.load(Ordering::Acquire);
        let mut ops: Vec<Op> = ops
            .into_iter()
            .filter(|op| match op {
                // A join from before a resync whose session gave up waiting was registered
                // locally, and so is in what the resync sent.
                Op::Join(join) => !(join.epoch < epoch && join.reply.is_closed()),
                // Its socket was already gone from what the resync sent.
                Op::Leave(leave) => leave.epoch >= epoch,
            })
            .collect();
        // Scripts are sent by hash; after Redis lost them (a restart) they are loaded once and
        // the ops Redis refused for that are sent again, in order.
        for attempt in 0..2 {
            if ops.is_empty() {
                return;
            }
            if self.paused() {
                // Dropped (a waiting subscribe decides locally): the resync covers them.
                self.inner.state.needs_resync();
                return;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for op in &ops {
                pipe.add_command(self.command(op));
            }
            let call = pipe.query_async::<Vec<Value>>(&mut self.conn);
            let answers = match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
                Ok(Ok(answers)) if answers.len() == ops.len() => answers,
                Ok(Ok(_)) | Ok(Err(_)) | Err(_) => return self.failed(),
            };
            let mut unloaded = Vec::new();
            for (op, answer) in ops.into_iter().zip(answers) {
                match answer {
                    Value::ServerError(error) if error.code() == "NOSCRIPT" && attempt == 0 => {
                        unloaded.push(op);
                    }
                    Value::ServerError(error) => {
                        tracing::debug!(code = error.code(), "a cluster state script failed");
                        self.inner.state.needs_resync();
                    }
                    answer => match op {
                        Op::Join(join) => self.joined(join, answer),
                        Op::Leave(leave) => self.left(leave, answer),
                    },
                }
            }
            if !unloaded.is_empty() {
                for script in [self.join.clone(), self.leave.clone()] {
                    let load = script.prepare_invoke();
                    let loaded =
                        tokio::time::timeout(COMMAND_TIMEOUT, load.load_async(&mut self.conn))
                            .await;
                    if !matches!(loaded, Ok(Ok(_))) {
                        return self.failed();
                    }
                }
            }
            ops = unloaded;
        }
    }

    /// The `EVALSHA` of an op's script.
    fn command(&self, op: &Op) -> redis::Cmd {
        let mut command = redis::cmd("EVALSHA");
        match op {
            Op::Join(join) => {
                let (user, info) = match &join.user {
                    Some((user, info)) => {
                        (user.as_str(), info.as_deref().map_or("", RawValue::get))
                    }
                    None => ("", ""),
                };
                command
                    .arg(self.join.get_hash())
                    .arg(0)
                    .arg(&self.prefix)
                    .arg(&*join.app)
                    .arg(self.inner.tag)
                    .arg(&*join.channel)
                    .arg(user)
                    .arg(info)
                    .arg(join.max_members.unwrap_or(0));
            }
            Op::Leave(leave) => {
                // An app that wants neither webhook records no pending vacate.
                let app = self.local.hub().existing_app(&leave.app);
                let wanted = app.is_none_or(|app| {
                    app.wants(WebhookKind::ChannelVacated)
                        || (leave.user.is_some() && app.wants(WebhookKind::MemberRemoved))
                });
                command
                    .arg(self.leave.get_hash())
                    .arg(0)
                    .arg(&self.prefix)
                    .arg(&*leave.app)
                    .arg(self.inner.tag)
                    .arg(&*leave.channel)
                    .arg(leave.user.as_deref().unwrap_or(""))
                    .arg(if wanted { self.vacate_delay_ms } else { 0 })
                    .arg(super::misses::missed_prefix(
                        &self.inner.settings.name,
                        &leave.app,
                    ));
            }
        }
        command
    }

    /// Fires what a join's script answered and answers the session.
    fn joined(&mut self, join: Join, answer: Value) {
        let mut answer = list(answer).into_iter();
        let first = answer.next().map_or(0, |v| int(&v));
        if first < 0 {
            let max = answer.next().map_or(0, |v| int(&v));
            if join
                .reply
                .send(JoinAnswer::PresenceFull(usize::try_from(max).unwrap_or(0)))
                .is_err()
            {
                // The session gave up and registered the socket locally.
                self.inner.state.needs_resync();
            }
            return;
        }
        // 2: a comeback within the vacate delay, which reports no webhook.
        let occupied = first == 1;
        let added = answer.next().map_or(0, |v| int(&v));
        let total = answer.next().map_or(0, |v| int(&v));
        let members = join.user.as_ref().map(|_| {
            let flat = texts(answer.next().unwrap_or(Value::Nil));
            flat.chunks(2)
                .filter_map(|pair| match pair {
                    [user, info] => Some((user.clone(), info_of(info))),
                    _ => None,
                })
                .collect::<Members>()
        });
        let app = self.app(&join.app);
        let channel = &*join.channel;
        if occupied {
            app.emit(WebhookKind::ChannelOccupied, || {
                WebhookEvent::channel(WebhookKind::ChannelOccupied, channel)
            });
        }
        if added > 0 {
            if let Some((user, info)) = &join.user {
                let frame = server::member_added(channel, user, info.as_deref());
                self.send(&join.app, Some(&app), channel, &frame, Some(join.socket));
                if added == 1 {
                    app.emit(WebhookKind::MemberAdded, || {
                        WebhookEvent::member(WebhookKind::MemberAdded, channel, user)
                    });
                }
            }
        }
        self.count(
            &join.app,
            &app,
            channel,
            total,
            join.counts,
            Some(join.socket),
        );
        if first > 0 {
            self.throttled
                .remove(&(join.app.clone(), join.channel.clone()));
        }
        let _ = join.reply.send(JoinAnswer::Joined {
            members,
            subscriptions: u64::try_from(total).unwrap_or(0),
        });
    }

    /// Fires what a leave's script answered.
    fn left(&mut self, leave: Leave, answer: Value) {
        let answer = list(answer);
        // 2: vacated / removed with the webhook pending in Redis ([`vacate`]).
        let vacated = answer.first().map_or(0, int);
        let removed = answer.get(1).map_or(0, int);
        let total = answer.get(2).map_or(-1, int);
        if total < 0 {
            // This node held no subscription of the channel in Redis (cleaned up, or never
            // registered while Redis was unreachable): the resync settles it.
            return;
        }
        let app = self.app(&leave.app);
        let channel = &*leave.channel;
        if removed > 0 {
            if let Some(user) = &leave.user {
                self.member_removed(&leave.app, Some(&app), channel, user, removed == 1);
            }
        }
        if vacated > 0 {
            self.throttled
                .remove(&(leave.app.clone(), leave.channel.clone()));
            if vacated == 1 {
                app.emit(WebhookKind::ChannelVacated, || {
                    WebhookEvent::channel(WebhookKind::ChannelVacated, channel)
                });
            }
        } else {
            self.count(&leave.app, &app, channel, total, leave.counts, None);
        }
    }

    /// `member_removed` to the local subscribers (of `app`, if the app has state here) and the
    /// other nodes, and its webhook (unless pending).
    fn member_removed(
        &self,
        app_id: &str,
        app: Option<&AppHub>,
        channel: &str,
        user: &str,
        hook: bool,
    ) {
        let frame = server::member_removed(channel, user);
        self.send(app_id, app, channel, &frame, None);
        if hook {
            self.report(app_id, app, WebhookKind::MemberRemoved, || {
                WebhookEvent::member(WebhookKind::MemberRemoved, channel, user)
            });
        }
    }

    /// Reports a webhook event through `app`'s hooks, or (the app has no state on this node)
    /// through the hub without creating any ([`crate::hub::Hub::report`]).
    fn report(
        &self,
        app_id: &str,
        app: Option<&AppHub>,
        kind: WebhookKind,
        make: impl FnOnce() -> WebhookEvent,
    ) {
        match app {
            Some(app) => app.emit(kind, make),
            None => {
                let _ = self.local.hub().report(app_id, kind, make);
            }
        }
    }

    /// Delivers `frame` to the local subscribers of `channel` but `except` (if the app has state
    /// here) and publishes it to the other nodes.
    fn send(
        &self,
        app_id: &str,
        app: Option<&AppHub>,
        channel: &str,
        frame: &bytes::Bytes,
        except: Option<SocketId>,
    ) {
        let delivered = app.map_or(0, |app| {
            app.deliver_serialized(channel, frame, except, false)
        });
        if delivered > 0 {
            let local = self.local.as_ref();
            super::lease::count_delivered(&self.cluster().inner, local, app_id, delivered as u64);
        }
        self.cluster()
            .forward(app_id, channel, frame, except, false);
    }

    /// The channel's `subscription_count` (cluster-wide) to its subscribers but `except` (when
    /// `clients`) and as a webhook (when wanted), unless the throttle holds it back.
    fn count(
        &mut self,
        app_id: &str,
        app: &AppHub,
        channel: &str,
        total: i64,
        clients: bool,
        except: Option<SocketId>,
    ) {
        if total <= 0 || channel.starts_with("presence-") || channel.starts_with('#') {
            return;
        }
        if !clients && !app.wants(WebhookKind::SubscriptionCount) {
            return;
        }
        let key = (Arc::<str>::from(app_id), Box::<str>::from(channel));
        if total <= COUNT_THROTTLE_ABOVE {
            self.throttled.remove(&key);
        } else {
            let now = Instant::now();
            match self.throttled.get_mut(&key) {
                Some(entry) if now < entry.last + COUNT_INTERVAL => {
                    entry.held = Some((total, clients));
                    return;
                }
                Some(entry) => {
                    *entry = Throttled {
                        last: now,
                        held: None,
                    }
                }
                None => {
                    self.throttled.insert(
                        key,
                        Throttled {
                            last: now,
                            held: None,
                        },
                    );
                }
            }
        }
        self.send_count(app_id, app, channel, total, clients, except);
    }

    /// Sends the counts the throttle held back whose interval has passed.
    fn flush_counts(&mut self) {
        let now = Instant::now();
        let due: Vec<(ChannelKey, i64, bool)> = self
            .throttled
            .iter_mut()
            .filter(|(_, entry)| entry.held.is_some() && now >= entry.last + COUNT_INTERVAL)
            .filter_map(|(key, entry)| {
                let (total, clients) = entry.held.take()?;
                entry.last = now;
                Some((key.clone(), total, clients))
            })
            .collect();
        for ((app_id, channel), total, clients) in due {
            let app = self.app(&app_id);
            self.send_count(&app_id, &app, &channel, total, clients, None);
        }
    }

    fn send_count(
        &self,
        app_id: &str,
        app: &AppHub,
        channel: &str,
        total: i64,
        clients: bool,
        except: Option<SocketId>,
    ) {
        let total = usize::try_from(total).unwrap_or(0);
        if clients {
            let frame = server::subscription_count(channel, total);
            self.send(app_id, Some(app), channel, &frame, except);
        }
        app.emit(WebhookKind::SubscriptionCount, || {
            WebhookEvent::count(channel, total)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::ClusterSettings;

    #[tokio::test]
    async fn the_state_queue_is_bounded_and_an_overflow_asks_for_a_resync() {
        // Nothing listens on port 1 and no task takes from the queue.
        let settings = ClusterSettings::new("redis://127.0.0.1:1/", "state-test");
        let cluster = Cluster::connect(settings, Clock::manual(0))
            .await
            .expect("starts degraded");
        let resync = || cluster.inner.state.resync.load(Ordering::Acquire);
        for _ in 0..STATE_QUEUE {
            cluster.leave("1", "c", Some("u"), false);
        }
        assert!(!resync(), "{STATE_QUEUE} leaves fit");
        cluster.leave("1", "c", Some("u"), false);
        assert!(
            resync(),
            "past the bound a change is dropped and the node resyncs later"
        );
        // A subscribe does not wait for a full queue: it is decided locally at once.
        let started = Instant::now();
        let answer = cluster
            .join("1", "c", None, None, SocketId::new(1, 1), false)
            .await;
        assert!(answer.is_err());
        assert!(started.elapsed() < slots::ADMIT_TIMEOUT);
    }
}
