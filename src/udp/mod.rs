//! UDP services on the same poller: echo (RFC 862) and daytime (RFC 867).
//!
//! UDP is the other half of seed 1 and the whole of seed 5: no connection,
//! no stream, every datagram received is whole, from some peer, and every
//! answer one whole datagram back. So a UDP socket needs none of a
//! connection's machinery: no phases, no backpressure, and no output
//! buffer but a short queue for answers that met a full send buffer. It is
//! one more source in the loop, registered for `READABLE` (and `WRITABLE`
//! only while that queue holds something).
//!
//! # Batches: many datagrams per system call
//!
//! A UDP socket is served a *batch* at a time: one `recvmmsg(2)` takes up
//! to `--udp-batch` datagrams (default
//! [`DEFAULT_UDP_BATCH`](crate::DEFAULT_UDP_BATCH)) into slots allocated
//! once per socket (`batch.rs`), every one of them goes through the loop
//! guard below and is counted, and one `sendmmsg(2)` sends all the answers
//! back from the same slots. Under load that is two calls for a few dozen
//! datagrams instead of two per datagram.
//!
//! The calls were never the main cost, though: on loopback about nine
//! tenths of a UDP echo's CPU is the kernel building, routing and
//! delivering each datagram (`perf`, docs/benchmarks.md). So runs of
//! answers to one peer go as one message that the kernel cuts into
//! datagrams at the last moment (UDP GSO), and an echo socket takes runs
//! of datagrams from one sender coalesced into one slot when they came as
//! one packet (UDP GRO): a client that sends with GSO (a QUIC stack, or
//! `echo-bench --udp-offload`) is then answered at a fraction of the cost
//! per datagram. A coalesced slot is still so many datagrams to the loop:
//! each is counted, checked by the guard, and answered.
//!
//! At low load batching changes nothing for latency: a batch is whatever
//! is queued *now* (the call does not wait for more), so a lone datagram
//! is received alone and answered in the same tick, by one receive and
//! one send, as before (a lone answer by `sendto(2)`, which spares the
//! kernel `sendmmsg`'s message header). The receive's headers are kept
//! with the batch, so a call that finds one datagram does not first build
//! `--udp-batch` of them. Other systems get the same batches, filled and
//! sent a call per datagram (`batch.rs`, `portable`).
//!
//! # An answer that cannot go out at once
//!
//! A TCP connection must deliver every byte, so a full send buffer makes
//! it keep the rest and wait. A UDP service promises no delivery, and one
//! socket serves all its peers, so waiting is never an option: answers
//! that meet `WouldBlock` go to a short queue charged to `--max-buffered`
//! (`queue.rs`), sent first when the socket is writable again (the socket
//! asks for write readiness only while the queue holds something); past
//! its bound they are dropped and counted (`datagrams_dropped`), as the
//! network itself may drop them. Newer answers queue behind older ones,
//! so a peer's answers keep their order.
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
//!   ([`REFLECTING_PORTS`](guard::REFLECTING_PORTS): echo 7, systat 11, daytime 13, qotd 17,
//!   chargen 19, time 37): a client never sends from those, and answering
//!   them starts a loop with a host that runs the service.
//!
//! Two echo services on *arbitrary* ports (two instances of this server,
//! or this one and any echo or daytime service) pass all of that: one
//! datagram spoofed from one to the other starts them playing ping-pong.
//! Nothing in a single datagram tells such a peer from a client, but the
//! loop shows in what it sends: it sends back exactly what we answered it
//! a moment ago. So the guard also remembers, for recently answered peers
//! ([`PEER_SLOTS`](guard::PEER_SLOTS) of them), a fingerprint of the last [`RECENT_ANSWERS`](guard::RECENT_ANSWERS)
//! answers to each, and a datagram that repeats one of them is a *repeat*.
//! Repeats are answered at most [`REPEAT_BURST`](guard::REPEAT_BURST) in a row and
//! [`REPEATS_PER_SEC`](guard::REPEATS_PER_SEC) a second after that, per peer; past it they are not
//! answered, and the loop, which has nothing else in flight, dies there:
//! a few dozen datagrams instead of a core for ever. A client that sends
//! the same payload again and again (a health check, say) is a repeater
//! too, and is served up to that rate; a client whose datagrams differ
//! (echo-bench numbers its own) never touches it. Two loops need two
//! spoofed datagrams, and up to [`RECENT_ANSWERS`](guard::RECENT_ANSWERS) of them between the
//! same two services are caught the same way; a reflector that changes
//! what it answers (a counter, say) is not.
//!
//! Refused datagrams are counted (`datagrams_refused`).
//!
//! # Readiness
//!
//! The readiness rules of `connection/mod.rs` apply, with datagrams for
//! bytes: a batch that comes back with fewer datagrams than it had slots
//! found the receive queue empty at that moment (the call takes what is
//! queued and returns), so, like a short read, it waits for the next edge.
//! A full batch may have left more behind: the socket goes on the run-next
//! queue and gets its next batch next tick, after the other sources; one
//! batch per socket per tick, as a connection gets one read.
//!
//! Each slot is 64 KiB, so the largest UDP payload (65,507 bytes over
//! IPv4, 65,527 over IPv6) arrives whole and echo sends it straight back
//! from there.

mod batch;
mod guard;
mod queue;

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use socket2::{Domain, Protocol, Socket, Type};

use crate::budget::Budget;
use crate::service::Service;
use crate::stats::Stats;

pub(crate) use batch::{Batch, Datagrams, Pick, accept_coalesced};

/// Datagrams one coalesced slot holds at most (the kernel's
/// `UDP_MAX_SEGMENTS`): the answers of a turn are preallocated for this
/// many per slot.
const MAX_SEGMENTS: usize = 64;
pub(crate) use guard::{LoopGuard, fingerprint};
pub(crate) use queue::SendQueue;

/// Opens one non-blocking UDP socket bound to `addr` (IPv6 sockets are
/// IPv6-only, as for TCP listeners, so both families can share a port),
/// with `SO_REUSEPORT` when several worker processes share it.
pub(crate) fn open(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
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
pub(crate) enum Turn {
    /// Drained: nothing more until the next event.
    Drained,
    /// A full batch, with datagrams maybe still queued: drive again next
    /// tick.
    Requeue,
}

/// One UDP socket's own state: its batch and its queue of answers.
#[derive(Debug)]
pub(crate) struct Port {
    batch: Batch,
    queue: SendQueue,
    /// Registered for write readiness (the queue held something when the
    /// interest was last set).
    writing: bool,
    /// The answers that go out this turn, in order.
    picks: Vec<Pick>,
}

/// What the loop lends a UDP socket's turn.
#[derive(Debug)]
pub(crate) struct UdpCx<'a> {
    pub(crate) guard: &'a mut LoopGuard,
    pub(crate) stats: &'a mut Stats,
    pub(crate) budget: &'a mut Budget,
    /// The loop's time for this tick.
    pub(crate) now: Instant,
}

impl Port {
    /// A socket's state, with batches of `batch` datagrams (1 to
    /// [`MAX_BATCH`](batch::MAX_BATCH)), allocated here once.
    pub(crate) fn new(batch: usize) -> Port {
        let batch = Batch::new(batch);
        Port {
            picks: Vec::with_capacity(batch.size() * MAX_SEGMENTS),
            batch,
            queue: SendQueue::default(),
            writing: false,
        }
    }

    /// Whether the socket's interest must change: `Some(true)` to add
    /// write readiness (answers wait), `Some(false)` to drop it; records
    /// the change as made.
    pub(crate) fn interest_change(&mut self) -> Option<bool> {
        let want = !self.queue.is_empty();
        (want != self.writing).then(|| {
            self.writing = want;
            want
        })
    }

    /// Answers waiting for room.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Bytes its waiting answers hold against the budget.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.queue.held()
    }

    /// Forgets the waiting answers (the socket closes).
    pub(crate) fn close(&mut self, budget: &mut Budget) {
        self.queue.clear(budget);
    }
}

/// One turn of a UDP socket: sends what waits in its queue, then takes one
/// batch of datagrams and answers it.
pub(crate) fn serve<D: Datagrams>(
    socket: &D,
    service: Service,
    port: &mut Port,
    cx: &mut UdpCx<'_>,
) -> Turn {
    let size = port.batch.size();
    if !port.queue.is_empty() {
        port.queue.flush(socket, size, cx.budget, cx.stats);
    }
    let got = loop {
        match socket.recv_batch(&mut port.batch) {
            Ok(got) => break got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // An error queued on the socket (an ICMP report for an
                // earlier reply, say). Reading it cleared it; the next
                // datagram raises a new edge.
                debug!("udp recvmmsg: {e}");
                break 0;
            }
        }
    };
    port.picks.clear();
    let mut time = String::new();
    for i in 0..got {
        let peer = port.batch.peer(i);
        for pick in port.batch.datagrams(i) {
            cx.stats.datagrams_in += 1;
            if cx.guard.refuses(peer) {
                cx.stats.datagrams_refused += 1;
                debug!("udp: not answering {peer} (could start a loop)");
                continue;
            }
            let print = fingerprint(port.batch.bytes(pick));
            if cx.guard.repeats_too_often(peer, print, cx.now) {
                cx.stats.datagrams_refused += 1;
                debug!("udp: not answering {peer}: it keeps sending back our answers (a loop?)");
                continue;
            }
            // An echo's answer is its datagram, in place: one fingerprint.
            let (answer, print) = match service {
                Service::Echo => (pick, print),
                other => {
                    let Some(line) = other.answer(&[], &mut time) else {
                        // Discard: read, counted, never answered.
                        continue;
                    };
                    (port.batch.set_answer(pick, line), fingerprint(line))
                }
            };
            cx.guard.answered(peer, print);
            port.picks.push(answer);
        }
    }
    send_answers(socket, port, cx);
    if got == size {
        Turn::Requeue
    } else {
        Turn::Drained
    }
}

/// Sends the answers picked this turn, with as few calls as the socket
/// takes; behind answers already waiting, or when the socket would block,
/// they wait in the queue (or are dropped past its bound).
fn send_answers<D: Datagrams>(socket: &D, port: &mut Port, cx: &mut UdpCx<'_>) {
    let mut next = 0;
    while next < port.picks.len() && port.queue.is_empty() {
        match socket.send_batch(&port.batch, &port.picks[next..]) {
            Ok(sent) => {
                cx.stats.datagrams_out += sent as u64;
                next += sent.max(1);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // This one answer is refused (an unreachable peer, say);
                // the others may still go.
                cx.stats.datagrams_dropped += 1;
                let peer = port.batch.peer(usize::from(port.picks[next].slot));
                debug!("udp sendmmsg to {peer}: {e}");
                next += 1;
            }
        }
    }
    for &pick in &port.picks[next..] {
        let peer = port.batch.peer(usize::from(pick.slot));
        port.queue
            .push(port.batch.bytes(pick), peer, cx.budget, cx.stats);
    }
}

#[cfg(test)]
mod tests;
