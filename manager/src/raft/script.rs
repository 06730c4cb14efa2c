//! A tiny text DSL for readable raft scenarios (in the spirit of etcd's
//! interaction tests): scripts in `testdata/*.txt` hold commands and their
//! expected output; `UPDATE_EXPECT=1 cargo test -p shoal-manager` rewrites
//! the expectations, which are then reviewed like code.
//!
//! File format: blocks separated by blank lines; each block is optional
//! `#` comment lines, one command line, `----`, and the output lines.
//!
//! Commands: `add-nodes N` (bootstrap voters 1..N), `add-node ID` (empty
//! joining node), `campaign ID`, `tick ID N`, `tick-all N`, `stabilize`,
//! `propose ID DATA`, `conf ID add-voter|add-learner|remove|promote NODE`,
//! `transfer ID TO`, `read-index ID CTX`, `compact ID INDEX`, `partition A B
//! / C D`, `isolate ID`, `heal`, `crash ID`, `restart ID`, `status`,
//! `log ID`, `progress ID`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use super::config::Config;
use super::node::{Persisted, Raft, Ready};
use super::sim::Disk;
use super::types::{ConfChange, EntryKind, Message, NodeId};

struct HNode {
    raft: Option<Raft>,
    disk: Disk,
    applied: Vec<String>,
}

/// The scenario world: nodes, a FIFO network and partitions.
pub(crate) struct Harness {
    nodes: BTreeMap<NodeId, HNode>,
    queue: VecDeque<Message>,
    blocked: BTreeSet<(NodeId, NodeId)>,
}

fn cfg(id: NodeId) -> Config {
    Config { max_snapshot_chunk_bytes: 16, snapshot_keep_entries: 1, ..Config::lan(id, id * 7919) }
}

impl Harness {
    pub(crate) fn new() -> Harness {
        Harness { nodes: BTreeMap::new(), queue: VecDeque::new(), blocked: BTreeSet::new() }
    }

    fn raft(&mut self, id: NodeId) -> Result<&mut Raft, String> {
        self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()).ok_or_else(|| format!("no live node {id}"))
    }

    /// Handles every pending Ready of node `id`; returns event lines.
    fn process(&mut self, id: NodeId, out: &mut Vec<String>) {
        loop {
            let Some(n) = self.nodes.get_mut(&id) else {
                return;
            };
            let Some(raft) = n.raft.as_mut() else { return };
            if !raft.has_ready() {
                return;
            }
            let rd: Ready = raft.ready();
            let term = raft.term();
            if let Some(ss) = rd.soft_state {
                out.push(format!("n{id}: {:?} term={term} leader={}", ss.role, ss.leader));
            }
            n.disk.persist(&rd);
            self.queue.extend(rd.messages.iter().cloned());
            if let Some(s) = &rd.snapshot {
                out.push(format!("n{id}: installs snapshot at {}@t{}", s.meta.index, s.meta.term));
                n.applied = String::from_utf8_lossy(&s.data).split(',').filter(|x| !x.is_empty()).map(str::to_string).collect();
            }
            for e in &rd.committed_entries {
                match &e.kind {
                    EntryKind::Normal(d) if !d.is_empty() => n.applied.push(String::from_utf8_lossy(d).into()),
                    EntryKind::Conf { change: Some(c), conf } => {
                        out.push(format!("n{id}: applies {c:?} at {} -> voters={:?} learners={:?}", e.index, conf.voters, conf.learners))
                    }
                    _ => {}
                }
            }
            for r in &rd.read_states {
                out.push(format!("n{id}: read {} at index {}", String::from_utf8_lossy(&r.ctx), r.index));
            }
            raft.advance(rd);
            raft.log.check_full();
        }
    }

    fn stabilize(&mut self, out: &mut Vec<String>) {
        for _ in 0..100_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in &ids {
                self.process(*id, out);
            }
            let Some(m) = self.queue.pop_front() else {
                return;
            };
            if self.blocked.contains(&(m.from, m.to)) {
                continue;
            }
            let to = m.to;
            if let Some(raft) = self.nodes.get_mut(&to).and_then(|n| n.raft.as_mut()) {
                if let Err(e) = raft.step(m) {
                    out.push(format!("n{to}: step error: {e}"));
                }
            }
        }
        out.push("stabilize did not converge".into());
    }

    /// Runs one command line; returns its output lines.
    pub(crate) fn run(&mut self, line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |k: usize| -> Result<u64, String> {
            words.get(k).and_then(|w| w.parse().ok()).ok_or_else(|| format!("argument {k} must be a number"))
        };
        let r: Result<(), String> = (|| {
            match words.first().copied().unwrap_or("") {
                "add-nodes" => {
                    let n = num(1)?;
                    let voters: Vec<NodeId> = (1..=n).collect();
                    for id in 1..=n {
                        let raft = Raft::bootstrap(cfg(id), &voters).map_err(|e| e.to_string())?;
                        self.nodes.insert(id, HNode { raft: Some(raft), disk: Disk::default(), applied: Vec::new() });
                        self.process(id, &mut out);
                    }
                }
                "add-node" => {
                    let id = num(1)?;
                    let raft = Raft::restore(cfg(id), Persisted::default()).map_err(|e| e.to_string())?;
                    self.nodes.insert(id, HNode { raft: Some(raft), disk: Disk::default(), applied: Vec::new() });
                }
                "campaign" => {
                    let id = num(1)?;
                    self.raft(id)?.campaign().map_err(|e| e.to_string())?;
                    self.process(id, &mut out);
                }
                "tick" => {
                    let (id, n) = (num(1)?, num(2)?);
                    for _ in 0..n {
                        self.raft(id)?.tick();
                        self.process(id, &mut out);
                    }
                }
                "tick-all" => {
                    for _ in 0..num(1)? {
                        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                        for id in ids {
                            if let Ok(r) = self.raft(id) {
                                r.tick();
                            }
                        }
                        self.stabilize(&mut out);
                    }
                }
                "stabilize" => self.stabilize(&mut out),
                "propose" => {
                    let id = num(1)?;
                    let data = words.get(2).ok_or("propose needs data")?.as_bytes().to_vec();
                    let index = self.raft(id)?.propose(data).map_err(|e| e.to_string())?;
                    out.push(format!("index {index}"));
                    self.process(id, &mut out);
                }
                "conf" => {
                    let id = num(1)?;
                    let node = num(3)?;
                    let change = match words.get(2).copied() {
                        Some("add-voter") => ConfChange::AddVoter(node),
                        Some("add-learner") => ConfChange::AddLearner(node),
                        Some("remove") => ConfChange::RemoveNode(node),
                        Some("promote") => ConfChange::PromoteLearner(node),
                        _ => return Err("unknown conf change".into()),
                    };
                    let index = self.raft(id)?.propose_conf_change(change).map_err(|e| e.to_string())?;
                    out.push(format!("index {index}"));
                    self.process(id, &mut out);
                }
                "transfer" => {
                    let (id, to) = (num(1)?, num(2)?);
                    self.raft(id)?.transfer_leader(to).map_err(|e| e.to_string())?;
                    self.process(id, &mut out);
                }
                "read-index" => {
                    let id = num(1)?;
                    let ctx = words.get(2).ok_or("read-index needs a context")?.as_bytes().to_vec();
                    self.raft(id)?.read_index(ctx).map_err(|e| e.to_string())?;
                    self.process(id, &mut out);
                }
                "compact" => {
                    let (id, index) = (num(1)?, num(2)?);
                    let n = self.nodes.get(&id).ok_or("no such node")?;
                    // The "state machine" is the applied data list; snapshot at `index`
                    // is only exact when index == applied, which scripts ensure.
                    let data = n.applied.join(",").into_bytes();
                    self.raft(id)?.compact(index, data).map_err(|e| e.to_string())?;
                    self.process(id, &mut out);
                }
                "partition" => {
                    self.blocked.clear();
                    let split = words.iter().position(|w| *w == "/").ok_or("partition needs /")?;
                    let parse = |ws: &[&str]| -> Vec<NodeId> { ws.iter().filter_map(|w| w.parse().ok()).collect() };
                    let (a, b) = (parse(&words[1..split]), parse(&words[split + 1..]));
                    for x in &a {
                        for y in &b {
                            self.blocked.insert((*x, *y));
                            self.blocked.insert((*y, *x));
                        }
                    }
                }
                "isolate" => {
                    let id = num(1)?;
                    let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                    for o in ids {
                        if o != id {
                            self.blocked.insert((id, o));
                            self.blocked.insert((o, id));
                        }
                    }
                }
                "heal" => self.blocked.clear(),
                "crash" => {
                    let id = num(1)?;
                    let n = self.nodes.get_mut(&id).ok_or("no such node")?;
                    n.disk.crash();
                    n.raft = None;
                }
                "restart" => {
                    let id = num(1)?;
                    let n = self.nodes.get_mut(&id).ok_or("no such node")?;
                    let raft = Raft::restore(cfg(id), n.disk.p.clone()).map_err(|e| e.to_string())?;
                    n.applied =
                        String::from_utf8_lossy(&n.disk.p.snapshot.data).split(',').filter(|x| !x.is_empty()).map(str::to_string).collect();
                    n.raft = Some(raft);
                    self.process(id, &mut out);
                }
                "status" => {
                    for (id, n) in &self.nodes {
                        let Some(r) = &n.raft else {
                            out.push(format!("n{id}: crashed"));
                            continue;
                        };
                        let s = r.status();
                        out.push(format!(
                            "n{id}: {:?} term={} leader={} commit={} applied={} last={} snap={} voters={:?} learners={:?} data=[{}]",
                            s.role,
                            s.term,
                            s.leader,
                            s.commit,
                            s.applied,
                            s.last_index,
                            s.snapshot_index,
                            s.voters,
                            s.learners,
                            n.applied.join(",")
                        ));
                    }
                }
                "log" => {
                    let id = num(1)?;
                    let r = self.raft(id)?;
                    let mut line = format!("n{id}: prev={}@t{}", r.log.prev_index, r.log.prev_term);
                    for e in &r.log.entries {
                        let d = match &e.kind {
                            EntryKind::Normal(d) if d.is_empty() => "noop".to_string(),
                            EntryKind::Normal(d) => String::from_utf8_lossy(d).into(),
                            EntryKind::Conf { .. } => "conf".to_string(),
                        };
                        let _ = write!(line, " {}@t{}:{d}", e.index, e.term);
                    }
                    out.push(line);
                }
                "progress" => {
                    let id = num(1)?;
                    for p in self.raft(id)?.status().progress {
                        out.push(format!(
                            "n{}: match={} next={} {:?} active={}",
                            p.id, p.match_index, p.next_index, p.state, p.recent_active
                        ));
                    }
                }
                other => return Err(format!("unknown command {other}")),
            }
            Ok(())
        })();
        if let Err(e) = r {
            out.push(format!("error: {e}"));
        }
        if out.is_empty() {
            out.push("ok".into());
        }
        out
    }
}

/// Runs a script file and returns its rewritten text (expectations replaced
/// by actual output).
pub(crate) fn run_script(text: &str) -> String {
    let mut h = Harness::new();
    let mut result = String::new();
    let mut lines = text.lines().peekable();
    loop {
        // Skip blank lines between blocks.
        while lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        let Some(_) = lines.peek() else { break };
        let mut command = None;
        for l in lines.by_ref() {
            if l.starts_with('#') {
                result.push_str(l);
                result.push('\n');
            } else {
                command = Some(l.to_string());
                break;
            }
        }
        let Some(command) = command else { break };
        // Skip the old expectation: `----` then lines up to a blank line.
        if lines.peek() == Some(&"----") {
            lines.next();
            while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
                lines.next();
            }
        }
        result.push_str(&command);
        result.push_str("\n----\n");
        for o in h.run(&command) {
            result.push_str(&o);
            result.push('\n');
        }
        result.push('\n');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_match_expectations() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/raft/testdata");
        let update = std::env::var("UPDATE_EXPECT").is_ok_and(|v| v == "1");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let mut failed = Vec::new();
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "txt")) {
            let old = std::fs::read_to_string(f).unwrap();
            let new = run_script(&old);
            if update {
                std::fs::write(f, &new).unwrap();
            } else if old != new {
                failed.push(f.display().to_string());
                eprintln!("--- {} expected\n{old}\n+++ actual\n{new}", f.display());
            }
        }
        assert!(failed.is_empty(), "scripts differ (UPDATE_EXPECT=1 to rewrite): {failed:?}");
        assert!(files.len() >= 5);
    }
}
