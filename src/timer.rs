//! Timers: a min-heap of deadlines whose nearest one bounds the poll timeout.
//!
//! The loop sleeps in `poll` until either a socket becomes ready or the
//! nearest deadline passes, so with nothing to do the process uses no CPU.
//! Like libuv, we keep deadlines in a binary heap: O(log n) to add, O(1) to
//! peek at the nearest, O(log n) to pop.
//!
//! Idle timeouts are re-armed *lazily* (libev's advice): a connection does
//! not touch the heap when it sees traffic, it only records the time of its
//! last activity. When its entry expires the loop checks that time and
//! either closes the connection or pushes a new entry for the remaining
//! interval. So each connection has at most one entry, and the hot path
//! never pays for timers.
//!
//! A closed connection's entries are not removed at once (a heap cannot
//! find them cheaply); they would fire harmlessly at their deadline, but
//! with `--idle-timeout 3600` a client that connects and resets in a loop
//! would leave an hour's worth of them behind. So the loop compacts the
//! heap ([`Timers::retain`]) whenever it holds more than twice what live
//! connections can account for: the heap's size follows the open
//! connections, not the close rate times the timeout, at an amortized
//! cost of O(1) per close.
//!
//! Time is passed in by the caller (one `Instant::now()` per loop tick), so
//! this structure has no hidden clock and is tested without sleeping.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use mio::Token;

/// The loop's sense of time, read once per tick and lent to every
/// connection driven in that tick (by reference: one pointer in the
/// connection's context rather than three words copied per turn).
#[derive(Debug)]
pub(crate) struct Clock {
    /// The time of the current tick, read once after each `wait`.
    pub(crate) now: Instant,
    /// `now` as a connection [`Stamp`], computed once per tick rather than
    /// once per connection driven (subtracting two timespecs costs about
    /// as much as the rest of an echo's own code).
    pub(crate) stamp: Stamp,
    /// When the loop was created: the origin of stamps.
    pub(crate) epoch: Instant,
}

impl Clock {
    /// A clock whose epoch and first tick are `now`.
    pub(crate) fn new(now: Instant) -> Clock {
        Clock {
            now,
            stamp: Stamp::default(),
            epoch: now,
        }
    }

    /// A new tick at `now`.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.now = now;
        self.stamp = Stamp::new(self.epoch, now);
    }
}

/// A moment of the loop's life, as nanoseconds since the loop started.
///
/// Connections stamp their last activity with this rather than with an
/// `Instant`, which is 16 bytes on Linux (seconds plus nanoseconds plus
/// padding): the 8 bytes saved are what lets a connection carry its
/// protocol state and still fit in 64 bytes (`connection/mod.rs`). A `u64` of
/// nanoseconds lasts 584 years.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// `at` as a stamp of the loop that started at `epoch` (`at` before
    /// `epoch` counts as the start).
    pub(crate) fn new(epoch: Instant, at: Instant) -> Stamp {
        let nanos = at.saturating_duration_since(epoch).as_nanos();
        Stamp(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The `Instant` this stamp stands for.
    pub(crate) fn to_instant(self, epoch: Instant) -> Instant {
        epoch + Duration::from_nanos(self.0)
    }
}

/// What to do when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Check whether the connection behind this token has been idle too long.
    IdleCheck(Token),
    /// Close the connection behind this token if it is still lingering.
    LingerDeadline(Token),
    /// A metrics connection's request check: closed if it holds half a
    /// request now and held bytes at the previous check too (`.1`).
    RequestCheck(Token, bool),
    /// Let the connections parked for budget try again.
    BudgetRetry,
    /// `--evict-after`: look for stalled connections while the budget is
    /// full.
    EvictCheck,
    /// Take back the unfilled reservations of stalled split messages while
    /// connections wait for room (`reactor/memory.rs`).
    ReclaimCheck,
    /// Log the counters (`--stats-interval`).
    StatsReport,
    /// Try accepting on listener `.0` again after an accept failure paused it.
    AcceptRetry(usize),
    /// A worker proves to its master that its loop turns
    /// (`seat.rs`).
    Heartbeat,
    /// Retiring's time is up: shut down what is left (SIGUSR2).
    RetireDeadline,
    /// Graceful shutdown's time is up: close whatever is left.
    ShutdownDeadline,
    /// `--drain-delay` is over: begin the graceful shutdown.
    DrainDelay,
    /// A faults-class connection's delayed echo is due (`faults.rs`).
    FaultDue(Token),
    /// Handshake slot `.0`'s PROXY header is overdue (`reactor/handshake.rs`).
    HeaderDeadline(usize),
    /// Handshake slot `.0`'s undecided first bytes are due another look
    /// (`reactor/handshake.rs`).
    HeaderLook(usize),
    /// Relay pair `.0`'s deadline: its upstream connect's timeout, or the
    /// linger bound after a refusal (`reactor/relays.rs`).
    RelayDeadline(usize),
    /// Relay pair `.0` found the budget full: let it try again.
    RelayRetry(usize),
}

/// A set of pending deadlines.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerKind)>>,
}

impl Timers {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds a deadline. The same kind may be scheduled more than once; each
    /// entry fires once.
    pub(crate) fn schedule(&mut self, at: Instant, kind: TimerKind) {
        self.heap.push(Reverse((at, kind)));
    }

    /// How long `poll` may sleep from `now`: until the nearest deadline, or
    /// forever (`None`) when there is none.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(now))
    }

    /// What the nearest deadline is for (`--trace` says why the loop
    /// slept that long).
    pub(crate) fn next_kind(&self) -> Option<TimerKind> {
        self.heap.peek().map(|Reverse((_, kind))| *kind)
    }

    /// Removes and returns one deadline that is due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, k))| k),
            _ => None,
        }
    }

    /// Number of pending deadlines.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only the deadlines `keep` says still matter, and gives back
    /// the memory the others took.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&TimerKind) -> bool) {
        self.heap.retain(|Reverse((_, kind))| keep(kind));
        if self.heap.capacity() > 2 * self.heap.len() + 64 {
            self.heap.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_to_the_nanosecond() {
        let epoch = Instant::now();
        let later = epoch + Duration::new(3, 141_592_653);
        assert_eq!(Stamp::new(epoch, later).to_instant(epoch), later);
        assert_eq!(Stamp::new(later, epoch), Stamp::default());
    }

    #[test]
    fn a_clock_tick_moves_its_time_and_its_stamp_together() {
        let epoch = Instant::now();
        let mut clock = Clock::new(epoch);
        let later = epoch + Duration::from_millis(1500);
        clock.tick(later);
        assert_eq!(clock.now, later);
        assert_eq!(clock.stamp, Stamp::new(epoch, later));
        assert_eq!(clock.stamp.to_instant(clock.epoch), later);
    }

    #[test]
    fn retain_gives_memory_back_only_when_most_of_it_is_idle() {
        // With room for 200 deadlines, keeping `kept` of them.
        let after_retain = |kept: usize| {
            let t0 = Instant::now();
            let mut timers = Timers::new();
            timers.heap = BinaryHeap::with_capacity(200);
            for i in 0..200 {
                timers.schedule(t0 + Duration::from_millis(i), TimerKind::StatsReport);
            }
            let mut n = 0;
            timers.retain(|_| {
                n += 1;
                n <= kept
            });
            assert_eq!(timers.len(), kept);
            timers.heap.capacity()
        };
        // 200 is not more than twice 68 plus 64: kept, for the next burst.
        assert_eq!(after_retain(68), 200);
        // 200 is well over twice 10 plus 64: given back.
        assert!(after_retain(10) < 84, "not given back");
    }

    #[test]
    fn nearest_deadline_bounds_the_timeout() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        assert_eq!(timers.poll_timeout(t0), None);
        timers.schedule(t0 + Duration::from_secs(5), TimerKind::StatsReport);
        timers.schedule(t0 + Duration::from_secs(2), TimerKind::ShutdownDeadline);
        assert_eq!(timers.poll_timeout(t0), Some(Duration::from_secs(2)));
        // What `--trace` says the loop sleeps for.
        assert_eq!(timers.next_kind(), Some(TimerKind::ShutdownDeadline));
        // A deadline in the past means "don't sleep".
        assert_eq!(
            timers.poll_timeout(t0 + Duration::from_secs(3)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retain_drops_dead_entries_and_their_memory() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        for i in 0..10_000 {
            timers.schedule(
                t0 + Duration::from_secs(3600),
                TimerKind::IdleCheck(Token(i)),
            );
        }
        timers.schedule(t0, TimerKind::StatsReport);
        timers.retain(|kind| !matches!(kind, TimerKind::IdleCheck(Token(i)) if *i >= 10));
        assert_eq!(timers.len(), 11);
        assert!(timers.heap.capacity() < 200, "{}", timers.heap.capacity());
        assert_eq!(timers.pop_due(t0), Some(TimerKind::StatsReport));
    }

    #[test]
    fn pops_only_what_is_due_in_deadline_order() {
        let t0 = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(t0 + Duration::from_secs(3), TimerKind::AcceptRetry(1));
        timers.schedule(t0 + Duration::from_secs(1), TimerKind::IdleCheck(Token(9)));
        timers.schedule(t0 + Duration::from_secs(2), TimerKind::StatsReport);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(now), Some(TimerKind::IdleCheck(Token(9))));
        assert_eq!(timers.pop_due(now), Some(TimerKind::StatsReport));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.len(), 1);
    }
}
