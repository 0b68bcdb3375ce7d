//! Admin sessions (kept by the server in its store through the [`crate::AdminPort`], so every
//! node sharing the store accepts them and a restart signs nobody out), CSRF tokens and sign-in
//! rate limiting (in this process's memory: each node has its own budgets).

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use tokio::time::Instant;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "herald_session";
/// The cookie holding the sign-in form's CSRF token (before there is a session).
pub(crate) const LOGIN_CSRF_COOKIE: &str = "herald_login_csrf";
/// How long a session lives without use.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// How long a session lives at most, however busy.
pub(crate) const ABSOLUTE_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

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

/// Most live sessions one admin may have; signing in once more ends their oldest session.
pub(crate) const MAX_SESSIONS_PER_USER: usize = 20;

/// One signed-in browser, as the server's store keeps it (shared by every node on that store).
pub(crate) type Session = crate::port::SessionInfo;

/// A fresh session's tokens and terms, ready for [`crate::AdminPort::start_session`].
pub(crate) fn new_session() -> crate::port::NewSession {
    crate::port::NewSession {
        token: random_token(),
        csrf: random_token(),
        idle: IDLE_TIMEOUT,
        lifetime: ABSOLUTE_LIFETIME,
        per_user: MAX_SESSIONS_PER_USER,
    }
}

/// Longest email accepted by the sign-in form (RFC 5321's path limit), in bytes.
pub(crate) const MAX_EMAIL_BYTES: usize = 254;
/// Longest password accepted by the sign-in form: the store's 1024 characters, in UTF-8 bytes.
pub(crate) const MAX_PASSWORD_BYTES: usize = 4 * 1024;
/// Most keys one sign-in limiter holds; past it (after dropping the idle ones) new keys are
/// refused, so memory stays bounded whatever the number of addresses or emails tried.
const MAX_KEYS: usize = 100_000;
/// How often idle limiter keys are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The limiter key of a client address: an IPv4 address (also written IPv4-mapped) counts on
/// its own, an IPv6 address by its /64 (what one subscriber usually holds).
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
    }
}

/// The limiter key of an IPv6 client's network, its /48 (what one site is usually given: 65,536
/// /64s, so per-/64 budgets alone would give one holder 65,536 budgets); `None` for an IPv4
/// client (also written IPv4-mapped), which has its address's budget only.
pub(crate) fn network_key(ip: IpAddr) -> Option<IpAddr> {
    match ip.to_canonical() {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => Some(IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into())),
    }
}

/// Why a sign-in attempt may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooMany {
    /// Seconds until the refusing budget allows another attempt.
    pub(crate) retry_after: u64,
}

/// Sign-in budgets: 10 attempts per minute per client address (checked first, before the form
/// is read; an IPv6 address by its /64, and each IPv6 /48 has 80 per minute for all its /64s,
/// eight addresses' worth), 5 per minute per (email, address), and 50 per hour per email from anywhere (a slow
/// backoff against guessing from many addresses). A stranger can spend an email's hourly budget
/// from one address and keep it spent, so the per-email budget is not the last word: an
/// address it refuses still gets one attempt per 10 minutes for that email of its own
/// (`slow_lane`), so the real admin is never locked out by someone else's failures, while
/// guessing from many addresses stays at one try per address per 10 minutes.
/// Idle keys are dropped every few seconds and each limiter holds at most [`MAX_KEYS`].
#[derive(Debug)]
pub(crate) struct SignInLimits {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    /// IPv6 clients' /48s ([`network_key`]).
    by_network: DefaultKeyedRateLimiter<IpAddr>,
    by_email_address: DefaultKeyedRateLimiter<(String, IpAddr)>,
    by_email: DefaultKeyedRateLimiter<String>,
    slow_lane: DefaultKeyedRateLimiter<(String, IpAddr)>,
    /// Sign-ups (account creation, used only by the account forms' budgets): per address or
    /// IPv6 /64, per /48, and one budget for the whole node ([`SIGN_UPS_PER_ADDRESS`] ...).
    sign_ups_by_address: DefaultKeyedRateLimiter<IpAddr>,
    sign_ups_by_network: DefaultKeyedRateLimiter<IpAddr>,
    sign_ups_total: DefaultKeyedRateLimiter<()>,
    last_sweep: Mutex<Instant>,
    /// The cluster's shared budgets (the same rules), checked after the in-memory ones.
    shared: Option<Arc<dyn crate::SharedBudgets>>,
    /// Names emails and addresses in the shared budgets' keys (an HMAC under the session key,
    /// the same on every node): the shared store holds neither, nor a hash anyone could match
    /// against a list of emails.
    names: CookieSeal,
    /// Prefixed to every shared budget's key, so two sets of budgets with the same rules (the
    /// sign-in's and the account forms') stay apart in the shared store.
    scope: &'static str,
}

/// The budgets' rules: (attempts at once, per period).
const PER_ADDRESS: (u32, Duration) = (10, Duration::from_secs(60));
/// An IPv6 /48's: eight /64s' worth, so a site's few users never meet it, while a holder of a
/// /48 gets 80 attempts a minute, not 65,536 times 10.
const PER_NETWORK: (u32, Duration) = (8 * PER_ADDRESS.0, PER_ADDRESS.1);
const PER_EMAIL_ADDRESS: (u32, Duration) = (5, Duration::from_secs(60));
const PER_EMAIL: (u32, Duration) = (50, Duration::from_secs(3600));
const SLOW_LANE: (u32, Duration) = (1, Duration::from_secs(600));
/// Sign-ups (each makes at most one tenant, one user and one email) per client address or
/// IPv6 /64 and hour: far below the sign-in's 600, since a sign-up's email varies freely.
pub(crate) const SIGN_UPS_PER_ADDRESS: (u32, Duration) = (5, Duration::from_secs(3600));
/// Per IPv6 /48 and hour.
pub(crate) const SIGN_UPS_PER_NETWORK: (u32, Duration) = (20, Duration::from_secs(3600));
/// Per hour in all: on this node, and the same budget shared by the whole cluster when it has
/// shared budgets, so anonymous visitors together make at most this many tenants and
/// sign-up emails an hour.
pub(crate) const SIGN_UPS_TOTAL: (u32, Duration) = (200, Duration::from_secs(3600));

/// A governor quota of `burst` attempts per `period`.
pub(crate) fn quota((burst, period): (u32, Duration)) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period / burst.get())
        .unwrap_or_else(|| Quota::per_hour(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl Default for SignInLimits {
    fn default() -> Self {
        SignInLimits::new(None, Vec::new())
    }
}

impl SignInLimits {
    /// The budgets, in memory and, when `shared` is given (a cluster), in the shared store too,
    /// under names keyed with `session_key` (`Config::session_key`).
    pub(crate) fn new(shared: Option<Arc<dyn crate::SharedBudgets>>, session_key: Vec<u8>) -> Self {
        let per_address = quota(PER_ADDRESS);
        let per_network = quota(PER_NETWORK);
        let per_email_address = quota(PER_EMAIL_ADDRESS);
        let per_email = quota(PER_EMAIL);
        let slow_lane = quota(SLOW_LANE);
        SignInLimits {
            shared,
            names: CookieSeal::new(session_key),
            by_address: RateLimiter::keyed(per_address),
            by_network: RateLimiter::keyed(per_network),
            by_email_address: RateLimiter::keyed(per_email_address),
            by_email: RateLimiter::keyed(per_email),
            slow_lane: RateLimiter::keyed(slow_lane),
            sign_ups_by_address: RateLimiter::keyed(quota(SIGN_UPS_PER_ADDRESS)),
            sign_ups_by_network: RateLimiter::keyed(quota(SIGN_UPS_PER_NETWORK)),
            sign_ups_total: RateLimiter::keyed(quota(SIGN_UPS_TOTAL)),
            last_sweep: Mutex::new(Instant::now()),
            scope: "",
        }
    }

    /// These budgets under their own names in the shared store (`scope` prefixes every key).
    pub(crate) fn scoped(mut self, scope: &'static str) -> Self {
        self.scope = scope;
        self
    }
}

/// One check of a keyed limiter that holds at most [`MAX_KEYS`] keys, taking `cells` of its
/// budget (1, or more while the cluster's shared budgets are out of reach: see
/// [`SignInLimits::cells`]; never more than the burst, so an attempt is always possible).
pub(crate) fn check<K>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    full_wait: u64,
    cells: u32,
) -> Result<(), TooMany>
where
    K: Clone + Eq + std::hash::Hash,
{
    // Full: refuse until the periodic sweep drops idle keys (sweeping here, on every attempt,
    // would let a full limiter cost a pass over every key per request).
    if limiter.len() >= MAX_KEYS {
        return Err(TooMany {
            retry_after: full_wait,
        });
    }
    let cells = NonZeroU32::new(cells).unwrap_or(NonZeroU32::MIN);
    match limiter.check_key_n(key, cells) {
        Ok(outcome) => outcome.map_err(|not_until| TooMany {
            retry_after: not_until
                .wait_time_from(limiter.clock().now())
                .as_secs()
                .max(1),
        }),
        // More cells than the burst: the caller caps `cells`, so only a burst of 1 gets here.
        Err(_) => limiter.check_key(key).map_err(|not_until| TooMany {
            retry_after: not_until
                .wait_time_from(limiter.clock().now())
                .as_secs()
                .max(1),
        }),
    }
}

impl SignInLimits {
    /// The cells one attempt takes from an in-memory budget of `burst`: 1, or, while the
    /// cluster's shared budgets are skipped (Redis did not answer), the live nodes last known,
    /// so the cluster as a whole still allows about one budget (each node a 1/N share), never
    /// more than `burst` (an attempt stays possible).
    fn cells(&self, burst: u32) -> u32 {
        self.shared
            .as_ref()
            .map_or(1, |shared| shared.local_share())
            .clamp(1, burst.max(1))
    }

    fn sweep(&self) {
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return;
        };
        if last.elapsed() < SWEEP_EVERY {
            return;
        }
        *last = Instant::now();
        self.by_address.retain_recent();
        self.by_address.shrink_to_fit();
        self.by_network.retain_recent();
        self.by_network.shrink_to_fit();
        self.by_email_address.retain_recent();
        self.by_email_address.shrink_to_fit();
        self.by_email.retain_recent();
        self.by_email.shrink_to_fit();
        self.slow_lane.retain_recent();
        self.slow_lane.shrink_to_fit();
        self.sign_ups_by_address.retain_recent();
        self.sign_ups_by_address.shrink_to_fit();
        self.sign_ups_by_network.retain_recent();
        self.sign_ups_by_network.shrink_to_fit();
    }

    /// Whether one more sign-up (a genuine form, already through [`Self::allow_email`]) may
    /// come from `ip`: the address's (or /64's), the /48's and the total hourly sign-up
    /// budgets, in memory and then in the cluster's shared budgets.
    pub(crate) async fn allow_sign_up(&self, ip: Option<IpAddr>) -> Result<(), TooMany> {
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let address = address_key(ip);
        let network = network_key(ip);
        check(
            &self.sign_ups_by_address,
            &address,
            600,
            self.cells(SIGN_UPS_PER_ADDRESS.0),
        )?;
        if let Some(network) = network {
            check(
                &self.sign_ups_by_network,
                &network,
                600,
                self.cells(SIGN_UPS_PER_NETWORK.0),
            )?;
        }
        check(&self.sign_ups_total, &(), 600, self.cells(SIGN_UPS_TOTAL.0))?;
        if self.shared.is_none() {
            return Ok(());
        }
        let name = self.names.name(b'a', address.to_string().as_bytes());
        self.take_shared(format!("su:a:{name}"), SIGN_UPS_PER_ADDRESS)
            .await?;
        if let Some(network) = network {
            let name = self.names.name(b'n', network.to_string().as_bytes());
            self.take_shared(format!("su:n:{name}"), SIGN_UPS_PER_NETWORK)
                .await?;
        }
        self.take_shared("su:all".to_owned(), SIGN_UPS_TOTAL).await
    }

    /// Whether one more attempt may come from `ip` (`None`: one shared key), in this node's
    /// memory: the address's budget, then, for IPv6, its /48's (an attempt its own /64 refuses
    /// costs its neighbours nothing). The cluster's shared budgets of the address and network
    /// are taken by [`Self::allow_email`], once the form is known to be genuine.
    pub(crate) fn allow_address(&self, ip: Option<IpAddr>) -> Result<(), TooMany> {
        self.sweep();
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        check(
            &self.by_address,
            &address_key(ip),
            60,
            self.cells(PER_ADDRESS.0),
        )?;
        match network_key(ip) {
            Some(network) => check(&self.by_network, &network, 60, self.cells(PER_NETWORK.0)),
            None => Ok(()),
        }
    }

    /// Whether an attempt from `ip` (already let through by [`Self::allow_address`]) for
    /// `email` (at most [`MAX_EMAIL_BYTES`]) may be checked.
    pub(crate) async fn allow_email(&self, ip: Option<IpAddr>, email: &str) -> Result<(), TooMany> {
        let ip = ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let address = address_key(ip);
        let network = network_key(ip);
        let email = email.trim().to_ascii_lowercase();
        let pair = (email, address);
        check(
            &self.by_email_address,
            &pair,
            60,
            self.cells(PER_EMAIL_ADDRESS.0),
        )?;
        let by_email = check(&self.by_email, &pair.0, 60, self.cells(PER_EMAIL.0));
        if let Err(refused) = by_email {
            // The email is throttled everywhere: this address still has its own slow lane, here
            // and in the cluster's shared budgets (or N nodes would give it N tries).
            check(&self.slow_lane, &pair, refused.retry_after, 1).map_err(|slow| TooMany {
                retry_after: slow.retry_after.min(refused.retry_after),
            })?;
            if self.shared.is_none() {
                return Ok(());
            }
            // The address's shared budget, only now: a POST without a valid form costs no
            // Redis call.
            let (email, address) = self.shared_names(&pair.0, address);
            self.take_shared(format!("a:{address}"), PER_ADDRESS)
                .await?;
            self.take_shared_network(network).await?;
            self.take_shared(format!("ea:{email}:{address}"), PER_EMAIL_ADDRESS)
                .await?;
            return self
                .take_shared(format!("sl:{email}:{address}"), SLOW_LANE)
                .await
                .map_err(|slow| TooMany {
                    retry_after: slow.retry_after.min(refused.retry_after),
                });
        }
        if self.shared.is_none() {
            return Ok(());
        }
        // The same rules on the cluster's shared budgets (the address's first: see above).
        let (email, address) = self.shared_names(&pair.0, address);
        self.take_shared(format!("a:{address}"), PER_ADDRESS)
            .await?;
        self.take_shared_network(network).await?;
        self.take_shared(format!("ea:{email}:{address}"), PER_EMAIL_ADDRESS)
            .await?;
        match self.take_shared(format!("e:{email}"), PER_EMAIL).await {
            Ok(()) => Ok(()),
            Err(refused) => self
                .take_shared(format!("sl:{email}:{address}"), SLOW_LANE)
                .await
                .map_err(|slow| TooMany {
                    retry_after: slow.retry_after.min(refused.retry_after),
                }),
        }
    }

    /// The shared budgets' names of `email` and `address`: 128 bits of an HMAC-SHA256 under
    /// the session key each, hex (a separator byte keeps the two kinds apart).
    fn shared_names(&self, email: &str, address: IpAddr) -> (String, String) {
        (
            self.names.name(b'e', email.as_bytes()),
            self.names.name(b'a', address.to_string().as_bytes()),
        )
    }

    /// One attempt from the shared budget of IPv6 network `network` (its /48, named like an
    /// address but under its own kind and prefix: a /48 prints like the /64 it starts with);
    /// nothing for an IPv4 client.
    async fn take_shared_network(&self, network: Option<IpAddr>) -> Result<(), TooMany> {
        let Some(network) = network else {
            return Ok(());
        };
        let name = self.names.name(b'n', network.to_string().as_bytes());
        self.take_shared(format!("n:{name}"), PER_NETWORK).await
    }

    /// One attempt from the shared budget `key` (allowed without a shared store, or when it
    /// does not answer: the in-memory budgets above still hold on this node).
    async fn take_shared(
        &self,
        key: String,
        (burst, period): (u32, Duration),
    ) -> Result<(), TooMany> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let key = format!("{}{key}", self.scope);
        match shared.take(key, burst, period).await {
            Some(Err(retry_after)) => Err(TooMany {
                retry_after: retry_after.max(1),
            }),
            Some(Ok(())) | None => Ok(()),
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.by_address.len()
            + self.by_network.len()
            + self.by_email_address.len()
            + self.by_email.len()
            + self.slow_lane.len()
    }
}

/// Whether `token` has the shape of a token this dashboard hands out (64 lowercase hex
/// characters): anything else is no session, without asking the store.
pub(crate) fn well_formed_token(token: &str) -> bool {
    token.len() == 64
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Seals and opens session cookie values: `TOKEN.MAC`, the MAC an HMAC-SHA256 of the token under
/// the store's cookie key (`Config::session_key`, shared by every node on the store). A cookie
/// whose MAC is wrong was not made by this dashboard and is no session, without a store read, so
/// made-up cookies cost nothing and block no one.
pub(crate) struct CookieSeal {
    key: Vec<u8>,
}

impl std::fmt::Debug for CookieSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSeal(***)")
    }
}

type CookieMac = hmac::Hmac<sha2::Sha256>;

impl CookieSeal {
    pub(crate) fn new(key: Vec<u8>) -> CookieSeal {
        CookieSeal { key }
    }

    fn mac(&self, token: &str) -> CookieMac {
        use hmac::Mac;
        let mut mac = CookieMac::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(token.as_bytes());
        mac
    }

    /// A keyed name for `value` of kind `kind` (128 bits of HMAC-SHA256, hex), for data the
    /// shared store must not hold in the clear.
    pub(crate) fn name(&self, kind: u8, value: &[u8]) -> String {
        use hmac::Mac;
        let mut mac = CookieMac::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(&[kind, 0]);
        mac.update(value);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The cookie value for session `token`.
    pub(crate) fn seal(&self, token: &str) -> String {
        use hmac::Mac;
        format!(
            "{token}.{}",
            hex::encode(self.mac(token).finalize().into_bytes())
        )
    }

    /// The session token of cookie `value`, when this dashboard made it (constant-time check).
    pub(crate) fn open<'a>(&self, value: &'a str) -> Option<&'a str> {
        use hmac::Mac;
        let (token, mac) = value.split_once('.')?;
        if !well_formed_token(token) {
            return None;
        }
        let mac = hex::decode(mac).ok()?;
        self.mac(token).verify_slice(&mac).ok()?;
        Some(token)
    }
}

#[cfg(test)]
// A test's poisoned lock is a failed test: unwrapping is the policy here.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_an_ipv4_client_by_its_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(v4), v4);
        assert_ne!(address_key(v4), address_key("192.0.2.8".parse().unwrap()));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            address_key(mapped),
            v4,
            "an IPv4-mapped address is its IPv4 address"
        );
    }

    #[tokio::test]
    async fn the_sixth_attempt_from_one_64_is_refused_but_another_64_still_signs_in() {
        let limits = SignInLimits::default();
        let first: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        for n in 0..5 {
            let ip = if n % 2 == 0 { first } else { same_64 };
            assert!(limits
                .allow_email(Some(ip), "Admin@Example.test")
                .await
                .is_ok());
        }
        let refused = limits
            .allow_email(Some(same_64), "admin@example.test ")
            .await;
        assert!(refused.is_err(), "the sixth attempt from the /64");
        assert!((1..=60).contains(&refused.unwrap_err().retry_after));
        assert!(limits
            .allow_email(Some(elsewhere), "admin@example.test")
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn one_email_has_a_slower_budget_across_every_address() {
        let limits = SignInLimits::default();
        for n in 0..50u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            assert!(limits
                .allow_email(Some(ip), "admin@example.test")
                .await
                .is_ok());
        }
        // Past the email's budget (a stranger can keep it spent from one address), each address
        // still has one attempt of its own per 10 minutes: the real admin is not locked out.
        let fresh = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
        assert!(limits
            .allow_email(Some(fresh), "admin@example.test")
            .await
            .is_ok());
        let refused = limits
            .allow_email(Some(fresh), "admin@example.test")
            .await
            .unwrap_err();
        assert!(refused.retry_after > 1, "{refused:?}");
        assert!(limits
            .allow_email(Some(fresh), "other@example.test")
            .await
            .is_ok());
    }

    #[test]
    fn an_ipv6_clients_network_is_its_48_and_an_ipv4_client_has_none() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(network_key(a), Some("2001:db8:1::".parse().unwrap()));
        assert_eq!(network_key(a), network_key(b));
        assert_ne!(
            network_key(a),
            network_key("2001:db8:2::1".parse().unwrap())
        );
        assert_eq!(network_key("192.0.2.7".parse().unwrap()), None);
        assert_eq!(network_key("::ffff:192.0.2.7".parse().unwrap()), None);
    }

    /// The `/64` number `n` of the /48 2001:db8:48::/48, address `host` in it.
    fn in_one_48(n: u16, host: u16) -> IpAddr {
        format!("2001:db8:48:{n:x}::{host:x}").parse().unwrap()
    }

    #[tokio::test]
    async fn the_64s_of_one_48_share_eight_addresses_worth_and_ipv4_is_unchanged() {
        let limits = SignInLimits::default();
        let (per_address, _) = PER_ADDRESS;
        let (per_network, _) = PER_NETWORK;
        assert_eq!(per_network, 8 * per_address);
        // Eight /64s spend their own budgets, which together are the /48's; the first one's
        // attempts past its own budget are refused by it and cost the /48 nothing.
        for n in 0..8u16 {
            for host in 0..per_address as u16 {
                assert!(
                    limits.allow_address(Some(in_one_48(n, host + 1))).is_ok(),
                    "/64 {n}, attempt {host}"
                );
            }
            if n == 0 {
                for _ in 0..5 {
                    assert!(limits.allow_address(Some(in_one_48(0, 99))).is_err());
                }
            }
        }
        let refused = limits
            .allow_address(Some(in_one_48(8, 1)))
            .expect_err("a ninth /64 of the same /48 has a budget of its own, not the /48's");
        assert!((1..=60).contains(&refused.retry_after), "{refused:?}");
        assert!(
            limits
                .allow_address(Some("2001:db8:49::1".parse().unwrap()))
                .is_ok(),
            "another /48"
        );
        // IPv4 addresses have their address's budget only, whatever their neighbours do.
        for n in 0..(per_network + 1) {
            let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, n as u8));
            assert!(limits.allow_address(Some(ip)).is_ok(), "IPv4 address {n}");
        }
    }

    /// A shared store counting attempts per key (no refill: the test is quicker than a period).
    #[derive(Debug, Default)]
    struct Counting(Mutex<std::collections::HashMap<String, u32>>);

    impl crate::SharedBudgets for Counting {
        fn take(
            &self,
            key: String,
            burst: u32,
            _period: Duration,
        ) -> futures_util::future::BoxFuture<'_, Option<Result<(), u64>>> {
            let mut taken = self.0.lock().unwrap();
            let count = taken.entry(key).or_default();
            let answer = if *count < burst {
                *count += 1;
                Ok(())
            } else {
                Err(60)
            };
            Box::pin(async move { Some(answer) })
        }
    }

    #[tokio::test]
    async fn in_a_cluster_the_48s_budget_is_shared_too_and_ipv4_has_none() {
        let shared = Arc::new(Counting::default());
        let limits = SignInLimits::new(Some(shared.clone()), b"key".to_vec());
        let (per_network, _) = PER_NETWORK;
        // Every attempt from its own /64 and for its own email: only the /48 can refuse.
        for n in 0..per_network {
            let email = format!("guess{n}@example.test");
            assert!(
                limits
                    .allow_email(Some(in_one_48(n as u16, 1)), &email)
                    .await
                    .is_ok(),
                "attempt {n}"
            );
        }
        let refused = limits
            .allow_email(Some(in_one_48(999, 1)), "another@example.test")
            .await
            .expect_err("past the /48's shared budget");
        assert_eq!(refused.retry_after, 60);
        let keys: Vec<String> = shared.0.lock().unwrap().keys().cloned().collect();
        let networks = keys.iter().filter(|key| key.starts_with("n:")).count();
        assert_eq!(networks, 1, "one shared key for the /48: {keys:?}");
        // An IPv4 client takes no network budget.
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        assert!(limits
            .allow_email(Some(v4), "v4@example.test")
            .await
            .is_ok());
        let keys = shared.0.lock().unwrap();
        assert_eq!(keys.keys().filter(|key| key.starts_with("n:")).count(), 1);
    }

    #[tokio::test]
    async fn the_account_forms_budgets_are_shared_in_a_cluster_apart_from_the_sign_ins() {
        let shared = Arc::new(Counting::default());
        let sign_in = SignInLimits::new(Some(shared.clone()), b"key".to_vec());
        let accounts = SignInLimits::new(Some(shared.clone()), b"key".to_vec()).scoped("acct:");
        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
        let (per_email_address, _) = PER_EMAIL_ADDRESS;
        for n in 0..per_email_address {
            assert!(
                accounts
                    .allow_email(Some(ip), "a@example.test")
                    .await
                    .is_ok(),
                "{n}"
            );
        }
        // Another node's in-memory budgets are fresh; the shared one refuses.
        let other_node = SignInLimits::new(Some(shared.clone()), b"key".to_vec()).scoped("acct:");
        assert!(other_node
            .allow_email(Some(ip), "a@example.test")
            .await
            .is_err());
        // The sign-in's budgets for the same email and address are untouched.
        assert!(sign_in
            .allow_email(Some(ip), "a@example.test")
            .await
            .is_ok());
        let keys = shared.0.lock().unwrap();
        assert!(keys.keys().any(|k| k.starts_with("acct:ea:")), "{keys:?}");
        assert!(keys.keys().any(|k| k.starts_with("ea:")), "{keys:?}");
    }

    #[tokio::test]
    async fn sign_ups_have_hourly_budgets_per_address_and_in_all_across_a_cluster() {
        let shared = Arc::new(Counting::default());
        let node = |_: u8| SignInLimits::new(Some(shared.clone()), b"key".to_vec()).scoped("acct:");
        let (first, second) = (node(1), node(2));
        let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
        for n in 0..SIGN_UPS_PER_ADDRESS.0 {
            assert!(first.allow_sign_up(Some(ip)).await.is_ok(), "{n}");
        }
        let refused = first.allow_sign_up(Some(ip)).await.expect_err("a sixth");
        assert!(refused.retry_after > 60, "{refused:?}");
        // Another node: its memory is fresh, the cluster's shared budget refuses.
        assert!(second.allow_sign_up(Some(ip)).await.is_err());
        // In all: SIGN_UPS_TOTAL an hour over both nodes, from any addresses.
        let mut allowed = SIGN_UPS_PER_ADDRESS.0;
        for n in 0..(2 * SIGN_UPS_TOTAL.0) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
            let limits = if n % 2 == 0 { &first } else { &second };
            if limits.allow_sign_up(Some(ip)).await.is_ok() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, SIGN_UPS_TOTAL.0, "the cluster-wide hourly total");
        let keys = shared.0.lock().unwrap();
        assert!(keys.contains_key("acct:su:all"), "{keys:?}");
    }

    #[tokio::test]
    async fn limiter_keys_are_capped() {
        let limits = SignInLimits::default();
        let mut refused = 0;
        for n in 0..(MAX_KEYS as u32 + 10) {
            let ip = IpAddr::V4(Ipv4Addr::from(n));
            if limits.allow_address(Some(ip)).is_err() {
                refused += 1;
            }
        }
        assert_eq!(
            refused, 10,
            "keys past the cap are refused while the others are recent"
        );
        assert!(limits.keys() <= MAX_KEYS);
    }

    #[test]
    fn only_tokens_of_the_handed_out_shape_are_looked_up() {
        assert!(well_formed_token(&random_token()));
        assert!(!well_formed_token("short"));
        assert!(!well_formed_token(&"A".repeat(64)));
        assert!(!well_formed_token(&format!("{}x", "a".repeat(63))));
    }

    #[test]
    fn only_cookies_sealed_with_the_key_open() {
        let seal = CookieSeal::new(b"the store's key".to_vec());
        let token = random_token();
        let cookie = seal.seal(&token);
        assert_eq!(seal.open(&cookie), Some(token.as_str()));
        let other = CookieSeal::new(b"another store's key".to_vec());
        assert_eq!(other.open(&cookie), None, "another key's cookie");
        assert_eq!(seal.open(&token), None, "a bare token");
        let forged = format!("{}.{}", random_token(), "0".repeat(64));
        assert_eq!(seal.open(&forged), None, "a made-up MAC");
        let (_, mac) = cookie.split_once('.').unwrap();
        let swapped = format!("{}.{mac}", random_token());
        assert_eq!(seal.open(&swapped), None, "a MAC moved to another token");
        assert_eq!(format!("{seal:?}"), "CookieSeal(***)");
    }
}
