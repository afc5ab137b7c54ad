//! The UDP engine: connected datagram sockets, where loss is a fact of
//! life to count, not an error.
//!
//! Each socket runs `depth` independent ping-pong *lanes*. Lane `i` sends
//! sequence numbers `i, i + depth, i + 2*depth, ...`, one at a time, so a
//! reply's lane is `seq % depth` and its send time is the lane's: no map
//! from sequence numbers to times is needed. A datagram is its 8-byte
//! little-endian sequence number followed by the connection's pattern at
//! offset `seq * size`; the echo must be identical. A lane whose datagram
//! has not come back within [`LOSS_TIMEOUT`] counts it lost and moves on;
//! an echo that arrives after that counts as late.
//!
//! Like TCP, a socket is *proven* by its first echo (sequence 0, resent
//! after each loss timeout until `--timeout`); a closed
//! port answers with ICMP, which a connected UDP socket reports as
//! ECONNREFUSED, so an unreachable service fails the run the same way.

use super::Shared;
use super::config::UDP_HEADER;
use super::limits;
use super::pattern::Pattern;
use super::stats::{ErrorKind, Stats};
use super::tcp::Share;
use log::{debug, warn};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Events per `poll` call (see the TCP engine).
const EVENTS_CAPACITY: usize = 1024;

/// An echo later than this is counted as lost. Loopback round trips are
/// microseconds; a quarter second is only reached when a queue overflowed.
pub const LOSS_TIMEOUT: Duration = Duration::from_millis(250);

/// How often lanes are checked for lost datagrams, and the longest sleep.
const TICK: Duration = Duration::from_millis(50);

struct Lane {
    seq: u64,
    sent_at: Instant,
    waiting: bool,
}

struct Sock {
    socket: UdpSocket,
    id: usize,
    start: usize,
    proven: bool,
    opened_at: Instant,
    lanes: Box<[Lane]>,
    dead: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Opening,
    Settling,
    Running,
    Draining { until: Instant },
    Holding { until: Instant },
    Done,
}

struct Worker<'a> {
    sh: &'a Shared,
    share: Share,
    poll: Poll,
    socks: Slab<Sock>,
    /// Receive buffer, one byte longer than a message so an oversized echo
    /// is seen as such instead of silently truncated.
    rbuf: Box<[u8]>,
    /// The outgoing datagram, rebuilt in place for each send.
    wbuf: Box<[u8]>,
    size: usize,
    depth: u64,
    stats: Stats,
    phase: Phase,
    first_error: Option<String>,
    unproven: usize,
    window_start: Instant,
    window_end: Option<Instant>,
    window_issued: u64,
    waiting: u64,
    last_sweep: Instant,
    closing: Vec<usize>,
    completed_any: u64,
    published: (u64, u64, u64, u64),
}

/// Runs one thread's share of a UDP run.
pub(crate) fn run_thread(sh: &Shared, share: Share) -> io::Result<(Stats, Option<String>)> {
    let now = Instant::now();
    let size = sh.cfg.size;
    let mut w = Worker {
        sh,
        poll: Poll::new()?,
        socks: Slab::with_capacity(share.ids.len()),
        rbuf: vec![0u8; size + 1].into_boxed_slice(),
        wbuf: vec![0u8; size].into_boxed_slice(),
        size,
        depth: sh.cfg.depth as u64,
        stats: Stats::new(),
        phase: Phase::Opening,
        first_error: None,
        unproven: 0,
        window_start: now,
        window_end: None,
        window_issued: 0,
        waiting: 0,
        last_sweep: now,
        closing: Vec::new(),
        completed_any: 0,
        published: (0, 0, 0, 0),
        share,
    };
    w.open_all(now);
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    loop {
        let now = Instant::now();
        w.advance(now);
        if w.phase == Phase::Done {
            break;
        }
        let timeout = w.timeout(now);
        match w.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            w.on_readable(ev.token().0);
        }
        w.free_closed();
        w.publish();
    }
    w.publish();
    Ok((w.stats, w.first_error))
}

impl Worker<'_> {
    fn open_all(&mut self, now: Instant) {
        for i in 0..self.share.ids.len() {
            let id = self.share.ids[i];
            match self.open(id, now) {
                Ok(key) => {
                    self.unproven += 1;
                    self.send(key, 0, 0, now);
                }
                Err(e) => self.failed_unproven(None, id, ErrorKind::of_connect(&e), &e),
            }
        }
    }

    fn open(&mut self, id: usize, now: Instant) -> io::Result<usize> {
        let cfg = &self.sh.cfg;
        let local = match limits::source_for(id, cfg.connections, self.sh.sources) {
            Some(ip) => SocketAddr::new(ip, 0),
            None if cfg.addr.is_ipv4() => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            None => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let mut socket = UdpSocket::bind(local)?;
        // A connected socket only receives from the server, and reports
        // the ICMP "port unreachable" of a closed port as ECONNREFUSED.
        socket.connect(cfg.addr)?;
        let entry = self.socks.vacant_entry();
        // Read interest only: a datagram send either goes out whole or
        // fails at once, so there is never a partial write to resume.
        self.poll
            .registry()
            .register(&mut socket, Token(entry.key()), Interest::READABLE)?;
        let lanes = (0..self.depth)
            .map(|i| Lane {
                seq: i,
                sent_at: now,
                waiting: false,
            })
            .collect();
        let key = entry.key();
        entry.insert(Sock {
            socket,
            id,
            start: Pattern::start_of(id),
            proven: false,
            opened_at: now,
            lanes,
            dead: false,
        });
        Ok(key)
    }

    fn advance(&mut self, now: Instant) {
        if now >= self.last_sweep + TICK {
            self.last_sweep = now;
            self.sweep(now);
            self.free_closed();
        }
        match self.phase {
            Phase::Opening => {
                if self.unproven == 0 {
                    // window_start still holds the thread's start time here.
                    self.stats.open_secs = (now - self.window_start).as_secs_f64();
                    self.sh.live.thread_settled();
                    self.phase = Phase::Settling;
                }
            }
            Phase::Settling => {
                if self.sh.live.settled_threads() >= self.sh.cfg.threads {
                    self.start_run(now);
                }
            }
            Phase::Running => {
                let quota_met = self
                    .share
                    .quota
                    .is_some_and(|q| self.window_kept() >= q && self.waiting == 0);
                let time_up = self.window_end.is_some_and(|e| now >= e);
                if time_up || quota_met || self.socks.is_empty() || self.sh.live.stop_requested() {
                    self.end_window(now);
                }
            }
            Phase::Draining { until } => {
                if self.waiting == 0 || now >= until {
                    self.phase = if self.sh.cfg.hold.is_zero() || self.socks.is_empty() {
                        Phase::Done
                    } else {
                        Phase::Holding {
                            until: now + self.sh.cfg.hold,
                        }
                    };
                }
            }
            Phase::Holding { until } => {
                if now >= until || self.socks.is_empty() || self.sh.live.stop_requested() {
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    fn start_run(&mut self, now: Instant) {
        self.window_start = now + self.sh.cfg.warmup;
        self.window_end = match self.sh.cfg.stop {
            super::StopAt::Duration(d) => Some(self.window_start + d),
            super::StopAt::Requests(_) => None,
        };
        self.phase = Phase::Running;
        let keys: Vec<usize> = self.socks.iter().map(|(k, _)| k).collect();
        for key in keys {
            for lane in 0..self.depth as usize {
                let seq = self.socks[key].lanes[lane].seq + self.depth;
                self.send_if_allowed(key, lane, seq, now);
            }
        }
    }

    /// Closes the window. Datagrams still awaited are counted with their
    /// age so far (see [`Stats::record_outstanding`]); they are not
    /// errors, and since a lane gives its datagram up as lost after
    /// [`LOSS_TIMEOUT`], none is older than that (plus one sweep).
    fn end_window(&mut self, now: Instant) {
        self.stats.window_secs = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64();
        let start = self.window_start;
        for (_, s) in self.socks.iter().filter(|(_, s)| !s.dead) {
            for l in s.lanes.iter().filter(|l| l.waiting) {
                let age = now.saturating_duration_since(l.sent_at).as_nanos() as u64;
                self.stats.record_outstanding(age, l.sent_at >= start);
            }
        }
        self.phase = Phase::Draining {
            until: now + LOSS_TIMEOUT,
        };
    }

    fn timeout(&self, now: Instant) -> Duration {
        let t = match self.phase {
            Phase::Settling => Duration::from_millis(2),
            Phase::Running => self
                .window_end
                .map_or(TICK, |e| e.saturating_duration_since(now)),
            Phase::Draining { until } | Phase::Holding { until } => {
                until.saturating_duration_since(now)
            }
            _ => TICK,
        };
        t.min(TICK)
    }

    /// Finds lanes whose datagram is overdue: lost (or, before the socket
    /// is proven, resent until the connect timeout).
    fn sweep(&mut self, now: Instant) {
        let keys: Vec<(usize, usize)> = self
            .socks
            .iter()
            .flat_map(|(k, s)| {
                s.lanes
                    .iter()
                    .enumerate()
                    .filter(move |(_, l)| l.waiting && now >= l.sent_at + LOSS_TIMEOUT)
                    .map(move |(i, _)| (k, i))
            })
            .collect();
        for (key, lane) in keys {
            let s = &mut self.socks[key];
            if s.dead {
                continue;
            }
            let l = &mut s.lanes[lane];
            l.waiting = false;
            self.waiting -= 1;
            if !s.proven {
                if now >= s.opened_at + self.sh.cfg.timeout {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no echo within the connect timeout",
                    );
                    let id = s.id;
                    self.failed_unproven(Some(key), id, ErrorKind::ConnectTimeout, &e);
                } else {
                    self.send(key, 0, 0, now);
                }
                continue;
            }
            if self.phase == Phase::Running && l.sent_at >= self.window_start {
                self.stats.udp_lost += 1;
            }
            let next = l.seq + self.depth;
            self.send_if_allowed(key, lane, next, now);
        }
    }

    /// Datagrams sent in the window and not (yet) lost. `-n N` asks for N
    /// echoes, so a lost datagram does not use up the count: another one
    /// is sent in its place.
    fn window_kept(&self) -> u64 {
        self.window_issued - self.stats.udp_lost
    }

    fn may_issue(&self, now: Instant) -> bool {
        self.phase == Phase::Running
            && self
                .share
                .quota
                .is_none_or(|q| now < self.window_start || self.window_kept() < q)
    }

    fn send_if_allowed(&mut self, key: usize, lane: usize, seq: u64, now: Instant) {
        if self.may_issue(now) {
            if now >= self.window_start {
                self.window_issued += 1;
                self.stats.udp_sent += 1;
            }
            self.send(key, lane, seq, now);
        }
    }

    /// Sends datagram `seq` on `lane`. A send that fails for lack of
    /// buffer space counts like a datagram lost on the way.
    fn send(&mut self, key: usize, lane: usize, seq: u64, now: Instant) {
        let s = &mut self.socks[key];
        self.wbuf[..UDP_HEADER].copy_from_slice(&seq.to_le_bytes());
        let body = self.size - UDP_HEADER;
        self.wbuf[UDP_HEADER..].copy_from_slice(self.sh.pattern.slice(
            s.start,
            seq * self.size as u64,
            body,
        ));
        let l = &mut s.lanes[lane];
        l.seq = seq;
        l.sent_at = now;
        l.waiting = true;
        self.waiting += 1;
        match s.socket.send(&self.wbuf) {
            Ok(_) => {}
            // Dropped before it left; the loss timeout will account for it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                let id = s.id;
                self.socket_error(key, id, &e);
            }
        }
    }

    fn on_readable(&mut self, key: usize) {
        let now = Instant::now();
        loop {
            let Some(s) = self.socks.get_mut(key) else {
                return;
            };
            if s.dead {
                return;
            }
            // Datagram sockets have no "short read means empty" rule: each
            // recv returns one datagram, so drain until WouldBlock.
            let n = match s.socket.recv(&mut self.rbuf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let id = s.id;
                    self.socket_error(key, id, &e);
                    return;
                }
            };
            let got = &self.rbuf[..n];
            let seq = if n >= UDP_HEADER {
                let mut b = [0u8; UDP_HEADER];
                b.copy_from_slice(&got[..UDP_HEADER]);
                u64::from_le_bytes(b)
            } else {
                u64::MAX
            };
            let lane = (seq % self.depth) as usize;
            let current = s.lanes[lane].waiting && s.lanes[lane].seq == seq;
            let intact = n == self.size
                && self
                    .sh
                    .pattern
                    .check(
                        s.start,
                        seq.wrapping_mul(self.size as u64),
                        &got[UDP_HEADER..],
                    )
                    .is_none();
            if !intact {
                warn!(
                    "udp connection {}: echoed datagram of {n} bytes is not the one sent",
                    s.id
                );
                self.stats.error(ErrorKind::Mismatch);
                let id = s.id;
                if s.proven {
                    s.dead = true;
                    self.closing.push(key);
                    self.waiting -= s.lanes.iter().filter(|l| l.waiting).count() as u64;
                } else {
                    let e = io::Error::other("mismatch");
                    self.failed_unproven(Some(key), id, ErrorKind::Mismatch, &e);
                    // failed_unproven counted the mismatch a second time.
                    self.stats.errors[ErrorKind::Mismatch as usize] -= 1;
                }
                return;
            }
            if !current {
                if self.phase == Phase::Running {
                    self.stats.udp_late += 1;
                }
                continue;
            }
            let sent_at = s.lanes[lane].sent_at;
            s.lanes[lane].waiting = false;
            self.waiting -= 1;
            if !s.proven {
                s.proven = true;
                self.unproven -= 1;
                self.stats.established += 1;
                continue;
            }
            self.completed_any += 1;
            if self.phase == Phase::Running && sent_at >= self.window_start {
                let ns = now.saturating_duration_since(sent_at).as_nanos() as u64;
                self.stats.record_latency(ns);
                self.stats.messages += 1;
                self.stats.bytes += self.size as u64;
            }
            self.send_if_allowed(key, lane, seq + self.depth, now);
        }
    }

    fn socket_error(&mut self, key: usize, id: usize, e: &io::Error) {
        let Some(s) = self.socks.get_mut(key) else {
            return;
        };
        if s.dead {
            return;
        }
        if !s.proven {
            self.failed_unproven(Some(key), id, ErrorKind::of_connect(e), e);
            return;
        }
        debug!("udp connection {id}: {e}");
        s.dead = true;
        self.waiting -= s.lanes.iter().filter(|l| l.waiting).count() as u64;
        self.closing.push(key);
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Reset,
            _ => ErrorKind::of_io(e),
        };
        self.stats.error(kind);
    }

    fn failed_unproven(&mut self, key: Option<usize>, id: usize, kind: ErrorKind, e: &io::Error) {
        debug!("udp connection {id}: failed before its first echo: {e}");
        if let Some(key) = key
            && let Some(s) = self.socks.get_mut(key)
        {
            if s.dead {
                return;
            }
            s.dead = true;
            self.waiting -= s.lanes.iter().filter(|l| l.waiting).count() as u64;
            self.closing.push(key);
            self.unproven -= 1;
        }
        self.stats.failed += 1;
        self.stats.error(kind);
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn free_closed(&mut self) {
        for key in self.closing.drain(..) {
            self.socks.remove(key);
        }
    }

    fn publish(&mut self) {
        let live = &self.sh.live;
        let now = (
            self.completed_any,
            self.stats.established,
            self.stats.failed,
            self.stats.total_errors(),
        );
        super::Live::add(&live.messages, now.0 - self.published.0);
        super::Live::add(&live.established, now.1 - self.published.1);
        super::Live::add(&live.failed, now.2 - self.published.2);
        super::Live::add(&live.errors, now.3 - self.published.3);
        self.published = now;
    }
}
