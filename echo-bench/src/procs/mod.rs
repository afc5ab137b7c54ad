//! `--procs N`: one run over N client processes, for loads one process
//! cannot hold (each process has its own `RLIMIT_NOFILE`, so N processes
//! hold N times as many connections).
//!
//! The parent opens no connection itself. It re-executes its own binary
//! ([`std::env::current_exe`], never `fork`) N times with the same flags
//! and a hidden `--child I/N` in front, and every child works out its
//! share from the same [`plan()`]:
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

mod child;
mod plan;

use child::outcome_from_json;
pub use child::{child_session, write_child_error};
pub use plan::{ChildOf, Plan, plan};

/// The hidden flag that makes a process a child: `--child I/N`.
pub const CHILD_FLAG: &str = "--child";

/// How often a child sends its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How often the parent and the child look at their flags.
const TICK: Duration = Duration::from_millis(20);

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
    use super::child::{event_line, outcome_to_json};
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
