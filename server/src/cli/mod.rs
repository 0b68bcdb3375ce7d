//! The command line: `herald serve` (the default) and `herald apps ...`, with the grammar and JSON
//! of `interfaces.md`. Every command works on the store named by the same environment as the
//! server; a running server picks up changes within its revision poll (1 s).
//!
//! This file holds the top-level grammar, the typed [`CliError`] and the dispatch: each command
//! group (`apps.rs`, `tenants.rs`, `tokens.rs`, `users.rs`, `webhooks.rs`) has its subcommands and what they
//! print. A command's output goes to stdout; its error to stderr (`error: ...`, or
//! `{"error": "..."}` with `--json`) with exit code 1.

mod apps;
mod audit;
mod tenants;
mod tokens;
mod users;
mod webhooks;

pub use apps::{AppsCommand, LimitArgs, SwitchArgs};
pub use audit::AuditCommand;
pub use tenants::TenantsCommand;
pub use tokens::TokensCommand;
pub use users::UsersCommand;
pub use webhooks::WebhooksCommand;

use clap::{Parser, Subcommand};
use serde_json::json;

use crate::config::{ConfigError, Settings};
use crate::startup::{open_store, StartupError};
use crate::tenants::{Store, StoreError};

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
    /// Print a tenant's audit log (JSON lines with --json).
    Audit(AuditCommand),
    /// Manage a tenant's management API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
}

/// Why a store command failed. Its `Display` is what the command prints after `error: ` (or as
/// the JSON `error`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The environment does not make valid settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened (or its files secured).
    #[error(transparent)]
    Open(#[from] StartupError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The output could not be serialized.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        1
    }
}

/// What a command printed, or why it failed.
type Outcome = Result<String, CliError>;

/// What a command works with: the settings from the environment (their clock is the process's
/// one clock, which the store holds too) and the open store.
struct Context {
    settings: Settings,
    store: Store,
}

fn to_json<T: serde::Serialize>(value: &T) -> Outcome {
    Ok(serde_json::to_string_pretty(value)?)
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
                eprintln!("{}", json!({ "error": error.to_string() }));
            } else {
                eprintln!("error: {error}");
            }
            error.exit_code()
        }
    }
}

/// Reads the settings, opens the store, runs `work` and closes the store. The CLI acts as
/// `cli`: each change it makes writes its audit entry in its own transaction.
async fn with_store<F, Fut>(work: F) -> Outcome
where
    F: FnOnce(Context) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let settings = Settings::from_env()?;
    let store = open_store(&settings).await?;
    let work = work(Context {
        settings,
        store: store.clone(),
    });
    let outcome = crate::tenants::AuditBy::cli().scope(work).await;
    store.close().await;
    outcome
}

/// Runs an `apps` command and returns the process exit code.
pub async fn run_apps(command: Box<AppsCommand>) -> i32 {
    let command = *command;
    let json = command.json();
    finish(with_store(|cx| apps::run(cx, command)).await, json)
}

/// Runs a `tenants` command and returns the process exit code.
pub async fn run_tenants(command: TenantsCommand) -> i32 {
    let json = command.json();
    finish(with_store(|cx| tenants::run(cx, command)).await, json)
}

/// Runs a `users` command and returns the process exit code.
pub async fn run_users(command: UsersCommand) -> i32 {
    let json = command.json();
    finish(with_store(|cx| users::run(cx, command)).await, json)
}

/// Runs `herald audit` and returns the process exit code.
pub async fn run_audit(command: AuditCommand) -> i32 {
    let json = command.json;
    finish(with_store(|cx| audit::run(cx, command)).await, json)
}

/// Runs a `webhooks` command and returns the process exit code.
pub async fn run_webhooks(command: WebhooksCommand) -> i32 {
    let json = command.json();
    finish(with_store(|cx| webhooks::run(cx, command)).await, json)
}

/// Runs a `tokens` command and returns the process exit code.
pub async fn run_tokens(command: TokensCommand) -> i32 {
    let json = command.json();
    finish(with_store(|cx| tokens::run(cx, command)).await, json)
}
