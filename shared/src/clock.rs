//! Time as an input: the [`Clock`] trait and its real and simulated clocks.
//!
//! Cores take `now` as a parameter; only shells hold a clock. Timestamps in
//! replicated state are nanoseconds since the Unix epoch, stamped by the
//! proposer, so `apply` never reads a clock.

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
