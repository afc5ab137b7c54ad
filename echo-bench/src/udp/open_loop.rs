//! Open loop (`--udp --rate`): datagrams leave on a fixed timetable,
//! whatever the server does (see [`crate::schedule`] for why).
//!
//! The thread's [`Release`] hands datagram `k` to socket slot
//! `k % slots`, and every datagram handed out is sent at once: a socket
//! has no window to wait for, since a datagram needs no echo before the
//! next. The datagrams that fall due on one socket in one turn are staged
//! together and leave by one `sendmmsg` (`batch.rs`).
//!
//! The `m`-th datagram of a slot carries sequence number `m + 1` (0 is the
//! proving datagram, sent before the schedule starts), so an echo's due
//! time follows from its sequence number, and latency is measured from
//! that due time: a stall of the server or of the client itself is
//! charged to every datagram that should have left meanwhile. Each socket
//! keeps the datagrams it awaits in order ([`Flight`]); one not echoed
//! within [`LOSS_TIMEOUT`] of its due time is lost, an echo that comes
//! after that is late, and an echo below the highest one seen is
//! reordered, as in closed loop.

use super::{LOSS_TIMEOUT, Worker};
use crate::release::Release;
use std::collections::VecDeque;
use std::time::Instant;

/// One socket's part of the schedule, and its datagrams in flight.
#[derive(Debug, Default)]
pub(super) struct Flight {
    /// Its place in the schedule's rotation.
    index: usize,
    /// Datagrams the schedule has handed to it.
    due: u64,
    /// Datagrams sent (staged) so far; the next one is number `sent`.
    sent: u64,
    /// Sequence number of the first entry of `awaited`.
    base: u64,
    /// From `base` on, for each datagram sent: still awaited (neither
    /// echoed nor given up). Answered entries leave from the front.
    awaited: VecDeque<bool>,
    /// Already on the list of sockets to serve this turn.
    queued: bool,
}

impl Flight {
    /// Datagrams still awaited.
    pub(super) fn waiting(&self) -> u64 {
        self.awaited.iter().filter(|&&w| w).count() as u64
    }

    /// Drops answered entries from the front.
    fn trim(&mut self) {
        while self.awaited.front() == Some(&false) {
            self.awaited.pop_front();
            self.base += 1;
        }
    }
}

impl Worker {
    /// The window opens in open loop: slots to sockets, the timer, and the
    /// first datagrams due.
    pub(super) fn start_open_loop(&mut self, rate: f64, now: Instant) {
        let ring: Vec<usize> = (self.socks.iter())
            .filter(|(_, s)| !s.dead)
            .map(|(k, _)| k)
            .collect();
        for (index, &key) in ring.iter().enumerate() {
            let f = &mut self.socks[key].flight;
            f.index = index;
            f.base = 1;
        }
        let c = &self.core;
        let ol = Release::new(
            c.poll.registry(),
            ring,
            rate,
            c.share.quota,
            c.window.start,
            now,
        );
        self.open_loop = Some(ol);
        self.release(now);
    }

    /// Hands out every datagram due by `now`, sends them a batch per
    /// socket, and sets the timer for the next one.
    pub(super) fn release(&mut self, now: Instant) {
        let Some(ol) = &mut self.open_loop else {
            return;
        };
        let socks = &mut self.socks;
        ol.hand_out(now, |key| {
            let s = socks.get_mut(key).filter(|s| !s.dead)?;
            s.flight.due += 1;
            Some(!std::mem::replace(&mut s.flight.queued, true))
        });
        let pending = ol.take_pending();
        for &key in &pending {
            self.send_due(key, now);
        }
        self.flush();
        if let Some(ol) = &mut self.open_loop {
            ol.end_turn(pending, now);
        }
    }

    /// Stages every datagram handed to `key` and not sent yet, recording
    /// how late each one leaves.
    fn send_due(&mut self, key: usize, now: Instant) {
        let Some(schedule) = self.open_loop.as_ref().map(|ol| ol.schedule.clone()) else {
            return;
        };
        let measuring = self.core.measuring();
        let s = &mut self.socks[key];
        s.flight.queued = false;
        if s.dead {
            return;
        }
        while self.socks[key].flight.sent < self.socks[key].flight.due {
            let f = &mut self.socks[key].flight;
            let m = f.sent;
            f.sent += 1;
            f.awaited.push_back(true);
            let due_at = schedule.due_at_on_slot(f.index, m);
            if measuring && due_at >= self.core.window.start {
                let lag = now.saturating_duration_since(due_at).as_nanos() as u64;
                self.core.stats.record_lag(lag);
                self.core.window.issued += 1;
                self.core.stats.udp_sent += 1;
            }
            self.waiting += 1;
            self.stage(key, m + 1);
        }
    }

    /// The intact echo of datagram `seq` on proven socket `key`.
    pub(super) fn on_open_loop_echo(&mut self, key: usize, seq: u64, now: Instant) {
        let Some(ol) = &self.open_loop else {
            return;
        };
        let measuring = self.core.measuring();
        let s = &mut self.socks[key];
        let f = &mut s.flight;
        let at = seq.wrapping_sub(f.base);
        if seq < f.base || !f.awaited.get(at as usize).is_some_and(|&w| w) {
            // Given up as lost already, or a duplicate.
            if measuring {
                self.core.stats.udp_late += 1;
            }
            return;
        }
        f.awaited[at as usize] = false;
        f.trim();
        self.waiting -= 1;
        if seq < s.highest {
            if measuring {
                self.core.stats.udp_reordered += 1;
            }
        } else {
            s.highest = seq;
        }
        self.core.completed_any += 1;
        let due_at = ol.schedule.due_at_on_slot(s.flight.index, seq - 1);
        if measuring && due_at >= self.core.window.start {
            let ns = now.saturating_duration_since(due_at).as_nanos() as u64;
            self.core.stats.record_latency(ns);
            self.core.stats.messages += 1;
            self.core.stats.bytes += self.size as u64;
        }
    }

    /// Gives up the datagrams due more than [`LOSS_TIMEOUT`] ago that are
    /// still awaited: lost (counted if they belong to the window).
    pub(super) fn sweep_flights(&mut self, now: Instant) {
        let Some(ol) = &self.open_loop else {
            return;
        };
        let measuring = self.core.measuring();
        for (_, s) in self.socks.iter_mut().filter(|(_, s)| !s.dead) {
            let f = &mut s.flight;
            while let Some(&awaited) = f.awaited.front() {
                let due_at = ol.schedule.due_at_on_slot(f.index, f.base - 1);
                if now < due_at + LOSS_TIMEOUT {
                    break;
                }
                f.awaited.pop_front();
                f.base += 1;
                if awaited {
                    self.waiting -= 1;
                    if measuring && due_at >= self.core.window.start {
                        self.core.stats.udp_lost += 1;
                    }
                }
            }
            f.trim();
        }
    }

    /// The window closes: datagrams still awaited are counted with their
    /// age so far, and the ones that never left as unsent.
    pub(super) fn close_open_loop(&mut self, now: Instant) {
        let Some(ol) = &self.open_loop else {
            return;
        };
        let start = self.core.window.start;
        for (_, s) in self.socks.iter().filter(|(_, s)| !s.dead) {
            let f = &s.flight;
            for (i, _) in f.awaited.iter().enumerate().filter(|(_, w)| **w) {
                let m = f.base - 1 + i as u64;
                let due_at = ol.schedule.due_at_on_slot(f.index, m);
                let age = now.saturating_duration_since(due_at).as_nanos() as u64;
                self.core.stats.record_outstanding(age, due_at >= start);
            }
        }
        self.core.stats.unsent = ol.released_to_dead();
    }
}
