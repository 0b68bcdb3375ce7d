//! Presence channels: members refcounted per user, so a user with several sockets on a channel
//! joins once (`member_added` on the first) and leaves once (`member_removed` after the last).

use std::collections::hash_map::Entry;

use serde_json::value::RawValue;

use super::events::Hooks;
use super::{broadcast, Channel, ConnHandle, SubscribeRefusal};
use crate::protocol::{server, WebhookEvent, WebhookKind};

/// A presence member joining a channel.
#[derive(Debug, Clone)]
pub struct PresenceMember {
    /// The user id (numbers already turned into strings).
    pub user_id: String,
    /// The `user_info` JSON, if any.
    pub user_info: Option<Box<RawValue>>,
}

/// A member as `subscription_succeeded` lists it: user id and `user_info`.
pub type ListedMember = (String, Option<Box<RawValue>>);

/// A user on one presence channel, with how many of its sockets are subscribed.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) info: Option<Box<RawValue>>,
    pub(super) sockets: u32,
}

/// Refuses a new user on a channel that already has `max` members (a known user's extra
/// socket is always let in).
pub(super) fn check_room(
    channel: &Channel,
    member: &PresenceMember,
    max: usize,
) -> Result<(), SubscribeRefusal> {
    let known = channel.members.contains_key(member.user_id.as_str());
    if !known && channel.members.len() >= max {
        return Err(SubscribeRefusal::PresenceFull(max));
    }
    Ok(())
}

/// Adds `conn` to presence channel `name` as `member`: a new user is announced to the others
/// (`member_added`) before the subscriber is added, then the subscriber gets the member list.
/// Returns the member events delivered.
pub(super) fn join(
    channel: &mut Channel,
    name: &str,
    conn: &ConnHandle,
    member: PresenceMember,
    hooks: &Hooks,
    cluster_members: Option<&[ListedMember]>,
) -> usize {
    let mut delivered = 0;
    let known = channel.members.contains_key(member.user_id.as_str());
    if !known && hooks.clustered {
        // The cluster announced the user (once, cluster-wide) if it was new.
        channel.members.insert(
            member.user_id.as_str().into(),
            Member {
                info: member.user_info,
                sockets: 1,
            },
        );
    } else if !known {
        let added = server::member_added(name, &member.user_id, member.user_info.as_deref());
        delivered = broadcast(channel, &added, None);
        hooks.emit(WebhookKind::MemberAdded, || {
            WebhookEvent::member(WebhookKind::MemberAdded, name, &member.user_id)
        });
        channel.members.insert(
            member.user_id.as_str().into(),
            Member {
                info: member.user_info,
                sockets: 1,
            },
        );
    } else if let Some(existing) = channel.members.get_mut(member.user_id.as_str()) {
        existing.sockets += 1;
    }
    channel.subscribers.insert(conn.socket_id(), conn.clone());
    let succeeded = match cluster_members {
        Some(members) => server::presence_subscription_succeeded(
            name,
            members
                .iter()
                .map(|(id, info)| (id.as_str(), info.as_deref())),
        ),
        None => server::presence_subscription_succeeded(
            name,
            channel
                .members
                .iter()
                .map(|(id, m)| (id.as_ref(), m.info.as_deref())),
        ),
    };
    conn.outbox().push(succeeded);
    delivered
}

/// Takes one socket of `user_id` off presence channel `name` (already removed from its
/// subscribers); the user's last socket announces `member_removed`. Returns the member events
/// delivered.
pub(super) fn leave(channel: &mut Channel, name: &str, user_id: &str, hooks: &Hooks) -> usize {
    let mut delivered = 0;
    if let Entry::Occupied(mut member) = channel.members.entry(user_id.into()) {
        member.get_mut().sockets -= 1;
        if member.get().sockets == 0 {
            member.remove();
            if hooks.clustered {
                // The cluster announces it, if it was the user's last socket cluster-wide.
                return 0;
            }
            delivered = broadcast(channel, &server::member_removed(name, user_id), None);
            hooks.emit(WebhookKind::MemberRemoved, || {
                WebhookEvent::member(WebhookKind::MemberRemoved, name, user_id)
            });
        }
    }
    delivered
}
