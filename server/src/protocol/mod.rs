//! Every type that crosses the wire: client frames, server frames, channel names, socket ids,
//! close codes, REST bodies and the protocol limits.
//!
//! This module is pure: no tokio, no axum, no SQL and no clock. Server frames are serialized here
//! once into [`Bytes`] so the hub can share them between subscribers without touching JSON again.

mod channel;
mod frames;
mod limits;
pub mod mercure;
mod query;
mod rest;
mod socket_id;
mod webhook;
pub mod ws;

pub use channel::{ChannelKind, ChannelName, ChannelNameError, SERVER_TO_USER_PREFIX};
pub use frames::{server, ClientFrame, FrameError};
pub use limits::{
    Limits, DEFAULT_SUBSCRIBES_PER_SECOND, DEFAULT_SUBSCRIPTIONS_PER_CONNECTION,
    PROTOCOL_CHANNEL_NAME_CEILING, SUBSCRIPTIONS_PER_CONNECTION_CEILING,
};
pub use query::{query_pairs, query_value, QueryPair};
pub use rest::{
    BatchBody, BatchEvent, BatchResponse, CachedEvent, ChannelAttributes, ChannelResponse,
    ChannelsResponse, EventData, PresenceUser, TerminateResponse, TriggerBody, TriggerResponse,
    UsersResponse,
};
pub use socket_id::SocketId;
pub use webhook::{webhook_body, WebhookEvent, WebhookKind, WEBHOOK_KINDS};

/// The `activity_timeout` (seconds) announced in `pusher:connection_established`.
pub const ACTIVITY_TIMEOUT_SECS: u64 = 120;

/// Close codes Herald uses, with the reason text sent alongside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 4001: the key in `/app/{key}` matches no app (or the app was deleted).
    AppDoesNotExist,
    /// 4003: the app is disabled.
    AppDisabled,
    /// 4004: the app is over its connection quota.
    OverConnectionQuota,
    /// 4005: the WebSocket path is not `/app/{key}`.
    PathNotFound,
    /// 4006: the `version` query parameter is malformed.
    InvalidVersion,
    /// 4007: the `protocol` query parameter names a version Herald does not speak.
    UnsupportedProtocol,
    /// 4008: the `protocol` query parameter is missing.
    NoProtocol,
    /// 4009: the connection is unauthorized (its user was terminated, or its origin refused).
    Unauthorized,
    /// 4100: node over capacity, or a slow consumer whose outbox filled up.
    OverCapacity,
    /// 4200: generic "reconnect now", used on graceful shutdown.
    ReconnectNow,
    /// 4201: the server's ping went unanswered.
    PongNotReceived,
    /// 1009: an inbound frame was larger than the configured limit.
    MessageTooBig,
}

impl CloseCode {
    /// The numeric WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::AppDoesNotExist => 4001,
            CloseCode::AppDisabled => 4003,
            CloseCode::OverConnectionQuota => 4004,
            CloseCode::PathNotFound => 4005,
            CloseCode::InvalidVersion => 4006,
            CloseCode::UnsupportedProtocol => 4007,
            CloseCode::NoProtocol => 4008,
            CloseCode::Unauthorized => 4009,
            CloseCode::OverCapacity => 4100,
            CloseCode::ReconnectNow => 4200,
            CloseCode::PongNotReceived => 4201,
            CloseCode::MessageTooBig => 1009,
        }
    }

    /// The human-readable reason, Pusher's wording where Pusher documents one.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::AppDoesNotExist => "Application does not exist",
            CloseCode::AppDisabled => "Application disabled",
            CloseCode::OverConnectionQuota => "Application is over connection quota",
            CloseCode::PathNotFound => "Path not found",
            CloseCode::InvalidVersion => "Invalid version string format",
            CloseCode::UnsupportedProtocol => "Unsupported protocol version",
            CloseCode::NoProtocol => "No protocol version supplied",
            CloseCode::Unauthorized => "Connection is unauthorized",
            CloseCode::OverCapacity => "Over capacity",
            CloseCode::ReconnectNow => "Server is restarting, reconnect now",
            CloseCode::PongNotReceived => "Pong reply not received",
            CloseCode::MessageTooBig => "Frame too large",
        }
    }

    /// Whether the server sends a `pusher:error` frame with this code before closing.
    pub fn announced_with_error_frame(self) -> bool {
        !matches!(
            self,
            CloseCode::OverCapacity
                | CloseCode::ReconnectNow
                | CloseCode::PongNotReceived
                | CloseCode::MessageTooBig
        )
    }
}

/// Error codes sent in `pusher:error` frames that do not close the socket.
pub mod error_code {
    /// Client event rejected because of the per-connection rate limit.
    pub const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;
    /// Watchlist truncated to its first 100 ids.
    pub const WATCHLIST_LIMIT: u16 = 4302;
}

/// The protocol versions Herald accepts in the `protocol` query parameter.
pub const SUPPORTED_PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;

/// How the handshake query parameters were judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeVersion {
    /// A protocol version Herald speaks.
    Supported(u32),
}

/// Checks the `protocol` and `version` query parameters of a WebSocket handshake.
pub fn check_handshake_version(
    protocol: Option<&str>,
    version: Option<&str>,
) -> Result<HandshakeVersion, CloseCode> {
    let Some(protocol) = protocol else {
        return Err(CloseCode::NoProtocol);
    };
    let protocol: u32 = protocol
        .trim()
        .parse()
        .map_err(|_| CloseCode::UnsupportedProtocol)?;
    if !SUPPORTED_PROTOCOLS.contains(&protocol) {
        return Err(CloseCode::UnsupportedProtocol);
    }
    if let Some(version) = version {
        let well_formed = !version.is_empty()
            && version.len() <= 64
            && version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'));
        if !well_formed {
            return Err(CloseCode::InvalidVersion);
        }
    }
    Ok(HandshakeVersion::Supported(protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions_five_to_seven_are_accepted() {
        for p in ["5", "6", "7"] {
            assert!(check_handshake_version(Some(p), Some("8.6.0")).is_ok());
        }
    }

    #[test]
    fn missing_protocol_is_4008_and_others_4007() {
        assert_eq!(
            check_handshake_version(None, None),
            Err(CloseCode::NoProtocol)
        );
        assert_eq!(
            check_handshake_version(Some("4"), None),
            Err(CloseCode::UnsupportedProtocol)
        );
        assert_eq!(
            check_handshake_version(Some("x"), None),
            Err(CloseCode::UnsupportedProtocol)
        );
        assert_eq!(
            check_handshake_version(Some("8"), None),
            Err(CloseCode::UnsupportedProtocol)
        );
    }

    #[test]
    fn malformed_version_is_4006() {
        assert_eq!(
            check_handshake_version(Some("7"), Some("")),
            Err(CloseCode::InvalidVersion)
        );
        assert_eq!(
            check_handshake_version(Some("7"), Some("8 6")),
            Err(CloseCode::InvalidVersion)
        );
    }
}
