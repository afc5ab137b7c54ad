//! The open-loop schedule: when each message *should* leave, whatever the
//! server does.
//!
//! A closed-loop client sends the next message when an echo returns, so a
//! server stall also stalls the client's sending, and the stall is recorded
//! once instead of for every message that should have been sent during it
//! ("coordinated omission"). In open-loop mode the client instead follows a
//! fixed timetable: message `k` of a thread is due at `start + k * interval`
//! and goes to connection slot `k % slots`. Latency is measured from the
//! due time, so a message that had to wait (its connection still had
//! `depth` messages in flight, or the client itself fell behind) carries
//! that wait in its latency, and the wait is reported as schedule lag.
//!
//! No clock is read here: callers pass the time in, so the arithmetic is
//! tested without sleeping.

use std::time::{Duration, Instant};

/// One thread's timetable.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    /// Nanoseconds between consecutive messages of this thread. A float, so
    /// that rates that do not divide a second evenly do not drift.
    interval_ns: f64,
    /// Connection slots the messages rotate over.
    slots: u64,
}

impl Schedule {
    /// `rate` messages per second for this thread, over `slots` connections,
    /// message 0 due at `start`.
    pub fn new(start: Instant, rate: f64, slots: usize) -> Schedule {
        Schedule {
            start,
            interval_ns: 1e9 / rate.max(f64::MIN_POSITIVE),
            slots: slots.max(1) as u64,
        }
    }

    /// How many messages are due by `now` (message 0 is due at `start`).
    pub fn due_by(&self, now: Instant) -> u64 {
        let Some(elapsed) = now.checked_duration_since(self.start) else {
            return 0;
        };
        (elapsed.as_nanos() as f64 / self.interval_ns) as u64 + 1
    }

    /// When message `k` is due.
    pub fn due_at(&self, k: u64) -> Instant {
        self.start + Duration::from_nanos((k as f64 * self.interval_ns) as u64)
    }

    /// The first message due at or after `t`: so, the number of messages
    /// due strictly before `t` (those belong to the warmup when `t` is the
    /// start of the measured window).
    pub fn first_at_or_after(&self, t: Instant) -> u64 {
        // Start from the float estimate and correct it against due_at, the
        // one definition of a message's time, so rounding cannot put a
        // message on both sides of `t`.
        let mut k = self.due_by(t).saturating_sub(1);
        while self.due_at(k) < t {
            k += 1;
        }
        while k > 0 && self.due_at(k - 1) >= t {
            k -= 1;
        }
        k
    }

    /// The connection slot message `k` goes to.
    pub fn slot_of(&self, k: u64) -> usize {
        (k % self.slots) as usize
    }

    /// When the `m`-th message of slot `slot` is due (the inverse of
    /// [`Schedule::slot_of`]: that message is `k = slot + m * slots`).
    pub fn due_at_on_slot(&self, slot: usize, m: u64) -> Instant {
        self.due_at(slot as u64 + m * self.slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_fall_due_at_the_rate() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 1000.0, 4);
        assert_eq!(s.due_by(t0), 1);
        assert_eq!(s.due_by(t0 + Duration::from_micros(999)), 1);
        assert_eq!(s.due_by(t0 + Duration::from_millis(1)), 2);
        assert_eq!(s.due_by(t0 + Duration::from_secs(1)), 1001);
    }

    #[test]
    fn messages_before_a_time_are_counted_exactly() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 3.0, 1); // due every 333,333,333 ns
        assert_eq!(s.first_at_or_after(t0), 0);
        assert_eq!(s.first_at_or_after(t0 + Duration::from_nanos(1)), 1);
        assert_eq!(s.first_at_or_after(s.due_at(5)), 5);
        assert_eq!(
            s.first_at_or_after(s.due_at(5) + Duration::from_nanos(1)),
            6
        );
    }

    #[test]
    fn slots_rotate_and_invert() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 100.0, 3);
        assert_eq!(s.slot_of(7), 1);
        // Message 7 is the third (m = 2) message of slot 1.
        assert_eq!(s.due_at_on_slot(1, 2), s.due_at(7));
        assert_eq!(s.due_at(7) - t0, Duration::from_millis(70));
    }
}
