//! The vacate delay: `channel_vacated` and `member_removed` are written to the outbox at once,
//! due `vacate_delay` (3 s) later, so a crash inside the delay loses none of them. When the
//! channel or the member comes back within the delay, the comeback (`channel_occupied` /
//! `member_added`) cancels the held rows (the worker removes them if none has started) and is
//! not reported either. This module keeps the bookkeeping: which rows are held for which key.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use crate::hub::HubEvent;
use crate::protocol::{WebhookEvent, WebhookKind};

/// What a held-back event is about: the app, the channel, and the member for `member_removed`.
pub(super) type HeldKey = (Arc<str>, String, Option<String>);

/// Whether an event is held (`true`), a possible comeback (`false`), or neither (`None`).
pub(super) fn held_key(event: &HubEvent) -> Option<(HeldKey, bool)> {
    let channel = event.event.channel_name().to_owned();
    match &event.event {
        WebhookEvent::Channel { .. } => match event.event.kind() {
            WebhookKind::ChannelVacated => Some(((event.app_id.clone(), channel, None), true)),
            WebhookKind::ChannelOccupied => Some(((event.app_id.clone(), channel, None), false)),
            _ => None,
        },
        WebhookEvent::Member { user_id, .. } => {
            let key = (event.app_id.clone(), channel, Some(user_id.clone()));
            Some((key, event.event.kind() == WebhookKind::MemberRemoved))
        }
        _ => None,
    }
}

/// The rows written for held events whose delay has not passed yet.
#[derive(Debug, Default)]
pub(super) struct Held {
    by_key: HashMap<HeldKey, (Instant, Vec<i64>)>,
}

impl Held {
    /// Records the rows written for a held event due at `due`.
    pub(super) fn hold(&mut self, key: HeldKey, due: Instant, ids: Vec<i64>) {
        self.by_key.insert(key, (due, ids));
    }

    /// The rows held for `key` whose delay has not passed at `now`.
    pub(super) fn take(&mut self, key: &HeldKey, now: Instant) -> Option<Vec<i64>> {
        match self.by_key.remove(key) {
            Some((due, ids)) if due > now => Some(ids),
            _ => None,
        }
    }

    /// Forgets keys whose delay has passed (their rows are due; a comeback is a new event).
    pub(super) fn expire(&mut self, now: Instant) {
        self.by_key.retain(|_, (due, _)| *due > now);
    }

    /// Keys held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(kind: WebhookKind, channel: &str, user: Option<&str>) -> HubEvent {
        HubEvent {
            app_id: "1".into(),
            event: match user {
                Some(user) => WebhookEvent::member(kind, channel, user),
                None => WebhookEvent::channel(kind, channel),
            },
        }
    }

    #[test]
    fn vacates_are_held_until_due_and_a_comeback_finds_them_only_before() {
        let start = Instant::now();
        let (vacate, held) = held_key(&event(WebhookKind::ChannelVacated, "a", None)).unwrap();
        assert!(held);
        let (occupy, held) = held_key(&event(WebhookKind::ChannelOccupied, "a", None)).unwrap();
        assert!(!held);
        assert_eq!(vacate, occupy);
        let (removed, _) =
            held_key(&event(WebhookKind::MemberRemoved, "presence-a", Some("u1"))).unwrap();
        let (other, _) =
            held_key(&event(WebhookKind::MemberAdded, "presence-a", Some("u2"))).unwrap();
        assert_ne!(removed, other, "another member is another key");
        assert!(held_key(&event(WebhookKind::CacheMiss, "cache-a", None)).is_none());

        let mut rows = Held::default();
        rows.hold(vacate.clone(), start + Duration::from_secs(3), vec![1, 2]);
        rows.hold(removed.clone(), start + Duration::from_secs(3), vec![3]);
        assert_eq!(rows.take(&other, start), None);
        assert_eq!(
            rows.take(&occupy, start + Duration::from_millis(2_999)),
            Some(vec![1, 2])
        );
        assert_eq!(rows.take(&occupy, start), None, "taken once");
        assert_eq!(
            rows.take(&removed, start + Duration::from_secs(3)),
            None,
            "due: too late"
        );
        rows.hold(vacate, start + Duration::from_secs(3), vec![4]);
        rows.expire(start + Duration::from_secs(4));
        assert_eq!(rows.len(), 0);
    }
}
