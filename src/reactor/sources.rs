//! Opening the sockets the loop serves: TCP listeners, UDP sockets, and the
//! daytime services that are both, before the loop starts.
//!
//! Echo listeners come first, then daytime listeners; UDP echo sockets
//! first, then daytime ones. Both vectors keep their length for the life
//! of the loop (a closed socket leaves an empty slot), so a listener's or
//! UDP socket's token is its index (`token.rs`) and needs no generation.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::{TcpListener, UdpSocket};

use crate::addr::ListenAddr;
use crate::config::Config;
use crate::listener::{self, ListenError, ListenOptions};
use crate::poller::{Interest, Poller};
use crate::service::Service;
use crate::token;
use crate::udp::{self, LoopGuard};

/// A listening socket and its accept state.
#[derive(Debug)]
pub(super) struct ListenerSlot {
    /// `None` once closed for shutdown.
    pub(super) socket: Option<TcpListener>,
    /// What its connections get.
    pub(super) service: Service,
    /// Resting after an accept error; a timer will retry.
    pub(super) paused: bool,
    /// On the run-next queue already.
    pub(super) queued: bool,
}

/// A UDP socket and what it answers.
#[derive(Debug)]
pub(super) struct UdpSlot {
    /// `None` once closed for shutdown.
    pub(super) socket: Option<UdpSocket>,
    pub(super) service: Service,
    /// On the run-next queue already.
    pub(super) queued: bool,
}

/// Every socket the loop accepts or answers on.
#[derive(Debug)]
pub(super) struct Sources {
    pub(super) listeners: Vec<ListenerSlot>,
    pub(super) udp: Vec<UdpSlot>,
    /// Which datagrams go unanswered because answering could loop.
    pub(super) udp_guard: LoopGuard,
    /// The echo listeners' addresses as bound.
    pub(super) tcp_addrs: Vec<SocketAddr>,
    /// The UDP echo sockets' addresses as bound.
    pub(super) udp_addrs: Vec<SocketAddr>,
    /// The daytime services' addresses as bound (TCP and UDP share each).
    pub(super) daytime_addrs: Vec<SocketAddr>,
}

impl Sources {
    /// Resolves and binds everything `config` asks for.
    pub(super) fn open(config: &Config) -> Result<Sources, ListenError> {
        let setup = ListenError::Setup;
        let options = ListenOptions {
            backlog: config.backlog,
            keepalive: config.keepalive,
            sndbuf: config.sndbuf,
        };
        let mut sources = Sources {
            listeners: Vec::new(),
            udp: Vec::new(),
            udp_guard: LoopGuard::default(),
            tcp_addrs: Vec::new(),
            udp_addrs: Vec::new(),
            daytime_addrs: Vec::new(),
        };
        for socket in listener::open_all(&config.listen, options)? {
            sources.tcp_addrs.push(socket.local_addr().map_err(setup)?);
            sources
                .listeners
                .push(ListenerSlot::new(socket, Service::Echo));
        }
        for addr in resolve_all(&config.udp)? {
            let socket = udp::open(addr).map_err(|source| ListenError::Bind { addr, source })?;
            sources.udp_addrs.push(socket.local_addr().map_err(setup)?);
            sources.udp.push(UdpSlot::new(socket, Service::Echo));
        }
        for addr in resolve_all(&config.daytime)? {
            let (tcp, datagrams, bound) =
                open_daytime(addr, options).map_err(|source| ListenError::Bind { addr, source })?;
            sources.daytime_addrs.push(bound);
            sources
                .listeners
                .push(ListenerSlot::new(tcp, Service::Daytime));
            sources.udp.push(UdpSlot::new(datagrams, Service::Daytime));
        }
        if sources.listeners.len() > token::MAX_LISTENERS {
            return Err(setup(io::Error::other("too many listeners")));
        }
        let own = sources.udp_addrs.iter().chain(&sources.daytime_addrs);
        sources.udp_guard = LoopGuard::new(own.copied().collect());
        Ok(sources)
    }

    /// Registers every socket for `READABLE`. Called before any connection
    /// exists, so that these descriptors are the lowest the loop watches
    /// (select can only watch those below `FD_SETSIZE`).
    pub(super) fn register<P: Poller>(&self, poller: &mut P) -> io::Result<()> {
        for (i, slot) in self.listeners.iter().enumerate() {
            if let Some(socket) = slot.socket.as_ref() {
                poller.register(socket.as_raw_fd(), token::listener(i), Interest::READABLE)?;
            }
        }
        for (i, slot) in self.udp.iter().enumerate() {
            if let Some(socket) = slot.socket.as_ref() {
                poller.register(socket.as_raw_fd(), token::udp(i), Interest::READABLE)?;
            }
        }
        Ok(())
    }

    /// Closes every socket (shutdown: new connections are now refused by
    /// the kernel, datagrams dropped by it).
    pub(super) fn close<P: Poller>(&mut self, poller: &mut P) {
        for slot in &mut self.listeners {
            if let Some(socket) = slot.socket.take() {
                // A paused listener is not registered: the error is moot.
                let _ = poller.deregister(socket.as_raw_fd());
            }
        }
        for slot in &mut self.udp {
            if let Some(socket) = slot.socket.take() {
                let _ = poller.deregister(socket.as_raw_fd());
            }
        }
    }
}

impl ListenerSlot {
    fn new(socket: TcpListener, service: Service) -> ListenerSlot {
        ListenerSlot {
            socket: Some(socket),
            service,
            paused: false,
            queued: false,
        }
    }
}

impl UdpSlot {
    fn new(socket: UdpSocket, service: Service) -> UdpSlot {
        UdpSlot {
            socket: Some(socket),
            service,
            queued: false,
        }
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
fn open_daytime(
    addr: SocketAddr,
    options: ListenOptions,
) -> io::Result<(TcpListener, UdpSocket, SocketAddr)> {
    const ATTEMPTS: usize = 8;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let tcp = listener::open(addr, options)?;
        let bound = tcp.local_addr()?;
        match udp::open(bound) {
            Ok(datagrams) => return Ok((tcp, datagrams, bound)),
            Err(e) if addr.port() == 0 && e.kind() == io::ErrorKind::AddrInUse => {
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
}
