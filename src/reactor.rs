//! The event loop: one thread, one multiplexer, every socket.
//!
//! This is the select/poll/epoll server of seeds 9 and 10, grown up, and
//! it still runs on any of the three: [`Reactor`] is generic over the
//! [`Poller`] (`poller/`), and [`Server`] picks one for `--backend`. Each
//! turn of the loop (a *tick*):
//!
//! 1. sleeps in the poller's `wait` until something is ready, or until the nearest timer
//!    deadline, or not at all while the run-next queue holds work;
//! 2. routes each event by its token to a listener (accept) or a connection
//!    (read, echo, write), which does the I/O itself (`connection.rs`);
//! 3. drives the connections and listeners that the previous tick left on
//!    the run-next queue because they spent their budget while still ready;
//! 4. fires due timers: idle checks, stats, accept retries, shutdown deadline.
//!
//! The loop only routes readiness; it never touches a connection's bytes.
//! What a connection answers is its protocol's business (`protocol/`); the
//! loop only lends every connection the same read buffer and the same
//! scratch vector for answers, so neither is per connection.
//!
//! # Services
//!
//! Besides the echo listeners (`--listen`, speaking `--mode`), the loop may
//! hold UDP echo sockets (`--udp`) and daytime services (`--daytime`: a TCP
//! listener plus a UDP socket on the same port, seed 1's "TCP and UDP may
//! share a port number"). They are just more sources in the same poller:
//! a daytime TCP connection is an ordinary connection that is greeted with
//! the time and then drained like one at shutdown; UDP sockets are served
//! in place (`udp.rs`).
//!
//! # Accepting
//!
//! A listener gets [`ACCEPT_BUDGET`] accepts per tick, then goes on the
//! run-next queue like a connection would: an accept storm cannot stall the
//! clients already connected. Connections past `--max-connections` are
//! accepted and closed at once with a one-line notice, so they neither wait
//! in the backlog nor disturb anyone. Descriptor exhaustion is handled with
//! a spare descriptor (`fdlimit.rs`), or, without one, by pausing the
//! listener and retrying from a timer. A connection whose descriptor the
//! backend cannot watch (select: at or above `FD_SETSIZE`) is closed at
//! once too, counted as `unwatchable`, and logged once.
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
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use slab::Slab;

use crate::addr::ListenAddr;
use crate::config::Config;
use crate::connection::{CloseReason, Connection, Cx, Outcome, Ready};
use crate::daytime;
use crate::fdlimit::{self, SpareFd};
use crate::listener::{self, ListenError, ListenOptions, Service};
use crate::per_ip::PerIpLimit;
use crate::poller::{self, Backend, Epoll, Event, Interest, Poll, Poller, Select, Token};
use crate::protocol::Mode;
use crate::shutdown::{ShutdownHandle, WakePipe};
use crate::signals::{Request, Signals};
use crate::stats::Stats;
use crate::timer::{Stamp, TimerKind, Timers};
use crate::token::{self, Generations, Target};
use crate::udp::{self, LoopGuard, Turn};

/// Size of the loop's one read buffer, shared by all connections.
pub const READ_BUFFER_SIZE: usize = 64 * 1024;
/// Accepts per listener per tick before other sockets get their turn.
pub const ACCEPT_BUDGET: usize = 64;
/// Events taken from the kernel per `wait`; more simply wait for the next.
///
/// Measured, not derived: with 1,000 ping-pong connections (64 B) a batch
/// of 1,024 let one `epoll_wait` return ~990 events, and the reactor ran
/// at 116,188 req/s and 8.44 us of server CPU per echo; with 128 it ran at
/// 125,705 req/s and 7.94 us (`scripts/compare_tokio.sh 1000 64 4 3`,
/// 2-core VM, 2026-11-22; tokio was seen taking ~61 events per call
/// there, see docs/benchmarks.md). A
/// likely reason is cache locality: a smaller batch works on fewer sockets
/// between two waits. Extra `epoll_wait` calls stay rare (one per 128
/// events at most).
pub const EVENTS_CAPACITY: usize = 128;
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
    /// What its connections get.
    service: Service,
    /// Resting after an accept error; a timer will retry.
    paused: bool,
    /// On the run-next queue already.
    queued: bool,
}

/// A UDP socket and what it answers.
struct UdpSlot {
    /// `None` once closed for shutdown.
    socket: Option<UdpSocket>,
    service: Service,
    /// On the run-next queue already.
    queued: bool,
}

/// The server on backend `P`: sockets, timers and counters, driven by
/// [`Reactor::run`].
pub struct Reactor<P: Poller> {
    poller: P,
    /// Echo listeners first, then daytime listeners.
    listeners: Vec<ListenerSlot>,
    local_addrs: Vec<SocketAddr>,
    /// UDP echo sockets first, then daytime ones.
    udp: Vec<UdpSlot>,
    udp_addrs: Vec<SocketAddr>,
    daytime_addrs: Vec<SocketAddr>,
    conns: Slab<Connection>,
    /// What echo connections speak.
    mode: Mode,
    /// Scratch space for a protocol's answers, shared like `read_buf`
    /// (see `Cx::answers`); empty between uses.
    answers: Vec<u8>,
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
    /// The read end of the `shutdown` handle's pipe (token `WAKER`).
    wake: WakePipe,
    signals: Option<Signals>,
    /// Which datagrams go unanswered because answering could loop.
    udp_guard: LoopGuard,
    /// `--max-connections-per-ip`, when set.
    per_ip: Option<PerIpLimit>,
    /// Whether the first connection the backend could not watch was
    /// logged (it is logged once; the `unwatchable` counter keeps count).
    unwatchable_logged: bool,
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
    /// `now` as a connection [`Stamp`], computed once per tick rather than
    /// once per connection driven (a 64-bit subtraction of two timespecs
    /// costs ~30 instructions, as much as a tenth of an echo's own code).
    stamp: Stamp,
    /// When the loop was created: the origin of connection [`Stamp`]s.
    epoch: Instant,
}

impl<P: Poller> Reactor<P> {
    /// Opens the listeners and everything the loop needs; does not serve
    /// until [`Reactor::run`]. (`config.backend` is [`Server`]'s business;
    /// here the backend is `P`.)
    pub fn bind(config: &Config) -> Result<Reactor<P>, ListenError> {
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

        let mut poller = P::new().map_err(ListenError::Setup)?;
        let setup = ListenError::Setup;
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        let options = ListenOptions {
            backlog: config.backlog,
            keepalive: config.keepalive,
        };
        for socket in listener::open_all(&config.listen, options)? {
            local_addrs.push(socket.local_addr().map_err(setup)?);
            listeners.push(ListenerSlot::new(socket, Service::Echo));
        }
        let mut udp = Vec::new();
        let mut udp_addrs = Vec::new();
        for addr in resolve_all(&config.udp)? {
            let socket = udp::open(addr).map_err(|source| ListenError::Bind { addr, source })?;
            udp_addrs.push(socket.local_addr().map_err(setup)?);
            udp.push(UdpSlot::new(socket, Service::Echo));
        }
        let mut daytime_addrs = Vec::new();
        for addr in resolve_all(&config.daytime)? {
            let (tcp, datagrams, bound) =
                open_daytime(addr, options).map_err(|source| ListenError::Bind { addr, source })?;
            daytime_addrs.push(bound);
            listeners.push(ListenerSlot::new(tcp, Service::Daytime));
            udp.push(UdpSlot::new(datagrams, Service::Daytime));
        }
        if listeners.len() > token::MAX_LISTENERS {
            return Err(setup(io::Error::other("too many listeners")));
        }
        // Registered first, so that their descriptors are the lowest the
        // loop watches (select can only watch those below FD_SETSIZE).
        for (i, slot) in listeners.iter().enumerate() {
            if let Some(socket) = slot.socket.as_ref() {
                poller
                    .register(socket.as_raw_fd(), token::listener(i), Interest::READABLE)
                    .map_err(setup)?;
            }
        }
        for (i, slot) in udp.iter().enumerate() {
            if let Some(socket) = slot.socket.as_ref() {
                poller
                    .register(socket.as_raw_fd(), token::udp(i), Interest::READABLE)
                    .map_err(setup)?;
            }
        }
        let (shutdown, wake) = ShutdownHandle::new().map_err(setup)?;
        poller
            .register(wake.fd(), token::WAKER, Interest::READABLE)
            .map_err(setup)?;
        let signals = if config.handle_signals {
            let signals = Signals::install().map_err(setup)?;
            poller
                .register(signals.fd(), token::SIGNALS, Interest::READABLE)
                .map_err(setup)?;
            Some(signals)
        } else {
            None
        };
        let own_udp = udp_addrs.iter().chain(&daytime_addrs).copied().collect();
        let now = Instant::now();
        let mut timers = Timers::new();
        if let Some(every) = config.stats_interval {
            timers.schedule(now + every, TimerKind::StatsReport);
        }
        Ok(Reactor {
            poller,
            listeners,
            local_addrs,
            udp,
            udp_addrs,
            daytime_addrs,
            conns: Slab::new(),
            mode: config.mode.clone(),
            answers: Vec::new(),
            generations: Generations::default(),
            read_buf: vec![0; READ_BUFFER_SIZE].into_boxed_slice(),
            run_next: Vec::new(),
            timers,
            stats: Stats::default(),
            spare: SpareFd::open(),
            shutdown,
            wake,
            signals,
            udp_guard: LoopGuard::new(own_udp),
            per_ip: config.max_connections_per_ip.map(PerIpLimit::new),
            unwatchable_logged: false,
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
            stamp: Stamp::default(),
            epoch: now,
        })
    }

    /// The echo listeners' addresses as bound (with the kernel's port for
    /// port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The UDP echo sockets' addresses as bound.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The daytime services' addresses as bound (TCP and UDP share each).
    pub fn daytime_addrs(&self) -> &[SocketAddr] {
        &self.daytime_addrs
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
    pub fn run(mut self) -> io::Result<Report> {
        let mut events = P::events(EVENTS_CAPACITY);
        // The run-next entries being processed this tick; swapped with
        // `run_next` so both vectors keep their capacity.
        let mut batch: Vec<Token> = Vec::new();
        while !self.finished() {
            let timeout = if self.run_next.is_empty() {
                self.timers.poll_timeout(Instant::now())
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poller.wait(&mut events, timeout) {
                // EINTR: a signal arrived; its pipe is now readable and the
                // next poll reports it. Anything else is a broken poller.
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = Instant::now();
            self.stamp = Stamp::new(self.epoch, self.now);
            std::mem::swap(&mut batch, &mut self.run_next);
            for event in P::iter(&events) {
                self.dispatch(event.token, ready(event));
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
            Target::Udp(i) => self.serve_udp(i),
            Target::Waker => {
                self.wake.drain();
                let total = self.shutdown.requests();
                let new = total - self.handle_requests_seen;
                self.handle_requests_seen = total;
                self.stop_requested(new);
            }
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
                self.drive(key, generation, Ready::default());
            }
            Target::Listener(i) => {
                if let Some(slot) = self.listeners.get_mut(i) {
                    slot.queued = false;
                }
                self.accept_from(i);
            }
            Target::Udp(i) => {
                if let Some(slot) = self.udp.get_mut(i) {
                    slot.queued = false;
                }
                self.serve_udp(i);
            }
            _ => {}
        }
    }

    /// Answers what waits on UDP socket `i`, up to its budget.
    fn serve_udp(&mut self, i: usize) {
        let Some(slot) = self.udp.get_mut(i) else {
            return;
        };
        let Some(socket) = slot.socket.as_ref() else {
            return;
        };
        let turn = udp::serve(
            socket,
            slot.service,
            &self.udp_guard,
            &mut self.read_buf,
            &mut self.stats,
        );
        if turn == Turn::Requeue && !slot.queued {
            slot.queued = true;
            self.run_next.push(token::udp(i));
        }
    }

    /// Lets one connection do its I/O, then acts on the outcome.
    fn drive(&mut self, key: usize, generation: u32, ready: Ready) {
        match self.conns.get_mut(key) {
            // One turn per tick: its queued turn comes later in this one.
            Some(conn) if conn.generation() == generation && conn.is_queued() => {
                conn.hold(ready);
                return;
            }
            Some(conn) if conn.generation() == generation => {}
            // Closed, or an event for an earlier connection that had this
            // slab key.
            _ => return,
        }
        self.with_connection(key, |conn, token, cx| conn.drive(token, ready, cx));
    }

    /// Lends the connection at `key` what it borrows from the loop (the
    /// one place a [`Cx`] is built), runs `f` on it, and acts on the
    /// outcome.
    fn with_connection(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut Connection, Token, &mut Cx<'_, P>) -> Outcome,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let token = token::connection(key, conn.generation());
        let mut cx = Cx {
            poller: &mut self.poller,
            buf: &mut self.read_buf,
            stats: &mut self.stats,
            now: self.now,
            stamp: self.stamp,
            mode: &self.mode,
            answers: &mut self.answers,
            timers: &mut self.timers,
        };
        let outcome = f(conn, token, &mut cx);
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
        conn.deregister(&mut self.poller);
        drop(conn);
        if let Some(per_ip) = self.per_ip.as_mut() {
            per_ip.release(key);
        }
        self.stats.closed += 1;
        self.stats.active = self.conns.len() as u64;
        match reason {
            CloseReason::TimedOut => self.stats.timed_out += 1,
            CloseReason::LingerTimeout => self.stats.linger_timeouts += 1,
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
            let service = slot.service;
            match socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, service),
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
        if let Some(slot) = self.listeners.get_mut(i)
            && !slot.queued
        {
            slot.queued = true;
            self.run_next.push(token::listener(i));
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
        // Level-triggered trap: on poll and select a listener with pending
        // connections stays readable, and a paused one would be reported
        // on every `wait` for nothing, spinning the loop until the retry.
        // So a resting listener is not watched at all. (On epoll it would
        // not matter, edges do not repeat, but the loop is the same for
        // all backends; two `epoll_ctl` per pause cost nothing on this
        // rare path.)
        if let Some(socket) = self.listeners[i].socket.as_ref() {
            let _ = self.poller.deregister(socket.as_raw_fd());
        }
        self.timers
            .schedule(self.now + ACCEPT_RETRY_DELAY, TimerKind::AcceptRetry(i));
    }

    /// Takes in an accepted connection, or turns it away at the limit.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, service: Service) {
        if !P::watchable(stream.as_raw_fd()) {
            // select: FD_SETSIZE. Registering would set a bit outside the
            // fd_set, undefined behaviour; the client is closed instead,
            // with the notice of a full server, which is what it is.
            self.stats.unwatchable += 1;
            turn_away(&stream, &mut self.stats);
            if !std::mem::replace(&mut self.unwatchable_logged, true) {
                warn!(
                    "descriptor {} is beyond what this backend can watch \
                     (select: below FD_SETSIZE = {}); refusing such connections \
                     (counted as unwatchable; use --backend poll or epoll for more)",
                    stream.as_raw_fd(),
                    poller::FD_SETSIZE
                );
            }
            return;
        }
        if self.conns.len() >= self.max_connections {
            turn_away(&stream, &mut self.stats);
            let limit = self.max_connections;
            self.warn_rate_limited(format_args!(
                "connection limit ({limit}) reached, turning clients away"
            ));
            return;
        }
        if let Some(per_ip) = self.per_ip.as_ref()
            && !per_ip.has_room(peer.ip())
        {
            self.stats.rejected_per_ip += 1;
            turn_away(&stream, &mut self.stats);
            let limit = per_ip.limit();
            self.warn_rate_limited(format_args!(
                "{} holds {limit} connections (--max-connections-per-ip), turning it away",
                peer.ip()
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
        let stamp = self.stamp;
        match Connection::register(stream, token, generation, &mut self.poller, stamp) {
            Ok(conn) => {
                entry.insert(conn);
                if let Some(per_ip) = self.per_ip.as_mut() {
                    per_ip.admit(key, peer.ip());
                }
            }
            Err(e) => {
                warn!("{peer}: cannot register connection: {e}");
                return;
            }
        }
        self.stats.accepted += 1;
        self.stats.active = self.conns.len() as u64;
        debug!("connection {key} from {peer} ({service:?})");
        if let Some(idle) = self.idle_timeout {
            self.timers
                .schedule(self.now + idle, TimerKind::IdleCheck(token));
        }
        // A greeting: the banner of line mode, or the whole daytime answer.
        self.with_connection(key, |conn, token, cx| match service {
            Service::Echo => {
                let banner = cx.mode.greeting();
                conn.greet(token, banner, cx)
            }
            Service::Daytime => {
                let outcome = conn.greet(token, daytime::now_line().as_bytes(), cx);
                if !matches!(outcome, Outcome::Keep) {
                    return outcome;
                }
                // RFC 867: send the line, then close. Draining is exactly
                // that, FIN after the last byte, and a lingering read so
                // that anything the client sent cannot turn our close
                // into a reset.
                conn.begin_shutdown(token, cx)
            }
        });
    }

    // ----- timers ---------------------------------------------------------

    fn fire_timers(&mut self) {
        while let Some(kind) = self.timers.pop_due(self.now) {
            match kind {
                TimerKind::IdleCheck(token) => self.check_idle(token),
                TimerKind::LingerDeadline(token) => self.end_linger(token),
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
                        if let Some(socket) = slot.socket.as_ref() {
                            let fd = socket.as_raw_fd();
                            if let Err(e) =
                                self.poller
                                    .register(fd, token::listener(i), Interest::READABLE)
                            {
                                warn!("cannot watch listener {i} again: {e}");
                            }
                        }
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
        let deadline = conn.last_active().to_instant(self.epoch) + idle;
        if deadline <= self.now {
            self.close(key, CloseReason::TimedOut);
        } else {
            self.timers.schedule(deadline, TimerKind::IdleCheck(token));
        }
    }

    /// The linger bound: a connection still waiting for its client's FIN
    /// this long after ours is closed (`connection::LINGER_TIMEOUT`).
    fn end_linger(&mut self, token: Token) {
        let Target::Connection { key, generation } = token::decode(token) else {
            return;
        };
        if self
            .conns
            .get(key)
            .is_some_and(|conn| conn.generation() == generation && conn.is_lingering())
        {
            self.close(key, CloseReason::LingerTimeout);
        }
    }

    // ----- shutdown -------------------------------------------------------

    /// Acts on the signals that arrived (`signals.rs`).
    fn on_signals(&mut self) {
        let arrived = self.signals.as_mut().map(Signals::take).unwrap_or_default();
        for (request, count) in arrived {
            match request {
                Request::Stop => self.stop_requested(count),
                Request::Hangup => {
                    info!("SIGHUP: nothing to reload in a single process; serving on")
                }
                Request::ReportStats => info!("stats: {}", self.stats),
                Request::Ignored => info!("SIGUSR2: ignored; serving on"),
            }
        }
    }

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
            if let Some(socket) = slot.socket.take() {
                // A paused listener is not registered: the error is moot.
                let _ = self.poller.deregister(socket.as_raw_fd());
            }
        }
        for slot in &mut self.udp {
            if let Some(socket) = slot.socket.take() {
                let _ = self.poller.deregister(socket.as_raw_fd());
            }
        }
        self.timers.schedule(
            self.now + self.shutdown_timeout,
            TimerKind::ShutdownDeadline,
        );
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.with_connection(key, |conn, token, cx| conn.begin_shutdown(token, cx));
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

/// A [`Reactor`] on the backend `--backend` named: the one place where the
/// backend is chosen at run time. Everything below it is monomorphic, so
/// the loop itself never dispatches dynamically.
// select's two fd_sets make its variant 256 bytes larger; there is one
// `Server` per process, so boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Server {
    /// epoll, through mio.
    Epoll(Reactor<Epoll>),
    /// poll(2).
    Poll(Reactor<Poll>),
    /// select(2).
    Select(Reactor<Select>),
}

/// Calls the same method on whichever reactor a [`Server`] holds.
macro_rules! each_backend {
    ($server:expr, $r:ident => $body:expr) => {
        match $server {
            Server::Epoll($r) => $body,
            Server::Poll($r) => $body,
            Server::Select($r) => $body,
        }
    };
}

impl Server {
    /// [`Reactor::bind`] on `config.backend`.
    pub fn bind(config: &Config) -> Result<Server, ListenError> {
        Ok(match config.backend {
            Backend::Epoll => Server::Epoll(Reactor::bind(config)?),
            Backend::Poll => Server::Poll(Reactor::bind(config)?),
            Backend::Select => Server::Select(Reactor::bind(config)?),
        })
    }

    /// See [`Reactor::local_addrs`].
    pub fn local_addrs(&self) -> &[SocketAddr] {
        each_backend!(self, r => r.local_addrs())
    }

    /// See [`Reactor::udp_addrs`].
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        each_backend!(self, r => r.udp_addrs())
    }

    /// See [`Reactor::daytime_addrs`].
    pub fn daytime_addrs(&self) -> &[SocketAddr] {
        each_backend!(self, r => r.daytime_addrs())
    }

    /// See [`Reactor::max_connections`].
    pub fn max_connections(&self) -> usize {
        each_backend!(self, r => r.max_connections())
    }

    /// See [`Reactor::shutdown_handle`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        each_backend!(self, r => r.shutdown_handle())
    }

    /// See [`Reactor::run`].
    pub fn run(self) -> io::Result<Report> {
        each_backend!(self, r => r.run())
    }
}

impl ListenerSlot {
    fn new(socket: TcpListener, service: Service) -> ListenerSlot {
        ListenerSlot {
            socket: Some(socket),
            service,
            paused: false,
            queued: false,
        }
    }
}

impl UdpSlot {
    fn new(socket: UdpSocket, service: Service) -> UdpSlot {
        UdpSlot {
            socket: Some(socket),
            service,
            queued: false,
        }
    }
}

/// Every address each of `addrs` resolves to.
fn resolve_all(addrs: &[ListenAddr]) -> Result<Vec<SocketAddr>, ListenError> {
    let mut all = Vec::new();
    for addr in addrs {
        let resolved = addr.resolve().map_err(|source| ListenError::Resolve {
            addr: addr.clone(),
            source,
        })?;
        all.extend(resolved);
    }
    Ok(all)
}

/// Binds a daytime service: a TCP listener on `addr`, then a UDP socket on
/// the port it got. With port 0 the kernel picks a TCP port that may be
/// taken for UDP; then try another.
fn open_daytime(
    addr: SocketAddr,
    options: ListenOptions,
) -> io::Result<(TcpListener, UdpSocket, SocketAddr)> {
    const ATTEMPTS: usize = 8;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let tcp = listener::open(addr, options)?;
        let bound = tcp.local_addr()?;
        match udp::open(bound) {
            Ok(datagrams) => return Ok((tcp, datagrams, bound)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
}

/// Tells a client the server will not serve it (the connection limit, the
/// per-host limit, a descriptor select cannot watch), then closes it.
/// Best effort, one syscall: the socket is fresh, so its send buffer has
/// room; if not, the client just sees EOF.
fn turn_away(stream: &TcpStream, stats: &mut Stats) {
    stats.rejected += 1;
    let _ = (&*stream).write(REJECT_NOTICE);
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
