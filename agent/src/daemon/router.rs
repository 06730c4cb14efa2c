//! The one way in for a control request, and the one place its reply is sent.
//!
//! A request comes from the control socket ([`Origin::Socket`]) or from a
//! manager that forwarded it to this node as the leader ([`Origin::Peer`]).
//! Either way [`Daemon::route`] classifies it ([`Request::class`]) and
//! [`decide`], a pure function of the request's class and this node's role,
//! says what happens: handle it here, forward it to the leader, answer it
//! from this manager's own state (a read while the leader is unreachable),
//! or refuse it. A forwarded request of class `Local` is refused: it is about
//! the node it was first sent to (`image load` names a path there,
//! `swarm leave` would take the leader out of its swarm), so it never runs
//! elsewhere.
//!
//! A new leader holds reads and writes ([`Route::Hold`]) until it has
//! applied its predecessor's commits (the entry that opened its term): a
//! `node demote` validated against a state missing the last commit could
//! pass a check it would fail (at most [`HELD_MAX`] requests, each for at
//! most [`HOLD_TIMEOUT_MS`]).
//!
//! Handlers ([`Daemon::handle_control`] and the ones it calls) do not send
//! replies; they return an [`Outcome`] and [`Daemon::answer`] sends it now,
//! parks it until its proposal commits, or leaves it to the task that kept
//! the reply sender (runtime calls off the loop, log gathers, joins).

use super::swarm::{self, Mode, FORWARDS_MAX, FORWARD_TIMEOUT_MS};
use super::{reply_later, service, Daemon, Event};
use async_channel::Sender;
use shoal_manager::control;
use shoal_manager::store::Proposal;
use shoal_shared::api::{ErrorKind, Reply, Request, RequestClass};

/// Requests a new leader holds while it catches up, at most.
pub(crate) const HELD_MAX: usize = 64;
/// How long a request is held before it is refused (a leader catches up
/// within one round trip to a quorum; longer means it is not really leading).
pub(crate) const HOLD_TIMEOUT_MS: u64 = swarm::WRITE_TIMEOUT_MS;

/// Where a request came from, and so where its reply goes.
pub(crate) enum Origin {
    /// The control socket (or this node's own fallback): the reply goes to the CLI.
    Socket(Sender<Reply>),
    /// Forwarded by the manager on link `conn` as `Wire::Request { id }`.
    Peer { conn: u64, id: u64 },
}

/// What a handler did with a request.
#[must_use = "an outcome carries the request's reply: give it to Daemon::answer"]
pub(crate) enum Outcome {
    /// The reply, to send at once.
    Now(Reply),
    /// `ok` is the reply once `proposal` commits (an error if it does not).
    AfterCommit { proposal: Proposal, ok: Reply },
    /// The handler kept the reply sender; whatever finishes the work answers.
    Later,
}

/// What to do with a request ([`decide`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// This node is the authority for it: run the handler.
    Handle,
    /// Send it to the leader and relay the leader's answer.
    Forward,
    /// A read while the leader cannot be asked: this manager's (possibly stale) state answers.
    AnswerLocally,
    /// This node leads but has not applied its predecessor's commits yet:
    /// route the request again once it has.
    Hold,
    Refuse(Refusal),
}

/// Why a request is refused; [`Daemon::refusal`] words the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Cluster requests on a worker.
    NotAManager,
    /// A write on a manager that cannot reach the leader.
    NoLeader,
    /// A forwarded request of class `Local`.
    NotForwardable,
    /// A forwarded request on a node that no longer leads.
    NotLeader,
}

/// What the routing decision depends on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts {
    pub(crate) class: RequestClass,
    /// Forwarded by another manager.
    pub(crate) from_peer: bool,
    pub(crate) mode: Mode,
    /// This node is the raft leader.
    pub(crate) leader: bool,
    /// The leader is known and a link to it is up.
    pub(crate) leader_link: bool,
    /// `FORWARDS_MAX` forwards are in flight.
    pub(crate) forwards_full: bool,
    /// This node, if it leads, has applied the entry that opened its term.
    pub(crate) caught_up: bool,
    /// A read a worker answers from its own assignments (`network ls`: the
    /// networks with tasks on this node, as Swarm's workers list them).
    pub(crate) worker_answers: bool,
}

/// Where a request runs. Pure: the shell gathers the facts and acts.
pub(crate) fn decide(f: Facts) -> Route {
    use RequestClass::{Local, Read, Write};
    let leads = f.mode != Mode::Worker && f.leader;
    if f.from_peer {
        // A forwarded request runs on the leader or nowhere: never forwarded again.
        return match f.class {
            Local => Route::Refuse(Refusal::NotForwardable),
            Read | Write if leads && !f.caught_up => Route::Hold,
            Read | Write if leads => Route::Handle,
            Read | Write => Route::Refuse(Refusal::NotLeader),
        };
    }
    match (f.class, f.mode) {
        (Local, _) | (_, Mode::Solo) => Route::Handle,
        (Read, Mode::Worker) if f.worker_answers => Route::AnswerLocally,
        (_, Mode::Worker) => Route::Refuse(Refusal::NotAManager),
        (_, Mode::Manager) if f.leader && !f.caught_up => Route::Hold,
        (_, Mode::Manager) if f.leader => Route::Handle,
        (_, Mode::Manager) if f.leader_link && !f.forwards_full => Route::Forward,
        (Read, Mode::Manager) => Route::AnswerLocally,
        (Write, Mode::Manager) => Route::Refuse(Refusal::NoLeader),
    }
}

impl Daemon {
    /// The single entry point for a request, from the socket or from a peer.
    pub(crate) fn route(&mut self, req: Request, origin: Origin) {
        let from_peer = matches!(origin, Origin::Peer { .. });
        let leader = self.store.is_leader();
        // Only a follower's own requests can be forwarded: look the link up only then.
        let link = if !from_peer && self.swarm.mode == Mode::Manager && !leader { self.leader_link() } else { None };
        let facts = Facts {
            class: req.class(),
            from_peer,
            mode: self.swarm.mode,
            leader,
            leader_link: link.is_some(),
            forwards_full: self.forwards_len() >= FORWARDS_MAX,
            caught_up: leader && self.store.is_leader_caught_up(),
            worker_answers: matches!(req, Request::NetworkList),
        };
        match decide(facts) {
            Route::Handle | Route::AnswerLocally => self.run_request(req, origin),
            Route::Hold => self.hold(req, origin),
            Route::Forward => {
                let reply = self.reply_sender(origin);
                let sent = match link {
                    Some((leader, conn)) => self.forward(req, leader, conn, reply),
                    None => Err((req, reply)),
                };
                if let Err((req, reply)) = sent {
                    // The link refused it: decide again as without a link.
                    match decide(Facts { leader_link: false, ..facts }) {
                        Route::Refuse(why) => {
                            let r = self.refusal(why, &req);
                            self.answer(&reply, Outcome::Now(r));
                        }
                        _ => self.run_request(req, Origin::Socket(reply)),
                    }
                }
            }
            Route::Refuse(why) => {
                let r = self.refusal(why, &req);
                self.answer_origin(origin, r);
            }
        }
    }

    /// Keeps a request until this new leader has caught up (or stopped leading).
    fn hold(&mut self, req: Request, origin: Origin) {
        if self.swarm.held.len() >= HELD_MAX {
            let r = Reply::error(ErrorKind::Unavailable, "this manager just became the leader and is still catching up; retry in a moment");
            self.answer_origin(origin, r);
            return;
        }
        let deadline_ms = self.mono_ms() + HOLD_TIMEOUT_MS;
        self.swarm.held.push_back((req, origin, deadline_ms));
    }

    /// Routes held requests again once this node caught up or stopped
    /// leading; refuses those held past their deadline. Called every loop turn.
    pub(crate) fn release_held(&mut self) {
        if self.swarm.held.is_empty() {
            return;
        }
        let waiting = self.swarm.mode != Mode::Worker && self.store.is_leader() && !self.store.is_leader_caught_up();
        let now_ms = self.mono_ms();
        let held = std::mem::take(&mut self.swarm.held);
        for (req, origin, deadline_ms) in held {
            if !waiting {
                self.route(req, origin);
            } else if now_ms >= deadline_ms {
                let r = Reply::error(
                    ErrorKind::Unavailable,
                    format!(
                        "this manager became the leader but has not applied its predecessor's commits within {} s; retry",
                        HOLD_TIMEOUT_MS / 1000
                    ),
                );
                self.answer_origin(origin, r);
            } else {
                self.swarm.held.push_back((req, origin, deadline_ms));
            }
        }
    }

    /// Sends `r` to wherever a request came from, at once.
    fn answer_origin(&mut self, origin: Origin, r: Reply) {
        match origin {
            Origin::Socket(reply) => self.answer(&reply, Outcome::Now(r)),
            // Index 0: the answer depends on no state, the follower relays it at once.
            Origin::Peer { conn, id } => self.answer_peer(conn, id, r, 0),
        }
    }

    /// Runs a request here (the router decided so, or a forwarded read lost its leader).
    pub(crate) fn run_request(&mut self, req: Request, origin: Origin) {
        let reply = self.reply_sender(origin);
        let out = self.handle_control(req, &reply);
        self.answer(&reply, out);
    }

    /// Sends or parks a handler's reply: the one place replies leave the loop.
    pub(crate) fn answer(&mut self, reply: &Sender<Reply>, out: Outcome) {
        match out {
            Outcome::Now(r) => {
                let _ = reply.try_send(r);
            }
            Outcome::AfterCommit { proposal, ok } => self.park(proposal, ok, reply.clone()),
            Outcome::Later => {}
        }
    }

    /// The sender a handler's reply goes to. A peer's reply goes back on its
    /// link as `Wire::Reply` (through [`Event::ForwardDone`], so it carries
    /// the index this node had applied when it answered); a handler that does
    /// not answer within `FORWARD_TIMEOUT_MS` is answered with an error.
    fn reply_sender(&self, origin: Origin) -> Sender<Reply> {
        let (conn, id) = match origin {
            Origin::Socket(reply) => return reply,
            Origin::Peer { conn, id } => (conn, id),
        };
        let (tx, rx) = async_channel::bounded(1);
        self.io.await_reply(
            rx,
            FORWARD_TIMEOUT_MS,
            Box::new(move |reply| {
                let reply = reply
                    .unwrap_or_else(|| Reply::error(ErrorKind::Unavailable, "the leader could not complete the request in time; retry"));
                Event::ForwardDone { conn, id, reply }
            }),
        );
        tx
    }

    /// The reply a refused request gets.
    fn refusal(&self, why: Refusal, req: &Request) -> Reply {
        match why {
            Refusal::NotAManager => swarm::worker_refusal(self.swarm.removed),
            Refusal::NoLeader => self.no_leader_reply(),
            Refusal::NotForwardable => Reply::error(
                ErrorKind::InvalidArgument,
                format!("{:?} is local to the node it is sent to and cannot be forwarded; send it to that node", req.name()),
            ),
            Refusal::NotLeader => match self.leader_node() {
                Some(l) => Reply::error(ErrorKind::Unavailable, format!("leadership moved to {l}; retry")),
                None => self.no_leader_reply(),
            },
        }
    }

    /// Runs one request on this node; the reply is in the outcome, or goes
    /// to `reply` later.
    pub(crate) fn handle_control(&mut self, req: Request, reply: &Sender<Reply>) -> Outcome {
        match req {
            Request::Ping => Outcome::Now(Reply::Pong),
            Request::Version => Outcome::Now(Reply::Version(self.version_info())),
            Request::SwarmInit { advertise_addr, availability, listen_addr, force_new_cluster, network, autolock } => {
                if let Err(e) = control::check_network_defaults(&network) {
                    return Outcome::Now(Reply::error(e.kind(), e.to_string()));
                }
                self.swarm_init(advertise_addr, listen_addr, availability, force_new_cluster, *network, autolock)
            }
            Request::SwarmUnlock { .. } => Outcome::Now(self.unlock_running()),
            Request::SwarmUnlockKey { rotate } => self.unlock_key(rotate),
            Request::NetworkCreate { spec } => {
                let id = self.rng.object_id();
                let r = control::create_network(self.store.state(), *spec, id.clone());
                self.write(r.map(|ops| (ops, Reply::NetworkCreated { id })))
            }
            Request::FileCreate { kind, spec } => {
                let id = self.rng.object_id();
                let r = control::create_file(self.store.state(), kind, *spec, id.clone());
                self.write(r.map(|ops| (ops, Reply::FileCreated { id })))
            }
            Request::FileEnsure { kind, spec } => {
                let id = self.rng.object_id();
                let r = control::ensure_file(self.store.state(), kind, *spec, id);
                self.write(r.map(|(ops, id, created)| (ops, Reply::FileEnsured { id, created })))
            }
            Request::FileRemove { kind, key } => {
                self.write(control::remove_file(self.store.state(), kind, &key).map(|(ops, name)| (ops, Reply::Removed(vec![name]))))
            }
            Request::NetworkRemove { network } => {
                self.write(control::remove_network(self.store.state(), &network).map(|(ops, name)| (ops, Reply::Removed(vec![name]))))
            }
            Request::SwarmJoin { token, remote_addr, advertise_addr, listen_addr, availability } => {
                self.swarm_join(token, remote_addr, advertise_addr, listen_addr, availability, reply)
            }
            Request::SwarmLeave { force } => self.swarm_leave(force, reply),
            Request::SwarmJoinToken { role, rotate } => self.join_token(role, rotate),
            Request::NodeSetRole { node, role } => {
                // One role change at a time: two demotions checked against the same state could
                // both pass and together leave no manager (found by the whole-node simulator).
                let now_ms = self.mono_ms();
                // Its outcome may never come here (leadership lost): the write's own deadline bounds it.
                if self.swarm.role_change.is_some_and(|(_, at)| now_ms.saturating_sub(at) < swarm::WRITE_TIMEOUT_MS) {
                    return Outcome::Now(Reply::error(
                        ErrorKind::Unavailable,
                        "another promotion or demotion is still being committed; retry in a moment",
                    ));
                }
                let r = self.role_change_ops(&node, role);
                let out = self.write(r.map(|ops| (ops, Reply::Ok)));
                if let Outcome::AfterCommit { proposal, .. } = &out {
                    self.swarm.role_change = Some((*proposal, now_ms));
                }
                out
            }
            Request::SwarmUpdate { dispatcher_heartbeat_ms, autolock, node_lost_after_ms, link_profile, autopilot, layer_sharing } => {
                self.swarm_update(dispatcher_heartbeat_ms, node_lost_after_ms, link_profile, autolock, autopilot, layer_sharing)
            }
            Request::Info => Outcome::Now(self.info()),
            Request::NodeRemove { node, force } => {
                let r = control::remove_node(self.store.state(), &self.node_id, &node, force, |n| {
                    self.store.is_member(shoal_manager::store::raft_id(n))
                });
                self.write(r.map(|(ops, id)| (ops, Reply::Removed(vec![id]))))
            }
            Request::NodeList => {
                let mut r = service::query(self.store.state(), &self.node_id, Request::NodeList);
                if let Reply::Nodes { leader_id, reachable, .. } = &mut r {
                    *leader_id = self.leader_node_id().unwrap_or_default();
                    *reachable = self.reachability().0;
                }
                if let Reply::Nodes { autopilot, .. } = &mut r {
                    *autopilot = self.autopilot_status();
                }
                self.own_disk_warnings(&mut r);
                Outcome::Now(r)
            }
            Request::ServiceCreate { spec, registry_auth } => {
                // Validate first so bad input fails at once, then resolve the image off the loop.
                if let Err(e) = control::create_service(self.store.state(), (*spec).clone(), String::new()) {
                    return Outcome::Now(Reply::error(e.kind(), e.to_string()));
                }
                if let Err(e) = shoal_image::reference::Reference::parse(&spec.task.container.image) {
                    return Outcome::Now(Reply::error(ErrorKind::InvalidArgument, e.to_string()));
                }
                let only_node = self.store.state().nodes.len() <= 1;
                let reply = reply.clone();
                let auth = registry_auth.as_ref().map(shoal_image::Credentials::from);
                self.spawn_runtime(
                    move |rt| service::resolve_image(rt, spec, only_node, auth.as_ref()),
                    move |result| Event::Resolved { result, registry_auth, reply },
                );
                Outcome::Later
            }
            Request::ServiceLogs { service, tail_lines, cursor } => {
                self.service_logs(service, tail_lines, cursor, reply.clone());
                Outcome::Later
            }
            Request::ServiceScale { service, replicas } => {
                self.write(control::scale_service(self.store.state(), &service, replicas).map(|ops| (ops, Reply::Ok)))
            }
            Request::ServiceUpdate { service, spec, rollback, registry_auth } => {
                self.service_update(service, spec, rollback, registry_auth, reply)
            }
            Request::NodeUpdate { node, availability, label_add, label_rm } => self.node_update(node, availability, label_add, label_rm),
            Request::ServiceRemove { service } => {
                self.write(control::remove_service(self.store.state(), &service).map(|(ops, name)| (ops, Reply::Removed(vec![name]))))
            }
            Request::ImageLoad { path } => {
                let reply = reply.clone();
                self.spawn_runtime(
                    move |rt| rt.load(std::path::Path::new(&path)),
                    move |r| {
                        reply_later(
                            &reply,
                            r.map(Reply::Loaded).unwrap_or_else(|e| Reply::error(ErrorKind::InvalidArgument, e.to_string())),
                        )
                    },
                );
                Outcome::Later
            }
            Request::ImagePull { reference, auth } => {
                let reply = reply.clone();
                let auth = auth.as_ref().map(shoal_image::Credentials::from);
                self.spawn_runtime(
                    move |rt| rt.pull(&reference, auth.as_ref()),
                    move |r| {
                        reply_later(
                            &reply,
                            r.map(|p| Reply::Pulled { name: p.name, progress: p.progress, downloaded: p.downloaded })
                                .unwrap_or_else(|e| Reply::error(ErrorKind::NotFound, e.to_string())),
                        )
                    },
                );
                Outcome::Later
            }
            Request::ImagePullStatus { reference } => {
                let reply = reply.clone();
                self.spawn_runtime(move |rt| rt.pull_progress(&reference), move |p| reply_later(&reply, Reply::PullProgress(p)));
                Outcome::Later
            }
            Request::RegistryLogin { registry, auth } => {
                let reply = reply.clone();
                let auth = shoal_image::Credentials::from(&auth);
                self.spawn_runtime(
                    move |rt| rt.login(&registry, &auth),
                    move |r| {
                        reply_later(
                            &reply,
                            r.map(|()| Reply::LoggedIn).unwrap_or_else(|e| Reply::error(ErrorKind::Unavailable, e.to_string())),
                        )
                    },
                );
                Outcome::Later
            }
            Request::ImageList => {
                let reply = reply.clone();
                self.spawn_runtime(
                    move |rt| rt.images(),
                    move |r| {
                        reply_later(&reply, r.map(Reply::Images).unwrap_or_else(|e| Reply::error(ErrorKind::Unavailable, e.to_string())))
                    },
                );
                Outcome::Later
            }
            Request::SwarmBackup { output } => self.swarm_backup(output, reply),
            Request::VolumeList { names } => self.volume_list(names, reply),
            Request::VolumeRemove { name, force } => self.volume_remove(name, force, reply),
            Request::NetworkList if self.swarm.mode == Mode::Worker => Outcome::Now(service::worker_networks(self.swarm.assigned_ref())),
            other => {
                let mut r = service::query(self.store.state(), &self.node_id, other);
                if let Reply::Tasks { tasks, pulls, .. } = &mut r {
                    *pulls = self.task_pulls_of(tasks);
                }
                self.own_disk_warnings(&mut r);
                Outcome::Now(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Command;
    use crate::runtime::fake::Fake;
    use crate::runtime::Runtime;
    use shoal_shared::noise::key;
    use shoal_shared::noise::link::Event as LinkEvent;
    use shoal_shared::rng::Rng;
    use shoal_shared::types::Availability;
    use shoal_shared::wire::{self, Wire};
    use std::sync::Arc;

    fn facts(class: RequestClass, mode: Mode) -> Facts {
        Facts {
            class,
            from_peer: false,
            mode,
            leader: false,
            leader_link: true,
            forwards_full: false,
            caught_up: true,
            worker_answers: false,
        }
    }

    fn check(f: Facts, expect: Route) {
        assert_eq!(decide(f), expect, "{f:?}");
    }

    #[test]
    fn local_requests_run_where_they_are_sent() {
        for mode in [Mode::Solo, Mode::Manager, Mode::Worker] {
            check(facts(RequestClass::Local, mode), Route::Handle);
            check(Facts { leader: true, ..facts(RequestClass::Local, mode) }, Route::Handle);
        }
    }

    #[test]
    fn cluster_requests_follow_the_role() {
        use RequestClass::{Read, Write};
        for class in [Read, Write] {
            check(facts(class, Mode::Solo), Route::Handle);
            check(facts(class, Mode::Worker), Route::Refuse(Refusal::NotAManager));
            check(Facts { leader: true, ..facts(class, Mode::Manager) }, Route::Handle);
            // `network ls`: a worker answers from its assignments; a manager as any read.
            let own = |mode| Facts { worker_answers: true, ..facts(class, mode) };
            check(own(Mode::Worker), if class == Read { Route::AnswerLocally } else { Route::Refuse(Refusal::NotAManager) });
            check(own(Mode::Manager), Route::Forward);
            check(facts(class, Mode::Manager), Route::Forward);
        }
        // No leader to ask, or too many forwards out: reads answer from this manager's state, writes fail.
        for f in [Facts { leader_link: false, ..facts(Read, Mode::Manager) }, Facts { forwards_full: true, ..facts(Read, Mode::Manager) }] {
            check(f, Route::AnswerLocally);
            check(Facts { class: Write, ..f }, Route::Refuse(Refusal::NoLeader));
        }
    }

    #[test]
    fn forwarded_requests_run_on_the_leader_or_nowhere() {
        use RequestClass::{Local, Read, Write};
        let peer = |class, leader| Facts { from_peer: true, leader, ..facts(class, Mode::Manager) };
        check(peer(Local, true), Route::Refuse(Refusal::NotForwardable));
        check(peer(Local, false), Route::Refuse(Refusal::NotForwardable));
        check(peer(Read, true), Route::Handle);
        check(peer(Write, true), Route::Handle);
        check(peer(Read, false), Route::Refuse(Refusal::NotLeader));
        check(peer(Write, false), Route::Refuse(Refusal::NotLeader));
        // Never forwarded again, whatever the link.
        check(Facts { leader_link: true, ..peer(Write, false) }, Route::Refuse(Refusal::NotLeader));
        // A worker does not lead, even if its raft core thinks it does.
        check(Facts { mode: Mode::Worker, ..peer(Write, true) }, Route::Refuse(Refusal::NotLeader));
    }

    #[test]
    fn a_leader_that_has_not_caught_up_holds_cluster_requests() {
        use RequestClass::{Local, Read, Write};
        for class in [Read, Write] {
            let f = Facts { leader: true, caught_up: false, ..facts(class, Mode::Manager) };
            check(f, Route::Hold);
            check(Facts { from_peer: true, ..f }, Route::Hold);
            // A worker never holds; a follower does not care whether it caught up.
            check(Facts { mode: Mode::Worker, ..f }, Route::Refuse(Refusal::NotAManager));
            check(Facts { leader: false, ..f }, Route::Forward);
        }
        // Local requests do not depend on the replicated state.
        check(Facts { leader: true, caught_up: false, ..facts(Local, Mode::Manager) }, Route::Handle);
    }

    /// A daemon driven by hand (no event loop), with the fake runtime.
    fn daemon(name: &str) -> (Daemon, async_channel::Receiver<Event>, Arc<Fake>) {
        let cfg = super::super::tests::config(&format!("router-{name}"));
        let dir = cfg.data_dir.clone();
        let fake = Arc::new(Fake::new());
        let rt: Arc<dyn Runtime> = fake.clone();
        let sealing = super::super::autolock::Sealing::fixed([7; 32], [2; 16]);
        let (store, node_id) = super::super::open_store(&dir, &sealing.key, 7).unwrap();
        let (node_key, _) = key::load_or_create(&dir.join(key::NODE_KEY_FILE), &sealing.key).unwrap();
        let (tx, rx) = async_channel::bounded(64);
        let io = super::super::io::RealIo::new(tx, rt.clone(), std::sync::Arc::new(crate::network::driver::Fake::default()));
        let d =
            Daemon::new(cfg, store, node_id, super::super::Keys { node: node_key, sealing }, rt, Box::new(io), Rng::from_seed(7)).unwrap();
        (d, rx, fake)
    }

    /// Sends `req` as a peer manager would and returns the `Wire::Reply` sent on its link.
    fn forwarded(d: &mut Daemon, conn: u64, link: &async_channel::Receiver<Command>, id: u64, req: Request) -> Reply {
        let msg = wire::encode(&Wire::Request { id, req });
        d.handle(Event::Link { conn, event: LinkEvent::Message(msg) });
        let Ok(Command::Send(bytes)) = link.try_recv() else { panic!("no answer on the link") };
        match wire::decode(&bytes).unwrap() {
            Wire::Reply { id: got, reply, index } => {
                assert_eq!((got, index), (id, 0));
                reply
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_forwarded_local_request_is_refused_not_run_on_the_leader() {
        let (mut d, _events, fake) = daemon("fwd-local");
        let (tx, rx) = async_channel::bounded(1);
        let init = Request::SwarmInit {
            advertise_addr: "127.0.0.1".into(),
            availability: Availability::Active,
            listen_addr: "127.0.0.1:0".into(),
            force_new_cluster: false,
            network: Default::default(),
            autolock: false,
        };
        d.handle(Event::Control { req: init, reply: tx });
        assert!(matches!(rx.try_recv(), Ok(Reply::SwarmInit { .. })));
        assert!(d.leads());
        let (conn, link) = d.swarm.test_link("peer-manager");
        let images_before = fake.images.lock().unwrap().len();

        let r = forwarded(&mut d, conn, &link, 7, Request::ImageLoad { path: "/tmp/images.tar".into() });
        assert_eq!(
            r,
            Reply::error(
                ErrorKind::InvalidArgument,
                "\"image load\" is local to the node it is sent to and cannot be forwarded; send it to that node"
            )
        );
        let r = forwarded(&mut d, conn, &link, 8, Request::SwarmLeave { force: true });
        assert!(
            matches!(&r, Reply::Error { kind: ErrorKind::InvalidArgument, message } if message.starts_with("\"swarm leave\" is local"))
        );
        // The leader neither loaded anything nor left its swarm.
        assert_eq!(fake.images.lock().unwrap().len(), images_before);
        assert!(d.leads());
        assert_eq!(d.swarm.mode, Mode::Manager);
        assert!(d.store.state().cluster.is_some());
    }
}
