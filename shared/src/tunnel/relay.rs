//! The decisions of a node's tunnel relay (issue #15), pure: which peer an
//! outgoing packet from the TUN device goes to and under which key, whether
//! a frame from the underlay is let into the TUN device, when the node's
//! own key is replaced, and which peers' keys are forgotten.
//!
//! The shell (`agent/src/daemon/tunnel.rs`) owns the TUN device, the UDP
//! socket, the clock and the randomness; it calls [`Relay::outgoing`] for
//! each packet the kernel's VXLAN devices of encrypted networks route into
//! the TUN device, [`Relay::incoming`] for each datagram from a peer, and
//! [`Relay::tick`] now and then, and it sends [`Relay::announcement`] (this
//! node's newest key) to the leader over the Noise link, which passes it on
//! to every other node ([`Relay::install`] there).
//!
//! What gets through, both ways:
//! - out: IPv4 packets to a peer's tunnel address (the peers are the
//!   tunnel network's in the node's assignments), sealed under this node's
//!   current key; anything else is dropped and counted;
//! - in: frames from a peer's underlay address that open under one of that
//!   peer's keys (current and previous, each with its replay window), and
//!   whose packet is UDP from the peer's tunnel address to this node's, on
//!   the swarm's VXLAN port. So a peer can neither reach this host's other
//!   services through the tunnel nor speak for another node.
//!
//! Keys: one send key per node, drawn fresh at start and at every rotation
//! (every [`ROTATE_AFTER_MS`], and at once when a peer leaves the tunnel
//! network: it knew the old key). A new key is announced first and used
//! [`SWITCH_AFTER_MS`] later, so peers hold it before the first packet
//! under it arrives (they keep the previous key for packets in flight).
//! A peer that leaves is forgotten at once: its packets fail from then on.

use super::{OpenCounts, OpenError, Opener, Sealer};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A node's send key is replaced after this long (12 hours).
pub const ROTATE_AFTER_MS: u64 = 12 * 3_600 * 1_000;
/// An announced key is used this long after it was made (peers get it
/// over the Noise links through the leader meanwhile).
pub const SWITCH_AFTER_MS: u64 = 3_000;
/// Peers' keys held at most (one per node of the swarm).
pub const PEER_KEYS_MAX: usize = 100_000;

/// A node's send key as it travels over the Noise links (never logged).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeKey {
    pub node_id: String,
    /// Names the key in every frame sealed under it (random, so a
    /// restarted node's keys never look like its old ones).
    pub epoch: u32,
    pub key: [u8; 32],
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey {{ node_id: {:?}, epoch: {}, key: <hidden> }}", self.node_id, self.epoch)
    }
}

/// A peer on the tunnel network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelPeer {
    pub node_id: String,
    /// Its address on the tunnel network (where its VXLAN traffic comes from).
    pub tunnel: Ipv4Addr,
    /// Its underlay address (where its relay listens).
    pub underlay: Ipv4Addr,
}

/// Why a packet or frame went no further (each counted in [`RelayCounts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Out: not an IPv4 packet to a peer's tunnel address (or no key yet).
    NoPeer,
    /// In: from an address that is no peer's.
    UnknownSender,
    /// In: did not open (see [`OpenError`]).
    Open(OpenError),
    /// In: opened, but not VXLAN from the peer's tunnel address to ours.
    Forbidden,
}

/// What the relay passed and dropped since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayCounts {
    pub sealed: u64,
    pub no_peer: u64,
    pub unknown_sender: u64,
    pub forbidden: u64,
    /// Frames from peers, by outcome (the openers' counts summed,
    /// forgotten peers' included).
    pub opened: OpenCounts,
}

/// A node's tunnel relay, pure (see the module header).
pub struct Relay {
    own: Ipv4Addr,
    vxlan_port: u16,
    current: Sealer,
    made_at_ms: u64,
    /// The newest key (announced; current once `switch_at_ms` passed).
    newest: NodeKey,
    next: Option<(Sealer, u64)>,
    rotate_now: bool,
    rotate_after_ms: u64,
    by_tunnel: BTreeMap<Ipv4Addr, TunnelPeer>,
    by_underlay: BTreeMap<Ipv4Addr, TunnelPeer>,
    openers: BTreeMap<String, Opener>,
    counts: RelayCounts,
    /// Open counts of peers forgotten since the start.
    gone: OpenCounts,
}

impl Relay {
    /// A relay for this node (`node_id`, its tunnel address `own`) with a
    /// first key (fresh randomness from the shell), used at once: nobody
    /// holds an older key of this start.
    pub fn new(node_id: &str, own: Ipv4Addr, vxlan_port: u16, epoch: u32, key: [u8; 32], now_ms: u64) -> Relay {
        Relay {
            own,
            vxlan_port,
            current: Sealer::new(epoch, &key),
            made_at_ms: now_ms,
            newest: NodeKey { node_id: node_id.to_string(), epoch, key },
            next: None,
            rotate_now: false,
            rotate_after_ms: ROTATE_AFTER_MS,
            by_tunnel: BTreeMap::new(),
            by_underlay: BTreeMap::new(),
            openers: BTreeMap::new(),
            counts: RelayCounts::default(),
            gone: OpenCounts::default(),
        }
    }

    /// Replaces the key every `ms` instead of [`ROTATE_AFTER_MS`] (tests
    /// that watch rotations; never under [`SWITCH_AFTER_MS`]).
    pub fn rotating_every(mut self, ms: u64) -> Relay {
        self.rotate_after_ms = ms.max(SWITCH_AFTER_MS);
        self
    }

    pub fn own(&self) -> Ipv4Addr {
        self.own
    }

    /// This node's new tunnel address (the leader allocated another one).
    pub fn set_own(&mut self, own: Ipv4Addr) {
        self.own = own;
    }

    /// This node's newest key, to send to the leader (it may not be in use
    /// yet: peers get it before it is).
    pub fn announcement(&self) -> &NodeKey {
        &self.newest
    }

    /// Whether the shell should draw a new key and [`Relay::rotate`]:
    /// the current one is old ([`ROTATE_AFTER_MS`]), or a peer left.
    pub fn wants_rotation(&self, now_ms: u64) -> bool {
        self.rotate_now || now_ms.saturating_sub(self.made_at_ms) >= self.rotate_after_ms
    }

    /// A new key (fresh randomness, an epoch other than the newest's),
    /// announced now and used [`SWITCH_AFTER_MS`] later. A key still waiting
    /// is put in use at once (a second rotation before the first switched).
    pub fn rotate(&mut self, epoch: u32, key: [u8; 32], now_ms: u64) {
        if let Some((s, _)) = self.next.take() {
            self.current = s;
        }
        self.next = Some((Sealer::new(epoch, &key), now_ms.saturating_add(SWITCH_AFTER_MS)));
        self.newest = NodeKey { node_id: self.newest.node_id.clone(), epoch, key };
        self.made_at_ms = now_ms;
        self.rotate_now = false;
    }

    /// Puts an announced key in use once its time came.
    pub fn tick(&mut self, now_ms: u64) {
        if self.next.as_ref().is_some_and(|(_, at)| now_ms >= *at) {
            if let Some((s, _)) = self.next.take() {
                self.current = s;
            }
        }
    }

    /// The epoch packets are sealed under now.
    pub fn sending_epoch(&self) -> u32 {
        self.current.epoch()
    }

    /// The tunnel network's peers, from the node's assignments. A peer that
    /// is no longer there is forgotten (its keys too) and this node's key is
    /// replaced soon ([`Relay::wants_rotation`]). Returns the peers forgotten.
    pub fn set_peers(&mut self, peers: &[TunnelPeer]) -> Vec<String> {
        let gone: Vec<String> =
            self.by_tunnel.values().filter(|p| !peers.iter().any(|q| q.node_id == p.node_id)).map(|p| p.node_id.clone()).collect();
        for id in &gone {
            self.forget(id);
        }
        if !gone.is_empty() {
            self.rotate_now = true;
        }
        self.by_tunnel = peers.iter().filter(|p| p.tunnel != self.own).map(|p| (p.tunnel, p.clone())).collect();
        self.by_underlay = peers.iter().filter(|p| p.tunnel != self.own).map(|p| (p.underlay, p.clone())).collect();
        gone
    }

    fn forget(&mut self, node_id: &str) {
        if let Some(o) = self.openers.remove(node_id) {
            let c = o.counts();
            let g = &mut self.gone;
            g.opened += c.opened;
            g.malformed += c.malformed;
            g.unknown_key += c.unknown_key;
            g.tampered += c.tampered;
            g.replayed += c.replayed;
        }
    }

    /// A peer's key, heard from the leader. Keys of this node itself are
    /// ignored; a full table takes no new peers.
    pub fn install(&mut self, k: &NodeKey) {
        if k.node_id == self.newest.node_id {
            return;
        }
        if !self.openers.contains_key(&k.node_id) && self.openers.len() >= PEER_KEYS_MAX {
            return;
        }
        self.openers.entry(k.node_id.clone()).or_default().install(k.epoch, &k.key);
    }

    /// Whether a key of `node_id` is held.
    pub fn has_key(&self, node_id: &str) -> bool {
        self.openers.get(node_id).is_some_and(Opener::has_key)
    }

    /// A packet the kernel routed into the TUN device: the peer's underlay
    /// address and the frame to send it.
    pub fn outgoing(&mut self, packet: &[u8]) -> Result<(Ipv4Addr, Vec<u8>), Drop> {
        let r = self.outgoing_inner(packet);
        match r {
            Ok(_) => self.counts.sealed += 1,
            Err(_) => self.counts.no_peer += 1,
        }
        r
    }

    fn outgoing_inner(&mut self, packet: &[u8]) -> Result<(Ipv4Addr, Vec<u8>), Drop> {
        let ip = Ipv4Header::parse(packet).ok_or(Drop::NoPeer)?;
        let peer = self.by_tunnel.get(&ip.dst).ok_or(Drop::NoPeer)?;
        let frame = self.current.seal(packet).map_err(|_| Drop::NoPeer)?;
        Ok((peer.underlay, frame))
    }

    /// A datagram from `from` (its source address) on the relay's port: the
    /// packet to write into the TUN device.
    pub fn incoming(&mut self, from: Ipv4Addr, frame: &[u8]) -> Result<Vec<u8>, Drop> {
        let r = self.incoming_inner(from, frame);
        match r {
            Err(Drop::UnknownSender) => self.counts.unknown_sender += 1,
            Err(Drop::Forbidden) => self.counts.forbidden += 1,
            _ => {}
        }
        r
    }

    fn incoming_inner(&mut self, from: Ipv4Addr, frame: &[u8]) -> Result<Vec<u8>, Drop> {
        let peer = self.by_underlay.get(&from).ok_or(Drop::UnknownSender)?;
        let tunnel = peer.tunnel;
        // No key of the peer heard yet: an empty opener counts the frame as under an unknown key.
        if !self.openers.contains_key(&peer.node_id) {
            self.openers.insert(peer.node_id.clone(), Opener::default());
        }
        let opener = self.openers.get_mut(&peer.node_id).ok_or(Drop::UnknownSender)?;
        let packet = opener.open(frame).map_err(Drop::Open)?;
        let ip = Ipv4Header::parse(&packet).ok_or(Drop::Forbidden)?;
        if ip.src != tunnel || ip.dst != self.own || ip.protocol != IPPROTO_UDP || ip.udp_dst_port != Some(self.vxlan_port) {
            return Err(Drop::Forbidden);
        }
        Ok(packet)
    }

    /// Counts since the start, forgotten peers' included.
    pub fn counts(&self) -> RelayCounts {
        let mut c = self.counts;
        let mut o = self.gone;
        for op in self.openers.values() {
            let x = op.counts();
            o.opened += x.opened;
            o.malformed += x.malformed;
            o.unknown_key += x.unknown_key;
            o.tampered += x.tampered;
            o.replayed += x.replayed;
        }
        c.opened = o;
        c
    }
}

const IPPROTO_UDP: u8 = 17;

/// The fields of an IPv4 header the relay checks.
struct Ipv4Header {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    /// The UDP destination port of a first fragment.
    udp_dst_port: Option<u16>,
}

impl Ipv4Header {
    fn parse(p: &[u8]) -> Option<Ipv4Header> {
        if p.len() < 20 || p[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        if ihl < 20 || p.len() < ihl {
            return None;
        }
        let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let first_fragment = u16::from_be_bytes([p[6], p[7]]) & 0x1fff == 0;
        let udp_dst_port =
            (first_fragment && p[9] == IPPROTO_UDP && p.len() >= ihl + 8).then(|| u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]));
        Some(Ipv4Header { src, dst, protocol: p[9], udp_dst_port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A VXLAN-looking UDP packet from `src` to `dst` on `port`.
    fn vxlan_packet(src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&40_000u16.to_be_bytes());
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(payload);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    fn peers() -> Vec<TunnelPeer> {
        vec![
            TunnelPeer { node_id: "a".into(), tunnel: ip("198.18.0.1"), underlay: ip("10.9.0.1") },
            TunnelPeer { node_id: "b".into(), tunnel: ip("198.18.0.2"), underlay: ip("10.9.0.2") },
            TunnelPeer { node_id: "c".into(), tunnel: ip("198.18.0.3"), underlay: ip("10.9.0.3") },
        ]
    }

    /// Relays of nodes a, b and c, each holding the others' keys.
    fn swarm() -> Vec<Relay> {
        let mut rs: Vec<Relay> =
            peers().iter().enumerate().map(|(i, p)| Relay::new(&p.node_id, p.tunnel, 4789, 100 + i as u32, [i as u8 + 1; 32], 0)).collect();
        let keys: Vec<NodeKey> = rs.iter().map(|r| r.announcement().clone()).collect();
        for r in &mut rs {
            r.set_peers(&peers());
            keys.iter().for_each(|k| r.install(k));
        }
        rs
    }

    #[test]
    fn vxlan_between_peers_passes_and_nothing_else_does() {
        let mut rs = swarm();
        let pkt = vxlan_packet(ip("198.18.0.1"), ip("198.18.0.2"), 4789, b"inner frame");
        let (to, frame) = rs[0].outgoing(&pkt).unwrap();
        assert_eq!(to, ip("10.9.0.2"));
        assert!(!frame.windows(11).any(|w| w == b"inner frame"), "sealed");
        assert_eq!(rs[1].incoming(ip("10.9.0.1"), &frame).unwrap(), pkt);
        // The same frame again, or from another address: dropped.
        assert_eq!(rs[1].incoming(ip("10.9.0.1"), &frame), Err(Drop::Open(OpenError::Replayed)));
        assert_eq!(rs[1].incoming(ip("10.9.0.9"), &frame), Err(Drop::UnknownSender));
        // Claimed by c (its address) but sealed under a's key: c's key does not open it.
        assert_eq!(rs[1].incoming(ip("10.9.0.3"), &frame), Err(Drop::Open(OpenError::UnknownKey)));
        // Not for a peer: nothing is sent.
        assert_eq!(rs[0].outgoing(&vxlan_packet(ip("198.18.0.1"), ip("8.8.8.8"), 4789, b"x")), Err(Drop::NoPeer));
        assert_eq!(rs[0].outgoing(b"\x60not ipv4 at all, twenty bytes"), Err(Drop::NoPeer));
        // a seals a packet to b that is not VXLAN to b (a TCP connection to b's host, another port,
        // b's address as source): b drops them after they open.
        let mut tcp = vxlan_packet(ip("198.18.0.1"), ip("198.18.0.2"), 4789, b"x");
        tcp[9] = 6;
        for bad in
            [tcp, vxlan_packet(ip("198.18.0.1"), ip("198.18.0.2"), 22, b"x"), vxlan_packet(ip("198.18.0.3"), ip("198.18.0.2"), 4789, b"x")]
        {
            let (_, f) = rs[0].outgoing(&bad).unwrap();
            assert_eq!(rs[1].incoming(ip("10.9.0.1"), &f), Err(Drop::Forbidden));
        }
        // A flipped bit: dropped as tampered.
        let (_, mut f) = rs[0].outgoing(&pkt).unwrap();
        let last = f.len() - 1;
        f[last] ^= 1;
        assert_eq!(rs[1].incoming(ip("10.9.0.1"), &f), Err(Drop::Open(OpenError::Tampered)));
        let c = rs[1].counts();
        assert_eq!((c.opened.opened, c.opened.replayed, c.opened.unknown_key, c.opened.tampered), (4, 1, 1, 1));
        assert_eq!((c.unknown_sender, c.forbidden), (1, 3));
        assert_eq!((rs[0].counts().sealed, rs[0].counts().no_peer), (5, 2));
    }

    #[test]
    fn a_rotation_keeps_packets_flowing_and_a_removed_peer_is_locked_out() {
        let mut rs = swarm();
        let pkt = vxlan_packet(ip("198.18.0.1"), ip("198.18.0.2"), 4789, b"data");
        let (_, before) = rs[0].outgoing(&pkt).unwrap();
        assert!(!rs[0].wants_rotation(ROTATE_AFTER_MS - 1));
        assert!(rs[0].wants_rotation(ROTATE_AFTER_MS));
        rs[0].rotate(555, [42; 32], ROTATE_AFTER_MS);
        let announced = rs[0].announcement().clone();
        assert_eq!(announced.epoch, 555);
        // Announced, not used yet: b has not heard it, and a keeps sealing under the old key.
        let (_, still_old) = rs[0].outgoing(&pkt).unwrap();
        assert_eq!(rs[1].incoming(ip("10.9.0.1"), &still_old).unwrap(), pkt);
        rs[1].install(&announced);
        rs[0].tick(ROTATE_AFTER_MS + SWITCH_AFTER_MS);
        assert_eq!(rs[0].sending_epoch(), 555);
        let (_, new) = rs[0].outgoing(&pkt).unwrap();
        assert_eq!(rs[1].incoming(ip("10.9.0.1"), &new).unwrap(), pkt);
        // A packet sealed before the rotation, arriving late, still opens (previous key).
        assert_eq!(rs[1].incoming(ip("10.9.0.1"), &before).unwrap(), pkt);

        // c leaves the tunnel network: b forgets its key at once and wants a new one of its own.
        let (_, from_c) = rs[2].outgoing(&vxlan_packet(ip("198.18.0.3"), ip("198.18.0.2"), 4789, b"c")).unwrap();
        let left: Vec<TunnelPeer> = peers().into_iter().filter(|p| p.node_id != "c").collect();
        assert_eq!(rs[1].set_peers(&left), vec!["c".to_string()]);
        assert!(rs[1].wants_rotation(ROTATE_AFTER_MS + SWITCH_AFTER_MS));
        assert_eq!(rs[1].incoming(ip("10.9.0.3"), &from_c), Err(Drop::UnknownSender));
        // Its key heard again (a stale message) does not let it back in while it is no peer.
        let kc = rs[2].announcement().clone();
        rs[1].install(&kc);
        assert_eq!(rs[1].incoming(ip("10.9.0.3"), &from_c), Err(Drop::UnknownSender));
        // A frame from a peer whose key was never heard: counted, and no key is held for it.
        let mut fresh = Relay::new("d", ip("198.18.0.4"), 4789, 9, [9; 32], 0);
        let mut with_d = peers();
        with_d.push(TunnelPeer { node_id: "d".into(), tunnel: ip("198.18.0.4"), underlay: ip("10.9.0.4") });
        fresh.set_peers(&with_d);
        rs[1].set_peers(&with_d);
        let (_, from_d) = fresh.outgoing(&vxlan_packet(ip("198.18.0.4"), ip("198.18.0.2"), 4789, b"d")).unwrap();
        assert_eq!(rs[1].incoming(ip("10.9.0.4"), &from_d), Err(Drop::Open(OpenError::UnknownKey)));
        assert!(!rs[1].has_key("d"));
        rs[1].install(&fresh.announcement().clone());
        assert!(rs[1].has_key("d"));
        assert!(rs[1]
            .incoming(ip("10.9.0.4"), &fresh.outgoing(&vxlan_packet(ip("198.18.0.4"), ip("198.18.0.2"), 4789, b"d")).unwrap().1)
            .is_ok());
        // b's own key is never installed as a peer's.
        let kb = rs[1].announcement().clone();
        rs[1].install(&kb);
        assert!(!rs[1].has_key("b"));
    }
}
