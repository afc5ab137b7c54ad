//! The TCP engine: one thread's connections over one `Poll`.
//!
//! This module is where the readiness rules of mio are obeyed on the
//! client side; each rule is written next to the code that relies on it.
//! The phases of the thread are the shared skeleton's
//! ([`crate::engine`]); what is TCP's own:
//!
//! - **opening** ([`open`]): non-blocking connects, paced by
//!   `--connect-rate` and by a window of at most `max_connecting`
//!   connections that are not proven yet. A connection is *proven* when its
//!   first message (message 0) has come back intact: only then do we know
//!   the server accepted it and serves it, so only then does it leave the
//!   window.
//! - **sending**: closed loop keeps `depth` messages in flight per
//!   connection; open loop follows a schedule ([`open_loop`]).
//! - **stalls**: a connection that goes `--timeout` without an echo it is
//!   owed times out, during the window and during the drain after it,
//!   which lasts `--timeout` at most; what is still due then times out
//!   too.
//! - **checking** ([`conn`]): every byte read is compared with the pattern
//!   as it arrives.

mod conn;
mod open;
mod open_loop;

use crate::engine::{self, Core, Engine, Phase, Share};
use crate::pattern::MAX_SPAN;
use crate::release::TIMER_TOKEN;
use crate::stats::ErrorKind;
use crate::{Shared, ThreadResult};
use conn::{Conn, ConnState, check_echo};
use log::{debug, warn};
use mio::event::Event;
use open_loop::OpenLoop;
use slab::Slab;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many loopback source addresses a thread may add when the planned
/// ones run out of local ports: each brings a whole port range (~28,000
/// connections), so a handful covers any descriptor limit.
pub(crate) const MAX_EXTRA_SOURCES: usize = 8;

/// One thread's TCP connections and what it knows about them.
struct Worker {
    core: Core,
    conns: Slab<Conn>,
    /// The thread's one read buffer: every connection reads into it, and
    /// its contents are checked and dropped at once (echo bytes need no
    /// keeping), so no connection owns a receive buffer.
    buf: Box<[u8]>,
    /// Where `--template` messages are rendered, to be sent or to check
    /// answers against (unused otherwise).
    scratch: Vec<u8>,
    size: u64,
    /// Bytes of the answer to one message: `size`, but for a transform
    /// that lengthens each line.
    reply: u64,
    depth: u64,
    /// Connections started so far (`share.ids[..opened]`).
    opened: usize,
    /// Loopback source addresses added past the planned ones because the
    /// planned ones ran out of ports.
    extra_sources: usize,
    /// Run messages issued and not yet echoed, over all live connections.
    outstanding: u64,
    /// Open loop (`--rate`) only, from the start of the run.
    open_loop: Option<OpenLoop>,
    /// Keys of connections that failed during this batch of events. They
    /// are freed only after the batch: an event for the same key may still
    /// be further down the batch, and if the slab had already handed the
    /// key to a new connection, that event would be applied to the wrong
    /// socket.
    closing: Vec<usize>,
}

/// Runs one thread's share of a TCP run to the end and returns its counts.
pub(crate) fn run_thread(sh: Arc<Shared>, share: Share) -> ThreadResult {
    let (size, depth) = (sh.cfg.size as u64, sh.cfg.depth as u64);
    let sh_reply = sh.cfg.protocol.reply_size(sh.cfg.size) as u64;
    let mut w = Worker {
        conns: Slab::with_capacity(share.ids.len()),
        core: Core::new(sh, share)?,
        buf: vec![0u8; MAX_SPAN].into_boxed_slice(),
        scratch: Vec::new(),
        size,
        reply: sh_reply,
        depth,
        opened: 0,
        extra_sources: 0,
        outstanding: 0,
        open_loop: None,
        closing: Vec::new(),
    };
    engine::drive(&mut w)?;
    // Dropping the connections closes them. Every echo due has been
    // read, so each close sends a FIN, not a RST.
    w.conns.clear();
    Ok(w.core.into_result())
}

impl Engine for Worker {
    /// Longest sleep of the loop in any phase: the stop flag, connect
    /// timeouts, stalls and the other threads' progress are looked at least
    /// this often.
    const TICK: Duration = Duration::from_millis(100);

    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn open_more(&mut self, now: Instant) {
        self.open_connections(now);
    }

    fn settled(&self) -> bool {
        self.opened == self.core.share.ids.len() && self.core.unproven == 0
    }

    fn extra_sources(&self) -> usize {
        self.extra_sources
    }

    fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    fn outstanding(&self) -> u64 {
        self.outstanding
    }

    fn quota_met(&self) -> bool {
        let answered = self.outstanding == 0;
        match &self.open_loop {
            Some(ol) => answered && ol.all_sent(),
            None => {
                let c = &self.core;
                answered && c.share.quota.is_some_and(|q| c.window.issued >= q)
            }
        }
    }

    fn start(&mut self, now: Instant) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        match self.core.share.rate {
            Some(rate) => self.start_open_loop(keys, rate, now),
            None => {
                for key in keys {
                    self.refill(key, self.depth, now);
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        if self.core.phase() == Phase::Opening {
            self.sweep_connect_timeouts(now);
        } else {
            self.sweep_stalls(now);
        }
    }

    fn run_turn(&mut self, now: Instant) {
        self.release(now);
    }

    fn close_window(&mut self, now: Instant) {
        if let Some(ol) = &self.open_loop {
            self.core.stats.unsent = ol.unsent(&self.conns);
        }
        self.record_outstanding(now);
        // An echo already overdue by --timeout fails now, not a sweep later
        // (by when it might have come back after all).
        self.core.last_sweep = now;
        self.sweep_stalls(now);
    }

    fn drain_time(&self) -> Duration {
        self.core.sh.cfg.timeout
    }

    fn drained(&mut self) {
        self.give_up_outstanding();
    }

    fn wake_in(&self, now: Instant) -> Option<Duration> {
        match self.core.phase() {
            Phase::Opening => self.next_connect_in(now),
            Phase::Running => self.open_loop.as_ref()?.release.fallback_wake(now),
            _ => None,
        }
    }

    fn on_event(&mut self, ev: &Event) {
        if ev.token() == TIMER_TOKEN {
            if let Some(ol) = &mut self.open_loop {
                ol.release.timer_fired();
            }
        } else {
            self.on_conn_event(ev.token().0, ev);
        }
    }

    /// Frees the connections that failed (see `closing`). Dropping the
    /// stream closes the socket, which also removes it from epoll.
    fn free_closed(&mut self) {
        for key in self.closing.drain(..) {
            self.conns.remove(key);
        }
    }
}

impl Worker {
    // ----- the end of the window -----------------------------------------

    /// Counts every echo still due as the window closes, with its age so
    /// far (see [`crate::stats::Stats::record_outstanding`]).
    fn record_outstanding(&mut self, now: Instant) {
        let (size, depth, start) = (self.size, self.depth, self.core.window.start);
        let reply = self.reply;
        let schedule = self.open_loop.as_ref().map(|ol| &ol.release.schedule);
        for (_, conn) in self.conns.iter().filter(|(_, c)| !c.dead) {
            // Message 0 proved the connection before the run; it is done.
            for m in (conn.recvd / reply).max(1)..conn.want / size {
                let sent_at = conn.sent_at(schedule, m, depth);
                let age = now.saturating_duration_since(sent_at).as_nanos() as u64;
                self.core.stats.record_outstanding(age, sent_at >= start);
            }
        }
    }

    /// Closes connections whose echo is overdue by `--timeout`: without
    /// this, a server that stops answering would hang a `-n` run forever.
    fn sweep_stalls(&mut self, now: Instant) {
        let (size, reply, timeout) = (self.size, self.reply, self.core.sh.cfg.timeout);
        let stalled: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !c.dead && c.in_flight(size, reply) > 0 && now >= c.last_progress + timeout
            })
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
        let (size, reply) = (self.size, self.reply);
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.in_flight(size, reply) > 0 && !c.dead)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            self.fail(key, ErrorKind::Timeout);
        }
        self.free_closed();
    }

    // ----- events --------------------------------------------------------

    fn on_conn_event(&mut self, key: usize, ev: &Event) {
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
        let (size, reply) = (self.size, self.reply);
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
            let got = conn.skip_banner(&self.buf[..n]);
            let sh = &self.core.sh;
            let got = match &sh.cfg.first {
                None => got,
                Some(first) => match conn.check_first(got, &first.answer) {
                    Ok(rest) => rest,
                    Err(kind) => {
                        failure = Some(kind);
                        break;
                    }
                },
            };
            let want = match &sh.template {
                None => sh.echo().slice(conn.rstart, conn.recvd, got.len()),
                Some(t) => t.answers(conn.id, conn.recvd, got.len(), &mut self.scratch),
            };
            if let Some(kind) = check_echo(conn, got, want, (size, reply)) {
                failure = Some(kind);
                break;
            }
            conn.recvd += got.len() as u64;
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
        let (first, last) = (before / reply, conn.recvd / reply);
        if last > first {
            self.complete(key, first, last);
        }
        if let Some(kind) = failure {
            self.failed(key, kind);
        }
    }

    /// Messages `first..last` of `key` have been fully echoed.
    fn complete(&mut self, key: usize, first: u64, last: u64) {
        let now = Instant::now();
        let measuring = self.core.measuring();
        let schedule = self.open_loop.as_ref().map(|ol| &ol.release.schedule);
        let conn = &mut self.conns[key];
        conn.last_progress = now;
        let mut run_done = 0;
        for m in first..last {
            if m == 0 {
                // The proving message: the server serves this connection.
                conn.state = ConnState::Ready;
                let took = now.saturating_duration_since(conn.opened_at).as_nanos() as u64;
                self.core.stats.first_echo.saturating_record(took.max(1));
                self.core.unproven -= 1;
                self.core.stats.established += 1;
                continue;
            }
            run_done += 1;
            let sent_at = conn.sent_at(schedule, m, self.depth);
            if measuring && sent_at >= self.core.window.start {
                let ns = now.saturating_duration_since(sent_at).as_nanos() as u64;
                self.core.stats.record_latency(ns);
                self.core.stats.messages += 1;
                self.core.stats.bytes += self.size;
            }
        }
        self.outstanding -= run_done;
        self.core.completed_any += run_done;
        if run_done == 0 {
            return;
        }
        if self.open_loop.is_some() {
            self.issue_due(key, now);
        } else {
            self.refill(key, run_done, now);
        }
    }

    // ----- sending -------------------------------------------------------

    /// Closed loop: issues up to `n` messages on `key` and writes them.
    fn refill(&mut self, key: usize, n: u64, now: Instant) {
        let mut issued = 0;
        for _ in 0..n {
            if !self.core.may_issue(now, self.core.window.issued) {
                break;
            }
            let conn = &mut self.conns[key];
            if conn.in_flight(self.size, self.reply) == 0 {
                conn.last_progress = now;
            }
            let m = conn.want / self.size;
            conn.times[(m % self.depth) as usize] = now;
            conn.want += self.size;
            if now >= self.core.window.start {
                self.core.window.issued += 1;
            }
            issued += 1;
        }
        self.send_issued(key, issued);
    }

    /// `n` more messages were issued on `key`: they are outstanding now,
    /// and go out as far as the socket takes them.
    fn send_issued(&mut self, key: usize, n: u64) {
        if n > 0 {
            self.outstanding += n;
            self.flush(key);
        }
    }

    /// Writes as much of `sent..want` as the socket takes.
    fn flush(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let mut failure = None;
        while conn.sent < conn.want {
            let len = ((conn.want - conn.sent) as usize).min(MAX_SPAN);
            let sh = &self.core.sh;
            let data = match &sh.template {
                None => sh.pattern.slice(conn.start, conn.sent, len),
                Some(t) => t.requests(conn.id, conn.sent, len, &mut self.scratch),
            };
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
            self.failed(key, kind);
        }
    }

    // ----- failures ------------------------------------------------------

    /// Connection `key` failed with `kind`: an error of the run if it was
    /// proven, a connection that never opened otherwise.
    fn failed(&mut self, key: usize, kind: ErrorKind) {
        if self.conns[key].state == ConnState::Ready {
            self.fail(key, kind);
        } else if kind == ErrorKind::Rejected {
            self.unproven_failed(key, kind, "answered with something else than the echo");
        } else {
            self.unproven_failed(key, kind, kind.name());
        }
    }

    /// A proven connection failed: count it and close it after the batch.
    fn fail(&mut self, key: usize, kind: ErrorKind) {
        let (size, reply) = (self.size, self.reply);
        let conn = &mut self.conns[key];
        if conn.dead {
            return;
        }
        conn.dead = true;
        let lost = conn.in_flight(size, reply);
        debug!("connection {}: {}", conn.id, kind.name());
        self.outstanding = self.outstanding.saturating_sub(lost);
        if let Some(ol) = &mut self.open_loop {
            ol.backlog = ol.backlog.saturating_sub(conn.slot.due - conn.slot.issued);
        }
        self.core.stats.error(kind);
        self.closing.push(key);
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
        self.core.unproven -= 1;
        self.core.count_failed(kind, &why);
    }
}
