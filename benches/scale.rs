//! How far one machine goes: C idle connections against `echo-reactor
//! --workers W`, and what each one costs.
//!
//! ```sh
//! cargo bench --bench scale --no-run                      # build first, at low priority
//! cargo bench --bench scale -- --quick                    # 2,000 connections, ~3 s
//! cargo bench --bench scale                               # 18,000 connections, 1 worker, ~1 min
//! cargo bench --bench scale -- --connections 100000 --workers 6 --docs
//! cargo bench --bench scale -- --connections 1000000 --workers 55 --docs
//! ```
//!
//! The run, every step bounded in time, everything it started killed on
//! every path (an error, a panic, Ctrl+C):
//!
//! 1. Start the server (`--workers W`; with W = 1 no flag, the single
//!    process of today) in a process group of its own; find its workers
//!    (the master's children) and count each one's socket descriptors
//!    before any client comes.
//! 2. Read the kernel's memory (`/proc/meminfo`, `/proc/net/sockstat`,
//!    `/proc/slabinfo`) and each worker's `VmRSS`.
//! 3. Start the project's stress client as P processes (`echo-bench
//!    --procs P -c C --idle HOLD -n SAMPLE`, this process being their
//!    parent, see `support/clients.rs`): every connection is proven by one
//!    echo, then all of them sit idle for HOLD seconds, then SAMPLE of them
//!    echo once more, checked byte by byte.
//! 4. Once every connection is proven (the time to open), and a moment
//!    later: kernel memory, each worker's `VmRSS` and connections (its
//!    socket descriptors over the count before), the clients' `VmRSS`;
//!    then the CPU of the server, of the clients and of the whole machine
//!    over the rest of the hold, and that nothing was echoed meanwhile.
//! 5. The sample's result (the clients' merged report); then every
//!    connection is closed by the clients, and the server's descriptors
//!    must return to where they started; then SIGTERM, and the server
//!    must exit 0.
//!
//! The report (`OUT/scale-cC-wW.md` and `.json`, `OUT` = `target/scale`
//! or `--out`) has every figure and a list of checks; the bench exits 1 if
//! one fails. Its row also goes into the table of all runs
//! (`OUT/summary.md`, or with `--docs` the generated part of
//! `docs/scale.md`), and the plot of that table is redrawn
//! (`OUT/scale.svg` or `docs/scale.svg`). With W > 1 the connections of
//! each worker are plotted too (`OUT/balance-cC-wW.svg`).
//!
//! Kernel figures are machine-wide and both ends of every loopback
//! connection live on this machine: kernel memory per connection is that
//! of *two* sockets (the client's and the server's), their descriptors and
//! epoll entries.

mod support;

#[path = "support/clients.rs"]
mod clients;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/machine.rs"]
mod machine;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use echo_bench::Report;
use serde_json::{Value, json};

use clients::Clients;
use cluster::Cluster;
use machine::KernelMemory;
use support::{Series, markdown_table, proc, thousands};

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// C idle connections against `echo-reactor --workers W`: established,
/// verified, held, sampled; memory, CPU and balance per connection.
#[derive(Parser, Debug)]
#[command(name = "scale")]
struct Opts {
    /// A small run of seconds: 2,000 connections, 2 workers (1 while
    /// echo-reactor has no --workers), 2 client processes, a 2 s hold, a
    /// sample of 200; other flags still apply.
    #[arg(long)]
    quick: bool,
    /// Connections to open and hold (default 18,000).
    #[arg(long, value_name = "C")]
    connections: Option<usize>,
    /// Server worker processes (default 1: the single process, no
    /// --workers flag passed).
    #[arg(long, value_name = "W")]
    workers: Option<usize>,
    /// Client processes (default: enough that each holds at most 18,000).
    #[arg(long, value_name = "P")]
    client_procs: Option<usize>,
    /// Seconds every connection sits idle after all are open (default 30).
    #[arg(long, value_name = "SECS")]
    hold: Option<f64>,
    /// Connections that echo once more after the hold (default 1,000, at
    /// most C, at least P).
    #[arg(long, value_name = "N")]
    sample: Option<usize>,
    /// Where the reports go (default target/scale).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// New connections per second, all client processes together
    /// (default: as fast as each process's window allows).
    #[arg(long, value_name = "N")]
    connect_rate: Option<u32>,
    /// Seconds all connections may take to open (default 60 + 1 ms per
    /// connection).
    #[arg(long, value_name = "SECS")]
    open_timeout: Option<f64>,
    /// The server binary (default: this package's echo-reactor, as cargo
    /// built it for the bench).
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Also put this run's row into the generated table of docs/scale.md
    /// and redraw docs/scale.svg.
    #[arg(long)]
    docs: bool,
    /// Measure nothing: redraw the plot from the table of all runs
    /// (OUT/summary.md, or docs/scale.md with --docs), after a row was
    /// edited by hand, say.
    #[arg(long)]
    replot: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Default connections, and of --quick.
const CONNECTIONS: usize = 18_000;
const QUICK_CONNECTIONS: usize = 2_000;
/// Default hold, and of --quick.
const HOLD_SECS: f64 = 30.0;
const QUICK_HOLD_SECS: f64 = 2.0;
/// Default sample, and of --quick.
const SAMPLE: usize = 1_000;
const QUICK_SAMPLE: usize = 200;
/// Connections per client process by default: each process's descriptor
/// limit (20,000 on the project's machines) holds them with room to spare.
const PER_CLIENT: usize = 18_000;
/// A process's descriptor budget for connections: a worker refuses past it
/// (`--max-connections` defaults to RLIMIT_NOFILE less 64), and a client
/// process needs as many descriptors as connections, plus a few.
const BUDGET: usize = 19_900;
/// Kernel memory a connection may need, both ends, with a margin: the
/// run is refused when the machine does not have this much available.
const KERNEL_BYTES_PER_CONNECTION: u64 = 12 * 1024;

/// What the run does, options and defaults resolved.
#[derive(Debug, Clone)]
struct Settings {
    connections: usize,
    workers: usize,
    client_procs: usize,
    hold: Duration,
    sample: usize,
    out: PathBuf,
    connect_rate: Option<u32>,
    open_timeout: Duration,
    server: PathBuf,
    docs: bool,
    quick: bool,
    /// Why the run does not do what was asked, for the report.
    notes: Vec<String>,
    /// The command line that repeats the run.
    command: String,
}

impl Settings {
    fn resolve(o: &Opts) -> Result<Settings, String> {
        let server = o
            .server
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_echo-reactor")));
        let mut notes = Vec::new();
        let has_workers = cluster::has_workers_flag(&server);
        let workers = match (o.workers, o.quick) {
            (Some(0), _) => return Err("--workers must be at least 1".into()),
            (Some(w), _) if w > 1 && !has_workers => {
                return Err(format!(
                    "--workers {w}: {} has no --workers flag yet (see its --help); \
                     run with --workers 1, or give --server a build that has it",
                    server.display()
                ));
            }
            (Some(w), _) => w,
            (None, true) if has_workers => 2,
            (None, true) => {
                notes.push(format!(
                    "--quick runs 2 workers when the server has --workers; {} has none \
                     yet, so this run had 1 (the single process)",
                    server.display()
                ));
                1
            }
            (None, false) => 1,
        };
        let connections = o.connections.unwrap_or(if o.quick {
            QUICK_CONNECTIONS
        } else {
            CONNECTIONS
        });
        if connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        let client_procs = o.client_procs.unwrap_or(if o.quick {
            2.min(connections)
        } else {
            connections.div_ceil(PER_CLIENT)
        });
        if client_procs == 0 || client_procs > connections {
            return Err(format!(
                "--client-procs {client_procs}: must be 1 to {connections} (the connections)"
            ));
        }
        if connections.div_ceil(client_procs) > BUDGET {
            return Err(format!(
                "--client-procs {client_procs}: {} connections per client process are past its \
                 descriptor budget of ~{BUDGET}; give --client-procs {} or more",
                connections.div_ceil(client_procs),
                connections.div_ceil(BUDGET)
            ));
        }
        if connections.div_ceil(workers) > BUDGET {
            notes.push(format!(
                "{} connections per worker on average are past a worker's descriptor budget \
                 (~{BUDGET}): expect connections refused",
                connections.div_ceil(workers)
            ));
        }
        let hold = o
            .hold
            .unwrap_or(if o.quick { QUICK_HOLD_SECS } else { HOLD_SECS });
        if !(1.0..=3600.0).contains(&hold) {
            return Err(format!("--hold {hold}: 1 to 3,600 seconds"));
        }
        let asked = o
            .sample
            .unwrap_or(if o.quick { QUICK_SAMPLE } else { SAMPLE });
        let sample = asked.clamp(client_procs, connections);
        if sample != asked {
            notes.push(format!(
                "a sample of {asked} is outside {client_procs} (one per client process) to \
                 {connections} (the connections): {sample} instead"
            ));
        }
        let open_timeout = match o.open_timeout {
            Some(s) if s > 0.0 => Duration::from_secs_f64(s),
            Some(s) => return Err(format!("--open-timeout {s}: more than 0 seconds")),
            None => Duration::from_secs(60) + Duration::from_millis(connections as u64),
        };
        let mut command = format!(
            "cargo bench --bench scale -- --connections {connections} --workers {workers} \
             --client-procs {client_procs} --hold {hold} --sample {sample}"
        );
        if let Some(r) = o.connect_rate {
            let _ = write!(command, " --connect-rate {r}");
        }
        Ok(Settings {
            connections,
            workers,
            client_procs,
            hold: Duration::from_secs_f64(hold),
            sample,
            out: o.out.clone().unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("target")
                    .join("scale")
            }),
            connect_rate: o.connect_rate,
            open_timeout,
            server,
            docs: o.docs,
            quick: o.quick,
            notes,
            command,
        })
    }

    /// `cC-wW`, the run's name in file names.
    fn tag(&self) -> String {
        format!("c{}-w{}", self.connections, self.workers)
    }

    /// The flags of the client processes.
    fn client_args(&self, addr: std::net::SocketAddr) -> Vec<String> {
        let p = self.client_procs;
        // Each process's window of connections waiting for their first
        // echo: at least echo-bench's default for all together, 64 per
        // process when there are many, and never more than the workers'
        // listen backlogs (echo-reactor's default: 1,024 each) could take.
        let window = (64 * p).max(512).min(1024 * self.workers).max(p);
        let mut a: Vec<String> = vec![
            "-c".into(),
            self.connections.to_string(),
            "--procs".into(),
            p.to_string(),
            "--idle".into(),
            format!("{}", self.hold.as_secs_f64()),
            "-n".into(),
            self.sample.to_string(),
            "--max-connecting".into(),
            window.to_string(),
        ];
        if let Some(r) = self.connect_rate {
            a.extend(["--connect-rate".into(), r.to_string()]);
        }
        a.push(addr.to_string());
        a
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// How long the server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest the clients may take after the hold: the sample, its drain
/// (echo-bench's --timeout, 10 s) and the processes' exit.
const AFTER_HOLD: Duration = Duration::from_secs(60);

/// Everything one run measured.
#[derive(Debug, Default)]
struct Figures {
    date: String,
    machine: String,
    load_before: String,
    load_after: String,
    server_args: String,
    client_args: String,
    master_pid: u32,
    workers: Vec<u32>,
    /// Client side.
    established: u64,
    failed: u64,
    open_secs: f64,
    open_wall_secs: f64,
    sample_echoed: u64,
    sample_p50_us: f64,
    sample_p99_us: f64,
    sample_max_us: f64,
    client_errors: Vec<(String, u64)>,
    client_passed: bool,
    echoes_during_hold: u64,
    errors_during_hold: u64,
    client_pids: usize,
    client_rss_kib: u64,
    /// Server side, per worker.
    conns: Vec<usize>,
    fds: Vec<usize>,
    fd_limits: Vec<u64>,
    rss_growth_kib: Vec<i64>,
    master_rss_growth_kib: Option<i64>,
    dead_workers: Vec<usize>,
    /// Kernel.
    before: KernelMemory,
    open: KernelMemory,
    closed: KernelMemory,
    /// Idle CPU: ticks over the window, and its length.
    cpu_window_secs: f64,
    server_ticks: u64,
    client_ticks: u64,
    machine_busy: f64,
    /// After.
    closed_in_secs: Option<f64>,
    server_exit: String,
    server_exit_ok: bool,
}

/// Polls `done` every 100 ms until it holds, `deadline` passes, or the
/// bench is interrupted; calls `progress` every 5 s.
fn wait_until(
    what: &str,
    deadline: Instant,
    stop: &AtomicBool,
    mut done: impl FnMut() -> bool,
    mut progress: impl FnMut(),
) -> Result<(), String> {
    let mut last = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            return Err(format!("interrupted while waiting for {what}"));
        }
        if Instant::now() >= deadline {
            return Err(format!("gave up waiting for {what}"));
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            progress();
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Sleeps until `t`, or until interrupted.
fn sleep_until(t: Instant, stop: &AtomicBool) -> Result<(), String> {
    wait_until(
        "the end of a pause",
        t + Duration::from_secs(1),
        stop,
        || Instant::now() >= t,
        || {},
    )
}

fn run(s: &Settings, stop: &AtomicBool) -> Result<Figures, String> {
    let started = Instant::now();
    let mut f = Figures {
        date: proc::utc_now("%F %H:%M UTC"),
        machine: proc::machine(),
        load_before: proc::loadavg(),
        ..Figures::default()
    };
    let say = |m: String| eprintln!("scale: [{:>6.1} s] {m}", started.elapsed().as_secs_f64());
    check_machine(s)?;
    std::fs::create_dir_all(&s.out).map_err(|e| format!("create {}: {e}", s.out.display()))?;
    say("building echo-bench".into());
    let echo_bench = clients::build_echo_bench(Duration::from_secs(20 * 60), stop)?;

    say(format!("starting the server ({} worker(s))", s.workers));
    let log = s.out.join(format!("server-{}.log", s.tag()));
    let server = Cluster::start(&s.server, s.workers, &[], &log)?;
    f.workers = server.workers().to_vec();
    f.master_pid = server.master_pid();
    f.server_args = format!(
        "{}{} --listen 127.0.0.1:0",
        s.server.file_name().unwrap_or_default().to_string_lossy(),
        if s.workers > 1 {
            format!(" --workers {}", s.workers)
        } else {
            String::new()
        }
    );
    f.fd_limits = server
        .workers()
        .iter()
        .map(|&p| machine::nofile_limit(p).unwrap_or(0))
        .collect();
    f.before = KernelMemory::read();
    let rss_before = server.worker_rss_kib();
    let master_before = server.master_rss_kib();

    // Open, prove, and wait for all of them.
    let args = s.client_args(server.addr());
    f.client_args = format!("echo-bench {}", args.join(" "));
    say(f.client_args.clone());
    let t_clients = Instant::now();
    let clients = Clients::start(&echo_bench, args)?;
    let c = s.connections as u64;
    wait_until(
        "every connection to open",
        t_clients + s.open_timeout,
        stop,
        || clients.established() + clients.failed() >= c || clients.finished(),
        || {
            say(format!(
                "{} of {c} connections established, {} failed",
                clients.established(),
                clients.failed()
            ))
        },
    )?;
    if clients.finished() {
        // They ended before opening everything: the report says why.
        let why = match clients.join(Duration::from_secs(5)) {
            Ok(r) => format!("{} of {c} established", r.connections_established),
            Err(e) => e,
        };
        return Err(format!("the clients ended while opening: {why}"));
    }
    let t_open = Instant::now();
    f.open_wall_secs = (t_open - t_clients).as_secs_f64();
    say(format!(
        "{} established, {} failed in {:.2} s; holding them idle for {:?}",
        clients.established(),
        clients.failed(),
        f.open_wall_secs,
        s.hold
    ));

    // A moment for the last ones to settle, then memory.
    // The hold began when the clients' parent told them all to go, which
    // this process sees through their progress lines (every 250 ms): up to
    // a few hundred milliseconds before `t_open`. The CPU window ends a
    // margin before the hold can have ended.
    let settle = (s.hold / 4).min(Duration::from_secs(1));
    let margin = (s.hold / 4).min(Duration::from_secs(1));
    sleep_until(t_open + settle, stop)?;
    f.open = KernelMemory::read();
    f.conns = server.connections();
    f.fds = server.fd_counts();
    f.rss_growth_kib = server
        .worker_rss_kib()
        .iter()
        .zip(&rss_before)
        .map(|(a, b)| *a as i64 - *b as i64)
        .collect();
    f.master_rss_growth_kib = server
        .master_rss_kib()
        .zip(master_before)
        .map(|(a, b)| a as i64 - b as i64);
    let client_pids: Vec<u32> = machine::children_of(std::process::id())
        .into_iter()
        .filter(|&p| p != server.master_pid())
        .collect();
    f.client_pids = client_pids.len();
    f.client_rss_kib = client_pids
        .iter()
        .map(|&p| machine::status_field(p, "VmRSS").unwrap_or(0))
        .sum();

    // Idle CPU over the rest of the hold.
    let client_ticks = || -> u64 { client_pids.iter().map(|&p| machine::cpu_ticks(p)).sum() };
    let (errors0, t_cpu0) = (clients.errors(), Instant::now());
    let (server0, clients0, machine0) =
        (server.cpu_ticks(), client_ticks(), machine::machine_ticks());
    sleep_until(t_open + s.hold - margin, stop)?;
    let (server1, clients1, machine1) =
        (server.cpu_ticks(), client_ticks(), machine::machine_ticks());
    f.cpu_window_secs = t_cpu0.elapsed().as_secs_f64();
    f.server_ticks = server1.saturating_sub(server0);
    f.client_ticks = clients1.saturating_sub(clients0);
    f.machine_busy = if machine1.1 > machine0.1 {
        (machine1.0 - machine0.0) as f64 / (machine1.1 - machine0.1) as f64
    } else {
        f64::NAN
    };
    f.echoes_during_hold = clients.echoes();
    f.errors_during_hold = clients.errors() - errors0;
    f.dead_workers = server.dead_workers();

    // The sample, and the clients' report.
    say("hold over; the sample echoes".into());
    let report = clients.join(s.hold + AFTER_HOLD)?;
    take_report(&mut f, &report);

    // Every connection closed by the clients: the server's descriptors
    // return to where they started.
    say("the clients are done; waiting for the server to close every connection".into());
    let t_close = Instant::now();
    let close_timeout = Duration::from_secs(30) + Duration::from_millis(s.connections as u64 / 20);
    f.closed_in_secs = wait_until(
        "the server to close every connection",
        t_close + close_timeout,
        stop,
        || server.back_to_baseline(),
        || {},
    )
    .ok()
    .map(|()| t_close.elapsed().as_secs_f64());
    if stop.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    f.closed = KernelMemory::read();

    say("stopping the server (SIGTERM)".into());
    let (status, in_time) = server.terminate(STOP_TIMEOUT);
    f.server_exit_ok = in_time && status.is_some_and(|s| s.success());
    f.server_exit = format!(
        "{}{}",
        cluster::describe_exit(status),
        if in_time {
            String::new()
        } else {
            format!(", killed after {STOP_TIMEOUT:?}")
        }
    );
    f.load_after = proc::loadavg();
    say("done".into());
    Ok(f)
}

/// The clients' side of the figures, from their merged report.
fn take_report(f: &mut Figures, r: &Report) {
    f.established = r.connections_established;
    f.failed = r.connections_failed;
    f.open_secs = r.open_secs;
    f.sample_echoed = r.messages;
    f.sample_p50_us = r.latency_us.p50;
    f.sample_p99_us = r.latency_us.p99;
    f.sample_max_us = r.latency_us.max;
    f.client_errors = r
        .errors
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.name().to_string(), *n))
        .collect();
    f.client_passed = r.passed();
}

/// Refuses a run the machine cannot hold: descriptors system-wide and
/// kernel memory.
fn check_machine(s: &Settings) -> Result<(), String> {
    let c = s.connections as u64;
    // Two descriptors per connection (client and server), and slack.
    let files = 2 * c + 10_000;
    if let Some(max) = machine::sysctl("fs/file-max")
        && max < files
    {
        return Err(format!(
            "{c} connections need ~{files} open files machine-wide; fs.file-max is {max}"
        ));
    }
    let available = KernelMemory::read().meminfo_bytes("MemAvailable");
    let need = c * KERNEL_BYTES_PER_CONNECTION;
    if available > 0 && available < need {
        return Err(format!(
            "{c} connections may need ~{} MiB of kernel memory; {} MiB are available",
            need >> 20,
            available >> 20
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Figures per connection
// ---------------------------------------------------------------------------

impl Figures {
    /// Connections the clients proved (the divisor of every "per
    /// connection").
    fn per(&self) -> f64 {
        if self.established == 0 {
            f64::NAN
        } else {
            self.established as f64
        }
    }

    /// The workers' `VmRSS` growth, bytes.
    fn server_rss_growth(&self) -> i64 {
        self.rss_growth_kib.iter().sum::<i64>() * 1024
    }

    fn server_rss_per_conn(&self) -> f64 {
        self.server_rss_growth() as f64 / self.per()
    }

    /// Growth of a `/proc/meminfo` field from before the clients to all
    /// open, per connection, bytes.
    fn kernel_per_conn(&self, key: &str) -> f64 {
        machine::meminfo_delta(&self.before, &self.open, key) as f64 / self.per()
    }

    /// What the slab caches' objects grew by, per connection, less what
    /// listing descriptors under `/proc` added: anything that lists a
    /// process's `/proc/PID/fd` creates an inode (`proc_inode_cache`) and
    /// a dentry per descriptor, and something on a shared machine may do
    /// so at any time; that is reclaimable, and no cost of the
    /// connections. Objects, not slab pages: a cache with room left from
    /// earlier sockets (a run before this one) needs no new pages, so the
    /// `Slab` growth of `/proc/meminfo` says less than the connections
    /// hold.
    fn kernel_objects_per_conn(&self) -> f64 {
        self.kernel_objects(&self.open) as f64 / self.per()
    }

    /// What the slab caches' objects grew by from before the clients
    /// started to `then`, less `/proc` listings (see
    /// [`Figures::kernel_objects_per_conn`]), bytes.
    fn kernel_objects(&self, then: &KernelMemory) -> i64 {
        let grown = machine::slab_growth(&self.before, then);
        let all: i64 = grown.iter().map(|g| g.object_bytes).sum();
        let proc = grown.iter().find(|g| g.name == "proc_inode_cache");
        let dentry = then.slabs.get("dentry").map_or(0, |d| d.objsize) as i64;
        let listing = proc.map_or(0, |p| p.object_bytes.max(0) + p.objects.max(0) * dentry);
        all - listing
    }

    fn tcp_mem_per_conn(&self) -> f64 {
        (self.open.tcp_mem_bytes() as i64 - self.before.tcp_mem_bytes() as i64) as f64 / self.per()
    }

    fn client_rss_per_conn(&self) -> f64 {
        (self.client_rss_kib * 1024) as f64 / self.per()
    }

    /// Share of one core, in per cent, of `ticks` over the CPU window.
    fn core_percent(&self, ticks: u64) -> f64 {
        ticks as f64 / proc::clock_ticks_per_sec() as f64 / self.cpu_window_secs * 100.0
    }

    /// Busiest over quietest worker.
    fn balance(&self) -> f64 {
        let (lo, hi) = (self.conns.iter().min(), self.conns.iter().max());
        match (lo, hi) {
            (Some(&lo), Some(&hi)) if lo > 0 => hi as f64 / lo as f64,
            _ => f64::NAN,
        }
    }

    /// The worker with most descriptors: (index, descriptors).
    fn fullest(&self) -> (usize, usize) {
        self.fds
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|&(_, n)| n)
            .unwrap_or((0, 0))
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// One thing the run must show, and whether it did.
struct Check {
    ok: bool,
    what: String,
}

fn checks(s: &Settings, f: &Figures) -> Vec<Check> {
    let c = s.connections as u64;
    let served: usize = f.conns.iter().sum();
    let (fullest, fds) = f.fullest();
    let mut v = vec![
        Check {
            ok: f.established == c && f.failed == 0,
            what: format!(
                "every connection established and verified by its first echo: {} of {} ({} failed)",
                thousands(f.established as f64),
                thousands(c as f64),
                f.failed
            ),
        },
        Check {
            ok: served as u64 == f.established,
            what: format!(
                "the server holds every one of them: {} connections over its workers",
                thousands(served as f64)
            ),
        },
        Check {
            ok: f.echoes_during_hold == 0 && f.errors_during_hold == 0 && f.dead_workers.is_empty(),
            what: format!(
                "nothing echoed, no error and no worker lost while they sat idle: {} echoes, {} \
                 errors, {} workers gone",
                f.echoes_during_hold,
                f.errors_during_hold,
                f.dead_workers.len()
            ),
        },
        Check {
            ok: f.sample_echoed == s.sample as u64 && f.client_passed,
            what: format!(
                "the sample echoed once more after the hold, every byte checked: {} of {}, errors: {}",
                thousands(f.sample_echoed as f64),
                thousands(s.sample as f64),
                errors_text(&f.client_errors)
            ),
        },
        Check {
            ok: fds < BUDGET,
            what: format!(
                "no worker past its descriptor budget (~{}): the fullest, worker {fullest}, holds {} \
                 descriptors",
                thousands(BUDGET as f64),
                thousands(fds as f64)
            ),
        },
        Check {
            ok: f.closed_in_secs.is_some(),
            what: match f.closed_in_secs {
                Some(t) => format!(
                    "every worker back to its descriptors before the run once the clients closed, \
                     in {t:.1} s"
                ),
                None => "every worker back to its descriptors before the run once the clients \
                         closed: NOT within the timeout"
                    .into(),
            },
        },
        Check {
            ok: f.server_exit_ok,
            what: format!("the server exits 0 on SIGTERM: {}", f.server_exit),
        },
    ];
    // The balance target of the issue, where counts are large enough that
    // the hash's own spread stays well below it (at 10,000 per worker one
    // standard deviation is 1 %).
    if s.workers > 1 && s.connections / s.workers >= 10_000 {
        v.push(Check {
            ok: f.balance() <= 1.05,
            what: format!(
                "balance across workers, busiest / quietest at most 1.05: {:.3}",
                f.balance()
            ),
        });
    }
    v
}

fn errors_text(errors: &[(String, u64)]) -> String {
    if errors.is_empty() {
        "none".into()
    } else {
        errors
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

/// Bytes as `12,345 B` (or `n/a`).
fn bytes(x: f64) -> String {
    if x.is_finite() {
        format!("{} B", thousands(x))
    } else {
        "n/a".into()
    }
}

/// Bytes as MiB with one decimal.
fn mib(x: i64) -> String {
    format!("{:+.1} MiB", x as f64 / (1 << 20) as f64)
}

/// The run's report, in markdown.
fn report_md(s: &Settings, f: &Figures, checks: &[Check]) -> String {
    let mut md = String::new();
    let w = |n: usize| if n == 1 { "worker" } else { "workers" };
    let _ = writeln!(
        md,
        "# Scale: {} connections, {} {}\n",
        thousands(s.connections as f64),
        s.workers,
        w(s.workers)
    );
    let _ = writeln!(
        md,
        "Run on {}, {}; load average (1, 5, 15 min) {} before, {} after. Nothing pinned: \
         the server's workers and the client processes share the machine's CPUs.\n",
        f.date, f.machine, f.load_before, f.load_after
    );
    let _ = writeln!(md, "- command: `{}`", s.command);
    let _ = writeln!(
        md,
        "- server: `{}`{}",
        f.server_args,
        if s.workers > 1 {
            format!(
                ": a master (pid {}) and {} workers",
                f.master_pid,
                f.workers.len()
            )
        } else {
            " (one process, which is its only worker)".into()
        }
    );
    let _ = writeln!(
        md,
        "- clients: `{}` ({} processes found)",
        f.client_args, f.client_pids
    );
    for n in &s.notes {
        let _ = writeln!(md, "- note: {n}");
    }
    md.push('\n');

    let per = f.per();
    let (fullest, fds) = f.fullest();
    let kernel = |key: &str| bytes(f.kernel_per_conn(key));
    let rows = vec![
        vec![
            "connections established and verified (one echo each)".into(),
            format!(
                "{} of {} ({} failed)",
                thousands(f.established as f64),
                thousands(s.connections as f64),
                f.failed
            ),
        ],
        vec![
            "time to open all of them".into(),
            format!(
                "{:.2} s, {} connections/s (slowest client process); {:.2} s from starting the \
                 client processes",
                f.open_secs,
                thousands(f.established as f64 / f.open_secs),
                f.open_wall_secs
            ),
        ],
        vec![
            format!("echoed after {} s idle (sample)", s.hold.as_secs_f64()),
            format!(
                "{} of {}; latency p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs; errors: {}",
                thousands(f.sample_echoed as f64),
                thousands(s.sample as f64),
                f.sample_p50_us,
                f.sample_p99_us,
                f.sample_max_us,
                errors_text(&f.client_errors)
            ),
        ],
        vec![
            "server user-space memory per connection".into(),
            format!(
                "{} (workers' VmRSS {}{})",
                bytes(f.server_rss_per_conn()),
                mib(f.server_rss_growth()),
                f.master_rss_growth_kib
                    .map(|m| format!("; the master's {}", mib(m * 1024)))
                    .unwrap_or_default()
            ),
        ],
        vec![
            "kernel memory per connection (both sockets)".into(),
            format!(
                "{} in slab objects (without /proc listings); new slab pages {} (unreclaimable {}, \
                 reclaimable {}); TCP buffers (sockstat) {}; page tables {}",
                bytes(f.kernel_objects_per_conn()),
                kernel("Slab"),
                kernel("SUnreclaim"),
                kernel("SReclaimable"),
                bytes(f.tcp_mem_per_conn()),
                kernel("PageTables"),
            ),
        ],
        vec![
            "client memory per connection".into(),
            format!(
                "{} (VmRSS of all {} client processes, {:.1} MiB, their fixed part included)",
                bytes(f.client_rss_per_conn()),
                f.client_pids,
                f.client_rss_kib as f64 / 1024.0
            ),
        ],
        vec![
            "CPU while idle".into(),
            format!(
                "server {:.2} % of a core ({} ticks over {:.1} s); clients {:.2} %; the whole \
                 machine {:.1} % busy (everything on it counted)",
                f.core_percent(f.server_ticks),
                f.server_ticks,
                f.cpu_window_secs,
                f.core_percent(f.client_ticks),
                f.machine_busy * 100.0
            ),
        ],
        vec![
            "balance: busiest / quietest worker".into(),
            if f.conns.len() > 1 {
                format!(
                    "{:.3} ({} / {} connections)",
                    f.balance(),
                    thousands(*f.conns.iter().max().unwrap_or(&0) as f64),
                    thousands(*f.conns.iter().min().unwrap_or(&0) as f64)
                )
            } else {
                "1 worker".into()
            },
        ],
        vec![
            "fullest worker".into(),
            format!(
                "worker {fullest}: {} descriptors (RLIMIT_NOFILE {})",
                thousands(fds as f64),
                thousands(*f.fd_limits.get(fullest).unwrap_or(&0) as f64)
            ),
        ],
        vec![
            "after the clients closed".into(),
            format!(
                "{}; slab objects {} over the start (without /proc listings; {} sockets in \
                 TIME_WAIT machine-wide)",
                match f.closed_in_secs {
                    Some(t) => format!("server descriptors back to the start in {t:.1} s"),
                    None => "server descriptors NOT back to the start".into(),
                },
                mib(f.kernel_objects(&f.closed)),
                thousands(*f.closed.sockstat.get("TCP_tw").unwrap_or(&0) as f64)
            ),
        ],
        vec!["server stop (SIGTERM)".into(), f.server_exit.clone()],
    ];
    md.push_str(&markdown_table(&["figure", "value"], &rows));
    let _ = writeln!(
        md,
        "\nPer connection = divided by the {} connections established. Kernel figures are \
         machine-wide growth from before the clients started to all connections open; both \
         ends of every connection are on this machine, so each counts two sockets (client and \
         server), their descriptors and epoll entries. \"In slab objects\" adds up every slab \
         cache's objects in use times their size (`/proc/slabinfo`), less `proc_inode_cache` \
         and as many dentries: an inode and a dentry per descriptor, made by whatever lists \
         `/proc/PID/fd` of the processes (other tools on a shared machine, at any time; this \
         bench only after that reading), reclaimable and no cost of the connections. \"New \
         slab pages\" is the `Slab` growth of `/proc/meminfo`: less where caches had room left \
         from earlier sockets. `sockstat` TCP memory is queued data, machine-wide.\n",
        thousands(per)
    );

    md.push_str("## Checks\n\n");
    for c in checks {
        let _ = writeln!(md, "- [{}] {}", if c.ok { "x" } else { " " }, c.what);
    }

    md.push_str("\n## Workers\n\n");
    let rows: Vec<Vec<String>> = (0..f.workers.len())
        .map(|i| {
            vec![
                i.to_string(),
                f.workers[i].to_string(),
                thousands(*f.conns.get(i).unwrap_or(&0) as f64),
                thousands(*f.fds.get(i).unwrap_or(&0) as f64),
                mib(*f.rss_growth_kib.get(i).unwrap_or(&0) * 1024),
            ]
        })
        .collect();
    md.push_str(&markdown_table(
        &[
            "worker",
            "pid",
            "connections",
            "descriptors",
            "VmRSS growth",
        ],
        &rows,
    ));

    md.push_str("\n## Slab caches whose objects grew most (machine-wide, before to all open)\n\n");
    let grown = machine::largest_growth(&f.before, &f.open, 10);
    if grown.is_empty() {
        md.push_str("(`/proc/slabinfo` could not be read: it needs root.)\n");
    } else {
        let rows: Vec<Vec<String>> = grown
            .iter()
            .map(|g| {
                let aliases = machine::slab_aliases(&g.name);
                vec![
                    if aliases.is_empty() {
                        format!("`{}`", g.name)
                    } else {
                        format!("`{}` (shared with {})", g.name, aliases.join(", "))
                    },
                    thousands(g.objects as f64),
                    format!("{} B", g.objsize),
                    mib(g.object_bytes),
                    bytes(g.object_bytes as f64 / per),
                    mib(g.slab_bytes),
                ]
            })
            .collect();
        md.push_str(&markdown_table(
            &[
                "cache",
                "objects",
                "object size",
                "objects' memory",
                "per connection",
                "new slab pages",
            ],
            &rows,
        ));
        md.push_str(
            "\nA cache \"shared with\" others is one set of slabs the kernel merged from \
             caches of like object size (`/sys/kernel/slab`); its growth may be any of them.\n",
        );
    }
    md
}

/// The run's figures as JSON.
fn report_json(s: &Settings, f: &Figures, checks: &[Check]) -> Value {
    json!({
        "date": f.date,
        "machine": f.machine,
        "quick": s.quick,
        "command": s.command,
        "connections": s.connections,
        "workers": s.workers,
        "client_procs": s.client_procs,
        "hold_s": s.hold.as_secs_f64(),
        "sample": s.sample,
        "established": f.established,
        "failed": f.failed,
        "open_s": f.open_secs,
        "open_wall_s": f.open_wall_secs,
        "sample_echoed": f.sample_echoed,
        "sample_latency_us": { "p50": f.sample_p50_us, "p99": f.sample_p99_us, "max": f.sample_max_us },
        "client_errors": f.client_errors.iter().map(|(k, n)| (k.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "echoes_during_hold": f.echoes_during_hold,
        "per_connection_bytes": {
            "server_rss": f.server_rss_per_conn(),
            "kernel_slab": f.kernel_per_conn("Slab"),
            "kernel_slab_objects": f.kernel_objects_per_conn(),
            "kernel_sunreclaim": f.kernel_per_conn("SUnreclaim"),
            "kernel_tcp_mem": f.tcp_mem_per_conn(),
            "client_rss": f.client_rss_per_conn(),
        },
        "idle_cpu_percent_of_a_core": {
            "server": f.core_percent(f.server_ticks),
            "clients": f.core_percent(f.client_ticks),
            "window_s": f.cpu_window_secs,
        },
        "machine_busy": f.machine_busy,
        "workers_detail": (0..f.workers.len()).map(|i| json!({
            "pid": f.workers[i],
            "connections": f.conns.get(i),
            "descriptors": f.fds.get(i),
            "rss_growth_kib": f.rss_growth_kib.get(i),
        })).collect::<Vec<_>>(),
        "balance": f.balance(),
        "closed_in_s": f.closed_in_secs,
        "server_exit": f.server_exit,
        "checks": checks.iter().map(|c| json!({ "ok": c.ok, "what": c.what })).collect::<Vec<_>>(),
        "passed": checks.iter().all(|c| c.ok),
    })
}

/// The columns of the table of all runs.
const SUMMARY_HEADER: [&str; 13] = [
    "connections",
    "workers",
    "client procs",
    "established",
    "sample echoed",
    "open (s)",
    "server RSS B/conn",
    "kernel slab objects B/conn",
    "client RSS B/conn",
    "server idle CPU %",
    "busiest / quietest",
    "checks",
    "run",
];

/// This run's row of the table of all runs.
fn summary_row(s: &Settings, f: &Figures, checks: &[Check]) -> Vec<String> {
    let failed = checks.iter().filter(|c| !c.ok).count();
    vec![
        thousands(s.connections as f64),
        s.workers.to_string(),
        s.client_procs.to_string(),
        thousands(f.established as f64),
        format!(
            "{} / {}",
            thousands(f.sample_echoed as f64),
            thousands(s.sample as f64)
        ),
        format!("{:.2}", f.open_secs),
        thousands(f.server_rss_per_conn()),
        thousands(f.kernel_objects_per_conn()),
        thousands(f.client_rss_per_conn()),
        format!("{:.2}", f.core_percent(f.server_ticks)),
        if f.conns.len() > 1 {
            format!("{:.3}", f.balance())
        } else {
            "—".into()
        },
        if failed == 0 {
            "all passed".into()
        } else {
            format!("{failed} FAILED")
        },
        format!("{}{}", f.date, if s.quick { ", --quick" } else { "" }),
    ]
}

/// The rows of the table in the generated part of `path`, if any.
fn read_rows(path: &Path) -> Vec<Vec<String>> {
    let Some(text) = support::read_generated(path, "scale") else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with('|'))
        .skip(2) // header and alignment
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// A cell as a number (thousands separators allowed); `None` for text.
fn cell_number(cell: &str) -> Option<f64> {
    cell.replace(',', "").parse().ok()
}

/// The (connections, workers) a row is for.
fn row_key(row: &[String]) -> (u64, u64) {
    let n = |i: usize| row.get(i).and_then(|c| cell_number(c)).unwrap_or(0.0) as u64;
    (n(0), n(1))
}

/// Puts `row` into the table of all runs in `path` (replacing the row of
/// the same connections and workers), writes it back, and redraws the
/// plot of the table to `svg`.
fn update_summary(path: &Path, svg: &Path, row: Vec<String>) {
    let mut rows = read_rows(path);
    rows.retain(|r| row_key(r) != row_key(&row));
    rows.push(row);
    rows.sort_by_key(|r| row_key(r));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "One row per connections x workers, the latest run of each; `cargo bench --bench scale` \
         writes it (into `docs/scale.md` with `--docs`). Per connection = divided by the \
         connections established; kernel slab objects count both sockets of each connection \
         (client and server), their descriptors and epoll entries.\n"
    );
    md.push_str(&markdown_table(&SUMMARY_HEADER, &rows));
    md.push_str(&format!(
        "\n![memory per connection]({})\n",
        svg.file_name().unwrap_or_default().to_string_lossy()
    ));
    support::write_generated(path, "scale", "Scale", &md);
    plot_summary(svg, &rows);
}

/// `--replot`: the plot of the table of all runs, redrawn from the table.
fn replot(o: &Opts) -> ExitCode {
    let (md, svg) = if o.docs {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        (docs.join("scale.md"), docs.join("scale.svg"))
    } else {
        let out = o.out.clone().unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join("scale")
        });
        (out.join("summary.md"), out.join("scale.svg"))
    };
    let rows = read_rows(&md);
    if rows.is_empty() {
        eprintln!("scale: no table of runs in {}", md.display());
        return ExitCode::from(2);
    }
    plot_summary(&svg, &rows);
    eprintln!("scale: {} redrawn from {}", svg.display(), md.display());
    ExitCode::SUCCESS
}

/// Memory per connection of every measured row: server RSS, kernel Slab,
/// client RSS, one group of bars per row.
fn plot_summary(svg: &Path, rows: &[Vec<String>]) {
    let measured: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| (6..=8).all(|i| r.get(i).and_then(|c| cell_number(c)).is_some()))
        .collect();
    if measured.is_empty() {
        return;
    }
    let categories: Vec<String> = measured
        .iter()
        .map(|r| format!("{} x {}w", r[0], r[1]))
        .collect();
    let column = |i: usize| -> Vec<f64> {
        measured
            .iter()
            .map(|r| cell_number(&r[i]).unwrap_or(f64::NAN))
            .collect()
    };
    let series = vec![
        Series {
            name: "server RSS".into(),
            values: column(6),
        },
        Series {
            name: "kernel slab objects (both sockets)".into(),
            values: column(7),
        },
        Series {
            name: "client RSS".into(),
            values: column(8),
        },
    ];
    support::bar_chart(
        svg,
        "Memory per idle connection (connections x workers)",
        "bytes per connection",
        &categories,
        &series,
    );
}

/// Connections of each worker, with their mean, as SVG (W > 1).
fn plot_balance(svg: &Path, s: &Settings, f: &Figures) {
    use plotters::prelude::*;
    let n = f.conns.len();
    let most = *f.conns.iter().max().unwrap_or(&1) as f64;
    // The descriptor budget is drawn where the fullest worker comes near it.
    let budget = (most > 0.8 * BUDGET as f64).then_some(BUDGET as f64);
    let hi = most.max(budget.unwrap_or(0.0)) * 1.15;
    let mean = f.conns.iter().sum::<usize>() as f64 / n.max(1) as f64;
    let width = (16 * n as u32 + 160).clamp(480, 1400);
    let root = SVGBackend::new(svg, (width, 380)).into_drawing_area();
    root.fill(&WHITE).expect("plot background");
    let title = format!(
        "Connections per worker: {} over {} workers, busiest / quietest {:.3}",
        thousands(f.established as f64),
        s.workers,
        f.balance()
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..hi.max(1.0))
        .expect("plot axes");
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("worker")
        .y_desc("connections")
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                format!("{}", i as u64)
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| thousands(*v))
        .draw()
        .expect("plot mesh");
    let blue = RGBColor(0x1f, 0x77, 0xb4);
    chart
        .draw_series(f.conns.iter().enumerate().map(|(i, &c)| {
            Rectangle::new(
                [(i as f64 - 0.4, 0.0), (i as f64 + 0.4, c as f64)],
                blue.filled(),
            )
        }))
        .expect("plot bars");
    chart
        .draw_series(LineSeries::new(
            vec![(-0.5, mean), (n as f64 - 0.5, mean)],
            RED.stroke_width(1),
        ))
        .expect("plot mean")
        .label(format!("mean {}", thousands(mean)))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    if let Some(b) = budget {
        chart
            .draw_series(LineSeries::new(
                vec![(-0.5, b), (n as f64 - 0.5, b)],
                BLACK.stroke_width(1),
            ))
            .expect("plot budget")
            .label(format!("descriptor budget ~{}", thousands(b)))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .expect("plot legend");
    root.present().expect("write SVG plot");
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

fn main() -> ExitCode {
    let opts = Opts::parse();
    // The first Ctrl+C (or SIGTERM) ends the run: everything started is
    // killed and nothing is reported. A second one exits at once (the
    // server dies with this process, the clients see their stdin close).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop));
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }
    if opts.replot {
        return replot(&opts);
    }
    let settings = match Settings::resolve(&opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scale: {e}");
            return ExitCode::from(2);
        }
    };
    let figures = match run(&settings, &stop) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("scale: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks = checks(&settings, &figures);
    let md = report_md(&settings, &figures, &checks);
    let tag = settings.tag();
    let out = &settings.out;
    let write = |name: String, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    write(format!("scale-{tag}.md"), md.clone());
    write(
        format!("scale-{tag}.json"),
        serde_json::to_string_pretty(&report_json(&settings, &figures, &checks))
            .expect("JSON of the figures"),
    );
    if figures.conns.len() > 1 {
        plot_balance(&out.join(format!("balance-{tag}.svg")), &settings, &figures);
    }
    let row = summary_row(&settings, &figures, &checks);
    update_summary(&out.join("summary.md"), &out.join("scale.svg"), row.clone());
    if settings.docs {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        update_summary(&docs.join("scale.md"), &docs.join("scale.svg"), row);
    }
    println!("{md}");
    println!(
        "(written to {})",
        out.join(format!("scale-{tag}.md")).display()
    );
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "scale: {} check(s) FAILED",
            checks.iter().filter(|c| !c.ok).count()
        );
        ExitCode::FAILURE
    }
}
