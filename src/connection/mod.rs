//! One client connection: its socket, its pending output, and the rules that
//! turn mio's edge-triggered readiness into level-triggered behaviour.
//!
//! # The readiness rules, in one place
//!
//! mio registers every socket edge-triggered (`EPOLLET`): an event means
//! "something changed", not "something is there". A loop that reads only
//! once per event can lose data forever, because no new edge comes for
//! bytes that are already waiting. This connection therefore *remembers*
//! readiness in [`Connection::read_ready`] and obeys four rules.
//!
//! The same rules are what let this code run unchanged on the
//! level-triggered poll(2) and select(2) backends (`poller/`), whose trap
//! is the opposite one: readiness that is reported but not consumed comes
//! back on every `wait`, and the loop spins. Rules 3 and 4 never leave an
//! interest registered that the connection would not act on; rule 1's
//! "stop at a short read" is safe there too, since anything left is simply
//! reported again; rule 2's requeue only adds a spurious event, which
//! every rule tolerates.
//!
//! 1. **Read until the kernel says it is empty, or the budget is spent.**
//!    "Empty" is `WouldBlock`, or, on Linux, a *short read*: when `read`
//!    returns fewer bytes than asked, the receive queue was emptied at that
//!    moment, and any later arrival raises a new edge (this is how the
//!    kernel's `EPOLLET` wake-up works for stream sockets; tokio relies on
//!    it too). So the common case costs one `read`, not a `read` plus one
//!    that returns `EAGAIN`. There are two exceptions, both announced by
//!    the event itself, and after either the connection reads on until
//!    `WouldBlock` or EOF:
//!    - a peer's FIN that was already queued when the event was reported
//!      (the event says "read closed"): a read stops short before it, and
//!      no later edge will announce it;
//!    - urgent data (`MSG_OOB`, sent by telnet on Ctrl+C): a read stops
//!      short *at the urgent mark* with bytes still queued behind it, and
//!      no later edge will announce those either. The event says
//!      "priority" (`EPOLLPRI`, asked for with every read interest).
//!      Urgent data means nothing special here: listeners set
//!      `SO_OOBINLINE` (accepted sockets inherit it), so the urgent byte
//!      stays in the stream and is echoed in order like any other.
//! 2. **Stopping early keeps the readiness.** After [`READ_BUDGET`] reads the
//!    socket may still hold data, but no edge will announce it: the
//!    connection asks the loop to put it on the *run-next queue* (see
//!    `Reactor`), which is polled with a zero timeout while not empty. This
//!    is the level-triggered behaviour of select/poll, on demand, and it is
//!    what keeps one fast client from starving the others. A queued
//!    connection takes no second turn in the same tick when an event for it
//!    arrives: [`Connection::hold`] keeps the event's hints for the turn it
//!    already has.
//! 3. **Write interest only while output is pending.** Echo writes go
//!    straight to the socket. Only a partial write stores the rest in the
//!    [`OutBuf`] and adds `WRITABLE` interest; when the buffer drains, the
//!    interest is dropped again. Interest is re-registered (one
//!    `epoll_ctl`) only when it actually changes, never per message.
//! 4. **Backpressure drops read interest.** Above [`HIGH_WATERMARK`] bytes
//!    pending, the connection stops reading (and asks for no `READABLE`
//!    events, so a flooding client does not wake the loop for nothing)
//!    until the output drains below [`LOW_WATERMARK`]. Input that arrived
//!    meanwhile raised no edge we saw, so resuming assumes input is waiting.
//!
//! Every event is only a hint: the I/O call decides. Errors and hang-ups
//! arrive as ordinary readable/writable hints and surface as I/O errors.
//!
//! # Protocols
//!
//! What to answer is the protocol's business ([`Handler`], `protocol/`); this file only
//! moves bytes. In raw mode a read is written straight back from the loop's
//! buffer, exactly as above: no copy, no allocation, one `read` and one
//! `write` per message. In line and frame modes the read goes through the
//! protocol, whose answers land in the loop's shared scratch vector and
//! from there take the same path as an echo (straight out, or into the
//! [`OutBuf`] after a partial write), so rules 3 and 4 hold unchanged: a
//! client that sends lines but never reads is paused like any other. A
//! protocol's "close" (`exit`, an over-long line or frame) moves the
//! connection to [`Phase::Draining`], the same flush-FIN-linger sequence as
//! a server shutdown.
//!
//! # Footprint
//!
//! An idle connection is this struct in the slab (64 bytes on x86_64 in
//! release builds, see the size test in `tests/turns.rs`) plus, with `--idle-timeout`,
//! one timer-heap entry (32 bytes). The output buffer owns no heap memory
//! while empty; under backpressure it holds at most `HIGH_WATERMARK` plus
//! the answers to one read (in raw and frame mode: one read; in line mode
//! up to 7 times one read, every empty line answered `hello \n`). In line
//! and frame modes a message split across reads is held too, at most
//! `--max-line + 1` or `4 + --max-frame` bytes; nothing at a message
//! boundary.

use std::fmt;
use std::io;
use std::time::Duration;

mod answers;
mod faults;
mod interest;
mod mail;
mod pass_through;
mod relay;
#[cfg(test)]
mod scripted;
mod source;
mod stream;
mod syscall;
#[cfg(test)]
mod tests;

pub(crate) use mail::Delivery;
pub(crate) use relay::{CLIENT, Pair, RelayCx, UPSTREAM};
pub(crate) use stream::Stream;
use syscall::{Input, Take, read_by_rule_1, write_once};

use log::trace;

use mio::net::TcpStream;

use crate::budget::Budget;
use crate::outbuf::OutBuf;
use crate::poller::{Interest, Poller, Token};
use crate::protocol::{Handler, Mailbox, Partial};
use crate::service::Service;
use crate::stats::Stats;
use crate::timer::{Clock, Stamp, TimerKind, Timers};
use crate::token::{self, Named};

/// Reads per connection per turn (one turn per loop tick) before it yields
/// to the others: one full read of the 64 KiB loop buffer.
///
/// A light client's wait is the sum of the turns taken before its own, so
/// the budget is a latency knob: one read per turn gave a ping-pong client
/// among floods the lowest p99 of 1, 2 and 4 reads, at some cost to the
/// floods' own throughput (figures, commands and the trade-off in
/// docs/benchmarks.md, "What the evidence changed"). Messages up to 64 KiB
/// still take one read each; a bulk transfer pays one extra zero-timeout
/// `epoll_wait` per 64 KiB.
pub(crate) const READ_BUDGET: usize = 1;

/// Pending output above which a connection stops reading its input.
/// With one 64 KiB read on top, a client that never reads costs the server
/// at most ~128 KiB; the rest waits in the kernel's socket buffers and,
/// beyond those, in the client itself (TCP flow control does the rest).
pub(crate) const HIGH_WATERMARK: usize = 64 * 1024;

/// Pending output below which a paused connection reads again. The gap to
/// the high watermark avoids toggling interest on every small write.
pub(crate) const LOW_WATERMARK: usize = 16 * 1024;

const _: () = assert!(LOW_WATERMARK < HIGH_WATERMARK);

/// Rule 4 under memory pressure (half the budget held, `budget.rs`): a
/// connection that holds output pauses above this much, and reads again
/// below [`PRESSURE_LOW_WATERMARK`], so that the clients who hold memory
/// stop adding to it first.
pub(crate) const PRESSURE_HIGH_WATERMARK: usize = 8 * 1024;

/// See [`PRESSURE_HIGH_WATERMARK`].
pub(crate) const PRESSURE_LOW_WATERMARK: usize = 2 * 1024;

/// Under memory pressure, the largest read of a connection that holds
/// output.
pub(crate) const PRESSURE_READ: usize = 4 * 1024;

const _: () = assert!(PRESSURE_LOW_WATERMARK < PRESSURE_HIGH_WATERMARK);

/// How long a lingering connection waits for its client's FIN after ours.
///
/// Lingering exists so that a close cannot destroy output the client has
/// not read yet (see [`Phase::Lingering`]); a client that reads it sends
/// its FIN within a round trip or two. One that never does (it said `exit`
/// and went quiet, or it wants to hold the slot) would otherwise hold the
/// slot forever, so the wait is bounded, always, like nginx's
/// `lingering_timeout` (5 s there too). Whatever it has not read by then
/// is lost to a reset: it had five seconds.
pub(crate) const LINGER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading input and echoing it.
    Open,
    /// Input paused by backpressure: output passed [`HIGH_WATERMARK`];
    /// back to `Open` below [`LOW_WATERMARK`].
    Paused,
    /// The peer sent FIN: writing what is pending, then closing
    /// (RFC 862: everything received is echoed before our FIN).
    Closing,
    /// The server is done with this connection (shutting down, the client
    /// said `exit`, a protocol limit was broken, or a daytime answer was
    /// sent): no new input; writing what is pending, then FIN.
    Draining,
    /// Our FIN is sent; reading and discarding until the peer's FIN. Closing
    /// while unread input sits in the receive queue would make Linux send
    /// RST, and the peer could lose echoed data it has not read yet
    /// (nginx's "lingering close").
    Lingering,
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// The peer sent FIN and everything was echoed.
    PeerClosed,
    /// Lingering after our FIN ended with the peer's FIN.
    Lingered,
    /// No traffic for the idle timeout.
    TimedOut,
    /// Graceful shutdown's deadline passed.
    ShutdownDeadline,
    /// The client sent no FIN within [`LINGER_TIMEOUT`] of ours.
    LingerTimeout,
    /// The memory budget had no room for a greeting.
    BudgetFull,
    /// Closed by `--evict-after`: it held buffered bytes and made no
    /// progress while the budget was full.
    Evicted,
    /// Reset on purpose after `--reset-after` bytes (`faults.rs`).
    Reset,
    /// A letter from another connection would have taken its pending
    /// output past its share (`protocol/link.rs`).
    MailCutOff,
    /// Reset, broken pipe, or another socket error.
    Error(io::Error),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed, all echoed"),
            CloseReason::Lingered => f.write_str("peer closed after our FIN"),
            CloseReason::TimedOut => f.write_str("idle timeout"),
            CloseReason::ShutdownDeadline => f.write_str("shutdown deadline"),
            CloseReason::LingerTimeout => f.write_str("no FIN within the linger bound"),
            CloseReason::BudgetFull => f.write_str("no room in the memory budget"),
            CloseReason::Evicted => f.write_str("evicted: stalled while the budget was full"),
            CloseReason::Reset => f.write_str("reset after --reset-after bytes"),
            CloseReason::MailCutOff => f.write_str("cut off: did not read its letters"),
            CloseReason::Error(e) => write!(f, "{e}"),
        }
    }
}

/// What the loop should do with a connection after driving it.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Nothing more until the next event.
    Keep,
    /// Still ready but out of budget: drive again next tick (run-next).
    Requeue,
    /// Input waits but the memory budget has no room for it, and it cannot
    /// be passed straight through: stop reading until the budget frees
    /// (the loop parks it and drives it again then), or, with `retry`, for
    /// a short while only (it waits for its own send queue to empty, which
    /// raises no event).
    Starved {
        /// Try again shortly even if the budget is still full.
        retry: bool,
    },
    /// Remove and close it.
    Close(CloseReason),
}

/// The readiness hints of one event (all false when a connection comes off
/// the run-next queue: it remembers its own readiness).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Ready {
    /// Input, EOF or an error may be waiting.
    pub(crate) readable: bool,
    /// The send buffer may have room, or an error may be waiting.
    pub(crate) writable: bool,
    /// The peer's FIN (or a hang-up) was already seen by the kernel.
    pub(crate) read_closed: bool,
    /// Urgent data is pending: a read will stop short at its mark.
    pub(crate) urgent: bool,
}

/// What a connection borrows from the loop while it is driven.
pub(crate) struct Cx<'a, P> {
    /// The connection's own token: its name in logs, and in timers.
    pub(crate) token: Token,
    /// For changing interest.
    pub(crate) poller: &'a mut P,
    /// The loop's shared read buffer: every read lands here and is echoed
    /// from here, so connections need no input buffer of their own.
    pub(crate) buf: &'a mut [u8],
    /// Counters.
    pub(crate) stats: &'a mut Stats,
    /// The time of this loop tick (and the same time as the stamp
    /// connections record).
    pub(crate) clock: &'a Clock,
    /// What the connections speak.
    pub(crate) handler: &'a mut Handler,
    /// The loop's shared scratch space for a protocol's answers and
    /// letters (unused in raw mode).
    pub(crate) scratch: &'a mut Scratch,
    /// The loop's timers, for the linger bound.
    pub(crate) timers: &'a mut Timers,
    /// The memory budget every held byte is counted in.
    pub(crate) budget: &'a mut Budget,
    /// `--portable-reads`: no short read proves the receive queue empty;
    /// every turn reads until `WouldBlock` or EOF (docs/short-reads.md).
    pub(crate) read_until_would_block: bool,
}

/// What the loop lends every protocol turn to write into: one of each
/// for the whole loop, not one per connection.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// A protocol's answers to the connection that spoke; empty between
    /// uses.
    pub(crate) answers: Vec<u8>,
    /// Letters to other connections, delivered by the loop after the
    /// tick's turns (`protocol/link.rs`).
    pub(crate) mail: Mailbox,
}

/// What a connection looks like from outside, for `--trace`
/// (`reactor/trace.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Look {
    pub(crate) phase: Phase,
    pub(crate) interest: Option<Interest>,
    pub(crate) read_ready: bool,
    /// Output bytes waiting for the socket.
    pub(crate) pending: usize,
}

/// One client, on a socket (`S`: mio's `TcpStream` in the server, a
/// scripted stream in tests; see `stream.rs`).
#[derive(Debug)]
pub(crate) struct Connection<S = TcpStream> {
    stream: S,
    /// Distinguishes this connection from earlier users of its slab key
    /// (see `token.rs`).
    generation: u32,
    /// The interest currently registered with the kernel, so that
    /// `reregister` is called only on a change.
    ///
    /// `None` while it wants nothing (parked for budget with nothing to
    /// send): then it is not registered at all, since an interest cannot
    /// be empty and a level-triggered backend would report any other.
    interest: Option<Interest>,
    phase: Phase,
    /// Readiness memo: the socket may hold input we have not read. Set by
    /// readable events; cleared only by `WouldBlock`, a short read, or EOF.
    read_ready: bool,
    /// Rule 1's exceptions: an event reported the peer's FIN (or a
    /// hang-up) or urgent data, so a short read no longer proves the queue
    /// empty; read until `WouldBlock` (which clears it; a queued FIN reads
    /// as EOF, never as `WouldBlock`) or EOF. One flag for both keeps the
    /// connection within 64 bytes. With `--portable-reads` every turn sets
    /// it ([`Cx::read_until_would_block`]).
    short_reads_prove_nothing: bool,
    /// Whether this connection is on the loop's run-next queue already.
    queued: bool,
    /// A writable event arrived since the last flush: the next turn
    /// flushes first (events for a queued connection are held, see
    /// [`Connection::hold`]).
    write_hinted: bool,
    /// Passing input straight through (budget full), the socket took only
    /// part of it: ask for `WRITABLE` although nothing is pending.
    write_blocked: bool,
    /// Parked by the loop until the budget has room: no read interest
    /// meanwhile (level-triggered backends would report it forever).
    starved: bool,
    out: OutBuf,
    /// Line and frame modes: the incomplete message, if the input so far
    /// did not end on a message boundary. Empty, and a null pointer, in
    /// raw mode and between messages.
    partial: Partial,
    /// The last time bytes moved either way (for the idle timeout).
    last_active: Stamp,
}

// The footprint the module docs promise, checked by every release build
// (debug builds wrap mio's socket in a larger type; the test below checks
// those).
#[cfg(not(debug_assertions))]
const _: () = assert!(std::mem::size_of::<Connection>() <= 64);

impl<S: Stream> Connection<S> {
    /// Registers `stream` for `READABLE` under `token` (a connection token,
    /// `token.rs`) and wraps it.
    ///
    /// No read is attempted now: registering reports the current state, so
    /// input that arrived with the handshake shows up as a first event.
    pub(crate) fn register<P: Poller>(
        stream: S,
        token: Token,
        poller: &mut P,
        now: Stamp,
    ) -> io::Result<Connection<S>> {
        poller.register(stream.as_raw_fd(), token, Interest::READABLE)?;
        Ok(Connection {
            stream,
            generation: token::generation_of(token),
            interest: Some(Interest::READABLE),
            phase: Phase::Open,
            read_ready: false,
            short_reads_prove_nothing: false,
            queued: false,
            write_hinted: false,
            write_blocked: false,
            starved: false,
            out: OutBuf::new(),
            partial: Partial::new(),
            last_active: now,
        })
    }

    /// The generation this connection was created with.
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    /// When bytes last moved on this connection.
    pub(crate) fn last_active(&self) -> Stamp {
        self.last_active
    }

    /// Whether it reads and answers as usual (no backpressure, no close
    /// under way).
    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Whether our FIN is sent and the client's is awaited.
    pub(crate) fn is_lingering(&self) -> bool {
        self.phase == Phase::Lingering
    }

    /// Its state as `--trace` shows it.
    #[cold]
    pub(crate) fn look(&self) -> Look {
        Look {
            phase: self.phase,
            interest: self.interest,
            read_ready: self.read_ready,
            pending: self.out.len(),
        }
    }

    /// Bytes held for the client as the budget counts them: pending
    /// output by capacity, and a split message's charge.
    #[inline]
    pub(crate) fn held(&self) -> usize {
        self.out.capacity() + self.partial.charge()
    }

    /// Gives back the unfilled part of a split message's charge
    /// ([`Partial::release_unfilled`]); the bytes the connection's charge
    /// went down by.
    pub(crate) fn release_unfilled(&mut self) -> usize {
        let before = self.held();
        if self.partial.release_unfilled() {
            before - self.held()
        } else {
            0
        }
    }

    /// Lets a connection parked for budget ([`Outcome::Starved`]) try
    /// again: its next turn asks for read interest again.
    pub(crate) fn unstarve(&mut self) {
        self.starved = false;
        // Its turn comes off the run-next queue with no event: look at
        // both directions, as after one.
        self.read_ready = true;
        self.write_hinted = true;
    }

    /// Marks the connection as queued; false if it already was.
    pub(crate) fn enqueue(&mut self) -> bool {
        !std::mem::replace(&mut self.queued, true)
    }

    /// Marks the connection as taken off the run-next queue.
    pub(crate) fn dequeue(&mut self) {
        self.queued = false;
    }

    /// Whether the connection waits on the run-next queue.
    pub(crate) fn is_queued(&self) -> bool {
        self.queued
    }

    /// Records an event's hints in the connection's readiness memo. Every
    /// turn starts here; for a connection already on the run-next queue it
    /// is *all* an event does (no I/O now): a connection gets one turn per
    /// tick (see `Reactor::run`), and a queued one already has it.
    pub(crate) fn hold(&mut self, ready: Ready) {
        if ready.readable || ready.read_closed {
            self.read_ready = true;
        }
        if ready.read_closed || ready.urgent {
            self.read_ready = true;
            self.short_reads_prove_nothing = true;
        }
        if ready.writable {
            self.write_hinted = true;
        }
    }

    /// One turn: all the I/O the connection is ready for and its budget
    /// allows, then the interest its new state calls for.
    pub(crate) fn drive<P: Poller>(&mut self, ready: Ready, cx: &mut Cx<'_, P>) -> Outcome {
        match self.turn(ready, cx) {
            Ok(Outcome::Close(reason)) => Outcome::Close(reason),
            Ok(outcome) => match self.sync_interest(cx.token, cx.poller) {
                Ok(()) => outcome,
                Err(e) => Outcome::Close(CloseReason::Error(e)),
            },
            Err(e) => Outcome::Close(CloseReason::Error(e)),
        }
    }

    /// Sends what `service` greets a new connection with (a banner, a
    /// daytime line; `banner`, if given, instead of the protocol's own: a
    /// `--banner` template rendered for this connection): straight out if
    /// the socket takes it, else as pending output; then, if the service
    /// says so, starts closing.
    pub(crate) fn greet<P: Poller>(
        &mut self,
        service: Service,
        banner: Option<Vec<u8>>,
        cx: &mut Cx<'_, P>,
    ) -> Outcome {
        let mut greeting = service.greeting(cx.handler);
        if let Some(banner) = banner {
            greeting.bytes = banner.into();
        }
        if !greeting.bytes.is_empty() {
            // Accounted before held: a greeting the socket does not take
            // at once is kept, and must fit.
            if !cx.budget.fits(greeting.bytes.len()) {
                return Outcome::Close(CloseReason::BudgetFull);
            }
            if let Err(e) = self.send(&greeting.bytes, cx.token, cx.stats, cx.budget) {
                return Outcome::Close(CloseReason::Error(e));
            }
        }
        let then_close = greeting.then_close;
        drop(greeting);
        if service == Service::Echo
            && let Err(e) = self.open_protocol(cx)
        {
            return Outcome::Close(CloseReason::Error(e));
        }
        if then_close {
            // RFC 867: send the line, then close. Draining is exactly that,
            // FIN after the last byte, and a lingering read so that
            // anything the client sent cannot turn our close into a reset.
            return self.begin_shutdown(cx);
        }
        match self.sync_interest(cx.token, cx.poller) {
            Ok(()) => Outcome::Keep,
            Err(e) => Outcome::Close(CloseReason::Error(e)),
        }
    }

    /// Starts the close sequence the server chose (shutdown, a daytime
    /// answer sent): stop reading, flush, FIN, linger.
    pub(crate) fn begin_shutdown<P: Poller>(&mut self, cx: &mut Cx<'_, P>) -> Outcome {
        if matches!(self.phase, Phase::Open | Phase::Paused) {
            // phase: Open|Paused -> Draining (server shutdown, or a daytime answer sent)
            self.set_phase(cx.token, Phase::Draining);
        }
        self.drive(Ready::default(), cx)
    }

    /// The turn the rules describe: output first, then input as the phase
    /// allows, then the phase changes that waited for output to drain.
    fn turn<P>(&mut self, ready: Ready, cx: &mut Cx<'_, P>) -> io::Result<Outcome> {
        self.hold(ready);
        // Rule 1 the portable way, if asked (the connection has no room
        // left for a flag of its own). A branch the default never takes:
        // an unconditional OR here measured 8 more instructions per echo.
        if cx.read_until_would_block {
            self.short_reads_prove_nothing = true;
        }
        // Output first: it is older than any input we could read now, and
        // draining it may lift backpressure so this same turn reads again.
        if std::mem::take(&mut self.write_hinted) {
            self.write_blocked = false;
            self.flush(cx)?;
        }
        let mut outcome = match self.phase {
            Phase::Open => self.read_input(cx)?,
            Phase::Lingering => self.discard_input(cx)?,
            Phase::Paused | Phase::Closing | Phase::Draining => Outcome::Keep,
        };
        // Phases that wait for the output to drain, now that it may have.
        if self.out.is_empty() {
            match self.phase {
                Phase::Closing => return Ok(Outcome::Close(CloseReason::PeerClosed)),
                Phase::Draining => {
                    // Everything we owe is written: FIN goes after it.
                    self.stream.shutdown_write()?;
                    // phase: Draining -> Lingering (everything written, our FIN sent)
                    self.set_phase(cx.token, Phase::Lingering);
                    let at = cx.clock.now + LINGER_TIMEOUT;
                    cx.timers.schedule(at, TimerKind::LingerDeadline(cx.token));
                    // The peer's FIN may already be queued, announced by an
                    // edge we ignored while draining: look now.
                    self.read_ready = true;
                    outcome = self.discard_input(cx)?;
                }
                _ => {}
            }
        }
        Ok(outcome)
    }

    /// One `read` (or, with [`Take::Peek`], one `recv(MSG_PEEK)`) into
    /// the loop's buffer, under rule 1 ([`read_by_rule_1`], `syscall.rs`).
    #[inline(always)]
    fn read_once(&mut self, buf: &mut [u8], how: Take) -> io::Result<Input> {
        read_by_rule_1(
            &mut self.stream,
            buf,
            how,
            &mut self.read_ready,
            &mut self.short_reads_prove_nothing,
        )
    }

    /// Reads while input is accepted, up to the read budget and what the
    /// memory budget has room for, and hands each read on: straight back
    /// in raw mode, through the protocol otherwise.
    fn read_input<P>(&mut self, cx: &mut Cx<'_, P>) -> io::Result<Outcome> {
        for _ in 0..READ_BUDGET {
            if !self.read_ready || self.phase != Phase::Open || self.write_blocked {
                return Ok(Outcome::Keep);
            }
            // Accounted before held (`budget.rs`): read no more than the
            // worst case of what this read could make us hold has room for.
            let allowed = if cx.budget.is_calm() {
                cx.buf.len()
            } else {
                let want = if !self.out.is_empty() && cx.budget.under_pressure() {
                    PRESSURE_READ
                } else {
                    cx.buf.len()
                };
                cx.budget.read_allowance(want)
            };
            if allowed == 0 {
                cx.budget.note_full();
                if self.partial.is_released() {
                    // It gave its reservation back while stalled: it must
                    // win it back with a read that has room for it, and
                    // waits in the kernel until then.
                    self.starved = true;
                    return Ok(Outcome::Starved { retry: false });
                }
                if !self.partial.is_empty() {
                    // Its reservation pays for the rest of its message.
                    return self.finish_message(cx);
                }
                return self.pass_through(cx);
            }
            if !self.read_and_answer(allowed, cx)? {
                return Ok(Outcome::Keep);
            }
        }
        // Rule 2: out of budget but maybe not out of input.
        if self.read_ready && self.phase == Phase::Open {
            Ok(Outcome::Requeue)
        } else {
            Ok(Outcome::Keep)
        }
    }

    /// One read of at most `len` bytes, and what becomes of them; false
    /// when the turn's reading is over (nothing more, or EOF).
    #[inline]
    fn read_and_answer<P>(&mut self, len: usize, cx: &mut Cx<'_, P>) -> io::Result<bool> {
        let n = match self.read_once(&mut cx.buf[..len], Take::Read)? {
            Input::Data(n) => n,
            Input::Empty => return Ok(false),
            Input::Eof => {
                self.end_of_read_input(cx)?;
                return Ok(false);
            }
        };
        cx.stats.bytes_in += n as u64;
        self.last_active = cx.clock.stamp;
        if let Handler::Raw = cx.handler {
            // The hot path: echo from the loop's buffer, no copy.
            self.send(&cx.buf[..n], cx.token, cx.stats, cx.budget)?;
        } else {
            // A message split across reads is kept: counted as it grows.
            self.answer_read(n, cx)?;
        }
        Ok(true)
    }

    /// Sends `data`: straight from where it lies when nothing is pending
    /// (the common case, no copy), else behind the pending output.
    ///
    /// Whatever is kept is counted in the budget as it is pushed; the
    /// caller made sure it fits (a read no larger than the budget allows).
    #[inline(always)]
    fn send(
        &mut self,
        data: &[u8],
        token: Token,
        stats: &mut Stats,
        budget: &mut Budget,
    ) -> io::Result<()> {
        if !self.out.is_empty() {
            self.keep(data, token, stats, budget);
            return Ok(());
        }
        let n = write_once(&mut self.stream, data)?;
        stats.bytes_out += n as u64;
        if n < data.len() {
            self.keep(&data[n..], token, stats, budget);
        }
        Ok(())
    }

    /// Rule 3: what the socket did not take waits in the output buffer
    /// (`sync_interest` will add `WRITABLE`); rule 4: past the watermark,
    /// reading stops.
    #[cold]
    fn keep(&mut self, data: &[u8], token: Token, stats: &mut Stats, budget: &mut Budget) {
        let before = self.out.capacity();
        self.out.push(data);
        budget.settle(before, self.out.capacity());
        let high = if budget.under_pressure() {
            PRESSURE_HIGH_WATERMARK
        } else {
            HIGH_WATERMARK
        };
        if self.out.len() > high && self.phase == Phase::Open {
            stats.backpressure_pauses += 1;
            // phase: Open -> Paused (pending output above the high watermark)
            self.set_phase(token, Phase::Paused);
        }
    }

    /// Writes pending output until it is gone or the socket is full.
    fn flush<P>(&mut self, cx: &mut Cx<'_, P>) -> io::Result<()> {
        let before = self.out.capacity();
        let flushed = self.write_pending(cx);
        cx.budget.settle(before, self.out.capacity());
        flushed?;
        let low = if cx.budget.under_pressure() {
            PRESSURE_LOW_WATERMARK
        } else {
            LOW_WATERMARK
        };
        if self.phase == Phase::Paused && self.out.len() < low {
            // phase: Paused -> Open (pending output below the low watermark)
            self.set_phase(cx.token, Phase::Open);
            // Rule 4: edges that came while paused were not asked for.
            self.read_ready = true;
        }
        Ok(())
    }

    /// The writes of [`Connection::flush`].
    fn write_pending<P>(&mut self, cx: &mut Cx<'_, P>) -> io::Result<()> {
        while !self.out.is_empty() {
            let n = write_once(&mut self.stream, self.out.as_slice())?;
            if n == 0 {
                break;
            }
            let short = n < self.out.len();
            self.out.consume(n);
            cx.stats.bytes_out += n as u64;
            self.last_active = cx.clock.stamp;
            if short {
                // The send buffer is full; it raises a new writable edge
                // when it has room again.
                break;
            }
        }
        Ok(())
    }

    /// Lingering: reads and drops input until the peer's FIN.
    fn discard_input<P>(&mut self, cx: &mut Cx<'_, P>) -> io::Result<Outcome> {
        for _ in 0..READ_BUDGET {
            if !self.read_ready {
                return Ok(Outcome::Keep);
            }
            if let Input::Eof = self.read_once(cx.buf, Take::Read)? {
                return Ok(Outcome::Close(CloseReason::Lingered));
            }
        }
        Ok(if self.read_ready {
            Outcome::Requeue
        } else {
            Outcome::Keep
        })
    }

    /// Every phase change goes through here, and is logged as one line.
    fn set_phase(&mut self, token: Token, next: Phase) {
        trace!("{}: {:?} => {:?}", Named(token), self.phase, next);
        self.phase = next;
    }
}
