//! The machine limits a client with tens of thousands of sockets runs into,
//! and how the run is planned around them.
//!
//! * Descriptors: each connection is one fd. The soft `RLIMIT_NOFILE` is
//!   often 1024 while the hard limit is far higher; a process may raise its
//!   own soft limit up to the hard one, so we do, and refuse early (one
//!   clear line) if even that is not enough.
//! * Ephemeral ports: every connection from one source address to one
//!   server address needs its own local port, and there are only as many as
//!   `net.ipv4.ip_local_port_range` holds (28,232 by default). On loopback,
//!   every 127.x.y.z address is ours, so connections use 127.0.0.2,
//!   127.0.0.3, ... as further source addresses well before one range is
//!   full, because `connect`'s search for a free port slows down as the
//!   range fills. A number given with `--source-ips` is used as it is, and
//!   refused if the connections cannot fit in that many ranges.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

/// Descriptors the process needs besides its connections: stdio, one epoll
/// fd per thread, the runtime's own, with room to spare.
pub const FD_SLACK: u64 = 64;

/// Ports of the range left unused when planning how many connections one
/// source address takes: sockets in TIME_WAIT from an earlier run, and other
/// programs on the machine, hold some of them.
pub const PORT_MARGIN: usize = 2_000;

/// The ephemeral range when `/proc` cannot tell (Linux's default).
const DEFAULT_PORT_RANGE: (u32, u32) = (32_768, 60_999);

/// Against a loopback target, one source address takes at most this share
/// (1/N) of the port range. `connect` finds a free port by probing the
/// range, and the search slows sharply as the range fills: measured on the
/// project's 2-core VM, 19,000 connections opened in 5.3 s from one
/// address and in 0.93 s from four. Extra loopback addresses cost nothing.
pub const LOOPBACK_RANGE_SHARE: usize = 4;

/// Raises this process's soft `RLIMIT_NOFILE` as far as its hard limit
/// allows (an unprivileged process may), and returns the soft limit now in
/// force. Tests and benches that open many sockets of their own call it
/// too.
pub fn raise_nofile_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// This process's hard `RLIMIT_NOFILE`: as far as it may raise its own
/// soft limit, and what each client process of `--procs` gets.
pub fn nofile_hard_limit() -> io::Result<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(_, hard)| hard)
}

/// How many connections one process can hold under a descriptor limit of
/// `limit` (what is left after [`FD_SLACK`]).
pub fn connections_per_process(limit: u64) -> u64 {
    limit.saturating_sub(FD_SLACK).max(1)
}

/// The fewest client processes (`--procs`) that hold `connections` when
/// each may open `limit` descriptors.
pub fn procs_needed(connections: usize, limit: u64) -> usize {
    let per = connections_per_process(limit);
    (connections as u64).div_ceil(per).max(1) as usize
}

/// How many connections one source address should carry to `target`: a
/// quarter of the port range on IPv4 loopback (see
/// [`LOOPBACK_RANGE_SHARE`]), the whole range less [`PORT_MARGIN`]
/// elsewhere, where there are no free extra addresses.
pub fn connections_per_source(target: std::net::SocketAddr) -> usize {
    if target.is_ipv4() && target.ip().is_loopback() {
        (port_range_size() / LOOPBACK_RANGE_SHARE).max(1)
    } else {
        ports_per_source()
    }
}

/// How many local ports one source address can use for one server address.
pub fn ports_per_source() -> usize {
    let size = port_range_size();
    size.saturating_sub(PORT_MARGIN).max(size / 2).max(1)
}

/// The size of the ephemeral port range.
fn port_range_size() -> usize {
    let (lo, hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>());
            match (it.next(), it.next()) {
                (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => Some((lo, hi)),
                _ => None,
            }
        })
        .unwrap_or(DEFAULT_PORT_RANGE);
    (hi - lo + 1) as usize
}

/// How many source addresses `connections` need.
pub fn source_ips_needed(connections: usize, per_source: usize) -> usize {
    connections.div_ceil(per_source.max(1)).max(1)
}

/// The source address for connection `id` when `sources` addresses are in
/// use: `None` means "let the kernel choose" (the common single-address
/// case, which costs no extra `bind` call).
pub fn source_for(id: usize, connections: usize, sources: usize) -> Option<IpAddr> {
    if sources <= 1 {
        return None;
    }
    // Fill addresses evenly: connection i goes to address i * sources / n.
    let idx = id * sources / connections.max(1);
    Some(loopback_v4(idx))
}

/// 127.0.0.1 for 0, 127.0.0.2 for 1, ... (skipping .0 and .255 in each /24).
pub fn loopback_v4(idx: usize) -> IpAddr {
    let host = idx % 254 + 1;
    let mid = (idx / 254) % 256;
    let high = (idx / (254 * 256)) % 256;
    IpAddr::V4(Ipv4Addr::new(127, high as u8, mid as u8, host as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_descriptor_limit_rises_to_the_hard_one() {
        let soft = raise_nofile_limit().expect("raise RLIMIT_NOFILE");
        let (now, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
        assert_eq!((soft, now), (hard, hard));
    }

    #[test]
    fn procs_needed_fills_each_process_to_its_limit() {
        // 50,000 connections under a limit of 20,000 (19,936 each).
        assert_eq!(procs_needed(50_000, 20_000), 3);
        assert_eq!(procs_needed(19_936, 20_000), 1);
        assert_eq!(procs_needed(19_937, 20_000), 2);
        assert_eq!(procs_needed(10, 20_000), 1);
    }

    #[test]
    fn loopback_targets_use_a_quarter_of_the_range_per_source() {
        let lo = connections_per_source("127.0.0.1:7007".parse().unwrap());
        assert_eq!(lo, port_range_size() / LOOPBACK_RANGE_SHARE);
        assert!(connections_per_source("10.0.0.1:7007".parse().unwrap()) > lo);
    }

    #[test]
    fn one_source_until_the_range_is_full() {
        assert_eq!(source_ips_needed(19_000, 26_000), 1);
        assert_eq!(source_ips_needed(60_000, 26_000), 3);
    }

    #[test]
    fn sources_are_filled_evenly_and_are_loopback() {
        assert_eq!(source_for(0, 100, 1), None);
        assert_eq!(source_for(0, 100, 2), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(source_for(99, 100, 2), Some("127.0.0.2".parse().unwrap()));
        assert!(loopback_v4(300).is_loopback());
    }
}
