//! An app's Mercure hub settings (`interfaces.md`: `--mercure-*` on `apps create|update`): the
//! key tokens are verified with, the audience and issuer, anonymous subscribers, the history's
//! bounds. [`MercurePatch`] changes them with validation (a PEM key that does not parse, an HS256
//! key under 32 bytes, an audience over 2,048 bytes... are refused when written); the row mapping
//! (`mercure_*` columns) is here too, so `apps_sql.rs` only chains it.

use serde::{Serialize, Serializer};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{App, Secret, StoreError};
use crate::auth::mercure::{check_public_pem, KeyError, KeyMaterial, Verifier};

/// Default number of updates an app's history keeps.
pub const DEFAULT_HISTORY_SIZE: u32 = 1_000;
/// Default age (seconds) past which an update leaves the history.
pub const DEFAULT_HISTORY_SECONDS: u32 = 3_600;

/// Most updates an app's history may keep.
pub const MAX_HISTORY_SIZE: u32 = 100_000;
/// Longest an update may stay in the history: 7 days.
pub const MAX_HISTORY_SECONDS: u32 = 7 * 24 * 3600;
/// Longest audience or issuer, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 2_048;
/// Shortest HS256 key, in bytes (RFC 7518 section 3.2: at least the hash's size).
pub const MIN_HMAC_KEY_BYTES: usize = 32;
/// Longest HS256 key, in bytes.
pub const MAX_HMAC_KEY_BYTES: usize = 4_096;
/// Longest PEM public key, in bytes.
pub const MAX_PEM_BYTES: usize = 16 * 1024;

/// Which key verifies an app's Mercure tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MercureKey {
    /// HS256 with the app's current secret (the default).
    #[default]
    AppSecret,
    /// HS256 with this shared key (`--mercure-jwt-key`).
    Hmac(Secret),
    /// RS256 or ES256 with this PEM public key (`--mercure-jwt-key-file`).
    PublicPem(String),
}

/// An app's Mercure settings. In JSON (`apps show --json`): `jwt_key` (`app_secret`, `hs256` or
/// `public_key`), `jwt_secret` (the HS256 key, shown like the app's `secret`), `jwt_public_key`
/// (the PEM), `audience`, `issuer`, `anonymous`, `history_size`, `history_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
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

impl Serialize for MercureSettings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            jwt_key: &'static str,
            jwt_secret: Option<&'a Secret>,
            jwt_public_key: Option<&'a str>,
            audience: Option<&'a str>,
            issuer: Option<&'a str>,
            anonymous: bool,
            history_size: u32,
            history_seconds: u32,
        }
        let (jwt_key, jwt_secret, jwt_public_key) = match &self.jwt_key {
            MercureKey::AppSecret => ("app_secret", None, None),
            MercureKey::Hmac(secret) => ("hs256", Some(secret), None),
            MercureKey::PublicPem(pem) => ("public_key", None, Some(pem.as_str())),
        };
        Shown {
            jwt_key,
            jwt_secret,
            jwt_public_key,
            audience: self.audience.as_deref(),
            issuer: self.issuer.as_deref(),
            anonymous: self.anonymous,
            history_size: self.history_size,
            history_seconds: self.history_seconds,
        }
        .serialize(serializer)
    }
}

/// Changes to an app's Mercure settings; `None` leaves a field as it is. An empty audience or
/// issuer clears it (back to the default audience, no issuer check).
#[derive(Debug, Clone, Default)]
pub struct MercurePatch {
    /// A new key: [`MercureKey::Hmac`] (empty: back to the app's secret) or
    /// [`MercureKey::PublicPem`], or [`MercureKey::AppSecret`].
    pub jwt_key: Option<MercureKey>,
    /// A new audience (`""`: the default, the hub URL).
    pub audience: Option<String>,
    /// A new issuer (`""`: none).
    pub issuer: Option<String>,
    /// Whether subscribers without a token get public updates.
    pub anonymous: Option<bool>,
    /// Updates kept in the history, at most [`MAX_HISTORY_SIZE`].
    pub history_size: Option<u64>,
    /// Seconds an update stays in the history, at most [`MAX_HISTORY_SECONDS`].
    pub history_seconds: Option<u64>,
}

impl MercurePatch {
    /// The setting this patch raises beyond what a tenant admin may set: a history larger or
    /// longer than both the default and `current`'s (the operator's to grant, as quotas are).
    pub fn loosens(&self, current: &MercureSettings) -> Option<&'static str> {
        let size_cap = u64::from(current.history_size.max(DEFAULT_HISTORY_SIZE));
        let seconds_cap = u64::from(current.history_seconds.max(DEFAULT_HISTORY_SECONDS));
        if self.history_size.is_some_and(|size| size > size_cap) {
            return Some("mercure history size");
        }
        if self.history_seconds.is_some_and(|s| s > seconds_cap) {
            return Some("mercure history seconds");
        }
        None
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.jwt_key.is_none()
            && self.audience.is_none()
            && self.issuer.is_none()
            && self.anonymous.is_none()
            && self.history_size.is_none()
            && self.history_seconds.is_none()
    }

    /// Applies the patch to `settings`, checking every value it changes (nothing is changed
    /// when one is refused).
    pub fn apply_to(&self, settings: &mut MercureSettings) -> Result<(), StoreError> {
        let mut next = settings.clone();
        if let Some(key) = &self.jwt_key {
            next.jwt_key = checked_key(key)?;
        }
        if let Some(audience) = &self.audience {
            next.audience = identifier("audience", audience)?;
        }
        if let Some(issuer) = &self.issuer {
            next.issuer = identifier("issuer", issuer)?;
        }
        if let Some(anonymous) = self.anonymous {
            next.anonymous = anonymous;
        }
        if let Some(size) = self.history_size {
            next.history_size = bounded("mercure history size", size, MAX_HISTORY_SIZE)?;
        }
        if let Some(seconds) = self.history_seconds {
            next.history_seconds =
                bounded("mercure history seconds", seconds, MAX_HISTORY_SECONDS)?;
        }
        *settings = next;
        Ok(())
    }
}

fn invalid(text: String) -> StoreError {
    StoreError::Invalid(text)
}

fn checked_key(key: &MercureKey) -> Result<MercureKey, StoreError> {
    match key {
        MercureKey::AppSecret => Ok(MercureKey::AppSecret),
        MercureKey::Hmac(secret) if secret.expose().is_empty() => Ok(MercureKey::AppSecret),
        MercureKey::Hmac(secret) => {
            let len = secret.expose().len();
            if !(MIN_HMAC_KEY_BYTES..=MAX_HMAC_KEY_BYTES).contains(&len) {
                return Err(invalid(format!(
                    "the Mercure JWT key must be {MIN_HMAC_KEY_BYTES} to {MAX_HMAC_KEY_BYTES} \
                     bytes (HS256 needs at least 256 bits), got {len}"
                )));
            }
            if secret.expose().chars().any(char::is_control) {
                return Err(invalid(
                    "the Mercure JWT key has a control character".into(),
                ));
            }
            Ok(MercureKey::Hmac(secret.clone()))
        }
        MercureKey::PublicPem(pem) => {
            if pem.len() > MAX_PEM_BYTES {
                return Err(invalid(format!(
                    "the Mercure public key is over {MAX_PEM_BYTES} bytes"
                )));
            }
            check_public_pem(pem).map_err(|e| invalid(e.to_string()))?;
            Ok(MercureKey::PublicPem(pem.trim().to_owned() + "\n"))
        }
    }
}

fn identifier(what: &str, value: &str) -> Result<Option<String>, StoreError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_IDENTIFIER_BYTES {
        return Err(invalid(format!(
            "the Mercure {what} is over {MAX_IDENTIFIER_BYTES} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "the Mercure {what} has a control character"
        )));
    }
    Ok(Some(value.to_owned()))
}

fn bounded(what: &str, value: u64, max: u32) -> Result<u32, StoreError> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| invalid(format!("{what} must be at most {max}, got {value}")))
}

/// The `mercure_*` columns, in [`bind_columns`] order.
pub(super) const MERCURE_COLUMNS: &str = "mercure_jwt_key, mercure_public_key, mercure_audience, \
     mercure_issuer, mercure_anonymous, mercure_history_size, mercure_history_seconds";
/// How many columns [`MERCURE_COLUMNS`] names.
pub(super) const MERCURE_COLUMN_COUNT: usize = 7;

/// The settings stored in an app row (`''` for "not set").
pub(super) fn from_row(row: &AnyRow) -> Result<MercureSettings, sqlx::Error> {
    let text = |name: &str| -> Result<Option<String>, sqlx::Error> {
        Ok(Some(row.try_get::<String, _>(name)?).filter(|v| !v.is_empty()))
    };
    let jwt_key = match (text("mercure_jwt_key")?, text("mercure_public_key")?) {
        (_, Some(pem)) => MercureKey::PublicPem(pem),
        (Some(key), None) => MercureKey::Hmac(Secret::new(key)),
        (None, None) => MercureKey::AppSecret,
    };
    let number = |name: &str| -> Result<u32, sqlx::Error> {
        Ok(u32::try_from(row.try_get::<i64, _>(name)?).unwrap_or(0))
    };
    Ok(MercureSettings {
        jwt_key,
        audience: text("mercure_audience")?,
        issuer: text("mercure_issuer")?,
        anonymous: row.try_get::<i64, _>("mercure_anonymous")? != 0,
        history_size: number("mercure_history_size")?,
        history_seconds: number("mercure_history_seconds")?,
    })
}

/// Binds the [`MERCURE_COLUMNS`] values of `settings`, in order.
pub(super) fn bind_columns<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    settings: &MercureSettings,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let (key, pem) = match &settings.jwt_key {
        MercureKey::AppSecret => (String::new(), String::new()),
        MercureKey::Hmac(secret) => (secret.expose().to_owned(), String::new()),
        MercureKey::PublicPem(pem) => (String::new(), pem.clone()),
    };
    query
        .bind(key)
        .bind(pem)
        .bind(settings.audience.clone().unwrap_or_default())
        .bind(settings.issuer.clone().unwrap_or_default())
        .bind(i64::from(settings.anonymous))
        .bind(i64::from(settings.history_size))
        .bind(i64::from(settings.history_seconds))
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
