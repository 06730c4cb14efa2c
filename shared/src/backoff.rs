//! Jittered exponential backoff for reconnects, as a pure helper: the caller
//! passes the seeded [`Rng`] and sleeps for the returned delay itself.
//!
//! "Equal jitter": attempt `n` waits a uniform time in `[c/2, c]` where
//! `c = min(max_ms, base_ms * 2^n)`, so a fleet of workers that lost the same
//! manager spreads its reconnects out but still waits at least `c/2`.

use crate::rng::Rng;

/// Reconnect delays (see the module docs).
#[derive(Clone, Debug)]
pub struct Backoff {
    pub base_ms: u64,
    pub max_ms: u64,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base_ms` (at least 1) and capped at `max_ms`.
    pub fn new(base_ms: u64, max_ms: u64) -> Backoff {
        assert!(base_ms > 0, "backoff base must be positive");
        assert!(max_ms >= base_ms, "backoff max {max_ms} ms below base {base_ms} ms");
        Backoff { base_ms, max_ms, attempt: 0 }
    }

    /// The delay before the next attempt; each call doubles the ceiling.
    pub fn next_delay_ms(&mut self, rng: &mut Rng) -> u64 {
        let ceiling =
            self.base_ms.checked_shl(self.attempt).filter(|&c| c >> self.attempt == self.base_ms).unwrap_or(u64::MAX).min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1).min(63);
        let half = ceiling / 2;
        half + rng.range(0, ceiling - half + 1)
    }

    /// Starts over after a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap() {
        let mut rng = Rng::from_seed(1);
        let mut b = Backoff::new(100, 5_000);
        let delays: Vec<u64> = (0..10).map(|_| b.next_delay_ms(&mut rng)).collect();
        let ceilings = [100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000, 5_000];
        for (d, c) in delays.iter().zip(ceilings) {
            assert!(*d >= c / 2 && *d <= c, "{delays:?}");
        }
        for _ in 0..100 {
            assert!(b.next_delay_ms(&mut rng) <= 5_000, "no overflow after many attempts");
        }
        b.reset();
        assert!(b.next_delay_ms(&mut rng) <= 100);
        // Same seed, same delays: simulations replay.
        let (mut r1, mut r2) = (Rng::from_seed(9), Rng::from_seed(9));
        let (mut b1, mut b2) = (Backoff::new(10, 1_000), Backoff::new(10, 1_000));
        for _ in 0..20 {
            assert_eq!(b1.next_delay_ms(&mut r1), b2.next_delay_ms(&mut r2));
        }
    }
}
