//! Shared helpers for the black-box tests. A test that needs a server runs
//! one in its own process ([`inprocess::InProcess`]: the library on a
//! thread, its counters read from the library). A test of what only a
//! process has (the CLI, the log, exit status, `--workers`, signals, what
//! `/proc` says about the server) starts the real `echo-reactor` binary on
//! `127.0.0.1:0` ([`Server`]), learns its address from its first stdout
//! line, and reads what the kernel says about the process. The reading of
//! `/proc`, of the `listening on` lines and the flooding client live in
//! [`proc`], which the benches compile too (`benches/support/mod.rs`).
//!
//! # One suite, three backends
//!
//! A test of the server's behaviour is written once, inside
//! [`on_every_backend!`], which stamps it out as one `#[test]` per backend:
//! `half_close_echoes_everything_then_fin::{epoll, poll, select}`. Each
//! stamped test names its backend for its own thread ([`BACKEND`]);
//! [`inprocess::config`] puts it in `Config::backend`, and [`Server::spawn`]
//! passes it on as `--backend`, so the test body is the same code for all
//! three. Filter with the backend's name:
//! `cargo test -- ::select`. Tests that never start a serving loop (usage
//! errors) stay plain `#[test]`s; the stress client's tests against stand-ins
//! live in `echo-bench/tests/`.
//!
//! Every test binary includes this module with `mod util;` and uses only
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub mod inprocess;
pub mod proc;

// The names the tests used before `proc` existed; like the rest of this
// module, each test binary uses some of them.
#[allow(unused_imports)]
pub use proc::{counters, fd_count, tcp_listening_addr as parse_listening, vm_rss_kib};

/// How long any single blocking step of a test may wait before it fails.
/// Generous: the machine is shared, and these are behaviour checks, not timings.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

thread_local! {
    /// The backend the servers this thread spawns run on; set by the
    /// tests [`on_every_backend!`] stamps out. Plain `#[test]`s get the
    /// default, epoll.
    pub static BACKEND: std::cell::Cell<&'static str> = const { std::cell::Cell::new("epoll") };
}

/// Set (to anything) by `.ci/run`: a test that needs an outside program
/// fails when the program is missing, instead of skipping.
pub const REQUIRE_EXTERNAL: &str = "ECHO_REACTOR_REQUIRE_EXTERNAL";

/// Whether the outside program `program` runs here (`program --version`
/// starts). A plain `cargo test` needs nothing but Rust, so when it does
/// not run, `what` is skipped: one loud line on the terminal (written to
/// the real stderr, past the test harness's capture) says what and how to
/// get it run, and this returns false. With [`REQUIRE_EXTERNAL`] set, a
/// missing program fails the test instead: CI never passes on a skip.
#[track_caller]
pub fn have_program(program: &str, what: &str) -> bool {
    let runs = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if runs {
        return true;
    }
    let package = match program {
        "systemd-socket-activate" => "systemd",
        _ => "prometheus, which has prometheus and promtool",
    };
    let why = format!(
        "`{program}` is not on PATH (Debian: apt-get install {package}; then run cargo \
         test again)"
    );
    if std::env::var_os(REQUIRE_EXTERNAL).is_some() {
        panic!("{what} cannot run: {why}; {REQUIRE_EXTERNAL} is set, so that is a failure");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "*** SKIPPED {what}: {why} ***");
    false
}

/// The backends every behaviour test runs on.
pub const BACKENDS: [&str; 3] = ["epoll", "poll", "select"];

/// Runs `test` with this thread's servers on `backend`.
pub fn on_backend(backend: &'static str, test: fn()) {
    BACKEND.with(|b| b.set(backend));
    test();
}

/// The backend this thread's servers run on.
pub fn backend() -> &'static str {
    BACKEND.with(|b| b.get())
}

/// Declares each `fn name() { ... }` once and a `#[test]` for it on every
/// backend, in a module of the same name: `name::epoll`, `name::poll`,
/// `name::select`. Attributes (`#[ignore]`, doc comments) apply to all.
#[macro_export]
macro_rules! on_every_backend {
    ($($(#[$attr:meta])* fn $name:ident() $body:block)*) => {$(
        $(#[$attr])*
        fn $name() $body

        mod $name {
            $(#[$attr])*
            #[test]
            fn epoll() {
                $crate::util::on_backend("epoll", super::$name)
            }
            $(#[$attr])*
            #[test]
            fn poll() {
                $crate::util::on_backend("poll", super::$name)
            }
            $(#[$attr])*
            #[test]
            fn select() {
                $crate::util::on_backend("select", super::$name)
            }
        }
    )*};
}

/// A running `echo-reactor` child process. Killed on drop.
pub struct Server {
    child: Child,
    /// The first listening address the server printed.
    pub addr: SocketAddr,
    /// Every `listening on ...` line the server printed, in order.
    pub listening: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server with `args`; adds `--listen 127.0.0.1:0` unless
    /// `args` already has a `--listen`, and `--backend` of this thread's
    /// [`BACKEND`] unless `args` has a `--backend`.
    pub fn spawn(args: &[&str]) -> Server {
        Server::spawn_with(args, None, "info")
    }

    /// Like [`Server::spawn`], logging at `rust_log` (a `RUST_LOG` filter).
    pub fn spawn_logging(args: &[&str], rust_log: &str) -> Server {
        Server::spawn_with(args, None, rust_log)
    }

    /// Like [`Server::spawn`], with `RLIMIT_NOFILE` (soft and hard) set to
    /// `limit` in the child only.
    pub fn spawn_with_nofile(args: &[&str], limit: u64) -> Server {
        Server::spawn_with(args, Some(limit), "info")
    }

    /// Like [`Server::spawn_logging`], running the server binary from
    /// `program` (a copy of it, say).
    pub fn spawn_program(program: &std::path::Path, args: &[&str], rust_log: &str) -> Server {
        Server::spawn_from(Command::new(program), args, None, rust_log)
    }

    fn spawn_with(args: &[&str], nofile: Option<u64>, rust_log: &str) -> Server {
        let program = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
        Server::spawn_from(program, args, nofile, rust_log)
    }

    fn spawn_from(mut cmd: Command, args: &[&str], nofile: Option<u64>, rust_log: &str) -> Server {
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--backend") {
            cmd.args(["--backend", backend()]);
        }
        cmd.args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(limit) = nofile {
            // SAFETY: setrlimit is async-signal-safe and touches only the
            // child's own limits; the closure allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: limit as libc::rlim_t,
                        rlim_max: limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Server::start(cmd)
    }

    /// Runs `cmd` as it is (a wrapper that runs the server, say), with
    /// stdout and stderr piped, and waits for its `listening on` lines.
    pub fn spawn_command(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Server::start(cmd)
    }

    fn start(mut cmd: Command) -> Server {
        let mut child = cmd.spawn().expect("spawn echo-reactor");

        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        // The listening lines come first, before the loop starts; collect
        // them on a thread so a server that dies early fails the test
        // instead of hanging it.
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listening = Vec::new();
        let first = rx.recv_timeout(STEP_TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "server printed no listening line; stderr:\n{}",
                stderr.lock().unwrap()
            )
        });
        listening.push(first);
        // Further listeners print at once after the first one.
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            listening.push(line);
        }
        let addr = parse_listening(&listening[0]);
        Server {
            child,
            addr,
            listening,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far (its log).
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`) to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    /// Waits up to `timeout` for the server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the server's log contains `needle`, or panics.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let text = self.stderr_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "log never contained {needle:?}; log:\n{text}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking client socket with generous read/write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(STEP_TIMEOUT)).unwrap();
    s
}

/// `len` deterministic pseudo-random bytes (xorshift), NUL and 0xFF included.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Reads exactly `len` bytes (panics on EOF or timeout).
pub fn read_n(s: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until EOF; returns what arrived.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read_to_end");
    out
}

/// The CPU a process uses from a starting point on, to catch a loop that
/// spins instead of sleeping.
pub struct CpuWatch {
    pid: u32,
    ticks: u64,
    since: Instant,
}

impl CpuWatch {
    pub fn start(pid: u32) -> CpuWatch {
        CpuWatch {
            pid,
            ticks: proc::cpu_ticks(pid).total(),
            since: Instant::now(),
        }
    }

    /// Asserts the process used less than half of one core since
    /// [`CpuWatch::start`] (`when` says in what state, for the message);
    /// returns the time watched.
    #[track_caller]
    pub fn assert_under_half_a_core(&self, when: &str) -> Duration {
        let ticks_per_sec = proc::clock_ticks_per_sec();
        let elapsed = self.since.elapsed();
        let used = proc::cpu_ticks(self.pid).total() - self.ticks;
        let full_core = ticks_per_sec * elapsed.as_millis() as u64 / 1000;
        assert!(
            used * 2 < full_core,
            "server used {used} CPU ticks in {elapsed:?} {when} (spinning?)"
        );
        elapsed
    }
}

// ---------------------------------------------------------------------------
// Helpers added with the core's integration tests.
// ---------------------------------------------------------------------------

/// Writes `data` and reads the same number of bytes back; asserts they are
/// identical.
#[track_caller]
pub fn assert_echo(s: &mut TcpStream, data: &[u8]) {
    use std::io::Write;
    s.write_all(data).expect("write");
    let back = read_n(s, data.len());
    assert!(back == data, "echo differs from what was sent");
}

/// Connects to `addr` from source address `src` (port chosen by the kernel),
/// with the usual generous timeouts.
pub fn connect_from(src: std::net::IpAddr, addr: SocketAddr) -> TcpStream {
    let s = proc::connect_from(src, addr);
    s.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(STEP_TIMEOUT)).unwrap();
    s
}

/// Sets `SO_LINGER` to zero, so that dropping `s` sends a reset instead of
/// a FIN.
pub fn set_linger_zero(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
}

/// Sends SIGTERM, waits for the server to exit, and returns its exit status
/// and its whole log (once the `final stats:` line is in, if it comes).
#[track_caller]
pub fn stop(server: &mut Server) -> (ExitStatus, String) {
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(STEP_TIMEOUT)
        .unwrap_or_else(|| panic!("server did not exit after SIGTERM"));
    // The log is read on a thread; give it a moment to see the last lines.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !server.stderr_text().contains("final stats:") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    (status, server.stderr_text())
}

/// Periodic `stats:` lines of `log` (not the `final stats:` line), parsed.
pub fn periodic_stats(log: &str) -> Vec<HashMap<String, u64>> {
    log.lines()
        .filter(|l| l.contains("stats:") && !l.contains("final stats:"))
        .map(|l| counters(l, "stats:"))
        .collect()
}

/// Waits until the latest periodic `stats:` line satisfies `pred` (the
/// server must run with `--stats-interval`); returns its counters.
#[track_caller]
pub fn wait_stats(
    server: &Server,
    what: &str,
    pred: impl Fn(&HashMap<String, u64>) -> bool,
) -> HashMap<String, u64> {
    poll_stats(server, what, |mut lines| {
        lines.pop().filter(|last| pred(last))
    })
}

/// Waits until any periodic `stats:` line so far satisfies `pred` (not
/// only the latest: a state the server passes through counts); returns
/// the first that does.
#[track_caller]
pub fn wait_stats_ever(
    server: &Server,
    what: &str,
    pred: impl Fn(&HashMap<String, u64>) -> bool,
) -> HashMap<String, u64> {
    poll_stats(server, what, |lines| lines.into_iter().find(|s| pred(s)))
}

/// Reads the server's periodic stats every 20 ms until `pick` finds a
/// line in them, or panics after [`STEP_TIMEOUT`] with the log.
#[track_caller]
fn poll_stats(
    server: &Server,
    what: &str,
    pick: impl Fn(Vec<HashMap<String, u64>>) -> Option<HashMap<String, u64>>,
) -> HashMap<String, u64> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let log = server.stderr_text();
        if let Some(found) = pick(periodic_stats(&log)) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "periodic stats never showed {what}; log:\n{log}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The counter `key` of `stats`, or a panic naming the missing key.
#[track_caller]
pub fn get(stats: &HashMap<String, u64>, key: &str) -> u64 {
    *stats
        .get(key)
        .unwrap_or_else(|| panic!("no counter {key:?} in {stats:?}"))
}

/// Runs the binary with exactly `args` (no default `--listen`), expecting
/// it to exit on its own; returns exit status, stdout and stderr. Kills it
/// and panics if it is still running after [`STEP_TIMEOUT`].
#[track_caller]
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn echo-reactor");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + STEP_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "echo-reactor {args:?} did not exit by itself; stderr:\n{}",
                err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Whether this machine can bind a TCP socket on the IPv6 loopback.
pub fn have_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

// ---------------------------------------------------------------------------
// Helpers added with the protocols, UDP and daytime services.
// ---------------------------------------------------------------------------

/// The address of the first `listening on SCHEME://ADDR` line whose suffix
/// (after the address) is `tag` ("" for plain echo, "(daytime)").
#[track_caller]
pub fn listening_addr(server: &Server, scheme: &str, tag: &str) -> SocketAddr {
    server
        .listening
        .iter()
        .filter_map(|line| proc::listening(line))
        .find(|l| l.scheme == scheme && l.tag == tag)
        .map(|l| l.addr)
        .unwrap_or_else(|| {
            panic!(
                "no `listening on {scheme}://ADDR {tag}` line in {:?}",
                server.listening
            )
        })
}

/// A UDP socket on an ephemeral loopback port with the usual timeout.
pub fn udp_client() -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp client");
    s.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    s
}

/// `body` behind its 4-byte big-endian length (frame mode's wire format).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// Writes `data` from a thread while this thread reads nothing until the
/// writer is stuck, then reads the echo back and compares it
/// ([`proc::flood_without_reading`]); returns the server's RSS (KiB) before
/// and its peak meanwhile. Asserts that the writer did get stuck (the
/// server stopped reading) and that every byte came back in order.
#[track_caller]
pub fn flood_without_reading_then_verify(
    server: &Server,
    s: &mut TcpStream,
    data: Arc<Vec<u8>>,
) -> (u64, u64) {
    let flood = proc::flood_without_reading(server.pid(), s, Arc::clone(&data));
    assert!(
        flood.stuck_at.is_some(),
        "all {} bytes went through without the client reading: unbounded buffering",
        data.len()
    );
    if let Some(at) = flood.first_difference {
        panic!("echo differs from sent data at byte {at}");
    }
    (flood.rss_before_kib, flood.rss_peak_kib)
}

/// Reads `expected.len()` bytes from `s`, comparing each chunk as it
/// arrives (so a mismatch names its offset); panics on EOF or a difference.
#[track_caller]
pub fn read_exactly_checking(s: &mut TcpStream, expected: &[u8]) {
    if let Some(at) = proc::read_and_compare(s, expected, || {}) {
        panic!("echo differs from sent data at byte {at}");
    }
}

/// The counters every `stats:` and `final stats:` line carries.
pub const STATS_KEYS: [&str; 9] = [
    "accepted",
    "rejected",
    "active",
    "closed",
    "timed_out",
    "bytes_in",
    "bytes_out",
    "backpressure_pauses",
    "accept_errors",
];

/// With `--workers`: each worker the master reported serving
/// (`master: worker SLOT (pid PID) serving`), as (slot, pid), in order.
pub fn workers_serving(log: &str) -> Vec<(usize, u32)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split("master: worker ").nth(1)?;
            let rest = rest.strip_suffix(") serving")?;
            let (slot, pid) = rest.split_once(" (pid ")?;
            Some((slot.parse().ok()?, pid.parse().ok()?))
        })
        .collect()
}
