//! The dashboard's account forms over the store and the node's account task
//! ([`crate::node::accounts`]): sign-up, the verification link, forgot password and the reset
//! link.

use herald_dashboard::{AccountPort, Admin, PortResult};

use super::{admin_of, port_error, AdminApi};
use crate::config::SignupMode;
use crate::tenants::{check_email, check_new_user, sign_up_email};

impl AdminApi {
    /// Whether an unverified sign-up may still become an account: only while sign-up is open
    /// (switching to `closed` or `invite` also stops the sign-ups made before).
    fn activates(&self) -> bool {
        self.node.settings.signup == SignupMode::Open
    }
}

impl AccountPort for AdminApi {
    async fn sign_up(&self, email: &str, password: &str) -> PortResult<()> {
        check_new_user(email, password).map_err(port_error)?;
        sign_up_email(email).map_err(port_error)?;
        // The one piece of work a sign-up does here, whatever the address: the password's
        // hash. The account task does the rest after the answer.
        let hash = self
            .node
            .store
            .hash_sign_up_password(password)
            .await
            .map_err(port_error)?;
        self.node.accounts.sign_up(email, hash);
        Ok(())
    }

    async fn verify_email(&self, token: &str, password: &str) -> PortResult<Option<Admin>> {
        let user = self
            .node
            .store
            .verify_email(token, password, self.activates())
            .await
            .map_err(port_error)?;
        if let Some(user) = &user {
            tracing::info!(user = %user.id, "an email was confirmed");
        }
        Ok(user.map(admin_of))
    }

    async fn forgot_password(&self, email: &str) -> PortResult<()> {
        // Only the address's shape is checked here (that says nothing about accounts); the
        // account task looks it up after the answer.
        check_email(email).map_err(port_error)?;
        self.node.accounts.forgot_password(email, self.activates());
        Ok(())
    }

    async fn reset_password_with_link(&self, token: &str, password: &str) -> PortResult<bool> {
        let user = self
            .node
            .store
            .reset_password_with_link(token, password, self.activates())
            .await
            .map_err(port_error)?;
        if let Some(user) = &user {
            tracing::info!(user = %user.id, "a password was reset with an emailed link: the user's sessions ended");
        }
        Ok(user.is_some())
    }
}
