//! Echo behaviour a client sees: byte-for-byte integrity (binary data,
//! NUL bytes, many connections, long streams), half-close, and a reset on
//! one connection leaving the others alone. The server runs in-process
//! (`util::inprocess`).

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;

use util::inprocess::{self, InProcess};
use util::{assert_echo, connect, pattern, read_n};

/// A plain echo server on this thread's backend.
fn start() -> InProcess {
    InProcess::start(inprocess::config())
}

/// Writes `data` on a clone of `s` from a thread while this thread reads
/// the echo back, in order; asserts every byte. Closes the write half
/// afterwards when `then_shutdown` is set.
#[track_caller]
fn stream_and_verify(s: &mut TcpStream, data: Arc<Vec<u8>>, then_shutdown: bool) {
    let mut w = s.try_clone().expect("clone");
    let to_send = Arc::clone(&data);
    let writer = thread::spawn(move || {
        for chunk in to_send.chunks(64 * 1024) {
            w.write_all(chunk).expect("write");
        }
        if then_shutdown {
            w.shutdown(Shutdown::Write).expect("shutdown(Write)");
        }
    });
    util::read_exactly_checking(s, &data);
    writer.join().expect("writer thread");
}

/// Reads until EOF; on a timeout, panics saying how much had arrived, so a
/// missing FIN is told apart from missing data.
#[track_caller]
fn read_until_fin(s: &mut TcpStream, expected: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "no FIN: {} of {expected} bytes arrived, then {e}",
                out.len()
            ),
        }
    }
}

/// Writes `data` without reading until the server has paused reading
/// (its counters show a new backpressure pause) and the client's socket
/// takes no more: every buffer on the way is full. Returns how much was
/// sent. Panics if everything fit.
#[track_caller]
fn write_until_stalled(server: &InProcess, s: &mut TcpStream, data: &[u8]) -> usize {
    let pauses = server.latest().map_or(0, |s| s.backpressure_pauses);
    s.set_nonblocking(true).unwrap();
    let (mut sent, mut paused) = (0, false);
    while sent < data.len() {
        match s.write(&data[sent..]) {
            Ok(n) => sent += n,
            // Full, and the server no longer reads: nothing more will fit.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && paused => break,
            // Full for now: the server may still be reading. Wait for it
            // to pause, then fill what it read meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                server.wait_stats_ever("a backpressure pause", |s| s.backpressure_pauses > pauses);
                paused = true;
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    assert!(
        sent < data.len(),
        "test precondition: {} bytes fit without the client reading",
        data.len()
    );
    sent
}

// --- Integrity ------------------------------------------------------------

on_every_backend! {
    fn echoes_binary_bytes_including_nul_exactly() {
        let server = start();
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"\0");
        assert_echo(&mut s, b"a\0b\r\n\xff\xfe\0\0\x80");
        assert_echo(&mut s, &(0..=255u8).collect::<Vec<u8>>());
        assert_echo(&mut s, &pattern(1, 10_000));
    }

    fn fifty_concurrent_connections_each_get_their_own_data_back() {
        const CLIENTS: usize = 50;
        const LEN: usize = 256 * 1024;
        let server = start();
        let addr = server.addr;
        // Everyone connects first, then all stream at the same time.
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    let mut s = connect(addr);
                    barrier.wait();
                    stream_and_verify(&mut s, Arc::new(pattern(1000 + i as u64, LEN)), false);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
    }

    fn sixteen_mib_stream_arrives_in_order() {
        let server = start();
        let mut s = connect(server.addr);
        stream_and_verify(&mut s, Arc::new(pattern(16, 16 << 20)), false);
        // The connection is still usable afterwards.
        assert_echo(&mut s, b"still here");
    }

    // --- Half-close -----------------------------------------------------------

    fn half_close_echoes_everything_then_fin() {
        let server = start();
        let mut s = connect(server.addr);
        let data = Arc::new(pattern(7, 1 << 20));
        // Writer shuts its half down right after the last byte; the reader must
        // still get all of it, then EOF.
        stream_and_verify(&mut s, Arc::clone(&data), true);
        let rest = read_until_fin(&mut s, 0);
        assert!(rest.is_empty(), "{} bytes more than were sent", rest.len());
    }

    fn half_close_after_small_write_returns_data_then_eof() {
        let server = start();
        let mut s = connect(server.addr);
        s.write_all(b"last words\0").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_until_fin(&mut s, 11), b"last words\0");
    }

    fn half_close_without_data_gets_fin() {
        let server = start();
        let mut s = connect(server.addr);
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_until_fin(&mut s, 0), b"");
    }

    fn half_close_while_backpressured_echoes_everything_then_fin() {
        let server = start();
        let mut s = connect(server.addr);
        // Fill every buffer without reading (the server pauses reading), then
        // half-close: the FIN queues up behind data the server has not read.
        let data = pattern(8, 32 << 20);
        let sent = write_until_stalled(&server, &mut s, &data);
        s.shutdown(Shutdown::Write).unwrap();
        let got = read_until_fin(&mut s, sent);
        assert_eq!(got.len(), sent, "echoed length differs from sent length");
        assert!(got == data[..sent], "echo differs from sent data");
    }

    // --- Resets ---------------------------------------------------------------

    fn reset_mid_stream_closes_only_that_connection() {
        let server = start();
        let mut keep = connect(server.addr);
        assert_echo(&mut keep, b"before");

        // The victim has unread echo pending in the server (it never reads),
        // then resets.
        let mut victim = connect(server.addr);
        assert_echo(&mut victim, b"hello");
        // Write without reading until every buffer is full, so the server is
        // paused with output pending when the reset comes.
        let big = pattern(3, 32 << 20);
        write_until_stalled(&server, &mut victim, &big);
        // The stream was being echoed; then reset.
        let first = read_n(&mut victim, 1024);
        assert!(first == big[..1024], "echo differs");
        util::set_linger_zero(&victim);
        drop(victim);

        // The server noticed and closed the reset connection...
        server.wait_stats("closed=1", |s| s.closed == 1);
        // ...and the other one keeps echoing, as do new ones.
        for i in 0..100u64 {
            assert_echo(&mut keep, &pattern(i, 1000));
        }
        let mut fresh = connect(server.addr);
        assert_echo(&mut fresh, b"after");
        let last = server.wait_stats("active=2", |s| s.active == 2);
        assert_eq!(last.closed, 1, "{last:?}");
        assert!(
            last.backpressure_pauses >= 1,
            "test precondition: the victim was reset while paused: {last:?}"
        );
    }
}
