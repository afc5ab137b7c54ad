//! `--procs N`: one run over N client processes, for loads one process
//! cannot hold (each process has its own `RLIMIT_NOFILE`, so N processes
//! hold N times as many connections).
//!
//! The parent opens no connection itself. It re-executes its own binary
//! ([`std::env::current_exe`], never `fork`) N times with the same flags
//! and a hidden `--child I/N` in front, and every child works out its
//! share from the same [`plan`]:
//!
//! - connections, `-n`, `--rate`, `--connect-rate` and `--max-connecting`
//!   are split so that the parts add up to the whole (the first processes
//!   get one more when it does not divide evenly);
//! - `-T` is per process (each process runs that many threads);
//! - against IPv4 loopback each process gets its own loopback source
//!   addresses (and its own stretch for addresses added when ports run
//!   out), so that no two share a port range; elsewhere, or with fewer
//!   `--source-ips` than processes, they share the addresses, and the
//!   whole run is checked against their port ranges instead.
//!
//! The child talks to its parent in lines. On stdout, one JSON object a
//! line: `{"event":"ready"}` once all its connections are open (or have
//! failed), `{"event":"progress",...}` now and then, and at the end
//! either `{"event":"result",...}` (its counts, histograms included, see
//! [`Stats::to_json`]) or `{"event":"error","message":...}` (the run
//! could not happen). On its stdin, the parent writes `go` once every
//! child is ready, so that all of them open their measured window
//! together, or `stop` to end the measurement early; the end of its stdin
//! (the parent is gone) stops it too. Logs go to stderr, as in one process.
//!
//! The parent adds the children's counts ([`Stats::merge`]: histograms
//! are added, never percentiles averaged) into one [`Report`], with each
//! child's part in [`Report::procs`].

use crate::config::{Config, ConfigError, SourceRange, StopAt};
use crate::interval::IntervalReport;
use crate::live::Live;
use crate::report::{ProcPart, Report};
use crate::stats::Stats;
use crate::{BenchError, Outcome, limits, plan_sources};
use log::{debug, warn};
use serde_json::{Value, json};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The hidden flag that makes a process a child: `--child I/N`.
pub const CHILD_FLAG: &str = "--child";

/// How often a child sends its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How often the parent and the child look at their flags.
const TICK: Duration = Duration::from_millis(20);

/// Which part of a `--procs` run a child process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildOf {
    /// Its index, `0..procs`.
    pub index: usize,
    /// How many processes the run has.
    pub procs: usize,
}

impl FromStr for ChildOf {
    type Err = String;

    fn from_str(s: &str) -> Result<ChildOf, String> {
        let bad = || format!("{s:?} is not INDEX/PROCS");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.parse().map_err(|_| bad())?;
        let procs: usize = n.parse().map_err(|_| bad())?;
        if index >= procs {
            return Err(bad());
        }
        Ok(ChildOf { index, procs })
    }
}

impl fmt::Display for ChildOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.procs)
    }
}

/// The whole run's split over its processes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What each process runs, in process order.
    pub parts: Vec<Config>,
    /// Whether each process has source addresses of its own (then the
    /// report's count of addresses is their sum, else their largest).
    pub own_sources: bool,
}

/// Splits the run `total` over `procs` processes; refuses (naming the flag)
/// a split that would leave a process without its share.
pub fn plan(total: &Config, procs: usize) -> Result<Plan, BenchError> {
    total.validate()?;
    let n = procs;
    if n == 0 {
        return refuse("--procs", "must be at least 1".into());
    }
    let c = total.connections;
    if n > c {
        return refuse(
            "--procs",
            format!("{n} processes for {c} connections would leave processes idle"),
        );
    }
    let split = |whole: u64, flag: &'static str, what: &str| -> Result<Vec<u64>, BenchError> {
        if whole < n as u64 {
            return refuse(
                flag,
                format!("{whole} {what} cannot be split over {n} processes (at least 1 each)"),
            );
        }
        Ok((0..n as u64)
            .map(|i| whole / n as u64 + u64::from(i < whole % n as u64))
            .collect())
    };
    let conns = split(c as u64, "--connections", "connection(s)")?;
    if let Ok(limit) = limits::nofile_hard_limit()
        && conns[0] > limits::connections_per_process(limit)
    {
        return refuse(
            "--procs",
            format!(
                "{n} process(es) of up to {} connections each need about {} file descriptors \
                 each, but RLIMIT_NOFILE's hard limit is {limit}: give --procs {} (or --procs auto)",
                conns[0],
                conns[0] + limits::FD_SLACK,
                limits::procs_needed(c, limit)
            ),
        );
    }
    let smallest = conns[n - 1] as usize;
    if total.threads > smallest {
        return refuse(
            "--threads",
            format!(
                "{} threads run in each process, but process {} of {n} has only {smallest} connections",
                total.threads,
                n - 1
            ),
        );
    }
    let rates = total
        .rate
        .map(|r| split(r, "--rate", "msg/s"))
        .transpose()?;
    let connect_rates = total
        .connect_rate
        .map(|r| split(u64::from(r), "--connect-rate", "connections/s"))
        .transpose()?;
    let quotas = match total.stop {
        StopAt::Requests(q) => Some(split(q, "--requests", "message(s)")?),
        StopAt::Duration(_) => None,
    };
    let (ranges, own_sources) = plan_source_ranges(total, &conns)?;
    let parts = (0..n)
        .map(|i| {
            let mut p = total.clone();
            p.connections = conns[i] as usize;
            p.rate = rates.as_ref().map(|r| r[i]);
            // Each part is at most the whole, which is a u32.
            p.connect_rate = connect_rates.as_ref().map(|r| r[i] as u32);
            if let Some(q) = &quotas {
                p.stop = StopAt::Requests(q[i]);
            }
            p.max_connecting = total.max_connecting.div_ceil(n).max(1);
            if let Some(r) = ranges.get(i).copied().flatten() {
                p.source_range = Some(r);
                if total.source_ips.is_some() {
                    // Exactly the addresses given (at most the whole
                    // --source-ips, so it fits); none added later.
                    p.source_ips = Some(r.count as u8);
                }
            }
            p
        })
        .collect::<Vec<Config>>();
    for p in &parts {
        p.validate()?;
    }
    Ok(Plan { parts, own_sources })
}

/// The source addresses of each process (`None`: the process plans its
/// own, sharing the addresses with the others), and whether each has its
/// own.
fn plan_source_ranges(
    total: &Config,
    conns: &[u64],
) -> Result<(Vec<Option<SourceRange>>, bool), BenchError> {
    let n = conns.len();
    let loopback_v4 = total.addr.is_ipv4() && total.addr.ip().is_loopback();
    let capacity = limits::ports_per_source();
    let given = total.source_ips.map(usize::from);
    if !loopback_v4 || given.is_some_and(|m| m < n) {
        // Shared addresses: the whole run must fit in their port ranges,
        // as in one process (the same check, with the same message).
        plan_sources(total, limits::connections_per_source(total.addr), capacity)?;
        return Ok((vec![None; n], false));
    }
    let per_source = match given {
        Some(_) => capacity,
        None => limits::connections_per_source(total.addr),
    };
    let needed: Vec<usize> = conns
        .iter()
        .map(|&c| limits::source_ips_needed(c as usize, per_source))
        .collect();
    let counts = match given {
        None => needed,
        Some(m) => {
            // m >= n here: split them evenly, the first processes (which
            // also have the most connections) getting one more.
            let counts: Vec<usize> = (0..n).map(|i| m / n + usize::from(i < m % n)).collect();
            if counts.iter().zip(&needed).any(|(have, need)| have < need) {
                let sum: usize = needed.iter().sum();
                return Err(BenchError::Config(ConfigError {
                    flag: "--source-ips",
                    why: format!(
                        "{} connections over {n} processes need at least {sum} source addresses \
                         ({capacity} local ports each, every process its own), not {m}: give \
                         --source-ips {sum} or more, or leave it out",
                        total.connections
                    ),
                }));
            }
            counts
        }
    };
    let planned: usize = counts.iter().sum();
    let mut first = 0;
    let ranges = counts
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let r = SourceRange {
                first,
                count,
                extra_first: planned + i * crate::tcp::MAX_EXTRA_SOURCES,
            };
            first += count;
            Some(r)
        })
        .collect();
    Ok((ranges, true))
}

/// A refusal of `flag`'s value.
fn refuse<T>(flag: &'static str, why: String) -> Result<T, BenchError> {
    Err(BenchError::Config(ConfigError { flag, why }))
}

// ----- the child ------------------------------------------------------------

/// An event as the one line the parent reads.
fn event_line(v: &Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Runs this process's part `cfg` as a child: waits for the parent's `go`
/// (read from `control`) before opening the window, stops on `stop` or at
/// the end of `control`, and on an `interrupted` flag (its own Ctrl+C);
/// writes its events to `out`. Errors writing to `out` (the parent is
/// gone) stop the run; they are not returned.
pub fn child_session<R, W>(
    cfg: &Config,
    live: Arc<Live>,
    control: R,
    interrupted: &AtomicBool,
    out: &mut W,
) where
    R: BufRead + Send + 'static,
    W: Write,
{
    live.close_gate();
    let ctl_live = Arc::clone(&live);
    // Reads the parent's words; on EOF (or a read error) the parent is
    // gone: stop. The thread ends with its input; it is not joined, as a
    // parent that never closes our stdin must not keep us from exiting.
    let _ = thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for line in control.lines() {
                match line.as_deref().map(str::trim) {
                    Ok("go") => ctl_live.open_gate(),
                    Ok("stop") => break,
                    Ok(other) => warn!("unknown word from the parent: {other:?}"),
                    Err(_) => break,
                }
            }
            ctl_live.request_stop();
            ctl_live.open_gate();
        });
    let engine_cfg = cfg.clone();
    let engine_live = Arc::clone(&live);
    let engine = thread::Builder::new()
        .name("engine".into())
        .spawn(move || crate::run_counts(&engine_cfg, engine_live));
    let engine = match engine {
        Ok(h) => h,
        Err(e) => {
            let _ = out.write_all(event_line(&error_event(&BenchError::Io(e))).as_bytes());
            return;
        }
    };
    let mut said_ready = false;
    let mut last_progress = Instant::now();
    let send = |out: &mut W, v: &Value| {
        if out
            .write_all(event_line(v).as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            live.request_stop();
            live.open_gate();
        }
    };
    let send_intervals = |out: &mut W| {
        for i in live.intervals.take_ready() {
            send(out, &i.to_event());
        }
    };
    while !engine.is_finished() {
        thread::sleep(TICK);
        send_intervals(out);
        if interrupted.load(Ordering::Relaxed) && !live.stop_requested() {
            live.request_stop();
            live.open_gate();
        }
        if !said_ready && live.all_settled(cfg.threads) {
            said_ready = true;
            send(out, &json!({ "event": "ready" }));
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            send(
                out,
                &json!({
                    "event": "progress",
                    "messages": Live::get(&live.messages),
                    "established": Live::get(&live.established),
                    "failed": Live::get(&live.failed),
                    "errors": Live::get(&live.errors),
                }),
            );
        }
    }
    let joined = engine.join();
    send_intervals(out);
    let v = match joined {
        Ok(Ok(outcome)) => json!({
            "event": "result",
            "pid": std::process::id(),
            "outcome": outcome_to_json(&outcome),
        }),
        Ok(Err(e)) => error_event(&e),
        Err(_) => error_event(&BenchError::Io(io::Error::other("the engine panicked"))),
    };
    send(out, &v);
}

/// Writes the `error` event of a child that cannot even start its part
/// (its flags do not give one); a write error means the parent is gone.
pub fn write_child_error<W: Write>(out: &mut W, message: &str) {
    let line = event_line(&json!({ "event": "error", "message": message }));
    let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
}

/// The `error` event for a run that could not happen.
fn error_event(e: &BenchError) -> Value {
    json!({ "event": "error", "message": e.to_string() })
}

/// An [`Outcome`] as JSON.
fn outcome_to_json(o: &Outcome) -> Value {
    json!({
        "stats": o.stats.to_json(),
        "sources": o.sources,
        "req_per_s": o.req_per_s,
        "bytes_per_s": o.bytes_per_s,
        "first_error": o.first_error,
    })
}

/// The inverse of [`outcome_to_json`].
fn outcome_from_json(v: &Value) -> Result<Outcome, String> {
    let float = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| format!("field {k:?} is not a number"))
    };
    Ok(Outcome {
        stats: Stats::from_json(&v["stats"])?,
        sources: v["sources"]
            .as_u64()
            .ok_or("field \"sources\" is not a count")? as usize,
        req_per_s: float("req_per_s")?,
        bytes_per_s: float("bytes_per_s")?,
        first_error: v["first_error"].as_str().map(str::to_string),
    })
}

// ----- the parent -----------------------------------------------------------

/// Why a `--procs` run gave no report.
#[derive(Debug)]
pub enum ProcsError {
    /// The run could not happen (exit status 2): a flag, the address, the
    /// limits, a process that could not start or said it could not run.
    Refused(String),
    /// A process crashed or ended without its result (exit status 1).
    ChildFailed(String),
    /// Stopped by a second Ctrl+C; every child was killed.
    Interrupted,
}

impl fmt::Display for ProcsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcsError::Refused(m) | ProcsError::ChildFailed(m) => f.write_str(m),
            ProcsError::Interrupted => f.write_str("interrupted; every client process killed"),
        }
    }
}

impl std::error::Error for ProcsError {}

/// What a child said, one line at a time.
enum Said {
    Ready,
    Progress([u64; 4]),
    Result(u32, Box<Outcome>),
    /// One of its complete `--interval`s.
    Interval(Box<IntervalReport>),
    Error(String),
    /// A line that is none of the above.
    Garbled(String),
    /// Its stdout ended.
    End,
}

/// One child process, as the parent sees it.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: bool,
    ended: bool,
    progress: [u64; 4],
    result: Option<(u32, Outcome)>,
    error: Option<String>,
    garbled: Option<String>,
    /// `--interval`: how many intervals it has sent.
    intervals: u64,
}

impl Proc {
    /// Tells the child `word`; a child that is gone cannot hear it, which
    /// is no error here (its end is seen on its stdout).
    fn tell(&mut self, word: &str) {
        if let Some(stdin) = &mut self.stdin
            && stdin
                .write_all(word.as_bytes())
                .and_then(|()| stdin.write_all(b"\n"))
                .and_then(|()| stdin.flush())
                .is_err()
        {
            self.stdin = None;
        }
    }
}

/// The children of one run; any still running when this is dropped (an
/// early return, a panic) are killed and reaped, so none outlives it.
struct Procs(Vec<Proc>);

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
    }
}

/// Runs `plan` as child processes of the binary `exe`, each started as
/// `exe --child I/N ARGS...`, and merges what they report. `live` gets
/// their progress (summed), and a stop requested on it is passed on to
/// them; `abort` kills them.
pub fn run_parent(
    exe: &Path,
    args: &[OsString],
    total: &Config,
    plan: &Plan,
    live: &Live,
    abort: &AtomicBool,
) -> Result<Report, ProcsError> {
    let n = plan.parts.len();
    let (tx, rx) = mpsc::channel();
    let mut procs = Procs(Vec::with_capacity(n));
    for i in 0..n {
        let who = ChildOf { index: i, procs: n };
        let spawned = Command::new(exe)
            .arg(CHILD_FLAG)
            .arg(who.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = spawned.map_err(|e| {
            ProcsError::Refused(format!(
                "cannot start client process {who} ({}): {e}",
                exe.display()
            ))
        })?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            return Err(ProcsError::Refused(format!(
                "client process {who} has no stdout"
            )));
        };
        debug!("client process {who}: pid {}", child.id());
        let tx = tx.clone();
        thread::Builder::new()
            .name(format!("proc-{i}"))
            .spawn(move || read_child(i, BufReader::new(stdout), &tx))
            .map_err(|e| ProcsError::Refused(format!("cannot start a reader thread: {e}")))?;
        procs.0.push(Proc {
            child,
            stdin,
            ready: false,
            ended: false,
            progress: [0; 4],
            result: None,
            error: None,
            garbled: None,
            intervals: 0,
        });
    }
    drop(tx);

    let (mut released, mut stopped) = (false, false);
    while !procs.0.iter().all(|p| p.ended) {
        if abort.load(Ordering::Relaxed) {
            // `procs` is dropped on return: every child is killed.
            return Err(ProcsError::Interrupted);
        }
        match rx.recv_timeout(TICK) {
            Ok((i, said)) => hear(&mut procs.0[i], said, live, n),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Every reader is done, so every stdout has ended.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // One that ended without its result: no report can be whole, so
        // the others need not go on.
        let lost = procs.0.iter().any(|p| p.ended && p.result.is_none());
        if !stopped && (live.stop_requested() || lost) {
            stopped = true;
            procs.0.iter_mut().for_each(|p| p.tell("stop"));
        }
        if !released && procs.0.iter().all(|p| p.ready || p.ended) {
            released = true;
            debug!("every client process is ready: go");
            procs.0.iter_mut().for_each(|p| p.tell("go"));
        }
    }
    let mut statuses = Vec::with_capacity(n);
    for p in &mut procs.0 {
        p.stdin = None;
        statuses.push(p.child.wait().ok());
    }
    merge(total, plan, &procs.0, &statuses)
}

/// Reads child `i`'s lines until its stdout ends.
fn read_child(i: usize, out: impl BufRead, tx: &mpsc::Sender<(usize, Said)>) {
    for line in out.lines() {
        let Ok(line) = line else { break };
        if tx.send((i, parse_said(&line))).is_err() {
            return;
        }
    }
    let _ = tx.send((i, Said::End));
}

/// One line of a child.
fn parse_said(line: &str) -> Said {
    let garbled = || Said::Garbled(line.chars().take(200).collect());
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return garbled();
    };
    let count = |k: &str| v[k].as_u64().unwrap_or(0);
    match v["event"].as_str() {
        Some("ready") => Said::Ready,
        Some("progress") => Said::Progress([
            count("messages"),
            count("established"),
            count("failed"),
            count("errors"),
        ]),
        Some("result") => match outcome_from_json(&v["outcome"]) {
            Ok(o) => Said::Result(count("pid") as u32, Box::new(o)),
            Err(e) => Said::Garbled(format!("unreadable result: {e}")),
        },
        Some("interval") => match IntervalReport::from_event(&v) {
            Ok(i) => Said::Interval(Box::new(i)),
            Err(e) => Said::Garbled(format!("unreadable interval: {e}")),
        },
        Some("error") => Said::Error(v["message"].as_str().unwrap_or("(no message)").into()),
        _ => garbled(),
    }
}

/// Takes in what a child said (one of `n`).
fn hear(p: &mut Proc, said: Said, live: &Live, n: usize) {
    match said {
        Said::Ready => p.ready = true,
        Said::Progress(now) => {
            let counters = [
                &live.messages,
                &live.established,
                &live.failed,
                &live.errors,
            ];
            for ((c, was), now) in counters.into_iter().zip(p.progress).zip(now) {
                Live::add(c, now.saturating_sub(was));
            }
            p.progress = now;
        }
        Said::Interval(i) => {
            p.intervals = p.intervals.max(i.index + 1);
            live.intervals.hand_in(*i, n);
        }
        Said::Result(pid, o) => {
            // Its intervals all came before: the parent waits for no more.
            live.intervals.close(p.intervals, n);
            p.result = Some((pid, *o));
        }
        Said::Error(m) => p.error = Some(m),
        Said::Garbled(m) => {
            warn!("client process {}: {m}", p.child.id());
            p.garbled.get_or_insert(m);
        }
        Said::End => p.ended = true,
    }
}

/// How a child's exit reads in a message.
fn describe(status: Option<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        None => "could not be waited for".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            (None, None) => format!("ended ({s})"),
        },
    }
}

/// The one report of the run: every child's counts added up, with each
/// child's part; or why there is none.
fn merge(
    total: &Config,
    plan: &Plan,
    procs: &[Proc],
    statuses: &[Option<ExitStatus>],
) -> Result<Report, ProcsError> {
    let n = procs.len();
    let mut refused = Vec::new();
    let mut failed = Vec::new();
    for (i, (p, status)) in procs.iter().zip(statuses).enumerate() {
        let who = format!("client process {i} of {n} (pid {})", p.child.id());
        if let Some(m) = &p.error {
            refused.push(format!("{who}: {m}"));
        } else if p.result.is_none() {
            let mut m = format!("{who} {} before it reported", describe(*status));
            if let Some(g) = &p.garbled {
                m.push_str(&format!(" (it wrote {g:?})"));
            }
            failed.push(m);
        }
    }
    if !refused.is_empty() {
        refused.extend(failed);
        return Err(ProcsError::Refused(refused.join("\n")));
    }
    if !failed.is_empty() {
        return Err(ProcsError::ChildFailed(failed.join("\n")));
    }
    let mut all = Outcome {
        stats: Stats::new(),
        sources: 0,
        req_per_s: 0.0,
        bytes_per_s: 0.0,
        first_error: None,
    };
    let mut parts = Vec::with_capacity(n);
    for (i, p) in procs.iter().enumerate() {
        let Some((pid, o)) = &p.result else {
            continue;
        };
        all.stats.merge(&o.stats);
        all.req_per_s += o.req_per_s;
        all.bytes_per_s += o.bytes_per_s;
        all.first_error = all.first_error.take().or_else(|| o.first_error.clone());
        all.sources = if plan.own_sources {
            all.sources + o.sources
        } else {
            all.sources.max(o.sources)
        };
        parts.push(ProcPart {
            index: i,
            pid: *pid,
            report: o.report(&plan.parts[i]),
        });
    }
    all.check_reached(total.addr)
        .map_err(|e| ProcsError::Refused(e.to_string()))?;
    let mut report = all.report(total);
    let used = parts.iter().map(|p| p.report.source_ips);
    report.source_ips = if plan.own_sources {
        used.sum()
    } else {
        used.max().unwrap_or(1)
    };
    report.procs = parts;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(connections: usize) -> Config {
        let mut c = Config::new("127.0.0.1:7007".parse().unwrap());
        c.connections = connections;
        c
    }

    #[test]
    fn child_of_reads_index_and_count() {
        assert_eq!("1/3".parse::<ChildOf>(), Ok(ChildOf { index: 1, procs: 3 }));
        assert!("3/3".parse::<ChildOf>().is_err());
        assert!("x/3".parse::<ChildOf>().is_err());
        assert!("2".parse::<ChildOf>().is_err());
    }

    #[test]
    fn parts_add_up_to_the_whole_and_the_first_get_the_remainder() {
        let mut c = cfg(10);
        c.rate = Some(1001);
        c.connect_rate = Some(7);
        c.stop = StopAt::Requests(5);
        let p = plan(&c, 3).unwrap();
        let conns: Vec<usize> = p.parts.iter().map(|p| p.connections).collect();
        assert_eq!(conns, [4, 3, 3]);
        let rates: Vec<u64> = p.parts.iter().map(|p| p.rate.unwrap()).collect();
        assert_eq!(rates, [334, 334, 333]);
        let cr: Vec<u32> = p.parts.iter().map(|p| p.connect_rate.unwrap()).collect();
        assert_eq!(cr, [3, 2, 2]);
        let q: Vec<StopAt> = p.parts.iter().map(|p| p.stop).collect();
        assert_eq!(
            q,
            [
                StopAt::Requests(2),
                StopAt::Requests(2),
                StopAt::Requests(1)
            ]
        );
    }

    #[test]
    fn each_process_gets_its_own_source_addresses() {
        let per = limits::connections_per_source("127.0.0.1:7".parse().unwrap());
        let p = plan(&cfg(2 * per + 2), 2).unwrap();
        assert!(p.own_sources);
        let r: Vec<SourceRange> = p.parts.iter().map(|p| p.source_range.unwrap()).collect();
        // per + 1 connections need two addresses in each process.
        assert_eq!((r[0].first, r[0].count), (0, 2));
        assert_eq!((r[1].first, r[1].count), (2, 2));
        // Addresses added later do not meet either.
        let extra = crate::tcp::MAX_EXTRA_SOURCES;
        assert!(r[0].extra_first >= 4 && r[1].extra_first >= r[0].extra_first + extra);
    }

    #[test]
    fn given_source_ips_are_split_or_shared() {
        let mut c = cfg(100);
        c.source_ips = Some(5);
        let p = plan(&c, 2).unwrap();
        let r: Vec<(usize, usize)> = p
            .parts
            .iter()
            .map(|p| p.source_range.map(|r| (r.first, r.count)).unwrap())
            .collect();
        assert_eq!(r, [(0, 3), (3, 2)]);
        assert_eq!(p.parts[1].source_ips, Some(2));
        // Fewer addresses than processes: all of them, shared.
        c.source_ips = Some(2);
        let p = plan(&c, 3).unwrap();
        assert!(!p.own_sources);
        assert!(p.parts.iter().all(|p| p.source_range.is_none()));
        assert!(p.parts.iter().all(|p| p.source_ips == Some(2)));
    }

    #[test]
    fn splits_that_leave_a_process_empty_are_refused() {
        let flag = |c: &Config, n| match plan(c, n) {
            Err(BenchError::Config(e)) => e.flag,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(flag(&cfg(2), 3), "--procs");
        assert_eq!(flag(&cfg(2), 0), "--procs");
        let mut c = cfg(10);
        c.rate = Some(2);
        assert_eq!(flag(&c, 3), "--rate");
        let mut c = cfg(10);
        c.stop = StopAt::Requests(1);
        assert_eq!(flag(&c, 2), "--requests");
        let mut c = cfg(5);
        c.threads = 3;
        assert_eq!(flag(&c, 2), "--threads");
    }

    #[test]
    fn a_childs_lines_are_read_back() {
        assert!(matches!(parse_said(r#"{"event":"ready"}"#), Said::Ready));
        assert!(matches!(parse_said("hello"), Said::Garbled(_)));
        let o = Outcome {
            stats: Stats::new(),
            sources: 2,
            req_per_s: 10.0,
            bytes_per_s: 640.0,
            first_error: None,
        };
        let line = event_line(&json!({
            "event": "result", "pid": 42, "outcome": outcome_to_json(&o)
        }));
        let Said::Result(pid, back) = parse_said(line.trim()) else {
            panic!("not a result: {line}");
        };
        assert_eq!((pid, back.sources, back.req_per_s), (42, 2, 10.0));
    }
}
