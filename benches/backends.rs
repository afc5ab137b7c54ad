//! The same event loop on epoll, poll(2) and select(2): what a tick costs
//! as idle connections pile up (issue 5's measurement).
//!
//! For each backend, 10 connections play ping-pong with 64-byte messages
//! while N more connections sit open and silent, N in {0, 100, 1,000,
//! 5,000, 15,000}; select stops where FD_SETSIZE does. The server is the
//! real `echo-reactor --backend B` on CPU 0; the client (the project's
//! stress-client engine, in this process) and the idle connections on
//! CPU 1. Backends take turns round by round (epoll poll select, epoll poll
//! select, ...) so that drift on the shared machine hits all alike; the
//! tables show medians.
//!
//! ```sh
//! cargo bench --bench backends --no-run     # build first, at low priority
//! cargo bench --bench backends              # ~6 min; writes docs/backends.{md,svg}
//! cargo bench --bench backends -- --quick   # ~1 min smoke run into target/backends-quick/
//! ```
//!
//! What to expect, and why: epoll's `epoll_wait` returns only ready
//! sockets, so its cost per echo should not depend on N. poll(2) hands the
//! kernel all N + 10 `pollfd`s on every call and the kernel checks each, so
//! its cost per echo grows linearly with N; select(2) scans bitmaps up to
//! the highest descriptor, likewise linear, and cannot go past 1,024.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use support::{
    Load, Measurement, Placement, Series, Server, ServerSpec, Timing, interleave, line_chart,
    markdown_table, median, thousands,
};

/// Active ping-pong connections, and their message size.
const ACTIVE: usize = 10;
const SIZE: usize = 64;
/// Idle connections open alongside.
const IDLE: [usize; 5] = [0, 100, 1_000, 5_000, 15_000];
/// The backends, in the order they take turns.
const BACKENDS: [&str; 3] = ["epoll", "poll", "select"];
/// select's limit. The server's own descriptors (stdio, listener, pipes,
/// spare) sit below the connections, so N + ACTIVE + this margin must fit.
const FD_SETSIZE: usize = 1024;
const SERVER_OWN_FDS: usize = 12;
/// Source addresses 127.0.0.1 ..= 127.0.0.N for the idle connections.
const IDLE_SOURCES: usize = 8;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let out = if quick {
        PathBuf::from("target/backends-quick")
    } else {
        PathBuf::from("docs")
    };
    std::fs::create_dir_all(&out).expect("create the output directory");
    let _ = echo_bench::raise_nofile_limit();
    let placement = Placement::detect();
    if let Some(cpu) = placement.client_cpu {
        support::pin_current_thread(cpu);
    }
    let (rounds, timing, idle): (usize, Timing, &[usize]) = if quick {
        let t = Timing {
            warmup: Duration::from_millis(200),
            window: Duration::from_secs(1),
        };
        (1, t, &[0, 1_000, 5_000])
    } else {
        let t = Timing {
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(3),
        };
        (3, t, &IDLE)
    };
    let specs: Vec<ServerSpec> = BACKENDS
        .iter()
        .map(|b| ServerSpec::new(b, env!("CARGO_BIN_EXE_echo-reactor"), &["--backend", b]))
        .collect();
    eprintln!(
        "backends: {} idle counts x {} backends x {rounds} round(s); {}",
        idle.len(),
        BACKENDS.len(),
        placement.describe()
    );
    let started = std::time::Instant::now();
    // results[n][backend][round]; None where the backend cannot run it.
    let mut results: Vec<Vec<Vec<Option<Measurement>>>> = Vec::new();
    for &n in idle {
        eprintln!("  {n} idle ...");
        let runs = interleave(rounds, specs.len(), |b, _round| {
            if BACKENDS[b] == "select" && n + ACTIVE + SERVER_OWN_FDS > FD_SETSIZE {
                return None;
            }
            let server = Server::start(&specs[b], placement.server_cpu);
            let idle_conns = open_idle(server.addr(), n);
            let m = support::measure(
                &server,
                &[Load::ping_pong(ACTIVE, SIZE)],
                timing,
                placement.client_cpu,
            );
            drop(idle_conns);
            server.stop();
            if m.errors() > 0 {
                eprintln!("    {}: {} client errors", BACKENDS[b], m.errors());
            }
            eprintln!(
                "    {:6} {:>8.0} req/s  {:6.2} us CPU/echo",
                BACKENDS[b],
                m.total_req_per_sec(),
                m.cpu_per_1000() * 1000.0
            );
            Some(m)
        });
        results.push(runs);
    }
    let elapsed = started.elapsed();
    let md = report(idle, &results, rounds, timing, &placement, quick, elapsed);
    support::write_generated(&out.join("backends.md"), "backends", "Backends", &md);
    plot(&out.join("backends.svg"), idle, &results);
    eprintln!(
        "wrote {} and {} in {:.0?}",
        out.join("backends.md").display(),
        out.join("backends.svg").display(),
        elapsed
    );
}

/// Opens `n` connections from this process and has each echo one byte, so
/// the server has accepted and registered every one before the
/// measurement; then they stay silent.
fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let src: SocketAddr = format!("127.0.0.{}:0", i % IDLE_SOURCES + 1)
            .parse()
            .expect("source address");
        socket.bind(&src.into()).expect("bind an idle client");
        socket
            .connect(&addr.into())
            .expect("connect an idle client");
        conns.push(TcpStream::from(socket));
    }
    for c in &mut conns {
        c.write_all(b"i").expect("write to an idle connection");
    }
    for c in &mut conns {
        let mut b = [0u8; 1];
        c.read_exact(&mut b).expect("echo on an idle connection");
    }
    conns
}

/// Median of `f` over the rounds that ran.
fn med(runs: &[Option<Measurement>], f: impl Fn(&Measurement) -> f64) -> f64 {
    let ran: Vec<&Measurement> = runs.iter().flatten().collect();
    median(&ran, |m| f(m))
}

/// Today's date (UTC) and the machine; `cpus` comes from the placement,
/// taken before this process pinned itself to one CPU.
fn machine(cpus: usize) -> (String, String) {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let date = run("date", &["-u", "+%Y-%m-%d"]);
    let kernel = run("uname", &["-r"]);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    (date, format!("{cpus} CPUs ({cpu}), Linux {kernel}"))
}

fn report(
    idle: &[usize],
    results: &[Vec<Vec<Option<Measurement>>>],
    rounds: usize,
    timing: Timing,
    placement: &Placement,
    quick: bool,
    elapsed: Duration,
) -> String {
    let (date, machine) = machine(placement.cpus);
    let mut s = String::new();
    s.push_str(&format!(
        "Generated by `cargo bench --bench backends{}` on {date}; {machine}; {}. \
         {ACTIVE} connections play ping-pong with {SIZE}-byte messages while N idle \
         connections are open (all from the bench process); {rounds} round(s) of \
         {:?} each after {:?} of warm-up, backends interleaved, medians shown; \
         the whole run took {:.0?}. CPU is the server's user + system time from \
         `/proc/PID/stat` over the measured window.\n\n",
        if quick { " -- --quick" } else { "" },
        placement.describe(),
        timing.window,
        timing.warmup,
        elapsed
    ));
    let header = [
        "idle connections",
        "backend",
        "req/s",
        "server CPU µs / echo",
        "server CPU busy",
    ];
    let mut rows = Vec::new();
    for (i, &n) in idle.iter().enumerate() {
        for (b, name) in BACKENDS.iter().enumerate() {
            let runs = &results[i][b];
            if runs.iter().all(Option::is_none) {
                rows.push(vec![
                    thousands(n as f64),
                    name.to_string(),
                    "—".into(),
                    format!("— (past FD_SETSIZE = {FD_SETSIZE})"),
                    "—".into(),
                ]);
                continue;
            }
            rows.push(vec![
                thousands(n as f64),
                name.to_string(),
                thousands(med(runs, Measurement::total_req_per_sec)),
                format!("{:.2}", med(runs, |m| m.cpu_per_1000() * 1000.0)),
                format!("{:.0} %", med(runs, Measurement::busy) * 100.0),
            ]);
        }
    }
    s.push_str(&markdown_table(&header, &rows));
    s.push('\n');
    s
}

fn plot(path: &Path, idle: &[usize], results: &[Vec<Vec<Option<Measurement>>>]) {
    // A log axis has no zero: plot against all connections open (idle plus
    // the active ones), which is what poll and select actually scan.
    let x: Vec<f64> = idle.iter().map(|&n| (n + ACTIVE) as f64).collect();
    let series: Vec<Series> = BACKENDS
        .iter()
        .enumerate()
        .map(|(b, name)| Series {
            name: name.to_string(),
            values: results
                .iter()
                .map(|per_n| med(&per_n[b], |m| m.cpu_per_1000() * 1000.0))
                .collect(),
        })
        .collect();
    line_chart(
        path,
        "Server CPU per echo, 10 active connections among idle ones",
        "connections open (10 active + idle)",
        "server CPU per echo (µs)",
        &x,
        &series,
    );
}
