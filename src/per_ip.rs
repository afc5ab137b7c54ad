//! `--max-connections-per-ip`: how many connections one host may hold.
//!
//! `--max-connections` protects the server's descriptors from everyone
//! together; it does not stop one host from taking every slot (one
//! machine opened 19,940 idle connections in 4.4 s, and every later client
//! was turned away). This is nginx's `limit_conn` keyed by the client's
//! address: a host at its limit is told `ERR too many connections` like a
//! client past `--max-connections`, and nobody else notices.
//!
//! A "host" is an IPv4 address, or an IPv6 /64: one IPv6 host usually owns
//! a whole /64 and can pick a new address in it for every connection, so
//! counting single IPv6 addresses would limit nothing.
//!
//! What it does not defend against: many hosts (a botnet, or one attacker
//! with many IPv6 /64s), and a host behind the same NAT as honest clients,
//! which shares their count. Off by default for that reason.
//!
//! The connection itself does not remember its host (its 64 bytes are
//! spoken for, `connection/mod.rs`): this table keeps the host of each slab key
//! beside the counts, and exists only when the limit is set.

use std::collections::HashMap;
use std::net::IpAddr;

/// One host: an IPv4 address, or the first 64 bits of an IPv6 address
/// (tagged, so that the two families never collide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Host(u128);

impl Host {
    /// The host `ip` belongs to.
    pub(crate) fn of(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(v4) => Host(u128::from(u32::from(v4)) | 1 << 64),
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return Host::of(IpAddr::V4(v4));
                }
                Host(u128::from(v6) & !u128::from(u64::MAX))
            }
        }
    }
}

/// Open connections per host, and the host of each connection.
#[derive(Debug)]
pub(crate) struct PerIpLimit {
    limit: usize,
    open: HashMap<Host, usize>,
    /// The host of the connection at each slab key (`None`: free key).
    host_of: Vec<Option<Host>>,
}

impl PerIpLimit {
    /// A table allowing `limit` connections per host.
    pub(crate) fn new(limit: usize) -> PerIpLimit {
        PerIpLimit {
            limit,
            open: HashMap::new(),
            host_of: Vec::new(),
        }
    }

    /// The limit per host.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Whether `ip`'s host has a free slot.
    pub(crate) fn has_room(&self, ip: IpAddr) -> bool {
        self.open.get(&Host::of(ip)).copied().unwrap_or(0) < self.limit
    }

    /// Counts a connection from `ip` admitted at slab `key`.
    pub(crate) fn admit(&mut self, key: usize, ip: IpAddr) {
        let host = Host::of(ip);
        *self.open.entry(host).or_insert(0) += 1;
        if key >= self.host_of.len() {
            self.host_of.resize(key + 1, None);
        }
        self.host_of[key] = Some(host);
    }

    /// Forgets the connection at slab `key`.
    pub(crate) fn release(&mut self, key: usize) {
        let Some(host) = self.host_of.get_mut(key).and_then(Option::take) else {
            return;
        };
        if let Some(n) = self.open.get_mut(&host) {
            *n -= 1;
            if *n == 0 {
                // An idle host costs nothing: a table that only grew would
                // let a scan of many addresses pin memory.
                self.open.remove(&host);
            }
        }
    }

    /// Hosts with at least one connection (for tests).
    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_host_at_its_limit_has_no_room_and_others_do() {
        let mut t = PerIpLimit::new(2);
        t.admit(0, ip("10.0.0.1"));
        t.admit(1, ip("10.0.0.1"));
        assert!(!t.has_room(ip("10.0.0.1")));
        assert!(t.has_room(ip("10.0.0.2")));
        t.release(0);
        assert!(t.has_room(ip("10.0.0.1")));
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        let mut t = PerIpLimit::new(1);
        t.admit(3, ip("2001:db8:1:2::1"));
        assert!(!t.has_room(ip("2001:db8:1:2:ffff::9")), "same /64");
        assert!(t.has_room(ip("2001:db8:1:3::1")), "another /64");
        assert_ne!(Host::of(ip("0.0.0.1")), Host::of(ip("::1")));
        assert_eq!(Host::of(ip("::ffff:10.0.0.1")), Host::of(ip("10.0.0.1")));
    }

    #[test]
    fn released_hosts_leave_the_table() {
        let mut t = PerIpLimit::new(5);
        for key in 0..100 {
            t.admit(key, IpAddr::from([10, 0, 0, key as u8]));
        }
        assert_eq!(t.hosts(), 100);
        for key in 0..100 {
            t.release(key);
        }
        assert_eq!(t.hosts(), 0);
        t.release(7);
        assert_eq!(t.hosts(), 0, "a second release changes nothing");
    }
}
