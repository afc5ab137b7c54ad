//! Relays: the loop opening a connection of its own, and pairing it with
//! a client (`Config::upstream`; `examples/proxy.rs`).
//!
//! With an upstream set, a client accepted on an echo listener is not
//! echoed: the loop opens a non-blocking connect to the upstream, and once
//! it is connected relays each socket's input to the other
//! (`connection/relay.rs`, the pair's rules). Pairs live in a slab of
//! their own, their ends named by tokens of their own range (`token.rs`);
//! a pair counts as one echo connection against `--max-connections`.
//!
//! # A non-blocking connect
//!
//! `connect` on a non-blocking socket returns at once (`EINPROGRESS`); the
//! socket becomes *writable* when the handshake has ended, either way.
//! So the upstream end is registered for `WRITABLE` alone, and each of its
//! events asks the socket how it went: `SO_ERROR` set means it failed
//! (refused, unreachable), a peer address means it connected, and neither
//! means the event was spurious and the connect is still under way. The
//! client is not read meanwhile (not registered at all: on poll(2) and
//! select(2) its input would be reported at every wait), and the connect
//! has a deadline, `Config::connect_timeout`.
//!
//! Connected: counted (`upstream_connected`), and the pair's turn takes
//! over. Refused, unreachable or timed out: counted (`upstream_failed`),
//! the client is told `ERR upstream: REASON` and closed gracefully
//! ([`Pair::refuse`]), its linger bounded by [`LINGER_TIMEOUT`].
//!
//! # Time and shutdown
//!
//! A pair's timer carries no generation: the pair keeps its own deadline,
//! and a timer for a slot whose pair has changed (or whose deadline moved)
//! finds the deadline not yet due and does nothing. A graceful shutdown
//! ends every client's input ([`Pair::end_client_input`]): the upstream
//! gets our FIN after what is pending, its answers still reach the client,
//! and the pair ends when the upstream closes, or at the shutdown
//! deadline.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;
use slab::Slab;

use super::Reactor;
use crate::config::Config;
use crate::connection::{
    CLIENT, CloseReason, LINGER_TIMEOUT, Outcome, Pair, Ready, RelayCx, UPSTREAM,
};
use crate::poller::{Interest, Poller};
use crate::protocol::Handler;
use crate::timer::TimerKind;
use crate::token;

/// How long a pair that found the budget full waits before it reads
/// again.
const RETRY: Duration = Duration::from_millis(10);

/// Where a pair is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The upstream's connect is under way.
    Connecting,
    /// Relaying both ways.
    Relaying,
    /// The upstream could not be reached; the client is being told.
    Refused,
}

/// A pair, and what the loop knows of it.
#[derive(Debug)]
struct Relay {
    pair: Pair<TcpStream>,
    client: SocketAddr,
    stage: Stage,
    /// The connect's deadline, or the refused client's linger bound.
    deadline: Instant,
    /// On the run-next queue already.
    queued: bool,
}

/// Every pair, and where they connect to.
#[derive(Debug, Default)]
pub(super) struct Relays {
    /// The upstream and the connect timeout; `None`: no relaying (echo
    /// listeners echo).
    upstream: Option<(SocketAddr, Duration)>,
    slots: Slab<Relay>,
}

impl Relays {
    pub(super) fn new(upstream: Option<SocketAddr>, connect_timeout: Duration) -> Relays {
        Relays {
            upstream: upstream.map(|addr| (addr, connect_timeout)),
            slots: Slab::new(),
        }
    }

    /// Whether echo clients are relayed.
    pub(super) fn is_on(&self) -> bool {
        self.upstream.is_some()
    }

    /// Pairs open now.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether slot `key` holds a pair.
    pub(super) fn contains(&self, key: usize) -> bool {
        self.slots.contains(key)
    }
}

/// Refuses what relaying cannot be combined with (yet): a protocol other
/// than raw bytes (a relay passes bytes, it does not answer them), fault
/// flags, and `--max-connections-per-ip` (a pair's client is counted
/// nowhere else).
pub(super) fn check_config(config: &Config, handler: &Handler) -> io::Result<()> {
    if config.upstream.is_none() {
        return Ok(());
    }
    let clash = if !matches!(handler, Handler::Raw) {
        Some("a protocol (--mode line or frame, or an embedder's)")
    } else if config.delay.is_some() || config.close_after.is_some() || config.reset_after.is_some()
    {
        Some("fault flags (--delay, --close-after, --reset-after)")
    } else if config.max_connections_per_ip.is_some() {
        Some("--max-connections-per-ip")
    } else {
        None
    };
    match clash {
        Some(what) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("an upstream (relaying) cannot be combined with {what}"),
        )),
        None => Ok(()),
    }
}

/// How a connect in progress is doing, as its socket says: `None` while
/// it has neither an error nor a peer (`ENOTCONN`: a spurious event).
fn connect_result(stream: &TcpStream) -> Option<io::Result<()>> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => Some(Err(e)),
        Ok(None) => stream.peer_addr().ok().map(|_| Ok(())),
    }
}

impl<P: Poller> Reactor<P> {
    /// Opens the upstream connect for a client accepted from `peer`, and
    /// seats the pair (the client's limits were judged already).
    pub(super) fn open_relay(&mut self, client: TcpStream, peer: SocketAddr) {
        let Some((addr, timeout)) = self.relays.upstream else {
            return;
        };
        self.stats.accepted += 1;
        let upstream = match TcpStream::connect(addr) {
            Ok(upstream) => upstream,
            // Failed before any handshake (out of descriptors, no route).
            Err(e) => return self.fail_at_once(&client, peer, &e),
        };
        for stream in [&client, &upstream] {
            if let Err(e) = stream.set_nodelay(true) {
                debug!("relay for {peer}: set_nodelay: {e}");
            }
        }
        let key = self.relays.slots.vacant_key();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&upstream);
        let token = token::relay(key, UPSTREAM);
        if let Err(e) = self.poller.register(fd, token, Interest::WRITABLE) {
            // select(2) cannot watch the upstream's descriptor, say.
            return self.fail_at_once(&client, peer, &e);
        }
        let deadline = self.clock.now + timeout;
        self.relays.slots.insert(Relay {
            pair: Pair::connecting(client, upstream),
            client: peer,
            stage: Stage::Connecting,
            deadline,
            queued: false,
        });
        self.timers
            .schedule(deadline, TimerKind::RelayDeadline(key));
        self.classes[super::Class::Echo].open += 1;
        self.stats.relays = self.relays.len() as u64;
        debug!("relay {key}: from {peer}, connecting to {addr}");
    }

    /// A client whose upstream failed before there was a pair: counted,
    /// told in one write (its socket is fresh, so the send buffer has
    /// room), and closed.
    fn fail_at_once(&mut self, client: &TcpStream, peer: SocketAddr, e: &io::Error) {
        self.stats.upstream_failed += 1;
        self.stats.closed += 1;
        debug!("relay for {peer}: upstream: {e}");
        let _ = std::io::Write::write(&mut &*client, &notice(e));
    }

    /// An event for end `side` of pair `key`. Out of line: the loop's
    /// dispatch, which every echo passes through, stays as it was.
    #[inline(never)]
    pub(super) fn on_relay_event(&mut self, key: usize, side: usize, ready: Ready) {
        let Some(relay) = self.relays.slots.get_mut(key) else {
            return;
        };
        if relay.stage == Stage::Connecting {
            // Only the upstream is registered; anything else is stale.
            if side == UPSTREAM {
                self.check_connect(key);
            }
            return;
        }
        relay.pair.hold(side, ready);
        if !relay.queued {
            self.drive_relay(key);
        }
    }

    /// A pair the previous tick left on the run-next queue.
    #[inline(never)]
    pub(super) fn relay_queued(&mut self, key: usize) {
        if let Some(relay) = self.relays.slots.get_mut(key) {
            relay.queued = false;
            self.drive_relay(key);
        }
    }

    /// Asks the upstream's socket how its connect went, and acts on it.
    fn check_connect(&mut self, key: usize) {
        let relay = &mut self.relays.slots[key];
        match connect_result(relay.pair.upstream()) {
            None => {}
            Some(Ok(())) => {
                relay.stage = Stage::Relaying;
                relay.pair.connected();
                if self.stop.shutting_down {
                    // Connected during a shutdown: as `drain_relays`.
                    relay.pair.end_client_input();
                }
                self.stats.upstream_connected += 1;
                debug!("relay {key}: connected");
                self.drive_relay(key);
            }
            Some(Err(e)) => self.refuse_relay(key, &e),
        }
    }

    /// The upstream cannot be reached: counted, and the client told.
    fn refuse_relay(&mut self, key: usize, e: &io::Error) {
        self.stats.upstream_failed += 1;
        let now = self.clock.now;
        let relay = &mut self.relays.slots[key];
        self.admission.warn_rate_limited(
            now,
            format_args!("relay {key} for {}: upstream: {e}", relay.client),
        );
        relay.stage = Stage::Refused;
        relay.deadline = now + LINGER_TIMEOUT;
        let mut cx = RelayCx {
            key,
            poller: &mut self.poller,
            buf: &mut self.lent.read_buf[..],
            stats: &mut self.stats,
            budget: &mut self.budget,
        };
        relay.pair.refuse(&notice(e), &mut cx);
        self.timers
            .schedule(relay.deadline, TimerKind::RelayDeadline(key));
        self.drive_relay(key);
    }

    /// One turn of pair `key`, and what its outcome calls for.
    fn drive_relay(&mut self, key: usize) {
        let Some(relay) = self.relays.slots.get_mut(key) else {
            return;
        };
        let mut cx = RelayCx {
            key,
            poller: &mut self.poller,
            buf: &mut self.lent.read_buf[..],
            stats: &mut self.stats,
            budget: &mut self.budget,
        };
        match relay.pair.drive(&mut cx) {
            Outcome::Keep => {}
            Outcome::Requeue => {
                if !std::mem::replace(&mut relay.queued, true) {
                    self.run_next.push(token::relay(key, CLIENT));
                }
            }
            Outcome::Starved { .. } => {
                let at = self.clock.now + RETRY;
                self.timers.schedule(at, TimerKind::RelayRetry(key));
            }
            Outcome::Close(reason) => self.close_relay(key, reason),
        }
    }

    /// Pair `key`'s deadline may have come.
    pub(super) fn relay_deadline(&mut self, key: usize) {
        let Some(relay) = self.relays.slots.get(key) else {
            return;
        };
        if relay.deadline > self.clock.now {
            // A timer of an earlier pair in this slot, or moved on.
            return;
        }
        match relay.stage {
            Stage::Connecting => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                self.refuse_relay(key, &e);
            }
            Stage::Refused => self.close_relay(key, CloseReason::LingerTimeout),
            Stage::Relaying => {}
        }
    }

    /// A pair that found the budget full tries again.
    pub(super) fn relay_retry(&mut self, key: usize) {
        if let Some(relay) = self.relays.slots.get_mut(key) {
            relay.pair.unstarve();
            if !relay.queued {
                self.drive_relay(key);
            }
        }
    }

    /// Closes pair `key`: both sockets, its bytes given back.
    pub(super) fn close_relay(&mut self, key: usize, reason: CloseReason) {
        let mut relay = self.relays.slots.remove(key);
        relay.pair.deregister(&mut self.poller);
        self.budget.settle(relay.pair.held(), 0);
        self.classes[super::Class::Echo].open -= 1;
        self.stats.closed += 1;
        self.stats.relays = self.relays.len() as u64;
        if let CloseReason::LingerTimeout = reason {
            self.stats.linger_timeouts += 1;
        }
        self.compact_timers();
        debug!("relay {key} for {}: closed ({reason})", relay.client);
    }

    /// A graceful shutdown: every client's input ends; the upstreams'
    /// answers still flow until they close.
    pub(super) fn drain_relays(&mut self) {
        let keys: Vec<usize> = self.relays.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            let relay = &mut self.relays.slots[key];
            if relay.stage == Stage::Relaying {
                relay.pair.end_client_input();
                if !relay.queued {
                    self.drive_relay(key);
                }
            }
        }
    }

    /// The shutdown deadline: every pair left is closed.
    pub(super) fn close_relays(&mut self) {
        let keys: Vec<usize> = self.relays.slots.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close_relay(key, CloseReason::ShutdownDeadline);
        }
    }
}

/// What a client whose upstream cannot be reached is told.
fn notice(e: &io::Error) -> Vec<u8> {
    // The OS's text says "(os error 111)" too; the client gets the words.
    let reason = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => e.to_string(),
    };
    format!("ERR upstream: {reason}\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    //! The loop's side of relaying, driven by hand: a reactor that is not
    //! running, ticked until what the test waits for has happened, with a
    //! std listener in the test as the upstream. Deadlines are reached by
    //! setting the loop's clock.

    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    use super::super::Reactor;
    use super::super::rig::{connect, listener, reactor, read_to_eof, tick_until};
    use super::*;
    use crate::config::Config;
    use crate::poller::{Epoll, Poll};
    use crate::service::Service;

    /// A relaying reactor for `upstream`, with a client accepted: the
    /// pair is in slot 0, connecting.
    fn relaying<P: Poller>(upstream: SocketAddr, timeout: Duration) -> (Reactor<P>, TcpStream) {
        let mut r = reactor::<P>(Config {
            upstream: Some(upstream),
            connect_timeout: timeout,
            ..Config::default()
        });
        let (i, addr) = listener(&r, Service::Echo);
        let client = connect(addr);
        r.accept_from(i);
        assert_eq!((r.relays.len(), r.conns.len()), (1, 0));
        assert_eq!(r.relays.slots[0].stage, Stage::Connecting);
        assert_eq!((r.stats.accepted, r.stats.relays), (1, 1));
        assert_eq!(r.classes[super::super::Class::Echo].open, 1);
        (r, client)
    }

    /// An address nobody listens on.
    fn nobody() -> SocketAddr {
        let gone = TcpListener::bind("127.0.0.1:0").expect("bind");
        gone.local_addr().expect("addr")
    }

    /// A listener whose accept queue is full, so a connect to it hangs.
    fn full_listener() -> (socket2::Socket, TcpStream, SocketAddr) {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        socket.bind(&any.into()).expect("bind");
        socket.listen(0).expect("listen");
        let addr = socket
            .local_addr()
            .expect("addr")
            .as_socket()
            .expect("inet");
        let first = TcpStream::connect(addr).expect("the one queued connection");
        (socket, first, addr)
    }

    /// Reads `n` bytes from `s`, or up to its EOF (`n` = `usize::MAX`),
    /// ticking `r` while they come.
    fn read_ticking<P: Poller>(r: &mut Reactor<P>, s: &mut TcpStream, n: usize) -> Vec<u8> {
        s.set_nonblocking(true).expect("nonblocking");
        let mut got = Vec::new();
        tick_until(r, "bytes through the pair", |_| {
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(k) => got.extend_from_slice(&buf[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
            got.len() >= n
        });
        s.set_nonblocking(false).expect("blocking");
        got
    }

    fn pair_both_ways<P: Poller>() {
        let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut r, mut client) = relaying::<P>(upstream.local_addr().expect("addr"), SECS_5);
        tick_until(&mut r, "connected", |r| r.stats.upstream_connected == 1);
        assert_eq!(r.relays.slots[0].stage, Stage::Relaying);
        let (mut up, _) = upstream.accept().expect("accept");
        client.write_all(b"ping").expect("write");
        assert_eq!(read_ticking(&mut r, &mut up, 4), b"ping");
        // More than one read's worth at once: the pair stops at its read
        // budget and comes back from the run-next queue for the rest
        // (no edge would announce it).
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&big).expect("write");
        assert!(
            read_ticking(&mut r, &mut up, big.len()) == big,
            "bulk differs"
        );
        up.write_all(b"pong").expect("write");
        assert_eq!(read_ticking(&mut r, &mut client, 4), b"pong");
        // The client's FIN reaches the upstream; the upstream's ends it.
        client.shutdown(Shutdown::Write).expect("FIN");
        assert_eq!(
            read_ticking(&mut r, &mut up, usize::MAX),
            b"",
            "no FIN upstream"
        );
        up.shutdown(Shutdown::Write).expect("FIN");
        tick_until(&mut r, "the pair closed", |r| r.relays.len() == 0);
        assert_eq!(read_to_eof(client), b"");
        assert_eq!((r.stats.closed, r.stats.relays), (1, 0));
        assert_eq!((r.stats.bytes_in, r.stats.bytes_out), (300_008, 300_008));
        assert_eq!(r.classes[super::super::Class::Echo].open, 0);
        assert_eq!(r.budget.used(), 0);
    }

    const SECS_5: Duration = Duration::from_secs(5);

    #[test]
    fn a_pair_relays_both_ways_and_closes_when_both_fins_are_passed_on() {
        pair_both_ways::<Epoll>();
        pair_both_ways::<Poll>();
    }

    #[test]
    fn a_refused_connect_is_counted_told_and_closed_at_the_client_s_fin() {
        let (mut r, client) = relaying::<Epoll>(nobody(), SECS_5);
        tick_until(&mut r, "refused", |r| r.stats.upstream_failed == 1);
        assert_eq!(r.relays.slots[0].stage, Stage::Refused);
        let line = read_to_eof(client.try_clone().expect("clone"));
        assert_eq!(line, b"ERR upstream: connection refused\r\n");
        drop(client);
        tick_until(&mut r, "closed", |r| r.relays.len() == 0);
        assert_eq!((r.stats.closed, r.stats.linger_timeouts), (1, 0));
        assert_eq!(r.stats.upstream_connected, 0);
    }

    #[test]
    fn a_connect_that_hangs_times_out_at_its_deadline_and_the_linger_is_bounded() {
        let (_full, _first, addr) = full_listener();
        let timeout = Duration::from_secs(3);
        let (mut r, client) = relaying::<Epoll>(addr, timeout);
        let opened = r.clock.now;
        r.clock.tick(opened + timeout - Duration::from_nanos(1));
        r.fire_timers();
        assert_eq!(r.relays.slots[0].stage, Stage::Connecting);
        r.clock.tick(opened + timeout);
        r.fire_timers();
        assert_eq!(r.stats.upstream_failed, 1);
        assert_eq!(
            read_to_eof(client.try_clone().expect("clone")),
            b"ERR upstream: connect timed out\r\n"
        );
        // The client never closes: the linger bound closes it.
        let told = r.clock.now;
        r.clock
            .tick(told + LINGER_TIMEOUT - Duration::from_nanos(1));
        r.fire_timers();
        assert_eq!(r.relays.len(), 1);
        r.clock.tick(told + LINGER_TIMEOUT);
        r.fire_timers();
        assert_eq!(r.relays.len(), 0);
        assert_eq!((r.stats.closed, r.stats.linger_timeouts), (1, 1));
        drop(client);
    }

    #[test]
    fn a_deadline_left_by_an_earlier_pair_in_the_slot_does_nothing() {
        let (_full, _first, addr) = full_listener();
        let (mut r, first) = relaying::<Epoll>(addr, SECS_5);
        let (i, listen) = listener(&r, Service::Echo);
        let opened = r.clock.now;
        r.close_relay(0, CloseReason::PeerClosed);
        drop(first);
        // A second pair takes slot 0 a second later; the first's timer is
        // still in the heap, due a second before the second's deadline.
        r.clock.tick(opened + Duration::from_secs(1));
        let _second = connect(listen);
        r.accept_from(i);
        assert_eq!(r.relays.slots[0].stage, Stage::Connecting);
        r.clock.tick(opened + SECS_5);
        r.fire_timers();
        assert_eq!(r.relays.slots[0].stage, Stage::Connecting);
        assert_eq!(r.stats.upstream_failed, 0);
        r.clock.tick(opened + SECS_5 + Duration::from_secs(1));
        r.fire_timers();
        assert_eq!(r.stats.upstream_failed, 1);
    }

    #[test]
    fn a_connect_that_fails_at_once_is_told_and_counted() {
        // A multicast address: Linux refuses a TCP connect to it before
        // any packet is sent (no route, or ENETUNREACH for the kind of
        // address).
        let multicast = "224.0.0.1:9".parse().expect("address");
        let mut r = reactor::<Epoll>(Config {
            upstream: Some(multicast),
            ..Config::default()
        });
        let (i, addr) = listener(&r, Service::Echo);
        let client = connect(addr);
        r.accept_from(i);
        assert_eq!(r.relays.len(), 0);
        assert_eq!((r.stats.accepted, r.stats.closed), (1, 1));
        assert_eq!(r.stats.upstream_failed, 1);
        let told = String::from_utf8(read_to_eof(client)).expect("text");
        assert!(
            told.starts_with("ERR upstream: ") && told.ends_with("\r\n"),
            "{told:?}"
        );
        assert_eq!(r.classes[super::super::Class::Echo].open, 0);
    }

    #[test]
    fn a_connect_s_socket_says_pending_connected_or_failed() {
        let (_full, _first, hang) = full_listener();
        let hanging = mio::net::TcpStream::connect(hang).expect("connect");
        assert!(connect_result(&hanging).is_none(), "a connect under way");
        let open = TcpListener::bind("127.0.0.1:0").expect("bind");
        let up = mio::net::TcpStream::connect(open.local_addr().expect("addr")).expect("connect");
        let (_server_side, _) = open.accept().expect("accept");
        assert!(matches!(connect_result(&up), Some(Ok(()))));
        let refused = mio::net::TcpStream::connect(nobody()).expect("connect");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let failed = loop {
            if let Some(result) = connect_result(&refused) {
                break result;
            }
            assert!(std::time::Instant::now() < deadline, "never refused");
            std::thread::yield_now();
        };
        assert_eq!(
            failed.expect_err("refused").kind(),
            io::ErrorKind::ConnectionRefused
        );
    }

    #[test]
    fn compaction_keeps_a_live_pair_s_deadline_and_drops_the_others() {
        let (_full, _first, hang) = full_listener();
        let (mut r, _client) = relaying::<Epoll>(hang, SECS_5);
        let opened = r.clock.now;
        for key in 100..200 {
            r.timers.schedule(opened, TimerKind::RelayRetry(key));
        }
        r.compact_timers();
        assert_eq!(r.timers.len(), 1, "only the live pair's deadline is left");
        r.clock.tick(opened + SECS_5);
        r.fire_timers();
        assert_eq!(r.stats.upstream_failed, 1, "its deadline was lost");
    }

    #[test]
    fn a_pair_that_finds_the_budget_full_reads_again_after_its_retry() {
        let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut r, mut client) = relaying::<Epoll>(upstream.local_addr().expect("addr"), SECS_5);
        tick_until(&mut r, "connected", |r| r.stats.upstream_connected == 1);
        let (mut up, _) = upstream.accept().expect("accept");
        let limit = r.budget.limit();
        r.budget.settle(0, limit);
        client.write_all(b"held back").expect("write");
        tick_until(&mut r, "starved", |r| r.budget.times_full() > 0);
        let now = r.clock.now;
        let early: Vec<TimerKind> = std::iter::from_fn(|| r.timers.pop_due(now)).collect();
        assert!(!early.contains(&TimerKind::RelayRetry(0)), "{early:?}");
        r.budget.settle(limit, 0);
        let at = now + RETRY;
        let due: Vec<TimerKind> = std::iter::from_fn(|| r.timers.pop_due(at)).collect();
        assert!(due.contains(&TimerKind::RelayRetry(0)), "{due:?}");
        r.relay_retry(0);
        assert_eq!(read_ticking(&mut r, &mut up, 9), b"held back");
    }

    #[test]
    fn closed_pairs_leave_no_timers_behind() {
        let mut r = reactor::<Epoll>(Config {
            upstream: Some(nobody()),
            ..Config::default()
        });
        let (i, addr) = listener(&r, Service::Echo);
        for n in 1..=40 {
            let client = connect(addr);
            r.accept_from(i);
            tick_until(&mut r, "refused", |r| r.stats.upstream_failed == n);
            drop(client);
            tick_until(&mut r, "closed", |r| r.relays.len() == 0);
        }
        // Each pair armed a connect deadline and a linger bound; with no
        // pair left, what compaction keeps is bounded (`compact_timers`).
        assert!(r.timers.len() <= 32, "{} timers left", r.timers.len());
    }

    #[test]
    fn a_shutdown_ends_the_client_s_input_and_its_deadline_closes_what_is_left() {
        let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut r, client) = relaying::<Epoll>(upstream.local_addr().expect("addr"), SECS_5);
        tick_until(&mut r, "connected", |r| r.stats.upstream_connected == 1);
        let (mut up, _) = upstream.accept().expect("accept");
        // A second pair, still connecting when the shutdown comes.
        let (_full, _first, hang) = full_listener();
        r.relays.upstream = Some((hang, SECS_5));
        let (i, addr) = listener(&r, Service::Echo);
        let _late = connect(addr);
        r.accept_from(i);
        assert_eq!(r.relays.slots[1].stage, Stage::Connecting);
        r.begin_shutdown();
        // The upstream sees our FIN at once; its last answer still goes
        // through.
        assert_eq!(read_ticking(&mut r, &mut up, usize::MAX), b"");
        up.write_all(b"last").expect("write");
        let mut reader = client.try_clone().expect("clone");
        assert_eq!(read_ticking(&mut r, &mut reader, 4), b"last");
        assert_eq!(r.relays.len(), 2, "closed before the upstream did");
        // The deadline closes both.
        let now = r.clock.now;
        r.timers.schedule(now, TimerKind::ShutdownDeadline);
        r.fire_timers();
        assert_eq!(r.relays.len(), 0);
        assert_eq!(r.stats.closed, 2);
        drop(client);
    }

    #[test]
    fn relaying_refuses_a_protocol_faults_and_a_per_host_limit() {
        let upstream = Some("127.0.0.1:9".parse().expect("address"));
        let base = Config {
            upstream,
            ..Config::default()
        };
        assert!(check_config(&base, &Handler::Raw).is_ok());
        assert!(
            check_config(
                &Config::default(),
                &Handler::Protocol(Box::new(crate::discard::Swallow))
            )
            .is_ok()
        );
        let protocol = Handler::Protocol(Box::new(crate::discard::Swallow));
        let delay = Config {
            delay: Some(Duration::from_millis(1)),
            ..base.clone()
        };
        let close = Config {
            close_after: Some(1),
            ..base.clone()
        };
        let reset = Config {
            reset_after: Some(1),
            ..base.clone()
        };
        let per_ip = Config {
            max_connections_per_ip: Some(1),
            ..base.clone()
        };
        let refused = [
            (check_config(&base, &protocol), "a protocol"),
            (check_config(&delay, &Handler::Raw), "fault flags"),
            (check_config(&close, &Handler::Raw), "fault flags"),
            (check_config(&reset, &Handler::Raw), "fault flags"),
            (
                check_config(&per_ip, &Handler::Raw),
                "--max-connections-per-ip",
            ),
        ];
        for (result, named) in refused {
            let e = result.expect_err(named);
            assert!(e.to_string().contains(named), "{e}");
        }
    }
}
