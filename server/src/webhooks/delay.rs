//! The first stage of the webhook pipeline: `channel_vacated` and `member_removed` wait
//! `vacate_delay` (3 s) and are dropped, together with the `channel_occupied` / `member_added`
//! that cancels them, when the channel or the member comes back within it. Everything else passes
//! straight through, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::HubEvent;
use crate::protocol::{WebhookEvent, WebhookKind};

/// What a held-back event is about: the channel, and the member for `member_removed`.
type HeldKey = (Arc<str>, String, Option<String>);

fn held_key(event: &HubEvent) -> Option<(HeldKey, bool)> {
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

/// Events held back, in the order they are due (the delay is constant).
#[derive(Debug, Default)]
struct Held {
    queue: VecDeque<(u64, Instant, HubEvent)>,
    by_key: HashMap<HeldKey, u64>,
    next_seq: u64,
}

impl Held {
    fn hold(&mut self, key: HeldKey, due: Instant, event: HubEvent) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_key.insert(key, seq);
        self.queue.push_back((seq, due, event));
    }

    /// Cancels the held event for `key`; says whether there was one.
    fn cancel(&mut self, key: &HeldKey) -> bool {
        match self.by_key.remove(key) {
            Some(seq) => {
                self.queue.retain(|(s, _, _)| *s != seq);
                true
            }
            None => false,
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(_, due, _)| *due)
    }

    /// Releases the events due at `now` (all of them when `now` is `None`).
    fn release(&mut self, now: Option<Instant>, out: &UnboundedSender<HubEvent>) {
        while let Some((_, due, _)) = self.queue.front() {
            if now.is_some_and(|now| *due > now) {
                break;
            }
            if let Some((_, _, event)) = self.queue.pop_front() {
                if let Some((key, _)) = held_key(&event) {
                    self.by_key.remove(&key);
                }
                let _ = out.send(event);
            }
        }
    }
}

fn accept(event: HubEvent, held: &mut Held, delay: Duration, out: &UnboundedSender<HubEvent>) {
    match held_key(&event) {
        Some((key, true)) => {
            // A second vacate for the same key cannot happen without an occupy in between,
            // which cancelled the first; replace defensively all the same.
            held.cancel(&key);
            held.hold(key, Instant::now() + delay, event);
        }
        Some((key, false)) => {
            if !held.cancel(&key) {
                let _ = out.send(event);
            }
        }
        None => {
            let _ = out.send(event);
        }
    }
}

/// Runs the stage until `stop` is cancelled and `input` is drained; then releases every held
/// event at once (nothing is lost at shutdown) and returns, closing `out`.
pub(super) async fn run(
    mut input: UnboundedReceiver<HubEvent>,
    out: UnboundedSender<HubEvent>,
    delay: Duration,
    stop: CancellationToken,
) {
    let mut held = Held::default();
    loop {
        let due = held.next_due();
        tokio::select! {
            biased;
            event = input.recv() => match event {
                Some(event) => accept(event, &mut held, delay, &out),
                None => break,
            },
            () = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => held.release(Some(Instant::now()), &out),
            () = stop.cancelled() => {
                while let Ok(event) = input.try_recv() {
                    accept(event, &mut held, delay, &out);
                }
                break;
            }
        }
    }
    held.release(None, &out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn event(kind: WebhookKind, channel: &str, user: Option<&str>) -> HubEvent {
        HubEvent {
            app_id: "1".into(),
            event: match user {
                Some(user) => WebhookEvent::member(kind, channel, user),
                None => WebhookEvent::channel(kind, channel),
            },
        }
    }

    fn names(rx: &mut mpsc::UnboundedReceiver<HubEvent>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(format!(
                "{}:{}",
                e.event.kind().as_str(),
                e.event.channel_name()
            ));
        }
        out
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn vacate_waits_three_seconds_and_a_comeback_cancels_it() {
        let (tx, input) = mpsc::unbounded_channel();
        let (out, mut rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(input, out, Duration::from_secs(3), stop.clone()));

        tx.send(event(WebhookKind::ChannelOccupied, "a", None))
            .unwrap();
        tx.send(event(WebhookKind::ChannelVacated, "a", None))
            .unwrap();
        settle().await;
        assert_eq!(names(&mut rx), vec!["channel_occupied:a"]);
        tokio::time::advance(Duration::from_millis(2_999)).await;
        settle().await;
        assert!(names(&mut rx).is_empty(), "still held at 2.999 s");
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        assert_eq!(names(&mut rx), vec!["channel_vacated:a"]);

        // Vacated, then occupied again 1 s later: neither is reported.
        tx.send(event(WebhookKind::ChannelVacated, "b", None))
            .unwrap();
        settle().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        tx.send(event(WebhookKind::ChannelOccupied, "b", None))
            .unwrap();
        settle().await;
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        assert!(names(&mut rx).is_empty());

        // The same for a member; another member's events are not affected.
        tx.send(event(WebhookKind::MemberRemoved, "presence-c", Some("u1")))
            .unwrap();
        tx.send(event(WebhookKind::MemberAdded, "presence-c", Some("u2")))
            .unwrap();
        settle().await;
        tokio::time::advance(Duration::from_secs(2)).await;
        tx.send(event(WebhookKind::MemberAdded, "presence-c", Some("u1")))
            .unwrap();
        settle().await;
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(names(&mut rx), vec!["member_added:presence-c"]);

        // At shutdown, held events are released at once.
        tx.send(event(WebhookKind::ChannelVacated, "d", None))
            .unwrap();
        settle().await;
        stop.cancel();
        task.await.unwrap();
        assert_eq!(names(&mut rx), vec!["channel_vacated:d"]);
    }
}
