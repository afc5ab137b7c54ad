//! What a run is asked to do, checked before any socket is opened.
//!
//! This file teaches one habit: validate the whole request up front and turn
//! every problem into one readable [`ConfigError`] line, so the event loops
//! never meet an impossible setting (a zero size, more threads than there
//! is work for, a UDP datagram larger than UDP can carry).

use crate::payload::Payload;
use crate::protocol::Protocol;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The largest UDP payload over IPv4: 65,535 minus the 8-byte UDP header
/// and the 20-byte IP header.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// A UDP datagram starts with its 8-byte sequence number (so a reply can be
/// matched to its request even when others were lost); the size must hold it.
pub const UDP_HEADER: usize = 8;

/// Message sizes above this are refused: a stress run with 16 MiB messages
/// is a bulk transfer test, and the latency of one such "message" says
/// little. It also bounds how far one connection's stream can run ahead.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// When the run stops, and therefore what "req/s" is divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    /// Measure for this long after the warmup.
    Duration(Duration),
    /// Measure until this many messages (all threads together) have been
    /// echoed after the warmup.
    Requests(u64),
}

/// Which transport the run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP: one stream per connection, echo checked as a byte stream.
    Tcp,
    /// UDP: one connected datagram socket per "connection"; loss is counted,
    /// not fatal.
    Udp,
}

/// Everything one run needs. Built by the binary from its flags, or by a
/// test directly.
#[derive(Debug, Clone)]
pub struct Config {
    /// The echo service.
    pub addr: SocketAddr,
    /// Connections to open, all threads together.
    pub connections: usize,
    /// New connections per second, all threads together; `None` = as fast as
    /// the connect window allows.
    pub connect_rate: Option<u32>,
    /// At most this many connections may be "opening" (started, but not yet
    /// proven by their first echo) at once, all threads together. Keeps the
    /// server's accept queue from overflowing: an overflowing queue drops
    /// SYNs, and each dropped SYN costs a 1 s retransmission.
    pub max_connecting: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1,
    /// 127.0.0.2, ...). `Some(n)`: exactly `n`, none added later; a run
    /// whose connections cannot fit in `n` addresses' port ranges is
    /// refused. `None`: as many as the ephemeral port range needs, with
    /// more added if the planned ones run out of ports.
    pub source_ips: Option<u8>,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection (1 = ping-pong).
    pub depth: usize,
    /// When the measured part ends.
    pub stop: StopAt,
    /// Traffic before the measured part, not counted.
    pub warmup: Duration,
    /// Open-loop mode: messages per second, all connections together, on a
    /// fixed schedule. `None` = closed loop (send the next one when an echo
    /// returns).
    pub rate: Option<u64>,
    /// Threads, each with its own `Poll` and its share of the connections.
    pub threads: usize,
    /// TCP or UDP.
    pub transport: Transport,
    /// `--udp-offload`: UDP sockets send segmented messages and accept
    /// coalesced datagrams.
    pub udp_offload: bool,
    /// The server's mode this run speaks: raw echo, lines or frames (TCP).
    pub protocol: Protocol,
    /// What the messages say: the generated pattern, one fixed message, or
    /// a template (then `size` is the length of one rendered message).
    pub payload: Payload,
    /// Sent once on each connection before anything else, its answer
    /// checked (`--first-message`).
    pub first: Option<crate::payload::FirstMessage>,
    /// `--interval`: report every this long of the window.
    pub interval: Option<Duration>,
    /// Thresholds the run must meet, or fail (exit 1).
    pub gates: Vec<crate::gate::Gate>,
    /// Latency percentiles to report, each above 0 and at most 100.
    pub percentiles: Vec<f64>,
    /// After the run, keep every connection open and idle this long.
    pub hold: Duration,
    /// Before the warmup and the window, once every connection is open and
    /// proven, keep them all open and silent this long (with `--procs`,
    /// from the parent's word that every process is ready). With `-n N`
    /// and depth 1 the window then echoes one message on each of N
    /// connections: whether connections that sat idle are still served.
    pub idle: Duration,
    /// Errors tolerated before the run counts as failed (mismatches never
    /// are).
    pub max_errors: u64,
    /// How long a connect may take to be proven by its first echo, and how
    /// long an echo may be overdue (no echo on a connection that is owed
    /// one), before the connection counts as timed out and is closed. The
    /// same holds after the window, while the echoes still due are
    /// awaited; the whole drain lasts at most this long too.
    pub timeout: Duration,
    /// The loopback source addresses this run must use, when a parent
    /// process chose them (`--procs`: every client process gets its own
    /// range). `None`: the run plans its own from 127.0.0.1, as
    /// [`Config::source_ips`] says.
    pub source_range: Option<SourceRange>,
}

/// Loopback source addresses given to one client process of `--procs`, as
/// indexes of [`crate::limits::loopback_v4`] (0 is 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRange {
    /// The first address.
    pub first: usize,
    /// How many addresses, from `first`, the connections are spread over.
    pub count: usize,
    /// Where addresses added past them begin, if the planned ones run out
    /// of local ports (each process has its own stretch, so that no two
    /// processes ever share one).
    pub extra_first: usize,
}

/// The default of [`Config::timeout`]. A SYN dropped by a full accept queue
/// is retried after 1 s, 3 s and 7 s: ten seconds allows three tries, and
/// no healthy loopback echo is ever that late.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// The defaults of the command line, aimed at `addr`.
    pub fn new(addr: SocketAddr) -> Config {
        Config {
            addr,
            connections: 50,
            connect_rate: None,
            max_connecting: DEFAULT_MAX_CONNECTING,
            source_ips: None,
            size: 64,
            depth: 1,
            udp_offload: false,
            stop: StopAt::Duration(Duration::from_secs(10)),
            warmup: Duration::ZERO,
            rate: None,
            threads: 1,
            transport: Transport::Tcp,
            protocol: Protocol::Raw,
            payload: Payload::Pattern,
            first: None,
            gates: Vec::new(),
            interval: None,
            percentiles: crate::histogram::DEFAULT_PERCENTILES.to_vec(),
            hold: Duration::ZERO,
            idle: Duration::ZERO,
            max_errors: 0,
            timeout: DEFAULT_TIMEOUT,
            source_range: None,
        }
    }

    /// Checks every setting; the error names the flag to fix (the first
    /// one, if several are wrong).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_load()?;
        self.check_threads()?;
        self.check_rates_and_times()?;
        if self.transport == Transport::Udp {
            self.check_udp()?;
        }
        self.check_sources()
    }

    /// Connections, message size and depth.
    fn check_load(&self) -> Result<(), ConfigError> {
        if self.connections == 0 {
            return bad("--connections", "must be at least 1");
        }
        if self.size == 0 {
            return bad("--size", "must be at least 1 byte");
        }
        if self.size > MAX_MESSAGE_SIZE {
            return bad(
                "--size",
                format!("must be at most {MAX_MESSAGE_SIZE} bytes"),
            );
        }
        if self.depth == 0 {
            return bad("--depth", "must be at least 1");
        }
        if self.size < self.protocol.min_size() {
            return bad(
                "--size",
                format!(
                    "a {} message is at least {} bytes",
                    self.protocol,
                    self.protocol.min_size()
                ),
            );
        }
        Ok(())
    }

    /// Threads, and the window of opening connections.
    fn check_threads(&self) -> Result<(), ConfigError> {
        if self.threads == 0 {
            return bad("--threads", "must be at least 1");
        }
        if self.threads > self.connections {
            return bad(
                "--threads",
                format!(
                    "{} threads for {} connections would leave threads idle",
                    self.threads, self.connections
                ),
            );
        }
        if self.max_connecting == 0 {
            return bad("--max-connecting", "must be at least 1");
        }
        Ok(())
    }

    /// Rates, the timeout, and when the run stops.
    fn check_rates_and_times(&self) -> Result<(), ConfigError> {
        if self.connect_rate == Some(0) {
            return bad("--connect-rate", "must be at least 1 per second");
        }
        if self.rate == Some(0) {
            return bad("--rate", "must be at least 1 message per second");
        }
        if self.percentiles.is_empty() {
            return bad("--percentiles", "name at least one");
        }
        if let Some(p) = self
            .percentiles
            .iter()
            .find(|p| !(**p > 0.0 && **p <= 100.0))
        {
            return bad(
                "--percentiles",
                format!("{p} is not a percentile (above 0, at most 100)"),
            );
        }
        if self.interval.is_some_and(|i| i < Duration::from_millis(10)) {
            return bad("--interval", "must be at least 10 ms");
        }
        if self.timeout.is_zero() {
            return bad("--timeout", "must be more than 0 seconds");
        }
        match self.stop {
            StopAt::Duration(d) if d.is_zero() => bad("--duration", "must be more than 0 seconds"),
            StopAt::Requests(0) => bad("--requests", "must be at least 1"),
            _ => Ok(()),
        }
    }

    /// What UDP cannot do: datagrams too small for the sequence number or
    /// too large for UDP, and what only a byte stream can carry.
    fn check_udp(&self) -> Result<(), ConfigError> {
        if self.size < UDP_HEADER {
            return bad(
                "--size",
                format!(
                    "UDP messages carry an {UDP_HEADER}-byte sequence number; use at least {UDP_HEADER}"
                ),
            );
        }
        if self.size > MAX_UDP_PAYLOAD {
            return bad(
                "--size",
                format!("a UDP datagram holds at most {MAX_UDP_PAYLOAD} bytes"),
            );
        }
        if self.protocol != Protocol::Raw {
            return bad("--mode", "line and frame modes are TCP only");
        }
        if self.payload != Payload::Pattern || self.first.is_some() {
            return bad(
                "--message",
                "UDP datagrams carry the generated pattern only",
            );
        }
        Ok(())
    }

    /// Extra source addresses exist only on IPv4 loopback.
    fn check_sources(&self) -> Result<(), ConfigError> {
        if let Some(r) = self.source_range {
            if r.count == 0 {
                return bad("--source-ips", "a process needs at least 1 source address");
            }
            if !(self.addr.is_ipv4() && self.addr.ip().is_loopback()) {
                return bad(
                    "--source-ips",
                    "source address ranges are loopback ones; the target must be IPv4 loopback",
                );
            }
        }
        let Some(n) = self.source_ips else {
            return Ok(());
        };
        if n == 0 {
            return bad("--source-ips", "must be at least 1");
        }
        if n > 1 && !self.addr.ip().is_loopback() {
            return bad(
                "--source-ips",
                "extra source addresses are loopback ones; the target must be loopback too",
            );
        }
        if n > 1 && !self.addr.is_ipv4() {
            return bad("--source-ips", "only IPv4 loopback has 127.0.0.2 and up");
        }
        Ok(())
    }
}

/// The error for `flag`, which cannot work because of `why`.
fn bad(flag: &'static str, why: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError {
        flag,
        why: why.into(),
    })
}

/// The default window of opening connections. Linux clamps every listen
/// backlog to `net.core.somaxconn` (4096 by default); 512 stays well under
/// it and under the 1024 many servers ask for, and it is still enough to
/// open 19,000 loopback connections in a few seconds.
pub const DEFAULT_MAX_CONNECTING: usize = 512;

/// A setting that cannot work, with the flag that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The command-line flag to fix.
    pub flag: &'static str,
    /// Why the value cannot work.
    pub why: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.why)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::new("127.0.0.1:7007".parse().unwrap())
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(cfg().validate(), Ok(()));
    }

    #[test]
    fn zero_values_name_their_flag() {
        let mut c = cfg();
        c.size = 0;
        assert_eq!(c.validate().unwrap_err().flag, "--size");
        let mut c = cfg();
        c.depth = 0;
        assert_eq!(c.validate().unwrap_err().flag, "--depth");
        let mut c = cfg();
        c.stop = StopAt::Requests(0);
        assert_eq!(c.validate().unwrap_err().flag, "--requests");
    }

    #[test]
    fn extra_source_addresses_need_an_ipv4_loopback_target() {
        let mut c = cfg();
        c.source_ips = Some(0);
        assert_eq!(c.validate().unwrap_err().flag, "--source-ips");
        c.source_ips = Some(2);
        assert_eq!(c.validate(), Ok(()));
        c.addr = "[::1]:7007".parse().unwrap();
        assert_eq!(c.validate().unwrap_err().flag, "--source-ips");
        c.addr = "10.0.0.1:7007".parse().unwrap();
        assert_eq!(c.validate().unwrap_err().flag, "--source-ips");
        c.source_ips = Some(1);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn more_threads_than_connections_are_refused() {
        let mut c = cfg();
        c.connections = 2;
        c.threads = 3;
        assert_eq!(c.validate().unwrap_err().flag, "--threads");
    }

    #[test]
    fn udp_size_must_hold_the_sequence_number() {
        let mut c = cfg();
        c.transport = Transport::Udp;
        c.size = 4;
        assert_eq!(c.validate().unwrap_err().flag, "--size");
        c.size = MAX_UDP_PAYLOAD + 1;
        assert_eq!(c.validate().unwrap_err().flag, "--size");
    }
}
