//! Compose variable interpolation: this module owns the `$VAR` syntax of
//! `docker stack deploy` (Docker's compose v3 `template` package) and its
//! application to every string value of a parsed file (keys are left alone).
//!
//! - `$$` is a literal `$`.
//! - `$VAR` and `${VAR}`, names `[_a-zA-Z][_a-zA-Z0-9]*`: the variable's
//!   value. An unset variable gives "" and the warning `The VAR variable is
//!   not set. Defaulting to a blank string.`, once per name (and at most
//!   [`WARNINGS_MAX`] in the caller's list).
//! - `${VAR:-default}` (unset or empty) and `${VAR-default}` (unset): the
//!   default, as literal text up to the first `}`.
//! - `${VAR:?message}` (unset or empty) and `${VAR?message}` (unset): the
//!   error `required variable VAR is missing a value: message`.
//! - A `$` followed by anything else (`$1`, `${`, `${}`, `${A B}`, `${A:+x}`,
//!   a trailing `$`) is the error `invalid interpolation format for PATH:
//!   "VALUE". You may need to escape any $ with another $.`, VALUE the whole
//!   original string. So is a default or message holding `${` (`${A:-${B}}`,
//!   nesting Docker's template cuts at the first `}`).
//!
//! Unlike Docker's template, `$VAR` is only the name: `$TAG-alpine` is TAG's
//! value then `-alpine` (Docker reads `-alpine` as a default there).
//!
//! PATH is the dotted path of the value: map keys, and list items as their
//! index (`services.web.ports.0`).

use serde_json::Value;

/// Longest string one interpolation may produce.
pub(crate) const INTERPOLATED_BYTES_MAX: usize = 1024 * 1024;
/// Most text all interpolated strings of one file may add up to.
pub(crate) const INTERPOLATED_TOTAL_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Deepest nesting of mappings and lists walked (the YAML reader's limit).
pub(crate) const DEPTH_MAX: usize = 64;
/// Most warnings the caller's list may hold for unset variables to be added.
pub(crate) const WARNINGS_MAX: usize = 100;

/// A value that cannot be interpolated, worded as Docker does where it has
/// the case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InterpError {
    #[error("invalid interpolation format for {path}: {value:?}. You may need to escape any $ with another $.")]
    Format { path: String, value: String },
    #[error("required variable {name} is missing a value{}{message}", if message.is_empty() { "" } else { ": " })]
    Required { name: String, message: String },
    #[error("interpolating {path} gives more than {INTERPOLATED_BYTES_MAX} bytes")]
    TooLong { path: String },
    #[error("interpolated values add up to more than {INTERPOLATED_TOTAL_BYTES_MAX} bytes at {path}")]
    TooMuch { path: String },
    #[error("mappings and lists nest more than {DEPTH_MAX} levels deep at {path}")]
    Depth { path: String },
}

/// Interpolates every string in `value`, in place (see the module's rules).
/// `env` looks a variable up; warnings for unset ones go to `warnings`.
pub(crate) fn interpolate(value: &mut Value, env: &dyn Fn(&str) -> Option<String>, warnings: &mut Vec<String>) -> Result<(), InterpError> {
    let mut walk = Walk { env, warnings, path: String::new(), total_bytes: 0 };
    walk.value(value, 0)
}

struct Walk<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    warnings: &'a mut Vec<String>,
    path: String,
    total_bytes: usize,
}

impl Walk<'_> {
    fn value(&mut self, value: &mut Value, depth: usize) -> Result<(), InterpError> {
        match value {
            Value::String(s) if s.contains('$') => {
                let new = interpolate_str(s, &self.path, self.env, self.warnings)?;
                self.total_bytes = self.total_bytes.saturating_add(new.len());
                if self.total_bytes > INTERPOLATED_TOTAL_BYTES_MAX {
                    return Err(InterpError::TooMuch { path: self.path.clone() });
                }
                *s = new;
            }
            Value::Array(items) => {
                self.check_depth(depth)?;
                for (i, item) in items.iter_mut().enumerate() {
                    let len = self.push(&i.to_string());
                    self.value(item, depth + 1)?;
                    self.path.truncate(len);
                }
            }
            Value::Object(map) => {
                self.check_depth(depth)?;
                for (key, item) in map.iter_mut() {
                    let len = self.push(key);
                    self.value(item, depth + 1)?;
                    self.path.truncate(len);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_depth(&self, depth: usize) -> Result<(), InterpError> {
        if depth >= DEPTH_MAX {
            return Err(InterpError::Depth { path: self.path.clone() });
        }
        Ok(())
    }

    /// Appends a path segment; returns the length to truncate back to.
    fn push(&mut self, segment: &str) -> usize {
        let len = self.path.len();
        if len > 0 {
            self.path.push('.');
        }
        self.path.push_str(segment);
        len
    }
}

/// Interpolates one string; `path` names it in errors.
pub(crate) fn interpolate_str(
    s: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<String, InterpError> {
    let invalid = || InterpError::Format { path: path.to_owned(), value: s.to_owned() };
    let mut out = String::new();
    let mut rest = s;
    while let Some((before, after)) = rest.split_once('$') {
        out.push_str(before);
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let (inner, tail) = braced.split_once('}').ok_or_else(invalid)?;
            let (name, op) = inner.split_at_checked(name_len(inner)).ok_or_else(invalid)?;
            if name.is_empty() {
                return Err(invalid());
            }
            let (colon, op) = op.strip_prefix(':').map_or((false, op), |op| (true, op));
            let found = || (env)(name).filter(|v| !(colon && v.is_empty()));
            if op.is_empty() && !colon {
                out.push_str(&lookup(name, env, warnings));
            } else if let Some(default) = op.strip_prefix('-') {
                if default.contains("${") {
                    return Err(invalid());
                }
                out.push_str(&found().unwrap_or_else(|| default.to_owned()));
            } else if let Some(message) = op.strip_prefix('?') {
                if message.contains("${") {
                    return Err(invalid());
                }
                let value = found().ok_or_else(|| InterpError::Required { name: name.to_owned(), message: message.to_owned() })?;
                out.push_str(&value);
            } else {
                return Err(invalid());
            }
            rest = tail;
        } else {
            let (name, tail) = after.split_at_checked(name_len(after)).ok_or_else(invalid)?;
            if name.is_empty() {
                return Err(invalid());
            }
            out.push_str(&lookup(name, env, warnings));
            rest = tail;
        }
        if out.len() > INTERPOLATED_BYTES_MAX {
            return Err(InterpError::TooLong { path: path.to_owned() });
        }
    }
    out.push_str(rest);
    if out.len() > INTERPOLATED_BYTES_MAX {
        return Err(InterpError::TooLong { path: path.to_owned() });
    }
    Ok(out)
}

/// A variable's value, or "" and a warning when it is unset.
fn lookup(name: &str, env: &dyn Fn(&str) -> Option<String>, warnings: &mut Vec<String>) -> String {
    if let Some(value) = env(name) {
        return value;
    }
    let warning = format!("The {name} variable is not set. Defaulting to a blank string.");
    if warnings.len() < WARNINGS_MAX && !warnings.contains(&warning) {
        warnings.push(warning);
    }
    String::new()
}

/// The length of the variable name `s` starts with (0: none).
fn name_len(s: &str) -> usize {
    let mut len = 0;
    for (i, b) in s.bytes().enumerate() {
        if !(b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())) {
            break;
        }
        len = i + 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".into()),
            "PORT" => Some("8080".into()),
            "EMPTY" => Some(String::new()),
            "_x9" => Some("underscore".into()),
            "TAG" => Some("1.2".into()),
            _ => None,
        }
    }

    fn run(s: &str) -> Result<String, String> {
        let mut warnings = Vec::new();
        interpolate_str(s, "services.web.image", &env, &mut warnings).map_err(|e| e.to_string())
    }

    fn ok(s: &str) -> String {
        run(s).unwrap()
    }

    #[test]
    fn forms() {
        assert_eq!(ok("no variables"), "no variables");
        assert_eq!(ok(""), "");
        assert_eq!(ok("$HOST"), "example.com");
        assert_eq!(ok("${HOST}"), "example.com");
        assert_eq!(ok("$_x9/${_x9}"), "underscore/underscore");
        assert_eq!(ok("$$"), "$");
        assert_eq!(ok("$$HOST $${HOST} $$$HOST"), "$HOST ${HOST} $example.com");
        assert_eq!(ok("http://${HOST:-localhost}:$PORT/x"), "http://example.com:8080/x");
        assert_eq!(ok("http://${NOPE:-localhost}:$PORT/x"), "http://localhost:8080/x");
        assert_eq!(ok("app:$TAG-alpine"), "app:1.2-alpine");
        assert_eq!(ok("$HOST.$PORT"), "example.com.8080");
        assert_eq!(ok("é$HOST€"), "éexample.com€");
        // Defaults: `:-` for unset or empty, `-` for unset only.
        assert_eq!(ok("${EMPTY:-d}"), "d");
        assert_eq!(ok("${EMPTY-d}"), "");
        assert_eq!(ok("${NOPE:-d}"), "d");
        assert_eq!(ok("${NOPE-d}"), "d");
        assert_eq!(ok("${HOST:-d}"), "example.com");
        assert_eq!(ok("${HOST-d}"), "example.com");
        assert_eq!(ok("${NOPE:-}"), "");
        assert_eq!(ok("${NOPE:-a b:c-d?e$f}"), "a b:c-d?e$f");
        // Required: `:?` for unset or empty, `?` for unset only.
        assert_eq!(ok("${HOST:?need it}"), "example.com");
        assert_eq!(ok("${HOST?need it}"), "example.com");
        assert_eq!(ok("${EMPTY?need it}"), "");
    }

    #[test]
    fn errors() {
        let invalid =
            |v: &str| format!("invalid interpolation format for services.web.image: {v:?}. You may need to escape any $ with another $.");
        for bad in ["$1", "a $", "${", "${}", "${A B}", "${A:+x}", "${A:}", "${A", "x${-a}", "$-", "${A:-${B}}", "${A?${B}}", "${é}", "$é"]
        {
            assert_eq!(run(bad), Err(invalid(bad)), "{bad}");
        }
        assert_eq!(
            run("a \"quoted\" $1"),
            Err("invalid interpolation format for services.web.image: \"a \\\"quoted\\\" $1\". You may need to escape any $ with another $.".into())
        );
        assert_eq!(run("${NOPE:?set NOPE first}"), Err("required variable NOPE is missing a value: set NOPE first".into()));
        assert_eq!(run("${EMPTY:?set it}"), Err("required variable EMPTY is missing a value: set it".into()));
        assert_eq!(run("${NOPE?set it}"), Err("required variable NOPE is missing a value: set it".into()));
        assert_eq!(run("${NOPE?}"), Err("required variable NOPE is missing a value".into()));
        assert_eq!(run("${NOPE:?}"), Err("required variable NOPE is missing a value".into()));
        let big = |name: &str| (name == "BIG").then(|| "x".repeat(600 * 1024));
        let mut warnings = Vec::new();
        assert_eq!(interpolate_str("$BIG", "a", &big, &mut warnings).map(|s| s.len()), Ok(600 * 1024));
        assert_eq!(interpolate_str("$BIG$BIG", "a.b", &big, &mut warnings), Err(InterpError::TooLong { path: "a.b".into() }));
        assert_eq!(InterpError::TooLong { path: "a.b".into() }.to_string(), "interpolating a.b gives more than 1048576 bytes");
    }

    #[test]
    fn warnings_once_per_name() {
        let mut warnings = vec!["earlier".to_owned()];
        assert_eq!(interpolate_str("$A ${A} ${B}-$A", "p", &env, &mut warnings).unwrap(), "  -");
        // Defaults and `$$` warn nothing.
        assert_eq!(interpolate_str("${C:-x}${C-y}$$D", "p", &env, &mut warnings).unwrap(), "xy$D");
        assert_eq!(
            warnings,
            [
                "earlier",
                "The A variable is not set. Defaulting to a blank string.",
                "The B variable is not set. Defaulting to a blank string."
            ]
        );
        let mut warnings = Vec::new();
        for i in 0..WARNINGS_MAX + 10 {
            interpolate_str(&format!("$V{i}"), "p", &env, &mut warnings).unwrap();
        }
        assert_eq!(warnings.len(), WARNINGS_MAX);
    }

    #[test]
    fn tree() {
        let mut v = json!({
            "services": {
                "web": {
                    "image": "nginx:${TAG}",
                    "ports": ["$PORT:80", "443:443", 1, null],
                    "replicas": 2,
                    "read_only": true,
                    "labels": {"$HOST": "${HOST}"},
                    "x": null
                }
            },
            "n": 1.5
        });
        let mut warnings = Vec::new();
        interpolate(&mut v, &env, &mut warnings).unwrap();
        assert_eq!(
            v,
            json!({
                "services": {
                    "web": {
                        "image": "nginx:1.2",
                        "ports": ["8080:80", "443:443", 1, null],
                        "replicas": 2,
                        "read_only": true,
                        "labels": {"$HOST": "example.com"},
                        "x": null
                    }
                },
                "n": 1.5
            })
        );
        assert!(warnings.is_empty());
        let mut v = json!({"services": {"web": {"ports": ["80", "${A B}"]}}});
        assert_eq!(
            interpolate(&mut v, &env, &mut warnings).unwrap_err().to_string(),
            "invalid interpolation format for services.web.ports.1: \"${A B}\". You may need to escape any $ with another $."
        );
        let mut v = json!({"services": {"db": {"environment": {"PASSWORD": "${PW:?set PW}"}}}});
        assert_eq!(interpolate(&mut v, &env, &mut warnings).unwrap_err().to_string(), "required variable PW is missing a value: set PW");
        let mut v = json!("$NOPE");
        interpolate(&mut v, &env, &mut warnings).unwrap();
        assert_eq!(v, json!(""));
        assert_eq!(warnings, ["The NOPE variable is not set. Defaulting to a blank string."]);
    }

    #[test]
    fn limits() {
        let mut v = json!("$HOST");
        for _ in 0..DEPTH_MAX {
            v = json!([v]);
        }
        let mut warnings = Vec::new();
        interpolate(&mut v, &env, &mut warnings).unwrap();
        let mut v = json!({ "a": v });
        let e = interpolate(&mut v, &env, &mut warnings).unwrap_err();
        assert_eq!(e.to_string(), format!("mappings and lists nest more than 64 levels deep at a{}", ".0".repeat(DEPTH_MAX - 1)));
        let big = |name: &str| (name == "BIG").then(|| "x".repeat(1024 * 1024));
        let mut v = json!(vec!["$BIG"; 65]);
        assert_eq!(
            interpolate(&mut v, &big, &mut warnings).unwrap_err().to_string(),
            "interpolated values add up to more than 67108864 bytes at 64"
        );
    }

    #[test]
    fn random_strings_do_not_panic() {
        let alphabet = ['$', '{', '}', ':', '-', '?', 'A', 'H', 'O', 'S', 'T', '_', '1', ' ', 'é', '+'];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut warnings = Vec::new();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bits = state;
            let s: String = (0..12)
                .map(|_| {
                    let c = alphabet[(bits % 16) as usize];
                    bits /= 16;
                    c
                })
                .take((state >> 60) as usize)
                .collect();
            let _ = interpolate_str(&s, "p", &env, &mut warnings);
        }
    }
}
