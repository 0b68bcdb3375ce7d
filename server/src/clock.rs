//! The wall clock, for the modules allowed to read it (`protocol` and `auth` take the time as an
//! argument instead). Usage accounting reads a [`Clock`], which tests can set (a UTC day rolls
//! over at midnight, and a test should not wait for one).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_seconds() -> i64 {
    unix_millis() / 1000
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The system clock, or a manual one that only moves when told to.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock stopped at `unix_millis`; move it with [`Clock::set_millis`].
    pub fn manual(unix_millis: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(unix_millis))),
        }
    }

    /// Sets a manual clock (does nothing to the system clock).
    pub fn set_millis(&self, unix_millis: i64) {
        if let Some(manual) = &self.manual {
            manual.store(unix_millis, Ordering::SeqCst);
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> i64 {
        match &self.manual {
            Some(manual) => manual.load(Ordering::SeqCst),
            None => unix_millis(),
        }
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
}
