//! `--workers N`: a master process and N worker processes, the way nginx
//! grows past one core (and here, past one process's descriptor limit).
//!
//! The master binds every socket once per worker *slot*, each with
//! `SO_REUSEPORT`, so that the kernel spreads new connections over the
//! slots (after checking that no other server holds the port:
//! `sockets.rs`, [`Sockets::bind_slots`]); the binary prints where it
//! listens; then the master starts one worker per slot by running its own
//! program again (`launch.rs`) with the same flags plus a worker spec
//! (`worker.rs`). Only that slot's descriptors and the shared memory
//! survive the exec. Each worker is an ordinary single-threaded event
//! loop; the master never accepts an echo connection. It keeps every
//! slot's sockets open: a slot's accept queue outlives the worker serving
//! it, so a worker that dies or is replaced resets no queued connection.
//!
//! What the master does:
//!
//! | event | what happens |
//! | --- | --- |
//! | a worker exits while serving | restarted in its slot after a backoff (100 ms, doubling up to 10 s while it keeps dying young); its host counts are given back first (`seat.rs`) |
//! | a worker's loop stops turning (stopped, blocked, spinning) | no heartbeat for `--watchdog` seconds (3 by default; 10 before it first says ready): SIGKILL, then as above. A stopped loop is counted out of `workers_up` after one second of silence |
//! | a worker fails before it ever served | startup failed (a bad flag value the worker met, say): every worker is stopped and the master exits 1 |
//! | SIGINT / SIGTERM | the master's `/healthz` turns 503 and SIGTERM goes to every worker (each drains as a single process would, after `--drain-delay` if given); the master exits 0 once all have exited |
//! | a second SIGINT / SIGTERM | SIGTERM again: each worker ends at once; the master exits 130 |
//! | SIGHUP | the program file is opened again at its path (an upgrade's new binary runs from now on; if the path is gone, the running program does); then a rolling restart: slot by slot, a new worker starts on the slot's sockets, and once it is serving the old one retires (SIGUSR2: it stops accepting and serves its open connections until they close, at most `--shutdown-timeout`) |
//! | SIGUSR1 | the summed counters are logged |
//! | SIGQUIT | a status report: each worker's slot, pid, age, heartbeat and state, then the summed counters |
//! | SIGUSR2, SIGALRM | logged, nothing else (SIGUSR2 retires a *worker*; the master has nothing to retire) |
//! | SIGWINCH | ignored (its default) |
//! | SIGPIPE | ignored (Rust's runtime) |
//!
//! No signal an operator may send ends the service by accident; only
//! SIGKILL (and SIGSTOP, which the workers survive) are beyond reach.
//! Workers run in their own process group, so a terminal's Ctrl+C reaches
//! only the master, which decides; and they ask the kernel for a SIGTERM
//! if the master dies (`PR_SET_PDEATHSIG`), so none is left orphaned.
//!
//! Limits: `--max-connections-per-ip` holds for the whole server (workers
//! count in shared memory, `seat.rs`); `--max-connections`,
//! `--max-buffered` and the descriptor limit are each worker's.
//!
//! Counters: each worker writes its counters to its stdout, a pipe to the
//! master (`worker.rs`). The master logs their sum like a single process
//! would (`stats:` every `--stats-interval`, `final stats:` at exit), each
//! worker's own at debug level, keeps a dead worker's last counters in the
//! sum, and serves them all on `--metrics` from an event loop of its own
//! (`page.rs`).
//!
//! The master itself waits on one channel, fed by a thread that turns
//! signals into messages and one thread per worker that reads its pipe;
//! its metrics are served by a library loop on one more thread.

mod launch;
mod lifecycle;
mod manager;
mod page;
mod worker;

pub use worker::{WorkerSpec, run_worker};

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::process::Child;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use signal_hook::consts::{SIGALRM, SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

use crate::activation::Passed;
use crate::config::Config;
use crate::fdlimit;
use crate::listener::ListenError;
use crate::log_sink;
use crate::notify::Notifier;
use crate::reactor::Server;
use crate::seat::{self, HEARTBEAT_EVERY, Region};
use crate::service::{Endpoint, Service};
use crate::sockets::Sockets;
use crate::stats::Stats;
use launch::Program;
use manager::Told;
use page::{Figures, MasterPage};

/// The first pause before restarting a worker that died.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause before a restart, for a worker that keeps dying.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A worker that served this long before dying is restarted after
/// [`MIN_BACKOFF`] again.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The watchdog's bound for a worker that has not yet said ready (it may
/// be starting on a loaded machine).
const STARTUP_GRACE: Duration = Duration::from_secs(10);

/// A worker silent this long is no longer counted up (four heartbeats).
const LATE: Duration = Duration::from_secs(1);

/// How a master's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every worker drained after a stop request.
    Drained,
    /// A second stop request ended the workers at once.
    Forced,
    /// A worker could not start: the master stopped them all.
    Failed,
}

/// A master of worker processes, bound and ready to start them
/// ([`Supervisor::run`]).
#[derive(Debug)]
pub struct Supervisor {
    slots: Vec<Slot>,
    program: Program,
    worker_args: Vec<OsString>,
    region: Arc<Region>,
    free_seats: Vec<usize>,
    workers: HashMap<u64, Worker>,
    next_id: u64,
    /// The last counters of the workers that have exited, per slot.
    retired: Vec<Stats>,
    /// The master's metrics loop, bound, until `run` starts it.
    metrics: Option<Server>,
    page: Option<Arc<MasterPage>>,
    endpoints: Vec<Endpoint>,
    restarts: u64,
    hangs: u64,
    /// SIGINT/SIGTERM received.
    stops: usize,
    /// A worker could not start: exit 1 once every worker is gone.
    failed: bool,
    rolling: Option<Rolling>,
    stats_interval: Option<Duration>,
    watchdog: Option<Duration>,
    /// The service manager (`NOTIFY_SOCKET`), and what it was last told
    /// (`manager.rs`).
    notifier: Option<Notifier>,
    told: Told,
}

/// One worker slot: its sockets, and who serves them.
#[derive(Debug)]
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
#[derive(Debug)]
struct Worker {
    slot: usize,
    /// Its seat in the shared memory.
    seat: usize,
    child: Child,
    started: Instant,
    /// When it started, on the shared clock ([`seat::monotonic_ms`]).
    started_ms: u64,
    /// Told to drain because a newer worker serves its slot.
    retiring: bool,
    /// Killed by the watchdog; not yet reaped.
    hung: bool,
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
#[derive(Debug)]
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

impl Supervisor {
    /// Binds `workers` slots of every socket `config` asks for (metrics
    /// once, for the master), and the shared memory. Workers are this
    /// program run again with `worker_args` and then the flag `--worker`
    /// and a [`WorkerSpec`]; the program must answer that flag by calling
    /// [`run_worker`].
    pub fn bind(
        config: &Config,
        workers: usize,
        worker_args: Vec<OsString>,
    ) -> Result<Supervisor, ListenError> {
        let setup = ListenError::Setup;
        let mut passed = if config.service_manager {
            Passed::from_env()?
        } else {
            Passed::default()
        };
        let passed_metrics = passed.split_off(Service::Metrics);
        let flags = Config {
            service_manager: false,
            ..passed.unbound(config)
        };
        let mut slots = Sockets::bind_slots(&flags, workers)?;
        for slot in &mut slots {
            slot.add(passed.try_clone().map_err(setup)?);
        }
        // The slots hold copies; the master's own descriptors close here.
        drop(passed);
        let metrics_config = Config {
            listen: Vec::new(),
            udp: Vec::new(),
            daytime: Vec::new(),
            discard: Vec::new(),
            chargen: Vec::new(),
            handle_signals: false,
            reuse_port: false,
            stats_interval: None,
            trace: false,
            service_manager: false,
            drain_delay: Duration::ZERO,
            ..flags.clone()
        };
        let (metrics, page) = if metrics_config.metrics.is_empty() && passed_metrics.is_empty() {
            (None, None)
        } else {
            let mut sockets = Sockets::bind(&metrics_config)?;
            sockets.add(passed_metrics);
            let mut server = Server::with_sockets(&metrics_config, sockets)?;
            let page = MasterPage::new(workers);
            server.serve_page(page.clone());
            (Some(server), Some(page))
        };
        let mut endpoints = slots[0].endpoints().map_err(setup)?;
        if let Some(server) = &metrics {
            endpoints.extend_from_slice(server.endpoints());
        }
        // A slot's old and new worker hold a seat each during a rolling
        // restart, and old ones may still be retiring when the next
        // SIGHUP comes.
        let seats = 3 * workers;
        let nofile = fdlimit::raise_nofile_limit().map_err(setup)?;
        let ledger = usize::try_from(nofile).unwrap_or(usize::MAX).min(1 << 24);
        let region = Region::create(seats, ledger).map_err(setup)?;
        let program = Program::this().map_err(setup)?;
        Ok(Supervisor {
            slots: slots.into_iter().map(Slot::new).collect(),
            program,
            worker_args,
            region: Arc::new(region),
            free_seats: (0..seats).rev().collect(),
            workers: HashMap::new(),
            next_id: 0,
            retired: vec![Stats::default(); workers],
            page,
            metrics,
            endpoints,
            restarts: 0,
            hangs: 0,
            stops: 0,
            failed: false,
            rolling: None,
            stats_interval: config.stats_interval,
            watchdog: config.watchdog,
            notifier: config.service_manager.then(Notifier::from_env).flatten(),
            told: Told::default(),
        })
    }

    /// Every socket the server serves on (every slot's are the same; the
    /// metrics listeners are the master's own).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Starts the workers and supervises them until they have all exited
    /// after a stop request.
    pub fn run(mut self) -> io::Result<Ending> {
        let (notes, inbox) = mpsc::channel();
        forward_signals(notes.clone())?;
        if let Some(server) = self.metrics.take() {
            thread::Builder::new()
                .name("metrics".into())
                .spawn(move || {
                    if let Err(e) = server.run() {
                        error!("master: metrics loop failed: {e}");
                    }
                })?;
        }
        self.publish();
        info!("master: starting {} workers", self.slots.len());
        for slot in 0..self.slots.len() {
            if let Err(e) = self.start(slot, true, &notes) {
                error!("master: cannot start worker {slot}: {e}");
                self.failed = true;
                self.stop_all();
                break;
            }
        }
        Ok(self.supervise(&inbox, &notes))
    }

    /// Waits on the inbox until every worker has exited after a stop.
    fn supervise(mut self, inbox: &Receiver<Note>, notes: &Sender<Note>) -> Ending {
        let mut next_report = self.stats_interval.map(|every| Instant::now() + every);
        let mut next_check = Instant::now() + HEARTBEAT_EVERY;
        while self.stops == 0 && !self.failed || !self.workers.is_empty() {
            let deadline = (self.next_restart().into_iter())
                .chain(next_report)
                .chain([next_check])
                .min()
                .unwrap_or(next_check);
            match inbox.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Note::Signal(SIGCHLD)) => self.reap(),
                Ok(Note::Signal(signal)) => self.on_signal(signal, notes),
                Ok(Note::Line(id, line)) => self.on_line(id, &line, notes),
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
            if now >= next_check {
                self.watch();
                next_check = now + HEARTBEAT_EVERY;
            }
            self.restart_due(now, notes);
            self.publish();
            self.tell_manager();
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
            Ending::Failed
        } else if self.stops >= 2 {
            Ending::Forced
        } else {
            Ending::Drained
        }
    }

    fn on_signal(&mut self, signal: i32, notes: &Sender<Note>) {
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
                match self.program.reload() {
                    Ok(()) => info!(
                        "master: SIGHUP: replacing the workers one slot at a time with {}",
                        self.program.path().display()
                    ),
                    Err(e) => warn!(
                        "master: SIGHUP: cannot open the program again ({e}); replacing the \
                         workers one slot at a time with the program running now"
                    ),
                }
                self.rolling = Some(Rolling { slot: 0, new: None });
                self.roll_on(notes);
            }
            SIGUSR1 => info!("stats: {}", self.totals()),
            SIGQUIT => self.log_status(),
            SIGUSR2 => info!(
                "master: SIGUSR2 means nothing to the master (it retires a worker, sent to \
                 the worker's pid); ignored"
            ),
            SIGALRM => info!("master: SIGALRM: ignored"),
            _ => {}
        }
    }

    /// SIGQUIT: every worker, then the totals.
    fn log_status(&self) {
        let now = seat::monotonic_ms();
        let mut workers: Vec<&Worker> = self.workers.values().collect();
        workers.sort_by_key(|w| (w.slot, w.started));
        info!(
            "master: status: {} slots, {} workers, {} restarts, {} hangs{}",
            self.slots.len(),
            workers.len(),
            self.restarts,
            self.hangs,
            if self.stops > 0 {
                ", shutting down"
            } else {
                ""
            }
        );
        for w in workers {
            let beat = self.region.last_beat(w.seat).max(w.started_ms);
            let state = match (w.ready, w.retiring, w.hung) {
                (_, _, true) => "killed (hung)",
                (_, true, _) => "retiring",
                (true, _, _) => "serving",
                (false, _, _) => "starting",
            };
            info!(
                "master: worker {} (pid {}): {state}, up {:.1} s, last heartbeat {} ms ago, {} connections",
                w.slot,
                w.child.id(),
                w.started.elapsed().as_secs_f64(),
                now.saturating_sub(beat),
                w.stats.active,
            );
        }
        info!("stats: {}", self.totals());
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

    /// Every worker's counters, summed, the exited ones included; and the
    /// log lines the master itself dropped (it logs through a sink of its
    /// own, `log_sink.rs`).
    fn totals(&self) -> Stats {
        let mut total = Stats::default();
        for slot in self.slot_totals() {
            total.add(&slot);
        }
        total.log_dropped += log_sink::dropped_lines();
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

    /// Hands the latest figures to the `--metrics` page (rendered only
    /// when a scrape asks).
    fn publish(&self) {
        let Some(page) = self.page.as_ref() else {
            return;
        };
        let now = seat::monotonic_ms();
        let late = |w: &Worker| {
            let beat = self.region.last_beat(w.seat).max(w.started_ms);
            Duration::from_millis(now.saturating_sub(beat)) > LATE
        };
        let live = self.workers.values().filter(|w| w.ready);
        let (up, hung) = live.fold((0, 0), |(up, hung), w| {
            if w.hung || late(w) {
                (up, hung + 1)
            } else {
                (up + 1, hung)
            }
        });
        page.update(Figures {
            slots: self.slot_totals(),
            workers_up: up,
            workers_hung: hung,
            restarts: self.restarts,
            hangs: self.hangs,
            log_dropped: log_sink::dropped_lines(),
            serving: self.stops == 0 && !self.failed,
        });
    }
}

impl Slot {
    fn new(sockets: Sockets) -> Slot {
        Slot {
            sockets,
            current: None,
            restart_at: None,
            backoff: Duration::ZERO,
            ever_ready: false,
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

/// Signals, as messages in the master's inbox. Every signal the table in
/// the module docs names is caught, so that none takes its default
/// action (most of which end the process).
fn forward_signals(notes: Sender<Note>) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2, SIGQUIT, SIGALRM,
    ])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if notes.send(Note::Signal(signal)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
