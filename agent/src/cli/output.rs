//! Output shapes shared by the commands: Docker's tables, durations, names,
//! and `--format` (table, json, or a Go template: [`Format`]).

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

/// A list command's `--format`: Docker's default table, `json` (one object
/// per line, Docker's `{{json .}}`), a Go template per row, or `table
/// TEMPLATE` (a header from the row keys, columns split at tabs). Rows are
/// the objects `--format json` prints, so `{{.Name}}` reads the same keys.
pub(crate) enum Format {
    Table,
    Json,
    #[cfg(feature = "templates")]
    Template(super::template::Template),
    #[cfg(feature = "templates")]
    TemplateTable(super::template::Template, Vec<Vec<String>>),
}

impl Format {
    pub(crate) fn parse(f: &str) -> anyhow::Result<Format> {
        match f.trim() {
            "" | "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            _ => Format::template(f),
        }
    }

    #[cfg(feature = "templates")]
    fn template(f: &str) -> anyhow::Result<Format> {
        use super::template::{prepare, split_table, Template};
        let f = prepare(f);
        Ok(match split_table(&f) {
            Some(rest) => Format::TemplateTable(Template::parse(rest)?, Vec::new()),
            None => Format::Template(Template::parse(&f)?),
        })
    }

    #[cfg(not(feature = "templates"))]
    fn template(f: &str) -> anyhow::Result<Format> {
        anyhow::bail!(
            "--format {f:?}: Go templates are not in this build (binaries for {} leave them out to stay under 5 MiB); use table or json",
            std::env::consts::ARCH
        )
    }

    /// Whether the command prints its own default table.
    pub(crate) fn is_table(&self) -> bool {
        matches!(self, Format::Table)
    }

    /// One row: printed now (json, template) or kept (a template table).
    pub(crate) fn row(&mut self, v: &serde_json::Value) -> anyhow::Result<()> {
        match self {
            Format::Table => {}
            Format::Json => println!("{v}"),
            #[cfg(feature = "templates")]
            Format::Template(t) => println!("{}", t.render(v)?),
            #[cfg(feature = "templates")]
            Format::TemplateTable(t, rows) => rows.push(t.render(v)?.split('\t').map(str::to_string).collect()),
        }
        Ok(())
    }

    /// Prints a template table (header from the row keys: `CurrentState`
    /// -> `CURRENT STATE`, as Docker's headers).
    pub(crate) fn finish(self, keys: &[&str]) {
        #[cfg(feature = "templates")]
        if let Format::TemplateTable(t, rows) = self {
            let headers: serde_json::Map<String, serde_json::Value> = keys.iter().map(|k| (k.to_string(), header_of(k).into())).collect();
            let header = t.render_header(&headers);
            let mut table = Table { rows: vec![header.split('\t').map(str::to_string).collect()] };
            table.rows.extend(rows);
            print!("{}", table.render());
        }
        #[cfg(not(feature = "templates"))]
        let _ = (self, keys);
    }

    /// `inspect -f`: each object through the template, one per line; `json`
    /// (the default) is the indented array.
    pub(crate) fn inspect(f: &str, objects: &[serde_json::Value]) -> anyhow::Result<()> {
        match Format::parse(f)? {
            Format::Table | Format::Json => println!("{}", pretty_json(&objects)),
            #[cfg(feature = "templates")]
            mut other => {
                for o in objects {
                    other.row(o)?;
                }
                other.finish(&[]);
            }
        }
        Ok(())
    }
}

/// Docker's column header for a row key: `CurrentState` -> `CURRENT STATE`,
/// `ID` -> `ID`.
#[cfg(feature = "templates")]
pub(crate) fn header_of(key: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if c.is_ascii_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {

    #[cfg(feature = "templates")]
    #[test]
    fn headers_come_from_row_keys_as_dockers() {
        assert_eq!(header_of("CurrentState"), "CURRENT STATE");
        assert_eq!(header_of("ID"), "ID");
        assert_eq!(header_of("EngineVersion"), "ENGINE VERSION");
        assert_eq!(header_of("IPv6"), "IPV6");
    }

    #[test]
    fn formats_parse_or_say_why() {
        assert!(Format::parse("table").unwrap().is_table() && Format::parse("").unwrap().is_table());
        assert!(!Format::parse("json").unwrap().is_table());
        #[cfg(feature = "templates")]
        assert!(Format::parse("{{.Name").err().unwrap().to_string().contains("unclosed action"));
        #[cfg(not(feature = "templates"))]
        assert!(Format::parse("{{.Name}}").err().unwrap().to_string().contains("Go templates are not in this build"));
    }

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
