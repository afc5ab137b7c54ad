//! The TCP engine: one thread's event loop over its share of the connections.
//!
//! This file is where the readiness rules of mio are obeyed on the client
//! side; each rule is written next to the code that relies on it. The life
//! of a thread is a sequence of [`Phase`]s:
//!
//! 1. **Opening**: non-blocking connects, paced by `--connect-rate` and by a
//!    window of at most `max_connecting` connections that are not proven
//!    yet. A connection is *proven* when its first message (message 0) has
//!    come back intact: only then do we know the server accepted it and
//!    serves it, so only then does it leave the window.
//! 2. **Settling**: this thread is done opening and waits (still polling)
//!    until every thread is, so that all threads measure the same load.
//! 3. **Running**: warmup, then the measured window. Closed loop keeps
//!    `depth` messages in flight per connection; open loop follows a
//!    [`Schedule`].
//! 4. **Draining**: nothing new is sent. The echoes still due as the
//!    window closes are counted, each with its age so far (which also goes
//!    into the latency histogram); then they are awaited (and checked) for
//!    up to `--timeout`, and a connection that goes `--timeout` without an
//!    echo it is owed times out here just as it would inside the window.
//! 5. **Holding** (`--hold`): every connection stays open and idle.
//!
//! A connection's stream is tracked with three byte counters: `want`
//! (bytes of whole messages issued), `sent` (written to the socket) and
//! `recvd` (echoed and checked). Message `m` is bytes
//! `m*size .. (m+1)*size`, so issuing, completing and checking need no
//! per-message bookkeeping except one send time per in-flight message.

use super::Shared;
use super::limits;
use super::pattern::{MAX_SPAN, Pattern};
use super::schedule::Schedule;
use super::stats::{ErrorKind, Stats};
use super::timer::Timer;
use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Events taken per `poll` call. Large enough that a busy thread with
/// thousands of ready connections needs few `epoll_wait` calls per sweep,
/// small enough (~12 KiB) to stay in cache.
const EVENTS_CAPACITY: usize = 1024;

/// Longest sleep of the loop in any phase: the stop flag, connect timeouts
/// and the other threads' progress are looked at least this often.
const TICK: Duration = Duration::from_millis(100);

/// How many loopback source addresses a thread may add when the planned
/// ones run out of local ports: each brings a whole port range (~28,000
/// connections), so a handful covers any descriptor limit.
const MAX_EXTRA_SOURCES: usize = 8;

/// The token of the open-loop timer; connection keys never get this high.
const TIMER_TOKEN: Token = Token(usize::MAX);

/// Poll interval while this thread waits for the others to settle.
const SETTLE_POLL: Duration = Duration::from_millis(2);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// `connect` returned EINPROGRESS; waiting for the writable event.
    Connecting,
    /// Connected; message 0 is in flight to prove the server serves us.
    Proving,
    /// Proven; takes part in the run.
    Ready,
}

/// One TCP connection. Its buffers are not its own: it writes straight
/// from the shared [`Pattern`] and reads into the thread's buffer, so an
/// idle connection costs its socket and this struct only.
struct Conn {
    stream: TcpStream,
    /// Number across all threads; picks the pattern start and names the
    /// connection in logs.
    id: usize,
    /// Where this connection's stream starts in the pattern cycle.
    start: usize,
    state: ConnState,
    /// When `connect` was called, for the connect timeout.
    opened_at: Instant,
    /// Last time an echo completed, or a message was issued while none was
    /// in flight: an echo overdue by `--timeout` from here is a stall.
    last_progress: Instant,
    /// Bytes of whole messages issued so far.
    want: u64,
    /// Bytes written to the socket; `sent < want` means a write is pending
    /// and waits for the next writable event.
    sent: u64,
    /// Bytes echoed back and checked.
    recvd: u64,
    /// Closed loop: when each in-flight message was issued, indexed by
    /// message number modulo `depth`. At most `depth` messages are in
    /// flight, so a slot is free again by the time it is reused.
    times: Box<[Instant]>,
    /// Open loop: this connection's slot in the schedule's rotation.
    slot: usize,
    /// Open loop: run messages the schedule has handed to this connection.
    due: u64,
    /// Open loop: run messages actually issued (`<= due`).
    issued: u64,
    /// Open loop: already on the thread's list of connections to serve.
    queued: bool,
    /// Failed; its key waits on the thread's list of deferred frees.
    dead: bool,
}

impl Conn {
    /// Messages issued whose echo is not complete yet.
    fn in_flight(&self, size: u64) -> u64 {
        self.want / size - self.recvd / size
    }
}

/// The phases described in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Opening,
    Settling,
    Running,
    Draining { until: Instant },
    Holding { until: Instant },
    Done,
}

/// This thread's part of the run, worked out by the caller.
pub(crate) struct Share {
    /// Index of this thread, `0..threads`.
    pub thread: usize,
    /// Connection ids of this thread: `thread, thread + threads, ...`.
    pub ids: Vec<usize>,
    /// Connects per second for this thread.
    pub connect_rate: Option<f64>,
    /// This thread's window of unproven connections.
    pub max_connecting: usize,
    /// `-n`: messages this thread measures before it stops.
    pub quota: Option<u64>,
    /// `--rate`: messages per second of this thread.
    pub rate: Option<f64>,
}

/// One thread's event loop and everything it owns.
struct Worker<'a> {
    sh: &'a Shared,
    share: Share,
    poll: Poll,
    conns: Slab<Conn>,
    /// The thread's one read buffer: every connection reads into it, and
    /// its contents are checked and dropped at once (echo bytes need no
    /// keeping), so no connection owns a receive buffer.
    buf: Box<[u8]>,
    size: u64,
    depth: u64,
    stats: Stats,
    phase: Phase,
    /// First error text of a failed connect, for the "unreachable" message.
    first_connect_error: Option<String>,

    // Opening.
    /// Loopback source addresses added past the planned ones because the
    /// planned ones ran out of ports.
    extra_sources: usize,
    opened: usize,
    unproven: usize,
    open_started: Instant,
    last_sweep: Instant,

    // Running.
    window_start: Instant,
    window_end: Option<Instant>,
    window_issued: u64,
    /// Run messages issued and not yet echoed, over all live connections.
    outstanding: u64,

    // Open loop.
    schedule: Option<Schedule>,
    /// Wakes the loop when the next scheduled message is due.
    timer: Option<Timer>,
    /// Slot -> connection key; fixed for the run (no key is reused once
    /// the run has started, because no connection is opened after it).
    ring: Vec<usize>,
    released: u64,
    /// `-n` in open loop: release no message past this one.
    release_limit: Option<u64>,
    /// Open loop: messages due before the measured window.
    warmup_msgs: u64,
    /// Open loop: messages handed to live connections but not sent yet
    /// (held back by `depth`).
    backlog: u64,
    pending: Vec<usize>,
    released_to_dead: u64,

    /// Keys of connections that failed during this batch of events. They
    /// are freed only after the batch: an event for the same key may still
    /// be further down the batch, and if the slab had already handed the
    /// key to a new connection, that event would be applied to the wrong
    /// socket.
    closing: Vec<usize>,

    // What was last published to `Live`.
    pub_messages: u64,
    pub_established: u64,
    pub_failed: u64,
    pub_errors: u64,
    /// All completed run messages (warmup and drain included), for `Live`.
    completed_any: u64,
}

/// Runs one thread's share of a TCP run to the end and returns its counts.
pub(crate) fn run_thread(sh: &Shared, share: Share) -> io::Result<(Stats, Option<String>)> {
    let now = Instant::now();
    let mut w = Worker {
        sh,
        poll: Poll::new()?,
        conns: Slab::with_capacity(share.ids.len()),
        buf: vec![0u8; MAX_SPAN].into_boxed_slice(),
        size: sh.cfg.size as u64,
        depth: sh.cfg.depth as u64,
        stats: Stats::new(),
        phase: Phase::Opening,
        first_connect_error: None,
        extra_sources: 0,
        opened: 0,
        unproven: 0,
        open_started: now,
        last_sweep: now,
        window_start: now,
        window_end: None,
        window_issued: 0,
        outstanding: 0,
        schedule: None,
        timer: None,
        ring: Vec::new(),
        released: 0,
        release_limit: None,
        warmup_msgs: 0,
        backlog: 0,
        pending: Vec::new(),
        released_to_dead: 0,
        closing: Vec::new(),
        pub_messages: 0,
        pub_established: 0,
        pub_failed: 0,
        pub_errors: 0,
        completed_any: 0,
        share,
    };
    w.run()?;
    Ok((w.stats, w.first_connect_error))
}

impl Worker<'_> {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let now = Instant::now();
            self.advance(now);
            if self.phase == Phase::Done {
                break;
            }
            let timeout = self.timeout(now);
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                // A signal interrupted epoll_wait: nothing happened, go on.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() == TIMER_TOKEN {
                    if let Some(t) = &mut self.timer {
                        t.fired();
                    }
                    continue;
                }
                self.on_event(ev.token().0, ev);
            }
            self.free_closed();
            self.publish();
        }
        self.publish();
        // Dropping the connections closes them. Every echo due has been
        // read, so each close sends a FIN, not a RST.
        self.conns.clear();
        Ok(())
    }

    // ----- phases --------------------------------------------------------

    /// Moves the thread's clock forward: opens connections, starts and ends
    /// the window, releases scheduled messages.
    fn advance(&mut self, now: Instant) {
        match self.phase {
            Phase::Opening => {
                self.open_more(now);
                if now >= self.last_sweep + TICK {
                    self.last_sweep = now;
                    self.sweep_connect_timeouts(now);
                    self.free_closed();
                }
                if self.opened == self.share.ids.len() && self.unproven == 0 {
                    debug!(
                        "thread {}: {} connections settled",
                        self.share.thread,
                        self.conns.len()
                    );
                    self.stats.open_secs = (now - self.open_started).as_secs_f64();
                    self.stats.sources_used = self.sh.sources + self.extra_sources;
                    self.sh.live.thread_settled();
                    self.phase = Phase::Settling;
                }
            }
            Phase::Settling => {
                if self.sh.live.settled_threads() >= self.sh.cfg.threads {
                    self.start_run(now);
                }
            }
            Phase::Running => self.advance_running(now),
            Phase::Draining { until } => self.advance_draining(now, until),
            Phase::Holding { until } => {
                if now >= until || self.conns.is_empty() || self.sh.live.stop_requested() {
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    /// The window: stall sweeps, its end, and open-loop releases.
    fn advance_running(&mut self, now: Instant) {
        if now >= self.last_sweep + TICK {
            self.last_sweep = now;
            self.sweep_stalls(now);
        }
        let quota_met = match self.release_limit {
            // Open loop: every scheduled message released, sent and
            // answered (messages released to a connection that died are
            // counted as unsent, not waited for).
            Some(limit) => self.released >= limit && self.backlog == 0 && self.outstanding == 0,
            None => self
                .share
                .quota
                .is_some_and(|q| self.window_issued >= q && self.outstanding == 0),
        };
        let time_up = self.window_end.is_some_and(|end| now >= end);
        if time_up || quota_met || self.conns.is_empty() || self.sh.live.stop_requested() {
            self.end_window(now);
        } else if self.schedule.is_some() {
            self.release(now);
            self.arm_timer(now);
        }
    }

    /// After the window: the echoes still due are awaited under the same
    /// rule as during it (a connection with no echo for `--timeout` has
    /// timed out), and for `--timeout` at most in all.
    fn advance_draining(&mut self, now: Instant, until: Instant) {
        if now >= self.last_sweep + TICK {
            self.last_sweep = now;
            self.sweep_stalls(now);
        }
        if self.outstanding == 0 || now >= until {
            self.give_up_outstanding();
            self.phase = if self.sh.cfg.hold.is_zero() || self.conns.is_empty() {
                Phase::Done
            } else {
                Phase::Holding {
                    until: now + self.sh.cfg.hold,
                }
            };
        }
    }

    /// How long the next `poll` may sleep.
    fn timeout(&self, now: Instant) -> Duration {
        let until = |t: Instant| t.saturating_duration_since(now);
        let t = match self.phase {
            Phase::Opening => match self.share.connect_rate {
                Some(rate) if self.opened < self.share.ids.len() => {
                    let next =
                        self.open_started + Duration::from_secs_f64(self.opened as f64 / rate);
                    until(next).max(Duration::from_millis(1))
                }
                _ => TICK,
            },
            Phase::Settling => SETTLE_POLL,
            Phase::Running => {
                let mut t = self.window_end.map_or(TICK, until);
                if let Some(s) = &self.schedule
                    && self.timer.is_none()
                    && self.release_limit.is_none_or(|l| self.released < l)
                {
                    // Without a timerfd, fall back to the poll timeout,
                    // which mio rounds up to whole milliseconds: messages
                    // then leave in 1 ms batches. Their latency still
                    // counts from their own due time, so it shows.
                    t = t.min(until(s.due_at(self.released)));
                }
                t
            }
            Phase::Draining { until: end } | Phase::Holding { until: end } => until(end),
            Phase::Done => Duration::ZERO,
        };
        t.min(TICK)
    }

    fn start_run(&mut self, now: Instant) {
        self.window_start = now + self.sh.cfg.warmup;
        self.window_end = match self.sh.cfg.stop {
            super::StopAt::Duration(d) => Some(self.window_start + d),
            super::StopAt::Requests(_) => None,
        };
        self.phase = Phase::Running;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        if let Some(rate) = self.share.rate {
            let sched = Schedule::new(now, rate, keys.len());
            // Messages due before the window opens belong to the warmup.
            self.warmup_msgs = sched.first_at_or_after(self.window_start);
            self.release_limit = self.share.quota.map(|q| self.warmup_msgs + q);
            for (slot, &key) in keys.iter().enumerate() {
                self.conns[key].slot = slot;
            }
            self.ring = keys;
            self.schedule = Some(sched);
            match Timer::new(self.poll.registry(), TIMER_TOKEN) {
                Ok(t) => self.timer = Some(t),
                Err(e) => warn!("no timerfd ({e}); open-loop sends in 1 ms steps"),
            }
            self.release(now);
            self.arm_timer(now);
        } else {
            for key in keys {
                let n = self.depth;
                self.refill(key, n, now);
            }
        }
    }

    fn end_window(&mut self, now: Instant) {
        self.stats.window_secs = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        if self.schedule.is_some() {
            let behind: u64 = self
                .ring
                .iter()
                .filter_map(|&k| self.conns.get(k))
                .map(|c| c.due - c.issued)
                .sum();
            self.stats.unsent = behind + self.released_to_dead;
        }
        self.record_outstanding(now);
        // An echo already overdue by --timeout fails now, not a sweep later
        // (by when it might have come back after all).
        self.last_sweep = now;
        self.sweep_stalls(now);
        debug!(
            "thread {}: window closed after {:.3} s, {} messages, {} outstanding",
            self.share.thread, self.stats.window_secs, self.stats.messages, self.outstanding
        );
        self.phase = Phase::Draining {
            until: now + self.sh.cfg.timeout,
        };
    }

    /// Counts every echo still due as the window closes, with its age so
    /// far (see [`Stats::record_outstanding`]).
    fn record_outstanding(&mut self, now: Instant) {
        let (size, depth, start) = (self.size, self.depth, self.window_start);
        let schedule = self.schedule.as_ref();
        for (_, conn) in self.conns.iter().filter(|(_, c)| !c.dead) {
            // Message 0 proved the connection before the run; it is done.
            for m in (conn.recvd / size).max(1)..conn.want / size {
                let sent_at = sent_at(schedule, conn, m, depth);
                let age = now.saturating_duration_since(sent_at).as_nanos() as u64;
                self.stats.record_outstanding(age, sent_at >= start);
            }
        }
    }

    /// Closes connections whose echo is overdue by `--timeout`: without
    /// this, a server that stops answering would hang a `-n` run forever.
    fn sweep_stalls(&mut self, now: Instant) {
        let (size, timeout) = (self.size, self.sh.cfg.timeout);
        let stalled: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.dead && c.in_flight(size) > 0 && now >= c.last_progress + timeout)
            .map(|(k, _)| k)
            .collect();
        for key in stalled {
            warn!("connection {}: no echo for {timeout:?}", self.conns[key].id);
            self.fail(key, ErrorKind::Timeout);
        }
        self.free_closed();
    }

    /// Whatever is still due after the drain: one timeout per connection.
    fn give_up_outstanding(&mut self) {
        let size = self.size;
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.in_flight(size) > 0 && !c.dead)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            self.fail(key, ErrorKind::Timeout);
        }
        self.free_closed();
    }

    // ----- opening -------------------------------------------------------

    fn open_more(&mut self, now: Instant) {
        let total = self.share.ids.len();
        let allowed = match self.share.connect_rate {
            None => total,
            Some(rate) => {
                let elapsed = now
                    .saturating_duration_since(self.open_started)
                    .as_secs_f64();
                ((elapsed * rate) as usize + 1).min(total)
            }
        };
        while self.opened < allowed && self.unproven < self.share.max_connecting {
            let id = self.share.ids[self.opened];
            self.opened += 1;
            let mut result = self.start_connect(id, now);
            // Out of local ports for this source address (the planned share
            // was too optimistic: TIME_WAIT sockets of an earlier run, other
            // programs). On loopback, and unless --source-ips fixed the
            // number, move on to the next source address and try again, as
            // often as MAX_EXTRA_SOURCES allows.
            while let Err(e) = &result {
                let out_of_ports = e.raw_os_error() == Some(libc::EADDRNOTAVAIL);
                if !out_of_ports || !self.can_add_source() {
                    break;
                }
                self.extra_sources += 1;
                let next = limits::loopback_v4(self.sh.sources - 1 + self.extra_sources);
                debug!(
                    "thread {}: local ports exhausted, continuing from {next}",
                    self.share.thread
                );
                result = self.start_connect(id, now);
            }
            match result {
                Ok(()) => self.unproven += 1,
                Err(e) => self.connect_failed(id, &e),
            }
        }
    }

    /// Whether another loopback source address may be tried (see
    /// [`may_add_source`]).
    fn can_add_source(&self) -> bool {
        may_add_source(&self.sh.cfg, self.extra_sources)
    }

    fn start_connect(&mut self, id: usize, now: Instant) -> io::Result<()> {
        let cfg = &self.sh.cfg;
        let addr = cfg.addr;
        // SOCK_NONBLOCK in the socket() call itself saves the separate
        // ioctl that set_nonblocking would cost per connection.
        let ty = Type::from(libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
        let socket = Socket::new(Domain::for_address(addr), ty, Some(Protocol::TCP))?;
        // Nagle would hold back a message while an earlier one is unacked
        // (pipelined runs); an echo client wants every message on the wire
        // at once. One setsockopt per connection, none per message.
        socket.set_tcp_nodelay(true)?;
        let src = if self.extra_sources > 0 {
            // Past the planned addresses: every connect of this thread uses
            // the newest extra one.
            Some(limits::loopback_v4(
                self.sh.sources - 1 + self.extra_sources,
            ))
        } else {
            limits::source_for(id, cfg.connections, self.sh.sources)
        };
        if let Some(src) = src {
            bind_no_port(&socket)?;
            socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        }
        match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(std::net::TcpStream::from(socket));
        let entry = self.conns.vacant_entry();
        // Both interests, once, for the connection's whole life. Writable
        // is needed first to learn that the connect finished, and later
        // after a partial write; changing interest would be an
        // epoll_ctl(MOD) syscall each time. Under edge triggering, write
        // interest that stays on costs nothing when nothing is pending:
        // the flag just rides along on read events.
        self.poll.registry().register(
            &mut stream,
            Token(entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Conn {
            stream,
            id,
            start: Pattern::start_of(id),
            state: ConnState::Connecting,
            opened_at: now,
            last_progress: now,
            want: 0,
            sent: 0,
            recvd: 0,
            times: vec![now; self.sh.cfg.depth].into_boxed_slice(),
            slot: 0,
            due: 0,
            issued: 0,
            queued: false,
            dead: false,
        });
        Ok(())
    }

    fn connect_failed(&mut self, id: usize, e: &io::Error) {
        debug!("connection {id}: connect failed: {e}");
        self.stats.failed += 1;
        self.stats.error(ErrorKind::of_connect(e));
        if self.first_connect_error.is_none() {
            self.first_connect_error = Some(e.to_string());
        }
    }

    fn sweep_connect_timeouts(&mut self, now: Instant) {
        let timeout = self.sh.cfg.timeout;
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state != ConnState::Ready && now >= c.opened_at + timeout)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            let e = io::Error::new(
                io::ErrorKind::TimedOut,
                "no echo within the connect timeout",
            );
            self.connect_fail_key(key, &e);
        }
    }

    /// A connection that had not been proven yet failed during its connect.
    fn connect_fail_key(&mut self, key: usize, e: &io::Error) {
        self.unproven_failed(key, ErrorKind::of_connect(e), &e.to_string());
    }

    /// A connection that had not been proven yet failed: it counts as not
    /// established, and its error keeps its real kind (a server that closes
    /// at once is an early EOF, not a connect failure).
    fn unproven_failed(&mut self, key: usize, kind: ErrorKind, why: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead {
            return;
        }
        conn.dead = true;
        debug!(
            "connection {}: failed before its first echo: {why}",
            conn.id
        );
        self.closing.push(key);
        self.unproven -= 1;
        self.stats.failed += 1;
        self.stats.error(kind);
        if self.first_connect_error.is_none() {
            self.first_connect_error = Some(why.to_string());
        }
    }

    /// The writable (or error) event after a non-blocking connect. As mio
    /// documents, the event alone proves nothing: `take_error` says whether
    /// the connect failed, and `peer_addr` whether it really completed
    /// (`NotConnected` means the event was spurious; keep waiting).
    fn check_connected(&mut self, key: usize, now: Instant) {
        let conn = &mut self.conns[key];
        let err = match conn.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match conn.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = err {
            self.connect_fail_key(key, &e);
            return;
        }
        conn.state = ConnState::Proving;
        // Message 0 proves the connection; it is never measured.
        conn.times[0] = now;
        conn.want = self.size;
        self.flush(key);
    }

    // ----- events --------------------------------------------------------

    fn on_event(&mut self, key: usize, ev: &mio::event::Event) {
        // The key may belong to a connection that failed earlier in this
        // batch (it is still in the slab, marked dead, until the batch ends).
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if conn.dead {
            return;
        }
        if conn.state == ConnState::Connecting {
            // Events are hints: any of these may mean the connect finished.
            if ev.is_writable() || ev.is_error() || ev.is_write_closed() || ev.is_read_closed() {
                self.check_connected(key, Instant::now());
            }
            return;
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            // EOF and errors are states, not data: once reported, they raise
            // no further edge. So when the event says so, read until the
            // socket itself says EOF, error or WouldBlock.
            self.on_readable(key, ev.is_read_closed() || ev.is_error());
        }
        // A writable edge matters only while a write is pending; otherwise
        // it costs no syscall.
        if let Some(conn) = self.conns.get(key)
            && !conn.dead
            && conn.sent < conn.want
        {
            self.flush(key);
        }
    }

    /// Reads everything the socket holds, checks it, completes messages and
    /// issues the next ones.
    fn on_readable(&mut self, key: usize, closing: bool) {
        let size = self.size;
        let conn = &mut self.conns[key];
        let before = conn.recvd;
        let mut failure = None;
        loop {
            let n = match conn.stream.read(&mut self.buf) {
                Ok(0) => {
                    failure = Some(ErrorKind::EarlyEof);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("connection {}: read failed: {e}", conn.id);
                    failure = Some(ErrorKind::of_io(&e));
                    break;
                }
            };
            if let Some(kind) = check_echo(&self.sh.pattern, conn, &self.buf[..n]) {
                failure = Some(kind);
                break;
            }
            conn.recvd += n as u64;
            // A short read on a stream socket means the receive queue was
            // empty at that moment, and under edge-triggered epoll any data
            // (or FIN) arriving later raises a new edge. So the read that
            // would only return WouldBlock is skipped: one syscall less per
            // event. Not when the event already carried EOF or an error:
            // those arrived before this event and will not raise another.
            if n < self.buf.len() && !closing {
                break;
            }
        }
        let (first, last) = (before / size, conn.recvd / size);
        if last > first {
            self.complete(key, first, last);
        }
        if let Some(kind) = failure {
            if self.conns[key].state == ConnState::Ready {
                self.fail(key, kind);
            } else if kind == ErrorKind::Rejected {
                self.unproven_failed(key, kind, "answered with something else than the echo");
            } else {
                self.unproven_failed(key, kind, kind.name());
            }
        }
    }

    /// Messages `first..last` of `key` have been fully echoed.
    fn complete(&mut self, key: usize, first: u64, last: u64) {
        let now = Instant::now();
        let measuring = self.phase == Phase::Running;
        let conn = &mut self.conns[key];
        conn.last_progress = now;
        let mut run_done = 0;
        for m in first..last {
            if m == 0 {
                // The proving message: the server serves this connection.
                conn.state = ConnState::Ready;
                self.unproven -= 1;
                self.stats.established += 1;
                continue;
            }
            run_done += 1;
            let sent_at = sent_at(self.schedule.as_ref(), conn, m, self.depth);
            if measuring && sent_at >= self.window_start {
                let ns = now.saturating_duration_since(sent_at).as_nanos() as u64;
                self.stats.record_latency(ns);
                self.stats.messages += 1;
                self.stats.bytes += self.size;
            }
        }
        self.outstanding -= run_done;
        self.completed_any += run_done;
        if run_done == 0 {
            return;
        }
        if self.schedule.is_some() {
            self.issue_due(key, now);
        } else {
            self.refill(key, run_done, now);
        }
    }

    // ----- sending -------------------------------------------------------

    /// Whether a new message may be issued now.
    fn may_issue(&self, now: Instant) -> bool {
        self.phase == Phase::Running
            && self
                .share
                .quota
                .is_none_or(|q| now < self.window_start || self.window_issued < q)
    }

    /// Closed loop: issues up to `n` messages on `key` and writes them.
    fn refill(&mut self, key: usize, n: u64, now: Instant) {
        let mut issued = 0;
        for _ in 0..n {
            if !self.may_issue(now) {
                break;
            }
            let conn = &mut self.conns[key];
            if conn.in_flight(self.size) == 0 {
                conn.last_progress = now;
            }
            let m = conn.want / self.size;
            conn.times[(m % self.depth) as usize] = now;
            conn.want += self.size;
            if now >= self.window_start {
                self.window_issued += 1;
            }
            issued += 1;
        }
        if issued > 0 {
            self.outstanding += issued;
            self.flush(key);
        }
    }

    /// Open loop: hands every message due by `now` to its connection.
    fn release(&mut self, now: Instant) {
        let Some(sched) = &self.schedule else {
            return;
        };
        // Every connection of this thread failed before the run: nobody to
        // hand messages to (the run phase ends on its own next turn).
        if self.ring.is_empty() {
            return;
        }
        let mut due = sched.due_by(now);
        if let Some(limit) = self.release_limit {
            due = due.min(limit);
        }
        for k in self.released..due {
            let key = self.ring[sched.slot_of(k)];
            match self.conns.get_mut(key) {
                Some(c) if !c.dead => {
                    c.due += 1;
                    self.backlog += 1;
                    if !c.queued {
                        c.queued = true;
                        self.pending.push(key);
                    }
                }
                _ => {
                    if k >= self.warmup_msgs {
                        self.released_to_dead += 1;
                    }
                }
            }
        }
        self.released = self.released.max(due);
        let mut pending = std::mem::take(&mut self.pending);
        for key in pending.drain(..) {
            self.conns[key].queued = false;
            self.issue_due(key, now);
        }
        self.pending = pending;
    }

    /// Open loop: sets the timer for the next message still to release.
    fn arm_timer(&mut self, now: Instant) {
        let (Some(sched), Some(timer)) = (&self.schedule, &mut self.timer) else {
            return;
        };
        if self.release_limit.is_some_and(|l| self.released >= l) {
            return;
        }
        if let Err(e) = timer.arm(sched.due_at(self.released), now) {
            warn!("timerfd failed ({e}); open-loop sends in 1 ms steps");
            self.timer = None;
        }
    }

    /// Open loop: issues the messages due on `key`, as far as `depth`
    /// allows, recording how late each one leaves.
    fn issue_due(&mut self, key: usize, now: Instant) {
        let Some(sched) = &self.schedule else {
            return;
        };
        let conn = &mut self.conns[key];
        if conn.dead {
            return;
        }
        let mut issued = 0;
        if conn.in_flight(self.size) == 0 {
            conn.last_progress = now;
        }
        while conn.issued < conn.due && conn.in_flight(self.size) < self.depth {
            let due_at = sched.due_at_on_slot(conn.slot, conn.issued);
            if self.phase == Phase::Running && due_at >= self.window_start {
                let lag = now.saturating_duration_since(due_at).as_nanos() as u64;
                self.stats.record_lag(lag);
                self.window_issued += 1;
            }
            conn.issued += 1;
            conn.want += self.size;
            self.backlog -= 1;
            issued += 1;
        }
        if issued > 0 {
            self.outstanding += issued;
            self.flush(key);
        }
    }

    /// Writes as much of `sent..want` as the socket takes.
    fn flush(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let mut failure = None;
        while conn.sent < conn.want {
            let len = ((conn.want - conn.sent) as usize).min(MAX_SPAN);
            let data = self.sh.pattern.slice(conn.start, conn.sent, len);
            match conn.stream.write(data) {
                Ok(n) => {
                    conn.sent += n as u64;
                    // A short write means the send buffer is full; the
                    // kernel has flagged the socket (SOCK_NOSPACE) and will
                    // raise a writable edge when space frees up, so the
                    // write that would return WouldBlock is skipped.
                    if n < len {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("connection {}: write failed: {e}", conn.id);
                    failure = Some(ErrorKind::of_io(&e));
                    break;
                }
            }
        }
        if let Some(kind) = failure {
            if conn.state == ConnState::Ready {
                self.fail(key, kind);
            } else {
                self.unproven_failed(key, kind, kind.name());
            }
        }
    }

    // ----- failures and bookkeeping -------------------------------------

    /// A proven connection failed: count it and close it after the batch.
    fn fail(&mut self, key: usize, kind: ErrorKind) {
        let size = self.size;
        let conn = &mut self.conns[key];
        if conn.dead {
            return;
        }
        conn.dead = true;
        let lost = conn.in_flight(size);
        debug!("connection {}: {}", conn.id, kind.name());
        self.outstanding = self.outstanding.saturating_sub(lost);
        self.backlog = self.backlog.saturating_sub(conn.due - conn.issued);
        self.stats.error(kind);
        self.closing.push(key);
    }

    /// Frees the connections that failed (see `closing`). Dropping the
    /// stream closes the socket, which also removes it from epoll.
    fn free_closed(&mut self) {
        for key in self.closing.drain(..) {
            self.conns.remove(key);
        }
    }

    /// Publishes this thread's progress for the progress line.
    fn publish(&mut self) {
        let live = &self.sh.live;
        let errors = self.stats.total_errors();
        super::Live::add(&live.messages, self.completed_any - self.pub_messages);
        super::Live::add(
            &live.established,
            self.stats.established - self.pub_established,
        );
        super::Live::add(&live.failed, self.stats.failed - self.pub_failed);
        super::Live::add(&live.errors, errors - self.pub_errors);
        self.pub_messages = self.completed_any;
        self.pub_established = self.stats.established;
        self.pub_failed = self.stats.failed;
        self.pub_errors = errors;
    }
}

/// Whether a thread that has already added `extra` loopback source
/// addresses may add one more because the planned ones ran out of ports:
/// only when the number of addresses was left to the client (with
/// `--source-ips`, the user's number is kept, and a connect that finds no
/// free port counts as `addr_unavailable`), only against an IPv4 loopback
/// target, and not endlessly.
fn may_add_source(cfg: &super::Config, extra: usize) -> bool {
    let addr = cfg.addr;
    cfg.source_ips.is_none()
        && addr.is_ipv4()
        && addr.ip().is_loopback()
        && extra < MAX_EXTRA_SOURCES
}

/// Checks `got`, just read on `conn`, against the echo it must be, and
/// says (and logs) what is wrong with it, if anything.
///
/// Any wrong byte is a [`ErrorKind::Mismatch`], with one exception: the
/// reply to a connection's first message may be no echo at all but the
/// server declining to serve it (a "too many connections" line, say),
/// which is [`ErrorKind::Rejected`]. A first reply most of whose bytes are
/// right, though, is an echo that came back corrupted: a mismatch.
fn check_echo(pattern: &Pattern, conn: &Conn, got: &[u8]) -> Option<ErrorKind> {
    let due = (conn.sent - conn.recvd) as usize;
    // An echo can never be ahead of what was written.
    let i = if got.len() > due {
        due
    } else {
        pattern.check(conn.start, conn.recvd, got)?
    };
    let echoed = &got[..got.len().min(due)];
    // The bytes of this reply checked before `got` were all right.
    let right = conn.recvd + pattern.agreeing(conn.start, conn.recvd, echoed) as u64;
    if conn.state != ConnState::Ready && right * 2 <= conn.recvd + echoed.len() as u64 {
        debug!(
            "connection {}: first reply is not an echo: {:?}",
            conn.id,
            String::from_utf8_lossy(&got[..got.len().min(80)])
        );
        return Some(ErrorKind::Rejected);
    }
    warn!(
        "connection {}: echoed byte at stream offset {} is wrong (got {:#04x})",
        conn.id,
        conn.recvd + i as u64,
        got[i.min(got.len() - 1)]
    );
    Some(ErrorKind::Mismatch)
}

/// When run message `m` (1, 2, ...) of `conn` counts as sent: in open loop
/// its due time, not the moment it left (so a stall is charged to every
/// message that should have left during it); in closed loop the moment it
/// was issued.
fn sent_at(schedule: Option<&Schedule>, conn: &Conn, m: u64, depth: u64) -> Instant {
    match schedule {
        Some(s) => s.due_at_on_slot(conn.slot, m - 1),
        None => conn.times[(m % depth) as usize],
    }
}

/// Lets `bind` to an explicit source address leave the port open until
/// `connect`, which then picks a port that is free for this *destination*
/// (`IP_BIND_ADDRESS_NO_PORT`). Without it, `bind(ip, 0)` reserves a port
/// for every destination at once and the range runs out sooner.
fn bind_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `socket`; the option value
    // points at a c_int that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_source_addresses_only_when_the_number_was_left_open() {
        let mut cfg = super::super::Config::new("127.0.0.1:7007".parse().unwrap());
        assert!(may_add_source(&cfg, 0));
        assert!(!may_add_source(&cfg, MAX_EXTRA_SOURCES));
        cfg.source_ips = Some(2);
        assert!(!may_add_source(&cfg, 0));
        cfg.source_ips = None;
        cfg.addr = "10.0.0.1:7007".parse().unwrap();
        assert!(!may_add_source(&cfg, 0));
    }
}
