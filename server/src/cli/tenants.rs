//! `herald tenants ...`: create and list tenants, and change what their admins may create.

use clap::Subcommand;

use super::{to_json, Context, Outcome};
use crate::tenants::{Tenant, TenantPatch};

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

impl TenantsCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            TenantsCommand::Create { json, .. }
            | TenantsCommand::List { json }
            | TenantsCommand::Update { json, .. } => *json,
        }
    }
}

/// Runs a `tenants` command.
pub(super) async fn run(cx: Context, command: TenantsCommand) -> Outcome {
    let store = &cx.store;
    match command {
        TenantsCommand::Create { name, json } => {
            let tenant = store.create_tenant(&name).await?;
            if json {
                to_json(&tenant)
            } else {
                Ok(format!("created tenant {} ({})", tenant.id, tenant.name))
            }
        }
        TenantsCommand::List { json } => {
            let tenants = store.list_tenants().await?;
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
                .await?;
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
}
