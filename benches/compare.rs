//! Side by side, in one run: echo-reactor against a thread per connection,
//! tokio `current_thread` and tokio `multi_thread` (one worker, pinned to
//! the same CPU), all driven by the project's stress client; and over UDP
//! (the `udp` rows), echo-reactor's `--udp` against the tokio UDP echo
//! (`examples/tokio_udp_echo.rs`) and two minimal C loops, a datagram per
//! call (`benches/support/udp_echo.c`) and a batch per call with
//! `recvmmsg`/`sendmmsg` (`benches/support/udp_echo_mmsg.c`), built with
//! `cc` (left out, loudly, where there is none).
//!
//! Run (build first, at low priority; then measure):
//!
//! ```sh
//! cargo build --release --bins --examples && cargo bench --bench compare --no-run
//! cargo bench --bench compare            # full run, ~16 min, writes docs/
//! cargo bench --bench compare -- --quick # smoke run, ~1 min, writes target/compare-quick/
//! cargo bench --bench compare -- --only "64 B x|pipelined" --out DIR  # re-measure some rows
//! cargo bench --bench compare -- --only probe --servers reactor,tokio-ct --rounds 7 \
//!     --extra variant=/tmp/echo-reactor-variant  # A/B a modified build
//! cargo bench --bench compare -- --only "ping-pong 64 B x 100" \
//!     --servers echo-reactor,tokio-ct --rounds 5  # the reactor against tokio, one row
//! cargo bench --bench compare -- --only udp --rounds 3  # the UDP rows
//! cargo bench --bench compare -- --only "udp 64 B x 10" --servers none \
//!     --extra "b8=target/release/echo-reactor --udp-batch 8"  # a server flag, alone
//! cargo bench --bench compare -- --replot  # redraw the plots from docs/benchmarks.md
//! ```
//!
//! Every server runs on CPU 0 and the client (this process) on CPU 1 when
//! there are two CPUs. For each scenario, the servers take turns round by
//! round (A B C D, A B C D, ...), a fresh server process per run, and the
//! tables show medians. The spawn/measure machinery is in
//! `benches/support/mod.rs`, shared with the other server-against-server
//! benches; this file is the list of servers and scenarios and the report.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{
    IdleRss, Load, Measurement, Placement, Series, Server, ServerSpec, Timing, bar_chart,
    build_examples, idle_rss, interleave, line_chart, markdown_table, median, proc, thousands,
};

/// A ratio to tokio is only meaningful when the server's core is nearly
/// full: below this busy share, the client or the round trip is the limit,
/// and req/s says little about the server.
const SATURATED: f64 = 0.90;

/// The server the ratios are taken against.
const BASELINE: &str = "tokio-ct";

/// The server the UDP rows' ratios are taken against.
const UDP_BASELINE: &str = "tokio-udp";

/// One thing to measure: a set of loads run at once against each server.
struct Scenario {
    /// Short name for tables.
    name: String,
    /// The loads; for the fairness probe the first is the probe.
    loads: Vec<Load>,
    /// Whether the first load is a latency probe among floods.
    probe: bool,
}

struct Options {
    quick: bool,
    out: PathBuf,
    /// Only the scenarios one of its `|`-separated parts names exactly or,
    /// failing that, is part of (see `select_scenarios`; and no idle-memory
    /// scenario unless a part is part of "idle"): to re-measure a few rows.
    only: Option<String>,
    /// Only the built-in servers whose name contains one of these.
    servers: Vec<String>,
    /// Rounds instead of the default (3, or 1 with --quick).
    rounds: Option<usize>,
    /// More servers, `NAME=PATH [ARGS]`: a modified reactor build against
    /// the committed one, or the committed one with a flag, say. In the UDP
    /// rows they are reactor builds, started with `--udp` too.
    extra: Vec<(String, String)>,
    /// Measure nothing: redraw the plots in `out` from the tables of
    /// `out/benchmarks.md`.
    replot: bool,
}

fn main() {
    let opts = parse_args();
    if opts.replot {
        replot(&opts.out);
        return;
    }
    let placement = Placement::detect();
    let plan = Plan::new(&opts);
    let tcp_wanted = !plan.scenarios.is_empty() || plan.idle_connections > 0;
    let servers = if tcp_wanted {
        servers(&opts)
    } else {
        Vec::new()
    };
    let udp_servers = if plan.udp.is_empty() {
        Vec::new()
    } else {
        udp_servers(&opts)
    };
    // This process is the client: its sampler thread too stays off the
    // server's CPU.
    if let Some(cpu) = placement.client_cpu {
        support::pin_current_thread(cpu);
    }
    let started = std::time::Instant::now();
    let load_before = proc::loadavg();
    eprintln!(
        "compare: {} TCP scenarios x {} servers, {} UDP scenarios x {} servers, {} round(s); {}",
        plan.scenarios.len(),
        servers.len(),
        plan.udp.len(),
        udp_servers.len(),
        plan.rounds,
        placement.describe()
    );
    let results: Vec<Vec<Vec<Measurement>>> = plan
        .scenarios
        .iter()
        .map(|sc| run_scenario(sc, &servers, &plan, &placement))
        .collect();
    let udp_results: Vec<Vec<Vec<Measurement>>> = plan
        .udp
        .iter()
        .map(|sc| run_scenario(sc, &udp_servers, &plan, &placement))
        .collect();
    let idle = run_idle(&servers, &plan, &placement);
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("done in {elapsed:.0} s");
    let context = format!(
        "The whole run took {elapsed:.0} s. Load average (1, 5, 15 min) at the start: {load_before}; \
         at the end: {}.",
        proc::loadavg()
    );

    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    let udp_names: Vec<&str> = udp_servers.iter().map(|s| s.name.as_str()).collect();
    let mut md = report(&placement, &names, &plan, &results, &idle);
    if !plan.udp.is_empty() {
        md.push_str(&udp_table(&udp_names, &plan.udp, &udp_results));
    }
    md.push_str(&format!("\n{context}\n"));
    let figures = Figures::measured(&names, &results, &idle, plan.idle_connections);
    plots(&opts.out, &plan.scenarios, &figures);
    support::write_generated(
        &opts.out.join("benchmarks.md"),
        "compare",
        "Benchmarks",
        &md,
    );
    println!("{md}");
}

/// The servers to compare: the reactor as cargo built it for this bench,
/// and the examples built by cargo in release (see
/// `support::build_examples` for why they are not compiled into the
/// bench), narrowed by `--servers`, plus any `--extra`.
fn servers(opts: &Options) -> Vec<ServerSpec> {
    let examples = build_examples(&["thread_per_connection", "tokio_echo"]);
    let mut servers = vec![
        ServerSpec::new("echo-reactor", env!("CARGO_BIN_EXE_echo-reactor"), &[]),
        ServerSpec::new("thread-per-conn", &examples[0], &[]),
        ServerSpec::new("tokio-ct", &examples[1], &[]),
        ServerSpec::new("tokio-mt1", &examples[1], &["--multi-thread"]),
    ];
    if !opts.servers.is_empty() {
        servers.retain(|s| opts.servers.iter().any(|w| s.name.contains(w.as_str())));
    }
    for (name, command) in &opts.extra {
        let (program, args) = split_command(command);
        servers.push(ServerSpec::new(name, program, &args));
    }
    servers
}

/// The servers of the UDP rows: the reactor (with `--udp`), the tokio UDP
/// echo, and the two C loops where `cc` builds them (`--servers c-udp`
/// names both, `mmsg` the batching one), narrowed by `--servers`;
/// every `--extra` is taken for a reactor build and started with `--udp`.
fn udp_servers(opts: &Options) -> Vec<ServerSpec> {
    const REACTOR_UDP: [&str; 4] = ["--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0"];
    let wanted = |name: &str| {
        opts.servers.is_empty() || opts.servers.iter().any(|w| name.contains(w.as_str()))
    };
    let mut servers = Vec::new();
    if wanted("echo-reactor") {
        let reactor = env!("CARGO_BIN_EXE_echo-reactor");
        servers.push(ServerSpec::udp("echo-reactor", reactor, &REACTOR_UDP));
    }
    if wanted("tokio-udp") {
        let tokio = &build_examples(&["tokio_udp_echo"])[0];
        let listen = ["--listen", "127.0.0.1:0"];
        servers.push(ServerSpec::udp("tokio-udp", tokio, &listen));
    }
    // The C loops: a datagram per call, and a batch per call.
    for (name, source) in [("c-udp", "udp_echo"), ("c-udp-mmsg", "udp_echo_mmsg")] {
        if wanted(name) {
            match build_c_udp_loop(source) {
                Ok(c) => servers.push(ServerSpec::udp(name, c, &["127.0.0.1", "0"])),
                Err(why) => eprintln!("SKIPPED: the C UDP loop ({name}): {why}"),
            }
        }
    }
    for (name, command) in &opts.extra {
        let (program, mut args) = split_command(command);
        args.extend(REACTOR_UDP);
        servers.push(ServerSpec::udp(name, program, &args));
    }
    servers
}

/// `PATH ARGS...` of an `--extra`, split at spaces.
fn split_command(command: &str) -> (&str, Vec<&str>) {
    let mut words = command.split_whitespace();
    let program = words.next().expect("--extra NAME=PATH [ARGS]");
    (program, words.collect())
}

/// Builds `benches/support/SOURCE.c` with `cc -O2` into the target
/// directory; why not, when there is no working `cc`.
fn build_c_udp_loop(source: &str) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join(format!("target/{source}_c"));
    let built = std::process::Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(root.join(format!("benches/support/{source}.c")))
        .status();
    match built {
        Ok(status) if status.success() => Ok(out),
        Ok(status) => Err(format!("cc failed ({status})")),
        Err(e) => Err(format!("no cc ({e})")),
    }
}

/// The scenarios `only` asks for: each `|`-separated part selects the
/// scenario it names exactly, or, when none has that name, every scenario
/// whose name contains it (`ping-pong 1 KiB x 10` is that row alone;
/// `1 KiB` is four rows).
fn select_scenarios(all: Vec<Scenario>, only: &str) -> Vec<Scenario> {
    let parts: Vec<&str> = only.split('|').collect();
    let exact = |part: &str| all.iter().any(|sc| sc.name == part);
    let wanted: Vec<bool> = all
        .iter()
        .map(|sc| {
            parts.iter().any(|&part| {
                if exact(part) {
                    sc.name == part
                } else {
                    sc.name.contains(part)
                }
            })
        })
        .collect();
    all.into_iter()
        .zip(wanted)
        .filter_map(|(sc, wanted)| wanted.then_some(sc))
        .collect()
}

/// What one run measures, and for how long.
struct Plan {
    rounds: usize,
    timing: Timing,
    /// The TCP scenarios.
    scenarios: Vec<Scenario>,
    /// The UDP scenarios, against the UDP servers.
    udp: Vec<Scenario>,
    /// Connections of the idle-memory scenario; 0 to skip it.
    idle_connections: usize,
}

impl Plan {
    fn new(opts: &Options) -> Plan {
        let (rounds, timing, idle_connections) = if opts.quick {
            let t = Timing {
                warmup: Duration::from_millis(200),
                window: Duration::from_secs(1),
            };
            (1, t, 1_000)
        } else {
            let t = Timing {
                warmup: Duration::from_millis(500),
                window: Duration::from_millis(2_500),
            };
            (3, t, 10_000)
        };
        let mut scenarios = scenarios(opts.quick);
        if let Some(only) = &opts.only {
            scenarios = select_scenarios(scenarios, only);
        }
        let (udp, scenarios) = scenarios.into_iter().partition(|sc| sc.loads[0].udp);
        let idle_connections = match &opts.only {
            Some(only) if !only.split('|').any(|part| "idle".contains(part)) => 0,
            _ => idle_connections,
        };
        Plan {
            rounds: opts.rounds.unwrap_or(rounds),
            timing,
            scenarios,
            udp,
            idle_connections,
        }
    }
}

/// One scenario against every server, interleaved: `[server][round]`.
fn run_scenario(
    sc: &Scenario,
    servers: &[ServerSpec],
    plan: &Plan,
    placement: &Placement,
) -> Vec<Vec<Measurement>> {
    eprintln!("  {} ...", sc.name);
    interleave(plan.rounds, servers.len(), |s, _round| {
        let server = Server::start(&servers[s], placement.server_cpu);
        let m = support::measure(&server, &sc.loads, plan.timing, placement.client_cpu);
        server.stop();
        let first = m.loads.first().copied().unwrap_or_default();
        let udp = if sc.loads[0].udp {
            format!(
                "  {:.0} dgrams/CPU s  user {:.0}%  lost {}",
                m.per_cpu_sec(),
                m.user_share() * 100.0,
                m.lost()
            )
        } else {
            String::new()
        };
        eprintln!(
            "    {:<16} {:>9.0} req/s  p50 {:>6.0} us  p99 {:>6.0} us  busy {:>3.0}%  errors {}{udp}",
            servers[s].name,
            first.req_per_sec,
            first.p50_us,
            first.p99_us,
            m.busy() * 100.0,
            m.errors()
        );
        m
    })
}

/// The idle-memory scenario against every server: `[server][round]`,
/// empty rounds when the plan skips it.
fn run_idle(servers: &[ServerSpec], plan: &Plan, placement: &Placement) -> Vec<Vec<IdleRss>> {
    let connections = plan.idle_connections;
    if connections > 0 {
        eprintln!("  idle memory, {connections} connections ...");
    }
    let rounds = if connections == 0 { 0 } else { plan.rounds };
    interleave(rounds, servers.len(), |s, _round| {
        let server = Server::start(&servers[s], placement.server_cpu);
        std::thread::sleep(Duration::from_millis(200));
        let r = idle_rss(&server, connections, Duration::from_secs(1));
        server.stop();
        r
    })
}

fn parse_args() -> Options {
    let mut quick = false;
    let mut out = None;
    let mut only = None;
    let mut servers = Vec::new();
    let mut rounds = None;
    let mut extra = Vec::new();
    let mut replot = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--replot" => replot = true,
            "--out" => out = Some(PathBuf::from(args.next().expect("--out DIR"))),
            "--only" => only = Some(args.next().expect("--only SCENARIO-SUBSTRING")),
            "--servers" => {
                let list = args.next().expect("--servers NAME,NAME");
                servers.extend(list.split(',').map(str::to_string));
            }
            "--rounds" => {
                let n = args.next().and_then(|n| n.parse().ok());
                rounds = Some(n.filter(|&n| n > 0).expect("--rounds N (N >= 1)"));
            }
            "--extra" => {
                let spec = args.next().unwrap_or_default();
                let (name, path) = spec.split_once('=').expect("--extra NAME=PATH [ARGS]");
                extra.push((name.to_string(), path.to_string()));
            }
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            other => panic!(
                "unknown argument {other:?} (use --quick, --out DIR, --only TEXT, \
                 --servers NAME,NAME, --rounds N, --extra \"NAME=PATH [ARGS]\", --replot)"
            ),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = out.unwrap_or_else(|| {
        if quick || only.is_some() || !servers.is_empty() || rounds.is_some() || !extra.is_empty() {
            root.join("target/compare-quick")
        } else {
            root.join("docs")
        }
    });
    std::fs::create_dir_all(&out).expect("create the output directory");
    Options {
        quick,
        out,
        only,
        servers,
        rounds,
        extra,
        replot,
    }
}

/// Connection counts of the ping-pong grid.
const CONNECTIONS: [usize; 4] = [1, 10, 100, 1_000];
/// Message sizes of the ping-pong grid.
const SIZES: [usize; 3] = [64, 1024, 16 * 1024];

fn size_name(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn scenarios(quick: bool) -> Vec<Scenario> {
    let mut v = Vec::new();
    for &size in &SIZES {
        for &c in &CONNECTIONS {
            if quick && !matches!((size, c), (64, 1) | (64, 100) | (16384, 10)) {
                continue;
            }
            v.push(Scenario {
                name: format!("ping-pong {} x {}", size_name(size), thousands(c as f64)),
                loads: vec![Load::ping_pong(c, size)],
                probe: false,
            });
        }
    }
    v.push(Scenario {
        name: "pipelined 64 B x 50, depth 16".into(),
        loads: vec![Load::pipelined(50, 64, 16)],
        probe: false,
    });
    v.extend(udp_scenarios(quick));
    v.push(Scenario {
        name: "probe 64 B under 4 x 16 KiB depth-8 flood".into(),
        loads: vec![
            Load::ping_pong(1, 64),
            // The flood yields the client core to the probe at once, so
            // the probe's latency is the server's, not the client's queue.
            Load::pipelined(4, 16 * 1024, 8).in_background(),
        ],
        probe: true,
    });
    v
}

/// The UDP rows: 10 sockets with datagrams in flight, each size also with
/// the client's `--udp-offload` (GSO sends, GRO receives, as a QUIC stack
/// does), and one socket with one datagram at a time (latency at low load).
fn udp_scenarios(quick: bool) -> Vec<Scenario> {
    let udp = |name: &str, load: Load| Scenario {
        name: name.into(),
        loads: vec![load],
        probe: false,
    };
    let mut v = vec![udp("udp 64 B x 10, depth 16", Load::udp(10, 64, 16))];
    if quick {
        return v;
    }
    v.extend([
        udp("udp 1400 B x 10, depth 4", Load::udp(10, 1400, 4)),
        udp(
            "udp 64 B x 10, depth 16, offload client",
            Load::udp(10, 64, 16).with_udp_offload(),
        ),
        udp(
            "udp 1400 B x 10, depth 4, offload client",
            Load::udp(10, 1400, 4).with_udp_offload(),
        ),
        udp("udp 64 B x 1, depth 1", Load::udp(1, 64, 1)),
    ]);
    v
}

/// How this run was asked for: ` -- ARGS` as given after `cargo bench
/// --bench compare` (cargo's own `--bench` left out), or nothing.
fn invocation() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .map(|a| {
            if a.contains([' ', '|']) {
                format!("\"{a}\"")
            } else {
                a
            }
        })
        .collect();
    if args.is_empty() {
        String::new()
    } else {
        format!(" -- {}", args.join(" "))
    }
}

fn report(
    placement: &Placement,
    names: &[&str],
    plan: &Plan,
    results: &[Vec<Vec<Measurement>>],
    idle: &[Vec<IdleRss>],
) -> String {
    let (date, machine) = (proc::utc_now("%F %H:%M UTC"), proc::machine());
    let mut md = String::new();
    md.push_str(&format!(
        "Run: `cargo bench --bench compare{}` on {date}; {machine}; {}. \
         {} round(s) per scenario, servers interleaved, a fresh server per run; \
         each run: every connection open, {:.1} s warmup, {:.1} s measured. Medians over rounds; \
         the req/s range is min-max over rounds.\n\n",
        invocation(),
        placement.describe(),
        plan.rounds,
        plan.timing.warmup.as_secs_f64(),
        plan.timing.window.as_secs_f64()
    ));
    if plan.scenarios.is_empty() {
        return md;
    }
    md.push_str(
        "Columns: *CPU/1k* is server CPU (user + system, `/proc/PID/stat`) in ms per 1,000 \
         echoes, sampled over the same interval as the echoes it is divided by; *user/1k* is \
         the user-space part of it (the server's own code and libraries; the rest is the \
         kernel's `recv`/`send` work, the same for every server; 100 Hz ticks, so a few \
         percent of quantisation); *busy* is the \
         share of the server's core the server used; *server core, all* and *client core, all* \
         are how busy those two CPUs were with every process counted (`/proc/stat`): the \
         first above *busy* means something else ran on the server's core, the second near \
         100% means the client was the limit; *vs tokio-ct* is the ratio of median req/s, \
         shown in brackets when the server core was below 90% busy (the server was not the \
         limit, so the ratio says little). For the probe scenario, req/s, p50 and p99 are the \
         probe's; the flood's req/s is in brackets.\n\n",
    );
    md.push_str(&load_table(names, &plan.scenarios, results));
    if idle.iter().all(|r| r.is_empty()) {
        return md;
    }
    md.push_str(&idle_table(names, idle));
    md
}

/// The UDP table: one row per UDP scenario and server.
fn udp_table(names: &[&str], scenarios: &[Scenario], results: &[Vec<Vec<Measurement>>]) -> String {
    let mut md = String::from(
        "\nUDP (`echo-bench --udp`, closed loop, `depth` datagrams in flight per socket): \
         *datagrams/s* is echoes per second as the client counts them; *per server CPU s* \
         is datagrams echoed per second of server CPU (user + system, sampled over the same \
         interval as the echoes), the figure to compare on a shared machine; *user* is the \
         user-space share of that CPU (the rest is the kernel's); *vs tokio-udp* \
         is its ratio; *lost* is datagrams the client gave up after 250 ms, all rounds \
         together.\n\n",
    );
    let base = names.iter().position(|n| *n == UDP_BASELINE);
    let mut rows = Vec::new();
    for (k, sc) in scenarios.iter().enumerate() {
        let base_per = base.map(|b| median(&results[k][b], Measurement::per_cpu_sec));
        for (s, name) in names.iter().enumerate() {
            let runs = &results[k][s];
            let rps = median(runs, |m| m.loads[0].req_per_sec);
            let each = || runs.iter().map(|m| m.loads[0].req_per_sec);
            let (lo, hi) = (
                each().fold(f64::INFINITY, f64::min),
                each().fold(0.0, f64::max),
            );
            let per = median(runs, Measurement::per_cpu_sec);
            rows.push(vec![
                if s == 0 {
                    sc.name.clone()
                } else {
                    String::new()
                },
                name.to_string(),
                thousands(rps),
                format!("{}-{}", thousands(lo), thousands(hi)),
                format!("{:.0}", median(runs, |m| m.loads[0].p50_us)),
                format!("{:.0}", median(runs, |m| m.loads[0].p99_us)),
                thousands(per),
                format!("{:.0}%", median(runs, Measurement::user_share) * 100.0),
                format!("{:.0}%", median(runs, Measurement::busy) * 100.0),
                format!("{:.0}%", median(runs, |m| m.server_core_busy) * 100.0),
                format!("{:.0}%", median(runs, |m| m.client_core_busy) * 100.0),
                base_per.map_or("-".into(), |b| format!("{:.2}x", per / b)),
                runs.iter().map(Measurement::lost).sum::<u64>().to_string(),
                runs.iter()
                    .map(Measurement::errors)
                    .sum::<u64>()
                    .to_string(),
            ]);
        }
    }
    md.push_str(&markdown_table(
        &[
            "scenario",
            "server",
            "datagrams/s",
            "datagrams/s range",
            "p50 us",
            "p99 us",
            "per server CPU s",
            "user",
            "busy",
            "server core, all",
            "client core, all",
            "vs tokio-udp",
            "lost",
            "errors",
        ],
        &rows,
    ));
    md
}

/// The idle-memory table: one row per server.
fn idle_table(names: &[&str], idle: &[Vec<IdleRss>]) -> String {
    let mut md = String::new();
    md.push_str("\nIdle connections: server `VmRSS` before the first connection and with all of them open, each having echoed 8 bytes (medians over rounds). RSS counts the process's own pages only: kernel memory for sockets, and for threads their kernel stacks and task structs, is not in it.\n\n");
    let mut rows = Vec::new();
    for (s, name) in names.iter().enumerate() {
        let r = &idle[s];
        rows.push(vec![
            name.to_string(),
            thousands(median(r, |x| x.established as f64)),
            thousands(median(r, |x| x.rss_before_kib as f64)),
            thousands(median(r, |x| x.rss_after_kib as f64)),
            thousands(median(r, IdleRss::bytes_per_connection)),
            thousands(median(r, |x| x.threads as f64)),
        ]);
    }
    md.push_str(&markdown_table(
        &[
            "server",
            "connections echoed",
            "VmRSS before, kB",
            "VmRSS with them, kB",
            "bytes per connection",
            "threads",
        ],
        &rows,
    ));
    md
}

/// The main table: one row per scenario and server.
fn load_table(names: &[&str], scenarios: &[Scenario], results: &[Vec<Vec<Measurement>>]) -> String {
    // Absent when --servers left it out: then there are no ratios.
    let base = names.iter().position(|n| *n == BASELINE);
    let mut rows = Vec::new();
    for (k, sc) in scenarios.iter().enumerate() {
        let base_rps = base.map(|b| median(&results[k][b], |m| m.loads[0].req_per_sec));
        for (s, name) in names.iter().enumerate() {
            let first = if s == 0 { sc.name.as_str() } else { "" };
            rows.push(load_row(first, name, sc.probe, &results[k][s], base_rps));
        }
    }
    markdown_table(
        &[
            "scenario",
            "server",
            "req/s",
            "req/s range",
            "p50 us",
            "p99 us",
            "CPU/1k, ms",
            "user/1k, ms",
            "busy",
            "server core, all",
            "client core, all",
            "vs tokio-ct",
            "errors",
        ],
        &rows,
    )
}

/// One row of [`load_table`]: `runs` of one server in one scenario.
fn load_row(
    scenario: &str,
    name: &str,
    probe: bool,
    runs: &[Measurement],
    base_rps: Option<f64>,
) -> Vec<String> {
    let rps = median(runs, |m| m.loads[0].req_per_sec);
    let each = || runs.iter().map(|m| m.loads[0].req_per_sec);
    let (lo, hi) = (
        each().fold(f64::INFINITY, f64::min),
        each().fold(0.0, f64::max),
    );
    let busy = median(runs, Measurement::busy);
    let ratio = match base_rps.map(|b| rps / b) {
        None => "-".to_string(),
        Some(r) if busy >= SATURATED => format!("{r:.2}x"),
        Some(r) => format!("({r:.2}x)"),
    };
    let mut rps_cell = thousands(rps);
    if probe {
        let flood = median(runs, |m| m.loads[1].req_per_sec);
        rps_cell.push_str(&format!(" ({})", thousands(flood)));
    }
    let errors: u64 = runs.iter().map(Measurement::errors).sum();
    vec![
        scenario.to_string(),
        name.to_string(),
        rps_cell,
        format!("{}-{}", thousands(lo), thousands(hi)),
        format!("{:.0}", median(runs, |m| m.loads[0].p50_us)),
        format!("{:.0}", median(runs, |m| m.loads[0].p99_us)),
        format!("{:.2}", median(runs, Measurement::cpu_per_1000) * 1000.0),
        format!("{:.2}", median(runs, Measurement::user_per_1000) * 1000.0),
        format!("{:.0}%", busy * 100.0),
        format!("{:.0}%", median(runs, |m| m.server_core_busy) * 100.0),
        format!("{:.0}%", median(runs, |m| m.client_core_busy) * 100.0),
        ratio,
        errors.to_string(),
    ]
}

/// What the plots show: medians per scenario and server, and the RSS per
/// idle connection per server. Taken from a run's measurements, or read
/// back from the tables of `benchmarks.md` for `--replot`.
#[derive(Default)]
struct Figures {
    /// The servers, in the order of the tables.
    names: Vec<String>,
    /// Median req/s of the first load, `[scenario][server]`.
    rps: Vec<Vec<f64>>,
    /// Median p99 of the first load in µs, `[scenario][server]`.
    p99: Vec<Vec<f64>>,
    /// Median RSS growth per idle connection, bytes, `[server]`; empty
    /// when the idle scenario did not run.
    idle_bytes: Vec<f64>,
    /// Connections of the idle scenario.
    idle_connections: usize,
}

impl Figures {
    fn measured(
        names: &[&str],
        results: &[Vec<Vec<Measurement>>],
        idle: &[Vec<IdleRss>],
        idle_connections: usize,
    ) -> Figures {
        let per = |f: fn(&Measurement) -> f64| -> Vec<Vec<f64>> {
            results
                .iter()
                .map(|per_server| per_server.iter().map(|runs| median(runs, f)).collect())
                .collect()
        };
        let idle_bytes = if idle.iter().all(|r| r.is_empty()) {
            Vec::new()
        } else {
            idle.iter()
                .map(|r| median(r, IdleRss::bytes_per_connection))
                .collect()
        };
        Figures {
            names: names.iter().map(|n| n.to_string()).collect(),
            rps: per(|m| m.loads[0].req_per_sec),
            p99: per(|m| m.loads[0].p99_us),
            idle_bytes,
            idle_connections,
        }
    }

    /// One series per server of `values[k][server]` over the scenarios `ks`.
    fn series(&self, values: &[Vec<f64>], ks: &[usize]) -> Vec<Series> {
        self.names
            .iter()
            .enumerate()
            .map(|(s, name)| Series {
                name: name.clone(),
                values: ks.iter().map(|&k| values[k][s]).collect(),
            })
            .collect()
    }
}

/// The SVG plots of a run, into `out`.
fn plots(out: &Path, scenarios: &[Scenario], figures: &Figures) {
    // One line chart per message size: req/s against connections.
    for &size in &SIZES {
        let ks: Vec<(usize, usize)> = CONNECTIONS
            .iter()
            .filter_map(|&c| {
                scenarios
                    .iter()
                    .position(|sc| !sc.probe && sc.loads[0] == Load::ping_pong(c, size))
                    .map(|k| (c, k))
            })
            .collect();
        if ks.len() < 2 {
            continue;
        }
        let x: Vec<f64> = ks.iter().map(|&(c, _)| c as f64).collect();
        let only_ks: Vec<usize> = ks.iter().map(|&(_, k)| k).collect();
        line_chart(
            &out.join(format!("bench-pingpong-{size}.svg")),
            &format!("ping-pong {}: req/s (median)", size_name(size)),
            "connections",
            "req/s",
            &x,
            &figures.series(&figures.rps, &only_ks),
        );
    }
    bar_plots(out, scenarios, figures);
}

/// The pipelined and probe scenarios, and idle memory, as bars.
fn bar_plots(out: &Path, scenarios: &[Scenario], figures: &Figures) {
    for (k, sc) in scenarios.iter().enumerate() {
        let (file, title, y, values) = if sc.probe {
            (
                "bench-probe-p99.svg",
                "probe p99 latency under a 16 KiB flood (lower is better)",
                "p99, us",
                &figures.p99,
            )
        } else if sc.loads[0].depth > 1 {
            (
                "bench-pipelined.svg",
                "pipelined 64 B x 50, depth 16: req/s (median)",
                "req/s",
                &figures.rps,
            )
        } else {
            continue;
        };
        let series = figures.series(values, &[k]);
        bar_chart(
            &out.join(file),
            title,
            y,
            std::slice::from_ref(&sc.name),
            &series,
        );
    }
    if figures.idle_bytes.is_empty() {
        return;
    }
    let series: Vec<Series> = (figures.names.iter().zip(&figures.idle_bytes))
        .map(|(name, &bytes)| Series {
            name: name.clone(),
            values: vec![bytes],
        })
        .collect();
    bar_chart(
        &out.join("bench-idle-rss.svg"),
        &format!(
            "server RSS per idle connection, {} connections",
            thousands(figures.idle_connections as f64)
        ),
        "bytes per connection",
        &["idle".to_string()],
        &series,
    );
}

/// Redraws the plots in `out` from the tables of `out/benchmarks.md`,
/// measuring nothing: for a change to the plots alone.
fn replot(out: &Path) {
    let md_path = out.join("benchmarks.md");
    let tables = support::read_generated(&md_path, "compare")
        .unwrap_or_else(|| panic!("no generated tables in {}", md_path.display()));
    let (scenarios, figures) = read_figures(&tables);
    plots(out, &scenarios, &figures);
    eprintln!(
        "redrew the plots in {} from the tables in {}",
        out.display(),
        md_path.display()
    );
}

/// The cells of a markdown table row, or `None` for any other line.
fn cells(line: &str) -> Option<Vec<&str>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(str::trim).collect())
}

/// A number as the tables print it (`17,561 (113,420)` gives 17,561);
/// NaN for `n/a`.
fn number(cell: &str) -> f64 {
    let first = cell.split_whitespace().next().unwrap_or("");
    first.replace(',', "").parse().unwrap_or(f64::NAN)
}

/// The scenarios and figures of the tables [`report`] wrote: the main
/// table (req/s in column 3, p99 in column 6) and the idle table (bytes per
/// connection in column 5).
fn read_figures(tables: &str) -> (Vec<Scenario>, Figures) {
    let mut all: Vec<Option<Scenario>> = scenarios(false).into_iter().map(Some).collect();
    let mut found: Vec<usize> = Vec::new();
    let mut figures = Figures::default();
    let mut in_idle_table = false;
    // The UDP table is not plotted.
    let mut in_udp_table = false;
    for row in tables.lines().filter_map(cells) {
        match row.as_slice() {
            ["scenario", _, "datagrams/s", ..] => in_udp_table = true,
            ["scenario", ..] | ["---", ..] => {}
            ["server", "connections echoed", ..] => {
                in_idle_table = true;
                in_udp_table = false;
            }
            _ if in_udp_table => {}
            [server, echoed, _, _, bytes, _] if in_idle_table => {
                let s = figures.idle_bytes.len();
                assert_eq!(figures.names.get(s).map(String::as_str), Some(*server));
                figures.idle_bytes.push(number(bytes));
                figures.idle_connections = figures.idle_connections.max(number(echoed) as usize);
            }
            [scenario, server, rps, _, _, p99, ..] => {
                if !scenario.is_empty() {
                    let k = all
                        .iter()
                        .position(|sc| sc.as_ref().is_some_and(|sc| sc.name == *scenario));
                    found.push(k.unwrap_or_else(|| panic!("unknown scenario {scenario:?}")));
                    figures.rps.push(Vec::new());
                    figures.p99.push(Vec::new());
                }
                if found.len() == 1 {
                    figures.names.push(server.to_string());
                }
                let (Some(r), Some(p)) = (figures.rps.last_mut(), figures.p99.last_mut()) else {
                    panic!("a server row before any scenario: {row:?}");
                };
                r.push(number(rps));
                p.push(number(p99));
            }
            _ => panic!("unexpected table row {row:?}"),
        }
    }
    let scenarios = found
        .iter()
        .map(|&k| all[k].take().expect("each scenario once"))
        .collect();
    (scenarios, figures)
}
