//! What the whole-node simulator ([`crate::sim`]) builds daemons with and
//! reads of them: the same constructor as [`super::run_with`], injected clocks and
//! I/O, and a read-only view for its checkers.

use super::*;
use shoal_manager::state::State;

/// What a checker may read of a running daemon.
pub(crate) struct View<'d> {
    pub state: &'d State,
    /// Runs as a manager (a raft member planning from its replica).
    pub manager: bool,
    /// Part of a swarm (a manager or a worker).
    pub in_swarm: bool,
    /// A manager that leads (orchestrates, schedules, dispatches).
    pub leads: bool,
    /// The nodes with a dispatcher session here (a leader's workers).
    pub sessions: Vec<String>,
    /// What this node knows of the managers and the leader (for diagnosis).
    pub hints: String,
    /// Raft voters as this node's raft knows them.
    pub voters: Vec<u64>,
    /// The autopilot's status (the leader's, when it is on).
    pub autopilot: Option<shoal_shared::api::AutopilotStatus>,
}

/// Everything a simulated node is made of.
pub(crate) struct Parts {
    pub cfg: Config,
    pub store: Store,
    pub node_id: String,
    pub keys: Keys,
    pub runtime: Arc<dyn Runtime>,
    pub io: Box<dyn io::Io>,
    pub rng: Rng,
    pub clock: Arc<dyn Clock>,
    pub mono: Arc<dyn MonoClock>,
}

/// A daemon started as [`super::run_with`] starts one (swarm port, first
/// listing), on injected clocks and I/O.
pub(crate) fn boot(p: Parts) -> anyhow::Result<Daemon> {
    let mut d = Daemon::new(p.cfg, p.store, p.node_id, p.keys, p.runtime, p.io, p.rng)?;
    d.clock = p.clock;
    d.mono = p.mono;
    d.store.sync_clock = Some(d.mono.clone());
    d.start_swarm();
    d.relist();
    Ok(d)
}

impl Daemon {
    pub(crate) fn view(&self) -> View<'_> {
        View {
            state: self.store.state(),
            manager: self.swarm.mode == Mode::Manager,
            in_swarm: self.swarm.mode != Mode::Solo,
            leads: self.leads(),
            sessions: self.swarm.dispatcher_sessions(),
            hints: self.swarm.describe_hints(),
            voters: self.store.voters(),
            autopilot: self.swarm.autopilot.status.clone(),
        }
    }

    /// The raft tick period (the loop's `Tick` event comes this often).
    pub(crate) fn tick_ms(&self) -> u64 {
        self.store.tick_ms()
    }
}
