//! The app domain: [`App`] with its key pairs and allowed origins, what to create
//! ([`NewApp`]) and what to change ([`AppPatch`], [`LimitsPatch`]) with their validation. No SQL
//! here (that is `apps_sql.rs`) and no clock: the time is an argument.

use std::sync::Arc;

use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;

use super::{MercurePatch, MercureSettings, Plan, Secret, StoreError};
use crate::protocol::{
    Limits, PROTOCOL_CHANNEL_NAME_CEILING, SUBSCRIPTIONS_PER_CONNECTION_CEILING,
};

/// An app: one set of credentials, switches and limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct App {
    /// Numeric id (a string of digits).
    pub id: String,
    /// Public key used by clients in `/app/{key}`.
    pub key: String,
    /// Signing secret.
    pub secret: Secret,
    /// Display name.
    pub name: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Disabled apps refuse connections (4003) and REST calls (403).
    pub enabled: bool,
    /// Whether clients may send `client-` events.
    pub client_events: bool,
    /// Whether `pusher_internal:subscription_count` events are sent.
    pub subscription_count: bool,
    /// Limits; zero means unlimited.
    pub limits: Limits,
    /// The plan the app was created from (`custom` when none); the limits are what applies.
    pub plan: String,
    /// The previous key pair, still accepted during a rotation.
    pub previous_key: Option<PreviousKey>,
    /// Origins allowed to open WebSockets (`https://example.com`, `https://*.example.com`);
    /// empty means any origin.
    pub allowed_origins: Vec<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// The app's Mercure hub settings.
    pub mercure: MercureSettings,
}

/// The key pair a rotation replaced: it keeps working until revoked or until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviousKey {
    /// The old key.
    pub key: String,
    /// The old secret.
    pub secret: Secret,
    /// Unix seconds after which the pair stops working; 0 means "until revoked".
    pub expires_at: i64,
}

impl PreviousKey {
    /// Whether the pair still works at `now` (Unix seconds).
    pub fn active_at(&self, now: i64) -> bool {
        self.expires_at == 0 || now < self.expires_at
    }
}

impl App {
    /// The app's active key/secret pairs at `now` (Unix seconds): the current one, then the
    /// previous one while it works.
    pub fn credentials(&self, now: i64) -> impl Iterator<Item = (&str, &str)> {
        let previous = self
            .previous_key
            .as_ref()
            .filter(|p| p.active_at(now))
            .map(|p| (p.key.as_str(), p.secret.expose()));
        std::iter::once((self.key.as_str(), self.secret.expose())).chain(previous)
    }

    /// Whether a WebSocket from `origin` (the `Origin` header, if any) may connect.
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        let Some(origin) = origin else { return false };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        self.allowed_origins
            .iter()
            .any(|allowed| origin_matches(allowed, &origin))
    }

    /// The secret that signs for `key` at `now` (Unix seconds), if `key` is one of the app's
    /// working keys.
    pub fn secret_for(&self, key: &str, now: i64) -> Option<&str> {
        self.credentials(now)
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s)
    }
}

/// Whether `host` is one or more dot-separated DNS labels of `a-z0-9-` (lowercase), optionally
/// followed by `:port`.
fn is_host(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    port_ok && labels_ok
}

/// Whether `origin` (lowercase, no trailing slash) matches the pattern `allowed`: `*` matches
/// everything, `https://*.example.com` any subdomain of example.com (not example.com itself),
/// anything else must be equal (scheme, host and port).
fn origin_matches(allowed: &str, origin: &str) -> bool {
    if allowed == "*" || allowed == origin {
        return true;
    }
    let Some((scheme, domain)) = allowed.split_once("://*.") else {
        return false;
    };
    let Some((origin_scheme, host)) = origin.split_once("://") else {
        return false;
    };
    if origin_scheme != scheme || !is_host(host) {
        return false;
    }
    host.strip_suffix(domain)
        .and_then(|sub| sub.strip_suffix('.'))
        .is_some_and(|sub| !sub.is_empty() && !sub.contains(':'))
}

/// Checks and normalises a list of allowed origins: `*`, `scheme://host[:port]` or
/// `scheme://*.domain[:port]`, lowercased, without a trailing slash.
pub fn parse_origins(list: &[String]) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for raw in list {
        let origin = raw.trim().trim_end_matches('/').to_ascii_lowercase();
        if origin.is_empty() {
            continue;
        }
        let valid = origin == "*"
            || origin.split_once("://").is_some_and(|(scheme, host)| {
                let scheme_ok = !scheme.is_empty()
                    && scheme.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || b == b'+'
                            || b == b'-'
                            || b == b'.'
                    });
                let host = host.strip_prefix("*.").unwrap_or(host);
                scheme_ok && is_host(host)
            });
        if !valid {
            return Err(StoreError::Invalid(format!(
                "invalid origin {raw:?}: expected scheme://host[:port], scheme://*.domain or *"
            )));
        }
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    Ok(out)
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewApp {
    /// Display name.
    pub name: String,
    /// Owning tenant (`"1"`, the default tenant, when `None`).
    pub tenant_id: Option<String>,
    /// A chosen id (random digits when `None`).
    pub id: Option<String>,
    /// A chosen key (random when `None`).
    pub key: Option<String>,
    /// A chosen secret (random when `None`).
    pub secret: Option<Secret>,
    /// Switches; `None` takes the default (enabled, client events off, counts off).
    pub enabled: Option<bool>,
    /// See [`App::client_events`].
    pub client_events: Option<bool>,
    /// See [`App::subscription_count`].
    pub subscription_count: Option<bool>,
    /// A plan preset whose limits apply first (`limits` then override them).
    pub plan: Option<String>,
    /// Limits to override.
    pub limits: LimitsPatch,
    /// Allowed origins (`None` or empty: any).
    pub allowed_origins: Option<Vec<String>>,
    /// Mercure settings other than the defaults.
    pub mercure: MercurePatch,
}

/// Changes to an app; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AppPatch {
    /// New name.
    pub name: Option<String>,
    /// New switch values.
    pub enabled: Option<bool>,
    /// See [`App::client_events`].
    pub client_events: Option<bool>,
    /// See [`App::subscription_count`].
    pub subscription_count: Option<bool>,
    /// Limits to change.
    pub limits: LimitsPatch,
    /// New allowed origins (an empty list allows any origin).
    pub allowed_origins: Option<Vec<String>>,
    /// Mercure settings to change.
    pub mercure: MercurePatch,
}

macro_rules! limits_patch {
    ($($field:ident),* $(,)?) => {
        /// A partial set of limits.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct LimitsPatch {
            $(
                #[allow(missing_docs)]
                pub $field: Option<u64>,
            )*
        }

        impl LimitsPatch {
            /// Writes every given value into `limits`.
            pub fn apply(&self, limits: &mut Limits) {
                $( if let Some(v) = self.$field { limits.$field = v; } )*
            }

            /// Sets the limit called `name`; false when there is no such limit.
            pub fn set(&mut self, name: &str, value: u64) -> bool {
                match name {
                    $( stringify!($field) => { self.$field = Some(value); true } )*
                    _ => false,
                }
            }

            /// The first limit this patch would raise above `limits` (0 counts as unlimited,
            /// so it raises any nonzero limit).
            pub fn loosens(&self, limits: &Limits) -> Option<&'static str> {
                $(
                    if let Some(v) = self.$field {
                        let current = limits.$field;
                        if current != 0 && (v == 0 || v > current) {
                            return Some(stringify!($field));
                        }
                    }
                )*
                None
            }
        }

        /// Every limit's name, in [`Limits`]' order (also the names of the store's columns).
        pub const LIMIT_NAMES: &[&str] = &[$(stringify!($field)),*];

        /// Every limit's name and value.
        pub fn limit_values(limits: &Limits) -> Vec<(&'static str, u64)> {
            vec![$((stringify!($field), limits.$field)),*]
        }
    };
}

limits_patch!(
    max_connections,
    max_daily_messages,
    max_client_events_per_second,
    max_backend_events_per_second,
    max_read_requests_per_second,
    max_presence_members,
    max_presence_member_bytes,
    max_channel_name_length,
    max_event_name_length,
    max_event_payload_bytes,
    max_channels_per_trigger,
    max_batch_size,
    max_channels,
    max_cache_channels,
    max_subscriptions_per_connection,
    max_subscribes_per_second,
);

/// What [`NewApp::check`] settles before anything is written.
#[derive(Debug)]
pub(super) struct CheckedNewApp {
    /// The plan's limits with the overrides applied.
    pub limits: Limits,
    /// The plan's name (`custom` when none was named).
    pub plan: String,
    /// The normalised allowed origins.
    pub allowed_origins: Vec<String>,
    /// The Mercure settings (the defaults with the patch applied).
    pub mercure: MercureSettings,
}

impl NewApp {
    /// Checks every given value (name, plan, limits, origins, chosen id, key and secret) and
    /// settles the limits: the plan's first, then the overrides.
    pub(super) fn check(&self) -> Result<CheckedNewApp, StoreError> {
        validate_name(&self.name)?;
        let mut limits = Limits::default();
        let plan = match &self.plan {
            Some(name) => {
                let plan = Plan::named(name)?;
                limits = plan.limits;
                plan.name.to_owned()
            }
            None => "custom".to_owned(),
        };
        self.limits.apply(&mut limits);
        validate_limits(&limits)?;
        let allowed_origins = parse_origins(self.allowed_origins.as_deref().unwrap_or_default())?;
        if let Some(id) = &self.id {
            if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(StoreError::Invalid(
                    "app id must be 1 to 18 digits (pusher-http-python accepts digits only)".into(),
                ));
            }
        }
        if let Some(key) = &self.key {
            validate_credential("app key", key)?;
        }
        if let Some(secret) = &self.secret {
            validate_credential("app secret", secret.expose())?;
        }
        let mut mercure = MercureSettings::default();
        self.mercure.apply_to(&mut mercure)?;
        Ok(CheckedNewApp {
            limits,
            plan,
            allowed_origins,
            mercure,
        })
    }

    /// The app this creates: id `id` in `tenant_id`, created at `now` (Unix seconds), with a
    /// random key and secret where none was chosen.
    pub(super) fn build(
        &self,
        checked: CheckedNewApp,
        id: String,
        tenant_id: String,
        now: i64,
    ) -> App {
        App {
            id,
            key: self.key.clone().unwrap_or_else(|| random_token(20)),
            secret: self
                .secret
                .clone()
                .unwrap_or_else(|| Secret::new(random_token(40))),
            name: self.name.trim().to_owned(),
            tenant_id,
            enabled: self.enabled.unwrap_or(true),
            client_events: self.client_events.unwrap_or(false),
            subscription_count: self.subscription_count.unwrap_or(false),
            limits: checked.limits,
            plan: checked.plan,
            previous_key: None,
            allowed_origins: checked.allowed_origins,
            created_at: now,
            mercure: checked.mercure,
        }
    }
}

impl AppPatch {
    /// Applies the patch to `app`, checking every value it changes.
    pub fn apply_to(&self, app: &mut App) -> Result<(), StoreError> {
        if let Some(name) = &self.name {
            validate_name(name)?;
            app.name = name.trim().to_owned();
        }
        if let Some(v) = self.enabled {
            app.enabled = v;
        }
        if let Some(v) = self.client_events {
            app.client_events = v;
        }
        if let Some(v) = self.subscription_count {
            app.subscription_count = v;
        }
        if let Some(origins) = &self.allowed_origins {
            app.allowed_origins = parse_origins(origins)?;
        }
        self.mercure.apply_to(&mut app.mercure)?;
        self.limits.apply(&mut app.limits);
        validate_limits(&app.limits)
    }
}

/// A random URL-safe token of `len` lowercase letters and digits.
pub(super) fn random_token(len: usize) -> String {
    Alphanumeric
        .sample_string(&mut rand::rng(), len)
        .to_ascii_lowercase()
}

/// A random password for the first-start operator.
pub fn random_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

fn validate_limits(limits: &Limits) -> Result<(), StoreError> {
    if limits.max_channel_name_length as usize > PROTOCOL_CHANNEL_NAME_CEILING {
        return Err(StoreError::Invalid(format!(
            "max_channel_name_length must be at most {PROTOCOL_CHANNEL_NAME_CEILING}"
        )));
    }
    if limits.max_subscriptions_per_connection > SUBSCRIPTIONS_PER_CONNECTION_CEILING as u64 {
        return Err(StoreError::Invalid(format!(
            "max_subscriptions_per_connection must be at most \
             {SUBSCRIPTIONS_PER_CONNECTION_CEILING}"
        )));
    }
    if limits.max_connections > i64::MAX as u64 || limits.max_daily_messages > i64::MAX as u64 {
        return Err(StoreError::Invalid("limit too large".into()));
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(StoreError::Invalid(
            "app name must be 1 to 100 characters".into(),
        ));
    }
    Ok(())
}

fn validate_credential(what: &str, value: &str) -> Result<(), StoreError> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{what} must be 1 to 100 characters of A-Z, a-z, 0-9, '-' and '_'"
        )))
    }
}

/// Shared handle to an app.
pub type AppRef = Arc<App>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        let allowed = parse_origins(&[
            "https://App.Example.com/".into(),
            "https://*.example.org".into(),
            "http://localhost:8080".into(),
        ])
        .unwrap();
        assert_eq!(
            allowed,
            vec![
                "https://app.example.com",
                "https://*.example.org",
                "http://localhost:8080"
            ]
        );
        let ok = |o: &str| allowed.iter().any(|a| origin_matches(a, o));
        assert!(ok("https://app.example.com"));
        assert!(ok("https://a.example.org"));
        assert!(ok("https://a.b.example.org"));
        assert!(ok("http://localhost:8080"));
        for bad in [
            "https://example.org",
            "http://a.example.org",
            "https://evil.com#.example.org",
            "https://a@.example.org",
            "https://a.example.org.evil.net",
            "https://xexample.org",
            "https://a.example.org:8443",
            "http://localhost:8081",
            "null",
        ] {
            assert!(!ok(bad), "{bad}");
        }
        for invalid in [
            "https://*example.com",
            "https://*",
            "example.com",
            "https://a b.com",
            "https://x.com/path",
        ] {
            assert!(parse_origins(&[invalid.into()]).is_err(), "{invalid}");
        }
    }
}
