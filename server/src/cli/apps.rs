//! `herald apps ...`: create, change, show, list and delete apps, their usage, and key
//! rotation.

use clap::{Args, Subcommand};
use serde_json::json;

use super::{audit, to_json, CliError, Context, Outcome};
use crate::tenants::{
    App, AppPatch, LimitsPatch, MercureKey, MercurePatch, NewApp, Secret, StoreError, UsageReport,
};

/// `herald apps ...`.
#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// Create an app with a random id, key and secret.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Owning tenant (default: the default tenant, "1").
        #[arg(long = "tenant")]
        tenant: Option<String>,
        /// A plan preset for the limits (sandbox, startup, pro, business, unlimited); limit
        /// flags override it.
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Origins allowed to open WebSockets, comma-separated (`https://example.com`,
        /// `https://*.example.com`); empty allows any origin.
        #[arg(long, value_name = "ORIGINS")]
        allowed_origins: Option<String>,
        #[command(flatten)]
        switches: SwitchArgs,
        #[command(flatten)]
        mercure: MercureArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change an app's name, switches, limits or Mercure settings.
    Update {
        /// The app's id.
        app_id: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Origins allowed to open WebSockets, comma-separated; an empty value allows any.
        #[arg(long, value_name = "ORIGINS")]
        allowed_origins: Option<String>,
        #[command(flatten)]
        switches: SwitchArgs,
        #[command(flatten)]
        mercure: MercureArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one app, secret included.
    Show {
        /// The app's id.
        app_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List apps.
    List {
        /// Only this tenant's apps.
        #[arg(long = "tenant")]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an app; its connections are closed with 4001.
    Delete {
        /// The app's id.
        app_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an app's stored usage: today, the last 30 days, the last 24 hours per minute.
    Usage {
        /// The app's id.
        app_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a new key pair; the current one keeps working for the grace period.
    RotateSecret {
        /// The app's id.
        app_id: String,
        /// Seconds the old pair keeps working (0: until revoked).
        #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
        grace_period: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one of an app's key pairs (the other one must still work).
    RevokeKey {
        /// The app's id.
        app_id: String,
        /// The key to revoke.
        #[arg(long)]
        key: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `--enabled`, `--client-events`, `--subscription-count`, each `true|false`.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Whether the app accepts connections and REST calls.
    #[arg(long, value_name = "true|false")]
    enabled: Option<bool>,
    /// Whether clients may send client- events.
    #[arg(long, value_name = "true|false")]
    client_events: Option<bool>,
    /// Whether pusher_internal:subscription_count events are sent.
    #[arg(long, value_name = "true|false")]
    subscription_count: Option<bool>,
}

/// The Mercure hub's settings (`interfaces.md`).
#[derive(Debug, Args)]
pub struct MercureArgs {
    /// HS256 key Mercure tokens are signed with (at least 32 bytes; empty: back to the app's
    /// current secret, the default).
    #[arg(
        long,
        value_name = "KEY",
        conflicts_with = "mercure_jwt_key_file",
        value_parser = secret_arg
    )]
    mercure_jwt_key: Option<Secret>,
    /// A PEM public key (RSA or P-256) that verifies RS256 / ES256 Mercure tokens instead.
    #[arg(long, value_name = "PATH")]
    mercure_jwt_key_file: Option<std::path::PathBuf>,
    /// The audience draft-08 tokens must name (empty: the app's hub URL under
    /// HERALD_PUBLIC_URL, the default).
    #[arg(long, value_name = "URL")]
    mercure_audience: Option<String>,
    /// The issuer every token must name (empty: not checked, the default).
    #[arg(long, value_name = "URL")]
    mercure_issuer: Option<String>,
    /// Whether subscribers without a token get public updates (default false).
    #[arg(long, value_name = "true|false")]
    mercure_anonymous: Option<bool>,
    /// Updates kept for reconnecting subscribers (default 1000, at most 100000; 0: none).
    #[arg(long, value_name = "N")]
    mercure_history_size: Option<u64>,
    /// Seconds an update stays in the history (default 3600, at most 604800).
    #[arg(long, value_name = "S")]
    mercure_history_seconds: Option<u64>,
}

/// A secret flag value, kept in a [`Secret`] so a `{:?}` of the command cannot show it.
fn secret_arg(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(value.to_owned()))
}

impl MercureArgs {
    /// The patch these flags make; reads the key file.
    async fn patch(self) -> Result<MercurePatch, CliError> {
        let jwt_key = match (self.mercure_jwt_key, self.mercure_jwt_key_file) {
            (Some(key), _) => Some(MercureKey::Hmac(key)),
            (None, Some(path)) => {
                let pem = tokio::fs::read_to_string(&path).await.map_err(|e| {
                    StoreError::Invalid(format!("--mercure-jwt-key-file {}: {e}", path.display()))
                })?;
                Some(MercureKey::PublicPem(pem))
            }
            (None, None) => None,
        };
        Ok(MercurePatch {
            jwt_key,
            audience: self.mercure_audience,
            issuer: self.mercure_issuer,
            anonymous: self.mercure_anonymous,
            history_size: self.mercure_history_size,
            history_seconds: self.mercure_history_seconds,
        })
    }
}

/// The limit flags; each a number, 0 meaning unlimited.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Concurrent connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<u64>,
    /// Messages per UTC day.
    #[arg(long, value_name = "N")]
    max_daily_messages: Option<u64>,
    /// Client events per second per connection.
    #[arg(long, value_name = "N")]
    max_client_events_per_second: Option<u64>,
    /// REST events per second.
    #[arg(long, value_name = "N")]
    max_backend_events_per_second: Option<u64>,
    /// REST reads per second.
    #[arg(long, value_name = "N")]
    max_read_requests_per_second: Option<u64>,
    /// Members per presence channel.
    #[arg(long, value_name = "N")]
    max_presence_members: Option<u64>,
    /// Bytes of one presence member's user_info.
    #[arg(long, value_name = "N")]
    max_presence_member_bytes: Option<u64>,
    /// Characters of a channel name (at most 200).
    #[arg(long, value_name = "N")]
    max_channel_name_length: Option<u64>,
    /// Characters of an event name.
    #[arg(long, value_name = "N")]
    max_event_name_length: Option<u64>,
    /// Bytes of one event's data.
    #[arg(long, value_name = "N")]
    max_event_payload_bytes: Option<u64>,
    /// Channels per trigger.
    #[arg(long, value_name = "N")]
    max_channels_per_trigger: Option<u64>,
    /// Events per batch.
    #[arg(long, value_name = "N")]
    max_batch_size: Option<u64>,
    /// Occupied channels of the app (per node).
    #[arg(long, value_name = "N")]
    max_channels: Option<u64>,
    /// Cache channels of the app (per node), occupied or holding a cached event.
    #[arg(long, value_name = "N")]
    max_cache_channels: Option<u64>,
    /// Channels one connection may subscribe to (default 100, at most 1000).
    #[arg(long, value_name = "N")]
    max_subscriptions_per_connection: Option<u64>,
    /// Subscribes per second per connection (burst: the subscriptions cap).
    #[arg(long, value_name = "N")]
    max_subscribes_per_second: Option<u64>,
}

impl AppsCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            AppsCommand::Create { json, .. }
            | AppsCommand::Update { json, .. }
            | AppsCommand::Show { json, .. }
            | AppsCommand::List { json, .. }
            | AppsCommand::Delete { json, .. }
            | AppsCommand::Usage { json, .. }
            | AppsCommand::RotateSecret { json, .. }
            | AppsCommand::RevokeKey { json, .. } => *json,
        }
    }
}

impl LimitArgs {
    fn patch(&self) -> LimitsPatch {
        LimitsPatch {
            max_connections: self.max_connections,
            max_daily_messages: self.max_daily_messages,
            max_client_events_per_second: self.max_client_events_per_second,
            max_backend_events_per_second: self.max_backend_events_per_second,
            max_read_requests_per_second: self.max_read_requests_per_second,
            max_presence_members: self.max_presence_members,
            max_presence_member_bytes: self.max_presence_member_bytes,
            max_channel_name_length: self.max_channel_name_length,
            max_event_name_length: self.max_event_name_length,
            max_event_payload_bytes: self.max_event_payload_bytes,
            max_channels_per_trigger: self.max_channels_per_trigger,
            max_batch_size: self.max_batch_size,
            max_channels: self.max_channels,
            max_cache_channels: self.max_cache_channels,
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            max_subscribes_per_second: self.max_subscribes_per_second,
        }
    }
}

fn describe(app: &App) -> String {
    let limits = serde_json::to_value(app.limits).unwrap_or_default();
    let mut text = format!(
        "id:                 {}\nname:               {}\nkey:                {}\nsecret:             {}\ntenant_id:          {}\nplan:               {}\nenabled:            {}\nclient_events:      {}\nsubscription_count: {}\nallowed_origins:    {}\n",
        app.id,
        app.name,
        app.key,
        app.secret.expose(),
        app.tenant_id,
        app.plan,
        app.enabled,
        app.client_events,
        app.subscription_count,
        if app.allowed_origins.is_empty() {
            "any".to_owned()
        } else {
            app.allowed_origins.join(", ")
        }
    );
    if let Some(previous) = &app.previous_key {
        text.push_str(&format!(
            "previous key:       {} (secret {}, {})\n",
            previous.key,
            previous.secret.expose(),
            if previous.expires_at == 0 {
                "until revoked".to_owned()
            } else {
                format!("until unix time {}", previous.expires_at)
            }
        ));
    }
    if let Some(map) = limits.as_object() {
        for (name, value) in map {
            text.push_str(&format!("{name}: {value}\n"));
        }
    }
    let mercure = &app.mercure;
    text.push_str(&format!(
        "mercure_jwt_key:    {}\nmercure_audience:   {}\nmercure_issuer:     {}\nmercure_anonymous:  {}\nmercure_history:    {} updates, {} s\n",
        match &mercure.jwt_key {
            MercureKey::AppSecret => "the app's secret (HS256)".to_owned(),
            MercureKey::Hmac(key) => format!("{} (HS256)", key.expose()),
            MercureKey::PublicPem(_) => "a PEM public key (RS256 / ES256)".to_owned(),
        },
        mercure.audience.as_deref().unwrap_or("the hub's URL (default)"),
        mercure.issuer.as_deref().unwrap_or("not checked"),
        mercure.anonymous,
        mercure.history_size,
        mercure.history_seconds,
    ));
    text
}

fn print_app(app: &App, json: bool) -> Outcome {
    if json {
        to_json(app)
    } else {
        Ok(describe(app))
    }
}

fn split_origins(list: Option<String>) -> Option<Vec<String>> {
    list.map(|l| {
        l.split([',', '\n', ' '])
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

fn describe_usage(report: &UsageReport) -> String {
    let mut text = format!(
        "app {}\ntoday ({}): {} messages, peak {} connections\n\nlast 30 days:\n",
        report.app_id, report.today.date, report.today.messages, report.today.peak_connections
    );
    for day in &report.days {
        text.push_str(&format!(
            "  {}  {:>12} messages  {:>8} peak connections\n",
            day.date, day.messages, day.peak_connections
        ));
    }
    let active: Vec<_> = report
        .minutes
        .iter()
        .filter(|m| m.messages > 0 || m.peak_connections > 0)
        .collect();
    text.push_str(&format!(
        "\nlast 24 hours: {} active minutes, {} messages\n",
        active.len(),
        report.minutes.iter().map(|m| m.messages).sum::<u64>()
    ));
    text
}

/// Runs an `apps` command.
pub(super) async fn run(cx: Context, command: AppsCommand) -> Outcome {
    let store = &cx.store;
    match command {
        AppsCommand::Create {
            name,
            tenant,
            plan,
            limits,
            allowed_origins,
            switches,
            mercure,
            json,
        } => {
            let new = NewApp {
                mercure: mercure.patch().await?,
                name,
                tenant_id: tenant,
                plan,
                enabled: switches.enabled,
                client_events: switches.client_events,
                subscription_count: switches.subscription_count,
                limits: limits.patch(),
                allowed_origins: split_origins(allowed_origins),
                ..NewApp::default()
            };
            let app = store.create_app(new).await?;
            print_app(&app, json)
        }
        AppsCommand::Update {
            app_id,
            name,
            limits,
            allowed_origins,
            switches,
            mercure,
            json,
        } => {
            let patch = AppPatch {
                mercure: mercure.patch().await?,
                name,
                enabled: switches.enabled,
                client_events: switches.client_events,
                subscription_count: switches.subscription_count,
                limits: limits.patch(),
                allowed_origins: split_origins(allowed_origins),
            };
            let after = store.update_app(&app_id, patch).await?;
            print_app(&after, json)
        }
        AppsCommand::Show { app_id, json } => {
            let app = store.get_app(&app_id).await?;
            // The secret is printed: as revealing as the dashboard's reveal.
            let details = json!({ "keys": [app.key] });
            audit::record(
                store,
                Some(&app.tenant_id),
                "key.revealed",
                &app_id,
                details,
            )
            .await?;
            print_app(&app, json)
        }
        AppsCommand::List { tenant, json } => {
            let apps = store.list_apps(tenant.as_deref()).await?;
            if json {
                return to_json(&apps);
            }
            Ok(apps
                .iter()
                .map(|a| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}",
                        a.id,
                        a.key,
                        a.tenant_id,
                        if a.enabled { "enabled" } else { "disabled" },
                        a.name
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        AppsCommand::Delete { app_id, json } => {
            store.delete_app(&app_id).await?;
            if json {
                Ok(json!({ "deleted": app_id }).to_string())
            } else {
                Ok(format!("deleted app {app_id}"))
            }
        }
        AppsCommand::Usage { app_id, json } => {
            store.get_app(&app_id).await?;
            let clock = store.clock();
            let report = store
                .usage_report(&app_id, clock.day(), clock.minute())
                .await?;
            if json {
                to_json(&report)
            } else {
                Ok(describe_usage(&report))
            }
        }
        AppsCommand::RotateSecret {
            app_id,
            grace_period,
            json,
        } => {
            let app = store.rotate_key(&app_id, grace_period).await?;
            print_app(&app, json)
        }
        AppsCommand::RevokeKey { app_id, key, json } => {
            let app = store.revoke_key(&app_id, &key).await?;
            print_app(&app, json)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::Cli;

    #[test]
    fn the_mercure_key_flag_never_shows_in_debug() {
        let key = "a Mercure HS256 key of at least 32 bytes!";
        let cli = Cli::try_parse_from([
            "herald",
            "apps",
            "update",
            "7",
            "--mercure-jwt-key",
            key,
            "--mercure-anonymous",
            "true",
        ])
        .expect("the flags parse");
        let debug = format!("{cli:?}");
        assert!(debug.contains("mercure_anonymous: Some(true)"), "{debug}");
        assert!(!debug.contains(key), "{debug}");
        assert!(Cli::try_parse_from([
            "herald",
            "apps",
            "update",
            "7",
            "--mercure-jwt-key",
            key,
            "--mercure-jwt-key-file",
            "/tmp/k.pem",
        ])
        .is_err());
    }
}
