//! select(2): two bitmaps of descriptor numbers, copied in and out on every
//! call.
//!
//! This is seed 9's multiplexer, the oldest of the three. Each `wait`
//! costs O(highest descriptor): the kernel walks every bit up to `nfds`,
//! and this file walks them again to find the ones left set. And an
//! `fd_set` is a fixed array of [`FD_SETSIZE`] bits (1024 on Linux):
//! a descriptor at or above it cannot be watched at all. `FD_SET` on such a
//! descriptor writes past the end of the set, which is undefined
//! behaviour, so [`Select::register`] refuses it and the reactor checks
//! [`Poller::watchable`] first, closing such a connection at once.
//!
//! # Level-triggered
//!
//! As with poll(2), a ready descriptor is reported on every call until its
//! readiness is consumed; the same interest discipline keeps the loop from
//! spinning (see `poll.rs`). select has no hang-up or error bits: a reset,
//! a FIN or a pending error all show as "readable" (and "writable" where
//! write interest is set), and the read or write that follows tells which.
//!
//! # Fairness
//!
//! When more descriptors are ready than the event list holds, the scan
//! stops at the first one left out and the next `wait` starts there,
//! wrapping around, as in `poll.rs`. Without it the lowest descriptors
//! would come first on every call, and while more than an event list's
//! worth of them stayed ready, the ones above them would never be reported.

use std::io;
use std::os::fd::RawFd;
use std::ptr;
use std::time::Duration;

use super::{Event, EventList, FD_SETSIZE, Interest, Poller, Token};

/// The select(2) backend.
pub(crate) struct Select {
    /// The interest sets, kept here and copied for each call because
    /// select(2) overwrites what it is given with the result.
    read: libc::fd_set,
    write: libc::fd_set,
    /// The token of each registered descriptor, indexed by descriptor.
    tokens: Vec<Option<Token>>,
    /// The highest registered descriptor, or -1: select's `nfds` is one
    /// more than this, and the scan stops here.
    max_fd: RawFd,
    /// Where the next scan starts: when more descriptors are ready than an
    /// event list holds, the next `wait` begins with the ones left out.
    cursor: RawFd,
}

impl std::fmt::Debug for Select {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("max_fd", &self.max_fd)
            .finish_non_exhaustive()
    }
}

/// An empty `fd_set`.
fn empty_set() -> libc::fd_set {
    // SAFETY: fd_set is a plain array of integers, for which all-zero bits
    // are a valid value: the empty set (what FD_ZERO produces).
    unsafe { std::mem::zeroed() }
}

/// Whether `fd` fits in an `fd_set`.
fn fits(fd: RawFd) -> bool {
    fd >= 0 && (fd as usize) < FD_SETSIZE
}

impl Select {
    /// Sets or clears `fd`'s bits for `interest` in the interest sets.
    fn set_interest(&mut self, fd: RawFd, interest: Option<Interest>) {
        debug_assert!(fits(fd));
        let readable = interest.is_some_and(|i| i.is_readable());
        let writable = interest.is_some_and(|i| i.is_writable());
        // SAFETY: `fd` is in 0..FD_SETSIZE (checked by every caller through
        // `fits`), so the bit lies inside the sets, which are valid
        // fd_sets owned by `self`.
        unsafe {
            if readable {
                libc::FD_SET(fd, &mut self.read);
            } else {
                libc::FD_CLR(fd, &mut self.read);
            }
            if writable {
                libc::FD_SET(fd, &mut self.write);
            } else {
                libc::FD_CLR(fd, &mut self.write);
            }
        }
    }

    fn token(&self, fd: RawFd) -> Option<Token> {
        *self.tokens.get(usize::try_from(fd).ok()?)?
    }

    /// The O(highest fd) scan of what select(2) left in the sets: it says
    /// how many bits are set in all (a descriptor both readable and
    /// writable counts twice), not which. The scan starts at `cursor` and
    /// wraps around; when `events` fills up, the next scan starts at the
    /// first ready descriptor left out, so the low descriptors cannot
    /// starve the high ones (the same rule as `poll.rs`).
    fn collect(
        &mut self,
        read: &libc::fd_set,
        write: &libc::fd_set,
        n: usize,
        events: &mut EventList,
    ) {
        let span = (self.max_fd + 1).max(0);
        let mut left = n;
        let mut i = 0;
        while left > 0 && i < span {
            let fd = (self.cursor + i) % span;
            i += 1;
            // SAFETY: 0 <= fd <= max_fd < FD_SETSIZE; the sets are valid.
            let (r, w) = unsafe { (libc::FD_ISSET(fd, read), libc::FD_ISSET(fd, write)) };
            if !(r || w) {
                continue;
            }
            left = left.saturating_sub(usize::from(r) + usize::from(w));
            let Some(token) = self.token(fd) else {
                continue;
            };
            if events.is_full() {
                // Report the rest first next time.
                self.cursor = fd;
                return;
            }
            events.push(Event {
                token,
                readable: r,
                writable: w,
                read_closed: false,
                priority: false,
                write_closed: false,
                error: false,
            });
        }
        self.cursor = 0;
    }
}

impl Poller for Select {
    type Events = EventList;

    fn new() -> io::Result<Select> {
        Ok(Select {
            read: empty_set(),
            write: empty_set(),
            tokens: Vec::new(),
            max_fd: -1,
            cursor: 0,
        })
    }

    fn events(capacity: usize) -> EventList {
        EventList::with_capacity(capacity)
    }

    fn iter(events: &EventList) -> impl Iterator<Item = Event> + '_ {
        events.iter()
    }

    fn watchable(fd: RawFd) -> bool {
        fits(fd)
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if !fits(fd) {
            // EINVAL, as glibc's fortified FD_SET would abort with; never
            // a write outside the set.
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if self.token(fd).is_some() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let index = fd as usize;
        if index >= self.tokens.len() {
            self.tokens.resize(index + 1, None);
        }
        self.tokens[index] = Some(token);
        self.set_interest(fd, Some(interest));
        self.max_fd = self.max_fd.max(fd);
        Ok(())
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        if self.token(fd).is_none() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.tokens[fd as usize] = Some(token);
        self.set_interest(fd, Some(interest));
        Ok(())
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        if self.token(fd).is_none() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.tokens[fd as usize] = None;
        self.set_interest(fd, None);
        if fd == self.max_fd {
            self.max_fd = (0..fd)
                .rev()
                .find(|&lower| self.tokens[lower as usize].is_some())
                .unwrap_or(-1);
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut EventList, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        let mut read = self.read;
        let mut write = self.write;
        let mut tv = timeout.map(timeval);
        let tv_ptr = tv
            .as_mut()
            .map_or(ptr::null_mut(), |tv| tv as *mut libc::timeval);
        // SAFETY: the two sets are valid fd_sets on our stack, `nfds` is at
        // most FD_SETSIZE (every registered fd fits), the exception set may
        // be null, and `tv_ptr` is null or points to a live timeval.
        let n = unsafe {
            libc::select(
                self.max_fd + 1,
                &mut read,
                &mut write,
                ptr::null_mut(),
                tv_ptr,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.collect(&read, &write, n as usize, events);
        Ok(())
    }
}

/// A timeout for select(2), rounded up to whole microseconds, so that a
/// tiny timeout is not a busy zero.
fn timeval(t: Duration) -> libc::timeval {
    let micros = t.as_nanos().div_ceil(1_000).min(i64::MAX as u128) as i64;
    libc::timeval {
        tv_sec: (micros / 1_000_000) as libc::time_t,
        tv_usec: (micros % 1_000_000) as libc::suseconds_t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn descriptors_past_fd_setsize_are_refused_not_set() {
        let mut s = Select::new().unwrap();
        assert!(!Select::watchable(FD_SETSIZE as RawFd));
        assert!(!Select::watchable(-1));
        assert!(Select::watchable(FD_SETSIZE as RawFd - 1));
        let err = s
            .register(FD_SETSIZE as RawFd, Token(1), Interest::READABLE)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(s.max_fd, -1);
    }

    #[test]
    fn reports_level_triggered_and_forgets_deregistered() {
        let (a, b) = UnixStream::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        let mut s = Select::new().unwrap();
        s.register(a.as_raw_fd(), Token(7), Interest::READABLE)
            .unwrap();
        s.register(c.as_raw_fd(), Token(8), Interest::WRITABLE)
            .unwrap();
        (&b).write_all(b"x").unwrap();
        let mut events = Select::events(8);
        for _ in 0..2 {
            s.wait(&mut events, Some(Duration::ZERO)).unwrap();
            let mut got: Vec<_> = events.iter().map(|e| e.token.0).collect();
            got.sort();
            assert_eq!(got, vec![7, 8]);
        }
        s.deregister(c.as_raw_fd()).unwrap();
        s.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().map(|e| e.token.0).collect::<Vec<_>>(), [7]);
        assert_eq!(s.max_fd, a.as_raw_fd());
    }
}
