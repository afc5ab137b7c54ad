//! The sockets the loop serves (bound by `sockets.rs`): TCP listeners and
//! UDP sockets, each with the service it serves, in the order of the list
//! of services (`service::offers`). Both vectors keep their length for the life
//! of the loop (a closed socket leaves an empty slot), so a listener's or
//! UDP socket's token is its index (`token.rs`) and needs no generation.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::{TcpListener, UdpSocket};

use crate::budget::Budget;
use crate::listener::ListenError;
use crate::poller::{Interest, Poller};
use crate::service::{Endpoint, Service, Transport};
use crate::sockets::{Socket, Sockets};
use crate::token;
use crate::udp::{self, LoopGuard, Port};

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
    /// Its batch of slots and its queue of answers waiting for room.
    pub(super) port: Port,
}

/// Every socket the loop accepts or answers on.
#[derive(Debug)]
pub(super) struct Sources {
    pub(super) listeners: Vec<ListenerSlot>,
    pub(super) udp: Vec<UdpSlot>,
    /// Which datagrams go unanswered because answering could loop.
    pub(super) udp_guard: LoopGuard,
    /// Every socket's service, transport and address as bound.
    pub(super) endpoints: Vec<Endpoint>,
}

impl Sources {
    /// Takes over sockets bound by [`Sockets::bind`], here or in a parent
    /// process.
    /// UDP sockets take batches of `udp_batch` datagrams.
    pub(super) fn adopt(sockets: Sockets, udp_batch: usize) -> Result<Sources, ListenError> {
        let setup = ListenError::Setup;
        let endpoints = sockets.endpoints().map_err(setup)?;
        let (mut listeners, mut udp) = (Vec::new(), Vec::new());
        for bound in sockets.bound {
            match bound.socket {
                Socket::Tcp(socket) => {
                    let socket = TcpListener::from_std(socket);
                    listeners.push(ListenerSlot::new(socket, bound.service));
                }
                Socket::Udp(socket) => {
                    let socket = UdpSocket::from_std(socket);
                    udp.push(UdpSlot::new(socket, bound.service, udp_batch));
                }
            }
        }
        if listeners.len() > token::MAX_LISTENERS {
            return Err(setup(io::Error::other("too many listeners")));
        }
        let own: Vec<SocketAddr> = (endpoints.iter())
            .filter(|e| e.transport == Transport::Udp)
            .map(|e| e.addr)
            .collect();
        Ok(Sources {
            listeners,
            udp,
            udp_guard: LoopGuard::new(own),
            endpoints,
        })
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

    /// Closes every socket but the metrics listeners (shutdown: new
    /// connections are now refused by the kernel, datagrams dropped by
    /// it); those serve on until the loop ends, so that `/healthz` can say
    /// the server is draining. UDP answers still waiting are forgotten, and
    /// their bytes given back to `budget`.
    pub(super) fn close<P: Poller>(&mut self, poller: &mut P, budget: &mut Budget) {
        for slot in &mut self.listeners {
            if slot.service == Service::Metrics {
                continue;
            }
            if let Some(socket) = slot.socket.take() {
                // A paused listener is not registered: the error is moot.
                let _ = poller.deregister(socket.as_raw_fd());
            }
        }
        for slot in &mut self.udp {
            slot.port.close(budget);
            if let Some(socket) = slot.socket.take() {
                let _ = poller.deregister(socket.as_raw_fd());
            }
        }
    }
}

impl Sources {
    /// Listeners resting after an accept error, now.
    pub(super) fn paused(&self) -> usize {
        self.listeners.iter().filter(|slot| slot.paused).count()
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
    fn new(socket: UdpSocket, service: Service, batch: usize) -> UdpSlot {
        // An echo answers each datagram with itself, so a run that came
        // coalesced goes back as one; daytime's answers are not its
        // datagrams, and it takes them one by one (`udp/batch.rs`).
        if service == Service::Echo && batch > 1 {
            udp::accept_coalesced(&socket);
        }
        UdpSlot {
            socket: Some(socket),
            service,
            queued: false,
            port: Port::new(batch),
        }
    }
}
