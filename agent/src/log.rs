//! Minimal stderr logging for the daemon: one line per event, with a UTC
//! timestamp and a level. No global state beyond stderr itself (and, in the
//! simulator, a per-thread sink that takes the lines instead).

/// Writes one log line to stderr.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)*) => {{
        $crate::log::emit($level, format_args!($($arg)*));
    }};
}

/// Writes one line: `<RFC 3339 time> <LEVEL> <message>`.
pub fn emit(level: &str, args: std::fmt::Arguments<'_>) {
    #[cfg(feature = "sim")]
    if sink::take(level, args) {
        return;
    }
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    eprintln!("{} {:5} {}", now, level, args);
}

/// The simulator's per-thread log sink: many simulated daemons share one
/// thread, and their lines belong in its trace, not on stderr.
#[cfg(feature = "sim")]
pub(crate) mod sink {
    use std::cell::RefCell;

    /// Takes one line (level, message).
    pub(crate) type Sink = Box<dyn FnMut(&str, std::fmt::Arguments<'_>)>;

    thread_local! {
        static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
    }

    /// Sends this thread's log lines to `sink` (None: back to stderr).
    pub(crate) fn set(sink: Option<Sink>) {
        SINK.with(|s| *s.borrow_mut() = sink);
    }

    /// Gives the line to the thread's sink; false if it has none.
    pub(super) fn take(level: &str, args: std::fmt::Arguments<'_>) -> bool {
        SINK.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => match s.as_mut() {
                Some(f) => {
                    f(level, args);
                    true
                }
                None => false,
            },
            Err(_) => false,
        })
    }
}
