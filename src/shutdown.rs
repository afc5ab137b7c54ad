//! Asking the loop to stop, from a signal or from another thread (seed 11).
//!
//! The loop spends its life blocked in the poller's `wait`, so a stop
//! request has to be something every backend can see: a descriptor that
//! becomes readable. Both stop sources are the read end of a non-blocking
//! socket pair (a self-pipe), registered like any socket:
//!
//! - SIGINT/SIGTERM: signal-hook's handler writes one byte to the write end
//!   (`signal_hook::low_level::pipe`), which is async-signal-safe
//!   (`signals.rs`, which also handles the signals that do not stop).
//! - [`ShutdownHandle`], for programs that embed the reactor and stop it
//!   from another thread (tests, benches): it writes one byte too.
//!
//! A plain descriptor works the same on epoll, poll and select, which mio's
//! `Waker` (an eventfd inside mio's own registry) would not. It costs
//! nothing while the loop serves: the pipes are only read when they fire.
//! Whoever reads drains the pipe until `WouldBlock`, which edge-triggered
//! epoll needs (no new edge for bytes left behind) and level-triggered
//! poll/select need too (bytes left behind would fire on every `wait`).
//!
//! The first request starts a graceful shutdown (see `Reactor`); a second
//! one ends the loop at once.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A cloneable, thread-safe handle that asks a running reactor to stop.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The write end of the wake-up pipe.
    wake: UnixStream,
    requests: AtomicUsize,
}

/// The read end of a self-pipe: what the loop registers.
#[derive(Debug)]
pub(crate) struct WakePipe {
    read: UnixStream,
}

impl WakePipe {
    /// A non-blocking socket pair: (read end, write end).
    pub(crate) fn pair() -> io::Result<(WakePipe, UnixStream)> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok((WakePipe { read }, write))
    }

    /// The descriptor to register for `READABLE`.
    pub(crate) fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Reads everything written so far; returns how many bytes that was.
    pub(crate) fn drain(&mut self) -> usize {
        let mut buf = [0u8; 64];
        let mut total = 0;
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: drained. Anything else cannot happen to a
                // socket pair we hold both ends of; stop reading either way.
                Err(_) => return total,
            }
        }
    }
}

impl ShutdownHandle {
    /// A handle and the pipe end the loop must register.
    pub(crate) fn new() -> io::Result<(ShutdownHandle, WakePipe)> {
        let (pipe, wake) = WakePipe::pair()?;
        let handle = ShutdownHandle {
            inner: Arc::new(Inner {
                wake,
                requests: AtomicUsize::new(0),
            }),
        };
        Ok((handle, pipe))
    }

    /// Requests a stop: the first call starts a graceful shutdown, a second
    /// one makes the loop return at once.
    pub fn shutdown(&self) -> io::Result<()> {
        self.inner.requests.fetch_add(1, Ordering::SeqCst);
        match (&self.inner.wake).write(&[1]) {
            Ok(_) => Ok(()),
            // The pipe is full of earlier wake-ups the loop has not read
            // yet: it will wake anyway, and it counts requests, not bytes.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Requests made so far (read by the loop when the pipe fires).
    pub(crate) fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }
}
