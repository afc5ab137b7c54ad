//! The rest of a turn: hints held while queued, `--portable-reads`,
//! registration, and reading while the memory budget is full (scripted,
//! then over real sockets).

use super::*;

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
