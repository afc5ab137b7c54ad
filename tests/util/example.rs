//! Example servers run as the programs they are, for tests that put an
//! example beside the real `echo-reactor` (`tests/broken_loops.rs`), and
//! the CPU a process uses over a window.
//!
//! Included with `#[path = "util/example.rs"] mod example;` next to
//! `mod util;` (it uses `util::proc`), so `util/mod.rs` stays as it is.
//! `tests/examples.rs` and `tests/edge_trap.rs` use its [`example`] too.
#![allow(dead_code)] // each includer uses part of it

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::util::{STEP_TIMEOUT, proc};

/// The example `name`, next to the `echo-reactor` binary. Built once per
/// test run (a no-op when up to date), so an edited example is never run
/// stale, even under `cargo test --test NAME`.
pub fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let bin = Path::new(env!("CARGO_BIN_EXE_echo-reactor"));
    let path = bin.parent().unwrap().join("examples").join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built
        .get_or_insert_with(HashSet::new)
        .insert(name.to_string())
    {
        let release = (!cfg!(debug_assertions)).then_some("--release");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--example", name])
            .args(release)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// A server process started from an example; killed on drop.
pub struct Example {
    child: Child,
    /// Where it listens (its `listening on tcp://ADDR` line).
    pub addr: SocketAddr,
}

impl Example {
    /// Starts example `name` with `args` and `--listen 127.0.0.1:0`.
    pub fn spawn(name: &str, args: &[&str]) -> Example {
        Example::start(&example(name), args)
    }

    /// Starts any server `program` (an example, or `echo-reactor`
    /// itself) with `args` and `--listen 127.0.0.1:0`.
    pub fn start(program: &Path, args: &[&str]) -> Example {
        let mut child = Command::new(program)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn example");
        // The first stdout line names the address; the thread keeps the
        // pipe drained for anything printed later.
        let (tx, rx) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let Ok(line) = rx.recv_timeout(STEP_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} printed no listening line", program.display());
        };
        Example {
            child,
            addr: proc::tcp_listening_addr(&line),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU use of a process over one window.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// Clock ticks the process used (user + system, `/proc/PID/stat`).
    pub ticks: u64,
    /// Ticks one core has in the window.
    pub window_ticks: u64,
    /// Nanoseconds its main thread was runnable: on a CPU, or waiting in
    /// a run queue for one (`/proc/PID/schedstat`).
    pub runnable_ns: u64,
    /// The window, in nanoseconds.
    pub window_ns: u64,
}

impl CpuUse {
    /// The CPU it used, in percent of one core.
    pub fn percent(self) -> u64 {
        self.ticks * 100 / self.window_ticks.max(1)
    }

    /// How much of the window it wanted a CPU, in percent. A loop that
    /// spins is always runnable, however busy the machine is and however
    /// little CPU it gets; a loop that sleeps in its poller is not.
    pub fn runnable_percent(self) -> u64 {
        self.runnable_ns * 100 / self.window_ns.max(1)
    }
}

/// What each of `pids` used during the next `window` (sleeping meanwhile).
/// Single-threaded processes: `runnable_ns` counts the main thread only.
pub fn cpu_use(pids: &[u32], window: Duration) -> Vec<CpuUse> {
    let read = |p: u32| (proc::cpu_ticks(p).total(), runnable_ns(p));
    let before: Vec<(u64, u64)> = pids.iter().map(|&p| read(p)).collect();
    let start = Instant::now();
    thread::sleep(window);
    let after: Vec<(u64, u64)> = pids.iter().map(|&p| read(p)).collect();
    let elapsed = start.elapsed();
    let window_ticks = proc::clock_ticks_per_sec() * elapsed.as_millis() as u64 / 1000;
    before
        .iter()
        .zip(after)
        .map(|(b, a)| CpuUse {
            ticks: a.0 - b.0,
            window_ticks,
            runnable_ns: a.1 - b.1,
            window_ns: elapsed.as_nanos() as u64,
        })
        .collect()
}

/// Time on a CPU plus time waiting for one, in nanoseconds: the first two
/// fields of `/proc/PID/schedstat`.
pub fn runnable_ns(pid: u32) -> u64 {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.split_whitespace()
        .take(2)
        .map(|f| {
            f.parse::<u64>()
                .unwrap_or_else(|_| panic!("{path}: {text:?}"))
        })
        .sum()
}
