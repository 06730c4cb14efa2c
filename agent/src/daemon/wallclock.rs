//! The daemon's wall clock, and its one test and diagnostic knob.
//!
//! Wall time only stamps reports, proposals and file times: every deadline
//! and period of the loop is monotonic, and no decision compares another
//! node's wall clock with this one (a leader stamps the reports it takes
//! with its own clock, see `shoal_manager::dispatcher::accept_reports`). A
//! device without a real-time clock boots in 1970, or months late; nothing
//! may expire or stall for it.
//!
//! `SHOAL_CLOCK_OFFSET_S` (signed whole seconds, read once when the daemon
//! starts) moves this daemon's wall clock by that much: a knob for tests and
//! diagnosis that plays a device whose clock is months ahead or behind
//! (time namespaces move the monotonic and boot clocks, not the wall
//! clock). Unset, empty or 0 is the system clock; anything else that does
//! not parse is refused at start.

use shoal_shared::clock::{Clock, SystemClock, UnixNanos};
use std::sync::Arc;

/// The environment variable of the offset, in seconds.
pub(crate) const CLOCK_OFFSET_ENV: &str = "SHOAL_CLOCK_OFFSET_S";

/// The system clock moved by a fixed offset.
#[derive(Clone, Copy, Debug)]
struct OffsetClock {
    offset_s: i64,
}

impl Clock for OffsetClock {
    fn now_unix_nanos(&self) -> UnixNanos {
        offset(SystemClock.now_unix_nanos(), self.offset_s)
    }
}

/// `now` moved by `offset_s` seconds, saturating at the epoch and at the end of time.
fn offset(now: UnixNanos, offset_s: i64) -> UnixNanos {
    now.saturating_add_signed(offset_s.saturating_mul(1_000_000_000))
}

/// Parses the knob's value (`None`: unset).
fn parse_offset_s(value: Option<&str>) -> Result<i64, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => v.parse().map_err(|_| format!("{CLOCK_OFFSET_ENV}={v:?} is not a whole number of seconds (e.g. 15552000 or -3600)")),
    }
}

/// The daemon's wall clock: the system's, moved by `SHOAL_CLOCK_OFFSET_S` when set.
pub(crate) fn from_env() -> anyhow::Result<Arc<dyn Clock>> {
    let value = std::env::var(CLOCK_OFFSET_ENV).ok();
    let offset_s = parse_offset_s(value.as_deref()).map_err(anyhow::Error::msg)?;
    if offset_s == 0 {
        return Ok(Arc::new(SystemClock));
    }
    crate::log!("WARN", "{CLOCK_OFFSET_ENV}={offset_s}: this daemon's wall clock runs {offset_s} s off the system's (a test knob)");
    Ok(Arc::new(OffsetClock { offset_s }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_parses_and_saturates() {
        assert_eq!(parse_offset_s(None), Ok(0));
        assert_eq!(parse_offset_s(Some(" ")), Ok(0));
        assert_eq!(parse_offset_s(Some("15552000")), Ok(15_552_000));
        assert_eq!(parse_offset_s(Some("-3600")), Ok(-3_600));
        assert!(parse_offset_s(Some("6 months")).unwrap_err().contains(CLOCK_OFFSET_ENV));
        assert_eq!(offset(5_000_000_000, -10), 0, "never before the epoch");
        assert_eq!(offset(5_000_000_000, 2), 7_000_000_000);
        assert_eq!(offset(u64::MAX - 1, i64::MAX), u64::MAX);
    }
}
