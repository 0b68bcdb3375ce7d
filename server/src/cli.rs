//! The command line: `herald serve` (the default) and `herald apps ...`, with the grammar and JSON
//! of `interfaces.md`. Every command works on the store named by the same environment as the
//! server; a running server picks up changes within its revision poll (1 s).

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::config::Settings;
use crate::startup::open_store;
use crate::tenants::{App, AppPatch, LimitsPatch, NewApp};

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
        #[command(flatten)]
        limits: LimitArgs,
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
        }
    }
}

fn describe(app: &App) -> String {
    let limits = serde_json::to_value(app.limits).unwrap_or_default();
    let mut text = format!(
        "id:                 {}\nname:               {}\nkey:                {}\nsecret:             {}\ntenant_id:          {}\nenabled:            {}\nclient_events:      {}\nsubscription_count: {}\n",
        app.id,
        app.name,
        app.key,
        app.secret.expose(),
        app.tenant_id,
        app.enabled,
        app.client_events,
        app.subscription_count
    );
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

/// Runs an `apps` command and returns the process exit code.
pub async fn run_apps(command: Box<AppsCommand>) -> i32 {
    let command = *command;
    let json = match &command {
        AppsCommand::Create { json, .. }
        | AppsCommand::Update { json, .. }
        | AppsCommand::Show { json, .. }
        | AppsCommand::List { json, .. }
        | AppsCommand::Delete { json, .. } => *json,
    };
    match apps(command).await {
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

async fn apps(command: AppsCommand) -> Outcome {
    let settings = Settings::from_env().map_err(|e| e.to_string())?;
    let store = open_store(&settings).await.map_err(|e| e.to_string())?;
    let result = match command {
        AppsCommand::Create {
            name,
            tenant,
            limits,
            switches,
            json,
        } => {
            let new = NewApp {
                name,
                tenant_id: tenant,
                enabled: switches.enabled,
                client_events: switches.client_events,
                subscription_count: switches.subscription_count,
                limits: limits.patch(),
                ..NewApp::default()
            };
            match store.create_app(new).await {
                Ok(app) => print_app(&app, json),
                Err(e) => Err(e.to_string()),
            }
        }
        AppsCommand::Update {
            app_id,
            name,
            limits,
            switches,
            json,
        } => {
            let patch = AppPatch {
                name,
                enabled: switches.enabled,
                client_events: switches.client_events,
                subscription_count: switches.subscription_count,
                limits: limits.patch(),
            };
            match store.update_app(&app_id, patch).await {
                Ok(app) => print_app(&app, json),
                Err(e) => Err(e.to_string()),
            }
        }
        AppsCommand::Show { app_id, json } => match store.get_app(&app_id).await {
            Ok(app) => print_app(&app, json),
            Err(e) => Err(e.to_string()),
        },
        AppsCommand::List { tenant, json } => match store.list_apps(tenant.as_deref()).await {
            Ok(apps) if json => serde_json::to_string_pretty(&apps).map_err(|e| e.to_string()),
            Ok(apps) => Ok(apps
                .iter()
                .map(|a| {
                    format!(
                        "{}\t{}\t{}\t{}",
                        a.id,
                        a.key,
                        if a.enabled { "enabled" } else { "disabled" },
                        a.name
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")),
            Err(e) => Err(e.to_string()),
        },
        AppsCommand::Delete { app_id, json } => match store.delete_app(&app_id).await {
            Ok(()) if json => Ok(json!({ "deleted": app_id }).to_string()),
            Ok(()) => Ok(format!("deleted app {app_id}")),
            Err(e) => Err(e.to_string()),
        },
    };
    store.close().await;
    result
}
