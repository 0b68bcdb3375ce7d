//! The REST API under `/apps/{app_id}/`: trigger, batch, channel queries and user termination,
//! plus pusher-http-python's `/users/{id}/terminate_connections` path. Every route takes a
//! signed-request extractor (`signed.rs`), which verifies the signature before the handler runs;
//! apps come from the in-memory cache, never from SQL. Answers are the types of
//! `protocol::rest`.

mod error;
mod fast;
mod rate;
mod signed;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
pub mod v1;

pub use crate::budget::BodyBudget;
pub use error::ApiError;
pub use fast::FastRest;
pub use rate::{Budget, RateLimits};
pub use signed::{Signed, SignedJson};

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::Method;
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::cors::{Any, CorsLayer};

use crate::cluster::{Ordered, ECHO_TIMEOUT};
use crate::hub::AppHub;
use crate::node::SharedNode;
use crate::protocol::{
    BatchBody, BatchResponse, CachedEvent, ChannelAttributes, ChannelKind, ChannelName,
    ChannelResponse, ChannelsResponse, EventData, PresenceUser, SocketId, TerminateResponse,
    TriggerBody, TriggerResponse, UsersResponse,
};
use crate::tenants::AppRef;

/// The largest REST body accepted (ten 10 KB events with their envelopes fit easily).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The REST routes, with CORS.
pub fn router() -> Router<SharedNode> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .max_age(std::time::Duration::from_secs(3600));
    Router::new()
        .route("/apps/{app_id}/events", post(trigger))
        .route("/apps/{app_id}/batch_events", post(trigger_batch))
        .route("/apps/{app_id}/channels", get(channels))
        .route("/apps/{app_id}/channels/{channel}", get(channel))
        .route(
            "/apps/{app_id}/channels/{channel}/users",
            get(channel_users),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(terminate_connections),
        )
        .route(
            "/users/{user_id}/terminate_connections",
            post(terminate_connections_python),
        )
        .layer(cors)
}

/// One event, validated against the app's limits and ready to publish.
struct Publish {
    name: String,
    data: String,
    channels: Vec<ChannelName>,
    except: Option<SocketId>,
    info: Vec<Attribute>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attribute {
    UserCount,
    SubscriptionCount,
    Cache,
}

fn parse_attributes(info: Option<&str>, allow_cache: bool) -> Result<Vec<Attribute>, ApiError> {
    let mut attributes = Vec::new();
    for part in info
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let attribute = match part {
            "user_count" => Attribute::UserCount,
            "subscription_count" => Attribute::SubscriptionCount,
            "cache" if allow_cache => Attribute::Cache,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Unsupported info attribute: {other}"
                )))
            }
        };
        if !attributes.contains(&attribute) {
            attributes.push(attribute);
        }
    }
    Ok(attributes)
}

fn parse_channel(app: &AppRef, name: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(name, app.limits.channel_name_length())
        .map_err(|e| ApiError::BadRequest(format!("{e}: {name:?}")))
}

fn validate_event(
    app: &AppRef,
    name: Option<String>,
    data: Option<EventData>,
    channel_names: Vec<String>,
    socket_id: Option<String>,
    info: Option<String>,
) -> Result<Publish, ApiError> {
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("Missing event name: \"name\" is required".into()))?;
    if let Some(max) = app.limits.event_name_length() {
        if name.chars().count() > max {
            return Err(ApiError::BadRequest(format!(
                "Event name is too long (at most {max} characters)"
            )));
        }
    }
    let EventData(data) = data
        .ok_or_else(|| ApiError::BadRequest("Missing event data: \"data\" is required".into()))?;
    if let Some(max) = app.limits.event_payload_bytes() {
        if data.len() > max {
            return Err(ApiError::PayloadTooLarge(format!(
                "Event data is too large: {} bytes, at most {max}",
                data.len()
            )));
        }
    }
    if channel_names.is_empty() {
        return Err(ApiError::BadRequest(
            "Missing channels: give \"channels\" (a list) or \"channel\"".into(),
        ));
    }
    if let Some(max) = app.limits.channels_per_trigger() {
        if channel_names.len() > max {
            return Err(ApiError::BadRequest(format!(
                "Too many channels: {} given, at most {max}",
                channel_names.len()
            )));
        }
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(channel_names.len());
    for channel in &channel_names {
        let parsed = parse_channel(app, channel)?;
        if !channels.contains(&parsed) {
            channels.push(parsed);
        }
    }
    if channels.len() > 1 {
        if channels.iter().any(|c| c.kind() == ChannelKind::Encrypted) {
            return Err(ApiError::BadRequest(
                "Cannot trigger on several channels when one of them is encrypted".into(),
            ));
        }
        if channels
            .iter()
            .any(|c| c.kind() == ChannelKind::ServerToUser)
        {
            return Err(ApiError::BadRequest(
                "A #server-to-user channel must be the only channel of a trigger".into(),
            ));
        }
    }
    let except = match socket_id {
        None => None,
        Some(id) => Some(
            id.parse::<SocketId>()
                .map_err(|_| ApiError::BadRequest(format!("Invalid socket_id: {id:?}")))?,
        ),
    };
    let info = parse_attributes(info.as_deref(), false)?;
    Ok(Publish {
        name,
        data,
        channels,
        except,
        info,
    })
}

fn channel_attributes(
    app_hub: &AppHub,
    channel: &ChannelName,
    attributes: &[Attribute],
) -> ChannelAttributes {
    let info = app_hub.channel_info(channel.as_str());
    let mut out = ChannelAttributes::default();
    for attribute in attributes {
        match attribute {
            Attribute::UserCount if channel.kind() == ChannelKind::Presence => {
                out.user_count = Some(info.user_count);
            }
            Attribute::SubscriptionCount => {
                out.subscription_count = Some(info.subscription_count);
            }
            _ => {}
        }
    }
    out
}

/// Takes `cost` from the app's `budget`, or answers 429 with `Retry-After`.
fn rate_limit(
    node: &SharedNode,
    app: &AppRef,
    budget: Budget,
    cost: usize,
) -> Result<(), ApiError> {
    let (rate, what) = match budget {
        Budget::BackendEvents => (app.limits.backend_events_per_second(), "events"),
        Budget::Reads => (app.limits.read_requests_per_second(), "read requests"),
    };
    let cost = u32::try_from(cost).unwrap_or(u32::MAX);
    node.rates
        .check(&app.id, budget, rate, cost)
        .map_err(|wait| {
            node.meters.refused(match budget {
                Budget::BackendEvents => "rest_events_rate",
                Budget::Reads => "rest_reads_rate",
            });
            node.taps.emit(&app.id, "error", None, None, || {
                format!("REST request refused: over {what} rate limit (429)")
            });
            let rate = rate.unwrap_or_default();
            // In a cluster, the node's share is what it enforces (see `hub::rate`).
            let share = node.rates.share(rate);
            let on_one_node = if share == rate {
                String::new()
            } else {
                format!(" ({share} per second on one node, its share)")
            };
            match wait {
                Some(wait) => ApiError::TooManyRequests {
                    message: format!(
                        "Rate limit exceeded: at most {rate} {what} per second for this \
                         app{on_one_node}"
                    ),
                    retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                },
                None => ApiError::TooManyRequests {
                    message: format!(
                        "Rate limit exceeded: this request carries {cost} {what}, more than the \
                         app's {rate} per second; send smaller batches"
                    ),
                    retry_after: 1,
                },
            }
        })
}

/// The message the REST API answers once the app's daily quota is used up.
pub const OVER_DAILY_QUOTA: &str = "Over daily message quota";

/// Admits a publish of `events` under the app's daily quota, counting its target channels
/// (one message each) in the same step; refuses it when the day's count is at the quota.
/// In cluster mode the quota is the cluster's: the node admits from its lease
/// (`cluster::lease`), waiting for a refill when it is empty.
async fn admit(node: &SharedNode, app: &AppRef, events: &[Publish]) -> Result<(), ApiError> {
    let channels: u64 = events.iter().map(|e| e.channels.len() as u64).sum();
    let usage = node.usage.app(&app.id);
    let quota = app.limits.daily_messages();
    let admitted = match &node.cluster {
        None => usage.try_publish(quota, channels),
        Some(cluster) => cluster.admit_daily(&app.id, &usage, quota, channels).await,
    };
    if admitted {
        Ok(())
    } else {
        node.meters.refused("daily_quota");
        node.taps.emit(&app.id, "error", None, None, || {
            format!("REST publish refused: {OVER_DAILY_QUOTA}")
        });
        Err(ApiError::Forbidden(OVER_DAILY_QUOTA.into()))
    }
}

/// Publishes an admitted event (its channels are already counted) and counts the copies
/// delivered. Returns its channels' attributes when the event asked for some. In cluster mode, a
/// channel whose copies on this node are delivered on the echo from Redis (so sequential
/// publishes through any node keep their order) joins `ordered` with the event's index `at`,
/// for [`settle`] to await once the whole request is queued.
fn publish(
    node: &SharedNode,
    app: &AppRef,
    event: &Publish,
    at: usize,
    ordered: &mut Settling,
) -> Option<BTreeMap<String, ChannelAttributes>> {
    let app_hub = node.hub.app(&app.id);
    let mut delivered = 0u64;
    for channel in &event.channels {
        let copies = match &node.cluster {
            None => app_hub.publish(channel, &event.name, &event.data, event.except),
            // Serialized once: delivered here, and the same bytes to the other nodes.
            Some(cluster) => {
                let frame = crate::protocol::server::channel_event(
                    &event.name,
                    channel.as_str(),
                    &event.data,
                );
                if let Some(waiting) = cluster.publish_ordered(
                    &app_hub,
                    &node.usage,
                    channel,
                    &frame,
                    event.except,
                    cluster.keep_for(&app.id, channel, frame.len(), event.data.len(), &app.limits),
                ) {
                    ordered.echoes.push((at, waiting));
                    continue;
                }
                // The bridge decided once: acked by the forward, or bridged here now.
                let usage = node.usage.app(&app.id);
                let bridge_ack = cluster.bridge_ack_for(&app_hub, channel.as_str(), &frame, usage);
                let copies = app_hub.publish_frame_bridged(
                    channel,
                    &frame,
                    &event.data,
                    event.except,
                    bridge_ack.is_none(),
                );
                if let Some(stored) = cluster.forward_kept(
                    &app.id,
                    channel,
                    &frame,
                    &event.data,
                    event.except,
                    &app.limits,
                    bridge_ack,
                ) {
                    ordered.stored.push(stored);
                }
                copies
            }
        };
        delivered += copies as u64;
        node.taps
            .emit(&app.id, "publish", Some(channel.as_str()), None, || {
                format!("{} {} (to {copies})", event.name, event.data)
            });
    }
    node.usage.app(&app.id).count(delivered);
    if event.info.is_empty() {
        return None;
    }
    let channels = event
        .channels
        .iter()
        .map(|channel| {
            (
                channel.as_str().to_owned(),
                channel_attributes(&app_hub, channel, &event.info),
            )
        })
        .collect();
    Some(channels)
}

/// What a REST request waits for before it answers, in cluster mode: its publishes delivered
/// on their echo ([`Ordered`], by event index) and its cache channels' events stored in Redis.
#[derive(Default)]
struct Settling {
    echoes: Vec<(usize, Ordered)>,
    stored: Vec<tokio::sync::oneshot::Receiver<bool>>,
}

/// Waits (at most [`ECHO_TIMEOUT`] for them all) until the request's publishes that wait for
/// their echo were delivered on this node, in Redis's order (or locally, when Redis did not
/// take them in time), so the response follows them: a backend's next publish, through any
/// node, comes after them everywhere.
async fn settle(node: &SharedNode, app: &AppRef, events: &[Publish], settling: Settling) {
    let Settling { echoes, stored } = settling;
    if echoes.is_empty() && stored.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + ECHO_TIMEOUT;
    // Cache channels' last events stored in Redis before the answer (an outage: given up at
    // the deadline; the event was delivered anyway).
    for taken in stored {
        let _ = tokio::time::timeout_at(deadline, taken).await;
    }
    for (at, waiting) in echoes {
        let channel = waiting.channel().to_owned();
        let copies = waiting.delivered(deadline).await;
        let event = &events[at];
        node.taps
            .emit(&app.id, "publish", Some(&channel), None, || {
                format!("{} {} (to {copies})", event.name, event.data)
            });
    }
}

/// In cluster mode, a publish's `info` attributes from the cluster-wide state (this node's
/// stay when Redis does not answer in time).
async fn clustered_info(
    node: &SharedNode,
    app: &AppRef,
    event: &Publish,
    info: &mut Option<BTreeMap<String, ChannelAttributes>>,
) {
    let (Some(cluster), Some(map)) = (&node.cluster, info.as_mut()) else {
        return;
    };
    for channel in &event.channels {
        let Some(attributes) = map.get_mut(channel.as_str()) else {
            continue;
        };
        let Ok((subscriptions, users)) = cluster.channel_counts(&app.id, channel.as_str()).await
        else {
            return;
        };
        if attributes.user_count.is_some() {
            attributes.user_count = Some(users);
        }
        if attributes.subscription_count.is_some() {
            attributes.subscription_count = Some(subscriptions);
        }
    }
}

/// The app's occupied channels (cluster-wide in cluster mode, this node's when Redis does not
/// answer in time).
async fn channel_list(
    node: &SharedNode,
    app_id: &str,
    prefix: &str,
) -> Vec<(String, usize, usize)> {
    if let Some(cluster) = &node.cluster {
        if let Ok(list) = cluster.channels(app_id, prefix).await {
            return list;
        }
    }
    node.hub
        .existing_app(app_id)
        .map(|h| h.channels(prefix))
        .unwrap_or_default()
}

/// `POST /apps/{app_id}/events` (through the router; most triggers take [`fast`]'s path).
async fn trigger(
    State(node): State<SharedNode>,
    SignedJson { app, body: request }: SignedJson<TriggerBody>,
) -> Result<Json<TriggerResponse>, ApiError> {
    trigger_event(&node, app, request).await.map(Json)
}

/// A verified trigger: validated, rate-limited, admitted under the quota, published.
async fn trigger_event(
    node: &SharedNode,
    app: AppRef,
    request: TriggerBody,
) -> Result<TriggerResponse, ApiError> {
    let channels = match (request.channels, request.channel) {
        (Some(list), _) => list,
        (None, Some(one)) => vec![one],
        (None, None) => Vec::new(),
    };
    let event = validate_event(
        &app,
        request.name,
        request.data,
        channels,
        request.socket_id,
        request.info,
    )?;
    rate_limit(node, &app, Budget::BackendEvents, 1)?;
    admit(node, &app, std::slice::from_ref(&event)).await?;
    let mut ordered = Settling::default();
    let mut channels = publish(node, &app, &event, 0, &mut ordered);
    settle(node, &app, std::slice::from_ref(&event), ordered).await;
    clustered_info(node, &app, &event, &mut channels).await;
    Ok(TriggerResponse { channels })
}

/// `POST /apps/{app_id}/batch_events` (through the router; most batches take [`fast`]'s path).
async fn trigger_batch(
    State(node): State<SharedNode>,
    SignedJson { app, body: request }: SignedJson<BatchBody>,
) -> Result<Json<BatchResponse>, ApiError> {
    trigger_events(&node, app, request).await.map(Json)
}

/// A verified batch: every event validated before any is published.
async fn trigger_events(
    node: &SharedNode,
    app: AppRef,
    request: BatchBody,
) -> Result<BatchResponse, ApiError> {
    if let Some(max) = app.limits.batch_size() {
        if request.batch.len() > max {
            return Err(ApiError::BadRequest(format!(
                "Batch too large: {} events, at most {max}",
                request.batch.len()
            )));
        }
    }
    // Validate every event before publishing any, so a bad batch publishes nothing.
    let events = request
        .batch
        .into_iter()
        .map(|e| {
            let channels = e.channel.into_iter().collect();
            validate_event(&app, e.name, e.data, channels, e.socket_id, e.info)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rate_limit(node, &app, Budget::BackendEvents, events.len())?;
    admit(node, &app, &events).await?;
    let wants_info = events.iter().any(|e| !e.info.is_empty());
    // Every event is queued first (in order, in the one publishing queue), then the echoes are
    // awaited together: a batch costs one round trip to Redis, not one per event.
    let mut ordered = Settling::default();
    let infos: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(at, event)| publish(node, &app, event, at, &mut ordered))
        .collect();
    settle(node, &app, &events, ordered).await;
    let mut results = Vec::with_capacity(events.len());
    for (event, mut info) in events.iter().zip(infos) {
        clustered_info(node, &app, event, &mut info).await;
        // Each batch entry names one channel; its attributes go flat in the entry.
        let entry = info
            .and_then(|channels| channels.into_values().next())
            .unwrap_or_default();
        results.push(entry);
    }
    Ok(BatchResponse {
        batch: wants_info.then_some(results),
    })
}

/// `GET /apps/{app_id}/channels`.
async fn channels(
    State(node): State<SharedNode>,
    request: Signed,
) -> Result<Json<ChannelsResponse>, ApiError> {
    let app = &request.app;
    rate_limit(&node, app, Budget::Reads, 1)?;
    let prefix = request.param("filter_by_prefix").unwrap_or("");
    let attributes = parse_attributes(request.param("info"), false)?;
    if attributes.contains(&Attribute::UserCount) && !prefix.starts_with("presence-") {
        return Err(ApiError::BadRequest(
            "user_count may only be requested with filter_by_prefix=presence-".into(),
        ));
    }
    let mut list = BTreeMap::new();
    for (name, subscriptions, users) in channel_list(&node, &app.id, prefix).await {
        let mut attrs = ChannelAttributes::default();
        for attribute in &attributes {
            match attribute {
                Attribute::UserCount => attrs.user_count = Some(users),
                Attribute::SubscriptionCount => attrs.subscription_count = Some(subscriptions),
                Attribute::Cache => {}
            }
        }
        list.insert(name, attrs);
    }
    Ok(Json(ChannelsResponse { channels: list }))
}

/// `GET /apps/{app_id}/channels/{channel}`.
async fn channel(
    State(node): State<SharedNode>,
    Path((_app_id, channel)): Path<(String, String)>,
    request: Signed,
) -> Result<Json<ChannelResponse>, ApiError> {
    let app = &request.app;
    rate_limit(&node, app, Budget::Reads, 1)?;
    let name = parse_channel(app, &channel)?;
    let attributes = parse_attributes(request.param("info"), true)?;
    if attributes.contains(&Attribute::UserCount) && name.kind() != ChannelKind::Presence {
        return Err(ApiError::BadRequest(
            "user_count is only available on presence channels".into(),
        ));
    }
    if attributes.contains(&Attribute::Cache) && !name.is_cache() {
        return Err(ApiError::BadRequest(
            "cache is only available on cache channels".into(),
        ));
    }
    let state = node
        .hub
        .existing_app(&app.id)
        .map(|h| h.channel_info(name.as_str()));
    let (mut subscriptions, mut users, mut cache) = state
        .map(|s| (s.subscription_count, s.user_count, s.cache))
        .unwrap_or((0, 0, None));
    if let Some(cluster) = &node.cluster {
        if let Ok(counts) = cluster.channel_counts(&app.id, name.as_str()).await {
            (subscriptions, users) = counts;
        }
        // The last event published through any node is Redis's (a trigger answers once it is
        // stored there); this node's copy may be older, so it answers only when Redis cannot.
        if attributes.contains(&Attribute::Cache) {
            if let Ok(stored) = cluster.read_cached_event(&app.id, name.as_str()).await {
                cache = stored.and_then(|(frame, ttl)| {
                    Some((
                        crate::protocol::server::channel_event_data(&frame)?,
                        ttl.as_secs().max(1),
                    ))
                });
            }
        }
    }
    let mut out = ChannelResponse {
        occupied: subscriptions > 0,
        ..ChannelResponse::default()
    };
    for attribute in &attributes {
        match attribute {
            Attribute::UserCount => out.user_count = Some(users),
            Attribute::SubscriptionCount => out.subscription_count = Some(subscriptions),
            Attribute::Cache => {
                out.cache = Some(cache.take().map(|(data, ttl)| CachedEvent { data, ttl }));
            }
        }
    }
    Ok(Json(out))
}

/// `GET /apps/{app_id}/channels/{channel}/users`.
async fn channel_users(
    State(node): State<SharedNode>,
    Path((_app_id, channel)): Path<(String, String)>,
    Signed { app, .. }: Signed,
) -> Result<Json<UsersResponse>, ApiError> {
    rate_limit(&node, &app, Budget::Reads, 1)?;
    let name = parse_channel(&app, &channel)?;
    if name.kind() != ChannelKind::Presence {
        return Err(ApiError::BadRequest(
            "Users can only be listed on presence channels".into(),
        ));
    }
    let clustered = match &node.cluster {
        Some(cluster) => cluster.presence_users(&app.id, name.as_str()).await.ok(),
        None => None,
    };
    let users = match clustered {
        Some(users) => users,
        None => node
            .hub
            .existing_app(&app.id)
            .map(|h| h.presence_users(name.as_str()))
            .unwrap_or_default(),
    }
    .into_iter()
    .map(|id| PresenceUser { id })
    .collect();
    Ok(Json(UsersResponse { users }))
}

fn terminate(node: &SharedNode, app: &AppRef, user_id: &str) -> Json<TerminateResponse> {
    if let Some(app_hub) = node.hub.existing_app(&app.id) {
        let closed = app_hub.terminate_user(user_id);
        tracing::info!(app_id = %app.id, closed, "terminated a user's connections");
    }
    if let Some(cluster) = &node.cluster {
        cluster.terminate_user(&app.id, user_id);
    }
    Json(TerminateResponse {})
}

/// `POST /apps/{app_id}/users/{user_id}/terminate_connections`.
async fn terminate_connections(
    State(node): State<SharedNode>,
    Path((_app_id, user_id)): Path<(String, String)>,
    Signed { app, .. }: Signed,
) -> Json<TerminateResponse> {
    terminate(&node, &app, &user_id)
}

/// `POST /users/{user_id}/terminate_connections`, the path pusher-http-python uses; the app is
/// the one `auth_key` belongs to.
async fn terminate_connections_python(
    State(node): State<SharedNode>,
    Path(user_id): Path<String>,
    Signed { app, .. }: Signed,
) -> Json<TerminateResponse> {
    terminate(&node, &app, &user_id)
}
