//! The loop's side of a UDP socket (`udp/`): its turns, one batch per tick,
//! and its interest, write readiness only while answers wait.
//!
//! A UDP socket gets at most one turn per tick, as a connection does: an
//! event for a socket already on the run-next queue (it filled its batch
//! last tick) is left to that queued turn, later in the same tick. Without
//! that, a flooded socket would take two batches in a tick where it had an
//! event, and every other source's wait would grow by one batch.

use std::os::fd::AsRawFd;

use log::warn;

use super::Reactor;
use crate::poller::{Interest, Poller};
use crate::token;
use crate::udp::{self, Turn, UdpCx};

impl<P: Poller> Reactor<P> {
    /// An event for UDP socket `i`: its turn, unless one is queued for this
    /// tick already.
    pub(super) fn on_udp_event(&mut self, i: usize) {
        if self.sources.udp.get(i).is_some_and(|slot| !slot.queued) {
            self.serve_udp(i);
        }
    }

    /// One turn of UDP socket `i`: its waiting answers, then one batch.
    pub(super) fn serve_udp(&mut self, i: usize) {
        let sources = &mut self.sources;
        let Some(slot) = sources.udp.get_mut(i) else {
            return;
        };
        let Some(socket) = slot.socket.as_ref() else {
            return;
        };
        let mut cx = UdpCx {
            guard: &mut sources.udp_guard,
            stats: &mut self.stats,
            budget: &mut self.budget,
            now: self.clock.now,
        };
        let turn = udp::serve(socket, slot.service, &mut slot.port, &mut cx);
        if let Some(writing) = slot.port.interest_change() {
            let interest = if writing {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let fd = socket.as_raw_fd();
            if let Err(e) = self.poller.reregister(fd, token::udp(i), interest) {
                // Not expected; the queue is still flushed on the next
                // datagram's turn.
                warn!("udp socket {i}: cannot change its interest: {e}");
            }
        }
        if turn == Turn::Requeue && !std::mem::replace(&mut slot.queued, true) {
            self.run_next.push(token::udp(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::Config;
    use crate::poller::Epoll;
    use crate::protocol::Handler;
    use crate::service::Transport;
    use crate::sockets::Sockets;

    /// An echo reactor with one UDP socket taking batches of 4, not
    /// running; the loop is driven by hand.
    fn reactor() -> Reactor<Epoll> {
        let config = Config {
            listen: Vec::new(),
            udp: vec!["127.0.0.1:0".parse().expect("address")],
            udp_batch: 4,
            ..Config::default()
        };
        let sockets = Sockets::bind(&config).expect("bind");
        Reactor::bind(&config, sockets, Handler::Raw).expect("reactor")
    }

    /// A socket that filled its batch is queued for the next tick; an event
    /// for it in that tick does not give it a second batch: its queued turn
    /// is its one turn. (Remove the check in `on_udp_event` and the event
    /// takes a second batch.)
    #[test]
    fn a_socket_gets_one_batch_per_tick_even_with_an_event() {
        let mut r = reactor();
        let to = (r.endpoints().iter())
            .find(|e| e.transport == Transport::Udp)
            .expect("a udp socket")
            .addr;
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for i in 0..12u8 {
            client.send_to(&[i; 8], to).expect("send");
        }
        // Tick 1: an event; the first batch (loopback delivers a datagram
        // before its send returns, so all 12 are waiting).
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.stats.datagrams_in == 0 && Instant::now() < deadline {
            r.on_udp_event(0);
        }
        assert_eq!(r.stats.datagrams_in, 4, "one batch");
        assert_eq!(r.run_next, vec![token::udp(0)], "queued for the next tick");
        // Tick 2: a fresh event first, then the queued turn.
        let queued = std::mem::take(&mut r.run_next);
        r.on_udp_event(0);
        assert_eq!(
            r.stats.datagrams_in, 4,
            "the event waits for the queued turn"
        );
        for token in queued {
            r.dispatch_queued(token);
        }
        assert_eq!(r.stats.datagrams_in, 8, "one batch this tick");
        assert_eq!(r.stats.datagrams_out, 8);
    }
}
