//! A worker: an ordinary single-threaded server on the sockets its master
//! bound for its slot, reporting to the master through its stdout, a pipe
//! the master reads:
//!
//! - `ready` once its loop is set up (the master's rolling restart waits
//!   for it before retiring the worker it replaces);
//! - `stats KEY=VALUE ...` every stats interval (1 s unless
//!   `--stats-interval` says otherwise), so that the master's totals keep
//!   a worker's counters even if it is killed;
//! - `final KEY=VALUE ...` as it exits.
//!
//! The pipe is non-blocking on the worker's side: a master that does not
//! read (stopped, or busy) must not stop the loop, so a line that does not
//! fit is dropped (the next report carries the counters anyway). Each
//! line is shorter than `PIPE_BUF`, so it arrives whole or not at all.
//!
//! Its loop also beats in its seat of the master's shared memory, and
//! counts hosts there (`seat.rs`). Everything else is the single
//! process's behaviour: the same flags, the same signals, the same exit
//! codes.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::listener::ListenError;
use crate::reactor::{Report, Server};
use crate::seat::{Region, Seat};
use crate::sockets::{Inheritance, Sockets};

/// How often a worker reports its counters when `--stats-interval` is not
/// given.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// What a master tells a worker it starts: its slot, its seat in the
/// shared memory and the descriptor of that memory, and which inherited
/// descriptor is which socket. Written by the master (`Display`) after
/// the worker flag, read by the worker (`parse`), as
/// `slot=1 seat=3 shared=9 echo/tcp=3 echo/tcp=4 daytime/tcp=6 daytime/udp=7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    slot: usize,
    seat: usize,
    shared: RawFd,
    sockets: Inheritance,
}

impl WorkerSpec {
    pub(crate) fn new(slot: usize, seat: usize, shared: RawFd, sockets: Inheritance) -> Self {
        WorkerSpec {
            slot,
            seat,
            shared,
            sockets,
        }
    }

    /// The worker slot this process serves (log lines name it).
    pub fn slot(&self) -> usize {
        self.slot
    }
}

impl fmt::Display for WorkerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slot={} seat={} shared={} {}",
            self.slot, self.seat, self.shared, self.sockets
        )
    }
}

impl FromStr for WorkerSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<WorkerSpec, String> {
        let mut rest = text.split_whitespace();
        let mut number = |key: &str| -> Result<usize, String> {
            let part = rest.next().unwrap_or("");
            part.strip_prefix(key)
                .and_then(|n| n.strip_prefix('='))
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("expected {key}=N, got {part:?}"))
        };
        let slot = number("slot")?;
        let seat = number("seat")?;
        let shared = number("shared")?;
        let shared = RawFd::try_from(shared)
            .ok()
            .filter(|&fd| fd > 2)
            .ok_or_else(|| format!("not a descriptor number: {shared}"))?;
        let sockets = rest.collect::<Vec<_>>().join(" ").parse()?;
        Ok(WorkerSpec {
            slot,
            seat,
            shared,
            sockets,
        })
    }
}

/// Serves as the worker `spec` describes, on the descriptors it names,
/// until stopped. Only for a process its master started: the
/// descriptors must be the ones the master left open for it.
pub fn run_worker(mut config: Config, spec: &WorkerSpec) -> Result<Report, ListenError> {
    let setup = ListenError::Setup;
    // SAFETY: the spec is written only by the master (`mod.rs`), which
    // leaves exactly these descriptors open across exec, each the kind
    // of socket it is listed as; nothing in this process has opened,
    // closed or claimed them before this point.
    let sockets = unsafe { Sockets::adopt(&spec.sockets) }.map_err(setup)?;
    // SAFETY: as above, for the shared region's descriptor.
    let region = unsafe { Region::attach(spec.shared) }.map_err(setup)?;
    if spec.seat >= region.seats() {
        let msg = format!("seat {} of {}", spec.seat, region.seats());
        return Err(setup(io::Error::new(io::ErrorKind::InvalidInput, msg)));
    }
    let reports = Reports::open().map_err(setup)?;
    // The master speaks to the service manager for the whole server.
    config.service_manager = false;
    config.stats_interval = config.stats_interval.or(Some(REPORT_INTERVAL));
    config.worker_slot = Some(spec.slot);
    let mut server = Server::with_sockets(&config, sockets)?;
    server.join(Seat {
        region: Arc::new(region),
        index: spec.seat,
    });
    server.on_stats(move |stats| reports.tell(&format!("stats {stats}")));
    reports.tell("ready");
    let report = server.run().map_err(setup)?;
    reports.tell(&format!("final {}", report.stats));
    Ok(report)
}

/// The worker's side of the pipe to its master (its stdout).
#[derive(Clone, Copy)]
struct Reports;

impl Reports {
    /// Makes stdout non-blocking, if it is the master's pipe (a FIFO no
    /// one else shares); leaves anything else alone.
    fn open() -> io::Result<Reports> {
        let fd = libc::STDOUT_FILENO;
        // SAFETY: fstat writes into the stat it is given.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `stat` is valid and writable; fd 1 may be closed (then
        // fstat fails and nothing changes).
        if unsafe { libc::fstat(fd, &mut stat) } == 0
            && stat.st_mode & libc::S_IFMT == libc::S_IFIFO
        {
            // SAFETY: fcntl on our own stdout, only adding O_NONBLOCK.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            // SAFETY: as above.
            if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Reports)
    }

    /// One line to the master, whole or not at all. If the master is gone
    /// or does not read there is no one to tell: the worker goes on
    /// serving (and `PR_SET_PDEATHSIG` stops it if the master died).
    fn tell(&self, line: &str) {
        let mut text = String::with_capacity(line.len() + 1);
        text.push_str(line);
        text.push('\n');
        // SAFETY: stdout is open for the life of the process; the File is
        // never dropped, so it never closes it.
        let mut out = ManuallyDrop::new(unsafe { File::from_raw_fd(libc::STDOUT_FILENO) });
        let _ = out.write(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_back_as_written() {
        let sockets: Inheritance = "echo/tcp=3 echo/udp=5 daytime/tcp=6 daytime/udp=7"
            .parse()
            .unwrap();
        let spec = WorkerSpec::new(2, 5, 9, sockets);
        let text = spec.to_string();
        assert_eq!(
            text,
            "slot=2 seat=5 shared=9 echo/tcp=3 echo/udp=5 daytime/tcp=6 daytime/udp=7"
        );
        assert_eq!(text.parse::<WorkerSpec>(), Ok(spec));
        for bad in [
            "",
            "slot=1",
            "seat=1 slot=2 shared=9 echo/tcp=3",
            "slot=1 seat=2 shared=1 echo/tcp=3",
            "slot=1 seat=2 shared=9 pipe/tcp=3",
            "slot=x seat=2 shared=9 echo/tcp=3",
        ] {
            assert!(bad.parse::<WorkerSpec>().is_err(), "{bad:?}");
        }
    }
}
