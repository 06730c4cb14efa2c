//! Minimal stderr logging for the daemon: one line per event, with a UTC
//! timestamp and a level. No global state beyond stderr itself.

/// Writes one log line to stderr.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {{
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        eprintln!("{} {:5} {}", now, $level, format_args!($($arg)*));
    }};
}
