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
//! | [`ServerSpec`], [`Server::start`] | spawn a server binary pinned to a CPU, learn its address from `listening on tcp://ADDR` |
//! | [`Load`], [`Timing`], [`measure`] | drive a server with `echo_reactor::bench` (in process, pinned), sample its CPU over the measured window |
//! | [`Measurement`] | req/s, p50/p99 per load; server CPU per 1,000 echoes and busy share |
//! | [`idle_rss`] | open N idle connections from this process, return the server's RSS growth per connection |
//! | [`interleave`], [`median`] | rounds A B C, A B C, ...; medians of a field |
//! | [`markdown_table`], [`line_chart`], [`bar_chart`] | the output |
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
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

use echo_bench::{Config, Live, Report, StopAt};
use socket2::{Domain, Socket, Type};

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
/// `--listen 127.0.0.1:0` is appended. Every server of this project (the
/// reactor and the examples) then prints `listening on tcp://ADDR` first.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Short name used in tables and plots.
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Arguments before `--listen`.
    pub args: Vec<String>,
}

impl ServerSpec {
    /// A spec with a name, a program and extra arguments.
    pub fn new(name: &str, program: impl Into<PathBuf>, args: &[&str]) -> ServerSpec {
        ServerSpec {
            name: name.into(),
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// A running server. Killed and reaped when dropped.
pub struct Server {
    child: Child,
    /// Kept open so the server never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
    /// The CPU it is pinned to.
    cpu: Option<usize>,
}

impl Server {
    /// Starts `spec` listening on a free loopback port, pinned to `cpu`
    /// (all its threads: affinity is set before `exec` and inherited), and
    /// waits for its `listening on tcp://ADDR` line.
    pub fn start(spec: &ServerSpec, cpu: Option<usize>) -> Server {
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
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
        let mut stdout = BufReader::new(child.stdout.take().expect("server stdout is piped"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{}: read its listening line: {e}", spec.name));
        let addr = line
            .trim()
            .strip_prefix("listening on tcp://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                panic!("{}: no `listening on tcp://ADDR` line: {line:?}", spec.name)
            });
        Server {
            child,
            _stdout: stdout,
            addr,
            cpu,
        }
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
        let (user, system) = proc_cpu_ticks(self.pid());
        (user + system) as f64 / clock_ticks_per_sec()
    }

    /// User-space part of [`Server::cpu_secs`].
    pub fn user_secs(&self) -> f64 {
        proc_cpu_ticks(self.pid()).0 as f64 / clock_ticks_per_sec()
    }

    /// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Threads of the process (`Threads` of `/proc/PID/status`).
    pub fn threads(&self) -> u64 {
        proc_status_kib(self.pid(), "Threads:")
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

/// (utime, stime) of a process, in clock ticks.
pub fn proc_cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The command name (field 2) may contain spaces; count from its ')'.
    let rest = &stat[stat.rfind(')').expect("comm field in /proc/PID/stat") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| {
        fields[i]
            .parse::<u64>()
            .expect("numeric field in /proc/PID/stat")
    };
    (num(11), num(12))
}

/// A `kB` (or plain count) field of `/proc/PID/status`.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"))
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// `sysconf(_SC_CLK_TCK)`, the unit of `/proc/PID/stat` times.
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
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
}

impl LoadResult {
    fn of(r: &Report) -> LoadResult {
        LoadResult {
            req_per_sec: r.req_per_sec,
            p50_us: r.latency_us.p50,
            p99_us: r.latency_us.p99,
            errors: r.total_errors(),
            established: r.connections_established,
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
    thread::sleep(timing.warmup + SAMPLE_MARGIN);
    let echoes = |lives: &[Arc<Live>]| -> u64 {
        lives
            .iter()
            .map(|l| Live::get(&l.messages as &AtomicU64))
            .sum()
    };
    let core = |cpu: Option<usize>| cpu.map_or((0, 0), core_ticks);
    let (c0, k0) = (core(server_cpu_of(server)), core(client_cpu));
    let (u0, s0) = proc_cpu_ticks(server.pid());
    let (m0, t0) = (echoes(&lives), Instant::now());
    thread::sleep(timing.window - 2 * SAMPLE_MARGIN);
    let (u1, s1) = proc_cpu_ticks(server.pid());
    let (m1, t1) = (echoes(&lives), Instant::now());
    let (c1, k1) = (core(server_cpu_of(server)), core(client_cpu));
    let share = |(b0, t0): (u64, u64), (b1, t1): (u64, u64)| {
        if t1 > t0 {
            (b1 - b0) as f64 / (t1 - t0) as f64
        } else {
            f64::NAN
        }
    };

    let reports: Vec<Report> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .expect("client thread panicked")
                .unwrap_or_else(|e| panic!("echo-bench engine against {}: {e}", server.addr()))
        })
        .collect();
    let hz = clock_ticks_per_sec();
    Measurement {
        loads: reports.iter().map(LoadResult::of).collect(),
        cpu_secs: ((u1 + s1) - (u0 + s0)) as f64 / hz,
        user_secs: (u1 - u0) as f64 / hz,
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

/// (busy, total) ticks of one CPU from `/proc/stat`, every process
/// counted; idle and iowait are not busy.
pub fn core_ticks(cpu: usize) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let tag = format!("cpu{cpu} ");
    let line = stat
        .lines()
        .find(|l| l.starts_with(&tag))
        .unwrap_or_else(|| panic!("no {tag:?} line in /proc/stat"));
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .map(|x| x.parse().expect("numeric field in /proc/stat"))
        .collect();
    let total: u64 = v.iter().sum();
    (total - v[3] - v[4], total)
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

/// Source addresses 127.0.0.1 ..= 127.0.0.N for idle connections, so one
/// ephemeral port range is never crowded.
const IDLE_SOURCES: usize = 8;

/// Opens `connections` connections from this process (the server's own
/// descriptor limit then only has to hold its side), has each echo 8 bytes
/// once, lets them sit idle for `settle`, and reads the server's RSS. The
/// connections are closed before it returns.
pub fn idle_rss(server: &Server, connections: usize, settle: Duration) -> IdleRss {
    let _ = echo_bench::raise_nofile_limit();
    let rss_before_kib = server.rss_kib();
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        clients.push(connect_from(server.addr(), i % IDLE_SOURCES));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&(i as u64).to_be_bytes())
            .expect("write to an idle connection");
    }
    let mut established = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        let mut back = [0u8; 8];
        c.read_exact(&mut back)
            .expect("read the echo of an idle connection");
        established += usize::from(back == (i as u64).to_be_bytes());
    }
    thread::sleep(settle);
    let result = IdleRss {
        established,
        rss_before_kib,
        rss_after_kib: server.rss_kib(),
        threads: server.threads(),
    };
    drop(clients);
    result
}

fn connect_from(addr: SocketAddr, source: usize) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let src: SocketAddr = format!("127.0.0.{}:0", source + 1)
        .parse()
        .expect("loopback source address");
    socket.bind(&src.into()).expect("bind a loopback source");
    socket
        .connect(&addr.into())
        .expect("connect an idle client");
    socket.into()
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

/// A line chart with a logarithmic x axis (connection counts), written as
/// SVG to `path`.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x: &[f64],
    series: &[Series],
) {
    use plotters::prelude::*;
    let ymax = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max)
        * 1.15;
    let (x0, x1) = (x[0] * 0.8, x[x.len() - 1] * 1.25);
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).expect("plot background");
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((x0..x1).log_scale(), 0.0..ymax.max(1.0))
        .expect("plot axes");
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| thousands(*v))
        .y_label_formatter(&|v| thousands(*v))
        .draw()
        .expect("plot mesh");
    for (i, s) in series.iter().enumerate() {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        let colour = RGBColor(r, g, b);
        let points: Vec<(f64, f64)> = x
            .iter()
            .copied()
            .zip(s.values.iter().copied())
            .filter(|(_, v)| v.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .expect("plot line")
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )
            .expect("plot points");
    }
    draw_legend(&mut chart);
    root.present().expect("write SVG plot");
}

/// The series legend every plot here draws, top right.
fn draw_legend<'a, DB, CT>(chart: &mut plotters::chart::ChartContext<'a, DB, CT>)
where
    DB: plotters::prelude::DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    use plotters::prelude::*;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .expect("plot legend");
}

/// A grouped bar chart: one group per category, one bar per series. With
/// `log_y` the y axis is logarithmic (for values spanning decades).
pub fn bar_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[Series],
    log_y: bool,
) {
    use plotters::prelude::*;
    let values = || {
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let ymax = values().fold(0.0_f64, f64::max).max(1.0);
    let ymin = values().fold(f64::INFINITY, f64::min);
    let n = categories.len();
    // Room for every bar and for the legend, even with one category.
    let group_px = (60 * series.len() as u32).max(120);
    let root =
        SVGBackend::new(path, ((100 + group_px * n as u32).max(560), 420)).into_drawing_area();
    root.fill(&WHITE).expect("plot background");
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            categories.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let width = 0.8 / series.len() as f64;
    let colour_of = |i: usize| {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        RGBColor(r, g, b)
    };
    let xr = -0.5..n as f64 - 0.5;
    // The two axis kinds are different types, hence the two branches.
    macro_rules! draw {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n + 1)
                .x_label_formatter(&label)
                .y_desc(y_desc)
                .y_label_formatter(&|v| {
                    if *v >= 10.0 {
                        thousands(*v)
                    } else {
                        format!("{v}")
                    }
                })
                .draw()
                .expect("plot mesh");
            for (k, s) in series.iter().enumerate() {
                let colour = colour_of(k);
                chart
                    .draw_series(
                        s.values
                            .iter()
                            .enumerate()
                            .filter(|(_, v)| v.is_finite())
                            .map(|(i, &v)| {
                                let left = i as f64 - 0.4 + k as f64 * width;
                                Rectangle::new(
                                    [(left, $base), (left + width * 0.9, v)],
                                    colour.filled(),
                                )
                            }),
                    )
                    .expect("plot bars")
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                    });
            }
            draw_legend(&mut chart);
        }};
    }
    if log_y {
        let base = ymin / 2.0;
        draw!(
            builder
                .build_cartesian_2d(xr, (base..ymax * 2.0).log_scale())
                .expect("plot axes"),
            base
        );
    } else {
        draw!(
            builder
                .build_cartesian_2d(xr, 0.0..ymax * 1.15)
                .expect("plot axes"),
            0.0
        );
    }
    root.present().expect("write SVG plot");
}

/// Replaces the part of the markdown report at `path` that `cargo bench
/// --bench BENCH` generates (between its two marker comments), keeping the
/// prose around it; appends the part when the markers are missing, and
/// starts a file titled `title` when there is none.
pub fn write_generated(path: &Path, bench: &str, title: &str, generated: &str) {
    let begin = format!("<!-- generated by `cargo bench --bench {bench}`: begin -->");
    let end = format!("<!-- generated by `cargo bench --bench {bench}`: end -->");
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
