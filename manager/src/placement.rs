//! Placement constraints and preferences: the one parser from Swarm's
//! strings to typed values.
//!
//! `Placement` keeps Swarm's API form, which is also what the log and
//! snapshots store: constraints as expressions (`node.labels.zone==edge`),
//! preferences as spread descriptors (`node.labels.zone`). Nothing but this
//! module reads those strings:
//!
//! - [`ValidPlacement::parse`] turns a whole `Placement` into a
//!   [`ValidPlacement`] (typed [`Constraint`]s and [`Spread`]s) or the
//!   [`PlacementError`] of its first bad entry. Its fields are private, so a
//!   `ValidPlacement` exists only when everything parsed: it cannot hold a
//!   constraint or preference that did not;
//! - control's validation ([`crate::control::validate_spec`], on create and
//!   update) parses every spec and refuses a bad one with the error's text;
//! - the scheduler ([`crate::scheduler::eligible`], its placement groups)
//!   and the orchestrator (global services, the constraint enforcer) take a
//!   `ValidPlacement`, parsed once per group or service version.
//!
//! A stored placement that does not parse got past no control of this
//! version (an older or a newer manager wrote it). It is not weakened into
//! something that does: the scheduler leaves its tasks `Pending` with the
//! parse error, and the orchestrator neither places nor stops tasks for it
//! (as swarmkit's enforcer keeps a task whose constraints it cannot parse).

use shoal_shared::types::{Node, NodeRole, Placement};

/// A node attribute, as constraints and spread preferences name it. The
/// names compare case-insensitively, as swarmkit's; label keys do not.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attr {
    Id,
    Hostname,
    Role,
    Os,
    Arch,
    NodeLabel(String),
    EngineLabel(String),
}

/// The attribute names, for error messages.
const ATTRS_ACCEPTED: &str =
    "node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY";

impl Attr {
    fn parse(key: &str) -> Option<Attr> {
        let label = |prefix: &str| {
            let head = key.get(..prefix.len())?;
            let rest = &key[prefix.len()..];
            (head.eq_ignore_ascii_case(prefix) && !rest.is_empty()).then(|| rest.to_string())
        };
        let fixed = [
            ("node.id", Attr::Id),
            ("node.hostname", Attr::Hostname),
            ("node.role", Attr::Role),
            ("node.platform.os", Attr::Os),
            ("node.platform.arch", Attr::Arch),
        ];
        for (name, attr) in fixed {
            if key.eq_ignore_ascii_case(name) {
                return Some(attr);
            }
        }
        if let Some(l) = label("node.labels.") {
            return Some(Attr::NodeLabel(l));
        }
        label("engine.labels.").map(Attr::EngineLabel)
    }

    /// The node's value, `None` when it lacks the label.
    fn value<'n>(&self, node: &'n Node) -> Option<&'n str> {
        match self {
            Attr::Id => Some(&node.id),
            Attr::Hostname => Some(&node.description.hostname),
            Attr::Role => Some(match node.role {
                NodeRole::Manager => "manager",
                NodeRole::Worker => "worker",
            }),
            Attr::Os => Some(&node.description.platform.os),
            Attr::Arch => Some(&node.description.platform.architecture),
            Attr::NodeLabel(l) => node.labels.get(l).map(String::as_str),
            Attr::EngineLabel(l) => node.description.engine_labels.get(l).map(String::as_str),
        }
    }
}

/// A parsed placement constraint (`node.labels.zone==edge`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub key: String,
    pub equal: bool,
    pub value: String,
    attr: Attr,
}

/// Errors in constraint expressions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("invalid constraint {0:?}: expected KEY==VALUE or KEY!=VALUE")]
    Syntax(String),
    #[error("invalid constraint key {0:?}: use {ATTRS_ACCEPTED}")]
    Key(String),
}

impl Constraint {
    /// Parses one constraint expression.
    pub fn parse(expr: &str) -> Result<Constraint, ConstraintError> {
        let (key, equal, value) = if let Some((k, v)) = expr.split_once("==") {
            (k, true, v)
        } else if let Some((k, v)) = expr.split_once("!=") {
            (k, false, v)
        } else {
            return Err(ConstraintError::Syntax(expr.to_string()));
        };
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() || value.is_empty() {
            return Err(ConstraintError::Syntax(expr.to_string()));
        }
        let attr = Attr::parse(key).ok_or_else(|| ConstraintError::Key(key.to_string()))?;
        Ok(Constraint { key: key.to_string(), equal, value: value.to_string(), attr })
    }

    /// Whether `node` satisfies the constraint (values compare case-insensitively, as Swarm's).
    pub fn matches(&self, node: &Node) -> bool {
        let same = self.attr.value(node).is_some_and(|a| a.eq_ignore_ascii_case(&self.value));
        same == self.equal
    }
}

/// A spread placement preference: tasks spread evenly over the values a
/// node attribute takes (`--placement-pref spread=node.labels.zone`).
/// `Placement.preferences` stores the descriptor (`node.labels.zone`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spread {
    pub descriptor: String,
    attr: Attr,
}

/// Errors in placement preferences.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreferenceError {
    #[error("invalid placement preference {0:?}: use spread=node.labels.KEY (or spread=engine.labels.KEY)")]
    Syntax(String),
    #[error("unsupported placement preference {0:?}: only spread is supported, e.g. spread=node.labels.zone")]
    Strategy(String),
    #[error("invalid spread descriptor {0:?}: use {ATTRS_ACCEPTED}")]
    Descriptor(String),
}

impl Spread {
    /// Parses a flag value, `spread=DESCRIPTOR` (Docker's `--placement-pref`).
    pub fn parse_pref(pref: &str) -> Result<Spread, PreferenceError> {
        let Some((strategy, descriptor)) = pref.split_once('=') else {
            return Err(PreferenceError::Syntax(pref.to_string()));
        };
        if strategy.is_empty() || descriptor.is_empty() || descriptor.contains('=') {
            return Err(PreferenceError::Syntax(pref.to_string()));
        }
        if strategy != "spread" {
            return Err(PreferenceError::Strategy(pref.to_string()));
        }
        Spread::parse(descriptor)
    }

    /// The node's value of the descriptor, `None` when it lacks the label.
    pub fn value<'n>(&self, node: &'n Node) -> Option<&'n str> {
        self.attr.value(node)
    }

    /// Parses a stored descriptor (`node.labels.zone`).
    pub fn parse(descriptor: &str) -> Result<Spread, PreferenceError> {
        let bad = descriptor.is_empty() || descriptor.contains(['=', ' ', '\t', '\n']);
        match Attr::parse(descriptor) {
            Some(attr) if !bad => Ok(Spread { descriptor: descriptor.to_string(), attr }),
            _ => Err(PreferenceError::Descriptor(descriptor.to_string())),
        }
    }
}

/// A placement that did not parse: its first bad constraint or preference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(transparent)]
    Constraint(#[from] ConstraintError),
    #[error(transparent)]
    Preference(#[from] PreferenceError),
}

/// A placement whose constraints and preferences all parsed; built only by
/// [`ValidPlacement::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidPlacement<'p> {
    placement: &'p Placement,
    constraints: Vec<Constraint>,
    /// Outermost first.
    spreads: Vec<Spread>,
}

impl<'p> ValidPlacement<'p> {
    /// Parses every constraint and spread descriptor of `placement`.
    pub fn parse(placement: &'p Placement) -> Result<ValidPlacement<'p>, PlacementError> {
        let constraints = placement.constraints.iter().map(|c| Constraint::parse(c)).collect::<Result<_, _>>()?;
        let spreads = placement.preferences.iter().map(|d| Spread::parse(d)).collect::<Result<_, _>>()?;
        Ok(ValidPlacement { placement, constraints, spreads })
    }

    /// The placement this was parsed from (platforms, max replicas).
    pub fn placement(&self) -> &'p Placement {
        self.placement
    }

    /// Whether `node` satisfies every constraint.
    pub fn constraints_match(&self, node: &Node) -> bool {
        self.constraints.iter().all(|c| c.matches(node))
    }

    /// The spread preferences, outermost first.
    pub fn spreads(&self) -> &[Spread] {
        &self.spreads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::node;

    #[test]
    fn constraints_parse_and_match() {
        assert!(Constraint::parse("node.role!=manager").is_ok());
        assert_eq!(Constraint::parse("node.role=manager"), Err(ConstraintError::Syntax("node.role=manager".into())));
        assert!(matches!(Constraint::parse("node.colour==red"), Err(ConstraintError::Key(_))));
        assert!(matches!(Constraint::parse("node.labels.==red"), Err(ConstraintError::Key(_))));
        let n = node("a", "linux/arm64");
        assert!(Constraint::parse("node.platform.arch==arm64").unwrap().matches(&n));
        assert!(Constraint::parse("node.role!=manager").unwrap().matches(&n));
        assert!(Constraint::parse("Node.Role==worker").unwrap().matches(&n), "attribute names ignore case, as swarmkit's");
        assert!(!Constraint::parse("node.labels.zone==x").unwrap().matches(&n));
        assert!(Constraint::parse("node.labels.zone!=x").unwrap().matches(&n));
    }

    #[test]
    fn placement_preferences_parse() {
        let syntax = "use spread=node.labels.KEY (or spread=engine.labels.KEY)";
        let descriptor = format!("use {ATTRS_ACCEPTED}");
        let descriptor = descriptor.as_str();
        let strategy = "only spread is supported, e.g. spread=node.labels.zone";
        for (input, expect) in [
            ("spread=node.labels.zone", Ok("node.labels.zone")),
            ("spread=engine.labels.disk", Ok("engine.labels.disk")),
            ("spread=Node.Labels.zone", Ok("Node.Labels.zone")),
            ("spread=node.hostname", Ok("node.hostname")),
            ("spread=node.platform.arch", Ok("node.platform.arch")),
            ("spread=node.labels.", Err(descriptor)),
            ("spread=node.colour", Err(descriptor)),
            ("spread=zone", Err(descriptor)),
            ("spread=node.labels.a b", Err(descriptor)),
            ("spread=", Err(syntax)),
            ("spread=node.labels.zone=a", Err(syntax)),
            ("node.labels.zone", Err(syntax)),
            ("=node.labels.zone", Err(syntax)),
            ("binpack=node.labels.zone", Err(strategy)),
        ] {
            let got = Spread::parse_pref(input).map(|s| s.descriptor);
            match (got, expect) {
                (Ok(d), Ok(want)) => assert_eq!(d, want, "{input}"),
                (Err(e), Err(want)) => assert!(e.to_string().ends_with(want), "{input}: {e}"),
                (got, _) => panic!("{input}: got {got:?}, want {expect:?}"),
            }
        }
        assert_eq!(
            Spread::parse_pref("spread=node.colour").unwrap_err().to_string(),
            "invalid spread descriptor \"node.colour\": use node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY"
        );
        assert_eq!(Spread::parse("node.labels.zone").map(|s| s.descriptor), Ok("node.labels.zone".to_string()));
    }

    #[test]
    fn a_placement_is_valid_only_when_everything_parses() {
        let p = |constraints: &[&str], preferences: &[&str]| Placement {
            constraints: constraints.iter().map(|c| c.to_string()).collect(),
            preferences: preferences.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        let good = p(&["node.role==worker", "node.labels.zone!=x"], &["node.labels.zone"]);
        let v = ValidPlacement::parse(&good).unwrap();
        assert_eq!(v.placement(), &good);
        assert_eq!(v.spreads().iter().map(|s| s.descriptor.as_str()).collect::<Vec<_>>(), ["node.labels.zone"]);
        assert!(v.constraints_match(&node("a", "linux/amd64")));
        // One bad entry anywhere and there is no `ValidPlacement`: only the error.
        let bad = p(&["node.role==worker", "node.role=manager"], &["node.labels.zone"]);
        assert_eq!(ValidPlacement::parse(&bad), Err(PlacementError::Constraint(ConstraintError::Syntax("node.role=manager".into()))));
        let bad = p(&["node.role==worker"], &["node.labels.zone", "node.colour"]);
        let e = ValidPlacement::parse(&bad).unwrap_err();
        assert_eq!(e, PlacementError::Preference(PreferenceError::Descriptor("node.colour".into())));
        assert_eq!(e.to_string(), format!("invalid spread descriptor \"node.colour\": use {ATTRS_ACCEPTED}"), "the parser's own text");
    }
}
