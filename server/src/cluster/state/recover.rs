//! Recovering the cluster state: cleaning dead nodes' state, and re-registering this node's
//! own after Redis failed or lost it (see the parent module). Both go through the vacate delay
//! like a leave and a join ([`super::vacate`]): a vacate they cause waits in Redis for a
//! comeback, and a channel or member they bring back cancels its pending vacate.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use redis::Value;

use super::answers::{info_of, int, list, texts};
use super::{Task, COMMAND_TIMEOUT};
use crate::hub::AppHub;
use crate::protocol::{server, WebhookEvent, WebhookKind};

impl Task {
    /// Claims dead nodes' state and cleans it, firing what it removed (once, cluster-wide).
    pub(super) async fn sweep(&mut self) {
        let tags = format!("{}:socket-tag:", self.inner.settings.name);
        let script = self.claim.clone();
        let mut invocation = script.arg(&self.prefix);
        invocation.arg(tags).arg(self.inner.tag);
        let Some(dead) = self.invoke(invocation).await else {
            return;
        };
        for tag in texts(dead).into_iter().filter(|t| !t.is_empty()) {
            let mut command = redis::cmd("SMEMBERS");
            command.arg(format!("{}apps:{tag}", self.prefix));
            let read = command.query_async::<Vec<String>>(&mut self.conn);
            let Ok(Ok(apps)) = tokio::time::timeout(COMMAND_TIMEOUT, read).await else {
                self.failed();
                return;
            };
            for app_id in apps {
                let script = self.cleanup.clone();
                let mut invocation = script.arg(&self.prefix);
                invocation.arg(&app_id).arg(&tag).arg(self.vacate_delay_ms);
                let Some(cleaned) = self.invoke(invocation).await else {
                    return;
                };
                let mut cleaned = list(cleaned).into_iter();
                let vacated = texts(cleaned.next().unwrap_or(Value::Nil));
                let removed = texts(cleaned.next().unwrap_or(Value::Nil));
                let held = cleaned.next().map_or(0, |v| int(&v));
                if vacated.is_empty() && removed.is_empty() && held == 0 {
                    continue;
                }
                tracing::info!(
                    app_id,
                    dead_tag = tag,
                    vacated = vacated.len() + usize::try_from(held).unwrap_or(0),
                    members_removed = removed.len() / 3,
                    "cleaned a dead node's channels"
                );
                // Not created here: this node may not host the app.
                let app = self.local.hub().existing_app(&app_id);
                let app = app.as_deref();
                self.removed_and_vacated(&app_id, app, &removed, &vacated);
            }
        }
    }

    /// Re-registers this node's whole state when it was marked for it and Redis answers.
    pub(super) async fn resync_if_needed(&mut self) {
        self.conn = self.inner.manager.get(); // Each turn takes the current one ([`super::conn`]).
        if self.paused() || !self.inner.state.resync.load(Ordering::Acquire) {
            return;
        }
        // Not before the heartbeat has this node's tag key back: a sweep elsewhere would take the
        // state registered now for a dead node's.
        let tag_key = super::super::registry::tag_key(&self.inner.settings.name, self.inner.tag);
        let mut command = redis::cmd("EXISTS");
        command.arg(tag_key);
        let exists = command.query_async::<i64>(&mut self.conn);
        match tokio::time::timeout(COMMAND_TIMEOUT, exists).await {
            Ok(Ok(1)) => {}
            Ok(Ok(_)) => return,
            _ => return self.failed(),
        }
        // Bumped first: a change made after it is not in the snapshot below and is sent after.
        self.inner.state.resync.store(false, Ordering::Release);
        self.inner.state.epoch.fetch_add(1, Ordering::AcqRel);
        let mut command = redis::cmd("SMEMBERS");
        command.arg(format!("{}apps:{}", self.prefix, self.inner.tag));
        let read = command.query_async::<Vec<String>>(&mut self.conn);
        let registered = match tokio::time::timeout(COMMAND_TIMEOUT, read).await {
            Ok(Ok(apps)) => apps,
            _ => {
                self.failed();
                return;
            }
        };
        let mut apps: HashSet<String> = registered.into_iter().collect();
        for app in self.local.hub().all_apps() {
            apps.insert(app.id().to_string());
        }
        let mut fired = 0;
        for app_id in apps {
            // An app registered in Redis with no state here holds nothing on this node.
            let app = self.local.hub().existing_app(&app_id);
            let app = app.as_deref();
            let (channels, members) = app.map(AppHub::local_state).unwrap_or_default();
            let script = self.resync.clone();
            let mut invocation = script.arg(&self.prefix);
            invocation
                .arg(&app_id)
                .arg(self.inner.tag)
                .arg(channels.len())
                .arg(members.len())
                .arg(self.vacate_delay_ms);
            for (channel, count) in &channels {
                invocation.arg(channel).arg(*count);
            }
            for (channel, user, sockets, info) in &members {
                invocation
                    .arg(channel)
                    .arg(user)
                    .arg(*sockets)
                    .arg(info.as_deref().unwrap_or(""));
            }
            let Some(answer) = self.invoke(invocation).await else {
                return;
            };
            let mut answer = list(answer).into_iter();
            let occupied = texts(answer.next().unwrap_or(Value::Nil));
            let vacated = texts(answer.next().unwrap_or(Value::Nil));
            let added = texts(answer.next().unwrap_or(Value::Nil));
            let removed = texts(answer.next().unwrap_or(Value::Nil));
            fired += occupied.len() + vacated.len() + added.len() / 4 + removed.len() / 3;
            for channel in &occupied {
                self.report(&app_id, app, WebhookKind::ChannelOccupied, || {
                    WebhookEvent::channel(WebhookKind::ChannelOccupied, channel)
                });
            }
            for quadruple in added.chunks(4) {
                if let [channel, user, info, hook] = quadruple {
                    let info = info_of(info);
                    let frame = server::member_added(channel, user, info.as_deref());
                    self.send(&app_id, app, channel, &frame, None);
                    if hook == "1" {
                        self.report(&app_id, app, WebhookKind::MemberAdded, || {
                            WebhookEvent::member(WebhookKind::MemberAdded, channel, user)
                        });
                    }
                }
            }
            self.removed_and_vacated(&app_id, app, &removed, &vacated);
        }
        tracing::info!(
            transitions = fired,
            "re-registered this node's channels and members in Redis"
        );
    }
}

impl Task {
    /// Fires what a cleanup or re-registration script reported gone: each removed member
    /// (`channel, user, hook` triples) and each vacated channel.
    fn removed_and_vacated(
        &self,
        app_id: &str,
        app: Option<&AppHub>,
        removed: &[String],
        vacated: &[String],
    ) {
        for triple in removed.chunks(3) {
            if let [channel, user, hook] = triple {
                self.member_removed(app_id, app, channel, user, hook == "1");
            }
        }
        for channel in vacated {
            self.report(app_id, app, WebhookKind::ChannelVacated, || {
                WebhookEvent::channel(WebhookKind::ChannelVacated, channel)
            });
        }
    }
}
