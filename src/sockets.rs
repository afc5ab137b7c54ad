//! The sockets a server serves, bound before any event loop exists.
//!
//! One process binds them and serves them itself ([`Server::bind`]). With
//! `--workers N` the master binds them once per worker *slot*
//! ([`Sockets::bind_slots`]): once without `SO_REUSEPORT` to learn the
//! addresses are free (port 0 becomes a port), then once per slot on those
//! very addresses, each with `SO_REUSEPORT`: the kernel
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

    /// `slots` sets of every socket `config` asks for but metrics, one
    /// per worker slot of a master, sharing each address with
    /// `SO_REUSEPORT`.
    ///
    /// `SO_REUSEPORT` would also let this set join the sockets of another
    /// server of the same user on the same port, and take half its
    /// clients. So the addresses are first bound *without* it, which the
    /// kernel refuses on a port in use, however the other server bound it:
    /// a master on a taken port fails like a single process, with the
    /// same error. Then the probe is closed and every slot bound on the
    /// addresses it got (port 0 became a port). Between the two lies a
    /// few microseconds in which a third server could take the port; the
    /// slots' bind then fails on it, which is the error again.
    pub(crate) fn bind_slots(config: &Config, slots: usize) -> Result<Vec<Sockets>, ListenError> {
        let probe_config = Config {
            reuse_port: false,
            metrics: Vec::new(),
            ..config.clone()
        };
        let probe = Sockets::bind(&probe_config)?;
        let addrs = Addresses {
            tcp: probe.tcp_addrs().map_err(ListenError::Setup)?,
            udp: probe.udp_addrs().map_err(ListenError::Setup)?,
            daytime: probe.daytime_addrs().map_err(ListenError::Setup)?,
        };
        drop(probe);
        let shared = Config {
            reuse_port: true,
            ..probe_config
        };
        (0..slots)
            .map(|_| Sockets::bind_at(&addrs, &shared))
            .collect()
    }

    /// New sockets on exactly `addrs` (`config.reuse_port` set, for
    /// another worker slot).
    fn bind_at(addrs: &Addresses, config: &Config) -> Result<Sockets, ListenError> {
        let options = options(config);
        let bind = |addr: SocketAddr, e: io::Error| ListenError::Bind { addr, source: e };
        let mut again = Sockets {
            tcp: Vec::new(),
            udp: Vec::new(),
            daytime: Vec::new(),
            metrics: Vec::new(),
        };
        for &addr in &addrs.tcp {
            again
                .tcp
                .push(listener::open(addr, options).map_err(|e| bind(addr, e))?);
        }
        for &addr in &addrs.udp {
            let socket = udp::open(addr, config.reuse_port).map_err(|e| bind(addr, e))?;
            again.udp.push(socket);
        }
        for &addr in &addrs.daytime {
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

/// The addresses a set of sockets got, to bind another set on.
struct Addresses {
    tcp: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
    daytime: Vec<SocketAddr>,
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

    fn config() -> Config {
        Config {
            listen: vec!["127.0.0.1:0".parse().expect("address")],
            udp: vec!["127.0.0.1:0".parse().expect("address")],
            daytime: vec!["127.0.0.1:0".parse().expect("address")],
            ..Config::default()
        }
    }

    #[test]
    fn slots_share_every_address() {
        let slots = Sockets::bind_slots(&config(), 3).expect("bind");
        assert_eq!(slots.len(), 3);
        for slot in &slots[1..] {
            assert_eq!(slot.tcp_addrs().ok(), slots[0].tcp_addrs().ok());
            assert_eq!(slot.udp_addrs().ok(), slots[0].udp_addrs().ok());
            assert_eq!(slot.daytime_addrs().ok(), slots[0].daytime_addrs().ok());
        }
        assert_ne!(slots[0].tcp_addrs().expect("addr")[0].port(), 0);
    }

    #[test]
    fn slots_on_a_port_other_slots_hold_are_refused() {
        let first = Sockets::bind_slots(&config(), 2).expect("bind");
        for (kind, taken) in [
            ("tcp", first[0].tcp_addrs().expect("addr")),
            ("udp", first[0].udp_addrs().expect("addr")),
        ] {
            let mut again = Config {
                listen: vec![],
                udp: vec![],
                daytime: vec![],
                ..Config::default()
            };
            let addr: ListenAddr = taken[0].to_string().parse().expect("address");
            if kind == "tcp" {
                again.listen.push(addr);
            } else {
                again.udp.push(addr);
            }
            let err = Sockets::bind_slots(&again, 2).expect_err(kind);
            assert!(
                matches!(&err, ListenError::Bind { addr, .. } if *addr == taken[0]),
                "{kind}: {err}"
            );
        }
    }
}
