//! A tenant's members: list them, change a role, remove one. Every change keeps at least one
//! owner or admin who can manage members, and ends the member's dashboard sessions (their rows
//! are deleted and their credential generation moves on, so a cookie already in a browser is
//! refused at its next request on every node).

use serde_json::json;

use super::audit::change;
use super::users::{user_from_row, USER_COLUMNS};
use super::{Actor, Permission, Scoped, Store, StoreError, User, UserRole};

/// The refusal of a change only an owner may make.
fn owner_only(mine: UserRole) -> StoreError {
    StoreError::RoleDenied(format!(
        "Your role ({mine}) may not make, change or remove an owner."
    ))
}

/// Roles that can manage members: a tenant always keeps one.
const MANAGERS: [UserRole; 2] = [UserRole::Owner, UserRole::Admin];

impl Store {
    /// The members of `tenant_id`, oldest first.
    pub async fn list_members(&self, tenant_id: &str) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY created_at, email"
        ))
        .bind(tenant_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Gives member `user_id` of `tenant_id` a new role (`Some`) or removes them (`None`), if
    /// the tenant keeps a manager; ends the member's sessions when their role goes down or they
    /// go. Returns the member as they were.
    pub async fn change_member(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: Option<UserRole>,
    ) -> Result<User, StoreError> {
        self.change_member_as(UserRole::Operator, tenant_id, user_id, role)
            .await
    }

    /// [`Store::change_member`] by someone of role `by`, who may only touch a member whose role
    /// they may assign ([`UserRole::may_assign`]: an admin never an owner). Judged on the
    /// member's role as read inside the change's transaction, under the tenant's lock: a role
    /// read earlier (the page, [`Scoped::change_member`]'s own check) may have changed since,
    /// say an owner promoting the developer an admin is removing.
    pub async fn change_member_as(
        &self,
        by: UserRole,
        tenant_id: &str,
        user_id: &str,
        role: Option<UserRole>,
    ) -> Result<User, StoreError> {
        if role.is_some_and(|r| !r.is_tenant_role()) {
            return Err(StoreError::Invalid(
                "a member's role is owner, admin, developer or viewer".into(),
            ));
        }
        let mut tx = self.write_tx().await?;
        // Serializes changes to one tenant's members (PostgreSQL: the tenant row's lock;
        // SQLite's write transaction already holds the database), so two admins demoting each
        // other at once cannot leave the tenant without one.
        let locked = sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
            .bind(tenant_id.to_owned())
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::TenantNotFound(tenant_id.to_owned()));
        }
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1"
        ))
        .bind(tenant_id.to_owned())
        .fetch_all(&mut *tx)
        .await?;
        let members = rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(member) = members.iter().find(|m| m.id == user_id).cloned() else {
            return Err(StoreError::UserNotFound(format!("member {user_id}")));
        };
        if !by.may_assign(member.role) || role.is_some_and(|r| !by.may_assign(r)) {
            return Err(owner_only(by));
        }
        let managers_after = members
            .iter()
            .filter(|m| {
                let role = if m.id == user_id { role } else { Some(m.role) };
                role.is_some_and(|r| MANAGERS.contains(&r))
            })
            .count();
        if managers_after == 0 {
            return Err(StoreError::Invalid(
                "a tenant keeps at least one owner or admin: make someone else one first".into(),
            ));
        }
        let lowered = match role {
            None => true,
            // Owner > admin > developer > viewer: the enum's order.
            Some(new) => new > member.role,
        };
        if lowered {
            sqlx::query("DELETE FROM dashboard_sessions WHERE user_id = $1")
                .bind(user_id.to_owned())
                .execute(&mut *tx)
                .await?;
            // The invitations they sent that their new standing could not send (all of them
            // on removal) stop working: an invitation never outlives its inviter's authority.
            for invited in UserRole::TENANT_ROLES {
                if role.is_some_and(|new| new.may_assign(invited)) {
                    continue;
                }
                sqlx::query(
                    "DELETE FROM invitations WHERE tenant_id = $1 AND invited_by = $2 AND role = $3",
                )
                .bind(tenant_id.to_owned())
                .bind(member.email.clone())
                .bind(invited.as_str())
                .execute(&mut *tx)
                .await?;
            }
            // Likewise the API tokens they made, once they may no longer make tokens (owners
            // and admins may): a token never outlives its creator's authority.
            if !role.is_some_and(|new| new.allows(Permission::ManageMembers)) {
                sqlx::query(
                    "UPDATE api_tokens SET revoked_at = $1 \
                     WHERE tenant_id = $2 AND created_by = $3 AND revoked_at = 0",
                )
                .bind(self.clock.now_seconds())
                .bind(tenant_id.to_owned())
                .bind(member.email.clone())
                .execute(&mut *tx)
                .await?;
            }
        }
        match role {
            Some(new) => {
                sqlx::query(
                    "UPDATE users SET role = $1, credential_generation = credential_generation + $2 \
                     WHERE id = $3",
                )
                .bind(new.as_str())
                .bind(i64::from(lowered))
                .bind(user_id.to_owned())
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(user_id.to_owned())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let (action, details) = match role {
            Some(new) => (
                "member.role_changed",
                json!({ "from": member.role, "to": new.as_str() }),
            ),
            None => ("member.removed", json!({ "role": member.role })),
        };
        self.audit_in(&mut tx, change(tenant_id, action, &member.email, details))
            .await?;
        tx.commit().await?;
        Ok(member)
    }
}

impl Scoped<'_> {
    /// The members of the actor's tenant (`tenant_id` for the operator).
    pub async fn list_members(&self, tenant_id: &str) -> Result<Vec<User>, StoreError> {
        self.member_scope(tenant_id, Permission::ManageMembers)?;
        self.store.list_members(tenant_id).await
    }

    /// Changes a member's role (`Some`) or removes them (`None`): owners and admins only, and
    /// only an owner may make, unmake or remove an owner.
    pub async fn change_member(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: Option<UserRole>,
    ) -> Result<User, StoreError> {
        self.member_scope(tenant_id, Permission::ManageMembers)?;
        let current = self
            .store
            .list_members(tenant_id)
            .await?
            .into_iter()
            .find(|m| m.id == user_id)
            .ok_or_else(|| StoreError::UserNotFound(format!("member {user_id}")))?;
        let mine = self.actor.role();
        if !mine.may_assign(current.role) || role.is_some_and(|r| !mine.may_assign(r)) {
            return Err(owner_only(mine));
        }
        // Checked again in the change's transaction (the role may change meanwhile).
        self.store
            .change_member_as(mine, tenant_id, user_id, role)
            .await
    }

    /// Refuses unless the actor is in `tenant_id` (or the operator) with `permission`.
    pub fn member_scope(&self, tenant_id: &str, permission: Permission) -> Result<(), StoreError> {
        match &self.actor {
            Actor::Operator => Ok(()),
            Actor::Member { .. } if self.actor.can_access(tenant_id) => self.require(permission),
            Actor::Member { .. } => Err(StoreError::TenantNotFound(tenant_id.to_owned())),
        }
    }
}
