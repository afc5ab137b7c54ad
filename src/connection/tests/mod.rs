//! A connection driven as the loop drives it, phase by phase and event by
//! event, against a scripted stream (`scripted.rs`): every read, write and
//! interest change is chosen or recorded by the test, so nothing here
//! sleeps or depends on a kernel's timing. One test at the end runs over
//! real sockets, where the point is the kernel's own behaviour.
//!
//! The events are what `reactor::ready` makes of what a poller reports: a
//! readable hint, a writable one, the peer's FIN seen by the kernel
//! (`read_closed`, with readable), an error (readable and writable, so
//! that the next I/O call reports it), and urgent data (with readable).
//!
//! `phases.rs` takes each phase through each event; `turns.rs` the rest of
//! a turn: the run-next queue, `--portable-reads`, registration, and
//! reading while the memory budget is full.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Instant;

use super::scripted::{Call, FD, Recording, Scripted, Step};
use super::*;
use crate::poller::epoll::Epoll;

mod phases;
mod turns;

/// The token the test connection is registered under.
const TOKEN: Token = Token((1 << 32) | 7);

/// The loop's read buffer: one full read.
const BUF: usize = crate::reactor::READ_BUFFER_SIZE;

const READABLE: Ready = Ready {
    readable: true,
    writable: false,
    read_closed: false,
    urgent: false,
};
const WRITABLE: Ready = Ready {
    readable: false,
    writable: true,
    read_closed: false,
    urgent: false,
};
const READ_CLOSED: Ready = Ready {
    readable: true,
    writable: false,
    read_closed: true,
    urgent: false,
};
const ERROR: Ready = Ready {
    readable: true,
    writable: true,
    read_closed: false,
    urgent: false,
};
const URGENT: Ready = Ready {
    readable: true,
    writable: false,
    read_closed: false,
    urgent: true,
};
/// A queued turn: no event, the connection's own memo.
const QUEUED: Ready = Ready {
    readable: false,
    writable: false,
    read_closed: false,
    urgent: false,
};

/// What the loop lends a connection, kept across turns.
struct Rig<P> {
    poller: P,
    stats: Stats,
    timers: Timers,
    buf: Vec<u8>,
    scratch: Scratch,
    budget: Budget,
    handler: Handler,
    /// `--portable-reads`.
    portable: bool,
}

impl<P: Poller> Rig<P> {
    fn new() -> Rig<P> {
        Rig {
            poller: P::new().expect("poller"),
            stats: Stats::default(),
            timers: Timers::new(),
            buf: vec![0u8; BUF],
            scratch: Scratch::default(),
            budget: Budget::new(usize::MAX, BUF, 1, 0),
            handler: Handler::Raw,
            portable: false,
        }
    }

    /// A budget with no room left for reads, its reserve for answers
    /// untouched: reads pass through (`pass_through.rs`).
    fn fill_budget(&mut self) {
        let limit = crate::budget::MIN_MAX_BUFFERED;
        self.budget = Budget::new(limit, BUF, 1, 0);
        self.budget.settle(0, limit - limit / Budget::RESERVE_SHARE);
        assert!(self.budget.is_full());
    }

    fn with_cx<T>(&mut self, f: impl FnOnce(&mut Cx<'_, P>) -> T) -> T {
        let clock = Clock::new(Instant::now());
        let mut cx = Cx {
            token: TOKEN,
            poller: &mut self.poller,
            buf: &mut self.buf,
            stats: &mut self.stats,
            clock: &clock,
            handler: &mut self.handler,
            scratch: &mut self.scratch,
            timers: &mut self.timers,
            budget: &mut self.budget,
            read_until_would_block: self.portable,
        };
        f(&mut cx)
    }

    /// One turn for an event with these hints.
    fn drive<S: Stream>(&mut self, conn: &mut Connection<S>, ready: Ready) -> Outcome {
        self.with_cx(|cx| conn.drive(ready, cx))
    }
}

type Test = Rig<Recording>;
type Conn = Connection<Scripted>;

/// A new connection on a stream with `room` bytes of send buffer and
/// `input` queued, registered as the loop registers it.
fn open(rig: &mut Test, room: usize, input: impl IntoIterator<Item = Step>) -> Conn {
    let now = Instant::now();
    let stream = Scripted::new(room, input);
    let conn = Connection::register(stream, TOKEN, &mut rig.poller, Stamp::new(now, now))
        .expect("register");
    assert_eq!(conn.phase, Phase::Open);
    conn
}

/// A connection whose client stopped reading: two full reads, nothing
/// written, the second past the high watermark.
fn paused(rig: &mut Test) -> Conn {
    let mut conn = open(rig, 0, [data(BUF, 1), data(BUF, 2)]);
    let first = rig.drive(&mut conn, READABLE);
    assert!(matches!(first, Outcome::Requeue), "{first:?}");
    assert_eq!(conn.phase, Phase::Open);
    let second = rig.drive(&mut conn, QUEUED);
    assert!(matches!(second, Outcome::Keep), "{second:?}");
    assert_eq!(conn.phase, Phase::Paused);
    assert_eq!(conn.out.len(), 2 * BUF);
    conn
}

/// A connection that read `bye` and the peer's FIN, and could write
/// nothing yet.
fn closing(rig: &mut Test) -> Conn {
    let mut conn = open(rig, 0, [bytes(b"bye"), Step::Eof]);
    let first = rig.drive(&mut conn, READ_CLOSED);
    assert!(matches!(first, Outcome::Requeue), "{first:?}");
    let second = rig.drive(&mut conn, QUEUED);
    assert!(matches!(second, Outcome::Keep), "{second:?}");
    assert_eq!(conn.phase, Phase::Closing);
    assert_eq!(conn.out.as_slice(), b"bye");
    conn
}

/// A connection told to shut down while `abc` was pending.
fn draining(rig: &mut Test) -> Conn {
    let mut conn = open(rig, 0, [bytes(b"abc")]);
    rig.drive(&mut conn, READABLE);
    let outcome = rig.with_cx(|cx| conn.begin_shutdown(cx));
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.phase, Phase::Draining);
    conn
}

/// A connection that had nothing pending when told to shut down: FIN
/// sent at once.
fn lingering(rig: &mut Test) -> Conn {
    let mut conn = open(rig, 1 << 20, []);
    let outcome = rig.with_cx(|cx| conn.begin_shutdown(cx));
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.phase, Phase::Lingering);
    assert!(conn.stream.shut_write);
    conn
}

/// `n` bytes of `byte`, queued as one chunk.
fn data(n: usize, byte: u8) -> Step {
    Step::Data(vec![byte; n])
}

fn bytes(b: &[u8]) -> Step {
    Step::Data(b.to_vec())
}

/// The interest the poller holds for the connection now.
fn registered(rig: &Test) -> Option<Interest> {
    rig.poller.interest(FD)
}

#[track_caller]
fn assert_closed_by(outcome: Outcome, kind: io::ErrorKind) {
    match outcome {
        Outcome::Close(CloseReason::Error(e)) => assert_eq!(e.kind(), kind, "{e}"),
        other => panic!("expected a close on {kind:?}, got {other:?}"),
    }
}
