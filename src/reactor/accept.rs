//! Accepting, and turning clients away: the listener's side of the loop.
//!
//! A listener gets [`ACCEPT_BUDGET`] accepts per tick, then goes on the
//! run-next queue like a connection would: an accept storm cannot stall the
//! clients already connected. A client is turned away, with a one-line
//! notice and at once (so it neither waits in the backlog nor disturbs
//! anyone), when:
//!
//! - the server holds `--max-connections` echo connections already;
//! - its host holds `--max-connections-per-ip` already (`per_ip.rs`);
//! - it came to a `--metrics` listener, and `--metrics-max-connections`
//!   are open already: it reads an HTTP `503` ([`BUSY_ANSWER`]), not the
//!   echo notice. Metrics connections have slots of their own, counted
//!   apart from the echo ones both ways: idle scrapers cannot lock echo
//!   clients out, nor a full echo server its scrapers.
//! - its descriptor is one the backend cannot watch (select: at or above
//!   `FD_SETSIZE`), counted as `unwatchable` and logged once.
//!
//! Descriptor exhaustion (`EMFILE`) is handled with a spare descriptor
//! (`fdlimit.rs`), or, without one, by pausing the listener and retrying
//! from a timer. Repeated warnings are logged at most once per
//! [`WARN_INTERVAL`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};

use super::Reactor;
use super::class::{Class, HTTP_CHECK_INTERVAL};
use crate::connection::{CloseReason, Connection};
use crate::fdlimit::{self, SpareFd};
use crate::metrics::{BUSY_ANSWER, MAX_HEAD};
use crate::per_ip::PerIpLimit;
use crate::poller::{self, Interest, Poller};
use crate::service::{self, Service, Who};
use crate::stats::Stats;
use crate::timer::TimerKind;
use crate::token::{self, Named};

/// Accepts per listener per tick before other sockets get their turn.
pub(crate) const ACCEPT_BUDGET: usize = 64;
/// How long a listener rests after an accept error it cannot shed.
pub(crate) const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Repeated warnings (descriptor exhaustion, connection limits) are logged
/// at most this often.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(1);
/// What a client turned away reads before EOF.
pub(crate) const REJECT_NOTICE: &[u8] = b"ERR too many connections\n";

/// Who may come in: what accepting needs to keep the limits (each class's
/// own limit is in its state, `class.rs`).
#[derive(Debug)]
pub(super) struct Admission {
    /// `--max-connections-per-ip`, when set (echo connections).
    pub(super) per_ip: Option<PerIpLimit>,
    /// Who answers, for a banner template.
    who: Who,
    /// One descriptor held back for `EMFILE`.
    spare: SpareFd,
    /// Whether the first connection the backend could not watch was
    /// logged (once; the `unwatchable` counter keeps count).
    unwatchable_logged: bool,
    last_warning: Option<Instant>,
    /// Errors the next `accept` calls meet instead of the kernel's answer:
    /// tests cannot have `EMFILE` or `EINTR` on demand.
    #[cfg(test)]
    inject: std::collections::VecDeque<io::Error>,
}

impl Admission {
    pub(super) fn new(per_ip: Option<usize>, worker: Option<usize>) -> Admission {
        Admission {
            per_ip: per_ip.map(PerIpLimit::new),
            who: Who::this_host(worker),
            spare: SpareFd::open(),
            unwatchable_logged: false,
            last_warning: None,
            #[cfg(test)]
            inject: std::collections::VecDeque::new(),
        }
    }

    /// `socket.accept()` (in tests, an injected error first).
    #[inline]
    fn accept(&mut self, socket: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        #[cfg(test)]
        if let Some(e) = self.inject.pop_front() {
            return Err(e);
        }
        socket.accept()
    }

    pub(super) fn warn_rate_limited(&mut self, now: Instant, msg: std::fmt::Arguments<'_>) {
        let due = self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= WARN_INTERVAL);
        if due {
            warn!("{msg}");
            self.last_warning = Some(now);
        }
    }
}

/// Why a client is turned away.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// The backend cannot watch its descriptor.
    Unwatchable,
    /// The class's own limit: `--max-connections` for echo,
    /// `--metrics-max-connections` for metrics.
    Full(Class),
    /// `--max-connections-per-ip`.
    PerIp,
}

/// What [`Reactor::shed_one`] managed.
enum Shed {
    /// A pending connection was accepted and closed.
    One,
    /// The backlog was empty after all: the listener is drained.
    NothingPending,
    /// No spare, or accepting failed anyway: pause and retry later.
    Failed,
}

impl<P: Poller> Reactor<P> {
    /// Accepts from listener `i` until it is drained or its budget is spent.
    pub(super) fn accept_from(&mut self, i: usize) {
        for _ in 0..ACCEPT_BUDGET {
            let Some(slot) = self.sources.listeners.get(i) else {
                return;
            };
            let (Some(socket), false) = (slot.socket.as_ref(), slot.paused) else {
                return;
            };
            let service = slot.service;
            match self.admission.accept(socket) {
                Ok((stream, peer)) => self.admit(stream, peer, service),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.accept_errors += 1;
                    if !self.on_accept_error(i, &e) {
                        return;
                    }
                }
            }
        }
        // Budget spent while connections may still be pending: no new edge
        // will say so, so come back next tick (after everyone else).
        if let Some(slot) = self.sources.listeners.get_mut(i)
            && !std::mem::replace(&mut slot.queued, true)
        {
            self.run_next.push(token::listener(i));
        }
    }

    /// Deals with a failed `accept`; true if accepting may go on now.
    fn on_accept_error(&mut self, i: usize, e: &io::Error) -> bool {
        if fdlimit::is_exhaustion(e) {
            self.admission.warn_rate_limited(
                self.clock.now,
                format_args!("accept: {e}; out of file descriptors, shedding new connections"),
            );
            return match self.shed_one(i) {
                Shed::One => true,
                // EMFILE comes before the queue is looked at, so it also
                // means "nothing pending" at times.
                Shed::NothingPending => false,
                Shed::Failed => {
                    self.pause_listener(i);
                    false
                }
            };
        }
        if matches!(
            e.raw_os_error(),
            Some(libc::ECONNABORTED) | Some(libc::EPROTO) | Some(libc::EPERM)
        ) {
            // The handshake was aborted before we got to it: only that
            // connection is concerned.
            debug!("accept: {e}");
            return true;
        }
        // ENOBUFS, ENOMEM, ...: the kernel is short of memory. Retrying at
        // once would spin; rest and come back.
        self.admission.warn_rate_limited(
            self.clock.now,
            format_args!("accept: {e}; retrying shortly"),
        );
        self.pause_listener(i);
        false
    }

    /// The spare-descriptor trick: free one descriptor, accept the pending
    /// connection, close it, take the spare back.
    fn shed_one(&mut self, i: usize) -> Shed {
        let Some(socket) = self.sources.listeners[i].socket.as_ref() else {
            return Shed::Failed;
        };
        if !self.admission.spare.release() {
            return Shed::Failed;
        }
        let result = match socket.accept() {
            Ok((stream, peer)) => {
                debug!("shed {peer}: no descriptors left");
                drop(stream);
                self.stats.rejected += 1;
                Shed::One
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Shed::NothingPending,
            Err(_) => Shed::Failed,
        };
        self.admission.spare.restore();
        result
    }

    fn pause_listener(&mut self, i: usize) {
        self.sources.listeners[i].paused = true;
        // Level-triggered trap: on poll and select a listener with pending
        // connections stays readable, and a paused one would be reported
        // on every `wait` for nothing, spinning the loop until the retry.
        // So a resting listener is not watched at all. (On epoll it would
        // not matter, edges do not repeat, but the loop is the same for
        // all backends; two `epoll_ctl` per pause cost nothing on this
        // rare path.)
        if let Some(socket) = self.sources.listeners[i].socket.as_ref() {
            let _ = self.poller.deregister(socket.as_raw_fd());
        }
        let at = self.clock.now + ACCEPT_RETRY_DELAY;
        self.timers.schedule(at, TimerKind::AcceptRetry(i));
    }

    /// The end of a listener's rest: watch it again, and accept now (the
    /// edge that announced the waiting connections was consumed long ago).
    pub(super) fn resume_listener(&mut self, i: usize) {
        if let Some(slot) = self.sources.listeners.get_mut(i) {
            slot.paused = false;
            if let Some(socket) = slot.socket.as_ref() {
                let fd = socket.as_raw_fd();
                if let Err(e) = self
                    .poller
                    .register(fd, token::listener(i), Interest::READABLE)
                {
                    warn!("cannot watch listener {i} again: {e}");
                }
            }
        }
        self.accept_from(i);
    }

    /// The limit a new client from `peer` of `class` would break, if any.
    ///
    /// An echo client within every limit is counted against its host's
    /// (`--max-connections-per-ip`) at the slab's next key.
    fn limit_broken(
        &mut self,
        stream: &TcpStream,
        peer: SocketAddr,
        class: Class,
        per_host: bool,
    ) -> Option<Limit> {
        if !P::watchable(stream.as_raw_fd()) {
            // select: FD_SETSIZE. Registering would set a bit outside the
            // fd_set, undefined behaviour; the client is turned away with
            // the notice of a full server, which is what it is.
            return Some(Limit::Unwatchable);
        }
        // Each class counts apart, both ways: idle scrapers cannot lock
        // echo clients out, nor a full echo server its scrapers. At the
        // metrics limit an idle keep-alive connection makes room (HTTP
        // lets a server close one between requests; its client opens
        // another), so idle connections cannot deny a scrape: only
        // connections with a request under way can, and those are closed
        // within seconds if it stalls (`check_request`).
        let state = &self.classes[class];
        if state.open >= state.limit && !(class == Class::Http && self.reclaim_idle_http()) {
            return Some(Limit::Full(class));
        }
        if !class.is_small_service() || !per_host {
            // A host's scraper does not use up its echo slots; a proxied
            // socket's host is known once its header is in.
            return None;
        }
        // Checked and counted in one step, last, at the key the connection
        // will have: with `--workers` the count is shared, and a check
        // apart from the count would let two workers both admit a host's
        // last slot.
        let key = self.conns.vacant_key();
        let per_ip = self.admission.per_ip.as_mut();
        per_ip
            .is_some_and(|per_ip| !per_ip.try_admit(key, peer.ip()))
            .then_some(Limit::PerIp)
    }

    /// Closes the metrics connection that has been idle longest between
    /// requests (nothing held, nothing owed), if there is one.
    fn reclaim_idle_http(&mut self) -> bool {
        let idle = (self.conns.iter())
            .filter(|(_, c)| Class::of_generation(c.generation()) == Class::Http)
            .filter(|(_, c)| c.held() == 0 && c.is_open())
            .min_by_key(|(_, c)| c.last_active())
            .map(|(key, _)| key);
        let Some(key) = idle else {
            return false;
        };
        debug!(
            "{}: idle keep-alive closed for a new metrics connection",
            Named(token::connection(key, self.conns[key].generation()))
        );
        self.close(key, CloseReason::TimedOut);
        self.stats.http_reclaimed += 1;
        true
    }

    /// Counts and logs a client turned away at `limit`.
    fn note_refusal(&mut self, limit: Limit, fd: i32, peer: SocketAddr) {
        let now = self.clock.now;
        let admission = &mut self.admission;
        match limit {
            Limit::Unwatchable => {
                self.stats.unwatchable += 1;
                if !std::mem::replace(&mut admission.unwatchable_logged, true) {
                    warn!(
                        "descriptor {fd} is beyond what this backend can watch \
                         (select: below FD_SETSIZE = {}); refusing such connections \
                         (counted as unwatchable; use --backend poll or epoll for more)",
                        poller::FD_SETSIZE
                    );
                }
            }
            Limit::Full(
                class @ (Class::Echo | Class::Discard | Class::Chargen | Class::Faults),
            ) => {
                let max = self.classes[class].limit;
                admission.warn_rate_limited(
                    now,
                    format_args!("connection limit ({max}) reached, turning clients away"),
                );
            }
            Limit::Full(Class::Http) => {
                self.stats.http_rejected += 1;
                let max = self.classes[Class::Http].limit;
                admission.warn_rate_limited(
                    now,
                    format_args!(
                        "metrics connection limit ({max}, --metrics-max-connections) \
                         reached, answering 503"
                    ),
                );
            }
            Limit::PerIp => {
                self.stats.rejected_per_ip += 1;
                let max = admission.per_ip.as_ref().map_or(0, PerIpLimit::limit);
                admission.warn_rate_limited(
                    now,
                    format_args!(
                        "{} holds {max} connections (--max-connections-per-ip), \
                         turning it away",
                        peer.ip()
                    ),
                );
            }
        }
    }

    /// Uncounts a connection admitted at `key` that never got in.
    fn forget_host(&mut self, key: usize) {
        if let Some(per_ip) = self.admission.per_ip.as_mut() {
            per_ip.release(key);
        }
    }

    /// Takes in an accepted connection, or turns it away at a limit; with
    /// `--proxy-protocol`, a small service's socket first waits for its
    /// header (`handshake.rs`), and is admitted as the client it names.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, service: Service) {
        let class = self.class_for(service);
        let proxied = self.handshakes.mode.is_some() && class.is_small_service();
        let limit = self.limit_broken(&stream, peer, class, !proxied);
        let limit = limit.or_else(|| {
            (proxied && self.handshakes.len() >= self.classes[Class::Echo].limit)
                .then_some(Limit::Full(class))
        });
        if let Some(limit) = limit {
            if class.is_small_service() {
                turn_away(&stream, REJECT_NOTICE, &mut self.stats);
            } else {
                turn_away_http(&stream, &mut self.stats);
            }
            self.note_refusal(limit, stream.as_raw_fd(), peer);
            return;
        }
        if proxied {
            self.await_header(stream, peer, service);
        } else {
            self.seat(stream, peer, None, class, service);
        }
    }

    /// The class of a connection to `service`.
    fn class_for(&self, service: Service) -> Class {
        match Class::of(service) {
            // Fault flags make every echo connection a faulty one.
            Class::Echo if service == Service::Echo && self.faults.is_some() => Class::Faults,
            class => class,
        }
    }

    /// Admits a socket whose PROXY header named `client` (or its own
    /// address), reached `via` the proxy: the limits it skipped at accept
    /// are judged now, for the client.
    pub(super) fn admit_as(
        &mut self,
        stream: TcpStream,
        client: SocketAddr,
        via: Option<SocketAddr>,
        service: Service,
    ) {
        let class = self.class_for(service);
        if let Some(limit) = self.limit_broken(&stream, client, class, true) {
            turn_away(&stream, REJECT_NOTICE, &mut self.stats);
            self.note_refusal(limit, stream.as_raw_fd(), client);
            return;
        }
        self.seat(stream, client, via, class, service);
    }

    /// Registers an admitted socket as a connection of `class` (its host
    /// counted by `limit_broken` already) and greets it.
    fn seat(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        via: Option<SocketAddr>,
        class: Class,
        service: Service,
    ) {
        if service == Service::Echo && self.relays.is_on() {
            // Relayed instead of echoed (`relays.rs`); `--max-connections-
            // per-ip` is refused with an upstream, so no host was counted.
            self.open_relay(stream, peer);
            return;
        }
        // The key `limit_broken` counted the host at.
        let key = self.conns.vacant_key();
        // Echo replies are small and latency matters: don't let Nagle hold
        // them back waiting for the client's ACK.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: set_nodelay: {e}");
            self.forget_host(key);
            return;
        }
        let generation = class.mark(self.generations.next_generation());
        let token = token::connection(key, generation);
        match Connection::register(stream, token, &mut self.poller, self.clock.stamp) {
            Ok(conn) => {
                let inserted = self.conns.insert(conn);
                debug_assert_eq!(inserted, key);
            }
            Err(e) => {
                warn!("{peer}: cannot register connection: {e}");
                self.forget_host(key);
                return;
            }
        };
        self.stats.accepted += 1;
        self.stats.active = self.conns.len() as u64;
        match via {
            None => debug!("{}: from {peer} ({service:?})", Named(token)),
            Some(via) => debug!("{}: from {peer} via {via} ({service:?})", Named(token)),
        }
        if let Some(trace) = self.trace.as_mut() {
            trace.note(format_args!(
                "accepted {} from {peer}, interest read",
                Named(token)
            ));
        }
        self.classes[class].open += 1;
        match class {
            Class::Echo | Class::Discard | Class::Chargen | Class::Faults => {
                if let Some(idle) = self.settings.idle_timeout {
                    let at = self.clock.now + idle;
                    self.timers.schedule(at, TimerKind::IdleCheck(token));
                }
            }
            Class::Http => {
                self.stats.http_active = self.classes[class].open as u64;
                let at = self.clock.now + HTTP_CHECK_INTERVAL;
                self.timers
                    .schedule(at, TimerKind::RequestCheck(token, false));
            }
        }
        // Line mode's banner, as a template for this client (`{peer}`,
        // `{host}`, `{worker}`), when it is one.
        let banner = (service == Service::Echo)
            .then(|| self.classes[class].handler.greeting())
            .and_then(|text| service::render_banner(text, peer, &self.admission.who));
        self.with_connection(key, |conn, cx| {
            let greeted = conn.greet(service, banner, cx);
            Some(if class == Class::Chargen {
                super::others::chargen_pump(conn, greeted, cx)
            } else {
                greeted
            })
        });
    }
}

/// Tells a client the server will not serve it (`notice`), then closes it
/// (on drop). Best effort, one syscall: the socket is fresh, so its send
/// buffer has room; if not, the client just sees EOF.
fn turn_away(stream: &TcpStream, notice: &[u8], stats: &mut Stats) {
    stats.rejected += 1;
    let _ = (&*stream).write(notice);
}

/// [`turn_away`] for a metrics client: the 503, then what it sent so far
/// read and dropped. An HTTP client writes its request as soon as it is
/// connected, usually before we accept; closing a socket with unread
/// input sends a reset instead of a FIN, and the client's kernel may then
/// throw the 503 away unread ("connection reset by peer" instead of a
/// status). A request head fits in [`MAX_HEAD`], so a few reads drain it;
/// whatever comes later still meets the reset, as it would anywhere.
fn turn_away_http(stream: &TcpStream, stats: &mut Stats) {
    turn_away(stream, BUSY_ANSWER, stats);
    let mut sink = [0u8; 4096];
    for _ in 0..MAX_HEAD.div_ceil(sink.len()) + 1 {
        match (&*stream).read(&mut sink) {
            Ok(n) if n == sink.len() => {}
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Admission driven by hand: a reactor that is not running, its
    //! listeners real sockets on loopback; a test connects, then calls the
    //! step it tests (`accept_from`, `on_accept_error`, ...) and looks at
    //! the connections, the counters, the timers and what the client reads.
    //! Nothing waits on time.

    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::time::Duration;

    use super::super::Reactor;
    use super::super::class::{Class, HTTP_CHECK_INTERVAL};
    use super::super::rig::{connect, connect_from, due, listener, reactor, read_to_eof};
    use super::{ACCEPT_RETRY_DELAY, REJECT_NOTICE, turn_away_http};
    use crate::config::Config;
    use crate::connection::Ready;
    use crate::metrics::{BUSY_ANSWER, MAX_HEAD};
    use crate::poller::{Epoll, Poller, Select};
    use crate::protocol::Handler;
    use crate::service::Service;
    use crate::sockets::Sockets;
    use crate::stats::Stats;
    use crate::timer::TimerKind;
    use crate::token;

    #[test]
    fn a_client_within_every_limit_is_taken_in_counted_and_timed() {
        let idle = Duration::from_secs(7);
        let mut r = reactor::<Epoll>(Config {
            idle_timeout: Some(idle),
            ..Config::default()
        });
        let (i, addr) = listener(&r, Service::Echo);
        let _client = connect(addr);
        r.accept_from(i);
        assert_eq!(r.conns.len(), 1);
        assert_eq!((r.stats.accepted, r.stats.active), (1, 1));
        assert_eq!(r.classes[Class::Echo].open, 1);
        assert_eq!(r.stats.accept_errors, 0);
        assert!(r.run_next.is_empty(), "the backlog was drained");
        // Its idle check is due `--idle-timeout` after it came in.
        let now = r.clock.now;
        let early = due(&mut r, now + idle - Duration::from_nanos(1));
        assert!(
            !early.iter().any(|k| matches!(k, TimerKind::IdleCheck(_))),
            "{early:?}"
        );
        assert!(
            due(&mut r, now + idle)
                .iter()
                .any(|k| matches!(k, TimerKind::IdleCheck(_))),
            "no idle check"
        );
    }

    #[test]
    fn past_max_connections_a_client_reads_the_notice_and_a_freed_slot_is_taken_again() {
        let mut r = reactor::<Epoll>(Config {
            max_connections: Some(1),
            ..Config::default()
        });
        let (i, addr) = listener(&r, Service::Echo);
        let _first = connect(addr);
        let second = connect(addr);
        r.accept_from(i);
        assert_eq!(r.conns.len(), 1);
        assert_eq!(read_to_eof(second), REJECT_NOTICE);
        assert_eq!((r.stats.accepted, r.stats.rejected), (1, 1));
        let (key, _) = r.conns.iter().next().expect("the first");
        r.close(key, crate::connection::CloseReason::PeerClosed);
        let _third = connect(addr);
        r.accept_from(i);
        assert_eq!(r.conns.len(), 1, "the freed slot");
        assert_eq!(r.stats.accepted, 2);
    }

    #[test]
    fn a_host_at_its_limit_is_turned_away_and_another_host_is_not() {
        let mut r = reactor::<Epoll>(Config {
            max_connections_per_ip: Some(1),
            ..Config::default()
        });
        let (i, addr) = listener(&r, Service::Echo);
        let _first = connect(addr);
        let second = connect(addr);
        let _other = connect_from([127, 0, 0, 2], addr);
        r.accept_from(i);
        assert_eq!(r.conns.len(), 2);
        assert_eq!(read_to_eof(second), REJECT_NOTICE);
        assert_eq!((r.stats.rejected, r.stats.rejected_per_ip), (1, 1));
    }

    #[test]
    fn a_host_counted_for_a_connection_that_never_got_in_is_forgotten() {
        let mut r = reactor::<Epoll>(Config {
            max_connections_per_ip: Some(1),
            ..Config::default()
        });
        let (_, addr) = listener(&r, Service::Echo);
        let client = connect(addr);
        let peer = client.local_addr().expect("addr");
        let stream = mio::net::TcpStream::from_std(client);
        let key = r.conns.vacant_key();
        assert!(r.limit_broken(&stream, peer, Class::Echo, true).is_none());
        assert!(
            r.limit_broken(&stream, peer, Class::Echo, true).is_some(),
            "counted"
        );
        r.forget_host(key);
        assert!(
            r.limit_broken(&stream, peer, Class::Echo, true).is_none(),
            "still counted"
        );
    }

    #[test]
    fn a_listener_gives_way_after_its_accept_budget_and_comes_back_once() {
        let mut r = reactor::<Epoll>(Config::default());
        let (i, addr) = listener(&r, Service::Echo);
        let _clients: Vec<TcpStream> = (0..=super::ACCEPT_BUDGET).map(|_| connect(addr)).collect();
        r.accept_from(i);
        assert_eq!(r.conns.len(), super::ACCEPT_BUDGET);
        assert_eq!(r.run_next, vec![token::listener(i)]);
        // Its queued turn (while still marked queued) takes the rest, and
        // does not queue it twice.
        r.accept_from(i);
        assert_eq!(r.conns.len(), super::ACCEPT_BUDGET + 1);
        assert_eq!(r.run_next, vec![token::listener(i)]);
        assert_eq!(r.stats.accept_errors, 0);
    }

    #[test]
    fn an_accept_error_is_counted_and_rests_the_listener_until_it_resumes() {
        let mut r = reactor::<Epoll>(Config::default());
        let (i, addr) = listener(&r, Service::Echo);
        // A socket that is bound but not listening: `accept` fails with
        // EINVAL, an error the listener cannot shed.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_nonblocking(true).expect("nonblocking");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        socket.bind(&any.into()).expect("bind");
        let working = r.sources.listeners[i]
            .socket
            .replace(mio::net::TcpListener::from_std(
                std::net::TcpListener::from(socket),
            ));
        r.accept_from(i);
        assert_eq!(r.stats.accept_errors, 1);
        assert!(r.sources.listeners[i].paused);
        let now = r.clock.now;
        let early = due(&mut r, now + ACCEPT_RETRY_DELAY - Duration::from_nanos(1));
        assert!(!early.contains(&TimerKind::AcceptRetry(i)), "{early:?}");
        assert_eq!(
            due(&mut r, now + ACCEPT_RETRY_DELAY),
            vec![TimerKind::AcceptRetry(i)]
        );
        // While it rests, nothing is accepted; resumed, it accepts at once.
        r.sources.listeners[i].socket = working;
        let _client = connect(addr);
        r.accept_from(i);
        assert_eq!(r.conns.len(), 0);
        r.resume_listener(i);
        assert!(!r.sources.listeners[i].paused);
        assert_eq!(r.conns.len(), 1);
    }

    #[test]
    fn an_interrupted_accept_is_tried_again_and_a_shed_one_lets_the_rest_in() {
        let mut r = reactor::<Epoll>(Config::default());
        let (i, addr) = listener(&r, Service::Echo);
        let _clients = [connect(addr), connect(addr), connect(addr)];
        let error = io::Error::from_raw_os_error;
        r.admission.inject.push_back(error(libc::EINTR));
        r.admission.inject.push_back(error(libc::EMFILE));
        r.accept_from(i);
        // EINTR: tried again; EMFILE: the first pending client shed with
        // the spare; then the other two taken in, in the same turn.
        assert_eq!(r.stats.accept_errors, 1, "EINTR counted as an error");
        assert!(!r.sources.listeners[i].paused);
        assert_eq!(r.stats.rejected, 1);
        assert_eq!(r.conns.len(), 2, "the clients behind the shed one");
    }

    #[test]
    fn out_of_descriptors_with_nothing_pending_ends_the_turn() {
        let mut r = reactor::<Epoll>(Config::default());
        let (i, _) = listener(&r, Service::Echo);
        let error = io::Error::from_raw_os_error;
        r.admission.inject.push_back(error(libc::EMFILE));
        r.admission.inject.push_back(error(libc::EMFILE));
        r.accept_from(i);
        // One accept, one look for a pending client: the turn is over
        // (trying again at once would spin while descriptors are short).
        assert_eq!(r.stats.accept_errors, 1);
        assert_eq!(r.admission.inject.len(), 1, "accepted again");
        assert!(r.run_next.is_empty());
    }

    #[test]
    fn accept_errors_are_told_apart() {
        let mut r = reactor::<Epoll>(Config::default());
        let (i, addr) = listener(&r, Service::Echo);
        let error = io::Error::from_raw_os_error;
        // An aborted handshake concerns that connection alone.
        assert!(r.on_accept_error(i, &error(libc::ECONNABORTED)));
        assert!(!r.sources.listeners[i].paused);
        // Out of descriptors, nothing pending: drained, not resting.
        assert!(!r.on_accept_error(i, &error(libc::EMFILE)));
        assert!(!r.sources.listeners[i].paused);
        // Out of descriptors, a client pending: shed with the spare, and
        // accepting may go on.
        let shed = connect(addr);
        assert!(r.on_accept_error(i, &error(libc::EMFILE)));
        assert_eq!(read_to_eof(shed), b"", "shed without a word");
        assert_eq!(r.stats.rejected, 1);
        assert!(!r.sources.listeners[i].paused);
        // No spare left: rest.
        assert!(r.admission.spare.release());
        let _pending = connect(addr);
        assert!(!r.on_accept_error(i, &error(libc::EMFILE)));
        assert!(r.sources.listeners[i].paused);
        r.admission.spare.restore();
        // Short of kernel memory: rest.
        let mut r = reactor::<Epoll>(Config::default());
        assert!(!r.on_accept_error(i, &error(libc::ENOBUFS)));
        assert!(r.sources.listeners[i].paused);
    }

    #[test]
    fn shedding_from_a_listener_that_cannot_accept_rests_it() {
        let mut r = reactor::<Epoll>(Config::default());
        let (i, _) = listener(&r, Service::Echo);
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_nonblocking(true).expect("nonblocking");
        r.sources.listeners[i].socket = Some(mio::net::TcpListener::from_std(
            std::net::TcpListener::from(socket),
        ));
        assert!(!r.on_accept_error(i, &io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(r.sources.listeners[i].paused);
    }

    #[test]
    fn a_descriptor_select_cannot_watch_is_turned_away_and_counted() {
        let mut r = reactor::<Select>(Config::default());
        let (_, addr) = listener(&r, Service::Echo);
        let client = connect(addr);
        let (i, _) = listener(&r, Service::Echo);
        let (server, peer) = (r.sources.listeners[i].socket.as_ref())
            .expect("open")
            .accept()
            .expect("accept");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&server);
        // SAFETY: `fd` is open (owned by `server`); F_DUPFD returns a new
        // descriptor, at or above FD_SETSIZE, which nothing else owns.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, libc::FD_SETSIZE as i32) };
        assert!(high >= libc::FD_SETSIZE as i32, "F_DUPFD");
        drop(server);
        // SAFETY: `high` was just returned by F_DUPFD; this takes it over.
        let high = unsafe { OwnedFd::from_raw_fd(high) };
        let stream = mio::net::TcpStream::from_std(std::net::TcpStream::from(high));
        r.admit(stream, peer, Service::Echo);
        assert_eq!(r.conns.len(), 0);
        assert_eq!((r.stats.unwatchable, r.stats.rejected), (1, 1));
        assert_eq!(read_to_eof(client), REJECT_NOTICE);
    }

    #[test]
    fn metrics_connections_have_their_own_slots_and_an_idle_one_makes_room() {
        let mut r = reactor::<Epoll>(Config {
            metrics: vec!["127.0.0.1:0".parse().expect("address")],
            metrics_max_connections: 1,
            max_connections: Some(1),
            max_connections_per_ip: Some(1),
            ..Config::default()
        });
        let (echo, echo_addr) = listener(&r, Service::Echo);
        let (metrics, addr) = listener(&r, Service::Metrics);
        // An idle echo connection fills the echo slots and the host's.
        let _echo = connect(echo_addr);
        r.accept_from(echo);
        // The first scraper: its own slot, and its request check.
        let _first = connect(addr);
        r.accept_from(metrics);
        assert_eq!(r.classes[Class::Http].open, 1);
        assert_eq!(r.stats.http_active, 1);
        let now = r.clock.now;
        let check = |k: &TimerKind| matches!(k, TimerKind::RequestCheck(..));
        let early = due(&mut r, now + HTTP_CHECK_INTERVAL - Duration::from_nanos(1));
        assert!(!early.iter().any(check), "{early:?}");
        assert!(due(&mut r, now + HTTP_CHECK_INTERVAL).iter().any(check));
        // The second: the idle first makes room for it, not the echo one.
        let mut second = connect(addr);
        r.accept_from(metrics);
        assert_eq!(r.stats.http_reclaimed, 1);
        assert_eq!(r.classes[Class::Http].open, 1);
        assert_eq!(r.classes[Class::Echo].open, 1);
        // With a request under way, it does not; the third hears a 503.
        second
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .expect("send");
        let (key, conn) = (r.conns.iter())
            .find(|(_, c)| Class::of_generation(c.generation()) == Class::Http)
            .expect("the second");
        let token = token::connection(key, conn.generation());
        let ready = Ready {
            readable: true,
            writable: true,
            read_closed: false,
            urgent: false,
        };
        for _ in 0..1000 {
            r.dispatch(token, ready);
            if r.conns[key].held() > 0 {
                break;
            }
        }
        assert!(r.conns[key].held() > 0, "the request never arrived");
        let third = connect(addr);
        r.accept_from(metrics);
        assert_eq!(r.stats.http_reclaimed, 1);
        assert_eq!(r.stats.http_rejected, 1);
        let heard = read_to_eof(third);
        assert!(
            heard.starts_with(BUSY_ANSWER),
            "{:?}",
            String::from_utf8_lossy(&heard)
        );
    }

    #[test]
    fn a_scraper_turned_away_has_its_request_head_drained() {
        // What the turned-away client sent is read, up to a request head,
        // so that closing sends a FIN and not a reset.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        let sent = MAX_HEAD + 4096;
        client.write_all(&vec![b'x'; sent]).expect("send");
        server.set_nonblocking(true).expect("nonblocking");
        let mut peek = vec![0; sent + 1];
        for tries in 0.. {
            match server.peek(&mut peek) {
                Ok(n) if n == sent => break,
                _ => assert!(tries < 100_000, "the request never arrived"),
            }
            std::thread::yield_now();
        }
        let server = mio::net::TcpStream::from_std(server);
        let mut stats = Stats::default();
        turn_away_http(&server, &mut stats);
        assert_eq!(stats.rejected, 1);
        let mut rest = [0; 1];
        let left = (&server).read(&mut rest);
        assert!(
            matches!(&left, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "left unread: {left:?}"
        );
        let mut heard = vec![0; BUSY_ANSWER.len()];
        client.read_exact(&mut heard).expect("the 503");
        assert_eq!(heard, BUSY_ANSWER);
    }

    /// `r.read_header(key)` until a socket's header has been taken in (its
    /// bytes may still be on their way over loopback).
    fn until_admitted<P: Poller>(r: &mut Reactor<P>, key: usize, conns: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while r.conns.len() < conns {
            assert!(std::time::Instant::now() < deadline, "never admitted");
            r.read_header(key);
            std::thread::yield_now();
        }
    }

    #[test]
    fn with_proxy_headers_sockets_wait_for_them_and_are_admitted_as_the_client_named() {
        let mut r = reactor::<Epoll>(Config {
            proxy_protocol: Some(crate::ProxyMode::V1),
            max_connections: Some(2),
            max_connections_per_ip: Some(1),
            ..Config::default()
        });
        let (i, addr) = listener(&r, Service::Echo);
        let mut a = connect(addr);
        let mut b = connect(addr);
        let c = connect(addr);
        r.accept_from(i);
        // As many wait as echo connections may be open; the next is turned
        // away at once, and no host was counted yet.
        assert_eq!((r.handshakes.len(), r.conns.len()), (2, 0));
        assert_eq!(read_to_eof(c), REJECT_NOTICE);
        // a's header names 192.0.2.1: admitted as that client.
        a.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 5 6\r\n")
            .expect("header");
        until_admitted(&mut r, 0, 1);
        assert_eq!(r.handshakes.len(), 1);
        assert_eq!(r.stats.proxy_headers, 1);
        // b names the same client, whose one slot a holds.
        b.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 7 6\r\n")
            .expect("header");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while r.handshakes.len() > 0 {
            assert!(std::time::Instant::now() < deadline, "b never decided");
            r.read_header(1);
            std::thread::yield_now();
        }
        assert_eq!(r.conns.len(), 1);
        assert_eq!(r.stats.rejected_per_ip, 1);
    }

    #[test]
    fn fault_flags_make_echo_connections_faulty_and_no_others() {
        let faulty = reactor::<Epoll>(Config {
            delay: Some(Duration::from_millis(5)),
            ..Config::default()
        });
        assert_eq!(faulty.class_for(Service::Echo), Class::Faults);
        assert_eq!(faulty.class_for(Service::Daytime), Class::Echo);
        assert_eq!(faulty.class_for(Service::Chargen), Class::Chargen);
        let plain = reactor::<Epoll>(Config::default());
        assert_eq!(plain.class_for(Service::Echo), Class::Echo);
    }

    #[test]
    fn an_echo_client_is_greeted_with_the_banner_rendered_for_it() {
        use crate::protocol::{Line, Mode, Transform};
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().expect("address")],
            ..Config::default()
        };
        let sockets = Sockets::bind(&config).expect("bind");
        let line = Line::new(Transform::None, Some("hi {peer}"), 1024);
        let mut r = Reactor::<Epoll>::bind(&config, sockets, Handler::from(Mode::Line(line)))
            .expect("reactor");
        let (i, addr) = listener(&r, Service::Echo);
        let mut client = connect(addr);
        let me = client.local_addr().expect("addr");
        r.accept_from(i);
        let want = format!("hi {me}\n");
        let mut got = vec![0; want.len()];
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        client.read_exact(&mut got).expect("the banner");
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
}
