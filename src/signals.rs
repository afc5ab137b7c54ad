//! Signals, handled on purpose: every signal the server expects wakes the
//! loop through one self-pipe, and none takes its default action.
//!
//! | signal | default action | here |
//! | --- | --- | --- |
//! | SIGINT, SIGTERM | terminate | graceful shutdown (after `--drain-delay`, if given: `reactor/stop.rs`); a second one ends at once |
//! | SIGHUP | terminate (a closed terminal sends it) | logged; nothing to reload in one process, so serving goes on |
//! | SIGUSR1 | terminate | the counters are logged now |
//! | SIGUSR2 | terminate | retire: stop accepting, serve the open connections until they close (at most `--shutdown-timeout`), then shut down; a master's rolling restart (`--workers`) sends it |
//! | SIGQUIT | terminate with a core dump | a status report is logged (connections, memory held, timers, then the counters); serving goes on |
//! | SIGALRM | terminate | logged; serving goes on |
//! | SIGWINCH | ignore | left alone (a terminal resize means nothing to a server) |
//! | SIGPIPE | terminate | ignored (Rust's runtime does it before `main`): a write to a reset connection fails with `EPIPE` instead |
//!
//! A master of `--workers` gives each of them a meaning of its own
//! (`supervisor/mod.rs`); docs/limits.md has the table for all three kinds
//! of process.
//!
//! Without this, a stray `kill -USR1` or the terminal closing would cut
//! every connection with no drain and no final counters.
//!
//! The handler of each signal counts it (an atomic add) and writes a byte
//! to the pipe (`shutdown.rs` explains why a pipe: every backend can watch
//! one); both are async-signal-safe. When the pipe fires, the loop drains it and reads the
//! counts, so it knows what was asked and, for stop requests, how many
//! times. All of it costs two descriptors.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use signal_hook::SigId;
use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

use crate::shutdown::WakePipe;

/// What a signal asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// SIGINT, SIGTERM: shut down (gracefully the first time).
    Stop,
    /// SIGHUP: reload; a single process has nothing to reload.
    Hangup,
    /// SIGUSR1: log the counters now.
    ReportStats,
    /// SIGUSR2: stop accepting, serve the open connections until they
    /// close, then exit.
    Retire,
    /// SIGQUIT: log where the loop stands and the counters.
    Status,
    /// SIGALRM: logged, nothing else.
    Alarm,
}

/// The signals handled, and what each asks.
const HANDLED: [(libc::c_int, Request); 7] = [
    (SIGINT, Request::Stop),
    (SIGTERM, Request::Stop),
    (SIGHUP, Request::Hangup),
    (SIGUSR1, Request::ReportStats),
    (SIGUSR2, Request::Retire),
    (SIGQUIT, Request::Status),
    (SIGALRM, Request::Alarm),
];

/// The handled signals as one readable descriptor.
#[derive(Debug)]
pub(crate) struct Signals {
    pipe: WakePipe,
    /// The write end the handlers write to; it must outlive them, so the
    /// handlers are removed (in `drop`) before it is closed.
    write: UnixStream,
    /// Signals of each [`HANDLED`] entry received so far, and seen so far.
    received: Arc<[AtomicUsize; HANDLED.len()]>,
    seen: [usize; HANDLED.len()],
    ids: Vec<SigId>,
}

impl Signals {
    /// Installs the handlers; register [`Signals::fd`] for `READABLE`.
    pub(crate) fn install() -> io::Result<Signals> {
        let (pipe, write) = WakePipe::pair()?;
        let mut signals = Signals {
            pipe,
            write,
            received: Arc::new(Default::default()),
            seen: [0; HANDLED.len()],
            ids: Vec::new(),
        };
        let wake_fd = signals.write.as_raw_fd();
        for (i, (signal, _)) in HANDLED.iter().enumerate() {
            let received = Arc::clone(&signals.received);
            // SAFETY: the action adds to an atomic integer and sends one
            // byte with send(2), both async-signal-safe: no lock, no
            // allocation (signal-hook restores errno around it). `wake_fd`
            // stays open while the action is installed: `drop` removes
            // the actions before `write` closes.
            let id = unsafe {
                signal_hook::low_level::register(*signal, move || {
                    received[i].fetch_add(1, Ordering::SeqCst);
                    // A full pipe already holds a wake-up: ignore errors.
                    libc::send(wake_fd, b"X".as_ptr().cast(), 1, libc::MSG_DONTWAIT);
                })
            };
            // On error `signals` is dropped, which removes what was added.
            signals.ids.push(id?);
        }
        Ok(signals)
    }

    /// The descriptor to register.
    pub(crate) fn fd(&self) -> RawFd {
        self.pipe.fd()
    }

    /// Drains the pipe; returns each request that arrived since the last
    /// call, with how many times.
    pub(crate) fn take(&mut self) -> Vec<(Request, usize)> {
        self.pipe.drain();
        let mut new: Vec<(Request, usize)> = Vec::new();
        for (i, (_, request)) in HANDLED.iter().enumerate() {
            let total = self.received[i].load(Ordering::SeqCst);
            let count = total - std::mem::replace(&mut self.seen[i], total);
            if count == 0 {
                continue;
            }
            match new.iter_mut().find(|(r, _)| r == request) {
                Some((_, n)) => *n += count,
                None => new.push((*request, count)),
            }
        }
        new
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // Restore the default actions before the write end closes.
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
