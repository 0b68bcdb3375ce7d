//! Tenants, admin users (argon2id password hashes) and the access scope every admin surface
//! goes through: a tenant admin sees and changes only its own tenant's apps; another tenant's
//! app answers "not found", exactly like an app that does not exist.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use serde::Serialize;
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::Row;
use tokio::sync::Semaphore;

use super::audit::{change, AuditBy, Change};

pub use super::roles::{Actor, Permission, UserRole};
use super::{
    bump_revision, fresh_id, App, AppPatch, Conflict, NewApp, Store, StoreError, UsageReport,
};

/// The plan of an app a tenant admin creates without naming one.
pub const TENANT_DEFAULT_PLAN: &str = "sandbox";
/// How many apps a new tenant's admins may create until the operator says otherwise.
pub(crate) const NEW_TENANT_MAX_APPS: u64 = 10;
/// The plans a new tenant's admins may create apps from until the operator says otherwise (the
/// larger plans hold a node's worth of connections: the operator hands them out).
pub(crate) const NEW_TENANT_PLANS: &[&str] = &["sandbox", "startup"];

/// An organisation: it owns apps and has admin users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    /// Id (digits; the default tenant is `"1"`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Apps the tenant's admins may have (0: no cap); the operator is not bound by it.
    pub max_apps: u64,
    /// Plans the tenant's admins may create apps from (empty: every plan but `unlimited`).
    pub plans: Vec<String>,
}

/// An admin user (the password hash never leaves the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Id (digits).
    pub id: String,
    /// Sign-in email, lowercase.
    pub email: String,
    /// The operator, or the user's role in their tenant.
    pub role: UserRole,
    /// The tenant of a member; `None` for the operator.
    pub tenant_id: Option<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Bumped by every password change; dashboard sessions of an older generation are over.
    #[serde(skip)]
    pub credential_generation: i64,
}

fn tenant_from_row(row: &AnyRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        max_apps: u64::try_from(row.try_get::<i64, _>("max_apps")?).unwrap_or(0),
        plans: super::policy::plans_from_db(&row.try_get::<String, _>("plans")?),
    })
}

const TENANT_COLUMNS: &str = "id, name, created_at, max_apps, plans";

pub(super) fn user_from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        // A role this build does not know gets the least: read-only.
        role: UserRole::parse(&role).unwrap_or(UserRole::Viewer),
        tenant_id: row.try_get("tenant_id")?,
        created_at: row.try_get("created_at")?,
        credential_generation: row.try_get("credential_generation")?,
    })
}

pub(super) const USER_COLUMNS: &str =
    "id, email, role, tenant_id, created_at, credential_generation";

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;

pub(super) fn normalise_email(email: &str) -> Result<String, StoreError> {
    let email = email.trim().to_ascii_lowercase();
    // No whitespace, control (C0, C1, DEL) or bidi-override characters (they would reach
    // terminals and pages), and no `<>`: a mailer reads `x<victim@host>` as a display name and
    // delivers to `victim@host`, so such a string is never one bare address.
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.contains(|c: char| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '<' | '>' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        });
    if valid {
        Ok(email)
    } else {
        Err(StoreError::Invalid(format!(
            "invalid email address {email:?}"
        )))
    }
}

pub(super) fn check_password(password: &str) -> Result<(), StoreError> {
    let chars = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=1024).contains(&chars) {
        return Err(StoreError::Invalid(format!(
            "passwords must be {MIN_PASSWORD_CHARS} to 1024 characters"
        )));
    }
    Ok(())
}

/// Checks an email address's shape as [`Store::create_user`] would (nothing about accounts).
pub fn check_email(email: &str) -> Result<(), StoreError> {
    normalise_email(email).map(|_| ())
}

/// Checks an email and password as [`Store::create_user`] would, without writing anything.
pub fn check_new_user(email: &str, password: &str) -> Result<(), StoreError> {
    normalise_email(email)?;
    check_password(password)
}

/// How long a password check waits for one of the [`argon2_permits`] before it is shed.
const ARGON2_WAIT: Duration = Duration::from_millis(500);

/// Argon2 runs at once in this process: one per core. Each takes about 19 MiB and a core for
/// tens of milliseconds, so running more at once only adds memory and latency. A permit moves
/// into the blocking task, so a request dropped mid-check still holds it until argon2 is done.
fn argon2_permits() -> Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Arc::new(Semaphore::new(cores))
        })
        .clone()
}

/// Hashes `password` with argon2id (default parameters), off the async runtime. Waits for an
/// argon2 permit as long as it takes: hashing is for authenticated admins and the CLI only.
pub(super) async fn hash_password(password: &str) -> Result<String, StoreError> {
    let password = password.to_owned();
    let permit = argon2_permits()
        .acquire_owned()
        .await
        .map_err(|_| StoreError::Busy)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| StoreError::Invalid(format!("cannot hash the password: {e}")))
    })
    .await
    .map_err(|_| StoreError::Invalid("password hashing was interrupted".into()))?
}

/// Verifies `password` against `hash` off the async runtime, holding an argon2 permit; when
/// none frees up within [`ARGON2_WAIT`], the check is shed with [`StoreError::Busy`] (429).
pub(super) async fn verify_password(password: &str, hash: String) -> Result<bool, StoreError> {
    let permit = tokio::time::timeout(ARGON2_WAIT, argon2_permits().acquire_owned())
        .await
        .map_err(|_| StoreError::Busy)?
        .map_err(|_| StoreError::Busy)?;
    let password = password.to_owned();
    let verified = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    Ok(verified)
}

/// Computes the decoy hash ahead of the first sign-in (call once at startup, off the runtime).
pub async fn warm_up_password_checks() {
    let _ = tokio::task::spawn_blocking(decoy_hash).await;
}

/// A hash to verify against when the email is unknown, so a sign-in takes as long either way.
fn decoy_hash() -> String {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY
        .get_or_init(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(b"herald decoy password", &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone()
}

impl Store {
    /// Creates a tenant.
    /// Creates a tenant with the policy every new tenant starts with ([`NEW_TENANT_MAX_APPS`]
    /// apps from [`NEW_TENANT_PLANS`]): what more it may have is the operator's decision
    /// (`herald tenants update`).
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(StoreError::Invalid(
                "tenant name must be 1 to 100 characters".into(),
            ));
        }
        let mut tx = self.write_tx().await?;
        let id = fresh_id(&mut tx, "tenants", 10_000..100_000_000).await?;
        let tenant = Tenant {
            id,
            name: name.to_owned(),
            created_at: self.clock.now_seconds(),
            max_apps: NEW_TENANT_MAX_APPS,
            plans: NEW_TENANT_PLANS.iter().map(|p| (*p).to_owned()).collect(),
        };
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at, max_apps, plans) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.id.clone())
        .bind(tenant.name.clone())
        .bind(tenant.created_at)
        .bind(i64::try_from(tenant.max_apps).unwrap_or(i64::MAX))
        .bind(tenant.plans.join(","))
            .execute(&mut *tx)
            .await?;
        bump_revision(&mut tx).await?;
        let details = json!({ "name": tenant.name });
        let id = &tenant.id;
        self.audit_in(&mut tx, change(id, "tenant.created", id, details))
            .await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Every tenant, oldest first.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(tenant_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// One tenant.
    pub async fn get_tenant(&self, id: &str) -> Result<Tenant, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
        ))
        .bind(id.to_owned())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::TenantNotFound(id.to_owned()))?;
        Ok(tenant_from_row(&row)?)
    }

    /// Creates a user: the operator (`tenant_id` `None`) or a member of `tenant_id` with `role`.
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: UserRole,
        tenant_id: Option<&str>,
    ) -> Result<User, StoreError> {
        let email = normalise_email(email)?;
        check_password(password)?;
        let tenant_id = match (role, tenant_id) {
            (UserRole::Operator, _) => None,
            (_, Some(tenant)) => Some(self.get_tenant(tenant).await?.id),
            (_, None) => {
                return Err(StoreError::Invalid(format!(
                    "a tenant {role} needs a tenant (--tenant ID)"
                )))
            }
        };
        let hash = hash_password(password).await?;
        let mut tx = self.write_tx().await?;
        let taken = sqlx::query("SELECT id FROM users WHERE email = $1")
            .bind(email.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(Conflict::EmailTaken(email).into());
        }
        let id = fresh_id(&mut tx, "users", 10_000..100_000_000).await?;
        let user = User {
            id,
            email,
            role,
            tenant_id,
            created_at: self.clock.now_seconds(),
            credential_generation: 0,
        };
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, tenant_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.clone())
        .bind(user.email.clone())
        .bind(hash)
        .bind(role.as_str())
        .bind(user.tenant_id.clone())
        .bind(user.created_at)
        .execute(&mut *tx)
        .await?;
        let created = Change {
            tenant: user.tenant_id.as_deref(),
            action: "member.created",
            target: &user.email,
            details: json!({ "role": user.role }),
        };
        self.audit_in(&mut tx, created).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, email"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(user_from_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// One user by id.
    pub async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// One user by email (any case), if there is one.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let Ok(email) = normalise_email(email) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Whether any user exists (the first start creates the operator when none does).
    pub async fn has_users(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Replaces the password of the user with `email` and bumps their credential generation,
    /// which ends their dashboard sessions on every node (the dashboard compares it on each
    /// request), whoever changed it: the dashboard or `herald users set-password`.
    pub async fn set_password(&self, email: &str, password: &str) -> Result<(), StoreError> {
        let email = normalise_email(email)?;
        check_password(password)?;
        let hash = hash_password(password).await?;
        let mut tx = self.write_tx().await?;
        let found = sqlx::query("SELECT id, tenant_id FROM users WHERE email = $1")
            .bind(email.clone())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::UserNotFound(email.clone()))?;
        let (user_id, tenant): (String, Option<String>) =
            (found.try_get("id")?, found.try_get("tenant_id")?);
        sqlx::query(
            "UPDATE users SET password_hash = $1, \
             credential_generation = credential_generation + 1 WHERE id = $2",
        )
        .bind(hash)
        .bind(user_id.clone())
        .execute(&mut *tx)
        .await?;
        // A new password spends the user's emailed links: one kept by someone else stops.
        sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE used_at = 0 AND user_id = $2")
            .bind(self.clock.now_millis())
            .bind(user_id.clone())
            .execute(&mut *tx)
            .await?;
        // `password.changed` when the user changed their own, `password.reset` when someone
        // else (the operator, the CLI) set it.
        if let Some(by) = AuditBy::current() {
            let own = by.actor_id.as_deref() == Some(user_id.as_str());
            let reset = Change {
                tenant: tenant.as_deref(),
                action: if own {
                    "password.changed"
                } else {
                    "password.reset"
                },
                target: &email,
                details: json!({}),
            };
            self.audit_as(&mut tx, by, reset).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The user with `email` if `password` is theirs. Unknown emails cost the same argon2 work.
    pub async fn authenticate(
        &self,
        email: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        let Ok(email) = normalise_email(email) else {
            verify_password(password, decoy_hash()).await?;
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash, email_verified FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            verify_password(password, decoy_hash()).await?;
            return Ok(None);
        };
        // An unverified sign-up has no usable password (it waits in the verification link's
        // row): it answers exactly as a wrong password, after the same argon2 work, so a
        // sign-in cannot tell whether an address was free when someone signed it up.
        let verified: i64 = row.try_get("email_verified")?;
        if verified == 0 {
            verify_password(password, decoy_hash()).await?;
            return Ok(None);
        }
        let hash: String = row.try_get("password_hash")?;
        if verify_password(password, hash).await? {
            Ok(Some(user_from_row(&row)?))
        } else {
            Ok(None)
        }
    }

    /// The store as seen by `actor`.
    pub fn scoped(&self, actor: Actor) -> Scoped<'_> {
        Scoped { store: self, actor }
    }
}

/// The store seen through an [`Actor`]: every app operation checks the app's tenant, and an app
/// of another tenant answers [`StoreError::AppNotFound`], as if it did not exist.
#[derive(Debug, Clone)]
pub struct Scoped<'a> {
    pub(super) store: &'a Store,
    pub(super) actor: Actor,
}

impl Scoped<'_> {
    /// Who is acting.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Refuses with [`StoreError::RoleDenied`] unless the actor's role allows `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), StoreError> {
        if self.actor.allows(permission) {
            Ok(())
        } else {
            Err(StoreError::RoleDenied(format!(
                "Your role ({}) may not {}.",
                self.actor.role(),
                permission.describe()
            )))
        }
    }

    /// One app the actor may see, if their role also allows `permission`. The scope is checked
    /// first: another tenant's app is "not found" whatever the role.
    pub async fn app_for(&self, id: &str, permission: Permission) -> Result<App, StoreError> {
        let app = self.get_app(id).await?;
        self.require(permission)?;
        Ok(app)
    }

    /// The apps the actor may see.
    pub async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        match &self.actor {
            Actor::Operator => self.store.list_apps(None).await,
            Actor::Member { tenant, .. } => self.store.list_apps(Some(tenant)).await,
        }
    }

    /// The tenants the actor may see.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let tenants = self.store.list_tenants().await?;
        Ok(tenants
            .into_iter()
            .filter(|t| self.actor.can_access(&t.id))
            .collect())
    }

    /// One app, if the actor may see it.
    pub async fn get_app(&self, id: &str) -> Result<App, StoreError> {
        let app = self.store.get_app(id).await?;
        if self.actor.can_access(&app.tenant_id) {
            Ok(app)
        } else {
            Err(StoreError::AppNotFound(id.to_owned()))
        }
    }

    /// Creates an app; a member always creates in its own tenant.
    pub async fn create_app(&self, mut new: NewApp) -> Result<App, StoreError> {
        self.require(Permission::WriteApps)?;
        match &self.actor {
            Actor::Operator => {}
            Actor::Member { tenant, .. } => {
                if new.tenant_id.as_deref().is_some_and(|t| t != tenant) {
                    return Err(StoreError::TenantNotFound(
                        new.tenant_id.unwrap_or_default(),
                    ));
                }
                new.tenant_id = Some(tenant.clone());
                // Chosen ids, keys and secrets are for the operator (the default app).
                new.id = None;
                new.key = None;
                new.secret = None;
                // Quotas are the operator's: a tenant admin picks a plan the tenant may use
                // (sandbox by default, never unlimited unless the operator allows it), within
                // the tenant's app cap, and may only tighten its limits.
                let policy = self.store.get_tenant(tenant).await?;
                let plan = policy.plan_for_admin(new.plan.as_deref())?;
                let loosened = new.limits.loosens(&plan.limits);
                let defaults = super::MercureSettings::default();
                if let Some(limit) = loosened.or_else(|| new.mercure.loosens(&defaults)) {
                    return Err(StoreError::Forbidden(format!(
                        "{limit} may not exceed the {} plan's value",
                        plan.name
                    )));
                }
                new.plan = Some(plan.name.to_owned());
            }
        }
        match &self.actor {
            Actor::Operator => self.store.create_app(new).await,
            Actor::Member { tenant, .. } => self.store.create_app_capped(new, tenant).await,
        }
    }

    /// Changes an app the actor may see.
    /// A tenant member may lower limits but not raise them (nor lift one with 0).
    pub async fn update_app(&self, id: &str, patch: AppPatch) -> Result<App, StoreError> {
        let app = self.app_for(id, Permission::WriteApps).await?;
        if let Actor::Member { .. } = &self.actor {
            let loosened = patch.limits.loosens(&app.limits);
            if let Some(limit) = loosened.or_else(|| patch.mercure.loosens(&app.mercure)) {
                return Err(StoreError::Forbidden(format!(
                    "{limit} can only be raised by the platform operator"
                )));
            }
        }
        self.store.update_app(id, patch).await
    }

    /// Deletes an app the actor may see.
    pub async fn delete_app(&self, id: &str) -> Result<(), StoreError> {
        self.app_for(id, Permission::DeleteApps).await?;
        self.store.delete_app(id).await
    }

    /// Rotates the key pair of an app the actor may see.
    pub async fn rotate_key(&self, id: &str, grace_seconds: u64) -> Result<App, StoreError> {
        self.app_for(id, Permission::RotateKeys).await?;
        self.store.rotate_key(id, grace_seconds).await
    }

    /// Revokes a key pair of an app the actor may see.
    pub async fn revoke_key(&self, id: &str, key: &str) -> Result<App, StoreError> {
        self.app_for(id, Permission::RevokeKeys).await?;
        self.store.revoke_key(id, key).await
    }

    /// The stored usage history of an app the actor may see.
    pub async fn usage(
        &self,
        id: &str,
        today: i64,
        this_minute: i64,
    ) -> Result<UsageReport, StoreError> {
        self.app_for(id, Permission::ReadApps).await?;
        self.store.usage_report(id, today, this_minute).await
    }
}
