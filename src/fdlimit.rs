//! The descriptor budget: `RLIMIT_NOFILE`, and a spare descriptor kept for
//! the moment it runs out.
//!
//! Every connection costs one descriptor. At start the server raises its
//! soft limit to the hard limit (as nginx's `worker_rlimit_nofile` or the Go
//! runtime do), and by default admits that many connections minus a small
//! reserve for its own descriptors.
//!
//! When the limit is hit anyway (another process, a lower `ulimit`), `accept`
//! fails with `EMFILE` (or `ENFILE`, system-wide). That is not `WouldBlock`:
//! the pending connection stays in the backlog, so an edge-triggered loop
//! would never hear about the listener again, and a level-triggered one
//! would spin at 100% CPU. libuv's answer, used here: keep one spare
//! descriptor open; on `EMFILE` close it, accept the pending connection,
//! close that at once (the client sees the connection end instead of
//! hanging), and reopen the spare.

use std::fs::File;
use std::io;

/// Descriptors kept back from `--max-connections` for the server itself:
/// stdio, the epoll instance, listeners, the signal pipe, the waker, the
/// spare, and a margin for the resolver or logging.
pub(crate) const RESERVED_FDS: u64 = 64;

/// The default connection limit for a descriptor limit of `nofile`: all but
/// [`RESERVED_FDS`], or all but half under a tiny limit (a test's `ulimit
/// -n 32`), so that the server still serves a few clients there.
pub(crate) fn default_max_connections(nofile: u64) -> usize {
    let reserve = RESERVED_FDS.min(nofile / 2);
    usize::try_from(nofile - reserve)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit.
pub(crate) fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit; getrlimit only writes it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that only raises the soft limit
        // up to the hard one, which an unprivileged process may do.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

/// Whether an `accept` error means "out of descriptors".
pub(crate) fn is_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// One descriptor held in reserve (an open `/dev/null`).
#[derive(Debug)]
pub(crate) struct SpareFd(Option<File>);

impl SpareFd {
    /// Opens the spare. Failure is not fatal: without it, the loop falls
    /// back to pausing accepts and retrying from a timer.
    pub(crate) fn open() -> SpareFd {
        SpareFd(File::open("/dev/null").ok())
    }

    /// Closes the spare, freeing one descriptor; false if there was none.
    pub(crate) fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Reopens the spare after [`SpareFd::release`].
    pub(crate) fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limit_keeps_a_reserve() {
        assert_eq!(default_max_connections(20_000), 19_936);
        assert_eq!(default_max_connections(32), 16);
        assert_eq!(default_max_connections(1), 1);
    }
}
