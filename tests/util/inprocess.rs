//! The server in the test's own process: the library's [`Server`] bound on
//! `127.0.0.1:0` and run on a thread, its counters read from the library
//! ([`Server::on_stats`], the [`Report`] [`Server::run`] returns) rather
//! than parsed out of a log.
//!
//! Most behaviour tests need a server, not a process: this starts in
//! microseconds, needs no binary, and hands the test typed counters. What
//! only a process has stays a process test ([`super::Server`]): the CLI's
//! parsing, the log and exit status, `--workers`, signals (handled per
//! process, so an in-process server leaves `handle_signals` false), and
//! what `/proc` says about the server (its memory, descriptors, CPU).
//!
//! ```ignore
//! let server = InProcess::start(inprocess::config());
//! let mut s = util::connect(server.addr);
//! util::assert_echo(&mut s, b"hi");
//! server.wait_stats("one connection", |s| s.active == 1);
//! drop(s);
//! let report = server.stop();
//! assert_eq!(report.stats.closed, 1);
//! ```

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::{
    Backend, Config, ListenAddr, Protocol, Report, Server, Service, ShutdownHandle, Stats,
    Transport,
};

use super::STEP_TIMEOUT;

/// How often an in-process server hands over its counters: often enough
/// that a test waiting on a condition sees it soon after it holds.
pub const STATS_EVERY: Duration = Duration::from_millis(20);

/// `127.0.0.1:0`, the address every in-process listener binds.
pub fn loopback() -> ListenAddr {
    "127.0.0.1:0".parse().expect("a listen address")
}

/// The backend this thread's tests run on ([`super::on_every_backend!`]).
pub fn backend() -> Backend {
    backend_named(super::backend())
}

/// The backend `--backend NAME` names (one of [`super::BACKENDS`]).
pub fn backend_named(name: &str) -> Backend {
    name.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// The settings of an in-process test server: one echo listener on
/// `127.0.0.1:0`, this thread's backend, counters every [`STATS_EVERY`],
/// the rest as the binary's defaults. Tests change fields from here.
pub fn config() -> Config {
    Config {
        listen: vec![loopback()],
        backend: backend(),
        stats_interval: Some(STATS_EVERY),
        // Signals are per process: a test binary's servers must not take them.
        handle_signals: false,
        ..Config::default()
    }
}

/// The counters the server has handed over so far.
#[derive(Default)]
struct Seen {
    /// Every periodic [`Stats`], oldest first (a test runs for seconds:
    /// at most a few hundred).
    all: Vec<Stats>,
}

/// The counters, shared with the loop's thread, and a condition variable
/// that wakes waiters whenever new ones arrive.
type Shared = Arc<(Mutex<Seen>, Condvar)>;

/// A server running on a thread of this process. Dropping it forces the
/// loop to end (a second shutdown request) without waiting for clients.
pub struct InProcess {
    /// The first echo listener's address.
    pub addr: SocketAddr,
    /// Every echo listener's address.
    pub addrs: Vec<SocketAddr>,
    /// The UDP echo sockets' addresses.
    pub udp: Vec<SocketAddr>,
    /// The daytime services' addresses (TCP and UDP share each).
    pub daytime: Vec<SocketAddr>,
    /// The metrics listeners' addresses.
    pub metrics: Vec<SocketAddr>,
    /// The discard services' addresses (TCP and UDP share each).
    pub discard: Vec<SocketAddr>,
    /// The chargen services' addresses (TCP and UDP share each).
    pub chargen: Vec<SocketAddr>,
    handle: ShutdownHandle,
    seen: Shared,
    report: Option<Receiver<std::io::Result<Report>>>,
}

impl InProcess {
    /// Binds `config` (its `mode`) and runs it on a thread.
    #[track_caller]
    pub fn start(config: Config) -> InProcess {
        let server = Server::bind(&config).unwrap_or_else(|e| panic!("bind: {e}"));
        InProcess::run(server)
    }

    /// Binds `config` with TCP echo connections speaking `protocol`, and
    /// runs it on a thread.
    #[track_caller]
    pub fn with_protocol(config: Config, protocol: impl Protocol) -> InProcess {
        let server =
            Server::with_protocol(&config, protocol).unwrap_or_else(|e| panic!("bind: {e}"));
        InProcess::run(server)
    }

    fn run(mut server: Server) -> InProcess {
        let seen: Shared = Arc::default();
        let sink = Arc::clone(&seen);
        server.on_stats(move |stats| {
            let (lock, arrived) = &*sink;
            lock.lock().unwrap().all.push(*stats);
            arrived.notify_all();
        });
        // A server of only UDP or daytime services has no echo listener;
        // `addr` then names nothing that accepts.
        let addrs = server.local_addrs();
        let addr = addrs
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (udp, daytime, metrics) = (
            server.addrs(Service::Echo, Transport::Udp),
            server.addrs(Service::Daytime, Transport::Tcp),
            server.addrs(Service::Metrics, Transport::Tcp),
        );
        let (discard, chargen) = (
            server.addrs(Service::Discard, Transport::Tcp),
            server.addrs(Service::Chargen, Transport::Tcp),
        );
        let handle = server.shutdown_handle();
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("in-process server".into())
            .spawn(move || {
                let _ = tx.send(server.run());
            })
            .expect("spawn the server's thread");
        InProcess {
            addr,
            addrs,
            udp,
            daytime,
            metrics,
            discard,
            chargen,
            handle,
            seen,
            report: Some(rx),
        }
    }

    /// The latest periodic counters, if any arrived yet.
    pub fn latest(&self) -> Option<Stats> {
        self.seen.0.lock().unwrap().all.last().copied()
    }

    /// Every periodic counters so far, oldest first.
    pub fn all_stats(&self) -> Vec<Stats> {
        self.seen.0.lock().unwrap().all.clone()
    }

    /// Waits until the latest periodic counters satisfy `pred` (`what`
    /// says what for the panic after [`STEP_TIMEOUT`]); returns them.
    #[track_caller]
    pub fn wait_stats(&self, what: &str, pred: impl Fn(&Stats) -> bool) -> Stats {
        self.wait_for(what, |all| all.last().filter(|s| pred(s)).copied())
    }

    /// Waits until any periodic counters so far satisfy `pred` (a state
    /// the server only passes through counts); returns the first that do.
    #[track_caller]
    pub fn wait_stats_ever(&self, what: &str, pred: impl Fn(&Stats) -> bool) -> Stats {
        self.wait_for(what, |all| all.iter().find(|s| pred(s)).copied())
    }

    /// Waits for the next periodic counters (those after the latest now)
    /// and returns them: a clock for a test that watches several servers.
    #[track_caller]
    pub fn next_stats(&self) -> Stats {
        let have = self.seen.0.lock().unwrap().all.len();
        self.wait_for("new counters", |all| all.get(have).copied())
    }

    /// Waits on the condition variable until `pick` finds counters in
    /// those seen so far, or panics after [`STEP_TIMEOUT`] quoting the
    /// latest.
    #[track_caller]
    fn wait_for(&self, what: &str, pick: impl Fn(&[Stats]) -> Option<Stats>) -> Stats {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let (lock, arrived) = &*self.seen;
        let mut seen = lock.lock().unwrap();
        loop {
            if let Some(found) = pick(&seen.all) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "periodic stats never showed {what}; latest: {:?}",
                seen.all.last()
            );
            seen = arrived.wait_timeout(seen, left).unwrap().0;
        }
    }

    /// Asks for a graceful shutdown (clients still connected hold it up
    /// to `shutdown_timeout`) and returns the server's final report.
    #[track_caller]
    pub fn stop(mut self) -> Report {
        self.handle.shutdown().expect("ask the server to stop");
        let report = self.report.take().expect("running");
        match report.recv_timeout(STEP_TIMEOUT) {
            Ok(ran) => ran.unwrap_or_else(|e| panic!("the loop failed: {e}")),
            Err(_) => panic!("the server did not stop within {STEP_TIMEOUT:?}"),
        }
    }

    /// A handle that asks this server to stop, for tests of shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(report) = self.report.take() {
            // Two requests end the loop at once; wait a bounded time for it
            // (a test that already failed should not hang on top).
            let _ = self.handle.shutdown();
            let _ = self.handle.shutdown();
            let _ = report.recv_timeout(STEP_TIMEOUT);
        }
    }
}
