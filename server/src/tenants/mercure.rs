//! An app's Mercure hub settings (`interfaces.md`: `--mercure-*` on `apps create|update`).
//!
//! SKELETON (issue 16): the shape both Mercure helpers build against. The store does not
//! persist these yet; every app has [`MercureSettings::default`].

use serde::Serialize;

use super::Secret;

/// Default number of updates an app's history keeps.
pub const DEFAULT_HISTORY_SIZE: u32 = 1_000;
/// Default age (seconds) past which an update leaves the history.
pub const DEFAULT_HISTORY_SECONDS: u32 = 3_600;

/// Which key verifies an app's Mercure tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub enum MercureKey {
    /// HS256 with the app's current secret (the default).
    #[default]
    AppSecret,
    /// HS256 with this shared key (`--mercure-jwt-key`).
    Hmac(Secret),
    /// RS256 or ES256 with this PEM public key (`--mercure-jwt-key-file`).
    PublicPem(String),
}

/// An app's Mercure settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MercureSettings {
    /// The key that verifies tokens.
    pub jwt_key: MercureKey,
    /// The audience draft-08 tokens must name; `None`: the app's hub URL under
    /// `HERALD_PUBLIC_URL`.
    pub audience: Option<String>,
    /// The issuer tokens must name, when set.
    pub issuer: Option<String>,
    /// Whether subscribers without a token get public updates.
    pub anonymous: bool,
    /// Updates kept in the history (0: none).
    pub history_size: u32,
    /// Seconds an update stays in the history.
    pub history_seconds: u32,
}

impl Default for MercureSettings {
    fn default() -> Self {
        Self {
            jwt_key: MercureKey::AppSecret,
            audience: None,
            issuer: None,
            anonymous: false,
            history_size: DEFAULT_HISTORY_SIZE,
            history_seconds: DEFAULT_HISTORY_SECONDS,
        }
    }
}
