//! Why a store operation failed: [`StoreError`], one variant per case a caller or a user tells
//! apart. Its `Display` is the text the CLI, REST and the dashboard print.

use std::fmt;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The database could not be reached within [`super::ACQUIRE_TIMEOUT`] (down, or every
    /// connection broken).
    #[error("store unreachable: {0}")]
    Unreachable(sqlx::Error),
    /// A migration failed.
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// No app has this id.
    #[error("no app with id {0}")]
    AppNotFound(String),
    /// No tenant has this id.
    #[error("no tenant with id {0}")]
    TenantNotFound(String),
    /// No user has this email.
    #[error("no user with email {0}")]
    UserNotFound(String),
    /// No API token of the tenant has this id.
    #[error("no API token with id {0}")]
    TokenNotFound(String),
    /// The app exists but has no such webhook endpoint, key or failed delivery.
    #[error("app {app_id} has no {what}")]
    NotInApp {
        /// The app.
        app_id: String,
        /// What it lacks.
        what: AppPart,
    },
    /// The write clashes with what is stored (a taken id, key or email, or a concurrent change).
    #[error("{0}")]
    Conflict(Conflict),
    /// A value is not acceptable (the message says which and why).
    #[error("{0}")]
    Invalid(String),
    /// The actor may not do this (a tenant admin raising a limit the operator set).
    #[error("{0}")]
    Forbidden(String),
    /// The actor's role does not allow this (a viewer changing an app, a developer deleting
    /// one): the message names the role and what it may not do.
    #[error("{0}")]
    RoleDenied(String),
    /// Too many password checks at once (argon2 is capped per core): try again shortly.
    #[error("too many password checks at once; try again shortly")]
    Busy,
}

/// What an app was asked for and does not have ([`StoreError::NotInApp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppPart {
    /// A webhook endpoint, by id.
    Webhook(String),
    /// A key (current or previous).
    Key(String),
    /// A failed delivery, by id.
    FailedDelivery(i64),
    /// Any failed delivery (a retry of them all found none).
    FailedDeliveries,
}

impl fmt::Display for AppPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppPart::Webhook(id) => write!(f, "webhook {id}"),
            AppPart::Key(key) => write!(f, "key {key}"),
            AppPart::FailedDelivery(id) => write!(f, "failed delivery {id}"),
            AppPart::FailedDeliveries => f.write_str("failed deliveries"),
        }
    }
}

/// Why a write clashes with the store ([`StoreError::Conflict`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// Another app has the chosen id or key.
    #[error("an app with this id or key already exists")]
    AppIdOrKeyTaken,
    /// Another user has this email.
    #[error("a user with email {0} already exists")]
    EmailTaken(String),
    /// A rotation while the previous pair still works (an app has at most two active pairs).
    #[error("app {app_id} already has two active key pairs: revoke key {previous_key} first")]
    TwoActiveKeyPairs {
        /// The app.
        app_id: String,
        /// The previous key, still working.
        previous_key: String,
    },
    /// The app's keys changed between the read and the write (two rotations at once).
    #[error("app {0}'s keys changed meanwhile; try again")]
    KeysChangedMeanwhile(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unreachable(error)
            }
            other => StoreError::Database(other),
        }
    }
}

impl From<Conflict> for StoreError {
    fn from(conflict: Conflict) -> Self {
        StoreError::Conflict(conflict)
    }
}

impl StoreError {
    /// Whether the store could not be reached at all (as opposed to refusing one statement).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Unreachable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_texts_users_see() {
        let missing = |what| StoreError::NotInApp {
            app_id: "7".into(),
            what,
        };
        assert_eq!(
            missing(AppPart::Webhook("12".into())).to_string(),
            "app 7 has no webhook 12"
        );
        assert_eq!(
            missing(AppPart::Key("k".into())).to_string(),
            "app 7 has no key k"
        );
        assert_eq!(
            missing(AppPart::FailedDelivery(3)).to_string(),
            "app 7 has no failed delivery 3"
        );
        assert_eq!(
            missing(AppPart::FailedDeliveries).to_string(),
            "app 7 has no failed deliveries"
        );
        let conflict = StoreError::from(Conflict::TwoActiveKeyPairs {
            app_id: "7".into(),
            previous_key: "old".into(),
        });
        assert_eq!(
            conflict.to_string(),
            "app 7 already has two active key pairs: revoke key old first"
        );
        assert_eq!(
            StoreError::from(Conflict::KeysChangedMeanwhile("7".into())).to_string(),
            "app 7's keys changed meanwhile; try again"
        );
        assert_eq!(
            StoreError::from(Conflict::EmailTaken("a@b.c".into())).to_string(),
            "a user with email a@b.c already exists"
        );
    }
}
