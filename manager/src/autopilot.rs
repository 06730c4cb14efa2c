//! The autopilot's decision core (issue #20): which one change, if any, the
//! leader makes next so that the swarm keeps `--managers N` healthy managers
//! without an operator.
//!
//! Pure and sans-IO: the leader's shell collects plain facts about every node
//! ([`NodeFacts`]: role, liveness, raft membership, since when it has been
//! unreachable), keeps each node's history of unreachable episodes
//! ([`Flaps`]), passes a monotonic `now_ms`, and carries out the one
//! [`Decision`] that [`plan`] returns through the paths `node promote` and
//! `node demote` take ([`crate::control::set_node_role`]); raft membership
//! then follows the roles as it always does ([`crate::membership`]). No
//! sockets, files, clocks, randomness or async here.
//!
//! Invariants:
//! - at most one change per call, and none while the previous one is still
//!   in flight (a promoted manager not yet a caught-up voter, a demoted one
//!   still in raft): a learner counts toward quorum only once it votes;
//! - nothing is done while quorum is lost (fewer reachable voters than a
//!   majority of voters): that needs a person and `--force-new-cluster`, and
//!   the reason names the surviving managers;
//! - a lost manager (unreachable for `manager_lost_after_ms`) is replaced
//!   first and demoted afterwards; without an eligible replacement it is
//!   demoted only when that lowers the quorum (an even number of voters);
//! - every demotion leaves the reachable voters a majority of the voters that
//!   remain and another reachable voter that is a manager, and the leader
//!   itself is never demoted;
//! - a demoted voter whose removal from raft would now break that (a voter
//!   died after its demotion) is unstuck: a lost voter is demoted first, or,
//!   with no reachable manager left, it becomes a manager again;
//! - ties are broken by node id, and the order of the facts does not matter:
//!   equal inputs give equal decisions.
//!
//! A lost manager is demoted, not deleted (`node rm`): when it comes back it
//! rejoins as a worker, as the issue asks, instead of being told it was
//! removed. Taking it out of raft is [`crate::membership`]'s step that
//! follows every demotion, so there is no separate "remove" decision.
//!
//! Free memory and disk reach the leader as node warnings (a worker's
//! description carries `disk full:`, `disk low:` under 256 MiB free in its
//! data dir, `memory low:` under 64 MiB available): eligibility is Ready,
//! Active, reachable, none of those warnings, and not flapping.

use shoal_shared::types::{
    AutopilotSettings, Availability, Node, NodeRole, NodeState, DISK_FULL_WARNING, DISK_LOW_WARNING, MEMORY_LOW_WARNING,
};
use std::collections::{BTreeMap, VecDeque};

/// The largest `--managers` (raft groups larger than seven only slow writes).
pub const MANAGERS_MAX: u8 = 7;
/// Default of [`Settings::manager_lost_after_ms`]: five minutes.
pub const MANAGER_LOST_AFTER_MS_DEFAULT: u64 = 5 * 60_000;
/// Bounds of [`Settings::manager_lost_after_ms`].
pub const MANAGER_LOST_AFTER_MS_MIN: u64 = 1_000;
pub const MANAGER_LOST_AFTER_MS_MAX: u64 = 7 * 24 * 3_600_000;
/// Default of [`Settings::flaps_per_hour_max`].
pub const FLAPS_PER_HOUR_DEFAULT: u32 = 3;
/// Upper bound of [`Settings::flaps_per_hour_max`] (it sizes [`Flaps`]).
pub const FLAPS_PER_HOUR_MAX: u32 = 100;
/// The window flaps are counted over.
pub const FLAP_WINDOW_MS: u64 = 3_600_000;
/// The most nodes [`Flaps`] remembers; the one whose last episode is oldest goes first.
pub const FLAP_NODES_MAX: usize = 1_024;
/// The most ineligible workers a reason lists by name.
const REASONS_LISTED_MAX: usize = 3;

/// What the autopilot keeps (replicated swarm settings, once wired).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `--managers N`: the healthy managers to keep; odd, 1..=[`MANAGERS_MAX`].
    pub managers: u8,
    /// `--manager-lost-after`: how long a manager is unreachable before it is replaced.
    pub manager_lost_after_ms: u64,
    /// `--manager-spread-label`: a node label key (`site`, or Swarm's
    /// spelling `node.labels.site`) whose values the managers spread over.
    pub spread_label: Option<String>,
    /// A node unreachable more than this many times in the last hour is flapping, never promoted.
    pub flaps_per_hour_max: u32,
}

/// Why [`Settings`] are refused (messages name the flag to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("--managers must be odd and between 1 and {MANAGERS_MAX} (got {0})")]
    Managers(u8),
    #[error("--manager-lost-after must be between 1s and 7 days (got {0} ms)")]
    LostAfter(u64),
    #[error("at most {FLAPS_PER_HOUR_MAX} unreachable episodes an hour can be tolerated (got {0})")]
    Flaps(u32),
    #[error("--manager-spread-label needs a label name, such as 'site'")]
    EmptyLabel,
}

impl Settings {
    /// `managers` with every other setting at its default.
    pub fn new(managers: u8) -> Settings {
        Settings {
            managers,
            manager_lost_after_ms: MANAGER_LOST_AFTER_MS_DEFAULT,
            spread_label: None,
            flaps_per_hour_max: FLAPS_PER_HOUR_DEFAULT,
        }
    }

    /// The replicated settings in effect; `None` when the autopilot is off.
    pub fn from_state(a: &AutopilotSettings) -> Option<Settings> {
        (a.managers != 0).then(|| Settings {
            managers: a.managers,
            manager_lost_after_ms: a.manager_lost_after_ms,
            spread_label: (!a.spread_label.trim().is_empty()).then(|| a.spread_label.clone()),
            flaps_per_hour_max: a.flaps_per_hour_max,
        })
    }

    /// Checks every bound; [`plan`] waits, changing nothing, on settings that fail it.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.managers == 0 || self.managers > MANAGERS_MAX || self.managers.is_multiple_of(2) {
            return Err(SettingsError::Managers(self.managers));
        }
        if !(MANAGER_LOST_AFTER_MS_MIN..=MANAGER_LOST_AFTER_MS_MAX).contains(&self.manager_lost_after_ms) {
            return Err(SettingsError::LostAfter(self.manager_lost_after_ms));
        }
        if self.flaps_per_hour_max > FLAPS_PER_HOUR_MAX {
            return Err(SettingsError::Flaps(self.flaps_per_hour_max));
        }
        if self.label_key() == Some("") {
            return Err(SettingsError::EmptyLabel);
        }
        Ok(())
    }

    /// The spread label's key in [`NodeFacts::labels`].
    fn label_key(&self) -> Option<&str> {
        let label = self.spread_label.as_deref()?;
        Some(label.strip_prefix("node.labels.").unwrap_or(label).trim())
    }
}

/// A node's place in raft, as the leader's raft status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raft {
    /// Not a member.
    Absent,
    /// Replicates without a vote; `caught_up`: it holds every committed entry.
    Learner { caught_up: bool },
    /// Votes.
    Voter,
}

/// What the leader knows about one node. The shell passes one for every
/// node in the state, the leader included (its own `unreachable_since_ms`
/// is ignored: a leader reaches itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's id, as decisions name it.
    pub id: String,
    /// `Description.Hostname`, as reasons name it (with a short id).
    pub hostname: String,
    /// The node's labels (`node update --label-add`).
    pub labels: BTreeMap<String, String>,
    /// `Engine.Warnings`, where a full disk shows as [`DISK_FULL_WARNING`],
    /// low disk space as [`DISK_LOW_WARNING`], low memory as [`MEMORY_LOW_WARNING`].
    pub warnings: Vec<String>,
    /// The role in the replicated state (what promote/demote change).
    pub role: NodeRole,
    /// Ready, Down, Disconnected as the dispatcher marks it.
    pub state: NodeState,
    pub availability: Availability,
    /// Its place in raft (the leader's `Status`: voters, learners, and a
    /// learner's match index against the commit index).
    pub raft: Raft,
    /// Since when (the leader's monotonic ms) the leader has not reached the
    /// node: for a manager, no raft response; for a worker, no session.
    /// `None`: reachable now.
    pub unreachable_since_ms: Option<u64>,
}

impl NodeFacts {
    /// The facts of a node record, with what only the leader's shell knows.
    pub fn from_node(node: &Node, raft: Raft, unreachable_since_ms: Option<u64>) -> NodeFacts {
        NodeFacts {
            id: node.id.clone(),
            hostname: node.description.hostname.clone(),
            labels: node.labels.clone(),
            warnings: node.description.warnings.clone(),
            role: node.role,
            state: node.state,
            availability: node.availability,
            raft,
            unreachable_since_ms,
        }
    }

    /// The node as reasons name it: `hostname (short id)`.
    fn name(&self) -> String {
        let short: String = self.id.chars().take(12).collect();
        if self.hostname.is_empty() || self.hostname == self.id {
            short
        } else {
            format!("{} ({short})", self.hostname)
        }
    }
}

/// Each node's recent unreachable episodes, for telling a flapping node.
/// Bounded: at most `flaps_per_hour_max + 1` timestamps per node (enough to
/// tell "more than K"), at most [`FLAP_NODES_MAX`] nodes. Build it with the
/// settings' `flaps_per_hour_max` (and again when that changes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flaps {
    keep: usize,
    nodes: BTreeMap<String, VecDeque<u64>>,
}

impl Flaps {
    /// Remembers enough to count up to `flaps_per_hour_max + 1` episodes per node.
    pub fn new(flaps_per_hour_max: u32) -> Flaps {
        let keep = flaps_per_hour_max.min(FLAPS_PER_HOUR_MAX) as usize + 1;
        Flaps { keep, nodes: BTreeMap::new() }
    }

    /// `node` became unreachable at `now_ms` (call once per episode).
    pub fn record_unreachable(&mut self, node: &str, now_ms: u64) {
        if !self.nodes.contains_key(node) && self.nodes.len() >= FLAP_NODES_MAX {
            let oldest = self.nodes.iter().min_by_key(|(id, times)| (times.back().copied(), id.as_str())).map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                self.nodes.remove(&id);
            }
        }
        let keep = self.keep.max(1);
        let times = self.nodes.entry(node.to_string()).or_default();
        times.push_back(now_ms);
        while times.len() > keep {
            times.pop_front();
        }
    }

    /// Episodes of `node` in the hour up to `now_ms` (exact up to `flaps_per_hour_max + 1`).
    pub fn count_last_hour(&self, node: &str, now_ms: u64) -> u32 {
        let Some(times) = self.nodes.get(node) else { return 0 };
        times.iter().filter(|t| now_ms.saturating_sub(**t) < FLAP_WINDOW_MS).count() as u32
    }

    /// Drops a node's history (its record was removed).
    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    /// How many nodes have a history.
    pub fn nodes_tracked(&self) -> usize {
        self.nodes.len()
    }
}

/// The leader's record of since when each node has been unreachable, and
/// of every node's unreachable episodes ([`Flaps`]). The shell calls
/// [`Watch::observe`] every pass with which nodes it reaches now (a link to
/// it is up) and [`Watch::lead`] when this node starts leading: a node not
/// seen since then counts as unreachable from then on (a manager dead
/// before a failover is replaced `manager_lost_after_ms` after the new
/// leader took over, never earlier), and only a node seen reachable under
/// this leadership can flap. Bounded by the nodes in the state (and
/// [`FLAP_NODES_MAX`] for the history).
#[derive(Clone, Debug, Default)]
pub struct Watch {
    since: BTreeMap<String, u64>,
    seen: std::collections::BTreeSet<String>,
    flaps: Flaps,
}

impl Watch {
    pub fn new(flaps_per_hour_max: u32) -> Watch {
        Watch { since: BTreeMap::new(), seen: Default::default(), flaps: Flaps::new(flaps_per_hour_max) }
    }

    /// This node starts leading at `now_ms`: what it knew of reachability is
    /// stale (the flap history stays: those were real observations).
    pub fn lead(&mut self) {
        self.since.clear();
        self.seen.clear();
    }

    /// Which nodes (every node in the state, by id) are reachable at `now_ms`.
    /// Nodes no longer given are forgotten (their records were removed).
    /// Returns the nodes that just became unreachable, each with its episodes
    /// in the last hour (for the shell to say when one starts flapping).
    pub fn observe<'a>(&mut self, nodes: impl IntoIterator<Item = (&'a str, bool)>, now_ms: u64) -> Vec<(String, u32)> {
        let mut present = std::collections::BTreeSet::new();
        let mut episodes = Vec::new();
        for (id, reachable) in nodes {
            present.insert(id.to_string());
            if reachable {
                self.since.remove(id);
                self.seen.insert(id.to_string());
            } else if !self.since.contains_key(id) {
                self.since.insert(id.to_string(), now_ms);
                if self.seen.contains(id) {
                    self.flaps.record_unreachable(id, now_ms);
                    episodes.push((id.to_string(), self.flaps.count_last_hour(id, now_ms)));
                }
            }
        }
        self.since.retain(|id, _| present.contains(id));
        self.seen.retain(|id| present.contains(id));
        let gone: Vec<String> = self.flaps.nodes.keys().filter(|id| !present.contains(*id)).cloned().collect();
        for id in gone {
            self.flaps.forget(&id);
        }
        episodes
    }

    /// Since when `node` has been unreachable (`None`: reachable at the last observation).
    pub fn unreachable_since_ms(&self, node: &str) -> Option<u64> {
        self.since.get(node).copied()
    }

    pub fn flaps(&self) -> &Flaps {
        &self.flaps
    }

    /// The flap history, rebuilt for a new `flaps_per_hour_max` (keeps what fits).
    pub fn set_flaps_per_hour_max(&mut self, flaps_per_hour_max: u32) {
        let keep = flaps_per_hour_max.min(FLAPS_PER_HOUR_MAX) as usize + 1;
        if keep != self.flaps.keep {
            let mut next = Flaps::new(flaps_per_hour_max);
            for (id, times) in &self.flaps.nodes {
                for t in times {
                    next.record_unreachable(id, *t);
                }
            }
            self.flaps = next;
        }
    }
}

/// An fsync slower than this at the median makes the leader hand over.
pub const SYNC_SLOW_MS: u64 = 500;
/// Durable writes [`SyncLatency`] keeps (and needs at least half of before it judges).
pub const SYNC_SAMPLES_MAX: usize = 32;
/// After handing leadership over, a manager does not do it again for this long.
pub const HANDOVER_HOLD_MS: u64 = 10 * 60_000;

/// The latest durable-write (fsync) latencies of this manager's raft log,
/// in ms, bounded to [`SYNC_SAMPLES_MAX`]. Recorded by the store's shell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncLatency {
    samples_ms: VecDeque<u64>,
}

impl SyncLatency {
    pub fn record(&mut self, ms: u64) {
        self.samples_ms.push_back(ms);
        while self.samples_ms.len() > SYNC_SAMPLES_MAX {
            self.samples_ms.pop_front();
        }
    }

    /// The median, once at least half of [`SYNC_SAMPLES_MAX`] writes were timed.
    pub fn p50_ms(&self) -> Option<u64> {
        if self.samples_ms.len() < SYNC_SAMPLES_MAX / 2 {
            return None;
        }
        let mut v: Vec<u64> = self.samples_ms.iter().copied().collect();
        v.sort_unstable();
        Some(v[v.len() / 2])
    }
}

/// What the leader knows of itself for [`handover`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderFacts {
    /// Its log's fsync median ([`SyncLatency::p50_ms`]).
    pub sync_p50_ms: Option<u64>,
    /// The other voters, and how many of them flapped (more than
    /// `flaps_per_hour_max` unreachable episodes in the last hour) as this
    /// leader saw them: when most did, the fault is likely this leader's links.
    pub other_voters: usize,
    pub flapping_voters: usize,
    /// The reachable manager voter to hand over to (id, name): one that did
    /// not flap if there is one, else the most caught up.
    pub successor: Option<(String, String)>,
    /// When this node last handed leadership over (mono ms).
    pub last_handover_ms: Option<u64>,
}

/// Whether the leader should hand leadership over, to whom and why: its disk
/// is slow (fsync median over [`SYNC_SLOW_MS`]) or its links are flaky (most
/// other voters flapped as it saw them). Never without a successor, never
/// twice within [`HANDOVER_HOLD_MS`] (a swarm whose disks are all slow does
/// not pass leadership around).
pub fn handover(f: &LeaderFacts, now_ms: u64) -> Option<(String, String)> {
    let (id, name) = f.successor.clone()?;
    if f.last_handover_ms.is_some_and(|t| now_ms.saturating_sub(t) < HANDOVER_HOLD_MS) {
        return None;
    }
    if let Some(p50) = f.sync_p50_ms.filter(|ms| *ms > SYNC_SLOW_MS) {
        return Some((
            id,
            format!("this manager's disk is slow (fsync median {p50} ms, over {SYNC_SLOW_MS} ms): handing leadership to {name}"),
        ));
    }
    if f.other_voters >= 2 && f.flapping_voters * 2 > f.other_voters {
        return Some((
            id,
            format!(
                "this manager's links are flaky ({} of the {} other managers kept dropping out as it saw them, so the fault is likely here): handing leadership to {name}",
                f.flapping_voters, f.other_voters
            ),
        ));
    }
    None
}

/// The one thing the leader does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The managers are as wanted.
    Nothing,
    /// Something needs time or a person; `reason` says what (for logs, `info`, `node ls`).
    Wait { reason: String },
    /// Make worker `node` (an id) a manager; it joins raft as a learner.
    Promote { node: String, reason: String },
    /// Make manager `node` (an id) a worker; raft membership then drops it.
    Demote { node: String, reason: String },
}

/// Why `node` may not become a manager now, or `Ok` when it may.
pub fn eligibility(settings: &Settings, node: &NodeFacts, flaps: &Flaps, now_ms: u64) -> Result<(), String> {
    let name = node.name();
    if node.role == NodeRole::Manager {
        return Err(format!("{name} is already a manager"));
    }
    if node.raft != Raft::Absent {
        return Err(format!("{name} was demoted and is still leaving raft"));
    }
    health(settings, node, flaps, now_ms)
}

/// The next change for the leader `leader` (a node id), given the facts of
/// every node and the flap history at `now_ms`. See the module invariants.
pub fn plan(settings: &Settings, leader: &str, nodes: &[NodeFacts], flaps: &Flaps, now_ms: u64) -> Decision {
    if let Err(e) = settings.validate() {
        return wait(format!("the autopilot changes nothing: {e}"));
    }
    let mut sorted: Vec<&NodeFacts> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(pair) = sorted.windows(2).find(|p| p[0].id == p[1].id) {
        return wait(format!("the autopilot changes nothing: node {} is listed twice", pair[0].name()));
    }
    let view = View { settings, leader, nodes: sorted, now_ms };
    if !view.nodes.iter().any(|n| n.id == leader) {
        return wait(format!("the autopilot changes nothing: the leader {leader} is not among the nodes"));
    }
    if let Some(d) = view.quorum_lost() {
        return d;
    }
    if let Some(d) = view.in_flight() {
        return d;
    }
    view.keep_managers(flaps)
}

/// The facts sorted by id, with what every rule needs.
struct View<'a> {
    settings: &'a Settings,
    leader: &'a str,
    nodes: Vec<&'a NodeFacts>,
    now_ms: u64,
}

impl<'a> View<'a> {
    fn reachable(&self, n: &NodeFacts) -> bool {
        n.id == self.leader || n.unreachable_since_ms.is_none()
    }

    /// How long `n` has been unreachable (0 when reachable).
    fn away_ms(&self, n: &NodeFacts) -> u64 {
        match n.unreachable_since_ms {
            Some(since) if n.id != self.leader => self.now_ms.saturating_sub(since),
            _ => 0,
        }
    }

    fn lost(&self, n: &NodeFacts) -> bool {
        !self.reachable(n) && self.away_ms(n) >= self.settings.manager_lost_after_ms
    }

    fn voters(&self) -> impl Iterator<Item = &'a NodeFacts> + '_ {
        self.nodes.iter().copied().filter(|n| n.raft == Raft::Voter)
    }

    /// Quorum is lost: wait, naming the managers still reachable.
    fn quorum_lost(&self) -> Option<Decision> {
        let voters = self.voters().count();
        let reachable: Vec<&NodeFacts> = self.voters().filter(|n| self.reachable(n)).collect();
        if voters > 0 && reachable.len() >= majority(voters) {
            return None;
        }
        let names = if reachable.is_empty() { "none".to_string() } else { names(&reachable) };
        Some(wait(format!(
            "quorum is lost: {} of {voters} managers are reachable (surviving: {names}); the autopilot changes nothing \
             without a quorum: bring managers back, or run 'shoal swarm init --force-new-cluster' on a surviving manager",
            reachable.len()
        )))
    }

    /// The previous change is still under way: wait for it, except that a
    /// promoted node lost before it could vote is demoted again, and a lost
    /// voter is demoted when a demoted voter cannot leave raft safely before it.
    fn in_flight(&self) -> Option<Decision> {
        let pending = |n: &&&NodeFacts| !matches!((n.role, n.raft), (NodeRole::Manager, Raft::Voter) | (NodeRole::Worker, Raft::Absent));
        if let Some(n) = self.nodes.iter().filter(pending).find(|n| n.role == NodeRole::Manager && self.lost(n)) {
            let reason = format!(
                "{} was promoted but has been unreachable for {} before it could vote: demoting it",
                n.name(),
                span(self.away_ms(n))
            );
            return Some(self.demote(n, reason));
        }
        let n = self.nodes.iter().find(pending)?;
        let name = n.name();
        let stuck = (n.role, n.raft) == (NodeRole::Worker, Raft::Voter) && !self.removal_keeps_quorum(n);
        if stuck {
            return Some(self.unstick(n));
        }
        Some(wait(match (n.role, n.raft) {
            (NodeRole::Manager, Raft::Absent) => format!("{name} was promoted: waiting for raft to add it as a learner"),
            (NodeRole::Manager, Raft::Learner { caught_up: false }) => {
                format!("{name} is catching up as a learner: it counts toward quorum once it holds every committed entry")
            }
            (NodeRole::Manager, _) => format!("{name} has caught up: waiting for raft to make it a voter"),
            (NodeRole::Worker, _) => format!("{name} was demoted: waiting for raft to remove it"),
        }))
    }

    /// Demoted voter `n` cannot leave raft safely: a voter died after its
    /// demotion. Demote a lost voter first (its removal is safe and makes
    /// `n`'s safe); with no reachable manager left to do so, `n` becomes a
    /// manager again (it is a voter already: nothing changes in raft).
    fn unstick(&self, n: &NodeFacts) -> Decision {
        let why = format!("{} was demoted, but removing it from raft now would leave fewer reachable managers than a quorum", n.name());
        let lost = self.voters().filter(|v| v.role == NodeRole::Manager && self.lost(v)).max_by_key(|v| self.away_ms(v));
        if let Some(l) = lost {
            let d = self.demote(l, format!("{why}: demoting {}, unreachable for {}, first", l.name(), span(self.away_ms(l))));
            if matches!(d, Decision::Demote { .. }) {
                return d;
            }
        }
        if !self.voters().any(|v| v.role == NodeRole::Manager && self.reachable(v)) {
            return Decision::Promote {
                node: n.id.clone(),
                reason: format!("{why}, and no reachable manager remains: making it a manager again"),
            };
        }
        wait(format!("{why}: waiting for the unreachable managers to return or to be lost"))
    }

    /// Every change in flight is done: replace lost managers, fill up to N, trim above N.
    fn keep_managers(&self, flaps: &Flaps) -> Decision {
        let wanted = self.settings.managers as usize;
        let members: Vec<&NodeFacts> =
            self.nodes.iter().copied().filter(|n| n.role == NodeRole::Manager && n.raft == Raft::Voter).collect();
        let (mut lost, alive): (Vec<&NodeFacts>, Vec<&NodeFacts>) = members.iter().copied().partition(|n| self.lost(n));
        // The longest gone first.
        lost.sort_by_key(|n| std::cmp::Reverse(self.away_ms(n)));
        if alive.len() < wanted {
            if let Some(c) = self.candidate(&alive, flaps) {
                let (promoting, spread) = (c.name(), self.spread_note(c, &alive));
                let reason = match lost.first() {
                    Some(l) => format!("promoting {promoting} to replace {}, unreachable for {}{spread}", l.name(), span(self.away_ms(l))),
                    None => format!("{wanted} managers wanted, {} healthy: promoting {promoting}{spread}", alive.len()),
                };
                return Decision::Promote { node: c.id.clone(), reason };
            }
        }
        if let Some(l) = lost.first() {
            let gone = format!(
                "{} has been unreachable for {} (over {})",
                l.name(),
                span(self.away_ms(l)),
                span(self.settings.manager_lost_after_ms)
            );
            if alive.len() >= wanted {
                return self.demote(l, format!("{gone}: demoting it, {} managers remain ({})", alive.len(), names(&alive)));
            }
            let unfit = self.unfit_workers(flaps);
            if members.len().is_multiple_of(2) {
                let (from, to) = (majority(members.len()), majority(members.len() - 1));
                return self.demote(l, format!("{gone} and {unfit}: demoting it lowers the quorum from {from} to {to}"));
            }
            return wait(format!("{gone} and {unfit}: it stays a manager until a worker can replace it or it returns"));
        }
        if alive.len() > wanted && members.iter().all(|n| self.reachable(n)) {
            if let Some(x) = self.surplus(&alive, flaps) {
                let reason = format!("{} managers, {wanted} wanted: demoting {}{}", alive.len(), x.name(), self.spread_note(x, &alive));
                return self.demote(x, reason);
            }
        }
        if let Some(d) = self.rebalance(&alive, &members, flaps) {
            return d;
        }
        if alive.len() < wanted {
            return wait(format!("{wanted} managers wanted, {} healthy, and {}", alive.len(), self.unfit_workers(flaps)));
        }
        if let Some(u) = members.iter().find(|n| !self.reachable(n)) {
            return wait(format!(
                "{} has been unreachable for {}: it is replaced if still unreachable after {}",
                u.name(),
                span(self.away_ms(u)),
                span(self.settings.manager_lost_after_ms)
            ));
        }
        Decision::Nothing
    }

    /// N healthy managers, but crowded on one spread-label value (two more
    /// there than where an eligible worker is): promote that worker; the
    /// surplus rule then demotes one from the crowded value. So the managers
    /// spread over the sites even when no manager fails.
    fn rebalance(&self, alive: &[&'a NodeFacts], members: &[&NodeFacts], flaps: &Flaps) -> Option<Decision> {
        let key = self.settings.label_key()?;
        if alive.len() != self.settings.managers as usize || !members.iter().all(|n| self.reachable(n)) {
            return None;
        }
        let c = self.candidate(alive, flaps)?;
        let counts = self.per_value(alive);
        let (crowded, most) = counts.iter().max_by_key(|(v, n)| (**n, std::cmp::Reverse((*v).clone())))?;
        let here = counts.get(&self.value(c)).copied().unwrap_or(0);
        if here + 1 >= *most {
            return None;
        }
        let crowded = crowded.as_deref().map_or(format!("nodes without a {key} label"), |v| format!("{key}={v}"));
        Some(Decision::Promote {
            node: c.id.clone(),
            reason: format!(
                "spreading the managers over {key}: {crowded} has {most} of {}; promoting {}{}, then demoting one of {crowded}",
                alive.len(),
                c.name(),
                self.spread_note(c, alive)
            ),
        })
    }

    /// The eligible worker whose spread-label value has the fewest managers,
    /// then the one that flapped least, then the lowest id.
    fn candidate(&self, managers: &[&'a NodeFacts], flaps: &Flaps) -> Option<&'a NodeFacts> {
        let counts = self.per_value(managers);
        let value_count = |n: &NodeFacts| counts.get(&self.value(n)).copied().unwrap_or(0);
        self.nodes
            .iter()
            .copied()
            .filter(|n| eligibility(self.settings, n, flaps, self.now_ms).is_ok())
            .min_by_key(|n| (value_count(n), flaps.count_last_hour(&n.id, self.now_ms), n.id.as_str()))
    }

    /// The manager to demote when there are too many: never the leader; from
    /// the most crowded spread-label value, unhealthy before healthy, the highest id.
    fn surplus(&self, managers: &[&'a NodeFacts], flaps: &Flaps) -> Option<&'a NodeFacts> {
        let counts = self.per_value(managers);
        managers.iter().copied().filter(|n| n.id != self.leader).max_by_key(|n| {
            let crowd = counts.get(&self.value(n)).copied().unwrap_or(0);
            (crowd, health(self.settings, n, flaps, self.now_ms).is_err(), n.id.as_str())
        })
    }

    /// A node's spread-label value (`None`: no spread label, or the node lacks it).
    fn value(&self, n: &NodeFacts) -> Option<String> {
        self.settings.label_key().and_then(|k| n.labels.get(k).cloned())
    }

    fn per_value(&self, managers: &[&NodeFacts]) -> BTreeMap<Option<String>, usize> {
        let mut counts = BTreeMap::new();
        for m in managers {
            *counts.entry(self.value(m)).or_insert(0) += 1;
        }
        counts
    }

    /// `" (site=b has 0 of the managers)"` when a spread label is set.
    fn spread_note(&self, n: &NodeFacts, managers: &[&NodeFacts]) -> String {
        let Some(key) = self.settings.label_key() else { return String::new() };
        let value = self.value(n);
        let count = managers.iter().filter(|m| self.value(m) == value).count();
        match value {
            Some(v) => format!(" ({key}={v} has {count} of the managers)"),
            None => format!(" (it has no {key} label; {count} of the managers lack it too)"),
        }
    }

    /// `"no worker is eligible (w1 is drained; ...)"`, for reasons.
    fn unfit_workers(&self, flaps: &Flaps) -> String {
        let workers: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.role == NodeRole::Worker)
            .filter_map(|n| eligibility(self.settings, n, flaps, self.now_ms).err())
            .collect();
        if workers.is_empty() {
            return "there is no worker to promote".to_string();
        }
        let mut listed = workers.iter().take(REASONS_LISTED_MAX).cloned().collect::<Vec<_>>().join("; ");
        if workers.len() > REASONS_LISTED_MAX {
            listed.push_str(&format!("; and {} more", workers.len() - REASONS_LISTED_MAX));
        }
        format!("no worker is eligible ({listed})")
    }

    /// A demotion, unless it names the leader, or would leave the reachable
    /// voters short of a majority of the voters that remain, or no other
    /// reachable voter stays a manager (the leader may be a demoted one
    /// handing over): then a wait.
    fn demote(&self, n: &NodeFacts, reason: String) -> Decision {
        let other_manager = self.voters().any(|v| v.id != n.id && v.role == NodeRole::Manager && self.reachable(v));
        let refused = if n.id == self.leader {
            "it leads"
        } else if !other_manager {
            "no other reachable manager would remain"
        } else if !self.removal_keeps_quorum(n) {
            "the reachable managers left would be fewer than a quorum"
        } else {
            return Decision::Demote { node: n.id.clone(), reason };
        };
        wait(format!("{reason}; but {refused}, so it stays a manager"))
    }

    /// Whether the voters other than `n` would still have a reachable majority.
    fn removal_keeps_quorum(&self, n: &NodeFacts) -> bool {
        let others = || self.voters().filter(|v| v.id != n.id);
        let voters = others().count();
        voters > 0 && others().filter(|v| self.reachable(v)).count() >= majority(voters)
    }
}

/// Whether a node could serve as a manager: reachable, Ready, Active, no full disk, not flapping.
fn health(settings: &Settings, node: &NodeFacts, flaps: &Flaps, now_ms: u64) -> Result<(), String> {
    let name = node.name();
    if let Some(since) = node.unreachable_since_ms {
        return Err(format!("{name} has been unreachable for {}", span(now_ms.saturating_sub(since))));
    }
    if node.state != NodeState::Ready {
        return Err(format!("{name} is {}", node.state.as_title().to_lowercase()));
    }
    match node.availability {
        Availability::Active => {}
        Availability::Pause => return Err(format!("{name} is paused")),
        Availability::Drain => return Err(format!("{name} is drained")),
    }
    if let Some(w) = node.warnings.iter().find(|w| w.starts_with(DISK_FULL_WARNING)) {
        return Err(format!("{name} reports a full disk ({w})"));
    }
    if let Some(w) = node.warnings.iter().find(|w| w.starts_with(DISK_LOW_WARNING)) {
        return Err(format!("{name} is low on disk space ({w})"));
    }
    if let Some(w) = node.warnings.iter().find(|w| w.starts_with(MEMORY_LOW_WARNING)) {
        return Err(format!("{name} is low on memory ({w})"));
    }
    let flapped = flaps.count_last_hour(&node.id, now_ms);
    if flapped > settings.flaps_per_hour_max {
        return Err(format!(
            "{name} is flapping: unreachable {flapped} times in the last hour (more than {})",
            settings.flaps_per_hour_max
        ));
    }
    Ok(())
}

/// The smallest majority of `voters`.
fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

fn wait(reason: String) -> Decision {
    Decision::Wait { reason }
}

fn names(nodes: &[&NodeFacts]) -> String {
    nodes.iter().map(|n| n.name()).collect::<Vec<_>>().join(", ")
}

/// A duration for reasons: `45s`, `5m`, `6m30s`, `2h5m`.
fn span(ms: u64) -> String {
    let s = ms / 1_000;
    match (s / 3_600, s % 3_600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{self, Step};
    use crate::raft::{PeerProgress, ProgressState, Role, Status};
    use shoal_shared::rng::Rng;
    use std::collections::BTreeSet;

    const NOW: u64 = 100 * 3_600_000;
    const MIN: u64 = 60_000;

    fn node(id: &str, role: NodeRole, site: Option<&str>) -> NodeFacts {
        NodeFacts {
            id: id.to_string(),
            hostname: format!("{id}-host"),
            role,
            state: NodeState::Ready,
            availability: Availability::Active,
            labels: site.map(|s| [("site".to_string(), s.to_string())].into()).unwrap_or_default(),
            warnings: Vec::new(),
            raft: if role == NodeRole::Manager { Raft::Voter } else { Raft::Absent },
            unreachable_since_ms: None,
        }
    }

    fn mgr(id: &str) -> NodeFacts {
        node(id, NodeRole::Manager, None)
    }

    fn wkr(id: &str) -> NodeFacts {
        node(id, NodeRole::Worker, None)
    }

    /// `n`, unreachable for `ms` up to [`NOW`].
    fn away(mut n: NodeFacts, ms: u64) -> NodeFacts {
        n.unreachable_since_ms = Some(NOW - ms);
        n.state = NodeState::Down;
        n
    }

    fn decide(managers: u8, nodes: &[NodeFacts]) -> Decision {
        plan(&Settings::new(managers), "m1", nodes, &Flaps::new(FLAPS_PER_HOUR_DEFAULT), NOW)
    }

    fn reason(d: &Decision) -> &str {
        match d {
            Decision::Nothing => "",
            Decision::Wait { reason } | Decision::Promote { reason, .. } | Decision::Demote { reason, .. } => reason,
        }
    }

    /// Whether the reachable voters are a majority of the voters once `d` took full effect
    /// (a demoted voter out of raft; a promoted node, reachable, a voter).
    fn keeps_majority(nodes: &[NodeFacts], leader: &str, d: &Decision) -> bool {
        let reachable = |n: &NodeFacts| n.id == leader || n.unreachable_since_ms.is_none();
        let mut voters: Vec<&NodeFacts> = nodes.iter().filter(|n| n.raft == Raft::Voter).collect();
        let mut extra = 0;
        match d {
            Decision::Demote { node, .. } => voters.retain(|n| &n.id != node),
            Decision::Promote { .. } => extra = 1,
            _ => {}
        }
        voters.iter().filter(|n| reachable(n)).count() + extra >= majority(voters.len() + extra)
    }

    /// Carries `d` out, and raft membership follows at once (a promoted node catches up at once).
    fn apply(nodes: &mut [NodeFacts], d: &Decision) {
        match d {
            Decision::Promote { node, .. } => nodes.iter_mut().filter(|n| &n.id == node).for_each(|n| n.role = NodeRole::Manager),
            Decision::Demote { node, .. } => nodes.iter_mut().filter(|n| &n.id == node).for_each(|n| n.role = NodeRole::Worker),
            _ => {}
        }
        for n in nodes.iter_mut() {
            n.raft = if n.role == NodeRole::Manager { Raft::Voter } else { Raft::Absent };
        }
    }

    #[test]
    fn a_lost_manager_is_replaced_first_then_demoted() {
        let mut nodes = vec![mgr("m1"), mgr("m2"), away(mgr("m3"), 6 * MIN), wkr("w1")];
        let d = decide(3, &nodes);
        assert_eq!(
            d,
            Decision::Promote { node: "w1".into(), reason: "promoting w1-host (w1) to replace m3-host (m3), unreachable for 6m".into() }
        );
        // Each stage of the promotion blocks everything else, the lost manager's demotion included.
        nodes[3].role = NodeRole::Manager;
        assert_eq!(reason(&decide(3, &nodes)), "w1-host (w1) was promoted: waiting for raft to add it as a learner");
        nodes[3].raft = Raft::Learner { caught_up: false };
        assert!(reason(&decide(3, &nodes)).contains("w1-host (w1) is catching up as a learner"));
        nodes[3].raft = Raft::Learner { caught_up: true };
        assert!(reason(&decide(3, &nodes)).contains("waiting for raft to make it a voter"));
        nodes[3].raft = Raft::Voter;
        let d = decide(3, &nodes);
        assert_eq!(
            d,
            Decision::Demote {
                node: "m3".into(),
                reason: "m3-host (m3) has been unreachable for 6m (over 5m): demoting it, 3 managers remain (m1-host (m1), m2-host (m2), w1-host (w1))".into()
            }
        );
        assert!(keeps_majority(&nodes, "m1", &d));
        nodes[2].role = NodeRole::Worker;
        assert_eq!(reason(&decide(3, &nodes)), "m3-host (m3) was demoted: waiting for raft to remove it");
        nodes[2].raft = Raft::Absent;
        assert_eq!(decide(3, &nodes), Decision::Nothing, "it rejoins as a worker when it returns");
    }

    #[test]
    fn lost_managers_without_a_replacement_are_demoted_only_when_that_lowers_the_quorum() {
        // Five voters, two lost, no worker: demoting one would not lower the quorum (3 of 4), keep both.
        let five = [mgr("m1"), mgr("m2"), mgr("m3"), away(mgr("m4"), 9 * MIN), away(mgr("m5"), 8 * MIN), away(wkr("w1"), MIN)];
        let d = decide(5, &five);
        assert_eq!(
            reason(&d),
            "m4-host (m4) has been unreachable for 9m (over 5m) and no worker is eligible (w1-host (w1) has been \
             unreachable for 1m): it stays a manager until a worker can replace it or it returns"
        );
        // Four voters (one lost): demoting it lowers the quorum from 3 to 2.
        let four = [mgr("m1"), mgr("m2"), mgr("m3"), away(mgr("m4"), 9 * MIN)];
        let d = decide(5, &four);
        assert!(matches!(&d, Decision::Demote { node, .. } if node == "m4"), "{d:?}");
        assert!(reason(&d).ends_with("there is no worker to promote: demoting it lowers the quorum from 3 to 2"), "{d:?}");
        assert!(keeps_majority(&four, "m1", &d));
    }

    #[test]
    fn nothing_is_done_once_quorum_is_lost_and_the_survivors_are_named() {
        let nodes = [mgr("m1"), away(mgr("m2"), 30 * MIN), away(mgr("m3"), 30 * MIN), wkr("w1"), wkr("w2")];
        let d = decide(3, &nodes);
        assert_eq!(
            reason(&d),
            "quorum is lost: 1 of 3 managers are reachable (surviving: m1-host (m1)); the autopilot changes nothing without a \
             quorum: bring managers back, or run 'shoal swarm init --force-new-cluster' on a surviving manager"
        );
        assert!(matches!(d, Decision::Wait { .. }));
    }

    #[test]
    fn a_flapping_worker_is_not_chosen() {
        let nodes = [mgr("m1"), mgr("m2"), away(mgr("m3"), 6 * MIN), wkr("w1"), wkr("w2")];
        let s = Settings::new(3);
        let mut flaps = Flaps::new(s.flaps_per_hour_max);
        for i in 0..4 {
            flaps.record_unreachable("w1", NOW - 50 * MIN + i * MIN);
        }
        let d = plan(&s, "m1", &nodes, &flaps, NOW);
        assert!(matches!(&d, Decision::Promote { node, .. } if node == "w2"), "{d:?}");
        assert_eq!(
            eligibility(&s, &nodes[3], &flaps, NOW),
            Err("w1-host (w1) is flapping: unreachable 4 times in the last hour (more than 3)".into())
        );
        // Three times is not more than three; and an hour later the episodes are forgotten.
        assert!(eligibility(&s, &nodes[3], &flaps, NOW + 10 * MIN).is_ok());
        // Among two eligible workers, the one that flapped less goes first.
        flaps.record_unreachable("w1", NOW - MIN);
        flaps.forget("w1");
        flaps.record_unreachable("w1", NOW - MIN);
        assert_eq!(flaps.count_last_hour("w1", NOW), 1);
        let d = plan(&s, "m1", &nodes, &flaps, NOW);
        assert!(matches!(&d, Decision::Promote { node, .. } if node == "w2"), "{d:?}");
    }

    #[test]
    fn managers_spread_over_both_sites() {
        let site = |n: NodeFacts, s: &str| NodeFacts { labels: [("site".to_string(), s.to_string())].into(), ..n };
        let mut nodes = vec![site(mgr("m1"), "a"), site(wkr("w1"), "a"), site(wkr("w2"), "a"), site(wkr("w3"), "b"), site(wkr("w4"), "b")];
        let s = Settings { spread_label: Some("node.labels.site".into()), ..Settings::new(3) };
        let flaps = Flaps::new(s.flaps_per_hour_max);
        let first = plan(&s, "m1", &nodes, &flaps, NOW);
        assert_eq!(
            first,
            Decision::Promote {
                node: "w3".into(),
                reason: "3 managers wanted, 1 healthy: promoting w3-host (w3) (site=b has 0 of the managers)".into()
            }
        );
        for _ in 0..10 {
            let d = plan(&s, "m1", &nodes, &flaps, NOW);
            apply(&mut nodes, &d);
        }
        let sites: BTreeSet<&str> = nodes.iter().filter(|n| n.role == NodeRole::Manager).map(|n| n.labels["site"].as_str()).collect();
        let managers = nodes.iter().filter(|n| n.role == NodeRole::Manager).count();
        assert_eq!((managers, sites), (3, ["a", "b"].into()));
        // Site a loses power for good: its managers are replaced from site b, and the swarm keeps a quorum.
        for n in nodes.iter_mut().filter(|n| n.labels["site"] == "a" && n.id != "m1") {
            *n = away(n.clone(), 10 * MIN);
        }
        for _ in 0..10 {
            let d = plan(&s, "m1", &nodes, &flaps, NOW);
            assert!(keeps_majority(&nodes, "m1", &d), "{d:?}");
            apply(&mut nodes, &d);
        }
        let healthy: Vec<&str> = nodes.iter().filter(|n| n.role == NodeRole::Manager).map(|n| n.id.as_str()).collect();
        assert_eq!(healthy, ["m1", "w3", "w4"]);
    }

    #[test]
    fn healthy_managers_crowded_on_one_site_are_spread_without_a_failure() {
        let site = |n: NodeFacts, s: &str| NodeFacts { labels: [("site".to_string(), s.to_string())].into(), ..n };
        let mut nodes = vec![site(mgr("m1"), "a"), site(mgr("m2"), "a"), site(mgr("m3"), "a"), site(wkr("w1"), "b"), site(wkr("w2"), "b")];
        let s = Settings { spread_label: Some("site".into()), ..Settings::new(3) };
        let flaps = Flaps::new(s.flaps_per_hour_max);
        let d = plan(&s, "m1", &nodes, &flaps, NOW);
        assert_eq!(
            d,
            Decision::Promote {
                node: "w1".into(),
                reason: "spreading the managers over site: site=a has 3 of 3; promoting w1-host (w1) (site=b has 0 of the managers), then demoting one of site=a".into()
            }
        );
        apply(&mut nodes, &d);
        let d = plan(&s, "m1", &nodes, &flaps, NOW);
        assert!(matches!(&d, Decision::Demote { node, .. } if node == "m3"), "the crowded site's highest id, never the leader: {d:?}");
        apply(&mut nodes, &d);
        assert_eq!(plan(&s, "m1", &nodes, &flaps, NOW), Decision::Nothing, "2 and 1: as spread as three can be over two sites");
        // Without a spread label, healthy managers stay where they are.
        let crowded = vec![mgr("m1"), mgr("m2"), mgr("m3"), wkr("w1")];
        assert_eq!(plan(&Settings::new(3), "m1", &crowded, &flaps, NOW), Decision::Nothing);
    }

    #[test]
    fn a_learner_catching_up_blocks_every_other_change() {
        let mut learner = mgr("w1");
        learner.raft = Raft::Learner { caught_up: false };
        let nodes = [mgr("m1"), mgr("m2"), away(mgr("m3"), 20 * MIN), learner, wkr("w2"), wkr("w3")];
        let d = decide(5, &nodes);
        assert!(matches!(&d, Decision::Wait { reason } if reason.contains("w1-host (w1) is catching up")), "{d:?}");
        // A promotion lost before it could vote is undone (it is no voter: quorum is untouched).
        let nodes = [mgr("m1"), mgr("m2"), mgr("m3"), away(nodes[3].clone(), 6 * MIN), wkr("w2")];
        let d = decide(5, &nodes);
        assert_eq!(
            d,
            Decision::Demote {
                node: "w1".into(),
                reason: "w1-host (w1) was promoted but has been unreachable for 6m before it could vote: demoting it".into()
            }
        );
    }

    #[test]
    fn a_demoted_voter_that_cannot_leave_raft_safely_is_unstuck() {
        // m3 was demoted (a surplus), then m2 died: removing m3 now would leave m1 alone of m1, m2.
        let demoted = NodeFacts { role: NodeRole::Worker, ..mgr("m3") };
        let mut nodes = vec![mgr("m1"), away(mgr("m2"), 2 * MIN), demoted];
        assert!(reason(&decide(1, &nodes)).ends_with("waiting for the unreachable managers to return or to be lost"));
        // Once m2 is lost, it goes first (its removal is safe, and makes m3's safe).
        nodes[1] = away(mgr("m2"), 6 * MIN);
        let d = decide(1, &nodes);
        assert_eq!(
            d,
            Decision::Demote {
                node: "m2".into(),
                reason: "m3-host (m3) was demoted, but removing it from raft now would leave fewer reachable managers than \
                         a quorum: demoting m2-host (m2), unreachable for 6m, first"
                    .into()
            }
        );
        assert!(keeps_majority(&nodes, "m1", &d));
        // The only manager is the lost one, and the leader is demoted too: m3 becomes a manager again.
        let nodes = [NodeFacts { role: NodeRole::Worker, ..mgr("m1") }, away(mgr("m2"), 6 * MIN), nodes[2].clone()];
        let d = decide(1, &nodes);
        assert!(matches!(&d, Decision::Promote { node, reason } if node == "m1" && reason.ends_with("making it a manager again")), "{d:?}");
    }

    #[test]
    fn n_managers_already_healthy_means_nothing_to_do() {
        let nodes = [mgr("m1"), mgr("m2"), mgr("m3"), wkr("w1"), wkr("w2")];
        assert_eq!(decide(3, &nodes), Decision::Nothing);
        assert_eq!(decide(1, &[mgr("m1"), wkr("w1")]), Decision::Nothing);
    }

    #[test]
    fn a_manager_back_before_manager_lost_after_is_not_replaced() {
        let mut nodes = vec![mgr("m1"), mgr("m2"), away(mgr("m3"), 4 * MIN + 59_000), wkr("w1")];
        assert_eq!(
            decide(3, &nodes),
            Decision::Wait { reason: "m3-host (m3) has been unreachable for 4m59s: it is replaced if still unreachable after 5m".into() }
        );
        nodes[2] = mgr("m3");
        assert_eq!(decide(3, &nodes), Decision::Nothing);
    }

    #[test]
    fn too_many_managers_lose_one_from_the_crowded_site_never_the_leader() {
        let site = |n: NodeFacts, s: &str| NodeFacts { labels: [("site".to_string(), s.to_string())].into(), ..n };
        let nodes = [site(mgr("m1"), "a"), site(mgr("m2"), "a"), site(mgr("m3"), "b"), site(mgr("m4"), "a"), site(mgr("m5"), "b")];
        let s = Settings { spread_label: Some("site".into()), ..Settings::new(3) };
        let d = plan(&s, "m4", &nodes, &Flaps::new(3), NOW);
        assert_eq!(
            d,
            Decision::Demote {
                node: "m2".into(),
                reason: "5 managers, 3 wanted: demoting m2-host (m2) (site=a has 3 of the managers)".into()
            }
        );
        // Not while a manager is unreachable, however briefly.
        let mut nodes = nodes.to_vec();
        nodes[4] = away(nodes[4].clone(), MIN);
        assert!(matches!(plan(&s, "m4", &nodes, &Flaps::new(3), NOW), Decision::Wait { .. }));
    }

    #[test]
    fn the_leader_is_never_demoted_even_if_reported_unreachable() {
        let nodes = [away(mgr("m1"), 60 * MIN), mgr("m2"), mgr("m3"), mgr("m4")];
        let d = decide(3, &nodes);
        assert!(matches!(&d, Decision::Demote { node, .. } if node != "m1"), "{d:?}");
    }

    #[test]
    fn decisions_do_not_depend_on_the_order_of_the_facts() {
        let nodes = vec![mgr("m1"), away(mgr("m2"), 7 * MIN), mgr("m3"), wkr("w3"), wkr("w2"), wkr("w1")];
        let d = decide(3, &nodes);
        assert!(matches!(&d, Decision::Promote { node, .. } if node == "w1"), "lowest id breaks the tie: {d:?}");
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(decide(3, &reversed), d);
        assert_eq!(decide(3, &nodes), d);
    }

    #[test]
    fn eligibility_says_why_not() {
        let s = Settings::new(3);
        let flaps = Flaps::new(3);
        let check = |n: NodeFacts| eligibility(&s, &n, &flaps, NOW);
        assert_eq!(check(wkr("w1")), Ok(()));
        assert_eq!(check(mgr("m1")), Err("m1-host (m1) is already a manager".into()));
        assert_eq!(check(NodeFacts { raft: Raft::Voter, ..wkr("w1") }), Err("w1-host (w1) was demoted and is still leaving raft".into()));
        assert_eq!(check(away(wkr("w1"), 90_000)), Err("w1-host (w1) has been unreachable for 1m30s".into()));
        assert_eq!(check(NodeFacts { state: NodeState::Disconnected, ..wkr("w1") }), Err("w1-host (w1) is disconnected".into()));
        assert_eq!(check(NodeFacts { availability: Availability::Drain, ..wkr("w1") }), Err("w1-host (w1) is drained".into()));
        assert_eq!(check(NodeFacts { availability: Availability::Pause, ..wkr("w1") }), Err("w1-host (w1) is paused".into()));
        let full = format!("{DISK_FULL_WARNING} /var/lib/shoal has 0 bytes free");
        assert_eq!(
            check(NodeFacts { warnings: vec!["no overlay".into(), full.clone()], ..wkr("w1") }),
            Err(format!("w1-host (w1) reports a full disk ({full})"))
        );
        let low = format!("{DISK_LOW_WARNING} data dir /var/lib/shoal has under 256.0 MiB free");
        assert_eq!(
            check(NodeFacts { warnings: vec![low.clone()], ..wkr("w1") }),
            Err(format!("w1-host (w1) is low on disk space ({low})"))
        );
        let memory = format!("{MEMORY_LOW_WARNING} under 64.0 MiB of memory available");
        assert_eq!(
            check(NodeFacts { warnings: vec![memory.clone()], ..wkr("w1") }),
            Err(format!("w1-host (w1) is low on memory ({memory})"))
        );
        let long_id = "x".repeat(25);
        assert_eq!(check(NodeFacts { hostname: String::new(), ..mgr(&long_id) }), Err(format!("{} is already a manager", "x".repeat(12))));
    }

    #[test]
    fn facts_come_from_the_node_record() {
        let mut record = Node {
            id: "w1".into(),
            meta: Default::default(),
            role: NodeRole::Worker,
            availability: Availability::Drain,
            labels: [("site".to_string(), "a".to_string())].into(),
            description: Default::default(),
            state: NodeState::Ready,
            addr: "10.0.0.1:2377".into(),
            manager_addr: String::new(),
            attachments: Vec::new(),
        };
        record.description.hostname = "w1-host".into();
        record.description.warnings = vec![format!("{DISK_FULL_WARNING} /var/lib/shoal")];
        let facts = NodeFacts::from_node(&record, Raft::Absent, Some(NOW - MIN));
        let expected = NodeFacts {
            availability: Availability::Drain,
            warnings: record.description.warnings.clone(),
            unreachable_since_ms: Some(NOW - MIN),
            ..node("w1", NodeRole::Worker, Some("a"))
        };
        assert_eq!(facts, expected);
    }

    #[test]
    fn settings_are_bounded() {
        assert_eq!(Settings::new(3).validate(), Ok(()));
        for n in [0, 2, 4, 9] {
            assert_eq!(Settings::new(n).validate(), Err(SettingsError::Managers(n)));
        }
        let lost = Settings { manager_lost_after_ms: 999, ..Settings::new(3) };
        assert_eq!(lost.validate(), Err(SettingsError::LostAfter(999)));
        let flaps = Settings { flaps_per_hour_max: FLAPS_PER_HOUR_MAX + 1, ..Settings::new(3) };
        assert_eq!(flaps.validate(), Err(SettingsError::Flaps(FLAPS_PER_HOUR_MAX + 1)));
        let label = Settings { spread_label: Some("node.labels.".into()), ..Settings::new(3) };
        assert_eq!(label.validate(), Err(SettingsError::EmptyLabel));
        assert_eq!(Settings::new(4).validate().unwrap_err().to_string(), "--managers must be odd and between 1 and 7 (got 4)");
        // Invalid settings change nothing.
        assert_eq!(
            plan(&Settings::new(4), "m1", &[mgr("m1"), wkr("w1")], &Flaps::new(3), NOW),
            Decision::Wait { reason: "the autopilot changes nothing: --managers must be odd and between 1 and 7 (got 4)".into() }
        );
    }

    #[test]
    fn flaps_are_bounded() {
        let mut flaps = Flaps::new(3);
        for t in 0..1_000 {
            flaps.record_unreachable("w1", NOW + t);
        }
        assert_eq!(flaps.count_last_hour("w1", NOW + 1_000), 4, "K + 1 kept");
        assert_eq!(flaps.nodes["w1"].len(), 4);
        for i in 0..FLAP_NODES_MAX + 10 {
            flaps.record_unreachable(&format!("n{i}"), NOW + 2_000 + i as u64);
        }
        assert_eq!(flaps.nodes_tracked(), FLAP_NODES_MAX);
        assert_eq!(flaps.count_last_hour("w1", NOW + 2_000), 0, "the node with the oldest episode went first");
        assert_eq!(flaps.count_last_hour(&format!("n{}", FLAP_NODES_MAX + 9), NOW + 2_000 + FLAP_WINDOW_MS), 1);
        assert_eq!(Flaps::new(u32::MAX).keep, FLAPS_PER_HOUR_MAX as usize + 1);
    }

    #[test]
    fn bad_facts_never_panic_and_never_name_an_unfit_target() {
        let mut rng = Rng::from_seed(20);
        let roles = [NodeRole::Worker, NodeRole::Manager];
        let states = [NodeState::Unknown, NodeState::Down, NodeState::Ready, NodeState::Disconnected];
        let avail = [Availability::Active, Availability::Pause, Availability::Drain];
        for _ in 0..5_000 {
            let count = rng.range(0, 8) as usize;
            let nodes: Vec<NodeFacts> = (0..count)
                .map(|_| NodeFacts {
                    id: format!("n{}", rng.range(0, 6)),
                    hostname: if rng.chance(1, 4) { String::new() } else { "h".into() },
                    role: roles[rng.range(0, 2) as usize],
                    state: states[rng.range(0, 4) as usize],
                    availability: avail[rng.range(0, 3) as usize],
                    labels: BTreeMap::new(),
                    warnings: Vec::new(),
                    raft: [Raft::Absent, Raft::Voter, Raft::Learner { caught_up: rng.chance(1, 2) }][rng.range(0, 3) as usize],
                    unreachable_since_ms: rng.chance(1, 2).then(|| rng.next_u64()),
                })
                .collect();
            let settings = Settings { managers: rng.range(0, 9) as u8, spread_label: Some("x".into()), ..Settings::new(3) };
            let leader = format!("n{}", rng.range(0, 6));
            let now_ms = rng.next_u64();
            let mut flaps = Flaps::new(rng.range(0, 200) as u32);
            flaps.record_unreachable("n1", rng.next_u64());
            let d = plan(&settings, &leader, &nodes, &flaps, now_ms);
            let target = |id: &str| nodes.iter().find(|n| n.id == id);
            match &d {
                Decision::Promote { node, .. } => {
                    let n = target(node).expect("promotes a listed node");
                    let back =
                        (n.role, n.raft, n.unreachable_since_ms.is_none() || n.id == leader) == (NodeRole::Worker, Raft::Voter, true);
                    assert!(back || eligibility(&settings, n, &flaps, now_ms).is_ok(), "{d:?}");
                }
                Decision::Demote { node, .. } => {
                    assert_eq!(target(node).map(|n| n.role), Some(NodeRole::Manager));
                    assert_ne!(node, &leader);
                    assert!(keeps_majority(&nodes, &leader, &d), "{d:?}");
                }
                Decision::Wait { reason } => assert!(!reason.is_empty()),
                Decision::Nothing => {}
            }
        }
    }

    #[test]
    fn the_watch_counts_from_the_leaders_start_and_flaps_only_after_being_seen() {
        let mut w = Watch::new(FLAPS_PER_HOUR_DEFAULT);
        w.lead();
        w.observe([("a", true), ("b", false)], 1_000);
        assert_eq!((w.unreachable_since_ms("a"), w.unreachable_since_ms("b")), (None, Some(1_000)));
        w.observe([("a", true), ("b", false)], 9_000);
        assert_eq!(w.unreachable_since_ms("b"), Some(1_000), "since the first observation, not the last");
        assert_eq!(w.flaps().count_last_hour("b", 9_000), 0, "never seen under this leadership: not a flap");
        // a goes and comes back four times: four flaps.
        for i in 0..4u64 {
            w.observe([("a", false), ("b", false)], 10_000 + i * 2_000);
            w.observe([("a", true), ("b", false)], 11_000 + i * 2_000);
        }
        assert_eq!(w.flaps().count_last_hour("a", 20_000), 4);
        assert_eq!(w.unreachable_since_ms("a"), None);
        // A new leadership restarts the clocks, not the history; a removed node is forgotten.
        w.lead();
        w.observe([("a", true)], 30_000);
        assert_eq!(w.flaps().count_last_hour("a", 30_000), 4);
        assert_eq!(w.unreachable_since_ms("b"), None);
        w.set_flaps_per_hour_max(1);
        assert_eq!(w.flaps().count_last_hour("a", 30_000), 2, "keeps what a smaller bound needs");
        w.observe([("c", true)], 31_000);
        assert_eq!(w.flaps().nodes_tracked(), 0);
    }

    #[test]
    fn a_slow_or_flaky_leader_hands_over_once_in_a_while_and_only_to_a_successor() {
        let mut lat = SyncLatency::default();
        for _ in 0..SYNC_SAMPLES_MAX / 2 - 1 {
            lat.record(900);
        }
        assert_eq!(lat.p50_ms(), None, "too few writes to judge");
        lat.record(900);
        assert_eq!(lat.p50_ms(), Some(900));
        for _ in 0..SYNC_SAMPLES_MAX {
            lat.record(3);
        }
        assert_eq!(lat.p50_ms(), Some(3), "only the latest writes count");
        let f = LeaderFacts {
            sync_p50_ms: Some(812),
            other_voters: 2,
            flapping_voters: 0,
            successor: Some(("m2".into(), "m2-host (m2)".into())),
            last_handover_ms: None,
        };
        let (to, why) = handover(&f, NOW).expect("slow disk");
        assert_eq!(to, "m2");
        assert_eq!(why, "this manager's disk is slow (fsync median 812 ms, over 500 ms): handing leadership to m2-host (m2)");
        assert_eq!(handover(&LeaderFacts { last_handover_ms: Some(NOW - MIN), ..f.clone() }, NOW), None, "held");
        assert!(handover(&LeaderFacts { last_handover_ms: Some(NOW - 11 * MIN), ..f.clone() }, NOW).is_some());
        assert_eq!(handover(&LeaderFacts { successor: None, ..f.clone() }, NOW), None, "nobody to take it");
        let fast = LeaderFacts { sync_p50_ms: Some(4), ..f.clone() };
        assert_eq!(handover(&fast, NOW), None);
        let (_, why) = handover(&LeaderFacts { flapping_voters: 2, ..fast.clone() }, NOW).expect("flaky links");
        assert!(why.starts_with("this manager's links are flaky (2 of the 2 other managers"), "{why}");
        assert_eq!(handover(&LeaderFacts { flapping_voters: 1, ..fast.clone() }, NOW), None, "one flaky peer is its own fault");
        assert_eq!(handover(&LeaderFacts { flapping_voters: 1, other_voters: 1, ..fast }, NOW), None, "two voters: cannot tell");
    }

    /// A swarm of simulated nodes whose raft membership follows roles through
    /// the real [`membership::next_step`], the leader running [`plan`] every tick.
    struct Sim {
        nodes: Vec<SimNode>,
        leader: Option<usize>,
        now_ms: u64,
        flaps: Flaps,
        held_removals: usize,
        actions: usize,
    }

    struct SimNode {
        facts: NodeFacts,
        alive: bool,
    }

    impl Sim {
        fn random(rng: &mut Rng) -> Sim {
            let count = rng.range(1, 10) as usize;
            let managers = rng.range(1, count.min(7) as u64 + 1) as usize;
            let sites = [None, Some("a"), Some("b")];
            let mut nodes: Vec<SimNode> = (0..count)
                .map(|i| {
                    let role = if i < managers { NodeRole::Manager } else { NodeRole::Worker };
                    let mut facts = node(&format!("n{i}"), role, sites[rng.range(0, 3) as usize]);
                    if rng.chance(1, 6) {
                        facts.availability = Availability::Drain;
                    }
                    if rng.chance(1, 8) {
                        facts.warnings.push(format!("{DISK_FULL_WARNING} /var/lib/shoal"));
                    }
                    SimNode { facts, alive: true }
                })
                .collect();
            for n in nodes.iter_mut().skip(1) {
                if rng.chance(1, 5) {
                    n.alive = false;
                    n.facts.state = NodeState::Down;
                    n.facts.unreachable_since_ms = Some(NOW - rng.range(0, 10 * MIN));
                }
            }
            Sim { nodes, leader: Some(0), now_ms: NOW, flaps: Flaps::new(FLAPS_PER_HOUR_DEFAULT), held_removals: 0, actions: 0 }
        }

        fn facts(&self) -> Vec<NodeFacts> {
            self.nodes.iter().map(|n| n.facts.clone()).collect()
        }

        fn index(&self, id: &str) -> usize {
            self.nodes.iter().position(|n| n.facts.id == id).expect("a known node")
        }

        fn removal_keeps_quorum(&self, i: usize) -> bool {
            let voters = self.nodes.iter().enumerate().filter(|(j, n)| *j != i && n.facts.raft == Raft::Voter);
            let reachable = voters.clone().filter(|(_, n)| n.alive).count();
            reachable >= majority(voters.count())
        }

        fn quorum(&self) -> bool {
            let voters = self.nodes.iter().filter(|n| n.facts.raft == Raft::Voter);
            let reachable = voters.clone().filter(|n| n.alive).count();
            reachable >= majority(voters.count())
        }

        /// A random node dies (one time in three) or, if dead, returns: about a quarter are down.
        fn kill_or_revive(&mut self, rng: &mut Rng) {
            let i = rng.range(0, self.nodes.len() as u64) as usize;
            let kill = rng.chance(1, 3);
            let n = &mut self.nodes[i];
            if n.alive && kill {
                n.alive = false;
                n.facts.state = NodeState::Down;
                n.facts.unreachable_since_ms = Some(self.now_ms);
                self.flaps.record_unreachable(&n.facts.id, self.now_ms);
            } else if !n.alive {
                n.alive = true;
                n.facts.state = NodeState::Ready;
                n.facts.unreachable_since_ms = None;
            }
        }

        /// The leader stays while alive and a voter with a quorum; else the lowest alive voter leads.
        fn elect(&mut self) {
            let ok = |s: &Sim, i: usize| s.nodes[i].alive && s.nodes[i].facts.raft == Raft::Voter;
            if !self.quorum() {
                self.leader = None;
            } else if !self.leader.is_some_and(|l| ok(self, l)) {
                self.leader = (0..self.nodes.len()).find(|i| ok(self, *i));
            }
        }

        /// One step of [`membership::next_step`]; live learners catch up.
        fn membership(&mut self, leader: usize) {
            let raft_id = |i: usize| i as u64 + 1;
            let (commit, ids) = (9, 0..self.nodes.len());
            let with = |r: fn(Raft) -> bool| ids.clone().filter(|i| r(self.nodes[*i].facts.raft)).map(raft_id).collect::<Vec<_>>();
            let status = Status {
                id: raft_id(leader),
                term: 2,
                vote: raft_id(leader),
                role: Role::Leader,
                leader: raft_id(leader),
                commit,
                applied: commit,
                last_index: commit,
                snapshot_index: 0,
                voters: with(|r| r == Raft::Voter),
                learners: with(|r| matches!(r, Raft::Learner { .. })),
                progress: ids
                    .clone()
                    .map(|i| PeerProgress {
                        id: raft_id(i),
                        // A dead node's log stops where it died; a learner catching up holds less.
                        match_index: match (self.nodes[i].alive, self.nodes[i].facts.raft) {
                            (_, Raft::Learner { caught_up: false }) => 0,
                            (false, _) => commit - 1,
                            (true, _) => commit,
                        },
                        next_index: commit + 1,
                        state: ProgressState::Replicate,
                        recent_active: self.nodes[i].alive,
                        inflight_msgs: 0,
                    })
                    .collect(),
            };
            let managers: BTreeSet<u64> = ids.clone().filter(|i| self.nodes[*i].facts.role == NodeRole::Manager).map(raft_id).collect();
            let index = |id: u64| id as usize - 1;
            let alive = |id: u64| self.nodes[index(id)].alive;
            match membership::next_step(&status, &managers, alive) {
                Some(Step::AddLearner(id)) => self.nodes[index(id)].facts.raft = Raft::Learner { caught_up: false },
                Some(Step::PromoteLearner(id)) => self.nodes[index(id)].facts.raft = Raft::Voter,
                Some(Step::Remove(id)) => {
                    assert!(self.removal_keeps_quorum(index(id)), "membership removed {id} unsafely");
                    self.nodes[index(id)].facts.raft = Raft::Absent;
                }
                Some(Step::TransferLeader(id)) => self.leader = Some(index(id)),
                None => {
                    if self.nodes.iter().any(|n| n.facts.role == NodeRole::Worker && n.facts.raft != Raft::Absent) {
                        self.held_removals += 1;
                    }
                }
            }
            for n in self.nodes.iter_mut().filter(|n| n.alive) {
                if n.facts.raft == (Raft::Learner { caught_up: false }) {
                    n.facts.raft = Raft::Learner { caught_up: true };
                }
            }
        }

        /// One tick: raft membership, then the autopilot's decision, checked and carried out.
        fn tick(&mut self, settings: &Settings, seed: u64) {
            self.elect();
            let Some(leader) = self.leader else { return };
            self.membership(leader);
            self.elect();
            let Some(leader) = self.leader else { return };
            let leader_id = self.nodes[leader].facts.id.clone();
            let facts = self.facts();
            let d = plan(settings, &leader_id, &facts, &self.flaps, self.now_ms);
            let mut reversed = facts.clone();
            reversed.reverse();
            assert_eq!(plan(settings, &leader_id, &reversed, &self.flaps, self.now_ms), d, "seed {seed}: order matters");
            let settled = |n: &NodeFacts| matches!((n.role, n.raft), (NodeRole::Manager, Raft::Voter) | (NodeRole::Worker, Raft::Absent));
            let (node, role) = match &d {
                Decision::Promote { node, .. } => (node, NodeRole::Manager),
                Decision::Demote { node, .. } => (node, NodeRole::Worker),
                Decision::Wait { .. } | Decision::Nothing => return,
            };
            assert!(keeps_majority(&facts, &leader_id, &d), "seed {seed}: {d:?} leaves no reachable majority");
            // In flight elsewhere: only demoted voters raft cannot remove yet (see `unstick`).
            let stuck =
                |n: &NodeFacts| (n.role, n.raft) == (NodeRole::Worker, Raft::Voter) && !self.removal_keeps_quorum(self.index(&n.id));
            let unsettled: Vec<&NodeFacts> = facts.iter().filter(|n| &n.id != node && !settled(n)).collect();
            assert!(
                unsettled.is_empty() || unsettled.iter().all(|n| stuck(n)),
                "seed {seed}: {d:?} while a change is in flight: {unsettled:?}"
            );
            let before: Vec<NodeRole> = self.nodes.iter().map(|n| n.facts.role).collect();
            let target = self.nodes.iter_mut().find(|n| &n.facts.id == node).expect("a known node");
            assert_ne!(target.facts.role, role, "seed {seed}: {d:?} changes nothing");
            if role == NodeRole::Manager && target.facts.raft == Raft::Absent {
                assert!(eligibility(settings, &target.facts, &self.flaps, self.now_ms).is_ok(), "seed {seed}: {d:?}");
            } else if role == NodeRole::Manager {
                assert!(
                    target.alive && target.facts.raft == Raft::Voter,
                    "seed {seed}: {d:?}: only a stuck demoted voter is promoted back"
                );
            }
            assert_ne!(node, &leader_id, "seed {seed}: the leader demoted");
            target.facts.role = role;
            self.actions += 1;
            let changed = self.nodes.iter().zip(before).filter(|(n, r)| n.facts.role != *r).count();
            assert_eq!(changed, 1, "seed {seed}: one change per step");
        }

        /// Healthy managers (live voters), and whether every manager is one and nothing is in flight.
        fn healthy(&self) -> (usize, bool) {
            let healthy = self.nodes.iter().filter(|n| n.alive && n.facts.role == NodeRole::Manager && n.facts.raft == Raft::Voter).count();
            let settled = self.nodes.iter().all(|n| match n.facts.role {
                NodeRole::Manager => n.alive && n.facts.raft == Raft::Voter,
                NodeRole::Worker => n.facts.raft == Raft::Absent,
            });
            (healthy, settled)
        }
    }

    /// 2,000 random swarms of 1-9 nodes: failures and returns for a while,
    /// then none. Every step: at most one change, none while one is in
    /// flight, the reachable voters a majority after it. Afterwards, with
    /// at least N nodes able to manage, N healthy managers within a bound.
    #[test]
    fn random_swarms_keep_quorum_and_converge_to_n_managers() {
        const CONVERGE_TICKS_MAX: usize = 80;
        let (mut converged, mut slowest, mut lost, mut held, mut actions) = (0, 0, 0, 0, 0);
        for seed in 0..2_000u64 {
            let mut rng = Rng::from_seed(seed);
            let mut sim = Sim::random(&mut rng);
            // Mostly a target the swarm can meet, sometimes more than it has nodes.
            let targets = if rng.chance(3, 4) { (sim.nodes.len() as u64).div_ceil(2).min(4) } else { 4 };
            let settings = Settings {
                managers: [1, 3, 5, 7][rng.range(0, targets) as usize],
                spread_label: rng.chance(1, 2).then(|| "site".to_string()),
                ..Settings::new(3)
            };
            for _ in 0..rng.range(0, 60) {
                if rng.chance(1, 2) {
                    sim.kill_or_revive(&mut rng);
                }
                sim.now_ms += rng.range(0, 2 * MIN);
                sim.tick(&settings, seed);
            }
            // No more failures. Nodes able to manage: live managers, and live workers eligible now
            // (or soon: flaps only age out from here on).
            sim.elect();
            if sim.leader.is_none() {
                lost += 1;
                continue;
            }
            let able = sim
                .nodes
                .iter()
                .filter(|n| n.alive)
                .filter(|n| n.facts.role == NodeRole::Manager || health(&settings, &n.facts, &sim.flaps, sim.now_ms).is_ok())
                .count();
            let mut done = None;
            for t in 0..CONVERGE_TICKS_MAX {
                sim.now_ms += MIN;
                let dump =
                    |sim: &Sim| sim.nodes.iter().map(|n| (n.facts.id.clone(), n.alive, n.facts.role, n.facts.raft)).collect::<Vec<_>>();
                let before = dump(&sim);
                let d = sim.leader.map(|l| plan(&settings, &sim.nodes[l].facts.id, &sim.facts(), &sim.flaps, sim.now_ms));
                sim.tick(&settings, seed);
                assert!(sim.quorum(), "seed {seed}: quorum lost without a failure: {before:?} {d:?} {:?} {:?}", dump(&sim), sim.leader);
                if sim.healthy() == (settings.managers as usize, true) {
                    done = Some(t);
                    break;
                }
            }
            held += sim.held_removals;
            actions += sim.actions;
            if able >= settings.managers as usize {
                let t = done.unwrap_or_else(|| {
                    let d = sim.leader.map(|l| plan(&settings, &sim.nodes[l].facts.id, &sim.facts(), &sim.flaps, sim.now_ms));
                    let state: Vec<_> = sim.nodes.iter().map(|n| (&n.facts.id, n.alive, n.facts.role, n.facts.raft)).collect();
                    panic!("seed {seed}: {} managers wanted, {able} able, got {:?}: {state:?}, {d:?}", settings.managers, sim.healthy())
                });
                converged += 1;
                slowest = slowest.max(t);
            }
        }
        eprintln!("autopilot: {converged} of 2000 swarms converged (slowest in {slowest} ticks), {lost} lost quorum to failures, {actions} changes, {held} unsafe removals held");
        assert!(converged > 1_000, "too few swarms exercised convergence: {converged}");
        assert!(actions > 3_000, "too few changes: {actions}");
        assert!(slowest < CONVERGE_TICKS_MAX, "{slowest}");
    }
}
