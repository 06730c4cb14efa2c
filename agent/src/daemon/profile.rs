//! The swarm's link profile (`swarm init|update --link-profile lan|edge`)
//! in the daemon: which timings this node's raft core and node links run
//! with. A manager takes the profile from its replica (after every
//! converge); a worker from its leader (`Wire::Settings`, sent at the start
//! of its session and on change). The profile in effect is kept in the
//! local table, so a node restarted with no manager in reach dials with
//! the timings its swarm uses.

use super::swarm::{Mode, LOCAL_LINK_PROFILE};
use super::Daemon;
use shoal_shared::types::LinkProfile;

impl Daemon {
    /// Manager: applies the replica's link profile when it changed. A node
    /// outside any swarm goes back to lan.
    pub(crate) fn sync_link_profile(&mut self) {
        // A manager, or a lone node that ran `swarm init`, holds the swarm's state.
        let knows_state = self.swarm.mode == Mode::Manager || (self.swarm.mode == Mode::Solo && self.store.state().cluster.is_some());
        let want = match self.swarm.mode {
            _ if knows_state => self.store.state().link_profile,
            // A worker's comes from its leader.
            Mode::Worker => return,
            _ => LinkProfile::Lan,
        };
        // Raft's timings follow the profile on managers (a no-op when in effect).
        if knows_state {
            if let Err(e) = self.store.set_link_profile(want) {
                crate::log!("WARN", "cannot apply the {want} link profile to raft: {e}");
            }
        }
        if want != self.swarm.link_profile {
            self.apply_link_profile(want);
        }
    }

    /// Applies `p` to this node's links (open and future) and remembers it.
    pub(crate) fn apply_link_profile(&mut self, p: LinkProfile) {
        if p == self.swarm.link_profile {
            return;
        }
        let (keepalive_ms, idle_ms) = shoal_shared::noise::link::profile_timing(p);
        crate::log!(
            "INFO",
            "link profile is now {p}: node links keep alive every {keepalive_ms} ms and are dead after {idle_ms} ms of silence{}",
            if self.swarm.mode == Mode::Manager { "; raft timings follow" } else { "" }
        );
        self.swarm.set_link_profile(p);
        if let Err(e) = self.store.set_local(LOCAL_LINK_PROFILE, p.as_str()) {
            crate::log!("WARN", "cannot remember the link profile: {e}");
        }
    }
}
