//! The in-memory raft log: entries after the compaction point, the snapshot
//! they follow, and the bookkeeping of what is durable, committed and applied.
//!
//! The core keeps the whole uncompacted log in memory (compaction bounds it
//! to roughly `snapshot_interval_entries + snapshot_keep_entries` entries), so
//! it never reads storage: storage is written through `Ready` and read once
//! at start-up.
//!
//! Invariants (asserted by [`RaftLog::check`]):
//! - `entries[k].index == prev_index + 1 + k` and terms never decrease;
//! - `prev_index <= snapshot.meta.index <= last_index()` (compaction keeps a
//!   tail of entries behind the snapshot);
//! - `applied <= commit <= last_index()`, and `snapshot.meta.index <= commit`;
//! - `unstable_from` is the first index not yet handed to storage.

use super::types::{Entry, Snapshot};

#[derive(Debug, Clone)]
pub(crate) struct RaftLog {
    /// Index and term of the entry just before `entries[0]`.
    pub(crate) prev_index: u64,
    pub(crate) prev_term: u64,
    pub(crate) entries: Vec<Entry>,
    /// Latest snapshot (its data is what the leader ships to slow followers).
    pub(crate) snapshot: Snapshot,
    pub(crate) commit: u64,
    /// Highest index the application confirmed applied (via `advance`).
    pub(crate) applied: u64,
    /// Highest index handed out in `committed_entries` (≥ applied).
    pub(crate) applied_handed: u64,
    /// First index not yet emitted in a `Ready` for persistence.
    pub(crate) unstable_from: u64,
    /// Highest index known durable whose entry is still in the log.
    pub(crate) stable_last: u64,
}

impl RaftLog {
    pub(crate) fn new(snapshot: Snapshot, prev_index: u64, prev_term: u64, entries: Vec<Entry>) -> RaftLog {
        let last = prev_index + entries.len() as u64;
        RaftLog {
            prev_index,
            prev_term,
            entries,
            commit: snapshot.meta.index,
            applied: snapshot.meta.index,
            applied_handed: snapshot.meta.index,
            snapshot,
            unstable_from: last + 1,
            stable_last: last,
        }
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.prev_index + 1
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.prev_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.prev_term, |e| e.term)
    }

    /// Term at `index`, `None` when compacted away or beyond the end.
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        if index == self.prev_index {
            return Some(self.prev_term);
        }
        if index < self.prev_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.prev_index - 1) as usize].term)
    }

    pub(crate) fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.prev_index || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.prev_index - 1) as usize])
    }

    pub(crate) fn matches(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up to date as ours.
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries `[lo, hi]` capped at `max_bytes` (always at least one entry).
    pub(crate) fn slice(&self, lo: u64, hi: u64, max_bytes: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut size = 0u64;
        let mut i = lo.max(self.first_index());
        while i <= hi.min(self.last_index()) {
            let Some(e) = self.entry(i) else { break };
            size += e.size_bytes();
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        out
    }

    /// Appends leader entries after a matched prefix, truncating a
    /// conflicting suffix (§5.3). Returns the last new index. Entries that
    /// are already present with the same term are skipped (idempotent).
    pub(crate) fn append_after_match(&mut self, entries: &[Entry]) -> u64 {
        for e in entries {
            match self.term(e.index) {
                Some(t) if t == e.term => continue,
                _ => {}
            }
            if e.index <= self.prev_index {
                // Compacted (hence committed) entries always match; skip.
                continue;
            }
            // Invariant: a conflict is never at or below commit (§5.4 safety);
            // a leader sending otherwise is a protocol violation we refuse.
            if e.index <= self.last_index() {
                assert!(e.index > self.commit, "truncating committed entry {} (commit {})", e.index, self.commit);
                self.truncate_from(e.index);
            }
            assert_eq!(e.index, self.last_index() + 1, "append leaves a gap");
            self.entries.push(e.clone());
        }
        entries.last().map_or(self.last_index(), |e| e.index)
    }

    /// Drops entries at `index` and after.
    fn truncate_from(&mut self, index: u64) {
        let keep = (index - self.prev_index - 1) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.stable_last = self.stable_last.min(index - 1);
    }

    /// Appends entries at the end (leader path).
    pub(crate) fn push(&mut self, e: Entry) {
        assert_eq!(e.index, self.last_index() + 1, "leader append leaves a gap");
        self.entries.push(e);
    }

    /// Replaces the whole log by a snapshot (follower install).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let idx = snapshot.meta.index;
        self.prev_index = idx;
        self.prev_term = snapshot.meta.term;
        self.entries.clear();
        self.commit = idx;
        self.applied = idx;
        self.applied_handed = idx;
        self.unstable_from = idx + 1;
        self.stable_last = idx;
        self.snapshot = snapshot;
    }

    /// Drops entries up to and including `index` (already in a snapshot).
    pub(crate) fn compact_to(&mut self, index: u64) {
        if index <= self.prev_index {
            return;
        }
        assert!(index <= self.snapshot.meta.index, "compacting past the snapshot");
        // Invariant: index <= snapshot index <= last_index, so term exists.
        let term = self.term(index).expect("compaction point is inside the log");
        let drop = (index - self.prev_index) as usize;
        self.entries.drain(..drop);
        self.prev_index = index;
        self.prev_term = term;
    }

    /// Asserts the O(n) invariants (simulator and tests; too slow per step
    /// in production).
    pub(crate) fn check_full(&self) {
        for (k, e) in self.entries.iter().enumerate() {
            assert_eq!(e.index, self.prev_index + 1 + k as u64, "log index gap");
        }
        assert!(self.entries.windows(2).all(|w| w[0].term <= w[1].term), "log terms decrease");
        assert!(self.entries.first().is_none_or(|e| e.term >= self.prev_term), "log term below prev");
        self.check();
    }

    /// Asserts the O(1) invariants (kept in release builds, run every step).
    pub(crate) fn check(&self) {
        assert!(self.prev_index <= self.snapshot.meta.index, "snapshot behind log start");
        assert!(self.snapshot.meta.index <= self.last_index(), "snapshot beyond log end");
        assert!(self.applied <= self.applied_handed, "applied beyond handed");
        assert!(self.applied_handed <= self.commit, "handed beyond commit");
        assert!(self.commit <= self.last_index(), "commit beyond log end");
        assert!(self.snapshot.meta.index <= self.commit, "snapshot beyond commit");
    }
}
