//! The backend choice: the one place where `--backend` picks a poller at
//! run time. Everything below [`Server`] is monomorphic, so the loop itself
//! never dispatches dynamically.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{Reactor, Report};
use crate::config::Config;
use crate::listener::ListenError;
use crate::metrics::Page;
use crate::poller::{Backend, Epoll, Poll, Select};
use crate::protocol::{Handler, Protocol};
use crate::seat::Seat;
use crate::service::{self, Endpoint, Service, Transport};
use crate::shutdown::ShutdownHandle;
use crate::sockets::Sockets;
use crate::stats::Stats;

/// The server: a bound event loop on the backend its [`Config`] names.
///
/// ```no_run
/// let server = echo_reactor::Server::bind(&echo_reactor::Config::default())?;
/// println!("listening on {:?}", server.local_addrs());
/// let report = server.run()?;
/// println!("served {} connections", report.stats.accepted);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Server(Backends);

/// A reactor per backend. select's two fd_sets make its variant 256 bytes
/// larger; there is one per process, so boxing it would buy nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Backends {
    Epoll(Reactor<Epoll>),
    Poll(Reactor<Poll>),
    Select(Reactor<Select>),
}

/// Calls the same method on whichever reactor a [`Server`] holds.
macro_rules! each_backend {
    ($server:expr, $r:ident => $body:expr) => {
        match $server {
            Backends::Epoll($r) => $body,
            Backends::Poll($r) => $body,
            Backends::Select($r) => $body,
        }
    };
}

impl Server {
    /// Opens every socket `config` asks for on `config.backend`; serves
    /// nothing until [`Server::run`].
    pub fn bind(config: &Config) -> Result<Server, ListenError> {
        Server::with_sockets(config, Sockets::bind(config)?)
    }

    /// A server on sockets already bound ([`Sockets::bind`], perhaps in a
    /// parent process: a worker adopts its slot's); `config` says
    /// everything else.
    pub(crate) fn with_sockets(config: &Config, sockets: Sockets) -> Result<Server, ListenError> {
        Server::serve(config, sockets, Handler::from(config.mode.clone()))
    }

    /// A server whose TCP echo connections speak `protocol` instead of
    /// `config.mode`: any [`Protocol`] the embedder writes, with state
    /// shared by every connection (`protocol` itself) and per connection
    /// ([`Protocol::Session`]). `examples/kv_store.rs` is one;
    /// `docs/adding-a-protocol.md` walks through it.
    pub fn with_protocol(config: &Config, protocol: impl Protocol) -> Result<Server, ListenError> {
        let handler = Handler::Protocol(Box::new(protocol));
        Server::serve(config, Sockets::bind(config)?, handler)
    }

    fn serve(config: &Config, sockets: Sockets, handler: Handler) -> Result<Server, ListenError> {
        Ok(Server(match config.backend {
            Backend::Epoll => Backends::Epoll(Reactor::bind(config, sockets, handler)?),
            Backend::Poll => Backends::Poll(Reactor::bind(config, sockets, handler)?),
            Backend::Select => Backends::Select(Reactor::bind(config, sockets, handler)?),
        }))
    }

    /// Every `config.stats_interval`, hands the counters to `sink` instead
    /// of logging them (a worker sends them to its master). The final
    /// counters are not logged either: they are in the [`Report`]
    /// [`Server::run`] returns.
    pub fn on_stats(&mut self, sink: impl FnMut(&Stats) + Send + 'static) {
        each_backend!(&mut self.0, r => r.on_stats(Box::new(sink)))
    }

    /// Makes this server a worker in `seat` of its master's shared memory
    /// (`supervisor/`).
    pub(crate) fn join(&mut self, seat: Seat) {
        each_backend!(&mut self.0, r => r.join(seat))
    }

    /// Metrics connections answer from `page` instead of this server's
    /// counters (a master's page of every worker's).
    pub(crate) fn serve_page(&mut self, page: Arc<dyn Page + Sync>) {
        each_backend!(&mut self.0, r => r.serve_page(page))
    }

    /// Every socket it serves on: which service, TCP or UDP, and the
    /// address as bound (the kernel's port where port 0 was asked for),
    /// in the order of the flags.
    pub fn endpoints(&self) -> &[Endpoint] {
        each_backend!(&self.0, r => r.endpoints())
    }

    /// The addresses of one service on one transport, as bound:
    /// `addrs(Service::Daytime, Transport::Udp)`.
    pub fn addrs(&self, service: Service, transport: Transport) -> Vec<SocketAddr> {
        service::addrs_of(self.endpoints(), service, transport)
    }

    /// The TCP echo listeners' addresses as bound: `addrs(Service::Echo,
    /// Transport::Tcp)`, the one most callers want.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs(Service::Echo, Transport::Tcp)
    }

    /// A handle that stops this server from any thread: the first call
    /// starts a graceful shutdown, a second ends it at once.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        each_backend!(&self.0, r => r.shutdown_handle())
    }

    /// Serves until shut down; returns the final counters.
    pub fn run(self) -> io::Result<Report> {
        each_backend!(self.0, r => r.run())
    }
}
