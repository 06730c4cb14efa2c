//! Control requests on the multi-node loop: forwarding to the leader,
//! writes parked until committed, internal proposals in flight, status
//! reports, and answers relayed back to the manager that forwarded.

use super::*;

impl Daemon {
    /// The leader and the link to it, when this node can forward to it
    /// (see [`super::router`] for what is forwarded).
    pub(crate) fn leader_link(&self) -> Option<(String, u64)> {
        let leader = self.leader_node()?;
        let conn = self.swarm.established(&leader)?;
        Some((leader, conn))
    }

    /// The link a node sends its reports to the leader on: a worker's
    /// session link (workers know the leader only as their link), a
    /// follower manager's link to its raft's leader.
    pub(crate) fn leader_conn(&self) -> Option<u64> {
        match self.swarm.mode {
            Mode::Worker => self.swarm.peers.any_conn().filter(|c| self.swarm.conns.get(c).is_some_and(|c| c.peer.is_some())),
            _ => self.leader_node().and_then(|l| self.swarm.established(&l)),
        }
    }

    /// Forwarded requests waiting for the leader.
    pub(crate) fn forwards_len(&self) -> usize {
        self.swarm.pending.forwards_len()
    }

    /// Sends a request to `leader` on `conn`; its answer goes to `reply` once
    /// this manager has applied what the answer depends on. Gives the
    /// request back when the link would not take it.
    pub(crate) fn forward(
        &mut self,
        req: Request,
        leader: String,
        conn: u64,
        reply: Sender<Reply>,
    ) -> Result<(), (Request, Sender<Reply>)> {
        let id = self.swarm.pending.next_forward_id();
        if !self.swarm.send(conn, &Wire::Request { id, req: req.clone() }) {
            return Err((req, reply));
        }
        let now_ms = self.mono_ms();
        self.swarm.pending.forwarded(id, req, leader, conn, reply, now_ms);
        Ok(())
    }

    /// Proposes a control write. The outcome must go straight back to the
    /// router ([`Daemon::answer`]), which parks it before any outcome is
    /// taken from the store; at once on a lone manager.
    pub(crate) fn write(&mut self, result: Result<(Vec<Op>, Reply), control::ControlError>) -> Outcome {
        let (ops, ok) = match result {
            Ok(v) => v,
            Err(e) => return Outcome::Now(Reply::error(e.kind(), e.to_string())),
        };
        if ops.is_empty() {
            return Outcome::Now(ok);
        }
        if !self.store.is_leader() {
            return Outcome::Now(self.no_leader_reply());
        }
        if !self.swarm.pending.may_park() {
            return Outcome::Now(Reply::error(ErrorKind::Unavailable, "too many writes waiting for a commit; retry in a moment"));
        }
        match self.propose_ops(ops) {
            Ok(Some(proposal)) => Outcome::AfterCommit { proposal, ok },
            Ok(None) => Outcome::Now(ok),
            Err(e) => Outcome::Now(Reply::error(ErrorKind::Unavailable, format!("cannot persist the change: {e}"))),
        }
    }

    /// Holds a write's reply until its proposal commits (or fails, or `WRITE_TIMEOUT_MS` passes).
    pub(crate) fn park(&mut self, proposal: Proposal, ok: Reply, reply: Sender<Reply>) {
        let now_ms = self.mono_ms();
        self.swarm.pending.park(proposal, ok, reply, now_ms);
        self.resolve_outcomes();
    }

    /// Proposes ops in bounded entries, in order; returns the last proposal.
    /// Ops carrying secret or config data go alone in their entry (each at
    /// most `FILE_PART_BYTES` of data: it fits every link profile's appends).
    pub(crate) fn propose_ops(&mut self, ops: Vec<Op>) -> Result<Option<Proposal>, shoal_manager::store::StoreError> {
        let alone = |op: &Op| matches!(op, Op::PutFilePart { .. } | Op::PutSecret(_) | Op::PutConfig(_));
        let mut entries: Vec<Vec<Op>> = Vec::new();
        for op in ops {
            match entries.last_mut() {
                Some(e) if !alone(&op) && e.len() < super::super::OPS_PER_ENTRY_MAX && !e.iter().any(alone) => e.push(op),
                _ => entries.push(vec![op]),
            }
        }
        let mut last = None;
        for ops in entries {
            let entry = Entry { at: self.now(), ops };
            let p = self.store.propose_async(&entry)?;
            self.metrics.proposed(p.index);
            last = Some(p);
        }
        Ok(last)
    }

    /// Proposes internal ops (orchestrator, dispatcher); they are tracked so
    /// no pass runs on a state that misses them.
    pub(crate) fn commit_internal(&mut self, ops: Vec<Op>) {
        if ops.is_empty() || !self.store.is_leader() {
            return;
        }
        match self.propose_ops(ops) {
            Ok(Some(p)) => {
                let now_ms = self.mono_ms();
                self.swarm.pending.track(p, now_ms);
            }
            Ok(None) => {}
            Err(e) => crate::log!("ERROR", "cannot persist state change: {e}"),
        }
        self.resolve_outcomes();
    }

    /// Status reports: committed here on the leader, sent to it otherwise;
    /// each state of each task is reported once until it shows up applied.
    pub(crate) fn submit_reports(&mut self, ops: Vec<Op>) {
        self.sync_assignments();
        let now_ms = self.mono_ms();
        let view = self.assigned();
        let mut fresh = Vec::new();
        // Accounts of in-place restarts go with their task's report, just before it.
        let (accounts, ops): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|op| matches!(op, Op::SetRestartsInPlace(_)));
        for op in ops {
            let Op::SetTaskStatus { id, status } = &op else { continue };
            let Some(t) = view.tasks.get(id) else { continue };
            if t.status.state.advance(status.state).is_err() {
                continue;
            }
            let recent = |(s, at): &(TaskState, u64)| *s >= status.state && now_ms.saturating_sub(*at) < super::REPORT_RETRY_MS;
            if self.swarm.reported.get(id).is_some_and(recent) {
                continue;
            }
            fresh.push(op);
        }
        if fresh.is_empty() {
            return;
        }
        let reported = |id: &str| fresh.iter().any(|op| matches!(op, Op::SetTaskStatus { id: i, .. } if i == id));
        let accounts: Vec<Op> = accounts.into_iter().filter(|op| matches!(op, Op::SetRestartsInPlace(r) if reported(&r.task_id))).collect();
        if self.leads() || self.swarm.mode == Mode::Solo {
            for op in &fresh {
                if let Op::SetTaskStatus { id, status } = op {
                    self.swarm.reported.insert(id.clone(), (status.state, now_ms));
                }
            }
            self.commit_internal(accounts.into_iter().chain(fresh).collect());
            return;
        }
        let Some(conn) = self.leader_conn() else { return };
        let restarts: Vec<_> = accounts
            .into_iter()
            .filter_map(|op| match op {
                Op::SetRestartsInPlace(r) => Some(r),
                _ => None,
            })
            .collect();
        // Before the report: a report the leader took (which the worker sees) implies its account was taken too.
        if !restarts.is_empty() && !self.swarm.send(conn, &Wire::RestartsInPlace { restarts }) {
            return;
        }
        let statuses: Vec<_> = fresh
            .into_iter()
            .filter_map(|op| match op {
                Op::SetTaskStatus { id, status } => Some((id, status)),
                _ => None,
            })
            .collect();
        if self.swarm.send(conn, &Wire::Report { statuses: statuses.clone() }) {
            for (id, s) in statuses {
                self.swarm.reported.insert(id, (s.state, now_ms));
            }
        }
    }

    /// Resolves committed or failed proposals: parked writes, joins, internal work.
    pub(crate) fn resolve_outcomes(&mut self) {
        self.metrics.applied(self.store.state().applied_index);
        let outcomes = self.store.take_outcomes();
        if outcomes.is_empty() {
            return;
        }
        for (p, ok) in outcomes {
            self.swarm.pending.handle_outcome(p, ok);
            if self.swarm.role_change.is_some_and(|(r, _)| r == p) {
                self.swarm.role_change = None;
            }
            if let Some(i) = self.swarm.pending_joins.iter().position(|j| j.proposal == p) {
                let j = self.swarm.pending_joins.swap_remove(i);
                if ok {
                    self.accept_join(j);
                } else {
                    self.swarm.close(j.conn, "the join was not committed (leadership changed); retry");
                }
            }
        }
        self.drain_pending();
    }

    /// Hands forwarded answers to the CLI once this manager has caught up with them.
    pub(crate) fn release_forwards(&mut self) {
        let applied = self.store.state().applied_index;
        self.swarm.pending.release(applied);
        self.drain_pending();
    }

    /// Answers what the pending core let go of.
    pub(crate) fn drain_pending(&mut self) {
        while let Some(effect) = self.swarm.pending.poll_effect() {
            match effect {
                PendingEffect::Reply { to, reply } => {
                    let _ = to.try_send(reply);
                }
                PendingEffect::RunLocally { to, req } => self.run_request(req, Origin::Socket(to)),
            }
        }
    }

    /// A forwarded request was answered: the reply carries the index this
    /// node had applied, so the follower relays it once it has caught up.
    pub(crate) fn on_forward_done(&mut self, conn: u64, id: u64, reply: Reply) {
        let index = self.store.state().applied_index;
        self.answer_peer(conn, id, reply, index);
    }

    /// Sends the answer to request `id` forwarded on link `conn`.
    pub(crate) fn answer_peer(&mut self, conn: u64, id: u64, reply: Reply, index: u64) {
        self.swarm.send(conn, &Wire::Reply { id, reply, index });
    }
}
