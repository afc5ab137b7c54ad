//! poll(2): an array of `struct pollfd`, handed to the kernel whole on
//! every call.
//!
//! This is seed 10's multiplexer. It has no descriptor limit, but each
//! `wait` costs O(registered): the kernel copies the array in, checks every
//! entry's socket, and copies it back, and then this file scans it again
//! for the entries with `revents` set. With 10 busy connections and 15,000
//! idle ones, every tick pays for the 15,000 (`docs/backends.md`).
//!
//! # Level-triggered
//!
//! poll reports a ready descriptor on *every* call until the readiness is
//! consumed. The reactor copes because it never keeps an interest it will
//! not act on: `WRITABLE` only while output is pending, no `READABLE`
//! while paused by backpressure, draining, or while a listener rests
//! after an accept error (`reactor/accept.rs`). `POLLHUP` and `POLLERR` are
//! reported whatever the interest; both end in an I/O error or EOF that
//! closes the connection, so they cannot repeat.
//!
//! # The table
//!
//! `fds` is dense (what poll(2) wants) and `tokens` runs parallel to it.
//! `slot_of[fd]` finds a descriptor's entry in O(1); `deregister` moves the
//! last entry into the hole (`swap_remove`), so the array never has gaps.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{Event, EventList, Interest, Poller, Token, timeout_ms};

/// `slot_of` value for a descriptor that is not registered.
const NONE: u32 = u32::MAX;

/// The poll(2) backend.
#[derive(Debug, Default)]
pub(crate) struct Poll {
    fds: Vec<libc::pollfd>,
    tokens: Vec<Token>,
    /// Index into `fds` for each descriptor number, or [`NONE`].
    slot_of: Vec<u32>,
    /// Where the next scan starts: when more descriptors are ready than an
    /// event list holds, the next `wait` begins with the ones left out, so
    /// the first entries cannot starve the rest.
    cursor: usize,
}

/// The `events` bits for an interest. `POLLRDHUP` (Linux) reports the
/// peer's FIN as a hint, like epoll's `EPOLLRDHUP` does for mio; it is
/// asked for only with `READABLE`, so a connection that stopped reading
/// (backpressure, draining) is not woken again and again by a FIN it is not
/// going to read yet.
fn poll_events(interest: Interest) -> libc::c_short {
    let mut bits = 0;
    if interest.is_readable() {
        // POLLPRI: urgent data, a hint for rule 1 like epoll's EPOLLPRI.
        bits |= libc::POLLIN | libc::POLLRDHUP | libc::POLLPRI;
    }
    if interest.is_writable() {
        bits |= libc::POLLOUT;
    }
    bits
}

impl Poll {
    fn slot(&self, fd: RawFd) -> Option<usize> {
        let i = *self.slot_of.get(usize::try_from(fd).ok()?)?;
        (i != NONE).then_some(i as usize)
    }
}

impl Poller for Poll {
    type Events = EventList;

    fn new() -> io::Result<Poll> {
        Ok(Poll::default())
    }

    fn events(capacity: usize) -> EventList {
        EventList::with_capacity(capacity)
    }

    fn iter(events: &EventList) -> impl Iterator<Item = Event> + '_ {
        events.iter()
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let Ok(index) = usize::try_from(fd) else {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        };
        if self.slot(fd).is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        if index >= self.slot_of.len() {
            self.slot_of.resize(index + 1, NONE);
        }
        self.slot_of[index] = self.fds.len() as u32;
        self.fds.push(libc::pollfd {
            fd,
            events: poll_events(interest),
            revents: 0,
        });
        self.tokens.push(token);
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let slot = self
            .slot(fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.fds[slot].events = poll_events(interest);
        self.tokens[slot] = token;
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        let slot = self
            .slot(fd)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        self.fds.swap_remove(slot);
        self.tokens.swap_remove(slot);
        self.slot_of[fd as usize] = NONE;
        if let Some(moved) = self.fds.get(slot) {
            self.slot_of[moved.fd as usize] = slot as u32;
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut EventList, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        // SAFETY: `fds` is a live, initialised array of exactly `len`
        // pollfd structs, which poll(2) reads and whose `revents` it writes
        // during the call; nothing else touches it meanwhile.
        let n = unsafe {
            libc::poll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timeout_ms(timeout),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // The O(registered) scan: poll says how many entries are ready,
        // not which. Stop as soon as all of them were found.
        let len = self.fds.len();
        let mut left = n as usize;
        let mut i = 0;
        while left > 0 && i < len {
            let slot = (self.cursor + i) % len;
            i += 1;
            let revents = self.fds[slot].revents;
            if revents == 0 {
                continue;
            }
            left -= 1;
            if events.is_full() {
                // Report the rest first next time.
                self.cursor = slot;
                return Ok(());
            }
            let hup = revents & libc::POLLHUP != 0;
            events.push(Event {
                token: self.tokens[slot],
                readable: revents & (libc::POLLIN | libc::POLLPRI) != 0 || hup,
                writable: revents & libc::POLLOUT != 0,
                read_closed: revents & libc::POLLRDHUP != 0 || hup,
                priority: revents & libc::POLLPRI != 0,
                write_closed: hup,
                error: revents & (libc::POLLERR | libc::POLLNVAL) != 0,
            });
        }
        self.cursor = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn table_stays_dense_and_consistent_across_deregister() {
        let pairs: Vec<_> = (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        let mut p = Poll::new().unwrap();
        for (i, (a, _)) in pairs.iter().enumerate() {
            p.register(a.as_raw_fd(), Token(i), Interest::READABLE)
                .unwrap();
        }
        p.deregister(pairs[0].0.as_raw_fd()).unwrap();
        assert!(p.deregister(pairs[0].0.as_raw_fd()).is_err());
        (&pairs[2].1).write_all(b"x").unwrap();
        let mut events = Poll::events(8);
        p.wait(&mut events, Some(Duration::ZERO)).unwrap();
        let got: Vec<_> = events.iter().map(|e| (e.token, e.readable)).collect();
        assert_eq!(got, vec![(Token(2), true)]);
        // Level-triggered: unread input is reported again.
        p.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().count(), 1);
    }
}
