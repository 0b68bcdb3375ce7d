//! Invitations to join a tenant with a role: a random 32-byte token (sent in a link, stored only
//! as its SHA-256), single-use, expiring after [`INVITATION_TTL_SECONDS`]. A tenant has at most
//! [`MAX_PENDING_INVITATIONS`] pending and may send [`MAX_INVITATIONS_PER_HOUR`] an hour;
//! expired ones are swept whenever a tenant's invitations are read or written.

use serde::Serialize;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::audit::{change, AuditBy};
use super::sessions::session_key;
use super::signup::{sign_up_email, PUBLIC_HASH_WAIT};
use super::users::{check_password, hash_password, user_from_row, USER_COLUMNS};
use super::{fresh_id, Conflict, Permission, Scoped, Store, StoreError, User, UserRole};

/// How long an invitation may be accepted: 7 days.
pub const INVITATION_TTL_SECONDS: i64 = 7 * 86_400;
/// Pending invitations a tenant may have.
pub const MAX_PENDING_INVITATIONS: i64 = 100;
/// Invitations a tenant may send (or resend) in an hour.
pub const MAX_INVITATIONS_PER_HOUR: i64 = 30;

/// A pending invitation (the token is not in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    /// Id.
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// Who is invited (lowercase).
    pub email: String,
    /// The role they get.
    pub role: UserRole,
    /// The inviter's email.
    pub invited_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

fn invitation_from_row(row: &AnyRow) -> Result<Invitation, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(Invitation {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        email: row.try_get("email")?,
        role: UserRole::parse(&role).unwrap_or(UserRole::Viewer),
        invited_by: row.try_get("invited_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

const COLUMNS: &str = "id, tenant_id, email, role, invited_by, created_at, expires_at";

impl Store {
    /// Invites `email` to `tenant_id` as `role`, replacing a pending invitation of the same
    /// email (a resend: the old link stops working). Returns it and the token for the link.
    pub async fn create_invitation(
        &self,
        tenant_id: &str,
        email: &str,
        role: UserRole,
        invited_by: &str,
    ) -> Result<(Invitation, String), StoreError> {
        // An invitation is mail to a stranger, as a sign-up's link is: the same one bare,
        // deliverable, ASCII address (no `a,b` lists or quoted local parts a mailer may read
        // otherwise, no `localhost` or IP-literal hosts, no Unicode twin of an account).
        let email = sign_up_email(email)?;
        if !role.is_tenant_role() {
            return Err(StoreError::Invalid(
                "invite as owner, admin, developer or viewer".into(),
            ));
        }
        let now = self.clock.now_seconds();
        let mut tx = self.write_tx().await?;
        let locked = sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
            .bind(tenant_id.to_owned())
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::TenantNotFound(tenant_id.to_owned()));
        }
        sqlx::query("DELETE FROM invitations WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // Already a member here: say so (the inviter sees the members list anyway). An account
        // anywhere else, or a sign-up waiting for its link, is not the inviter's business: the
        // invitation is made and mailed as for a free address, so the form cannot tell which
        // addresses have accounts, and accepting it fails (the email is taken) before any hash.
        let member = sqlx::query("SELECT id FROM users WHERE email = $1 AND tenant_id = $2")
            .bind(email.clone())
            .bind(tenant_id.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        if member.is_some() {
            return Err(Conflict::EmailTaken(email).into());
        }
        sqlx::query("DELETE FROM invitations WHERE tenant_id = $1 AND email = $2")
            .bind(tenant_id.to_owned())
            .bind(email.clone())
            .execute(&mut *tx)
            .await?;
        let pending = sqlx::query("SELECT COUNT(*) AS n FROM invitations WHERE tenant_id = $1")
            .bind(tenant_id.to_owned())
            .fetch_one(&mut *tx)
            .await?;
        // The hourly cap counts every invitation created (resends, revoked and accepted ones
        // too) from a log that deleting an invitation does not shrink.
        sqlx::query("DELETE FROM invitation_sends WHERE sent_at <= $1")
            .bind(now - 3600)
            .execute(&mut *tx)
            .await?;
        let recent = sqlx::query("SELECT COUNT(*) AS n FROM invitation_sends WHERE tenant_id = $1")
            .bind(tenant_id.to_owned())
            .fetch_one(&mut *tx)
            .await?;
        if pending.try_get::<i64, _>("n")? >= MAX_PENDING_INVITATIONS {
            return Err(StoreError::Invalid(format!(
                "a tenant may have at most {MAX_PENDING_INVITATIONS} pending invitations: revoke some first"
            )));
        }
        if recent.try_get::<i64, _>("n")? >= MAX_INVITATIONS_PER_HOUR {
            return Err(StoreError::Invalid(format!(
                "at most {MAX_INVITATIONS_PER_HOUR} invitations an hour: try again later"
            )));
        }
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let token = hex::encode(bytes);
        let id = fresh_id(&mut tx, "invitations", 10_000..100_000_000).await?;
        let invitation = Invitation {
            id,
            tenant_id: tenant_id.to_owned(),
            email,
            role,
            invited_by: invited_by.to_owned(),
            created_at: now,
            expires_at: now + INVITATION_TTL_SECONDS,
        };
        sqlx::query(
            "INSERT INTO invitations \
             (id, tenant_id, email, role, token_hash, invited_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(invitation.id.clone())
        .bind(invitation.tenant_id.clone())
        .bind(invitation.email.clone())
        .bind(role.as_str())
        .bind(session_key(&token))
        .bind(invitation.invited_by.clone())
        .bind(invitation.created_at)
        .bind(invitation.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO invitation_sends (tenant_id, sent_at) VALUES ($1, $2)")
            .bind(tenant_id.to_owned())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let details = json!({ "role": role, "expires_at": invitation.expires_at });
        let target = &invitation.email;
        self.audit_in(
            &mut tx,
            change(tenant_id, "member.invited", target, details),
        )
        .await?;
        tx.commit().await?;
        Ok((invitation, token))
    }

    /// A tenant's pending invitations, newest first (expired ones are swept first).
    pub async fn list_invitations(&self, tenant_id: &str) -> Result<Vec<Invitation>, StoreError> {
        self.sweep_invitations().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations WHERE tenant_id = $1 ORDER BY created_at DESC, id"
        ))
        .bind(tenant_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(invitation_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Deletes expired invitations; returns how many.
    pub async fn sweep_invitations(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM invitations WHERE expires_at <= $1")
            .bind(self.clock.now_seconds())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Revokes a pending invitation of `tenant_id`; returns it.
    pub async fn revoke_invitation(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Invitation, StoreError> {
        let found = self
            .list_invitations(tenant_id)
            .await?
            .into_iter()
            .find(|i| i.id == id)
            .ok_or_else(|| StoreError::UserNotFound(format!("member invitation {id}")))?;
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM invitations WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_owned())
            .bind(tenant_id.to_owned())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UserNotFound(format!("member invitation {id}")));
        }
        let details = json!({ "role": found.role });
        let target = &found.email;
        self.audit_in(
            &mut tx,
            change(tenant_id, "invitation.revoked", target, details),
        )
        .await?;
        tx.commit().await?;
        Ok(found)
    }

    /// The live invitation of `token`, if any (nothing is hashed with argon2 for a bad token).
    pub async fn invitation(&self, token: &str) -> Result<Option<Invitation>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM invitations WHERE token_hash = $1 AND expires_at > $2"
        ))
        .bind(session_key(token))
        .bind(self.clock.now_seconds())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(invitation_from_row).transpose()?)
    }

    /// Accepts the invitation of `token`: creates its user with `password` (the rules of
    /// [`super::check_new_user`]) and the invited role, and consumes the invitation.
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: &str,
    ) -> Result<(Invitation, User), StoreError> {
        let invitation = self.invitation(token).await?.ok_or_else(|| {
            StoreError::Invalid("this invitation is unknown, used or expired".into())
        })?;
        // An invitation whose email has become an account can never be used: delete it now,
        // before any hash, so that its token is not a replayable argon2 lever.
        if self.email_taken(&invitation.email).await? {
            self.drop_invitation(token).await?;
            return Err(StoreError::Invalid(
                "this invitation is unknown, used or expired".into(),
            ));
        }
        check_password(password)?;
        // An anonymous form's hash: a bounded wait for a permit, shed with Busy past it.
        let hash = tokio::time::timeout(PUBLIC_HASH_WAIT, hash_password(password))
            .await
            .map_err(|_| StoreError::Busy)??;
        let mut tx = self.write_tx().await?;
        // Single use: whoever deletes the row first creates the user.
        let consumed =
            sqlx::query("DELETE FROM invitations WHERE token_hash = $1 AND expires_at > $2")
                .bind(session_key(token))
                .bind(self.clock.now_seconds())
                .execute(&mut *tx)
                .await?;
        if consumed.rows_affected() == 0 {
            return Err(StoreError::Invalid(
                "this invitation is unknown, used or expired".into(),
            ));
        }
        let taken = sqlx::query("SELECT id FROM users WHERE email = $1")
            .bind(invitation.email.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            // Taken meanwhile: keep the invitation deleted (commit), it can never be used.
            tx.commit().await?;
            return Err(StoreError::Invalid(
                "this invitation is unknown, used or expired".into(),
            ));
        }
        let id = fresh_id(&mut tx, "users", 10_000..100_000_000).await?;
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, tenant_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.clone())
        .bind(invitation.email.clone())
        .bind(hash)
        .bind(invitation.role.as_str())
        .bind(invitation.tenant_id.clone())
        .bind(self.clock.now_seconds())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from_row(&row)?;
        // The new member acts (from the address of the task's actor, the join form's).
        if let Some(by) = AuditBy::current() {
            let joined = AuditBy {
                actor_id: Some(user.id.clone()),
                actor: user.email.clone(),
                address: by.address,
            };
            let details = json!({ "role": invitation.role, "invited_by": invitation.invited_by });
            let target = &user.email;
            let joined_change = change(&invitation.tenant_id, "member.joined", target, details);
            self.audit_as(&mut tx, joined, joined_change).await?;
        }
        tx.commit().await?;
        Ok((invitation, user))
    }
}

impl Store {
    async fn email_taken(&self, email: &str) -> Result<bool, StoreError> {
        let taken = sqlx::query("SELECT id FROM users WHERE email = $1")
            .bind(email.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(taken.is_some())
    }

    async fn drop_invitation(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM invitations WHERE token_hash = $1")
            .bind(session_key(token))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Scoped<'_> {
    /// Invites `email` as `role` (owners and admins; only an owner invites an owner).
    pub async fn invite(
        &self,
        tenant_id: &str,
        email: &str,
        role: UserRole,
        invited_by: &str,
    ) -> Result<(Invitation, String), StoreError> {
        self.member_scope(tenant_id, Permission::ManageMembers)?;
        let mine = self.actor().role();
        if !mine.may_assign(role) {
            return Err(StoreError::RoleDenied(format!(
                "Your role ({mine}) may not invite an {role}."
            )));
        }
        self.store
            .create_invitation(tenant_id, email, role, invited_by)
            .await
    }

    /// The tenant's pending invitations.
    pub async fn invitations(&self, tenant_id: &str) -> Result<Vec<Invitation>, StoreError> {
        self.member_scope(tenant_id, Permission::ManageMembers)?;
        self.store.list_invitations(tenant_id).await
    }

    /// Revokes one.
    pub async fn revoke_invitation(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Invitation, StoreError> {
        self.member_scope(tenant_id, Permission::ManageMembers)?;
        self.store.revoke_invitation(tenant_id, id).await
    }
}
