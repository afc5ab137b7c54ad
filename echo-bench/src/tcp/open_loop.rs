//! Open loop (`--rate`): messages leave on a fixed timetable, whatever the
//! server does (see [`crate::schedule`] for why).
//!
//! The thread's [`Schedule`] hands message `k` to connection slot
//! `k % slots`; each connection then sends what it has been handed as far
//! as `depth` allows. A `timerfd` ([`Timer`]) wakes the loop when the next
//! message falls due.

use super::{Conn, Worker};
use crate::schedule::Schedule;
use crate::timer::Timer;
use log::warn;
use mio::{Registry, Token};
use slab::Slab;
use std::time::{Duration, Instant};

/// The token of the open-loop timer; connection keys never get this high.
pub(super) const TIMER_TOKEN: Token = Token(usize::MAX);

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

/// The thread's open-loop state.
pub(super) struct OpenLoop {
    pub schedule: Schedule,
    /// Wakes the loop when the next scheduled message is due; `None` if
    /// there is no timerfd (then the poll timeout does, in whole ms).
    timer: Option<Timer>,
    /// Slot -> connection key; fixed for the run (no key is reused once
    /// the run has started, because no connection is opened after it).
    ring: Vec<usize>,
    /// Messages handed out so far (message numbers `0..released`).
    released: u64,
    /// `-n`: release no message past this one.
    release_limit: Option<u64>,
    /// Messages due before the measured window.
    warmup_msgs: u64,
    /// Messages handed to live connections but not sent yet (held back
    /// by `depth`).
    pub backlog: u64,
    /// Connections handed messages this turn.
    pending: Vec<usize>,
    /// Window messages that fell to a connection that had died.
    released_to_dead: u64,
}

impl OpenLoop {
    /// The timetable for `ring` (connection keys in slot order) at `rate`
    /// messages per second from `now`; `quota` caps the window's messages
    /// (`-n`). Without a timerfd the loop falls back to the poll timeout.
    fn new(
        registry: &Registry,
        ring: Vec<usize>,
        rate: f64,
        quota: Option<u64>,
        window_start: Instant,
        now: Instant,
    ) -> OpenLoop {
        let schedule = Schedule::new(now, rate, ring.len());
        // Messages due before the window opens belong to the warmup.
        let warmup_msgs = schedule.first_at_or_after(window_start);
        let timer = Timer::new(registry, TIMER_TOKEN)
            .inspect_err(|e| warn!("no timerfd ({e}); open-loop sends in 1 ms steps"))
            .ok();
        OpenLoop {
            schedule,
            timer,
            ring,
            released: 0,
            release_limit: quota.map(|q| warmup_msgs + q),
            warmup_msgs,
            backlog: 0,
            pending: Vec::new(),
            released_to_dead: 0,
        }
    }

    /// Hands every message due by `now` to its connection; the connections
    /// that got one are left in `pending`.
    fn hand_out(&mut self, conns: &mut Slab<Conn>, now: Instant) {
        // Every connection of this thread failed before the run: nobody to
        // hand messages to (the run phase ends on its own next turn).
        if self.ring.is_empty() {
            return;
        }
        let mut due = self.schedule.due_by(now);
        if let Some(limit) = self.release_limit {
            due = due.min(limit);
        }
        for k in self.released..due {
            let key = self.ring[self.schedule.slot_of(k)];
            match conns.get_mut(key) {
                Some(c) if !c.dead => {
                    c.slot.due += 1;
                    self.backlog += 1;
                    if !c.slot.queued {
                        c.slot.queued = true;
                        self.pending.push(key);
                    }
                }
                _ if k >= self.warmup_msgs => self.released_to_dead += 1,
                _ => {}
            }
        }
        self.released = self.released.max(due);
    }

    /// Sets the timer for the next message still to release.
    fn arm_timer(&mut self, now: Instant) {
        let Some(timer) = &mut self.timer else {
            return;
        };
        if self.release_limit.is_some_and(|l| self.released >= l) {
            return;
        }
        if let Err(e) = timer.arm(self.schedule.due_at(self.released), now) {
            warn!("timerfd failed ({e}); open-loop sends in 1 ms steps");
            self.timer = None;
        }
    }

    /// The timer's readable event.
    pub(super) fn timer_fired(&mut self) {
        if let Some(t) = &mut self.timer {
            t.fired();
        }
    }

    /// `-n`: every message of the count released and sent (those released
    /// to a connection that died are counted as unsent, not waited for).
    pub(super) fn all_sent(&self) -> bool {
        self.release_limit.is_some_and(|l| self.released >= l) && self.backlog == 0
    }

    /// Window messages that never left: still held back by `depth` on a
    /// live connection, or handed to one that had died.
    pub(super) fn unsent(&self, conns: &Slab<Conn>) -> u64 {
        let behind: u64 = self
            .ring
            .iter()
            .filter_map(|&k| conns.get(k))
            .map(|c| c.slot.due - c.slot.issued)
            .sum();
        behind + self.released_to_dead
    }

    /// Without a timerfd, the poll timeout wakes the loop for the next
    /// message, in whole milliseconds (mio rounds up): messages then leave
    /// in 1 ms batches. Their latency still counts from their own due
    /// time, so it shows.
    pub(super) fn fallback_wake(&self, now: Instant) -> Option<Duration> {
        let more = self.release_limit.is_none_or(|l| self.released < l);
        (self.timer.is_none() && more).then(|| {
            self.schedule
                .due_at(self.released)
                .saturating_duration_since(now)
        })
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
        let ol = OpenLoop::new(
            c.poll.registry(),
            keys,
            rate,
            c.share.quota,
            c.window.start,
            now,
        );
        self.open_loop = Some(ol);
        self.release(now);
    }

    /// Hands out every message due by `now`, sends what `depth` allows,
    /// and sets the timer for the next one.
    pub(super) fn release(&mut self, now: Instant) {
        let Some(ol) = &mut self.open_loop else {
            return;
        };
        ol.hand_out(&mut self.conns, now);
        let mut pending = std::mem::take(&mut ol.pending);
        for key in pending.drain(..) {
            self.conns[key].slot.queued = false;
            self.issue_due(key, now);
        }
        if let Some(ol) = &mut self.open_loop {
            ol.pending = pending;
            ol.arm_timer(now);
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
            let due_at = ol
                .schedule
                .due_at_on_slot(conn.slot.index, conn.slot.issued);
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
