//! Raft tuning: timing in ticks, flow-control limits, compaction policy and
//! the two deployment profiles ([`Config::lan`], [`Config::edge`]).
//!
//! The core only counts ticks; `tick_ms` tells the shell how often to call
//! `tick()`. [`Config::validate`] rejects settings that would break liveness
//! or safety assumptions (for example heartbeats slower than elections).

use super::types::{NodeId, MAX_SNAPSHOT_CHUNK_BYTES};

/// Known bugs the simulator must be able to catch. All off by default; only
/// tests and the simulator turn them on (never a production setting). The
/// core reads them through the methods, which are always false unless built
/// for tests or with the `sim` feature: the shipped binary has no bug paths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BugFlags {
    /// Grant a vote to any candidate even after voting in this term.
    pub vote_twice: bool,
    /// Commit an entry of an older term by counting replicas (violates §5.4.2).
    pub commit_old_term: bool,
    /// Forget the vote across restarts (as if it was sent before persisting).
    pub forget_vote_on_restart: bool,
}

/// Whether [`BugFlags`] can take effect in this build.
const BUGS_BUILT: bool = cfg!(any(test, feature = "sim"));

impl BugFlags {
    pub(crate) fn vote_twice(&self) -> bool {
        BUGS_BUILT && self.vote_twice
    }

    pub(crate) fn commit_old_term(&self) -> bool {
        BUGS_BUILT && self.commit_old_term
    }

    pub(crate) fn forget_vote_on_restart(&self) -> bool {
        BUGS_BUILT && self.forget_vote_on_restart
    }
}

/// The part of a [`Config`] a running core may switch (the swarm's link
/// profile): heartbeat and election timeouts, and the pipelining window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_ticks: u64,
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    pub max_inflight_msgs: u32,
}

/// Raft configuration for one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Seed for election-timeout jitter (the shell seeds it from the OS).
    pub seed: u64,
    /// How often the shell calls `tick()` (informational for the core).
    pub tick_ms: u64,
    /// Leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: u64,
    /// Election timeout is drawn uniformly from `[min, max)` ticks.
    pub election_ticks_min: u64,
    pub election_ticks_max: u64,
    /// Run a pre-vote round before bumping the term (§9.6 of the thesis).
    pub pre_vote: bool,
    /// Leader steps down when it has not heard from a quorum within an
    /// election timeout; followers then also ignore disruptive votes.
    pub check_quorum: bool,
    /// Append messages in flight per follower (pipelining window).
    pub max_inflight_msgs: u32,
    /// Upper bound on the entry bytes in one append message.
    pub max_append_bytes: u64,
    /// Upper bound on snapshot bytes per chunk.
    pub max_snapshot_chunk_bytes: u32,
    /// Largest snapshot a follower accepts from a leader.
    pub max_snapshot_bytes: u64,
    /// Ask the application for a snapshot after this many applied entries.
    pub snapshot_interval_entries: u64,
    /// Entries kept behind a snapshot so slightly lagging followers catch up
    /// from the log rather than a snapshot.
    pub snapshot_keep_entries: u64,
    /// Upper bound on entries not yet committed the leader accepts (back-pressure).
    pub max_uncommitted_entries: u64,
    /// Upper bound on pending read-index requests.
    pub max_pending_reads: u32,
    /// Fault injection for the simulator's self-test; default all off.
    pub bugs: BugFlags,
}

/// Why a configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node id must be non-zero")]
    ZeroId,
    #[error("{0} must be non-zero")]
    Zero(&'static str),
    #[error("election_ticks_min ({min}) must be greater than heartbeat_ticks ({heartbeat}) times 2")]
    ElectionTooShort { min: u64, heartbeat: u64 },
    #[error("election_ticks_max ({max}) must be greater than election_ticks_min ({min})")]
    ElectionRange { min: u64, max: u64 },
    #[error("max_snapshot_chunk_bytes ({0}) exceeds the frame limit")]
    ChunkTooLarge(u32),
    #[error("max_append_bytes ({0}) exceeds the frame budget")]
    AppendTooLarge(u64),
}

impl Config {
    /// LAN profile: 100 ms ticks, heartbeat every tick, elections after
    /// 1-2 s of silence, so a 3-manager cluster re-elects within 2 s.
    pub fn lan(id: NodeId, seed: u64) -> Config {
        Config {
            id,
            seed,
            tick_ms: 100,
            heartbeat_ticks: 1,
            election_ticks_min: 10,
            election_ticks_max: 20,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 64,
            max_append_bytes: 48 * 1024,
            max_snapshot_chunk_bytes: MAX_SNAPSHOT_CHUNK_BYTES,
            max_snapshot_bytes: 1 << 30,
            snapshot_interval_entries: 10_000,
            snapshot_keep_entries: 500,
            max_uncommitted_entries: 10_000,
            max_pending_reads: 4096,
            bugs: BugFlags::default(),
        }
    }

    /// Edge profile: flaky, high-latency links; 250 ms ticks, heartbeat every
    /// 2 ticks, elections after 5-10 s so brief outages do not flap leaders.
    pub fn edge(id: NodeId, seed: u64) -> Config {
        Config {
            tick_ms: 250,
            heartbeat_ticks: 2,
            election_ticks_min: 20,
            election_ticks_max: 40,
            max_inflight_msgs: 16,
            max_append_bytes: 32 * 1024,
            ..Config::lan(id, seed)
        }
    }

    /// The timings of `profile` in ticks of this config's `tick_ms`
    /// (rounded up), for a running core ([`crate::raft::Raft::set_timing`]):
    /// lan heartbeats every 100 ms and elects after 1-2 s; edge heartbeats
    /// every 500 ms and elects after 5-10 s, with a smaller pipelining
    /// window. The tick length itself does not change.
    pub fn timing(&self, profile: shoal_shared::types::LinkProfile) -> Timing {
        use shoal_shared::types::LinkProfile;
        let (heartbeat_ms, election_min_ms, election_max_ms, max_inflight_msgs) = match profile {
            LinkProfile::Lan => (100, 1_000, 2_000, 64),
            LinkProfile::Edge => (500, 5_000, 10_000, 16),
        };
        let ticks = |ms: u64| ms.div_ceil(self.tick_ms.max(1)).max(1);
        Timing {
            heartbeat_ticks: ticks(heartbeat_ms),
            election_ticks_min: ticks(election_min_ms),
            election_ticks_max: ticks(election_max_ms),
            max_inflight_msgs,
        }
    }

    /// This config with `t` in place of its timings.
    pub fn with_timing(&self, t: Timing) -> Config {
        Config {
            heartbeat_ticks: t.heartbeat_ticks,
            election_ticks_min: t.election_ticks_min,
            election_ticks_max: t.election_ticks_max,
            max_inflight_msgs: t.max_inflight_msgs,
            ..self.clone()
        }
    }

    /// Checks the settings; the core refuses to start on an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        for (name, v) in [
            ("tick_ms", self.tick_ms),
            ("heartbeat_ticks", self.heartbeat_ticks),
            ("max_inflight_msgs", u64::from(self.max_inflight_msgs)),
            ("max_append_bytes", self.max_append_bytes),
            ("max_snapshot_chunk_bytes", u64::from(self.max_snapshot_chunk_bytes)),
            ("max_snapshot_bytes", self.max_snapshot_bytes),
            ("snapshot_interval_entries", self.snapshot_interval_entries),
            ("max_uncommitted_entries", self.max_uncommitted_entries),
            ("max_pending_reads", u64::from(self.max_pending_reads)),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.election_ticks_min <= 2 * self.heartbeat_ticks {
            return Err(ConfigError::ElectionTooShort { min: self.election_ticks_min, heartbeat: self.heartbeat_ticks });
        }
        if self.election_ticks_max <= self.election_ticks_min {
            return Err(ConfigError::ElectionRange { min: self.election_ticks_min, max: self.election_ticks_max });
        }
        if self.max_snapshot_chunk_bytes > MAX_SNAPSHOT_CHUNK_BYTES {
            return Err(ConfigError::ChunkTooLarge(self.max_snapshot_chunk_bytes));
        }
        // One append must fit a frame together with its envelope.
        if self.max_append_bytes > 56 * 1024 {
            return Err(ConfigError::AppendTooLarge(self.max_append_bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_validate_and_lan_reelects_within_two_seconds() {
        let lan = Config::lan(1, 0);
        lan.validate().unwrap();
        Config::edge(1, 0).validate().unwrap();
        // Worst case: a follower waits election_ticks_max before campaigning.
        assert!(lan.election_ticks_max * lan.tick_ms <= 2000);
        let bad = Config { election_ticks_min: 2, ..Config::lan(1, 0) };
        assert!(matches!(bad.validate(), Err(ConfigError::ElectionTooShort { .. })));
        assert_eq!(Config::lan(0, 0).validate(), Err(ConfigError::ZeroId));
    }
}
