//! The wall clock: the only place Herald reads it (design invariant 11). Everything else takes a
//! [`Clock`] (cheap to clone; the node has one in `settings.clock`) or a `now` argument, and
//! `protocol` and `auth` take the time as an argument. `clippy.toml` forbids
//! `std::time::SystemTime::now` and `std::time::Instant::now` outside this file; monotonic time
//! elsewhere is `tokio::time::Instant`, which follows tokio's paused time in tests.
//!
//! A [`Clock`] is the system clock, a manual one that only moves when told to (a UTC day rolls
//! over at midnight, and a test should not wait for one), or one that follows tokio's clock from
//! a given start ([`Clock::tokio_at`]), so a `start_paused` test moves the wall clock with
//! `tokio::time::advance`.
//!
//! The rate limiters (governor) are built by [`Clock::rate_limiter`]: under the system clock they
//! read the CPU's counter (quanta, governor's default and the cheapest clock to read), under a
//! test's clock `tokio::time::Instant`, so they refill with paused time.

use std::ops::Add;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use governor::clock::{QuantaClock, QuantaInstant, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::Quota;

#[allow(clippy::disallowed_methods)] // The one read of the system wall clock.
fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The system clock, a manual one that only moves when told to, or tokio's clock from a start.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone, Default)]
enum Source {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
    /// Wall time = `start_millis` + tokio time elapsed since `since`.
    Tokio {
        start_millis: i64,
        since: tokio::time::Instant,
    },
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock {
            source: Source::System,
        }
    }

    /// A clock stopped at `unix_millis`; move it with [`Clock::set_millis`].
    pub fn manual(unix_millis: i64) -> Clock {
        Clock {
            source: Source::Manual(Arc::new(AtomicI64::new(unix_millis))),
        }
    }

    /// A clock that reads `unix_millis` now and then moves with `tokio::time::Instant`: in a
    /// `start_paused` test, `tokio::time::advance` moves it too. Call it inside a tokio runtime.
    pub fn tokio_at(unix_millis: i64) -> Clock {
        Clock {
            source: Source::Tokio {
                start_millis: unix_millis,
                since: tokio::time::Instant::now(),
            },
        }
    }

    /// Sets a manual clock (does nothing to the other kinds).
    pub fn set_millis(&self, unix_millis: i64) {
        if let Source::Manual(manual) = &self.source {
            manual.store(unix_millis, Ordering::SeqCst);
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> i64 {
        match &self.source {
            Source::System => unix_millis(),
            Source::Manual(manual) => manual.load(Ordering::SeqCst),
            Source::Tokio {
                start_millis,
                since,
            } => {
                let elapsed = i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX);
                start_millis.saturating_add(elapsed)
            }
        }
    }

    /// The current time as an HTTP `Date` header value (IMF-fixdate).
    pub fn http_date(&self) -> String {
        let millis = u64::try_from(self.now_millis()).unwrap_or(0);
        httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_millis(millis))
    }

    /// Seconds since the Unix epoch.
    pub fn now_seconds(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }

    /// The UTC day number (days since 1970-01-01).
    pub fn day(&self) -> i64 {
        self.now_millis().div_euclid(86_400_000)
    }

    /// Minutes since the epoch.
    pub fn minute(&self) -> i64 {
        self.now_millis().div_euclid(60_000)
    }
}

/// What a rate limiter (governor) reads, from [`Clock::rate_clock`]: under the system clock, the
/// CPU's counter through quanta (governor's default, the cheapest to read, about 10 ns against
/// 23 ns for `tokio::time::Instant::now` on a KVM guest); under a manual or tokio clock (tests),
/// `tokio::time::Instant`, so limiters refill with tokio's paused time like every other timer.
#[derive(Debug, Clone)]
pub struct RateClock {
    source: RateSource,
}

#[derive(Debug, Clone)]
enum RateSource {
    Cpu {
        clock: QuantaClock,
        origin: QuantaInstant,
    },
    Tokio {
        origin: tokio::time::Instant,
    },
}

/// A [`RateClock`] reading: nanoseconds since the clock was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RateInstant(u64);

impl Add<Nanos> for RateInstant {
    type Output = RateInstant;

    fn add(self, other: Nanos) -> RateInstant {
        RateInstant(self.0.saturating_add(other.into()))
    }
}

impl Reference for RateInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_sub(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        RateInstant(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

impl governor::clock::Clock for RateClock {
    type Instant = RateInstant;

    fn now(&self) -> RateInstant {
        let since = match &self.source {
            RateSource::Cpu { clock, origin } => clock.now().duration_since(*origin),
            RateSource::Tokio { origin } => {
                Nanos::from(tokio::time::Instant::now().saturating_duration_since(*origin))
            }
        };
        RateInstant(since.into())
    }
}

/// An in-memory rate limiter on a [`RateClock`]: what every Herald rate limit is.
pub type RateLimiter =
    governor::RateLimiter<NotKeyed, InMemoryState, RateClock, NoOpMiddleware<RateInstant>>;

impl Clock {
    /// The monotonic clock this clock's rate limiters read (see [`RateClock`]).
    pub fn rate_clock(&self) -> RateClock {
        let source = match self.source {
            Source::System => {
                let clock = QuantaClock::default();
                let origin = governor::clock::Clock::now(&clock);
                RateSource::Cpu { clock, origin }
            }
            Source::Manual(_) | Source::Tokio { .. } => RateSource::Tokio {
                origin: tokio::time::Instant::now(),
            },
        };
        RateClock { source }
    }

    /// A rate limiter for `quota` on this clock's [`RateClock`].
    pub fn rate_limiter(&self, quota: Quota) -> RateLimiter {
        governor::RateLimiter::direct_with_clock(quota, self.rate_clock())
    }
}

/// `YYYY-MM-DD` of a UTC day number (civil-from-days, proleptic Gregorian).
pub fn day_to_date(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(day_to_date(0), "1970-01-01");
        assert_eq!(day_to_date(20_419), "2025-11-27");
        assert_eq!(day_to_date(11_016), "2000-02-29");
        assert_eq!(day_to_date(-1), "1969-12-31");
    }

    #[test]
    fn manual_clock_moves_only_when_set() {
        let clock = Clock::manual(86_400_000 - 1);
        assert_eq!(clock.day(), 0);
        clock.set_millis(86_400_000);
        assert_eq!(clock.day(), 1);
        assert_eq!(clock.now_seconds(), 86_400);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_follows_paused_time() {
        let clock = Clock::tokio_at(86_400_000 - 1_000);
        assert_eq!(clock.now_millis(), 86_399_000);
        assert_eq!(clock.day(), 0);
        tokio::time::advance(std::time::Duration::from_millis(1_500)).await;
        assert_eq!(clock.now_millis(), 86_400_500);
        assert_eq!(clock.day(), 1);
        // Clones share the start.
        let copy = clock.clone();
        clock.set_millis(0);
        assert_eq!(copy.now_millis(), 86_400_500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_test_clocks_rate_limiter_refills_with_paused_time() {
        use governor::clock::Clock as _;
        use std::num::NonZeroU32;
        for clock in [Clock::tokio_at(0), Clock::manual(0)] {
            let limiter = clock.rate_limiter(Quota::per_second(NonZeroU32::new(2).unwrap()));
            assert!(limiter.check().is_ok());
            assert!(limiter.check().is_ok());
            let refused = limiter
                .check()
                .expect_err("the third within the second is refused");
            let wait = refused.wait_time_from(limiter.clock().now());
            assert_eq!(wait, Duration::from_millis(500));
            tokio::time::advance(Duration::from_millis(499)).await;
            assert!(limiter.check().is_err());
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(limiter.check().is_ok());
            assert!(limiter.check().is_err());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_clocks_rate_clock_is_the_cpus() {
        use governor::clock::Clock as _;
        let rate_clock = Clock::system().rate_clock();
        let before = rate_clock.now();
        // Paused time does not move it; real time does.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let after = rate_clock.now();
        assert!(after >= before);
        assert!(Duration::from(after.duration_since(before)) < Duration::from_secs(60));
    }
}
