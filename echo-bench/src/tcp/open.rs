//! Opening: non-blocking connects, paced by `--connect-rate` and by a
//! window of at most `max_connecting` connections that are not proven yet,
//! from as many loopback source addresses as the port ranges need.

use super::conn::{Conn, ConnState};
use super::{MAX_EXTRA_SOURCES, Worker};
use crate::config::Config;
use crate::limits;
use crate::stats::ErrorKind;
use log::debug;
use mio::net::TcpStream;
use mio::{Interest, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

impl Worker {
    /// Starts the connections that `--connect-rate` and the window of
    /// unproven ones allow by `now`.
    pub(super) fn open_connections(&mut self, now: Instant) {
        let total = self.core.share.ids.len();
        let allowed = match self.core.share.connect_rate {
            None => total,
            Some(rate) => {
                let elapsed = now
                    .saturating_duration_since(self.core.open_started)
                    .as_secs_f64();
                ((elapsed * rate) as usize + 1).min(total)
            }
        };
        while self.opened < allowed && self.core.unproven < self.core.share.max_connecting {
            let id = self.core.share.ids[self.opened];
            self.opened += 1;
            match self.connect_from_any_source(id, now) {
                Ok(()) => self.core.unproven += 1,
                Err(e) => {
                    debug!("connection {id}: connect failed: {e}");
                    self.core.count_failed(ErrorKind::of_connect(&e), &e);
                }
            }
        }
    }

    /// Starts connection `id`. Out of local ports for this source address
    /// (the planned share was too optimistic: TIME_WAIT sockets of an
    /// earlier run, other programs), on loopback, and unless
    /// `--source-ips` fixed the number, it moves on to the next source
    /// address and tries again, as often as [`MAX_EXTRA_SOURCES`] allows.
    fn connect_from_any_source(&mut self, id: usize, now: Instant) -> io::Result<()> {
        loop {
            match self.start_connect(id, now) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                        && may_add_source(&self.core.sh.cfg, self.extra_sources) =>
                {
                    self.extra_sources += 1;
                    debug!(
                        "thread {}: local ports exhausted, continuing from {}",
                        self.core.share.thread,
                        self.newest_source()
                    );
                }
                result => return result,
            }
        }
    }

    /// The newest source address added past the planned ones: every
    /// connect of this thread uses it once there is one.
    fn newest_source(&self) -> IpAddr {
        limits::loopback_v4(self.core.sh.extra_first + self.extra_sources - 1)
    }

    /// How long until `--connect-rate` lets the next connection start,
    /// while some are still to open at that rate.
    pub(super) fn next_connect_in(&self, now: Instant) -> Option<Duration> {
        let share = &self.core.share;
        let rate = share.connect_rate?;
        (self.opened < share.ids.len()).then(|| {
            let next = self.core.open_started + Duration::from_secs_f64(self.opened as f64 / rate);
            next.saturating_duration_since(now)
                .max(Duration::from_millis(1))
        })
    }

    /// Starts a non-blocking connect for connection `id` and registers it.
    fn start_connect(&mut self, id: usize, now: Instant) -> io::Result<()> {
        let cfg = &self.core.sh.cfg;
        let src = if self.extra_sources > 0 {
            Some(self.newest_source())
        } else {
            self.core.sh.source_for(id)
        };
        let socket = connecting_socket(cfg.addr, src)?;
        let mut stream = TcpStream::from_std(std::net::TcpStream::from(socket));
        let entry = self.conns.vacant_entry();
        // Both interests, once, for the connection's whole life. Writable
        // is needed first to learn that the connect finished, and later
        // after a partial write; changing interest would be an
        // epoll_ctl(MOD) syscall each time. Under edge triggering, write
        // interest that stays on costs nothing when nothing is pending:
        // the flag just rides along on read events.
        self.core.poll.registry().register(
            &mut stream,
            Token(entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let sh = &self.core.sh;
        let starts = (sh.pattern.start(id), sh.echo().start(id));
        let banner = cfg.protocol.banner();
        let conn = entry.insert(Conn::new(stream, id, starts, banner, cfg.depth, now));
        conn.first_left = cfg.first.as_ref().map_or(0, |f| f.answer.len() as u32);
        Ok(())
    }

    /// Connections not proven within `--timeout` of their connect fail.
    pub(super) fn sweep_connect_timeouts(&mut self, now: Instant) {
        let timeout = self.core.sh.cfg.timeout;
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state != ConnState::Ready && now >= c.opened_at + timeout)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            let e = io::Error::new(
                io::ErrorKind::TimedOut,
                "no echo within the connect timeout",
            );
            self.connect_fail_key(key, &e);
        }
    }

    /// A connection that had not been proven yet failed during its connect.
    fn connect_fail_key(&mut self, key: usize, e: &io::Error) {
        self.unproven_failed(key, ErrorKind::of_connect(e), &e.to_string());
    }

    /// The writable (or error) event after a non-blocking connect. As mio
    /// documents, the event alone proves nothing: `take_error` says whether
    /// the connect failed, and `peer_addr` whether it really completed
    /// (`NotConnected` means the event was spurious; keep waiting).
    pub(super) fn check_connected(&mut self, key: usize, now: Instant) {
        let conn = &mut self.conns[key];
        let err = match conn.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match conn.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = err {
            self.connect_fail_key(key, &e);
            return;
        }
        if let Some(first) = &self.core.sh.cfg.first {
            // At most MAX_FIRST_MESSAGE bytes into an empty send buffer:
            // one write takes it all, or the connection is broken.
            let e = match conn.stream.write(&first.request) {
                Ok(n) if n == first.request.len() => None,
                Ok(_) => Some(io::Error::other("the first message did not fit one write")),
                Err(e) => Some(e),
            };
            if let Some(e) = e {
                self.connect_fail_key(key, &e);
                return;
            }
        }
        conn.state = ConnState::Proving;
        let took = now.saturating_duration_since(conn.opened_at).as_nanos() as u64;
        self.core.stats.connect.saturating_record(took.max(1));
        // Message 0 proves the connection; it is never measured.
        conn.times[0] = now;
        conn.want = self.size;
        self.flush(key);
    }
}

/// A non-blocking TCP socket, from `src` if given, whose connect to `addr`
/// has been started.
fn connecting_socket(addr: SocketAddr, src: Option<IpAddr>) -> io::Result<Socket> {
    // SOCK_NONBLOCK in the socket() call itself saves the separate
    // ioctl that set_nonblocking would cost per connection.
    let ty = Type::from(libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    let socket = Socket::new(Domain::for_address(addr), ty, Some(Protocol::TCP))?;
    // Nagle would hold back a message while an earlier one is unacked
    // (pipelined runs); an echo client wants every message on the wire
    // at once. One setsockopt per connection, none per message.
    socket.set_tcp_nodelay(true)?;
    if let Some(src) = src {
        bind_no_port(&socket)?;
        socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket)
}

/// Whether a thread that has already added `extra` loopback source
/// addresses may add one more because the planned ones ran out of ports:
/// only when the number of addresses was left to the client (with
/// `--source-ips`, the user's number is kept, and a connect that finds no
/// free port counts as `addr_unavailable`), only against an IPv4 loopback
/// target, and not endlessly.
fn may_add_source(cfg: &Config, extra: usize) -> bool {
    let addr = cfg.addr;
    cfg.source_ips.is_none()
        && addr.is_ipv4()
        && addr.ip().is_loopback()
        && extra < MAX_EXTRA_SOURCES
}

/// Lets `bind` to an explicit source address leave the port open until
/// `connect`, which then picks a port that is free for this *destination*
/// (`IP_BIND_ADDRESS_NO_PORT`). Without it, `bind(ip, 0)` reserves a port
/// for every destination at once and the range runs out sooner.
fn bind_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `socket`; the option value
    // points at a c_int that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_source_addresses_only_when_the_number_was_left_open() {
        let mut cfg = Config::new("127.0.0.1:7007".parse().unwrap());
        assert!(may_add_source(&cfg, 0));
        assert!(!may_add_source(&cfg, MAX_EXTRA_SOURCES));
        cfg.source_ips = Some(2);
        assert!(!may_add_source(&cfg, 0));
        cfg.source_ips = None;
        cfg.addr = "10.0.0.1:7007".parse().unwrap();
        assert!(!may_add_source(&cfg, 0));
    }
}
