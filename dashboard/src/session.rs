//! Admin sessions (in memory: a restart signs everyone out), CSRF tokens and sign-in rate
//! limiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "herald_session";
/// The cookie holding the sign-in form's CSRF token (before there is a session).
pub(crate) const LOGIN_CSRF_COOKIE: &str = "herald_login_csrf";
/// How long a session lives without use.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// 32 random bytes, hex.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Constant-time comparison of two tokens.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// One signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The admin's user id.
    pub(crate) user_id: String,
    /// The token every form of this session carries.
    pub(crate) csrf: String,
    last_seen: Instant,
}

/// Every session, by cookie token.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    // A std mutex: held for a map operation only.
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session for `user_id`; returns its cookie token.
    pub(crate) fn start(&self, user_id: &str) -> String {
        let token = random_token();
        let session = Session {
            user_id: user_id.to_owned(),
            csrf: random_token(),
            last_seen: Instant::now(),
        };
        let mut sessions = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.last_seen.elapsed() < IDLE_TIMEOUT);
        sessions.insert(token.clone(), session);
        token
    }

    /// The live session of `token`, refreshed.
    pub(crate) fn get(&self, token: &str) -> Option<Session> {
        let mut sessions = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        let session = sessions.get_mut(token)?;
        if session.last_seen.elapsed() >= IDLE_TIMEOUT {
            sessions.remove(token);
            return None;
        }
        session.last_seen = Instant::now();
        Some(session.clone())
    }

    /// Ends the session of `token`.
    pub(crate) fn end(&self, token: &str) {
        let mut sessions = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(token);
    }

    /// Ends every session of `user_id` but `keep` (after a password change).
    pub(crate) fn end_others(&self, user_id: &str, keep: &str) {
        let mut sessions = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|token, s| s.user_id != user_id || token == keep);
    }
}

/// Sign-in attempts: 10 per minute per client address and 5 per minute per email.
#[derive(Debug)]
pub(crate) struct SignInLimits {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    by_email: DefaultKeyedRateLimiter<String>,
}

impl Default for SignInLimits {
    fn default() -> Self {
        let per_ip = Quota::per_minute(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
        let per_email = Quota::per_minute(NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN));
        SignInLimits {
            by_ip: RateLimiter::keyed(per_ip),
            by_email: RateLimiter::keyed(per_email),
        }
    }
}

impl SignInLimits {
    /// Whether one more attempt from `ip` for `email` may be checked.
    pub(crate) fn allow(&self, ip: Option<IpAddr>, email: &str) -> bool {
        let ip_ok = ip.is_none_or(|ip| self.by_ip.check_key(&ip).is_ok());
        let email_ok = self
            .by_email
            .check_key(&email.trim().to_ascii_lowercase())
            .is_ok();
        ip_ok && email_ok
    }
}
