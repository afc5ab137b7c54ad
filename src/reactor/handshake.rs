//! `--proxy-protocol`: a connection's PROXY header, awaited before the
//! connection exists.
//!
//! With the flag, an accepted socket of a small service (echo, daytime,
//! discard, chargen; not metrics) is not a connection yet: it waits in a
//! handshake slot (its own token range, `token.rs`) until its header has
//! arrived, and only then is admitted as the client the header names:
//! `--max-connections-per-ip` counts that client (a proxy carries many),
//! and the log says `from CLIENT via PROXY`. The header is parsed by a
//! pure function (`proxy_protocol.rs`) and taken off the socket exactly:
//! the slot *peeks*, and reads only the bytes the parser says are header,
//! so the first byte after it is the protocol's.
//!
//! Refused, closed and counted (`proxy_refused`): a malformed header, a
//! version the mode does not accept, no header (unless `optional`), a
//! client that closes first, and one whose header has not arrived within
//! [`HEADER_TIMEOUT`] (slowloris). At most as many sockets wait as the
//! echo class may have connections (`--max-connections`); more are turned
//! away at once.
//!
//! Readiness: a header that has not all arrived is consumed as it comes
//! (every byte so far is header, the parser says so), so each new byte
//! raises a new edge on epoll and nothing stays readable on poll(2) and
//! select(2). The one exception is `optional` mode's first 16 bytes,
//! which may yet turn out to be the protocol's and are only peeked: they
//! stay readable, and a level-triggered backend would report them at
//! every wait (a spinning loop, for as long as the client likes to send
//! `PROX` and stop). So an undecided socket is taken off the poller and
//! looked at again [`UNDECIDED_RETRY`] later, until it has decided or its
//! timeout has come.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::TcpStream;
use slab::Slab;

use super::Reactor;
use crate::poller::{Interest, Poller};
use crate::proxy_protocol::{self, MAX_HEADER, Parse, ProxyMode};
use crate::service::Service;
use crate::timer::TimerKind;
use crate::token;

/// How long a PROXY header may take to arrive, from the accept.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of `optional` mode's undecided prefix: past them, a header has
/// begun or there is none.
const UNDECIDED: usize = 16;

/// How often a socket whose first bytes are still undecided is looked at
/// (off the poller meanwhile): 250 looks over a whole [`HEADER_TIMEOUT`].
const UNDECIDED_RETRY: Duration = Duration::from_millis(20);

/// A socket waiting for its header.
#[derive(Debug)]
struct Handshake {
    stream: TcpStream,
    /// The proxy's address (the socket's peer).
    peer: SocketAddr,
    service: Service,
    /// The header so far, taken off the socket.
    got: Vec<u8>,
    since: Instant,
    /// Off the poller until its next look (an undecided prefix).
    parked: bool,
}

/// The sockets waiting for their headers, and the mode.
#[derive(Debug, Default)]
pub(super) struct Handshakes {
    /// `--proxy-protocol`; `None`: off (no socket ever waits here).
    pub(super) mode: Option<ProxyMode>,
    slots: Slab<Handshake>,
}

impl Handshakes {
    pub(super) fn new(mode: Option<ProxyMode>) -> Handshakes {
        Handshakes {
            mode,
            slots: Slab::new(),
        }
    }

    /// Sockets waiting now.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// What became of a look at a waiting socket.
enum Step {
    /// Wait for more.
    Wait,
    /// Wait for more, with bytes left unread (peeked): look again later.
    Undecided,
    /// Admit it as `client` (the proxy's own address without one).
    Admit(Option<SocketAddr>),
    /// Refuse it, for this reason.
    Refuse(&'static str),
}

impl<P: Poller> Reactor<P> {
    /// Puts an accepted socket in a slot to wait for its header.
    pub(super) fn await_header(&mut self, stream: TcpStream, peer: SocketAddr, service: Service) {
        let key = self.handshakes.slots.vacant_key();
        let fd = stream.as_raw_fd();
        if let Err(e) = self
            .poller
            .register(fd, token::handshake(key), Interest::READABLE)
        {
            warn!("{peer}: cannot register connection: {e}");
            return;
        }
        self.handshakes.slots.insert(Handshake {
            stream,
            peer,
            service,
            got: Vec::new(),
            since: self.clock.now,
            parked: false,
        });
        let at = self.clock.now + HEADER_TIMEOUT;
        self.timers.schedule(at, TimerKind::HeaderDeadline(key));
        // Registering reports input already there as a first event.
    }

    /// Slot `key`'s socket may have more of its header.
    pub(super) fn read_header(&mut self, key: usize) {
        let (Some(mode), Some(h)) = (self.handshakes.mode, self.handshakes.slots.get_mut(key))
        else {
            return;
        };
        let buf = &mut self.lent.read_buf[..];
        let step = match look(h, mode, buf) {
            Ok(step) => step,
            Err(e) => {
                debug!("{}: {e}", h.peer);
                Step::Refuse("socket error")
            }
        };
        match step {
            Step::Wait => {}
            Step::Undecided => {
                let _ = self.poller.deregister(h.stream.as_raw_fd());
                h.parked = true;
                let at = self.clock.now + UNDECIDED_RETRY;
                self.timers.schedule(at, TimerKind::HeaderLook(key));
            }
            Step::Refuse(why) => self.refuse_header(key, why),
            Step::Admit(client) => {
                let h = self.handshakes.slots.remove(key);
                if !h.parked {
                    let _ = self.poller.deregister(h.stream.as_raw_fd());
                }
                if client.is_some() {
                    self.stats.proxy_headers += 1;
                }
                let client = client.unwrap_or(h.peer);
                self.admit_as(h.stream, client, Some(h.peer), h.service);
            }
        }
    }

    /// Slot `key`'s next look, if its socket is parked (a slot reused
    /// since is on the poller and has no look due).
    pub(super) fn header_look(&mut self, key: usize) {
        let Some(h) = self.handshakes.slots.get_mut(key).filter(|h| h.parked) else {
            return;
        };
        let fd = h.stream.as_raw_fd();
        if let Err(e) = (self.poller).register(fd, token::handshake(key), Interest::READABLE) {
            debug!("{}: cannot register connection: {e}", h.peer);
            h.parked = false;
            self.refuse_header(key, "cannot be watched");
            return;
        }
        h.parked = false;
        self.read_header(key);
    }

    /// Slot `key`'s timeout, if it is still the socket it was set for.
    pub(super) fn header_deadline(&mut self, key: usize) {
        let late = (self.handshakes.slots.get(key))
            .is_some_and(|h| self.clock.now.saturating_duration_since(h.since) >= HEADER_TIMEOUT);
        if late {
            self.refuse_header(key, "no whole PROXY header in time");
        }
    }

    fn refuse_header(&mut self, key: usize, why: &str) {
        let h = self.handshakes.slots.remove(key);
        if !h.parked {
            let _ = self.poller.deregister(h.stream.as_raw_fd());
        }
        self.stats.proxy_refused += 1;
        debug!("{}: refused: {why}", h.peer);
    }
}

/// Looks at what the socket holds: the header is taken off as far as it
/// is known to be header; the protocol's bytes are left.
fn look(h: &mut Handshake, mode: ProxyMode, buf: &mut [u8]) -> io::Result<Step> {
    loop {
        let room = MAX_HEADER - h.got.len();
        let n = match h.stream.peek(&mut buf[..room]) {
            Ok(0) => return Ok(Step::Refuse("closed before its PROXY header")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Wait),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let had = h.got.len();
        h.got.extend_from_slice(&buf[..n]);
        match proxy_protocol::parse(&h.got, mode) {
            Parse::Header { len, client } => {
                take(&mut h.stream, len - had, buf)?;
                h.got = Vec::new();
                return Ok(Step::Admit(client));
            }
            // Only ever decided before anything was taken.
            Parse::Absent => return Ok(Step::Admit(None)),
            Parse::Invalid(why) => return Ok(Step::Refuse(why)),
            Parse::Incomplete if mode != ProxyMode::Optional || h.got.len() >= UNDECIDED => {
                // All header: take it, so that the next byte is a new edge.
                take(&mut h.stream, n, buf)?;
            }
            Parse::Incomplete => {
                h.got.truncate(had);
                return Ok(Step::Undecided);
            }
        }
    }
}

/// Reads exactly `n` bytes the socket was seen to hold.
fn take(stream: &mut TcpStream, mut n: usize, buf: &mut [u8]) -> io::Result<()> {
    while n > 0 {
        match stream.read(&mut buf[..n]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(got) => n -= got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
