//! Self-service sign-up and password resets: the accounts and the emailed links.
//!
//! A link carries 32 random bytes (hex); the store keeps only their SHA-256 (`email_tokens`), so a
//! copy of the database follows no link. A link works once, until it expires. A verification
//! link also carries the hash of the password chosen at the sign-up that sent it, and is
//! followed only with that password typed again: the mailbox proves the address, the password
//! proves whose sign-up it was. Anyone may sign someone else's address up (the mail goes to
//! the address), but the address's owner cannot confirm that sign-up without knowing its
//! password, so a stranger's password never becomes the password of an account its owner
//! confirms and builds in.
//!
//! Sign-up hashes the password before it looks at the address, so a taken address costs the
//! same argon2 work as a free one ([`Store::password_hashes`] counts it).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::users::{
    check_password, hash_password, normalise_email, user_from_row, verify_password,
    NEW_TENANT_MAX_APPS, USER_COLUMNS,
};
use super::{bump_revision, fresh_id, Store, StoreError, User, UserRole};

/// How long a verification link works.
pub const VERIFY_LINK_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a password-reset link works.
pub const RESET_LINK_TTL: Duration = Duration::from_secs(3600);
/// Links of one purpose one user may be sent per hour; past it no more are made (and no email
/// goes out), so nobody can fill someone's mailbox through the forms.
pub const MAX_LINKS_PER_HOUR: i64 = 3;

/// What following a verification link with another password than its sign-up's answers.
pub const WRONG_SIGN_UP_PASSWORD: &str = "That is not the password chosen when this address \
     was signed up. Type the password you chose, use the link in the newest email, or sign up \
     again with the same address.";

/// Unverified sign-ups deleted per [`Store::sweep_unverified`] call at most.
pub const SWEEP_BATCH: usize = 100;

/// What an emailed link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Confirms a signed-up user's email.
    Verify,
    /// Sets a new password.
    Reset,
}

impl LinkPurpose {
    fn as_str(self) -> &'static str {
        match self {
            LinkPurpose::Verify => "verify",
            LinkPurpose::Reset => "reset",
        }
    }

    fn ttl(self) -> Duration {
        match self {
            LinkPurpose::Verify => VERIFY_LINK_TTL,
            LinkPurpose::Reset => RESET_LINK_TTL,
        }
    }
}

/// What a sign-up did.
#[derive(Debug)]
pub enum SignUp {
    /// A new tenant, its owner (unverified) and a verification link's token.
    Created {
        /// The new owner.
        user: User,
        /// The link's token (only its hash is stored).
        token: String,
    },
    /// The address has an account already, not yet verified: a new verification link (carrying
    /// this sign-up's password), unless [`MAX_LINKS_PER_HOUR`] were sent this hour.
    Unverified {
        /// The account.
        user: User,
        /// The new link's token, if one was made.
        token: Option<String>,
    },
    /// The address has a verified account: nothing changed.
    Verified {
        /// The account.
        user: User,
    },
}

/// How long an anonymous form's password hash waits for an argon2 permit before it is shed.
pub(super) const PUBLIC_HASH_WAIT: Duration = Duration::from_secs(2);

/// [`hash_password`] for an anonymous form: shed with [`StoreError::Busy`] past
/// [`PUBLIC_HASH_WAIT`] (a hash already running finishes in the background, holding its permit).
async fn public_hash(password: &str) -> Result<String, StoreError> {
    tokio::time::timeout(PUBLIC_HASH_WAIT, hash_password(password))
        .await
        .map_err(|_| StoreError::Busy)?
}

/// A link's token: 32 random bytes, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The key a link's token is stored under: SHA-256, hex.
pub fn link_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A display name for a signed-up tenant: the address, at most 100 characters.
fn tenant_name(email: &str) -> String {
    email.chars().take(100).collect()
}

/// Characters allowed in a signed-up address's local part besides ASCII letters and digits
/// (RFC 5322's dot-atom; no quoted local parts).
const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";

/// Top-level domains that never receive mail (RFC 2606, RFC 6761).
const UNDELIVERABLE_TLDS: [&str; 3] = ["invalid", "localhost", "local"];

/// The canonical form of an address an anonymous visitor signs up with, or why it is refused:
/// one bare address (no display name, comment, quoted local part or IP literal), ASCII only,
/// lower case, a local part of at most 64 characters in dot-atom form, and a domain name of
/// two or more labels (letters, digits, `-`) whose top level is not all digits nor one that
/// never receives mail. Non-ASCII addresses are refused rather than folded (so `Ä@x` and
/// `ä@x`, or a Unicode domain and its punycode, can never be two accounts for one mailbox);
/// an internationalised domain signs up in its `xn--` form.
pub fn sign_up_email(email: &str) -> Result<String, StoreError> {
    let refuse = |why: &str| Err(StoreError::Invalid(format!("invalid email address: {why}")));
    let email = normalise_email(email)?;
    if !email.is_ascii() {
        return refuse(
            "use only ASCII letters, digits and punctuation (a domain in its xn-- form)",
        );
    }
    let Some((local, domain)) = email.split_once('@') else {
        return refuse("no @");
    };
    if domain.contains('@') {
        return refuse("one address only");
    }
    let local_ok = local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c));
    if !local_ok {
        return refuse("the part before @ has characters a mailbox name cannot have");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let labels_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let tld = labels.last().copied().unwrap_or_default();
    if !labels_ok || tld.chars().all(|c| c.is_ascii_digit()) || UNDELIVERABLE_TLDS.contains(&tld) {
        return refuse("the part after @ is not a domain that receives mail");
    }
    Ok(email)
}

impl Store {
    /// Password hashes made by sign-ups since this store was opened (the same for a taken
    /// address as for a free one: tests assert it).
    pub fn password_hashes(&self) -> u64 {
        self.password_work.load(Ordering::Relaxed)
    }

    /// Hashes a password for a sign-up (argon2id), counted by [`Store::password_hashes`]; shed
    /// with [`StoreError::Busy`] when no argon2 permit frees up within [`PUBLIC_HASH_WAIT`].
    pub async fn hash_sign_up_password(&self, password: &str) -> Result<String, StoreError> {
        check_password(password)?;
        self.password_work.fetch_add(1, Ordering::Relaxed);
        public_hash(password).await
    }

    /// Signs `email` up with `password_hash` (from [`Store::hash_sign_up_password`]): a new
    /// tenant whose admins may create [`NEW_TENANT_MAX_APPS`] apps from `plan` only, its owner
    /// (unverified) and a verification link, in one transaction; or, when the address has an
    /// account, what [`SignUp`] says.
    pub async fn sign_up(
        &self,
        email: &str,
        password_hash: &str,
        plan: &str,
    ) -> Result<SignUp, StoreError> {
        let email = sign_up_email(email)?;
        self.sweep_unverified().await?;
        if let Some((user, verified)) = self.user_and_verified_by_email(&email).await? {
            if verified {
                return Ok(SignUp::Verified { user });
            }
            let token = self
                .issue_link(&user.id, LinkPurpose::Verify, password_hash)
                .await?;
            return Ok(SignUp::Unverified { user, token });
        }
        let now = self.clock.now_seconds();
        let mut tx = self.write_tx().await?;
        // Another sign-up for the same address may have won the race since the read above.
        let taken = sqlx::query("SELECT id FROM users WHERE email = $1")
            .bind(email.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(super::Conflict::EmailTaken(email).into());
        }
        let tenant_id = fresh_id(&mut tx, "tenants", 10_000..100_000_000).await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at, max_apps, plans) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant_id.clone())
        .bind(tenant_name(&email))
        .bind(now)
        .bind(i64::try_from(NEW_TENANT_MAX_APPS).unwrap_or(i64::MAX))
        .bind(plan.to_owned())
        .execute(&mut *tx)
        .await?;
        let user_id = fresh_id(&mut tx, "users", 10_000..100_000_000).await?;
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, role, tenant_id, created_at, \
             email_verified) VALUES ($1, $2, $3, $4, $5, $6, 0)",
        )
        .bind(user_id.clone())
        .bind(email.clone())
        // No usable password until the link is followed: it waits in the link's row.
        .bind(String::new())
        .bind("owner")
        .bind(tenant_id.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let token = new_token();
        let now_ms = self.clock.now_millis();
        sqlx::query(
            "INSERT INTO email_tokens (token_hash, purpose, user_id, password_hash, created_at, \
             expires_at) VALUES ($1, 'verify', $2, $3, $4, $5)",
        )
        .bind(link_key(&token))
        .bind(user_id.clone())
        .bind(password_hash.to_owned())
        .bind(now_ms)
        .bind(now_ms.saturating_add(millis(VERIFY_LINK_TTL)))
        .execute(&mut *tx)
        .await?;
        bump_revision(&mut tx).await?;
        tx.commit().await?;
        let user = User {
            id: user_id,
            email,
            role: UserRole::Owner,
            tenant_id: Some(tenant_id),
            created_at: now,
            credential_generation: 0,
        };
        Ok(SignUp::Created { user, token })
    }

    /// Deletes sign-ups never verified whose links have all expired: the owner, its links and
    /// its tenant (when the tenant has no app and no other user), at most
    /// [`SWEEP_BATCH`] per call. Runs before every sign-up, so the unverified accounts held
    /// are at most the sign-ups of the last [`VERIFY_LINK_TTL`] (plus one batch). Returns how
    /// many were deleted.
    pub async fn sweep_unverified(&self) -> Result<usize, StoreError> {
        let now_ms = self.clock.now_millis();
        let born_before = self
            .clock
            .now_seconds()
            .saturating_sub(i64::try_from(VERIFY_LINK_TTL.as_secs()).unwrap_or(i64::MAX));
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(&format!(
            "SELECT id, tenant_id FROM users WHERE email_verified = 0 AND role = 'owner' \
             AND created_at <= $1 AND NOT EXISTS (SELECT 1 FROM email_tokens t \
             WHERE t.user_id = users.id AND t.expires_at > $2) LIMIT {SWEEP_BATCH}"
        ))
        .bind(born_before)
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let user_id: String = row.try_get("id")?;
            let tenant_id: Option<String> = row.try_get("tenant_id")?;
            sqlx::query("DELETE FROM email_tokens WHERE user_id = $1")
                .bind(user_id.clone())
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM users WHERE id = $1 AND email_verified = 0")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            if let Some(tenant_id) = tenant_id {
                sqlx::query(
                    "DELETE FROM tenants WHERE id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM apps WHERE tenant_id = $1) \
                     AND NOT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1)",
                )
                .bind(tenant_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(rows.len())
    }

    /// The user with `email` and whether their email is verified.
    pub async fn user_and_verified_by_email(
        &self,
        email: &str,
    ) -> Result<Option<(User, bool)>, StoreError> {
        let Ok(email) = normalise_email(email) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, email_verified FROM users WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let verified: i64 = row.try_get("email_verified")?;
                Ok(Some((user_from_row(&row)?, verified != 0)))
            }
        }
    }

    /// Whether user `id`'s email is verified (`false` for an unknown user).
    pub async fn email_verified(&self, user_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT email_verified FROM users WHERE id = $1")
            .bind(user_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>("email_verified")? != 0,
            None => false,
        })
    }

    /// A new link of `purpose` for user `user_id` (a verification link carries
    /// `password_hash`), or `None` when [`MAX_LINKS_PER_HOUR`] were made this hour. Expired links
    /// are deleted on the way.
    pub async fn issue_link(
        &self,
        user_id: &str,
        purpose: LinkPurpose,
        password_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        let now = self.clock.now_millis();
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM email_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let recent = sqlx::query(
            "SELECT COUNT(*) AS n FROM email_tokens WHERE user_id = $1 AND purpose = $2 \
             AND created_at > $3",
        )
        .bind(user_id.to_owned())
        .bind(purpose.as_str())
        .bind(now.saturating_sub(3_600_000))
        .fetch_one(&mut *tx)
        .await?;
        if recent.try_get::<i64, _>("n")? >= MAX_LINKS_PER_HOUR {
            return Ok(None);
        }
        if purpose == LinkPurpose::Verify {
            // Only the newest verification link works: an older one (perhaps from someone
            // else's sign-up, carrying their password) stops working when another is sent.
            sqlx::query(
                "UPDATE email_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = 'verify' \
                 AND used_at = 0",
            )
            .bind(now)
            .bind(user_id.to_owned())
            .execute(&mut *tx)
            .await?;
        }
        let token = new_token();
        sqlx::query(
            "INSERT INTO email_tokens (token_hash, purpose, user_id, password_hash, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(link_key(&token))
        .bind(purpose.as_str())
        .bind(user_id.to_owned())
        .bind(password_hash.to_owned())
        .bind(now)
        .bind(now.saturating_add(millis(purpose.ttl())))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(token))
    }

    /// Whether `token` is a live, unused link of `purpose` (a read; [`Store::use_link`] decides).
    async fn link_is_live(&self, token: &str, purpose: LinkPurpose) -> Result<bool, StoreError> {
        Ok(self.live_link_hash(token, purpose).await?.is_some())
    }

    /// The password hash a live, unused link of `purpose` carries, or `None` (a read;
    /// [`Store::use_link`] decides).
    async fn live_link_hash(
        &self,
        token: &str,
        purpose: LinkPurpose,
    ) -> Result<Option<String>, StoreError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT password_hash FROM email_tokens WHERE token_hash = $1 AND purpose = $2 \
             AND used_at = 0 AND expires_at > $3",
        )
        .bind(link_key(&token.to_ascii_lowercase()))
        .bind(purpose.as_str())
        .bind(self.clock.now_millis())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| row.try_get("password_hash"))
            .transpose()
            .map_err(Into::into)
    }

    /// Uses up the link of `token` for `purpose` inside `tx`: its user id and password hash,
    /// or `None` when there is no such live, unused link (another request using it at the same
    /// moment gets `None`: the update takes it once).
    async fn use_link(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        token: &str,
        purpose: LinkPurpose,
    ) -> Result<Option<(String, String)>, StoreError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let now = self.clock.now_millis();
        let key = link_key(&token.to_ascii_lowercase());
        let used = sqlx::query(
            "UPDATE email_tokens SET used_at = $1 WHERE token_hash = $2 AND purpose = $3 \
             AND used_at = 0 AND expires_at > $1",
        )
        .bind(now)
        .bind(key.clone())
        .bind(purpose.as_str())
        .execute(&mut **tx)
        .await?;
        if used.rows_affected() != 1 {
            return Ok(None);
        }
        let row =
            sqlx::query("SELECT user_id, password_hash FROM email_tokens WHERE token_hash = $1")
                .bind(key)
                .fetch_one(&mut **tx)
                .await?;
        Ok(Some((
            row.try_get("user_id")?,
            row.try_get("password_hash")?,
        )))
    }

    /// Follows verification link `token`: the user's email is verified and their password
    /// becomes the one chosen at the sign-up that sent the link (their credential generation
    /// moves on), and every other link of theirs stops working. `None`: no such link, or
    /// expired, or used, or the account is verified already (a link never sets the password
    /// of a verified account), or `activate` is false (sign-up is closed: an earlier sign-up
    /// does not become an account).
    ///
    /// `password` must be the one chosen at that sign-up: otherwise [`StoreError::Invalid`]
    /// ([`WRONG_SIGN_UP_PASSWORD`]) and the link stays unused. A link the address's owner did
    /// not ask for (someone else signed their address up) therefore confirms nothing for them.
    pub async fn verify_email(
        &self,
        token: &str,
        password: &str,
        activate: bool,
    ) -> Result<Option<User>, StoreError> {
        if !activate {
            return Ok(None);
        }
        // A made-up or spent link costs no argon2 work.
        let Some(chosen) = self.live_link_hash(token, LinkPurpose::Verify).await? else {
            return Ok(None);
        };
        if !verify_password(password, chosen.clone()).await? {
            return Err(StoreError::Invalid(WRONG_SIGN_UP_PASSWORD.into()));
        }
        let mut tx = self.write_tx().await?;
        let Some((user_id, hash)) = self.use_link(&mut tx, token, LinkPurpose::Verify).await?
        else {
            return Ok(None);
        };
        if hash != chosen {
            // Not the link that was checked (cannot happen: a link's hash never changes).
            return Ok(None);
        }
        let updated = sqlx::query(
            "UPDATE users SET email_verified = 1, password_hash = $1, \
             credential_generation = credential_generation + 1 \
             WHERE id = $2 AND email_verified = 0",
        )
        .bind(hash)
        .bind(user_id.clone())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            // Verified already: the link is spent, nothing else changes.
            tx.commit().await?;
            return Ok(None);
        }
        spend_links(&mut tx, &user_id, self.clock.now_millis()).await?;
        tx.commit().await?;
        self.get_user(&user_id).await
    }

    /// Follows reset link `token` with a new `password`: set, the email counts as verified
    /// (the link came to it), the credential generation moves on, which ends every session
    /// of the user on every node, and every other link of the user stops working. `None`: no
    /// such link, or expired, or used, or the user is the platform operator (who resets with
    /// `herald users set-password`), or the account is unverified and `activate` is false
    /// (sign-up closed): nothing changed. A password that is refused leaves the link unused.
    pub async fn reset_password_with_link(
        &self,
        token: &str,
        password: &str,
        activate: bool,
    ) -> Result<Option<User>, StoreError> {
        check_password(password)?;
        // A made-up or spent link costs no argon2 work.
        if !self.link_is_live(token, LinkPurpose::Reset).await? {
            return Ok(None);
        }
        let hash = public_hash(password).await?;
        let mut tx = self.write_tx().await?;
        let Some((user_id, _)) = self.use_link(&mut tx, token, LinkPurpose::Reset).await? else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT role, email_verified FROM users WHERE id = $1")
            .bind(user_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let role: String = row.try_get("role")?;
        let verified: i64 = row.try_get("email_verified")?;
        if role == "operator" || (verified == 0 && !activate) {
            tx.commit().await?;
            return Ok(None);
        }
        sqlx::query(
            "UPDATE users SET email_verified = 1, password_hash = $1, \
             credential_generation = credential_generation + 1 WHERE id = $2",
        )
        .bind(hash)
        .bind(user_id.clone())
        .execute(&mut *tx)
        .await?;
        spend_links(&mut tx, &user_id, self.clock.now_millis()).await?;
        tx.commit().await?;
        self.get_user(&user_id).await
    }
}

/// Marks every unused link of user `user_id` (both purposes) used.
async fn spend_links(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE user_id = $2 AND used_at = 0")
        .bind(now_ms)
        .bind(user_id.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sign_up_email;

    #[test]
    fn a_sign_up_takes_one_bare_deliverable_ascii_address() {
        for good in [
            "Founder@Startup.Test",
            "a.b+tag@mail.example.co",
            "x_y@xn--bcher-kva.ch",
        ] {
            assert_eq!(
                sign_up_email(good).unwrap(),
                good.to_ascii_lowercase(),
                "{good}"
            );
        }
        for bad in [
            "a<victim@corp.com>",
            "\"x\"<victim@corp.com>",
            "victim@corp.com>",
            "a@b@c.com",
            "x@y.com,z@w.com",
            "\"x\"@corp.com",
            "esc\u{1b}[2J@corp.com",
            "del\u{7f}@corp.com",
            "bidi\u{202e}@corp.com",
            "ä@corp.com",
            "a@bücher.ch",
            "a@localhost",
            "a@host",
            "a@x.invalid",
            "a@[10.0.0.1]",
            "a@10.0.0.1",
            "a@-x.com",
            "a@x..com",
            ".a@x.com",
            "a..b@x.com",
            "a b@x.com",
        ] {
            assert!(sign_up_email(bad).is_err(), "{bad:?} is refused");
        }
        let long_local = format!("{}@x.com", "a".repeat(65));
        assert!(sign_up_email(&long_local).is_err());
    }
}
