//! Time as an input: the [`Clock`] (wall) and [`MonoClock`] (monotonic)
//! traits and their real and simulated clocks.
//!
//! Cores take `now` as a parameter; only shells hold a clock. Timestamps in
//! replicated state are nanoseconds since the Unix epoch, stamped by the
//! proposer, so `apply` never reads a clock. Deadlines, timeouts and
//! periods are monotonic milliseconds, so a wall-clock jump (a device
//! without an RTC setting its time at boot) neither fires nor stalls them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch.
pub type UnixNanos = u64;

/// A source of wall-clock time for shells.
pub trait Clock: Send + Sync {
    /// The current time in nanoseconds since the Unix epoch.
    fn now_unix_nanos(&self) -> UnixNanos;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_nanos(&self) -> UnixNanos {
        // A clock before 1970 is a broken machine; treat it as the epoch.
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }
}

/// A source of monotonic time for shells: milliseconds since the clock was made.
pub trait MonoClock: Send + Sync {
    /// Milliseconds since this clock's origin; never goes back.
    fn now_ms(&self) -> u64;
}

/// The operating system's monotonic clock, from when it was made.
#[derive(Clone, Copy, Debug)]
pub struct SystemMonoClock {
    origin: std::time::Instant,
}

impl SystemMonoClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemMonoClock {
        SystemMonoClock { origin: std::time::Instant::now() }
    }
}

impl Default for SystemMonoClock {
    fn default() -> Self {
        SystemMonoClock::new()
    }
}

impl MonoClock for SystemMonoClock {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told to, for simulations and tests.
#[derive(Debug, Default)]
pub struct SimClock {
    now: AtomicU64,
}

impl SimClock {
    /// A clock starting at `start`.
    pub fn new(start: UnixNanos) -> SimClock {
        SimClock { now: AtomicU64::new(start) }
    }

    /// Moves the clock forward by `nanos`.
    pub fn advance(&self, nanos: u64) {
        self.now.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now_unix_nanos(&self) -> UnixNanos {
        self.now.load(Ordering::SeqCst)
    }
}

/// Simulated monotonic time: the same nanosecond counter, in milliseconds.
impl MonoClock for SimClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst) / 1_000_000
    }
}

/// RFC 3339 UTC timestamp (`YYYY-MM-DDTHH:MM:SSZ`) for a unix time in
/// seconds (proleptic Gregorian).
pub fn rfc3339(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let rem = unix_s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3_600, (rem / 60) % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_601_599), "2026-12-06T23:59:59Z");
    }
}
