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
//! node that dies, or loses the script's answer, or whose writer is behind or refused,
//! confirms nothing: the lease runs out and any node takes the entry again. So a webhook is
//! fired at least once: twice only when its write and its confirmation are separated by a
//! crash, a lost answer or a writer slower than [`CONFIRM_WITHIN`] (the second comes from the
//! node that took the entry after the lease). A failed sweep is only logged: the next one
//! tries again, and the node's state needs no re-registration for it.
//!
//! Bound: one entry per channel or member vacated within the last delay (a join removes its
//! own) or leased within the last lease; a sweep looks at [`APPS_PER_SWEEP`] apps and takes
//! [`DUE_PER_SWEEP`] entries at most, across all apps (the rest at the next sweep, on any node).

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::super::{Inner, Local, COMMAND_TIMEOUT};
use super::answers::{int, list, text};
use super::{prefix, state_scripts};
use crate::hub::Hub;
use crate::protocol::{WebhookEvent, WebhookKind};

/// How often the due pending vacates are looked at.
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Due entries taken per sweep at most, across all apps (the rest at the next sweep).
const DUE_PER_SWEEP: usize = 1_000;

/// Apps with pending vacates looked at per sweep at most (picked at random).
const APPS_PER_SWEEP: usize = 100;

/// How long a taken entry is the taker's: unconfirmed after it, any node takes it again.
pub(super) const LEASE: Duration = Duration::from_secs(10);

/// How long a sweep waits for the writer to have written its webhooks; confirming later could
/// come after the lease ran out (another node may have fired them again meanwhile).
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// The vacates one sweep leased: the lease's end (Redis's clock, ms) and `(app, entry)`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Leased {
    pub(super) ends: i64,
    pub(super) entries: Vec<(String, String)>,
}

/// Reads [`state_scripts::VACATE_DUE`]'s answer.
pub(super) fn leased(answer: Value) -> Leased {
    let mut answer = list(answer).into_iter();
    let ends = answer.next().map_or(0, |v| int(&v));
    let flat: Vec<String> = answer.map(text).collect();
    let entries = flat
        .chunks(2)
        .filter_map(|pair| match pair {
            [app, entry] => Some((app.clone(), entry.clone())),
            _ => None,
        })
        .collect();
    Leased { ends, entries }
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
    let sweeper = Sweeper::new(&inner.settings.name, LEASE);
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

/// The sweep's scripts and settings.
pub(super) struct Sweeper {
    prefix: String,
    due: redis::Script,
    ack: redis::Script,
    lease: Duration,
}

impl Sweeper {
    /// Sweeps cluster `name`'s pending vacates, leasing them for `lease`.
    pub(super) fn new(name: &str, lease: Duration) -> Sweeper {
        Sweeper {
            prefix: prefix(name),
            due: redis::Script::new(state_scripts::VACATE_DUE),
            ack: redis::Script::new(state_scripts::VACATE_ACK),
            lease,
        }
    }

    /// One sweep: lease, report, wait for the writer, confirm; answers how many it confirmed.
    pub(super) async fn sweep(&self, inner: &Inner, hub: &Hub) -> Result<usize, &'static str> {
        let mut conn = inner.manager.get();
        let mut invocation = self.due.arg(&self.prefix);
        invocation
            .arg(DUE_PER_SWEEP)
            .arg(APPS_PER_SWEEP)
            .arg(u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX));
        let call = invocation.invoke_async::<Value>(&mut conn);
        let taken = match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(answer)) => leased(answer),
            Ok(Err(_)) => return Err("the script failed"),
            Err(_) => return Err("Redis did not answer in time"),
        };
        if taken.entries.is_empty() {
            return Ok(0);
        }
        let mut unwanted = Vec::new();
        let mut queued = Vec::new();
        for (app_id, entry) in &taken.entries {
            match report(hub, app_id, entry) {
                Ok(true) => queued.push((app_id, entry)),
                Ok(false) => unwanted.push((app_id, entry)),
                // Left leased: taken again after the lease (the writer's queue is full, or gone).
                Err(_) => {}
            }
        }
        let written = match hub.mark_reported() {
            None => true,
            Some(Err(_)) => false,
            Some(Ok(mark)) => {
                matches!(tokio::time::timeout(CONFIRM_WITHIN, mark).await, Ok(Ok(())))
            }
        };
        let mut confirmed = unwanted;
        if written {
            confirmed.extend(queued);
        } else if !queued.is_empty() {
            tracing::warn!(
                vacates = queued.len(),
                "vacate webhooks not confirmed written in time: fired again after their lease"
            );
        }
        if confirmed.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.ack.arg(&self.prefix);
        invocation.arg(taken.ends);
        for (app_id, entry) in confirmed {
            invocation.arg(app_id).arg(entry);
        }
        let call = invocation.invoke_async::<Value>(&mut conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(removed)) => Ok(usize::try_from(int(&removed)).unwrap_or(0)),
            Ok(Err(_)) => Err("the confirmation failed (fired again after the lease)"),
            Err(_) => Err("the confirmation was not answered (fired again after the lease)"),
        }
    }
}
