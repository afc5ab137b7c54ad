//! `--workers N`: a master process and N worker processes, shared-nothing,
//! the way nginx grows past one core (and here, past one process's
//! descriptor limit).
//!
//! The master binds every socket once per worker *slot*, each with
//! `SO_REUSEPORT`, so that the kernel spreads new connections over the
//! slots; it prints where it listens, then starts one worker per slot by
//! re-executing its own binary (simpler and safer than `fork` in a Rust
//! program) with the same flags plus `--worker SLOT --inherit FDS`. Only
//! that slot's descriptors survive the exec (every descriptor Rust opens is
//! close-on-exec; the child clears the flag on exactly these). Each worker
//! is an ordinary single-threaded event loop (`worker.rs`); the master never
//! accepts a connection. Why it keeps every slot's sockets open anyway is
//! in the library's `sockets.rs`: a slot's accept queue outlives the worker
//! serving it, so a worker that dies or is replaced resets no queued
//! connection.
//!
//! What the master does:
//!
//! | event | what happens |
//! | --- | --- |
//! | a worker exits while serving | restarted in its slot after a backoff (100 ms, doubling up to 10 s while it keeps dying young); logged and counted |
//! | a worker fails before it ever served | startup failed (a bad flag value the worker met, say): every worker is stopped and the master exits 1 |
//! | SIGINT / SIGTERM | SIGTERM to every worker (each drains as a single process would); the master exits 0 once all have exited |
//! | a second SIGINT / SIGTERM | SIGTERM again: each worker ends at once; the master exits 130 |
//! | SIGHUP | rolling restart: slot by slot, a new worker starts on the slot's sockets, and once it is serving the old one retires (SIGUSR2: it stops accepting and serves its open connections until they close, at most `--shutdown-timeout`); no connection attempt is refused or reset meanwhile |
//!
//! Workers run in their own process group, so a terminal's Ctrl+C reaches
//! only the master, which decides; and they ask the kernel for a SIGTERM
//! if the master dies (`PR_SET_PDEATHSIG`), so none is left orphaned.
//!
//! Counters: each worker writes its counters to its stdout, a pipe to the
//! master (`worker.rs`). The master logs their sum like a single process
//! would (`stats:` every `--stats-interval`, `final stats:` at exit), each
//! worker's own at debug level, and keeps a dead worker's last counters in
//! the sum.
//!
//! The master is no event loop to study: it waits on one channel, fed by a
//! thread that turns signals into messages and one thread per worker that
//! reads its pipe.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::{Config, Exposition, ListenError, Sockets, Stats};
use log::{debug, error, info, warn};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use crate::metrics;

/// The first pause before restarting a worker that died.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause before a restart, for a worker that keeps dying.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A worker that served this long before dying is restarted after
/// [`MIN_BACKOFF`] again.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Starts `workers` workers on `config` and supervises them until they have
/// all exited after a stop request.
pub fn run(mut config: Config, workers: usize) -> ExitCode {
    // Metrics are the master's to serve (`metrics.rs`); workers get none.
    let metrics_addrs = std::mem::take(&mut config.metrics);
    let slots = match bind_slots(&config, workers) {
        Ok(slots) => slots,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let first = &slots[0].sockets;
    let page = match (first.tcp_addrs(), first.udp_addrs(), first.daytime_addrs()) {
        (Ok(tcp), Ok(udp), Ok(daytime)) => {
            let page = metrics::Shared::default();
            let metrics = match metrics::serve(&metrics_addrs, page.clone()) {
                Ok(bound) => bound,
                Err(e) => {
                    eprintln!("error: --metrics: {e}");
                    return ExitCode::FAILURE;
                }
            };
            crate::print_listening(&tcp, &udp, &daytime, &metrics);
            (!metrics.is_empty()).then_some(page)
        }
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (notes, inbox) = mpsc::channel();
    if let Err(e) = forward_signals(notes.clone()) {
        eprintln!("error: cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: cannot find this program to start workers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut master = Master {
        exe,
        args: std::env::args_os().skip(1).collect(),
        slots,
        workers: HashMap::new(),
        next_id: 0,
        notes,
        retired: vec![Stats::default(); workers],
        page,
        restarts: 0,
        stops: 0,
        failed: false,
        rolling: None,
        stats_interval: config.stats_interval,
    };
    master.publish();
    info!("master: starting {workers} workers");
    for slot in 0..master.slots.len() {
        if let Err(e) = master.start(slot, true) {
            error!("master: cannot start worker {slot}: {e}");
            master.failed = true;
            master.stop_all();
            break;
        }
    }
    master.supervise(&inbox)
}

/// One worker slot: its sockets, and who serves them.
struct Slot {
    sockets: Sockets,
    /// The worker serving the slot; `None` while one is awaited.
    current: Option<u64>,
    /// When to start a worker in place of one that died.
    restart_at: Option<Instant>,
    /// The pause before the next restart.
    backoff: Duration,
    /// Some worker of this slot has reported `ready`.
    ever_ready: bool,
}

/// One worker process.
struct Worker {
    slot: usize,
    child: Child,
    started: Instant,
    /// Told to drain because a newer worker serves its slot.
    retiring: bool,
    /// Its latest counters.
    stats: Stats,
    /// Its pipe has closed: every line it wrote has been read (it is
    /// reaped only then, so that its final counters are not lost).
    said_all: bool,
    /// It has said `ready`.
    ready: bool,
}

/// A rolling restart under way: the slot being replaced, and its new
/// worker once started.
struct Rolling {
    slot: usize,
    new: Option<u64>,
}

/// What reaches the master's one inbox.
enum Note {
    Signal(i32),
    /// A line a worker wrote to its pipe.
    Line(u64, String),
    /// A worker's pipe closed (it exited, or is about to), after its
    /// last line.
    Closed(u64),
}

struct Master {
    exe: PathBuf,
    args: Vec<OsString>,
    slots: Vec<Slot>,
    workers: HashMap<u64, Worker>,
    next_id: u64,
    notes: Sender<Note>,
    /// The last counters of the workers that have exited, per slot.
    retired: Vec<Stats>,
    /// Where `--metrics` answers from, if it is on.
    page: Option<metrics::Shared>,
    restarts: u64,
    /// SIGINT/SIGTERM received.
    stops: usize,
    /// A worker could not start: exit 1 once every worker is gone.
    failed: bool,
    rolling: Option<Rolling>,
    stats_interval: Option<Duration>,
}

impl Master {
    /// Waits on the inbox until every worker has exited after a stop.
    fn supervise(mut self, inbox: &Receiver<Note>) -> ExitCode {
        let mut next_report = self.stats_interval.map(|every| Instant::now() + every);
        while self.stops == 0 && !self.failed || !self.workers.is_empty() {
            let deadline = self.next_restart().into_iter().chain(next_report).min();
            let note = match deadline {
                Some(at) => inbox.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match note {
                Ok(Note::Signal(SIGCHLD)) => self.reap(),
                Ok(Note::Signal(signal)) => self.on_signal(signal),
                Ok(Note::Line(id, line)) => self.on_line(id, &line),
                Ok(Note::Closed(id)) => {
                    if let Some(worker) = self.workers.get_mut(&id) {
                        worker.said_all = true;
                    }
                    self.reap();
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The signal thread holds a sender for the life of the
                // process, so the inbox never closes.
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            self.restart_due(now);
            self.publish();
            if let (Some(at), Some(every)) = (next_report, self.stats_interval)
                && now >= at
            {
                info!("stats: {}", self.totals());
                next_report = Some(now + every);
            }
        }
        info!("final stats: {}", self.totals());
        if self.restarts > 0 {
            info!("master: {} worker restarts", self.restarts);
        }
        if self.failed {
            ExitCode::FAILURE
        } else if self.stops >= 2 {
            ExitCode::from(crate::EXIT_FORCED)
        } else {
            ExitCode::SUCCESS
        }
    }

    /// Starts a worker in `slot`; it serves the slot at once when
    /// `serving` (at startup, or in place of a dead one), or once ready
    /// (a rolling restart).
    fn start(&mut self, slot: usize, serving: bool) -> io::Result<u64> {
        let sockets = &self.slots[slot].sockets;
        let fds = sockets.raw_fds();
        let mut command = Command::new(&self.exe);
        command
            .args(&self.args)
            .arg("--worker")
            .arg(slot.to_string())
            .arg("--inherit")
            .arg(sockets.inheritance().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        // SAFETY: between fork and exec the closure makes only
        // async-signal-safe calls (fcntl, prctl) and allocates nothing; the
        // descriptors are the slot's sockets, open in this process and so
        // in the child.
        unsafe {
            command.pre_exec(move || {
                for &fd in &fds {
                    // Keep this slot's sockets across exec (and no other).
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
        let mut child = command.spawn()?;
        let id = self.next_id;
        self.next_id += 1;
        if let Some(pipe) = child.stdout.take() {
            let notes = self.notes.clone();
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
        debug!("master: worker {slot} started (pid {})", child.id());
        self.workers.insert(
            id,
            Worker {
                slot,
                child,
                started: Instant::now(),
                retiring: false,
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

    fn on_line(&mut self, id: u64, line: &str) {
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
                    self.replaced(slot, id);
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

    fn on_signal(&mut self, signal: i32) {
        match signal {
            SIGINT | SIGTERM => {
                self.stops += 1;
                if self.stops == 1 {
                    info!(
                        "master: shutting down {} workers gracefully; a second signal ends them at once",
                        self.workers.len()
                    );
                } else {
                    warn!("master: second signal: ending every worker now");
                }
                self.stop_all();
            }
            SIGHUP if self.stops > 0 || self.failed => {
                info!("master: SIGHUP during shutdown: ignored");
            }
            SIGHUP if self.rolling.is_some() => {
                info!("master: SIGHUP: workers are being replaced already");
            }
            SIGHUP => {
                info!("master: SIGHUP: replacing the workers one slot at a time");
                self.rolling = Some(Rolling { slot: 0, new: None });
                self.roll_on();
            }
            _ => {}
        }
    }

    /// Tells every worker to stop (SIGTERM: a drain the first time, at
    /// once the second), and starts none.
    fn stop_all(&mut self) {
        self.rolling = None;
        for slot in &mut self.slots {
            slot.restart_at = None;
        }
        for worker in self.workers.values() {
            signal(worker, SIGTERM);
        }
    }

    /// A rolling restart's next step: a new worker for the next slot, or
    /// done.
    fn roll_on(&mut self) {
        let Some(slot) = self.rolling.as_ref().map(|r| r.slot) else {
            return;
        };
        if slot == self.slots.len() {
            info!("master: rolling restart done");
            self.rolling = None;
            return;
        }
        match self.start(slot, false) {
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
    fn replaced(&mut self, slot: usize, id: u64) {
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
        self.roll_on();
    }

    /// Collects every worker that has exited and whose last line has been
    /// read, and decides what follows.
    fn reap(&mut self) {
        let exited: Vec<(u64, ExitStatus)> = (self.workers.iter_mut())
            .filter(|(_, w)| w.said_all)
            .filter_map(|(&id, w)| w.child.try_wait().ok().flatten().map(|s| (id, s)))
            .collect();
        for (id, status) in exited {
            if let Some(worker) = self.workers.remove(&id) {
                self.exited(id, worker, status);
            }
        }
    }

    fn exited(&mut self, id: u64, worker: Worker, status: ExitStatus) {
        let Worker { slot, child, .. } = &worker;
        let pid = child.id();
        // Its counters stay in the totals; what it held is gone.
        let mut last = worker.stats;
        last.active = 0;
        last.buffered = 0;
        last.buffered_peak = 0;
        last.buffered_limit = 0;
        last.http_active = 0;
        last.listeners_paused = 0;
        self.retired[*slot].add(&last);
        if self.rolling.as_ref().is_some_and(|r| r.new == Some(id)) {
            error!("master: rolling restart stopped: the new worker {slot} exited ({status})");
            self.rolling = None;
        }
        let serving = self.slots[*slot].current == Some(id);
        if !serving || self.stops > 0 || self.failed {
            debug!("master: worker {slot} (pid {pid}) exited ({status})");
            return;
        }
        self.slots[*slot].current = None;
        if !self.slots[*slot].ever_ready {
            error!("master: worker {slot} (pid {pid}) failed to start ({status}); stopping");
            self.failed = true;
            self.stop_all();
            return;
        }
        let state = &mut self.slots[*slot];
        state.backoff = if worker.started.elapsed() >= STABLE_AFTER {
            MIN_BACKOFF
        } else {
            (state.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
        };
        state.restart_at = Some(Instant::now() + state.backoff);
        self.restarts += 1;
        warn!(
            "master: worker {slot} (pid {pid}) exited ({status}); restarting it in {:?} \
             (restart {})",
            state.backoff, self.restarts
        );
    }

    fn next_restart(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.restart_at).min()
    }

    /// Starts the workers whose restart is due.
    fn restart_due(&mut self, now: Instant) {
        for slot in 0..self.slots.len() {
            if self.slots[slot].restart_at.is_some_and(|at| at <= now) {
                self.slots[slot].restart_at = None;
                if let Err(e) = self.start(slot, true) {
                    let state = &mut self.slots[slot];
                    state.backoff = (state.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                    state.restart_at = Some(now + state.backoff);
                    error!("master: cannot restart worker {slot}: {e}; trying again");
                }
            }
        }
    }

    /// Every worker's counters, summed, the exited ones included; and the
    /// log lines the master itself dropped.
    fn totals(&self) -> Stats {
        let mut total = Stats::default();
        for slot in self.slot_totals() {
            total.add(&slot);
        }
        // The master logs too, through a sink of its own.
        total.log_dropped += echo_reactor::dropped_lines();
        total
    }

    /// Each slot's counters: every worker that has served it, the exited
    /// ones included (gauges: the live ones only).
    fn slot_totals(&self) -> Vec<Stats> {
        let mut slots = self.retired.clone();
        for worker in self.workers.values() {
            slots[worker.slot].add(&worker.stats);
        }
        slots
    }

    /// Renders the `--metrics` page from the latest counters.
    fn publish(&self) {
        let Some(page) = self.page.as_ref() else {
            return;
        };
        let slots = self.slot_totals();
        let labels: Vec<String> = (0..slots.len())
            .map(|i| format!("worker=\"{i}\""))
            .collect();
        let samples: Vec<(&str, &Stats)> = labels.iter().map(String::as_str).zip(&slots).collect();
        let mut text = Exposition::new();
        text.stats(&samples);
        let up = self.workers.values().filter(|w| w.ready).count();
        text.family(
            "echo_reactor_master_workers_up",
            "Worker processes serving (started and said ready, not yet exited).",
            "gauge",
            &[("", up as f64)],
        );
        text.family(
            "echo_reactor_master_workers",
            "Worker slots (--workers).",
            "gauge",
            &[("", self.slots.len() as f64)],
        );
        text.family(
            "echo_reactor_master_worker_restarts_total",
            "Workers restarted after exiting while serving.",
            "counter",
            &[("", self.restarts as f64)],
        );
        text.family(
            "echo_reactor_master_log_lines_dropped_total",
            "Log lines the master dropped because the log sink (stderr) did not keep up.",
            "counter",
            &[("", echo_reactor::dropped_lines() as f64)],
        );
        let serving = self.stops == 0 && !self.failed;
        text.family(
            "echo_reactor_draining",
            "1 while the server shuts down (no new echo connections), else 0.",
            "gauge",
            &[("", if serving { 0.0 } else { 1.0 })],
        );
        if let Ok(mut page) = page.lock() {
            page.text = text.finish();
            page.serving = serving;
        }
    }
}

/// Sends `signal` to `worker` (a child not yet reaped, so its pid is still
/// its own).
fn signal(worker: &Worker, signal: i32) {
    let Ok(pid) = libc::pid_t::try_from(worker.child.id()) else {
        return;
    };
    // SAFETY: kill(2) only sends a signal; the pid is our unreaped child's.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Binds the sockets of `workers` slots: the first as asked, the others on
/// the addresses it got.
fn bind_slots(config: &Config, workers: usize) -> Result<Vec<Slot>, ListenError> {
    let first = Sockets::bind(config)?;
    let mut all = Vec::with_capacity(workers);
    for _ in 1..workers {
        all.push(first.bind_again(config)?);
    }
    all.insert(0, first);
    Ok(all
        .into_iter()
        .map(|sockets| Slot {
            sockets,
            current: None,
            restart_at: None,
            backoff: Duration::ZERO,
            ever_ready: false,
        })
        .collect())
}

/// Signals, as messages in the master's inbox.
fn forward_signals(notes: Sender<Note>) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCHLD])?;
    thread::spawn(move || {
        for signal in signals.forever() {
            if notes.send(Note::Signal(signal)).is_err() {
                return;
            }
        }
    });
    Ok(())
}
