//! The subscriptions API (`GET .../.well-known/mercure/subscriptions[/...]`): the active
//! subscriptions a token may see, this node's and, in a cluster, the other live nodes' from
//! one Redis read per app a second, charged to the app's REST read budget.

use super::*;

pub(super) async fn app_api(
    State(node): State<SharedNode>,
    Extension(hubs): Extension<Hubs>,
    Path(params): Path<Vec<(String, String)>>,
    request: Request,
) -> Response {
    let app_id = params
        .iter()
        .find(|(name, _)| name == "app_id")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    subscriptions_api(node, hubs, app_id, path, request.headers()).await
}

pub(super) async fn root_api(
    State(node): State<SharedNode>,
    Extension(hubs): Extension<Hubs>,
    request: Request,
) -> Response {
    let app_id = match root_app(&node) {
        Ok(app_id) => app_id,
        Err(response) => return *response,
    };
    // Documents name the app's own hub path.
    let path = format!("/apps/{app_id}{}", request.uri().path());
    subscriptions_api(node, hubs, app_id, path, request.headers()).await
}

/// `GET .../subscriptions[/...]`: the active subscriptions the token may see.
async fn subscriptions_api(
    node: SharedNode,
    hubs: Hubs,
    app_id: String,
    path: String,
    headers: &HeaderMap,
) -> Response {
    let app = match find_app(&node, &app_id) {
        Ok(app) => app,
        Err(response) => return *response,
    };
    let mercure = hubs.app(&app.id, &node.hub.app(&app.id));
    let mut response = match grants(&node, &app, &mercure, headers, None, Draft::Draft07) {
        Err(response) => *response,
        Ok(None) => unauthorized(
            StatusCode::UNAUTHORIZED,
            www_authenticate(Draft::Draft07, None),
            "the subscriptions API needs a token",
        ),
        Ok(Some(grants)) if !grants.subscribe.iter().any(|s| s.matches(&path)) => unauthorized(
            StatusCode::FORBIDDEN,
            www_authenticate(grants.draft.unwrap_or(Draft::Draft07), None),
            "the token may not read these subscriptions",
        ),
        Ok(Some(_)) if !read_budget(&node, &app) => read_refused(&app),
        Ok(Some(grants)) => {
            let (docs, last) = all_documents(&node, &mercure, &path).await;
            let draft07 = grants.draft != Some(Draft::Draft08);
            let body = subscriptions::answer(&path, docs, draft07, &last);
            let content_type = if draft07 {
                "application/ld+json"
            } else {
                "application/json"
            };
            let mut response =
                ([(header::CONTENT_TYPE, content_type)], body.to_string()).into_response();
            let link = format!(
                "<{}>; rel=\"mercure\"; last-event-id=\"{last}\"; type=\"mercure\"; content-type=\"application/json\"",
                hub_url(&node, headers, &app.id)
            );
            if let Ok(link) = HeaderValue::from_str(&link) {
                response.headers_mut().insert(header::LINK, link);
            }
            response
        }
    };
    decorate(&node, &mut response, &app, headers);
    response
}

/// Charges one subscriptions API call to the app's REST read budget (`Budget::Reads`, shared
/// with the REST API's channel and user queries, this node's share of it in a cluster):
/// whether it was admitted.
fn read_budget(node: &SharedNode, app: &AppRef) -> bool {
    let rate = app.limits.read_requests_per_second();
    let admitted = node
        .rates
        .check(&app.id, crate::hub::Budget::Reads, rate, 1)
        .is_ok();
    if !admitted {
        node.meters.refused("rest_reads_rate");
    }
    admitted
}

/// The answer to a subscriptions API call over the app's read budget (429, retry in a second:
/// the budget is per second).
fn read_refused(app: &AppRef) -> Response {
    let rate = app.limits.read_requests_per_second().unwrap_or_default();
    let mut response = text(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Rate limit exceeded: at most {rate} read requests per second for this app"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The active subscriptions' documents under `path` (at most
/// [`subscriptions::MAX_DOCUMENTS`] and [`shared::MAX_ANSWER_BYTES`] of JSON) and the history's
/// last update id: this node's, and in a cluster the other live nodes' and the last id of the
/// history in Redis, from the app's Redis read of the last second (this node's alone, with its
/// own history's last id, when Redis does not answer in time).
async fn all_documents(
    node: &SharedNode,
    mercure: &AppMercure,
    path: &str,
) -> (Vec<serde_json::Value>, String) {
    let (local, mut last) = mercure.documents(path);
    let mut bytes = 0;
    let mut docs = Vec::new();
    for doc in local {
        bytes += doc.to_string().len();
        if bytes > shared::MAX_ANSWER_BYTES {
            return (docs, last);
        }
        docs.push(doc);
    }
    let Some(cluster) = &node.cluster else {
        return (docs, last);
    };
    match mercure.shared_read(cluster).await {
        Ok(shared) => {
            let prefix = format!("{}/", path.trim_end_matches('/'));
            for (id, doc) in &shared.documents {
                if id != path && !id.starts_with(&prefix) {
                    continue;
                }
                bytes += doc.len();
                if docs.len() == subscriptions::MAX_DOCUMENTS || bytes > shared::MAX_ANSWER_BYTES {
                    break;
                }
                if let Ok(doc) = serde_json::from_str::<serde_json::Value>(doc) {
                    docs.push(doc);
                }
            }
            last = match &shared.last {
                Some((entry, id)) if id.is_empty() => crate::cluster::mercure::bridged_id(*entry),
                Some((_, id)) => id.clone(),
                None => "earliest".to_owned(),
            };
            (docs, last)
        }
        Err(error) => {
            // At the first and every 100th: not per request while Redis is down.
            static FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let count = FAILED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if count == 1 || count % 100 == 0 {
                tracing::warn!(
                    app_id = mercure.app_id().as_deref(),
                    %error,
                    failures = count,
                    "the subscriptions API answered with this node's subscriptions only"
                );
            }
            (docs, last)
        }
    }
}
