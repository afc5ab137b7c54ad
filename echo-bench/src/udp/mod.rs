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
//! Datagrams move a batch per call (`batch.rs`): one `recvmmsg` takes
//! every echo waiting on a socket, up to [`batch::BATCH`], and the next
//! datagrams those echoes release are staged and sent by one `sendmmsg`
//! after the batch, so the client spends far fewer calls per datagram
//! than the server it measures once lanes are many.
//!
//! Like TCP, a socket is *proven* by its first echo (sequence 0, resent
//! after each loss timeout until `--timeout`); a closed
//! port answers with ICMP, which a connected UDP socket reports as
//! ECONNREFUSED, so an unreachable service fails the run the same way.
//! The phases of the thread are the shared skeleton's ([`crate::engine`]):
//! every socket is opened at once, and the drain after the window lasts
//! one [`LOSS_TIMEOUT`].

mod batch;
mod open_loop;

use crate::config::UDP_HEADER;
use crate::engine::{self, Core, Engine, Phase, Share};
use crate::pattern::Pattern;
use crate::release::{Release, TIMER_TOKEN};
use crate::stats::ErrorKind;
use crate::{Shared, ThreadResult};
use batch::Slots;
use log::{debug, warn};
use mio::event::Event;
use mio::net::UdpSocket;
use mio::{Interest, Token};
use open_loop::Flight;
use slab::Slab;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An echo later than this is counted as lost. Loopback round trips are
/// microseconds; a quarter second is only reached when a queue overflowed.
pub(crate) const LOSS_TIMEOUT: Duration = Duration::from_millis(250);

/// One ping-pong lane of a socket: the datagram it last sent.
struct Lane {
    seq: u64,
    sent_at: Instant,
    /// Its echo has neither come back nor been given up.
    waiting: bool,
}

/// One connected UDP socket.
struct Sock {
    socket: UdpSocket,
    /// Number across all threads; picks the pattern start.
    id: usize,
    /// Where this socket's stream starts in the pattern cycle.
    start: usize,
    /// Its first echo (sequence 0) came back intact.
    proven: bool,
    opened_at: Instant,
    lanes: Box<[Lane]>,
    /// The highest sequence number echoed so far: an echo below it came
    /// out of order.
    highest: u64,
    /// Open loop only: its datagrams in flight.
    flight: Flight,
    /// Failed; its key waits on the thread's list of deferred frees.
    dead: bool,
}

/// One thread's UDP sockets and what it knows about them.
struct Worker {
    core: Core,
    socks: Slab<Sock>,
    /// Receive slots, each one byte longer than a message so an oversized
    /// echo is seen as such instead of silently truncated.
    inbox: Slots,
    /// Datagrams staged to send on socket `outbox_key`, sent by
    /// [`Worker::flush`].
    outbox: Slots,
    outbox_key: usize,
    /// `--udp-offload`: a socket's staged datagrams go as one segmented
    /// message.
    segmented: bool,
    size: usize,
    depth: u64,
    /// Lanes waiting for an echo, over all live sockets.
    waiting: u64,
    /// Keys of sockets that failed, freed after the batch of events (see
    /// the TCP engine's `closing`).
    closing: Vec<usize>,
    /// Open loop (`--rate`) only, from the start of the run.
    open_loop: Option<Release>,
}

/// Runs one thread's share of a UDP run.
pub(crate) fn run_thread(sh: Arc<Shared>, share: Share) -> ThreadResult {
    let (size, depth) = (sh.cfg.size, sh.cfg.depth as u64);
    let segmented = sh.cfg.udp_offload;
    let slot = if sh.cfg.udp_offload {
        batch::GRO_SLOT.max(size + 1)
    } else {
        size + 1
    };
    let mut w = Worker {
        socks: Slab::with_capacity(share.ids.len()),
        core: Core::new(sh, share)?,
        inbox: Slots::new(slot),
        outbox: Slots::new(size),
        outbox_key: 0,
        segmented,
        size,
        depth,
        waiting: 0,
        closing: Vec::new(),
        open_loop: None,
    };
    w.open_all(Instant::now());
    engine::drive(&mut w)?;
    Ok(w.core.into_result())
}

impl Engine for Worker {
    /// How often lanes are checked for lost datagrams, and the longest
    /// sleep: a fifth of [`LOSS_TIMEOUT`], so a loss is seen soon after it
    /// is due.
    const TICK: Duration = Duration::from_millis(50);

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn settled(&self) -> bool {
        self.core.unproven == 0
    }

    fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    fn outstanding(&self) -> u64 {
        self.waiting
    }

    fn quota_met(&self) -> bool {
        if let Some(ol) = &self.open_loop {
            return ol.all_released() && self.waiting == 0;
        }
        let kept = self.window_kept();
        self.core
            .share
            .quota
            .is_some_and(|q| kept >= q && self.waiting == 0)
    }

    fn start(&mut self, now: Instant) {
        if let Some(rate) = self.core.share.rate {
            self.start_open_loop(rate, now);
            return;
        }
        let keys: Vec<usize> = self.socks.iter().map(|(k, _)| k).collect();
        for key in keys {
            for lane in 0..self.depth as usize {
                let seq = self.socks[key].lanes[lane].seq + self.depth;
                self.send_if_allowed(key, lane, seq, now);
            }
        }
        self.flush();
    }

    fn sweep(&mut self, now: Instant) {
        self.sweep_lanes(now);
        self.sweep_flights(now);
        self.flush();
    }

    fn run_turn(&mut self, now: Instant) {
        self.release(now);
    }

    fn wake_in(&self, now: Instant) -> Option<Duration> {
        match self.core.phase() {
            Phase::Running => self.open_loop.as_ref()?.fallback_wake(now),
            _ => None,
        }
    }

    /// Datagrams still awaited are counted with their age so far (see
    /// [`crate::stats::Stats::record_outstanding`]); they are not errors,
    /// and since a lane gives its datagram up as lost after
    /// [`LOSS_TIMEOUT`], none is older than that (plus one sweep).
    fn close_window(&mut self, now: Instant) {
        let start = self.core.window.start;
        for (_, s) in self.socks.iter().filter(|(_, s)| !s.dead) {
            for l in s.lanes.iter().filter(|l| l.waiting) {
                let age = now.saturating_duration_since(l.sent_at).as_nanos() as u64;
                self.core.stats.record_outstanding(age, l.sent_at >= start);
            }
        }
        self.close_open_loop(now);
    }

    fn drain_time(&self) -> Duration {
        LOSS_TIMEOUT
    }

    fn on_event(&mut self, ev: &Event) {
        if ev.token() == TIMER_TOKEN {
            if let Some(ol) = &mut self.open_loop {
                ol.timer_fired();
            }
        } else {
            self.on_readable(ev.token().0);
        }
    }

    fn free_closed(&mut self) {
        for key in self.closing.drain(..) {
            self.socks.remove(key);
        }
    }
}

impl Worker {
    // ----- opening -------------------------------------------------------

    /// Opens every socket of this thread and sends each its proving
    /// datagram.
    fn open_all(&mut self, now: Instant) {
        for i in 0..self.core.share.ids.len() {
            let id = self.core.share.ids[i];
            match self.open(id, now) {
                Ok(key) => {
                    self.core.unproven += 1;
                    self.send(key, 0, 0, now);
                }
                Err(e) => {
                    debug!("udp connection {id}: failed before its first echo: {e}");
                    self.core.count_failed(ErrorKind::of_connect(&e), &e);
                }
            }
        }
        self.flush();
    }

    fn open(&mut self, id: usize, now: Instant) -> io::Result<usize> {
        let cfg = &self.core.sh.cfg;
        let local = match self.core.sh.source_for(id) {
            Some(ip) => SocketAddr::new(ip, 0),
            None if cfg.addr.is_ipv4() => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            None => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
        };
        let mut socket = UdpSocket::bind(local)?;
        // A connected socket only receives from the server, and reports
        // the ICMP "port unreachable" of a closed port as ECONNREFUSED.
        socket.connect(cfg.addr)?;
        if cfg.udp_offload {
            batch::accept_coalesced(socket.as_raw_fd())?;
        }
        let entry = self.socks.vacant_entry();
        // Read interest only: a datagram send either goes out whole or
        // fails at once, so there is never a partial write to resume.
        self.core
            .poll
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
            highest: 0,
            flight: Flight::default(),
            dead: false,
        });
        Ok(key)
    }

    // ----- losses --------------------------------------------------------

    /// Finds lanes whose datagram is overdue: lost (or, before the socket
    /// is proven, resent until the connect timeout).
    fn sweep_lanes(&mut self, now: Instant) {
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
                if now >= s.opened_at + self.core.sh.cfg.timeout {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no echo within the connect timeout",
                    );
                    self.failed_unproven(key, ErrorKind::ConnectTimeout, &e);
                } else {
                    self.send(key, 0, 0, now);
                }
                continue;
            }
            if self.core.measuring() && l.sent_at >= self.core.window.start {
                self.core.stats.udp_lost += 1;
            }
            let next = l.seq + self.depth;
            self.send_if_allowed(key, lane, next, now);
        }
    }

    /// Datagrams sent in the window and not (yet) lost. `-n N` asks for N
    /// echoes, so a lost datagram does not use up the count: another one
    /// is sent in its place.
    fn window_kept(&self) -> u64 {
        self.core.window.issued - self.core.stats.udp_lost
    }

    // ----- sending -------------------------------------------------------

    fn send_if_allowed(&mut self, key: usize, lane: usize, seq: u64, now: Instant) {
        if self.core.may_issue(now, self.window_kept()) {
            if now >= self.core.window.start {
                self.core.window.issued += 1;
                self.core.stats.udp_sent += 1;
            }
            self.send(key, lane, seq, now);
        }
    }

    /// Stages datagram `seq` on `lane`, to be sent with the others staged
    /// for the same socket by [`Worker::flush`].
    fn send(&mut self, key: usize, lane: usize, seq: u64, now: Instant) {
        self.stage(key, seq);
        let l = &mut self.socks[key].lanes[lane];
        l.seq = seq;
        l.sent_at = now;
        l.waiting = true;
        self.waiting += 1;
    }

    /// Stages datagram `seq` of socket `key` in the outbox, sending what
    /// is staged first if it is for another socket or full.
    fn stage(&mut self, key: usize, seq: u64) {
        if self.outbox.n > 0 && (self.outbox_key != key || self.outbox.is_full()) {
            self.flush();
        }
        self.outbox_key = key;
        let s = &self.socks[key];
        let body = self.size - UDP_HEADER;
        let out = self.outbox.stage(self.size);
        out[..UDP_HEADER].copy_from_slice(&seq.to_le_bytes());
        out[UDP_HEADER..].copy_from_slice(self.core.sh.pattern.slice(
            s.start,
            seq * self.size as u64,
            body,
        ));
    }

    /// Sends the staged datagrams, as few calls as the socket takes. A
    /// send that fails for lack of buffer space counts like datagrams lost
    /// on the way.
    fn flush(&mut self) {
        let key = self.outbox_key;
        let mut next = 0;
        while next < self.outbox.n {
            let Some(s) = self.socks.get(key).filter(|s| !s.dead) else {
                break;
            };
            let fd = s.socket.as_raw_fd();
            let sent = if self.segmented {
                self.outbox.send_segmented(fd, next)
            } else {
                self.outbox.send(fd, next)
            };
            match sent {
                Ok(sent) => next += sent.max(1),
                // Dropped before they left; the loss timeout accounts for them.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The path cannot segment (no checksum offload): a
                // datagram per message from now on.
                Err(e) if self.segmented && e.raw_os_error() == Some(libc::EIO) => {
                    warn!("udp: no segmentation offload here ({e}); sending datagrams");
                    self.segmented = false;
                }
                Err(e) => {
                    self.socket_error(key, &e);
                    break;
                }
            }
        }
        self.outbox.n = 0;
    }

    // ----- receiving -----------------------------------------------------

    fn on_readable(&mut self, key: usize) {
        let now = Instant::now();
        while let Some(s) = self.socks.get_mut(key) {
            if s.dead {
                break;
            }
            // A batch shorter than its slots found the queue empty.
            let got = match self.inbox.recv(s.socket.as_raw_fd()) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.socket_error(key, &e);
                    break;
                }
            };
            'slots: for i in 0..got {
                // A slot holds one datagram, or with --udp-offload a run of
                // them from the server, all `seg` bytes but the last.
                let (len, seg) = self.inbox.shape(i);
                let mut at = 0;
                loop {
                    let n = seg.min(len - at);
                    if !self.on_datagram(key, i, at, n, now) {
                        break 'slots;
                    }
                    at += n;
                    if at >= len {
                        break;
                    }
                }
            }
            if got < batch::BATCH {
                break;
            }
        }
        self.flush();
    }

    /// The datagram at `at`, `n` bytes, in receive slot `i` on `key`: checked,
    /// matched to its lane, and answered with the lane's next one. Returns
    /// false if the socket failed on it.
    fn on_datagram(&mut self, key: usize, i: usize, at: usize, n: usize, now: Instant) -> bool {
        let s = &mut self.socks[key];
        if s.dead {
            return false;
        }
        let got = &self.inbox.get(i)[at..at + n];
        let n = got.len();
        let seq = match got.first_chunk::<UDP_HEADER>() {
            Some(header) => u64::from_le_bytes(*header),
            None => u64::MAX,
        };
        let pattern = &self.core.sh.pattern;
        let offset = seq.wrapping_mul(self.size as u64);
        if n != self.size || pattern.check(s.start, offset, &got[UDP_HEADER..]).is_some() {
            self.mismatch(key, n);
            return false;
        }
        if s.proven && self.open_loop.is_some() {
            self.on_open_loop_echo(key, seq, now);
            return true;
        }
        let lane = (seq % self.depth) as usize;
        let l = &mut s.lanes[lane];
        if !(l.waiting && l.seq == seq) {
            // Given up as lost already, or a duplicate.
            if self.core.measuring() {
                self.core.stats.udp_late += 1;
            }
            return true;
        }
        l.waiting = false;
        self.waiting -= 1;
        if !s.proven {
            s.proven = true;
            self.core.unproven -= 1;
            self.core.stats.established += 1;
            return true;
        }
        if seq < s.highest {
            if self.core.measuring() {
                self.core.stats.udp_reordered += 1;
            }
        } else {
            s.highest = seq;
        }
        self.core.completed_any += 1;
        if self.core.measuring() && l.sent_at >= self.core.window.start {
            let ns = now.saturating_duration_since(l.sent_at).as_nanos() as u64;
            self.core.stats.record_latency(ns);
            self.core.stats.messages += 1;
            self.core.stats.bytes += self.size as u64;
        }
        self.send_if_allowed(key, lane, seq + self.depth, now);
        true
    }

    // ----- failures ------------------------------------------------------

    /// The echo of `n` bytes on `key` is not the datagram sent: always a
    /// mismatch, on a proven socket or on its first echo.
    fn mismatch(&mut self, key: usize, n: usize) {
        let s = &self.socks[key];
        warn!(
            "udp connection {}: echoed datagram of {n} bytes is not the one sent",
            s.id
        );
        if s.proven {
            self.core.stats.error(ErrorKind::Mismatch);
            self.kill(key);
        } else {
            let e = io::Error::other("mismatch");
            self.failed_unproven(key, ErrorKind::Mismatch, &e);
        }
    }

    /// A send or receive on `key` failed with `e`.
    fn socket_error(&mut self, key: usize, e: &io::Error) {
        let Some(s) = self.socks.get(key) else {
            return;
        };
        if s.dead {
            return;
        }
        if !s.proven {
            self.failed_unproven(key, ErrorKind::of_connect(e), e);
            return;
        }
        debug!("udp connection {}: {e}", s.id);
        self.kill(key);
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Reset,
            _ => ErrorKind::of_io(e),
        };
        self.core.stats.error(kind);
    }

    /// A socket that was not proven yet failed: it counts as not
    /// established.
    fn failed_unproven(&mut self, key: usize, kind: ErrorKind, e: &io::Error) {
        let s = &self.socks[key];
        if s.dead {
            return;
        }
        debug!("udp connection {}: failed before its first echo: {e}", s.id);
        self.kill(key);
        self.core.unproven -= 1;
        self.core.count_failed(kind, e);
    }

    /// Marks `key` failed: its lanes wait no more, and it is freed after
    /// the batch.
    fn kill(&mut self, key: usize) {
        let s = &mut self.socks[key];
        s.dead = true;
        self.waiting -= s.lanes.iter().filter(|l| l.waiting).count() as u64;
        self.waiting -= s.flight.waiting();
        self.closing.push(key);
    }
}
