//! A scripted stream and a recording poller: a connection driven in a
//! test without a socket, a kernel or a clock.
//!
//! The test writes what the "kernel" holds ([`Scripted::input`]: chunks,
//! `WouldBlock`, the peer's FIN, errors) and how much room its send buffer
//! has ([`Scripted::room`]); the connection's reads and writes then meet
//! exactly that, and the test asserts what was written
//! ([`Scripted::written`]) and which interest changes reached the poller
//! ([`Recording::calls`]). Nothing arrives while the test is not looking,
//! so nothing needs waiting for.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::Stream;
use crate::poller::{Event, Interest, Poller, Token};

/// The descriptor a scripted stream claims, for the poller's records.
pub(super) const FD: RawFd = 1000;

/// What the receive queue holds next, as one read meets it.
#[derive(Debug)]
pub(super) enum Step {
    /// Queued bytes. A read takes at most its buffer's length; the rest
    /// stays at the front, as in the kernel. A chunk shorter than the
    /// buffer is a short read.
    Data(Vec<u8>),
    /// `WouldBlock`, once: the queue is empty for now.
    WouldBlock,
    /// The peer's FIN: every read from here on returns 0.
    Eof,
    /// An error (a reset, say), once.
    Error(io::ErrorKind),
}

/// A stream whose every answer the test chose.
#[derive(Debug, Default)]
pub(super) struct Scripted {
    /// What reads meet, in order; empty means `WouldBlock`.
    pub(super) input: VecDeque<Step>,
    /// Bytes the send buffer still takes; a write past them takes what
    /// fits, and one with none left is `WouldBlock`.
    pub(super) room: usize,
    /// The next write fails with this instead, if set.
    pub(super) write_error: Option<io::ErrorKind>,
    /// Everything written, in order.
    pub(super) written: Vec<u8>,
    /// `read` calls made (each a syscall on a real socket).
    pub(super) reads: usize,
    /// `recv(MSG_PEEK)` calls made.
    pub(super) peeks: usize,
    /// `write` calls made.
    pub(super) writes: usize,
    /// Whether our FIN was sent.
    pub(super) shut_write: bool,
    /// What [`Stream::send_queue`] reports.
    pub(super) unacked: usize,
    /// Added to [`FD`]: two streams in one test (a relay's ends) are two
    /// descriptors to the poller.
    pub(super) fd_offset: RawFd,
}

impl Scripted {
    /// A stream with `room` bytes of send buffer and these steps queued.
    pub(super) fn new(room: usize, input: impl IntoIterator<Item = Step>) -> Scripted {
        Scripted {
            input: input.into_iter().collect(),
            room,
            ..Scripted::default()
        }
    }

    /// Queues more steps behind the ones left.
    pub(super) fn arrive(&mut self, steps: impl IntoIterator<Item = Step>) {
        self.input.extend(steps);
    }

    /// Bytes queued and not yet read.
    pub(super) fn unread(&self) -> usize {
        (self.input.iter())
            .map(|step| match step {
                Step::Data(d) => d.len(),
                _ => 0,
            })
            .sum()
    }

    /// One read or peek: what the front step gives `buf`.
    fn take(&mut self, buf: &mut [u8], consume: bool) -> io::Result<usize> {
        match self.input.front_mut() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(Step::Eof) => Ok(0),
            Some(Step::Data(data)) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                if consume {
                    data.drain(..n);
                    if data.is_empty() {
                        self.input.pop_front();
                    }
                }
                Ok(n)
            }
            Some(Step::WouldBlock) => {
                self.input.pop_front();
                Err(io::ErrorKind::WouldBlock.into())
            }
            Some(Step::Error(kind)) => {
                let kind = *kind;
                self.input.pop_front();
                Err(kind.into())
            }
        }
    }
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        self.take(buf, true)
    }
}

impl Write for Scripted {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        if let Some(kind) = self.write_error.take() {
            return Err(kind.into());
        }
        if self.room == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = data.len().min(self.room);
        self.room -= n;
        self.written.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Scripted {
    fn as_raw_fd(&self) -> RawFd {
        FD + self.fd_offset
    }
}

impl Stream for Scripted {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.peeks += 1;
        self.take(buf, false)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut_write = true;
        Ok(())
    }

    fn send_queue(&self) -> io::Result<usize> {
        Ok(self.unacked)
    }
}

/// One call a [`Recording`] poller received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Register(Interest),
    Reregister(Interest),
    Deregister,
}

/// A poller that watches nothing: it keeps the registrations as epoll
/// would (refusing the same misuse, `poller/mod.rs`) and records every
/// call, so a test can assert each interest change, and that there was
/// none where the rules say so.
#[derive(Debug, Default)]
pub(super) struct Recording {
    /// What each descriptor is registered for, and as which token.
    pub(super) watched: BTreeMap<RawFd, (Token, Interest)>,
    /// Every call, in order.
    pub(super) calls: Vec<Call>,
}

impl Recording {
    /// What `fd` is registered for now, if anything.
    pub(super) fn interest(&self, fd: RawFd) -> Option<Interest> {
        self.watched.get(&fd).map(|&(_, interest)| interest)
    }
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl Poller for Recording {
    type Events = ();

    fn new() -> io::Result<Self> {
        Ok(Recording::default())
    }

    fn events(_capacity: usize) -> Self::Events {}

    fn iter(_events: &Self::Events) -> impl Iterator<Item = Event> + '_ {
        std::iter::empty()
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if self.watched.contains_key(&fd) {
            return Err(errno(libc::EEXIST));
        }
        self.watched.insert(fd, (token, interest));
        self.calls.push(Call::Register(interest));
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let Some(entry) = self.watched.get_mut(&fd) else {
            return Err(errno(libc::ENOENT));
        };
        *entry = (token, interest);
        self.calls.push(Call::Reregister(interest));
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        if self.watched.remove(&fd).is_none() {
            return Err(errno(libc::ENOENT));
        }
        self.calls.push(Call::Deregister);
        Ok(())
    }

    fn wait(&mut self, _events: &mut Self::Events, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}
