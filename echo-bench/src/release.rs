//! Open loop's hand-out, for either transport: which message falls due
//! when, and to whom.
//!
//! A thread's [`Schedule`] hands message `k` to slot `k % slots`; the ring
//! maps slots to connection (TCP) or socket (UDP) keys, fixed for the run
//! (nothing opens after it starts, so no key is reused). [`Release`] counts
//! what it has handed out, stops at `-n`, counts window messages that fell
//! to a key that had failed, and keeps a `timerfd` ([`Timer`]) set for the
//! next one due. What a key does with what it is handed (TCP: send as far
//! as `depth` allows; UDP: send at once) is the transport's.

use crate::schedule::Schedule;
use crate::timer::Timer;
use log::warn;
use mio::{Registry, Token};
use std::time::{Duration, Instant};

/// The token of the open-loop timer; connection and socket keys never get
/// this high.
pub(crate) const TIMER_TOKEN: Token = Token(usize::MAX);

/// The thread's timetable and what it has handed out so far.
pub(crate) struct Release {
    pub(crate) schedule: Schedule,
    /// Wakes the loop when the next message is due; `None` if there is no
    /// timerfd (then the poll timeout does, in whole ms).
    timer: Option<Timer>,
    /// Slot -> key, fixed for the run.
    ring: Vec<usize>,
    /// Messages handed out so far (numbers `0..released`).
    released: u64,
    /// `-n`: release no message past this one.
    release_limit: Option<u64>,
    /// Messages due before the measured window.
    warmup: u64,
    /// Keys handed messages this turn.
    pending: Vec<usize>,
    /// Window messages that fell to a key that had failed.
    released_to_dead: u64,
}

impl Release {
    /// The timetable for `ring` (keys in slot order) at `rate` messages per
    /// second from `now`; `quota` caps the window's messages (`-n`).
    /// Without a timerfd the loop falls back to the poll timeout.
    pub(crate) fn new(
        registry: &Registry,
        ring: Vec<usize>,
        rate: f64,
        quota: Option<u64>,
        window_start: Instant,
        now: Instant,
    ) -> Release {
        let schedule = Schedule::new(now, rate, ring.len());
        // Messages due before the window opens belong to the warmup.
        let warmup = schedule.first_at_or_after(window_start);
        let timer = Timer::new(registry, TIMER_TOKEN)
            .inspect_err(|e| warn!("no timerfd ({e}); open-loop sends in 1 ms steps"))
            .ok();
        Release {
            schedule,
            timer,
            ring,
            released: 0,
            release_limit: quota.map(|q| warmup + q),
            warmup,
            pending: Vec::new(),
            released_to_dead: 0,
        }
    }

    /// The keys in slot order.
    pub(crate) fn ring(&self) -> &[usize] {
        &self.ring
    }

    /// Hands every message due by `now` to its slot's key: `take(key)` is
    /// `None` for a key that has failed, else whether the key is new to
    /// this turn's pending list. Returns how many went to live keys.
    pub(crate) fn hand_out(
        &mut self,
        now: Instant,
        mut take: impl FnMut(usize) -> Option<bool>,
    ) -> u64 {
        // Every key of this thread failed before the run: nobody to hand
        // messages to (the run phase ends on its own next turn).
        if self.ring.is_empty() {
            return 0;
        }
        let mut due = self.schedule.due_by(now);
        if let Some(limit) = self.release_limit {
            due = due.min(limit);
        }
        let mut live = 0;
        for k in self.released..due {
            let key = self.ring[self.schedule.slot_of(k)];
            match take(key) {
                Some(first) => {
                    live += 1;
                    if first {
                        self.pending.push(key);
                    }
                }
                None if k >= self.warmup => self.released_to_dead += 1,
                None => {}
            }
        }
        self.released = self.released.max(due);
        live
    }

    /// This turn's pending keys, to serve; give the list back with
    /// [`Release::end_turn`].
    pub(crate) fn take_pending(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.pending)
    }

    /// Ends the turn: the (emptied) pending list back, and the timer set
    /// for the next message still to release.
    pub(crate) fn end_turn(&mut self, mut pending: Vec<usize>, now: Instant) {
        pending.clear();
        self.pending = pending;
        if self.all_released() {
            return;
        }
        let Some(timer) = &mut self.timer else {
            return;
        };
        if let Err(e) = timer.arm(self.schedule.due_at(self.released), now) {
            warn!("timerfd failed ({e}); open-loop sends in 1 ms steps");
            self.timer = None;
        }
    }

    /// The timer's readable event.
    pub(crate) fn timer_fired(&mut self) {
        if let Some(t) = &mut self.timer {
            t.fired();
        }
    }

    /// `-n`: every message of the count has been handed out.
    pub(crate) fn all_released(&self) -> bool {
        self.release_limit.is_some_and(|l| self.released >= l)
    }

    /// Window messages handed to a key that had failed.
    pub(crate) fn released_to_dead(&self) -> u64 {
        self.released_to_dead
    }

    /// Without a timerfd, the poll timeout wakes the loop for the next
    /// message, in whole milliseconds (mio rounds up): messages then leave
    /// in 1 ms batches. Their latency still counts from their own due
    /// time, so it shows.
    pub(crate) fn fallback_wake(&self, now: Instant) -> Option<Duration> {
        (self.timer.is_none() && !self.all_released()).then(|| {
            self.schedule
                .due_at(self.released)
                .saturating_duration_since(now)
        })
    }
}
