//! Management API tokens from the dashboard: only owners and admins (the roles that manage
//! members) list, create and revoke them, within their own tenant; every creation and
//! revocation is audited with the token's name and scopes, never its text.

use herald_dashboard::{
    Admin, ApiTokenPage, ApiTokenRow, NewApiToken, PortResult, DEAD_TOKENS_PER_PAGE,
};

use super::convert::{member_tenant, user_role};
use super::{port_error, AdminApi};
use crate::tenants::{ApiToken, NewToken, Permission, Scope, StoreError};

fn row(token: ApiToken, now: i64) -> ApiTokenRow {
    let state = if token.revoked_at.is_some() {
        "revoked"
    } else if token.live_at(now) {
        "live"
    } else {
        "expired"
    };
    ApiTokenRow {
        scopes: token.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        id: token.id,
        name: token.name,
        created_by: token.created_by,
        created_at: token.created_at,
        expires_at: token.expires_at,
        last_used_at: token.last_used_at,
        state,
    }
}

impl AdminApi {
    /// The admin's tenant, once their role may manage its tokens (owners and admins).
    fn token_tenant(&self, admin: &Admin) -> PortResult<String> {
        let tenant = member_tenant(admin)?;
        self.scope(admin)
            .member_scope(&tenant, Permission::ManageMembers)
            .map_err(port_error)?;
        Ok(tenant)
    }

    /// The tenant's live tokens and a page of its dead ones older than the cursor `before`
    /// (`created_at.id` of the last one shown; a malformed one starts from the newest).
    pub(super) async fn list_api_tokens(
        &self,
        admin: &Admin,
        before: Option<&str>,
    ) -> PortResult<ApiTokenPage> {
        let tenant = self.token_tenant(admin)?;
        let store = &self.node.store;
        let live = store.live_tokens(&tenant).await.map_err(port_error)?;
        let before = before.and_then(|cursor| {
            let (at, id) = cursor.split_once('.')?;
            Some((at.parse::<i64>().ok()?, id.to_owned()))
        });
        let mut dead = store
            .dead_tokens(&tenant, before, DEAD_TOKENS_PER_PAGE + 1)
            .await
            .map_err(port_error)?;
        let older = (dead.len() > DEAD_TOKENS_PER_PAGE as usize).then(|| {
            dead.truncate(DEAD_TOKENS_PER_PAGE as usize);
            dead.last()
                .map(|t| format!("{}.{}", t.created_at, t.id))
                .unwrap_or_default()
        });
        let now = self.node.settings.clock.now_seconds();
        Ok(ApiTokenPage {
            live: live.into_iter().map(|t| row(t, now)).collect(),
            dead: dead.into_iter().map(|t| row(t, now)).collect(),
            older,
        })
    }

    pub(super) async fn make_api_token(
        &self,
        admin: &Admin,
        new: NewApiToken,
    ) -> PortResult<(ApiTokenRow, String)> {
        let tenant = self.token_tenant(admin)?;
        let scopes = Scope::parse_list(&new.scopes.join(",")).map_err(port_error)?;
        let (token, text) = self
            .node
            .store
            .create_token(NewToken {
                tenant_id: tenant.clone(),
                name: new.name,
                scopes,
                expires_in_days: new.expires_in_days,
                created_by: admin.email.clone(),
                creator_role: user_role(admin.role),
            })
            .await
            .map_err(port_error)?;
        let target = format!("token/{}", token.id);
        self.audit(
            admin,
            Some(&tenant),
            "token.created",
            &target,
            token.audit_details(),
        )
        .await;
        let now = self.node.settings.clock.now_seconds();
        Ok((row(token, now), text))
    }

    pub(super) async fn cancel_api_token(
        &self,
        admin: &Admin,
        id: &str,
    ) -> PortResult<ApiTokenRow> {
        let tenant = self.token_tenant(admin)?;
        let token = self
            .node
            .store
            .revoke_token(Some(&tenant), id)
            .await
            .map_err(|e| match e {
                StoreError::TokenNotFound(_) => herald_dashboard::PortError::NotFound,
                other => port_error(other),
            })?;
        let target = format!("token/{}", token.id);
        self.audit(
            admin,
            Some(&tenant),
            "token.revoked",
            &target,
            token.audit_details(),
        )
        .await;
        let now = self.node.settings.clock.now_seconds();
        Ok(row(token, now))
    }
}
