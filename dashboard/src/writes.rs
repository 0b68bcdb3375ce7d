//! The per-member budget of state-changing forms: every signed-in POST but sign-out and the
//! password change takes one attempt from its member's budget (by user id) before its form is
//! read (a password change takes one from its session's own budget instead), so a member, or
//! whoever holds a stolen session cookie, makes the node do at most `per_minute` store changes
//! (and form parses, password hashes, emails) a minute. In memory on each node, and in a
//! cluster also in the shared budgets (the same rule, so N nodes do not give N budgets).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, RateLimiter};
use tokio::time::Instant;

use crate::session::{check, quota, CookieSeal, TooMany};

/// How often idle members' budgets are dropped (a refilled budget resets nothing).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The rule's period: `per_minute` attempts at once, refilled over a minute.
const PERIOD: Duration = Duration::from_secs(60);

/// The members' budgets.
#[derive(Debug)]
pub(crate) struct WriteBudget {
    per_member: DefaultKeyedRateLimiter<String>,
    per_minute: u32,
    shared: Option<Arc<dyn crate::SharedBudgets>>,
    /// Names user ids in the shared store's keys (an HMAC under the session key).
    names: CookieSeal,
    last_sweep: Mutex<Instant>,
}

impl WriteBudget {
    /// `per_minute` forms a minute per member (0: [`crate::DEFAULT_WRITES_PER_MINUTE`]).
    pub(crate) fn new(
        per_minute: u32,
        shared: Option<Arc<dyn crate::SharedBudgets>>,
        session_key: Vec<u8>,
    ) -> WriteBudget {
        let per_minute = NonZeroU32::new(per_minute)
            .map_or(crate::DEFAULT_WRITES_PER_MINUTE, NonZeroU32::get)
            .max(1);
        WriteBudget {
            per_member: RateLimiter::keyed(quota((per_minute, PERIOD))),
            per_minute,
            shared,
            names: CookieSeal::new(session_key),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// The forms a minute each member may send.
    pub(crate) fn per_minute(&self) -> u32 {
        self.per_minute
    }

    fn sweep(&self) {
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return;
        };
        if last.elapsed() < SWEEP_EVERY {
            return;
        }
        *last = Instant::now();
        self.per_member.retain_recent();
        self.per_member.shrink_to_fit();
    }

    /// The budget a password change takes from: its session's own (named by an HMAC of the
    /// session token, never the token), not the member's, so a thief holding a stolen session
    /// who spends the member's budget cannot keep the member from changing their password (which
    /// signs the thief out). Each session gets `per_minute` of them; sessions are bounded by
    /// the sign-in limits.
    pub(crate) fn session_key(&self, session_token: &str) -> String {
        format!(
            "session:{}",
            self.names.name(b's', session_token.as_bytes())
        )
    }

    /// One form from `user_id`'s budget: on this node (while the cluster's shared budgets are
    /// out of reach, a 1/N share of it), then in the shared budgets.
    pub(crate) async fn take(&self, user_id: &str) -> Result<(), TooMany> {
        self.sweep();
        let cells = self
            .shared
            .as_ref()
            .map_or(1, |shared| shared.local_share())
            .clamp(1, self.per_minute);
        check(&self.per_member, &user_id.to_owned(), 60, cells)?;
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let key = format!("w:{}", self.names.name(b'w', user_id.as_bytes()));
        match shared.take(key, self.per_minute, PERIOD).await {
            Some(Err(retry_after)) => Err(TooMany {
                retry_after: retry_after.max(1),
            }),
            Some(Ok(())) | None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_member_gets_the_budget_and_no_more_and_members_are_apart() {
        let budget = WriteBudget::new(3, None, b"key".to_vec());
        for _ in 0..3 {
            assert!(budget.take("7").await.is_ok());
        }
        let refused = budget.take("7").await.expect_err("over the budget");
        assert!(refused.retry_after >= 1);
        assert!(
            budget.take("8").await.is_ok(),
            "another member's own budget"
        );
    }
}
