//! The session: what one connection may do, independent of the transport that carries it.
//!
//! A transport feeds it decoded text frames; every answer goes to the connection's own outbox,
//! which the transport writes out. Keeping answers in the outbox (rather than writing them
//! directly) keeps them in order with events published to the connection meanwhile.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::Quota;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::deferral::{Deferred, Pending, PendingClientEvent, PendingSubscribe};
use crate::auth::{self, SocketAuthError};
use crate::clock::RateLimiter;
use crate::cluster::{JoinAnswer, Members};
use crate::hub::{AppHub, ConnHandle, PresenceMember, SubscribeOptions, SubscribeRefusal};
use crate::node::Node;
use crate::protocol::{
    error_code, server, ChannelKind, ChannelName, ClientFrame, FrameError, WebhookEvent,
    WebhookKind, SERVER_TO_USER_PREFIX,
};
use crate::tenants::{AppRef, AppUsage};

/// The longest user id accepted in presence `channel_data` and in signin `user_data`.
pub const MAX_USER_ID_CHARS: usize = 128;
/// The largest watchlist; extra ids are dropped and a 4302 error is sent.
pub const MAX_WATCHLIST: usize = 100;
/// The cache replays a connection remembers having counted (at least its subscriptions cap);
/// past it, entries of channels it no longer holds are forgotten.
const REPLAYS_REMEMBERED_MIN: usize = 16;

#[derive(Debug)]
struct SignedIn {
    id: String,
    info: Option<Box<RawValue>>,
    watchlist: Vec<String>,
}

/// One connection's protocol state.
pub struct Session {
    node: Arc<Node>,
    app_id: String,
    app_hub: Arc<AppHub>,
    usage: Arc<AppUsage>,
    conn: ConnHandle,
    socket_id: String,
    /// Subscribed channels, with the presence user id this socket joined as.
    subscriptions: HashMap<Box<str>, Option<Box<str>>>,
    user: Option<SignedIn>,
    client_event_limiter: Option<(u32, RateLimiter)>,
    /// Subscribes per second, keyed by the (rate, burst) it was built for.
    subscribe_limiter: Option<((u32, u32), RateLimiter)>,
    /// Per cache channel, the last cached event replayed to this connection and counted: a
    /// replay counts once per connection, channel and cached event (`interfaces.md`), so
    /// re-subscribing in a loop costs the app's quota nothing.
    replayed: HashMap<Box<str>, u64>,
    /// Whether the session has left everything.
    finished: bool,
    /// Work waiting for Redis and the frames behind it (cluster mode; see [`super::deferral`]).
    deferred: Deferred,
    /// Defers subscribes without a cluster (tests of the mechanism).
    #[cfg(test)]
    pub(crate) force_defer: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("app_id", &self.app_id)
            .field("socket_id", &self.socket_id)
            .finish_non_exhaustive()
    }
}

/// Presence `channel_data` as sent by an auth endpoint.
#[derive(Deserialize)]
struct ChannelData {
    user_id: Option<Box<RawValue>>,
    user_info: Option<Box<RawValue>>,
}

/// Signin `user_data`.
#[derive(Deserialize)]
struct UserData {
    id: Option<Box<RawValue>>,
    user_info: Option<Box<RawValue>>,
    watchlist: Option<Vec<Box<RawValue>>>,
}

/// A user id given as a JSON string or number, as a string.
fn user_id_of(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok()
    } else if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') && !text.is_empty() {
        Some(text.to_owned())
    } else {
        None
    }
}

/// A subscription refusal: `pusher:error` (code null, or 4301 for the rate limit) then
/// `pusher:subscription_error`.
struct Refusal {
    message: String,
    code: Option<u16>,
    kind: &'static str,
    status: u16,
}

impl Refusal {
    fn auth(message: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            code: None,
            kind: "AuthError",
            status: 401,
        }
    }

    fn limit(message: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            code: None,
            kind: "LimitReached",
            status: 403,
        }
    }

    fn rate(message: impl Into<String>) -> Refusal {
        Refusal {
            message: message.into(),
            code: Some(error_code::CLIENT_EVENT_RATE_LIMIT),
            kind: "LimitReached",
            status: 429,
        }
    }
}

impl Session {
    /// A session for a connection already registered with the app's hub.
    pub fn new(node: Arc<Node>, app_id: String, app_hub: Arc<AppHub>, conn: ConnHandle) -> Session {
        let socket_id = conn.socket_id().to_string();
        let usage = node.usage.app(&app_id);
        Session {
            node,
            app_id,
            app_hub,
            usage,
            conn,
            socket_id,
            subscriptions: HashMap::new(),
            user: None,
            client_event_limiter: None,
            subscribe_limiter: None,
            replayed: HashMap::new(),
            finished: false,
            deferred: Deferred::default(),
            #[cfg(test)]
            force_defer: false,
        }
    }

    /// Whether work waits for Redis (or frames queued behind such work): the transport stops
    /// reading the socket and awaits [`Session::drive`] before it feeds more.
    pub fn pending(&self) -> bool {
        self.deferred.pending()
    }

    /// Runs the pending work, then the frames queued behind it, in order (a queued frame may
    /// defer again: the frames after it wait for that). Returns once nothing is pending. Each
    /// piece of work waits for Redis at most [`super::deferral::REDIS_ANSWER_TIMEOUT`], then
    /// decides locally.
    pub async fn drive(&mut self) {
        loop {
            if let Some(work) = self.deferred.take_work() {
                self.run_pending(work).await;
                // Its answer goes out now, not after the whole queue (the outbox stays small).
                let _ = self.conn.outbox().flush();
                continue;
            }
            let Some(frame) = self.deferred.next_frame() else {
                return;
            };
            self.handle_text(&frame);
        }
    }

    /// Completes one piece of deferred work.
    async fn run_pending(&mut self, work: Pending) {
        match work {
            Pending::ClientEvent(pending) => {
                let Some(app) = self.app() else { return };
                let admitted = match &self.node.cluster {
                    Some(cluster) => {
                        let quota = app.limits.daily_messages();
                        cluster
                            .admit_daily(&self.app_id, &self.usage, quota, 1)
                            .await
                    }
                    None => self.usage.try_publish(app.limits.daily_messages(), 1),
                };
                // Still subscribed (an unsubscribe cannot have run meanwhile: it would be
                // queued behind this event).
                if !admitted {
                    return self.refuse_client_event_over_quota();
                }
                let Ok(data) = RawValue::from_string(pending.data.into()) else {
                    return;
                };
                self.relay_client_event(
                    &pending.event,
                    &pending.channel,
                    &data,
                    pending.presence_user.as_deref(),
                );
            }
            Pending::Subscribe(subscribe) => {
                let Some(cluster) = self.node.cluster.clone() else {
                    return self.complete_subscribe(subscribe, None);
                };
                // The app's first subscriber on this node: its subscription_succeeded must not
                // go out before this node listens to the app's Redis channel, or a publish from
                // another node in between would be missed here (without a pub/sub connection
                // the node serves local traffic only, as in an outage).
                let _ = cluster.listen(&self.app_id).await;
                // A cache channel this node has nothing for: the cluster's last event, if any,
                // is kept here and replayed by the subscribe (else a miss).
                let name = subscribe.name.as_str();
                if subscribe.name.is_cache() && !self.app_hub.has_cached(name) {
                    if let Some((frame, ttl)) = cluster.cached_event(&self.app_id, name).await {
                        self.app_hub.keep_from_cluster(name, &frame, ttl);
                    }
                }
                // Counted cluster-wide; the member limit too. Without an answer in time, the
                // node decides locally (and re-registers its state in Redis later).
                let joined = cluster
                    .join(
                        &self.app_id,
                        subscribe.name.as_str(),
                        subscribe.member.as_ref(),
                        subscribe.options.max_presence_members,
                        self.conn.socket_id(),
                        subscribe.options.subscription_count,
                    )
                    .await;
                match joined {
                    Ok(JoinAnswer::Joined {
                        members,
                        subscriptions,
                    }) => self.complete_subscribe(subscribe, Some((members, subscriptions))),
                    Ok(JoinAnswer::PresenceFull(max)) => self.refuse(
                        subscribe.name.as_str(),
                        Refusal::limit(SubscribeRefusal::PresenceFull(max).to_string()),
                    ),
                    Err(_) => self.complete_subscribe(subscribe, None),
                }
            }
            Pending::SignIn(answered) => {
                let _ =
                    tokio::time::timeout(super::deferral::SIGNIN_ANSWER_TIMEOUT, answered).await;
            }
        }
    }

    /// Whether a subscribe to `name` must read the cluster's copy of a cache channel's last
    /// event first (cluster mode, nothing cached on this node).
    fn cache_read_waits(&self, name: &ChannelName) -> bool {
        self.node.cluster.is_some() && name.is_cache() && !self.app_hub.has_cached(name.as_str())
    }

    /// Whether a subscribe must wait for the cluster.
    fn subscribe_waits(&self) -> bool {
        #[cfg(test)]
        if self.force_defer {
            return true;
        }
        // Every subscribe is counted cluster-wide by a Redis script.
        self.node.cluster.is_some()
    }

    /// Queues `work`: frames fed from now on wait behind it.
    fn defer(&mut self, work: Pending) {
        self.deferred.set_work(work);
    }

    /// The app as it is now; `None` once it was disabled or deleted (the socket is about to be
    /// closed with 4003 or 4001, and nothing it sends meanwhile takes effect).
    fn app(&self) -> Option<AppRef> {
        self.node.apps.by_id(&self.app_id).filter(|app| app.enabled)
    }

    fn send_error(&self, code: Option<u16>, message: &str) {
        self.conn.outbox().push(server::error(code, message));
        self.node.taps.emit(
            &self.app_id,
            "error",
            None,
            Some(&self.socket_id),
            || match code {
                Some(code) => format!("{code}: {message}"),
                None => message.to_owned(),
            },
        );
    }

    /// Handles one inbound text frame (queued behind pending work, if any: see
    /// [`Session::pending`]).
    pub fn on_text(&mut self, text: &str) {
        if self.deferred.pending() {
            if !self.deferred.push_frame(text) {
                self.send_error(
                    None,
                    "Too many messages sent while an earlier one waits: message dropped",
                );
            }
            return;
        }
        self.handle_text(text);
    }

    fn handle_text(&mut self, text: &str) {
        match ClientFrame::decode(text) {
            Ok(ClientFrame::Ping) => {
                self.conn.outbox().push(server::pong());
            }
            Ok(ClientFrame::Pong) => {}
            Ok(ClientFrame::Subscribe {
                channel,
                auth,
                channel_data,
            }) => self.subscribe(&channel, auth.as_deref(), channel_data.as_deref()),
            Ok(ClientFrame::Unsubscribe { channel }) => self.unsubscribe(&channel),
            Ok(ClientFrame::Signin { auth, user_data }) => self.sign_in(&auth, &user_data),
            Ok(ClientFrame::ClientEvent {
                event,
                channel,
                data,
            }) => self.client_event(&event, &channel, &data),
            Err(error) => self.send_error(None, &error.to_string()),
        }
    }

    /// Handles a binary frame (never supported).
    pub fn on_binary(&mut self) {
        self.send_error(None, &FrameError::Binary.to_string());
    }

    fn refuse(&self, channel: &str, refusal: Refusal) {
        self.send_error(refusal.code, &refusal.message);
        self.conn.outbox().push(server::subscription_error(
            channel,
            refusal.kind,
            &refusal.message,
            refusal.status,
        ));
    }

    /// Takes one subscribe from the connection's budget: `rate` per second, with a burst of
    /// the subscriptions cap so a reconnecting client resubscribes everything at once.
    fn subscribe_allowed(&mut self, app: &AppRef) -> Result<(), Refusal> {
        let Some(rate) = app.limits.subscribes_per_second() else {
            return Ok(());
        };
        let cap = app.limits.subscriptions_per_connection();
        let burst = u32::try_from(cap).unwrap_or(u32::MAX).max(rate);
        let limiter = match &self.subscribe_limiter {
            Some((current, limiter)) if *current == (rate, burst) => limiter,
            _ => {
                let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
                &self
                    .subscribe_limiter
                    .insert(((rate, burst), self.node.settings.clock.rate_limiter(quota)))
                    .1
            }
        };
        limiter.check().map_err(|_| {
            self.node.meters.refused("subscribe_rate");
            Refusal::rate(format!(
                "Subscription rejected due to rate limit ({rate} per second after a burst of {burst})"
            ))
        })
    }

    fn subscribe(&mut self, channel: &str, auth: Option<&str>, channel_data: Option<&str>) {
        let Some(app) = self.app() else { return };
        if let Err(refusal) = self.subscribe_allowed(&app) {
            return self.refuse(channel, refusal);
        }
        let name = match ChannelName::parse(channel, app.limits.channel_name_length()) {
            Ok(name) => name,
            Err(error) => return self.refuse(channel, Refusal::auth(error.to_string())),
        };
        if self.subscriptions.contains_key(channel) {
            return self.send_error(None, &format!("Existing subscription to channel {channel}"));
        }
        let max_subscriptions = app.limits.subscriptions_per_connection();
        if self.subscriptions.len() >= max_subscriptions {
            return self.refuse(
                channel,
                Refusal::limit(format!(
                    "A connection may subscribe to at most {max_subscriptions} channels"
                )),
            );
        }
        let member = match self.authorize(&app, &name, auth, channel_data) {
            Ok(member) => member,
            Err(refusal) => return self.refuse(channel, refusal),
        };
        let options = SubscribeOptions {
            max_presence_members: app.limits.presence_members(),
            subscription_count: app.subscription_count,
            max_channels: app.limits.channels(),
            max_cache_channels: app.limits.cache_channels(),
        };
        let subscribe = PendingSubscribe {
            name,
            member,
            options,
            max_subscriptions,
        };
        if self.subscribe_waits() || self.cache_read_waits(&subscribe.name) {
            return self.defer(Pending::Subscribe(subscribe));
        }
        self.complete_subscribe(subscribe, None);
    }

    /// Registers a subscribe that passed every check with the hub. `joined`: the cluster
    /// counted it (cluster mode), with the presence channel's members cluster-wide and the
    /// channel's subscriptions.
    fn complete_subscribe(
        &mut self,
        subscribe: PendingSubscribe,
        joined: Option<(Option<Members>, u64)>,
    ) {
        let PendingSubscribe {
            name,
            member,
            options,
            max_subscriptions,
        } = subscribe;
        let channel = name.as_str();
        let (members, subscriptions) = match joined {
            Some((members, subscriptions)) => (members, Some(subscriptions)),
            None => (None, None),
        };
        let presence_user = member.as_ref().map(|m| m.user_id.clone());
        let undo = |session: &Session| {
            if let (Some(cluster), Some(_)) = (&session.node.cluster, subscriptions) {
                cluster.leave(
                    &session.app_id,
                    channel,
                    presence_user.as_deref(),
                    options.subscription_count,
                );
            }
        };
        // After a wait for the cluster the app may have been disabled meanwhile (its sockets are
        // being closed): the count is taken back. (A single node never waited: no second look.)
        if subscriptions.is_some() && (self.finished || self.app().is_none()) {
            return undo(self);
        }
        let subscribed = self.app_hub.subscribe_with_members(
            &self.conn,
            &name,
            member,
            options,
            members.as_deref(),
        );
        match subscribed {
            Ok(done) => {
                // Reported once per cluster (the hub reports none in cluster mode).
                if let Some(cluster) = self.node.cluster.as_ref().filter(|_| done.cache_miss) {
                    cluster.report_cache_miss(self.app_hub.clone(), &self.app_id, channel);
                }
                // The subscriber's own count (the others got it from the cluster).
                if let Some(count) = subscriptions.filter(|_| {
                    options.subscription_count
                        && !channel.starts_with("presence-")
                        && !channel.starts_with('#')
                }) {
                    self.conn.outbox().push(server::subscription_count(
                        channel,
                        usize::try_from(count).unwrap_or(usize::MAX),
                    ));
                }
                self.node.taps.emit(
                    &self.app_id,
                    "subscribed",
                    Some(channel),
                    Some(&self.socket_id),
                    || match &presence_user {
                        Some(user) => format!("subscribed as user {user}"),
                        None if done.cache_miss => "subscribed (cache miss)".to_owned(),
                        None => "subscribed".to_owned(),
                    },
                );
                // Member events delivered to the others and a cache replay are deliveries; a
                // replay counts once per connection, channel and cached event.
                let replay = done
                    .cache_replayed
                    .is_some_and(|seq| self.first_replay(channel, seq, max_subscriptions));
                self.usage
                    .count(done.member_events_delivered as u64 + u64::from(replay));
                self.subscriptions
                    .insert(channel.into(), presence_user.map(Into::into));
            }
            Err(
                refusal @ (SubscribeRefusal::PresenceFull(_)
                | SubscribeRefusal::ChannelsFull(_)
                | SubscribeRefusal::CacheChannelsFull(_)),
            ) => {
                undo(self);
                self.refuse(channel, Refusal::limit(refusal.to_string()));
            }
        }
    }

    /// Records that cached event `seq` of `channel` was replayed to this connection; false when
    /// it already was (the replay is then not counted again). The memory stays small: past
    /// `cap` entries, those of channels the connection no longer holds are forgotten (a replay
    /// after that counts again, at most at the subscribe rate).
    fn first_replay(&mut self, channel: &str, seq: u64, cap: usize) -> bool {
        if self.replayed.get(channel) == Some(&seq) {
            return false;
        }
        if !self.replayed.contains_key(channel)
            && self.replayed.len() >= cap.max(REPLAYS_REMEMBERED_MIN)
        {
            let held = &self.subscriptions;
            self.replayed.retain(|name, _| held.contains_key(name));
            if self.replayed.len() >= cap.max(REPLAYS_REMEMBERED_MIN) {
                return true;
            }
        }
        self.replayed.insert(channel.into(), seq);
        true
    }

    /// Checks the right to subscribe and, for presence, works out the member.
    fn authorize(
        &self,
        app: &AppRef,
        name: &ChannelName,
        auth: Option<&str>,
        channel_data: Option<&str>,
    ) -> Result<Option<PresenceMember>, Refusal> {
        let socket_id = self.socket_id.as_str();
        let verify = |data: Option<&str>| {
            let to_sign = auth::channel_string_to_sign(socket_id, name.as_str(), data);
            auth::verify_socket_auth(
                app.credentials(self.node.settings.clock.now_seconds()),
                auth,
                &to_sign,
            )
            .map_err(|e: SocketAuthError| Refusal::auth(e.to_string()))
        };
        match name.kind() {
            ChannelKind::Public => Ok(None),
            ChannelKind::ServerToUser => match (&self.user, name.server_to_user_id()) {
                (Some(user), Some(id)) if user.id == id => Ok(None),
                _ => Err(Refusal::auth(
                    "Only the connection signed in as this user may subscribe to its #server-to-user channel",
                )),
            },
            ChannelKind::Private | ChannelKind::Encrypted => verify(None).map(|()| None),
            ChannelKind::Presence => match channel_data {
                Some(data) => {
                    verify(Some(data))?;
                    self.member_from_channel_data(app, data).map(Some)
                }
                None => {
                    let Some(user) = &self.user else {
                        return Err(Refusal::auth(
                            "Presence subscriptions need channel_data, or a signed-in connection",
                        ));
                    };
                    verify(None)?;
                    let member = PresenceMember {
                        user_id: user.id.clone(),
                        user_info: user.info.clone(),
                    };
                    check_member_size(app, &member)?;
                    Ok(Some(member))
                }
            },
        }
    }

    fn member_from_channel_data(
        &self,
        app: &AppRef,
        data: &str,
    ) -> Result<PresenceMember, Refusal> {
        let member = member_of_channel_data(data)?;
        check_member_size(app, &member)?;
        Ok(member)
    }

    fn unsubscribe(&mut self, channel: &str) {
        if let Some((name, user)) = self.subscriptions.remove_entry(channel) {
            let counts = self.app().is_some_and(|a| a.subscription_count);
            let delivered =
                self.app_hub
                    .unsubscribe(self.conn.socket_id(), &name, user.as_deref(), counts);
            self.usage.count(delivered as u64);
            if let Some(cluster) = &self.node.cluster {
                cluster.leave(&self.app_id, &name, user.as_deref(), counts);
            }
            self.node.taps.emit(
                &self.app_id,
                "unsubscribed",
                Some(channel),
                Some(&self.socket_id),
                || "unsubscribed".to_owned(),
            );
        }
    }

    fn sign_in(&mut self, auth: &str, user_data: &str) {
        let Some(app) = self.app() else { return };
        let to_sign = auth::signin_string_to_sign(&self.socket_id, user_data);
        if let Err(error) = auth::verify_socket_auth(
            app.credentials(self.node.settings.clock.now_seconds()),
            Some(auth),
            &to_sign,
        ) {
            return self.send_error(None, &format!("Signin failed: {error}"));
        }
        let Ok(parsed) = serde_json::from_str::<UserData>(user_data) else {
            return self.send_error(None, "Signin failed: user_data must be a JSON object");
        };
        let id = parsed.id.as_deref().and_then(|raw| {
            raw.get()
                .starts_with('"')
                .then(|| serde_json::from_str::<String>(raw.get()).ok())
                .flatten()
        });
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return self.send_error(
                None,
                "Signin failed: user_data.id must be a non-empty string",
            );
        };
        if id.chars().count() > MAX_USER_ID_CHARS {
            return self.send_error(
                None,
                &format!("Signin failed: user id is longer than {MAX_USER_ID_CHARS} characters"),
            );
        }
        // The id names the user's `#server-to-user-{id}` channel, so it takes the same characters.
        if ChannelName::parse(&format!("{SERVER_TO_USER_PREFIX}{id}"), usize::MAX).is_err() {
            return self.send_error(
                None,
                "Signin failed: user ids may only contain A-Z, a-z, 0-9 and _-=@,.;",
            );
        }
        if let Some(current) = &self.user {
            if current.id != id {
                return self.send_error(
                    None,
                    "Signin failed: this connection is already signed in as another user",
                );
            }
            // Signing in again as the same user refreshes nothing on the hub side.
            self.conn.outbox().push(server::signin_success(user_data));
            return;
        }
        let mut watchlist: Vec<String> = Vec::new();
        for raw in parsed.watchlist.unwrap_or_default() {
            if let Some(watched) = user_id_of(&raw) {
                if !watchlist.contains(&watched) {
                    watchlist.push(watched);
                }
            }
        }
        let truncated = watchlist.len() > MAX_WATCHLIST;
        watchlist.truncate(MAX_WATCHLIST);
        self.conn.outbox().push(server::signin_success(user_data));
        if truncated {
            self.send_error(
                Some(error_code::WATCHLIST_LIMIT),
                "Watchlist limit exceeded. Only the first 100 user IDs are accepted.",
            );
        }
        self.app_hub.sign_in(&self.conn, &id, &watchlist);
        // In a cluster, online/offline and the watchlist's initial statuses are cluster-wide:
        // the signin is queued at once (in order with this socket's sign-out), and the client's
        // later frames wait until the cluster answered its watchlist.
        if let Some(cluster) = &self.node.cluster {
            let answered = cluster.sign_in(&self.app_hub, &self.conn, &id, &watchlist);
            self.defer(Pending::SignIn(answered));
        }
        self.user = Some(SignedIn {
            id,
            info: parsed.user_info,
            watchlist,
        });
    }

    fn client_event(&mut self, event: &str, channel: &str, data: &RawValue) {
        let Some(app) = self.app() else { return };
        if !app.client_events {
            return self.send_error(
                None,
                "Client events are not enabled for this app (enable them in the app's settings)",
            );
        }
        if let Some(max) = app.limits.event_name_length() {
            if event.chars().count() > max {
                return self.send_error(
                    None,
                    &format!("Client event name is longer than {max} characters"),
                );
            }
        }
        if channel.starts_with("private-encrypted-") {
            // As on Pusher: the server cannot check or encrypt the payload for the others
            // (pusher-js refuses to send them too).
            return self.send_error(
                None,
                &format!("Client events are not supported on encrypted channels ({channel})"),
            );
        }
        let is_private = channel.starts_with("private-") || channel.starts_with("presence-");
        if !is_private {
            return self.send_error(
                None,
                &format!(
                    "Client events are only supported on private and presence channels, not on {channel}"
                ),
            );
        }
        let Some(presence_user) = self.subscriptions.get(channel) else {
            return self.send_error(
                None,
                &format!(
                    "Cannot broadcast client event (connection not subscribed to channel {channel})"
                ),
            );
        };
        if let Some(max) = app.limits.event_payload_bytes() {
            if data.get().len() > max {
                return self.send_error(
                    None,
                    &format!("Client event data is larger than {max} bytes"),
                );
            }
        }
        if let Some(rate) = app.limits.client_events_per_second() {
            let limiter = match &self.client_event_limiter {
                Some((current, limiter)) if *current == rate => limiter,
                _ => {
                    let per_second = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
                    let limiter = self
                        .node
                        .settings
                        .clock
                        .rate_limiter(Quota::per_second(per_second));
                    &self.client_event_limiter.insert((rate, limiter)).1
                }
            };
            if limiter.check().is_err() {
                self.node.meters.refused("client_event_rate");
                return self.send_error(
                    Some(error_code::CLIENT_EVENT_RATE_LIMIT),
                    &format!("Client event rejected due to rate limit ({rate} per second)"),
                );
            }
        }
        // In a cluster the event needs the node's lease of the quota; when it does not cover
        // the event, the event waits (deferred) for a refill (`cluster::lease`).
        let quota = app.limits.daily_messages();
        let admitted = match &self.node.cluster {
            None => self.usage.try_publish(quota, 1),
            Some(cluster) => match cluster.daily_now(&self.app_id, &self.usage, quota, 1) {
                crate::cluster::Daily::Admitted => true,
                crate::cluster::Daily::Refused => false,
                crate::cluster::Daily::Short => {
                    return self.defer(Pending::ClientEvent(PendingClientEvent {
                        event: event.into(),
                        channel: channel.into(),
                        data: data.get().into(),
                        presence_user: presence_user.clone(),
                    }));
                }
            },
        };
        if !admitted {
            return self.refuse_client_event_over_quota();
        }
        self.relay_client_event(event, channel, data, presence_user.as_deref());
    }

    fn refuse_client_event_over_quota(&mut self) {
        self.node.meters.refused("daily_quota");
        self.send_error(
            None,
            "Over daily message quota: client event rejected (usage resets at 00:00 UTC)",
        );
    }

    /// Sends an admitted client event (counted already) to the channel's other subscribers
    /// here and on the other nodes, and counts the copies delivered here.
    fn relay_client_event(
        &self,
        event: &str,
        channel: &str,
        data: &RawValue,
        presence_user: Option<&str>,
    ) {
        let frame = server::client_event(event, channel, data, presence_user);
        let delivered = if let Some(cluster) = &self.node.cluster {
            // Decided once: while the node hears the app's channel, this node's Mercure
            // subscribers are left to the forward's outcome (its history append, the ack);
            // otherwise the local delivery bridges it now.
            let usage = self.node.usage.app(&self.app_id);
            let bridge_ack = cluster.bridge_ack_for(&self.app_hub, channel, &frame, usage);
            let bridge_here = bridge_ack.is_none();
            cluster.forward_bridged(
                &self.app_id,
                channel,
                &frame,
                Some(self.conn.socket_id()),
                false,
                bridge_ack,
            );
            self.app_hub
                .relay_bridged(channel, frame, self.conn.socket_id(), bridge_here)
        } else {
            self.app_hub.relay(channel, frame, self.conn.socket_id())
        };
        self.usage.count(delivered as u64);
        self.node.taps.emit(
            &self.app_id,
            "client_event",
            Some(channel),
            Some(&self.socket_id),
            || format!("{event} {} (to {delivered})", data.get()),
        );
        self.app_hub.emit(WebhookKind::ClientEvent, || {
            WebhookEvent::client(channel, event, data, &self.socket_id, presence_user)
        });
    }

    /// Leaves every channel and the signin; called once when the connection ends (also when
    /// the session is dropped without it, as when its task panics).
    pub fn finish(mut self) {
        self.leave();
    }

    fn leave(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.deferred.clear();
        let counts = self.app().is_some_and(|a| a.subscription_count);
        let channels: Vec<(Box<str>, Option<Box<str>>)> = std::mem::take(&mut self.subscriptions)
            .into_iter()
            .collect();
        let (signed_in, watchlist) = match &self.user {
            Some(user) => (Some(user.id.as_str()), user.watchlist.as_slice()),
            None => (None, &[][..]),
        };
        let delivered = self
            .app_hub
            .disconnect(&self.conn, &channels, signed_in, watchlist, counts);
        self.usage.count(delivered as u64);
        if let Some(cluster) = &self.node.cluster {
            for (channel, user) in &channels {
                cluster.leave(&self.app_id, channel, user.as_deref(), counts);
            }
            // Queued after the signin, never waited for.
            if let Some(user_id) = signed_in {
                cluster.sign_out(&self.app_id, user_id);
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The member a presence `channel_data` names (the caller checks its size against the app's).
fn member_of_channel_data(data: &str) -> Result<PresenceMember, Refusal> {
    let parsed: ChannelData = serde_json::from_str(data)
        .map_err(|_| Refusal::auth("Invalid channel_data: expected a JSON object with user_id"))?;
    let user_id = parsed
        .user_id
        .as_deref()
        .and_then(user_id_of)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            Refusal::auth("Invalid channel_data: user_id must be a non-empty string or number")
        })?;
    if user_id.chars().count() > MAX_USER_ID_CHARS {
        return Err(Refusal::limit(format!(
            "Presence user id is longer than {MAX_USER_ID_CHARS} characters"
        )));
    }
    Ok(PresenceMember {
        user_id,
        user_info: parsed.user_info,
    })
}

/// [`member_of_channel_data`] for `crate::fuzzing`: the member, or the refusal's message.
pub(crate) fn presence_member_of(data: &str) -> Result<PresenceMember, String> {
    member_of_channel_data(data).map_err(|refusal| refusal.message)
}

fn check_member_size(app: &AppRef, member: &PresenceMember) -> Result<(), Refusal> {
    if let (Some(max), Some(info)) = (app.limits.presence_member_bytes(), &member.user_info) {
        if info.get().len() > max {
            return Err(Refusal::limit(format!(
                "Presence user_info is larger than {max} bytes"
            )));
        }
    }
    Ok(())
}
