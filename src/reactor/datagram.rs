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
