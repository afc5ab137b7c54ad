//! The sockets a server serves, bound before any event loop exists.
//!
//! One list ([`service::offers`]) says which service is offered on which
//! transports at which addresses; binding walks it, and what comes out is
//! one list too: each socket with the service it serves. Nothing below
//! knows one service from another.
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
//! [`service::offers`]: crate::service::offers

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use crate::activation::Passed;
use crate::addr::ListenAddr;
use crate::config::Config;
use crate::listener::{self, ListenError, ListenOptions};
use crate::service::{self, Endpoint, Service, Transport};
use crate::udp;

/// Every socket one server (or one worker slot) serves, bound, listening
/// and non-blocking, each with its service, in the order of
/// [`service::offers`].
#[derive(Debug)]
pub(crate) struct Sockets {
    pub(crate) bound: Vec<Bound>,
}

/// One socket and what it serves.
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) service: Service,
    pub(crate) socket: Socket,
}

/// A listening TCP socket or a UDP socket.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Socket {
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Socket::Tcp(_) => Transport::Tcp,
            Socket::Udp(_) => Transport::Udp,
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Tcp(s) => s.local_addr(),
            Socket::Udp(s) => s.local_addr(),
        }
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Udp(s) => s.as_raw_fd(),
        }
    }

    /// A descriptor of its own for the same socket (`dup`).
    fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Udp(s) => Socket::Udp(s.try_clone()?),
        })
    }

    /// A socket of `transport` bound at `addr` with `options`.
    fn open(transport: Transport, addr: SocketAddr, options: ListenOptions) -> io::Result<Socket> {
        Ok(match transport {
            Transport::Tcp => Socket::Tcp(listener::open(addr, options)?),
            Transport::Udp => Socket::Udp(udp::open(addr, options.reuse_port)?),
        })
    }
}

impl Bound {
    /// The same socket on a descriptor of its own.
    pub(crate) fn try_clone(&self) -> io::Result<Bound> {
        Ok(Bound {
            service: self.service,
            socket: self.socket.try_clone()?,
        })
    }

    /// Where it goes in [`service::offers`]' order.
    fn rank(&self) -> u8 {
        match (self.service, self.socket.transport()) {
            (Service::Echo, Transport::Tcp) => 0,
            (Service::Echo, Transport::Udp) => 1,
            (Service::Metrics, _) => 3,
            _ => 2,
        }
    }
}

impl Sockets {
    /// Resolves and binds everything `config` offers, with
    /// `SO_REUSEPORT` if `config.reuse_port` says so; with
    /// `config.service_manager`, the sockets a service manager passed
    /// serve their services instead (`activation.rs`).
    pub(crate) fn bind(config: &Config) -> Result<Sockets, ListenError> {
        let passed = if config.service_manager {
            Passed::from_env()?
        } else {
            Passed::default()
        };
        let mut sockets = Sockets::bind_flags(&passed.unbound(config))?;
        sockets.add(passed.into_bound());
        Ok(sockets)
    }

    /// Adds `more` sockets, each among those of its service.
    pub(crate) fn add(&mut self, more: Vec<Bound>) {
        if more.is_empty() {
            return;
        }
        self.bound.extend(more);
        self.bound.sort_by_key(Bound::rank);
    }

    /// Binds what the address flags of `config` offer.
    fn bind_flags(config: &Config) -> Result<Sockets, ListenError> {
        let options = options(config);
        let mut bound = Vec::new();
        for offer in service::offers(config) {
            for addr in resolve_all(offer.addrs)? {
                let sockets = bind_on_one_port(offer.transports, addr, options)
                    .map_err(|source| ListenError::Bind { addr, source })?;
                bound.extend(sockets.into_iter().map(|socket| Bound {
                    service: offer.service,
                    socket,
                }));
            }
        }
        Ok(Sockets { bound })
    }

    /// `slots` sets of every socket `config` offers but metrics, one per
    /// worker slot of a master, sharing each address with `SO_REUSEPORT`.
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
            service_manager: false,
            metrics: Vec::new(),
            ..config.clone()
        };
        let probe = Sockets::bind(&probe_config)?;
        let endpoints = probe.endpoints().map_err(ListenError::Setup)?;
        drop(probe);
        let options = ListenOptions {
            reuse_port: true,
            ..options(&probe_config)
        };
        (0..slots)
            .map(|_| Sockets::bind_at(&endpoints, options))
            .collect()
    }

    /// New sockets on exactly `endpoints`.
    fn bind_at(endpoints: &[Endpoint], options: ListenOptions) -> Result<Sockets, ListenError> {
        let bound = (endpoints.iter())
            .map(|e| {
                let socket = Socket::open(e.transport, e.addr, options).map_err(|source| {
                    ListenError::Bind {
                        addr: e.addr,
                        source,
                    }
                })?;
                Ok(Bound {
                    service: e.service,
                    socket,
                })
            })
            .collect::<Result<_, ListenError>>()?;
        Ok(Sockets { bound })
    }

    /// Every socket's service, transport and address, in order.
    pub(crate) fn endpoints(&self) -> io::Result<Vec<Endpoint>> {
        (self.bound.iter())
            .map(|b| {
                Ok(Endpoint {
                    service: b.service,
                    transport: b.socket.transport(),
                    addr: b.socket.local_addr()?,
                })
            })
            .collect()
    }

    /// Every descriptor, for a parent that must keep them open across
    /// `exec` in a child (they are close-on-exec, like every descriptor
    /// Rust opens).
    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.bound.iter().map(|b| b.socket.raw_fd()).collect()
    }

    /// What a child process that inherits these descriptors needs to adopt
    /// them ([`Sockets::adopt`]): which descriptor is which.
    pub(crate) fn inheritance(&self) -> Inheritance {
        Inheritance(
            (self.bound.iter())
                .map(|b| (b.service, b.socket.transport(), b.socket.raw_fd()))
                .collect(),
        )
    }

    /// Takes ownership of inherited descriptors.
    ///
    /// # Safety
    ///
    /// Every descriptor `inherited` names must be open in this process, be
    /// a socket of the kind it is listed as (a listening TCP socket, a
    /// bound UDP socket), and be owned by nothing else in this process:
    /// the returned sockets close them when dropped.
    pub(crate) unsafe fn adopt(inherited: &Inheritance) -> io::Result<Sockets> {
        let bound: Vec<Bound> = (inherited.0.iter())
            .map(|&(service, transport, fd)| Bound {
                service,
                socket: match transport {
                    // SAFETY: the caller promises each descriptor is an
                    // open socket of this kind that nothing else owns.
                    Transport::Tcp => Socket::Tcp(unsafe { TcpListener::from_raw_fd(fd) }),
                    // SAFETY: as above.
                    Transport::Udp => Socket::Udp(unsafe { UdpSocket::from_raw_fd(fd) }),
                },
            })
            .collect();
        let sockets = Sockets { bound };
        // Check what was promised, as far as the kernel can tell: each is
        // a bound socket (a stray number fails here, not in the loop).
        if let Err(e) = sockets.endpoints() {
            // Nothing is closed on this path: the numbers may not be ours.
            std::mem::forget(sockets);
            return Err(io::Error::new(
                e.kind(),
                format!("inherited sockets {inherited}: {e}"),
            ));
        }
        for b in &sockets.bound {
            match &b.socket {
                Socket::Tcp(s) => s.set_nonblocking(true)?,
                Socket::Udp(s) => s.set_nonblocking(true)?,
            }
        }
        Ok(sockets)
    }
}

/// Binds one socket per transport on `addr`, all on one port: the first
/// where asked, the others on the address it got. With port 0, a later
/// transport may find the kernel's pick taken; then all are tried again.
fn bind_on_one_port(
    transports: &[Transport],
    addr: SocketAddr,
    options: ListenOptions,
) -> io::Result<Vec<Socket>> {
    const ATTEMPTS: usize = 8;
    let mut last_error = None;
    'attempt: for _ in 0..ATTEMPTS {
        let mut sockets: Vec<Socket> = Vec::new();
        let mut at = addr;
        for &transport in transports {
            match Socket::open(transport, at, options) {
                Ok(socket) => {
                    at = socket.local_addr()?;
                    sockets.push(socket);
                }
                Err(e)
                    if addr.port() == 0
                        && !sockets.is_empty()
                        && e.kind() == io::ErrorKind::AddrInUse =>
                {
                    last_error = Some(e);
                    continue 'attempt;
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(sockets);
    }
    Err(last_error.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
}

/// Which inherited descriptor is which socket: written by the parent
/// ([`Sockets::inheritance`], then `Display`), read by the child (`parse`),
/// as `echo/tcp=3 echo/udp=4 daytime/tcp=5 daytime/udp=6`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Inheritance(Vec<(Service, Transport, RawFd)>);

impl fmt::Display for Inheritance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = (self.0.iter())
            .map(|(service, transport, fd)| format!("{}/{}={fd}", service.name(), transport.name()))
            .collect();
        f.write_str(&words.join(" "))
    }
}

impl std::str::FromStr for Inheritance {
    type Err = String;

    fn from_str(text: &str) -> Result<Inheritance, String> {
        let entry = |word: &str| -> Result<(Service, Transport, RawFd), String> {
            let bad = || format!("expected SERVICE/TRANSPORT=FD, got {word:?}");
            let (kind, fd) = word.split_once('=').ok_or_else(bad)?;
            let (service, transport) = kind.split_once('/').ok_or_else(bad)?;
            let service = Service::from_name(service).ok_or_else(bad)?;
            let transport = Transport::from_name(transport).ok_or_else(bad)?;
            let fd = (fd.parse::<RawFd>().ok())
                .filter(|&fd| fd > 2)
                .ok_or_else(|| format!("not a descriptor number: {fd:?}"))?;
            Ok((service, transport, fd))
        };
        text.split_whitespace()
            .map(entry)
            .collect::<Result<_, _>>()
            .map(Inheritance)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inheritance_reads_back_as_written() {
        let written = Inheritance(vec![
            (Service::Echo, Transport::Tcp, 3),
            (Service::Echo, Transport::Tcp, 4),
            (Service::Daytime, Transport::Tcp, 6),
            (Service::Daytime, Transport::Udp, 7),
            (Service::Metrics, Transport::Tcp, 8),
        ]);
        let text = written.to_string();
        assert_eq!(
            text,
            "echo/tcp=3 echo/tcp=4 daytime/tcp=6 daytime/udp=7 metrics/tcp=8"
        );
        assert_eq!(text.parse::<Inheritance>(), Ok(written));
        assert_eq!("".parse::<Inheritance>(), Ok(Inheritance::default()));
        for bad in [
            "echo/tcp=1",
            "echo/tcp=x",
            "pipe/tcp=5",
            "echo/sctp=5",
            "echo=5",
            "echo/tcp",
        ] {
            assert!(bad.parse::<Inheritance>().is_err(), "{bad:?}");
        }
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
    fn every_offer_is_bound_in_order_and_daytime_shares_one_port() {
        let sockets = Sockets::bind(&config()).expect("bind");
        let endpoints = sockets.endpoints().expect("endpoints");
        let kinds: Vec<(Service, Transport)> =
            endpoints.iter().map(|e| (e.service, e.transport)).collect();
        assert_eq!(
            kinds,
            [
                (Service::Echo, Transport::Tcp),
                (Service::Echo, Transport::Udp),
                (Service::Daytime, Transport::Tcp),
                (Service::Daytime, Transport::Udp),
            ]
        );
        assert_eq!(endpoints[2].addr, endpoints[3].addr);
        assert_ne!(endpoints[0].addr.port(), 0);
    }

    #[test]
    fn slots_share_every_address() {
        let slots = Sockets::bind_slots(&config(), 3).expect("bind");
        assert_eq!(slots.len(), 3);
        let first = slots[0].endpoints().expect("endpoints");
        assert_eq!(first.len(), 4);
        for slot in &slots[1..] {
            assert_eq!(slot.endpoints().expect("endpoints"), first);
        }
    }

    #[test]
    fn slots_on_a_port_other_slots_hold_are_refused() {
        let first = Sockets::bind_slots(&config(), 2).expect("bind");
        for taken in first[0].endpoints().expect("endpoints") {
            let addr: ListenAddr = taken.addr.to_string().parse().expect("address");
            let mut again = Config {
                listen: vec![],
                ..Config::default()
            };
            match (taken.service, taken.transport) {
                (Service::Echo, Transport::Tcp) => again.listen.push(addr),
                (Service::Echo, Transport::Udp) => again.udp.push(addr),
                (Service::Daytime, _) => again.daytime.push(addr),
                (Service::Metrics, _) => again.metrics.push(addr),
                (Service::Discard, _) => again.discard.push(addr),
                (Service::Chargen, _) => again.chargen.push(addr),
            }
            let err = Sockets::bind_slots(&again, 2).expect_err("a port in use");
            assert!(
                matches!(&err, ListenError::Bind { addr, .. } if *addr == taken.addr),
                "{taken:?}: {err}"
            );
        }
    }
}
