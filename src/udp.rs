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
//! # Readiness
//!
//! The readiness rules of `connection.rs` apply, with one difference: a
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

use crate::daytime;
use crate::listener::Service;
use crate::stats::Stats;

/// Datagrams per UDP socket per loop tick before the others get a turn.
pub const DATAGRAM_BUDGET: usize = 64;

/// Opens one non-blocking UDP socket bound to `addr` (IPv6 sockets are
/// IPv6-only, as for TCP listeners, so both families can share a port).
pub fn open(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket.into()))
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
pub fn serve(socket: &UdpSocket, service: Service, buf: &mut [u8], stats: &mut Stats) -> Turn {
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
        let time;
        let reply: &[u8] = match service {
            Service::Echo => &buf[..n],
            Service::Daytime => {
                time = daytime::now_line();
                time.as_bytes()
            }
        };
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
