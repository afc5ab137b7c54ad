//! What every server-against-server bench needs, written once: start a
//! server pinned to a CPU, drive it with the project's stress client pinned
//! to another, read what the server spent from `/proc`, repeat in
//! interleaved rounds, take medians, and write tables and SVG plots.
//!
//! Used from a bench file with `mod support;` (`benches/compare.rs`, and the
//! backends bench). The API, in the order a bench calls it:
//!
//! | item | what it does |
//! | --- | --- |
//! | [`Placement::detect`] | server on CPU 0, client on CPU 1 when there are two CPUs; says so when not |
//! | [`build_examples`] | builds example servers in release and returns their paths |
//! | [`ServerSpec`], [`Server::start`] | spawn a server binary pinned to a CPU, learn its address from `listening on tcp://ADDR` (or `udp://` for a [`ServerSpec::udp`]) |
//! | [`Server::start_logged`], [`Server::stats`] | the same, keeping its log: its counters on SIGUSR1, its `final stats:` |
//! | [`Load`], [`Timing`], [`measure`] | drive a server with `echo_bench` (in process, pinned), sample its CPU over the measured window |
//! | [`Measurement`] | req/s, p50/p99 per load; server CPU per 1,000 echoes and busy share |
//! | [`idle_rss`] | open N idle connections from this process, return the server's RSS growth per connection |
//! | [`interleave`], [`median`] | rounds A B C, A B C, ...; medians of a field |
//! | [`markdown_table`], [`line_chart`], [`bar_chart`] | the output |
//! | [`proc`] | what `/proc` says about a server and the machine, `listening on` lines, idle connections: `tests/util/proc.rs`, the one copy the tests use too |
//!
//! Why the client runs in this process rather than as a spawned
//! `echo-bench --json`: the engine's [`Live`] counters let the sampler read
//! the server's CPU and the echoes completed over the *same* interval, so
//! CPU per echo does not depend on lining up two processes' clocks. The
//! engine threads are spawned from a thread pinned to the client CPU, and
//! Linux threads inherit the affinity of the thread that creates them.
//!
//! Everything here panics with a message on failure: a bench that cannot
//! start a server or read `/proc` has nothing to report.

#![allow(dead_code)] // each bench uses part of the API

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use echo_bench::config::Transport;
use echo_bench::{Config, Live, Report, StopAt};

// Tests and benches are separate crates; both compile this one file.
#[path = "../../tests/util/proc.rs"]
pub mod proc;

// ---------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------

/// Which CPU the server and the client run on.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    /// CPU the server is pinned to, if pinning is possible.
    pub server_cpu: Option<usize>,
    /// CPU the client (this process's engine threads) is pinned to.
    pub client_cpu: Option<usize>,
    /// CPUs this process may run on.
    pub cpus: usize,
}

impl Placement {
    /// Server on the first allowed CPU and client on the second when there
    /// are at least two; otherwise nothing is pinned (and
    /// [`Placement::describe`] says so, for the report).
    pub fn detect() -> Placement {
        let allowed = allowed_cpus();
        match allowed.as_slice() {
            [a, b, ..] => Placement {
                server_cpu: Some(*a),
                client_cpu: Some(*b),
                cpus: allowed.len(),
            },
            _ => Placement {
                server_cpu: None,
                client_cpu: None,
                cpus: allowed.len(),
            },
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        match (self.server_cpu, self.client_cpu) {
            (Some(s), Some(c)) => format!(
                "server pinned to CPU {s}, client to CPU {c} ({} CPUs available)",
                self.cpus
            ),
            _ => format!(
                "NOT pinned: only {} CPU available, server and client share it",
                self.cpus
            ),
        }
    }
}

/// The CPUs this process may run on, from `sched_getaffinity`.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data, all-zero is a valid (empty) set, and
    // sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn cpu_set_of(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: as in allowed_cpus; CPU_SET only sets a bit inside the set
    // (cpu is below CPU_SETSIZE: it came from allowed_cpus).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Pins the calling thread (and every thread it creates afterwards) to `cpu`.
pub fn pin_current_thread(cpu: usize) {
    let set = cpu_set_of(cpu);
    // SAFETY: pid 0 is the calling thread; the set is valid and sized.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity(CPU {cpu}): {}",
        std::io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// Builds example servers with the same cargo that runs the bench, release
/// profile (what `cargo bench` gives the bench's own binaries), and returns
/// their paths in the same order.
///
/// Why build them instead of compiling them into the bench: an example's
/// `main` is private to its file, so the bench could only host a *copy*;
/// building the example itself measures exactly the code a reader runs with
/// `cargo run --release --example NAME`. When they are already built (run
/// `cargo build --release --examples` first, under `nice`), this is a
/// no-op that takes a fraction of a second.
pub fn build_examples(names: &[&str]) -> Vec<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet"]);
    for n in names {
        cmd.args(["--example", n]);
    }
    let status = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build for the example servers");
    assert!(status.success(), "building the example servers failed");
    let dir = release_dir();
    names.iter().map(|n| dir.join("examples").join(n)).collect()
}

/// `target/release` of this build: the bench executable lives in
/// `target/release/deps/`.
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the bench executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("bench executable under target/release/deps")
        .to_path_buf()
}

/// How to start one server: a program and its arguments, to which
/// `--listen 127.0.0.1:0` is appended for a TCP server. Every server of
/// this project (the reactor and the examples) then prints `listening on
/// tcp://ADDR` first.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Short name used in tables and plots.
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Arguments before `--listen` (all of them for a UDP server).
    pub args: Vec<String>,
    /// The scheme of the `listening on SCHEME://ADDR` line that gives the
    /// address to drive: `tcp`, or `udp` for a [`ServerSpec::udp`].
    pub scheme: &'static str,
}

impl ServerSpec {
    /// A spec with a name, a program and extra arguments.
    pub fn new(name: &str, program: impl Into<PathBuf>, args: &[&str]) -> ServerSpec {
        ServerSpec {
            name: name.into(),
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            scheme: "tcp",
        }
    }

    /// A UDP echo server: started with exactly `args` (which must make it
    /// bind a free port), driven at the address of its first `listening
    /// on udp://ADDR` line; earlier lines (a TCP listener) are skipped.
    pub fn udp(name: &str, program: impl Into<PathBuf>, args: &[&str]) -> ServerSpec {
        ServerSpec {
            scheme: "udp",
            ..ServerSpec::new(name, program, args)
        }
    }
}

/// The address of the server's `listening on SCHEME://ADDR` line, its
/// first for TCP; for UDP the first of that scheme within its first few
/// lines (the reactor announces its TCP listener before).
fn listening_addr(stdout: &mut BufReader<ChildStdout>, spec: &ServerSpec) -> SocketAddr {
    let tries = if spec.scheme == "tcp" { 1 } else { 8 };
    let mut seen = Vec::new();
    for _ in 0..tries {
        let mut line = String::new();
        match stdout.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("{}: read its listening line: {e}", spec.name),
        }
        if let Some(l) = proc::listening(&line).filter(|l| l.scheme == spec.scheme) {
            return l.addr;
        }
        seen.push(line);
    }
    panic!(
        "{}: no `listening on {}://ADDR` line: {seen:?}",
        spec.name, spec.scheme
    )
}

/// A running server. Killed and reaped when dropped.
pub struct Server {
    child: Child,
    /// Kept open so the server never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    /// The CPU it is pinned to.
    cpu: Option<usize>,
    /// Its log so far, when started with [`Server::start_logged`].
    log: Option<Arc<Mutex<String>>>,
}

impl Server {
    /// Starts `spec` listening on a free loopback port, pinned to `cpu`
    /// (all its threads: affinity is set before `exec` and inherited), and
    /// waits for its `listening on tcp://ADDR` line. Its warnings go to
    /// this process's stderr.
    pub fn start(spec: &ServerSpec, cpu: Option<usize>) -> Server {
        Server::spawn(spec, cpu, false)
    }

    /// Like [`Server::start`], with the server logging at info level into
    /// a buffer this process keeps ([`Server::log`]): for the servers of
    /// this project, whose counters (`stats: key=value ...`) are logged.
    pub fn start_logged(spec: &ServerSpec, cpu: Option<usize>) -> Server {
        Server::spawn(spec, cpu, true)
    }

    fn spawn(spec: &ServerSpec, cpu: Option<usize>, logged: bool) -> Server {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args);
        if spec.scheme == "tcp" {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.env("RUST_LOG", if logged { "info" } else { "warn" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if logged {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        if let Some(cpu) = cpu {
            // Built before the fork: pre_exec must not allocate.
            let set = cpu_set_of(cpu);
            // SAFETY: the closure runs in the child between fork and exec,
            // where only async-signal-safe calls are allowed; it makes one
            // system call (sched_setaffinity) on a set built before the
            // fork, and touches no lock or allocator.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
                    {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({}): {e}", spec.name, spec.program.display()));
        let log = child.stderr.take().map(|pipe| {
            let log = Arc::new(Mutex::new(String::new()));
            let sink = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut log = sink.lock().expect("server log lock");
                    log.push_str(&line);
                    log.push('\n');
                }
            });
            log
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("server stdout is piped"));
        let addr = listening_addr(&mut stdout, spec);
        Server {
            child,
            _stdout: stdout,
            addr,
            cpu,
            log,
        }
    }

    /// Everything the server logged so far (empty unless it was started
    /// with [`Server::start_logged`]).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .map(|log| log.lock().expect("server log lock").clone())
            .unwrap_or_default()
    }

    /// Sends `sig` (e.g. `libc::SIGUSR1`) to the server.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which is not reaped before drop.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}): {}", std::io::Error::last_os_error());
    }

    /// Asks the server for its counters (SIGUSR1) and returns them, parsed
    /// from the `stats:` line it logs in answer (needs
    /// [`Server::start_logged`]); panics if none comes within 10 s.
    pub fn stats(&self) -> std::collections::HashMap<String, u64> {
        let before = self.log().matches("stats:").count();
        self.signal(libc::SIGUSR1);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.matches("stats:").count() > before {
                return proc::counters(&log, "stats:");
            }
            assert!(
                Instant::now() < deadline,
                "no stats: line after SIGUSR1; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server with SIGTERM (a graceful shutdown), waits up to
    /// `timeout` for it to exit and returns its log, whose last line of
    /// counters is `final stats:` (needs [`Server::start_logged`]).
    pub fn terminate(mut self, timeout: Duration) -> String {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        // The log is read on a thread: give it a moment for the last line.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.log().contains("final stats:") && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        self.log()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time of the whole process so far, in seconds
    /// (`/proc/PID/stat` fields 14 and 15; threads that already exited are
    /// included, which matters for thread-per-connection).
    pub fn cpu_secs(&self) -> f64 {
        proc::cpu_ticks(self.pid()).total() as f64 / proc::clock_ticks_per_sec() as f64
    }

    /// User-space part of [`Server::cpu_secs`].
    pub fn user_secs(&self) -> f64 {
        proc::cpu_ticks(self.pid()).user as f64 / proc::clock_ticks_per_sec() as f64
    }

    /// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        proc::vm_rss_kib(self.pid())
    }

    /// Peak resident set size so far, KiB (`VmHWM`).
    pub fn hwm_kib(&self) -> u64 {
        proc::vm_hwm_kib(self.pid())
    }

    /// Threads of the process (`Threads` of `/proc/PID/status`).
    pub fn threads(&self) -> u64 {
        proc::threads(self.pid())
    }

    /// Kills the server and reaps it.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Driving a server
// ---------------------------------------------------------------------------

/// One group of identical client connections (one engine run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Connections.
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection (1 = ping-pong).
    pub depth: usize,
    /// Drive this load at the lowest CPU priority (nice 19). A latency probe
    /// shares the client core with the loads around it; in the background
    /// they yield that core as soon as the probe's reply arrives, so the
    /// probe times the server rather than the client's own queue.
    pub background: bool,
    /// Datagrams (`echo-bench --udp`) instead of TCP connections.
    pub udp: bool,
    /// With `udp`: the client's `--udp-offload` (GSO sends, GRO receives).
    pub udp_offload: bool,
}

impl Load {
    /// Ping-pong: one message in flight per connection.
    pub fn ping_pong(connections: usize, size: usize) -> Load {
        Load::pipelined(connections, size, 1)
    }

    /// `depth` messages in flight per connection.
    pub fn pipelined(connections: usize, size: usize, depth: usize) -> Load {
        Load {
            connections,
            size,
            depth,
            background: false,
            udp: false,
            udp_offload: false,
        }
    }

    /// `connections` UDP sockets with `depth` datagrams in flight each.
    pub fn udp(connections: usize, size: usize, depth: usize) -> Load {
        Load {
            udp: true,
            ..Load::pipelined(connections, size, depth)
        }
    }

    /// The same UDP load, the client sending segmented messages and
    /// taking echoes coalesced (`--udp-offload`).
    pub fn with_udp_offload(self) -> Load {
        Load {
            udp_offload: true,
            ..self
        }
    }

    /// The same load, driven in the background (see [`Load::background`]).
    pub fn in_background(self) -> Load {
        Load {
            background: true,
            ..self
        }
    }
}

/// Lowers the calling thread to nice 19 (Linux keeps a nice value per thread).
fn lower_current_thread_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
    };
    assert_eq!(rc, 0, "setpriority: {}", std::io::Error::last_os_error());
}

/// How long each measurement lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Traffic after every connection is open, before anything is counted.
    pub warmup: Duration,
    /// The measured window (the engine's `--duration`).
    pub window: Duration,
}

/// The server's CPU is sampled this far inside the engine's window on each
/// side, so both samples fall where every load is running at full speed.
const SAMPLE_MARGIN: Duration = Duration::from_millis(100);

/// What the client saw of one [`Load`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadResult {
    /// Echoes per second over the engine's window.
    pub req_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Errors of any kind (any is a failed run).
    pub errors: u64,
    /// Connections proven by their first echo.
    pub established: u64,
    /// UDP: datagrams of the window the client counted lost (never an
    /// error: loss is UDP's).
    pub lost: u64,
}

impl LoadResult {
    fn of(r: &Report) -> LoadResult {
        LoadResult {
            req_per_sec: r.req_per_sec,
            p50_us: r.latency_us.p50,
            p99_us: r.latency_us.p99,
            errors: r.total_errors(),
            established: r.connections_established,
            lost: r.udp.map_or(0, |(_, lost, _)| lost),
        }
    }
}

/// One server under one set of loads, once.
#[derive(Debug, Clone, Default)]
pub struct Measurement {
    /// Per load, in the order given to [`measure`].
    pub loads: Vec<LoadResult>,
    /// Server CPU (user + system) over the sampled interval, seconds.
    pub cpu_secs: f64,
    /// User-space part of `cpu_secs`.
    pub user_secs: f64,
    /// Wall time of the sampled interval, seconds.
    pub wall_secs: f64,
    /// Echoes completed by all loads over the sampled interval.
    pub echoes: u64,
    /// Busy share of the server's core over the interval, every process
    /// counted (`/proc/stat`); above [`Measurement::busy`] when something
    /// else ran there (on a shared machine: someone's compiler).
    pub server_core_busy: f64,
    /// Busy share of the client's core, every process counted: near 1.0
    /// means the client, not the server, may have been the limit.
    pub client_core_busy: f64,
}

impl Measurement {
    /// Echoes per server CPU second (for UDP: datagrams echoed per server
    /// CPU second).
    pub fn per_cpu_sec(&self) -> f64 {
        if self.cpu_secs <= 0.0 {
            return f64::NAN;
        }
        self.echoes as f64 / self.cpu_secs
    }

    /// Datagrams the loads counted lost.
    pub fn lost(&self) -> u64 {
        self.loads.iter().map(|l| l.lost).sum()
    }

    /// Server CPU seconds per 1,000 echoes.
    pub fn cpu_per_1000(&self) -> f64 {
        if self.echoes == 0 {
            return f64::NAN;
        }
        self.cpu_secs / self.echoes as f64 * 1000.0
    }

    /// Server user-space CPU seconds per 1,000 echoes: the server's own
    /// code and its libraries, without the kernel's share of each echo.
    pub fn user_per_1000(&self) -> f64 {
        if self.echoes == 0 {
            return f64::NAN;
        }
        self.user_secs / self.echoes as f64 * 1000.0
    }

    /// User-space share of the server's CPU (the rest is the kernel's).
    pub fn user_share(&self) -> f64 {
        self.user_secs / self.cpu_secs
    }

    /// Share of the server's core it kept busy (1.0 = saturated).
    pub fn busy(&self) -> f64 {
        self.cpu_secs / self.wall_secs
    }

    /// Echoes per second, all loads together (over the engines' windows).
    pub fn total_req_per_sec(&self) -> f64 {
        self.loads.iter().map(|l| l.req_per_sec).sum()
    }

    /// Errors of all loads.
    pub fn errors(&self) -> u64 {
        self.loads.iter().map(|l| l.errors).sum()
    }
}

/// Drives `server` with every load at once (each its own engine run, all
/// pinned to `client_cpu`), and samples the server's CPU and the echoes
/// completed over the same interval inside the measured window.
pub fn measure(
    server: &Server,
    loads: &[Load],
    timing: Timing,
    client_cpu: Option<usize>,
) -> Measurement {
    assert!(
        timing.window > 3 * SAMPLE_MARGIN,
        "window too short to sample"
    );
    let lives: Vec<Arc<Live>> = loads.iter().map(|_| Arc::new(Live::new())).collect();
    let handles: Vec<_> = loads
        .iter()
        .zip(&lives)
        .map(|(load, live)| {
            let mut cfg = Config::new(server.addr());
            cfg.connections = load.connections;
            cfg.size = load.size;
            cfg.depth = load.depth;
            cfg.warmup = timing.warmup;
            cfg.stop = StopAt::Duration(timing.window);
            if load.udp {
                cfg.transport = Transport::Udp;
                cfg.udp_offload = load.udp_offload;
            }
            let live = Arc::clone(live);
            let background = load.background;
            thread::Builder::new()
                .name("client".into())
                .spawn(move || {
                    if let Some(cpu) = client_cpu {
                        pin_current_thread(cpu);
                    }
                    if background {
                        lower_current_thread_priority();
                    }
                    echo_bench::run(&cfg, live)
                })
                .expect("spawn a client thread")
        })
        .collect();

    // Every connection of every load open (or failed) first: the warmups
    // start from there.
    wait_for_connections(loads, &lives, &handles);
    thread::sleep(timing.warmup + SAMPLE_MARGIN);
    let mut m = sample_window(server, &lives, timing, client_cpu);
    m.loads = handles
        .into_iter()
        .map(|h| {
            let report: Report = h
                .join()
                .expect("client thread panicked")
                .unwrap_or_else(|e| panic!("echo-bench engine against {}: {e}", server.addr()));
            LoadResult::of(&report)
        })
        .collect();
    m
}

/// Waits until every connection of every load is open or has failed, a
/// client thread has ended, or 30 s have passed.
fn wait_for_connections<T>(loads: &[Load], lives: &[Arc<Live>], handles: &[thread::JoinHandle<T>]) {
    let wanted: u64 = loads.iter().map(|l| l.connections as u64).sum();
    let settle_deadline = Instant::now() + Duration::from_secs(30);
    while lives
        .iter()
        .map(|l| Live::get(&l.established) + Live::get(&l.failed))
        .sum::<u64>()
        < wanted
        && Instant::now() < settle_deadline
        && !handles.iter().any(|h| h.is_finished())
    {
        thread::sleep(Duration::from_millis(5));
    }
}

/// Samples the server's CPU, the echoes the loads completed and both
/// cores' busy shares over the same interval, [`SAMPLE_MARGIN`] inside the
/// engines' window on each side; `loads` is left empty for the caller.
fn sample_window(
    server: &Server,
    lives: &[Arc<Live>],
    timing: Timing,
    client_cpu: Option<usize>,
) -> Measurement {
    let echoes = || -> u64 {
        lives
            .iter()
            .map(|l| Live::get(&l.messages as &AtomicU64))
            .sum()
    };
    let core = |cpu: Option<usize>| cpu.map_or((0, 0), proc::core_ticks);
    let (c0, k0) = (core(server_cpu_of(server)), core(client_cpu));
    let cpu0 = proc::cpu_ticks(server.pid());
    let (m0, t0) = (echoes(), Instant::now());
    thread::sleep(timing.window - 2 * SAMPLE_MARGIN);
    let cpu1 = proc::cpu_ticks(server.pid());
    let (m1, t1) = (echoes(), Instant::now());
    let (c1, k1) = (core(server_cpu_of(server)), core(client_cpu));
    let share = |(b0, t0): (u64, u64), (b1, t1): (u64, u64)| {
        if t1 > t0 {
            (b1 - b0) as f64 / (t1 - t0) as f64
        } else {
            f64::NAN
        }
    };
    let hz = proc::clock_ticks_per_sec() as f64;
    Measurement {
        loads: Vec::new(),
        cpu_secs: (cpu1.total() - cpu0.total()) as f64 / hz,
        user_secs: (cpu1.user - cpu0.user) as f64 / hz,
        wall_secs: (t1 - t0).as_secs_f64(),
        echoes: m1 - m0,
        server_core_busy: share(c0, c1),
        client_core_busy: share(k0, k1),
    }
}

/// The CPU the server was pinned to, if it was.
fn server_cpu_of(server: &Server) -> Option<usize> {
    server.cpu
}

/// What [`idle_rss`] found.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdleRss {
    /// Connections that echoed their first message correctly.
    pub established: usize,
    /// Server `VmRSS` before the first connection, KiB.
    pub rss_before_kib: u64,
    /// Server `VmRSS` with all of them open and idle, KiB.
    pub rss_after_kib: u64,
    /// Server threads with all of them open.
    pub threads: u64,
}

impl IdleRss {
    /// RSS growth per established connection, bytes.
    pub fn bytes_per_connection(&self) -> f64 {
        (self.rss_after_kib.saturating_sub(self.rss_before_kib) * 1024) as f64
            / self.established.max(1) as f64
    }
}

/// Opens `connections` connections from this process (the server's own
/// descriptor limit then only has to hold its side) with
/// [`proc::open_idle`], lets them sit idle for `settle`, and reads the
/// server's RSS. The connections are closed before it returns.
pub fn idle_rss(server: &Server, connections: usize, settle: Duration) -> IdleRss {
    let _ = echo_bench::raise_nofile_limit();
    let rss_before_kib = server.rss_kib();
    let idle = proc::open_idle(server.addr(), connections);
    thread::sleep(settle);
    IdleRss {
        established: idle.echoed,
        rss_before_kib,
        rss_after_kib: server.rss_kib(),
        threads: server.threads(),
    }
}

// ---------------------------------------------------------------------------
// Rounds and medians
// ---------------------------------------------------------------------------

/// Runs `f(server_index, round)` for `rounds` rounds, every server once per
/// round in order (A B C, A B C, ...), so slow drifts of a shared machine
/// hit every server alike. Returns the results as `[server][round]`.
pub fn interleave<T>(
    rounds: usize,
    servers: usize,
    mut f: impl FnMut(usize, usize) -> T,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = (0..servers).map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        for (s, results) in out.iter_mut().enumerate() {
            results.push(f(s, round));
        }
    }
    out
}

/// The median of `f` over `items` (mean of the middle two for an even
/// count); NaN for none.
pub fn median<T>(items: &[T], f: impl Fn(&T) -> f64) -> f64 {
    let mut xs: Vec<f64> = items.iter().map(f).filter(|x| !x.is_nan()).collect();
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// A markdown table: first column left-aligned, the others right-aligned.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if i == 0 { "---" } else { "---:" })
        .collect();
    let _ = writeln!(s, "| {} |", align.join(" | "));
    for r in rows {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

/// Formats a number with thousands separators and no decimals.
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

/// One named line (or bar group member) of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// One value per x (line chart) or per category (bar chart); NaN = none.
    pub values: Vec<f64>,
}

/// Colours of the series, in order; readable on white and in grey scale.
const COLOURS: [(u8, u8, u8); 6] = [
    (0xd6, 0x27, 0x28),
    (0x1f, 0x77, 0xb4),
    (0x2c, 0xa0, 0x2c),
    (0xff, 0x7f, 0x0e),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
];

/// Where the values of a chart span more than this factor (largest over
/// smallest), its y axis is logarithmic: on a linear one, the small values
/// would be a flat line along the bottom (6 µs beside 1,163 µs).
pub const LOG_SPAN: f64 = 20.0;

/// The legend stands in a column right of the plot, so that it never
/// covers data: this wide for the swatch, plus the longest name.
const LEGEND_PX: u32 = 50;
/// Width of a legend character, roughly, in pixels.
const LEGEND_CHAR_PX: u32 = 7;

/// The y range of `series`: smallest and largest finite positive value,
/// and whether they span more than [`LOG_SPAN`].
fn y_extent(series: &[Series]) -> (f64, f64, bool) {
    let values = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let hi = hi.max(1.0);
    let lo = lo.min(hi);
    (lo, hi, hi / lo > LOG_SPAN)
}

/// The y axis label, saying so when the axis is logarithmic.
fn y_label(desc: &str, log: bool) -> String {
    if log {
        format!("{desc}, log scale")
    } else {
        desc.to_string()
    }
}

/// A y tick label: thousands separators, and decimals only below 10.
fn y_tick(v: &f64) -> String {
    if *v >= 10.0 {
        thousands(*v)
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// A tick label on a log axis: only 1, 2 and 5 times a power of ten are
/// labelled, so that the labels stay readable while the mesh shows every
/// step in between.
fn log_tick(v: &f64) -> String {
    let mantissa = v / 10f64.powf(v.log10().floor());
    if [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa - m).abs() < 1e-6)
    {
        y_tick(v)
    } else {
        String::new()
    }
}

/// Tick count and label format of a y axis.
fn y_ticks(log: bool) -> (usize, fn(&f64) -> String) {
    // Many ticks on a log axis: plotters then adds the steps 2x..9x
    // between the powers of ten, and `log_tick` labels some of them.
    if log { (30, log_tick) } else { (10, y_tick) }
}

/// The chart builder on `plot`, with the margins and label areas of every
/// chart here.
fn chart_builder<'a, 'b>(
    plot: &'a plotters::drawing::DrawingArea<
        plotters::prelude::SVGBackend<'b>,
        plotters::coord::Shift,
    >,
) -> plotters::prelude::ChartBuilder<'a, 'b, plotters::prelude::SVGBackend<'b>> {
    let mut builder = plotters::prelude::ChartBuilder::on(plot);
    builder
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    builder
}

fn colour(i: usize) -> plotters::style::RGBColor {
    let (r, g, b) = COLOURS[i % COLOURS.len()];
    plotters::style::RGBColor(r, g, b)
}

/// How a series is shown in the legend: a line, or a filled square.
#[derive(Clone, Copy)]
enum Swatch {
    Line,
    Bar,
}

/// An SVG canvas of `width` x `height` with `title` on top, split into the
/// plot area and, on its right, the legend column with one entry per
/// series. Returns the plot area; call `present` on the canvas at the end.
fn canvas<'a>(
    path: &'a Path,
    (width, height): (u32, u32),
    title: &str,
    series: &[Series],
    swatch: Swatch,
) -> plotters::drawing::DrawingArea<plotters::prelude::SVGBackend<'a>, plotters::coord::Shift> {
    use plotters::prelude::*;
    let longest = series.iter().map(|s| s.name.chars().count()).max();
    let legend_px = LEGEND_PX + LEGEND_CHAR_PX * longest.unwrap_or(0) as u32;
    let root = SVGBackend::new(path, (width + legend_px, height)).into_drawing_area();
    root.fill(&WHITE).expect("plot background");
    let body = root.titled(title, ("sans-serif", 18)).expect("plot title");
    let (plot, legend) = body.split_horizontally(width);
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    for (i, s) in series.iter().enumerate() {
        let y = 50 + 22 * i as i32;
        let c = colour(i);
        let drawn = match swatch {
            Swatch::Line => {
                legend.draw(&PathElement::new(vec![(4, y), (24, y)], c.stroke_width(2)))
            }
            Swatch::Bar => legend.draw(&Rectangle::new([(8, y - 6), (20, y + 6)], c.filled())),
        };
        drawn.expect("plot legend swatch");
        legend
            .draw(&Text::new(s.name.clone(), (30, y - 7), font.clone()))
            .expect("plot legend text");
    }
    plot
}

/// A line chart with a logarithmic x axis (connection counts), written as
/// SVG to `path`; the y axis is logarithmic too where the values span more
/// than [`LOG_SPAN`]. The legend stands right of the plot.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x: &[f64],
    series: &[Series],
) {
    use plotters::prelude::*;
    let plot = canvas(path, (720, 420), title, series, Swatch::Line);
    let (lo, hi, log_y) = y_extent(series);
    let xr = (x[0] * 0.8..x[x.len() - 1] * 1.25).log_scale();
    let mut builder = chart_builder(&plot);
    let y_desc = y_label(y_desc, log_y);
    let (y_labels, y_format) = y_ticks(log_y);
    // The two axis kinds are different types, hence the two branches.
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart.expect("plot axes");
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc.as_str())
                .x_label_formatter(&|v| thousands(*v))
                .y_labels(y_labels)
                .y_label_formatter(&y_format)
                .y_max_light_lines(if log_y { 0 } else { 4 })
                .draw()
                .expect("plot mesh");
            for (i, s) in series.iter().enumerate() {
                let points: Vec<(f64, f64)> = x
                    .iter()
                    .copied()
                    .zip(s.values.iter().copied())
                    .filter(|(_, v)| v.is_finite() && (!log_y || *v > 0.0))
                    .collect();
                let c = colour(i);
                chart
                    .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                    .expect("plot line");
                chart
                    .draw_series(points.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                    .expect("plot points");
            }
        }};
    }
    if log_y {
        draw!(builder.build_cartesian_2d(xr, (lo / 1.5..hi * 1.5).log_scale()));
    } else {
        draw!(builder.build_cartesian_2d(xr, 0.0..hi * 1.1));
    }
    plot.present().expect("write SVG plot");
}

/// A grouped bar chart: one group per category, one bar per series, each
/// bar labelled with its value, written as SVG to `path`; the y axis is
/// logarithmic where the values span more than [`LOG_SPAN`]. The legend
/// stands right of the plot.
pub fn bar_chart(path: &Path, title: &str, y_desc: &str, categories: &[String], series: &[Series]) {
    use plotters::prelude::*;
    let n = categories.len();
    let group_px = (60 * series.len() as u32).max(120);
    let size = ((100 + group_px * n as u32).max(400), 420);
    let plot = canvas(path, size, title, series, Swatch::Bar);
    let (lo, hi, log_y) = y_extent(series);
    let mut builder = chart_builder(&plot);
    let label = |v: &f64| category_label(categories, *v);
    let width = 0.8 / series.len() as f64;
    let xr = -0.5..n as f64 - 0.5;
    let y_desc = y_label(y_desc, log_y);
    let (y_labels, y_format) = y_ticks(log_y);
    let value_style = value_label_style();
    // The two axis kinds are different types, hence the two branches.
    macro_rules! draw {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart.expect("plot axes");
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n + 1)
                .x_label_formatter(&label)
                .y_desc(y_desc.as_str())
                .y_labels(y_labels)
                .y_label_formatter(&y_format)
                .y_max_light_lines(if log_y { 0 } else { 4 })
                .draw()
                .expect("plot mesh");
            for (k, s) in series.iter().enumerate() {
                let c = colour(k);
                let bars = || s.values.iter().enumerate().filter(|(_, v)| v.is_finite());
                let left = |i: usize| i as f64 - 0.4 + k as f64 * width;
                chart
                    .draw_series(bars().map(|(i, &v)| {
                        Rectangle::new([(left(i), $base), (left(i) + width * 0.9, v)], c.filled())
                    }))
                    .expect("plot bars");
                chart
                    .draw_series(bars().map(|(i, &v)| {
                        let centre = left(i) + width * 0.45;
                        Text::new(y_tick(&v), (centre, v), value_style.clone())
                    }))
                    .expect("plot bar values");
            }
        }};
    }
    if log_y {
        let base = lo / 2.0;
        draw!(
            builder.build_cartesian_2d(xr, (base..hi * 2.0).log_scale()),
            base
        );
    } else {
        draw!(builder.build_cartesian_2d(xr, 0.0..hi * 1.1), 0.0);
    }
    plot.present().expect("write SVG plot");
}

/// The style of the value printed on top of each bar.
fn value_label_style() -> plotters::style::TextStyle<'static> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    ("sans-serif", 12)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom))
}

/// The x label of a bar chart at `v`: the category at whole numbers.
fn category_label(categories: &[String], v: f64) -> String {
    let i = v.round();
    if (v - i).abs() < 1e-6 && i >= 0.0 {
        categories.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

/// The markers around the part of a markdown report that `cargo bench
/// --bench BENCH` generates.
fn generated_markers(bench: &str) -> (String, String) {
    (
        format!("<!-- generated by `cargo bench --bench {bench}`: begin -->"),
        format!("<!-- generated by `cargo bench --bench {bench}`: end -->"),
    )
}

/// The part of the markdown report at `path` that `cargo bench --bench
/// BENCH` generated last, without its markers; `None` when the file or the
/// markers are missing.
pub fn read_generated(path: &Path, bench: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let (begin, end) = generated_markers(bench);
    let b = text.find(&begin)? + begin.len();
    let e = text[b..].find(&end)? + b;
    Some(text[b..e].to_string())
}

/// Replaces the part of the markdown report at `path` that `cargo bench
/// --bench BENCH` generates (between its two marker comments), keeping the
/// prose around it; appends the part when the markers are missing, and
/// starts a file titled `title` when there is none.
pub fn write_generated(path: &Path, bench: &str, title: &str, generated: &str) {
    let (begin, end) = generated_markers(bench);
    let block = format!("{begin}\n\n{generated}\n{end}\n");
    let text = match std::fs::read_to_string(path) {
        Ok(old) => match (old.find(&begin), old.find(&end)) {
            (Some(b), Some(e)) if b < e => format!(
                "{}{block}{}",
                &old[..b],
                old[e + end.len()..].trim_start_matches('\n')
            ),
            _ => format!("{old}\n{block}"),
        },
        Err(_) => format!("# {title}\n\n{block}"),
    };
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
