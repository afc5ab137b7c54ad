//! The command line of `echo-bench`, as data: the flags ([`Args`]) and the
//! run they ask for ([`Args::config`]). The binary parses them; a test
//! that drives the engine in its own process can parse the very same
//! flags.

use crate::config::{Config, DEFAULT_MAX_CONNECTING, StopAt, Transport};
use crate::gate::Gate;
use crate::payload::{FirstMessage, Payload, Template, check_body};
use crate::procs::ChildOf;
use crate::protocol::{Protocol, Transform};
use crate::{limits, units};
use clap::Parser;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Drive many concurrent connections against an echo service, check every
/// echoed byte, and report throughput, latency percentiles and errors.
#[derive(Parser, Debug)]
#[command(
    name = "echo-bench",
    version,
    after_help = "Latencies are in microseconds, MB/s is payload echoed back (10^6 bytes/s).\n\
                  Exit status: 0 clean run; 1 a mismatch (a corrupted first echo too), more\n\
                  errors than --max-errors, a threshold broken (--max-p99, --min-rps, ...), or a\n\
                  --procs client process that died before it reported; 2 bad flags, unreachable\n\
                  address or too few descriptors; 130 second Ctrl+C.\n\
                  The first Ctrl+C ends the measurement early and prints the report.\n\
                  Saved results: `echo-bench compare A.json B.json` puts two side by side;\n\
                  `echo-bench merge A.json B.json ...` makes runs of several machines one."
)]
pub struct Args {
    /// Address of the echo service (host:port).
    #[arg(default_value = "127.0.0.1:7007")]
    pub addr: String,

    /// Connections to open (all threads together); `50k` = 50,000.
    #[arg(short = 'c', long, default_value_t = 50, value_parser = count::<usize>)]
    pub connections: usize,

    /// New connections per second (default: as fast as the connect window allows).
    #[arg(long, value_name = "N", value_parser = count::<u32>)]
    pub connect_rate: Option<u32>,

    /// At most this many connections opening at once (not yet answered by
    /// their first echo); keeps the server's listen backlog from overflowing.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTING, value_parser = count::<usize>)]
    pub max_connecting: usize,

    /// Loopback source addresses to use (127.0.0.1, 127.0.0.2, ...), exactly
    /// N (refused if too few for the connections and the ephemeral port
    /// range); default: as many as the port range requires.
    #[arg(long, value_name = "N")]
    pub source_ips: Option<u8>,

    /// Message size in bytes (`4KiB` = 4,096, `4KB` = 4,000).
    #[arg(short = 's', long, default_value_t = 64, value_parser = size)]
    pub size: usize,

    /// Messages in flight per connection (1 = ping-pong).
    #[arg(short = 'd', long, default_value_t = 1, value_parser = count::<usize>)]
    pub depth: usize,

    /// Seconds to measure (after the warmup); `500ms`, `10s`, `2m` too.
    #[arg(
        short = 't',
        long,
        value_name = "SECS",
        default_value_t = 10.0,
        conflicts_with = "requests",
        value_parser = secs
    )]
    pub duration: f64,

    /// Measure this many messages instead of a duration.
    #[arg(short = 'n', long, value_name = "N", value_parser = count::<u64>)]
    pub requests: Option<u64>,

    /// Seconds of traffic before measuring, not counted.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = secs)]
    pub warmup: f64,

    /// Open-loop mode: N messages per second in total on a fixed schedule;
    /// latency counts from each message's intended send time. With --udp,
    /// each datagram leaves when due, whatever has come back.
    #[arg(short = 'r', long, value_name = "N", value_parser = count::<u64>)]
    pub rate: Option<u64>,

    /// Threads, each with its own poll loop and share of the connections
    /// (per process, with --procs).
    #[arg(short = 'T', long, default_value_t = 1, value_parser = count::<usize>)]
    pub threads: usize,

    /// Client processes, each with its own descriptor limit and its share
    /// of the connections, source addresses, -n and rates; one report.
    /// Refused if some process would get no connection. `auto`: as few as
    /// the descriptor limit allows.
    #[arg(long, value_name = "N|auto", default_value = "1", value_parser = parse_procs)]
    pub procs: Procs,

    /// Internal: run as client process INDEX of PROCS for a parent
    /// started with --procs (the parent passes it).
    #[arg(long = "child", value_name = "INDEX/PROCS", hide = true)]
    pub child: Option<ChildOf>,

    /// The server's mode to speak: `raw` echo, `line` (each message a line
    /// of SIZE bytes with its LF) or `frame` (a 4-byte big-endian length
    /// and SIZE - 4 bytes of body). Every answer is checked byte for byte.
    #[arg(long, value_enum, default_value_t = Mode::Raw)]
    pub mode: Mode,

    /// Line mode: the server's --line-transform, whose answers are expected
    /// (`upper`: ASCII letters upper-cased; `hello`: each line after `hello `).
    #[arg(long, value_enum, default_value_t = LineTransform::None)]
    pub line_transform: LineTransform,

    /// Line mode: the server greets each connection with a line (its
    /// --banner), which is skipped.
    #[arg(long)]
    pub banner: bool,

    /// Every message is TEXT (a line gets its LF, a frame its header);
    /// the message size is then its length.
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["size", "message_file", "template"])]
    pub message: Option<String>,

    /// Every message is the contents of FILE (as --message).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["size", "template"])]
    pub message_file: Option<std::path::PathBuf>,

    /// Sent once on each connection before any other message (a line gets
    /// its LF, a frame its header); its answer is checked, not timed.
    #[arg(long, value_name = "TEXT")]
    pub first_message: Option<String>,

    /// Messages rendered from TEXT: {conn} becomes the connection's number
    /// (8 digits), {seq} the message's (12 digits), so each answer names
    /// its request; {{ and }} are braces.
    #[arg(long, value_name = "TEXT", conflicts_with = "size")]
    pub template: Option<String>,

    /// Datagram mode against a UDP echo service (loss is counted, not fatal).
    #[arg(long)]
    pub udp: bool,

    /// With --udp: send each socket's datagrams of a turn as one segmented
    /// message (UDP GSO, Linux 4.18), and accept echoes coalesced
    /// (UDP_GRO, Linux 5.0): a run of echoes a server sent as one message
    /// arrives as one and is split here. What a QUIC stack does; off, a
    /// datagram is a datagram all the way.
    #[arg(long, requires = "udp")]
    pub udp_offload: bool,

    /// Print one JSON object on stdout instead of the table (also when the
    /// run cannot happen: then with `error`).
    #[arg(long)]
    pub json: bool,

    /// Latency percentiles to report, comma-separated (default
    /// 50,90,99,99.9).
    #[arg(long, value_name = "P,P,...", value_delimiter = ',', value_parser = percentile)]
    pub percentiles: Vec<f64>,

    /// Report every SECS of the window while it runs (a line each; with
    /// --json, a JSON object each, before the report).
    #[arg(long, value_name = "SECS", value_parser = secs)]
    pub interval: Option<f64>,

    /// Fail (exit 1) if the median latency is above TIME (`500us`, `2ms`).
    #[arg(long, value_name = "TIME", value_parser = secs)]
    pub max_p50: Option<f64>,

    /// Fail (exit 1) if the 90th percentile latency is above TIME.
    #[arg(long, value_name = "TIME", value_parser = secs)]
    pub max_p90: Option<f64>,

    /// Fail (exit 1) if the 99th percentile latency is above TIME.
    #[arg(long, value_name = "TIME", value_parser = secs)]
    pub max_p99: Option<f64>,

    /// Fail (exit 1) if the 99.9th percentile latency is above TIME.
    #[arg(long, value_name = "TIME", value_parser = secs)]
    pub max_p999: Option<f64>,

    /// Fail (exit 1) if any latency is above TIME.
    #[arg(long, value_name = "TIME", value_parser = secs)]
    pub max_latency: Option<f64>,

    /// Fail (exit 1) below N messages per second (`50k`).
    #[arg(long, value_name = "N", value_parser = count::<u64>)]
    pub min_rps: Option<u64>,

    /// Write the latency, connect and first-echo histograms of the window
    /// to FILE as an HdrHistogram interval log (nanoseconds).
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<std::path::PathBuf>,

    /// After the run, keep all connections open and idle for SECS.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = secs)]
    pub hold: f64,

    /// Once every connection is open and proven, keep them all open and
    /// silent for SECS before the warmup and the window; with -n N (depth
    /// 1) the window then echoes once on each of N connections.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = secs)]
    pub idle: f64,

    /// Seconds a connect may take, or an echo may be overdue (also after
    /// the window, while the last echoes are awaited), before the
    /// connection counts as timed out and is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = secs)]
    pub timeout: f64,

    /// Errors tolerated before the exit code says failure (mismatches never are).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = count::<u64>)]
    pub max_errors: u64,
}

impl Args {
    /// The thresholds asked for, in flag order.
    fn gates(&self) -> Vec<Gate> {
        let mut gates: Vec<Gate> = [
            ("--max-p50", Some(50.0), self.max_p50),
            ("--max-p90", Some(90.0), self.max_p90),
            ("--max-p99", Some(99.0), self.max_p99),
            ("--max-p999", Some(99.9), self.max_p999),
            ("--max-latency", None, self.max_latency),
        ]
        .into_iter()
        .filter_map(|(flag, percentile, secs)| {
            secs.map(|s| Gate::MaxLatency {
                flag,
                percentile,
                limit_us: s * 1e6,
            })
        })
        .collect();
        if let Some(n) = self.min_rps {
            gates.push(Gate::MinRps(n as f64));
        }
        gates
    }

    /// `--message`, `--message-file` or `--template` into `cfg` (after its
    /// protocol), with the message size they imply.
    fn payload(&self, cfg: &mut Config) -> Result<(), String> {
        let body = match (&self.message, &self.message_file) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(path)) => Some(std::fs::read(path).map_err(|e| {
                format!(
                    "bad option --message-file: cannot read {}: {e}",
                    path.display()
                )
            })?),
            (None, None) => None,
        };
        if let Some(mut body) = body {
            if matches!(cfg.protocol, Protocol::Line { .. }) && body.last() == Some(&b'\n') {
                // The line's own LF, from a file or `$'...\n'`: added anyway.
                body.pop();
            }
            check_body(&body, cfg.protocol).map_err(|e| format!("bad option --message: {e}"))?;
            if body.is_empty() && cfg.protocol == Protocol::Raw {
                return Err("bad option --message: an empty message is never echoed".into());
            }
            cfg.size = cfg.protocol.wrap(&body).len();
            cfg.payload = Payload::Message(body);
        }
        if let Some(text) = &self.first_message {
            let first = FirstMessage::new(text.clone().into_bytes(), cfg.protocol)
                .map_err(|e| format!("bad option --first-message: {e}"))?;
            cfg.first = Some(first);
        }
        if let Some(text) = &self.template {
            let t = Template::parse(text, cfg.protocol)
                .map_err(|e| format!("bad option --template: {e}"))?;
            cfg.size = t.size();
            cfg.payload = Payload::Template(t);
        }
        Ok(())
    }

    /// The run these flags ask for, checked ([`Config::validate`]). The
    /// error is one line that names the flag or the address at fault.
    pub fn config(&self) -> Result<Config, String> {
        let addr = resolve(&self.addr)?;
        let secs = |flag: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .map_err(|_| format!("bad option {flag}: {v} is not a number of seconds"))
        };
        let mut cfg = Config::new(addr);
        cfg.connections = self.connections;
        cfg.connect_rate = self.connect_rate;
        cfg.max_connecting = self.max_connecting;
        cfg.source_ips = self.source_ips;
        cfg.size = self.size;
        cfg.depth = self.depth;
        cfg.stop = match self.requests {
            Some(n) => StopAt::Requests(n),
            None => StopAt::Duration(secs("--duration", self.duration)?),
        };
        cfg.warmup = secs("--warmup", self.warmup)?;
        cfg.rate = self.rate;
        cfg.threads = self.threads;
        if self.mode != Mode::Line {
            if self.line_transform != LineTransform::None {
                return Err("bad option --line-transform: needs --mode line".into());
            }
            if self.banner {
                return Err("bad option --banner: needs --mode line".into());
            }
        }
        cfg.protocol = match self.mode {
            Mode::Raw => Protocol::Raw,
            Mode::Frame => Protocol::Frame,
            Mode::Line => Protocol::Line {
                transform: match self.line_transform {
                    LineTransform::None => Transform::None,
                    LineTransform::Upper => Transform::Upper,
                    LineTransform::Hello => Transform::Hello,
                },
                banner: self.banner,
            },
        };
        self.payload(&mut cfg)?;
        cfg.udp_offload = self.udp_offload;
        cfg.transport = if self.udp {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        cfg.hold = secs("--hold", self.hold)?;
        cfg.idle = secs("--idle", self.idle)?;
        cfg.max_errors = self.max_errors;
        cfg.gates = self.gates();
        cfg.interval = self.interval.map(|s| secs("--interval", s)).transpose()?;
        if !self.percentiles.is_empty() {
            cfg.percentiles = self.percentiles.clone();
        }
        cfg.timeout = secs("--timeout", self.timeout)?;
        cfg.validate().map_err(|e| format!("bad option {e}"))?;
        Ok(cfg)
    }
}

/// `--mode`: the server's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Byte-stream echo.
    Raw,
    /// Lines ending in LF.
    Line,
    /// 4-byte big-endian length, then the body.
    Frame,
}

/// `--line-transform`: how the server answers a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineTransform {
    /// The line itself.
    None,
    /// ASCII letters upper-cased.
    Upper,
    /// `hello ` and the line.
    Hello,
}

/// How many client processes `--procs` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Procs {
    /// Exactly this many (at least 1).
    Exactly(usize),
    /// As few as hold the connections within the descriptor limit
    /// ([`crate::limits::procs_needed`]).
    Auto,
}

impl Procs {
    /// The number of processes for `connections`: `auto` resolved against
    /// this machine's hard `RLIMIT_NOFILE`.
    pub fn count(self, connections: usize) -> usize {
        match self {
            Procs::Exactly(n) => n,
            Procs::Auto => match limits::nofile_hard_limit() {
                Ok(limit) => limits::procs_needed(connections, limit),
                Err(e) => {
                    log::warn!("cannot read RLIMIT_NOFILE for --procs auto: {e}");
                    1
                }
            },
        }
    }
}

/// `--procs`: `auto`, or a whole number, at least 1.
fn parse_procs(s: &str) -> Result<Procs, String> {
    if s == "auto" {
        return Ok(Procs::Auto);
    }
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(Procs::Exactly(n)),
        Err(_) => Err("not a whole number of processes, nor auto".into()),
    }
}

/// A count with an optional `k` or `m` ([`units::parse_count`]).
fn count<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let n = units::parse_count(s)?;
    T::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

/// A byte size with an optional unit ([`units::parse_size`]).
fn size(s: &str) -> Result<usize, String> {
    let n = units::parse_size(s)?;
    usize::try_from(n).map_err(|_| format!("{s:?} is too large"))
}

/// A percentile: above 0, at most 100.
fn percentile(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{s:?} is not a percentile (above 0, at most 100)")),
    }
}

/// Seconds, or a time with its unit ([`units::parse_secs`]).
fn secs(s: &str) -> Result<f64, String> {
    units::parse_secs(s)
}

/// `HOST:PORT` to the first address it resolves to.
fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("bad address {addr:?}: resolves to nothing"))
}
