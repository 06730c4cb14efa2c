//! `--filter KEY=VALUE` as Docker's list commands take it: values of one key
//! are ORed, different keys ANDed; a key the command does not know is an
//! error naming the ones it does. Evaluated in the CLI over what the daemon
//! listed (lists are bounded by the daemon's reply limit).

use anyhow::bail;
use std::collections::BTreeMap;

/// Parsed filters of one command.
#[derive(Debug, Default)]
pub(crate) struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `KEY=VALUE` arguments, refusing keys outside `allowed`.
    pub(crate) fn parse(args: &[String], allowed: &[&str]) -> anyhow::Result<Filters> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                bail!("bad format of filter '{a}' (expected name=value)");
            };
            let k = k.trim().to_ascii_lowercase();
            if !allowed.contains(&k.as_str()) {
                bail!("invalid filter '{k}': use {}", or_list(allowed));
            }
            map.entry(k).or_default().push(v.to_string());
        }
        Ok(Filters(map))
    }

    /// Whether every key has a value that `hit(key, value)` accepts.
    pub(crate) fn matches(&self, hit: impl Fn(&str, &str) -> bool) -> bool {
        self.0.iter().all(|(k, values)| values.iter().any(|v| hit(k, v)))
    }

    /// The values given for `key` (for checks that need them all, e.g. enums).
    pub(crate) fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }
}

/// `label=KEY` (present) or `label=KEY=VALUE` (equal).
pub(crate) fn label_matches(labels: &BTreeMap<String, String>, v: &str) -> bool {
    match v.split_once('=') {
        Some((k, want)) => labels.get(k).is_some_and(|x| x == want),
        None => labels.contains_key(v),
    }
}

/// Refuses values of `key` outside `allowed` (Docker: `invalid filter
/// 'mode=x'`), so a typo is not an empty list.
pub(crate) fn check_values(f: &Filters, key: &str, allowed: &[&str]) -> anyhow::Result<()> {
    for v in f.values(key) {
        if !allowed.contains(&v.as_str()) {
            bail!("invalid filter '{key}={v}': use {}", or_list(allowed));
        }
    }
    Ok(())
}

fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(args: &[&str]) -> anyhow::Result<Filters> {
        Filters::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), &["name", "label", "mode"])
    }

    #[test]
    fn one_key_ors_and_keys_and() {
        let fl = f(&["name=web", "name=db", "mode=global"]).unwrap();
        let svc = |name: &str, mode: &str| fl.matches(|k, v| if k == "name" { name.starts_with(v) } else { mode == v });
        assert!(svc("web1", "global") && svc("db", "global"));
        assert!(!svc("web1", "replicated") && !svc("cache", "global"));
        assert!(f(&[]).unwrap().matches(|_, _| false), "no filter keeps everything");
    }

    #[test]
    fn bad_filters_are_refused_with_what_is_allowed() {
        assert_eq!(f(&["nmae=web"]).unwrap_err().to_string(), "invalid filter 'nmae': use name, label or mode");
        assert_eq!(f(&["name"]).unwrap_err().to_string(), "bad format of filter 'name' (expected name=value)");
        let fl = f(&["mode=globl"]).unwrap();
        assert_eq!(
            check_values(&fl, "mode", &["replicated", "global"]).unwrap_err().to_string(),
            "invalid filter 'mode=globl': use replicated or global"
        );
    }

    #[test]
    fn labels_match_by_key_or_pair() {
        let labels: BTreeMap<String, String> = [("zone".to_string(), "edge".to_string())].into();
        assert!(label_matches(&labels, "zone") && label_matches(&labels, "zone=edge"));
        assert!(!label_matches(&labels, "zone=core") && !label_matches(&labels, "site"));
        assert!(label_matches(&[("k".to_string(), "a=b".to_string())].into(), "k=a=b"));
    }
}
