//! Open loop (`--rate`): messages leave on a fixed timetable, whatever the
//! server does (see [`crate::schedule`] for why).
//!
//! The thread's [`Release`] hands message `k` to connection slot
//! `k % slots` and wakes the loop when the next one falls due; each
//! connection then sends what it has been handed as far as `depth`
//! allows.

use super::{Conn, Worker};
use crate::release::Release;
use slab::Slab;
use std::time::Instant;

/// One connection's part of the schedule.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Slot {
    /// Its place in the schedule's rotation.
    pub index: usize,
    /// Run messages the schedule has handed to it.
    pub due: u64,
    /// Run messages actually issued (`<= due`).
    pub issued: u64,
    /// Already on the list of connections to serve this turn.
    pub queued: bool,
}

/// The thread's open-loop state: the hand-out, and what `depth` holds
/// back.
pub(super) struct OpenLoop {
    pub release: Release,
    /// Messages handed to live connections but not sent yet (held back
    /// by `depth`).
    pub backlog: u64,
}

impl OpenLoop {
    /// `-n`: every message of the count released and sent (those released
    /// to a connection that died are counted as unsent, not waited for).
    pub(super) fn all_sent(&self) -> bool {
        self.release.all_released() && self.backlog == 0
    }

    /// Window messages that never left: still held back by `depth` on a
    /// live connection, or handed to one that had died.
    pub(super) fn unsent(&self, conns: &Slab<Conn>) -> u64 {
        let behind: u64 = (self.release.ring().iter())
            .filter_map(|&k| conns.get(k))
            .map(|c| c.slot.due - c.slot.issued)
            .sum();
        behind + self.release.released_to_dead()
    }
}

impl Worker {
    /// The window opens in open loop: slots to connections, the timer, and
    /// the first messages due.
    pub(super) fn start_open_loop(&mut self, keys: Vec<usize>, rate: f64, now: Instant) {
        for (index, &key) in keys.iter().enumerate() {
            self.conns[key].slot.index = index;
        }
        let c = &self.core;
        let release = Release::new(
            c.poll.registry(),
            keys,
            rate,
            c.share.quota,
            c.window.start,
            now,
        );
        self.open_loop = Some(OpenLoop {
            release,
            backlog: 0,
        });
        self.release(now);
    }

    /// Hands out every message due by `now`, sends what `depth` allows,
    /// and sets the timer for the next one.
    pub(super) fn release(&mut self, now: Instant) {
        let Some(ol) = &mut self.open_loop else {
            return;
        };
        let conns = &mut self.conns;
        ol.backlog += ol.release.hand_out(now, |key| {
            let c = conns.get_mut(key).filter(|c| !c.dead)?;
            c.slot.due += 1;
            Some(!std::mem::replace(&mut c.slot.queued, true))
        });
        let pending = ol.release.take_pending();
        for &key in &pending {
            self.conns[key].slot.queued = false;
            self.issue_due(key, now);
        }
        if let Some(ol) = &mut self.open_loop {
            ol.release.end_turn(pending, now);
        }
    }

    /// Issues the messages due on `key`, as far as `depth` allows,
    /// recording how late each one leaves.
    pub(super) fn issue_due(&mut self, key: usize, now: Instant) {
        let Some(ol) = &mut self.open_loop else {
            return;
        };
        let conn = &mut self.conns[key];
        if conn.dead {
            return;
        }
        if conn.in_flight(self.size, self.reply) == 0 {
            conn.last_progress = now;
        }
        let measuring = self.core.measuring();
        let mut issued = 0;
        while conn.slot.issued < conn.slot.due && conn.in_flight(self.size, self.reply) < self.depth
        {
            let due_at = (ol.release.schedule).due_at_on_slot(conn.slot.index, conn.slot.issued);
            if measuring && due_at >= self.core.window.start {
                let lag = now.saturating_duration_since(due_at).as_nanos() as u64;
                self.core.stats.record_lag(lag);
                self.core.window.issued += 1;
            }
            conn.slot.issued += 1;
            conn.want += self.size;
            ol.backlog -= 1;
            issued += 1;
        }
        self.send_issued(key, issued);
    }
}
