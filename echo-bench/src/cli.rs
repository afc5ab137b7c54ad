//! The command line of `echo-bench`, as data: the flags ([`Args`]) and the
//! run they ask for ([`Args::config`]). The binary parses them; a test
//! that drives the engine in its own process can parse the very same
//! flags.

use crate::config::{Config, DEFAULT_MAX_CONNECTING, StopAt, Transport};
use crate::procs::ChildOf;
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
                  errors than --max-errors, or a --procs client process that died before it\n\
                  reported; 2 bad flags, unreachable address or too few descriptors; 130\n\
                  second Ctrl+C.\n\
                  The first Ctrl+C ends the measurement early and prints the report."
)]
pub struct Args {
    /// Address of the echo service (host:port).
    #[arg(default_value = "127.0.0.1:7007")]
    pub addr: String,

    /// Connections to open (all threads together).
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,

    /// New connections per second (default: as fast as the connect window allows).
    #[arg(long, value_name = "N")]
    pub connect_rate: Option<u32>,

    /// At most this many connections opening at once (not yet answered by
    /// their first echo); keeps the server's listen backlog from overflowing.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTING)]
    pub max_connecting: usize,

    /// Loopback source addresses to use (127.0.0.1, 127.0.0.2, ...), exactly
    /// N (refused if too few for the connections and the ephemeral port
    /// range); default: as many as the port range requires.
    #[arg(long, value_name = "N")]
    pub source_ips: Option<u8>,

    /// Message size in bytes.
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,

    /// Messages in flight per connection (1 = ping-pong).
    #[arg(short = 'd', long, default_value_t = 1)]
    pub depth: usize,

    /// Seconds to measure (after the warmup).
    #[arg(
        short = 't',
        long,
        value_name = "SECS",
        default_value_t = 10.0,
        conflicts_with = "requests"
    )]
    pub duration: f64,

    /// Measure this many messages instead of a duration.
    #[arg(short = 'n', long, value_name = "N")]
    pub requests: Option<u64>,

    /// Seconds of traffic before measuring, not counted.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub warmup: f64,

    /// Open-loop mode: N messages per second in total on a fixed schedule;
    /// latency counts from each message's intended send time.
    #[arg(short = 'r', long, value_name = "N")]
    pub rate: Option<u64>,

    /// Threads, each with its own poll loop and share of the connections
    /// (per process, with --procs).
    #[arg(short = 'T', long, default_value_t = 1)]
    pub threads: usize,

    /// Client processes, each with its own descriptor limit and its share
    /// of the connections, source addresses, -n and rates; one report.
    /// Refused if some process would get no connection.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_procs)]
    pub procs: usize,

    /// Internal: run as client process INDEX of PROCS for a parent
    /// started with --procs (the parent passes it).
    #[arg(long = "child", value_name = "INDEX/PROCS", hide = true)]
    pub child: Option<ChildOf>,

    /// Datagram mode against a UDP echo service (loss is counted, not fatal).
    #[arg(long)]
    pub udp: bool,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,

    /// After the run, keep all connections open and idle for SECS.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub hold: f64,

    /// Once every connection is open and proven, keep them all open and
    /// silent for SECS before the warmup and the window; with -n N (depth
    /// 1) the window then echoes once on each of N connections.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub idle: f64,

    /// Seconds a connect may take, or an echo may be overdue (also after
    /// the window, while the last echoes are awaited), before the
    /// connection counts as timed out and is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,

    /// Errors tolerated before the exit code says failure (mismatches never are).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_errors: u64,
}

impl Args {
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
        cfg.transport = if self.udp {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        cfg.hold = secs("--hold", self.hold)?;
        cfg.idle = secs("--idle", self.idle)?;
        cfg.max_errors = self.max_errors;
        cfg.timeout = secs("--timeout", self.timeout)?;
        cfg.validate().map_err(|e| format!("bad option {e}"))?;
        Ok(cfg)
    }
}

/// `--procs`: a whole number, at least 1.
fn parse_procs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a whole number of processes".into()),
    }
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
