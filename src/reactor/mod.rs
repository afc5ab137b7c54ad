//! The event loop: one thread, one multiplexer, every socket.
//!
//! This is the select/poll/epoll server of seeds 9 and 10, grown up, and
//! it still runs on any of the three: [`Reactor`] is generic over the
//! [`Poller`] (`poller/`), and [`Server`] picks one for `--backend`. Each
//! turn of the loop (a *tick*):
//!
//! 1. sleeps in the poller's `wait` until something is ready, or until the
//!    nearest timer deadline, or not at all while the run-next queue holds
//!    work;
//! 2. routes each event by its token (`token.rs`) to a listener (accept,
//!    `accept.rs`), a UDP socket (`datagram.rs`, `udp/`), a control pipe (stop,
//!    signals), or a connection, which does its own I/O (`connection/mod.rs`);
//! 3. drives the connections and listeners that the previous tick left on
//!    the run-next queue because they spent their budget while still ready;
//! 4. fires due timers: idle checks, the linger bound, stats, accept
//!    retries, the shutdown deadline.
//!
//! The loop only routes readiness; it never touches a connection's bytes.
//! What a connection is sent and answers is its service's and protocol's
//! business (`service.rs`, `protocol/`); the loop only lends every
//! connection the same read buffer and the same scratch vector for
//! answers ([`Lent`]), so neither is per connection.
//!
//! The sockets are opened before the loop starts (`sources.rs`); the
//! backend is chosen at run time in one place (`server.rs`).
//!
//! # Shutdown
//!
//! The first stop request (signal or [`ShutdownHandle`]) closes the
//! listeners, so new connections are refused by the kernel, and moves every
//! connection to draining: no new input, pending output flushed, then FIN,
//! then a lingering read until the client closes. The loop ends when no
//! connection is left or at the shutdown deadline, which closes the rest.
//! A second request ends the loop at once.

mod accept;
mod class;
mod datagram;
mod deadlines;
mod handshake;
mod mailbox;
mod memory;
mod others;
mod relays;
#[cfg(test)]
mod rig;
mod server;
mod sources;
#[cfg(test)]
mod stale_tokens;
mod stop;
mod trace;

pub use server::Server;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use slab::Slab;

use crate::budget::Budget;
use crate::config::Config;
use crate::connection::{CloseReason, Connection, Cx, Outcome, PRESSURE_READ, Ready, Scratch};
use crate::faults::{FaultTable, Faults};
use crate::fdlimit;
use crate::listener::ListenError;
use crate::metrics::Page;
use crate::per_ip::PerIpLimit;
use crate::poller::{Event, Poller, Token};
use crate::protocol::Handler;
use crate::seat::{HEARTBEAT_EVERY, Seat};
use crate::service::Endpoint;
use crate::shutdown::ShutdownHandle;
use crate::sockets::Sockets;
use crate::stats::Stats;
use crate::timer::{Clock, TimerKind, Timers};
use crate::token::{self, Generations, Named, Target};
use accept::Admission;
use class::{Class, Classes, HTTP_READ};
use handshake::Handshakes;
use memory::{EVICT_CHECK_INTERVAL, Parking};
use relays::Relays;
use sources::Sources;
use stop::Stop;
use trace::Trace;

/// Size of the loop's one read buffer, shared by all connections.
pub(crate) const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Events taken from the kernel per `wait`; more simply wait for the next.
///
/// Measured, not derived: 128 ran faster than 1,024 with 1,000 ping-pong
/// connections, likely because a smaller batch works on fewer sockets
/// between two waits (cache locality); extra `epoll_wait` calls stay rare,
/// one per 128 events at most. The figures and the command are in
/// docs/benchmarks.md ("What the evidence changed").
pub(crate) const EVENTS_CAPACITY: usize = 128;

const _: () = assert!(HTTP_READ <= PRESSURE_READ && HTTP_READ <= READ_BUFFER_SIZE);

/// The classes as the constants `Reactor::with_class` is compiled for.
const ECHO: usize = Class::Echo.index();
const HTTP: usize = Class::Http.index();
const DISCARD: usize = Class::Discard.index();
const CHARGEN: usize = Class::Chargen.index();
const FAULTS: usize = Class::Faults.index();

/// How the loop ended.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Final counters.
    pub stats: Stats,
    /// True when a second stop request cut the graceful shutdown short.
    pub forced: bool,
}

/// What the loop lends each connection it drives (see [`Cx`]).
#[derive(Debug)]
struct Lent {
    /// The one read buffer: every read lands here and is echoed from here.
    read_buf: Box<[u8]>,
    /// Scratch space for a protocol's answers, and the mailbox of letters
    /// between connections (delivered at the end of each tick,
    /// `mailbox.rs`).
    scratch: Scratch,
}

/// What the command line set that the loop consults as it runs.
#[derive(Debug)]
struct Settings {
    idle_timeout: Option<Duration>,
    /// `--metrics-idle-timeout`, checked by the request checks.
    http_idle_timeout: Duration,
    evict_after: Option<Duration>,
    shutdown_timeout: Duration,
    stats_interval: Option<Duration>,
    /// `--portable-reads`, lent to every turn ([`Cx`]).
    read_until_would_block: bool,
}

/// The server on backend `P`: sockets, timers and counters, driven by
/// [`Reactor::run`].
#[derive(Debug)]
pub(crate) struct Reactor<P: Poller> {
    poller: P,
    sources: Sources,
    conns: Slab<Connection>,
    generations: Generations,
    lent: Lent,
    /// Sources that stopped on their budget while still ready; driven next
    /// tick, and while non-empty the loop polls without sleeping.
    run_next: Vec<Token>,
    timers: Timers,
    clock: Clock,
    stats: Stats,
    /// Every byte held for clients, against `--max-buffered`.
    budget: Budget,
    /// Connections waiting for the budget, and its timers' state
    /// (`reactor/memory.rs`).
    parking: Parking,
    admission: Admission,
    stop: Stop,
    settings: Settings,
    /// Where the periodic counters go instead of the log, if anywhere.
    stats_sink: Option<StatsSink>,
    /// `--trace`: the tick being narrated (`reactor/trace.rs`).
    trace: Option<Box<Trace>>,
    /// What each class of connection speaks, its read size and budget
    /// profile, and how many are open (`class.rs`).
    classes: Classes,
    /// A worker's seat in its master's shared memory: the heartbeat the
    /// master watches, and the per-host counts (`seat.rs`).
    seat: Option<Seat>,
    /// Faults on demand, if any flag asked for them (`faults.rs`): then
    /// every echo connection is of the faults class.
    faults: Option<Box<FaultTable>>,
    /// Sockets waiting for their PROXY header (`--proxy-protocol`).
    handshakes: Handshakes,
    /// Clients relayed to `Config::upstream`, each with the connection
    /// the loop opened for it (`relays.rs`).
    relays: Relays,
}

/// A receiver of the periodic counters ([`Server::on_stats`]).
struct StatsSink(Box<dyn FnMut(&Stats) + Send>);

impl std::fmt::Debug for StatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsSink")
    }
}

impl<P: Poller> Reactor<P> {
    /// Opens the sockets and everything the loop needs; does not serve
    /// until [`Reactor::run`]. (`config.backend` is [`Server`]'s business;
    /// here the backend is `P`.)
    pub(crate) fn bind(
        config: &Config,
        sockets: Sockets,
        handler: Handler,
    ) -> Result<Reactor<P>, ListenError> {
        let setup = ListenError::Setup;
        let nofile = fdlimit::raise_nofile_limit().map_err(setup)?;
        let fd_budget = fdlimit::default_max_connections(nofile);
        let max_connections = config.max_connections.unwrap_or(fd_budget);
        if max_connections > fd_budget {
            warn!(
                "--max-connections {max_connections} exceeds the descriptor limit ({nofile}); \
                 connections past ~{fd_budget} will be shed"
            );
        }
        let faults = Faults::for_server(config, &handler).map_err(setup)?;
        relays::check_config(config, &handler).map_err(setup)?;
        let budget = Budget::new(
            config.max_buffered,
            READ_BUFFER_SIZE,
            handler.amplification(),
            handler.max_reservation(),
        );
        let classes = Classes::new(
            handler,
            &budget,
            READ_BUFFER_SIZE,
            max_connections,
            config.metrics_max_connections,
        );
        let mut poller = P::new().map_err(setup)?;
        let sources = Sources::adopt(sockets, config.udp_batch)?;
        sources.register(&mut poller).map_err(setup)?;
        let stop = Stop::open(config, &mut poller).map_err(setup)?;
        let now = Instant::now();
        let mut timers = Timers::new();
        if let Some(every) = config.stats_interval {
            timers.schedule(now + every, TimerKind::StatsReport);
        }
        if config.evict_after.is_some() {
            timers.schedule(now + EVICT_CHECK_INTERVAL, TimerKind::EvictCheck);
        }
        Ok(Reactor {
            poller,
            sources,
            conns: Slab::new(),
            generations: Generations::default(),
            lent: Lent {
                read_buf: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
                scratch: Scratch::default(),
            },
            run_next: Vec::new(),
            timers,
            clock: Clock::new(now),
            stats: Stats::default(),
            budget,
            parking: Parking::default(),
            admission: Admission::new(config.max_connections_per_ip, config.worker_slot),
            stop,
            settings: Settings {
                idle_timeout: config.idle_timeout,
                http_idle_timeout: config.metrics_idle_timeout,
                evict_after: config.evict_after,
                shutdown_timeout: config.shutdown_timeout,
                stats_interval: config.stats_interval,
                read_until_would_block: config.read_until_would_block,
            },
            stats_sink: None,
            trace: config.trace.then(Box::default),
            classes,
            seat: None,
            faults: faults.map(|f| Box::new(FaultTable::new(f))),
            handshakes: Handshakes::new(config.proxy_protocol),
            relays: Relays::new(config.upstream, config.connect_timeout),
        })
    }

    /// Makes this loop a worker in `seat`: it proves it is turning every
    /// [`HEARTBEAT_EVERY`] (a timer, so an idle loop wakes that often and
    /// a stopped or stuck one falls silent), and `--max-connections-per-ip`
    /// counts in the memory every worker shares.
    pub(crate) fn join(&mut self, seat: Seat) {
        if let Some(per_ip) = self.admission.per_ip.as_mut() {
            *per_ip = PerIpLimit::shared(per_ip.limit(), seat.clone());
        }
        seat.beat();
        self.seat = Some(seat);
        let at = self.clock.now + HEARTBEAT_EVERY;
        self.timers.schedule(at, TimerKind::Heartbeat);
    }

    /// Metrics connections answer from `page` instead of the loop's own
    /// counters.
    pub(crate) fn serve_page(&mut self, page: Arc<dyn Page + Sync>) {
        self.classes.serve_page(page, &self.budget);
    }

    /// Sends the periodic counters to `sink` instead of the log.
    pub(crate) fn on_stats(&mut self, sink: Box<dyn FnMut(&Stats) + Send>) {
        self.stats_sink = Some(StatsSink(sink));
    }

    /// Every socket's service, transport and address as bound (the
    /// kernel's port where port 0 was asked for).
    pub(crate) fn endpoints(&self) -> &[Endpoint] {
        &self.sources.endpoints
    }

    /// A handle that stops this reactor from any thread.
    pub(crate) fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.handle.clone()
    }

    /// Serves until shut down; returns the final counters.
    ///
    /// One tick: wait for events (without sleeping while the run-next queue
    /// holds anything), handle every reported event, then every source the
    /// previous tick queued, then due timers. **A connection gets at most
    /// one turn per tick**: an event for a connection already on the queue
    /// only adds its hints to the queued turn. Without that, a flooding
    /// client that stopped on its budget and also got a fresh event would
    /// take two turns to a light client's one, and the light client's wait
    /// is the sum of everyone's turns. Fresh events go first, the queued
    /// backlog after them.
    pub(crate) fn run(mut self) -> io::Result<Report> {
        let mut events = P::events(EVENTS_CAPACITY);
        // The run-next entries being processed this tick; swapped with
        // `run_next` so both vectors keep their capacity.
        let mut batch: Vec<Token> = Vec::new();
        self.notify_ready();
        while !self.finished() {
            // The clock read the timeout needs anyway also ends the busy
            // part of the tick (loop utilization, in the counters): no
            // extra read while the loop sleeps between ticks.
            let before_wait = Instant::now();
            let timeout = if self.run_next.is_empty() {
                self.timers.poll_timeout(before_wait)
            } else {
                Some(Duration::ZERO)
            };
            if let Some(trace) = self.trace.as_mut() {
                trace.before_wait(timeout, self.timers.next_kind());
            }
            if let Err(e) = self.poller.wait(&mut events, timeout) {
                // EINTR: a signal arrived; its pipe is now readable and the
                // next wait reports it. Anything else is a broken poller.
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            let woke = Instant::now();
            let busy = before_wait.saturating_duration_since(self.clock.now);
            self.stats.busy_ns += busy.as_nanos() as u64;
            self.stats.wait_ns += woke.saturating_duration_since(before_wait).as_nanos() as u64;
            self.clock.tick(woke);
            std::mem::swap(&mut batch, &mut self.run_next);
            if let Some(trace) = self.trace.as_mut() {
                let n = P::iter(&events).count();
                trace.after_wait(self.clock.now, n, batch.len());
                for event in P::iter(&events) {
                    trace.event(event.token, ready(event));
                }
            }
            let mut reported = 0;
            for event in P::iter(&events) {
                reported += 1;
                self.dispatch(event.token, ready(event));
            }
            self.stats.count_wait(reported);
            if !batch.is_empty()
                && let Some(trace) = self.trace.as_mut()
            {
                trace.queued_turns();
            }
            for token in batch.drain(..) {
                self.dispatch_queued(token);
            }
            self.fire_timers();
            let parked = self.parking.any();
            if parked && !self.budget.is_full() {
                self.release_starved(true);
            }
            // Letters between connections, after every turn of the tick:
            // one test per tick, none per echo.
            if !self.lent.scratch.mail.is_empty() {
                self.deliver_mail();
            }
            if let Some(trace) = self.trace.as_mut() {
                trace.end_tick();
            }
        }
        self.sync_gauges();
        if self.stats_sink.is_none() {
            info!("final stats: {}", self.stats);
        }
        Ok(Report {
            stats: self.stats,
            forced: self.stop.forced,
        })
    }

    fn finished(&self) -> bool {
        let stopping = self.stop.shutting_down || self.stop.retiring;
        // Metrics connections do not hold the end up: they are served
        // while others drain (`/healthz` says so), and closed with the loop.
        self.stop.forced
            || (stopping
                && self.conns.len() == self.classes.open_not_holding()
                && self.relays.len() == 0)
    }

    /// Routes one event.
    fn dispatch(&mut self, token: Token, ready: Ready) {
        match token::decode(token) {
            // The class is in the token: an echo turn's path has one bit
            // test and no other branch for the other classes.
            Target::Connection { key, generation } => match Class::of_generation(generation) {
                Class::Echo => self.drive(key, generation, ready),
                other => self.drive_other(other, key, generation, ready),
            },
            Target::Listener(i) => self.accept_from(i),
            Target::Udp(i) => self.on_udp_event(i),
            Target::Handshake(i) => self.read_header(i),
            Target::Relay(end) => self.on_relay_event(end / 2, end % 2, ready),
            Target::Waker => self.on_wake(),
            Target::Signals => self.on_signals(),
            Target::Unknown => {}
        }
    }

    /// Drives a source that the previous tick left on the run-next queue.
    fn dispatch_queued(&mut self, token: Token) {
        match token::decode(token) {
            Target::Connection { key, generation } => {
                match self.conns.get_mut(key) {
                    Some(conn) if conn.generation() == generation => conn.dequeue(),
                    // Closed since it was queued.
                    _ => return,
                }
                // The connection remembers it is ready; no hint needed.
                match Class::of_generation(generation) {
                    Class::Echo => self.drive(key, generation, Ready::default()),
                    other => self.drive_other(other, key, generation, Ready::default()),
                }
            }
            Target::Listener(i) => {
                if let Some(slot) = self.sources.listeners.get_mut(i) {
                    slot.queued = false;
                }
                self.accept_from(i);
            }
            Target::Udp(i) => {
                if let Some(slot) = self.sources.udp.get_mut(i) {
                    slot.queued = false;
                }
                self.serve_udp(i);
            }
            Target::Relay(end) => self.relay_queued(end / 2),
            _ => {}
        }
    }

    /// Lets one connection do its I/O, then acts on the outcome.
    #[inline(always)]
    fn drive(&mut self, key: usize, generation: u32, ready: Ready) {
        self.with_class::<ECHO>(key, |conn, cx| turn(conn, cx, generation, ready));
    }

    /// Runs `f` on the connection at `key`, whatever its class, with what
    /// the loop lends it.
    fn with_connection(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut Connection, &mut Cx<'_, P>) -> Option<Outcome>,
    ) {
        match self
            .conns
            .get(key)
            .map(|c| Class::of_generation(c.generation()))
        {
            Some(Class::Echo) => self.with_class::<ECHO>(key, f),
            Some(Class::Http) => self.with_class::<HTTP>(key, f),
            Some(Class::Discard) => self.with_class::<DISCARD>(key, f),
            Some(Class::Chargen) => self.with_class::<CHARGEN>(key, f),
            Some(Class::Faults) => self.with_class::<FAULTS>(key, f),
            None => {}
        }
    }

    /// Lends the connection at `key`, of class `C`, what it borrows from
    /// the loop (the one place a [`Cx`] is built): its class's handler, a
    /// read buffer of its class's size, the budget judging reads by its
    /// class's profile. Runs `f` on it, and acts on the outcome, if `f`
    /// had one. One slab look-up per turn. `C` is a constant, so the echo
    /// class's copy of this function has none of the other classes' steps.
    #[inline(always)]
    fn with_class<const C: usize>(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut Connection, &mut Cx<'_, P>) -> Option<Outcome>,
    ) {
        if C == HTTP {
            // Its page: the counters as of now.
            self.sync_gauges();
            let draining = self.draining();
            self.classes.page.refresh(&self.stats, draining);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let token = token::connection(key, conn.generation());
        let class = self.classes.at(C);
        let echo_profile = (C != ECHO).then(|| self.budget.swap_profile(class.profile));
        let buf = if C == ECHO {
            &mut self.lent.read_buf[..]
        } else {
            &mut self.lent.read_buf[..class.read_size]
        };
        let mut cx = Cx {
            token,
            poller: &mut self.poller,
            buf,
            stats: &mut self.stats,
            clock: &self.clock,
            handler: &mut class.handler,
            scratch: &mut self.lent.scratch,
            timers: &mut self.timers,
            budget: &mut self.budget,
            read_until_would_block: C == ECHO && self.settings.read_until_would_block,
        };
        let traced = self.trace.is_some();
        let before = traced.then(|| (conn.look(), cx.stats.bytes_in, cx.stats.bytes_out));
        let outcome = f(conn, &mut cx);
        if let Some(profile) = echo_profile {
            self.budget.swap_profile(profile);
        }
        if C == HTTP {
            self.stats.http_requests = self.classes.page.requests();
        }
        // No outcome: no turn (an event for a connection whose turn is
        // queued only adds its hints).
        if let (Some((look, bytes_in, bytes_out)), Some(trace), Some(outcome)) =
            (before, self.trace.as_mut(), outcome.as_ref())
        {
            let moved = (
                self.stats.bytes_in - bytes_in,
                self.stats.bytes_out - bytes_out,
            );
            trace.turn(token, &look, &conn.look(), moved, outcome);
        }
        if let Some(outcome) = outcome {
            self.settle(key, token, outcome);
        }
    }

    #[inline]
    fn settle(&mut self, key: usize, token: Token, outcome: Outcome) {
        match outcome {
            Outcome::Keep => {}
            Outcome::Requeue => {
                if self.conns[key].enqueue() {
                    self.run_next.push(token);
                }
            }
            Outcome::Starved { retry } => self.park(key, token, retry),
            Outcome::Close(reason) => self.close(key, reason),
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let mut conn = self.conns.remove(key);
        let token = token::connection(key, conn.generation());
        let class = Class::of_generation(token::generation_of(token));
        let handler = &mut self.classes[class].handler;
        conn.hang_up(token, handler, &mut self.lent.scratch.mail, &mut self.stats);
        conn.deregister(&mut self.poller);
        self.budget.settle(conn.held(), 0);
        drop(conn);
        if let Some(state) = self.faults.as_mut().and_then(|t| t.remove(key)) {
            self.budget.settle(state.held, 0);
        }
        if let Some(per_ip) = self.admission.per_ip.as_mut() {
            per_ip.release(key);
        }
        self.stats.closed += 1;
        self.stats.active = self.conns.len() as u64;
        self.classes[class].open -= 1;
        if class == Class::Http {
            self.stats.http_active = self.classes[class].open as u64;
        }
        self.compact_timers();
        match reason {
            CloseReason::TimedOut => self.stats.timed_out += 1,
            CloseReason::LingerTimeout => self.stats.linger_timeouts += 1,
            CloseReason::Evicted => self.stats.evicted += 1,
            CloseReason::MailCutOff => self.stats.mail_cutoffs += 1,
            _ => {}
        }
        debug!("{}: closed ({reason})", Named(token));
    }
}

/// One connection's turn for an event (or its queued turn), unless the
/// event was for an earlier connection with this slab key, or the turn is
/// already queued this tick.
#[inline(always)]
fn turn<P: Poller>(
    conn: &mut Connection,
    cx: &mut Cx<'_, P>,
    generation: u32,
    ready: Ready,
) -> Option<Outcome> {
    if conn.generation() != generation {
        // Closed, and an event for an earlier connection that had this
        // slab key.
        return None;
    }
    if conn.is_queued() {
        // One turn per tick: its queued turn comes later in this one.
        conn.hold(ready);
        return None;
    }
    Some(conn.drive(ready, cx))
}

/// An event as the connection rules read it. Errors and hang-ups are hints
/// too: they make the next read or write, which reports what actually
/// happened.
#[inline]
fn ready(event: Event) -> Ready {
    Ready {
        readable: event.readable || event.error,
        writable: event.writable || event.write_closed || event.error,
        read_closed: event.read_closed,
        urgent: event.priority,
    }
}
