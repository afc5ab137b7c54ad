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

use std::io::{self, Read, Write};
use std::net::Shutdown;

use super::scripted::{Call, FD, Recording, Scripted, Step};
use super::*;
use crate::poller::epoll::Epoll;

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
    answers: Vec<u8>,
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
            answers: Vec::new(),
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
        let now = Instant::now();
        let mut cx = Cx {
            token: TOKEN,
            poller: &mut self.poller,
            buf: &mut self.buf,
            stats: &mut self.stats,
            now,
            stamp: Stamp::new(now, now),
            handler: &mut self.handler,
            answers: &mut self.answers,
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

// ----- Open ---------------------------------------------------------------

#[test]
fn open_readable_echoes_a_short_read_with_one_read_and_no_interest_change() {
    let mut rig = Test::new();
    let mut conn = open(&mut rig, 1 << 20, [bytes(b"hello")]);
    assert_eq!(rig.poller.calls, [Call::Register(Interest::READABLE)]);
    let outcome = rig.drive(&mut conn, READABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.written, b"hello");
    // Rule 1: the short read proved the queue empty; no second read.
    assert_eq!(conn.stream.reads, 1);
    assert!(!conn.read_ready);
    // Rule 3: nothing pending, so no epoll_ctl on the message path.
    assert_eq!(rig.poller.calls.len(), 1);
    assert_eq!((rig.stats.bytes_in, rig.stats.bytes_out), (5, 5));
}

#[test]
fn open_readable_with_a_full_read_requeues_without_reading_again() {
    let mut rig = Test::new();
    let mut conn = open(&mut rig, 1 << 20, [data(BUF + 10, 9)]);
    let outcome = rig.drive(&mut conn, READABLE);
    // Rule 2: the budget is spent, the queue maybe not.
    assert!(matches!(outcome, Outcome::Requeue), "{outcome:?}");
    assert_eq!(conn.stream.reads, READ_BUDGET);
    assert!(conn.read_ready);
    let outcome = rig.drive(&mut conn, QUEUED);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.written.len(), BUF + 10);
}

#[test]
fn open_partial_write_keeps_the_rest_and_asks_for_writable_until_it_drains() {
    let mut rig = Test::new();
    let mut conn = open(&mut rig, 3, [bytes(b"hello")]);
    rig.drive(&mut conn, READABLE);
    assert_eq!(conn.stream.written, b"hel");
    assert_eq!(conn.out.as_slice(), b"lo");
    assert_eq!(
        registered(&rig),
        Some(Interest::READABLE | Interest::WRITABLE)
    );
    conn.stream.room = 100;
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.written, b"hello");
    assert!(conn.out.is_empty());
    assert_eq!(conn.out.capacity(), 0, "a drained buffer holds memory");
    assert_eq!(registered(&rig), Some(Interest::READABLE));
    assert_eq!(rig.poller.calls.len(), 3, "{:?}", rig.poller.calls);
}

#[test]
fn open_writable_with_nothing_pending_does_no_io() {
    let mut rig = Test::new();
    let mut conn = open(&mut rig, 1 << 20, [bytes(b"unannounced")]);
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!((conn.stream.reads, conn.stream.writes), (0, 0));
    assert_eq!(rig.poller.calls.len(), 1);
}

#[test]
fn open_read_closed_reads_past_a_short_read_to_the_fin() {
    let mut rig = Test::new();
    let mut conn = open(&mut rig, 1 << 20, [bytes(b"bye"), Step::Eof]);
    let outcome = rig.drive(&mut conn, READ_CLOSED);
    // Rule 1's exception: the FIN behind the short read raises no edge.
    assert!(matches!(outcome, Outcome::Requeue), "{outcome:?}");
    let outcome = rig.drive(&mut conn, QUEUED);
    assert!(
        matches!(outcome, Outcome::Close(CloseReason::PeerClosed)),
        "{outcome:?}"
    );
    assert_eq!(conn.phase, Phase::Closing);
    assert_eq!(conn.stream.written, b"bye");
}

#[test]
fn open_readable_alone_stops_at_a_short_read() {
    // The same input with a plain readable hint: the FIN is left for the
    // edge it will raise (a real kernel raises one; here, the next turn).
    let mut rig = Test::new();
    let mut conn = open(&mut rig, 1 << 20, [bytes(b"bye"), Step::Eof]);
    let outcome = rig.drive(&mut conn, READABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.reads, 1);
    assert_eq!(conn.phase, Phase::Open);
}

#[test]
fn open_error_closes_with_the_error() {
    let mut rig = Test::new();
    let mut conn = open(
        &mut rig,
        1 << 20,
        [Step::Error(io::ErrorKind::ConnectionReset)],
    );
    assert_closed_by(rig.drive(&mut conn, ERROR), io::ErrorKind::ConnectionReset);
}

#[test]
fn open_urgent_reads_past_the_mark_until_would_block() {
    let mut rig = Test::new();
    // A read stops short at the urgent mark, bytes still queued behind.
    let mut conn = open(
        &mut rig,
        1 << 20,
        [bytes(b"ab"), bytes(b"cd"), Step::WouldBlock, bytes(b"ef")],
    );
    let outcome = rig.drive(&mut conn, URGENT);
    assert!(matches!(outcome, Outcome::Requeue), "{outcome:?}");
    let outcome = rig.drive(&mut conn, QUEUED);
    assert!(matches!(outcome, Outcome::Requeue), "{outcome:?}");
    // Only `WouldBlock` ends it, and clears the exception.
    let outcome = rig.drive(&mut conn, QUEUED);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.written, b"abcd");
    assert_eq!(conn.stream.reads, 3);
    assert!(!conn.short_reads_prove_nothing);
    // What comes after raises an edge of its own.
    assert_eq!(conn.stream.unread(), 2);
}

#[test]
fn open_shutdown_with_nothing_pending_sends_fin_and_lingers_with_a_bound() {
    let mut rig = Test::new();
    let _conn = lingering(&mut rig);
    let deadline = rig.timers.pop_due(Instant::now() + LINGER_TIMEOUT);
    assert_eq!(deadline, Some(TimerKind::LingerDeadline(TOKEN)));
    assert_eq!(registered(&rig), Some(Interest::READABLE));
}

#[test]
fn open_protocol_close_drains() {
    let mut rig = Test::new();
    rig.handler = Handler::Protocol(Box::new(crate::protocol::Line::default()));
    let mut conn = open(&mut rig, 0, [bytes(b"hi\nexit\n")]);
    let outcome = rig.drive(&mut conn, READABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.phase, Phase::Draining);
    assert_eq!(conn.out.as_slice(), b"hi\n");
}

// ----- Paused ---------------------------------------------------------------

#[test]
fn open_pauses_above_the_high_watermark_and_stops_asking_to_read() {
    let mut rig = Test::new();
    let conn = paused(&mut rig);
    assert!(conn.out.len() > HIGH_WATERMARK);
    assert_eq!(registered(&rig), Some(Interest::WRITABLE));
    assert_eq!(rig.stats.backpressure_pauses, 1);
}

#[test]
fn paused_reads_nothing_whatever_the_input_hint() {
    let mut rig = Test::new();
    let mut conn = paused(&mut rig);
    conn.stream.arrive([bytes(b"more"), Step::Eof]);
    for ready in [READABLE, READ_CLOSED, URGENT] {
        let outcome = rig.drive(&mut conn, ready);
        assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    }
    assert_eq!(conn.stream.reads, 2);
    assert_eq!(conn.phase, Phase::Paused);
    assert_eq!(registered(&rig), Some(Interest::WRITABLE));
}

#[test]
fn paused_writable_with_little_room_stays_paused() {
    let mut rig = Test::new();
    let mut conn = paused(&mut rig);
    conn.stream.room = 1024;
    rig.drive(&mut conn, WRITABLE);
    assert_eq!(conn.stream.written.len(), 1024);
    assert_eq!(conn.phase, Phase::Paused);
    assert!(conn.out.len() >= LOW_WATERMARK);
}

#[test]
fn paused_resumes_below_the_low_watermark_and_reads_in_the_same_turn() {
    let mut rig = Test::new();
    let mut conn = paused(&mut rig);
    conn.stream.arrive([bytes(b"x")]);
    conn.stream.room = 1 << 20;
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.phase, Phase::Open);
    // Rule 4: input that came while paused raised no edge we asked for.
    assert_eq!(conn.stream.reads, 3);
    assert_eq!(conn.stream.written.len(), 2 * BUF + 1);
    assert_eq!(registered(&rig), Some(Interest::READABLE));
}

#[test]
fn paused_holds_a_fin_hint_until_it_reads_again() {
    let mut rig = Test::new();
    let mut conn = paused(&mut rig);
    conn.stream.arrive([Step::Eof]);
    rig.drive(&mut conn, READ_CLOSED);
    conn.stream.room = 1 << 20;
    // Flushed, Open, read to the FIN, Closing with nothing pending: closed,
    // in one turn.
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(
        matches!(outcome, Outcome::Close(CloseReason::PeerClosed)),
        "{outcome:?}"
    );
}

#[test]
fn paused_error_surfaces_at_the_write() {
    let mut rig = Test::new();
    let mut conn = paused(&mut rig);
    conn.stream.write_error = Some(io::ErrorKind::BrokenPipe);
    assert_closed_by(rig.drive(&mut conn, ERROR), io::ErrorKind::BrokenPipe);
}

#[test]
fn paused_shutdown_drains() {
    let mut rig = Test::new();
    let mut conn = paused(&mut rig);
    let outcome = rig.with_cx(|cx| conn.begin_shutdown(cx));
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.phase, Phase::Draining);
}

// ----- Closing --------------------------------------------------------------

#[test]
fn closing_reads_nothing_and_waits_to_write() {
    let mut rig = Test::new();
    let mut conn = closing(&mut rig);
    assert_eq!(registered(&rig), Some(Interest::WRITABLE));
    let reads = conn.stream.reads;
    for ready in [READABLE, READ_CLOSED, URGENT] {
        let outcome = rig.drive(&mut conn, ready);
        assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    }
    assert_eq!(conn.stream.reads, reads);
}

#[test]
fn closing_writable_with_little_room_keeps_waiting() {
    let mut rig = Test::new();
    let mut conn = closing(&mut rig);
    conn.stream.room = 1;
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.written, b"b");
    assert_eq!(conn.phase, Phase::Closing);
}

#[test]
fn closing_flushes_everything_then_closes() {
    let mut rig = Test::new();
    let mut conn = closing(&mut rig);
    conn.stream.room = 1 << 20;
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(
        matches!(outcome, Outcome::Close(CloseReason::PeerClosed)),
        "{outcome:?}"
    );
    assert_eq!(conn.stream.written, b"bye");
    assert!(!conn.stream.shut_write, "the peer closed; no FIN owed");
}

#[test]
fn closing_error_surfaces_at_the_write() {
    let mut rig = Test::new();
    let mut conn = closing(&mut rig);
    conn.stream.write_error = Some(io::ErrorKind::ConnectionReset);
    assert_closed_by(rig.drive(&mut conn, ERROR), io::ErrorKind::ConnectionReset);
}

// ----- Draining -------------------------------------------------------------

#[test]
fn draining_reads_no_new_input() {
    let mut rig = Test::new();
    let mut conn = draining(&mut rig);
    assert_eq!(registered(&rig), Some(Interest::WRITABLE));
    conn.stream.arrive([bytes(b"late")]);
    for ready in [READABLE, READ_CLOSED, URGENT] {
        let outcome = rig.drive(&mut conn, ready);
        assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    }
    assert_eq!(conn.stream.unread(), 4);
    assert_eq!(conn.phase, Phase::Draining);
}

#[test]
fn draining_flushes_then_sends_fin_and_lingers() {
    let mut rig = Test::new();
    let mut conn = draining(&mut rig);
    conn.stream.room = 1 << 20;
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.written, b"abc");
    assert!(conn.stream.shut_write);
    assert_eq!(conn.phase, Phase::Lingering);
    assert_eq!(registered(&rig), Some(Interest::READABLE));
    let deadline = rig.timers.pop_due(Instant::now() + LINGER_TIMEOUT);
    assert_eq!(deadline, Some(TimerKind::LingerDeadline(TOKEN)));
}

#[test]
fn draining_looks_for_a_queued_fin_as_soon_as_its_own_is_sent() {
    let mut rig = Test::new();
    let mut conn = draining(&mut rig);
    // The FIN came while draining, with an edge that was not acted on.
    conn.stream.arrive([Step::Eof]);
    conn.stream.room = 1 << 20;
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(
        matches!(outcome, Outcome::Close(CloseReason::Lingered)),
        "{outcome:?}"
    );
}

#[test]
fn draining_error_surfaces_at_the_write() {
    let mut rig = Test::new();
    let mut conn = draining(&mut rig);
    conn.stream.write_error = Some(io::ErrorKind::BrokenPipe);
    assert_closed_by(rig.drive(&mut conn, ERROR), io::ErrorKind::BrokenPipe);
}

// ----- Lingering ------------------------------------------------------------

#[test]
fn lingering_reads_and_drops_input() {
    let mut rig = Test::new();
    let mut conn = lingering(&mut rig);
    conn.stream.arrive([bytes(b"junk")]);
    let outcome = rig.drive(&mut conn, READABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.unread(), 0);
    assert!(conn.stream.written.is_empty(), "echoed after our FIN");
}

#[test]
fn lingering_ends_at_the_peers_fin() {
    let mut rig = Test::new();
    let mut conn = lingering(&mut rig);
    conn.stream.arrive([Step::Eof]);
    let outcome = rig.drive(&mut conn, READABLE);
    assert!(
        matches!(outcome, Outcome::Close(CloseReason::Lingered)),
        "{outcome:?}"
    );
}

#[test]
fn lingering_read_closed_reads_past_a_short_read_to_the_fin() {
    let mut rig = Test::new();
    let mut conn = lingering(&mut rig);
    conn.stream.arrive([bytes(b"x"), Step::Eof]);
    let outcome = rig.drive(&mut conn, READ_CLOSED);
    assert!(matches!(outcome, Outcome::Requeue), "{outcome:?}");
    let outcome = rig.drive(&mut conn, QUEUED);
    assert!(
        matches!(outcome, Outcome::Close(CloseReason::Lingered)),
        "{outcome:?}"
    );
}

#[test]
fn lingering_urgent_reads_past_the_mark() {
    let mut rig = Test::new();
    let mut conn = lingering(&mut rig);
    conn.stream.arrive([bytes(b"a"), bytes(b"b")]);
    let outcome = rig.drive(&mut conn, URGENT);
    assert!(matches!(outcome, Outcome::Requeue), "{outcome:?}");
    rig.drive(&mut conn, QUEUED);
    assert_eq!(conn.stream.unread(), 0);
}

#[test]
fn lingering_writable_does_no_io() {
    let mut rig = Test::new();
    let mut conn = lingering(&mut rig);
    let (reads, writes) = (conn.stream.reads, conn.stream.writes);
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!((conn.stream.reads, conn.stream.writes), (reads, writes));
}

#[test]
fn lingering_error_closes_with_the_error() {
    let mut rig = Test::new();
    let mut conn = lingering(&mut rig);
    conn.stream
        .arrive([Step::Error(io::ErrorKind::ConnectionReset)]);
    assert_closed_by(rig.drive(&mut conn, ERROR), io::ErrorKind::ConnectionReset);
}

// ----- the run-next queue, --portable-reads, registration -------------------

#[test]
fn hints_held_while_queued_are_acted_on_in_the_queued_turn() {
    let mut rig = Test::new();
    // More than one read's worth, and room for half of it.
    let mut conn = open(&mut rig, BUF / 2, [data(BUF, 1), data(BUF, 2)]);
    let first = rig.drive(&mut conn, READABLE);
    assert!(matches!(first, Outcome::Requeue), "{first:?}");
    assert!(conn.enqueue());
    assert_eq!(conn.out.len(), BUF / 2);
    let (reads, writes) = (conn.stream.reads, conn.stream.writes);

    // An event while queued: hints are kept, no I/O happens now.
    conn.hold(ERROR);
    assert_eq!((conn.stream.reads, conn.stream.writes), (reads, writes));

    // The queued turn, with no hints of its own, uses the held ones: it
    // flushes (the writable hint) and reads on (the readable one).
    conn.stream.room = 1 << 20;
    conn.dequeue();
    rig.drive(&mut conn, QUEUED);
    assert!(
        conn.stream.writes > writes,
        "the held writable hint was lost"
    );
    assert!(conn.stream.reads > reads, "the held readable hint was lost");
    assert_eq!(conn.stream.written.len(), 2 * BUF);
}

/// Rule 1 against the portable way: after a short read the default stops
/// (the queue was empty), while `--portable-reads` keeps the readiness,
/// asks for another turn, and that turn's read finds `WouldBlock`; and it
/// stays that way after the `WouldBlock` (rounds 2 and 3).
#[test]
fn portable_reads_read_again_after_a_short_read_until_would_block() {
    for portable in [false, true] {
        let mut rig = Test::new();
        rig.portable = portable;
        let mut conn = open(&mut rig, 1 << 20, []);
        for round in 1..=3usize {
            conn.stream.arrive([bytes(b"ping")]);
            let first = rig.drive(&mut conn, READABLE);
            if portable {
                assert!(
                    matches!(first, Outcome::Requeue),
                    "round {round}: {first:?}"
                );
                assert!(conn.read_ready, "round {round}: readiness dropped");
                let second = rig.drive(&mut conn, QUEUED);
                assert!(matches!(second, Outcome::Keep), "{second:?}");
                assert!(!conn.read_ready, "round {round}: no WouldBlock read");
                assert_eq!(conn.stream.reads, 2 * round);
            } else {
                assert!(matches!(first, Outcome::Keep), "{first:?}");
                assert!(!conn.read_ready, "round {round}: short read kept readiness");
                assert_eq!(conn.stream.reads, round);
            }
            assert_eq!(conn.stream.written.len(), 4 * round);
        }
    }
}

#[test]
fn registration_is_read_interest_under_the_token_and_deregistration_removes_it() {
    let mut rig = Test::new();
    let mut conn = open(&mut rig, 0, []);
    assert_eq!(
        rig.poller.watched.get(&FD),
        Some(&(TOKEN, Interest::READABLE))
    );
    conn.deregister(&mut rig.poller);
    assert!(rig.poller.watched.is_empty());
    assert_eq!(
        rig.poller.calls,
        [Call::Register(Interest::READABLE), Call::Deregister]
    );
}

// ----- the memory budget: pass-through ---------------------------------------

#[test]
fn a_full_budget_peeks_echoes_and_takes_only_what_went_out() {
    let mut rig = Test::new();
    rig.fill_budget();
    let mut conn = open(&mut rig, 5, [bytes(b"hello world")]);
    let outcome = rig.drive(&mut conn, READABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.written, b"hello");
    assert_eq!(conn.stream.unread(), 6, "took more than went out");
    assert_eq!(conn.held(), 0);
    // The rest waits in the kernel; writable interest brings it back.
    assert!(conn.read_ready);
    assert_eq!(registered(&rig), Some(Interest::WRITABLE));
    conn.stream.room = 1 << 20;
    let outcome = rig.drive(&mut conn, WRITABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.written, b"hello world");
    assert_eq!(conn.stream.unread(), 0);
    // A short peek proves the queue empty, as a short read does.
    assert!(!conn.read_ready);
    assert_eq!(registered(&rig), Some(Interest::READABLE));
    assert_eq!(conn.held(), 0);
}

#[test]
fn a_full_budget_peeks_the_fin() {
    let mut rig = Test::new();
    rig.fill_budget();
    let mut conn = open(&mut rig, 1 << 20, [Step::Eof]);
    let outcome = rig.drive(&mut conn, READ_CLOSED);
    assert!(
        matches!(outcome, Outcome::Close(CloseReason::PeerClosed)),
        "{outcome:?}"
    );
    assert_eq!(conn.stream.reads, 0);
    assert_eq!(conn.stream.peeks, 1);
}

#[test]
fn a_full_budget_with_output_pending_pauses() {
    let mut rig = Test::new();
    let mut conn = open(&mut rig, 0, [bytes(b"pending"), bytes(b"more")]);
    rig.drive(&mut conn, READABLE);
    rig.fill_budget();
    let outcome = rig.drive(&mut conn, READABLE);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.phase, Phase::Paused);
    assert_eq!(conn.stream.unread(), 4);
}

#[test]
fn a_full_budget_starves_an_answer_while_the_send_queue_is_not_empty() {
    let mut rig = Test::new();
    rig.handler = Handler::Protocol(Box::new(crate::protocol::Line::default()));
    rig.fill_budget();
    let mut conn = open(&mut rig, 1 << 20, [bytes(b"line\n")]);
    conn.stream.unacked = 10;
    let outcome = rig.drive(&mut conn, READABLE);
    assert!(
        matches!(outcome, Outcome::Starved { retry: true }),
        "{outcome:?}"
    );
    // Parked with nothing to send: not registered at all.
    assert_eq!(registered(&rig), None);
    assert_eq!(rig.poller.calls.last(), Some(&Call::Deregister));
    assert_eq!(conn.stream.unread(), 5);
    // Let go with the queue empty: registered again, answered.
    conn.stream.unacked = 0;
    conn.unstarve();
    let outcome = rig.drive(&mut conn, QUEUED);
    assert!(matches!(outcome, Outcome::Keep), "{outcome:?}");
    assert_eq!(conn.stream.written, b"line\n");
    assert_eq!(registered(&rig), Some(Interest::READABLE));
}

// ----- over real sockets --------------------------------------------------------

/// A loopback pair with small kernel buffers: the client's blocking
/// socket and the server side wrapped as a connection.
fn pair(poller: &mut Epoll, epoch: Instant) -> (std::net::TcpStream, Connection) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    socket2::SockRef::from(&server)
        .set_send_buffer_size(4096)
        .expect("SO_SNDBUF");
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(4096)
        .expect("SO_RCVBUF");
    server.set_nonblocking(true).expect("nonblocking");
    let stream = TcpStream::from_std(server);
    let conn =
        Connection::register(stream, TOKEN, poller, Stamp::new(epoch, epoch)).expect("register");
    (client, conn)
}

/// Reads whatever the client has waiting, up to `max` bytes.
fn client_reads(client: &mut std::net::TcpStream, max: usize) -> usize {
    client.set_nonblocking(true).expect("nonblocking");
    let mut buf = vec![0u8; max];
    let mut got = 0;
    while got < max {
        match client.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    client.set_nonblocking(false).expect("blocking");
    got
}

/// Drives `conn` as the loop does: a turn per event the poller reports,
/// and another at once while it asks to be requeued; no turn otherwise.
/// Returns how it ended, or `None` if it went quiet for 2 s.
fn run_like_the_loop(
    rig: &mut Rig<Epoll>,
    conn: &mut Connection,
    client: &mut std::net::TcpStream,
    echoed: &mut Vec<u8>,
) -> Option<CloseReason> {
    let mut events = Epoll::events(8);
    let mut quiet_since = Instant::now();
    let mut requeued = false;
    while quiet_since.elapsed() < Duration::from_secs(2) {
        let timeout = Duration::from_millis(if requeued { 0 } else { 20 });
        rig.poller.wait(&mut events, Some(timeout)).expect("wait");
        let mut ready: Option<Ready> = requeued.then(Ready::default);
        for e in Epoll::iter(&events) {
            ready = Some(Ready {
                readable: e.readable || e.error,
                writable: e.writable || e.write_closed || e.error,
                read_closed: e.read_closed,
                urgent: e.priority,
            });
        }
        let got = client_reads(client, 1 << 20);
        let at = echoed.len();
        echoed.resize(at + got, 0);
        if got > 0 {
            quiet_since = Instant::now();
        }
        let Some(ready) = ready else { continue };
        match rig.drive(conn, ready) {
            Outcome::Close(reason) => return Some(reason),
            Outcome::Requeue => requeued = true,
            Outcome::Keep | Outcome::Starved { .. } => requeued = false,
        }
    }
    None
}

/// Pass-through against the kernel's own edges: only rule 2 can bring the
/// connection back for the rest of a window's worth, and for the FIN
/// behind it.
#[test]
fn a_full_budget_passes_input_through_holds_nothing_and_sees_the_fin() {
    let mut rig = Rig::<Epoll>::new();
    rig.budget = Budget::new(0, BUF, 1, 0);
    rig.budget.settle(0, crate::budget::MIN_MAX_BUFFERED);
    assert!(rig.budget.is_full());
    let (mut client, mut conn) = pair(&mut rig.poller, Instant::now());
    // Buffers that take everything at once, so that no writable edge or
    // interest change gives the connection an extra turn.
    socket2::SockRef::from(&client)
        .set_recv_buffer_size(1 << 20)
        .expect("SO_RCVBUF");
    socket2::SockRef::from(&conn.stream)
        .set_send_buffer_size(1 << 20)
        .expect("SO_SNDBUF");
    let sent: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    client.write_all(&sent).expect("send");
    client.shutdown(Shutdown::Write).expect("FIN");
    let mut echoed = Vec::new();
    let end = run_like_the_loop(&mut rig, &mut conn, &mut client, &mut echoed);
    echoed.resize(echoed.len() + client_reads(&mut client, 1 << 20), 0);
    assert!(
        matches!(end, Some(CloseReason::PeerClosed)),
        "{end:?} after {} of {} bytes",
        echoed.len(),
        sent.len()
    );
    assert_eq!(echoed.len(), sent.len());
    assert_eq!(conn.held(), 0, "held bytes with the budget full");
    assert!(rig.budget.times_full() > 0, "never passed through");
}

#[test]
fn an_idle_connection_is_small() {
    // The footprint the module docs promise. mio's socket is a bare
    // descriptor in release builds; debug builds add a selector check to
    // it, so there we measure our own fields around it.
    let size = std::mem::size_of::<Connection>();
    if cfg!(debug_assertions) {
        let ours = size - std::mem::size_of::<TcpStream>();
        assert!(ours <= 64, "{ours} bytes besides the socket");
    } else {
        assert!(size <= 64, "{size} bytes");
    }
}
