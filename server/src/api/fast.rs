//! The trigger routes' fast path (issue 19): `POST /apps/{app_id}/events` and
//! `POST /apps/{app_id}/batch_events` are answered here, in front of the axum router, so a
//! trigger skips the router's matching, its boxed middleware stack (the REST metrics, CORS), the
//! path extractor and the handler plumbing. What a client sees is the same as through the
//! router: the same checks in the same order (`signed::authenticate`), the same handlers
//! (`trigger_event`, `trigger_events`), the same answers and codes, the headers CORS adds to an
//! actual (not preflight) request, and the same REST metrics under the route's pattern.
//!
//! Only the plain form is taken: an app id without `%` (so the raw segment is what axum's path
//! extractor would decode). Anything else (another method, a percent-encoded id, a trailing
//! slash) goes to the router as before.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::Either;
use tower::Service;

use crate::api::signed::{authenticate, parse_json};
use crate::api::{trigger_event, trigger_events, ApiError};
use crate::node::SharedNode;

/// The two routes the fast path answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Events,
    Batch,
}

impl Route {
    /// The route and the app id of a `POST` to `path`, when the fast path takes it.
    fn of(path: &str) -> Option<(Route, &str)> {
        let (app_id, tail) = path.strip_prefix("/apps/")?.split_once('/')?;
        if app_id.is_empty() || app_id.contains('%') {
            return None;
        }
        match tail {
            "events" => Some((Route::Events, app_id)),
            "batch_events" => Some((Route::Batch, app_id)),
            _ => None,
        }
    }

    /// The route's pattern, as the router's REST metrics label it.
    fn pattern(self) -> &'static str {
        match self {
            Route::Events => "/apps/{app_id}/events",
            Route::Batch => "/apps/{app_id}/batch_events",
        }
    }
}

/// The `Vary` CORS adds to every answer of the REST routes (`api::router`'s `CorsLayer`).
const VARY: &str = "origin, access-control-request-method, access-control-request-headers";

/// The router `inner` with the trigger routes answered in front of it.
#[derive(Clone)]
pub struct FastRest<S> {
    inner: S,
    node: SharedNode,
}

impl<S> FastRest<S> {
    /// `inner` (the whole router, with its state) behind the fast path.
    pub fn new(inner: S, node: SharedNode) -> FastRest<S> {
        FastRest { inner, node }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request<Body>> for FastRest<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.method() == Method::POST {
            if let Some((route, _)) = Route::of(request.uri().path()) {
                return Either::Right(Box::pin(answer(self.node.clone(), route, request)));
            }
        }
        Either::Left(self.inner.call(request))
    }
}

/// Answers a trigger or a batch, with CORS's headers, and counts it in the REST metrics.
async fn answer(
    node: SharedNode,
    route: Route,
    request: Request<Body>,
) -> Result<Response, Infallible> {
    let started = tokio::time::Instant::now();
    let (parts, body) = request.into_parts();
    let app_id = Route::of(parts.uri.path()).map(|(_, id)| id);
    let outcome: Result<Response, ApiError> = async {
        let signed = authenticate(&node, &parts, app_id, body).await?;
        match route {
            Route::Events => {
                let request = parse_json(&signed.body)?;
                let answer = trigger_event(&node, signed.app, request).await?;
                Ok(json(answer.channels.is_none(), Json(answer)))
            }
            Route::Batch => {
                let request = parse_json(&signed.body)?;
                let answer = trigger_events(&node, signed.app, request).await?;
                Ok(json(answer.batch.is_none(), Json(answer)))
            }
        }
    }
    .await;
    let mut response = outcome.unwrap_or_else(IntoResponse::into_response);
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static(VARY));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    let seconds = started.elapsed().as_secs_f64();
    node.meters
        .rest(route.pattern(), response.status().as_u16(), seconds);
    Ok(response)
}

/// `answer` as JSON; `{}` from a static body when `empty` (what serializing it gives: the answer
/// of every trigger that asks for no attributes).
fn json(empty: bool, answer: impl IntoResponse) -> Response {
    if !empty {
        return answer.into_response();
    }
    let mut response = Response::new(Body::from("{}"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_empty_answer_is_what_serializing_gives() {
        use crate::protocol::{BatchResponse, TriggerResponse};
        assert_eq!(
            serde_json::to_string(&TriggerResponse::default()).unwrap(),
            "{}"
        );
        assert_eq!(
            serde_json::to_string(&BatchResponse::default()).unwrap(),
            "{}"
        );
    }

    #[test]
    fn only_the_plain_trigger_paths_are_taken() {
        assert_eq!(Route::of("/apps/1/events"), Some((Route::Events, "1")));
        assert_eq!(
            Route::of("/apps/abc/batch_events"),
            Some((Route::Batch, "abc"))
        );
        for path in [
            "/apps//events",
            "/apps/1/events/",
            "/apps/%31/events",
            "/apps/1/channels",
            "/apps/1",
            "/app/1/events",
            "/apps/1/x/events",
        ] {
            assert_eq!(Route::of(path), None, "{path}");
        }
    }
}
