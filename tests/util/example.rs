//! Example servers run as the programs they are, for tests that put an
//! example beside the real `echo-reactor` (`tests/broken_loops.rs`), and
//! the CPU a process uses over a window.
//!
//! Included with `#[path = "util/example.rs"] mod example;` next to
//! `mod util;` (it uses `util::proc`), so `util/mod.rs` stays as it is.
//! `tests/examples.rs` and `tests/edge_trap.rs` have their own copies of
//! the build-and-spawn part.
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
        let mut child = Command::new(example(name))
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
            panic!("example {name} printed no listening line");
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

/// CPU use of some processes over one window, as a share of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    /// Clock ticks the process used (user + system).
    pub ticks: u64,
    /// Ticks one core has in the window.
    pub window_ticks: u64,
}

impl CpuUse {
    /// The share of one core, in percent.
    pub fn percent(self) -> u64 {
        self.ticks * 100 / self.window_ticks.max(1)
    }
}

/// What each of `pids` used during the next `window` (sleeping meanwhile).
pub fn cpu_use(pids: &[u32], window: Duration) -> Vec<CpuUse> {
    let before: Vec<u64> = pids.iter().map(|&p| proc::cpu_ticks(p).total()).collect();
    let start = Instant::now();
    thread::sleep(window);
    let after: Vec<u64> = pids.iter().map(|&p| proc::cpu_ticks(p).total()).collect();
    let window_ticks = proc::clock_ticks_per_sec() * start.elapsed().as_millis() as u64 / 1000;
    before
        .iter()
        .zip(after)
        .map(|(b, a)| CpuUse {
            ticks: a - b,
            window_ticks,
        })
        .collect()
}
