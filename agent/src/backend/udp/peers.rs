//! The udp path's routing table: which peer (PublicIP:port) carries a
//! destination, and which subnets a sender may speak for. The reconcile
//! loop replaces it whole; workers take the current one once per batch
//! (an `Arc` clone under a read lock), so a lookup never waits on a write.
use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, RwLock},
};

use crate::subnet::Ipv4Net;

/// One snapshot of the peers.
#[derive(Debug, Default, PartialEq)]
pub struct PeerMap {
    /// (prefix length, network address) -> the peer's socket address.
    by_subnet: HashMap<(u8, u32), SocketAddrV4>,
    /// The prefix lengths present, longest first.
    lens: Vec<u8>,
    /// PublicIP -> the subnets it holds leases for.
    by_ip: HashMap<Ipv4Addr, Vec<Ipv4Net>>,
}

/// What a received datagram is, by its outer source and inner source.
#[derive(Debug, PartialEq, Eq)]
pub enum Sender {
    Ok,
    /// No lease has this PublicIP.
    Unknown,
    /// A lease holder, but the inner source is outside its subnets.
    Spoofed,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

impl PeerMap {
    pub fn new(peers: &[(Ipv4Net, SocketAddrV4)]) -> PeerMap {
        let mut m = PeerMap::default();
        for (net, addr) in peers {
            m.by_subnet.insert((net.prefix_len(), u32::from(net.network_addr())), *addr);
            if !m.lens.contains(&net.prefix_len()) {
                m.lens.push(net.prefix_len());
            }
            m.by_ip.entry(*addr.ip()).or_default().push(*net);
        }
        m.lens.sort_unstable_by(|a, b| b.cmp(a));
        m
    }

    /// The peer whose subnet holds `dst`.
    #[inline]
    pub fn route(&self, dst: [u8; 4]) -> Option<SocketAddrV4> {
        let d = u32::from_be_bytes(dst);
        self.lens.iter().find_map(|&l| self.by_subnet.get(&(l, d & mask(l))).copied())
    }

    /// Whether a datagram from `outer_src` carrying a packet from `inner_src` is acceptable.
    #[inline]
    pub fn check_sender(&self, outer_src: Ipv4Addr, inner_src: [u8; 4]) -> Sender {
        match self.by_ip.get(&outer_src) {
            None => Sender::Unknown,
            Some(nets) if nets.iter().any(|n| n.contains(Ipv4Addr::from(inner_src))) => Sender::Ok,
            Some(_) => Sender::Spoofed,
        }
    }

    pub fn len(&self) -> usize {
        self.by_subnet.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_subnet.is_empty()
    }
}

/// The current snapshot, shared by the reconcile loop and the workers.
#[derive(Default)]
pub struct Peers(RwLock<Arc<PeerMap>>);

impl Peers {
    pub fn load(&self) -> Arc<PeerMap> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the snapshot if it differs; true when it did.
    pub fn store(&self, m: PeerMap) -> bool {
        let mut cur = self.0.write().unwrap_or_else(|p| p.into_inner());
        if **cur == m {
            return false;
        }
        *cur = Arc::new(m);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_longest_prefix_and_checks_senders() {
        let a: SocketAddrV4 = "192.168.77.2:8285".parse().unwrap();
        let b: SocketAddrV4 = "192.168.77.3:8285".parse().unwrap();
        let m = PeerMap::new(&[("10.244.2.0/24".parse().unwrap(), a), ("10.244.3.0/24".parse().unwrap(), b), ("10.244.3.128/25".parse().unwrap(), a)]);
        assert_eq!(m.route([10, 244, 2, 9]), Some(a));
        assert_eq!(m.route([10, 244, 3, 9]), Some(b));
        assert_eq!(m.route([10, 244, 3, 200]), Some(a));
        assert_eq!(m.route([10, 244, 4, 1]), None);
        assert_eq!(m.check_sender(*a.ip(), [10, 244, 2, 5]), Sender::Ok);
        assert_eq!(m.check_sender(*b.ip(), [10, 244, 2, 5]), Sender::Spoofed);
        assert_eq!(m.check_sender("192.168.77.9".parse().unwrap(), [10, 244, 2, 5]), Sender::Unknown);
        let p = Peers::default();
        assert!(p.store(PeerMap::new(&[("10.244.2.0/24".parse().unwrap(), a)])));
        assert!(!p.store(PeerMap::new(&[("10.244.2.0/24".parse().unwrap(), a)])), "same snapshot: no swap");
        assert_eq!(p.load().len(), 1);
    }
}
