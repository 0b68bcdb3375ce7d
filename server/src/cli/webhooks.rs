//! `herald webhooks ...`: an app's webhook endpoints and its failed deliveries.

use clap::Subcommand;
use serde_json::json;

use super::{to_json, Context, Outcome};
use crate::tenants::{DeliveryStatus, NewWebhook, Webhook};

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

impl WebhooksCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            WebhooksCommand::Add { json, .. }
            | WebhooksCommand::List { json, .. }
            | WebhooksCommand::Remove { json, .. }
            | WebhooksCommand::Failed { json, .. }
            | WebhooksCommand::Retry { json, .. } => *json,
        }
    }
}

fn describe_webhook(hook: &Webhook) -> String {
    let events: Vec<&str> = hook.events.iter().map(|k| k.as_str()).collect();
    let mut line = format!("{}\t{}\t{}", hook.id, hook.url, events.join(","));
    if !hook.channel_prefix.is_empty() {
        line.push_str(&format!("\tprefix={}", hook.channel_prefix));
    }
    line
}

/// Runs a `webhooks` command.
pub(super) async fn run(cx: Context, command: WebhooksCommand) -> Outcome {
    let store = &cx.store;
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
            crate::webhooks::check_destination(&cx.settings.webhooks, &url).await?;
            let hook = store
                .create_webhook(NewWebhook {
                    app_id: app,
                    url,
                    events: vec![events],
                    channel_prefix: prefix,
                    headers,
                })
                .await?;
            if json {
                to_json(&hook)
            } else {
                Ok(format!("added webhook {}", describe_webhook(&hook)))
            }
        }
        WebhooksCommand::List { app, json } => {
            store.get_app(&app).await?;
            let hooks = store.list_webhooks(Some(&app)).await?;
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
            store.delete_webhook(&app, &webhook_id).await?;
            if json {
                Ok(json!({ "removed": webhook_id }).to_string())
            } else {
                Ok(format!("removed webhook {webhook_id}"))
            }
        }
        WebhooksCommand::Failed { app, json } => {
            store.get_app(&app).await?;
            let failed = store
                .deliveries(&app, Some(DeliveryStatus::Failed), 1000)
                .await?;
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
            store.get_app(&app).await?;
            let queued = store
                .retry_failed(&app, delivery_id, store.clock().now_millis())
                .await?;
            if json {
                Ok(json!({ "queued": queued }).to_string())
            } else {
                Ok(format!("queued {queued} failed deliveries again"))
            }
        }
    }
}
