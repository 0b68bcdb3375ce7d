//! `subscription_count` events: sent to a channel's subscribers (when the app enables them) and
//! to webhooks (when an endpoint wants them) as the count changes, at most every 5 seconds on a
//! channel of more than 100 subscribers; the periodic flush sends what the throttle held back.

use std::time::Duration;

use tokio::time::Instant;

use super::events::Hooks;
use super::{broadcast, lock, AppHub, Channel};
use crate::protocol::{server, WebhookEvent, WebhookKind};

/// Above this many subscribers, `subscription_count` events are sent at most every 5 seconds.
pub(super) const SUBSCRIPTION_COUNT_THROTTLE_ABOVE: usize = 100;
pub(super) const SUBSCRIPTION_COUNT_INTERVAL: Duration = Duration::from_secs(5);

/// Sends the channel's `subscription_count` to its subscribers (when `clients`) and as a webhook
/// event (when wanted), unless the 5-second throttle holds it back; returns whether it was held
/// back (the caller records it for the next flush).
#[must_use]
pub(super) fn maybe_send_count(
    name: &str,
    channel: &mut Channel,
    force: bool,
    clients: bool,
    hooks: &Hooks,
) -> bool {
    let count = channel.subscribers.len();
    if count == 0 {
        return false;
    }
    if count > SUBSCRIPTION_COUNT_THROTTLE_ABOVE && !force {
        if let Some(last) = channel.last_count_sent {
            if last.elapsed() < SUBSCRIPTION_COUNT_INTERVAL {
                return true;
            }
        }
    }
    channel.last_count_sent = Some(Instant::now());
    if clients {
        broadcast(channel, &server::subscription_count(name, count), None);
    }
    hooks.emit(WebhookKind::SubscriptionCount, || {
        WebhookEvent::count(name, count)
    });
    false
}

/// `subscription_count` events apply to every channel kind but presence and the internal
/// `#server-to-user-` channels.
pub(super) fn counts_subscriptions(channel: &str) -> bool {
    !channel.starts_with("presence-") && !channel.starts_with('#')
}

impl AppHub {
    /// Sends the `subscription_count` updates that the 5-second throttle held back.
    pub fn flush_subscription_counts(&self) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        for (name, clients) in std::mem::take(&mut state.pending_counts) {
            if let Some(channel) = state.channels.get_mut(&name) {
                if maybe_send_count(&name, channel, false, clients, &self.hooks) {
                    state.pending_counts.insert(name, clients);
                }
            }
        }
    }
}
