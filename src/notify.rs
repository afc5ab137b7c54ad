//! Readiness notification for a service manager (systemd's `sd_notify`
//! protocol): `READY=1` once the listeners are live, `RELOADING=1` when a
//! master replaces its workers (SIGHUP), `STOPPING=1` when a stop begins,
//! and a `STATUS=` line a human reads in `systemctl status`.
//!
//! The protocol is one datagram per message, `KEY=VALUE` lines, sent to
//! the unix datagram socket named by `NOTIFY_SOCKET`: a path, or an
//! abstract name written with a leading `@`. Without the variable nothing
//! is sent and nothing is opened, so a server not run by a service
//! manager pays nothing.
//!
//! **It never blocks.** The sending socket is non-blocking: if the
//! manager's queue is full the message is dropped (and logged at debug),
//! as a log line is (`log_sink.rs`). A message is a few dozen bytes, sent
//! a handful of times in a process's life, never on the echo path.
//!
//! Written here rather than taken from a crate: it is a dozen lines on
//! std's `UnixDatagram`, and the small crates that do it send blocking.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use log::debug;

/// The variable naming the manager's socket.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// A non-blocking sender of notifications to the service manager.
#[derive(Debug)]
pub(crate) struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names; `None` without it (or with an
    /// empty one). A name that cannot be used is logged and ignored: a
    /// server must not refuse to serve for want of a status line.
    pub(crate) fn from_env() -> Option<Notifier> {
        let name = std::env::var_os(NOTIFY_SOCKET)?;
        let name = name.to_str().filter(|n| !n.is_empty())?.to_owned();
        match Notifier::open(&name) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                log::warn!("{NOTIFY_SOCKET}={name:?}: {e}; no readiness notification");
                None
            }
        }
    }

    /// A notifier sending to `name`: a path, or `@` and an abstract name.
    pub(crate) fn open(name: &str) -> io::Result<Notifier> {
        let to = match name.strip_prefix('@') {
            Some(abstract_name) => abstract_addr(abstract_name.as_bytes())?,
            None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an @abstract name",
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Notifier { socket, to })
    }

    /// Sends `message` (`KEY=VALUE` lines) at once, or drops it.
    pub(crate) fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.to) {
            debug!("{NOTIFY_SOCKET}: {message:?} not sent: {e}");
        }
    }

    /// `READY=1` and a status line.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1` (with the monotonic time systemd asks for) and a
    /// status line; `READY=1` says when the reload is done.
    pub(crate) fn reloading(&self, status: &str) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={status}",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1` and a status line.
    pub(crate) fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names are Linux's",
    ))
}

/// `CLOCK_MONOTONIC` in microseconds, as `MONOTONIC_USEC` wants it.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path() {
        let dir = std::env::temp_dir().join(format!("notify-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::open(path.to_str().unwrap()).unwrap();
        notifier.ready("serving");
        assert_eq!(received(&manager), "READY=1\nSTATUS=serving");
        notifier.reloading("replacing");
        let text = received(&manager);
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        notifier.stopping("draining");
        assert_eq!(received(&manager), "STOPPING=1\nSTATUS=draining");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_reach_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("echo-reactor-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::open(&format!("@{name}"))
            .unwrap()
            .send("STATUS=hi");
        assert_eq!(received(&manager), "STATUS=hi");
    }

    #[test]
    fn a_full_manager_queue_drops_instead_of_blocking() {
        let dir = std::env::temp_dir().join(format!("notify-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let _unread = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::open(path.to_str().unwrap()).unwrap();
        // Far more than the queue holds (a blocking socket would hang here).
        for _ in 0..10_000 {
            notifier.send("STATUS=filling");
        }
        let more = notifier.socket.send_to_addr(b"STATUS=x", &notifier.to);
        assert_eq!(more.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_relative_name_is_refused() {
        assert!(Notifier::open("notify").is_err());
    }
}
