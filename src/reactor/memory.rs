//! The loop's side of the memory budget (`budget.rs`): connections parked
//! because the budget had no room for their input, let go when it frees;
//! `--evict-after`; the budget's gauges in the counters.
//!
//! A parked connection is marked queued, so events for it only add hints
//! (as for a connection on the run-next queue), and it asks for no read
//! interest (level-triggered backends would report its input forever).
//! Those holding half a message wait until the budget has room; those that
//! wait for their own send queue to empty (a protocol's answer written
//! through, `connection/pass_through.rs`) are retried every
//! [`STARVED_RETRY`], since an emptying send queue raises no event.

use std::time::Duration;

use log::warn;

use super::Reactor;
use crate::connection::CloseReason;
use crate::poller::{Poller, Token};
use crate::timer::TimerKind;
use crate::token::{self, Target};

/// How often connections parked for budget try again even if the budget
/// is still full (a send queue that emptied raises no event).
pub(super) const STARVED_RETRY: Duration = Duration::from_millis(10);

/// How often `--evict-after` looks for stalled connections.
pub(super) const EVICT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl<P: Poller> Reactor<P> {
    /// Parks a connection the budget has no room for: marked queued (so
    /// events for it only add hints), retried when the budget frees or
    /// after [`STARVED_RETRY`].
    #[cold]
    pub(super) fn park(&mut self, key: usize, token: Token) {
        let conn = &mut self.conns[key];
        if conn.enqueue() {
            if !conn.holds_partial() && !self.retry_armed {
                let at = self.clock.now + STARVED_RETRY;
                self.timers.schedule(at, TimerKind::BudgetRetry);
                self.retry_armed = true;
            }
            self.starved.push(token);
        }
    }

    /// Gives every connection parked for budget its turn again, next tick.
    ///
    /// With `all` false (the periodic retry while the budget is still
    /// full), only those that wait for their own send queue to empty go;
    /// those holding half a message need room in the budget, and retrying
    /// them before there is any would only cost CPU.
    pub(super) fn release_starved(&mut self, all: bool) {
        let mut still = Vec::new();
        for token in std::mem::take(&mut self.starved) {
            let Target::Connection { key, generation } = token::decode(token) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.generation() != generation {
                continue;
            }
            if all || !conn.holds_partial() {
                // Still marked queued: the run-next entry is its turn.
                conn.unstarve();
                self.run_next.push(token);
            } else {
                still.push(token);
            }
        }
        self.starved = still;
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
        if !self.budget.is_full() {
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

    /// Copies the budget's gauges into the counters before they are shown.
    pub(super) fn sync_gauges(&mut self) {
        self.stats.buffered = self.budget.used() as u64;
        self.stats.buffered_peak = self.budget.peak() as u64;
        self.stats.budget_full = self.budget.times_full();
    }
}
