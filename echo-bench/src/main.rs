//! `echo-bench`: the stress client. Parses flags ([`echo_bench::cli`]),
//! sets up logging and the progress line, runs the engine of the
//! `echo_bench` library, prints the report. Everything that talks to
//! sockets lives in the library.
//!
//! ```text
//! cargo run --release -p echo-bench -- -c 1000 -d 4 -t 10 127.0.0.1:7007
//! ```

use clap::Parser;
use echo_bench::cli::{Args, Procs};
use echo_bench::histogram::to_base64;
use echo_bench::procs::{self, ChildOf, ProcsError};
use echo_bench::run_info::RunInfo;
use echo_bench::{Config, Live, Report};
use indicatif::{ProgressBar, ProgressStyle};
use std::ffi::OsString;
use std::io::{BufReader, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How often the progress line is redrawn on a terminal.
const PROGRESS_REDRAW: Duration = Duration::from_millis(250);

/// How often a plain progress line is written when stderr is not a
/// terminal (logs and CI): rarely, so it does not drown the log.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    if let Some(code) = results_subcommand() {
        return code;
    }
    let info = RunInfo::now();
    let args = match Args::try_parse() {
        Ok(a) => a,
        // --help and --version arrive as "errors" that print and exit 0.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message runs over several lines (usage, a hint); keep
            // its first line, which names the flag and the problem.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("echo-bench: {first} (see --help)");
            // Flags that do not parse still owe a script that asked for
            // --json its one object.
            if std::env::args_os().any(|a| a == "--json") {
                let v = info.around(serde_json::json!({ "error": first, "passed": false }));
                println!("{v}");
            }
            return ExitCode::from(2);
        }
    };
    init_logging(args.child);
    let result = match args.child {
        Some(who) => return run_child(&args, who),
        None => match procs_of(&args).and_then(|n| check_hdr_log(&args).map(|()| n)) {
            Ok(1) => run(&args, &info),
            Ok(n) => run_procs(&args, n, &info),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("echo-bench: {msg}");
            print_failure(&args, &info, &msg);
            ExitCode::from(2)
        }
    }
}

/// Compare two saved results.
#[derive(clap::Parser, Debug)]
#[command(name = "echo-bench compare")]
struct CompareArgs {
    /// The first result (`--json` output), A.
    a: std::path::PathBuf,
    /// The second, B: changes are from A to B.
    b: std::path::PathBuf,
}

/// Merge the results of runs made at the same time (several machines
/// against one server) into one, printed as JSON.
#[derive(clap::Parser, Debug)]
#[command(name = "echo-bench merge")]
struct MergeArgs {
    /// The results (`--json` output) to merge.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
}

/// `echo-bench compare A.json B.json` and `echo-bench merge FILE...`: the
/// exit code if the command line is one of them.
fn results_subcommand() -> Option<ExitCode> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let which = argv.get(1)?.to_str()?.to_string();
    if which != "compare" && which != "merge" {
        return None;
    }
    argv.remove(0);
    let read = |p: &std::path::Path| -> Result<serde_json::Value, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: not a result: {e}", p.display()))
    };
    let done = |r: Result<String, String>| match r {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo-bench {which}: {e}");
            ExitCode::from(2)
        }
    };
    let parsed = |e: clap::Error| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { 2 } else { 0 })
    };
    Some(if which == "compare" {
        match CompareArgs::try_parse_from(argv) {
            Err(e) => parsed(e),
            Ok(c) => done((|| {
                let (a, b) = (read(&c.a)?, read(&c.b)?);
                let names = (c.a.display().to_string(), c.b.display().to_string());
                Ok(echo_bench::compare::compare(&a, &b, (&names.0, &names.1)))
            })()),
        }
    } else {
        match MergeArgs::try_parse_from(argv) {
            Err(e) => parsed(e),
            Ok(m) => done((|| {
                let all = m
                    .files
                    .iter()
                    .map(|p| read(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let merged = echo_bench::compare::merge(&all)?;
                Ok(format!("{merged}\n"))
            })()),
        }
    })
}

/// With `--json`, a run that could not happen (or ended with no report)
/// still prints one JSON object: its circumstances and the error.
fn print_failure(args: &Args, info: &RunInfo, msg: &str) {
    if args.json {
        let v = info.around(serde_json::json!({ "error": msg, "passed": false }));
        println!("{v}");
    }
}

/// `--hdr-log FILE` is created before the run, so that a path that cannot
/// be written is refused before the run, not after it.
fn check_hdr_log(args: &Args) -> Result<(), String> {
    match &args.hdr_log {
        Some(path) => std::fs::File::create(path)
            .map(drop)
            .map_err(|e| format!("bad option --hdr-log: cannot write {}: {e}", path.display())),
        None => Ok(()),
    }
}

/// How many client processes the run takes (`--procs auto` resolved).
fn procs_of(args: &Args) -> Result<usize, String> {
    let cfg = args.config()?;
    let n = args.procs.count(cfg.connections);
    if args.procs == Procs::Auto && n > 1 {
        eprintln!("echo-bench: --procs auto: {n} client processes");
    }
    Ok(n)
}

/// Logs to stderr, warnings and worse unless `RUST_LOG` says otherwise; a
/// client process of `--procs` says which one it is in every line.
fn init_logging(child: Option<ChildOf>) {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    if let Some(who) = child {
        b.format(move |buf, rec| {
            writeln!(
                buf,
                "[{} {} process {who}] {}",
                rec.level(),
                rec.target(),
                rec.args()
            )
        });
    }
    b.init();
}

/// Exit code after a second Ctrl+C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: i32 = 130;

fn run(args: &Args, info: &RunInfo) -> Result<ExitCode, String> {
    let cfg = args.config()?;
    let live = Arc::new(Live::new());
    let done = Arc::new(AtomicBool::new(false));
    // The first Ctrl+C ends the measurement early (the report still
    // prints); a second one exits at once. The handler only sets a flag;
    // the progress thread passes it on to the engine.
    let interrupted = Arc::new(AtomicBool::new(false));
    let sigint = signal_hook::consts::SIGINT;
    let _ = signal_hook::flag::register_conditional_shutdown(
        sigint,
        EXIT_INTERRUPTED,
        Arc::clone(&interrupted),
    );
    let _ = signal_hook::flag::register(sigint, Arc::clone(&interrupted));
    let progress = spawn_progress(
        &cfg,
        Arc::clone(&live),
        Arc::clone(&done),
        Arc::clone(&interrupted),
        args.json,
        args.hdr_log.is_some(),
    );
    let result = echo_bench::run(&cfg, Arc::clone(&live));
    done.store(true, Ordering::Relaxed);
    let mut intervals = progress.and_then(|h| h.join().ok()).unwrap_or_default();
    intervals.extend(print_intervals(
        &live,
        &cfg.percentiles,
        args.json,
        args.hdr_log.is_some(),
    ));
    let report = result.map_err(|e| e.to_string())?;
    print_report(&report, args, info, &intervals)
}

/// An interval as the `--hdr-log` keeps it until the end: from and to (in
/// seconds of the window), and its histogram in base64 (a few hundred
/// bytes, where the histogram itself takes hundreds of kilobytes).
type LoggedInterval = (f64, f64, String);

/// Prints the report as asked, writes the `--hdr-log`; the exit code the
/// report calls for.
fn print_report(
    report: &Report,
    args: &Args,
    info: &RunInfo,
    intervals: &[LoggedInterval],
) -> Result<ExitCode, String> {
    if args.json {
        println!("{}", info.around(report.to_json()));
    } else {
        print!("{}", report.to_table());
    }
    if report.served_none() {
        eprintln!(
            "echo-bench: {} answered, but not with the echo: none of {} connections was served \
             (see the errors)",
            report.addr, report.connections_failed
        );
    }
    if let Some(path) = &args.hdr_log
        && let Err(e) = report.write_hdr_log(path, info, intervals)
    {
        // The report is out already; a second JSON object would spoil it.
        eprintln!("echo-bench: cannot write --hdr-log {}: {e}", path.display());
        return Ok(ExitCode::from(2));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--procs N`: starts N client processes (this binary again), shows their
/// summed progress, prints their merged report. The first Ctrl+C tells
/// them to end the measurement (they also get it themselves from the
/// terminal); a second one kills them all and exits.
fn run_procs(args: &Args, n: usize, info: &RunInfo) -> Result<ExitCode, String> {
    let cfg = args.config()?;
    let plan = procs::plan(&cfg, n).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this binary to start --procs: {e}"))?;
    let forwarded: Vec<OsString> = std::env::args_os().skip(1).collect();
    let live = Arc::new(Live::new());
    let done = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));
    // Ctrl+C is counted here instead of exiting from the handler: the
    // children must be killed before this process exits.
    match signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]) {
        Ok(mut signals) => {
            let (interrupted, abort) = (Arc::clone(&interrupted), Arc::clone(&abort));
            let _ = thread::Builder::new().name("sigint".into()).spawn(move || {
                for _ in signals.forever() {
                    if interrupted.swap(true, Ordering::Relaxed) {
                        abort.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
        Err(e) => log::warn!("cannot catch Ctrl+C: {e}"),
    }
    let progress = spawn_progress(
        &cfg,
        Arc::clone(&live),
        Arc::clone(&done),
        Arc::clone(&interrupted),
        args.json,
        args.hdr_log.is_some(),
    );
    let result = procs::run_parent(&exe, &forwarded, &cfg, &plan, &live, &abort);
    done.store(true, Ordering::Relaxed);
    let mut intervals = progress.and_then(|h| h.join().ok()).unwrap_or_default();
    intervals.extend(print_intervals(
        &live,
        &cfg.percentiles,
        args.json,
        args.hdr_log.is_some(),
    ));
    match result {
        Ok(report) => print_report(&report, args, info, &intervals),
        Err(ProcsError::Refused(m)) => Err(m),
        Err(e @ ProcsError::ChildFailed(_)) => {
            eprintln!("echo-bench: {e}");
            print_failure(args, info, &e.to_string());
            Ok(ExitCode::FAILURE)
        }
        Err(e @ ProcsError::Interrupted) => {
            eprintln!("echo-bench: {e}");
            print_failure(args, info, &e.to_string());
            Ok(ExitCode::from(EXIT_INTERRUPTED as u8))
        }
    }
}

/// `--child I/N` (started by a parent with `--procs N`): runs part I of
/// the run the other flags ask for, talking to the parent over stdin and
/// stdout ([`procs`]). Its Ctrl+C only ends the measurement; the parent
/// decides the rest.
fn run_child(args: &Args, who: ChildOf) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let part = args.config().and_then(|total| {
        if let Procs::Exactly(n) = args.procs
            && n != who.procs
        {
            return Err(format!("--child {who} does not match --procs {n}"));
        }
        let plan = procs::plan(&total, who.procs).map_err(|e| e.to_string())?;
        Ok(plan.parts[who.index].clone())
    });
    let part = match part {
        Ok(p) => p,
        Err(m) => {
            procs::write_child_error(&mut out, &m);
            return ExitCode::from(2);
        }
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted));
    let control = BufReader::new(std::io::stdin());
    procs::child_session(
        &part,
        Arc::new(Live::new()),
        control,
        &interrupted,
        &mut out,
    );
    ExitCode::SUCCESS
}

/// A live line on stderr: redrawn in place on a terminal, a plain line now
/// and then otherwise. Also relays Ctrl+C to the engine.
fn spawn_progress(
    cfg: &Config,
    live: Arc<Live>,
    done: Arc<AtomicBool>,
    interrupted: Arc<AtomicBool>,
    json: bool,
    keep: bool,
) -> Option<thread::JoinHandle<Vec<LoggedInterval>>> {
    let requested = cfg.connections;
    let intervals = cfg.interval.map(|_| json);
    let percentiles = cfg.percentiles.clone();
    let bar = std::io::stderr().is_terminal().then(spinner);
    thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            let started = Instant::now();
            let (mut last_msgs, mut last_t, mut last_plain) = (0u64, started, started);
            let mut kept = Vec::new();
            while !done.load(Ordering::Relaxed) {
                thread::sleep(PROGRESS_REDRAW);
                if interrupted.load(Ordering::Relaxed) && !live.stop_requested() {
                    live.request_stop();
                }
                let msgs = Live::get(&live.messages);
                let now = Instant::now();
                let rate = (msgs - last_msgs) as f64 / (now - last_t).as_secs_f64().max(1e-9);
                (last_msgs, last_t) = (msgs, now);
                if let Some(json) = intervals {
                    kept.extend(print_intervals(&live, &percentiles, json, keep));
                }
                let line = progress_line(&live, requested, rate);
                match &bar {
                    Some(bar) => {
                        bar.set_message(line);
                        bar.tick();
                    }
                    None if now - last_plain >= PLAIN_PROGRESS_EVERY => {
                        last_plain = now;
                        eprintln!("[{:>5.1}s] {line}", (now - started).as_secs_f64());
                    }
                    None => {}
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            kept
        })
        .ok()
}

/// `--interval`: prints the intervals completed since the last call, on
/// stdout (a line each, or a JSON object each); returns them for the
/// `--hdr-log` if `keep`.
fn print_intervals(
    live: &Live,
    percentiles: &[f64],
    json: bool,
    keep: bool,
) -> Vec<LoggedInterval> {
    let mut out = std::io::stdout().lock();
    let mut kept = Vec::new();
    for i in live.intervals.take_ready() {
        let _ = if json {
            writeln!(out, "{}", i.json(percentiles))
        } else {
            writeln!(out, "{}", i.text(percentiles))
        };
        if keep {
            kept.push((i.from_s, i.to_s, to_base64(&i.latency)));
        }
    }
    let _ = out.flush();
    kept
}

/// The spinner the progress line is drawn with on a terminal.
fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}

/// The progress line's text: the rate since the last line, connections
/// and errors so far.
fn progress_line(live: &Live, requested: usize, rate: f64) -> String {
    format!(
        "{:.0} req/s  connections {}/{} (failed {})  errors {}",
        rate,
        Live::get(&live.established),
        requested,
        Live::get(&live.failed),
        Live::get(&live.errors)
    )
}
