//! Deadlines: what the loop does when a timer it set comes due (the heap
//! itself is `timer.rs`). Each kind of timer names what it is for; one
//! that names a connection also carries its token, and acts only if that
//! connection is still the one meant (`Reactor::current`, the generation
//! check).

use log::{debug, info};

use super::class::HTTP_CHECK_INTERVAL;
use super::{Reactor, StatsSink};
use crate::connection::{CloseReason, Connection, Ready};
use crate::poller::{Poller, Token};
use crate::seat::HEARTBEAT_EVERY;
use crate::timer::TimerKind;
use crate::token::{self, Named, Target};

impl<P: Poller> Reactor<P> {
    pub(super) fn fire_timers(&mut self) {
        while let Some(kind) = self.timers.pop_due(self.clock.now) {
            if let Some(trace) = self.trace.as_mut() {
                trace.timer(kind);
            }
            match kind {
                TimerKind::IdleCheck(token) => self.check_idle(token),
                TimerKind::HeaderDeadline(i) => self.header_deadline(i),
                TimerKind::HeaderLook(i) => self.header_look(i),
                TimerKind::RelayDeadline(key) => self.relay_deadline(key),
                TimerKind::RelayRetry(key) => self.relay_retry(key),
                TimerKind::FaultDue(token) => {
                    if let Target::Connection { key, generation } = token::decode(token) {
                        self.drive_faulty(key, generation, Some(Ready::default()));
                    }
                }
                TimerKind::LingerDeadline(token) => self.end_linger(token),
                TimerKind::RequestCheck(token, stalled) => self.check_request(token, stalled),
                TimerKind::BudgetRetry => {
                    self.parking.retry_armed = false;
                    self.release_starved(false);
                }
                TimerKind::EvictCheck => self.evict_stalled(),
                TimerKind::ReclaimCheck => self.reclaim_stalled(),
                TimerKind::StatsReport => {
                    self.sync_gauges();
                    match self.stats_sink.as_mut() {
                        Some(StatsSink(sink)) => sink(&self.stats),
                        None => info!("stats: {}", self.stats),
                    }
                    if let Some(every) = self.settings.stats_interval {
                        let at = self.clock.now + every;
                        self.timers.schedule(at, TimerKind::StatsReport);
                    }
                }
                TimerKind::AcceptRetry(i) => self.resume_listener(i),
                TimerKind::Heartbeat => {
                    if let Some(seat) = &self.seat {
                        seat.beat();
                        let at = self.clock.now + HEARTBEAT_EVERY;
                        self.timers.schedule(at, TimerKind::Heartbeat);
                    }
                }
                TimerKind::DrainDelay => {
                    if !self.stop.shutting_down {
                        self.begin_shutdown();
                    }
                }
                TimerKind::RetireDeadline => {
                    if !self.stop.shutting_down {
                        self.begin_shutdown();
                    }
                }
                TimerKind::ShutdownDeadline => {
                    let left: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
                    if !left.is_empty() {
                        info!("shutdown deadline: closing {} connections", left.len());
                    }
                    for key in left {
                        self.close(key, CloseReason::ShutdownDeadline);
                    }
                    self.close_relays();
                }
            }
        }
    }

    /// Drops the timers of closed connections once they outnumber the live
    /// ones (each live connection has at most an idle check and a linger
    /// bound), so that the heap follows the open connections (`timer.rs`).
    pub(super) fn compact_timers(&mut self) {
        let live = 2 * (self.conns.len() + self.relays.len()) + 16;
        if self.timers.len() <= 2 * live {
            return;
        }
        let conns = &self.conns;
        let relays = &self.relays;
        self.timers.retain(|kind| match kind {
            TimerKind::IdleCheck(token)
            | TimerKind::LingerDeadline(token)
            | TimerKind::FaultDue(token)
            | TimerKind::RequestCheck(token, _) => match token::decode(*token) {
                Target::Connection { key, generation } => {
                    conns.get(key).is_some_and(|c| c.generation() == generation)
                }
                _ => false,
            },
            TimerKind::RelayDeadline(key) | TimerKind::RelayRetry(key) => relays.contains(*key),
            _ => true,
        });
    }

    /// The connection `token` names, if it is still the one that was
    /// meant (not closed, not a later user of its slab key).
    pub(super) fn current(&self, token: Token) -> Option<(usize, &Connection)> {
        let Target::Connection { key, generation } = token::decode(token) else {
            return None;
        };
        let conn = self.conns.get(key)?;
        (conn.generation() == generation).then_some((key, conn))
    }

    /// Closes the connection if it has been idle for the whole timeout, else
    /// re-arms its check for when it would be (lazy re-arming, `timer.rs`).
    pub(super) fn check_idle(&mut self, token: Token) {
        let (Some((key, conn)), Some(idle)) = (self.current(token), self.settings.idle_timeout)
        else {
            return;
        };
        let deadline = conn.last_active().to_instant(self.clock.epoch) + idle;
        if deadline <= self.clock.now {
            self.close(key, CloseReason::TimedOut);
        } else {
            self.timers.schedule(deadline, TimerKind::IdleCheck(token));
        }
    }

    /// The linger bound: a connection still waiting for its client's FIN
    /// this long after ours is closed (`connection::LINGER_TIMEOUT`).
    pub(super) fn end_linger(&mut self, token: Token) {
        if let Some((key, conn)) = self.current(token)
            && conn.is_lingering()
        {
            self.close(key, CloseReason::LingerTimeout);
        }
    }

    /// A metrics connection's request check ([`HTTP_CHECK_INTERVAL`]):
    /// closed if it held bytes (half a head, an unread answer) at this
    /// check and the one before (`stalled`), or if it has been silent for
    /// `--metrics-idle-timeout`, else checked again. Without the second,
    /// idle keep-alive connections would hold their slots for ever.
    pub(super) fn check_request(&mut self, token: Token, stalled: bool) {
        let Some((key, conn)) = self.current(token) else {
            return;
        };
        let holds = conn.held() > 0;
        let idle_since = conn.last_active().to_instant(self.clock.epoch);
        if holds && stalled {
            debug!("{}: request head stalled; closing", Named(token));
            self.close(key, CloseReason::TimedOut);
        } else if idle_since + self.settings.http_idle_timeout <= self.clock.now {
            debug!("{}: idle keep-alive; closing", Named(token));
            self.close(key, CloseReason::TimedOut);
        } else {
            let at = self.clock.now + HTTP_CHECK_INTERVAL;
            self.timers
                .schedule(at, TimerKind::RequestCheck(token, holds));
        }
    }
}
