//! `--trace`: the loop narrates itself, one line per tick, for a learner
//! to read beside `strace` (docs/tour.md, "One tick, traced").
//!
//! ```text
//! tick 9: slept 1.2 ms of up to 5 s (idle check of conn 0/1) | woke for 1 event: conn 0/1 [read] | conn 0/1: read 6, wrote 6, read until empty (short read) (Open)
//! ```
//!
//! - *slept X of up to Y (why)*: how long `wait` blocked, and the timeout
//!   it was given: the nearest timer (which one), forever (no timer), or 0
//!   (sources queued to run next tick).
//! - *woke for N events*: each with the connection's one name
//!   (`conn KEY/GENERATION`, `token.rs`) and its hints; then the sources
//!   driven from the run-next queue, and the timers that fired.
//! - per connection turn: bytes read and written, whether the kernel queue
//!   was found empty (a short read, or `WouldBlock`), interest changes,
//!   phase changes, pending output, and what the turn ended with.
//!
//! Off (the default), the loop pays one predictable branch per tick and
//! per connection turn; `docs/tour.md` has the measurement.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use log::info;

use crate::connection::{Look, Outcome, Ready};
use crate::poller::Token;
use crate::timer::TimerKind;
use crate::token::Named;

/// The tick being narrated.
#[derive(Debug, Default)]
pub(super) struct Trace {
    tick: u64,
    line: String,
    /// When `wait` was called, with what timeout, for which timer.
    waited_at: Option<Instant>,
    timeout: Option<Duration>,
    next: Option<TimerKind>,
    /// What goes before the next item of a list.
    sep: char,
}

impl Trace {
    /// Just before `wait`: how long it may block, and why that long.
    pub(super) fn before_wait(&mut self, timeout: Option<Duration>, next: Option<TimerKind>) {
        self.tick += 1;
        self.line.clear();
        self.waited_at = Some(Instant::now());
        let _ = write!(self.line, "tick {}: ", self.tick);
        self.timeout = timeout;
        self.next = next;
    }

    /// Just after `wait`.
    pub(super) fn after_wait(&mut self, now: Instant, events: usize, queued: usize) {
        let slept = self.waited_at.map_or(Duration::ZERO, |at| now - at);
        let _ = write!(self.line, "slept {}", Millis(slept));
        match (self.timeout, self.next) {
            (Some(t), _) if t.is_zero() => {
                let _ = write!(self.line, " of 0 (sources queued to run)");
            }
            (Some(t), Some(kind)) => {
                let _ = write!(self.line, " of up to {} ({})", Millis(t), Timer(kind));
            }
            (Some(t), None) => {
                let _ = write!(self.line, " of up to {}", Millis(t));
            }
            (None, _) => {
                let _ = write!(self.line, " of up to forever (no timer)");
            }
        }
        let _ = write!(self.line, " | woke for {events} event{}", plural(events));
        if queued > 0 {
            let _ = write!(self.line, ", {queued} queued");
        }
        self.sep = ':';
    }

    /// One event and its hints.
    pub(super) fn event(&mut self, token: Token, ready: Ready) {
        let sep = self.take_sep();
        let _ = write!(self.line, "{sep} {}", Named(token));
        let hints = [
            (ready.readable, "read"),
            (ready.writable, "write"),
            (ready.read_closed, "fin"),
            (ready.urgent, "urgent"),
        ];
        let mut first = true;
        for (_, name) in hints.iter().filter(|(on, _)| *on) {
            let _ = write!(self.line, "{}{name}", if first { " [" } else { "," });
            first = false;
        }
        if !first {
            self.line.push(']');
        }
    }

    /// The run-next queue's turn begins.
    pub(super) fn queued_turns(&mut self) {
        self.line.push_str(" | run next:");
        self.sep = ' ';
    }

    /// A timer fired.
    pub(super) fn timer(&mut self, kind: TimerKind) {
        let _ = write!(self.line, " | timer: {}", Timer(kind));
    }

    /// One connection turn, from what it looked like before and after.
    pub(super) fn turn(
        &mut self,
        token: Token,
        before: &Look,
        after: &Look,
        bytes: (u64, u64),
        outcome: &Outcome,
    ) {
        let _ = write!(self.line, " | {}:", Named(token));
        let (read, wrote) = bytes;
        if read > 0 {
            let _ = write!(self.line, " read {read},");
        }
        if wrote > 0 {
            let _ = write!(self.line, " wrote {wrote},");
        }
        if !after.read_ready && after.phase == before.phase {
            if read > 0 {
                let _ = write!(self.line, " queue empty (a short read),");
            } else if before.read_ready {
                let _ = write!(self.line, " queue empty (would block),");
            }
        }
        if before.interest != after.interest {
            let _ = write!(
                self.line,
                " interest {} -> {},",
                Interest(before.interest),
                Interest(after.interest)
            );
        }
        if after.pending > 0 {
            let _ = write!(self.line, " {} pending,", after.pending);
        }
        if before.phase != after.phase {
            let _ = write!(self.line, " {:?} -> {:?}", before.phase, after.phase);
        } else {
            let _ = write!(self.line, " {:?}", after.phase);
        }
        match outcome {
            Outcome::Keep => {}
            Outcome::Requeue => self.line.push_str(", again next tick (budget spent)"),
            Outcome::Starved { .. } => self.line.push_str(", parked (memory budget full)"),
            Outcome::Close(reason) => {
                let _ = write!(self.line, ", closed ({reason})");
            }
        }
    }

    /// Something else happened on a source (accepts, UDP).
    pub(super) fn note(&mut self, what: std::fmt::Arguments<'_>) {
        let _ = write!(self.line, " | {what}");
    }

    /// The tick is over: its line goes out.
    pub(super) fn end_tick(&mut self) {
        info!(target: "echo_reactor::trace", "{}", self.line);
    }

    fn take_sep(&mut self) -> char {
        std::mem::replace(&mut self.sep, ',')
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A duration the way a person reads it: `1.2 ms`, `5 s`.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        if ms >= 1000.0 {
            write!(f, "{:.3} s", ms / 1000.0)
        } else {
            write!(f, "{ms:.3} ms")
        }
    }
}

/// A timer, named for a reader.
struct Timer(TimerKind);

impl std::fmt::Display for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            TimerKind::IdleCheck(t) => write!(f, "idle check of {}", Named(t)),
            TimerKind::LingerDeadline(t) => write!(f, "linger bound of {}", Named(t)),
            TimerKind::RequestCheck(t, _) => write!(f, "request check of {}", Named(t)),
            TimerKind::FaultDue(t) => write!(f, "delayed echo of {}", Named(t)),
            TimerKind::HeaderDeadline(i) => write!(f, "PROXY header deadline of handshake {i}"),
            TimerKind::HeaderLook(i) => write!(f, "another look at handshake {i}"),
            TimerKind::RelayDeadline(i) => write!(f, "deadline of relay {i}"),
            TimerKind::RelayRetry(i) => write!(f, "budget retry of relay {i}"),
            TimerKind::BudgetRetry => f.write_str("budget retry"),
            TimerKind::EvictCheck => f.write_str("eviction check"),
            TimerKind::ReclaimCheck => f.write_str("reservation check"),
            TimerKind::StatsReport => f.write_str("stats report"),
            TimerKind::AcceptRetry(i) => write!(f, "accept retry of listener {i}"),
            TimerKind::Heartbeat => f.write_str("heartbeat to the master"),
            TimerKind::RetireDeadline => f.write_str("retire deadline"),
            TimerKind::ShutdownDeadline => f.write_str("shutdown deadline"),
            TimerKind::DrainDelay => f.write_str("end of the drain delay"),
        }
    }
}

/// An interest, or none (not registered).
struct Interest(Option<crate::poller::Interest>);

impl std::fmt::Display for Interest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(i) => {
                let r = i.is_readable();
                let w = i.is_writable();
                f.write_str(match (r, w) {
                    (true, true) => "read+write",
                    (true, false) => "read",
                    (false, true) => "write",
                    (false, false) => "other",
                })
            }
        }
    }
}
