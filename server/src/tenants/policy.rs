//! What a tenant's admins may create: how many apps, from which plans. The operator sets it
//! (`herald tenants update`, the dashboard's tenants page) and is not bound by it.

use serde_json::json;

use super::audit::change;
use super::{bump_revision, NewApp, Plan, Store, StoreError, Tenant, TENANT_DEFAULT_PLAN};
use crate::tenants::App;

/// Changes to a tenant's policy; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    /// Apps the tenant may have (0: no cap).
    pub max_apps: Option<u64>,
    /// Plans its admins may create apps from (empty: every plan but `unlimited`).
    pub plans: Option<Vec<String>>,
}

/// The plan names stored in `tenants.plans` (comma-separated).
pub(super) fn plans_from_db(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Tenant {
    /// Whether the tenant's admins may create apps from `plan`.
    pub fn allows_plan(&self, plan: &str) -> bool {
        if self.plans.is_empty() {
            plan != "unlimited"
        } else {
            self.plans.iter().any(|p| p.eq_ignore_ascii_case(plan))
        }
    }

    /// The plan an admin of this tenant gets when asking for `requested` (the default plan, or
    /// the first allowed one, when none is named), or why not.
    pub fn plan_for_admin(&self, requested: Option<&str>) -> Result<&'static Plan, StoreError> {
        let name = match requested {
            Some(name) => name,
            None if self.allows_plan(TENANT_DEFAULT_PLAN) => TENANT_DEFAULT_PLAN,
            None => self
                .plans
                .first()
                .map_or(TENANT_DEFAULT_PLAN, String::as_str),
        };
        let plan = Plan::named(name)?;
        if self.allows_plan(plan.name) {
            return Ok(plan);
        }
        Err(StoreError::Forbidden(if self.plans.is_empty() {
            "only the platform operator can create apps on the unlimited plan".to_owned()
        } else {
            format!(
                "the {} plan is not available to this tenant (ask the platform operator); \
                 available: {}",
                plan.name,
                self.plans.join(", ")
            )
        }))
    }
}

impl Store {
    /// Changes what tenant `id`'s admins may create. Plan names are checked and normalised.
    pub async fn update_tenant(&self, id: &str, patch: TenantPatch) -> Result<Tenant, StoreError> {
        let mut tenant = self.get_tenant(id).await?;
        if let Some(max_apps) = patch.max_apps {
            if i64::try_from(max_apps).is_err() {
                return Err(StoreError::Invalid("max_apps is too large".into()));
            }
            tenant.max_apps = max_apps;
        }
        if let Some(plans) = patch.plans {
            let mut names: Vec<String> = Vec::new();
            for plan in plans.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
                let name = Plan::named(plan)?.name.to_owned();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            tenant.plans = names;
        }
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("UPDATE tenants SET max_apps = $1, plans = $2 WHERE id = $3")
            .bind(i64::try_from(tenant.max_apps).unwrap_or(i64::MAX))
            .bind(tenant.plans.join(","))
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::TenantNotFound(id.to_owned()));
        }
        bump_revision(&mut tx).await?;
        let details = json!({ "max_apps": tenant.max_apps, "plans": tenant.plans });
        self.audit_in(&mut tx, change(id, "tenant.updated", id, details))
            .await?;
        tx.commit().await?;
        Ok(tenant)
    }

    /// Creates an app for an admin of `tenant_id`, refusing it when the tenant already has its
    /// `max_apps`. The count is taken after the revision row is locked, so two creates at once
    /// cannot both take the last slot (on PostgreSQL as on SQLite's `BEGIN IMMEDIATE`).
    pub(super) async fn create_app_capped(
        &self,
        new: NewApp,
        tenant_id: &str,
    ) -> Result<App, StoreError> {
        self.create_app_with(new, Some(tenant_id)).await
    }
}

/// Refuses when tenant `tenant_id` has its `max_apps` already (inside the creating transaction).
pub(super) async fn check_app_cap(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant_id: &str,
) -> Result<(), StoreError> {
    use sqlx::Row;
    bump_revision(tx).await?;
    let row = sqlx::query("SELECT max_apps FROM tenants WHERE id = $1")
        .bind(tenant_id.to_owned())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::TenantNotFound(tenant_id.to_owned()))?;
    let max_apps = row.try_get::<i64, _>("max_apps")?;
    if max_apps <= 0 {
        return Ok(());
    }
    let count = sqlx::query("SELECT COUNT(*) AS n FROM apps WHERE tenant_id = $1")
        .bind(tenant_id.to_owned())
        .fetch_one(&mut **tx)
        .await?
        .try_get::<i64, _>("n")?;
    if count >= max_apps {
        return Err(StoreError::Forbidden(format!(
            "this tenant may have at most {max_apps} apps (ask the platform operator for more)"
        )));
    }
    Ok(())
}
