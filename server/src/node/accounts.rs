//! Self-service accounts behind the dashboard's sign-up and forgot-password forms.
//!
//! A form's request does the same work whatever the address: the sign-up form hashes the
//! password (argon2, once) and the forgot-password form nothing, then each puts a job on a
//! bounded queue ([`QUEUE`]) and answers. One task works the queue: it looks the address up,
//! creates the tenant and its owner or makes a link, and hands the email to the mailer. So
//! neither the answer nor its timing tells whether an address has an account. A full queue drops
//! the job (logged); the answer is the same.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::mail::Mailer;
use crate::tenants::{LinkPurpose, SignUp, Store, StoreError, UserRole};

/// Jobs waiting at most; past it a form's job is dropped (logged; the answer is the same).
pub const QUEUE: usize = 256;

/// What the account task has been asked and has done (tests read it).
#[derive(Debug, Default)]
pub struct AccountStats {
    /// Jobs put on the queue: one per accepted sign-up or forgot-password form, whatever the
    /// address.
    pub queued: AtomicU64,
    /// Jobs dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Jobs finished (emailed or not).
    pub done: AtomicU64,
}

enum Job {
    SignUp {
        email: String,
        password_hash: String,
    },
    Forgot {
        email: String,
        /// Whether an unverified sign-up may get a link (sign-up open).
        activate: bool,
    },
}

/// The handle the dashboard's port uses: cheap to clone.
#[derive(Debug, Clone)]
pub struct Accounts {
    queue: mpsc::Sender<Job>,
    stats: Arc<AccountStats>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::SignUp { .. } => "SignUp",
            Job::Forgot { .. } => "Forgot",
        })
    }
}

impl Accounts {
    /// Starts the account task (call inside the runtime). Signed-up tenants create apps from
    /// `plan`.
    pub fn start(store: Store, mailer: Mailer, plan: String) -> Accounts {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let stats = Arc::new(AccountStats::default());
        tokio::spawn(work(store, mailer, plan, receiver, stats.clone()));
        Accounts { queue, stats }
    }

    /// What the task has done.
    pub fn stats(&self) -> &AccountStats {
        &self.stats
    }

    /// Queues a sign-up of `email` with a password already hashed.
    pub fn sign_up(&self, email: &str, password_hash: String) {
        self.put(Job::SignUp {
            email: email.trim().to_owned(),
            password_hash,
        });
    }

    /// Queues a forgot-password request for `email` (`activate`: whether an unverified
    /// sign-up may get a reset link, which would verify it: only while sign-up is open).
    pub fn forgot_password(&self, email: &str, activate: bool) {
        self.put(Job::Forgot {
            email: email.trim().to_owned(),
            activate,
        });
    }

    fn put(&self, job: Job) {
        match self.queue.try_send(job) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    queue = QUEUE,
                    "the account queue is full: a sign-up or reset request was dropped"
                );
            }
        }
    }
}

async fn work(
    store: Store,
    mailer: Mailer,
    plan: String,
    mut receiver: mpsc::Receiver<Job>,
    stats: Arc<AccountStats>,
) {
    while let Some(job) = receiver.recv().await {
        let kind = format!("{job:?}");
        if let Err(error) = handle(&store, &mailer, &plan, job).await {
            tracing::warn!(%error, job = %kind, "an account request failed");
        }
        stats.done.fetch_add(1, Ordering::Relaxed);
    }
}

async fn handle(store: &Store, mailer: &Mailer, plan: &str, job: Job) -> Result<(), StoreError> {
    let url = mailer.public_url().to_owned();
    let (to, subject, body) = match job {
        Job::SignUp {
            email,
            password_hash,
        } => match store.sign_up(&email, &password_hash, plan).await? {
            SignUp::Created { user, token } => {
                tracing::info!(user = %user.id, tenant = ?user.tenant_id, "a tenant signed up");
                (user.email, VERIFY_SUBJECT, verify_body(&url, &token))
            }
            SignUp::Unverified {
                user,
                token: Some(token),
            } => (user.email, VERIFY_SUBJECT, verify_body(&url, &token)),
            SignUp::Verified { user } => {
                let Some(token) = store.issue_link(&user.id, LinkPurpose::Reset, "").await? else {
                    return Ok(());
                };
                (user.email, "Your Herald account", exists_body(&url, &token))
            }
            SignUp::Unverified { token: None, .. } => return Ok(()),
        },
        Job::Forgot { email, activate } => {
            let Some((user, verified)) = store.user_and_verified_by_email(&email).await? else {
                return Ok(());
            };
            // The platform operator resets with `herald users set-password` only: an emailed
            // (or, without SMTP, logged) link must never take over the operator account.
            if user.role == UserRole::Operator || (!verified && !activate) {
                return Ok(());
            }
            let Some(token) = store.issue_link(&user.id, LinkPurpose::Reset, "").await? else {
                return Ok(());
            };
            (user.email, RESET_SUBJECT, reset_body(&url, &token))
        }
    };
    if let Err(error) = mailer.send(&to, subject, &body).await {
        tracing::warn!(%error, "an account email was not queued");
    }
    Ok(())
}

const VERIFY_SUBJECT: &str = "Confirm your email for Herald";
const RESET_SUBJECT: &str = "Reset your Herald password";

fn verify_body(url: &str, token: &str) -> String {
    format!(
        "Someone, hopefully you, signed up for Herald with this address.\n\n\
         Confirm it within 24 hours, and sign in, with this link:\n\
         {url}/dashboard/verify?token={token}\n\n\
         If it was not you, ignore this message: nothing happens without the link."
    )
}

fn reset_body(url: &str, token: &str) -> String {
    format!(
        "Someone, hopefully you, asked to reset the password of your Herald account.\n\n\
         Choose a new password within an hour with this link (it works once):\n\
         {url}/dashboard/reset?token={token}\n\n\
         If it was not you, ignore this message: your password stays as it is."
    )
}

fn exists_body(url: &str, token: &str) -> String {
    format!(
        "Someone, hopefully you, tried to sign up for Herald with this address, which already \
         has an account.\n\nSign in at {url}/dashboard/login\n\n\
         Forgot your password? Choose a new one within an hour with this link (it works once):\n\
         {url}/dashboard/reset?token={token}\n\n\
         If it was not you, ignore this message: nothing changed."
    )
}
