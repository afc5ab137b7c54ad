//! The sockets a server serves, bound before any event loop exists.
//!
//! One process binds them and serves them itself ([`Server::bind`]). With
//! `--workers N` the master binds them once per worker *slot*, the first
//! time as asked and then [`Sockets::bind_again`] on the very addresses the
//! first got (port 0 became a port), each with `SO_REUSEPORT`: the kernel
//! spreads new connections over the slots by a hash of their addresses.
//! A worker inherits its slot's descriptors across `exec` and adopts them
//! ([`Sockets::adopt`]), as nginx's workers inherit their listeners.
//!
//! Why the master keeps every slot's sockets open although it never
//! accepts: a listening socket's accept queue belongs to the socket, and
//! closing the last descriptor of a listener resets the connections queued
//! on it. While the master holds a slot's sockets, a worker that dies or is
//! replaced takes nothing with it: connections keep queuing, and its
//! successor accepts them.
//!
//! [`Server::bind`]: crate::Server::bind

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use crate::addr::ListenAddr;
use crate::config::Config;
use crate::listener::{self, ListenError, ListenOptions};
use crate::udp;

/// Every socket one server (or one worker slot) serves: TCP echo
/// listeners, UDP echo sockets, daytime services (a TCP listener and a UDP
/// socket on one port each), metrics listeners, bound, listening and
/// non-blocking.
#[derive(Debug)]
pub struct Sockets {
    pub(crate) tcp: Vec<TcpListener>,
    pub(crate) udp: Vec<UdpSocket>,
    pub(crate) daytime: Vec<(TcpListener, UdpSocket)>,
    /// `--metrics` listeners. Never bound again for another slot: with
    /// `--workers` the master serves metrics itself.
    pub(crate) metrics: Vec<TcpListener>,
}

impl Sockets {
    /// Resolves and binds everything `config` asks for, with
    /// `SO_REUSEPORT` if `config.reuse_port` says so.
    pub fn bind(config: &Config) -> Result<Sockets, ListenError> {
        let options = options(config);
        let mut tcp = Vec::new();
        for addr in resolve_all(&config.listen)? {
            let listener = listener::open(addr, options)
                .map_err(|source| ListenError::Bind { addr, source })?;
            tcp.push(listener);
        }
        let mut udp = Vec::new();
        for addr in resolve_all(&config.udp)? {
            let socket = udp::open(addr, config.reuse_port)
                .map_err(|source| ListenError::Bind { addr, source })?;
            udp.push(socket);
        }
        let mut daytime = Vec::new();
        for addr in resolve_all(&config.daytime)? {
            let pair =
                open_daytime(addr, options).map_err(|source| ListenError::Bind { addr, source })?;
            daytime.push(pair);
        }
        let mut metrics = Vec::new();
        for addr in resolve_all(&config.metrics)? {
            let listener = listener::open(addr, options)
                .map_err(|source| ListenError::Bind { addr, source })?;
            metrics.push(listener);
        }
        Ok(Sockets {
            tcp,
            udp,
            daytime,
            metrics,
        })
    }

    /// New sockets on exactly the addresses these are bound to, for
    /// another worker slot (metrics listeners excepted). Both sets need `SO_REUSEPORT`
    /// (`config.reuse_port`), or the kernel refuses the second bind.
    pub fn bind_again(&self, config: &Config) -> Result<Sockets, ListenError> {
        let options = options(config);
        let bind = |addr: SocketAddr, e: io::Error| ListenError::Bind { addr, source: e };
        let mut again = Sockets {
            tcp: Vec::new(),
            udp: Vec::new(),
            daytime: Vec::new(),
            metrics: Vec::new(),
        };
        for addr in self.tcp_addrs().map_err(ListenError::Setup)? {
            again
                .tcp
                .push(listener::open(addr, options).map_err(|e| bind(addr, e))?);
        }
        for addr in self.udp_addrs().map_err(ListenError::Setup)? {
            let socket = udp::open(addr, config.reuse_port).map_err(|e| bind(addr, e))?;
            again.udp.push(socket);
        }
        for addr in self.daytime_addrs().map_err(ListenError::Setup)? {
            let tcp = listener::open(addr, options).map_err(|e| bind(addr, e))?;
            let datagrams = udp::open(addr, config.reuse_port).map_err(|e| bind(addr, e))?;
            again.daytime.push((tcp, datagrams));
        }
        Ok(again)
    }

    /// The TCP echo listeners' addresses, in order.
    pub fn tcp_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.tcp.iter().map(TcpListener::local_addr).collect()
    }

    /// The UDP echo sockets' addresses, in order.
    pub fn udp_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.udp.iter().map(UdpSocket::local_addr).collect()
    }

    /// The daytime services' addresses (TCP and UDP share each), in order.
    pub fn daytime_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.daytime
            .iter()
            .map(|(tcp, _)| tcp.local_addr())
            .collect()
    }

    /// The metrics listeners' addresses, in order.
    pub fn metrics_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.metrics.iter().map(TcpListener::local_addr).collect()
    }

    /// Every descriptor, for a parent that must keep them open across
    /// `exec` in a child (they are close-on-exec, like every descriptor
    /// Rust opens).
    pub fn raw_fds(&self) -> Vec<RawFd> {
        let tcp = self.tcp.iter().map(AsRawFd::as_raw_fd);
        let udp = self.udp.iter().map(AsRawFd::as_raw_fd);
        let daytime = (self.daytime.iter()).flat_map(|(t, u)| [t.as_raw_fd(), u.as_raw_fd()]);
        let metrics = self.metrics.iter().map(AsRawFd::as_raw_fd);
        tcp.chain(udp).chain(daytime).chain(metrics).collect()
    }

    /// What a child process that inherits these descriptors needs to adopt
    /// them ([`Sockets::adopt`]): which descriptor is which.
    pub fn inheritance(&self) -> Inheritance {
        Inheritance {
            tcp: self.tcp.iter().map(AsRawFd::as_raw_fd).collect(),
            udp: self.udp.iter().map(AsRawFd::as_raw_fd).collect(),
            daytime: (self.daytime.iter())
                .map(|(t, u)| (t.as_raw_fd(), u.as_raw_fd()))
                .collect(),
            metrics: self.metrics.iter().map(AsRawFd::as_raw_fd).collect(),
        }
    }

    /// Takes ownership of inherited descriptors.
    ///
    /// # Safety
    ///
    /// Every descriptor `inherited` names must be open in this process, be
    /// a socket of the kind it is listed as (a listening TCP socket, a
    /// bound UDP socket), and be owned by nothing else in this process:
    /// the returned sockets close them when dropped.
    pub unsafe fn adopt(inherited: &Inheritance) -> io::Result<Sockets> {
        let tcp_listener = |fd: RawFd| {
            // SAFETY: the caller promises each descriptor is an open
            // listening TCP socket that nothing else owns.
            unsafe { TcpListener::from_raw_fd(fd) }
        };
        let udp_socket = |fd: RawFd| {
            // SAFETY: the caller promises each descriptor is an open UDP
            // socket that nothing else owns.
            unsafe { UdpSocket::from_raw_fd(fd) }
        };
        let sockets = Sockets {
            tcp: inherited.tcp.iter().map(|&fd| tcp_listener(fd)).collect(),
            udp: inherited.udp.iter().map(|&fd| udp_socket(fd)).collect(),
            daytime: (inherited.daytime.iter())
                .map(|&(t, u)| (tcp_listener(t), udp_socket(u)))
                .collect(),
            metrics: inherited
                .metrics
                .iter()
                .map(|&fd| tcp_listener(fd))
                .collect(),
        };
        // Check what was promised, as far as the kernel can tell: each is
        // a bound socket (a stray number fails here, not in the loop).
        let bound = sockets
            .tcp_addrs()
            .and(sockets.udp_addrs())
            .and(sockets.daytime_addrs())
            .and(sockets.metrics_addrs());
        if let Err(e) = bound {
            // Nothing is closed on this path: the numbers may not be ours.
            std::mem::forget(sockets);
            return Err(io::Error::new(
                e.kind(),
                format!("inherited sockets {inherited}: {e}"),
            ));
        }
        for socket in sockets.tcp.iter().chain(&sockets.metrics) {
            socket.set_nonblocking(true)?;
        }
        for socket in &sockets.udp {
            socket.set_nonblocking(true)?;
        }
        for (tcp, datagrams) in &sockets.daytime {
            tcp.set_nonblocking(true)?;
            datagrams.set_nonblocking(true)?;
        }
        Ok(sockets)
    }
}

/// Which inherited descriptor is which socket: written by the parent
/// ([`Sockets::inheritance`], then `Display`), read by the child (`parse`),
/// as `tcp=3,4 udp=5 daytime=6/7 metrics=8`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inheritance {
    tcp: Vec<RawFd>,
    udp: Vec<RawFd>,
    daytime: Vec<(RawFd, RawFd)>,
    metrics: Vec<RawFd>,
}

impl fmt::Display for Inheritance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |fds: &[RawFd]| {
            fds.iter()
                .map(|fd| fd.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let pairs: Vec<String> = self
            .daytime
            .iter()
            .map(|(t, u)| format!("{t}/{u}"))
            .collect();
        write!(
            f,
            "tcp={} udp={} daytime={} metrics={}",
            list(&self.tcp),
            list(&self.udp),
            pairs.join(","),
            list(&self.metrics)
        )
    }
}

impl std::str::FromStr for Inheritance {
    type Err = String;

    fn from_str(text: &str) -> Result<Inheritance, String> {
        let fd = |s: &str| {
            s.parse::<RawFd>()
                .ok()
                .filter(|&fd| fd > 2)
                .ok_or_else(|| format!("not a descriptor number: {s:?}"))
        };
        let mut inherited = Inheritance::default();
        for part in text.split_whitespace() {
            let (kind, list) = part
                .split_once('=')
                .ok_or_else(|| format!("expected KIND=LIST, got {part:?}"))?;
            let items = list.split(',').filter(|s| !s.is_empty());
            match kind {
                "tcp" => inherited.tcp = items.map(fd).collect::<Result<_, _>>()?,
                "udp" => inherited.udp = items.map(fd).collect::<Result<_, _>>()?,
                "metrics" => inherited.metrics = items.map(fd).collect::<Result<_, _>>()?,
                "daytime" => {
                    for item in items {
                        let (t, u) = item
                            .split_once('/')
                            .ok_or_else(|| format!("expected TCP/UDP, got {item:?}"))?;
                        inherited.daytime.push((fd(t)?, fd(u)?));
                    }
                }
                _ => return Err(format!("unknown socket kind {kind:?}")),
            }
        }
        Ok(inherited)
    }
}

fn options(config: &Config) -> ListenOptions {
    ListenOptions {
        backlog: config.backlog,
        keepalive: config.keepalive,
        sndbuf: config.sndbuf,
        reuse_port: config.reuse_port,
    }
}

/// Every address each of `addrs` resolves to.
fn resolve_all(addrs: &[ListenAddr]) -> Result<Vec<SocketAddr>, ListenError> {
    let mut all = Vec::new();
    for addr in addrs {
        let resolved = addr.resolve().map_err(|source| ListenError::Resolve {
            addr: addr.clone(),
            source,
        })?;
        all.extend(resolved);
    }
    Ok(all)
}

/// Binds a daytime service: a TCP listener on `addr`, then a UDP socket on
/// the port it got (seed 1: TCP and UDP may share a port number). With
/// port 0 the kernel picks a TCP port that may be taken for UDP; then try
/// another.
fn open_daytime(addr: SocketAddr, options: ListenOptions) -> io::Result<(TcpListener, UdpSocket)> {
    const ATTEMPTS: usize = 8;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let tcp = listener::open(addr, options)?;
        let bound = tcp.local_addr()?;
        match udp::open(bound, options.reuse_port) {
            Ok(datagrams) => return Ok((tcp, datagrams)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inheritance_reads_back_as_written() {
        let written = Inheritance {
            tcp: vec![3, 4],
            udp: vec![],
            daytime: vec![(6, 7)],
            metrics: vec![8],
        };
        let text = written.to_string();
        assert_eq!(text, "tcp=3,4 udp= daytime=6/7 metrics=8");
        assert_eq!(text.parse::<Inheritance>(), Ok(written));
        assert!(
            "tcp=1".parse::<Inheritance>().is_err(),
            "stdout is no socket"
        );
        assert!("tcp=x".parse::<Inheritance>().is_err());
        assert!("pipe=5".parse::<Inheritance>().is_err());
        assert!("daytime=5".parse::<Inheritance>().is_err());
    }

    #[test]
    fn a_slot_bound_again_shares_the_port() {
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().expect("address")],
            udp: vec!["127.0.0.1:0".parse().expect("address")],
            reuse_port: true,
            ..Config::default()
        };
        let first = Sockets::bind(&config).expect("bind");
        let second = first.bind_again(&config).expect("bind again");
        assert_eq!(first.tcp_addrs().ok(), second.tcp_addrs().ok());
        assert_eq!(first.udp_addrs().ok(), second.udp_addrs().ok());
        let without = Config {
            reuse_port: false,
            ..config
        };
        assert!(
            first.bind_again(&without).is_err(),
            "a second bind needs SO_REUSEPORT"
        );
    }
}
