//! Output shapes shared by the commands: Docker's tables, durations, names.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A table laid out like Docker's tabwriter (min width 10, padding 3).
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|s| s.to_string()).collect()] }
    }

    /// Appends a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders every row, columns padded, trailing spaces trimmed.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut widths = vec![0usize; cols];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max((c.chars().count() + 3).max(10));
            }
        }
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    line.push_str(&" ".repeat(widths[i] - c.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Docker's `units.HumanDuration`.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 1 {
        return "Less than a second".into();
    }
    if seconds == 1 {
        return "1 second".into();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", d.as_secs() / 3600 / 24 / 365)
}

/// "8 seconds ago" for a Unix-nanosecond timestamp.
pub fn ago(unix_nanos: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{} ago", human_duration(Duration::from_nanos(now.saturating_sub(unix_nanos))).to_lowercase())
}

/// RFC 3339 with nanoseconds, as Swarm's `CreatedAt`.
pub fn rfc3339(unix_nanos: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(unix_nanos)).to_string()
}

/// An image reference without its `@sha256:` pin, as Docker shows it.
pub fn image_shown(image: &str) -> &str {
    image.split('@').next().unwrap_or(image)
}

/// Truncates to `n` characters with an ellipsis.
pub fn trunc(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

/// `inspect`'s JSON as Docker prints it: indented by four spaces.
pub fn pretty_json(v: &impl serde::Serialize) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    // Writing a Value into a Vec cannot fail.
    let _ = v.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// A float32 as Go's JSON encoder writes it: `0`, `1`, `0.2` (serde_json
/// writes `0.0` for whole numbers, and `0.20000000298023224` for a widened
/// `0.2f32`: the shortest f32 text is parsed back as f64 instead).
pub fn go_float(f: f32) -> serde_json::Value {
    let f: f64 = f.to_string().parse().unwrap_or(0.0);
    if f.fract() == 0.0 && f.abs() < 1e15 {
        serde_json::Value::from(f as i64)
    } else {
        serde_json::Value::from(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        let s = |n| human_duration(Duration::from_secs(n));
        assert_eq!(human_duration(Duration::from_millis(300)), "Less than a second");
        assert_eq!(s(1), "1 second");
        assert_eq!(s(8), "8 seconds");
        assert_eq!(s(90), "About a minute");
        assert_eq!(s(38 * 60), "38 minutes");
        assert_eq!(s(3600), "About an hour");
        assert_eq!(s(5 * 3600), "5 hours");
        assert_eq!(s(3 * 86400), "3 days");
    }

    #[test]
    fn table_matches_docker_geometry() {
        let mut t = Table::new(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
        t.row(vec!["9hichqa9bvxp".into(), "redis-swarm".into(), "replicated".into(), "1/1".into(), "redis:latest".into(), "".into()]);
        let want = "ID             NAME          MODE         REPLICAS   IMAGE          PORTS\n9hichqa9bvxp   redis-swarm   replicated   1/1        redis:latest\n";
        assert_eq!(t.render(), want);
    }
}
