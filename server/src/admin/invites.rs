//! Invitations: the port's calls over the store's, the link they send, and their audit entries.

use super::audit::acting;
use super::convert::{member_tenant, port_role, user_role};
use super::{admin_of, port_error, AdminApi};
use crate::tenants::{AuditBy, Invitation};
use herald_dashboard::{Admin, InvitationRow, PortResult, Role};

/// Emails an invitation's link through the mailer (which writes it to the log when
/// `HERALD_SMTP_URL` is unset: the documented no-SMTP fallback). A message the mailer cannot
/// queue is logged without the link; the inviter can resend.
pub(super) async fn deliver_invitation(
    mailer: &crate::mail::Mailer,
    email: &str,
    invited_by: &str,
    link: &str,
) {
    let body = format!(
        "{invited_by} invited you to join their team on Herald.\n\n\
         Accept the invitation (the link works once, for 7 days):\n{link}\n\n\
         If you did not expect this email, ignore it.\n"
    );
    if let Err(error) = mailer.send(email, "Your invitation to Herald", &body).await {
        tracing::warn!(%error, "an invitation email could not be queued");
    }
}

fn row(invitation: Invitation) -> InvitationRow {
    InvitationRow {
        role: port_role(invitation.role),
        id: invitation.id,
        email: invitation.email,
        invited_by: invitation.invited_by,
        expires_at: invitation.expires_at,
    }
}

impl AdminApi {
    pub(super) async fn list_invitations(&self, admin: &Admin) -> PortResult<Vec<InvitationRow>> {
        let tenant = member_tenant(admin)?;
        let list = self
            .scope(admin)
            .invitations(&tenant)
            .await
            .map_err(port_error)?;
        Ok(list.into_iter().map(row).collect())
    }

    pub(super) async fn send_invitation(
        &self,
        admin: &Admin,
        email: &str,
        role: Role,
    ) -> PortResult<InvitationRow> {
        let tenant = member_tenant(admin)?;
        let scope = self.scope(admin);
        let invite = scope.invite(&tenant, email, user_role(role), &admin.email);
        let (invitation, token) = acting(admin, invite).await.map_err(port_error)?;
        let link = format!(
            "{}/dashboard/join?token={token}",
            self.public_url().trim_end_matches('/')
        );
        deliver_invitation(&self.node.mailer, &invitation.email, &admin.email, &link).await;
        Ok(row(invitation))
    }

    pub(super) async fn cancel_invitation(
        &self,
        admin: &Admin,
        id: &str,
    ) -> PortResult<InvitationRow> {
        let tenant = member_tenant(admin)?;
        let scope = self.scope(admin);
        let revoke = scope.revoke_invitation(&tenant, id);
        let invitation = acting(admin, revoke).await.map_err(port_error)?;
        Ok(row(invitation))
    }

    pub(super) async fn find_invitation(&self, token: &str) -> PortResult<Option<InvitationRow>> {
        let found = self
            .node
            .store
            .invitation(token)
            .await
            .map_err(port_error)?;
        Ok(found.map(row))
    }

    pub(super) async fn join(
        &self,
        token: &str,
        password: &str,
        address: &str,
    ) -> PortResult<Admin> {
        // The store writes `member.joined` as the new member, from this address.
        let by = AuditBy {
            address: address.to_owned(),
            ..AuditBy::default()
        };
        let accept = self.node.store.accept_invitation(token, password);
        let (_, user) = by.scope(accept).await.map_err(port_error)?;
        let mut admin = admin_of(user);
        admin.address = address.to_owned();
        Ok(admin)
    }
}
