//! The dashboard's audit log: its page's rows, and who acts. A change made from the dashboard
//! runs inside [`acting`], so the store writes its entry (the admin's id, email and client
//! address) in the change's own transaction; events that change nothing (a sign-in, a revealed
//! key) are appended with [`AdminApi::audit`]. Details are names, ids and settings; key
//! secrets, passwords, Mercure HS256 keys and webhook header values never go in.

use herald_dashboard::{Admin, AuditQuery, AuditRow};
use serde_json::Value;

use super::AdminApi;
use crate::tenants::{AuditBy, AuditFilter, NewAuditEntry, Permission, StoreError};

pub(crate) use crate::tenants::masked_url;

impl AdminApi {
    /// The audit entries `admin` may read: a member's own tenant's (every role may), the
    /// operator's every tenant's or the one asked for. Client addresses (members' sign-in
    /// addresses among them: personal data) only for the operator and the roles that manage
    /// members (owners, admins); developers and viewers get them blank.
    pub(super) async fn audit_rows(
        &self,
        admin: &Admin,
        query: AuditQuery,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let tenant_id = if admin.operator {
            query.tenant_id.filter(|t| !t.is_empty())
        } else {
            let tenant = admin.tenant_id.clone().unwrap_or_default();
            self.node
                .store
                .scoped(super::AdminApi::actor(admin))
                .member_scope(&tenant, Permission::ReadAudit)?;
            Some(tenant)
        };
        let entries = self
            .node
            .store
            .audit_entries(&AuditFilter {
                tenant_id,
                action: query.action.filter(|a| !a.is_empty()),
                actor: query.actor.filter(|a| !a.is_empty()),
                since_ms: query.since_ms,
                before_id: query.before_id,
                limit: query.limit,
            })
            .await?;
        let addresses = admin.operator || admin.role.manages_members();
        Ok(entries
            .into_iter()
            .map(|e| AuditRow {
                id: e.id,
                tenant_id: e.tenant_id.unwrap_or_default(),
                actor: e.actor,
                action: e.action,
                target: e.target,
                details: e.details.to_string(),
                address: if addresses { e.address } else { String::new() },
                at_ms: e.at,
            })
            .collect())
    }

    /// Appends an entry for `admin`'s event that changed nothing in the store (a sign-in, a
    /// revealed key); a failure to write it is logged.
    pub(super) async fn audit(
        &self,
        admin: &Admin,
        tenant: Option<&str>,
        action: &str,
        target: &str,
        details: Value,
    ) {
        let entry = NewAuditEntry {
            tenant_id: tenant.map(str::to_owned),
            actor_id: Some(admin.id.clone()),
            actor: admin.email.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            details,
            address: admin.address.clone(),
        };
        if let Err(error) = self.node.store.record_audit(entry).await {
            tracing::error!(%error, action, "an audit entry could not be written");
        }
    }
}

/// Runs `work` (a store change) with `admin` as its actor: the change writes its audit entry in
/// its own transaction ([`AuditBy::scope`]).
pub(super) async fn acting<F: std::future::Future>(admin: &Admin, work: F) -> F::Output {
    AuditBy {
        actor_id: Some(admin.id.clone()),
        actor: admin.email.clone(),
        address: admin.address.clone(),
    }
    .scope(work)
    .await
}
