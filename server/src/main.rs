//! The `herald` binary: parses the command line and hands over to the library.

use clap::Parser;

// mimalloc: less memory per idle connection and fewer cycles per allocation than glibc's malloc
// (see infra/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use herald::cli::{Cli, Command};
use herald::config::Settings;
use herald::startup::Application;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Apps(command) => herald::cli::run_apps(command).await,
        Command::Tenants(command) => herald::cli::run_tenants(command).await,
        Command::Users(command) => herald::cli::run_users(command).await,
        Command::Webhooks(command) => herald::cli::run_webhooks(command).await,
        Command::Tokens(command) => herald::cli::run_tokens(command).await,
        Command::Audit(command) => herald::cli::run_audit(command).await,
    };
    std::process::exit(code);
}

async fn serve() -> i32 {
    herald::telemetry::init();
    // Handlers first: a SIGTERM during start-up stops the node cleanly instead of killing it.
    let stop = herald::shutdown::signal();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            return 2;
        }
    };
    let application = match Application::build(settings).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            return 1;
        }
    };
    match application.run_until_stopped(stop).await {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, "server error");
            1
        }
    }
}
