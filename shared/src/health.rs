//! Healthchecks' pure rules (issue #17): what a service spec's
//! [`HealthConfig`] may hold ([`validate`]), Docker's merge of it with the
//! image's `HEALTHCHECK` into the check a task runs ([`effective`]), and the
//! probe's command line ([`argv`]).
//!
//! Docker's semantics: a spec's empty test inherits the image's; each
//! duration or retry count of 0 inherits the image's, then Docker's default
//! (interval 30 s, timeout 30 s, start period 0, retries 3); a test of
//! `["NONE"]`, or no test anywhere, is no healthcheck. Shoal's own bounds
//! (a probe holds one of few probe slots, and the check travels in a
//! container label of at most 4 KiB) are the `*_MAX` constants below; an
//! image's values past them are clamped, a spec's are refused.

use crate::types::HealthConfig;

/// Docker's default time between two probes.
pub const INTERVAL_NS_DEFAULT: u64 = 30_000_000_000;
/// Docker's default time a probe may take.
pub const TIMEOUT_NS_DEFAULT: u64 = 30_000_000_000;
/// Docker's default consecutive failures that make a container unhealthy.
pub const RETRIES_DEFAULT: u64 = 3;
/// swarmkit's smallest duration other than 0 (which inherits).
pub const DURATION_NS_MIN: u64 = 1_000_000;
/// Longest interval and start period.
pub const DURATION_NS_MAX: u64 = 24 * 3_600 * 1_000_000_000;
/// Longest time one probe may take (it holds a probe slot meanwhile).
pub const TIMEOUT_NS_MAX: u64 = 600 * 1_000_000_000;
/// Most retries.
pub const RETRIES_MAX: u64 = 1_000;
/// Bytes of a test's strings together (the check is kept in a container label).
pub const TEST_BYTES_MAX: usize = 1_024;

/// The first word of a test: run the rest as a command line.
pub const TEST_CMD: &str = "CMD";
/// The first word of a test: run the second as `/bin/sh -c COMMAND`.
pub const TEST_CMD_SHELL: &str = "CMD-SHELL";
/// The only word of a test that turns the image's check off.
pub const TEST_NONE: &str = "NONE";

/// What is wrong with a spec's healthcheck.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("invalid healthcheck test {0:?}: use [\"CMD\", ARG...], [\"CMD-SHELL\", COMMAND] or [\"NONE\"]")]
    Test(Vec<String>),
    #[error("healthcheck test is {0} bytes: at most {TEST_BYTES_MAX} are supported")]
    TestTooLong(usize),
    #[error("healthcheck test contains a NUL byte")]
    Nul,
    #[error("healthcheck {what} {ns} ns is below the minimum of 1ms (0 inherits the image's)")]
    TooShort { what: &'static str, ns: u64 },
    #[error("healthcheck {what} {ns} ns is above the maximum of {max_s} s")]
    TooLong { what: &'static str, ns: u64, max_s: u64 },
    #[error("healthcheck retries {0} is above the maximum of {RETRIES_MAX}")]
    Retries(u64),
}

/// Checks a service spec's healthcheck (swarmkit's rules plus Shoal's bounds).
pub fn validate(h: &HealthConfig) -> Result<(), HealthError> {
    let bytes: usize = h.test.iter().map(String::len).sum();
    if bytes > TEST_BYTES_MAX {
        return Err(HealthError::TestTooLong(bytes));
    }
    if h.test.iter().any(|s| s.contains('\0')) {
        return Err(HealthError::Nul);
    }
    let well_formed = match h.test.first().map(String::as_str) {
        None => true,
        Some(TEST_NONE) => h.test.len() == 1,
        Some(TEST_CMD) => h.test.get(1).is_some_and(|a| !a.is_empty()),
        Some(TEST_CMD_SHELL) => h.test.len() == 2 && !h.test[1].trim().is_empty(),
        Some(_) => false,
    };
    if !well_formed {
        return Err(HealthError::Test(h.test.clone()));
    }
    for (what, ns, max) in [
        ("interval", h.interval_ns, DURATION_NS_MAX),
        ("timeout", h.timeout_ns, TIMEOUT_NS_MAX),
        ("start period", h.start_period_ns, DURATION_NS_MAX),
    ] {
        if ns != 0 && ns < DURATION_NS_MIN {
            return Err(HealthError::TooShort { what, ns });
        }
        if ns > max {
            return Err(HealthError::TooLong { what, ns, max_s: max / 1_000_000_000 });
        }
    }
    if h.retries > RETRIES_MAX {
        return Err(HealthError::Retries(h.retries));
    }
    Ok(())
}

/// The check a task's container runs: the spec's merged with the image's
/// (Docker's merge, then Docker's defaults), every field decided and within
/// Shoal's bounds; `None`: no healthcheck (none anywhere, `["NONE"]`, or a
/// test no probe can run).
pub fn effective(spec: Option<&HealthConfig>, image: Option<&HealthConfig>) -> Option<HealthConfig> {
    let inherit = |own: u64, f: fn(&HealthConfig) -> u64| if own != 0 { own } else { image.map(f).unwrap_or(0) };
    let merged = match (spec, image) {
        (None, None) => return None,
        (None, Some(i)) => i.clone(),
        (Some(s), _) => HealthConfig {
            test: if s.test.is_empty() { image.map(|i| i.test.clone()).unwrap_or_default() } else { s.test.clone() },
            interval_ns: inherit(s.interval_ns, |i| i.interval_ns),
            timeout_ns: inherit(s.timeout_ns, |i| i.timeout_ns),
            start_period_ns: inherit(s.start_period_ns, |i| i.start_period_ns),
            retries: inherit(s.retries, |i| i.retries),
        },
    };
    argv(&merged.test)?;
    let or = |v: u64, default: u64| if v == 0 { default } else { v };
    Some(HealthConfig {
        test: merged.test,
        interval_ns: or(merged.interval_ns, INTERVAL_NS_DEFAULT).clamp(DURATION_NS_MIN, DURATION_NS_MAX),
        timeout_ns: or(merged.timeout_ns, TIMEOUT_NS_DEFAULT).clamp(DURATION_NS_MIN, TIMEOUT_NS_MAX),
        start_period_ns: merged.start_period_ns.min(DURATION_NS_MAX),
        retries: or(merged.retries, RETRIES_DEFAULT).min(RETRIES_MAX),
    })
}

/// The probe's command line for a test: `["CMD", a, b]` runs `a b`,
/// `["CMD-SHELL", s]` runs `/bin/sh -c s` (more words are passed on, as
/// Docker does); `None` for `["NONE"]`, an empty test or an unknown form.
pub fn argv(test: &[String]) -> Option<Vec<String>> {
    let (first, rest) = test.split_first()?;
    let args: Vec<String> = match first.as_str() {
        TEST_CMD => rest.to_vec(),
        TEST_CMD_SHELL => ["/bin/sh", "-c"].iter().map(|s| s.to_string()).chain(rest.iter().cloned()).collect(),
        _ => return None,
    };
    let runnable = match first.as_str() {
        TEST_CMD => rest.first().is_some_and(|a| !a.is_empty()),
        _ => rest.first().is_some_and(|a| !a.trim().is_empty()),
    };
    runnable.then_some(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(test: &[&str], interval_ns: u64, timeout_ns: u64, start_period_ns: u64, retries: u64) -> HealthConfig {
        HealthConfig { test: test.iter().map(|s| s.to_string()).collect(), interval_ns, timeout_ns, start_period_ns, retries }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn docker_merge_then_defaults() {
        let image = hc(&["CMD", "/check"], 5 * S, 0, 2 * S, 7);
        // Nothing anywhere: no check.
        assert_eq!(effective(None, None), None);
        // The image's alone, its zeros from Docker's defaults.
        assert_eq!(effective(None, Some(&image)), Some(hc(&["CMD", "/check"], 5 * S, 30 * S, 2 * S, 7)));
        // A spec with only durations keeps the image's test; its zeros inherit the image's.
        let spec = hc(&[], S, 0, 0, 2);
        assert_eq!(effective(Some(&spec), Some(&image)), Some(hc(&["CMD", "/check"], S, 30 * S, 2 * S, 2)));
        // A spec's own test replaces the image's; without an image, Docker's defaults.
        let spec = hc(&["CMD-SHELL", "test -f /ok"], 0, 0, 0, 0);
        assert_eq!(effective(Some(&spec), None), Some(hc(&["CMD-SHELL", "test -f /ok"], 30 * S, 30 * S, 0, 3)));
        assert_eq!(effective(Some(&spec), Some(&image)), Some(hc(&["CMD-SHELL", "test -f /ok"], 5 * S, 30 * S, 2 * S, 7)));
        // NONE turns the image's off; so does an image's NONE a spec does not replace.
        assert_eq!(effective(Some(&hc(&["NONE"], 0, 0, 0, 0)), Some(&image)), None);
        assert_eq!(effective(Some(&hc(&[], S, 0, 0, 0)), Some(&hc(&["NONE"], 0, 0, 0, 0))), None);
        // Durations only, no test anywhere: nothing to run.
        assert_eq!(effective(Some(&hc(&[], S, S, 0, 1)), None), None);
        // An image's values past Shoal's bounds are clamped, and an unknown form is no check.
        let wild = hc(&["CMD", "x"], 1, TIMEOUT_NS_MAX * 2, DURATION_NS_MAX * 2, RETRIES_MAX + 1);
        assert_eq!(effective(None, Some(&wild)), Some(hc(&["CMD", "x"], DURATION_NS_MIN, TIMEOUT_NS_MAX, DURATION_NS_MAX, RETRIES_MAX)));
        assert_eq!(effective(None, Some(&hc(&["CMD-EXEC", "x"], 0, 0, 0, 0))), None);
    }

    #[test]
    fn probe_command_lines() {
        let v = |t: &[&str]| argv(&t.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(v(&["CMD", "/bin/check", "-q"]), Some(vec!["/bin/check".to_string(), "-q".into()]));
        assert_eq!(v(&["CMD-SHELL", "exit 1"]), Some(vec!["/bin/sh".to_string(), "-c".into(), "exit 1".into()]));
        for none in [&[][..], &["NONE"], &["CMD"], &["CMD", ""], &["CMD-SHELL", " "], &["SHELL", "x"]] {
            assert_eq!(v(none), None, "{none:?}");
        }
    }

    #[test]
    fn spec_validation() {
        let ok =
            [hc(&[], 0, 0, 0, 0), hc(&["NONE"], 0, 0, 0, 0), hc(&["CMD", "a", "b"], S, S, 0, 3), hc(&["CMD-SHELL", "exit 0"], 0, 0, S, 0)];
        for h in &ok {
            assert_eq!(validate(h), Ok(()), "{h:?}");
        }
        let msg = |h: HealthConfig| validate(&h).unwrap_err().to_string();
        assert_eq!(
            msg(hc(&["NONE", "x"], 0, 0, 0, 0)),
            "invalid healthcheck test [\"NONE\", \"x\"]: use [\"CMD\", ARG...], [\"CMD-SHELL\", COMMAND] or [\"NONE\"]"
        );
        for bad in [&["CMD"][..], &["CMD-SHELL"], &["CMD-SHELL", "a", "b"], &["CMD-SHELL", ""], &["curl", "x"]] {
            assert!(matches!(validate(&hc(bad, 0, 0, 0, 0)), Err(HealthError::Test(_))), "{bad:?}");
        }
        assert_eq!(msg(hc(&[], 999, 0, 0, 0)), "healthcheck interval 999 ns is below the minimum of 1ms (0 inherits the image's)");
        assert_eq!(msg(hc(&[], 0, TIMEOUT_NS_MAX + 1, 0, 0)), "healthcheck timeout 600000000001 ns is above the maximum of 600 s");
        assert_eq!(msg(hc(&[], 0, 0, 0, RETRIES_MAX + 1)), "healthcheck retries 1001 is above the maximum of 1000");
        assert_eq!(msg(hc(&["CMD-SHELL", "a\0b"], 0, 0, 0, 0)), "healthcheck test contains a NUL byte");
        let long = "x".repeat(TEST_BYTES_MAX);
        assert_eq!(msg(hc(&["CMD-SHELL", &long], 0, 0, 0, 0)), "healthcheck test is 1033 bytes: at most 1024 are supported");
    }
}
