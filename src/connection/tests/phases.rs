//! Every phase against every event it can meet: readable, writable, the
//! peer's FIN, an error, urgent data.

use super::*;

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
