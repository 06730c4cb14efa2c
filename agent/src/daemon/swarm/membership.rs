//! Membership: swarm init, join (and a manager's wait to vote), leave,
//! join tokens, role changes as they reach this node (promotion,
//! demotion), and raft membership following node roles on the leader.

use super::*;
use shoal_manager::membership::{self, Demotion, Step};
use shoal_shared::seal::UnlockKey;
use shoal_shared::types::Autolock;

impl Daemon {
    /// A manager's `swarm join` returns once this node votes in raft (or says why not).
    pub(crate) fn check_voter_wait(&mut self, now_ms: u64) {
        let Some(w) = &self.swarm.voter_wait else { return };
        let voter = self.swarm.mode == Mode::Manager && self.store.voters().contains(&self.store.raft_id());
        // Demoted while it waited (the autopilot keeps fewer managers): it runs as a worker.
        let demoted = self.swarm.mode == Mode::Worker;
        if !voter && !demoted && now_ms < w.deadline_ms {
            return;
        }
        let Some(w) = self.swarm.voter_wait.take() else { return };
        let r = if demoted {
            crate::log!(
                "WARN",
                "joined the swarm as a manager, but the leader made this node a worker (the swarm keeps a set number of managers: `shoal info` shows the autopilot)"
            );
            Reply::Joined { role: NodeRole::Worker, node_id: w.node_id }
        } else if voter {
            Reply::Joined { role: NodeRole::Manager, node_id: w.node_id }
        } else {
            Reply::error(
                ErrorKind::Unavailable,
                format!(
                    "this node joined the swarm as a manager but is not a raft voter after {} s (it is still catching up, or the leader cannot reach its --advertise-addr): check `shoal node ls` on a manager",
                    JOIN_VOTER_WAIT_MS / 1000
                ),
            )
        };
        let _ = w.reply.try_send(r);
    }

    /// Leader: raft membership follows node roles, one change at a time
    /// ([`shoal_manager::membership::next_step`]).
    pub(crate) fn reconcile_membership(&mut self) {
        let status = self.store.raft_status();
        let managers: BTreeSet<u64> =
            self.store.state().nodes.values().filter(|n| n.role == NodeRole::Manager).map(|n| raft_id(&n.id)).collect();
        let live = self.live_raft_ids();
        // A refused change (one already pending) is proposed again on a later tick.
        let _ = match membership::next_step(&status, &managers, |id| live.contains(&id)) {
            Some(Step::TransferLeader(id)) => self.store.transfer_leader(id).map(|_| 0),
            Some(Step::AddLearner(id)) => self.store.add_learner(id),
            Some(Step::PromoteLearner(id)) => self.store.promote_learner(id),
            Some(Step::Remove(id)) => self.store.remove_member(id),
            None => Ok(0),
        };
    }

    /// Raft ids of the nodes this manager has a link to, itself included: the
    /// members membership changes count as reachable.
    pub(crate) fn live_raft_ids(&self) -> BTreeSet<u64> {
        let mut live: BTreeSet<u64> =
            self.store.state().nodes.keys().filter(|id| self.swarm.established(id).is_some()).map(|id| raft_id(id)).collect();
        live.insert(self.store.raft_id());
        live
    }

    /// Ops for `node promote|demote` (and the autopilot's changes): the
    /// control rules, with raft voters and this manager's links as liveness.
    pub(crate) fn role_change_ops(&self, node: &str, role: NodeRole) -> Result<Vec<Op>, control::ControlError> {
        let voters = self.store.voters();
        let live = self.live_raft_ids();
        control::set_node_role(
            self.store.state(),
            &self.node_id,
            node,
            role,
            |n| voters.contains(&raft_id(n)),
            |n| live.contains(&raft_id(n)),
        )
    }

    /// Manager whose node record says Worker: leave raft and become a worker.
    pub(crate) fn check_demotion(&mut self) {
        if self.swarm.mode != Mode::Manager {
            return;
        }
        let state = self.store.state();
        // Only a record at least as recent as the last one this node acted on counts: a
        // promoted learner replaying its log from the start passes records from when it was
        // a worker, and must not take them for a demotion (found by the whole-node
        // simulator, seed 3581 of 10,000).
        let record = state.nodes.get(&self.node_id).filter(|n| n.meta.version >= self.swarm.role_version);
        let replica_says = record.map(|n| n.role);
        if self.swarm.demotion_told.is_some_and(|told| record.is_some_and(|n| n.meta.version > told && n.role == NodeRole::Manager)) {
            // The replica holds a later record that says manager: promoted again since the leader told.
            self.swarm.demotion_told = None;
            self.swarm.removal_told = false;
        }
        let demoted = self.swarm.demotion_told.is_some() || (state.cluster.is_some() && replica_says == Some(NodeRole::Worker));
        if !demoted {
            self.swarm.demoted_at_ms = None;
            // Promoted again before the demotion took effect: a parked leave is answered as a manager's.
            if let Some((force, reply)) = self.swarm.leave_after_demotion.take() {
                let r = self.leave_now(force);
                let _ = reply.try_send(r);
            }
            return;
        }
        let now_ms = self.mono_ms();
        let at_ms = *self.swarm.demoted_at_ms.get_or_insert(now_ms);
        let member = self.store.is_member(self.store.raft_id()) && !self.swarm.removal_told;
        let needed = membership::needed_for_quorum(&self.store.voters(), self.store.raft_id());
        let led = self.store.leader().is_some_and(|l| l != self.store.raft_id());
        if membership::demotion(true, member, needed, led, at_ms, now_ms) != Demotion::Switch {
            return;
        }
        self.switch_to_worker();
    }

    /// Leaves raft and runs as a worker (a demotion took effect).
    pub(crate) fn switch_to_worker(&mut self) {
        crate::log!("INFO", "this node was demoted: leaving raft and running as a worker");
        // Raft's last words first: a leader that just committed its own removal tells the
        // others the commit here; without it the remaining voter of a two-voter swarm still
        // counted this node and never had a quorum again (found by the whole-node simulator).
        let last = self.store.take_messages();
        self.route_raft(last);
        // Where to find the leader as a worker: the managers the leader named when it told
        // this node, else its replica's, else what it knew before (found by the whole-node
        // simulator: a manager demoted before its replica caught up had no manager left to ask).
        let from_replica: Vec<ManagerInfo> = self.manager_infos().into_iter().filter(|m| m.node_id != self.node_id).collect();
        let known: Vec<ManagerInfo> = self.swarm.hints.iter().filter(|m| m.node_id != self.node_id).cloned().collect();
        let hints = if (self.swarm.demotion_told.is_some() || from_replica.is_empty()) && !known.is_empty() { known } else { from_replica };
        self.swarm.close_all("demoted");
        self.set_hints(hints);
        self.set_local(LOCAL_MODE, "worker");
        let _ = std::fs::remove_file(self.cfg.data_dir.join(key::CLUSTER_KEY_FILE));
        self.swarm.cluster_key = None;
        if let Ok(mut k) = self.swarm.keys.lock() {
            k.cluster = None;
        }
        if let Err(e) = self.store.reset(Bootstrap::Join) {
            crate::log!("ERROR", "cannot reset raft state after demotion: {e}");
        }
        self.swarm.mode = Mode::Worker;
        self.swarm.assigned = None;
        self.swarm.demoted_at_ms = None;
        self.swarm.demotion_told = None;
        self.swarm.removal_told = false;
        if let Some((force, reply)) = self.swarm.leave_after_demotion.take() {
            let r = self.leave_now(force);
            let _ = reply.try_send(r);
        }
    }

    /// Remembers (durably) the version of this node's record it just acted on.
    pub(crate) fn note_role_version(&mut self, version: u64) {
        if version > self.swarm.role_version {
            self.swarm.role_version = version;
            self.set_local(LOCAL_ROLE_VERSION, &version.to_string());
        }
    }

    pub(crate) fn become_manager(&mut self, cluster_private: [u8; 32]) {
        // A manager plans from its replica; a set kept from its worker days must never run again.
        self.forget_persisted_assignments();
        let Ok(k) = NodeKey::from_private(cluster_private) else {
            crate::log!("ERROR", "the leader sent an invalid cluster key; staying a worker");
            return;
        };
        if let Err(e) = key::save(&self.cfg.data_dir.join(key::CLUSTER_KEY_FILE), &k, &self.sealing.key) {
            crate::log!("ERROR", "cannot store the cluster key: {e}; staying a worker");
            return;
        }
        crate::log!("INFO", "this node was promoted: joining raft as a manager");
        if let Ok(mut keys) = self.swarm.keys.lock() {
            keys.cluster = Some(*k.private());
        }
        self.swarm.cluster_key = Some(k);
        if let Err(e) = self.store.reset(Bootstrap::Join) {
            crate::log!("ERROR", "cannot reset raft state for promotion: {e}");
            return;
        }
        self.set_local(LOCAL_MODE, "manager");
        self.swarm.close_all("promoted");
        self.swarm.mode = Mode::Manager;
    }

    pub(crate) fn swarm_init(
        &mut self,
        advertise_addr: String,
        listen_addr: String,
        availability: Availability,
        force: bool,
        network: shoal_shared::types::NetworkDefaults,
        autolock: bool,
    ) -> Outcome {
        if self.swarm.mode == Mode::Manager && force {
            if let Err(e) = self.store.force_new_cluster() {
                return Outcome::Now(Reply::error(ErrorKind::Internal, format!("cannot force a new cluster: {e}")));
            }
            crate::log!("WARN", "forced a new cluster: this node is now the only manager");
            self.swarm.close_all("forced a new cluster");
            let mut ops = Vec::new();
            if let Some(mut me) = self.store.state().nodes.get(&self.node_id).cloned() {
                if !advertise_addr.is_empty() {
                    me.addr = with_port_or(&advertise_addr, port_of(&self.swarm.listen_addr).unwrap_or(super::super::SWARM_PORT));
                    me.manager_addr = me.addr.clone();
                    self.swarm.advertise_addr = me.addr.clone();
                    let a = me.addr.clone();
                    self.set_local(LOCAL_ADVERTISE, &a);
                }
                me.state = NodeState::Ready;
                ops.push(Op::PutNode(me));
            }
            // Other managers are gone from raft: record them as workers so
            // membership reconciliation does not wait for them.
            for n in self.store.state().nodes.values() {
                if n.role == NodeRole::Manager && n.id != self.node_id {
                    let mut w = n.clone();
                    w.role = NodeRole::Worker;
                    w.manager_addr.clear();
                    w.state = NodeState::Down;
                    ops.push(Op::PutNode(w));
                }
            }
            let mut ok = self.init_reply();
            // `--autolock` with `--force-new-cluster` turns it on (or shows the key in effect).
            if autolock {
                let made = self
                    .io
                    .random32()
                    .map_err(control::ControlError::Invalid)
                    .and_then(|k| control::set_autolock(self.store.state(), true, k));
                match made {
                    Ok((more, key)) => {
                        ops.extend(more);
                        if let (Reply::SwarmInit { unlock_key, .. }, Some(k)) = (&mut ok, key) {
                            *unlock_key = UnlockKey::from_bytes(k).to_string();
                        }
                    }
                    Err(e) => return Outcome::Now(Reply::error(e.kind(), e.to_string())),
                }
            }
            return self.write(Ok((ops, ok)));
        }
        if self.swarm.mode != Mode::Solo || self.store.state().cluster.is_some() {
            let e = control::ControlError::AlreadyInSwarm;
            return Outcome::Now(Reply::error(e.kind(), e.to_string()));
        }
        let listen = if listen_addr.is_empty() { format!("0.0.0.0:{}", super::super::SWARM_PORT) } else { with_port(&listen_addr) };
        let made = (|| -> Result<(NodeKey, [u8; 16], [u8; 16]), String> {
            let io = &*self.io;
            let k = NodeKey::from_private(io.random32()?).map_err(|e| e.to_string())?;
            key::save(&self.cfg.data_dir.join(key::CLUSTER_KEY_FILE), &k, &self.sealing.key).map_err(|e| e.to_string())?;
            Ok((k, secret_bytes(io)?, secret_bytes(io)?))
        })();
        let (ck, ws, ms) = match made {
            Ok(v) => v,
            Err(e) => {
                return Outcome::Now(Reply::error(ErrorKind::Internal, format!("cannot create the cluster identity: {e}")));
            }
        };
        let bound = match self.listen(&listen) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Now(Reply::error(ErrorKind::InvalidArgument, e));
            }
        };
        // Advertised without a port: the port actually listened on (Docker advertises the listen port);
        // a port picked by the system (0) is kept, so a restart listens where the swarm was told to dial.
        let listen = bound.to_string();
        let port = bound.port();
        let addr =
            if advertise_addr.is_empty() { format!("{}:{port}", self.io.default_addr()) } else { with_port_or(&advertise_addr, port) };
        if let Ok(mut k) = self.swarm.keys.lock() {
            k.cluster = Some(*ck.private());
        }
        let cluster = Cluster {
            id: self.rng.object_id(),
            meta: Meta::default(),
            name: "default".into(),
            public_key: *ck.public(),
            worker_secret: ws,
            manager_secret: ms,
            network,
        };
        self.swarm.cluster_key = Some(ck);
        let node = Node {
            id: self.node_id.clone(),
            meta: Meta::default(),
            role: NodeRole::Manager,
            availability,
            labels: Default::default(),
            description: self.describe(),
            state: NodeState::Ready,
            addr: addr.clone(),
            manager_addr: addr.clone(),
            attachments: Vec::new(),
        };
        self.swarm.mode = Mode::Manager;
        self.swarm.listen_addr = listen.clone();
        self.swarm.advertise_addr = addr.clone();
        self.set_local(LOCAL_MODE, "manager");
        self.set_local(LOCAL_LISTEN, &listen);
        self.set_local(LOCAL_ADVERTISE, &addr);
        // Docker's `ingress`, created with the swarm (10.0.0.0/24, VNI 4096 by default).
        let ingress = control::ingress_network(&cluster.network, self.rng.object_id());
        let ops = vec![Op::PutCluster(cluster.clone()), Op::PutNode(node), Op::PutNetwork(ingress)];
        let token = JoinToken::generate(&cluster.public_key, Secret::from_bytes(ws)).to_string();
        let mut ops = ops;
        let mut unlock_key = String::new();
        if autolock {
            let k = match self.io.random32() {
                Ok(k) => k,
                Err(e) => return Outcome::Now(Reply::error(ErrorKind::Internal, e)),
            };
            ops.push(Op::SetAutolock(Autolock { key: Some(k), epoch: 1 }));
            unlock_key = UnlockKey::from_bytes(k).to_string();
        }
        self.write(Ok((ops, Reply::SwarmInit { node_id: self.node_id.clone(), advertise_addr: addr, worker_token: token, unlock_key })))
    }

    pub(crate) fn init_reply(&self) -> Reply {
        let token = self
            .store
            .state()
            .cluster
            .as_ref()
            .map(|c| JoinToken::generate(&c.public_key, Secret::from_bytes(c.worker_secret)).to_string())
            .unwrap_or_default();
        Reply::SwarmInit {
            node_id: self.node_id.clone(),
            advertise_addr: self.swarm.advertise_addr.clone(),
            worker_token: token,
            unlock_key: String::new(),
        }
    }

    /// `swarm join-token [--rotate]` (on the leader when rotating).
    pub(crate) fn join_token(&mut self, role: NodeRole, rotate: bool) -> Outcome {
        let Some(mut cluster) = self.store.state().cluster.clone() else {
            let e = control::ControlError::NotInSwarm;
            return Outcome::Now(Reply::error(e.kind(), e.to_string()));
        };
        let addr = self.store.state().nodes.get(&self.node_id).map(|n| n.manager_addr.clone()).unwrap_or_default();
        let mut ops = Vec::new();
        if rotate {
            let s = match secret_bytes(&*self.io) {
                Ok(s) => s,
                Err(e) => {
                    return Outcome::Now(Reply::error(ErrorKind::Internal, e));
                }
            };
            match role {
                NodeRole::Worker => cluster.worker_secret = s,
                NodeRole::Manager => cluster.manager_secret = s,
            }
            ops.push(Op::PutCluster(cluster.clone()));
        }
        let secret = match role {
            NodeRole::Worker => cluster.worker_secret,
            NodeRole::Manager => cluster.manager_secret,
        };
        let token = JoinToken::generate(&cluster.public_key, Secret::from_bytes(secret)).to_string();
        self.write(Ok((ops, Reply::JoinToken { role, token, manager_addr: addr })))
    }

    pub(crate) fn swarm_join(
        &mut self,
        token: String,
        remote: String,
        advertise_addr: String,
        listen_addr: String,
        availability: Availability,
        reply: &Sender<Reply>,
    ) -> Outcome {
        let in_swarm = self.swarm.mode != Mode::Solo || self.store.state().cluster.is_some();
        let default_addr = self.io.default_addr();
        let (token, addrs) =
            match join::plan_join(in_swarm, self.swarm.joining.is_some(), &token, &listen_addr, &advertise_addr, &default_addr) {
                Ok(p) => p,
                Err((kind, m)) => return Outcome::Now(Reply::error(kind, m)),
            };
        self.swarm.joining = Some(Joining {
            token: token.clone(),
            remote: remote.clone(),
            advertise_addr: addrs.advertise,
            listen_addr: addrs.listen,
            availability,
            reply: reply.clone(),
            conn: 0,
            redirects: 0,
            deadline_ms: self.mono_ms() + JOIN_TIMEOUT_MS,
        });
        self.dial_join(token, &remote);
        Outcome::Later
    }

    pub(crate) fn dial_join(&mut self, token: JoinToken, remote: &str) {
        let addr = with_port(remote);
        let sock = match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(s)) => s,
            _ => {
                self.fail_join(&format!("invalid manager address {remote:?}: use IP[:PORT]"));
                return;
            }
        };
        let conn = self.swarm.ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(j) = self.swarm.joining.as_mut() {
            j.conn = conn;
            j.remote = addr;
        }
        self.swarm.conns.insert(
            conn,
            Conn {
                commands: None,
                purpose: Purpose::Join,
                outbound: true,
                remote: Some(sock),
                expect: None,
                peer: None,
                join_role: None,
                error: None,
            },
        );
        let payload = token::encode_join_hello(&token);
        let pin = Some(token.cluster_key_digest);
        let key = *self.swarm.node_key.private();
        self.io.dial(crate::daemon::io::Dial {
            conn,
            addr: sock,
            purpose: Purpose::Join,
            key,
            payload,
            pin,
            profile: self.swarm.link_profile,
        });
    }

    pub(crate) fn fail_join(&mut self, why: &str) {
        if let Some(j) = self.swarm.joining.take() {
            crate::log!("WARN", "join of the swarm at {} failed: {why}", j.remote);
            let _ = j.reply.try_send(Reply::error(ErrorKind::Unavailable, format!("cannot join the swarm at {}: {why}", j.remote)));
            self.swarm.close(j.conn, "join failed");
        }
    }

    pub(crate) fn on_join_request(
        &mut self,
        conn: u64,
        peer: &str,
        role: NodeRole,
        advertise_addr: String,
        availability: Availability,
        description: shoal_shared::types::NodeDescription,
    ) {
        if !self.leads() {
            self.redirect_to_leader(conn);
            return;
        }
        let remote_ip = self.swarm.conns.get(&conn).and_then(|c| c.remote).map(|a| a.ip().to_string()).unwrap_or_default();
        let addr = if advertise_addr.is_empty() { format!("{remote_ip}:{}", super::super::SWARM_PORT) } else { with_port(&advertise_addr) };
        let existing = self.store.state().nodes.get(peer).cloned();
        let node = Node {
            id: peer.to_string(),
            meta: existing.as_ref().map(|n| n.meta.clone()).unwrap_or_default(),
            role,
            availability,
            labels: existing.map(|n| n.labels).unwrap_or_default(),
            description,
            state: NodeState::Ready,
            addr: addr.clone(),
            manager_addr: if role == NodeRole::Manager { addr.clone() } else { String::new() },
            attachments: Vec::new(),
        };
        match self.propose_ops(vec![Op::PutNode(node)]) {
            Ok(Some(proposal)) => {
                crate::log!("INFO", "node {peer} at {addr} joins as a {}", if role == NodeRole::Manager { "manager" } else { "worker" });
                self.swarm.pending_joins.push(PendingJoin { proposal, conn, node_id: peer.to_string(), role });
                self.resolve_outcomes();
            }
            Ok(None) => {}
            Err(e) => self.swarm.close(conn, &format!("the manager cannot record the node: {e}")),
        }
    }

    pub(super) fn accept_join(&mut self, j: PendingJoin) {
        let cluster_id = self.store.state().cluster.as_ref().map(|c| c.id.clone()).unwrap_or_default();
        let cluster_key = (j.role == NodeRole::Manager).then(|| self.swarm.cluster_key.as_ref().map(|k| k.private().to_vec())).flatten();
        let msg = Wire::JoinAccepted { node_id: j.node_id, role: j.role, cluster_id, managers: self.manager_infos(), cluster_key };
        self.swarm.send(j.conn, &msg);
    }

    pub(crate) fn on_join_accepted(
        &mut self,
        conn: u64,
        node_id: String,
        role: NodeRole,
        _cluster_id: String,
        managers: Vec<ManagerInfo>,
        cluster_key: Option<Vec<u8>>,
    ) {
        let Some(j) = self.swarm.joining.take() else { return };
        self.swarm.close(conn, "joined");
        let key = match join::check_accepted(&self.node_id, &node_id, role, cluster_key.as_deref()) {
            Ok(k) => k,
            Err((kind, m)) => {
                let _ = j.reply.try_send(Reply::error(kind, m));
                return;
            }
        };
        if let Some(private) = key {
            let Ok(k) = NodeKey::from_private(private) else {
                let _ = j.reply.try_send(Reply::error(ErrorKind::Internal, "the manager did not send a valid cluster key"));
                return;
            };
            if let Err(e) = key::save(&self.cfg.data_dir.join(key::CLUSTER_KEY_FILE), &k, &self.sealing.key) {
                let _ = j.reply.try_send(Reply::error(ErrorKind::Internal, format!("cannot store the cluster key: {e}")));
                return;
            }
            if let Ok(mut keys) = self.swarm.keys.lock() {
                keys.cluster = Some(*k.private());
            }
            self.swarm.cluster_key = Some(k);
            if let Err(e) = self.store.reset(Bootstrap::Join) {
                let _ = j.reply.try_send(Reply::error(ErrorKind::Internal, format!("cannot prepare raft state: {e}")));
                return;
            }
        }
        if let Err(e) = self.listen(&j.listen_addr) {
            crate::log!("ERROR", "{e}");
        }
        self.swarm.mode = if role == NodeRole::Manager { Mode::Manager } else { Mode::Worker };
        self.set_hints(managers.clone());
        self.swarm.listen_addr = j.listen_addr.clone();
        self.swarm.advertise_addr = j.advertise_addr.clone();
        self.swarm.assigned = None;
        self.set_local(LOCAL_LISTEN, &j.listen_addr);
        self.set_local(LOCAL_ADVERTISE, &j.advertise_addr);
        self.set_local(LOCAL_MODE, if role == NodeRole::Manager { "manager" } else { "worker" });
        crate::log!("INFO", "joined the swarm as a {}", if role == NodeRole::Manager { "manager" } else { "worker" });
        if role == NodeRole::Manager {
            let deadline_ms = self.mono_ms() + JOIN_VOTER_WAIT_MS;
            self.swarm.voter_wait = Some(VoterWait { reply: j.reply, node_id, deadline_ms });
            return;
        }
        let _ = j.reply.try_send(Reply::Joined { role, node_id });
    }

    /// `swarm leave`: at once, or, on a manager being demoted, once it is a worker.
    pub(crate) fn swarm_leave(&mut self, force: bool, reply: &Sender<Reply>) -> Outcome {
        let demoted = self.store.state().nodes.get(&self.node_id).is_some_and(|n| n.role == NodeRole::Worker);
        if self.swarm.mode == Mode::Manager && demoted {
            if self.swarm.leave_after_demotion.is_some() {
                let m = "a swarm leave is already waiting for this node's demotion to finish (at most 5 s); wait for it";
                return Outcome::Now(Reply::error(ErrorKind::FailedPrecondition, m));
            }
            // Demoted, and leaving raft: leave as the worker it is about to be (leaving raft
            // first keeps a two-manager swarm's quorum), as Swarm switches at once.
            self.swarm.leave_after_demotion = Some((force, reply.clone()));
            self.check_demotion();
            return Outcome::Later;
        }
        Outcome::Now(self.leave_now(force))
    }

    pub(crate) fn leave_now(&mut self, force: bool) -> Reply {
        let state = self.store.state();
        let managers = state.nodes.values().filter(|n| n.role == NodeRole::Manager).count();
        if let Some((kind, msg)) = join::leave_refusal(self.swarm.mode, state.cluster.is_some(), managers, force) {
            return Reply::error(kind, msg);
        }
        self.teardown_networks();
        self.swarm.close_all(shoal_shared::wire::LEFT_THE_SWARM);
        self.swarm.listener = None;
        // Another swarm's raft indexes start over: the record version is forgotten too.
        self.swarm.role_version = 0;
        for k in [LOCAL_MODE, LOCAL_MANAGERS, LOCAL_MANAGERS_KNOWN, LOCAL_LISTEN, LOCAL_ADVERTISE, LOCAL_ROLE_VERSION] {
            if let Err(e) = self.store.remove_local(k) {
                crate::log!("ERROR", "cannot clear {k}: {e}");
            }
        }
        let _ = std::fs::remove_file(self.cfg.data_dir.join(key::CLUSTER_KEY_FILE));
        self.swarm.cluster_key = None;
        if let Ok(mut k) = self.swarm.keys.lock() {
            k.cluster = None;
        }
        // A node that left comes back to any swarm as a new node, as Swarm's.
        if let Err(e) = self.renew_identity() {
            return Reply::error(ErrorKind::Internal, e);
        }
        self.swarm.mode = Mode::Solo;
        self.swarm.hints.clear();
        self.swarm.known.clear();
        self.swarm.leader_hint = None;
        self.swarm.removed = false;
        self.swarm.assigned = None;
        self.forget_persisted_assignments();
        self.swarm.reported.clear();
        crate::log!("INFO", "left the swarm; this node's tasks are stopped");
        Reply::Left
    }

    /// `swarm leave`'s new identity: a new node key and the node id it
    /// gives, the store erased under that id ([`Store::reset_identity`]),
    /// then the key saved. The old id is kept if the key cannot be made or
    /// saved (said in the log); the swarm is left either way. A crash
    /// between the two leaves a node outside any swarm whose store names
    /// another id than its key: the next start adopts the key's
    /// ([`super::super::open_store`]).
    fn renew_identity(&mut self) -> Result<(), String> {
        let old_id = self.node_id.clone();
        let fresh = self.io.random32().and_then(|r| key::NodeKey::from_private(r).map_err(|e| e.to_string()));
        let new_key = match fresh {
            Ok(k) => k,
            Err(e) => {
                crate::log!("ERROR", "cannot make a new node key ({e}); this node keeps its id {old_id}");
                return self.store.reset(Bootstrap::Single).map_err(|e| format!("cannot erase the swarm state: {e}"));
            }
        };
        let new_id = new_key.node_id();
        self.store.reset_identity(&new_id, Bootstrap::Single).map_err(|e| format!("cannot erase the swarm state: {e}"))?;
        if let Err(e) = key::save(&self.cfg.data_dir.join(key::NODE_KEY_FILE), &new_key, &self.sealing.key) {
            crate::log!("ERROR", "cannot save the new node key ({e}); this node keeps its id {old_id}");
            return self.store.reset_identity(&old_id, Bootstrap::Single).map_err(|e| format!("cannot erase the swarm state: {e}"));
        }
        if let Ok(mut k) = self.swarm.keys.lock() {
            k.node = *new_key.private();
        }
        self.swarm.node_key = new_key;
        self.worker.set_node_id(&new_id);
        crate::log!("INFO", "this node is now {new_id} (it was {old_id} in the swarm it left)");
        self.node_id = new_id;
        Ok(())
    }
}
