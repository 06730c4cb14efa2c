//! Pure core of `service logs` across nodes: which node to ask for which
//! tasks' log bytes, and how their answers (or their silence) become one
//! reply.
//!
//! The leader (or a lone manager) plans a [`Gather`] from its state: the
//! service's tasks grouped per node into [`Ask`]s of at most
//! `LOGS_TASKS_PER_REQUEST_MAX` tasks, each with its share of the reply's
//! byte budget. The shell (`swarm::logs`) reads this node's own share, sends
//! the others as `Wire::LogsRequest`, feeds answers back with
//! [`Gather::handle_read`] and failures with [`Gather::handle_failure`], and
//! at the deadline calls [`Gather::finish`]: asks still open become
//! warnings. Nothing here touches files, links or clocks.
//!
//! Invariants:
//! - every chunk's `source` (`service.slot.taskid@host`) is made here from
//!   the manager's state, never taken from a node;
//! - a node's answer counts only for the tasks it was asked about, and only
//!   once (late or repeated answers are ignored);
//! - the cursor of a task whose node did not answer is carried over
//!   unchanged, so the next poll neither repeats nor skips its lines;
//! - a reply holds at most `LOGS_GATHER_BYTES_MAX` log bytes; what a bound
//!   cut is left for the next poll and flagged with `more`.

use super::service::slot_name;
use shoal_manager::state::State;
use shoal_shared::api::{LogChunk, LogCursor, Reply};
use shoal_shared::frame::CONTROL_FRAME_BYTES_MAX;
use shoal_shared::types::Service;
use shoal_shared::wire::{LOGS_REPLY_BYTES_MAX, LOGS_TASKS_PER_REQUEST_MAX, WIRE_MESSAGE_BYTES_MAX};
use std::collections::{BTreeMap, BTreeSet};

/// How long a manager waits for the nodes' answers before it replies with
/// what arrived (and names the nodes that did not answer).
pub(crate) const LOGS_GATHER_TIMEOUT_MS: u64 = 2_500;
/// Log bytes in one gathered reply at most (shared among the asks).
pub(crate) const LOGS_GATHER_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// The smallest share of the budget an ask gets, however many there are.
pub(crate) const LOGS_ASK_BYTES_MIN: u64 = 64 * 1024;

// The gathered reply travels in one control frame, and in one wire message
// when a follower forwarded the request: both keep room for ids and cursors.
const _: () = assert!(LOGS_GATHER_BYTES_MAX * 2 <= CONTROL_FRAME_BYTES_MAX as u64);
const _: () = assert!(LOGS_GATHER_BYTES_MAX * 2 <= WIRE_MESSAGE_BYTES_MAX as u64);
const _: () = assert!(LOGS_ASK_BYTES_MIN <= LOGS_REPLY_BYTES_MAX);

/// Which tasks a gather covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every node's (the leader, or a node outside any swarm).
    Swarm,
    /// Only this node's: a manager that cannot reach the leader.
    ThisNode,
}

/// One node's share of a gather: what to put in its `LogsRequest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ask {
    pub(crate) node_id: String,
    pub(crate) task_ids: Vec<String>,
    pub(crate) tail_lines: Option<u64>,
    /// The incoming cursor, restricted to `task_ids`.
    pub(crate) cursor: Vec<LogCursor>,
    pub(crate) bytes_max: u64,
}

/// What a node read (the body of a `LogsReply`, or a local read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogsRead {
    pub(crate) chunks: Vec<LogChunk>,
    pub(crate) cursor: Vec<LogCursor>,
    pub(crate) more: bool,
}

/// Why a node's logs are missing from a reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Missing {
    #[error("the node is down")]
    Down,
    #[error("no link to the node; is its daemon running and its swarm port reachable?")]
    NoLink,
    #[error("the link to the node closed before it answered")]
    LinkClosed,
    #[error("no answer within {LOGS_GATHER_TIMEOUT_MS} ms")]
    Timeout,
    #[error("too many log requests in flight; retry in a moment")]
    Busy,
    #[error("the node could not read them: {0}")]
    Refused(String),
}

/// One `service logs` request being gathered.
#[derive(Debug)]
pub(crate) struct Gather {
    /// Every task the gather covers, with its position (output order).
    order: BTreeMap<String, usize>,
    sources: BTreeMap<String, String>,
    /// Starts as the incoming cursor; answers move it forward.
    cursor: BTreeMap<String, u64>,
    asks: Vec<AskState>,
    chunks: Vec<LogChunk>,
    bytes: u64,
    warnings: Vec<String>,
    more: bool,
}

#[derive(Debug)]
struct AskState {
    /// How warnings name the node.
    label: String,
    task_ids: BTreeSet<String>,
    open: bool,
}

impl Gather {
    /// Plans the gather of `service`'s logs as seen in `state` by node
    /// `self_id`. Tasks not bound to a known node have no log to read.
    pub(crate) fn plan(
        state: &State,
        service: &Service,
        self_id: &str,
        tail_lines: Option<u64>,
        cursor: &[LogCursor],
        scope: Scope,
    ) -> (Gather, Vec<Ask>) {
        let incoming: BTreeMap<&str, u64> = cursor.iter().map(|c| (c.task_id.as_str(), c.offset)).collect();
        let mut g = Gather {
            order: BTreeMap::new(),
            sources: BTreeMap::new(),
            cursor: BTreeMap::new(),
            asks: Vec::new(),
            chunks: Vec::new(),
            bytes: 0,
            warnings: Vec::new(),
            more: false,
        };
        let mut per_node: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut elsewhere = false;
        for t in state.tasks_of(&service.id) {
            let Some(node) = state.nodes.get(&t.node_id) else { continue };
            let source = format!("{}.{}.{}@{}", service.spec.name, slot_name(t), &t.id[..t.id.len().min(12)], node.description.hostname);
            g.order.insert(t.id.clone(), g.order.len());
            g.sources.insert(t.id.clone(), source);
            if let Some(&o) = incoming.get(t.id.as_str()) {
                g.cursor.insert(t.id.clone(), o);
            }
            if scope == Scope::ThisNode && t.node_id != self_id {
                elsewhere = true;
                continue;
            }
            per_node.entry(t.node_id.as_str()).or_default().push(t.id.as_str());
        }
        if elsewhere {
            g.warnings.push("cannot reach the swarm leader: showing only the logs of tasks on this node".into());
        }
        let mut asks = Vec::new();
        for (node_id, tasks) in per_node {
            for batch in tasks.chunks(LOGS_TASKS_PER_REQUEST_MAX) {
                g.asks.push(AskState {
                    label: node_label(state, node_id),
                    task_ids: batch.iter().map(|t| t.to_string()).collect(),
                    open: true,
                });
                asks.push(Ask {
                    node_id: node_id.to_string(),
                    task_ids: batch.iter().map(|t| t.to_string()).collect(),
                    tail_lines,
                    cursor: batch
                        .iter()
                        .filter_map(|t| incoming.get(t).map(|&offset| LogCursor { task_id: t.to_string(), offset }))
                        .collect(),
                    bytes_max: 0,
                });
            }
        }
        let share = ask_bytes_max(asks.len());
        for a in &mut asks {
            a.bytes_max = share;
        }
        (g, asks)
    }

    /// Takes ask `ask`'s answer. Chunks and cursors of tasks it was not
    /// asked about are dropped; a chunk over the reply's budget is dropped
    /// with its cursor (read again next time) and sets `more`.
    pub(crate) fn handle_read(&mut self, ask: usize, read: LogsRead) {
        let Some(a) = self.asks.get_mut(ask).filter(|a| a.open) else { return };
        a.open = false;
        let mut cut = BTreeSet::new();
        for c in read.chunks {
            if !a.task_ids.contains(&c.task_id) || c.data.is_empty() || cut.contains(&c.task_id) {
                continue;
            }
            let len = c.data.len() as u64;
            if self.bytes + len > LOGS_GATHER_BYTES_MAX {
                self.more = true;
                cut.insert(c.task_id);
                continue;
            }
            self.bytes += len;
            let source = self.sources.get(&c.task_id).cloned().unwrap_or_default();
            self.chunks.push(LogChunk { task_id: c.task_id, source, data: c.data });
        }
        for c in read.cursor {
            if a.task_ids.contains(&c.task_id) && !cut.contains(&c.task_id) {
                self.cursor.insert(c.task_id, c.offset);
            }
        }
        self.more |= read.more;
    }

    /// Ask `ask` will not be answered: its node is named in a warning and its
    /// tasks keep their cursors.
    pub(crate) fn handle_failure(&mut self, ask: usize, why: &Missing) {
        let Some(a) = self.asks.get_mut(ask).filter(|a| a.open) else { return };
        a.open = false;
        let w = format!("no logs from node {}: {why}", a.label);
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// Whether every ask was answered or failed.
    pub(crate) fn is_done(&self) -> bool {
        self.asks.iter().all(|a| !a.open)
    }

    /// The reply: chunks in task order, the cursor of every task covered,
    /// and a warning for each node that did not answer (asks still open
    /// count as timed out).
    pub(crate) fn finish(mut self) -> Reply {
        for i in 0..self.asks.len() {
            self.handle_failure(i, &Missing::Timeout);
        }
        let order = &self.order;
        // Stable: several chunks of one task (never today) would keep their order.
        self.chunks.sort_by_key(|c| order.get(&c.task_id).copied().unwrap_or(usize::MAX));
        let mut cursor: Vec<LogCursor> = self.cursor.into_iter().map(|(task_id, offset)| LogCursor { task_id, offset }).collect();
        cursor.sort_by_key(|c| order.get(&c.task_id).copied().unwrap_or(usize::MAX));
        Reply::ServiceLogs { chunks: self.chunks, cursor, warnings: self.warnings, more: self.more }
    }
}

/// Each ask's share of the reply's byte budget when there are `asks` of them.
fn ask_bytes_max(asks: usize) -> u64 {
    (LOGS_GATHER_BYTES_MAX / asks.max(1) as u64).clamp(LOGS_ASK_BYTES_MIN, LOGS_REPLY_BYTES_MAX)
}

/// How warnings name a node: its hostname, with its short id when another
/// node has the same hostname (cloned edge images often do).
fn node_label(state: &State, node_id: &str) -> String {
    let short = &node_id[..node_id.len().min(12)];
    let Some(host) = state.nodes.get(node_id).map(|n| n.description.hostname.as_str()).filter(|h| !h.is_empty()) else {
        return short.to_string();
    };
    if state.nodes.values().filter(|n| n.description.hostname == host).count() > 1 {
        format!("{host} (ID {short})")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_shared::task::TaskState;
    use shoal_shared::types::{Availability, Meta, Node, NodeDescription, NodeRole, NodeState, ServiceSpec, Task, TaskStatus};
    use std::fmt::Write;

    /// A state with nodes `(id, hostname)` and service `web` with tasks `(id, slot, node)`.
    fn state(nodes: &[(&str, &str)], tasks: &[(&str, u64, &str)]) -> (State, Service) {
        let mut st = State::default();
        for (id, host) in nodes {
            let n = Node {
                id: id.to_string(),
                meta: Meta::default(),
                role: NodeRole::Worker,
                availability: Availability::Active,
                labels: Default::default(),
                description: NodeDescription { hostname: host.to_string(), ..Default::default() },
                state: NodeState::Ready,
                addr: String::new(),
                manager_addr: String::new(),
                attachments: Vec::new(),
            };
            st.nodes.insert(n.id.clone(), n);
        }
        let spec = ServiceSpec::new("web", "busybox");
        let svc = Service {
            id: "s".into(),
            meta: Meta::default(),
            spec: spec.clone(),
            previous_spec: None,
            update_status: None,
            endpoint: Default::default(),
        };
        st.services.insert(svc.id.clone(), svc.clone());
        for (id, slot, node) in tasks {
            let t = Task {
                id: id.to_string(),
                meta: Meta::default(),
                service_id: "s".into(),
                slot: *slot,
                node_id: node.to_string(),
                spec: spec.task.clone(),
                service_version: 1,
                desired_state: TaskState::Running,
                status: TaskStatus::new(TaskState::Running, 0, ""),
                not_before: 0,
                attempt: 0,
                networks: Vec::new(),
            };
            st.tasks.insert(t.id.clone(), t);
        }
        (st, svc)
    }

    fn cur(v: &[(&str, u64)]) -> Vec<LogCursor> {
        v.iter().map(|(t, o)| LogCursor { task_id: t.to_string(), offset: *o }).collect()
    }

    fn read(chunks: &[(&str, &str)], cursor: &[(&str, u64)], more: bool) -> LogsRead {
        LogsRead {
            chunks: chunks
                .iter()
                .map(|(t, d)| LogChunk { task_id: t.to_string(), source: "forged".into(), data: d.as_bytes().to_vec() })
                .collect(),
            cursor: cur(cursor),
            more,
        }
    }

    fn render_asks(asks: &[Ask]) -> String {
        let mut out = String::new();
        for (i, a) in asks.iter().enumerate() {
            let c: Vec<String> = a.cursor.iter().map(|c| format!("{}@{}", c.task_id, c.offset)).collect();
            writeln!(
                out,
                "ask {i} node {} tasks {} tail {:?} cursor [{}] bytes {}",
                a.node_id,
                a.task_ids.join(","),
                a.tail_lines,
                c.join(","),
                a.bytes_max
            )
            .unwrap();
        }
        out
    }

    fn render_reply(r: &Reply) -> String {
        let Reply::ServiceLogs { chunks, cursor, warnings, more } = r else { panic!("{r:?}") };
        let mut out = String::new();
        for c in chunks {
            writeln!(out, "{} | {}", c.source, String::from_utf8_lossy(&c.data).trim_end()).unwrap();
        }
        let c: Vec<String> = cursor.iter().map(|c| format!("{}@{}", c.task_id, c.offset)).collect();
        writeln!(out, "cursor [{}] more {more}", c.join(",")).unwrap();
        for w in warnings {
            writeln!(out, "warning: {w}").unwrap();
        }
        out
    }

    fn check(got: String, expect: &str) {
        assert_eq!(got.trim(), expect.trim(), "\n--- got ---\n{got}");
    }

    #[test]
    fn tasks_are_split_per_node_with_their_cursors() {
        let (st, svc) = state(
            &[("m1", "mgr"), ("w1", "worker-1"), ("w2", "worker-2")],
            &[("t1", 1, "w1"), ("t2", 2, "w2"), ("t3", 3, "m1"), ("t4", 4, "w1"), ("t5", 5, ""), ("t6", 6, "gone")],
        );
        let (g, asks) = Gather::plan(&st, &svc, "m1", Some(5), &cur(&[("t1", 10), ("t3", 7), ("zz", 1)]), Scope::Swarm);
        check(
            render_asks(&asks),
            "
ask 0 node m1 tasks t3 tail Some(5) cursor [t3@7] bytes 1048576
ask 1 node w1 tasks t1,t4 tail Some(5) cursor [t1@10] bytes 1048576
ask 2 node w2 tasks t2 tail Some(5) cursor [] bytes 1048576",
        );
        assert!(!g.is_done());
        // Nobody answered: cursors are carried (only for tasks still in the service), every node is named.
        check(
            render_reply(&g.finish()),
            "
cursor [t1@10,t3@7] more false
warning: no logs from node mgr: no answer within 2500 ms
warning: no logs from node worker-1: no answer within 2500 ms
warning: no logs from node worker-2: no answer within 2500 ms",
        );
    }

    #[test]
    fn big_nodes_get_several_asks_and_the_budget_is_shared() {
        let ids: Vec<String> = (0..(LOGS_TASKS_PER_REQUEST_MAX * 40 + 1)).map(|i| format!("t{i:05}")).collect();
        let tasks: Vec<(&str, u64, &str)> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i as u64 + 1, "w1")).collect();
        let (st, svc) = state(&[("w1", "w")], &tasks);
        let (_, asks) = Gather::plan(&st, &svc, "m1", None, &[], Scope::Swarm);
        assert_eq!(asks.len(), 41);
        assert!(asks.iter().all(|a| a.task_ids.len() <= LOGS_TASKS_PER_REQUEST_MAX && a.node_id == "w1"));
        assert_eq!(asks.iter().map(|a| a.task_ids.len()).sum::<usize>(), ids.len());
        assert!(asks.iter().all(|a| a.bytes_max == LOGS_GATHER_BYTES_MAX / 41), "41 asks share 8 MiB");
        assert_eq!(ask_bytes_max(1), LOGS_REPLY_BYTES_MAX, "one reply never exceeds its wire bound");
        assert_eq!(ask_bytes_max(8), LOGS_REPLY_BYTES_MAX);
        assert_eq!(ask_bytes_max(10_000), LOGS_ASK_BYTES_MIN, "a floor keeps many asks useful (the merge enforces the total)");
    }

    #[test]
    fn answers_merge_in_task_order_with_sources_from_the_state() {
        let (st, svc) =
            state(&[("m1", "mgr"), ("w1", "worker-1"), ("w2", "worker-2")], &[("t1", 1, "w1"), ("t2", 2, "w2"), ("t3", 3, "m1")]);
        let (mut g, asks) = Gather::plan(&st, &svc, "m1", None, &cur(&[("t2", 40)]), Scope::Swarm);
        assert_eq!(asks.iter().map(|a| a.node_id.as_str()).collect::<Vec<_>>(), ["m1", "w1", "w2"]);
        // w2 answers first, then w1 (with a stray task it was not asked about), then m1 reads nothing new.
        g.handle_read(2, read(&[("t2", "two\n")], &[("t2", 44)], false));
        g.handle_read(1, read(&[("t1", "one\n"), ("t3", "stolen\n")], &[("t1", 4), ("t3", 999)], true));
        assert!(!g.is_done());
        g.handle_read(0, read(&[], &[("t3", 12)], false));
        assert!(g.is_done());
        // A repeated (late) answer changes nothing.
        g.handle_read(1, read(&[("t1", "again\n")], &[("t1", 100)], false));
        check(
            render_reply(&g.finish()),
            "
web.1.t1@worker-1 | one
web.2.t2@worker-2 | two
cursor [t1@4,t2@44,t3@12] more true",
        );
    }

    #[test]
    fn silent_nodes_are_named_once_and_keep_their_cursors() {
        let (st, svc) = state(
            &[("m1", "mgr"), ("w1", "edge"), ("w2", "edge"), ("w3", "worker-3")],
            &[("t1", 1, "w1"), ("t2", 2, "w2"), ("t3", 3, "w3"), ("t4", 4, "m1")],
        );
        let (mut g, asks) = Gather::plan(&st, &svc, "m1", None, &cur(&[("t1", 5), ("t2", 6), ("t3", 7)]), Scope::Swarm);
        assert_eq!(asks.len(), 4);
        g.handle_read(0, read(&[("t4", "local\n")], &[("t4", 6)], false));
        g.handle_failure(1, &Missing::Down);
        g.handle_failure(1, &Missing::NoLink);
        g.handle_failure(2, &Missing::LinkClosed);
        g.handle_read(2, read(&[("t2", "too late\n")], &[("t2", 100)], false));
        g.handle_failure(3, &Missing::Refused("too many log reads".into()));
        assert!(g.is_done());
        check(
            render_reply(&g.finish()),
            "
web.4.t4@mgr | local
cursor [t1@5,t2@6,t3@7,t4@6] more false
warning: no logs from node edge (ID w1): the node is down
warning: no logs from node edge (ID w2): the link to the node closed before it answered
warning: no logs from node worker-3: the node could not read them: too many log reads",
        );
    }

    #[test]
    fn a_manager_without_leader_shows_its_own_tasks_and_says_so() {
        let (st, svc) = state(&[("m2", "mgr-2"), ("w1", "worker-1")], &[("t1", 1, "w1"), ("t2", 2, "m2")]);
        let (mut g, asks) = Gather::plan(&st, &svc, "m2", Some(1), &cur(&[("t1", 9)]), Scope::ThisNode);
        check(render_asks(&asks), "ask 0 node m2 tasks t2 tail Some(1) cursor [] bytes 1048576");
        g.handle_read(0, read(&[("t2", "mine\n")], &[("t2", 5)], false));
        check(
            render_reply(&g.finish()),
            "
web.2.t2@mgr-2 | mine
cursor [t1@9,t2@5] more false
warning: cannot reach the swarm leader: showing only the logs of tasks on this node",
        );
        // All tasks local: nothing to warn about.
        let (st, svc) = state(&[("m2", "mgr-2")], &[("t2", 2, "m2")]);
        let (mut g, _) = Gather::plan(&st, &svc, "m2", None, &[], Scope::ThisNode);
        g.handle_read(0, LogsRead::default());
        assert!(!render_reply(&g.finish()).contains("warning"));
    }

    #[test]
    fn the_reply_budget_cuts_whole_chunks_and_keeps_their_cursors() {
        let (st, svc) = state(&[("w1", "a"), ("w2", "b")], &[("t1", 1, "w1"), ("t2", 2, "w2")]);
        let (mut g, _) = Gather::plan(&st, &svc, "m1", None, &cur(&[("t2", 3)]), Scope::Swarm);
        let big = "x".repeat((LOGS_GATHER_BYTES_MAX - 10) as usize);
        g.handle_read(0, read(&[("t1", &big)], &[("t1", big.len() as u64)], false));
        // A node that sends more than the budget allows (hostile or buggy) gets cut, not trusted.
        g.handle_read(1, read(&[("t2", "0123456789abcdef\n")], &[("t2", 20)], false));
        let Reply::ServiceLogs { chunks, cursor, more, .. } = g.finish() else { panic!() };
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].source, "web.1.t1@a");
        assert_eq!(cursor, cur(&[("t1", big.len() as u64), ("t2", 3)]));
        assert!(more);
    }

    #[test]
    fn an_empty_service_is_done_at_once() {
        let (st, svc) = state(&[("m1", "mgr")], &[]);
        let (g, asks) = Gather::plan(&st, &svc, "m1", None, &[], Scope::Swarm);
        assert!(asks.is_empty() && g.is_done());
        check(render_reply(&g.finish()), "cursor [] more false");
    }
}
