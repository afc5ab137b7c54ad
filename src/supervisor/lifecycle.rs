//! A worker's life as the master sees it: started from the program with
//! its slot's descriptors and a seat, ready, watched (its heartbeat),
//! retired in a rolling restart, reaped once its last line is read (or
//! once killed), and restarted after a backoff if it was serving.

use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::Sender;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use super::{
    MAX_BACKOFF, MIN_BACKOFF, Note, Rolling, STABLE_AFTER, STARTUP_GRACE, Supervisor, Worker,
    WorkerSpec, signal,
};
use crate::seat;
use crate::stats::Stats;
use crate::{activation, notify};

impl Supervisor {
    /// Starts a worker in `slot`; it serves the slot at once when
    /// `serving` (at startup, or in place of a dead one), or once ready
    /// (a rolling restart).
    pub(super) fn start(
        &mut self,
        slot: usize,
        serving: bool,
        notes: &Sender<Note>,
    ) -> io::Result<u64> {
        let seat = self
            .free_seats
            .pop()
            .ok_or_else(|| io::Error::other("no free seat: too many workers are still retiring"))?;
        self.region.clear_beat(seat);
        let sockets = &self.slots[slot].sockets;
        let mut fds = sockets.raw_fds();
        fds.push(self.region.fd());
        let spec = WorkerSpec::new(slot, seat, self.region.fd(), sockets.inheritance());
        let mut command = self.program.command(&self.worker_args);
        // The service manager's variables are the master's: a worker
        // neither takes sockets nor notifies (`activation.rs`, `notify.rs`).
        for name in activation::VARIABLES
            .into_iter()
            .chain([notify::NOTIFY_SOCKET])
        {
            command.env_remove(name);
        }
        command
            .arg("--worker")
            .arg(spec.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        // SAFETY: between fork and exec the closure makes only
        // async-signal-safe calls (fcntl, prctl) and allocates nothing; the
        // descriptors are the slot's sockets and the shared memory, open
        // in this process and so in the child.
        unsafe {
            command.pre_exec(move || {
                for &fd in &fds {
                    // Keep these across exec (and no other).
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // SIGTERM (a graceful drain) if the master dies.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.free_seats.push(seat);
                return Err(e);
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        if let Some(pipe) = child.stdout.take() {
            let notes = notes.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if notes.send(Note::Line(id, line)).is_err() {
                        return;
                    }
                }
                let _ = notes.send(Note::Closed(id));
            });
        }
        debug!(
            "master: worker {slot} started (pid {}, seat {seat})",
            child.id()
        );
        self.workers.insert(
            id,
            Worker {
                slot,
                seat,
                child,
                started: Instant::now(),
                started_ms: seat::monotonic_ms(),
                retiring: false,
                hung: false,
                stats: Stats::default(),
                said_all: false,
                ready: false,
            },
        );
        if serving {
            self.slots[slot].current = Some(id);
        }
        Ok(id)
    }

    pub(super) fn on_line(&mut self, id: u64, line: &str, notes: &Sender<Note>) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let (slot, pid) = (worker.slot, worker.child.id());
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "ready" => {
                worker.ready = true;
                info!("master: worker {slot} (pid {pid}) serving");
                self.slots[slot].ever_ready = true;
                if self.rolling.as_ref().is_some_and(|r| r.new == Some(id)) {
                    self.replaced(slot, id, notes);
                }
            }
            "stats" | "final" => match rest.parse::<Stats>() {
                Ok(stats) => {
                    let kind = if kind == "final" {
                        "final stats"
                    } else {
                        "stats"
                    };
                    debug!("worker {slot} (pid {pid}): {kind}: {stats}");
                    worker.stats = stats;
                }
                Err(e) => warn!("master: worker {slot} sent bad counters: {e}"),
            },
            _ => warn!("master: worker {slot} said something unexpected: {line:?}"),
        }
    }

    /// A rolling restart's next step: a new worker for the next slot, or
    /// done.
    pub(super) fn roll_on(&mut self, notes: &Sender<Note>) {
        let Some(slot) = self.rolling.as_ref().map(|r| r.slot) else {
            return;
        };
        if slot == self.slots.len() {
            info!("master: rolling restart done");
            self.rolling = None;
            return;
        }
        match self.start(slot, false, notes) {
            Ok(id) => {
                self.rolling = Some(Rolling {
                    slot,
                    new: Some(id),
                })
            }
            Err(e) => {
                error!("master: rolling restart stopped: cannot start worker {slot}: {e}");
                self.rolling = None;
            }
        }
    }

    /// The new worker `id` serves `slot`: the one it replaces drains.
    pub(super) fn replaced(&mut self, slot: usize, id: u64, notes: &Sender<Note>) {
        let old = self.slots[slot].current.replace(id);
        self.slots[slot].restart_at = None;
        if let Some(old) = old.and_then(|old| self.workers.get_mut(&old)) {
            old.retiring = true;
            // Retire, not shut down: it stops accepting and serves its
            // open connections until they close (at most
            // --shutdown-timeout), so that one it accepted a moment ago is
            // answered rather than cut off.
            signal(old, libc::SIGUSR2);
        }
        if let Some(rolling) = self.rolling.as_mut() {
            rolling.slot = slot + 1;
            rolling.new = None;
        }
        self.roll_on(notes);
    }

    /// The watchdog: kills every worker whose loop has not beaten for
    /// `--watchdog` (the reap that follows replaces it).
    pub(super) fn watch(&mut self) {
        let Some(bound) = self.watchdog else {
            return;
        };
        let now = seat::monotonic_ms();
        for worker in self.workers.values_mut() {
            if worker.hung {
                continue;
            }
            let beat = self.region.last_beat(worker.seat).max(worker.started_ms);
            let allowed = if worker.ready {
                bound
            } else {
                bound.max(STARTUP_GRACE)
            };
            let silent = Duration::from_millis(now.saturating_sub(beat));
            if silent > allowed {
                worker.hung = true;
                self.hangs += 1;
                error!(
                    "master: worker {} (pid {}) has not turned its loop for {:.1} s \
                     (--watchdog {:.1} s); killing it",
                    worker.slot,
                    worker.child.id(),
                    silent.as_secs_f64(),
                    allowed.as_secs_f64(),
                );
                signal(worker, libc::SIGKILL);
            }
        }
    }

    /// Collects every worker that has exited and whose last line has been
    /// read (or that was killed: a stopped worker's pipe may never say
    /// more), and decides what follows.
    pub(super) fn reap(&mut self) {
        let exited: Vec<(u64, ExitStatus)> = (self.workers.iter_mut())
            .filter(|(_, w)| w.said_all || w.hung)
            .filter_map(|(&id, w)| w.child.try_wait().ok().flatten().map(|s| (id, s)))
            .collect();
        for (id, status) in exited {
            if let Some(worker) = self.workers.remove(&id) {
                self.exited(id, worker, status);
            }
        }
    }

    pub(super) fn exited(&mut self, id: u64, worker: Worker, status: ExitStatus) {
        let Worker { slot, seat, .. } = worker;
        let pid = worker.child.id();
        // Its connections are closed now: give back what they counted, and
        // the seat.
        let given_back = self.region.reclaim(seat);
        if given_back > 0 {
            debug!("master: worker {slot} (pid {pid}): {given_back} host counts given back");
        }
        self.free_seats.push(seat);
        // Its counters stay in the totals; what it held is gone.
        let mut last = worker.stats;
        last.active = 0;
        last.buffered = 0;
        last.buffered_peak = 0;
        last.buffered_limit = 0;
        last.http_active = 0;
        last.listeners_paused = 0;
        last.timers = 0;
        last.relays = 0;
        self.retired[slot].add(&last);
        if self.rolling.as_ref().is_some_and(|r| r.new == Some(id)) {
            error!("master: rolling restart stopped: the new worker {slot} exited ({status})");
            self.rolling = None;
        }
        let serving = self.slots[slot].current == Some(id);
        if !serving || self.stops > 0 || self.failed {
            debug!("master: worker {slot} (pid {pid}) exited ({status})");
            return;
        }
        self.slots[slot].current = None;
        if !self.slots[slot].ever_ready {
            error!("master: worker {slot} (pid {pid}) failed to start ({status}); stopping");
            self.failed = true;
            self.stop_all();
            return;
        }
        let state = &mut self.slots[slot];
        state.backoff = next_backoff(state.backoff, worker.started.elapsed());
        state.restart_at = Some(Instant::now() + state.backoff);
        self.restarts += 1;
        warn!(
            "master: worker {slot} (pid {pid}) exited ({status}); restarting it in {:?} \
             (restart {})",
            state.backoff, self.restarts
        );
    }

    pub(super) fn next_restart(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.restart_at).min()
    }

    /// Starts the workers whose restart is due.
    pub(super) fn restart_due(&mut self, now: Instant, notes: &Sender<Note>) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].restart_at.is_some_and(|at| at <= now) {
                self.slots[slot].restart_at = None;
                if let Err(e) = self.start(slot, true, notes) {
                    let state = &mut self.slots[slot];
                    state.backoff = (state.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                    state.restart_at = Some(now + state.backoff);
                    error!("master: cannot restart worker {slot}: {e}; trying again");
                }
            }
        }
    }
}

/// The pause before restarting a worker that died after `lived`, the
/// last pause having been `last`: short again after a stable run, else
/// doubling up to [`MAX_BACKOFF`].
fn next_backoff(last: Duration, lived: Duration) -> Duration {
    if lived >= STABLE_AFTER {
        MIN_BACKOFF
    } else {
        (last * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_keeps_dying_waits_longer_each_time_up_to_the_maximum() {
        let young = Duration::from_millis(50);
        let mut pause = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            pause = next_backoff(pause, young);
            seen.push(pause);
        }
        assert_eq!(seen[0], MIN_BACKOFF);
        assert_eq!(seen[1], 2 * MIN_BACKOFF);
        assert!(seen.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*seen.last().unwrap(), MAX_BACKOFF);
        assert_eq!(next_backoff(MAX_BACKOFF, STABLE_AFTER), MIN_BACKOFF);
    }
}
