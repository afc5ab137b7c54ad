//! The multiplexer behind the loop: epoll (through mio), poll(2) or
//! select(2), chosen with `--backend`.
//!
//! Seeds 9 and 10 are the select and poll servers of the tutorials; the
//! reactor is their grown-up form. This module lets the *same* loop run on
//! each of the three, so the differences the tutorials describe can be
//! seen and measured (`docs/backends.md`):
//!
//! | backend  | one `wait` costs              | limit                      |
//! |----------|-------------------------------|----------------------------|
//! | `epoll`  | O(ready): the kernel keeps the interest list | none         |
//! | `poll`   | O(registered): the whole array is copied in, every entry checked, and scanned again here | none |
//! | `select` | O(highest fd): three bitmaps copied and scanned | fds below `FD_SETSIZE` (1024) |
//!
//! # The contract every backend meets
//!
//! A backend is a [`Poller`]. It identifies a source by its raw descriptor
//! (the caller keeps ownership of the socket and deregisters it before
//! closing it) and reports readiness by the [`Token`] given at
//! registration, like mio:
//!
//! - `register(fd, token, interest)` starts watching `fd`; `reregister`
//!   changes token or interest; `deregister` stops. No event for `fd` is
//!   reported by a `wait` that starts after `deregister` returned. Misuse
//!   fails as epoll_ctl(2) fails: `EEXIST` for registering a watched
//!   descriptor, `ENOENT` for changing or dropping an unwatched one.
//! - `wait(events, timeout)` sleeps until at least one source is ready or
//!   the timeout passes (`None`: no timeout, zero: just look, and return
//!   at once), then fills `events` with at most its capacity. `EINTR` comes
//!   back as `ErrorKind::Interrupted`; the caller retries.
//! - Fairness across waits: when more sources are ready than `events`
//!   holds, the ones left out come first in the next `wait`, so a few
//!   low-numbered sources cannot starve the rest. epoll gets this from the
//!   kernel's ready list; poll and select keep a cursor where their last
//!   scan stopped.
//! - Every event is a *hint*: it may be spurious, and an error or hang-up
//!   is reported as readable (on a source watched for reading) and/or
//!   writable, so that the next I/O call finds out what happened. Callers
//!   must tolerate both.
//! - Readiness may be edge-triggered (epoll: mio registers with `EPOLLET`,
//!   an event means "something changed") or level-triggered (poll and
//!   select: an event means "something is there", again on every `wait`
//!   until it is consumed). The reactor is written for both, by the
//!   readiness rules of `connection/mod.rs`: it drains or remembers readiness
//!   (needed under edge-triggering), and it asks only for the interest it
//!   will act on (needed under level-triggering, or an unconsumed readiness
//!   turns the loop into a spin). Where a rule exists for one of the two
//!   only, the code says so.
//! - [`Poller::watchable`] says whether a descriptor can be registered at
//!   all; select cannot watch descriptors at or above `FD_SETSIZE`, and the
//!   reactor refuses such connections instead of registering them.
//!
//! `contract.rs` checks each rule above on all three backends, with the
//! same generic test per rule.
//!
//! The reactor is generic over [`Poller`] and monomorphised per backend:
//! the epoll path pays no dynamic dispatch, allocation or extra syscall per
//! event for the existence of the other two.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

pub(crate) use mio::{Interest, Token};

#[cfg(test)]
mod contract;
pub(crate) mod epoll;
pub(crate) mod poll;
pub(crate) mod select;

pub(crate) use epoll::Epoll;
pub(crate) use poll::Poll;
pub(crate) use select::Select;

/// What one event says about its source. All of it is a hint (see the
/// module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    /// The token the source was registered with.
    pub token: Token,
    /// Input (or EOF) may be waiting.
    pub readable: bool,
    /// The send buffer may have room.
    pub writable: bool,
    /// The peer's FIN or a hang-up was seen by the kernel.
    pub read_closed: bool,
    /// Urgent (out-of-band) data is pending: a read stops short at its
    /// mark, so a short read no longer proves the queue empty
    /// (`connection/mod.rs`, rule 1). Reported by epoll and poll; select
    /// leaves it false (it would need a third `fd_set`), which is safe
    /// there because level-triggering reports the rest again.
    pub priority: bool,
    /// The write side is closed (hang-up, reset).
    pub write_closed: bool,
    /// An error is pending on the source.
    pub error: bool,
}

/// A readiness multiplexer: one of the backends above.
pub(crate) trait Poller: Sized {
    /// Where [`Poller::wait`] puts its events.
    type Events;

    /// Creates the multiplexer (for epoll, the epoll instance).
    fn new() -> io::Result<Self>;

    /// An event buffer that holds at most `capacity` events per `wait`.
    fn events(capacity: usize) -> Self::Events;

    /// The events the last `wait` left in `events`.
    fn iter(events: &Self::Events) -> impl Iterator<Item = Event> + '_;

    /// Whether `fd` can be registered with this backend at all.
    fn watchable(fd: RawFd) -> bool {
        let _ = fd;
        true
    }

    /// Starts watching `fd` for `interest`, reporting it as `token`.
    fn register(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;

    /// Changes what `fd` is watched for, or its token.
    fn reregister(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;

    /// Stops watching `fd` (call before closing it).
    fn deregister(&mut self, fd: RawFd) -> io::Result<()>;

    /// Waits for readiness; see the module docs.
    fn wait(&mut self, events: &mut Self::Events, timeout: Option<Duration>) -> io::Result<()>;
}

/// The backends `--backend` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// epoll through mio (edge-triggered): the default.
    #[default]
    Epoll,
    /// poll(2) (level-triggered).
    Poll,
    /// select(2) (level-triggered), descriptors below `FD_SETSIZE` only.
    Select,
}

impl std::str::FromStr for Backend {
    type Err = String;

    /// `epoll`, `poll` or `select`, as `--backend` spells them.
    fn from_str(name: &str) -> Result<Backend, String> {
        match name {
            "epoll" => Ok(Backend::Epoll),
            "poll" => Ok(Backend::Poll),
            "select" => Ok(Backend::Select),
            other => Err(format!("unknown backend {other:?}: epoll, poll or select")),
        }
    }
}

/// The event buffer of the poll and select backends: the events of one
/// `wait`, collected by scanning the backend's own table.
#[derive(Debug)]
pub(crate) struct EventList {
    list: Vec<Event>,
    capacity: usize,
}

impl EventList {
    /// Room for `capacity` events, allocated once.
    pub(crate) fn with_capacity(capacity: usize) -> EventList {
        EventList {
            list: Vec::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    fn clear(&mut self) {
        self.list.clear();
    }

    fn is_full(&self) -> bool {
        self.list.len() >= self.capacity
    }

    fn push(&mut self, event: Event) {
        self.list.push(event);
    }

    /// The events of the last `wait`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.list.iter().copied()
    }
}

/// select's limit, here for the CLI help and the logs.
pub(crate) const FD_SETSIZE: usize = libc::FD_SETSIZE;

/// A timeout in whole milliseconds for poll(2), rounded *up*, so that a
/// 0.5 ms timer deadline is not turned into a zero timeout and a busy loop
/// (mio does the same for epoll). `None` is -1: wait forever.
pub(crate) fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_the_next_millisecond() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(500))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(7))), 7);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX))), i32::MAX);
    }

    #[test]
    fn a_backend_is_named_as_backend_spells_it() {
        assert_eq!("epoll".parse(), Ok(Backend::Epoll));
        assert_eq!("poll".parse(), Ok(Backend::Poll));
        assert_eq!("select".parse(), Ok(Backend::Select));
        let unknown = "kqueue".parse::<Backend>().expect_err("not a backend here");
        assert!(unknown.contains("kqueue"), "{unknown}");
    }
}
