//! The signed-request check shared by every REST route.

use axum::http::{Method, Uri};

use crate::api::ApiError;
use crate::auth::{self, RestRequest};
use crate::node::SharedNode;
use crate::protocol::query_pairs;
use crate::tenants::AppRef;

/// Finds the app and verifies the request's signature. With `app_id`, the app is the one in the
/// path and `auth_key` must be one of its keys; without, the app is `auth_key`'s.
pub(super) fn authenticate(
    node: &SharedNode,
    method: &Method,
    uri: &Uri,
    app_id: Option<&str>,
    body: &[u8],
) -> Result<AppRef, ApiError> {
    let params = query_pairs(uri.query());
    let key = auth::rest_auth_key(&params)
        .ok_or_else(|| ApiError::Unauthorized("Missing parameter: auth_key".into()))?;
    let app = match app_id {
        Some(id) => {
            let app = node
                .apps
                .by_id(id)
                .ok_or_else(|| ApiError::NotFound(format!("Unknown app: {id}")))?;
            if app.secret_for(key).is_none() {
                return Err(ApiError::Unauthorized(format!(
                    "Invalid auth_key: {key} is not a key of app {id}"
                )));
            }
            app
        }
        None => node
            .apps
            .by_key(key)
            .ok_or_else(|| ApiError::Unauthorized(format!("Unknown auth_key: {key}")))?,
    };
    let secret = app.secret_for(key).unwrap_or_default();
    let raw_path = uri.path();
    let request = RestRequest {
        method: method.as_str(),
        path: raw_path,
        params: &params,
        body,
    };
    let now = crate::clock::unix_seconds();
    if let Err(error) = auth::verify_rest(&request, secret, now) {
        // A client may have signed the decoded path while its HTTP stack encoded it.
        let decoded = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
        let retry = matches!(error, auth::RestAuthError::BadSignature(_)) && decoded != raw_path;
        let retried = retry
            && auth::verify_rest(
                &RestRequest {
                    path: &decoded,
                    ..request
                },
                secret,
                now,
            )
            .is_ok();
        if !retried {
            return Err(error.into());
        }
    }
    if !app.enabled {
        return Err(ApiError::Forbidden("Application disabled".into()));
    }
    Ok(app)
}
