//! Who may do what: the user roles (the platform operator and the four tenant roles), the
//! [`Permission`]s a dashboard or CLI action needs, and the one table that joins them
//! ([`UserRole::allows`]). The store's scoped view ([`super::Scoped`]) checks it on every
//! operation, so a page that forgets to hide a button still cannot let a viewer change anything.

use serde::Serialize;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// The platform operator: every tenant and app.
    Operator,
    /// Everything in one tenant, including making and removing other owners.
    Owner,
    /// Everything in one tenant but making or removing an owner.
    Admin,
    /// Apps and webhooks of one tenant; sees keys and secrets; cannot delete apps, rotate or
    /// revoke keys, nor manage members.
    Developer,
    /// Reads one tenant's pages; never a secret.
    Viewer,
}

/// Something a user may be allowed to do in a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// See apps, their settings, usage, live console, webhooks and key ids.
    ReadApps,
    /// Create apps and change their settings, limits and Mercure settings.
    WriteApps,
    /// Delete apps.
    DeleteApps,
    /// See key secrets (the keys page's reveal, the Mercure HS256 key's use).
    RevealSecrets,
    /// Add a new key pair (rotation).
    RotateKeys,
    /// Revoke a key pair.
    RevokeKeys,
    /// Add, change, test and remove webhook endpoints; retry deliveries.
    WriteWebhooks,
    /// Invite, remove and change the role of members.
    ManageMembers,
    /// Read the tenant's audit log.
    ReadAudit,
}

impl Permission {
    /// Every permission, for tables and tests.
    pub const ALL: [Permission; 9] = [
        Permission::ReadApps,
        Permission::WriteApps,
        Permission::DeleteApps,
        Permission::RevealSecrets,
        Permission::RotateKeys,
        Permission::RevokeKeys,
        Permission::WriteWebhooks,
        Permission::ManageMembers,
        Permission::ReadAudit,
    ];

    /// What a refusal says the user cannot do.
    pub fn describe(self) -> &'static str {
        match self {
            Permission::ReadApps => "see this tenant's apps",
            Permission::WriteApps => "create or change apps",
            Permission::DeleteApps => "delete apps",
            Permission::RevealSecrets => "see key secrets",
            Permission::RotateKeys => "rotate keys",
            Permission::RevokeKeys => "revoke keys",
            Permission::WriteWebhooks => "change webhooks",
            Permission::ManageMembers => "manage members",
            Permission::ReadAudit => "read the audit log",
        }
    }
}

impl UserRole {
    /// Every tenant role, highest first.
    pub const TENANT_ROLES: [UserRole; 4] = [
        UserRole::Owner,
        UserRole::Admin,
        UserRole::Developer,
        UserRole::Viewer,
    ];

    /// The stored and printed name (`operator`, `owner`, `admin`, `developer`, `viewer`).
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Operator => "operator",
            UserRole::Owner => "owner",
            UserRole::Admin => "admin",
            UserRole::Developer => "developer",
            UserRole::Viewer => "viewer",
        }
    }

    /// The role named `name` (exactly one of [`UserRole::as_str`]'s names).
    pub fn parse(name: &str) -> Option<UserRole> {
        [UserRole::Operator]
            .into_iter()
            .chain(UserRole::TENANT_ROLES)
            .find(|role| role.as_str() == name)
    }

    /// The role of a tenant member (every role but the operator).
    pub fn is_tenant_role(self) -> bool {
        self != UserRole::Operator
    }

    /// The role table: whether a user of this role may do `permission` in their tenant (the
    /// operator in every tenant). README's "Roles" table is this function.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            UserRole::Operator | UserRole::Owner | UserRole::Admin => true,
            UserRole::Developer => matches!(
                permission,
                ReadApps | WriteApps | RevealSecrets | WriteWebhooks | ReadAudit
            ),
            UserRole::Viewer => matches!(permission, ReadApps | ReadAudit),
        }
    }

    /// Whether a user of this role may give or take away `target` (members are managed by owners
    /// and admins; only an owner may make or remove an owner).
    pub fn may_assign(self, target: UserRole) -> bool {
        match self {
            UserRole::Operator | UserRole::Owner => target.is_tenant_role(),
            UserRole::Admin => target.is_tenant_role() && target != UserRole::Owner,
            UserRole::Developer | UserRole::Viewer => false,
        }
    }
}

impl std::fmt::Display for UserRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is acting, for access checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The platform operator (also the CLI, which has the store's credentials anyway).
    Operator,
    /// A member of a tenant, with their role.
    Member {
        /// The tenant.
        tenant: String,
        /// Their role in it (never [`UserRole::Operator`]).
        role: UserRole,
    },
}

impl Actor {
    /// An admin of `tenant`.
    pub fn tenant_admin(tenant: impl Into<String>) -> Actor {
        Actor::Member {
            tenant: tenant.into(),
            role: UserRole::Admin,
        }
    }

    /// The actor a signed-in user is.
    pub fn of(user: &super::User) -> Actor {
        match user.role {
            UserRole::Operator => Actor::Operator,
            role => Actor::Member {
                tenant: user.tenant_id.clone().unwrap_or_default(),
                role,
            },
        }
    }

    /// The actor's role.
    pub fn role(&self) -> UserRole {
        match self {
            Actor::Operator => UserRole::Operator,
            Actor::Member { role, .. } => *role,
        }
    }

    /// The tenant of a member.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Actor::Operator => None,
            Actor::Member { tenant, .. } => Some(tenant),
        }
    }

    /// Whether the actor may see `tenant_id`'s apps at all.
    pub fn can_access(&self, tenant_id: &str) -> bool {
        match self {
            Actor::Operator => true,
            Actor::Member { tenant, .. } => !tenant.is_empty() && tenant == tenant_id,
        }
    }

    /// Whether the actor's role allows `permission`.
    pub fn allows(&self, permission: Permission) -> bool {
        self.role().allows(permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_table_holds() {
        for role in [UserRole::Operator]
            .into_iter()
            .chain(UserRole::TENANT_ROLES)
        {
            assert_eq!(UserRole::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::json!(role.as_str())
            );
        }
        assert_eq!(UserRole::parse("Owner"), None);
        assert_eq!(UserRole::parse(""), None);
        // Each lower role's permissions are a subset of the higher one's.
        for pair in UserRole::TENANT_ROLES.windows(2) {
            for p in Permission::ALL {
                assert!(!pair[1].allows(p) || pair[0].allows(p), "{pair:?} {p:?}");
            }
        }
        assert!(!UserRole::Developer.allows(Permission::DeleteApps));
        assert!(!UserRole::Developer.allows(Permission::RotateKeys));
        assert!(UserRole::Developer.allows(Permission::RevealSecrets));
        assert!(!UserRole::Viewer.allows(Permission::RevealSecrets));
        assert!(!UserRole::Admin.may_assign(UserRole::Owner));
        assert!(UserRole::Owner.may_assign(UserRole::Owner));
        assert!(!UserRole::Owner.may_assign(UserRole::Operator));
    }
}
