//! Graceful shutdown on SIGTERM/SIGINT: listeners closed at once, pending
//! output flushed, FIN to each client, exit 0 with final stats; a second
//! signal exits at once with 130.

mod util;

use std::io::{ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::{STEP_TIMEOUT, Server, assert_echo, connect, pattern, read_to_eof};

/// Waits until connecting to `addr` is refused (the listener is closed).
#[track_caller]
fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "listener still accepting after the signal: {other:?}"
                );
                drop(other);
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Starts a thread writing all of `data` on a clone of `s`
/// without anyone reading; returns the progress counter and the thread.
fn spawn_flooder(s: &TcpStream, data: Arc<Vec<u8>>) -> (Arc<AtomicUsize>, thread::JoinHandle<()>) {
    let mut w = s.try_clone().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let progress = Arc::clone(&written);
    let t = thread::spawn(move || {
        for chunk in data.chunks(16 * 1024) {
            // Fails once the server stops reading and finally closes.
            if w.write_all(chunk).is_err() {
                return;
            }
            progress.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    (written, t)
}

/// Waits until `written` stops moving for a while (buffers full) or
/// reaches `len`.
fn wait_stalled_or_done(written: &AtomicUsize, len: usize) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = usize::MAX;
    let mut still_since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = written.load(Ordering::Relaxed);
        if now == len || Instant::now() > deadline {
            return;
        }
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_secs(1) {
            return;
        }
    }
}

// --- Graceful shutdown -----------------------------------------------------

on_every_backend! {
    fn sigterm_flushes_pending_output_then_fin_and_exits_zero() {
        // More than loopback socket buffers hold, so the server has to pause
        // reading with output pending.
        const LEN: usize = 32 << 20;
        let mut server = Server::spawn(&[]);
        let mut s = connect(server.addr);
        let data = Arc::new(pattern(42, LEN));
        // The client writes without reading until it is stuck: output is pending.
        let (written, flooder) = spawn_flooder(&s, Arc::clone(&data));
        wait_stalled_or_done(&written, LEN);
        assert!(
            written.load(Ordering::Relaxed) < LEN,
            "test precondition: the writer should be stuck with output pending"
        );

        server.signal(libc::SIGTERM);
        // The listener goes away at once.
        wait_refused(server.addr);
        // Everything the server read comes back, then EOF.
        let got = read_to_eof(&mut s);
        // Let the flooder go (its writes now fail or finish) and say EOF.
        let _ = s.shutdown(Shutdown::Both);
        flooder.join().unwrap();

        let status = server
            .wait_exit(STEP_TIMEOUT)
            .expect("server did not exit after SIGTERM");
        let log = server.wait_log("final stats:");
        assert_eq!(status.code(), Some(0), "log:\n{log}");
        let stats = util::counters(&log, "final stats:");
        let bytes_in = util::get(&stats, "bytes_in");
        assert!(bytes_in > 0, "{stats:?}");
        assert_eq!(util::get(&stats, "bytes_out"), bytes_in, "{stats:?}");
        assert_eq!(got.len() as u64, bytes_in, "client got a different amount");
        assert!(
            got == data[..got.len()],
            "echo is not a prefix of the data sent"
        );
        assert!(
            util::get(&stats, "backpressure_pauses") >= 1,
            "test precondition: output was pending in the server: {stats:?}"
        );
    }

    fn sigint_also_shuts_down_gracefully() {
        let mut server = Server::spawn(&[]);
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"before the signal");
        server.signal(libc::SIGINT);
        // The idle client gets FIN; once it closes too, the server exits.
        assert_eq!(read_to_eof(&mut s), b"");
        drop(s);
        let status = server
            .wait_exit(STEP_TIMEOUT)
            .expect("server did not exit after SIGINT");
        let log = server.wait_log("final stats:");
        assert_eq!(status.code(), Some(0), "log:\n{log}");
        let stats = util::counters(&log, "final stats:");
        assert_eq!(util::get(&stats, "bytes_in"), 17, "{stats:?}");
        assert_eq!(util::get(&stats, "bytes_out"), 17, "{stats:?}");
    }

    fn sigterm_with_no_clients_exits_zero_with_final_stats() {
        let mut server = Server::spawn(&[]);
        let (status, log) = util::stop(&mut server);
        assert_eq!(status.code(), Some(0), "log:\n{log}");
        let stats = util::counters(&log, "final stats:");
        for key in util::STATS_KEYS {
            assert_eq!(util::get(&stats, key), 0, "{key} in {stats:?}");
        }
    }

    fn sigterm_sends_fin_to_every_client_and_exits_once_they_close() {
        // The timeout is far beyond STEP_TIMEOUT: exiting in time means the
        // server noticed the clients' own closes.
        let mut server = Server::spawn(&["--shutdown-timeout", "60"]);
        let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(server.addr)).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            assert_echo(c, &pattern(i as u64, 1000));
        }
        server.signal(libc::SIGTERM);
        for c in clients.iter_mut() {
            assert_eq!(read_to_eof(c), b"", "expected FIN and nothing else");
        }
        // Having sent FIN, the server lingers for the clients' EOF.
        assert!(
            server.wait_exit(Duration::from_millis(300)).is_none(),
            "server exited before its clients closed"
        );
        drop(clients);
        let status = server
            .wait_exit(STEP_TIMEOUT)
            .expect("server did not exit after every client closed");
        let log = server.wait_log("final stats:");
        assert_eq!(status.code(), Some(0), "log:\n{log}");
        let stats = util::counters(&log, "final stats:");
        assert_eq!(util::get(&stats, "closed"), 3, "{stats:?}");
        assert_eq!(util::get(&stats, "bytes_out"), 3000, "{stats:?}");
    }

    fn shutdown_timeout_closes_clients_that_never_close() {
        // This client never reads nor closes; the server must give up on it
        // after --shutdown-timeout and still exit 0.
        let mut server = Server::spawn(&["--shutdown-timeout", "0.5"]);
        let s = connect(server.addr);
        let (_written, flooder) = spawn_flooder(&s, Arc::new(pattern(5, 8 << 20)));
        thread::sleep(Duration::from_millis(200));
        server.signal(libc::SIGTERM);
        let status = server
            .wait_exit(STEP_TIMEOUT)
            .expect("server still waiting for a client past --shutdown-timeout");
        let log = server.wait_log("final stats:");
        assert_eq!(status.code(), Some(0), "log:\n{log}");
        // The flooder's writes fail once the server has closed the socket.
        let _ = s.shutdown(Shutdown::Both);
        flooder.join().unwrap();
    }

    // --- Second signal ---------------------------------------------------------

    fn second_signal_during_shutdown_exits_at_once_with_130() {
        // A client that never reads keeps the graceful shutdown from finishing
        // for a long time (60 s), unless a second signal cuts it short.
        let mut server = Server::spawn(&["--shutdown-timeout", "60"]);
        let s = connect(server.addr);
        let (written, flooder) = spawn_flooder(&s, Arc::new(pattern(6, 8 << 20)));
        wait_stalled_or_done(&written, 8 << 20);

        server.signal(libc::SIGTERM);
        wait_refused(server.addr);
        assert!(
            server.wait_exit(Duration::from_millis(300)).is_none(),
            "server exited before the client read its echo"
        );
        server.signal(libc::SIGINT);
        let status = server
            .wait_exit(STEP_TIMEOUT)
            .expect("second signal did not end the server");
        assert_eq!(status.code(), Some(130), "log:\n{}", server.stderr_text());

        let _ = s.shutdown(Shutdown::Both);
        flooder.join().unwrap();
    }
}

/// The status code of `GET /healthz` at `metrics`, on a fresh connection.
fn healthz(metrics: SocketAddr) -> u16 {
    use std::io::Read;
    let mut c = connect(metrics);
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("answer");
    (answer.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// Waits until `/healthz` at `metrics` answers `status`.
#[track_caller]
fn wait_healthz(metrics: SocketAddr, status: u16) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while healthz(metrics) != status {
        assert!(Instant::now() < deadline, "/healthz never said {status}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// `--drain-delay`: the first SIGTERM turns `/healthz` to 503 while the
/// listener still accepts and echoes new clients; after the delay the
/// usual shutdown closes it and the server exits 0. (A server without a
/// drain delay closes the listener as `/healthz` turns: the connection
/// made after the 503 is refused.)
#[test]
fn drain_delay_says_503_and_keeps_accepting_then_shuts_down() {
    let mut server = Server::spawn(&["--metrics", "127.0.0.1:0", "--drain-delay", "3"]);
    let metrics = util::listening_addr(&server, "http", "(metrics)");
    assert_eq!(healthz(metrics), 200);
    let mut before = connect(server.addr);
    assert_echo(&mut before, b"before the signal");
    server.signal(libc::SIGTERM);
    wait_healthz(metrics, 503);
    // Still accepting after /healthz turned 503, and serving everyone.
    let mut after = connect(server.addr);
    assert_echo(&mut after, b"accepted after /healthz said 503");
    assert_echo(&mut before, b"still served");
    drop((before, after));
    server.wait_log("shutting down: listeners closed");
    wait_refused(server.addr);
    let status = server.wait_exit(STEP_TIMEOUT).expect("exits");
    assert!(status.success(), "{status}");
}
