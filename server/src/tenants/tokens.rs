//! Management API tokens: bearer tokens scoped to one tenant and to a list of [`Scope`]s,
//! created by a tenant's owners and admins (dashboard) or the operator (CLI), shown once, stored
//! only as their SHA-256, optionally expiring, revocable. A tenant has at most
//! [`MAX_LIVE_TOKENS`] live (neither revoked nor expired) tokens.
//!
//! The token is `hrld_` and 32 random bytes in hex. A plain SHA-256 is the right hash here: a
//! token has 256 bits of entropy, so no dictionary or brute force can reverse its hash, and a
//! slow hash (argon2, as for passwords) would only make every API request cost a core.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::sessions::session_key;
use super::{fresh_id, Permission, Store, StoreError, UserRole};

/// Live tokens a tenant may have.
pub const MAX_LIVE_TOKENS: i64 = 50;
/// What every token starts with (so secret scanners and people can tell one).
pub const TOKEN_PREFIX: &str = "hrld_";
/// The longest token name.
pub const MAX_TOKEN_NAME_CHARS: usize = 100;
/// The longest expiry, in days (ten years).
pub const MAX_TOKEN_DAYS: u32 = 3650;
/// How often `last_used_at` is written at most per token (a busy token costs no write per call).
const TOUCH_EVERY_SECONDS: i64 = 60;
/// Days a revoked or expired token's row is kept (listed as such) before the sweep deletes it.
pub const DEAD_TOKEN_DAYS: i64 = 30;
/// Dead token rows one sweep deletes at most.
const TOKEN_SWEEP_BATCH: i64 = 10_000;
/// How often a token's refusals are audited at most (see [`Store::note_token_refusal`]).
const REFUSAL_AUDIT_EVERY_SECONDS: i64 = 60;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Scope {
    /// List and read apps (no secrets).
    #[serde(rename = "apps:read")]
    AppsRead,
    /// Create, change and delete apps.
    #[serde(rename = "apps:write")]
    AppsWrite,
    /// Rotate and revoke key pairs, and set an app's Mercure JWT key (with `apps:write`).
    #[serde(rename = "keys:write")]
    KeysWrite,
    /// List an app's webhooks.
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    /// Add and remove webhooks.
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    /// Read an app's usage.
    #[serde(rename = "usage:read")]
    UsageRead,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 6] = [
        Scope::AppsRead,
        Scope::AppsWrite,
        Scope::KeysWrite,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::UsageRead,
    ];

    /// The scope's name (`apps:read`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AppsRead => "apps:read",
            Scope::AppsWrite => "apps:write",
            Scope::KeysWrite => "keys:write",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::UsageRead => "usage:read",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The role permissions the scope's actions need: a token's scopes may never exceed what
    /// its creator's role may do.
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Scope::AppsRead | Scope::WebhooksRead | Scope::UsageRead => &[Permission::ReadApps],
            Scope::AppsWrite => &[Permission::WriteApps, Permission::DeleteApps],
            Scope::KeysWrite => &[Permission::RotateKeys, Permission::RevokeKeys],
            Scope::WebhooksWrite => &[Permission::WriteWebhooks],
        }
    }

    /// Parses a list of names (comma- or space-separated), refusing unknown ones and an empty
    /// list; sorted, without repeats.
    pub fn parse_list(text: &str) -> Result<Vec<Scope>, StoreError> {
        let mut scopes = Vec::new();
        for name in text
            .split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let scope = Scope::parse(name).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "unknown scope {name:?} (scopes: {})",
                    Scope::ALL.map(Scope::as_str).join(", ")
                ))
            })?;
            scopes.push(scope);
        }
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(StoreError::Invalid(
                "a token needs at least one scope".into(),
            ));
        }
        Ok(scopes)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored token (its text is never stored nor kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiToken {
    /// Id.
    pub id: String,
    /// The tenant it acts in.
    pub tenant_id: String,
    /// A name to tell tokens apart.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Who made it (an email, or `cli`).
    pub created_by: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which it stops working (`None`: never).
    pub expires_at: Option<i64>,
    /// The last time it was used, to the minute (`None`: never).
    pub last_used_at: Option<i64>,
    /// When it was revoked (`None`: not revoked).
    pub revoked_at: Option<i64>,
}

impl ApiToken {
    /// Whether the token works at `now`.
    pub fn live_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    /// What the audit log records of it: its name, scopes and expiry, never its text.
    pub fn audit_details(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "scopes": self.scopes,
            "expires_at": self.expires_at,
        })
    }

    /// Whether it has `scope`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The tenant.
    pub tenant_id: String,
    /// Its name (1 to [`MAX_TOKEN_NAME_CHARS`] characters).
    pub name: String,
    /// Its scopes (at least one).
    pub scopes: Vec<Scope>,
    /// Days until it expires (`None`: never; 1 to [`MAX_TOKEN_DAYS`]).
    pub expires_in_days: Option<u32>,
    /// Who makes it (an email, or `cli`).
    pub created_by: String,
    /// The creator's role: every scope's permissions must be within it.
    pub creator_role: UserRole,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No token has this text (or it is not shaped like one).
    Unknown,
    /// It expired.
    Expired,
    /// It was revoked.
    Revoked,
}

const COLUMNS: &str =
    "id, tenant_id, name, scopes, created_by, created_at, expires_at, last_used_at, revoked_at";

fn nonzero(value: i64) -> Option<i64> {
    (value != 0).then_some(value)
}

fn token_from_row(row: &AnyRow) -> Result<ApiToken, sqlx::Error> {
    let scopes: String = row.try_get("scopes")?;
    Ok(ApiToken {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        scopes: scopes.split(' ').filter_map(Scope::parse).collect(),
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: nonzero(row.try_get("expires_at")?),
        last_used_at: nonzero(row.try_get("last_used_at")?),
        revoked_at: nonzero(row.try_get("revoked_at")?),
    })
}

/// Whether `text` is shaped like a token (the prefix and 64 lowercase hex digits): anything
/// else is refused before the store is asked.
fn well_formed(text: &str) -> bool {
    text.strip_prefix(TOKEN_PREFIX).is_some_and(|rest| {
        rest.len() == 64 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl NewToken {
    /// Checks the name, the scopes against the creator's role, and the expiry.
    fn check(&self) -> Result<(), StoreError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME_CHARS {
            return Err(StoreError::Invalid(format!(
                "a token's name must be 1 to {MAX_TOKEN_NAME_CHARS} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "a token's name may not hold control characters".into(),
            ));
        }
        if self.scopes.is_empty() {
            return Err(StoreError::Invalid(
                "a token needs at least one scope".into(),
            ));
        }
        if !self.creator_role.is_tenant_role() && self.creator_role != UserRole::Operator {
            return Err(StoreError::Invalid("no such role".into()));
        }
        for scope in &self.scopes {
            if let Some(missing) = scope
                .permissions()
                .iter()
                .find(|p| !self.creator_role.allows(**p))
            {
                return Err(StoreError::RoleDenied(format!(
                    "Your role ({}) may not make a token with {scope}: it may not {}.",
                    self.creator_role,
                    missing.describe()
                )));
            }
        }
        if let Some(days) = self.expires_in_days {
            if days == 0 || days > MAX_TOKEN_DAYS {
                return Err(StoreError::Invalid(format!(
                    "a token expires in 1 to {MAX_TOKEN_DAYS} days"
                )));
            }
        }
        Ok(())
    }
}

impl Store {
    /// Creates a token; returns it and its text (shown once, then only its hash remains).
    pub async fn create_token(&self, new: NewToken) -> Result<(ApiToken, String), StoreError> {
        new.check()?;
        let now = self.clock.now_seconds();
        let mut tx = self.write_tx().await?;
        // Lock the tenant row so two creations cannot both pass the cap.
        let locked = sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
            .bind(new.tenant_id.clone())
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Err(StoreError::TenantNotFound(new.tenant_id));
        }
        // The creator's role as it is now, under the tenant lock that lowering or removing a
        // member also takes: a member removed or lowered after the page checked their role, but
        // before this transaction, makes no token (their revocation would miss it).
        let mut new = new;
        if new.creator_role != UserRole::Operator {
            let row = sqlx::query("SELECT role FROM users WHERE tenant_id = $1 AND email = $2")
                .bind(new.tenant_id.clone())
                .bind(new.created_by.clone())
                .fetch_optional(&mut *tx)
                .await?;
            let role = match row {
                Some(row) => UserRole::parse(&row.try_get::<String, _>("role")?),
                None => None,
            };
            match role {
                Some(role) if role.allows(Permission::ManageMembers) => new.creator_role = role,
                _ => {
                    return Err(StoreError::RoleDenied(
                        "You are no longer an owner or admin of this tenant.".into(),
                    ))
                }
            }
            new.check()?;
        }
        let live = sqlx::query(
            "SELECT COUNT(*) AS n FROM api_tokens WHERE tenant_id = $1 AND revoked_at = 0 \
             AND (expires_at = 0 OR expires_at > $2)",
        )
        .bind(new.tenant_id.clone())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        if live.try_get::<i64, _>("n")? >= MAX_LIVE_TOKENS {
            return Err(StoreError::Invalid(format!(
                "a tenant may have at most {MAX_LIVE_TOKENS} live API tokens: revoke some first"
            )));
        }
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let text = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let id = fresh_id(&mut tx, "api_tokens", 10_000..100_000_000).await?;
        let token = ApiToken {
            id,
            tenant_id: new.tenant_id,
            name: new.name.trim().to_owned(),
            scopes: new.scopes,
            created_by: new.created_by,
            created_at: now,
            expires_at: new.expires_in_days.map(|d| now + i64::from(d) * 86_400),
            last_used_at: None,
            revoked_at: None,
        };
        let scopes: Vec<&str> = token.scopes.iter().map(|s| s.as_str()).collect();
        sqlx::query(
            "INSERT INTO api_tokens \
             (id, tenant_id, name, scopes, token_hash, created_by, created_at, expires_at, \
              last_used_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0)",
        )
        .bind(token.id.clone())
        .bind(token.tenant_id.clone())
        .bind(token.name.clone())
        .bind(scopes.join(" "))
        .bind(session_key(&text))
        .bind(token.created_by.clone())
        .bind(now)
        .bind(token.expires_at.unwrap_or(0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((token, text))
    }

    /// A tenant's tokens, newest first (revoked and expired ones too, marked so).
    pub async fn list_tokens(&self, tenant_id: &str) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE tenant_id = $1 ORDER BY created_at DESC, id"
        ))
        .bind(tenant_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(token_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// A tenant's live tokens (neither revoked nor expired at `now`; at most
    /// [`MAX_LIVE_TOKENS`]), newest first.
    pub async fn live_tokens(&self, tenant_id: &str) -> Result<Vec<ApiToken>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE tenant_id = $1 AND revoked_at = 0 \
             AND (expires_at = 0 OR expires_at > $2) ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(tenant_id.to_owned())
        .bind(self.clock.now_seconds())
        .bind(MAX_LIVE_TOKENS * 2)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(token_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// A page of a tenant's dead tokens (revoked, or expired at `now`, kept
    /// [`DEAD_TOKEN_DAYS`]), newest first: at most `limit`, older than `before` (the
    /// `(created_at, id)` of the previous page's last).
    pub async fn dead_tokens(
        &self,
        tenant_id: &str,
        before: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<ApiToken>, StoreError> {
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE tenant_id = $1 \
             AND (revoked_at <> 0 OR (expires_at <> 0 AND expires_at <= $2)) \
             AND (created_at < $3 OR (created_at = $3 AND id < $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(tenant_id.to_owned())
        .bind(self.clock.now_seconds())
        .bind(at)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(token_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// Revokes a token of `tenant_id` (`None`: any tenant's, the CLI); returns it. Revoking a
    /// revoked token is refused.
    pub async fn revoke_token(
        &self,
        tenant_id: Option<&str>,
        id: &str,
    ) -> Result<ApiToken, StoreError> {
        let now = self.clock.now_seconds();
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM api_tokens WHERE id = $1"))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        let found = match row {
            Some(row) => token_from_row(&row)?,
            None => return Err(StoreError::TokenNotFound(id.to_owned())),
        };
        if tenant_id.is_some_and(|t| t != found.tenant_id) {
            return Err(StoreError::TokenNotFound(id.to_owned()));
        }
        let done =
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at = 0")
                .bind(now)
                .bind(id.to_owned())
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Invalid(format!(
                "token {id} is already revoked"
            )));
        }
        Ok(ApiToken {
            revoked_at: Some(now),
            ..found
        })
    }

    /// Deletes tokens revoked or expired more than [`DEAD_TOKEN_DAYS`] days ago (at most
    /// [`TOKEN_SWEEP_BATCH`] a call; the node calls it every 10 minutes), so creating and
    /// revoking tokens in a loop cannot grow the table (or the tokens page) without bound past
    /// what that many days of creations hold. Returns how many went.
    pub async fn sweep_tokens(&self) -> Result<u64, StoreError> {
        let before = self.clock.now_seconds() - DEAD_TOKEN_DAYS * 86_400;
        let done = sqlx::query(
            "DELETE FROM api_tokens WHERE id IN (SELECT id FROM api_tokens \
             WHERE (revoked_at <> 0 AND revoked_at < $1) \
                OR (expires_at <> 0 AND expires_at < $1) LIMIT $2)",
        )
        .bind(before)
        .bind(TOKEN_SWEEP_BATCH)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Whether a refusal of token `id` now should be audited: true at most once a minute per
    /// token (a conditional stamp, so concurrent refusals on any node agree), so whoever holds
    /// a dead token cannot flood the tenant's audit log with refusals.
    pub async fn note_token_refusal(&self, id: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_seconds();
        let done =
            sqlx::query("UPDATE api_tokens SET refused_at = $1 WHERE id = $2 AND refused_at <= $3")
                .bind(now)
                .bind(id.to_owned())
                .bind(now - REFUSAL_AUDIT_EVERY_SECONDS)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The token whose text is `text`, if it works now; notes its use (at most once a minute).
    /// The refusal tells which token was refused when one was found (for the audit log).
    pub async fn authenticate_token(
        &self,
        text: &str,
    ) -> Result<Result<ApiToken, (TokenRefusal, Option<ApiToken>)>, StoreError> {
        if !well_formed(text) {
            return Ok(Err((TokenRefusal::Unknown, None)));
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1"
        ))
        .bind(session_key(text))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Err((TokenRefusal::Unknown, None)));
        };
        let token = token_from_row(&row)?;
        let now = self.clock.now_seconds();
        if token.revoked_at.is_some() {
            return Ok(Err((TokenRefusal::Revoked, Some(token))));
        }
        if !token.live_at(now) {
            return Ok(Err((TokenRefusal::Expired, Some(token))));
        }
        if token
            .last_used_at
            .is_none_or(|at| now - at >= TOUCH_EVERY_SECONDS)
        {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(token.id.clone())
                .execute(&self.pool)
                .await?;
        }
        Ok(Ok(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists_parse_and_the_shape_check_holds() {
        assert_eq!(
            Scope::parse_list("apps:write, apps:read apps:read").unwrap(),
            vec![Scope::AppsRead, Scope::AppsWrite]
        );
        assert!(Scope::parse_list("").is_err());
        assert!(Scope::parse_list("apps:delete").is_err());
        for scope in Scope::ALL {
            assert_eq!(
                serde_json::to_value(scope).unwrap(),
                serde_json::json!(scope.as_str())
            );
        }
        assert!(well_formed(&format!("hrld_{}", "ab".repeat(32))));
        assert!(!well_formed(&format!("hrld_{}", "AB".repeat(32))));
        assert!(!well_formed("hrld_"));
        assert!(!well_formed(&"a".repeat(69)));
    }

    #[test]
    fn scopes_stay_within_the_creators_role() {
        let new = |role, scopes: Vec<Scope>| NewToken {
            tenant_id: "1".into(),
            name: "ci".into(),
            scopes,
            expires_in_days: Some(30),
            created_by: "a@example.com".into(),
            creator_role: role,
        };
        assert!(new(UserRole::Admin, Scope::ALL.to_vec()).check().is_ok());
        assert!(new(UserRole::Developer, vec![Scope::AppsWrite])
            .check()
            .is_err());
        assert!(new(UserRole::Developer, vec![Scope::WebhooksWrite])
            .check()
            .is_ok());
        assert!(new(UserRole::Viewer, vec![Scope::KeysWrite])
            .check()
            .is_err());
        assert!(new(UserRole::Viewer, vec![Scope::AppsRead]).check().is_ok());
        let mut long = new(UserRole::Owner, vec![Scope::AppsRead]);
        long.expires_in_days = Some(MAX_TOKEN_DAYS + 1);
        assert!(long.check().is_err());
        long.expires_in_days = None;
        long.name = "x".repeat(MAX_TOKEN_NAME_CHARS + 1);
        assert!(long.check().is_err());
    }
}
