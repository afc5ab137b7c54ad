//! Opening listening sockets: socket -> setsockopt -> bind -> listen.
//!
//! This is the socket lifecycle of seed 1, with the options mio's own
//! `TcpListener::bind` does not let us choose:
//!
//! - `SO_REUSEADDR`, so a restarted server can bind its port at once even
//!   while connections of the previous run sit in TIME_WAIT.
//! - `IPV6_V6ONLY` on IPv6 sockets, so `[::]:7007` and `0.0.0.0:7007` can be
//!   bound side by side, as a host name that resolves to both requires.
//! - the `listen` backlog (`--backlog`): how many completed handshakes the
//!   kernel queues for us while we are busy (capped by `net.core.somaxconn`).
//! - non-blocking mode, which mio requires of every registered source.
//!
//! Two more are set on the listener only because accepted sockets inherit
//! them from it (Linux copies the listener's socket state into each new
//! connection), so they cost no syscall per connection:
//!
//! - `SO_OOBINLINE`: urgent data stays in the byte stream and is echoed in
//!   order like any other byte (see rule 1 in `connection/mod.rs` for why the
//!   readiness rules must know about it anyway).
//! - `--sndbuf BYTES`: `SO_SNDBUF`, so that a client that does not read
//!   makes the kernel hold at most about twice that for it (the kernel
//!   doubles the value for its bookkeeping) instead of up to
//!   `tcp_wmem`'s 4 MiB; bytes it does not take stay in the budget-bounded
//!   output buffer or, at the limit, in the client.
//! - with `--keepalive SECS`: `SO_KEEPALIVE` with `TCP_KEEPIDLE` = SECS,
//!   `TCP_KEEPINTVL` = SECS / 3 (1 to 75 s) and `TCP_KEEPCNT` = 3, so a peer
//!   that vanished without a FIN or RST (power loss, a cable, a NAT that
//!   forgot the flow) is found within about twice SECS and its slot freed
//!   (the next read fails with `ETIMEDOUT`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

use crate::addr::ListenAddr;

/// Why a listener could not be opened.
#[derive(Debug)]
pub enum ListenError {
    /// The host name did not resolve.
    Resolve {
        /// What the user asked for.
        addr: ListenAddr,
        /// The resolver's answer.
        source: io::Error,
    },
    /// A resolved address could not be bound (in use, not local, ...).
    Bind {
        /// The address we tried.
        addr: SocketAddr,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The poller or another part of the loop could not be set up.
    Setup(io::Error),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::Resolve { addr, source } => {
                write!(f, "cannot resolve {addr}: {source}")
            }
            ListenError::Bind { addr, source } => {
                write!(f, "cannot listen on {addr}: {source}")
            }
            ListenError::Setup(source) => write!(f, "cannot set up the event loop: {source}"),
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListenError::Resolve { source, .. }
            | ListenError::Bind { source, .. }
            | ListenError::Setup(source) => Some(source),
        }
    }
}

/// How every TCP listener is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenOptions {
    /// `listen(2)` backlog.
    pub backlog: u32,
    /// TCP keepalive idle time for accepted connections; `None`: off.
    pub keepalive: Option<Duration>,
    /// `SO_SNDBUF` for accepted connections; `None`: autotuning.
    pub sndbuf: Option<usize>,
    /// `SO_REUSEPORT`: several sockets (one per worker process) share the
    /// address, and the kernel spreads connections over them.
    pub reuse_port: bool,
}

/// Keepalive probes sent before a silent peer is declared dead.
pub(crate) const KEEPALIVE_PROBES: u32 = 3;

/// Opens one non-blocking listener on `addr`.
pub(crate) fn open(addr: SocketAddr, options: ListenOptions) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_out_of_band_inline(true)?;
    if let Some(bytes) = options.sndbuf {
        socket.set_send_buffer_size(bytes)?;
    }
    if let Some(idle) = options.keepalive {
        socket.set_keepalive(true)?;
        socket.set_tcp_keepalive(&keepalive_params(idle))?;
    }
    socket.bind(&addr.into())?;
    // The kernel silently caps this at net.core.somaxconn.
    let backlog = i32::try_from(options.backlog).unwrap_or(i32::MAX);
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The keepalive timing for `--keepalive idle` (see the module docs).
fn keepalive_params(idle: Duration) -> TcpKeepalive {
    let interval = (idle / 3).clamp(Duration::from_secs(1), Duration::from_secs(75));
    TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval)
        .with_retries(KEEPALIVE_PROBES)
}
