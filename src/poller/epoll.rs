//! epoll, through mio's `Poll`: the default backend, and the one the core
//! was written for.
//!
//! mio registers every source edge-triggered (`EPOLLET`), so a `wait`
//! reports only what *changed* and costs O(ready), not O(registered): the
//! interest list lives in the kernel and is changed only by
//! `epoll_ctl`, never copied per call. The readiness rules in
//! `connection/mod.rs` are what make edge-triggering safe.
//!
//! This file is a thin veneer: mio accepts any descriptor through
//! [`SourceFd`], and each method here is one mio call (one syscall for
//! `register`, `reregister`, `deregister` and `wait`, exactly as before the
//! other backends existed). Converting an event is a few bit tests, inlined.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use mio::unix::SourceFd;

use super::{Event, Interest, Poller, Token};

/// Whoever asks to read also hears of urgent data (`EPOLLPRI`).
///
/// A TCP read stops at the urgent mark even when more bytes are queued
/// behind it, and with `EPOLLET` no new edge comes for those bytes: the
/// one event that says "urgent data" is what tells the connection not to
/// take that short read for an empty queue (`connection/mod.rs`, rule 1).
/// `EPOLLPRI` is raised only while urgent data is pending, so asking for
/// it costs the ordinary path nothing.
#[inline]
fn with_priority(interest: Interest) -> Interest {
    if interest.is_readable() {
        interest | Interest::PRIORITY
    } else {
        interest
    }
}

/// mio's `Poll` (epoll on Linux).
#[derive(Debug)]
pub(crate) struct Epoll {
    poll: mio::Poll,
}

impl Poller for Epoll {
    type Events = mio::Events;

    fn new() -> io::Result<Epoll> {
        Ok(Epoll {
            poll: mio::Poll::new()?,
        })
    }

    fn events(capacity: usize) -> mio::Events {
        mio::Events::with_capacity(capacity)
    }

    #[inline]
    fn iter(events: &mio::Events) -> impl Iterator<Item = Event> + '_ {
        events.iter().map(|e| Event {
            token: e.token(),
            readable: e.is_readable(),
            writable: e.is_writable(),
            read_closed: e.is_read_closed(),
            priority: e.is_priority(),
            write_closed: e.is_write_closed(),
            error: e.is_error(),
        })
    }

    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), token, with_priority(interest))
    }

    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.poll
            .registry()
            .reregister(&mut SourceFd(&fd), token, with_priority(interest))
    }

    fn deregister(&mut self, fd: RawFd) -> io::Result<()> {
        self.poll.registry().deregister(&mut SourceFd(&fd))
    }

    fn wait(&mut self, events: &mut mio::Events, timeout: Option<Duration>) -> io::Result<()> {
        self.poll.poll(events, timeout)
    }
}
