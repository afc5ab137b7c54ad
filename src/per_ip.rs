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
//!
//! With `--workers`, one host's connections land on any worker, so a count
//! per worker would let a host hold N per worker. Workers count in memory
//! they share with each other instead (`seat.rs`): the limit
//! is the server's, exact however the kernel spreads a host's connections.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::seat::Seat;

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

impl Host {
    /// The host as one number (for a hash).
    pub(crate) fn key(self) -> u128 {
        self.0
    }
}

/// `--max-connections-per-ip`: the limit, and where the counts live.
#[derive(Debug)]
pub(crate) struct PerIpLimit {
    limit: usize,
    counts: Counts,
}

/// Where a server's per-host counts live.
#[derive(Debug)]
enum Counts {
    /// A single process: its own table, exact.
    Local(Table),
    /// A worker of a master (`--workers`): counters every worker shares,
    /// so that the limit holds for the whole server
    /// (`seat.rs`).
    Shared(Seat),
}

/// Open connections per host, and the host of each connection.
#[derive(Debug, Default)]
struct Table {
    open: HashMap<Host, usize>,
    /// The host of the connection at each slab key (`None`: free key).
    host_of: Vec<Option<Host>>,
}

impl PerIpLimit {
    /// A table of this process's own allowing `limit` connections per
    /// host.
    pub(crate) fn new(limit: usize) -> PerIpLimit {
        PerIpLimit {
            limit,
            counts: Counts::Local(Table::default()),
        }
    }

    /// `limit` connections per host across every worker sharing `seat`'s
    /// region.
    pub(crate) fn shared(limit: usize, seat: Seat) -> PerIpLimit {
        PerIpLimit {
            limit,
            counts: Counts::Shared(seat),
        }
    }

    /// The limit per host.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Counts a connection from `ip` at slab `key` if its host has a free
    /// slot; false (and nothing counted) if not.
    pub(crate) fn try_admit(&mut self, key: usize, ip: IpAddr) -> bool {
        match &mut self.counts {
            Counts::Local(table) => table.try_admit(key, Host::of(ip), self.limit),
            Counts::Shared(seat) => {
                let limit = u32::try_from(self.limit).unwrap_or(u32::MAX);
                (seat.region).try_admit(seat.index, key, Host::of(ip).key(), limit)
            }
        }
    }

    /// Forgets the connection at slab `key`.
    pub(crate) fn release(&mut self, key: usize) {
        match &mut self.counts {
            Counts::Local(table) => table.release(key),
            Counts::Shared(seat) => seat.region.release(seat.index, key),
        }
    }

    /// Hosts with at least one connection (for tests).
    #[cfg(test)]
    fn hosts(&self) -> usize {
        match &self.counts {
            Counts::Local(table) => table.open.len(),
            Counts::Shared(_) => 0,
        }
    }
}

impl Table {
    fn try_admit(&mut self, key: usize, host: Host, limit: usize) -> bool {
        let open = self.open.entry(host).or_insert(0);
        if *open >= limit {
            if *open == 0 {
                // A limit of 0 must not leave an entry behind.
                self.open.remove(&host);
            }
            return false;
        }
        *open += 1;
        if key >= self.host_of.len() {
            self.host_of.resize(key + 1, None);
        }
        self.host_of[key] = Some(host);
        true
    }

    fn release(&mut self, key: usize) {
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
        assert!(t.try_admit(0, ip("10.0.0.1")));
        assert!(t.try_admit(1, ip("10.0.0.1")));
        assert!(!t.try_admit(2, ip("10.0.0.1")));
        assert!(t.try_admit(3, ip("10.0.0.2")));
        t.release(0);
        assert!(t.try_admit(4, ip("10.0.0.1")));
        assert!(!t.try_admit(5, ip("10.0.0.1")));
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        let mut t = PerIpLimit::new(1);
        assert!(t.try_admit(3, ip("2001:db8:1:2::1")));
        assert!(!t.try_admit(4, ip("2001:db8:1:2:ffff::9")), "same /64");
        assert!(t.try_admit(5, ip("2001:db8:1:3::1")), "another /64");
        assert_ne!(Host::of(ip("0.0.0.1")), Host::of(ip("::1")));
        // The families are told apart by a tag, not by luck: 0.0.0.0 and
        // the /64 of ::1 are both zero bits.
        assert_ne!(Host::of(ip("0.0.0.0")), Host::of(ip("::1")));
        assert_eq!(Host::of(ip("::ffff:10.0.0.1")), Host::of(ip("10.0.0.1")));
    }

    #[test]
    fn shared_counts_hold_for_every_seat_and_count_ipv6_by_slash_64() {
        use crate::seat::{Region, Seat};
        use std::sync::Arc;
        let region = Arc::new(Region::create(2, 16).unwrap());
        let seat = |index| Seat {
            region: Arc::clone(&region),
            index,
        };
        let (mut a, mut b) = (
            PerIpLimit::shared(2, seat(0)),
            PerIpLimit::shared(2, seat(1)),
        );
        assert!(a.try_admit(0, ip("2001:db8:1:2::1")));
        assert!(
            b.try_admit(0, ip("2001:db8:1:2::2")),
            "same /64, another worker"
        );
        assert!(
            !a.try_admit(1, ip("2001:db8:1:2:ffff::9")),
            "the /64 is full"
        );
        assert!(b.try_admit(1, ip("2001:db8:1:3::1")), "another /64");
        assert!(a.try_admit(2, ip("::ffff:10.0.0.1")));
        assert!(b.try_admit(2, ip("10.0.0.1")));
        assert!(
            !a.try_admit(3, ip("10.0.0.1")),
            "v4-mapped is the same host"
        );
        b.release(0);
        assert!(a.try_admit(4, ip("2001:db8:1:2::3")));
    }

    #[test]
    fn released_hosts_leave_the_table() {
        let mut t = PerIpLimit::new(5);
        for key in 0..100 {
            assert!(t.try_admit(key, IpAddr::from([10, 0, 0, key as u8])));
        }
        assert_eq!(t.hosts(), 100);
        for key in 0..100 {
            t.release(key);
        }
        assert_eq!(t.hosts(), 0);
        t.release(7);
        assert_eq!(t.hosts(), 0, "a second release changes nothing");
        let mut none = PerIpLimit::new(0);
        assert!(!none.try_admit(0, ip("10.0.0.1")));
        assert_eq!(none.hosts(), 0, "a refusal leaves nothing behind");
    }
}
