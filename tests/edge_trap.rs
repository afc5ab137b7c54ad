//! The edge-triggered trap of `examples/edge_trap.rs`, shown and fixed.
//!
//! A client sends two messages in one write, so they arrive together and
//! raise one edge, and together they are longer than the example's one
//! 16-byte read. `--read once` echoes the first and strands the second
//! (checked with a bounded wait); `--read drain` echoes both; so does
//! `echo-reactor`, on every backend, also when the pair is larger than its
//! own 64 KiB read (run in-process: the library's loop is what is shown).
//! Loopback only; every wait is bounded.

#[path = "util/example.rs"]
mod example;

use example::Example;
mod util;

use echo_reactor::Config;
use util::inprocess::{self, InProcess};

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Exactly one of the example's reads (its `READ_SIZE`, 16 bytes).
const FIRST: &[u8] = b"first: 16 bytes\n";
/// The message that arrives in the same edge.
const SECOND: &[u8] = b"second, same edge\n";
/// How long the stranded message is waited for. An echo on loopback
/// takes microseconds; the trap holds the bytes forever.
const TRAP_WAIT: Duration = Duration::from_secs(1);
/// Bound on every wait that should succeed; generous on a shared machine.
const STEP: Duration = Duration::from_secs(10);

/// The `edge_trap` example, built once per test run.
fn example() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| example::example("edge_trap"))
}

/// Reads until `len` bytes came back, the peer closed, or `within` passed;
/// returns what came.
fn read_up_to(stream: &mut TcpStream, len: usize, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < len {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        let want = buf.len().min(len - got.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    got
}

/// Sends `first` and `second` in one write from a second thread (so a
/// large pair cannot deadlock against an echo nobody reads yet) and
/// returns what comes back within `STEP`.
fn echo_pair(addr: SocketAddr, first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut client = TcpStream::connect(addr).expect("connect");
    let pair = [first, second].concat();
    let mut writer = client.try_clone().unwrap();
    thread::scope(|s| {
        s.spawn(|| writer.write_all(&pair).expect("send the pair"));
        read_up_to(&mut client, pair.len(), STEP)
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--read once`: the first message comes back, the second stays in the
/// server's socket, where no edge will ever report it. It is stranded,
/// not lost: the client's next byte raises a new edge, and the loop reads
/// 16 bytes more.
#[test]
fn read_once_strands_the_second_message() {
    let server = Example::start(example(), &["--read", "once"]);
    let mut client = TcpStream::connect(server.addr).expect("connect");
    client.write_all(&[FIRST, SECOND].concat()).unwrap();

    let first = read_up_to(&mut client, FIRST.len(), STEP);
    assert_eq!(text(&first), text(FIRST));
    let late = read_up_to(&mut client, SECOND.len(), TRAP_WAIT);
    assert!(late.is_empty(), "the trap did not hold: {:?}", text(&late));

    client.write_all(b"!").unwrap();
    let released = read_up_to(&mut client, 16, STEP);
    assert_eq!(text(&released), text(&SECOND[..16]));
}

/// `--read drain`: the same exchange comes back whole.
#[test]
fn read_drain_echoes_both_messages() {
    let server = Example::start(example(), &["--read", "drain"]);
    let got = echo_pair(server.addr, FIRST, SECOND);
    assert_eq!(text(&got), text(&[FIRST, SECOND].concat()));
}

/// The real server echoes the same pair on every backend, and a pair of
/// 128 KiB messages, four of its 64 KiB reads: it reads once per turn and
/// keeps the readiness on its run-next queue (`connection/mod.rs`, rule 2), so
/// the rest needs no new edge. Without that queue the pair comes back
/// short.
#[test]
fn echo_reactor_echoes_both_messages_on_every_backend() {
    let big_first: Vec<u8> = (0..128 * 1024).map(|i| (i % 251) as u8).collect();
    let big_second: Vec<u8> = (0..128 * 1024).map(|i| (i % 241) as u8).collect();
    for backend in util::BACKENDS {
        // In-process: the library's loop is what is shown, not a program.
        let server = InProcess::start(Config {
            backend: inprocess::backend_named(backend),
            ..inprocess::config()
        });
        let got = echo_pair(server.addr, FIRST, SECOND);
        assert_eq!(text(&got), text(&[FIRST, SECOND].concat()), "{backend}");
        let got = echo_pair(server.addr, &big_first, &big_second);
        assert!(
            got == [&big_first[..], &big_second[..]].concat(),
            "{backend}: {} of {} bytes came back",
            got.len(),
            big_first.len() + big_second.len()
        );
    }
}
