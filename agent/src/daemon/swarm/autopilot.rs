//! The autopilot's shell (issue #20): on the leader, every pass, it gathers
//! the facts [`shoal_manager::autopilot::plan`] decides from (roles, raft
//! membership and catch-up, which nodes this leader has a link to, since
//! when not, flaps), carries out the one promotion or demotion it returns
//! through the path `node promote|demote` takes, logs each change and each
//! new reason to wait, and keeps the status `shoal info` and `node ls|inspect`
//! show. Raft membership then follows the roles ([`super::membership`]).

use super::*;
use shoal_manager::autopilot::{self, Decision, NodeFacts, Raft, Settings, Watch};
use shoal_shared::api::AutopilotStatus;

/// What the autopilot keeps between passes.
#[derive(Default)]
pub(crate) struct Shell {
    /// Reachability clocks and flap history (see [`Watch`]).
    watch: Watch,
    /// Whether this node led at the last pass (a new leadership restarts the clocks).
    led: bool,
    /// The last decision logged, so each is logged once (see [`log_key`]).
    logged: Option<Decision>,
    /// The leader's latest status (None: off, or not the leader).
    pub(crate) status: Option<AutopilotStatus>,
    /// When this node last handed leadership over (mono ms).
    last_handover_ms: Option<u64>,
    /// Nodes said to be flapping, and when (mono ms); bounded by the nodes in the state.
    told_flapping: BTreeMap<String, u64>,
}

impl Daemon {
    /// Leader, every pass: plan, log, act (one change at a time, none while
    /// an internal proposal is in flight).
    pub(crate) fn autopilot_pass(&mut self, now_ms: u64) {
        let leads = self.leads_caught_up();
        let state = self.store.state();
        let Some(settings) = Settings::from_state(&state.autopilot) else {
            self.swarm.autopilot.led = false;
            self.swarm.autopilot.status = None;
            self.swarm.autopilot.logged = None;
            return;
        };
        // Every manager watches its links (flaps are counted on followers too: a flaky
        // manager that becomes leader sees most others drop out and hands over), but the
        // clocks restart when it starts leading.
        if leads && !self.swarm.autopilot.led {
            self.swarm.autopilot.watch.lead();
        }
        self.swarm.autopilot.led = leads;
        self.swarm.autopilot.watch.set_flaps_per_hour_max(settings.flaps_per_hour_max);
        self.swarm.autopilot.told_flapping.retain(|id, _| state.nodes.contains_key(id));
        let live = self.live_raft_ids();
        // A follower links to the managers only (workers keep a session with the leader).
        let reach: Vec<(String, bool)> = state
            .nodes
            .values()
            .filter(|n| leads || n.role == NodeRole::Manager)
            .map(|n| (n.id.clone(), live.contains(&raft_id(&n.id))))
            .collect();
        let episodes = self.swarm.autopilot.watch.observe(reach.iter().map(|(id, r)| (id.as_str(), *r)), now_ms);
        for (id, count) in episodes {
            // Said once an hour per node (the count saturates at the bound + 1).
            let told = self.swarm.autopilot.told_flapping.get(&id).is_some_and(|t| now_ms.saturating_sub(*t) < autopilot::FLAP_WINDOW_MS);
            if count > settings.flaps_per_hour_max && !told {
                self.swarm.autopilot.told_flapping.insert(id.clone(), now_ms);
                let name = self.node_name(&id);
                crate::log!("WARN", "autopilot: {name} is flapping: unreachable from here {count} times in the last hour");
            }
        }
        if !leads {
            self.swarm.autopilot.status = None;
            self.swarm.autopilot.logged = None;
            return;
        }
        let status = self.store.raft_status();
        let raft_of = |id: &str| {
            let rid = raft_id(id);
            if status.voters.contains(&rid) {
                Raft::Voter
            } else if status.learners.contains(&rid) {
                let caught_up = status.progress.iter().any(|p| p.id == rid && p.match_index >= status.commit);
                Raft::Learner { caught_up }
            } else {
                Raft::Absent
            }
        };
        let watch = &self.swarm.autopilot.watch;
        let facts: Vec<NodeFacts> =
            state.nodes.values().map(|n| NodeFacts::from_node(n, raft_of(&n.id), watch.unreachable_since_ms(&n.id))).collect();
        let decision = autopilot::plan(&settings, &self.node_id, &facts, watch.flaps(), now_ms);
        let healthy: Vec<String> = facts
            .iter()
            .filter(|f| f.role == NodeRole::Manager && f.raft == Raft::Voter && (f.id == self.node_id || live.contains(&raft_id(&f.id))))
            .map(|f| name_of(&f.hostname, &f.id))
            .collect();
        let eligibility: Vec<(String, Option<String>)> =
            facts.iter().map(|f| (f.id.clone(), autopilot::eligibility(&settings, f, watch.flaps(), now_ms).err())).collect();
        self.swarm.autopilot.status = Some(AutopilotStatus {
            settings: state.autopilot.clone(),
            leader_view: true,
            healthy,
            state: describe(&decision),
            eligibility,
        });
        if self.swarm.pending.settled() && self.hand_over_if_unfit(&settings, &facts, &live, now_ms) {
            return;
        }
        if self.swarm.autopilot.logged.as_ref().map(log_key) != Some(log_key(&decision)) {
            match &decision {
                Decision::Nothing => crate::log!("INFO", "autopilot: {} managers wanted and healthy", settings.managers),
                Decision::Wait { reason } => crate::log!("INFO", "autopilot: waiting: {reason}"),
                Decision::Promote { .. } | Decision::Demote { .. } => {}
            }
        }
        let (node, role, reason) = match &decision {
            Decision::Promote { node, reason } => (node.clone(), NodeRole::Manager, reason.clone()),
            Decision::Demote { node, reason } => (node.clone(), NodeRole::Worker, reason.clone()),
            Decision::Nothing | Decision::Wait { .. } => {
                self.swarm.autopilot.logged = Some(decision);
                return;
            }
        };
        // One change at a time: nothing while a proposal of this leader (an operator's role
        // change included) is in flight.
        let role_change_busy = self
            .swarm
            .role_change
            .is_some_and(|(p, at)| self.store.state().applied_index < p.index && now_ms.saturating_sub(at) < super::WRITE_TIMEOUT_MS);
        if !self.swarm.pending.settled() || role_change_busy {
            return;
        }
        match self.role_change_ops(&node, role) {
            Ok(ops) if !ops.is_empty() => {
                let verb = if role == NodeRole::Manager { "promote" } else { "demote" };
                crate::log!("INFO", "autopilot: {verb} {node}: {reason}");
                self.commit_internal(ops);
            }
            Ok(_) => {}
            Err(e) => {
                if self.swarm.autopilot.logged.as_ref().map(log_key) != Some(log_key(&decision)) {
                    crate::log!("WARN", "autopilot: cannot carry out '{reason}': {e}");
                }
            }
        }
        self.swarm.autopilot.logged = Some(decision);
    }

    /// Leader: hands leadership to a fit manager when this one's disk is slow
    /// or its links flaky ([`autopilot::handover`]); true when it did.
    fn hand_over_if_unfit(&mut self, settings: &Settings, facts: &[NodeFacts], live: &BTreeSet<u64>, now_ms: u64) -> bool {
        let status = self.store.raft_status();
        let flaps = self.swarm.autopilot.watch.flaps();
        let flapping = |id: &str| flaps.count_last_hour(id, now_ms) > settings.flaps_per_hour_max;
        let others: Vec<&NodeFacts> = facts.iter().filter(|f| f.raft == Raft::Voter && f.id != self.node_id).collect();
        let matched = |id: &str| status.progress.iter().find(|p| p.id == raft_id(id)).map_or(0, |p| p.match_index);
        // Reachable now; one that did not flap first (when this leader's own links are the
        // flaky ones, every other manager flapped as it saw them).
        let successor = others
            .iter()
            .filter(|f| f.role == NodeRole::Manager && live.contains(&raft_id(&f.id)))
            .max_by_key(|f| (!flapping(&f.id), matched(&f.id), std::cmp::Reverse(f.id.clone())))
            .map(|f| (f.id.clone(), name_of(&f.hostname, &f.id)));
        let leader = autopilot::LeaderFacts {
            sync_p50_ms: self.store.sync_latency.p50_ms(),
            other_voters: others.len(),
            flapping_voters: others.iter().filter(|f| flapping(&f.id)).count(),
            successor,
            last_handover_ms: self.swarm.autopilot.last_handover_ms,
        };
        let Some((to, reason)) = autopilot::handover(&leader, now_ms) else { return false };
        crate::log!("INFO", "autopilot: {reason}");
        self.swarm.autopilot.last_handover_ms = Some(now_ms);
        if let Err(e) = self.store.transfer_leader(raft_id(&to)) {
            crate::log!("WARN", "autopilot: cannot hand leadership over: {e}");
        }
        true
    }

    /// The autopilot's status for `info` and `node ls`: the leader's own, or,
    /// on another manager, the settings and what this manager can tell
    /// (quorum lost: who survives). `None` when it is off.
    pub(crate) fn autopilot_status(&self) -> Option<AutopilotStatus> {
        let state = self.store.state();
        Settings::from_state(&state.autopilot)?;
        if let Some(s) = &self.swarm.autopilot.status {
            if self.store.is_leader() {
                return Some(s.clone());
            }
        }
        let (reachable, total) = self.reachability();
        let names: Vec<String> = reachable.iter().map(|id| self.node_name(id)).collect();
        let state_text = match self.leader_node() {
            Some(l) if self.store.is_leader() => format!("starting on this leader ({})", self.node_name(&l)),
            Some(l) => format!("run by the leader, {}: `shoal node ls` shows its state", self.node_name(&l)),
            None => quorum_lost_text(&names, total),
        };
        Some(AutopilotStatus {
            settings: state.autopilot.clone(),
            leader_view: false,
            healthy: Vec::new(),
            state: state_text,
            eligibility: Vec::new(),
        })
    }

    /// `hostname (short id)` of a node in the state, else the short id.
    pub(crate) fn node_name(&self, id: &str) -> String {
        let host = self.store.state().nodes.get(id).map(|n| n.description.hostname.clone()).unwrap_or_default();
        name_of(&host, id)
    }
}

/// What a manager without a leader says about the autopilot.
pub(crate) fn quorum_lost_text(reachable: &[String], managers: usize) -> String {
    let names = if reachable.is_empty() { "none".to_string() } else { reachable.join(", ") };
    format!(
        "no leader: {} of {managers} managers reachable from here (surviving: {names}); the autopilot changes nothing without a quorum: bring managers back, or run `shoal swarm init --force-new-cluster` on a surviving manager",
        reachable.len()
    )
}

fn name_of(hostname: &str, id: &str) -> String {
    let short: String = id.chars().take(12).collect();
    if hostname.is_empty() || hostname == id {
        short
    } else {
        format!("{hostname} ({short})")
    }
}

fn describe(d: &Decision) -> String {
    match d {
        Decision::Nothing => "nothing to do".to_string(),
        Decision::Wait { reason } => format!("waiting: {reason}"),
        Decision::Promote { reason, .. } | Decision::Demote { reason, .. } => reason.clone(),
    }
}

/// A decision as far as logging goes: its reason without durations, so a
/// wait whose only change is a growing "unreachable for 3s" is logged once.
fn log_key(d: &Decision) -> String {
    let text = match d {
        Decision::Nothing => String::new(),
        Decision::Wait { reason } => format!("wait {reason}"),
        Decision::Promote { node, reason } => format!("promote {node} {reason}"),
        Decision::Demote { node, reason } => format!("demote {node} {reason}"),
    };
    // A duration is a word of digits and units (`12s`, `1h5m`), maybe with punctuation after.
    let duration = |w: &str| {
        let w = w.trim_end_matches([',', '.', ':', ';', ')']);
        w.starts_with(|c: char| c.is_ascii_digit()) && w.chars().all(|c| c.is_ascii_digit() || "smhd".contains(c))
    };
    text.split(' ').map(|w| if duration(w) { "#" } else { w }).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_whose_figures_grow_is_logged_once() {
        let w = |r: &str| Decision::Wait { reason: r.to_string() };
        assert_eq!(log_key(&w("m1 has been unreachable for 3s")), log_key(&w("m1 has been unreachable for 14s")));
        assert_ne!(log_key(&w("m1 has been unreachable for 3s")), log_key(&w("m2 has been unreachable for 3s")));
        assert_eq!(log_key(&w("vm (4idmy9) away for 1h5m (over 5m):")), log_key(&w("vm (4idmy9) away for 2h0m (over 5m):")));
        assert_ne!(log_key(&Decision::Nothing), log_key(&w("")));
    }
}
