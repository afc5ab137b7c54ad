//! The client side of `cargo bench --bench scale`: the project's stress
//! client, `echo-bench`, run as `--procs P` client processes (each with its
//! own descriptor limit and loopback source addresses) with `--idle`.
//!
//! This process plays the parent of `--procs` itself, with the library's
//! [`echo_bench::procs::run_parent`] on a thread of its own: it opens no
//! connection, starts the `echo-bench` binary P times, and sees their
//! summed progress in a [`Live`] (connections established and failed,
//! echoes so far), which tells the bench when every connection is open
//! and whether anything was echoed while they were to sit idle. The
//! report at the end is the one `echo-bench --procs P` would print.
//!
//! Every client process is killed and reaped on every path: on
//! [`Clients::abort`], on drop, and by `run_parent` itself when it
//! returns early.

#![allow(dead_code)] // the scale bench uses part of it

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use echo_bench::cli::Args;
use echo_bench::procs::{self, ProcsError};
use echo_bench::{Live, Report};

/// Builds the `echo-bench` binary in release mode with the cargo that runs
/// the bench, into the bench's own target directory (a no-op when it is
/// built already), within `timeout` and unless `stop` is set, and returns
/// its path.
pub fn build_echo_bench(timeout: Duration, stop: &AtomicBool) -> Result<PathBuf, String> {
    // The bench executable is TARGET/release/deps/scale-HASH: the binary
    // goes to TARGET/release, whatever CARGO_TARGET_DIR says (or does not
    // say) in the environment of whoever started the bench.
    let exe = std::env::current_exe().map_err(|e| format!("path of the bench: {e}"))?;
    let release = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the bench executable is not under TARGET/release/deps")?;
    let target = release
        .parent()
        .ok_or("the bench executable is not under TARGET/release/deps")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "echo-bench",
            "--bin",
            "echo-bench",
            "--target-dir",
        ])
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // A group of its own, so that stopping it stops its compilers too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("run cargo build for echo-bench: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                thread::sleep(Duration::from_millis(50))
            }
            _ => {
                // SAFETY: kill(2) on the process group of our own child,
                // not reaped yet, so the group id is still ours.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                return Err(format!(
                    "building echo-bench: stopped (interrupted, or longer than {timeout:?})"
                ));
            }
        }
    };
    if !status.success() {
        return Err("building echo-bench failed".into());
    }
    Ok(release.join("echo-bench"))
}

/// The client processes of one run, with their progress.
pub struct Clients {
    live: Arc<Live>,
    abort: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<Report, ProcsError>>>,
    /// The flags every client process was given (for the report).
    pub args: Vec<String>,
}

impl Clients {
    /// Starts `exe` as the client processes `args` ask for (the flags of
    /// `echo-bench`, `--procs` among them), checked as `echo-bench` checks
    /// them.
    pub fn start(exe: &Path, args: Vec<String>) -> Result<Clients, String> {
        let parsed =
            Args::try_parse_from(std::iter::once("echo-bench".to_string()).chain(args.clone()))
                .map_err(|e| format!("echo-bench flags {args:?}: {e}"))?;
        let total = parsed.config()?;
        let plan = procs::plan(&total, parsed.procs.count(total.connections))
            .map_err(|e| e.to_string())?;
        let live = Arc::new(Live::new());
        let abort = Arc::new(AtomicBool::new(false));
        let forwarded: Vec<OsString> = args.iter().map(OsString::from).collect();
        let (exe, t_live, t_abort) = (exe.to_path_buf(), Arc::clone(&live), Arc::clone(&abort));
        let thread = thread::Builder::new()
            .name("clients".into())
            .spawn(move || procs::run_parent(&exe, &forwarded, &total, &plan, &t_live, &t_abort))
            .map_err(|e| format!("start the clients' thread: {e}"))?;
        Ok(Clients {
            live,
            abort,
            thread: Some(thread),
            args,
        })
    }

    /// Connections proven by their first echo so far, all processes.
    pub fn established(&self) -> u64 {
        Live::get(&self.live.established)
    }

    /// Connections that failed to open so far.
    pub fn failed(&self) -> u64 {
        Live::get(&self.live.failed)
    }

    /// Echoes after the proving ones so far (none while idle).
    pub fn echoes(&self) -> u64 {
        Live::get(&self.live.messages)
    }

    /// Errors of any kind so far.
    pub fn errors(&self) -> u64 {
        Live::get(&self.live.errors)
    }

    /// Whether the run is over (its report, or its failure, is ready).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits up to `timeout` for the run to end and returns its report;
    /// past the timeout every client process is killed.
    pub fn join(mut self, timeout: Duration) -> Result<Report, String> {
        let deadline = Instant::now() + timeout;
        while !self.finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let timed_out = !self.finished();
        if timed_out {
            self.abort.store(true, Ordering::Relaxed);
        }
        let result = self
            .thread
            .take()
            .expect("joined once")
            .join()
            .map_err(|_| "the clients' thread panicked".to_string())?;
        if timed_out {
            return Err(format!(
                "the client processes did not finish within {timeout:?}; killed"
            ));
        }
        result.map_err(|e| format!("echo-bench: {e}"))
    }

    /// Kills every client process (and waits until they are reaped).
    pub fn abort(&mut self) {
        self.abort.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.abort();
    }
}
