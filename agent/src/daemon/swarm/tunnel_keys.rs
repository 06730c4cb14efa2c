//! The tunnel keys' exchange over the Noise links (issue #15): workers have
//! links to managers only, so every node sends its own newest relay key to
//! its leader (`Wire::TunnelKeys`), and the leader passes each new key on
//! to every node linked to it, and the whole table to a node when its link
//! comes up. Keys live in memory only: a restarted node draws a new one, a
//! new leader fills its table from what it heard as a follower and from
//! the keys nodes announce to it (each node announces again whenever its
//! link to the leader changes).
//!
//! Trust: the leader takes from a node only that node's own key (the link
//! proves who it is); a node takes other nodes' keys only from managers.
//! A node removed from the swarm loses its links, and its key leaves the
//! leader's table (pruned to the nodes in the state); peers forget it when
//! it leaves their tunnel network (see the relay).

use super::{Daemon, Mode, Purpose};
use shoal_shared::tunnel::relay::{NodeKey, PEER_KEYS_MAX};
use shoal_shared::wire::Wire;
use std::collections::{BTreeMap, BTreeSet};

/// The keys this node knows and whom it told.
#[derive(Default)]
pub(crate) struct Keys {
    /// Newest key of each node: the leader's table, or what a node heard.
    table: BTreeMap<String, NodeKey>,
    /// Leader: the links that were sent the whole table (new keys follow them).
    told: BTreeSet<u64>,
    /// The link and epoch this node last announced its own key on.
    announced: Option<(u64, u32)>,
}

impl Keys {
    pub(crate) fn table(&self) -> impl Iterator<Item = &NodeKey> {
        self.table.values()
    }
}

impl Daemon {
    /// Announces this node's newest key to its leader; a leader sends the
    /// table to links that have not had it. Every tick.
    pub(crate) fn tunnel_keys_pass(&mut self) {
        let own = self.tunnel.relay().map(|r| super::super::tunnel::lock(&r).announcement().clone());
        if self.leads() {
            // A leader passes keys on whether or not it takes part in an encrypted network itself.
            self.swarm.tunnel_keys.announced = None;
            if let Some(own) = own {
                self.learn_tunnel_key(own);
            }
            let nodes = &self.store.state().nodes;
            let self_id = &self.node_id;
            self.swarm.tunnel_keys.table.retain(|id, _| id == self_id || nodes.contains_key(id));
            let links: Vec<(u64, String)> = self
                .swarm
                .conns
                .iter()
                .filter(|(_, c)| c.purpose == Purpose::Node && c.commands.is_some())
                .filter_map(|(id, c)| c.peer.clone().map(|p| (*id, p)))
                .collect();
            self.swarm.tunnel_keys.told.retain(|c| links.iter().any(|(l, _)| l == c));
            for (conn, peer) in links {
                if self.swarm.tunnel_keys.told.contains(&conn) {
                    continue;
                }
                let keys: Vec<NodeKey> = self.swarm.tunnel_keys.table.values().filter(|k| k.node_id != peer).cloned().collect();
                // Nothing to tell yet: the link is told all the same (new keys follow it).
                if keys.is_empty() || self.swarm.send(conn, &Wire::TunnelKeys { keys }) {
                    self.swarm.tunnel_keys.told.insert(conn);
                }
            }
            return;
        }
        self.swarm.tunnel_keys.told.clear();
        let Some(own) = own else { return };
        let target = match self.swarm.mode {
            Mode::Worker => self.swarm.peers.any_conn().filter(|c| self.swarm.conns.get(c).is_some_and(|c| c.peer.is_some())),
            _ => self.leader_node().and_then(|l| self.swarm.established(&l)),
        };
        let Some(conn) = target else { return };
        if self.swarm.tunnel_keys.announced == Some((conn, own.epoch)) {
            return;
        }
        let epoch = own.epoch;
        if self.swarm.send(conn, &Wire::TunnelKeys { keys: vec![own] }) {
            self.swarm.tunnel_keys.announced = Some((conn, epoch));
        }
    }

    /// `Wire::TunnelKeys` from `peer`.
    pub(crate) fn on_tunnel_keys(&mut self, peer: &str, keys: Vec<NodeKey>) {
        if self.leads() {
            // A node speaks for itself only.
            for k in keys.into_iter().filter(|k| k.node_id == peer) {
                self.learn_tunnel_key(k);
            }
        } else if self.is_manager_peer(peer) {
            for k in keys {
                if k.node_id == self.node_id {
                    continue;
                }
                self.install_tunnel_key(&k);
                self.remember_tunnel_key(k);
            }
        }
    }

    /// Leader: a node's newest key; a new one goes to every link told.
    fn learn_tunnel_key(&mut self, k: NodeKey) {
        if self.swarm.tunnel_keys.table.get(&k.node_id) == Some(&k) {
            return;
        }
        if k.node_id != self.node_id {
            self.install_tunnel_key(&k);
        }
        let told: Vec<u64> = self.swarm.tunnel_keys.told.iter().copied().collect();
        for conn in told {
            self.swarm.send(conn, &Wire::TunnelKeys { keys: vec![k.clone()] });
        }
        self.remember_tunnel_key(k);
    }

    fn remember_tunnel_key(&mut self, k: NodeKey) {
        let t = &mut self.swarm.tunnel_keys.table;
        if t.contains_key(&k.node_id) || t.len() < PEER_KEYS_MAX {
            t.insert(k.node_id.clone(), k);
        }
    }
}
