//! `--health-*` and `--no-healthcheck` of `service create` and `service
//! update` (Docker's flags and merge rules), and how `service inspect` shows
//! a spec's healthcheck (Docker's JSON and `--pretty` lines).
//!
//! The spec keeps what the flags say; 0 and an empty test inherit the
//! image's `HEALTHCHECK`, then Docker's defaults, when a task starts
//! (`shoal_shared::health::effective`). The manager checks the bounds.

use super::parse;
use anyhow::bail;
use clap::Args;
use serde_json::{json, Map, Value};
use shoal_shared::health::{TEST_CMD_SHELL, TEST_NONE};
use shoal_shared::types::HealthConfig;

/// Docker's healthcheck flags.
#[derive(Args, Debug, Default)]
pub(crate) struct HealthArgs {
    /// Command to run to check health (run as /bin/sh -c CMD in the container).
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 30s).
    #[arg(long, value_parser = parse::duration_ns)]
    health_interval: Option<u64>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 30s).
    #[arg(long, value_parser = parse::duration_ns)]
    health_timeout: Option<u64>,
    /// Start period for the container to initialize before counting retries towards unstable (ms|s|m|h) (default 0s).
    #[arg(long, value_parser = parse::duration_ns)]
    health_start_period: Option<u64>,
    /// Consecutive failures needed to report unhealthy (default 3).
    #[arg(long)]
    health_retries: Option<u64>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    no_healthcheck: bool,
}

impl HealthArgs {
    fn any_health(&self) -> bool {
        self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_start_period.is_some()
            || self.health_retries.is_some()
    }

    /// Applies the flags to a spec's healthcheck as Docker's `service
    /// update` does (`service create` starts from none): `--no-healthcheck`
    /// alone sets `["NONE"]`; otherwise the given fields replace the
    /// current ones (a `NONE` test is dropped first, so the image's check
    /// is back unless `--health-cmd` gives one; an empty `--health-cmd`
    /// inherits the image's). No flag changes nothing.
    pub(crate) fn apply(&self, hc: &mut Option<HealthConfig>) -> anyhow::Result<()> {
        if self.no_healthcheck {
            if self.any_health() {
                bail!("--no-healthcheck conflicts with --health-* options");
            }
            *hc = Some(HealthConfig { test: vec![TEST_NONE.into()], ..Default::default() });
            return Ok(());
        }
        if !self.any_health() {
            return Ok(());
        }
        let had = hc.is_some();
        let h = hc.get_or_insert_with(HealthConfig::default);
        if h.test.first().is_some_and(|t| t == TEST_NONE) {
            h.test.clear();
        }
        for (flag, field) in [
            (self.health_interval, &mut h.interval_ns),
            (self.health_timeout, &mut h.timeout_ns),
            (self.health_start_period, &mut h.start_period_ns),
            (self.health_retries, &mut h.retries),
        ] {
            if let Some(v) = flag {
                *field = v;
            }
        }
        if let Some(cmd) = &self.health_cmd {
            h.test = if cmd.is_empty() { Vec::new() } else { vec![TEST_CMD_SHELL.into(), cmd.clone()] };
        }
        // Flags that all say "inherit" on a spec that had none: still none (Docker's create).
        if !had && *h == HealthConfig::default() {
            *hc = None;
        }
        Ok(())
    }
}

/// `ContainerSpec.Healthcheck` as Docker's JSON has it (zero fields omitted).
pub(crate) fn json(h: &HealthConfig) -> Value {
    let mut m = Map::new();
    if !h.test.is_empty() {
        m.insert("Test".into(), json!(h.test));
    }
    for (k, v) in [("Interval", h.interval_ns), ("Timeout", h.timeout_ns), ("StartPeriod", h.start_period_ns), ("Retries", h.retries)] {
        if v != 0 {
            m.insert(k.into(), json!(v));
        }
    }
    Value::Object(m)
}

/// `service inspect --pretty`'s healthcheck lines (Docker's).
pub(crate) fn pretty(h: &HealthConfig) -> String {
    let mut out = format!(
        " Healthcheck:\n  Interval = {}\n  Retries = {}\n  StartPeriod =\t{}\n  Timeout =\t{}\n",
        go_duration(h.interval_ns),
        h.retries,
        go_duration(h.start_period_ns),
        go_duration(h.timeout_ns)
    );
    if !h.test.is_empty() {
        out.push_str("  Tests:\n");
        for t in &h.test {
            out.push_str(&format!("\t Test = {t}\n"));
        }
    }
    out
}

/// A duration as Go's `time.Duration` prints it: `0s`, `500ms`, `1.5s`, `1m30s`, `2h0m0s`.
fn go_duration(ns: u64) -> String {
    /// `v` in `unit`s, with the fraction's trailing zeros dropped.
    fn decimal(v: u64, unit: u64) -> String {
        let (whole, rem) = (v / unit, v % unit);
        if rem == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        format!("{whole}.{}", format!("{rem:0digits$}").trim_end_matches('0'))
    }
    const S: u64 = 1_000_000_000;
    match ns {
        0 => "0s".into(),
        1..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}µs", decimal(ns, 1_000)),
        1_000_000..S => format!("{}ms", decimal(ns, 1_000_000)),
        _ => {
            let (h, m, secs) = (ns / (3_600 * S), ns / (60 * S) % 60, decimal(ns % (60 * S), S));
            match (h, m) {
                (0, 0) => format!("{secs}s"),
                (0, _) => format!("{m}m{secs}s"),
                _ => format!("{h}h{m}m{secs}s"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: HealthArgs,
    }

    fn applied(args: &[&str], current: Option<HealthConfig>) -> anyhow::Result<Option<HealthConfig>> {
        let a = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map_err(|e| anyhow::anyhow!("{e}"))?.a;
        let mut hc = current;
        a.apply(&mut hc)?;
        Ok(hc)
    }

    fn hc(test: &[&str], interval_ns: u64, retries: u64) -> HealthConfig {
        HealthConfig { test: test.iter().map(|s| s.to_string()).collect(), interval_ns, retries, ..Default::default() }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn create_flags_like_dockers() {
        assert_eq!(applied(&[], None).unwrap(), None);
        assert_eq!(
            applied(&["--health-cmd", "test -f /ok", "--health-interval", "1s", "--health-retries", "2"], None).unwrap(),
            Some(hc(&["CMD-SHELL", "test -f /ok"], S, 2))
        );
        let all = applied(&["--health-timeout", "3s", "--health-start-period", "1m30s"], None).unwrap().unwrap();
        assert_eq!((all.test.len(), all.timeout_ns, all.start_period_ns), (0, 3 * S, 90 * S), "the image's test, these durations");
        assert_eq!(applied(&["--no-healthcheck"], None).unwrap(), Some(hc(&["NONE"], 0, 0)));
        assert_eq!(
            applied(&["--no-healthcheck", "--health-retries", "1"], None).unwrap_err().to_string(),
            "--no-healthcheck conflicts with --health-* options"
        );
        assert_eq!(applied(&["--health-cmd", ""], None).unwrap(), None, "only inherits: none, as Docker's create");
        assert!(applied(&["--health-interval", "soon"], None).unwrap_err().to_string().contains("invalid duration \"soon\""));
        assert!(applied(&["--health-retries", "-1"], None).is_err());
    }

    #[test]
    fn update_merges_into_the_current_check() {
        let cur = Some(HealthConfig { timeout_ns: 5 * S, ..hc(&["CMD-SHELL", "a"], S, 2) });
        assert_eq!(applied(&[], cur.clone()).unwrap(), cur, "no flag, no change");
        assert_eq!(
            applied(&["--health-retries", "5"], cur.clone()).unwrap(),
            Some(HealthConfig { timeout_ns: 5 * S, ..hc(&["CMD-SHELL", "a"], S, 5) })
        );
        assert_eq!(applied(&["--health-cmd", "b"], cur.clone()).unwrap().unwrap().test, ["CMD-SHELL", "b"]);
        assert_eq!(applied(&["--health-cmd", ""], cur.clone()).unwrap().unwrap().test, Vec::<String>::new(), "the image's again");
        assert_eq!(applied(&["--no-healthcheck"], cur).unwrap(), Some(hc(&["NONE"], 0, 0)));
        // Off, then a duration: the NONE goes, the image's check is back with it.
        assert_eq!(applied(&["--health-interval", "2s"], Some(hc(&["NONE"], 0, 0))).unwrap(), Some(hc(&[], 2 * S, 0)));
    }

    #[test]
    fn shown_like_docker() {
        let h = HealthConfig { timeout_ns: 0, start_period_ns: 1_500_000_000, ..hc(&["CMD-SHELL", "exit 1"], S, 2) };
        assert_eq!(
            json(&h),
            json!({"Test": ["CMD-SHELL", "exit 1"], "Interval": 1_000_000_000u64, "StartPeriod": 1_500_000_000u64, "Retries": 2})
        );
        assert_eq!(json(&HealthConfig::default()), json!({}));
        assert_eq!(
            pretty(&h),
            " Healthcheck:\n  Interval = 1s\n  Retries = 2\n  StartPeriod =\t1.5s\n  Timeout =\t0s\n  Tests:\n\t Test = CMD-SHELL\n\t Test = exit 1\n"
        );
        let d: Vec<String> =
            [0, 999, 1_500, 250_000_000, 90 * S, 3_600 * S, 3_723 * S + 500_000_000].into_iter().map(go_duration).collect();
        assert_eq!(d, ["0s", "999ns", "1.5µs", "250ms", "1m30s", "1h0m0s", "1h2m3.5s"]);
    }
}
