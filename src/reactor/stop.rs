//! Stopping: stop requests (a [`ShutdownHandle`] or a signal), the
//! graceful shutdown, retiring (SIGUSR2), and what the other signals ask
//! of a loop (`signals.rs` has the table).
//!
//! [`ShutdownHandle`]: crate::ShutdownHandle

use std::io;

use log::{info, warn};

use super::Reactor;
use super::class::Class;
use crate::poller::{Interest, Poller};
use crate::shutdown::{ShutdownHandle, WakePipe};
use crate::signals::{Request, Signals};
use crate::timer::TimerKind;
use crate::token;

/// Stop requests: where they come from, and how far shutdown has got.
#[derive(Debug)]
pub(super) struct Stop {
    pub(super) handle: ShutdownHandle,
    /// The read end of the handle's pipe (token `WAKER`).
    pub(super) wake: WakePipe,
    pub(super) signals: Option<Signals>,
    /// Stop requests seen so far (signals plus handle).
    pub(super) requests: usize,
    pub(super) handle_requests_seen: usize,
    pub(super) shutting_down: bool,
    /// Not accepting, serving the open connections until they close
    /// (SIGUSR2).
    pub(super) retiring: bool,
    pub(super) forced: bool,
}

impl Stop {
    /// The stop sources, registered: the handle's pipe, and the signals'
    /// when `handle_signals` (the binary sets it; an embedder may prefer
    /// the handle alone).
    pub(super) fn open<P: Poller>(handle_signals: bool, poller: &mut P) -> io::Result<Stop> {
        let (handle, wake) = ShutdownHandle::new()?;
        poller.register(wake.fd(), token::WAKER, Interest::READABLE)?;
        let signals = if handle_signals {
            let signals = Signals::install()?;
            poller.register(signals.fd(), token::SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        Ok(Stop {
            handle,
            wake,
            signals,
            requests: 0,
            handle_requests_seen: 0,
            shutting_down: false,
            retiring: false,
            forced: false,
        })
    }
}

impl<P: Poller> Reactor<P> {
    /// The shutdown handle's pipe woke the loop: as many stop requests as
    /// it made since the last time.
    pub(super) fn on_wake(&mut self) {
        self.stop.wake.drain();
        let total = self.stop.handle.requests();
        let new = total - self.stop.handle_requests_seen;
        self.stop.handle_requests_seen = total;
        self.stop_requested(new);
    }

    /// Acts on the signals that arrived (`signals.rs`).
    pub(super) fn on_signals(&mut self) {
        let arrived = self.stop.signals.as_mut().map(Signals::take);
        for (request, count) in arrived.unwrap_or_default() {
            match request {
                Request::Stop => self.stop_requested(count),
                Request::Hangup => {
                    info!("SIGHUP: nothing to reload in a single process; serving on")
                }
                Request::ReportStats => {
                    self.sync_gauges();
                    info!("stats: {}", self.stats)
                }
                Request::Status => self.log_status(),
                Request::Alarm => info!("SIGALRM: no timer of ours uses it; ignored"),
                Request::Retire => self.retire(),
            }
        }
    }

    /// SIGQUIT: what the loop holds and where it stands, then the
    /// counters; serving goes on.
    pub(super) fn log_status(&mut self) {
        self.sync_gauges();
        let phase = if self.stop.shutting_down {
            "shutting down"
        } else if self.stop.retiring {
            "retiring"
        } else {
            "serving"
        };
        info!(
            "status: {phase}; {} connections ({} metrics), {} parked for memory, \
             {} of {} bytes buffered, {} timers, {} queued turns",
            self.conns.len(),
            self.classes[Class::Http].open,
            self.parking.starved.len() + self.parking.retrying.len(),
            self.budget.used(),
            self.budget.limit(),
            self.timers.len(),
            self.run_next.len(),
        );
        info!("stats: {}", self.stats);
    }

    pub(super) fn stop_requested(&mut self, new: usize) {
        if new == 0 {
            return;
        }
        self.stop.requests += new;
        if self.stop.requests >= 2 {
            warn!("second stop request: exiting now");
            self.stop.forced = true;
        } else if !self.stop.shutting_down {
            self.begin_shutdown();
        }
    }

    /// SIGUSR2: stop accepting, and serve the open connections until
    /// their clients close them; after `--shutdown-timeout`, drain the
    /// rest as a shutdown does. A master's rolling restart retires the old
    /// worker this way once the new one serves: a connection the old one
    /// accepted a moment before is served, not cut off (a plain shutdown
    /// stops reading at once).
    pub(super) fn retire(&mut self) {
        if self.stop.shutting_down || self.stop.retiring {
            return;
        }
        self.stop.retiring = true;
        self.sources.close(&mut self.poller, &mut self.budget);
        let deadline = self.settings.shutdown_timeout;
        info!(
            "SIGUSR2: retiring: listeners closed, serving {} connections until they close \
             (up to {deadline:?}, then a shutdown)",
            self.conns.len(),
        );
        let at = self.clock.now + deadline;
        self.timers.schedule(at, TimerKind::RetireDeadline);
    }

    pub(super) fn begin_shutdown(&mut self) {
        self.stop.shutting_down = true;
        let deadline = self.settings.shutdown_timeout;
        info!(
            "shutting down: listeners closed, flushing {} connections (up to {deadline:?})",
            self.conns.len(),
        );
        self.sources.close(&mut self.poller, &mut self.budget);
        let at = self.clock.now + deadline;
        self.timers.schedule(at, TimerKind::ShutdownDeadline);
        // Metrics connections are served on: `/healthz` answers 503 now.
        let keys: Vec<usize> = (self.conns.iter())
            .filter(|(_, conn)| Class::of_generation(conn.generation()).holds_shutdown())
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            self.with_connection(key, |conn, cx| Some(conn.begin_shutdown(cx)));
        }
    }
}
