//! What the server is told to do, independent of how it was told (the CLI
//! in `src/bin/echo-reactor/cli.rs` builds one of these; embedders, tests
//! and benches may build their own).

use std::time::Duration;

use crate::addr::ListenAddr;
use crate::poller::Backend;
use crate::protocol::Mode;

/// The default listen address: loopback only, so running the binary with no
/// flags exposes nothing beyond this machine.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7007";
/// The default `listen(2)` backlog.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// The default `--udp-batch`: UDP datagrams per receive and send call.
/// Measured: docs/benchmarks.md ("UDP: batched receive and send").
pub const DEFAULT_UDP_BATCH: usize = 32;
/// The default `--sndbuf`: what the kernel may hold per connection for a
/// client that does not read (see docs/limits.md for how it was chosen).
pub const DEFAULT_SNDBUF: usize = 64 * 1024;
/// The default `--watchdog`: a master kills a worker whose loop has been
/// silent this long.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(3);
/// The default time granted to connections to flush on shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `--metrics-max-connections`: a scraper or two, a health
/// checker and someone with curl, with room to spare. Metrics connections
/// have slots of their own, so that scrapes can never lock echo clients
/// out, nor echo clients the scrapes.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: usize = 32;
/// The default `--metrics-idle-timeout`: a metrics connection silent for
/// this long between requests is closed (a scraper keeping its connection
/// alive reconnects for its next scrape at worst). Prometheus scrapes
/// every 60 s by default, so a default scraper keeps its connection.
pub const DEFAULT_METRICS_IDLE_TIMEOUT: Duration = Duration::from_secs(65);

/// The default [`Config::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on; each may resolve to several sockets.
    pub listen: Vec<ListenAddr>,
    /// The multiplexer the loop runs on (used by [`crate::Server`]).
    pub backend: Backend,
    /// What TCP echo connections speak: raw bytes, lines or frames.
    pub mode: Mode,
    /// UDP echo services (RFC 862 over UDP).
    pub udp: Vec<ListenAddr>,
    /// Datagrams a UDP socket takes per receive call, and so per tick (1 to
    /// 64; 1 receives and answers one datagram per call).
    pub udp_batch: usize,
    /// Daytime services (RFC 867), each on TCP and UDP at the same port.
    pub daytime: Vec<ListenAddr>,
    /// Prometheus metrics over HTTP/1.1 (`GET /metrics`, `GET /healthz`),
    /// served by the loop itself on each of these (`metrics/`).
    pub metrics: Vec<ListenAddr>,
    /// Most metrics (HTTP) connections served at once, apart from
    /// `max_connections`; more are answered `503` and closed.
    pub metrics_max_connections: usize,
    /// Close a metrics connection silent for this long between requests
    /// (a request head under way has its own, shorter bound).
    pub metrics_idle_timeout: Duration,
    /// `listen(2)` backlog for every listener.
    pub backlog: u32,
    /// Most echo (and daytime) connections served at once, metrics
    /// connections not counted; `None` means "what RLIMIT_NOFILE
    /// allows, minus 64 for the server's own descriptors".
    pub max_connections: Option<usize>,
    /// Most connections one host (an IPv4 address, an IPv6 /64) may hold
    /// at once; `None`: no limit (`per_ip.rs`).
    pub max_connections_per_ip: Option<usize>,
    /// Close connections with no traffic for this long; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive idle time, so that vanished peers are found; `None`:
    /// off (`listener.rs`).
    pub keepalive: Option<Duration>,
    /// Most bytes held for all clients together: pending output and
    /// partial messages (`budget.rs`).
    pub max_buffered: usize,
    /// Close a connection that holds buffered bytes and made no progress
    /// for this long while the budget is full; `None`: never.
    pub evict_after: Option<Duration>,
    /// `SO_SNDBUF` of every connection, bounding what the kernel holds for
    /// a client that does not read; `None`: the kernel's autotuning.
    pub sndbuf: Option<usize>,
    /// How long a graceful shutdown waits for connections to flush.
    pub shutdown_timeout: Duration,
    /// Log the counters this often; `None`: only at exit.
    pub stats_interval: Option<Duration>,
    /// Whether SIGINT/SIGTERM start a shutdown (the binary sets this;
    /// embedders may prefer [`crate::ShutdownHandle`] alone).
    pub handle_signals: bool,
    /// Bind with `SO_REUSEPORT`, so that several processes (`--workers`)
    /// can each hold a socket on the same address ([`crate::Supervisor`]
    /// sets it for its slots).
    pub reuse_port: bool,
    /// A master ([`crate::Supervisor`]) kills and replaces a worker whose
    /// loop has not turned for this long; `None`: never.
    pub watchdog: Option<Duration>,
    /// Log one line per loop tick (target `echo_reactor::trace`): why the
    /// loop woke, how long it slept, each event and connection turn. For
    /// learning; it costs a `write` per tick.
    pub trace: bool,
    /// Read every connection until `WouldBlock`, as mio documents, instead
    /// of stopping at a short read (Linux's guarantee for TCP, see
    /// docs/short-reads.md): one more `read` per message. For study and
    /// comparison; off by default.
    pub read_until_would_block: bool,
    /// Run by a service manager (systemd): serve on the sockets it passed
    /// (`LISTEN_FDS`, socket activation) in place of those services'
    /// address flags, and tell it when serving, reloading and stopping
    /// (`NOTIFY_SOCKET`). Without those variables this changes nothing.
    /// The binary sets it; off by default.
    pub service_manager: bool,
    /// On the first stop request, keep accepting and serving this long
    /// with `/healthz` answering 503 (so that a load balancer stops
    /// sending new clients), then shut down gracefully. Zero: shut down at
    /// once.
    pub drain_delay: Duration,
    /// Discard services (RFC 863), each on TCP and UDP at the same port.
    pub discard: Vec<ListenAddr>,
    /// Character generator services (RFC 864), each on TCP and UDP at the
    /// same port.
    pub chargen: Vec<ListenAddr>,
    /// Hold each echo this long before sending it (`faults.rs`); `None`:
    /// no delay.
    pub delay: Option<Duration>,
    /// Make each delay up to this much shorter or longer, at random.
    pub delay_jitter: Duration,
    /// Close an echo connection (FIN) once it has been echoed this many
    /// bytes.
    pub close_after: Option<u64>,
    /// Reset an echo connection (RST) once it has been echoed this many
    /// bytes.
    pub reset_after: Option<u64>,
    /// Expect a PROXY protocol header (v1, v2, either, or either or none)
    /// on every connection of the small services; the client it names is
    /// the one limits and logs use. `None`: off.
    pub proxy_protocol: Option<crate::ProxyMode>,
    /// Relay every TCP echo client to this address instead of echoing it:
    /// the loop connects to it (non-blocking) once per client and passes
    /// bytes both ways, with backpressure on both sides and half-closes
    /// passed on (`examples/proxy.rs`). Raw mode only. `None`: echo.
    pub upstream: Option<std::net::SocketAddr>,
    /// How long a connect to [`Config::upstream`] may take before the
    /// client is told it failed.
    pub connect_timeout: Duration,
    /// Which worker slot this server is (`--workers`; [`crate::run_worker`]
    /// sets it): a `--banner` template's `{worker}`. `None`: a single
    /// process, shown as `0`.
    pub worker_slot: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN.parse().expect("default address parses")],
            backend: Backend::Epoll,
            mode: Mode::Raw,
            udp: Vec::new(),
            udp_batch: DEFAULT_UDP_BATCH,
            daytime: Vec::new(),
            metrics: Vec::new(),
            metrics_max_connections: DEFAULT_METRICS_MAX_CONNECTIONS,
            metrics_idle_timeout: DEFAULT_METRICS_IDLE_TIMEOUT,
            backlog: DEFAULT_BACKLOG,
            max_connections: None,
            max_connections_per_ip: None,
            idle_timeout: None,
            keepalive: None,
            max_buffered: crate::budget::DEFAULT_MAX_BUFFERED,
            evict_after: None,
            sndbuf: Some(DEFAULT_SNDBUF),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            stats_interval: None,
            handle_signals: false,
            reuse_port: false,
            watchdog: Some(DEFAULT_WATCHDOG),
            trace: false,
            read_until_would_block: false,
            service_manager: false,
            drain_delay: Duration::ZERO,
            discard: Vec::new(),
            chargen: Vec::new(),
            delay: None,
            delay_jitter: Duration::ZERO,
            close_after: None,
            reset_after: None,
            proxy_protocol: None,
            upstream: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            worker_slot: None,
        }
    }
}
