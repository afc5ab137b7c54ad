//! `echo-bench`, the stress client of echo-reactor: many concurrent
//! connections on mio, every echoed byte checked, latencies in an HDR
//! histogram. The binary (`src/main.rs`) only parses flags and prints;
//! tests and benches call [`run`] directly. It is a package of its own in
//! the echo-reactor workspace (`echo-bench/`), so that the server's
//! dependencies stay free of what only the client needs.
//!
//! # Layout
//!
//! | file | what it teaches |
//! | --- | --- |
//! | [`cli`] | the command line as data, and the [`Config`] it asks for |
//! | [`compare`] | saved results side by side, differences beyond noise; results of several machines merged |
//! | [`config`] | validate a whole request up front, one error line per problem |
//! | [`pattern`] | a deterministic byte stream per connection: zero-copy sends, `memcmp` checks |
//! | [`payload`] | messages of the user's choice: one given, or a template with `{conn}` and `{seq}` |
//! | [`protocol`] | the server's modes (raw, line, frame) as requests and the answers they must get |
//! | [`limits`] | descriptor and ephemeral-port limits of a client with 19,000 sockets |
//! | `engine.rs` | one run skeleton for both transports: a thread's phases (opening, settling, idle, running, draining, holding), its poll loop, the window |
//! | `tcp/` | the client-side event loop: non-blocking connects (`open.rs`), edge-triggered reads and writes (`mod.rs`), the echo check (`conn.rs`), open-loop sending (`open_loop.rs`) |
//! | `udp/` | the same over datagrams, where loss is counted, not fatal: a socket's turn and loss, lateness and reordering (`mod.rs`), a batch per call with `recvmmsg`/`sendmmsg` and optional GSO/GRO (`batch.rs`), open-loop sending (`open_loop.rs`) |
//! | [`schedule`] | open loop: a fixed timetable, latency from the due time |
//! | `release.rs` | open loop's hand-out for either transport: what falls due when and to whom, `-n`, the timer for the next one |
//! | [`timer`] | a `timerfd` in the poll set: wake-ups finer than epoll's milliseconds |
//! | [`stats`] | per-thread counts with no sharing on the hot path, merged at the end |
//! | [`gate`] | thresholds (`--max-p99`, `--min-rps`) that fail a run, by name |
//! | [`histogram`] | percentiles of the user's choice; histograms in HdrHistogram's own forms (base64 V2, interval log) |
//! | [`interval`] | `--interval`: a report every SECS of the window, one lock per thread per interval |
//! | [`live`] | the few numbers shared while running (progress line, stop flag) |
//! | [`report`] | the report as data, rendered as a table or one JSON object |
//! | [`run_info`] | what a saved result says about its run: format version, start, command line |
//! | [`procs`] | `--procs N`: the run split over N re-executed processes, their results merged |
//! | [`units`] | numbers with units on the command line: `10s`, `50k`, `4KiB` |
//!
//! # Threads
//!
//! `--threads N` runs N independent event loops, each with its own `Poll`,
//! its own slab of connections (ids `t, t+N, t+2N, ...`) and its own
//! [`Stats`]. Nothing is shared on the per-message path; the threads meet
//! only once, when all their connections are open, so that they measure
//! the same load.
//!
//! # Processes
//!
//! `--procs N` runs N copies of the binary, each with its share of the
//! connections and its own descriptor limit; the parent only starts them,
//! lets them open their windows together and adds up their counts
//! ([`procs`]).
#![deny(
    unreachable_pub,
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unsafe_op_in_unsafe_fn
)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod compare;
pub mod config;
mod engine;
pub mod gate;
pub mod histogram;
pub mod interval;
pub mod limits;
pub mod live;
pub mod pattern;
pub mod payload;
pub mod procs;
pub mod protocol;
mod release;
pub mod report;
pub mod run_info;
pub mod schedule;
pub mod stats;
mod tcp;
pub mod timer;
mod udp;
pub mod units;

pub use config::{Config, ConfigError, SourceRange, StopAt, Transport};
pub use limits::raise_nofile_limit;
pub use live::Live;
pub use report::Report;
pub use stats::{ErrorKind, Stats};

use log::{info, warn};
use pattern::Pattern;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

/// Why a run could not happen at all. (A run that happened but saw errors
/// is a [`Report`] whose [`Report::passed`] is false.)
#[derive(Debug)]
pub enum BenchError {
    /// A flag has a value that cannot work.
    Config(ConfigError),
    /// The machine cannot hold the run (descriptors, source addresses).
    Limits(String),
    /// Not one connection could be opened, or none was ever answered.
    Unreachable {
        /// The address that was tried.
        addr: SocketAddr,
        /// The first failure seen.
        cause: String,
    },
    /// The engine itself failed (e.g. `epoll_create`).
    Io(io::Error),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Config(e) => write!(f, "bad option {e}"),
            BenchError::Limits(why) => write!(f, "{why}"),
            BenchError::Unreachable { addr, cause } => {
                write!(f, "cannot reach {addr}: {cause}")
            }
            BenchError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<ConfigError> for BenchError {
    fn from(e: ConfigError) -> Self {
        BenchError::Config(e)
    }
}

/// What every thread of one run reads: the request, the pattern, the plan.
pub(crate) struct Shared {
    pub cfg: Config,
    /// What connections send.
    pub pattern: Pattern,
    /// What must come back, when it differs from what was sent (a line
    /// transform); `None`: the echo is the request.
    pub answers: Option<Pattern>,
    /// `--template`: messages are rendered from it instead of taken from
    /// the patterns.
    pub template: Option<payload::Template>,
    /// Source addresses the connections are spread over (1 = kernel's
    /// choice, unless `source_first` is set).
    pub sources: usize,
    /// The first of them, when a parent process chose the range
    /// ([`Config::source_range`]); then every connection binds to one.
    pub source_first: Option<usize>,
    /// The address (index) where those added past the planned ones begin.
    pub extra_first: usize,
    pub live: Arc<Live>,
}

impl Shared {
    /// The pattern echoes are checked against.
    pub(crate) fn echo(&self) -> &Pattern {
        self.answers.as_ref().unwrap_or(&self.pattern)
    }

    /// The source address of connection `id`; `None` = the kernel's choice.
    pub(crate) fn source_for(&self, id: usize) -> Option<std::net::IpAddr> {
        let c = self.cfg.connections;
        match self.source_first {
            None => limits::source_for(id, c, self.sources),
            Some(first) => Some(limits::loopback_v4(first + id * self.sources / c.max(1))),
        }
    }
}

/// Runs a whole stress run and returns its report. `live` lets the caller
/// watch progress (and stop the run early) from another thread.
pub fn run(cfg: &Config, live: Arc<Live>) -> Result<Report, BenchError> {
    let out = run_counts(cfg, live)?;
    out.check_reached(cfg.addr)?;
    Ok(out.report(cfg))
}

/// What a run counted, before it is made a [`Report`]: what one client
/// process of `--procs` hands to its parent, which adds them up.
#[derive(Debug)]
pub struct Outcome {
    /// The threads' counts, merged.
    pub stats: Stats,
    /// Source addresses planned (those added later are in
    /// [`Stats::sources_used`]).
    pub sources: usize,
    /// The sum of the threads' message rates (each over its own window).
    pub req_per_s: f64,
    /// The same for payload bytes.
    pub bytes_per_s: f64,
    /// The first connect error any thread saw.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Not one connection served and not one answer: unreachable (exit 2).
    /// A server that did answer, with a corrupted echo (`mismatch`) or
    /// with something that is no echo at all (`rejected`), was reached:
    /// its run is reported, and fails ([`Report::served_none`]).
    pub fn check_reached(&self, addr: SocketAddr) -> Result<(), BenchError> {
        let total = &self.stats;
        let answered = total.errors_of(ErrorKind::Mismatch) + total.errors_of(ErrorKind::Rejected);
        if total.established == 0 && total.failed > 0 && answered == 0 {
            return Err(BenchError::Unreachable {
                addr,
                cause: self
                    .first_error
                    .clone()
                    .unwrap_or_else(|| "every connection failed".into()),
            });
        }
        Ok(())
    }

    /// The report of these counts, for the run `cfg` asked for.
    pub fn report(&self, cfg: &Config) -> Report {
        Report::new(
            cfg,
            self.sources,
            &self.stats,
            self.req_per_s,
            self.bytes_per_s,
        )
    }
}

/// Runs a whole stress run and returns what it counted, whether or not a
/// connection was ever served (see [`Outcome::check_reached`]).
pub fn run_counts(cfg: &Config, live: Arc<Live>) -> Result<Outcome, BenchError> {
    cfg.validate()?;
    let sources = plan_limits(cfg)?;
    let (pattern, answers) = match &cfg.payload {
        payload::Payload::Message(body) => cfg.protocol.patterns_of(body),
        _ => cfg.protocol.patterns(cfg.size),
    };
    let template = match &cfg.payload {
        payload::Payload::Template(t) => Some(t.clone()),
        _ => None,
    };
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        pattern,
        answers,
        template,
        sources,
        source_first: cfg.source_range.map(|r| r.first),
        extra_first: cfg.source_range.map_or(sources, |r| r.extra_first),
        live,
    });
    info!(
        "{} {} connections to {} over {} thread(s), {} source address(es)",
        cfg.connections,
        match cfg.transport {
            Transport::Tcp => "TCP",
            Transport::Udp => "UDP",
        },
        cfg.addr,
        cfg.threads,
        sources
    );

    let handles = spawn_threads(&shared)?;
    let all = join_threads(handles)?;
    Ok(Outcome {
        stats: all.stats,
        sources,
        req_per_s: all.req_per_s,
        bytes_per_s: all.bytes_per_s,
        first_error: all.first_error,
    })
}

/// What one engine thread hands back: its counts and its first connect
/// error, or the error that stopped it.
pub(crate) type ThreadResult = io::Result<(Stats, Option<String>)>;

/// The engine threads' results together.
struct Joined {
    /// Their counts, merged.
    stats: Stats,
    /// The sum of their rates (each over its own window).
    req_per_s: f64,
    bytes_per_s: f64,
    /// The first connect error any of them saw.
    first_error: Option<String>,
}

/// Waits for every engine thread and adds up what they counted; an engine
/// that failed (or panicked) fails the run.
fn join_threads(handles: Vec<thread::JoinHandle<ThreadResult>>) -> Result<Joined, BenchError> {
    let mut all = Joined {
        stats: Stats::new(),
        req_per_s: 0.0,
        bytes_per_s: 0.0,
        first_error: None,
    };
    let mut engine_error = None;
    for h in handles {
        match h.join() {
            Ok(Ok((stats, err))) => {
                if stats.window_secs > 0.0 {
                    all.req_per_s += stats.messages as f64 / stats.window_secs;
                    all.bytes_per_s += stats.bytes as f64 / stats.window_secs;
                }
                all.stats.merge(&stats);
                all.first_error = all.first_error.or(err);
            }
            Ok(Err(e)) => engine_error = Some(BenchError::Io(e)),
            Err(_) => {
                engine_error = Some(BenchError::Io(io::Error::other("a bench thread panicked")))
            }
        }
    }
    match engine_error {
        Some(e) => Err(e),
        None => Ok(all),
    }
}

/// Starts one engine thread per `--threads`, each on its share.
fn spawn_threads(
    shared: &Arc<Shared>,
) -> Result<Vec<thread::JoinHandle<ThreadResult>>, BenchError> {
    let mut handles = Vec::with_capacity(shared.cfg.threads);
    for t in 0..shared.cfg.threads {
        let share = share_of(&shared.cfg, t);
        let sh = Arc::clone(shared);
        let handle = thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || {
                let result = match sh.cfg.transport {
                    Transport::Tcp => tcp::run_thread(Arc::clone(&sh), share),
                    Transport::Udp => udp::run_thread(Arc::clone(&sh), share),
                };
                // A thread that failed (e.g. no epoll fd: EMFILE) may never
                // have reported itself settled; the others wait for that,
                // so report it now. A second report is harmless: they wait
                // for "at least every thread".
                if result.is_err() {
                    sh.live.thread_settled();
                }
                result
            })
            .map_err(BenchError::Io)?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Decides how many source addresses the connections use, then raises the
/// descriptor limit; refuses runs the machine cannot hold.
fn plan_limits(cfg: &Config) -> Result<usize, BenchError> {
    let sources = match cfg.source_range {
        // Chosen, and checked, by the parent process.
        Some(r) => r.count,
        None => plan_sources(
            cfg,
            limits::connections_per_source(cfg.addr),
            limits::ports_per_source(),
        )?,
    };
    let need = cfg.connections as u64 + limits::FD_SLACK;
    match limits::raise_nofile_limit() {
        Ok(have) if have < need => {
            return Err(BenchError::Limits(too_few_descriptors(
                cfg.connections,
                have,
            )));
        }
        Ok(_) => {}
        Err(e) => warn!("could not read or raise RLIMIT_NOFILE: {e}"),
    }
    if sources > 1 {
        info!("spreading connections over {sources} loopback source addresses");
    }
    Ok(sources)
}

/// The refusal of `connections` in one process whose descriptor limit is
/// `have`: with the `--procs` that would hold them, each process having a
/// limit of its own.
pub fn too_few_descriptors(connections: usize, have: u64) -> String {
    let need = connections as u64 + limits::FD_SLACK;
    let limit = limits::nofile_hard_limit().unwrap_or(have).max(have);
    format!(
        "{connections} connections need about {need} file descriptors, but RLIMIT_NOFILE is \
         {have}: give --procs {} (or --procs auto) to spread them over processes of up to {} \
         connections each, or raise the hard limit (`ulimit -Hn`)",
        limits::procs_needed(connections, limit),
        limits::connections_per_process(limit)
    )
}

/// How many source addresses the run uses. `--source-ips N` is used
/// exactly as given, or refused if `N` addresses cannot hold the
/// connections at all (`capacity` local ports each); without it, enough
/// addresses that none carries more than `spread` connections.
fn plan_sources(cfg: &Config, spread: usize, capacity: usize) -> Result<usize, BenchError> {
    let c = cfg.connections;
    let must = limits::source_ips_needed(c, capacity);
    let loopback_v4 = cfg.addr.is_ipv4() && cfg.addr.ip().is_loopback();
    match cfg.source_ips {
        Some(n) if (n as usize) < must && loopback_v4 => Err(BenchError::Config(ConfigError {
            flag: "--source-ips",
            why: format!(
                "{c} connections need at least {must} source addresses ({capacity} local \
                 ports each in the ephemeral port range), not {n}: give --source-ips {must} \
                 or more, or leave it out"
            ),
        })),
        Some(_) if must > 1 && !loopback_v4 => Err(BenchError::Limits(format!(
            "{c} connections need {must} source addresses ({capacity} local ports each), \
             which only works against an IPv4 loopback target"
        ))),
        Some(n) => Ok(n as usize),
        None => {
            let needed = limits::source_ips_needed(c, spread);
            if needed > 1 && !loopback_v4 {
                return Err(BenchError::Limits(format!(
                    "{c} connections need {needed} source addresses ({spread} ports each), \
                     which only works against an IPv4 loopback target"
                )));
            }
            Ok(needed)
        }
    }
}

/// Thread `t`'s part of the connections and of the rates and quotas.
fn share_of(cfg: &Config, t: usize) -> engine::Share {
    let n = cfg.threads;
    let ids: Vec<usize> = (t..cfg.connections).step_by(n).collect();
    let part = |total: u64| total / n as u64 + u64::from((t as u64) < total % n as u64);
    engine::Share {
        thread: t,
        ids,
        connect_rate: cfg.connect_rate.map(|r| f64::from(r) / n as f64),
        max_connecting: cfg.max_connecting.div_ceil(n).max(1),
        quota: match cfg.stop {
            StopAt::Requests(q) => Some(part(q)),
            StopAt::Duration(_) => None,
        },
        rate: cfg.rate.map(|r| r as f64 / n as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(connections: usize, source_ips: Option<u8>) -> Config {
        let mut c = Config::new("127.0.0.1:7007".parse().unwrap());
        c.connections = connections;
        c.source_ips = source_ips;
        c
    }

    #[test]
    fn source_ips_is_kept_exactly_when_it_can_work() {
        // 1,000 connections, 300 ports per address at most: 4 addresses
        // can hold them. The loopback spread (100 per address) would pick
        // 10, but a number the user gave is not raised.
        assert_eq!(plan_sources(&cfg(1000, Some(4)), 100, 300).unwrap(), 4);
        assert_eq!(plan_sources(&cfg(1000, Some(7)), 100, 300).unwrap(), 7);
        assert_eq!(plan_sources(&cfg(1000, None), 100, 300).unwrap(), 10);
    }

    #[test]
    fn too_few_source_ips_are_refused_with_the_number_needed() {
        let e = plan_sources(&cfg(1000, Some(3)), 100, 300).unwrap_err();
        let BenchError::Config(e) = e else {
            panic!("not a flag error: {e}");
        };
        assert_eq!(e.flag, "--source-ips");
        assert!(e.why.contains("--source-ips 4"), "{}", e.why);
    }

    #[test]
    fn a_non_loopback_target_cannot_use_extra_source_addresses() {
        let mut c = cfg(1000, Some(1));
        c.addr = "10.0.0.1:7007".parse().unwrap();
        assert!(plan_sources(&c, 300, 300).is_err());
        c.source_ips = None;
        assert!(plan_sources(&c, 300, 300).is_err());
        c.connections = 300;
        assert_eq!(plan_sources(&c, 300, 300).unwrap(), 1);
    }
}
