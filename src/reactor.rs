//! The event loop: one thread, one `mio::Poll`, every socket.
//!
//! This is the select/poll/epoll server of seeds 9 and 10, grown up. Each
//! turn of the loop (a *tick*):
//!
//! 1. sleeps in `poll` until something is ready, or until the nearest timer
//!    deadline, or not at all while the run-next queue holds work;
//! 2. routes each event by its token to a listener (accept) or a connection
//!    (read, echo, write), which does the I/O itself (`connection.rs`);
//! 3. drives the connections and listeners that the previous tick left on
//!    the run-next queue because they spent their budget while still ready;
//! 4. fires due timers: idle checks, stats, accept retries, shutdown deadline.
//!
//! The loop only routes readiness; it never touches a connection's bytes.
//!
//! # Accepting
//!
//! A listener gets [`ACCEPT_BUDGET`] accepts per tick, then goes on the
//! run-next queue like a connection would: an accept storm cannot stall the
//! clients already connected. Connections past `--max-connections` are
//! accepted and closed at once with a one-line notice, so they neither wait
//! in the backlog nor disturb anyone. Descriptor exhaustion is handled with
//! a spare descriptor (`fdlimit.rs`), or, without one, by pausing the
//! listener and retrying from a timer.
//!
//! # Shutdown
//!
//! The first stop request (signal or [`ShutdownHandle`]) closes the
//! listeners, so new connections are refused by the kernel, and moves every
//! connection to draining: no new input, pending output flushed, then FIN,
//! then a lingering read until the client closes. The loop ends when no
//! connection is left or at the shutdown deadline, which closes the rest.
//! A second request ends the loop at once.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::config::Config;
use crate::connection::{CloseReason, Connection, Cx, Outcome, Ready};
use crate::fdlimit::{self, SpareFd};
use crate::listener::{self, ListenError};
use crate::shutdown::{ShutdownHandle, SignalSource};
use crate::stats::Stats;
use crate::timer::{TimerKind, Timers};
use crate::token::{self, Generations, Target};

/// Size of the loop's one read buffer, shared by all connections.
pub const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Accepts per listener per tick before other sockets get their turn.
pub const ACCEPT_BUDGET: usize = 64;
/// Events taken from the kernel per `poll`; more simply wait for the next.
pub const EVENTS_CAPACITY: usize = 1024;
/// How long a listener rests after an accept error it cannot shed.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Repeated warnings (descriptor exhaustion, connection limit) are logged at
/// most this often.
pub const WARN_INTERVAL: Duration = Duration::from_secs(1);
/// What a client turned away by `--max-connections` reads before EOF.
pub const REJECT_NOTICE: &[u8] = b"ERR too many connections\n";

/// How the loop ended.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Final counters.
    pub stats: Stats,
    /// True when a second stop request cut the graceful shutdown short.
    pub forced: bool,
}

/// A listening socket and its accept state.
struct ListenerSlot {
    /// `None` once closed for shutdown.
    socket: Option<TcpListener>,
    /// Resting after an accept error; a timer will retry.
    paused: bool,
    /// On the run-next queue already.
    queued: bool,
}

/// The server: sockets, timers and counters, driven by [`Reactor::run`].
pub struct Reactor {
    poll: Poll,
    listeners: Vec<ListenerSlot>,
    local_addrs: Vec<SocketAddr>,
    conns: Slab<Connection>,
    generations: Generations,
    /// The one read buffer (see `Cx::buf`).
    read_buf: Box<[u8]>,
    /// Sources that stopped on their budget while still ready; driven next
    /// tick, and while non-empty the loop polls without sleeping.
    run_next: Vec<Token>,
    timers: Timers,
    stats: Stats,
    spare: SpareFd,
    shutdown: ShutdownHandle,
    signals: Option<SignalSource>,
    /// Stop requests seen so far (signals plus handle).
    stop_requests: usize,
    handle_requests_seen: usize,
    shutting_down: bool,
    forced: bool,
    max_connections: usize,
    idle_timeout: Option<Duration>,
    shutdown_timeout: Duration,
    stats_interval: Option<Duration>,
    last_warning: Option<Instant>,
    /// The time of the current tick, read once after each `poll`.
    now: Instant,
}

impl Reactor {
    /// Opens the listeners and everything the loop needs; does not serve
    /// until [`Reactor::run`].
    pub fn bind(config: &Config) -> Result<Reactor, ListenError> {
        let nofile = fdlimit::raise_nofile_limit().map_err(ListenError::Setup)?;
        let fd_budget = fdlimit::default_max_connections(nofile);
        let max_connections = match config.max_connections {
            Some(n) if n > fd_budget => {
                warn!(
                    "--max-connections {n} exceeds the descriptor limit ({nofile}); \
                     connections past ~{fd_budget} will be shed"
                );
                n
            }
            Some(n) => n,
            None => fd_budget,
        };

        let poll = Poll::new().map_err(ListenError::Setup)?;
        let mut sockets = listener::open_all(&config.listen, config.backlog)?;
        let mut listeners = Vec::with_capacity(sockets.len());
        let mut local_addrs = Vec::with_capacity(sockets.len());
        for (i, mut socket) in sockets.drain(..).enumerate() {
            poll.registry()
                .register(&mut socket, token::listener(i), Interest::READABLE)
                .map_err(ListenError::Setup)?;
            local_addrs.push(socket.local_addr().map_err(ListenError::Setup)?);
            listeners.push(ListenerSlot {
                socket: Some(socket),
                paused: false,
                queued: false,
            });
        }
        let shutdown =
            ShutdownHandle::new(poll.registry(), token::WAKER).map_err(ListenError::Setup)?;
        let signals = if config.handle_signals {
            Some(
                SignalSource::register(poll.registry(), token::SIGNALS)
                    .map_err(ListenError::Setup)?,
            )
        } else {
            None
        };
        let now = Instant::now();
        let mut timers = Timers::new();
        if let Some(every) = config.stats_interval {
            timers.schedule(now + every, TimerKind::StatsReport);
        }
        Ok(Reactor {
            poll,
            listeners,
            local_addrs,
            conns: Slab::new(),
            generations: Generations::default(),
            read_buf: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            run_next: Vec::new(),
            timers,
            stats: Stats::default(),
            spare: SpareFd::open(),
            shutdown,
            signals,
            stop_requests: 0,
            handle_requests_seen: 0,
            shutting_down: false,
            forced: false,
            max_connections,
            idle_timeout: config.idle_timeout,
            shutdown_timeout: config.shutdown_timeout,
            stats_interval: config.stats_interval,
            last_warning: None,
            now,
        })
    }

    /// The addresses actually bound (with the kernel's port for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The effective connection limit.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// A handle that stops this reactor from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until shut down; returns the final counters.
    pub fn run(mut self) -> io::Result<Report> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        // The run-next entries being processed this tick; swapped with
        // `run_next` so both vectors keep their capacity.
        let mut batch: Vec<Token> = Vec::new();
        while !self.finished() {
            let timeout = if self.run_next.is_empty() {
                self.timers.poll_timeout(Instant::now())
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                // EINTR: a signal arrived; its pipe is now readable and the
                // next poll reports it. Anything else is a broken poller.
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = Instant::now();
            std::mem::swap(&mut batch, &mut self.run_next);
            for event in events.iter() {
                // Errors and hang-ups are hints too: the next read or write
                // reports what actually happened.
                let ready = Ready {
                    readable: event.is_readable() || event.is_error(),
                    writable: event.is_writable() || event.is_write_closed() || event.is_error(),
                    read_closed: event.is_read_closed(),
                };
                self.dispatch(event.token(), ready);
            }
            for token in batch.drain(..) {
                self.dispatch_queued(token);
            }
            self.fire_timers();
        }
        info!("final stats: {}", self.stats);
        Ok(Report {
            stats: self.stats,
            forced: self.forced,
        })
    }

    fn finished(&self) -> bool {
        self.forced || (self.shutting_down && self.conns.is_empty())
    }

    /// Routes one event.
    fn dispatch(&mut self, token: Token, ready: Ready) {
        match token::decode(token) {
            Target::Connection { key, generation } => {
                self.drive(key, generation, ready);
            }
            Target::Listener(i) => self.accept_from(i),
            Target::Waker => {
                let total = self.shutdown.requests();
                let new = total - self.handle_requests_seen;
                self.handle_requests_seen = total;
                self.stop_requested(new);
            }
            Target::Signals => {
                let new = self.signals.as_mut().map_or(0, SignalSource::take_count);
                self.stop_requested(new);
            }
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
                self.drive(key, generation, Ready::default());
            }
            Target::Listener(i) => {
                if let Some(slot) = self.listeners.get_mut(i) {
                    slot.queued = false;
                }
                self.accept_from(i);
            }
            _ => {}
        }
    }

    /// Lets one connection do its I/O, then acts on the outcome.
    fn drive(&mut self, key: usize, generation: u32, ready: Ready) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.generation() != generation {
            // An event for an earlier connection that had this slab key.
            return;
        }
        let token = token::connection(key, generation);
        let mut cx = Cx {
            registry: self.poll.registry(),
            buf: &mut self.read_buf,
            stats: &mut self.stats,
            now: self.now,
        };
        let outcome = conn.drive(token, ready, &mut cx);
        self.settle(key, token, outcome);
    }

    fn settle(&mut self, key: usize, token: Token, outcome: Outcome) {
        match outcome {
            Outcome::Keep => {}
            Outcome::Requeue => {
                if self.conns[key].enqueue() {
                    self.run_next.push(token);
                }
            }
            Outcome::Close(reason) => self.close(key, reason),
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason) {
        let mut conn = self.conns.remove(key);
        conn.deregister(self.poll.registry());
        drop(conn);
        self.stats.closed += 1;
        self.stats.active = self.conns.len() as u64;
        match reason {
            CloseReason::TimedOut => self.stats.timed_out += 1,
            CloseReason::Error(ref e) => debug!("connection {key} closed: {e}"),
            _ => debug!("connection {key} closed: {reason:?}"),
        }
    }

    // ----- accepting ------------------------------------------------------

    /// Accepts from listener `i` until it is drained or its budget is spent.
    fn accept_from(&mut self, i: usize) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(slot) = self.listeners.get(i) else {
                return;
            };
            let Some(socket) = slot.socket.as_ref() else {
                return;
            };
            if slot.paused {
                return;
            }
            match socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if fdlimit::is_exhaustion(&e) => {
                    self.stats.accept_errors += 1;
                    self.warn_rate_limited(format_args!(
                        "accept: {e}; out of file descriptors, shedding new connections"
                    ));
                    match self.shed_one(i) {
                        Shed::One => {}
                        // EMFILE comes before the queue is looked at, so
                        // it also means "nothing pending" at times.
                        Shed::NothingPending => return,
                        Shed::Failed => {
                            self.pause_listener(i);
                            return;
                        }
                    }
                }
                Err(e) if is_per_connection(&e) => {
                    // The handshake was aborted before we got to it.
                    self.stats.accept_errors += 1;
                    debug!("accept: {e}");
                }
                Err(e) => {
                    // ENOBUFS, ENOMEM, ...: the kernel is short of memory.
                    // Retrying at once would spin; rest and come back.
                    self.stats.accept_errors += 1;
                    self.warn_rate_limited(format_args!("accept: {e}; retrying shortly"));
                    self.pause_listener(i);
                    return;
                }
            }
        }
        // Budget spent while connections may still be pending: no new edge
        // will say so, so come back next tick (after everyone else).
        if let Some(slot) = self.listeners.get_mut(i) {
            if !slot.queued {
                slot.queued = true;
                self.run_next.push(token::listener(i));
            }
        }
    }

    /// The spare-descriptor trick: free one descriptor, accept the pending
    /// connection, close it, take the spare back.
    fn shed_one(&mut self, i: usize) -> Shed {
        let Some(socket) = self.listeners[i].socket.as_ref() else {
            return Shed::Failed;
        };
        if !self.spare.release() {
            return Shed::Failed;
        }
        let result = match socket.accept() {
            Ok((stream, peer)) => {
                debug!("shed {peer}: no descriptors left");
                drop(stream);
                self.stats.rejected += 1;
                Shed::One
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Shed::NothingPending,
            Err(_) => Shed::Failed,
        };
        self.spare.restore();
        result
    }

    fn pause_listener(&mut self, i: usize) {
        self.listeners[i].paused = true;
        self.timers
            .schedule(self.now + ACCEPT_RETRY_DELAY, TimerKind::AcceptRetry(i));
    }

    /// Takes in an accepted connection, or turns it away at the limit.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        if self.conns.len() >= self.max_connections {
            self.stats.rejected += 1;
            // Best effort, one syscall: the socket is fresh, so its send
            // buffer has room; if not, the client just sees EOF.
            let _ = (&stream).write(REJECT_NOTICE);
            let limit = self.max_connections;
            self.warn_rate_limited(format_args!(
                "connection limit ({limit}) reached, turning clients away"
            ));
            return;
        }
        // Echo replies are small and latency matters: don't let Nagle hold
        // them back waiting for the client's ACK.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: set_nodelay: {e}");
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let generation = self.generations.next_generation();
        let token = token::connection(key, generation);
        match Connection::register(stream, token, generation, self.poll.registry(), self.now) {
            Ok(conn) => {
                entry.insert(conn);
            }
            Err(e) => {
                warn!("{peer}: cannot register connection: {e}");
                return;
            }
        }
        self.stats.accepted += 1;
        self.stats.active = self.conns.len() as u64;
        debug!("connection {key} from {peer}");
        if let Some(idle) = self.idle_timeout {
            self.timers
                .schedule(self.now + idle, TimerKind::IdleCheck(token));
        }
    }

    // ----- timers ---------------------------------------------------------

    fn fire_timers(&mut self) {
        while let Some(kind) = self.timers.pop_due(self.now) {
            match kind {
                TimerKind::IdleCheck(token) => self.check_idle(token),
                TimerKind::StatsReport => {
                    info!("stats: {}", self.stats);
                    if let Some(every) = self.stats_interval {
                        self.timers
                            .schedule(self.now + every, TimerKind::StatsReport);
                    }
                }
                TimerKind::AcceptRetry(i) => {
                    if let Some(slot) = self.listeners.get_mut(i) {
                        slot.paused = false;
                    }
                    // The edge that announced the waiting connections was
                    // consumed long ago: accept now, not on a new event.
                    self.accept_from(i);
                }
                TimerKind::ShutdownDeadline => {
                    let left: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
                    if !left.is_empty() {
                        info!("shutdown deadline: closing {} connections", left.len());
                    }
                    for key in left {
                        self.close(key, CloseReason::ShutdownDeadline);
                    }
                }
            }
        }
    }

    /// Closes the connection if it has been idle for the whole timeout, else
    /// re-arms its check for when it would be (lazy re-arming, `timer.rs`).
    fn check_idle(&mut self, token: Token) {
        let (Target::Connection { key, generation }, Some(idle)) =
            (token::decode(token), self.idle_timeout)
        else {
            return;
        };
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if conn.generation() != generation {
            return;
        }
        let deadline = conn.last_active() + idle;
        if deadline <= self.now {
            self.close(key, CloseReason::TimedOut);
        } else {
            self.timers.schedule(deadline, TimerKind::IdleCheck(token));
        }
    }

    // ----- shutdown -------------------------------------------------------

    fn stop_requested(&mut self, new: usize) {
        if new == 0 {
            return;
        }
        self.stop_requests += new;
        if self.stop_requests >= 2 {
            warn!("second stop request: exiting now");
            self.forced = true;
        } else if !self.shutting_down {
            self.begin_shutdown();
        }
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        info!(
            "shutting down: listeners closed, flushing {} connections (up to {:?})",
            self.conns.len(),
            self.shutdown_timeout
        );
        for slot in &mut self.listeners {
            if let Some(mut socket) = slot.socket.take() {
                let _ = self.poll.registry().deregister(&mut socket);
            }
        }
        self.timers.schedule(
            self.now + self.shutdown_timeout,
            TimerKind::ShutdownDeadline,
        );
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            let token = token::connection(key, conn.generation());
            let mut cx = Cx {
                registry: self.poll.registry(),
                buf: &mut self.read_buf,
                stats: &mut self.stats,
                now: self.now,
            };
            let outcome = conn.begin_shutdown(token, &mut cx);
            self.settle(key, token, outcome);
        }
    }

    fn warn_rate_limited(&mut self, msg: std::fmt::Arguments<'_>) {
        let due = self
            .last_warning
            .is_none_or(|last| self.now.duration_since(last) >= WARN_INTERVAL);
        if due {
            warn!("{msg}");
            self.last_warning = Some(self.now);
        }
    }
}

/// What [`Reactor::shed_one`] managed.
enum Shed {
    /// A pending connection was accepted and closed.
    One,
    /// The backlog was empty after all: the listener is drained.
    NothingPending,
    /// No spare, or accepting failed anyway: pause and retry later.
    Failed,
}

/// Accept errors that concern only the connection being accepted.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ECONNABORTED) | Some(libc::EPROTO) | Some(libc::EPERM)
    )
}
