//! Connections on the swarm port, as the loop sees them: the links this
//! node wants (dialed through the [`super::peers`] core), handshakes and
//! who is admitted, messages routed to their handlers, links lost.

use super::admit::{admit, Admit, Handshake};
use super::*;

/// A link's end when its peer closed it on `swarm leave`.
/// Most registry credentials a worker keeps from one message (one per assigned service).
const REGISTRY_AUTHS_MAX: usize = 4096;
const PEER_LEFT: &str = "the node left the swarm";

impl Daemon {
    /// Keeps the links this node wants and drops the others.
    pub(crate) fn maintain_links(&mut self) {
        let mut want: BTreeMap<String, String> = BTreeMap::new();
        match self.swarm.mode {
            Mode::Solo => {}
            Mode::Manager => {
                let status = self.store.raft_status();
                let mut rids: Vec<u64> = status.voters.iter().chain(&status.learners).copied().collect();
                if rids.is_empty() {
                    rids = self.swarm.hints.iter().map(|m| raft_id(&m.node_id)).collect();
                }
                for rid in rids {
                    if rid == self.store.raft_id() {
                        continue;
                    }
                    if let Some((id, addr)) = self.node_of_raft(rid) {
                        if !addr.is_empty() {
                            want.insert(id, addr);
                        }
                    }
                }
                // A leader a member named, which this replica does not know as a member yet.
                if let Some(l) = self.swarm.vouched_leader.as_ref().and_then(|v| self.swarm.hints.iter().find(|h| &h.node_id == v)) {
                    want.insert(l.node_id.clone(), l.addr.clone());
                }
            }
            Mode::Worker => {
                let target = self.swarm.leader_hint.clone().or_else(|| {
                    let h = self.dial_candidates();
                    (!h.is_empty()).then(|| h[self.swarm.hint_next % h.len()].clone())
                });
                if let Some(m) = target {
                    want.insert(m.node_id, m.addr);
                }
            }
        }
        let want: BTreeMap<String, String> = want.into_iter().map(|(id, addr)| (id, with_port(&addr))).collect();
        let ids = self.swarm.ids.clone();
        self.swarm.peers.want(&want, self.mono_ms(), || ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        self.drain_peers();
    }

    /// Carries out what the peers core decided: dials, closes, logs.
    pub(crate) fn drain_peers(&mut self) {
        while let Some(effect) = self.swarm.peers.poll_effect() {
            match effect {
                PeerEffect::Dial { conn, node_id, addr } => {
                    let c = Conn {
                        commands: None,
                        purpose: Purpose::Node,
                        outbound: true,
                        remote: Some(addr),
                        expect: Some(node_id),
                        peer: None,
                        join_role: None,
                        error: None,
                    };
                    self.swarm.conns.insert(conn, c);
                    let payload = wire::encode_node_hello(&self.swarm.advertise_addr);
                    let key = *self.swarm.node_key.private();
                    self.io.dial(crate::daemon::io::Dial {
                        conn,
                        addr,
                        purpose: Purpose::Node,
                        key,
                        payload,
                        pin: None,
                        profile: self.swarm.link_profile,
                    });
                }
                PeerEffect::Close { conn, reason } => self.swarm.close(conn, reason),
                PeerEffect::Log { level, message } => crate::log!(level, "{message}"),
            }
        }
    }

    pub(crate) fn on_link_up(&mut self, up: LinkUp) {
        let c = self.swarm.conns.entry(up.conn).or_insert(Conn {
            commands: None,
            purpose: up.purpose,
            outbound: up.outbound,
            remote: None,
            expect: None,
            peer: None,
            join_role: None,
            error: None,
        });
        c.commands = Some(up.commands);
        c.remote = Some(up.remote);
    }

    pub(crate) fn on_link(&mut self, conn: u64, event: LinkEvent) {
        match event {
            LinkEvent::Established { peer_static, peer_payload } => self.on_established(conn, peer_static, &peer_payload),
            LinkEvent::Message(bytes) => match wire::decode(&bytes) {
                Ok(msg) => self.on_message(conn, msg),
                Err(e @ wire::WireError::Unknown { .. }) => {
                    // A newer node's message: ignore it and keep the link (rolling upgrades).
                    let remote = self.swarm.conns.get(&conn).and_then(|c| c.remote);
                    crate::log!("WARN", "ignoring a message from {remote:?}: {e}");
                }
                Err(e) => {
                    let remote = self.swarm.conns.get(&conn).and_then(|c| c.remote);
                    crate::log!("WARN", "closing link to {remote:?}: {e}");
                    self.swarm.close(conn, &format!("malformed message: {e}"));
                }
            },
            LinkEvent::TimedOut => {
                if let Some(c) = self.swarm.conns.get_mut(&conn) {
                    c.error = Some("the peer stopped answering (link timed out)".into());
                }
            }
            LinkEvent::Closed(e) => {
                if let Some(c) = self.swarm.conns.get_mut(&conn) {
                    c.error = Some(match e {
                        LinkError::ClosedByPeer { reason } if reason == wire::LEFT_THE_SWARM => PEER_LEFT.to_string(),
                        LinkError::ClosedByPeer { reason } => format!("refused by the manager: {reason}"),
                        other => other.to_string(),
                    });
                }
            }
        }
    }

    pub(crate) fn on_established(&mut self, conn: u64, peer_static: [u8; 32], payload: &[u8]) {
        let peer = key::node_id_of(&peer_static);
        let Some(c) = self.swarm.conns.get(&conn) else { return };
        let (purpose, outbound, expect, remote) = (c.purpose, c.outbound, c.expect.clone(), c.remote);
        let known = self.store.state().nodes.contains_key(&peer)
            || self.swarm.hints.iter().any(|m| m.node_id == peer)
            || self.swarm.vouched_leader.as_deref() == Some(peer.as_str());
        #[cfg(feature = "sim")]
        let known = known || shoal_manager::sim_bugs::on(shoal_manager::sim_bugs::Bug::SessionsForStrangers);
        let cluster = self.store.state().cluster.clone();
        let check_token = || {
            let cluster = cluster.ok_or_else(|| "this manager has no swarm state yet; retry".to_string())?;
            let secrets =
                JoinSecrets { worker: Secret::from_bytes(cluster.worker_secret), manager: Secret::from_bytes(cluster.manager_secret) };
            match token::check_join_hello(payload, &cluster.public_key, &secrets) {
                Ok(TokenRole::Worker) => Ok(NodeRole::Worker),
                Ok(TokenRole::Manager) => Ok(NodeRole::Manager),
                Err(e) => Err(e.to_string()),
            }
        };
        let handshake = Handshake { purpose, outbound, expect: expect.as_deref(), peer: &peer, leads: self.leads_caught_up() };
        match admit(handshake, self.swarm.mode, known, check_token) {
            Admit::Session => {
                self.accept_peer(conn, &peer);
                let description = self.describe();
                let advertise_addr = self.swarm.advertise_addr.clone();
                self.swarm.send(conn, &Wire::Session { advertise_addr, description });
                if self.swarm.mode == Mode::Worker {
                    self.swarm.reported.clear();
                    self.swarm.session_wait = Some((conn, self.mono_ms()));
                }
            }
            Admit::Member => {
                let _ = wire::decode_node_hello(payload);
                self.accept_peer(conn, &peer);
                // A manager demoted while it could not hear it links in as a manager.
                if !self.store.is_member(raft_id(&peer)) {
                    self.tell_demoted(conn, &peer);
                }
            }
            Admit::Joiner(role) => {
                if let Some(c) = self.swarm.conns.get_mut(&conn) {
                    c.peer = Some(peer);
                    c.join_role = Some(role);
                }
            }
            Admit::JoinDial => {
                if let Some(c) = self.swarm.conns.get_mut(&conn) {
                    c.peer = Some(peer);
                }
                let Some(j) = &self.swarm.joining else { return };
                let advertise_addr = j.advertise_addr.clone();
                let availability = j.availability;
                let description = self.describe();
                self.swarm.send(conn, &Wire::JoinRequest { advertise_addr, availability, description });
            }
            Admit::Redirect => {
                self.redirect_to_leader(conn);
                self.swarm.close(conn, "this node is not a manager");
            }
            Admit::Refuse { reason, warn } => {
                if let Some(w) = warn {
                    crate::log!("WARN", "{w} (from {remote:?})");
                }
                self.swarm.close(conn, &reason);
            }
        }
    }

    /// Whether `peer` is a manager as far as this node knows (state, or the
    /// managers it was told about when it joined).
    pub(crate) fn is_manager_peer(&self, peer: &str) -> bool {
        match self.store.state().nodes.get(peer) {
            Some(n) => n.role == NodeRole::Manager,
            None => self.swarm.hints.iter().any(|m| m.node_id == peer),
        }
    }

    /// Sends this node's session (and description) again to the leader it
    /// knows (a worker: as it was told; a follower manager: its raft's), on
    /// its link there; nothing when there is none (the next session carries
    /// the description anyway).
    /// Whether it was sent.
    pub(crate) fn resend_session(&mut self) -> bool {
        let leader = match self.swarm.mode {
            Mode::Worker => self.swarm.leader_hint.as_ref().map(|l| l.node_id.clone()),
            Mode::Manager => self.leader_node().filter(|l| *l != self.node_id),
            Mode::Solo => None,
        };
        let Some(leader) = leader else { return false };
        let Some(conn) = self.swarm.established(&leader) else { return false };
        let description = self.describe();
        let advertise_addr = self.swarm.advertise_addr.clone();
        self.swarm.send(conn, &Wire::Session { advertise_addr, description })
    }

    pub(crate) fn accept_peer(&mut self, conn: u64, peer: &str) {
        if let Some(c) = self.swarm.conns.get_mut(&conn) {
            c.peer = Some(peer.to_string());
        }
        self.swarm.dispatcher.handle_link_up(peer);
    }

    pub(crate) fn on_link_gone(&mut self, conn: u64, dial_error: Option<String>) {
        let Some(mut c) = self.swarm.conns.remove(&conn) else { return };
        if dial_error.is_some() {
            c.error = dial_error;
        }
        if let Some(peer) = &c.peer {
            let still_linked = self.swarm.established(peer).is_some();
            if c.error.as_deref() == Some(PEER_LEFT) {
                self.swarm.dispatcher.handle_left(peer);
            }
            let now_ms = self.mono_ms();
            self.swarm.dispatcher.handle_link_down(peer, conn, still_linked, now_ms);
        }
        let now_ms = self.mono_ms();
        let lost = self.swarm.peers.handle_gone(conn, c.error.as_deref(), now_ms, &mut self.rng);
        if self.swarm.mode == Mode::Worker && c.error.as_deref().is_some_and(|e| e.contains(shoal_manager::dispatcher::REMOVED)) {
            self.swarm.removed = true;
        }
        self.drain_peers();
        if let (Some(id), Mode::Worker) = (lost, self.swarm.mode) {
            // Try the next manager next time unless a redirect named the leader.
            if self.swarm.leader_hint.as_ref().is_some_and(|l| l.node_id == id) {
                self.swarm.leader_hint = None;
            }
            self.swarm.hint_next += 1;
        }
        if self.swarm.joining.as_ref().is_some_and(|j| j.conn == conn) {
            let why = c.error.unwrap_or_else(|| "the manager closed the connection".into());
            self.fail_join(&why);
        }
        for j in self.swarm.pending_joins.iter().filter(|j| j.conn == conn) {
            crate::log!("INFO", "node {} left before its join was answered", j.node_id);
        }
        self.logs_link_gone(conn);
        self.blobs_link_gone(conn);
    }

    pub(crate) fn on_message(&mut self, conn: u64, msg: Wire) {
        let Some(c) = self.swarm.conns.get(&conn) else { return };
        let Some(peer) = c.peer.clone() else {
            self.swarm.close(conn, "message before the handshake was accepted");
            return;
        };
        // The peer answered with more than a redirect: this link is useful (its loss starts
        // the backoff over). A redirect only says where to go next.
        if !matches!(msg, Wire::Redirect { .. }) {
            self.swarm.peers.handle_useful(&peer);
            self.swarm.removed = false;
        }
        let purpose = c.purpose;
        let join_role = c.join_role;
        match (purpose, msg) {
            (Purpose::Node, Wire::Raft(bytes)) => {
                // Only managers take part in raft: a worker's key cannot disturb elections.
                // (A member being demoted still counts until raft has removed it.)
                let vouched = self.swarm.vouched_leader.as_deref() == Some(peer.as_str());
                if self.swarm.mode != Mode::Manager || !(self.is_manager_peer(&peer) || self.store.is_member(raft_id(&peer)) || vouched) {
                    // A manager demoted (and removed from raft) while cut off never applies its
                    // demotion: its replica stopped before it. The leader tells it with its worker
                    // assignments (found by the whole-node simulator).
                    self.tell_demoted(conn, &peer);
                    return;
                }
                match raft::decode(&bytes) {
                    Ok(m) if m.from == raft_id(&peer) => {
                        let campaigning = matches!(m.kind, raft::MessageKind::VoteRequest { .. });
                        match self.store.step(m) {
                            Ok(msgs) => self.route_raft(msgs),
                            // A halted store (a full disk) refuses every message: said once, by `disk`.
                            Err(_) if self.store.halted().is_some() => {}
                            Err(e) => crate::log!("WARN", "raft message from {peer} refused: {e}"),
                        }
                        if campaigning {
                            // A member that campaigns while this node follows a leader it may
                            // not know (its replica stopped before that leader was promoted).
                            self.name_leader_to(conn, &peer);
                        }
                    }
                    Ok(m) => {
                        crate::log!("WARN", "node {peer} sent a raft message as {}; closing", m.from);
                        self.swarm.close(conn, "raft sender does not match the link's key");
                    }
                    Err(e) => crate::log!("WARN", "undecodable raft message from {peer}: {e}"),
                }
            }
            (Purpose::Node, Wire::Session { advertise_addr, description }) => self.on_session(conn, &peer, advertise_addr, description),
            (Purpose::Node, msg @ Wire::Assignments { .. }) => self.on_assignments(msg),
            (Purpose::Node, Wire::Report { statuses }) => {
                if !self.leads() {
                    return;
                }
                let ops = shoal_manager::dispatcher::accept_reports(self.store.state(), &peer, statuses, self.now());
                self.commit_internal(ops);
            }
            (Purpose::Node, Wire::RestartsInPlace { restarts }) => {
                if !self.leads() {
                    return;
                }
                let ops = shoal_manager::dispatcher::accept_restarts(self.store.state(), &peer, restarts);
                self.commit_internal(ops);
            }
            (Purpose::Node, Wire::Request { id, req }) => {
                if !self.is_manager_peer(&peer) {
                    // Workers cannot view or change cluster state, not even by forwarding.
                    crate::log!("WARN", "node {peer} is not a manager but forwarded a request; closing");
                    self.swarm.close(conn, "only managers may forward requests");
                    return;
                }
                self.route(req, Origin::Peer { conn, id });
            }
            (Purpose::Node, Wire::Reply { id, mut reply, index }) => {
                // `node ls` marks the node the CLI asked (Docker's `*`), not the leader that answered.
                if let Reply::Nodes { self_id, .. } = &mut reply {
                    self_id.clone_from(&self.node_id);
                }
                self.swarm.pending.handle_answer(id, conn, reply, index);
                self.release_forwards();
            }
            (Purpose::Node, Wire::Removed { leader_id }) => self.on_removed(&peer, leader_id),
            (Purpose::Node, Wire::Settings { link_profile }) => {
                // Only a leader sends settings, and only workers take them: a manager's come from its replica.
                if self.swarm.mode == Mode::Worker && self.is_manager_peer(&peer) {
                    self.apply_link_profile(link_profile);
                }
            }
            (Purpose::Node, msg @ (Wire::LogsRequest { .. } | Wire::LogsReply { .. })) => self.on_logs_message(conn, &peer, msg),
            (Purpose::Node, Wire::TunnelKeys { keys }) => self.on_tunnel_keys(&peer, keys),
            (Purpose::Node, msg @ (Wire::BlobGet { .. } | Wire::BlobPart { .. })) => self.on_blob_message(conn, &peer, msg),
            (Purpose::Node, Wire::TaskPulls { pulls }) => self.on_task_pulls(&peer, pulls),
            (Purpose::Node, Wire::RegistryAuths { auths }) => {
                // Only a leader sends them, and only a worker keeps them: a manager reads its replica.
                if self.swarm.mode == Mode::Worker && self.is_manager_peer(&peer) {
                    self.swarm.registry_auths = auths.into_iter().take(REGISTRY_AUTHS_MAX).collect();
                }
            }
            (Purpose::Node, Wire::Files { files }) => {
                // Only a leader sends them, and only a worker keeps them (in memory): a manager reads its replica.
                if self.swarm.mode == Mode::Worker && self.is_manager_peer(&peer) {
                    let files = files.into_iter().take(shoal_shared::wire::FILES_PER_NODE_MAX);
                    self.swarm.files = files.map(|f| ((f.kind, f.id), f.data)).collect();
                }
            }
            (_, Wire::Redirect { leader_id, leader_addr }) => self.on_redirect(conn, leader_id, leader_addr),
            (Purpose::Join, Wire::JoinRequest { advertise_addr, availability, description }) => {
                let Some(role) = join_role else { return };
                self.on_join_request(conn, &peer, role, advertise_addr, availability, description);
            }
            (Purpose::Join, Wire::JoinAccepted { node_id, role, cluster_id, managers, cluster_key }) => {
                self.on_join_accepted(conn, node_id, role, cluster_id, managers, cluster_key)
            }
            (_, other) => {
                crate::log!("WARN", "unexpected {} message from {peer}; closing", variant_name(&other));
                self.swarm.close(conn, "unexpected message");
            }
        }
    }

    pub(crate) fn on_redirect(&mut self, conn: u64, leader_id: String, leader_addr: String) {
        if self.swarm.joining.as_ref().is_some_and(|j| j.conn == conn) {
            let Some(j) = self.swarm.joining.as_mut() else { return };
            match join::on_redirect(&mut j.redirects, &leader_addr) {
                join::Redirected::Fail(why) => self.fail_join(why),
                join::Redirected::Dial(remote) => {
                    let token = j.token.clone();
                    self.swarm.close(conn, "redirected");
                    self.dial_join(token, &remote);
                }
            }
            return;
        }
        if self.swarm.mode == Mode::Manager && !leader_id.is_empty() {
            // A fellow raft member names the leader: a manager whose replica stopped before
            // that leader was promoted would otherwise ignore it for good (found by the
            // whole-node simulator). Only a member's word counts.
            // A member, or a manager it was told of when it joined or was promoted (a learner's
            // replica may be empty).
            let from_member = self
                .swarm
                .conns
                .get(&conn)
                .and_then(|c| c.peer.clone())
                .is_some_and(|p| self.store.is_member(raft_id(&p)) || self.swarm.hints.iter().any(|h| h.node_id == p));
            if from_member && !self.store.is_member(raft_id(&leader_id)) && self.swarm.vouched_leader.as_deref() != Some(leader_id.as_str())
            {
                crate::log!("INFO", "a raft member names {leader_id} as the leader; following it");
                self.swarm.vouched_leader = Some(leader_id.clone());
                if !self.swarm.hints.iter().any(|h| h.node_id == leader_id) && !leader_addr.is_empty() {
                    self.swarm.hints.push(ManagerInfo { node_id: leader_id, addr: leader_addr });
                }
            }
            return;
        }
        if self.swarm.mode == Mode::Worker {
            // A known leader is dialed at once; "no leader" waits out the backoff of each
            // manager it tries next, so a swarm without quorum is not hammered. A redirect
            // naming this node (a former manager it asked, removed since, still lists it) is
            // no lead: followed, two such nodes sent each other back and forth for good and
            // never tried the real managers (found by the whole-node simulator, seed 288).
            let known = !leader_addr.is_empty() && leader_id != self.node_id;
            self.swarm.leader_hint = known.then_some(ManagerInfo { node_id: leader_id, addr: leader_addr });
            self.swarm.close(conn, "redirected to the leader");
            if let Some(l) = &self.swarm.leader_hint {
                let now_ms = self.mono_ms();
                let id = l.node_id.clone();
                self.swarm.peers.retry_now(&id, now_ms);
            }
        }
    }
}

impl Daemon {
    /// Follower that sees a new leader: names it to every raft member it has
    /// a link to. A learner whose replica is still empty (promoted, or
    /// restarted before it caught up) knows neither the leader nor that it
    /// is a member, and would refuse its links for good (found by the
    /// whole-node simulator).
    pub(crate) fn name_leader_to_members(&mut self) {
        let Some(leader) = self.leader_node() else { return };
        let msg = self.leader_redirect();
        let members: Vec<u64> = self
            .swarm
            .conns
            .iter()
            .filter(|(_, c)| c.commands.is_some())
            .filter(|(_, c)| c.peer.as_deref().is_some_and(|p| p != leader && self.store.is_member(raft_id(p))))
            .map(|(id, _)| *id)
            .collect();
        for conn in members {
            self.swarm.send(conn, &msg);
        }
    }
}

pub(super) fn variant_name(w: &Wire) -> &'static str {
    match w {
        Wire::JoinRequest { .. } => "join request",
        Wire::JoinAccepted { .. } => "join accepted",
        Wire::Redirect { .. } => "redirect",
        Wire::Raft(_) => "raft",
        Wire::Session { .. } => "session",
        Wire::Assignments { .. } => "assignments",
        Wire::Report { .. } => "report",
        Wire::Request { .. } => "request",
        Wire::Reply { .. } => "reply",
        Wire::LogsRequest { .. } => "logs request",
        Wire::LogsReply { .. } => "logs reply",
        Wire::Removed { .. } => "removed",
        Wire::Settings { .. } => "settings",
        Wire::RestartsInPlace { .. } => "restarts in place",
        Wire::TunnelKeys { .. } => "tunnel keys",
        Wire::RegistryAuths { .. } => "registry auths",
        Wire::Files { .. } => "secrets and configs",
        Wire::BlobGet { .. } => "blob get",
        Wire::BlobPart { .. } => "blob part",
        Wire::TaskPulls { .. } => "task pulls",
    }
}
