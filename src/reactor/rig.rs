//! What the loop's own tests share: a reactor that is not running, on a
//! loopback listener, driven by hand one tick at a time, and clients of
//! it. Nothing here sleeps: a tick waits at most a few milliseconds for
//! events that are already on their way over loopback.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{EVENTS_CAPACITY, Reactor, ready};
use crate::config::Config;
use crate::poller::Poller;
use crate::protocol::Handler;
use crate::service::Service;
use crate::sockets::Sockets;
use crate::timer::TimerKind;

/// A raw echo reactor on one loopback listener, with `config`'s
/// limits, not running.
pub(super) fn reactor<P: Poller>(config: Config) -> Reactor<P> {
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        ..config
    };
    let sockets = Sockets::bind(&config).expect("bind");
    Reactor::bind(&config, sockets, Handler::Raw).expect("reactor")
}

/// The index of the first listener of `service`, and its address.
pub(super) fn listener<P: Poller>(r: &Reactor<P>, service: Service) -> (usize, SocketAddr) {
    let i = (r.sources.listeners.iter())
        .position(|l| l.service == service)
        .expect("a listener");
    let socket = r.sources.listeners[i].socket.as_ref().expect("open");
    (i, socket.local_addr().expect("addr"))
}

/// A client of `to` from `from` (any port), connected: the server's
/// end waits in the listener's backlog.
pub(super) fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from = SocketAddr::from((from, 0));
    socket.bind(&from.into()).expect("bind");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

/// A client of `to` from 127.0.0.1.
pub(super) fn connect(to: SocketAddr) -> TcpStream {
    connect_from([127, 0, 0, 1], to)
}

/// What a client turned away reads, to EOF.
pub(super) fn read_to_eof(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    got
}

/// The kinds of the timers due by `at` (taken out of the heap).
pub(super) fn due<P: Poller>(r: &mut Reactor<P>, at: std::time::Instant) -> Vec<TimerKind> {
    std::iter::from_fn(|| r.timers.pop_due(at)).collect()
}

/// One tick of the loop, as `Reactor::run` takes it: events (waiting up
/// to 10 ms for them), the run-next queue, due timers.
pub(super) fn tick<P: Poller>(r: &mut Reactor<P>) {
    let mut events = P::events(EVENTS_CAPACITY);
    r.poller
        .wait(&mut events, Some(Duration::from_millis(10)))
        .expect("wait");
    r.clock.tick(Instant::now());
    let batch = std::mem::take(&mut r.run_next);
    for event in P::iter(&events) {
        r.dispatch(event.token, ready(event));
    }
    for token in batch {
        r.dispatch_queued(token);
    }
    r.fire_timers();
}

/// Ticks until `done` holds (`what` names it for the panic after 10 s).
#[track_caller]
pub(super) fn tick_until<P: Poller>(
    r: &mut Reactor<P>,
    what: &str,
    mut done: impl FnMut(&mut Reactor<P>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(r) {
        assert!(Instant::now() < deadline, "never: {what}");
        tick(r);
    }
}
