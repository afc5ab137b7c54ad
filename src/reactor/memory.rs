//! The loop's side of the memory budget (`budget.rs`): connections parked
//! because the budget had no room for their input, let go when it frees;
//! `--evict-after`; the budget's gauges in the counters.
//!
//! A parked connection is marked queued, so events for it only add hints
//! (as for a connection on the run-next queue), and it asks for no read
//! interest (level-triggered backends would report its input forever).
//! Most wait until the budget has room; those that wait for their own send
//! queue to empty (a protocol's answer written through,
//! `connection/pass_through.rs`) are retried every [`STARVED_RETRY`], since
//! an emptying send queue raises no event; while no one leaves that list,
//! the pause doubles up to [`STARVED_RETRY_MAX`], so that clients that
//! never read their answers cost next to nothing (retried every 10 ms,
//! the hostile bench's line-mode attackers kept 14 % of a core busy while
//! they sat idle).

use std::time::Duration;

use log::{info, warn};

use super::Reactor;
use super::class::Class;
use crate::connection::CloseReason;
use crate::poller::{Poller, Token};
use crate::timer::TimerKind;
use crate::token::{self, Target};

/// How often connections parked for budget try again even if the budget
/// is still full (a send queue that emptied raises no event).
pub(super) const STARVED_RETRY: Duration = Duration::from_millis(10);

/// The longest pause between retries while the same connections keep
/// waiting for their send queues.
pub(super) const STARVED_RETRY_MAX: Duration = Duration::from_millis(320);

/// How long a split message must have been silent before its unfilled
/// reservation is taken back (while others wait for room).
pub(super) const RESERVATION_STALL: Duration = Duration::from_secs(1);

/// How often stalled reservations are looked for while connections wait
/// for room.
pub(super) const RECLAIM_CHECK: Duration = Duration::from_secs(1);

/// How often `--evict-after` looks for stalled connections.
pub(super) const EVICT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Connections parked because the budget had no room for their input
/// (marked queued, so events for them only add hints meanwhile), and the
/// state of the timers that let them go.
#[derive(Debug)]
pub(super) struct Parking {
    /// Parked until the budget has room ...
    pub(super) starved: Vec<Token>,
    /// ... or until [`TimerKind::BudgetRetry`].
    pub(super) retrying: Vec<Token>,
    /// A [`TimerKind::BudgetRetry`] is pending.
    pub(super) retry_armed: bool,
    /// A [`TimerKind::ReclaimCheck`] is pending.
    pub(super) reclaim_armed: bool,
    /// The pause before the next retry, and how many the last one let go.
    pub(super) retry_pause: Duration,
    pub(super) retried_last: usize,
    /// `--evict-after` found the budget full and has not yet brought it
    /// below half.
    pub(super) evicting: bool,
}

impl Default for Parking {
    fn default() -> Parking {
        Parking {
            starved: Vec::new(),
            retrying: Vec::new(),
            retry_armed: false,
            reclaim_armed: false,
            retry_pause: STARVED_RETRY,
            retried_last: 0,
            evicting: false,
        }
    }
}

impl Parking {
    /// Anyone parked.
    pub(super) fn any(&self) -> bool {
        !self.starved.is_empty() || !self.retrying.is_empty()
    }
}

impl<P: Poller> Reactor<P> {
    /// Parks a connection the budget has no room for: marked queued (so
    /// events for it only add hints), let go when the budget has room, or
    /// with `retry` also after [`STARVED_RETRY`].
    #[cold]
    pub(super) fn park(&mut self, key: usize, token: Token, retry: bool) {
        if !self.conns[key].enqueue() {
            return;
        }
        // Raw mode splits no message: nothing to reclaim, no timer. (A
        // metrics request head is bounded by its own check.)
        if !self.parking.reclaim_armed && self.classes[Class::Echo].handler.max_reservation() > 0 {
            let at = self.clock.now + RECLAIM_CHECK;
            self.timers.schedule(at, TimerKind::ReclaimCheck);
            self.parking.reclaim_armed = true;
        }
        if !retry {
            self.parking.starved.push(token);
            return;
        }
        if !self.parking.retry_armed {
            let at = self.clock.now + self.parking.retry_pause;
            self.timers.schedule(at, TimerKind::BudgetRetry);
            self.parking.retry_armed = true;
        }
        self.parking.retrying.push(token);
    }

    /// Gives parked connections their turn again, next tick: all of them
    /// (`all`, the budget has room), or those waiting for their own send
    /// queue ([`TimerKind::BudgetRetry`]); retrying those that hold half a
    /// message before there is room would only cost CPU.
    pub(super) fn release_starved(&mut self, all: bool) {
        let mut tokens = std::mem::take(&mut self.parking.retrying);
        // Back off while the same connections keep coming back.
        self.parking.retry_pause = if !all && tokens.len() >= self.parking.retried_last {
            (self.parking.retry_pause * 2).min(STARVED_RETRY_MAX)
        } else {
            STARVED_RETRY
        };
        self.parking.retried_last = tokens.len();
        if all {
            tokens.append(&mut self.parking.starved);
        }
        for token in tokens {
            if let Target::Connection { key, generation } = token::decode(token)
                && let Some(conn) = self.conns.get_mut(key)
                && conn.generation() == generation
            {
                // Still marked queued: the run-next entry is its turn.
                conn.unstarve();
                self.run_next.push(token);
            }
        }
    }

    /// Takes back the unfilled part of the reservations of split messages
    /// silent for [`RESERVATION_STALL`], while connections wait for room
    /// (see "Reservations that are not filled" in docs/memory.md): a
    /// reservation must cost its holder something to keep, or 60 frame
    /// headers declaring 1 MiB each hold a 64 MiB budget with 240 bytes.
    /// Checked again every [`RECLAIM_CHECK`] while anyone waits.
    pub(super) fn reclaim_stalled(&mut self) {
        self.parking.reclaim_armed = false;
        if self.parking.starved.is_empty() && self.parking.retrying.is_empty() {
            return;
        }
        let (epoch, now) = (self.clock.epoch, self.clock.now);
        let (mut released, mut freed) = (0u64, 0usize);
        for (_, conn) in self.conns.iter_mut() {
            if conn.last_active().to_instant(epoch) + RESERVATION_STALL > now {
                continue;
            }
            let gave = conn.release_unfilled();
            if gave > 0 {
                self.budget.settle(gave, 0);
                released += 1;
                freed += gave;
            }
        }
        if released > 0 {
            self.stats.reservations_released += released;
            info!(
                "budget: {released} split messages stalled for {RESERVATION_STALL:?} or \
                 more gave back {freed} reserved bytes they did not hold"
            );
        }
        let at = now + RECLAIM_CHECK;
        self.timers.schedule(at, TimerKind::ReclaimCheck);
        self.parking.reclaim_armed = true;
    }

    /// `--evict-after`: while the budget is full, closes the connections
    /// that hold buffered bytes and moved none for the whole interval,
    /// largest first, until the budget is below half (an opted-in policy:
    /// their clients lose what they had not read).
    pub(super) fn evict_stalled(&mut self) {
        let Some(after) = self.settings.evict_after else {
            return;
        };
        let at = self.clock.now + EVICT_CHECK_INTERVAL;
        self.timers.schedule(at, TimerKind::EvictCheck);
        // Eviction starts when the budget is nearly full and goes on, pass
        // after pass, until it is below half: a budget that frees a little
        // would otherwise stop it short of relief.
        self.parking.evicting = if self.budget.is_nearly_full() {
            true
        } else {
            self.parking.evicting && self.budget.under_pressure()
        };
        if !self.parking.evicting {
            return;
        }
        let epoch = self.clock.epoch;
        let now = self.clock.now;
        let mut stalled: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.held() > 0 && c.last_active().to_instant(epoch) + after <= now)
            .map(|(key, c)| (c.held(), key))
            .collect();
        stalled.sort_unstable_by(|a, b| b.cmp(a));
        let (mut closed, mut freed) = (0, 0);
        for (held, key) in stalled {
            if !self.budget.under_pressure() {
                self.parking.evicting = false;
                break;
            }
            self.close(key, CloseReason::Evicted);
            closed += 1;
            freed += held;
        }
        if closed > 0 {
            warn!(
                "budget full: evicted {closed} connections stalled for {after:?} or more, \
                 largest first ({freed} bytes freed)"
            );
        }
    }

    /// Copies the budget's gauges (and the log lines dropped) into
    /// the counters before they are shown.
    pub(super) fn sync_gauges(&mut self) {
        self.stats.buffered = self.budget.used() as u64;
        self.stats.buffered_peak = self.budget.peak() as u64;
        self.stats.budget_full = self.budget.times_full();
        self.stats.buffered_limit = self.budget.limit() as u64;
        self.stats.listeners_paused = self.sources.paused() as u64;
        self.stats.log_dropped = crate::log_sink::dropped_lines();
    }
}
