//! Loops that break on purpose (`examples/broken_*.rs`), each shown
//! failing, beside `echo-reactor` holding under the same client on every
//! backend. (The fifth, reading once per edge, is `tests/edge_trap.rs`.)
//!
//! - always-writable interest on poll(2): the example spins with one idle
//!   client; the reactor sleeps;
//! - no backpressure: the example's memory grows by what a client that
//!   never reads sends; the reactor's stays put;
//! - close with unread input: the example's client gets a reset and loses
//!   the tail of its answer; the reactor's gets every byte, then EOF;
//! - accept until `EMFILE` without a spare: the example spins while a
//!   connection waits; the reactor sheds it, sleeps, and serves again once
//!   descriptors free up.
//!
//! These are behaviour checks, not benchmarks: spinning means wanting a
//! CPU at least half of a 2 s window (`/proc/PID/schedstat`: a spin is
//! always runnable, even when a busy machine gives it little CPU), sleeping
//! means using at most a tenth of a core (`/proc/PID/stat`). The tests take
//! turns (`serial`), so that one spinning example does not slow another's
//! measurement on a two-core machine. Loopback only; every
//! wait is bounded; every process is killed on drop.

#[path = "util/example.rs"]
mod example;
mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use example::{Example, cpu_use};
use util::{STEP_TIMEOUT, Server, assert_echo, connect, proc};

/// The window CPU use is measured over.
const WINDOW: Duration = Duration::from_secs(2);
/// A spinning loop is runnable (on a CPU, or waiting for one) for at
/// least this share of the window, in percent; a real spin is close to
/// 100 however loaded the machine is. The CPU it gets is printed, not
/// asserted: on a busy two-core machine it may be well under a core.
const SPINNING: u64 = 50;
/// A sleeping loop uses at most this share of a core, and is runnable at
/// most this share of the window (percent). A real sleep is 0.
const SLEEPING: u64 = 10;

/// One test at a time, so that a spinning example cannot take the CPU
/// another test measures.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Asserts that `pid` spins (`spins`) or sleeps over [`WINDOW`].
#[track_caller]
fn assert_cpu(pid: u32, spins: bool, what: &str) {
    let used = cpu_use(&[pid], WINDOW)[0];
    let (cpu, runnable) = (used.percent(), used.runnable_percent());
    eprintln!(
        "{what}: {} CPU ticks of {} ({cpu}% of a core), runnable {runnable}% of the time",
        used.ticks, used.window_ticks
    );
    if spins {
        assert!(runnable >= SPINNING, "{what}: expected a spin, {used:?}");
    } else {
        assert!(
            cpu <= SLEEPING && runnable <= SLEEPING,
            "{what}: expected sleep, {used:?}"
        );
    }
}

// --- Always-writable interest --------------------------------------------

#[test]
fn always_writable_interest_spins_with_one_idle_client() {
    let _turn = serial();
    let server = Example::spawn("broken_always_writable", &[]);
    // Without clients it sleeps: the spin is the client's POLLOUT.
    assert_cpu(server.pid(), false, "always-writable, no client");
    let mut idle = connect(server.addr);
    assert_echo(&mut idle, b"one line, then silence\n");
    assert_cpu(server.pid(), true, "always-writable, one idle client");
    // It is a working echo server otherwise.
    assert_echo(&mut idle, b"still echoes\n");
}

on_every_backend! {
    fn echo_reactor_sleeps_with_an_idle_client() {
        let _turn = serial();
        let server = Server::spawn(&[]);
        let mut idle = connect(server.addr);
        assert_echo(&mut idle, b"one line, then silence\n");
        assert_cpu(server.pid(), false, &format!("echo-reactor --backend {}, one idle client", util::backend()));
    }
}

// --- No backpressure -----------------------------------------------------

/// What the client that never reads sends.
const FLOOD: usize = 64 << 20;

fn flood_data() -> Arc<Vec<u8>> {
    static DATA: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
    Arc::clone(DATA.get_or_init(|| Arc::new(util::pattern(7, FLOOD))))
}

#[test]
fn without_backpressure_memory_grows_by_what_the_client_sends() {
    let _turn = serial();
    let server = Example::spawn("broken_no_backpressure", &[]);
    let mut s = connect(server.addr);
    let flood = proc::flood_without_reading(server.pid(), &mut s, flood_data());
    let grew_kib = flood.rss_peak_kib.saturating_sub(flood.rss_before_kib);
    eprintln!("no backpressure: {FLOOD} bytes sent unread, RSS grew {grew_kib} KiB; {flood:?}");
    assert!(
        flood.stuck_at.is_none(),
        "the client was stopped after {:?} bytes: the example pushed back",
        flood.stuck_at
    );
    assert!(
        grew_kib >= (FLOOD as u64 / 1024) * 3 / 4,
        "RSS grew only {grew_kib} KiB for {FLOOD} bytes held"
    );
    assert_eq!(flood.first_difference, None, "the echo differs");
}

on_every_backend! {
    fn echo_reactor_memory_stays_bounded_when_the_client_does_not_read() {
        let _turn = serial();
        let server = Server::spawn(&[]);
        let mut s = connect(server.addr);
        // Asserts the client got stuck (the server stopped reading) and
        // the whole echo came back in order once it read.
        let (before, peak) = util::flood_without_reading_then_verify(&server, &mut s, flood_data());
        let grew_kib = peak.saturating_sub(before);
        eprintln!("echo-reactor --backend {}: RSS grew {grew_kib} KiB", util::backend());
        assert!(grew_kib < 8 * 1024, "RSS grew {grew_kib} KiB");
    }
}

// --- Close with unread input ---------------------------------------------

/// The lines the client sends, then `exit`, then more: answered is
/// `REQUEST_LINES` lines of 64 bytes (48 KiB), far more than the client's
/// small receive buffer holds, all of which fits in the server's send
/// buffer (64 KiB asked for, doubled by the kernel).
const REQUEST_LINES: usize = 768;
/// What the client sends after `exit`: more than the example's one read
/// takes, so some is still unread in the kernel when the example closes.
const AFTER_EXIT: usize = 16 * 1024;

fn request() -> Vec<u8> {
    (0..REQUEST_LINES)
        .flat_map(|i| format!("line {i:05} {}\n", "x".repeat(52)).into_bytes())
        .collect()
}

/// How one conversation ended for the client.
#[derive(Debug)]
struct Ending {
    /// The answer bytes it received.
    got: Vec<u8>,
    /// `None` for EOF, else the error that ended its reads.
    error: Option<ErrorKind>,
}

/// Sends the request lines, `exit` and more, reads nothing until the
/// server is done with the connection (its socket has left ESTABLISHED:
/// FIN sent, or reset and gone), then reads until EOF or an error.
///
/// The client's receive buffer is made small, so most of the answer is
/// still in the server's send queue when the server finishes: delivered
/// after a FIN, destroyed by a reset.
fn converse(addr: SocketAddr) -> Ending {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).expect("connect");
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(STEP_TIMEOUT)).unwrap();
    let me = s.local_addr().unwrap();

    let mut sent = request();
    sent.extend_from_slice(b"exit\n");
    sent.extend(b"not read\n".iter().cycle().take(AFTER_EXIT));
    s.write_all(&sent).expect("send the request");

    let deadline = Instant::now() + STEP_TIMEOUT;
    while proc::tcp_sockets(addr.port())
        .iter()
        .any(|t| t.peer == me && t.state == "ESTABLISHED")
    {
        assert!(
            Instant::now() < deadline,
            "the server never finished its answer: {:?}",
            proc::tcp_sockets(addr.port())
        );
        thread::sleep(Duration::from_millis(10));
    }

    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let error = loop {
        match s.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Some(e.kind()),
        }
    };
    Ending { got, error }
}

#[test]
fn close_with_unread_input_resets_and_loses_the_answers_tail() {
    let _turn = serial();
    let server = Example::spawn("broken_close_unread", &[]);
    let answer = request();
    let end = converse(server.addr);
    eprintln!(
        "close with unread input: {} of {} answer bytes, then {:?}",
        end.got.len(),
        answer.len(),
        end.error
    );
    assert_eq!(end.error, Some(ErrorKind::ConnectionReset), "no reset");
    assert!(
        end.got.len() < answer.len(),
        "all {} bytes arrived despite the reset",
        answer.len()
    );
    assert!(
        answer.starts_with(&end.got),
        "what arrived is not the answer's start"
    );
}

on_every_backend! {
    fn echo_reactor_lingers_and_delivers_every_answer_byte_then_fin() {
        let _turn = serial();
        let server = Server::spawn(&["--mode", "line"]);
        let answer = request();
        let end = converse(server.addr);
        eprintln!(
            "echo-reactor --backend {}: {} of {} answer bytes, then {:?}",
            util::backend(),
            end.got.len(),
            answer.len(),
            end.error
        );
        assert_eq!(end.error, None, "the answer ended in an error, not EOF");
        assert!(end.got == answer, "{} of {} bytes, or different", end.got.len(), answer.len());
    }
}

// --- Accept until EMFILE -------------------------------------------------

/// The descriptor limit of the example (soft and hard).
const EXAMPLE_NOFILE: usize = 16;
/// The descriptor limit of `echo-reactor`, which holds more of its own
/// (poller, signal pipe, spare); the same as `tests/limits.rs`.
const REACTOR_NOFILE: u64 = 32;

/// Open descriptors of `pid` numbered below `limit`: when there are
/// `limit`, `accept` fails with `EMFILE`. (Descriptors inherited from the
/// test runner may sit above the limit, so `proc::fd_count` would say
/// "full" too early.)
fn fds_below(pid: u32, limit: usize) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .filter(|&fd| fd < limit)
        .count()
}

/// A client that was echoed.
fn served(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    assert_echo(&mut s, b"ping");
    s
}

/// Connects and sends `ping`; `Some` of the client if it was echoed,
/// `None` if the connection was closed without a word (EOF or reset).
/// Panics if neither happens in time.
fn served_or_closed(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = connect(addr);
    // A connection closed at once may fail the write: fine.
    let _ = s.write_all(b"ping");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got == b"ping" {
                    return Some(s);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("a new connection was neither served nor closed (got {got:?})")
            }
            Err(_) => break,
        }
    }
    assert!(got.is_empty(), "closed with {got:?}");
    None
}

#[test]
fn emfile_without_a_spare_spins_while_a_connection_waits() {
    let _turn = serial();
    let server = Example::spawn("broken_emfile", &["--nofile", &EXAMPLE_NOFILE.to_string()]);
    let pid = server.pid();
    // Fill its descriptor table with served clients.
    let mut clients = Vec::new();
    while fds_below(pid, EXAMPLE_NOFILE) < EXAMPLE_NOFILE {
        assert!(
            clients.len() < EXAMPLE_NOFILE,
            "the limit was never reached"
        );
        clients.push(served(server.addr));
    }
    assert_cpu(pid, false, "emfile example at its limit, nothing waiting");
    // One more: the kernel completes it, the example cannot accept it.
    let mut waiting = connect(server.addr);
    waiting.write_all(b"ping").unwrap();
    assert_cpu(pid, true, "emfile example, one connection waiting");
    // A client leaves: the waiting one is taken, and the spin ends.
    clients.pop();
    let mut back = [0u8; 4];
    waiting
        .read_exact(&mut back)
        .expect("the waiting client's echo");
    assert_eq!(&back, b"ping");
    assert_cpu(pid, false, "emfile example after a client left");
}

on_every_backend! {
    fn echo_reactor_sheds_at_emfile_sleeps_and_serves_again() {
        let _turn = serial();
        let server = Server::spawn_with_nofile(&["--max-connections", "100000"], REACTOR_NOFILE);
        let pid = server.pid();
        let mut clients = Vec::new();
        while let Some(s) = served_or_closed(server.addr) {
            clients.push(s);
            assert!(clients.len() < REACTOR_NOFILE as usize, "the limit was never reached");
        }
        // At the limit, a client arriving mid-window is shed at once, and
        // the loop sleeps before and after.
        let what = format!("echo-reactor --backend {} at its limit", util::backend());
        thread::scope(|scope| {
            let knock = scope.spawn(|| {
                thread::sleep(WINDOW / 2);
                served_or_closed(server.addr).is_none()
            });
            assert_cpu(pid, false, &what);
            assert!(knock.join().unwrap(), "served past the descriptor limit");
        });
        for s in clients.iter_mut() {
            assert_echo(s, b"still");
        }
        // Clients leave: new ones are served again.
        clients.truncate(clients.len() / 2);
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut again = loop {
            if let Some(s) = served_or_closed(server.addr) {
                break s;
            }
            assert!(Instant::now() < deadline, "not served again after clients left");
            thread::sleep(Duration::from_millis(20));
        };
        assert_echo(&mut again, b"served again");
    }
}
