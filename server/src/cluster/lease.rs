//! The daily message quota, cluster-wide, by leases; and the live node count the REST rate
//! limits are shared by.
//!
//! Redis holds, per app and UTC day (`{cluster}:daily:{app}:{day}`, the day as the usage
//! counters define it, from the node's [`Clock`](crate::clock::Clock)), the messages granted
//! to nodes plus the debts they reported. A node asks for a block of quota with [`SCRIPT`],
//! which never grants past the quota: the block is `remainder / (4 x live nodes)`, at least
//! what the waiting publish needs, at most [`MAX_BLOCK`], so it shrinks as the remainder
//! shrinks; all or nothing: a remainder smaller than the waiting publish's need is not
//! granted (the publish is refused and the remainder stays for smaller publishes, on any node). The block becomes the app's allowance on this node
//! ([`Allowance`](crate::tenants::Allowance), kept in its usage counter): everything the node
//! counts for the app comes off it (its admissions, and the deliveries, member events and
//! webhook requests it counts, of its own publishes and of those forwarded from other nodes).
//!
//! - A publish (REST or client event) is admitted only while the allowance covers its target
//!   channels, without a Redis round trip; when what is left falls under half the last block, a
//!   refill starts in the background, so the hot path rarely waits. An empty allowance makes a
//!   REST publish wait for a refill (at most [`REFILL_WAIT`]); a client event waits the same
//!   way through the session's deferral (`Pending::ClientEvent`: the socket's later frames
//!   wait behind it). Redis answering that it cannot cover a publish makes the node refuse at
//!   once, for [`EXHAUSTED_RECHECK`], the publishes needing more than what was left then,
//!   before asking again (another node may give quota back).
//! - Deliveries counted after an admission may take the allowance below zero: a debt, reported
//!   with the next refill or within a [`TICK`] by the lease task. Every node that counts for an
//!   app with a quota holds a lease for it, a node that only delivers other nodes' publishes
//!   too ([`count_delivered`]), so every copy reaches the day's count within a second.
//! - Admissions account for the copies before they are reported: each grant of `b` messages
//!   also reserves `b x s` for [`RESERVE_HOLD`], where `s` is the most subscriptions any one
//!   of the app's channels has cluster-wide (`{cluster}:st:occ:{app}`, read at most once a
//!   second), since a message to one channel makes at most `s` copies, on whatever nodes; the
//!   block is `remainder / (4 x live nodes x (1 + s))`, the remainder net of the live
//!   reservations; a reported debt turns reservations into counts. **The bound:** grants
//!   stop once counts plus reservations reach the quota, and only the last grant may pass it,
//!   by what the waiting publish needs, so the day's count passes the quota by at most one
//!   publish's deliveries, cluster-wide (its channels x `(1 + s)`; design.md allows one per
//!   node), plus the member events and webhooks counted after it (never refused, as on one
//!   node). It holds while no channel gained subscriptions in the last second (the cached
//!   `s`) and the delivering nodes report within [`RESERVE_HOLD`] (a later report is counted
//!   in full, past the bound; while Redis is unreachable the detached bound below applies).
//!   The price: an app with subscribers gets smaller blocks (more refills), and near the
//!   quota an app whose publishes make fewer copies than `s` per channel is refused until the
//!   reports replace the reservations (at most [`RESERVE_HOLD`]), then admitted again.
//! - The count starts a day at what the node knows (`Settlement::known`: the store's total as
//!   of its last flush plus its own unflushed counts and what it holds), and never below it,
//!   so a node restarted mid-day, an app given a quota mid-day or a Redis that lost its data
//!   do not start the day again (the leases outstanding when Redis lost its data are not in
//!   any node's view: the day may pass the quota by what was leased then). What is left is
//!   given back at shutdown and, for the past day, after midnight.
//! - Redis unreachable: the node admits what it holds plus its last known share of the
//!   remainder (`left / live nodes` as last answered; `(quota - today) / live nodes` for an
//!   app never asked), and refuses beyond it until Redis answers again; the debts are
//!   reported then (the day may pass the quota by what the nodes admitted from their shares
//!   meanwhile when the last answers were stale).
//! - Apps without a daily quota never touch Redis; an app's lease unused for [`IDLE_FORGET`]
//!   (its quota lifted, or no publishes) is given back and forgotten. The usage counters reach the usage history
//!   in PostgreSQL as on one node.
//!
//! The same task counts the live nodes every [`TICK`] (the heartbeats' node set) for the REST
//! rate limits: each node enforces `ceil(rate / live nodes)` of an app's rate
//! ([`RateLimits::set_nodes`](crate::hub::RateLimits::set_nodes)). No Redis round trip per
//! request; the price: a load balancer that spreads an app's requests unevenly gets refusals
//! before the app's rate is reached cluster-wide, a batch above one node's share (within the
//! app's rate) passes only on the node's full bucket, once a second (`hub::rate`),
//! and for a second after a node joins or leaves the shares follow the old count. Redis
//! unreachable: the last count stays.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::registry::tag_key;
use super::slots::nodes_key;
use super::{Cluster, Inner, Local};
use crate::locks::MutexExt;
use crate::tenants::{Allowance, AppUsage, Settlement};

/// The most a block may hold.
pub const MAX_BLOCK: u64 = 10_000;

/// How long a REST publish waits for a refill before it is refused.
pub const REFILL_WAIT: Duration = Duration::from_secs(2);

/// How long one lease script call may take before Redis counts as unreachable (then the node
/// admits from its share: a busy Redis should not be taken for a lost one too soon).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(1);

/// After Redis answered that nothing is left, publishes are refused without asking it for
/// this long.
pub const EXHAUSTED_RECHECK: Duration = Duration::from_secs(1);

/// How often the lease task reports debts, gives back past days and counts the live nodes.
pub const TICK: Duration = Duration::from_secs(1);

/// How long a grant's reserved copies count against the remainder: longer than a delivering
/// node takes to report its debt (every [`TICK`], plus a script call's [`SCRIPT_TIMEOUT`]).
pub const RESERVE_HOLD: Duration = Duration::from_secs(2);

/// How long a day's key lives (past its day, so late give-backs still find it).
const DAY_KEY_TTL: Duration = Duration::from_secs(2 * 86_400);

/// An app's lease not used for this long is given back and forgotten (its next publish asks
/// Redis again): an app whose quota was lifted, or that went quiet, costs Redis nothing.
pub const IDLE_FORGET: Duration = Duration::from_secs(60);

/// Live nodes assumed by a node that never reached Redis.
const UNKNOWN_NODES: u64 = 2;

/// Reports this node's `delta` to the day's count (`ARGV[5]`: a debt when positive, quota given
/// back when negative), raises the count to what the node knows (`ARGV[3]`), then grants a
/// block when `ARGV[6]` (what the node needs) is positive. What is left counts the
/// reservations of the last [`RESERVE_HOLD`] too: each grant of `b` reserves `b x subs`, the
/// copies its publishes may make at most (`subs`: the app's subscriptions cluster-wide, summed
/// from the state's `occ` hash `KEYS[3]` at most once a second, cached in `KEYS[4]`), in a key
/// per second (`ARGV[9]` prefix) that expires after the hold; a reported debt (the copies
/// counted, on any node) takes its part off the live reservations, as the reservation has
/// become a count. The block: `remainder / (4 x live nodes x (1 + subs))`, at least the need,
/// at most `ARGV[7]`; nothing when the remainder does not cover the need (all or nothing: a
/// part the waiting publish cannot use would sit on this node, unused, while the other nodes
/// are refused). KEYS: the day's key, the node set, the app's `occ` hash, the subscriptions
/// cache. ARGV: tag key prefix, this node's tag, known, quota, delta, need, cap, key TTL,
/// reservation key prefix, hold (seconds). Answers `{granted, left, live nodes}`.
const SCRIPT: &str = r"
local prefix, me = ARGV[1], ARGV[2]
local known, quota = tonumber(ARGV[3]), tonumber(ARGV[4])
local delta, need = tonumber(ARGV[5]), tonumber(ARGV[6])
local cap, ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local rprefix, hold = ARGV[9], tonumber(ARGV[10])
local nodes = 1
for _, node in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if node ~= me and redis.call('EXISTS', prefix .. node) == 1 then
    nodes = nodes + 1
  end
end
local now = tonumber(redis.call('TIME')[1])
local reserved = 0
local live = {}
for at = now - hold + 1, now do
  local n = tonumber(redis.call('GET', rprefix .. at) or '0')
  if n > 0 then
    reserved = reserved + n
    table.insert(live, {at, n})
  end
end
local used = tonumber(redis.call('GET', KEYS[1]) or '0') + delta
if delta > 0 then
  local rest = delta
  for _, r in ipairs(live) do
    if rest > 0 then
      local take = math.min(rest, r[2])
      redis.call('DECRBY', rprefix .. r[1], take)
      reserved = reserved - take
      rest = rest - take
    end
  end
end
if used < known then used = known end
if used < 0 then used = 0 end
local granted = 0
if need > 0 and used + reserved < quota and need <= quota - used - reserved then
  local subs = tonumber(redis.call('GET', KEYS[4]) or '-1')
  if subs < 0 then
    subs = 0
    for _, n in ipairs(redis.call('HVALS', KEYS[3])) do
      if tonumber(n) > subs then subs = tonumber(n) end
    end
    redis.call('SET', KEYS[4], subs, 'PX', 1000)
  end
  local remainder = quota - used - reserved
  granted = math.floor(remainder / (4 * nodes * (1 + subs)))
  if granted > cap then granted = cap end
  if granted < need then granted = need end
  used = used + granted
  local copies = granted * subs
  if copies > 0 then
    redis.call('INCRBY', rprefix .. now, copies)
    redis.call('EXPIRE', rprefix .. now, hold + 1)
    reserved = reserved + copies
  end
end
redis.call('SET', KEYS[1], used, 'EX', ttl)
local left = 0
if used + reserved < quota then left = quota - used - reserved end
return {granted, left, nodes}
";

/// Counts the live members of the node set (`KEYS[1]`; live: their tag key, prefix `ARGV[1]`,
/// exists).
const COUNT_NODES: &str = r"
local nodes = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. node) == 1 then nodes = nodes + 1 end
end
return nodes
";

/// The Redis key of app `app_id`'s daily count for day `day`.
pub fn daily_key(cluster: &str, app_id: &str, day: i64) -> String {
    format!("{cluster}:daily:{app_id}:{day}")
}

/// The block [`SCRIPT`] grants for an app with `subs` subscriptions cluster-wide (the same
/// arithmetic, for the unit tests and the docs; `remainder` is net of the live reservations).
pub fn block(remainder: u64, nodes: u64, subs: u64, need: u64, cap: u64) -> u64 {
    if need > remainder {
        return 0;
    }
    let per = 4u64
        .saturating_mul(nodes.max(1))
        .saturating_mul(subs.saturating_add(1));
    (remainder / per).min(cap).max(need)
}

/// Under this allowance (after an admission) a refill starts in the background: half the
/// last block, at least one.
pub fn low_mark(last_block: u64) -> i64 {
    i64::try_from((last_block / 2).max(1)).unwrap_or(i64::MAX)
}

/// What a node may admit past its allowance while Redis cannot be reached: an even part of the
/// remainder as last answered, or of what its own count leaves of the quota when it never
/// asked.
pub fn detached_share(last: Option<(u64, u64)>, quota: u64, today: u64, nodes: u64) -> u64 {
    match last {
        Some((left, nodes)) => left / nodes.max(1),
        None => quota.saturating_sub(today) / nodes.max(1),
    }
}

/// Redis's last answer for an app.
#[derive(Debug, Clone, Copy)]
struct Answer {
    day: i64,
    granted: u64,
    left: u64,
    nodes: u64,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// The last answer that granted something (its block sets the low mark).
    last_block: u64,
    last: Option<Answer>,
    /// Redis could not cover a publish at that instant: (day, instant, what was left); a
    /// publish needing more than that is refused without asking again for
    /// [`EXHAUSTED_RECHECK`].
    exhausted: Option<(i64, Instant, u64)>,
    /// While detached: (detachment, how far below zero the allowance may go).
    overdraft: Option<(u64, u64)>,
}

/// One app's lease on this node.
#[derive(Debug)]
struct AppLease {
    app_id: Box<str>,
    usage: Arc<AppUsage>,
    /// The quota last seen with a publish (background refills use it).
    quota: AtomicU64,
    /// One Redis call at a time per app: waiting publishes line up behind the refill in
    /// flight and find its grant.
    turn: tokio::sync::Mutex<()>,
    /// A background refill is queued or running.
    refilling: AtomicBool,
    /// When a publish last used the lease (Unix ms, the node's clock).
    used_at: AtomicI64,
    state: Mutex<LeaseState>,
}

/// This node's leases of the apps' daily quotas (part of the cluster's state).
#[derive(Debug)]
pub(super) struct Leases {
    script: redis::Script,
    count_nodes: redis::Script,
    manager: super::conn::Conn,
    /// One entry per app with a daily quota that published through this node in the last
    /// [`IDLE_FORGET`] (the lease task drops the others, and those of deleted apps): bounded
    /// by the apps publishing, themselves bounded by the store.
    apps: Mutex<HashMap<Box<str>, Arc<AppLease>>>,
    /// Redis did not answer: admissions use the shares until the lease task reaches it.
    detached: AtomicBool,
    /// Bumped at each detachment (the shares are computed once per detachment).
    epoch: AtomicU64,
    /// Live nodes as Redis last answered (0: never).
    nodes: AtomicU64,
}

impl Leases {
    pub(super) fn new(manager: super::conn::Conn) -> Leases {
        Leases {
            script: redis::Script::new(SCRIPT),
            count_nodes: redis::Script::new(COUNT_NODES),
            manager,
            apps: Mutex::default(),
            detached: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            nodes: AtomicU64::new(0),
        }
    }

    fn app(&self, app_id: &str, usage: &Arc<AppUsage>, quota: u64) -> Arc<AppLease> {
        let mut apps = self.apps.lock_or_recover();
        if let Some(lease) = apps.get(app_id) {
            if Arc::ptr_eq(&lease.usage, usage) {
                lease.quota.store(quota, Ordering::Relaxed);
                return lease.clone();
            }
        }
        let lease = Arc::new(AppLease {
            app_id: app_id.into(),
            usage: usage.clone(),
            quota: AtomicU64::new(quota),
            turn: tokio::sync::Mutex::new(()),
            refilling: AtomicBool::new(false),
            used_at: AtomicI64::new(i64::MAX),
            state: Mutex::default(),
        });
        apps.insert(app_id.into(), lease.clone());
        lease
    }

    fn detach(&self) {
        if !self.detached.swap(true, Ordering::SeqCst) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(
                "daily quotas: admitting from the leases and shares until Redis answers"
            );
        }
    }

    fn known_nodes(&self) -> u64 {
        match self.nodes.load(Ordering::Relaxed) {
            0 => UNKNOWN_NODES,
            nodes => nodes,
        }
    }
}

/// A publish asked for daily quota without waiting ([`Cluster::daily_now`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daily {
    /// Admitted and counted.
    Admitted,
    /// Over the daily quota (cluster-wide, or this node's share while Redis is unreachable).
    Refused,
    /// This node's allowance does not cover it: a refill has started.
    Short,
}

impl Cluster {
    /// Admits a publish to `channels` channels under the app's daily `quota` (`None`: counted,
    /// no Redis) from this node's lease, without waiting; see [`Daily`].
    pub fn daily_now(
        &self,
        app_id: &str,
        usage: &Arc<AppUsage>,
        quota: Option<u64>,
        channels: u64,
    ) -> Daily {
        self.try_daily(app_id, usage, quota, channels, true)
    }

    fn try_daily(
        &self,
        app_id: &str,
        usage: &Arc<AppUsage>,
        quota: Option<u64>,
        channels: u64,
        refill_when_short: bool,
    ) -> Daily {
        let Some(quota) = quota else {
            usage.count_published(channels);
            return Daily::Admitted;
        };
        let leases = &self.inner.leases;
        let lease = leases.app(app_id, usage, quota);
        let now = self.inner.clock.now_millis();
        lease.used_at.store(now, Ordering::Relaxed);
        let day = now.div_euclid(86_400_000);
        let detached = leases.detached.load(Ordering::SeqCst);
        let overdraft = if detached {
            overdraft(leases, &lease, quota, day)
        } else {
            0
        };
        if let Some(balance) = usage.try_publish_allowed(channels, overdraft) {
            if !detached && is_low(&lease, balance, day) {
                self.refill_in_background(&lease, 0);
            }
            return Daily::Admitted;
        }
        if detached {
            return Daily::Refused;
        }
        let have = u64::try_from(usage.allowance().max(0)).unwrap_or(0);
        if exhausted(&lease, day, channels.saturating_sub(have)) {
            return Daily::Refused;
        }
        if refill_when_short {
            self.refill_in_background(&lease, channels);
        }
        Daily::Short
    }

    /// Admits a publish to `channels` channels under the app's daily `quota`: from this node's
    /// lease, or after a refill (waited for, at most [`REFILL_WAIT`]). `false`: over the quota.
    pub async fn admit_daily(
        &self,
        app_id: &str,
        usage: &Arc<AppUsage>,
        quota: Option<u64>,
        channels: u64,
    ) -> bool {
        let deadline = Instant::now() + REFILL_WAIT;
        loop {
            match self.try_daily(app_id, usage, quota, channels, false) {
                Daily::Admitted => return true,
                Daily::Refused => return false,
                Daily::Short => {}
            }
            let Some(quota) = quota else { return true };
            let lease = self.inner.leases.app(app_id, usage, quota);
            if tokio::time::timeout_at(deadline, refill(&self.inner, &lease, channels))
                .await
                .is_err()
            {
                return false;
            }
        }
    }

    /// Starts a refill of `lease` (`need`: what a publish waits for; 0 to top it up) unless one
    /// is queued already.
    fn refill_in_background(&self, lease: &Arc<AppLease>, need: u64) {
        if lease.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        let lease = lease.clone();
        tokio::spawn(async move {
            refill(&inner, &lease, need).await;
            lease.refilling.store(false, Ordering::SeqCst);
        });
    }
}

/// Counts `copies` delivered on this node for app `app_id` (another node's publish, or a
/// member event decided here). For an app with a daily quota the node holds a lease even if it
/// never publishes for the app, so the copies come off its allowance and the debt is reported
/// within a [`TICK`] (the reservations of the publishing node's grants cover them meanwhile).
pub(super) fn count_delivered(inner: &Inner, local: &dyn Local, app_id: &str, copies: u64) {
    let usage = local.usage().app(app_id);
    if let Some(quota) = local.daily_quota(app_id) {
        let lease = inner.leases.app(app_id, &usage, quota);
        lease
            .used_at
            .store(inner.clock.now_millis(), Ordering::Relaxed);
        usage.hold_allowance();
    }
    usage.count(copies);
}

fn is_low(lease: &AppLease, balance: i64, day: i64) -> bool {
    let state = lease.state.lock_or_recover();
    let more = state.last.is_some_and(|a| a.day == day && a.left > 0);
    more && balance < low_mark(state.last_block)
}

/// Redis answered lately that it cannot cover `want` more today.
fn exhausted(lease: &AppLease, day: i64, want: u64) -> bool {
    let state = lease.state.lock_or_recover();
    state.exhausted.is_some_and(|(at_day, at, left)| {
        at_day == day && want > left && at.elapsed() < EXHAUSTED_RECHECK
    })
}

fn overdraft(leases: &Leases, lease: &AppLease, quota: u64, day: i64) -> u64 {
    let epoch = leases.epoch.load(Ordering::SeqCst);
    let mut state = lease.state.lock_or_recover();
    if let Some((at, share)) = state.overdraft {
        if at == epoch {
            return share;
        }
    }
    let last = state
        .last
        .filter(|a| a.day == day)
        .map(|a| (a.left, a.nodes));
    let today = lease.usage.messages_today();
    let share = detached_share(last, quota, today, leases.known_nodes());
    state.overdraft = Some((epoch, share));
    share
}

/// One call of [`SCRIPT`] for app `app_id`'s day `day`.
async fn call(
    inner: &Inner,
    app_id: &str,
    day: i64,
    known: u64,
    quota: u64,
    delta: i64,
    need: u64,
) -> Result<Answer, String> {
    let name = &inner.settings.name;
    let prefix = tag_key(name, 0);
    let prefix = prefix.strip_suffix('0').unwrap_or(&prefix);
    let mut conn = inner.leases.manager.get();
    let call = async {
        inner
            .leases
            .script
            .key(daily_key(name, app_id, day))
            .key(nodes_key(name))
            .key(format!("{name}:st:occ:{app_id}"))
            .key(format!("{name}:daily:subs:{app_id}"))
            .arg(prefix)
            .arg(inner.tag)
            .arg(known)
            .arg(quota)
            .arg(delta)
            .arg(need)
            .arg(MAX_BLOCK)
            .arg(DAY_KEY_TTL.as_secs())
            .arg(format!("{}:res:", daily_key(name, app_id, day)))
            .arg(RESERVE_HOLD.as_secs())
            .invoke_async::<(u64, u64, u64)>(&mut conn)
            .await
    };
    match tokio::time::timeout(SCRIPT_TIMEOUT, call).await {
        Ok(Ok((granted, left, nodes))) => {
            inner.leases.nodes.store(nodes, Ordering::Relaxed);
            Ok(Answer {
                day,
                granted,
                left,
                nodes,
            })
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Gives back (or reports the debt of) an allowance no longer used: a past day's, an idle
/// app's, or any at shutdown, with what the node knows of that day's count (today's; nothing
/// for a past day, whose count the node no longer keeps), so a Redis that lost its data does
/// not restart the day's count from the give-back alone. `false` when Redis did not take it:
/// the caller keeps it (a debt must still be reported).
async fn give_back(inner: &Inner, lease: &AppLease, allowance: Allowance) -> bool {
    if allowance.balance == 0 {
        return true;
    }
    let known = if allowance.day == inner.clock.day() {
        lease.usage.messages_today()
    } else {
        0
    };
    let delta = -allowance.balance;
    match call(inner, &lease.app_id, allowance.day, known, 0, delta, 0).await {
        Ok(_) => true,
        Err(reason) => {
            tracing::debug!(app_id = %lease.app_id, %reason, "daily quota: a give-back failed");
            false
        }
    }
}

/// Gives back `allowances`; those Redis did not take are held again by the app's counter.
/// `false` when one failed.
async fn give_back_or_keep(inner: &Inner, lease: &AppLease, allowances: Vec<Allowance>) -> bool {
    let mut all = true;
    for allowance in allowances {
        if !give_back(inner, lease, allowance).await {
            lease.usage.keep_allowance(allowance);
            all = false;
        }
    }
    all
}

/// Reports `settlement` and asks for `need` more (0: only report); notes the answer. `false`
/// when Redis did not answer (the debt goes back to the allowance, the node detaches).
async fn settle(inner: &Inner, lease: &AppLease, settlement: Settlement, need: u64) -> bool {
    give_back_or_keep(inner, lease, settlement.stale.clone()).await;
    let quota = lease.quota.load(Ordering::Relaxed);
    let delta = i64::try_from(settlement.debt).unwrap_or(i64::MAX);
    let day = settlement.day;
    match call(
        inner,
        &lease.app_id,
        day,
        settlement.known,
        quota,
        delta,
        need,
    )
    .await
    {
        Ok(answer) => {
            let back = lease.usage.grant(day, answer.granted);
            if back > 0 {
                let balance = i64::try_from(back).unwrap_or(i64::MAX);
                give_back_or_keep(inner, lease, vec![Allowance { day, balance }]).await;
            }
            let mut state = lease.state.lock_or_recover();
            if answer.granted > 0 {
                state.last_block = answer.granted;
            }
            state.last = Some(answer);
            state.exhausted =
                (need > 0 && answer.granted < need).then(|| (day, Instant::now(), answer.left));
            true
        }
        Err(reason) => {
            tracing::warn!(app_id = %lease.app_id, %reason, "daily quota: Redis did not answer");
            lease.usage.unsettle(&settlement);
            inner.leases.detach();
            false
        }
    }
}

/// Asks Redis for more of `lease`'s quota: enough for `need` channels, or a block when `need`
/// is 0 (a top-up); unless the refill before this one already covered it.
async fn refill(inner: &Inner, lease: &AppLease, need: u64) {
    let _turn = lease.turn.lock().await;
    if inner.leases.detached.load(Ordering::SeqCst) {
        return;
    }
    let have = lease.usage.allowance();
    let day = inner.clock.day();
    let covered = if need > 0 {
        have >= i64::try_from(need).unwrap_or(i64::MAX)
    } else {
        !is_low(lease, have, day)
    };
    if covered {
        return;
    }
    let want = need
        .saturating_sub(u64::try_from(have.max(0)).unwrap_or(0))
        .max(1);
    let settlement = lease.usage.settle();
    settle(inner, lease, settlement, want).await;
}

/// Counts the live nodes and hands the count to the REST rate limits.
async fn count_nodes(inner: &Inner, local: &dyn Local) -> bool {
    let name = &inner.settings.name;
    let prefix = tag_key(name, 0);
    let prefix = prefix.strip_suffix('0').unwrap_or(&prefix);
    let mut conn = inner.leases.manager.get();
    let mut invocation = inner.leases.count_nodes.key(nodes_key(name));
    invocation.arg(prefix);
    let call = invocation.invoke_async::<u64>(&mut conn);
    match tokio::time::timeout(SCRIPT_TIMEOUT, call).await {
        Ok(Ok(nodes)) => {
            let nodes = nodes.max(1);
            inner.leases.nodes.store(nodes, Ordering::Relaxed);
            local
                .rates()
                .set_nodes(u32::try_from(nodes).unwrap_or(u32::MAX));
            true
        }
        _ => false,
    }
}

/// The lease task, every [`TICK`] until aborted: counts the live nodes (REST rate shares),
/// reports the apps' debts, gives back past days' allowances, forgets deleted apps and gives
/// back the leases of apps idle for [`IDLE_FORGET`], and
/// attaches again once Redis answers all of it.
pub(super) async fn lease_loop(inner: Arc<Inner>, local: Arc<dyn Local>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut answered = count_nodes(&inner, local.as_ref()).await;
        let idle_since =
            inner.clock.now_millis() - i64::try_from(IDLE_FORGET.as_millis()).unwrap_or(i64::MAX);
        let mut idle = Vec::new();
        // While detached nothing is forgotten: its give-back would fail, and the debt with it.
        let detached = inner.leases.detached.load(Ordering::SeqCst);
        let apps: Vec<Arc<AppLease>> = {
            let mut apps = inner.leases.apps.lock_or_recover();
            apps.retain(|app_id, lease| {
                let keep = local.usage().contains(app_id)
                    && (detached || lease.used_at.load(Ordering::Relaxed) > idle_since);
                if !keep {
                    idle.push(lease.clone());
                }
                keep
            });
            apps.values().cloned().collect()
        };
        for lease in idle {
            let allowances = lease.usage.end_allowance();
            if !give_back_or_keep(&inner, &lease, allowances).await {
                // Held again: the lease stays until its give-back goes through (its counter
                // collects the app's counts meanwhile, a debt reported with the rest).
                answered = false;
                if local.usage().contains(&lease.app_id) {
                    let mut apps = inner.leases.apps.lock_or_recover();
                    apps.entry(lease.app_id.clone()).or_insert(lease);
                }
            }
        }
        for lease in apps {
            if !answered {
                break;
            }
            let _turn = lease.turn.lock().await;
            let settlement = lease.usage.settle();
            if settlement.debt == 0 && settlement.stale.is_empty() && !detached {
                continue;
            }
            answered = settle(&inner, &lease, settlement, 0).await;
        }
        if answered && detached {
            for lease in inner.leases.apps.lock_or_recover().values() {
                lease.state.lock_or_recover().overdraft = None;
            }
            inner.leases.detached.store(false, Ordering::SeqCst);
            tracing::info!("daily quotas: Redis answers again, leases resumed");
        } else if !answered {
            inner.leases.detach();
        }
    }
}

/// At shutdown: gives back what every app's allowance holds (and reports its debts), until
/// `deadline`.
pub(super) async fn give_back_all(inner: &Inner, deadline: Instant) {
    let apps: Vec<Arc<AppLease>> = inner
        .leases
        .apps
        .lock_or_recover()
        .values()
        .cloned()
        .collect();
    let work = async {
        for lease in apps {
            for allowance in lease.usage.take_allowances() {
                give_back(inner, &lease, allowance).await;
            }
        }
    };
    if tokio::time::timeout_at(deadline, work).await.is_err() {
        tracing::warn!("daily quota: some leases were not given back at shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_shrink_with_the_remainder_and_never_pass_it() {
        // Far from the quota: a quarter of an even part, capped.
        assert_eq!(block(1_200, 3, 0, 1, MAX_BLOCK), 100);
        assert_eq!(block(10_000_000, 1, 0, 1, MAX_BLOCK), MAX_BLOCK);
        // Shrinking with the remainder, down to what the publish needs.
        assert_eq!(block(120, 3, 0, 1, MAX_BLOCK), 10);
        assert_eq!(block(11, 3, 0, 1, MAX_BLOCK), 1);
        assert_eq!(block(11, 3, 0, 5, MAX_BLOCK), 5);
        // Shrinking with the copies each message may make: quota 1,000,000, 3 nodes, 10,000
        // subscriptions: 8 messages (80,008 with their copies) where it was 10,000.
        assert_eq!(block(1_000_000, 3, 10_000, 1, MAX_BLOCK), 8);
        assert_eq!(block(1_000, 3, 10_000, 1, MAX_BLOCK), 1);
        // All or nothing: a remainder that does not cover the publish is not handed out
        // (the publish is refused, the remainder stays for the others).
        assert_eq!(block(3, 3, 0, 5, MAX_BLOCK), 0);
        assert_eq!(block(5, 3, 0, 5, MAX_BLOCK), 5);
        assert_eq!(block(0, 3, 0, 1, MAX_BLOCK), 0);
        // A sequence of grants from one remainder adds up to it exactly, never more.
        let mut remainder = 1_000u64;
        let mut granted = 0;
        while remainder > 0 {
            let b = block(remainder, 3, 0, 1, MAX_BLOCK);
            assert!(b >= 1 && b <= remainder);
            granted += b;
            remainder -= b;
        }
        assert_eq!(granted, 1_000);
    }

    #[test]
    fn a_refill_starts_under_half_the_last_block() {
        assert_eq!(low_mark(100), 50);
        assert_eq!(low_mark(1), 1);
        assert_eq!(low_mark(0), 1);
    }

    #[test]
    fn the_share_while_detached_is_an_even_part_of_what_was_left() {
        // Last answer: 90 left, 3 nodes.
        assert_eq!(detached_share(Some((90, 3)), 1_000, 500, 2), 30);
        // Nothing left: nothing past the lease.
        assert_eq!(detached_share(Some((0, 3)), 1_000, 500, 2), 0);
        // Never asked: an even part of what its own count leaves.
        assert_eq!(detached_share(None, 1_000, 400, 2), 300);
        assert_eq!(detached_share(None, 1_000, 2_000, 2), 0);
    }
}
