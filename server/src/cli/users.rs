//! `herald users ...`: the dashboard's users (the operator and tenant admins).

use clap::Subcommand;
use serde_json::json;

use super::{to_json, Context, Outcome};
use crate::tenants::{User, UserRole};

/// `herald users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user: the operator (`--operator`) or a member of one tenant (`--tenant`, with
    /// `--role`, admin by default).
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
        /// The tenant this user is a member of.
        #[arg(long = "tenant")]
        tenant: Option<String>,
        /// The member's role in the tenant: owner, admin (the default), developer or viewer.
        #[arg(long, requires = "tenant", conflicts_with = "operator", value_parser = parse_tenant_role)]
        role: Option<UserRole>,
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

impl UsersCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            UsersCommand::Create { json, .. }
            | UsersCommand::List { json }
            | UsersCommand::SetPassword { json, .. } => *json,
        }
    }
}

/// Runs a `users` command.
pub(super) async fn run(cx: Context, command: UsersCommand) -> Outcome {
    let store = &cx.store;
    match command {
        UsersCommand::Create {
            email,
            password,
            operator,
            tenant,
            role,
            json,
        } => {
            let role = if operator {
                UserRole::Operator
            } else {
                role.unwrap_or(UserRole::Admin)
            };
            let user = store
                .create_user(&email, &password, role, tenant.as_deref())
                .await?;
            if json {
                to_json(&user)
            } else {
                Ok(format!(
                    "created user {} ({})",
                    user.email,
                    describe_role(&user)
                ))
            }
        }
        UsersCommand::List { json } => {
            let users = store.list_users().await?;
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
            store.set_password(&email, &password).await?;
            if json {
                Ok(
                    json!({ "email": email.trim().to_ascii_lowercase(), "password_changed": true })
                        .to_string(),
                )
            } else {
                Ok(format!("password changed for {}", email.trim()))
            }
        }
    }
}

fn parse_tenant_role(name: &str) -> Result<UserRole, String> {
    UserRole::parse(name)
        .filter(|role| role.is_tenant_role())
        .ok_or_else(|| format!("{name:?} is not a tenant role: owner, admin, developer or viewer"))
}

fn describe_role(user: &User) -> String {
    match (user.role, &user.tenant_id) {
        (UserRole::Operator, _) => "operator".into(),
        (role, Some(tenant)) => format!("{role} of tenant {tenant}"),
        (role, None) => role.to_string(),
    }
}
