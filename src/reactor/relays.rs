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

/// How a connect in progress is doing, as its socket says.
fn connect_result(stream: &TcpStream) -> Option<io::Result<()>> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) => Some(Err(e)),
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
            Err(e) => {
                // Failed before any handshake (out of descriptors, no
                // route): told at once, best effort.
                self.stats.upstream_failed += 1;
                self.stats.closed += 1;
                debug!("relay for {peer}: connect to {addr}: {e}");
                let _ = std::io::Write::write(&mut &client, &notice(&e));
                return;
            }
        };
        for stream in [&client, &upstream] {
            if let Err(e) = stream.set_nodelay(true) {
                debug!("relay for {peer}: set_nodelay: {e}");
            }
        }
        let key = self.relays.slots.vacant_key();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&upstream);
        if let Err(e) = self
            .poller
            .register(fd, token::relay(key, UPSTREAM), Interest::WRITABLE)
        {
            self.stats.closed += 1;
            debug!("relay for {peer}: cannot register: {e}");
            return;
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
    let reason = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::TimedOut => "connect timed out".to_string(),
        _ => e.to_string(),
    };
    format!("ERR upstream: {reason}\r\n").into_bytes()
}
