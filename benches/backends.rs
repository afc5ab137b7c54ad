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
//! cargo bench --bench backends -- --replot  # redraw docs/backends.svg from docs/backends.md
//! ```
//!
//! What to expect, and why: epoll's `epoll_wait` returns only ready
//! sockets, so its cost per echo should not depend on N. poll(2) hands the
//! kernel all N + 10 `pollfd`s on every call and the kernel checks each, so
//! its cost per echo grows linearly with N; select(2) scans bitmaps up to
//! the highest descriptor, likewise linear, and cannot go past 1,024.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{
    Load, Measurement, Placement, Series, Server, ServerSpec, Timing, interleave, line_chart,
    markdown_table, median, proc, thousands,
};

/// Active ping-pong connections, and their message size.
const ACTIVE: usize = 10;
const SIZE: usize = 64;
/// Idle connections open alongside.
const IDLE: [usize; 5] = [0, 100, 1_000, 5_000, 15_000];
/// The backends, in the order they take turns.
const BACKENDS: [&str; 3] = ["epoll", "poll", "select"];
/// The server's own descriptors (stdio, listener, pipes, spare) sit below
/// the connections, so N + ACTIVE + this margin must stay under select's
/// `FD_SETSIZE`.
const SERVER_OWN_FDS: usize = 12;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--replot") {
        replot(Path::new("docs"));
        return;
    }
    let out = if quick {
        PathBuf::from("target/backends-quick")
    } else {
        PathBuf::from("docs")
    };
    std::fs::create_dir_all(&out).expect("create the output directory");
    let _ = echo_reactor::bench::raise_nofile_limit();
    let placement = Placement::detect();
    if let Some(cpu) = placement.client_cpu {
        support::pin_current_thread(cpu);
    }
    let (rounds, timing, idle) = plan(quick);
    eprintln!(
        "backends: {} idle counts x {} backends x {rounds} round(s); {}",
        idle.len(),
        BACKENDS.len(),
        placement.describe()
    );
    let started = std::time::Instant::now();
    // results[n][backend][round]; None where the backend cannot run it.
    let results: Vec<Vec<Vec<Option<Measurement>>>> = idle
        .iter()
        .map(|&n| measure_with_idle(n, rounds, timing, &placement))
        .collect();
    let elapsed = started.elapsed();
    let md = report(idle, &results, rounds, timing, &placement, quick, elapsed);
    support::write_generated(&out.join("backends.md"), "backends", "Backends", &md);
    plot(&out.join("backends.svg"), idle, &cpu_per_echo(&results));
    eprintln!(
        "wrote {} and {} in {:.0?}",
        out.join("backends.md").display(),
        out.join("backends.svg").display(),
        elapsed
    );
}

/// Rounds, timing and idle counts of a full or a `--quick` run.
fn plan(quick: bool) -> (usize, Timing, &'static [usize]) {
    if quick {
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
    }
}

/// Whether select can serve `idle` idle connections beside the active ones.
fn select_can_serve(idle: usize) -> bool {
    idle + ACTIVE + SERVER_OWN_FDS <= libc::FD_SETSIZE
}

/// Every backend with `n` idle connections open, `rounds` times,
/// interleaved; `[backend][round]`, `None` where select cannot serve them.
fn measure_with_idle(
    n: usize,
    rounds: usize,
    timing: Timing,
    placement: &Placement,
) -> Vec<Vec<Option<Measurement>>> {
    eprintln!("  {n} idle ...");
    interleave(rounds, BACKENDS.len(), |b, _round| {
        let backend = BACKENDS[b];
        if backend == "select" && !select_can_serve(n) {
            return None;
        }
        let spec = ServerSpec::new(
            backend,
            env!("CARGO_BIN_EXE_echo-reactor"),
            &["--backend", backend],
        );
        let server = Server::start(&spec, placement.server_cpu);
        let idle = proc::open_idle(server.addr(), n);
        let load = [Load::ping_pong(ACTIVE, SIZE)];
        let m = support::measure(&server, &load, timing, placement.client_cpu);
        drop(idle);
        server.stop();
        if m.errors() > 0 {
            eprintln!("    {backend}: {} client errors", m.errors());
        }
        eprintln!(
            "    {backend:6} {:>8.0} req/s  {:6.2} us CPU/echo",
            m.total_req_per_sec(),
            m.cpu_per_1000() * 1000.0
        );
        Some(m)
    })
}

/// Median of `f` over the rounds that ran.
fn med(runs: &[Option<Measurement>], f: impl Fn(&Measurement) -> f64) -> f64 {
    let ran: Vec<&Measurement> = runs.iter().flatten().collect();
    median(&ran, |m| f(m))
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
    let (date, machine) = (proc::utc_now("%F"), proc::machine());
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
                    format!("— (past FD_SETSIZE = {})", libc::FD_SETSIZE),
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

/// Server CPU per echo in µs, the median over rounds: `[backend][n]`,
/// NaN where a backend did not run.
fn cpu_per_echo(results: &[Vec<Vec<Option<Measurement>>>]) -> Vec<Vec<f64>> {
    (0..BACKENDS.len())
        .map(|b| {
            results
                .iter()
                .map(|per_n| med(&per_n[b], |m| m.cpu_per_1000() * 1000.0))
                .collect()
        })
        .collect()
}

/// Redraws `DIR/backends.svg` from the table of the last run in
/// `DIR/backends.md`, without measuring anything: for a change to the plot
/// alone, on a machine too busy to measure.
fn replot(dir: &Path) {
    let md_path = dir.join("backends.md");
    let table = support::read_generated(&md_path, "backends")
        .unwrap_or_else(|| panic!("no generated table in {}", md_path.display()));
    let (idle, cpu_us) = parse_table(&table);
    let svg = dir.join("backends.svg");
    plot(&svg, &idle, &cpu_us);
    eprintln!(
        "redrew {} from the figures in {}",
        svg.display(),
        md_path.display()
    );
}

/// The idle counts of the generated table, and per backend the column
/// "server CPU µs / echo" (NaN where the backend could not run).
fn parse_table(table: &str) -> (Vec<usize>, Vec<Vec<f64>>) {
    let mut idle: Vec<usize> = Vec::new();
    let mut cpu_us = vec![Vec::new(); BACKENDS.len()];
    for line in table.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        // Data rows only: the header and the alignment row have no count.
        let Some(n) = cells.first().and_then(|c| c.replace(',', "").parse().ok()) else {
            continue;
        };
        let b = BACKENDS
            .iter()
            .position(|name| cells.get(1) == Some(name))
            .unwrap_or_else(|| panic!("no backend in row {line:?}"));
        if idle.last() != Some(&n) {
            idle.push(n);
        }
        let us = cells.get(3).and_then(|c| c.parse().ok());
        cpu_us[b].push(us.unwrap_or(f64::NAN));
    }
    assert!(
        !idle.is_empty() && cpu_us.iter().all(|v| v.len() == idle.len()),
        "the table does not have one row per backend and idle count:\n{table}"
    );
    (idle, cpu_us)
}

/// The plot: server CPU per echo (`cpu_us[backend][n]`) against the
/// connections open.
fn plot(path: &Path, idle: &[usize], cpu_us: &[Vec<f64>]) {
    // A log axis has no zero: plot against all connections open (idle plus
    // the active ones), which is what poll and select actually scan.
    let x: Vec<f64> = idle.iter().map(|&n| (n + ACTIVE) as f64).collect();
    let series: Vec<Series> = BACKENDS
        .iter()
        .zip(cpu_us)
        .map(|(&name, values)| Series {
            name: match name {
                "select" => format!("select (to {} fds)", thousands(libc::FD_SETSIZE as f64)),
                _ => name.to_string(),
            },
            values: values.clone(),
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
