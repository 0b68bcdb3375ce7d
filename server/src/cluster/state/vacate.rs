//! The vacate delay, cluster-wide. On one node the webhook writer holds `channel_vacated` and
//! `member_removed` for the vacate delay and a comeback cancels them; in a cluster the comeback
//! may happen on another node, so the delay is kept in Redis: the scripts that vacate a channel
//! or remove a member (a leave, a dead node's cleanup, a re-registration) record the pending
//! webhook in `P:st:vacating:{app}` (due by Redis's clock), and those that bring the channel or
//! member back (a join, a re-registration) remove it and report no webhook. The frames to
//! clients are not delayed; the webhook writer, told that the cluster delays these events
//! ([`crate::config::WebhookSettings::delayed_upstream`]), writes them due at once.
//!
//! Every [`SWEEP_EVERY`] each node runs, in a task of its own (a slow Redis holds none of the
//! state changes), a script that leases the due entries still vacant to it for [`LEASE`]
//! (atomically: one node at a time; moved to `P:st:vacate-lease:{app}`, a new key, scored with
//! the lease's end). The node reports their webhooks to the writer, queues a mark after them
//! and waits (at most [`CONFIRM_WITHIN`]) until the writer has written everything before the
//! mark to the outbox; then a second script removes each entry it still holds the lease of. A
//! writer slower than that (its store is down) keeps the mark outstanding: the node takes no
//! new leases meanwhile, renews the ones it holds at each sweep (only those still its own), and
//! confirms them when the mark is done; so an outage writes each webhook once. A node that
//! dies, or loses the script's answer, or whose writer refused or abandoned the events,
//! confirms nothing: the lease runs out and any node takes the entry again. So a webhook is
//! fired at least once: twice only when its write and its confirmation are separated by a
//! crash, a lost answer or a lease that ran out (the second comes from the node that took the
//! entry after the lease). A failed sweep is only logged: the next one tries again, and the
//! node's state needs no re-registration for it.
//!
//! Fairness: `P:st:vacating-apps` is a ZSET of the apps with pending or leased vacates, scored
//! by each app's earliest due time; a run takes the [`APPS_PER_RUN`] apps due first, at most
//! [`DUE_PER_APP`] entries each, and scores each app again (so an app with many due entries
//! does not hold back the others: it goes behind them); a run that left some due runs again
//! at once, [`RUNS_PER_SWEEP`] times at most.
//!
//! Bound: one entry per channel or member vacated within the last delay (a join removes its
//! own) or leased within the last lease, at most [`PENDING_PER_APP`] pending per app (over it, a
//! vacate's webhook is fired at once, undelayed). An app that wants neither `channel_vacated`
//! nor `member_removed` records nothing. Every key expires 10 minutes after its last entry.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::super::{Inner, Local, COMMAND_TIMEOUT};
use super::answers::{int, list, text};
use super::{prefix, state_scripts};
use crate::hub::Hub;
use crate::protocol::{WebhookEvent, WebhookKind};

/// How often the due pending vacates are looked at.
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Due entries taken per app and run at most (the rest at the next run, after the other apps).
const DUE_PER_APP: usize = 100;

/// Apps with due vacates looked at per run at most (those due first).
const APPS_PER_RUN: usize = 100;

/// Runs per sweep at most (a run that left due entries is followed at once by another).
const RUNS_PER_SWEEP: usize = 10;

/// Pending vacates per app at most (`P:st:vacating:{app}`; the scripts' Lua says 10000): over
/// it, a vacate's webhook is fired at once, without the delay.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) const PENDING_PER_APP: usize = 10_000;

/// How long a taken entry is the taker's: unconfirmed after it, any node takes it again.
pub(super) const LEASE: Duration = Duration::from_secs(10);

/// How long a sweep waits for the writer to have written its webhooks before it renews their
/// leases (well within [`LEASE`], so they are renewed before they run out).
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// The vacates one run leased: the lease's end (Redis's clock, ms), whether more were due
/// than it took, and `(app, entry)`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Leased {
    pub(super) ends: i64,
    pub(super) more: bool,
    pub(super) entries: Vec<(String, String)>,
}

/// Reads [`state_scripts::VACATE_DUE`]'s answer.
pub(super) fn leased(answer: Value) -> Leased {
    let mut answer = list(answer).into_iter();
    let ends = answer.next().map_or(0, |v| int(&v));
    let more = answer.next().is_some_and(|v| int(&v) == 1);
    Leased {
        ends,
        more,
        entries: pairs(answer),
    }
}

/// Reads [`state_scripts::VACATE_RENEW`]'s answer: the new lease end and the entries renewed.
pub(super) fn renewed(answer: Value) -> (i64, Vec<(String, String)>) {
    let mut answer = list(answer).into_iter();
    let ends = answer.next().map_or(0, |v| int(&v));
    (ends, pairs(answer))
}

/// `app, entry` pairs.
fn pairs(flat: impl Iterator<Item = Value>) -> Vec<(String, String)> {
    let flat: Vec<String> = flat.map(text).collect();
    flat.chunks(2)
        .filter_map(|pair| match pair {
            [app, entry] => Some((app.clone(), entry.clone())),
            _ => None,
        })
        .collect()
}

/// Reports an entry's webhook to the writer: `Ok(true)` queued, `Ok(false)` nobody wants it.
fn report(hub: &Hub, app_id: &str, entry: &str) -> Result<bool, crate::hub::NotSent> {
    match entry.split_once('\n') {
        Some((channel, user)) => hub.report(app_id, WebhookKind::MemberRemoved, || {
            WebhookEvent::member(WebhookKind::MemberRemoved, channel, user)
        }),
        None => hub.report(app_id, WebhookKind::ChannelVacated, || {
            WebhookEvent::channel(WebhookKind::ChannelVacated, entry)
        }),
    }
}

/// Sweeps the due pending vacates every [`SWEEP_EVERY`] until `stop` (a sweep under way
/// finishes first: its webhooks are confirmed, not fired twice).
pub(in crate::cluster) async fn vacate_loop(
    inner: Arc<Inner>,
    local: Arc<dyn Local>,
    stop: CancellationToken,
) {
    if local.vacate_delay().is_zero() {
        return;
    }
    let mut sweeper = Sweeper::new(&inner.settings.name, LEASE, CONFIRM_WITHIN);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(failure) = sweeper.sweep(&inner, local.hub()).await {
            tracing::debug!(
                failure,
                "the pending vacates sweep failed; the next one retries"
            );
        }
    }
}

/// Leased vacates whose webhooks are queued, the writer not having confirmed them yet.
struct Outstanding {
    ends: i64,
    entries: Vec<(String, String)>,
    mark: oneshot::Receiver<()>,
}

/// The sweep's scripts, settings and the mark it waits for.
pub(super) struct Sweeper {
    prefix: String,
    due: redis::Script,
    ack: redis::Script,
    renew: redis::Script,
    lease: Duration,
    confirm_within: Duration,
    outstanding: Option<Outstanding>,
}

impl Sweeper {
    /// Sweeps cluster `name`'s pending vacates, leasing them for `lease` and renewing them
    /// when the writer has not confirmed them within `confirm_within`.
    pub(super) fn new(name: &str, lease: Duration, confirm_within: Duration) -> Sweeper {
        Sweeper {
            prefix: prefix(name),
            due: redis::Script::new(state_scripts::VACATE_DUE),
            ack: redis::Script::new(state_scripts::VACATE_ACK),
            renew: redis::Script::new(state_scripts::VACATE_RENEW),
            lease,
            confirm_within,
            outstanding: None,
        }
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// One sweep: confirms (or renews) what an earlier sweep's writer has not confirmed yet;
    /// with nothing outstanding, runs (lease, report, wait for the writer, confirm) until
    /// nothing more is due ([`RUNS_PER_SWEEP`] at most). Answers how many it confirmed.
    pub(super) async fn sweep(&mut self, inner: &Inner, hub: &Hub) -> Result<usize, &'static str> {
        let mut conn = inner.manager.get();
        if let Some(waiting) = self.outstanding.take() {
            return self.settle(&mut conn, waiting).await;
        }
        let mut confirmed = 0;
        for _ in 0..RUNS_PER_SWEEP {
            let (done, more) = self.run(&mut conn, hub).await?;
            confirmed += done;
            if !more || self.outstanding.is_some() {
                break;
            }
        }
        Ok(confirmed)
    }

    /// Waits for an outstanding mark: confirms its vacates once it is done, renews their
    /// leases while it is not (at most [`CONFIRM_WITHIN`] per sweep), forgets them when the
    /// writer dropped it (they are fired again after their lease).
    async fn settle(
        &mut self,
        conn: &mut ConnectionManager,
        mut waiting: Outstanding,
    ) -> Result<usize, &'static str> {
        match tokio::time::timeout(self.confirm_within, &mut waiting.mark).await {
            Ok(Ok(())) => self.confirm(conn, waiting.ends, &waiting.entries).await,
            Ok(Err(_)) => {
                tracing::warn!(
                    vacates = waiting.entries.len(),
                    "vacate webhooks not written: fired again after their lease"
                );
                Ok(0)
            }
            Err(_) => {
                let mut invocation = self.renew.arg(&self.prefix);
                invocation.arg(waiting.ends).arg(self.lease_ms());
                for (app_id, entry) in &waiting.entries {
                    invocation.arg(app_id).arg(entry);
                }
                let call = invocation.invoke_async::<Value>(conn);
                let answer = tokio::time::timeout(COMMAND_TIMEOUT, call).await;
                let Ok(Ok(answer)) = answer else {
                    // Kept: confirmed later if the lease is still ours then.
                    self.outstanding = Some(waiting);
                    return Err("the lease renewal failed");
                };
                let (ends, entries) = renewed(answer);
                if !entries.is_empty() {
                    self.outstanding = Some(Outstanding {
                        ends,
                        entries,
                        mark: waiting.mark,
                    });
                }
                Ok(0)
            }
        }
    }

    /// One run: lease, report, wait for the writer, confirm. Answers how many it confirmed
    /// and whether more were due than it took.
    async fn run(
        &mut self,
        conn: &mut ConnectionManager,
        hub: &Hub,
    ) -> Result<(usize, bool), &'static str> {
        let mut invocation = self.due.arg(&self.prefix);
        invocation
            .arg(DUE_PER_APP)
            .arg(APPS_PER_RUN)
            .arg(self.lease_ms());
        let call = invocation.invoke_async::<Value>(conn);
        let taken = match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(answer)) => leased(answer),
            Ok(Err(_)) => return Err("the script failed"),
            Err(_) => return Err("Redis did not answer in time"),
        };
        if taken.entries.is_empty() {
            return Ok((0, taken.more));
        }
        let mut unwanted = Vec::new();
        let mut queued = Vec::new();
        for (app_id, entry) in taken.entries {
            match report(hub, &app_id, &entry) {
                Ok(true) => queued.push((app_id, entry)),
                Ok(false) => unwanted.push((app_id, entry)),
                // Left leased: taken again after the lease (the writer's queue is full, or gone).
                Err(_) => {}
            }
        }
        let mut confirmed = unwanted;
        if !queued.is_empty() {
            match hub.mark_reported() {
                None => confirmed.append(&mut queued),
                Some(Err(_)) => tracing::warn!(
                    vacates = queued.len(),
                    "vacate webhooks not confirmed written: fired again after their lease"
                ),
                Some(Ok(mut mark)) => {
                    match tokio::time::timeout(self.confirm_within, &mut mark).await {
                        Ok(Ok(())) => confirmed.append(&mut queued),
                        Ok(Err(_)) => tracing::warn!(
                            vacates = queued.len(),
                            "vacate webhooks not written: fired again after their lease"
                        ),
                        // The writer is behind: its leases are renewed until it is done.
                        Err(_) => {
                            self.outstanding = Some(Outstanding {
                                ends: taken.ends,
                                entries: queued,
                                mark,
                            });
                        }
                    }
                }
            }
        }
        let done = self.confirm(conn, taken.ends, &confirmed).await?;
        Ok((done, taken.more))
    }

    /// Removes the vacates leased until `ends` whose webhooks are written (or unwanted).
    async fn confirm(
        &self,
        conn: &mut ConnectionManager,
        ends: i64,
        confirmed: &[(String, String)],
    ) -> Result<usize, &'static str> {
        if confirmed.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.ack.arg(&self.prefix);
        invocation.arg(ends);
        for (app_id, entry) in confirmed {
            invocation.arg(app_id).arg(entry);
        }
        let call = invocation.invoke_async::<Value>(conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(removed)) => Ok(usize::try_from(int(&removed)).unwrap_or(0)),
            Ok(Err(_)) => Err("the confirmation failed (fired again after the lease)"),
            Err(_) => Err("the confirmation was not answered (fired again after the lease)"),
        }
    }
}
