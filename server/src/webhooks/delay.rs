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
use crate::tenants::HeldEdit;

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

/// One held event inside a held row: its key, its JSON and its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeldEvent {
    pub(super) key: HeldKey,
    pub(super) json: String,
    pub(super) channel: String,
}

/// A window's comebacks, for the worker to take out of their held rows in one store transaction.
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    /// Per comeback: the rows its held event is in.
    pub(super) rows_of: Vec<Vec<i64>>,
    /// Each of those rows' events in order: JSON, channel, and the comeback that takes it out.
    pub(super) rows: HashMap<i64, Vec<(String, String, Option<usize>)>>,
}

/// What a [`Cancel`] does once the worker knows which rows have started.
#[derive(Debug)]
pub(super) struct Plan {
    /// Per comeback: whether it is taken out of its rows.
    pub(super) taken: Vec<bool>,
    /// The rows left with events, and those events.
    pub(super) rewrite: Vec<HeldEdit>,
    /// The rows left empty.
    pub(super) remove: Vec<i64>,
}

impl Cancel {
    /// Which comebacks succeed when `idle` says which rows may still change (none started): a
    /// comeback succeeds only if every row it is in may change. Says which rows change how.
    pub(super) fn plan(&self, idle: impl Fn(i64) -> bool) -> Plan {
        let ok: Vec<bool> = self
            .rows_of
            .iter()
            .map(|ids| ids.iter().all(|id| idle(*id)))
            .collect();
        let mut rewrite = Vec::new();
        let mut remove = Vec::new();
        let mut ids: Vec<&i64> = self.rows.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let events = &self.rows[id];
            let left: Vec<&(String, String, Option<usize>)> = events
                .iter()
                .filter(|(_, _, by)| !by.is_some_and(|c| ok[c]))
                .collect();
            if left.len() == events.len() {
                continue;
            }
            if left.is_empty() {
                remove.push(*id);
            } else {
                let json: Vec<&str> = left.iter().map(|(j, _, _)| j.as_str()).collect();
                rewrite.push(HeldEdit {
                    id: *id,
                    events: format!("[{}]", json.join(",")),
                    channels: super::distinct(left.iter().map(|(_, c, _)| c)),
                });
            }
        }
        Plan {
            taken: ok,
            rewrite,
            remove,
        }
    }
}

/// The rows written for held events whose delay has not passed yet, and what is in them.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// Per key: when due, and the rows its event is in (none when no endpoint wants it).
    by_key: HashMap<HeldKey, (Instant, Vec<i64>)>,
    /// Per held row: when due, and its events in order.
    rows: HashMap<i64, (Instant, Vec<HeldEvent>)>,
}

impl Held {
    /// Records a window's held `keys` and the `rows` written for them, due at `due`.
    pub(super) fn hold(
        &mut self,
        keys: impl IntoIterator<Item = HeldKey>,
        rows: impl IntoIterator<Item = (i64, Vec<HeldEvent>)>,
        due: Instant,
    ) {
        for key in keys {
            self.by_key.insert(key, (due, Vec::new()));
        }
        for (id, events) in rows {
            for event in &events {
                if let Some((_, ids)) = self.by_key.get_mut(&event.key) {
                    ids.push(id);
                }
            }
            self.rows.insert(id, (due, events));
        }
    }

    /// The rows held for `key` whose delay has not passed at `now` (forgotten either way).
    pub(super) fn take(&mut self, key: &HeldKey, now: Instant) -> Option<Vec<i64>> {
        match self.by_key.remove(key) {
            Some((due, ids)) if due > now => Some(ids),
            _ => None,
        }
    }

    /// The request that takes `comebacks` (keys taken, with their rows) out of their rows.
    pub(super) fn cancel(&self, comebacks: &[(HeldKey, Vec<i64>)]) -> Cancel {
        let index: HashMap<&HeldKey, usize> = comebacks
            .iter()
            .enumerate()
            .map(|(n, (key, _))| (key, n))
            .collect();
        let mut request = Cancel {
            rows_of: comebacks.iter().map(|(_, ids)| ids.clone()).collect(),
            rows: HashMap::new(),
        };
        for id in comebacks.iter().flat_map(|(_, ids)| ids) {
            if request.rows.contains_key(id) {
                continue;
            }
            let events = self.rows.get(id).map_or_else(Vec::new, |(_, events)| {
                events
                    .iter()
                    .map(|e| {
                        (
                            e.json.clone(),
                            e.channel.clone(),
                            index.get(&e.key).copied(),
                        )
                    })
                    .collect()
            });
            request.rows.insert(*id, events);
        }
        request
    }

    /// Forgets the events of the comebacks that succeeded (`removed`) in their rows.
    pub(super) fn cancelled(&mut self, comebacks: &[(HeldKey, Vec<i64>)], removed: &[bool]) {
        for ((key, ids), _) in comebacks.iter().zip(removed.iter()).filter(|(_, ok)| **ok) {
            for id in ids {
                if let Some((_, events)) = self.rows.get_mut(id) {
                    events.retain(|e| e.key != *key);
                    if events.is_empty() {
                        self.rows.remove(id);
                    }
                }
            }
        }
    }

    /// Forgets keys and rows whose delay has passed (due; a comeback is a new event).
    pub(super) fn expire(&mut self, now: Instant) {
        self.by_key.retain(|_, (due, _)| *due > now);
        self.rows.retain(|_, (due, _)| *due > now);
    }

    /// Keys and rows held.
    #[cfg(test)]
    pub(super) fn len(&self) -> (usize, usize) {
        (self.by_key.len(), self.rows.len())
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
        let due = start + Duration::from_secs(3);
        let held = |key: &HeldKey| HeldEvent {
            key: key.clone(),
            json: format!("{{\"channel\":\"{}\"}}", key.1),
            channel: key.1.clone(),
        };
        rows.hold(
            [vacate.clone(), removed.clone()],
            [
                (1, vec![held(&vacate), held(&removed)]),
                (2, vec![held(&vacate)]),
            ],
            due,
        );
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
        rows.hold([vacate], [(4, Vec::new())], due);
        rows.expire(start + Duration::from_secs(4));
        assert_eq!(rows.len(), (0, 0));
    }

    #[test]
    fn a_windows_comebacks_take_their_events_out_of_shared_rows_all_or_nothing() {
        let due = Instant::now() + Duration::from_secs(3);
        let key = |c: &str| -> HeldKey { ("1".into(), c.to_owned(), None) };
        let held = |c: &str| HeldEvent {
            key: key(c),
            json: format!("\"{c}\""),
            channel: c.to_owned(),
        };
        let mut rows = Held::default();
        // Two endpoints: rows 1 (a, b, c) and 2 (a, b); row 3 (d) on the second endpoint.
        rows.hold(
            ["a", "b", "c", "d"].map(key),
            [
                (1, vec![held("a"), held("b"), held("c")]),
                (2, vec![held("a"), held("b")]),
                (3, vec![held("d")]),
            ],
            due,
        );
        let now = Instant::now();
        let comebacks: Vec<(HeldKey, Vec<i64>)> = ["a", "b", "d"]
            .into_iter()
            .map(|c| (key(c), rows.take(&key(c), now).unwrap()))
            .collect();
        assert_eq!(comebacks[0].1, vec![1, 2]);
        let request = rows.cancel(&comebacks);
        // Everything idle: a and b leave row 1, row 2 and row 3 are left empty.
        let plan = request.plan(|_| true);
        assert_eq!(plan.taken, vec![true, true, true]);
        assert_eq!(
            plan.rewrite,
            vec![HeldEdit {
                id: 1,
                events: "[\"c\"]".into(),
                channels: vec!["c".into()]
            }]
        );
        assert_eq!(plan.remove, vec![2, 3]);
        // Row 2 started: a and b stay everywhere (all or nothing), d still goes.
        let plan = request.plan(|id| id != 2);
        assert_eq!(plan.taken, vec![false, false, true]);
        assert!(plan.rewrite.is_empty());
        assert_eq!(plan.remove, vec![3]);
        rows.cancelled(&comebacks, &plan.taken);
        assert_eq!(rows.len(), (1, 2), "c is held; rows 1 and 2 are kept");
        let left = rows.cancel(&[(key("c"), vec![1])]);
        assert_eq!(
            left.rows[&1].len(),
            3,
            "a and b were not taken out of row 1"
        );
    }
}
