//! What a connection does to its socket, as a trait: so that the same
//! connection code runs over mio's `TcpStream` in the server and over a
//! scripted stream in its tests (`scripted.rs`), where every read, write
//! and `WouldBlock` is chosen by the test, with no socket and no waiting.
//!
//! The trait is the smallest that covers what `connection/` calls: read,
//! write (from [`Read`] and [`Write`]), peek (pass-through reads while the
//! budget is full), `shutdown(Write)` (our FIN), the send queue's length
//! (pass-through answers), and the descriptor the poller watches
//! ([`AsRawFd`]).
//!
//! The reactor names the concrete type (`Connection` defaults to
//! `Connection<TcpStream>`), so each call here is a direct, inlinable call
//! to mio's method: the echo path pays no dynamic dispatch for the trait.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;

use mio::net::TcpStream;

/// A non-blocking byte stream a connection can drive: reads and writes
/// that return `WouldBlock` when the kernel has nothing or no room.
pub(crate) trait Stream: Read + Write + AsRawFd {
    /// Copies queued input into `buf` without taking it (`MSG_PEEK`).
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Sends our FIN after everything written so far.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Bytes written but not yet acknowledged by the peer.
    fn send_queue(&self) -> io::Result<usize>;
}

impl Stream for TcpStream {
    #[inline]
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::peek(self, buf)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    /// `TIOCOUTQ`, which Linux also calls `SIOCOUTQ` for sockets.
    fn send_queue(&self) -> io::Result<usize> {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ on a socket descriptor we own writes one c_int
        // to the pointer, which points to a live local.
        let rc = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(queued).unwrap_or(0))
    }
}
