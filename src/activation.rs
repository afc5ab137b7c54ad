//! Socket activation: serving on sockets a service manager (systemd,
//! `systemd-socket-activate`, or anything speaking the same protocol)
//! bound and passed to this process, instead of binding them itself.
//!
//! # The protocol (`sd_listen_fds(3)`)
//!
//! The manager leaves the sockets open across `exec` at descriptors 3,
//! 4, ... and says so in three variables:
//!
//! - `LISTEN_FDS`: how many (descriptors `3 .. 3 + LISTEN_FDS`);
//! - `LISTEN_PID`: the process they are meant for. If it is not this
//!   process the variables were inherited by mistake (from a parent that
//!   did not unset them) and are ignored, as `sd_listen_fds` does;
//! - `LISTEN_FDNAMES` (optional): a name per descriptor, `:`-separated
//!   (`FileDescriptorName=` in a `.socket` unit, `--fdname` of
//!   `systemd-socket-activate`).
//!
//! # Which descriptor serves what
//!
//! - The **name** says the service: `echo`, `daytime` or `metrics` (any
//!   service's name as `--workers` writes it). A descriptor without a
//!   name, or with a name systemd gives by default (`unknown`, or the
//!   socket unit's name, `echo-reactor.socket`), serves **echo**. Any
//!   other name is an error, not a guess.
//! - The **socket type** says the transport: a listening stream socket is
//!   TCP, a datagram socket UDP. A stream socket that is not listening
//!   (`Accept=yes`, one connection per process) and anything that is not
//!   an IPv4 or IPv6 socket are refused; so is metrics over UDP.
//! - A service with a passed socket is served on the passed sockets only,
//!   and its address flags are ignored (echo over TCP: `--listen`, echo
//!   over UDP: `--udp`, `--daytime`, `--metrics`). The services with none
//!   are bound from their flags as usual, so `--listen`'s default
//!   (127.0.0.1:7007) is bound only when no echo TCP socket was passed.
//!
//! With `--workers N` the master takes the sockets and every worker
//! serves a copy of each (`dup`: one socket, one accept queue, which the
//! workers take from in turn) beside its slot's own `SO_REUSEPORT`
//! sockets for the services that were not passed; the metrics sockets
//! are the master's.
//!
//! The sockets are taken at most once per process, and the variables are
//! never read again; workers are started without them (`launch.rs`).

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use log::info;

use crate::config::Config;
use crate::listener::ListenError;
use crate::service::{Service, Transport};
use crate::sockets::{Bound, Socket};

/// The first descriptor a manager passes (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// More than this many passed descriptors is a broken variable, not a
/// plan (the loop itself has room for a few hundred listeners).
const MAX_PASSED: usize = 1024;

/// The variables of the protocol, which a process that starts children
/// removes from their environment.
pub(crate) const VARIABLES: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

/// Whether this process has taken its passed sockets already.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The sockets a service manager passed, each with the service it serves.
#[derive(Debug, Default)]
pub(crate) struct Passed {
    bound: Vec<Bound>,
}

/// What the variables say: descriptor numbers and their names.
#[derive(Debug, PartialEq, Eq)]
struct Listed(Vec<(RawFd, Option<String>)>);

impl Passed {
    /// Takes the sockets the variables name, if they are meant for this
    /// process: none without `LISTEN_FDS`, or for another process, or the
    /// second time. Bad values or descriptors are an error naming them.
    pub(crate) fn from_env() -> Result<Passed, ListenError> {
        let var = |name: &str| std::env::var(name).ok();
        let listed = listed(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            std::process::id(),
        )
        .map_err(|e| ListenError::Setup(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let Some(listed) = listed else {
            return Ok(Passed::default());
        };
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Ok(Passed::default());
        }
        let mut bound = Vec::new();
        for (fd, name) in listed.0 {
            // SAFETY: LISTEN_PID names this process, so the manager left
            // these descriptors open for it, and TAKEN makes this the one
            // place in the process that takes them.
            let socket = unsafe { adopt(fd, name.as_deref()) }.map_err(|e| {
                ListenError::Setup(io::Error::new(
                    e.kind(),
                    format!("passed descriptor {fd} ({}): {e}", name_of(&name)),
                ))
            })?;
            bound.push(socket);
        }
        for b in &bound {
            info!(
                "socket activation: serving {}/{} on {} (passed)",
                b.service.name(),
                b.socket.transport().name(),
                (b.socket.local_addr()).map_or_else(|e| e.to_string(), |a| a.to_string()),
            );
        }
        Ok(Passed { bound })
    }

    /// Whether a passed socket serves `service` over `transport`.
    pub(crate) fn serves(&self, service: Service, transport: Transport) -> bool {
        (self.bound.iter()).any(|b| b.service == service && b.socket.transport() == transport)
    }

    /// Whether a passed socket serves `service` at all.
    fn serves_any(&self, service: Service) -> bool {
        self.bound.iter().any(|b| b.service == service)
    }

    /// `config` without the addresses of the services passed here: what
    /// is left to bind.
    pub(crate) fn unbound(&self, config: &Config) -> Config {
        let keep = |passed: bool, addrs: &Vec<_>| if passed { Vec::new() } else { addrs.clone() };
        Config {
            listen: keep(self.serves(Service::Echo, Transport::Tcp), &config.listen),
            udp: keep(self.serves(Service::Echo, Transport::Udp), &config.udp),
            daytime: keep(self.serves_any(Service::Daytime), &config.daytime),
            metrics: keep(self.serves_any(Service::Metrics), &config.metrics),
            ..config.clone()
        }
    }

    /// Moves out the sockets serving `service`.
    pub(crate) fn split_off(&mut self, service: Service) -> Vec<Bound> {
        let (taken, kept) = std::mem::take(&mut self.bound)
            .into_iter()
            .partition(|b| b.service == service);
        self.bound = kept;
        taken
    }

    /// A copy of every socket (`dup`: the same socket, a descriptor of
    /// its own), for one worker slot.
    pub(crate) fn try_clone(&self) -> io::Result<Vec<Bound>> {
        (self.bound.iter()).map(Bound::try_clone).collect()
    }

    /// The sockets.
    pub(crate) fn into_bound(self) -> Vec<Bound> {
        self.bound
    }
}

/// Reads the variables: `None` when there is nothing for this process.
fn listed(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> Result<Option<Listed>, String> {
    let Some(fds) = fds else {
        return Ok(None);
    };
    let Some(pid) = pid else {
        log::warn!("LISTEN_FDS without LISTEN_PID: ignored (whose sockets are they?)");
        return Ok(None);
    };
    let pid: u32 =
        (pid.trim().parse()).map_err(|_| format!("LISTEN_PID={pid:?} is not a process id"))?;
    if pid != own_pid {
        info!("LISTEN_FDS is meant for process {pid}, not this one ({own_pid}): ignored");
        return Ok(None);
    }
    let count: usize = (fds.trim().parse().ok())
        .filter(|&n| n <= MAX_PASSED)
        .ok_or_else(|| format!("LISTEN_FDS={fds:?} is not a count of descriptors"))?;
    let names: Vec<Option<String>> = match names {
        None => vec![None; count],
        Some(names) => {
            let names: Vec<Option<String>> = (names.split(':'))
                .map(|n| Some(n.to_owned()).filter(|n| !n.is_empty()))
                .collect();
            if names.len() != count {
                return Err(format!(
                    "LISTEN_FDNAMES names {} descriptors, LISTEN_FDS says {count}",
                    names.len()
                ));
            }
            names
        }
    };
    let fds = (FIRST_FD..).zip(names);
    Ok(Some(Listed(fds.collect())))
}

/// The service a passed descriptor's name asks for.
fn service_named(name: Option<&str>) -> Result<Service, String> {
    match name {
        None | Some("unknown") => Ok(Service::Echo),
        Some(unit) if unit.ends_with(".socket") => Ok(Service::Echo),
        Some(name) => Service::from_name(name).ok_or_else(|| {
            format!("named {name:?}: no such service (echo, daytime, metrics; unnamed is echo)")
        }),
    }
}

fn name_of(name: &Option<String>) -> String {
    name.as_deref()
        .map_or("unnamed".into(), |n| format!("named {n:?}"))
}

/// Takes `fd` as the socket it is, for the service `name` asks for.
///
/// # Safety
///
/// `fd` must be open in this process and owned by nothing else in it.
unsafe fn adopt(fd: RawFd, name: Option<&str>) -> io::Result<Bound> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    let service = service_named(name).map_err(invalid)?;
    // SAFETY: fcntl only reads and sets the descriptor's flags (an fd
    // that is not open fails with EBADF). Close-on-exec: the manager
    // passes them without it, and no child of ours may hold them unasked.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open (fcntl just succeeded), and borrowed only while this
    // function runs, before anything owns it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let socket = socket2::SockRef::from(&borrowed);
    let domain = socket.domain()?;
    if domain != socket2::Domain::IPV4 && domain != socket2::Domain::IPV6 {
        return Err(invalid("not an IPv4 or IPv6 socket".into()));
    }
    let kind = socket.r#type()?;
    let transport = if kind == socket2::Type::STREAM {
        if !socket.is_listener()? {
            return Err(invalid(
                "a stream socket that is not listening (Accept=yes is not supported)".into(),
            ));
        }
        Transport::Tcp
    } else if kind == socket2::Type::DGRAM {
        Transport::Udp
    } else {
        return Err(invalid("neither a stream nor a datagram socket".into()));
    };
    if service == Service::Metrics && transport == Transport::Udp {
        return Err(invalid("metrics is served over TCP only".into()));
    }
    let socket = match transport {
        // SAFETY: an open listening TCP socket that nothing else owns
        // (the caller's promise, and checked above).
        Transport::Tcp => Socket::Tcp(unsafe { TcpListener::from_raw_fd(fd) }),
        // SAFETY: as above, a UDP socket.
        Transport::Udp => Socket::Udp(unsafe { UdpSocket::from_raw_fd(fd) }),
    };
    match &socket {
        Socket::Tcp(s) => s.set_nonblocking(true)?,
        Socket::Udp(s) => s.set_nonblocking(true)?,
    }
    Ok(Bound { service, socket })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    const ME: u32 = 4242;

    fn names(listed: Listed) -> Vec<(RawFd, Option<String>)> {
        listed.0
    }

    #[test]
    fn descriptors_are_listed_from_three_with_their_names() {
        let got = listed(Some("4242"), Some("3"), Some("echo::metrics"), ME)
            .unwrap()
            .unwrap();
        assert_eq!(
            names(got),
            [
                (3, Some("echo".into())),
                (4, None),
                (5, Some("metrics".into()))
            ]
        );
        let got = listed(Some("4242"), Some("2"), None, ME).unwrap().unwrap();
        assert_eq!(names(got), [(3, None), (4, None)]);
        assert_eq!(
            listed(Some("4242"), Some("0"), None, ME).unwrap(),
            Some(Listed(vec![]))
        );
    }

    #[test]
    fn variables_for_another_process_or_none_are_ignored() {
        assert_eq!(listed(Some("1"), Some("2"), None, ME), Ok(None));
        assert_eq!(listed(None, Some("2"), None, ME), Ok(None));
        assert_eq!(listed(Some("4242"), None, None, ME), Ok(None));
    }

    #[test]
    fn bad_variables_are_errors_naming_them() {
        for (pid, fds, names) in [
            ("x", "1", None),
            ("4242", "-1", None),
            ("4242", "many", None),
            ("4242", "100000", None),
            ("4242", "2", Some("echo")),
            ("4242", "1", Some("echo:daytime")),
        ] {
            let err = listed(Some(pid), Some(fds), names, ME).expect_err(fds);
            assert!(err.starts_with("LISTEN_"), "{err}");
        }
    }

    #[test]
    fn names_say_the_service_and_unnamed_is_echo() {
        assert_eq!(service_named(None), Ok(Service::Echo));
        assert_eq!(service_named(Some("unknown")), Ok(Service::Echo));
        assert_eq!(
            service_named(Some("echo-reactor.socket")),
            Ok(Service::Echo)
        );
        assert_eq!(service_named(Some("echo")), Ok(Service::Echo));
        assert_eq!(service_named(Some("daytime")), Ok(Service::Daytime));
        assert_eq!(service_named(Some("metrics")), Ok(Service::Metrics));
        assert!(service_named(Some("http")).is_err());
    }

    #[test]
    fn the_socket_type_says_the_transport() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
        // SAFETY: the descriptor was just made ours and handed over.
        let got = unsafe { adopt(tcp, None) }.unwrap();
        assert_eq!(
            (got.service, got.socket.transport()),
            (Service::Echo, Transport::Tcp)
        );
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap().into_raw_fd();
        // SAFETY: as above.
        let got = unsafe { adopt(udp, Some("daytime")) }.unwrap();
        assert_eq!(
            (got.service, got.socket.transport()),
            (Service::Daytime, Transport::Udp)
        );
    }

    #[test]
    fn unusable_descriptors_are_refused() {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        // SAFETY: borrowed for the call; on error adopt owns nothing.
        let err = unsafe { adopt(std::os::fd::AsRawFd::as_raw_fd(&udp), Some("metrics")) };
        assert!(err.unwrap_err().to_string().contains("TCP only"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // SAFETY: as above.
        let err = unsafe { adopt(std::os::fd::AsRawFd::as_raw_fd(&connected), None) };
        assert!(err.unwrap_err().to_string().contains("Accept=yes"));
        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: as above.
        let err = unsafe { adopt(std::os::fd::AsRawFd::as_raw_fd(&unix), None) };
        assert!(err.unwrap_err().to_string().contains("IPv4"));
    }
}
