//! Answers a socket could not send at once, waiting for room, within the
//! memory budget.
//!
//! A UDP answer that meets a full send buffer (`WouldBlock`) is kept here,
//! a copy of its bytes and its peer, and sent before any newer answer once
//! the socket is writable again; the socket asks for write readiness only
//! while this queue holds something. Every byte kept is charged to
//! `--max-buffered` (`budget.rs`) as TCP's pending output is. An answer is
//! kept only while the budget is below half full and the queue holds
//! fewer than [`MAX_QUEUED`] answers; past that it is dropped and counted
//! (`datagrams_dropped`), as the network may drop any datagram: UDP
//! promises no delivery, and TCP clients keep the other half of the
//! budget.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use log::debug;

use super::batch::Datagrams;
use crate::budget::Budget;
use crate::stats::Stats;

/// The most answers one socket keeps waiting (the queue's own bookkeeping,
/// at most this many entries, is allocated as it grows and kept).
pub(crate) const MAX_QUEUED: usize = 1024;

/// Bytes charged per answer kept besides its payload: its entry and the
/// allocator's rounding, about.
const ENTRY_CHARGE: usize = 64;

/// One socket's answers waiting for room.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    waiting: VecDeque<(SocketAddr, Box<[u8]>)>,
    /// Bytes charged to the budget for them.
    held: usize,
}

impl SendQueue {
    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Answers waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Bytes charged to the budget.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Keeps `answer` for `peer` if the budget and the bound allow;
    /// otherwise drops and counts it.
    pub(crate) fn push(
        &mut self,
        answer: &[u8],
        peer: SocketAddr,
        budget: &mut Budget,
        stats: &mut Stats,
    ) {
        let charge = answer.len() + ENTRY_CHARGE;
        if self.waiting.len() >= MAX_QUEUED || budget.under_pressure() || !budget.fits(charge) {
            stats.datagrams_dropped += 1;
            debug!("udp: answer to {peer} dropped: send queue full");
            return;
        }
        budget.settle(self.held, self.held + charge);
        self.held += charge;
        self.waiting.push_back((peer, answer.into()));
    }

    /// Sends what waits, oldest first, up to `max` answers or until the
    /// socket would block; an answer the socket refuses for another reason
    /// is dropped and counted.
    pub(crate) fn flush<D: Datagrams>(
        &mut self,
        socket: &D,
        max: usize,
        budget: &mut Budget,
        stats: &mut Stats,
    ) {
        for _ in 0..max {
            let Some((peer, answer)) = self.waiting.front() else {
                break;
            };
            match socket.send_one(answer, *peer) {
                Ok(_) => stats.datagrams_out += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    stats.datagrams_dropped += 1;
                    debug!("udp send_to {peer}: {e}");
                }
            }
            self.pop(budget);
        }
    }

    /// Forgets every waiting answer (the socket is closing), giving their
    /// bytes back to the budget.
    pub(crate) fn clear(&mut self, budget: &mut Budget) {
        while !self.waiting.is_empty() {
            self.pop(budget);
        }
    }

    fn pop(&mut self, budget: &mut Budget) {
        if let Some((_, answer)) = self.waiting.pop_front() {
            let charge = answer.len() + ENTRY_CHARGE;
            budget.settle(self.held, self.held - charge);
            self.held -= charge;
        }
    }
}
