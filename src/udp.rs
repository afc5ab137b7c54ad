//! UDP services on the same poller: echo (RFC 862) and daytime (RFC 867).
//!
//! UDP is the other half of seed 1 and the whole of seed 5: no connection,
//! no stream, every `recvfrom` is one whole datagram from some peer and
//! every `sendto` one whole datagram back. So a UDP socket needs none of a
//! connection's machinery: no output buffer, no phases, no backpressure.
//! It is one more source in the loop, registered for `READABLE` only.
//!
//! # Why a reply that cannot go out at once is dropped
//!
//! A TCP connection must deliver every byte, so a full send buffer makes
//! it keep the rest and wait. A UDP service makes no such promise, and its
//! peers cannot be made to wait: one socket serves them all. If `sendto`
//! would block, the reply is dropped and counted (`datagrams_dropped`), as
//! the network itself may drop it; keeping it would let one slow path grow
//! a queue without bound, and waiting would stall the loop.
//!
//! # Loops: datagrams never answered
//!
//! UDP has no handshake, so a datagram's source address is whatever the
//! sender wrote into it. A datagram "from" the server's own echo socket
//! would be echoed to itself, which echoes it again, forever: one spoofed
//! datagram pinning a core is the classic echo/chargen loop (CERT
//! CA-1996-01). The same happens between our echo and our daytime socket,
//! or between us and any service that answers every datagram it gets. So
//! [`LoopGuard`] refuses, without answering, a datagram whose source is:
//!
//! - one of this server's own UDP sockets (echo and daytime; a socket
//!   bound to an unspecified address counts for every local address, so
//!   its port alone decides);
//! - port 0, which no real sender has;
//! - a well-known port of a service that answers *any* datagram
//!   ([`REFLECTING_PORTS`]: echo 7, systat 11, daytime 13, qotd 17,
//!   chargen 19, time 37): a client never sends from those, and answering
//!   them starts a loop with a host that runs the service.
//!
//! Refused datagrams are counted (`datagrams_refused`). What is left: two
//! echo services on arbitrary ports can still be made to play ping-pong by
//! one datagram spoofed from one to the other, since nothing in a single
//! datagram tells such a peer from a client.
//!
//! # Readiness
//!
//! The readiness rules of `connection/mod.rs` apply, with one difference: a
//! short read proves nothing for datagrams (each read returns one datagram,
//! however many are queued), so a socket is drained until `WouldBlock`.
//! After [`DATAGRAM_BUDGET`] datagrams it yields to the other sources and
//! goes on the run-next queue, like a listener after its accept budget.
//!
//! Datagrams are read into the loop's shared 64 KiB buffer, so the largest
//! UDP payload (65,507 bytes over IPv4, 65,527 over IPv6) arrives whole and
//! echo sends it straight back from there.

use std::io;
use std::net::SocketAddr;

use log::debug;
use mio::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};

use crate::service::Service;
use crate::stats::Stats;

/// Datagrams per UDP socket per loop tick before the others get a turn.
pub const DATAGRAM_BUDGET: usize = 64;

/// Source ports of services that answer any datagram unprompted: echo (7),
/// systat (11), daytime (13), qotd (17), chargen (19), time (37). A reply
/// to one of them comes back, and a loop starts.
pub const REFLECTING_PORTS: [u16; 6] = [7, 11, 13, 17, 19, 37];

/// Decides which datagrams must not be answered (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct LoopGuard {
    /// Every UDP socket of this server, as bound.
    own: Vec<SocketAddr>,
}

impl LoopGuard {
    /// A guard for a server whose UDP sockets are bound to `own`.
    pub fn new(own: Vec<SocketAddr>) -> LoopGuard {
        LoopGuard { own }
    }

    /// Whether a datagram from `peer` must go unanswered.
    pub fn refuses(&self, peer: SocketAddr) -> bool {
        let port = peer.port();
        port == 0
            || REFLECTING_PORTS.contains(&port)
            || self.own.iter().any(|own| {
                own.port() == port
                    && own.is_ipv4() == peer.is_ipv4()
                    && (own.ip() == peer.ip() || own.ip().is_unspecified())
            })
    }
}

/// Opens one non-blocking UDP socket bound to `addr` (IPv6 sockets are
/// IPv6-only, as for TCP listeners, so both families can share a port),
/// with `SO_REUSEPORT` when several worker processes share it.
pub fn open(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What one turn of a UDP socket ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Drained: nothing more until the next event.
    Drained,
    /// Budget spent with datagrams maybe still queued: drive again next
    /// tick.
    Requeue,
}

/// Answers the datagrams waiting on `socket`, up to the budget.
pub fn serve(
    socket: &UdpSocket,
    service: Service,
    guard: &LoopGuard,
    buf: &mut [u8],
    stats: &mut Stats,
) -> Turn {
    for _ in 0..DATAGRAM_BUDGET {
        let (n, peer) = match socket.recv_from(buf) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Turn::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // An error queued on the socket (an ICMP report for an
                // earlier reply, say). Reading it cleared it; the next
                // datagram raises a new edge.
                debug!("udp recv_from: {e}");
                return Turn::Drained;
            }
        };
        stats.datagrams_in += 1;
        if guard.refuses(peer) {
            stats.datagrams_refused += 1;
            debug!("udp: not answering {peer} (could start a loop)");
            continue;
        }
        let mut time = String::new();
        let reply = service.answer(&buf[..n], &mut time);
        match socket.send_to(reply, peer) {
            Ok(_) => stats.datagrams_out += 1,
            Err(e) => {
                // WouldBlock included: see the module docs.
                stats.datagrams_dropped += 1;
                debug!("udp send_to {peer}: {e}");
            }
        }
    }
    Turn::Requeue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_sockets_reflectors_and_port_zero_are_refused() {
        let guard = LoopGuard::new(vec![addr("127.0.0.1:9000"), addr("0.0.0.0:9013")]);
        assert!(guard.refuses(addr("127.0.0.1:9000")), "our own socket");
        assert!(guard.refuses(addr("127.0.0.5:9013")), "our wildcard socket");
        assert!(guard.refuses(addr("10.1.1.1:19")), "chargen");
        assert!(guard.refuses(addr("10.1.1.1:7")), "echo");
        assert!(guard.refuses(addr("10.1.1.1:0")), "port 0");
        assert!(
            !guard.refuses(addr("127.0.0.2:9000")),
            "same port, other host"
        );
        assert!(!guard.refuses(addr("127.0.0.1:40000")), "a client");
        assert!(!guard.refuses(addr("[::1]:9013")), "other family");
    }
}
