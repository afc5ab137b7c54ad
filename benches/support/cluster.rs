//! The server under test of `cargo bench --bench scale`: `echo-reactor
//! --workers W`, a master process and its W worker processes, or with
//! W = 1 the single process of today (no `--workers` flag is passed; that
//! process is then its own only worker).
//!
//! - It is started in a process group of its own, so that one `kill` of
//!   the group reaches the master and every worker, whatever the master
//!   does; the master also gets `SIGKILL` if this process dies first
//!   (`PR_SET_PDEATHSIG`).
//! - Its address is the one `listening on tcp://ADDR` line on stdout,
//!   waited for with a timeout; its log (stderr) goes to a file.
//! - The workers are the master's children (`/proc/PID/task/*/children`).
//! - Each worker's connections are its socket descriptors now minus its
//!   socket descriptors before any client came (`/proc/PID/fd`): no log
//!   format is needed.
//! - [`Cluster::terminate`] sends `SIGTERM` to the master and waits, with a
//!   timeout; on every path (drop included) the whole group is killed
//!   before the master is reaped, so no process of it outlives the bench
//!   and the group id cannot have been reused meanwhile.

#![allow(dead_code)] // the scale bench uses part of it

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::machine;
use crate::support::proc;

/// A running master and its workers.
pub struct Cluster {
    master: Child,
    /// The process group: the master's pid.
    pgid: i32,
    addr: SocketAddr,
    /// The processes that hold connections: the workers, or the single
    /// process itself.
    workers: Vec<u32>,
    /// Whether there is a master apart from the workers.
    multi: bool,
    /// Each worker's socket descriptors before any client came.
    base_sockets: Vec<usize>,
    /// Each worker's descriptors before any client came.
    base_fds: Vec<usize>,
    /// Each worker's start time (`/proc/PID/stat` field 22), to tell it
    /// from a later process that got its pid.
    started_at: Vec<u64>,
    log: PathBuf,
    reaped: Option<ExitStatus>,
}

/// How long the master may take to print its `listening on` line, and its
/// workers to appear and settle.
const START_TIMEOUT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Starts `program` with `--workers W` (none for W = 1), `--listen
    /// 127.0.0.1:0` and `extra` arguments, its stderr into `log`; waits for
    /// its address, its W workers, and for their descriptors to settle.
    pub fn start(
        program: &Path,
        workers: usize,
        extra: &[String],
        log: &Path,
    ) -> Result<Cluster, String> {
        let log_file = File::create(log)
            .map_err(|e| format!("create the server log {}: {e}", log.display()))?;
        let mut cmd = Command::new(program);
        if workers > 1 {
            cmd.args(["--workers", &workers.to_string()]);
        }
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and
        // makes one async-signal-safe system call (prctl), touching no
        // lock or allocator.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut master = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", program.display()))?;
        let pid = master.id();
        let stdout = master.stdout.take().expect("server stdout is piped");
        let mut cluster = Cluster {
            master,
            pgid: pid as i32,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: Vec::new(),
            multi: workers > 1,
            base_sockets: Vec::new(),
            base_fds: Vec::new(),
            started_at: Vec::new(),
            log: log.to_path_buf(),
            reaped: None,
        };
        // Its stdout is read to the end on a thread of its own, so that
        // the server never blocks on (or dies of) a full or closed pipe.
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("server-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        // Nobody listens any more: keep draining.
                    }
                }
            })
            .map_err(|e| format!("start the server's stdout reader: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        cluster.addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(l) = proc::listening(&line).filter(|l| l.scheme == "tcp") {
                        break l.addr;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(cluster.gone_message("before its `listening on` line"));
                }
            }
            if let Ok(Some(_)) = cluster.master.try_wait() {
                return Err(cluster.gone_message("before its `listening on` line"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no `listening on tcp://ADDR` line within {START_TIMEOUT:?}{}",
                    cluster.log_tail()
                ));
            }
        };
        cluster.workers = if workers > 1 {
            cluster.wait_for_workers(workers, deadline)?
        } else {
            vec![pid]
        };
        cluster.started_at = cluster
            .workers
            .iter()
            .map(|&w| machine::start_time(w).unwrap_or(0))
            .collect();
        cluster.settle_baseline(deadline)?;
        Ok(cluster)
    }

    /// Waits until the master has `n` children, and returns them.
    fn wait_for_workers(&mut self, n: usize, deadline: Instant) -> Result<Vec<u32>, String> {
        loop {
            let children = machine::children_of(self.master.id());
            if children.len() >= n {
                return Ok(children);
            }
            if let Ok(Some(_)) = self.master.try_wait() {
                return Err(self.gone_message("while starting its workers"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the master has {} of its {n} workers after {START_TIMEOUT:?}{}",
                    children.len(),
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until no worker's descriptor count has changed for 300 ms
    /// (each has its listener and its poller), then takes the counts
    /// before any client comes.
    fn settle_baseline(&mut self, deadline: Instant) -> Result<(), String> {
        let mut last = self.fd_counts();
        let mut still_since = Instant::now();
        while still_since.elapsed() < Duration::from_millis(300) {
            thread::sleep(Duration::from_millis(50));
            let now = self.fd_counts();
            if now != last {
                (last, still_since) = (now, Instant::now());
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        self.base_fds = self.fd_counts();
        self.base_sockets = self.socket_counts();
        if self.base_sockets.contains(&0) {
            return Err(format!(
                "a worker holds no socket at all (not listening?){}",
                self.log_tail()
            ));
        }
        Ok(())
    }

    /// "exited with status 2 MOMENT" and the end of its log.
    fn gone_message(&mut self, moment: &str) -> String {
        let status = self
            .master
            .try_wait()
            .ok()
            .flatten()
            .map_or_else(|| "stopped".to_string(), |s| format!("exited ({s})"));
        format!("the server {status} {moment}{}", self.log_tail())
    }

    /// The last lines of its log, as ": ..." for an error message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n  ");
        if tail.is_empty() {
            format!(" (its log {} is empty)", self.log.display())
        } else {
            format!("; its log ({}) ends:\n  {tail}", self.log.display())
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The master's pid (the single process's, with one worker).
    pub fn master_pid(&self) -> u32 {
        self.master.id()
    }

    /// Whether there is a master apart from the workers.
    pub fn multi(&self) -> bool {
        self.multi
    }

    /// The processes that hold connections.
    pub fn workers(&self) -> &[u32] {
        &self.workers
    }

    /// Every process of the server: the master (if apart) and the workers.
    pub fn all_pids(&self) -> Vec<u32> {
        let mut pids = self.workers.clone();
        if self.multi {
            pids.push(self.master.id());
        }
        pids
    }

    /// Each worker's descriptors now (0 for one that is gone).
    pub fn fd_counts(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|&p| machine::fd_count(p).unwrap_or(0))
            .collect()
    }

    /// Each worker's socket descriptors now (0 for one that is gone).
    pub fn socket_counts(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|&p| machine::socket_count(p).unwrap_or(0))
            .collect()
    }

    /// Each worker's descriptors before any client came.
    pub fn base_fds(&self) -> &[usize] {
        &self.base_fds
    }

    /// Each worker's connections now: its socket descriptors over its
    /// count before any client came.
    pub fn connections(&self) -> Vec<usize> {
        self.socket_counts()
            .iter()
            .zip(&self.base_sockets)
            .map(|(now, base)| now.saturating_sub(*base))
            .collect()
    }

    /// Whether every worker is back to the descriptors it had before any
    /// client came (cheap: counts entries, reads no link).
    pub fn back_to_baseline(&self) -> bool {
        self.fd_counts()
            .iter()
            .zip(&self.base_fds)
            .all(|(now, base)| now <= base)
    }

    /// Each worker's `VmRSS`, KiB (0 for one that is gone).
    pub fn worker_rss_kib(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|&p| machine::status_field(p, "VmRSS").unwrap_or(0))
            .collect()
    }

    /// The master's `VmRSS`, KiB, when there is a master apart.
    pub fn master_rss_kib(&self) -> Option<u64> {
        self.multi
            .then(|| machine::status_field(self.master.id(), "VmRSS").unwrap_or(0))
    }

    /// CPU ticks of every process of the server so far.
    pub fn cpu_ticks(&self) -> u64 {
        self.all_pids().iter().map(|&p| machine::cpu_ticks(p)).sum()
    }

    /// Which workers are gone (exited, or zombies), by index.
    pub fn dead_workers(&self) -> Vec<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|&(_, &p)| !matches!(machine::state_and_group(p), Some((s, _)) if s != 'Z'))
            .map(|(i, _)| i)
            .collect()
    }

    /// `SIGTERM` to the master; waits up to `timeout` for it to exit, then
    /// kills whatever is left of the group and reaps the master. Returns
    /// its exit status and whether it exited by itself in time.
    pub fn terminate(mut self, timeout: Duration) -> (Option<ExitStatus>, bool) {
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe { libc::kill(self.master.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        let mut in_time = false;
        while Instant::now() < deadline {
            // A zombie has exited but is not reaped: its pid, and so the
            // group id, cannot be reused yet.
            if matches!(
                machine::state_and_group(self.master.id()),
                None | Some(('Z', _))
            ) {
                in_time = true;
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.kill_group();
        (self.reaped, in_time)
    }

    /// Kills the whole group, then reaps the master.
    fn kill_group(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        // SAFETY: kill(2) with a negative pid signals the process group
        // of our own child, which is not reaped yet (at most a zombie), so
        // the group id is still ours.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        self.reaped = self.master.wait().ok();
        // A worker that left the group (setsid) did not get that signal:
        // each one still alive is killed by its pid, if the pid is still
        // the very process found at the start (same start time).
        for (&w, &started) in self.workers.iter().zip(&self.started_at) {
            if machine::start_time(w) == Some(started)
                && !matches!(machine::state_and_group(w), Some(('Z', _)))
            {
                // SAFETY: kill(2) on a worker of the server we started,
                // checked by its start time to be that very process.
                unsafe { libc::kill(w as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// Whether `program --help` mentions `--workers`.
pub fn has_workers_flag(program: &Path) -> bool {
    let Ok(mut child) = Command::new(program)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().is_ok_and(|text| text.contains("--workers"))
}

/// How a process ended, in words.
pub fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        None => "could not be reaped".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("{s}"),
        },
    }
}
