//! Stopping: stop requests (a [`ShutdownHandle`] or a signal), the
//! drain delay, the graceful shutdown, retiring (SIGUSR2), and what the
//! other signals ask of a loop (`signals.rs` has the table); and telling
//! a service manager (`notify.rs`) when the loop serves and stops.
//!
//! # The drain delay (`--drain-delay SECS`)
//!
//! A load balancer learns that a server is going away from its health
//! check, some seconds after the fact. Closing the listeners at the first
//! SIGTERM would refuse the clients it still sends meanwhile. With a drain
//! delay the first stop request only turns `/healthz` to 503 (and
//! `echo_reactor_draining` to 1), at once: the next metrics turn sees it.
//! The listeners go on accepting and every connection is served as usual
//! for SECS; then the graceful shutdown below begins, as if the request
//! had come then. A second stop request during the delay ends the loop at
//! once, as it does during the shutdown.
//!
//! [`ShutdownHandle`]: crate::ShutdownHandle

use std::io;
use std::time::Duration;

use log::{info, warn};

use super::Reactor;
use super::class::Class;
use crate::config::Config;
use crate::notify::Notifier;
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
    /// In the drain delay: `/healthz` says 503, the listeners still accept.
    pub(super) delaying: bool,
    /// `--drain-delay`.
    pub(super) drain_delay: Duration,
    /// The service manager to tell (`NOTIFY_SOCKET`), if any; boxed, so
    /// that the loop's own state stays as compact as it was without it.
    pub(super) notifier: Option<Box<Notifier>>,
    /// Not accepting, serving the open connections until they close
    /// (SIGUSR2).
    pub(super) retiring: bool,
    pub(super) forced: bool,
}

impl Stop {
    /// The stop sources, registered: the handle's pipe, and the signals'
    /// when `config.handle_signals` (the binary sets it; an embedder may
    /// prefer the handle alone); and the service manager's socket with
    /// `config.service_manager`.
    pub(super) fn open<P: Poller>(config: &Config, poller: &mut P) -> io::Result<Stop> {
        let handle_signals = config.handle_signals;
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
            delaying: false,
            drain_delay: config.drain_delay,
            notifier: (config.service_manager)
                .then(Notifier::from_env)
                .flatten()
                .map(Box::new),
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
        } else if self.stop.delaying {
            "in the drain delay (/healthz says 503, still accepting)"
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
        } else if self.stop.delaying || self.stop.shutting_down {
            // The first request is under way.
        } else if self.stop.drain_delay.is_zero() {
            self.begin_shutdown();
        } else {
            self.delay_shutdown();
        }
    }

    /// Whether metrics connections say the server is going away
    /// (`/healthz` 503): from the first stop request on.
    pub(super) fn draining(&self) -> bool {
        self.stop.shutting_down || self.stop.retiring || self.stop.delaying
    }

    /// The first stop request with `--drain-delay`: `/healthz` answers 503
    /// from now on, the listeners keep accepting, and the graceful
    /// shutdown begins when the delay is over (`TimerKind::DrainDelay`).
    fn delay_shutdown(&mut self) {
        self.stop.delaying = true;
        let delay = self.stop.drain_delay;
        info!(
            "stop requested: /healthz answers 503 now; accepting and serving for {delay:?} \
             more (--drain-delay), then shutting down"
        );
        self.tell_manager(&format!(
            "draining: /healthz 503, accepting for {:.1} s more",
            delay.as_secs_f64()
        ));
        let at = self.clock.now + delay;
        self.timers.schedule(at, TimerKind::DrainDelay);
    }

    /// `READY=1` to the service manager, if there is one: the listeners
    /// are bound and listening (since `bind`), and the loop is about to
    /// wait on them.
    pub(super) fn notify_ready(&self) {
        if let Some(notifier) = &self.stop.notifier {
            let urls: Vec<String> = self.endpoints().iter().map(|e| e.url()).collect();
            notifier.ready(&format!("serving on {}", urls.join(", ")));
        }
    }

    /// `STOPPING=1` and what is happening, to the service manager.
    fn tell_manager(&self, status: &str) {
        if let Some(notifier) = &self.stop.notifier {
            notifier.stopping(status);
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
        self.tell_manager("retiring: listeners closed, serving the open connections");
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
        self.stop.delaying = false;
        let deadline = self.settings.shutdown_timeout;
        self.tell_manager(&format!(
            "shutting down: listeners closed, flushing {} connections",
            self.conns.len()
        ));
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
            let generation = self.conns[key].generation();
            if Class::of_generation(generation) == Class::Faults {
                // Its delayed echoes still go out, when due (RFC 862).
                self.drive_faulty(key, generation, None);
            } else {
                self.with_connection(key, |conn, cx| Some(conn.begin_shutdown(cx)));
            }
        }
        self.drain_relays();
    }
}
