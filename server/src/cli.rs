//! The command line: `herald serve` (the default) and `herald apps ...`, with the grammar and JSON
//! of `interfaces.md`. Every command works on the store named by the same environment as the
//! server; a running server picks up changes within its revision poll (1 s).

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::clock::Clock;
use crate::config::Settings;
use crate::startup::open_store;
use crate::tenants::{
    App, AppPatch, DeliveryStatus, LimitsPatch, NewApp, NewWebhook, Store, StoreError, Tenant,
    TenantPatch, UsageReport, User, UserRole, Webhook,
};

/// Herald, a Pusher Channels compatible server.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (WebSocket, REST API, health).
    Serve,
    /// Manage apps.
    #[command(subcommand)]
    Apps(Box<AppsCommand>),
    /// Manage tenants (organisations that own apps).
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Manage dashboard users (the operator and tenant admins).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage webhook endpoints and failed deliveries.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

/// `herald webhooks ...`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Add an endpoint to an app.
    Add {
        /// The app.
        #[arg(long = "app")]
        app: String,
        /// Where requests are POSTed.
        #[arg(long)]
        url: String,
        /// Event types, comma-separated: channel_occupied, channel_vacated, member_added,
        /// member_removed, client_event, cache_miss, subscription_count.
        #[arg(long)]
        events: String,
        /// Only channels whose names start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// An extra request header, 'Name: value' (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List an app's endpoints.
    List {
        /// The app.
        #[arg(long = "app")]
        app: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint (its pending deliveries go with it).
    Remove {
        /// The app.
        #[arg(long = "app")]
        app: String,
        /// The endpoint's id.
        webhook_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List deliveries that failed for the whole retry window.
    Failed {
        /// The app.
        #[arg(long = "app")]
        app: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue failed deliveries again (a running server sends them within 2 seconds).
    Retry {
        /// The app.
        #[arg(long = "app")]
        app: String,
        /// One failed delivery's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        delivery_id: Option<i64>,
        /// Every failed delivery of the app.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `herald tenants ...`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant.
    Create {
        /// Display name.
        #[arg(long)]
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change what the tenant's admins may create (the operator is not bound by it).
    Update {
        /// The tenant.
        tenant_id: String,
        /// Apps the tenant may have (0: no cap).
        #[arg(long, value_name = "N")]
        max_apps: Option<u64>,
        /// Plans its admins may create apps from, comma-separated (empty: every plan but
        /// unlimited).
        #[arg(long, value_name = "PLAN,...")]
        plans: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `herald users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user: the operator (`--operator`) or an admin of one tenant (`--tenant`).
    Create {
        /// Sign-in email.
        #[arg(long)]
        email: String,
        /// Password (at least 8 characters).
        #[arg(long)]
        password: String,
        /// A platform operator (every tenant).
        #[arg(long, conflicts_with = "tenant", required_unless_present = "tenant")]
        operator: bool,
        /// The tenant this admin manages.
        #[arg(long = "tenant")]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List users (never their password hashes).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace a user's password.
    SetPassword {
        /// The user's email.
        #[arg(long)]
        email: String,
        /// The new password (at least 8 characters).
        #[arg(long)]
        password: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

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
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change an app's name, switches or limits.
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

fn describe_policy(tenant: &Tenant) -> String {
    let apps = match tenant.max_apps {
        0 => "any number of apps".to_owned(),
        n => format!("at most {n} apps"),
    };
    let plans = if tenant.plans.is_empty() {
        "every plan but unlimited".to_owned()
    } else {
        format!("plans {}", tenant.plans.join(","))
    };
    format!("{apps}, {plans}")
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
    text
}

/// What a command printed, or why it failed.
type Outcome = Result<String, String>;

fn print_app(app: &App, json: bool) -> Outcome {
    if json {
        serde_json::to_string_pretty(app).map_err(|e| e.to_string())
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

fn to_json<T: serde::Serialize>(value: &T) -> Outcome {
    serde_json::to_string_pretty(value).map_err(|e| e.to_string())
}

/// Prints a command's outcome and returns the process exit code.
fn finish(outcome: Outcome, json: bool) -> i32 {
    match outcome {
        Ok(text) => {
            println!("{}", text.trim_end());
            0
        }
        Err(error) => {
            if json {
                eprintln!("{}", json!({ "error": error }));
            } else {
                eprintln!("error: {error}");
            }
            1
        }
    }
}

async fn with_store<F, Fut>(work: F) -> Outcome
where
    F: FnOnce(Store) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let settings = Settings::from_env().map_err(|e| e.to_string())?;
    let store = open_store(&settings).await.map_err(|e| e.to_string())?;
    let outcome = work(store.clone()).await;
    store.close().await;
    outcome
}

/// Runs an `apps` command and returns the process exit code.
pub async fn run_apps(command: Box<AppsCommand>) -> i32 {
    let command = *command;
    let json = match &command {
        AppsCommand::Create { json, .. }
        | AppsCommand::Update { json, .. }
        | AppsCommand::Show { json, .. }
        | AppsCommand::List { json, .. }
        | AppsCommand::Delete { json, .. }
        | AppsCommand::Usage { json, .. }
        | AppsCommand::RotateSecret { json, .. }
        | AppsCommand::RevokeKey { json, .. } => *json,
    };
    finish(with_store(|store| apps(store, command)).await, json)
}

/// Runs a `tenants` command and returns the process exit code.
pub async fn run_tenants(command: TenantsCommand) -> i32 {
    let json = match &command {
        TenantsCommand::Create { json, .. }
        | TenantsCommand::List { json }
        | TenantsCommand::Update { json, .. } => *json,
    };
    finish(
        with_store(|store| async move {
            match command {
                TenantsCommand::Create { name, json } => {
                    let tenant = store
                        .create_tenant(&name)
                        .await
                        .map_err(|e| e.to_string())?;
                    if json {
                        to_json(&tenant)
                    } else {
                        Ok(format!("created tenant {} ({})", tenant.id, tenant.name))
                    }
                }
                TenantsCommand::List { json } => {
                    let tenants = store.list_tenants().await.map_err(|e| e.to_string())?;
                    if json {
                        to_json(&tenants)
                    } else {
                        Ok(tenants
                            .iter()
                            .map(|t| format!("{}\t{}\t{}", t.id, t.name, describe_policy(t)))
                            .collect::<Vec<_>>()
                            .join("\n"))
                    }
                }
                TenantsCommand::Update {
                    tenant_id,
                    max_apps,
                    plans,
                    json,
                } => {
                    let plans = plans.map(|list| {
                        list.split(',')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    });
                    let tenant = store
                        .update_tenant(&tenant_id, TenantPatch { max_apps, plans })
                        .await
                        .map_err(|e| e.to_string())?;
                    if json {
                        to_json(&tenant)
                    } else {
                        Ok(format!(
                            "updated tenant {} ({}): {}",
                            tenant.id,
                            tenant.name,
                            describe_policy(&tenant)
                        ))
                    }
                }
            }
        })
        .await,
        json,
    )
}

/// Runs a `users` command and returns the process exit code.
pub async fn run_users(command: UsersCommand) -> i32 {
    let json = match &command {
        UsersCommand::Create { json, .. }
        | UsersCommand::List { json }
        | UsersCommand::SetPassword { json, .. } => *json,
    };
    finish(
        with_store(|store| async move {
            match command {
                UsersCommand::Create {
                    email,
                    password,
                    operator,
                    tenant,
                    json,
                } => {
                    let role = if operator {
                        UserRole::Operator
                    } else {
                        UserRole::Admin
                    };
                    let user = store
                        .create_user(&email, &password, role, tenant.as_deref())
                        .await
                        .map_err(|e| e.to_string())?;
                    if json {
                        to_json(&user)
                    } else {
                        Ok(format!("created user {} ({})", user.email, describe_role(&user)))
                    }
                }
                UsersCommand::List { json } => {
                    let users = store.list_users().await.map_err(|e| e.to_string())?;
                    if json {
                        to_json(&users)
                    } else {
                        Ok(users
                            .iter()
                            .map(|u| format!("{}\t{}\t{}", u.id, u.email, describe_role(u)))
                            .collect::<Vec<_>>()
                            .join("\n"))
                    }
                }
                UsersCommand::SetPassword {
                    email,
                    password,
                    json,
                } => {
                    store
                        .set_password(&email, &password)
                        .await
                        .map_err(|e| e.to_string())?;
                    if json {
                        Ok(json!({ "email": email.trim().to_ascii_lowercase(), "password_changed": true }).to_string())
                    } else {
                        Ok(format!("password changed for {}", email.trim()))
                    }
                }
            }
        })
        .await,
        json,
    )
}

/// Runs a `webhooks` command and returns the process exit code.
pub async fn run_webhooks(command: WebhooksCommand) -> i32 {
    let json = match &command {
        WebhooksCommand::Add { json, .. }
        | WebhooksCommand::List { json, .. }
        | WebhooksCommand::Remove { json, .. }
        | WebhooksCommand::Failed { json, .. }
        | WebhooksCommand::Retry { json, .. } => *json,
    };
    finish(with_store(|store| webhooks(store, command)).await, json)
}

fn describe_webhook(hook: &Webhook) -> String {
    let events: Vec<&str> = hook.events.iter().map(|k| k.as_str()).collect();
    let mut line = format!("{}\t{}\t{}", hook.id, hook.url, events.join(","));
    if !hook.channel_prefix.is_empty() {
        line.push_str(&format!("\tprefix={}", hook.channel_prefix));
    }
    line
}

async fn webhooks(store: Store, command: WebhooksCommand) -> Outcome {
    let err = |e: StoreError| e.to_string();
    match command {
        WebhooksCommand::Add {
            app,
            url,
            events,
            prefix,
            headers,
            json,
        } => {
            // The server would refuse the destination at every request: say so now.
            let settings = Settings::from_env().map_err(|e| e.to_string())?;
            crate::webhooks::check_destination(&settings.webhooks, &url)
                .await
                .map_err(err)?;
            let hook = store
                .create_webhook(NewWebhook {
                    app_id: app,
                    url,
                    events: vec![events],
                    channel_prefix: prefix,
                    headers,
                })
                .await
                .map_err(err)?;
            if json {
                to_json(&hook)
            } else {
                Ok(format!("added webhook {}", describe_webhook(&hook)))
            }
        }
        WebhooksCommand::List { app, json } => {
            store.get_app(&app).await.map_err(err)?;
            let hooks = store.list_webhooks(Some(&app)).await.map_err(err)?;
            if json {
                to_json(&hooks)
            } else {
                Ok(hooks
                    .iter()
                    .map(describe_webhook)
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        }
        WebhooksCommand::Remove {
            app,
            webhook_id,
            json,
        } => {
            store.delete_webhook(&app, &webhook_id).await.map_err(err)?;
            if json {
                Ok(json!({ "removed": webhook_id }).to_string())
            } else {
                Ok(format!("removed webhook {webhook_id}"))
            }
        }
        WebhooksCommand::Failed { app, json } => {
            store.get_app(&app).await.map_err(err)?;
            let failed = store
                .deliveries(&app, Some(DeliveryStatus::Failed), 1000)
                .await
                .map_err(err)?;
            if json {
                return to_json(&failed);
            }
            Ok(failed
                .iter()
                .map(|d| {
                    format!(
                        "{}\twebhook {}\t{} attempts\tlast: {}\t{}",
                        d.id,
                        d.webhook_id,
                        d.attempts,
                        if d.last_error.is_empty() {
                            "-"
                        } else {
                            d.last_error.as_str()
                        },
                        d.channels.join(",")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        WebhooksCommand::Retry {
            app,
            delivery_id,
            all: _,
            json,
        } => {
            store.get_app(&app).await.map_err(err)?;
            let queued = store
                .retry_failed(&app, delivery_id, Clock::system().now_millis())
                .await
                .map_err(err)?;
            if json {
                Ok(json!({ "queued": queued }).to_string())
            } else {
                Ok(format!("queued {queued} failed deliveries again"))
            }
        }
    }
}

fn describe_role(user: &User) -> String {
    match (&user.role, &user.tenant_id) {
        (UserRole::Operator, _) => "operator".into(),
        (UserRole::Admin, Some(tenant)) => format!("admin of tenant {tenant}"),
        (UserRole::Admin, None) => "admin".into(),
    }
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

async fn apps(store: Store, command: AppsCommand) -> Outcome {
    let err = |e: StoreError| e.to_string();
    match command {
        AppsCommand::Create {
            name,
            tenant,
            plan,
            limits,
            allowed_origins,
            switches,
            json,
        } => {
            let new = NewApp {
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
            print_app(&store.create_app(new).await.map_err(err)?, json)
        }
        AppsCommand::Update {
            app_id,
            name,
            limits,
            allowed_origins,
            switches,
            json,
        } => {
            let patch = AppPatch {
                name,
                enabled: switches.enabled,
                client_events: switches.client_events,
                subscription_count: switches.subscription_count,
                limits: limits.patch(),
                allowed_origins: split_origins(allowed_origins),
            };
            print_app(&store.update_app(&app_id, patch).await.map_err(err)?, json)
        }
        AppsCommand::Show { app_id, json } => {
            print_app(&store.get_app(&app_id).await.map_err(err)?, json)
        }
        AppsCommand::List { tenant, json } => {
            let apps = store.list_apps(tenant.as_deref()).await.map_err(err)?;
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
            store.delete_app(&app_id).await.map_err(err)?;
            if json {
                Ok(json!({ "deleted": app_id }).to_string())
            } else {
                Ok(format!("deleted app {app_id}"))
            }
        }
        AppsCommand::Usage { app_id, json } => {
            store.get_app(&app_id).await.map_err(err)?;
            let clock = Clock::system();
            let report = store
                .usage_report(&app_id, clock.day(), clock.minute())
                .await
                .map_err(err)?;
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
        } => print_app(
            &store.rotate_key(&app_id, grace_period).await.map_err(err)?,
            json,
        ),
        AppsCommand::RevokeKey { app_id, key, json } => {
            print_app(&store.revoke_key(&app_id, &key).await.map_err(err)?, json)
        }
    }
}
