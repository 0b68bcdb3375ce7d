//! `ApiError`: every REST refusal, mapped to its status in one place. Bodies are short plain
//! text in Pusher's style; internals never leak.

use axum::extract::rejection::PathRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::RestAuthError;

/// A refused REST request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or breaks a limit other than the payload size.
    #[error("{0}")]
    BadRequest(String),
    /// 401: authentication failed.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the app is disabled, or over its daily message quota.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such app.
    #[error("{0}")]
    NotFound(String),
    /// 413: an event's data is too large.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 429: over the app's REST rate limit; `Retry-After` says when to come back.
    #[error("{message}")]
    TooManyRequests {
        /// What was exceeded.
        message: String,
        /// Whole seconds to wait (at least 1).
        retry_after: u64,
    },
    /// 408: the request body did not arrive in time (the connection is closed after it).
    #[error("{0}")]
    RequestTimeout(String),
    /// 503: the node cannot take this request now; `Retry-After` says when to come back.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// Whole seconds to wait (at least 1).
        retry_after: u64,
    },
    /// 500: something failed inside Herald; the detail goes to the log, not to the client.
    #[error("Internal server error")]
    Internal,
    /// The path's parameters could not be read (not UTF-8 once decoded): answered as axum's
    /// `Path` extractor answers it (400, its own text).
    #[error("{0}")]
    Path(PathRejection),
}

impl From<RestAuthError> for ApiError {
    fn from(error: RestAuthError) -> Self {
        ApiError::Unauthorized(error.to_string())
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Path(rejection) => rejection.status(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Path(rejection) = self {
            return rejection.into_response();
        }
        let status = self.status();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response();
        if let ApiError::TooManyRequests { retry_after, .. }
        | ApiError::Unavailable { retry_after, .. } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(*retry_after));
        }
        response
    }
}
