//! `herald tokens ...`: create, list and revoke a tenant's management API tokens. The CLI acts
//! as the operator (it has the store's credentials), so it may grant any scope; each creation
//! and revocation is audited (actor `cli`), never with the token's text.

use clap::Subcommand;
use serde_json::json;

use super::{audit, to_json, Context, Outcome};
use crate::tenants::{ApiToken, NewToken, Scope, UserRole, CLI_ACTOR};

/// `herald tokens ...`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; its text is printed once and only its hash is stored.
    Create {
        /// The tenant the token acts in.
        #[arg(long)]
        tenant: String,
        /// A name to tell tokens apart.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: apps:read, apps:write, keys:write, webhooks:read,
        /// webhooks:write, usage:read.
        #[arg(long, value_name = "SCOPES")]
        scopes: String,
        /// Days until it stops working (default: never).
        #[arg(long, value_name = "D")]
        expires_in_days: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a tenant's tokens (never their text).
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's id.
        token_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl TokensCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            TokensCommand::Create { json, .. }
            | TokensCommand::List { json, .. }
            | TokensCommand::Revoke { json, .. } => *json,
        }
    }
}

fn line(token: &ApiToken, now: i64) -> String {
    let state = if token.revoked_at.is_some() {
        "revoked"
    } else if token.live_at(now) {
        "live"
    } else {
        "expired"
    };
    let scopes: Vec<&str> = token.scopes.iter().map(|s| s.as_str()).collect();
    format!(
        "{}\t{}\t{}\t{}\texpires {}\tlast used {}",
        token.id,
        state,
        token.name,
        scopes.join(","),
        token
            .expires_at
            .map_or("never".to_owned(), |at| at.to_string()),
        token
            .last_used_at
            .map_or("never".to_owned(), |at| at.to_string()),
    )
}

/// Runs a `tokens` command.
pub(super) async fn run(cx: Context, command: TokensCommand) -> Outcome {
    let store = &cx.store;
    match command {
        TokensCommand::Create {
            tenant,
            name,
            scopes,
            expires_in_days,
            json,
        } => {
            store.get_tenant(&tenant).await?;
            let (token, text) = store
                .create_token(NewToken {
                    tenant_id: tenant.clone(),
                    name,
                    scopes: Scope::parse_list(&scopes)?,
                    expires_in_days,
                    created_by: CLI_ACTOR.to_owned(),
                    creator_role: UserRole::Operator,
                })
                .await?;
            let target = format!("token/{}", token.id);
            audit::record(
                store,
                Some(&tenant),
                "token.created",
                &target,
                token.audit_details(),
            )
            .await?;
            if json {
                let mut value = serde_json::to_value(&token)?;
                value["token"] = json!(text);
                to_json(&value)
            } else {
                Ok(format!(
                    "{}\n\nThis is the only time the token is shown; store it now.\n{}",
                    text,
                    line(&token, store.clock().now_seconds())
                ))
            }
        }
        TokensCommand::List { tenant, json } => {
            store.get_tenant(&tenant).await?;
            let tokens = store.list_tokens(&tenant).await?;
            if json {
                return to_json(&tokens);
            }
            let now = store.clock().now_seconds();
            Ok(tokens
                .iter()
                .map(|t| line(t, now))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        TokensCommand::Revoke { token_id, json } => {
            let token = store.revoke_token(None, &token_id).await?;
            let target = format!("token/{}", token.id);
            audit::record(
                store,
                Some(&token.tenant_id),
                "token.revoked",
                &target,
                token.audit_details(),
            )
            .await?;
            if json {
                to_json(&token)
            } else {
                Ok(format!("revoked token {token_id}"))
            }
        }
    }
}
