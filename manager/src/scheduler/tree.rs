//! The placement-preference tree of one task group: nodes grouped by the
//! values of the spread descriptors, so each task goes to the value with
//! the fewest tasks of the service, level by level (swarmkit's
//! `decisionTree`).
//!
//! Level `i` splits by the `i`-th descriptor; a leaf holds the eligible
//! nodes of one value path, best rank first. Every branch counts the live
//! tasks of the service on all its nodes, eligible or not, as swarmkit's
//! does. A branch is *open* while some leaf below it has a node left; each
//! branch keeps its open children ordered by (tasks, value), so a placement
//! walks down the least-loaded open path in O(depth × log width) and
//! updates the counts on the way back. swarmkit splits a group's tasks over
//! branches in one go (random order for the remainder); taking the least
//! loaded branch one task at a time fills them to the same levels, with
//! ties going to the smaller value so equal inputs give equal placements.
//! Without descriptors the tree is a single leaf: the plain spread.

use std::collections::{BTreeMap, BTreeSet};

/// A candidate node's rank, best first: failure penalty, tasks of the
/// service, tasks overall, node id.
pub(super) type Rank<'a> = (u64, u64, u64, &'a str);

/// See the module docs.
pub(super) struct Tree<'a> {
    /// Index 0 is the root; a child always has a larger index than its parent.
    branches: Vec<Branch<'a>>,
    levels: usize,
    /// The branches of the last [`Tree::pop`], root first.
    path: Vec<usize>,
}

struct Branch<'a> {
    parent: usize,
    depth: usize,
    value: &'a str,
    /// Live tasks of the service on every node under this branch.
    tasks: u64,
    /// Children by value (inner branches).
    children: BTreeMap<&'a str, usize>,
    /// Children that still have a node to offer, least loaded first (inner branches).
    open: BTreeSet<(u64, &'a str, usize)>,
    /// Eligible nodes, best first (leaves).
    nodes: BTreeSet<Rank<'a>>,
}

impl<'a> Branch<'a> {
    fn new(parent: usize, depth: usize, value: &'a str) -> Branch<'a> {
        Branch { parent, depth, value, tasks: 0, children: BTreeMap::new(), open: BTreeSet::new(), nodes: BTreeSet::new() }
    }
}

impl<'a> Tree<'a> {
    /// A tree splitting by `levels` descriptors.
    pub(super) fn new(levels: usize) -> Tree<'a> {
        Tree { branches: vec![Branch::new(0, 0, "")], levels, path: Vec::with_capacity(levels + 1) }
    }

    /// Adds a node by its descriptor values (one per level) with its live
    /// tasks of the service, and its rank if it passed the node-only filters.
    pub(super) fn insert(&mut self, values: &[&'a str], tasks: u64, rank: Option<Rank<'a>>) {
        assert_eq!(values.len(), self.levels, "one value per descriptor");
        let mut b = 0;
        self.branches[0].tasks += tasks;
        for (depth, value) in values.iter().enumerate() {
            b = match self.branches[b].children.get(value) {
                Some(&c) => c,
                None => {
                    let c = self.branches.len();
                    self.branches.push(Branch::new(b, depth + 1, value));
                    self.branches[b].children.insert(value, c);
                    c
                }
            };
            self.branches[b].tasks += tasks;
        }
        if let Some(r) = rank {
            self.branches[b].nodes.insert(r);
        }
    }

    /// Opens every branch that has a node below it; call once after the inserts.
    pub(super) fn seal(&mut self) {
        // Children have larger indexes than parents, so walking backwards
        // settles each branch before its parent looks at it.
        for b in (1..self.branches.len()).rev() {
            if self.has_room(b) {
                let Branch { parent, tasks, value, .. } = self.branches[b];
                self.branches[parent].open.insert((tasks, value, b));
            }
        }
    }

    /// Takes the best node of the least-loaded open path out of its leaf.
    /// Follow with [`Tree::placed`] or [`Tree::rejected`].
    pub(super) fn pop(&mut self) -> Option<Rank<'a>> {
        self.path.clear();
        let mut b = 0;
        self.path.push(b);
        while self.branches[b].depth < self.levels {
            let &(_, _, c) = self.branches[b].open.first()?;
            b = c;
            self.path.push(b);
        }
        self.branches[b].nodes.pop_first()
    }

    /// The popped node took a task: it goes back with its new rank, and
    /// every branch on its path counts one more task.
    pub(super) fn placed(&mut self, rank: Rank<'a>) {
        let Some(&leaf) = self.path.last() else { return };
        self.branches[leaf].nodes.insert(rank);
        self.branches[0].tasks += 1;
        for w in 1..self.path.len() {
            let (parent, b) = (self.path[w - 1], self.path[w]);
            let Branch { tasks, value, .. } = self.branches[b];
            self.branches[parent].open.remove(&(tasks, value, b));
            self.branches[parent].open.insert((tasks + 1, value, b));
            self.branches[b].tasks = tasks + 1;
        }
    }

    /// The popped node could not take the task and stays out; branches left
    /// without nodes close.
    pub(super) fn rejected(&mut self) {
        for w in (1..self.path.len()).rev() {
            let b = self.path[w];
            if self.has_room(b) {
                return;
            }
            let Branch { parent, tasks, value, .. } = self.branches[b];
            self.branches[parent].open.remove(&(tasks, value, b));
        }
    }

    fn has_room(&self, b: usize) -> bool {
        let br = &self.branches[b];
        if br.depth == self.levels {
            !br.nodes.is_empty()
        } else {
            !br.open.is_empty()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tree from `(values, tasks, eligible)` nodes (the id is the
    /// position), takes `n` placements and returns each one's id, or `-`
    /// when nothing is left.
    fn check(levels: usize, nodes: &[(&[&'static str], u64, bool)], n: usize, expect: &str) {
        let ids: Vec<String> = (0..nodes.len()).map(|i| format!("n{i}")).collect();
        let mut tree = Tree::new(levels);
        for (i, (values, tasks, eligible)) in nodes.iter().enumerate() {
            tree.insert(values, *tasks, eligible.then_some((0, *tasks, *tasks, ids[i].as_str())));
        }
        tree.seal();
        let mut got = Vec::new();
        for _ in 0..n {
            match tree.pop() {
                Some((p, mine, total, id)) => {
                    tree.placed((p, mine + 1, total + 1, id));
                    got.push(id.to_string());
                }
                None => got.push("-".into()),
            }
        }
        assert_eq!(got.join(" "), expect);
    }

    #[test]
    fn fills_the_least_loaded_value_first() {
        // Zone a has 3 tasks already, zone b none: b catches up, then ties go to the smaller value.
        let nodes: &[(&[&str], u64, bool)] = &[(&["a"], 3, true), (&["b"], 0, true), (&["b"], 0, true)];
        check(1, nodes, 6, "n1 n2 n1 n0 n2 n0");
        // Without levels it is the plain node spread.
        let nodes: &[(&[&str], u64, bool)] = &[(&[], 3, true), (&[], 0, true), (&[], 0, true)];
        check(0, nodes, 4, "n1 n2 n1 n2");
    }

    #[test]
    fn ineligible_nodes_count_but_never_take_tasks() {
        // Zone a's only eligible node is n1, but n0 (not eligible) runs 2 tasks there.
        let nodes: &[(&[&str], u64, bool)] = &[(&["a"], 2, false), (&["a"], 0, true), (&["b"], 0, true)];
        check(1, nodes, 4, "n2 n2 n1 n2");
        // A value with no eligible node never opens; nothing at all gives `-`.
        let nodes: &[(&[&str], u64, bool)] = &[(&["a"], 0, false), (&["b"], 0, true)];
        check(1, nodes, 2, "n1 n1");
        let nodes: &[(&[&str], u64, bool)] = &[(&["a"], 0, false)];
        check(1, nodes, 1, "-");
    }

    #[test]
    fn levels_nest() {
        // zone/rack: zone a has racks 1 and 2, zone b has rack 1 only.
        let nodes: &[(&[&str], u64, bool)] =
            &[(&["a", "1"], 0, true), (&["a", "2"], 0, true), (&["b", "1"], 0, true), (&["b", "1"], 0, true)];
        check(2, nodes, 4, "n0 n2 n1 n3");
    }

    #[test]
    fn rejected_nodes_close_their_branches() {
        let nodes: &[(&[&str], u64, bool)] = &[(&["a"], 0, true), (&["b"], 0, true)];
        let ids = ["n0", "n1"];
        let mut tree = Tree::new(1);
        for (i, (values, tasks, _)) in nodes.iter().enumerate() {
            tree.insert(values, *tasks, Some((0, 0, 0, ids[i])));
        }
        tree.seal();
        assert_eq!(tree.pop().map(|r| r.3), Some("n0"));
        tree.rejected();
        // Zone a is closed now; b takes everything.
        for _ in 0..3 {
            let r = tree.pop().expect("zone b has a node");
            assert_eq!(r.3, "n1");
            tree.placed((r.0, r.1 + 1, r.2 + 1, r.3));
        }
        assert_eq!(tree.pop().map(|r| r.3), Some("n1"));
        tree.rejected();
        assert_eq!(tree.pop(), None);
    }
}
