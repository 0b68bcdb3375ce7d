//! The vacate delay, cluster-wide. On one node the webhook writer holds `channel_vacated` and
//! `member_removed` for the vacate delay and a comeback cancels them; in a cluster the comeback
//! may happen on another node, so the delay is kept in Redis: the leave script records the
//! pending webhook in `P:st:vacating:{app}` (due by Redis's clock), a join that brings the
//! channel or member back removes it and reports no webhook, and every [`SWEEP_EVERY`] each
//! node runs a script that takes the due entries (atomically: each once, cluster-wide) and
//! fires those still vacant. A node dying inside the delay leaves its entries in Redis: another
//! node fires them. The frames to clients are not delayed; the webhook writer, told that the
//! cluster delays these events ([`crate::config::WebhookSettings::delayed_upstream`]), writes
//! them due at once.
//!
//! Bound: one entry per channel or member vacated within the last delay (a join removes its
//! own), and each sweep takes at most [`DUE_PER_SWEEP`] per app.

use std::time::Duration;

use super::answers::texts;
use super::Task;
use crate::protocol::{WebhookEvent, WebhookKind};

/// How often the due pending vacates are looked at.
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// Due entries taken per app per sweep at most (the rest at the next sweep).
const DUE_PER_SWEEP: usize = 1_000;

impl Task {
    /// Fires the webhooks of the pending vacates that are due and still vacant (taken once,
    /// cluster-wide).
    pub(super) async fn fire_due(&mut self) {
        if self.vacate_delay_ms == 0 || self.paused() {
            return;
        }
        let script = self.vacate_due.clone();
        let mut invocation = script.arg(&self.prefix);
        invocation.arg(DUE_PER_SWEEP);
        let Some(due) = self.invoke(invocation).await else {
            return;
        };
        for pair in texts(due).chunks(2) {
            let [app_id, entry] = pair else { continue };
            let app = self.app(app_id);
            match entry.split_once('\n') {
                Some((channel, user)) => app.emit(WebhookKind::MemberRemoved, || {
                    WebhookEvent::member(WebhookKind::MemberRemoved, channel, user)
                }),
                None => app.emit(WebhookKind::ChannelVacated, || {
                    WebhookEvent::channel(WebhookKind::ChannelVacated, entry)
                }),
            }
        }
    }
}
