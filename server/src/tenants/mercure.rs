//! An app's Mercure hub settings (`interfaces.md`: `--mercure-*` on `apps create|update`).
//!
//! SKELETON (issue 16): the shape both Mercure helpers build against. The store does not
//! persist these yet; every app has [`MercureSettings::default`].

use serde::Serialize;

use super::{App, Secret};
use crate::auth::mercure::{KeyError, KeyMaterial, Verifier};

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

impl MercureSettings {
    /// The app's hub URL under the public URL: `{public_url}/apps/{app_id}/.well-known/mercure`.
    pub fn hub_url(app_id: &str, public_url: &str) -> String {
        format!(
            "{}/apps/{app_id}/.well-known/mercure",
            public_url.trim_end_matches('/')
        )
    }

    /// The audience draft-08 tokens must name: the one set, else the app's hub URL.
    pub fn audience_for(&self, app_id: &str, public_url: &str) -> String {
        self.audience
            .clone()
            .unwrap_or_else(|| MercureSettings::hub_url(app_id, public_url))
    }
}

impl App {
    /// The verifier of this app's Mercure tokens: its key (the app's current secret unless one is
    /// set), its audience (default: the hub URL under `public_url`) and issuer. Build it once per
    /// app version and keep it: a PEM key is parsed here.
    pub fn mercure_verifier(&self, public_url: &str) -> Result<Verifier, KeyError> {
        let key = match &self.mercure.jwt_key {
            MercureKey::AppSecret => KeyMaterial::Hmac(self.secret.expose().as_bytes()),
            MercureKey::Hmac(secret) => KeyMaterial::Hmac(secret.expose().as_bytes()),
            MercureKey::PublicPem(pem) => KeyMaterial::PublicPem(pem),
        };
        Verifier::new(
            key,
            &self.mercure.audience_for(&self.id, public_url),
            self.mercure.issuer.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Limits;

    fn app() -> App {
        App {
            id: "42".into(),
            key: "key".into(),
            secret: Secret::new("app-secret".into()),
            name: "n".into(),
            tenant_id: "1".into(),
            enabled: true,
            client_events: false,
            subscription_count: false,
            limits: Limits::default(),
            plan: "custom".into(),
            previous_key: None,
            allowed_origins: Vec::new(),
            created_at: 0,
            mercure: MercureSettings::default(),
        }
    }

    #[test]
    fn the_default_audience_is_the_hub_url_and_the_default_key_the_app_secret() {
        let mut app = app();
        assert_eq!(
            app.mercure.audience_for("42", "https://push.example.com/"),
            "https://push.example.com/apps/42/.well-known/mercure"
        );
        let verifier = app.mercure_verifier("https://push.example.com").unwrap();
        assert_eq!(
            verifier.audience(),
            "https://push.example.com/apps/42/.well-known/mercure"
        );
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"mercure": {"publish": ["*"]}}),
            &jsonwebtoken::EncodingKey::from_secret(b"app-secret"),
        )
        .unwrap();
        assert!(verifier.verify(&token, 0).is_ok());

        app.mercure.audience = Some("urn:hub".into());
        app.mercure.jwt_key = MercureKey::Hmac(Secret::new("own key".into()));
        let verifier = app.mercure_verifier("https://push.example.com").unwrap();
        assert_eq!(verifier.audience(), "urn:hub");
        assert!(
            verifier.verify(&token, 0).is_err(),
            "the app secret no longer signs"
        );
    }
}
