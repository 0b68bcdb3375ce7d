//! Usage accounting: per-app message counts and connection peaks, per UTC day and per minute.
//!
//! The hot paths only touch memory: [`AppUsage`] is a small mutex-guarded counter per app. A
//! background task ([`Usage::flush`], every few seconds and at shutdown) writes what was counted
//! since the last flush to the store as increments, then reads back the day's stored total, so
//! counts from other processes sharing the store are taken into account and a restart continues
//! from the stored count. A flush that fails keeps its counts for the next one: nothing counted
//! is dropped unless the process dies, which loses at most one flush interval.

use crate::locks::MutexExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError};
use crate::clock::{day_to_date, Clock};

/// How long per-minute rows are kept (25 hours, so the last 24 hours are always complete).
pub const MINUTES_KEPT: i64 = 25 * 60;
/// How many days the usage report covers.
pub const DAYS_REPORTED: i64 = 30;

/// App ids per query of [`Store::day_messages`] (SQLite allows 32,766 parameters; PostgreSQL
/// 65,535).
const DAY_MESSAGES_CHUNK: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delta {
    /// Day number or minute number.
    at: i64,
    messages: u64,
    peak: u64,
}

#[derive(Debug, Default)]
struct Counter {
    day: i64,
    /// The day's total in the store as of the last load or flush.
    stored: u64,
    /// Counted here and taken by a flush that has not finished.
    in_flight: u64,
    /// Counted here, not yet taken by a flush.
    pending: u64,
    day_peak: u64,
    written_day_peak: u64,
    connections: u64,
    minute: i64,
    minute_messages: u64,
    minute_peak: u64,
    written_minute_peak: u64,
    /// Finished days and minutes not yet written.
    closed_days: Vec<Delta>,
    closed_minutes: Vec<Delta>,
    /// Cluster mode, apps with a daily quota: this node's part of the quota (`None` otherwise,
    /// so a single node only pays an `Option` check per count).
    allowance: Option<Allowance>,
    /// Messages published (one per target channel) since the process started, for `/metrics`
    /// (never reset: a counter).
    published: u64,
    /// Everything else counted since the process started (copies delivered, member events,
    /// webhook requests), for `/metrics`.
    delivered: u64,
    /// Earlier days' allowances, still to be given back (or their debts reported), oldest
    /// first: a day may roll again before Redis took the last one (at most
    /// [`STALE_ALLOWANCES_KEPT`], past which the oldest is dropped: its day's key in Redis
    /// expires within two days anyway).
    stale_allowances: Vec<Allowance>,
}

/// The most earlier days' allowances an app's counter keeps while they cannot be given back.
pub(super) const STALE_ALLOWANCES_KEPT: usize = 3;

/// Cluster mode: the part of an app's daily quota this node holds (`cluster::lease`): messages
/// granted to it for `day` and not counted yet. Everything the node counts for the day comes
/// off it, admissions and the deliveries, member events and webhooks counted after them, so it
/// goes below zero when those pass what was granted: a debt, reported with the next refill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// The day it was granted for.
    pub day: i64,
    /// Granted and not counted yet; negative: counted past the grants.
    pub balance: i64,
}

/// What a node reports to Redis before asking for more of the daily quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Today.
    pub day: i64,
    /// Counted today past the grants (taken off the allowance: it is reported now).
    pub debt: u64,
    /// What this node knows of today's count (the store's total as of the last flush, what is
    /// counted here and not flushed yet) plus what it still holds: the least the cluster's
    /// count can be.
    pub known: u64,
    /// Earlier days' allowances, to give back (or their debts to report).
    pub stale: Vec<Allowance>,
}

impl Counter {
    /// Moves to `day` and `minute` when they are later than the current ones (a clock stepped
    /// back keeps counting into the current day rather than starting it over).
    fn roll(&mut self, day: i64, minute: i64) {
        if minute > self.minute {
            if self.minute_messages > 0 || self.minute_peak > self.written_minute_peak {
                self.closed_minutes.push(Delta {
                    at: self.minute,
                    messages: self.minute_messages,
                    peak: self.minute_peak,
                });
            }
            self.minute = minute;
            self.minute_messages = 0;
            self.minute_peak = self.connections;
            self.written_minute_peak = 0;
        }
        if day > self.day {
            if self.pending > 0 || self.day_peak > self.written_day_peak {
                self.closed_days.push(Delta {
                    at: self.day,
                    messages: self.pending,
                    peak: self.day_peak,
                });
            }
            // The old day's allowance is given back by the lease task; today's starts empty, so
            // what is counted before the first grant is a debt reported with it.
            // An older one not given back yet is kept too (its debt must still be reported).
            if let Some(old) = self.allowance.take() {
                self.keep_stale(old);
                self.allowance = Some(Allowance { day, balance: 0 });
            }
            // A flush in flight for the old day finishes on its own; it no longer counts here.
            self.day = day;
            self.stored = 0;
            self.in_flight = 0;
            self.pending = 0;
            self.day_peak = self.connections;
            self.written_day_peak = 0;
        }
    }

    /// Keeps an earlier day's allowance to give back, merged with one of the same day.
    fn keep_stale(&mut self, old: Allowance) {
        if old.balance == 0 {
            return;
        }
        if let Some(same) = self.stale_allowances.iter_mut().find(|a| a.day == old.day) {
            same.balance = same.balance.saturating_add(old.balance);
            return;
        }
        self.stale_allowances.push(old);
        self.stale_allowances.sort_by_key(|a| a.day);
        if self.stale_allowances.len() > STALE_ALLOWANCES_KEPT {
            self.stale_allowances.remove(0);
        }
    }

    fn today(&self) -> u64 {
        self.stored
            .saturating_add(self.in_flight)
            .saturating_add(self.pending)
    }
}

/// One app's live counters.
#[derive(Debug)]
pub struct AppUsage {
    clock: Clock,
    state: Mutex<Counter>,
}

impl AppUsage {
    fn new(clock: Clock, stored_today: u64) -> AppUsage {
        let counter = Counter {
            day: clock.day(),
            minute: clock.minute(),
            stored: stored_today,
            ..Counter::default()
        };
        AppUsage {
            clock,
            state: Mutex::new(counter),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counter> {
        let mut state = self.state.lock_or_recover();
        state.roll(self.clock.day(), self.clock.minute());
        state
    }

    /// Messages counted today (UTC), across every process sharing the store as of the last flush.
    pub fn messages_today(&self) -> u64 {
        self.lock().today()
    }

    /// Today's messages counted here and not yet taken by a flush: what this node adds to the
    /// store's total in a cluster's count (`cluster::unflushed`). What a flush has taken is left
    /// out from the moment it is taken: in cluster mode the flush tells Redis so before it writes
    /// to the store ([`Usage::flush_then`]), so a count is never in both the store and this.
    pub fn unflushed(&self) -> u64 {
        self.lock().pending
    }

    /// Admits a publish to `channels` channels under a daily quota (`None`: unlimited) and counts
    /// those channels at once, in one critical section, so parallel publishes cannot all pass
    /// on the same count. The copies delivered are counted afterwards with [`AppUsage::count`].
    pub fn try_publish(&self, quota: Option<u64>, channels: u64) -> bool {
        let mut state = self.lock();
        if quota.is_some_and(|quota| state.today() >= quota) {
            return false;
        }
        state.pending = state.pending.saturating_add(channels);
        state.minute_messages = state.minute_messages.saturating_add(channels);
        state.published = state.published.saturating_add(channels);
        true
    }

    /// Messages published and messages delivered (everything else counted) since the process
    /// started.
    pub fn totals(&self) -> (u64, u64) {
        let state = self.state.lock_or_recover();
        (state.published, state.delivered)
    }

    /// [`AppUsage::count`] for a publish's target channels (admitted without a quota).
    pub fn count_published(&self, channels: u64) {
        self.add(channels, true);
    }

    /// Counts `messages` toward today's total.
    pub fn count(&self, messages: u64) {
        self.add(messages, false);
    }

    fn add(&self, messages: u64, published: bool) {
        if messages == 0 {
            return;
        }
        let mut state = self.lock();
        if published {
            state.published = state.published.saturating_add(messages);
        } else {
            state.delivered = state.delivered.saturating_add(messages);
        }
        state.pending = state.pending.saturating_add(messages);
        state.minute_messages = state.minute_messages.saturating_add(messages);
        if let Some(allowance) = state.allowance.as_mut() {
            allowance.balance = allowance
                .balance
                .saturating_sub(i64::try_from(messages).unwrap_or(i64::MAX));
        }
    }

    /// Cluster mode: admits a publish to `channels` channels from this node's allowance for
    /// today and counts them, in one critical section (as [`AppUsage::try_publish`]).
    /// `overdraft` is how far below zero the allowance may go for it (Redis unreachable: the
    /// node's last known share of the remainder). Returns the balance left, or `None` when the
    /// allowance does not cover the publish (nothing is counted).
    pub fn try_publish_allowed(&self, channels: u64, overdraft: u64) -> Option<i64> {
        let mut state = self.lock();
        let day = state.day;
        let allowance = state.allowance.get_or_insert(Allowance { day, balance: 0 });
        let channels_signed = i64::try_from(channels).unwrap_or(i64::MAX);
        let floor = i64::try_from(overdraft).unwrap_or(i64::MAX);
        if allowance.balance.saturating_add(floor) < channels_signed {
            return None;
        }
        allowance.balance -= channels_signed;
        let balance = allowance.balance;
        state.published = state.published.saturating_add(channels);
        state.pending = state.pending.saturating_add(channels);
        state.minute_messages = state.minute_messages.saturating_add(channels);
        Some(balance)
    }

    /// Cluster mode, an app with a daily quota: makes sure the node keeps an allowance for it
    /// (empty at first), so what it counts comes off it and is reported as a debt.
    pub fn hold_allowance(&self) {
        let mut state = self.lock();
        let day = state.day;
        state.allowance.get_or_insert(Allowance { day, balance: 0 });
    }

    /// Cluster mode: the allowance for today (0 when none was granted).
    pub fn allowance(&self) -> i64 {
        let state = self.lock();
        state
            .allowance
            .filter(|a| a.day == state.day)
            .map_or(0, |a| a.balance)
    }

    /// Cluster mode, before asking Redis for more: takes today's debt off the allowance (it is
    /// reported now) and an earlier day's allowance (to give back). See [`Settlement`].
    pub fn settle(&self) -> Settlement {
        let mut state = self.lock();
        let day = state.day;
        let allowance = state.allowance.get_or_insert(Allowance { day, balance: 0 });
        let debt = u64::try_from(-allowance.balance.min(0)).unwrap_or(0);
        allowance.balance = allowance.balance.max(0);
        let held = u64::try_from(allowance.balance).unwrap_or(0);
        Settlement {
            day,
            debt,
            known: state.today().saturating_add(held),
            stale: std::mem::take(&mut state.stale_allowances),
        }
    }

    /// Cluster mode: Redis did not take the debt of [`AppUsage::settle`]: it goes back.
    pub fn unsettle(&self, settlement: &Settlement) {
        let mut state = self.lock();
        if let Some(allowance) = state.allowance.as_mut().filter(|a| a.day == settlement.day) {
            allowance.balance = allowance
                .balance
                .saturating_sub(i64::try_from(settlement.debt).unwrap_or(i64::MAX));
        }
    }

    /// Cluster mode: Redis granted `granted` messages for `day`: added to the allowance while
    /// `day` is still today. Returns what must be given back (all of it once the day is over).
    pub fn grant(&self, day: i64, granted: u64) -> u64 {
        let mut state = self.lock();
        let today = state.day;
        match state.allowance.as_mut() {
            Some(allowance) if allowance.day == day && today == day => {
                allowance.balance = allowance
                    .balance
                    .saturating_add(i64::try_from(granted).unwrap_or(i64::MAX));
                0
            }
            _ => granted,
        }
    }

    /// Cluster mode, for an app no longer published through this node: ends the allowance
    /// (counts stop coming off it) and hands over what it and an earlier day's held, to give
    /// back and report.
    pub fn end_allowance(&self) -> Vec<Allowance> {
        let mut state = self.lock();
        let mut taken = std::mem::take(&mut state.stale_allowances);
        taken.extend(state.allowance.take());
        taken
    }

    /// Cluster mode: Redis did not take a give-back of `allowance`: it is held again (today's
    /// into today's allowance, an earlier day's with the others to give back), so its debt is
    /// reported, or its quota given back, by a later call.
    pub fn keep_allowance(&self, allowance: Allowance) {
        let mut state = self.lock();
        let today = state.day;
        match state.allowance.as_mut() {
            Some(current) if allowance.day == today && current.day == today => {
                current.balance = current.balance.saturating_add(allowance.balance);
            }
            None if allowance.day == today => state.allowance = Some(allowance),
            _ if allowance.day < today => state.keep_stale(allowance),
            // A later day than the counter's (a clock stepped back): nothing to merge into.
            _ => {}
        }
    }

    /// Cluster mode, at shutdown: takes every allowance held (today's and an earlier day's),
    /// to give back what is left and report the debts.
    pub fn take_allowances(&self) -> Vec<Allowance> {
        let mut state = self.lock();
        let mut taken = std::mem::take(&mut state.stale_allowances);
        if let Some(allowance) = state.allowance.as_mut() {
            taken.push(*allowance);
            allowance.balance = 0;
        }
        taken
    }

    /// A connection opened.
    pub fn connected(&self) {
        let mut state = self.lock();
        state.connections += 1;
        state.day_peak = state.day_peak.max(state.connections);
        state.minute_peak = state.minute_peak.max(state.connections);
    }

    /// A connection closed.
    pub fn disconnected(&self) {
        let mut state = self.lock();
        state.connections = state.connections.saturating_sub(1);
    }

    /// Connections open on this node.
    pub fn connections(&self) -> u64 {
        self.lock().connections
    }

    /// Takes what a flush must write.
    fn take(&self) -> Batch {
        let mut state = self.lock();
        let day_messages = std::mem::take(&mut state.pending);
        state.in_flight += day_messages;
        let mut days = std::mem::take(&mut state.closed_days);
        if day_messages > 0 || state.day_peak > state.written_day_peak {
            days.push(Delta {
                at: state.day,
                messages: day_messages,
                peak: state.day_peak,
            });
        }
        let mut minutes = std::mem::take(&mut state.closed_minutes);
        let minute_messages = std::mem::take(&mut state.minute_messages);
        if minute_messages > 0 || state.minute_peak > state.written_minute_peak {
            minutes.push(Delta {
                at: state.minute,
                messages: minute_messages,
                peak: state.minute_peak,
            });
        }
        Batch {
            day: state.day,
            day_messages,
            days,
            minutes,
        }
    }

    /// A flush wrote `batch`; the day's stored total is now `stored`.
    fn confirm(&self, batch: &Batch, stored: u64) {
        let mut state = self.lock();
        if state.day == batch.day {
            state.in_flight = state.in_flight.saturating_sub(batch.day_messages);
            state.stored = stored;
            if let Some(today) = batch.days.iter().find(|d| d.at == batch.day) {
                state.written_day_peak = state.written_day_peak.max(today.peak);
            }
        }
        if let Some(minute) = batch.minutes.iter().find(|m| m.at == state.minute) {
            state.written_minute_peak = state.written_minute_peak.max(minute.peak);
        }
    }

    /// A flush failed: its counts go back, to be written by the next one.
    fn restore(&self, batch: Batch) {
        let mut state = self.lock();
        let current_day = state.day;
        let current_minute = state.minute;
        for day in batch.days {
            if day.at == current_day {
                state.in_flight = state.in_flight.saturating_sub(day.messages);
                state.pending += day.messages;
            } else {
                state.closed_days.push(day);
            }
        }
        for minute in batch.minutes {
            if minute.at == current_minute {
                state.minute_messages += minute.messages;
            } else {
                state.closed_minutes.push(minute);
            }
        }
    }
}

/// What one flush writes for one app.
#[derive(Debug)]
struct Batch {
    day: i64,
    day_messages: u64,
    days: Vec<Delta>,
    minutes: Vec<Delta>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.days.is_empty() && self.minutes.is_empty()
    }
}

/// Every app's counters on this node.
#[derive(Debug)]
pub struct Usage {
    clock: Clock,
    // Shared ids: the copies the flushes and the cluster's 200 ms writer take are reference counts,
    // not allocations, however many apps the node has counted.
    apps: Mutex<HashMap<Arc<str>, Arc<AppUsage>>>,
    /// The minute of the last pruning of old per-minute rows (at most once a minute).
    last_prune: std::sync::atomic::AtomicI64,
    /// Forgotten apps' [`AppUsage::totals`].
    retired: Mutex<(u64, u64)>,
}

impl Usage {
    /// Loads today's stored totals so a restart continues from them.
    pub async fn load(store: &Store, clock: Clock) -> Result<Usage, StoreError> {
        let today = clock.day();
        let rows = sqlx::query("SELECT app_id, messages FROM usage_daily WHERE day = $1")
            .bind(today)
            .fetch_all(&store.pool)
            .await?;
        let mut apps = HashMap::new();
        for row in rows {
            let app_id: String = row.try_get("app_id")?;
            let messages = u64::try_from(row.try_get::<i64, _>("messages")?).unwrap_or(0);
            apps.insert(
                Arc::from(app_id),
                Arc::new(AppUsage::new(clock.clone(), messages)),
            );
        }
        Ok(Usage {
            clock,
            apps: Mutex::new(apps),
            last_prune: std::sync::atomic::AtomicI64::new(i64::MIN),
            retired: Mutex::new((0, 0)),
        })
    }

    /// The clock usage is counted by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// App `app_id`'s counters (created empty on first use: a new app has no stored count).
    pub fn app(&self, app_id: &str) -> Arc<AppUsage> {
        let mut apps = self.apps.lock_or_recover();
        apps.entry(app_id.into())
            .or_insert_with(|| Arc::new(AppUsage::new(self.clock.clone(), 0)))
            .clone()
    }

    /// Today (its day number) and every app's [`AppUsage::unflushed`] count above zero, sorted
    /// by app id.
    pub fn unflushed_today(&self) -> (i64, Vec<(String, u64)>) {
        let day = self.clock.day();
        let apps: Vec<(Arc<str>, Arc<AppUsage>)> = {
            let apps = self.apps.lock_or_recover();
            apps.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut counts: Vec<(String, u64)> = apps
            .into_iter()
            .filter_map(|(id, usage)| {
                let unflushed = usage.unflushed();
                (unflushed > 0).then(|| (id.to_string(), unflushed))
            })
            .collect();
        counts.sort_unstable();
        (day, counts)
    }

    /// Writes every app's new counts to the store. Counts that could not be written stay in
    /// memory for the next flush. Returns the number of apps written.
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        self.flush_then(store, || async {}).await
    }

    /// [`Usage::flush`], awaiting `before_write` after today's counts were taken (they left
    /// [`AppUsage::unflushed`]) and before they are written, when it took any. Cluster mode
    /// publishes the node's unflushed counts there, so no reader finds a count both in Redis
    /// and in the store (`cluster::unflushed`).
    pub async fn flush_then<F, Fut>(
        &self,
        store: &Store,
        before_write: F,
    ) -> Result<usize, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let apps: Vec<(Arc<str>, Arc<AppUsage>)> = {
            let apps = self.apps.lock_or_recover();
            apps.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let mut taken = Vec::new();
        for (app_id, usage) in apps {
            let batch = usage.take();
            if !batch.is_empty() {
                taken.push((app_id, usage, batch));
            }
        }
        if taken.iter().any(|(_, _, batch)| batch.day_messages > 0) {
            before_write().await;
        }
        let mut failure = None;
        let written = taken.len();
        if !taken.is_empty() {
            let batches: Vec<(&str, &Batch)> =
                taken.iter().map(|(id, _, b)| (id.as_ref(), b)).collect();
            // One transaction for every app: one commit per flush, however many apps are busy.
            match store.add_usage(&batches).await {
                Ok(stored) => {
                    for ((_, usage, batch), stored) in taken.iter().zip(stored) {
                        usage.confirm(batch, stored);
                    }
                }
                Err(error) => {
                    for (_, usage, batch) in taken {
                        usage.restore(batch);
                    }
                    failure = Some(error);
                }
            }
        }
        let minute = self.clock.minute();
        let last = self
            .last_prune
            .swap(minute, std::sync::atomic::Ordering::Relaxed);
        if last != minute {
            if let Err(error) = store.prune_minutes(minute - MINUTES_KEPT).await {
                failure.get_or_insert(error);
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(written),
        }
    }

    /// What is counted in memory and not yet written: (apps, messages). Counts of a flush that
    /// was cut off mid-write are included (they are neither confirmed nor restored).
    pub fn unsaved(&self) -> (usize, u64) {
        let apps = self.apps.lock_or_recover();
        let mut count = 0;
        let mut messages = 0u64;
        for usage in apps.values() {
            let state = usage.lock();
            let closed: u64 = state.closed_days.iter().map(|d| d.messages).sum();
            let held = state
                .pending
                .saturating_add(state.in_flight)
                .saturating_add(closed);
            let peaks = state.day_peak > state.written_day_peak
                || state.closed_days.iter().any(|d| d.peak > 0);
            if held > 0 || peaks {
                count += 1;
                messages = messages.saturating_add(held);
            }
        }
        (count, messages)
    }

    /// Whether app `app_id` has counters here (a deleted app's are forgotten).
    pub fn contains(&self, app_id: &str) -> bool {
        self.apps.lock_or_recover().contains_key(app_id)
    }

    /// Forgets a deleted app's counters (its totals stay in [`Usage::totals`]).
    pub fn forget(&self, app_id: &str) {
        let mut apps = self.apps.lock_or_recover();
        if let Some(gone) = apps.remove(app_id) {
            let (published, delivered) = gone.totals();
            let mut retired = self.retired.lock_or_recover();
            retired.0 = retired.0.saturating_add(published);
            retired.1 = retired.1.saturating_add(delivered);
        }
    }

    /// Every app's counters here, for `/metrics`.
    pub fn apps(&self) -> Vec<(Arc<str>, Arc<AppUsage>)> {
        let apps = self.apps.lock_or_recover();
        apps.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Messages published and delivered since the process started, node-wide (forgotten apps'
    /// included, so the counters never go down).
    pub fn totals(&self) -> (u64, u64) {
        let (mut published, mut delivered) = *self.retired.lock_or_recover();
        for (_, app) in self.apps() {
            let (p, d) = app.totals();
            published = published.saturating_add(p);
            delivered = delivered.saturating_add(d);
        }
        (published, delivered)
    }
}

/// One UTC day of an app's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayUsage {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Day number (days since 1970-01-01).
    pub day: i64,
    /// Messages counted.
    pub messages: u64,
    /// Most connections open at once (per node; the sum over nodes in cluster mode).
    pub peak_connections: u64,
}

/// One minute of an app's usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MinuteUsage {
    /// Unix seconds at the start of the minute.
    pub minute_start: i64,
    /// Messages counted in the minute.
    pub messages: u64,
    /// Most connections open at once in the minute.
    pub peak_connections: u64,
}

/// An app's stored usage history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// The app.
    pub app_id: String,
    /// Today as stored (up to one flush interval behind the live count).
    pub today: DayUsage,
    /// The last 30 days, oldest first, today included, days without traffic as zeros.
    pub days: Vec<DayUsage>,
    /// The last 24 hours per minute, oldest first, the current minute included, idle minutes
    /// as zeros.
    pub minutes: Vec<MinuteUsage>,
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Store {
    /// Adds one flush's counts for several apps in one transaction; returns each app's stored
    /// total for its batch's day.
    async fn add_usage(&self, batches: &[(&str, &Batch)]) -> Result<Vec<u64>, StoreError> {
        let mut tx = self.write_tx().await?;
        let mut totals = Vec::with_capacity(batches.len());
        for (app_id, batch) in batches {
            for (table, unit, deltas) in [
                ("usage_daily", "day", &batch.days),
                ("usage_minutely", "minute", &batch.minutes),
            ] {
                let sql = format!(
                    "INSERT INTO {table} (app_id, {unit}, messages, peak_connections) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (app_id, {unit}) DO UPDATE SET \
                     messages = {table}.messages + excluded.messages, \
                     peak_connections = CASE WHEN excluded.peak_connections > {table}.peak_connections \
                     THEN excluded.peak_connections ELSE {table}.peak_connections END"
                );
                for delta in deltas.iter() {
                    sqlx::query(&sql)
                        .bind((*app_id).to_owned())
                        .bind(delta.at)
                        .bind(i64::try_from(delta.messages).unwrap_or(i64::MAX))
                        .bind(i64::try_from(delta.peak).unwrap_or(i64::MAX))
                        .execute(&mut *tx)
                        .await?;
                }
            }
            let stored =
                sqlx::query("SELECT messages FROM usage_daily WHERE app_id = $1 AND day = $2")
                    .bind((*app_id).to_owned())
                    .bind(batch.day)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|row| row.try_get::<i64, _>("messages"))
                    .transpose()?
                    .map_or(0, count);
            totals.push(stored);
        }
        tx.commit().await?;
        Ok(totals)
    }

    /// The stored count of `day` of each of `app_ids` (in that order; 0 without a row).
    pub async fn day_messages(&self, day: i64, app_ids: &[&str]) -> Result<Vec<u64>, StoreError> {
        if app_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = if let [app_id] = app_ids {
            sqlx::query("SELECT app_id, messages FROM usage_daily WHERE day = $1 AND app_id = $2")
                .bind(day)
                .bind((*app_id).to_owned())
                .fetch_all(&self.pool)
                .await?
        } else {
            // The apps list: the listed apps' rows only (by the table's key), in chunks that stay
            // under SQLite's bound on parameters; never a scan of every tenant's days.
            let mut rows = Vec::with_capacity(app_ids.len());
            for chunk in app_ids.chunks(DAY_MESSAGES_CHUNK) {
                let placeholders: Vec<String> =
                    (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                let sql = format!(
                    "SELECT app_id, messages FROM usage_daily WHERE day = $1 AND app_id IN ({})",
                    placeholders.join(", ")
                );
                let mut query = sqlx::query(&sql).bind(day);
                for app_id in chunk {
                    query = query.bind((*app_id).to_owned());
                }
                rows.extend(query.fetch_all(&self.pool).await?);
            }
            rows
        };
        let mut stored = HashMap::with_capacity(rows.len());
        for row in rows {
            let app_id: String = row.try_get("app_id")?;
            stored.insert(app_id, count(row.try_get("messages")?));
        }
        Ok(app_ids
            .iter()
            .map(|id| stored.get(*id).copied().unwrap_or(0))
            .collect())
    }

    async fn prune_minutes(&self, before_minute: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM usage_minutely WHERE minute < $1")
            .bind(before_minute)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// App `app_id`'s stored usage: the 30 days up to `today` and the 24 hours up to
    /// `this_minute`, with idle days and minutes filled in as zeros.
    pub async fn usage_report(
        &self,
        app_id: &str,
        today: i64,
        this_minute: i64,
    ) -> Result<UsageReport, StoreError> {
        let first_day = today - (DAYS_REPORTED - 1);
        let rows = sqlx::query(
            "SELECT day, messages, peak_connections FROM usage_daily \
             WHERE app_id = $1 AND day >= $2 AND day <= $3",
        )
        .bind(app_id.to_owned())
        .bind(first_day)
        .bind(today)
        .fetch_all(&self.pool)
        .await?;
        let mut by_day = HashMap::new();
        for row in rows {
            let day: i64 = row.try_get("day")?;
            by_day.insert(
                day,
                (
                    count(row.try_get("messages")?),
                    count(row.try_get("peak_connections")?),
                ),
            );
        }
        let days: Vec<DayUsage> = (first_day..=today)
            .map(|day| {
                let (messages, peak_connections) = by_day.get(&day).copied().unwrap_or((0, 0));
                DayUsage {
                    date: day_to_date(day),
                    day,
                    messages,
                    peak_connections,
                }
            })
            .collect();
        let first_minute = this_minute - (24 * 60 - 1);
        let rows = sqlx::query(
            "SELECT minute, messages, peak_connections FROM usage_minutely \
             WHERE app_id = $1 AND minute >= $2 AND minute <= $3",
        )
        .bind(app_id.to_owned())
        .bind(first_minute)
        .bind(this_minute)
        .fetch_all(&self.pool)
        .await?;
        let mut by_minute = HashMap::new();
        for row in rows {
            let minute: i64 = row.try_get("minute")?;
            by_minute.insert(
                minute,
                (
                    count(row.try_get("messages")?),
                    count(row.try_get("peak_connections")?),
                ),
            );
        }
        let minutes = (first_minute..=this_minute)
            .map(|minute| {
                let (messages, peak_connections) =
                    by_minute.get(&minute).copied().unwrap_or((0, 0));
                MinuteUsage {
                    minute_start: minute * 60,
                    messages,
                    peak_connections,
                }
            })
            .collect();
        let today_usage = days.last().cloned().unwrap_or(DayUsage {
            date: day_to_date(today),
            day: today,
            messages: 0,
            peak_connections: 0,
        });
        Ok(UsageReport {
            app_id: app_id.to_owned(),
            today: today_usage,
            days,
            minutes,
        })
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
