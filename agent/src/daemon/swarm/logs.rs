//! The shell of `service logs` across nodes; the decisions are in
//! [`crate::daemon::log_gather`].
//!
//! Owns the gathers in flight on this manager (each with its client's reply
//! sender and its deadline), the `LogsRequest`s out on links, and this
//! node's log reads. Reads block on files, so they run off the event loop
//! (`smol::unblock`) and come back as [`Event::LogsRead`]; the same read
//! serves this manager's own tasks and a `LogsRequest` from a manager.
//!
//! Limits: `LOGS_GATHERS_MAX` gathers and `LOGS_ASKS_MAX` requests in flight
//! on a manager, `LOGS_READS_MAX` reads at once on any node (a request over
//! it is answered with an error, which the manager turns into a warning).
//! Every gather is answered by `LOGS_GATHER_TIMEOUT_MS`, with a warning for
//! each node that had not answered; a node with no link, or whose link
//! closes, is named at once instead of waited for.

use super::Mode;
use crate::daemon::log_gather::{Ask, Gather, LogsRead, Missing, Scope, LOGS_GATHER_TIMEOUT_MS};
use crate::daemon::service;
use crate::daemon::task_logs::TaskLogs;
use crate::daemon::{Daemon, Event};
use async_channel::Sender;
use shoal_shared::api::{ErrorKind, LogCursor, Reply};
use shoal_shared::types::NodeState;
use shoal_shared::wire::{Wire, LOGS_REPLY_BYTES_MAX, LOGS_TASKS_PER_REQUEST_MAX};
use std::collections::BTreeMap;

/// `service logs` requests this manager gathers at once.
pub const LOGS_GATHERS_MAX: usize = 64;
/// `LogsRequest`s this manager has out on links at once.
pub const LOGS_ASKS_MAX: usize = 1_024;
/// Log reads running off the loop at once on this node.
pub const LOGS_READS_MAX: usize = 8;
/// A node's error text is cut to this length before it reaches a warning.
const LOGS_ERROR_BYTES_MAX: usize = 256;

/// The loop's memory of log gathering (part of [`super::Swarm`]).
#[derive(Default)]
pub(crate) struct Gathers {
    next_id: u64,
    open: BTreeMap<u64, Open>,
    /// `LogsRequest` id -> where its answer goes.
    asks: BTreeMap<u64, Route>,
    reads: usize,
}

/// A gather waiting for its nodes.
struct Open {
    gather: Gather,
    reply: Sender<Reply>,
    deadline_ms: u64,
}

/// A `LogsRequest` out on a link.
struct Route {
    gather: u64,
    ask: usize,
    conn: u64,
    node: String,
}

/// Where a finished log read goes.
pub(crate) enum LogsDest {
    /// Ask `ask` of this manager's gather `gather`.
    Gather { gather: u64, ask: usize },
    /// The manager that sent `LogsRequest` `id` on link `conn`.
    Peer { conn: u64, id: u64 },
}

impl Gathers {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Daemon {
    /// `service logs`: gathered from every node on the leader (and outside a
    /// swarm), from this node only on a manager that cannot reach the leader.
    pub(crate) fn service_logs(&mut self, service: String, tail_lines: Option<u64>, cursor: Vec<LogCursor>, reply: Sender<Reply>) {
        let state = self.store.state();
        if state.cluster.is_none() {
            let _ = reply.try_send(service::not_in_swarm());
            return;
        }
        let Some(svc) = state.find_service(&service) else {
            let _ = reply.try_send(service::no_such_service(&service));
            return;
        };
        if self.swarm.logs.open.len() >= LOGS_GATHERS_MAX {
            let m = format!("{LOGS_GATHERS_MAX} `service logs` requests are in progress on this manager; retry in a moment");
            let _ = reply.try_send(Reply::error(ErrorKind::Unavailable, m));
            return;
        }
        let scope = if self.leads() || self.swarm.mode == Mode::Solo { Scope::Swarm } else { Scope::ThisNode };
        let (gather, asks) = Gather::plan(state, svc, &self.node_id, tail_lines, &cursor, scope);
        let id = self.swarm.logs.next_id();
        let deadline_ms = self.mono_ms() + LOGS_GATHER_TIMEOUT_MS;
        self.swarm.logs.open.insert(id, Open { gather, reply, deadline_ms });
        for (i, ask) in asks.into_iter().enumerate() {
            self.start_ask(id, i, ask);
        }
        self.settle_gather(id);
    }

    /// Reads this node's share, or sends a node its `LogsRequest`; a node
    /// that cannot be asked is named at once.
    fn start_ask(&mut self, gather: u64, ask: usize, a: Ask) {
        if a.node_id == self.node_id {
            if !self.spawn_log_read(LogsDest::Gather { gather, ask }, a.task_ids, a.tail_lines, a.cursor, a.bytes_max) {
                self.fail_ask(gather, ask, &Missing::Busy);
            }
            return;
        }
        let why = match self.swarm.established(&a.node_id) {
            None if self.store.state().nodes.get(&a.node_id).is_some_and(|n| n.state == NodeState::Down) => Missing::Down,
            None => Missing::NoLink,
            Some(_) if self.swarm.logs.asks.len() >= LOGS_ASKS_MAX => Missing::Busy,
            Some(conn) => {
                let id = self.swarm.logs.next_id();
                let msg =
                    Wire::LogsRequest { id, task_ids: a.task_ids, tail_lines: a.tail_lines, cursor: a.cursor, bytes_max: a.bytes_max };
                if self.swarm.send(conn, &msg) {
                    self.swarm.logs.asks.insert(id, Route { gather, ask, conn, node: a.node_id });
                    return;
                }
                Missing::LinkClosed
            }
        };
        self.fail_ask(gather, ask, &why);
    }

    /// Starts a read of this node's logs off the loop; false when
    /// `LOGS_READS_MAX` reads are already running.
    fn spawn_log_read(
        &mut self,
        dest: LogsDest,
        task_ids: Vec<String>,
        tail_lines: Option<u64>,
        cursor: Vec<LogCursor>,
        bytes_max: u64,
    ) -> bool {
        if self.swarm.logs.reads >= LOGS_READS_MAX {
            return false;
        }
        self.swarm.logs.reads += 1;
        let logs = TaskLogs::new(&self.cfg.data_dir);
        self.io.read(Box::new(move || Event::LogsRead { dest, read: logs.read(&task_ids, tail_lines, &cursor, bytes_max) }));
        true
    }

    /// A read of this node's logs finished.
    pub(crate) fn on_logs_read(&mut self, dest: LogsDest, read: LogsRead) {
        self.swarm.logs.reads = self.swarm.logs.reads.saturating_sub(1);
        match dest {
            LogsDest::Peer { conn, id } => {
                let LogsRead { chunks, cursor, more } = read;
                self.swarm.send(conn, &Wire::LogsReply { id, chunks, cursor, more, error: None });
            }
            LogsDest::Gather { gather, ask } => {
                if let Some(o) = self.swarm.logs.open.get_mut(&gather) {
                    o.gather.handle_read(ask, read);
                }
                self.settle_gather(gather);
            }
        }
    }

    /// A `LogsRequest` or `LogsReply` from `peer` on `conn` (other messages are ignored).
    pub(super) fn on_logs_message(&mut self, conn: u64, peer: &str, msg: Wire) {
        match msg {
            Wire::LogsRequest { id, task_ids, tail_lines, cursor, bytes_max } => {
                self.on_logs_request(conn, peer, id, Ask { node_id: String::new(), task_ids, tail_lines, cursor, bytes_max })
            }
            Wire::LogsReply { id, chunks, cursor, more, error } => {
                let answer = match error {
                    Some(e) => Err(Missing::Refused(e.chars().take(LOGS_ERROR_BYTES_MAX).collect())),
                    None => Ok(LogsRead { chunks, cursor, more }),
                };
                self.on_logs_reply(peer, id, answer)
            }
            _ => {}
        }
    }

    /// A manager asks for this node's logs (any node answers; only managers may ask).
    fn on_logs_request(&mut self, conn: u64, peer: &str, id: u64, ask: Ask) {
        if !self.is_manager_peer(peer) {
            crate::log!("WARN", "node {peer} is not a manager but asked for task logs; closing");
            self.swarm.close(conn, "only managers may ask for logs");
            return;
        }
        let refuse = |why: String| Wire::LogsReply { id, chunks: Vec::new(), cursor: Vec::new(), more: false, error: Some(why) };
        if ask.task_ids.len() > LOGS_TASKS_PER_REQUEST_MAX || ask.cursor.len() > LOGS_TASKS_PER_REQUEST_MAX {
            let why = format!("the request names more than {LOGS_TASKS_PER_REQUEST_MAX} tasks");
            self.swarm.send(conn, &refuse(why));
            return;
        }
        let bytes_max = ask.bytes_max.min(LOGS_REPLY_BYTES_MAX);
        if !self.spawn_log_read(LogsDest::Peer { conn, id }, ask.task_ids, ask.tail_lines, ask.cursor, bytes_max) {
            let why = format!("{LOGS_READS_MAX} log reads are already running on it; retry in a moment");
            self.swarm.send(conn, &refuse(why));
        }
    }

    /// A node answered one of this manager's `LogsRequest`s.
    fn on_logs_reply(&mut self, peer: &str, id: u64, answer: Result<LogsRead, Missing>) {
        // Unknown ids are answers that came after their gather ended.
        let Some(r) = self.swarm.logs.asks.get(&id) else { return };
        if r.node != peer {
            crate::log!("WARN", "node {peer} answered log request {id}, which went to {}; ignored", r.node);
            return;
        }
        let Some(r) = self.swarm.logs.asks.remove(&id) else { return };
        if let Some(o) = self.swarm.logs.open.get_mut(&r.gather) {
            match answer {
                Ok(read) => o.gather.handle_read(r.ask, read),
                Err(why) => o.gather.handle_failure(r.ask, &why),
            }
        }
        self.settle_gather(r.gather);
    }

    /// A link closed: requests out on it will not be answered.
    pub(super) fn logs_link_gone(&mut self, conn: u64) {
        let gone: Vec<u64> = self.swarm.logs.asks.iter().filter(|(_, r)| r.conn == conn).map(|(id, _)| *id).collect();
        for id in gone {
            let Some(r) = self.swarm.logs.asks.remove(&id) else { continue };
            self.fail_ask(r.gather, r.ask, &Missing::LinkClosed);
            self.settle_gather(r.gather);
        }
    }

    /// Answers gathers whose deadline passed with what arrived.
    pub(super) fn logs_tick(&mut self, now_ms: u64) {
        let late: Vec<u64> = self.swarm.logs.open.iter().filter(|(_, o)| now_ms >= o.deadline_ms).map(|(id, _)| *id).collect();
        for id in late {
            self.finish_gather(id);
        }
    }

    fn fail_ask(&mut self, gather: u64, ask: usize, why: &Missing) {
        if let Some(o) = self.swarm.logs.open.get_mut(&gather) {
            o.gather.handle_failure(ask, why);
        }
    }

    /// Answers a gather once every node answered or failed.
    fn settle_gather(&mut self, id: u64) {
        if self.swarm.logs.open.get(&id).is_some_and(|o| o.gather.is_done()) {
            self.finish_gather(id);
        }
    }

    fn finish_gather(&mut self, id: u64) {
        let Some(o) = self.swarm.logs.open.remove(&id) else { return };
        self.swarm.logs.asks.retain(|_, r| r.gather != id);
        let _ = o.reply.try_send(o.gather.finish());
    }
}
