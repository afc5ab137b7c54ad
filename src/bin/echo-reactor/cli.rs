//! The `echo-reactor` command line (seed 12: the port comes from the
//! command line), turned into a [`Config`].

use std::time::Duration;

use clap::{Parser, ValueEnum};

use echo_reactor::{
    Backend, Config, DEFAULT_BACKLOG, DEFAULT_LISTEN, DEFAULT_MAX_BUFFERED, DEFAULT_MAX_FRAME,
    DEFAULT_MAX_LINE, DEFAULT_METRICS_IDLE_TIMEOUT, DEFAULT_METRICS_MAX_CONNECTIONS,
    DEFAULT_SNDBUF, DEFAULT_UDP_BATCH, DEFAULT_WATCHDOG, Frame, Line, ListenAddr, MIN_MAX_BUFFERED,
    Mode, ProxyMode, Transform, WorkerSpec,
};

/// A single-threaded, readiness-based TCP echo server (RFC 862) on mio.
///
/// Every byte a client sends comes back to it, in order. One thread and one
/// multiplexer (epoll by default, or poll or select) serve all connections. Logging goes to stderr and is
/// controlled by RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "echo-reactor", version)]
pub(crate) struct Args {
    /// Address to listen on: IPv4 (127.0.0.1:7007), IPv6 ([::1]:7007) or
    /// HOST:PORT (every address the name resolves to is bound). Repeat for
    /// more listeners. Port 0 picks a free port.
    #[arg(long = "listen", value_name = "ADDR", default_value = DEFAULT_LISTEN,
          env = "ECHO_REACTOR_LISTEN", value_delimiter = ',')]
    pub listen: Vec<ListenAddr>,

    /// The multiplexer the event loop runs on: epoll (through mio,
    /// edge-triggered; cost per wait grows with the ready sockets only),
    /// poll (level-triggered; grows with all open connections) or select
    /// (level-triggered; grows with the highest descriptor, and cannot
    /// watch descriptors at or above FD_SETSIZE = 1024: such connections
    /// are closed at once, so select serves about 1,000 at most).
    #[arg(long, value_enum, value_name = "NAME", default_value_t = BackendName::Epoll,
          env = "ECHO_REACTOR_BACKEND")]
    pub backend: BackendName,

    /// Length of the kernel's queue of completed connections waiting for
    /// accept (capped by net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64),
          env = "ECHO_REACTOR_BACKLOG")]
    pub backlog: u32,

    /// Most echo connections served at once (by each worker, with
    /// --workers; metrics connections not counted); more are told "ERR too many connections" and closed. Default: the
    /// descriptor limit (RLIMIT_NOFILE, raised to its hard limit) minus 64.
    #[arg(long, value_name = "N", value_parser = parse_positive,
          env = "ECHO_REACTOR_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most connections one host may hold at once (an IPv4 address, or an
    /// IPv6 /64), on the whole server (with --workers too); more are told
    /// "ERR too many connections" and closed. Default: no limit.
    #[arg(long, value_name = "N", value_parser = parse_positive,
          env = "ECHO_REACTOR_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// Close a connection after SECS seconds without traffic (decimals
    /// allowed). Default: never. A client that sends a byte now and then
    /// is not idle: see --keepalive and docs/limits.md.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs,
          env = "ECHO_REACTOR_IDLE_TIMEOUT")]
    pub idle_timeout: Option<Duration>,

    /// TCP keepalive: after SECS seconds of silence probe the peer (every
    /// SECS/3, 1 to 75 s, 3 probes), so a peer that vanished without
    /// closing frees its slot. Default: off.
    #[arg(long, value_name = "SECS", value_parser = parse_keepalive,
          env = "ECHO_REACTOR_KEEPALIVE")]
    pub keepalive: Option<Duration>,

    /// Most bytes held for all clients together (pending output, partial
    /// lines and frames), at least 1 MiB. Near it, clients that hold bytes
    /// read less; at it, input that cannot be echoed at once stays in the
    /// kernel. No byte read is ever dropped.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BUFFERED,
          value_parser = parse_max_buffered, env = "ECHO_REACTOR_MAX_BUFFERED")]
    pub max_buffered: usize,

    /// Close a connection that holds buffered bytes and made no progress
    /// for SECS while --max-buffered is nearly full (three quarters or
    /// more), largest first, until it is below half. Default: never (such
    /// clients wait).
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs,
          env = "ECHO_REACTOR_EVICT_AFTER")]
    pub evict_after: Option<Duration>,

    /// Kernel send buffer of each connection (SO_SNDBUF; the kernel
    /// doubles it for its bookkeeping), bounding what a client that does
    /// not read makes the kernel hold; "auto" leaves it to the kernel's
    /// autotuning (up to 4 MiB each here).
    #[arg(long, value_name = "BYTES|auto", default_value = DEFAULT_SNDBUF_TEXT, value_parser = parse_sndbuf,
          env = "ECHO_REACTOR_SNDBUF")]
    pub sndbuf: Sndbuf,

    /// On SIGINT/SIGTERM, give connections this long to receive their
    /// pending output before closing them. A second signal exits at once.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs,
          env = "ECHO_REACTOR_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Duration,

    /// On the first SIGINT/SIGTERM, answer 503 on /healthz at once but
    /// keep accepting and serving for SECS (so that a load balancer's
    /// health check takes the server out before it closes its
    /// listeners), then shut down as --shutdown-timeout says. 0: at once.
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs,
          env = "ECHO_REACTOR_DRAIN_DELAY")]
    pub drain_delay: Duration,

    /// Log the counters every SECS seconds (at info level; at least 0.01).
    /// SIGUSR1 logs them at any time.
    #[arg(long, value_name = "SECS", value_parser = parse_stats_interval,
          env = "ECHO_REACTOR_STATS_INTERVAL")]
    pub stats_interval: Option<Duration>,

    /// Narrate the event loop, one log line per tick (target
    /// echo_reactor::trace, info level): how long it slept and why that
    /// long, the events it woke for, and each connection turn's reads,
    /// writes, interest and phase changes. For learning (docs/tour.md);
    /// off, it costs nothing measurable.
    #[arg(long, env = "ECHO_REACTOR_TRACE")]
    pub trace: bool,

    /// Serve from N worker processes, each an ordinary single-threaded
    /// event loop with its own SO_REUSEPORT sockets (the kernel spreads new
    /// connections over them), or "auto": one per online CPU. With more
    /// than one, this process is their master: it binds the sockets, prints
    /// where it listens, restarts a worker that dies, sums their counters,
    /// drains them all on SIGINT/SIGTERM, and on SIGHUP replaces them one
    /// at a time without refusing a connection. --max-connections,
    /// --max-buffered and the descriptor limit apply to each worker;
    /// --max-connections-per-ip to the whole server.
    #[arg(long, value_name = "N|auto", default_value = "1", value_parser = parse_workers,
          env = "ECHO_REACTOR_WORKERS")]
    pub workers: usize,

    /// Read every connection until the kernel says "would block", as mio
    /// documents and examples/select_loop.rs does, instead of stopping at
    /// a read that returned less than asked for (which on Linux proves a
    /// TCP receive queue empty). Costs one more read per message; for
    /// study and comparison (docs/short-reads.md).
    #[arg(long, env = "ECHO_REACTOR_PORTABLE_READS")]
    pub portable_reads: bool,

    /// With --workers: kill and replace a worker whose event loop has not
    /// turned for SECS seconds (stopped, blocked or spinning; a loop
    /// proves it turns four times a second). 0 turns the watchdog off.
    /// Default: 3.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, env = "ECHO_REACTOR_WATCHDOG")]
    pub watchdog: Option<Duration>,

    /// Internal: run as a worker of a master (`--workers`), on the
    /// descriptors SPEC names.
    #[arg(long, hide = true, value_name = "SPEC")]
    pub worker: Option<WorkerSpec>,

    /// What TCP clients speak: raw (byte-for-byte echo), line (a reply per
    /// line, LF or CRLF) or frame (4-byte big-endian length, then the
    /// bytes; whole frames are echoed).
    #[arg(long, value_enum, default_value_t = ModeName::Raw, env = "ECHO_REACTOR_MODE")]
    pub mode: ModeName,

    /// Line mode: the reply to a line is the line (none), the line in
    /// upper case (upper), or "hello " and the line (hello).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = TransformName::None,
          env = "ECHO_REACTOR_LINE_TRANSFORM")]
    pub line_transform: TransformName,

    /// Line mode: a line sent to every client on connect. `{peer}` becomes
    /// the client's address (the PROXY header's, with --proxy-protocol),
    /// `{host}` this host's name, `{worker}` the worker slot (0 without
    /// --workers).
    #[arg(long, value_name = "TEXT", env = "ECHO_REACTOR_BANNER")]
    pub banner: Option<String>,

    /// Line mode: longest line accepted (terminator not counted, at most
    /// 64 MiB); a longer one is answered "ERR line too long" and the
    /// connection is closed.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE,
          value_parser = parse_max_line, env = "ECHO_REACTOR_MAX_LINE")]
    pub max_line: usize,

    /// Frame mode: largest frame body accepted (at most 64 MiB); a larger
    /// declared length closes the connection (nothing is allocated for it).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME,
          value_parser = parse_max_frame, env = "ECHO_REACTOR_MAX_FRAME")]
    pub max_frame: u32,

    /// Also serve UDP echo on ADDR (repeatable); prints
    /// `listening on udp://ADDR`.
    #[arg(
        long = "udp",
        value_name = "ADDR",
        env = "ECHO_REACTOR_UDP",
        value_delimiter = ','
    )]
    pub udp: Vec<ListenAddr>,

    /// UDP datagrams taken per receive call (recvmmsg) and answered per
    /// send call (sendmmsg), 1 to 64: at most one batch per socket per
    /// tick. A lone datagram is still answered at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_UDP_BATCH as u64,
          value_parser = clap::value_parser!(u64).range(1..=64),
          env = "ECHO_REACTOR_UDP_BATCH")]
    pub udp_batch: u64,

    /// Serve daytime (RFC 867) on ADDR over both TCP and UDP, same port
    /// (repeatable): the current time as one line, then close.
    #[arg(
        long,
        value_name = "ADDR",
        env = "ECHO_REACTOR_DAYTIME",
        value_delimiter = ','
    )]
    pub daytime: Vec<ListenAddr>,

    /// Serve Prometheus metrics over HTTP/1.1 on ADDR (repeatable):
    /// `GET /metrics`, `GET /healthz`; prints
    /// `listening on http://ADDR (metrics)`. Off by default. With
    /// `--workers`, the master serves every worker's counters.
    #[arg(
        long,
        value_name = "ADDR",
        env = "ECHO_REACTOR_METRICS",
        value_delimiter = ','
    )]
    pub metrics: Vec<ListenAddr>,

    /// Most metrics (HTTP) connections served at once, in slots of their
    /// own: they never take --max-connections' echo slots. More are
    /// answered "503 Service Unavailable" and closed.
    #[arg(long, value_name = "N", value_parser = parse_positive,
          default_value_t = DEFAULT_METRICS_MAX_CONNECTIONS,
          env = "ECHO_REACTOR_METRICS_MAX_CONNECTIONS")]
    pub metrics_max_connections: usize,

    /// Close a metrics connection after SECS seconds without a request
    /// (decimals allowed); a request head under way must complete within
    /// 2 to 4 s regardless.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs,
          default_value = DEFAULT_METRICS_IDLE_TIMEOUT_TEXT,
          env = "ECHO_REACTOR_METRICS_IDLE_TIMEOUT")]
    pub metrics_idle_timeout: Duration,

    /// Serve discard (RFC 863) on ADDR over both TCP and UDP, same port
    /// (repeatable): every byte read and dropped, nothing answered.
    #[arg(
        long,
        value_name = "ADDR",
        env = "ECHO_REACTOR_DISCARD",
        value_delimiter = ','
    )]
    pub discard: Vec<ListenAddr>,

    /// Serve chargen (RFC 864) on ADDR over both TCP and UDP, same port
    /// (repeatable): TCP sends the character pattern for as long as the
    /// client reads; a UDP datagram is answered with 0 to 512 bytes of it.
    #[arg(
        long,
        value_name = "ADDR",
        env = "ECHO_REACTOR_CHARGEN",
        value_delimiter = ','
    )]
    pub chargen: Vec<ListenAddr>,

    /// Fault: hold each echo MS milliseconds before sending it (on the
    /// loop's timers; bytes keep their order). Raw mode only.
    #[arg(long, value_name = "MS", value_parser = parse_millis, env = "ECHO_REACTOR_DELAY")]
    pub delay: Option<Duration>,

    /// Fault: make each --delay up to MS milliseconds shorter or longer,
    /// at random (never before the bytes ahead of it).
    #[arg(long, value_name = "MS", value_parser = parse_millis, default_value = "0",
          env = "ECHO_REACTOR_DELAY_JITTER")]
    pub delay_jitter: Duration,

    /// Fault: close an echo connection (FIN) once BYTES bytes have been
    /// echoed to it; later input is not echoed. Raw mode only.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..),
          env = "ECHO_REACTOR_CLOSE_AFTER")]
    pub close_after: Option<u64>,

    /// Fault: reset an echo connection (RST, by SO_LINGER 0) once BYTES
    /// bytes have been echoed to it. Raw mode only.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..),
          env = "ECHO_REACTOR_RESET_AFTER")]
    pub reset_after: Option<u64>,

    /// Expect a PROXY protocol header on every echo, daytime, discard and
    /// chargen connection: `v1`, `v2`, `any` (either) or `optional`
    /// (either, or none). The client it names is the one
    /// --max-connections-per-ip counts and the log shows; a malformed
    /// header, or none within 5 s, closes the connection (counted as
    /// proxy_refused).
    #[arg(
        long,
        value_name = "v1|v2|any|optional",
        env = "ECHO_REACTOR_PROXY_PROTOCOL"
    )]
    pub proxy_protocol: Option<ProxyMode>,

    /// Relay every echo client to IP:PORT instead of echoing it: a TCP
    /// proxy with backpressure both ways and half-closes passed on. A
    /// client whose upstream refuses or does not answer within
    /// --connect-timeout is told `ERR upstream: REASON` (counted as
    /// upstream_failed). Raw mode only.
    #[arg(long, value_name = "IP:PORT", env = "ECHO_REACTOR_UPSTREAM")]
    pub upstream: Option<std::net::SocketAddr>,

    /// How long a connect to --upstream may take, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs,
          env = "ECHO_REACTOR_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,
}

/// [`DEFAULT_METRICS_IDLE_TIMEOUT`] as clap's default text.
const DEFAULT_METRICS_IDLE_TIMEOUT_TEXT: &str = "65";
const _: () = assert!(DEFAULT_METRICS_IDLE_TIMEOUT.as_secs() == 65);

/// [`DEFAULT_SNDBUF`] as clap's default text.
const DEFAULT_SNDBUF_TEXT: &str = "65536";
const _: () = assert!(DEFAULT_SNDBUF == 65_536);

/// `--sndbuf`: a size, or the kernel's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sndbuf(pub Option<usize>);

/// `--backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendName {
    /// epoll(7), through mio.
    Epoll,
    /// poll(2).
    Poll,
    /// select(2), descriptors below FD_SETSIZE only.
    Select,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ModeName {
    /// Byte-for-byte echo (RFC 862).
    Raw,
    /// A reply per line.
    Line,
    /// Length-prefixed frames.
    Frame,
}

/// `--line-transform` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TransformName {
    /// Echo the line.
    None,
    /// Upper-case it.
    Upper,
    /// Prefix "hello ".
    Hello,
}

impl Args {
    /// Rejects flags that the chosen `--mode` would silently ignore.
    pub(crate) fn check(&self) -> Result<(), String> {
        let line_only = [
            (
                "--line-transform",
                self.line_transform != TransformName::None,
            ),
            ("--banner", self.banner.is_some()),
            ("--max-line", self.max_line != DEFAULT_MAX_LINE),
        ];
        if self.mode != ModeName::Line
            && let Some((flag, _)) = line_only.iter().find(|(_, given)| *given)
        {
            return Err(format!("{flag} needs --mode line"));
        }
        if self.mode != ModeName::Frame && self.max_frame != DEFAULT_MAX_FRAME {
            return Err("--max-frame needs --mode frame".into());
        }
        // A message must fit in the budget several times over, or a few
        // clients with a partial message each would fill it.
        let share = self.max_buffered / 4;
        let message = match self.mode {
            ModeName::Line => Some(("--max-line", self.max_line)),
            ModeName::Frame => Some(("--max-frame", self.max_frame as usize)),
            ModeName::Raw => None,
        };
        if let Some((flag, limit)) = message
            && limit > share
        {
            return Err(format!(
                "{flag} {limit} is more than a quarter of --max-buffered ({share} bytes)"
            ));
        }
        Ok(())
    }

    /// The server configuration these arguments ask for.
    pub(crate) fn into_config(self) -> Config {
        let mode = match self.mode {
            ModeName::Raw => Mode::Raw,
            ModeName::Line => {
                let transform = match self.line_transform {
                    TransformName::None => Transform::None,
                    TransformName::Upper => Transform::Upper,
                    TransformName::Hello => Transform::Hello,
                };
                Mode::Line(Line::new(transform, self.banner.as_deref(), self.max_line))
            }
            ModeName::Frame => Mode::Frame(Frame {
                max_frame: self.max_frame,
            }),
        };
        Config {
            listen: self.listen,
            backend: match self.backend {
                BackendName::Epoll => Backend::Epoll,
                BackendName::Poll => Backend::Poll,
                BackendName::Select => Backend::Select,
            },
            mode,
            udp: self.udp,
            udp_batch: self.udp_batch as usize,
            daytime: self.daytime,
            metrics: self.metrics,
            metrics_max_connections: self.metrics_max_connections,
            metrics_idle_timeout: self.metrics_idle_timeout,
            backlog: self.backlog,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            idle_timeout: self.idle_timeout,
            keepalive: self.keepalive,
            max_buffered: self.max_buffered,
            evict_after: self.evict_after,
            sndbuf: self.sndbuf.0,
            shutdown_timeout: self.shutdown_timeout,
            stats_interval: self.stats_interval,
            handle_signals: true,
            reuse_port: self.workers > 1 || self.worker.is_some(),
            watchdog: match self.watchdog {
                None => Some(DEFAULT_WATCHDOG),
                Some(secs) if secs.is_zero() => None,
                Some(secs) => Some(secs),
            },
            trace: self.trace,
            read_until_would_block: self.portable_reads,
            service_manager: true,
            drain_delay: self.drain_delay,
            discard: self.discard,
            chargen: self.chargen,
            delay: self.delay,
            delay_jitter: self.delay_jitter,
            close_after: self.close_after,
            reset_after: self.reset_after,
            proxy_protocol: self.proxy_protocol,
            upstream: self.upstream,
            connect_timeout: self.connect_timeout,
            worker_slot: None,
        }
    }
}

/// Seconds as a decimal number: `0`, `2.5`; at most about 31 years.
fn parse_secs(s: &str) -> Result<Duration, String> {
    const MAX_SECS: f64 = 1e9;
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=MAX_SECS).contains(&secs) {
        return Err(format!("{s:?} must be between 0 and {MAX_SECS} seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Milliseconds, a whole number up to an hour.
fn parse_millis(s: &str) -> Result<Duration, String> {
    const MAX_MS: u64 = 3_600_000;
    let ms: u64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of milliseconds"))?;
    if ms > MAX_MS {
        return Err(format!("{s:?} must be at most {MAX_MS} ms (an hour)"));
    }
    Ok(Duration::from_millis(ms))
}

fn parse_positive_secs(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d.is_zero() {
        return Err("must be more than 0 seconds".into());
    }
    Ok(d)
}

/// The shortest `--stats-interval`: a log line every 10 ms is already
/// more than anyone reads; less only floods the log.
const MIN_STATS_INTERVAL: Duration = Duration::from_millis(10);

fn parse_stats_interval(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d < MIN_STATS_INTERVAL {
        return Err(format!(
            "must be at least {} seconds",
            MIN_STATS_INTERVAL.as_secs_f64()
        ));
    }
    Ok(d)
}

/// TCP keepalive takes whole seconds, 1 to 32,767 (`TCP_KEEPIDLE`'s range).
fn parse_keepalive(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(secs @ 1..=32_767) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "{s:?} is not a whole number of seconds from 1 to 32767"
        )),
    }
}

/// The largest line or frame one connection may make the server hold: a
/// bound on what any single client can pin, whatever the flags say.
pub(crate) const MAX_MESSAGE_LIMIT: usize = 64 * 1024 * 1024;

fn parse_max_line(s: &str) -> Result<usize, String> {
    let n = parse_positive(s)?;
    if n > MAX_MESSAGE_LIMIT {
        return Err(format!("must be at most {MAX_MESSAGE_LIMIT} bytes"));
    }
    Ok(n)
}

fn parse_max_frame(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n as usize <= MAX_MESSAGE_LIMIT => Ok(n),
        Ok(_) => Err(format!("must be at most {MAX_MESSAGE_LIMIT} bytes")),
        Err(_) => Err(format!("{s:?} is not a whole number of bytes")),
    }
}

fn parse_max_buffered(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= MIN_MAX_BUFFERED => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of bytes of at least {MIN_MAX_BUFFERED}"
        )),
    }
}

/// Linux caps `SO_SNDBUF` at `net.core.wmem_max`; below 4 KiB a socket
/// could not take one full segment.
fn parse_sndbuf(s: &str) -> Result<Sndbuf, String> {
    if s == "auto" {
        return Ok(Sndbuf(None));
    }
    match s.parse::<usize>() {
        Ok(n @ 4096..=0x3fff_ffff) => Ok(Sndbuf(Some(n))),
        _ => Err(format!(
            "{s:?} is not \"auto\" or a number of bytes from 4096"
        )),
    }
}

/// `--workers`: a positive number, or `auto` (one per online CPU).
fn parse_workers(s: &str) -> Result<usize, String> {
    if s == "auto" {
        return Ok(std::thread::available_parallelism().map_or(1, usize::from));
    }
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (or auto)".into()),
        Ok(n) if n > MAX_WORKERS => Err(format!("at most {MAX_WORKERS}")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of workers (or auto)")),
    }
}

/// More workers than this is a typo, not a plan.
const MAX_WORKERS: usize = 1024;

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a positive whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("echo-reactor").chain(args.iter().copied()))
    }

    #[test]
    fn no_flags_gives_the_documented_defaults() {
        let cfg = parse(&[]).unwrap().into_config();
        assert_eq!(cfg.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
        assert_eq!(cfg.backlog, 1024);
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(cfg.idle_timeout, None);
        assert_eq!(cfg.backend, Backend::Epoll);
        assert!(!cfg.read_until_would_block);
    }

    /// Every flag can come from `ECHO_REACTOR_` and its long name in upper
    /// snake case; the internal `--worker` from nothing but the master.
    #[test]
    fn every_flag_has_its_variable_and_the_internal_one_none() {
        let command = Args::command();
        let mut flags = 0;
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            if matches!(long, "help" | "version") {
                continue;
            }
            let env = arg.get_env().and_then(|e| e.to_str());
            if arg.is_hide_set() {
                assert_eq!(env, None, "--{long} is internal");
            } else {
                let want = format!("ECHO_REACTOR_{}", long.to_uppercase().replace('-', "_"));
                assert_eq!(env, Some(want.as_str()), "--{long}");
                flags += 1;
            }
        }
        assert!(flags >= 25, "{flags} flags");
    }

    #[test]
    fn drain_delay_takes_seconds_and_defaults_to_none() {
        assert_eq!(
            parse(&[]).unwrap().into_config().drain_delay,
            Duration::ZERO
        );
        let cfg = parse(&["--drain-delay", "2.5"]).unwrap().into_config();
        assert_eq!(cfg.drain_delay, Duration::from_millis(2500));
        assert!(cfg.service_manager);
        assert!(parse(&["--drain-delay", "-1"]).is_err());
    }

    #[test]
    fn portable_reads_reads_until_would_block() {
        let cfg = parse(&["--portable-reads"]).unwrap().into_config();
        assert!(cfg.read_until_would_block);
    }

    #[test]
    fn backend_names_the_multiplexer() {
        for (name, backend) in [
            ("epoll", Backend::Epoll),
            ("poll", Backend::Poll),
            ("select", Backend::Select),
        ] {
            let cfg = parse(&["--backend", name]).unwrap().into_config();
            assert_eq!(cfg.backend, backend);
        }
        assert!(parse(&["--backend", "kqueue"]).is_err());
    }

    #[test]
    fn listen_repeats_and_seconds_take_decimals() {
        let cfg = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--idle-timeout",
            "0.5",
        ])
        .unwrap()
        .into_config();
        assert_eq!(cfg.listen.len(), 2);
        assert_eq!(cfg.idle_timeout, Some(Duration::from_millis(500)));
    }

    #[test]
    fn udp_batch_reaches_the_config() {
        assert_eq!(
            parse(&[]).unwrap().into_config().udp_batch,
            DEFAULT_UDP_BATCH
        );
        let cfg = parse(&["--udp-batch", "8"]).unwrap().into_config();
        assert_eq!(cfg.udp_batch, 8);
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            &["--listen", "nope"][..],
            &["--backlog", "0"],
            &["--max-connections", "0"],
            &["--idle-timeout", "-1"],
            &["--idle-timeout", "0"],
            &["--shutdown-timeout", "NaN"],
            &["--stats-interval", "soon"],
            &["--frobnicate"],
            &["--mode", "http"],
            &["--mode", "line", "--line-transform", "lower"],
            &["--mode", "line", "--max-line", "0"],
            &["--mode", "frame", "--max-frame", "-1"],
            &["--udp", "nope"],
            &["--udp-batch", "0"],
            &["--udp-batch", "65"],
            &["--udp-batch", "-1"],
            &["--stats-interval", "1e-9"],
            &["--stats-interval", "0.001"],
            &["--mode", "line", "--max-line", "18446744073709551615"],
            &["--mode", "line", "--max-line", "67108865"],
            &["--mode", "frame", "--max-frame", "67108865"],
            &["--keepalive", "0"],
            &["--keepalive", "1.5"],
            &["--keepalive", "40000"],
            &["--max-connections-per-ip", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn mode_flags_build_the_protocol() {
        let args = parse(&[
            "--mode",
            "line",
            "--line-transform",
            "hello",
            "--banner",
            "hi",
            "--max-line",
            "10",
        ])
        .unwrap();
        args.check().unwrap();
        let Mode::Line(line) = args.into_config().mode else {
            panic!("not line mode");
        };
        assert_eq!(line, Line::new(Transform::Hello, Some("hi"), 10));
        let args = parse(&["--mode", "frame", "--max-frame", "0"]).unwrap();
        args.check().unwrap();
        assert_eq!(args.into_config().mode, Mode::Frame(Frame { max_frame: 0 }));
        assert_eq!(parse(&[]).unwrap().into_config().mode, Mode::Raw);
    }

    #[test]
    fn flags_of_another_mode_are_refused_not_ignored() {
        for bad in [
            &["--banner", "hi"][..],
            &["--line-transform", "upper"],
            &["--mode", "frame", "--max-line", "5"],
            &["--mode", "line", "--max-frame", "5"],
        ] {
            assert!(parse(bad).unwrap().check().is_err(), "{bad:?} was accepted");
        }
    }
}
