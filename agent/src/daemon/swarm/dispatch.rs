//! The shell of the leader's dispatcher ([`shoal_manager::dispatcher`]):
//! leadership changes, worker sessions, assignments sent and received,
//! Down marking; it executes the core's effects.

use super::*;

impl Daemon {
    /// Tells the dispatcher whether this node leads now (its sessions end when it stops).
    pub(crate) fn sync_leadership(&mut self) {
        let now_ms = self.mono_ms();
        let change = self.swarm.dispatcher.handle_leadership(self.leads(), now_ms);
        // A lone node outside any swarm leads its own one-voter group: nothing worth saying.
        if self.store.state().cluster.is_none() {
            return;
        }
        match change {
            Leadership::Gained => crate::log!("INFO", "this node is now the swarm leader"),
            Leadership::Lost { redirected: 0 } => crate::log!("INFO", "this node is no longer the swarm leader"),
            Leadership::Lost { redirected } => {
                crate::log!("INFO", "this node is no longer the swarm leader; {redirected} worker(s) redirected to the new one")
            }
            Leadership::Unchanged => {}
        }
    }

    /// Leader: nodes without a link for the swarm's dispatcher heartbeat
    /// (`swarm update --dispatcher-heartbeat`; `DISPATCHER_HEARTBEAT_MS_DEFAULT`) are Down.
    pub(crate) fn mark_down(&mut self) {
        let linked: BTreeSet<String> = self.store.state().nodes.keys().filter(|n| self.swarm.established(n).is_some()).cloned().collect();
        let settled = self.swarm.pending.settled();
        let now_ms = self.mono_ms();
        let ops = self.swarm.dispatcher.poll_down(self.store.state(), &self.node_id, now_ms, settled, |n| linked.contains(n));
        self.commit_internal(ops);
    }

    /// Leader: a linked peer that is a worker in the state, outside raft and
    /// without a session is a manager demoted while it could not hear it,
    /// whose raft messages go to its old voters only (never here): it is
    /// told, at most once per [`STALE_MANAGER_TELL_MS`] (found by the
    /// whole-node simulator, seed 6905 of 10,000: it linked to this node
    /// before this node led, and was Down for good).
    pub(crate) fn tell_stale_managers(&mut self, now_ms: u64) {
        let state = self.store.state();
        let stale: Vec<(u64, String)> = self
            .swarm
            .conns
            .iter()
            .filter_map(|(conn, c)| Some((*conn, c.peer.clone()?)))
            .filter(|(_, p)| {
                state.nodes.get(p).is_some_and(|n| n.role == NodeRole::Worker)
                    && !self.store.is_member(raft_id(p))
                    && !self.swarm.dispatcher.has_session(p)
            })
            .collect();
        for (conn, peer) in stale {
            let due = self.swarm.told_stale.get(&peer).is_none_or(|at| now_ms.saturating_sub(*at) >= STALE_MANAGER_TELL_MS);
            if due {
                self.swarm.told_stale.insert(peer.clone(), now_ms);
                self.tell_demoted(conn, &peer);
            }
        }
        let conns = &self.swarm.conns;
        self.swarm.told_stale.retain(|p, _| conns.values().any(|c| c.peer.as_deref() == Some(p.as_str())));
    }

    /// Carries out what the dispatcher decided.
    pub(crate) fn drain_dispatcher(&mut self) {
        while let Some(effect) = self.swarm.dispatcher.poll_effect() {
            match effect {
                DispatchEffect::Assign { conn, record, assignments, managers, auths, files } => {
                    // The credentials of the assigned services that have some go
                    // first (on a session's first assignments and when they changed), so
                    // that a task's first pull has them; a worker that holds some for
                    // services no longer assigned drops them with these assignments.
                    if let Some(auths) = auths {
                        self.swarm.send(conn, &Wire::RegistryAuths { auths });
                    }
                    // The secrets' and configs' data too, for the same reasons.
                    if let Some(files) = files {
                        self.swarm.send(conn, &Wire::Files { files });
                    }
                    let cluster_key =
                        (record.role == NodeRole::Manager).then(|| self.swarm.cluster_key.as_ref().map(|k| k.private().to_vec())).flatten();
                    let msg = Wire::Assignments {
                        node: *record,
                        tasks: assignments.tasks.into_values().collect(),
                        services: assignments.services.into_values().collect(),
                        managers,
                        leader_id: self.node_id.clone(),
                        cluster_key,
                        network: assignments.network,
                    };
                    // A failed send closes the link; the node's next session gets them again.
                    self.swarm.send(conn, &msg);
                }
                DispatchEffect::Settings { conn, link_profile } => {
                    self.swarm.send(conn, &Wire::Settings { link_profile });
                }
                DispatchEffect::Redirect { conn } => self.redirect_to_leader(conn),
                DispatchEffect::Close { conn, reason } => self.swarm.close(conn, &reason),
                DispatchEffect::Propose(ops) => self.commit_internal(ops),
                DispatchEffect::Log { level, message } => crate::log!(level, "{message}"),
            }
        }
    }

    /// Leader: `peer` sent raft messages but is a worker in the state and
    /// not a raft member: it is a manager that missed its demotion. It gets
    /// its worker assignments, which make it switch.
    pub(crate) fn tell_demoted(&mut self, conn: u64, peer: &str) {
        if self.swarm.mode != Mode::Manager {
            return;
        }
        if !self.leads() {
            // A follower names the leader, which tells it (its raft messages reach no one else).
            self.name_leader_to(conn, peer);
            return;
        }
        let state = self.store.state();
        let Some(node) = state.nodes.get(peer).filter(|n| n.role == NodeRole::Worker).cloned() else { return };
        let assignments = dispatcher::assignments(state, peer);
        // Always (an empty set too): the node forgets credentials gone since.
        let auths = dispatcher::registry_auths(state, &assignments);
        self.swarm.send(conn, &Wire::RegistryAuths { auths });
        self.swarm.send(conn, &Wire::Files { files: dispatcher::task_files(state, &assignments) });
        let msg = Wire::Assignments {
            node,
            tasks: assignments.tasks.into_values().collect(),
            services: assignments.services.into_values().collect(),
            managers: self.manager_infos(),
            leader_id: self.node_id.clone(),
            cluster_key: None,
            network: assignments.network,
        };
        self.swarm.send(conn, &msg);
        // The callers checked that this leader's configuration no longer has `peer`: its
        // vote is needed for nothing, which the assignments alone cannot say (the dispatcher
        // also sends them to a demoted voter whose removal still needs its vote).
        self.swarm.send(conn, &Wire::Removed { leader_id: self.node_id.clone() });
    }

    /// A leader says this manager is out of its raft configuration: switch
    /// now, whatever this node's stale replica says about the quorum (found
    /// by the whole-node simulator: a demoted voter whose replica still
    /// counted it as needed waited for ever).
    pub(crate) fn on_removed(&mut self, peer: &str, leader_id: String) {
        if self.swarm.mode != Mode::Manager || peer != leader_id {
            return;
        }
        crate::log!("INFO", "leader {leader_id} says this node is no longer in raft");
        self.swarm.removal_told = true;
        if self.swarm.demotion_told.is_none() {
            let version = self.swarm.role_version;
            self.swarm.demotion_told = Some(version);
        }
        self.check_demotion();
    }

    pub(crate) fn on_session(&mut self, conn: u64, peer: &str, advertise_addr: String, description: shoal_shared::types::NodeDescription) {
        if self.swarm.mode != Mode::Manager {
            // A worker (a manager demoted since the peer dialed it) names the leader it knows.
            self.redirect_to_leader(conn);
            self.swarm.close(conn, "this node is not a manager");
            return;
        }
        self.sync_leadership();
        self.swarm.dispatcher.handle_session(self.store.state(), conn, peer, &advertise_addr, description);
        self.drain_dispatcher();
    }

    /// The leader as this node knows it, as a `Wire::Redirect` (empty when
    /// unknown): a manager asks raft, a worker says what it was last told.
    pub(crate) fn leader_redirect(&self) -> Wire {
        let (leader_id, leader_addr) = match self.swarm.mode {
            // No leader known (this node was removed, or its leader is gone): a manager it
            // knows is the best lead it can give; that manager redirects onward (found by the
            // whole-node simulator, seed 5005: a worker whose only manager had been demoted
            // and removed never reached the leader that promoted it).
            Mode::Worker => self
                .swarm
                .leader_hint
                .clone()
                .or_else(|| self.swarm.hints.iter().find(|m| m.node_id != self.node_id && !m.addr.is_empty()).cloned())
                .map(|m| (m.node_id, m.addr))
                .unwrap_or_default(),
            Mode::Manager | Mode::Solo => self
                .leader_node()
                .map(|l| {
                    let addr = self.node_of_raft(raft_id(&l)).map(|(_, a)| a).unwrap_or_default();
                    (l, addr)
                })
                .unwrap_or_default(),
        };
        Wire::Redirect { leader_id, leader_addr }
    }

    /// Tells the peer on `conn` where the leader is (empty when unknown).
    pub(crate) fn redirect_to_leader(&mut self, conn: u64) {
        let msg = self.leader_redirect();
        self.swarm.send(conn, &msg);
    }

    /// A follower tells `peer` who leads: a manager whose replica stopped
    /// (demoted, removed, or lagging behind a leader promoted since) hears
    /// from no one else. Nothing when this node leads, knows no leader, or
    /// `peer` is the leader.
    pub(crate) fn name_leader_to(&mut self, conn: u64, peer: &str) {
        if self.swarm.mode != Mode::Manager || self.store.is_leader() {
            return;
        }
        if self.leader_node().is_some_and(|l| l != peer) {
            self.redirect_to_leader(conn);
        }
    }

    /// Leader: sends each worker session its assignments when they changed.
    pub(crate) fn dispatch(&mut self) {
        self.sync_leadership();
        if self.leads() {
            // A manager that runs raft (it has acknowledged entries) plans from its replica. One
            // promoted while still in worker mode is a raft member already but needs these
            // assignments (they carry the cluster key) to start raft at all.
            let status = self.store.raft_status();
            let running: BTreeSet<u64> = status.progress.iter().filter(|p| p.match_index > 0).map(|p| p.id).collect();
            self.swarm.dispatcher.dispatch(self.store.state(), |n| running.contains(&raft_id(n)));
        }
        self.drain_dispatcher();
    }

    /// A leader's `Wire::Assignments` (anything else is ignored).
    pub(crate) fn on_assignments(&mut self, msg: Wire) {
        let Wire::Assignments { node, tasks, services, managers, leader_id, cluster_key, network } = msg else { return };
        if self.swarm.mode == Mode::Manager
            && node.id == self.node_id
            && node.role == NodeRole::Worker
            && self.swarm.demotion_told.is_none()
        {
            // Only a leader sends assignments: this manager was demoted, maybe while it could
            // not hear it. It switches as any demoted manager does (`check_demotion`: once out
            // of raft, or after the grace, so a removal in flight still gets its vote).
            crate::log!("INFO", "leader {leader_id} says this node was demoted");
            self.swarm.demotion_told = Some(node.meta.version);
            self.note_role_version(node.meta.version);
            if !managers.is_empty() {
                self.swarm.hints = managers.clone();
            }
        }
        if self.swarm.mode != Mode::Worker || node.id != self.node_id {
            return;
        }
        self.swarm.session_wait = None;
        if !managers.is_empty() && managers != self.swarm.hints {
            self.set_hints(managers.clone());
        }
        if let Some(l) = managers.iter().find(|m| m.node_id == leader_id) {
            self.swarm.leader_hint = Some(l.clone());
        }
        if node.role == NodeRole::Manager {
            if let Some(k) = cluster_key.and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok()) {
                self.note_role_version(node.meta.version);
                self.become_manager(k);
                return;
            }
        }
        let mut assigned = Assignments::new(&self.node_id, tasks, services);
        assigned.network = network;
        for t in assigned.tasks.values() {
            if self.swarm.reported.get(&t.id).is_some_and(|(r, _)| t.status.state >= *r) {
                self.swarm.reported.remove(&t.id);
            }
        }
        // Credentials are kept for assigned services only (never persisted).
        self.swarm.registry_auths.retain(|id, _| assigned.services.contains_key(id));
        // Secrets and configs likewise, for the unfinished tasks that use them.
        let used = crate::daemon::task_files::used(&assigned);
        self.swarm.files.retain(|k, _| used.contains(k));
        // Kept (fsynced) before acting: a reboot with no manager in reach runs from it.
        self.persist_and_act(assigned);
    }

    /// Plans from `a` from now on (a worker, once `a` is persisted).
    pub(crate) fn act_on_assignments(&mut self, a: Assignments) {
        self.swarm.assigned = Some(a);
        self.swarm.assigned_at = None;
    }

    /// Forgets reports the replicated state has caught up with (managers).
    pub(crate) fn prune_reported(&mut self) {
        if self.swarm.reported.is_empty() || self.swarm.mode == Mode::Worker {
            return;
        }
        let tasks = &self.store.state().tasks;
        self.swarm.reported.retain(|id, (s, _)| tasks.get(id).is_some_and(|t| t.status.state < *s));
    }
}
