//! Logging never blocks the loop. With stderr a pipe nobody reads (a stuck
//! supervisor, `2> >(sleep 3600)`), a server logging every connection
//! (`RUST_LOG=debug`) goes on serving, acts on SIGTERM, and counts the
//! lines it could not write; once the sink reads again, the next line
//! logged comes after one that says how many were lost
//! (`src/log_sink.rs`, docs/limits.md).
//!
//! 2,000 connections log about 390 KB at debug level, six times what the
//! pipe holds (64 KiB). Before, the loop blocked in `write(2)` on stderr
//! after about 640 connections.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use util::{STEP_TIMEOUT, assert_echo, connect, pattern};

/// Connections opened and echoed while the sink is stuck.
const CONNECTIONS: usize = 2000;

/// Connections open at once (select serves about 1,000).
const WAVE: usize = 100;

/// `--shutdown-timeout` of these servers, in seconds.
const SHUTDOWN_TIMEOUT: u64 = 2;

/// A server whose stderr is a pipe this test does not read (until it
/// takes [`StuckLog::stderr`]). Killed on drop.
struct StuckLog {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    stderr: Option<ChildStderr>,
    /// Kept open: a server must not see its stdout closed.
    _stdout: BufReader<ChildStdout>,
}

impl StuckLog {
    /// Starts a server with `args` besides a listener, a metrics listener
    /// and [`SHUTDOWN_TIMEOUT`].
    fn spawn(args: &[&str]) -> StuckLog {
        let shutdown = SHUTDOWN_TIMEOUT.to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
            .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .args([
                "--backend",
                util::backend(),
                "--shutdown-timeout",
                &shutdown,
            ])
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn echo-reactor");
        let stderr = child.stderr.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut listening = Vec::new();
        while listening.len() < 2 {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("stdout");
            assert!(n > 0, "the server exited before listening: {listening:?}");
            listening.push(line.trim().to_string());
        }
        let find = |scheme: &str, tag: &str| {
            listening
                .iter()
                .find_map(|line| {
                    let l = util::proc::listening(line)?;
                    (l.scheme == scheme && l.tag == tag).then_some(l.addr)
                })
                .unwrap_or_else(|| panic!("no {scheme} listener in {listening:?}"))
        };
        StuckLog {
            addr: find("tcp", ""),
            metrics: find("http", "(metrics)"),
            child,
            stderr,
            _stdout: stdout,
        }
    }

    /// Opens and echoes [`CONNECTIONS`] connections, [`WAVE`] at a time;
    /// each echo must come back (within [`STEP_TIMEOUT`]).
    fn serve_every_connection(&self) {
        for wave in 0..CONNECTIONS / WAVE {
            let mut clients: Vec<TcpStream> = (0..WAVE).map(|_| connect(self.addr)).collect();
            for (i, client) in clients.iter_mut().enumerate() {
                assert_echo(client, &pattern((wave * WAVE + i) as u64, 64));
            }
        }
    }

    /// Scrapes until the server has counted dropped log lines; returns
    /// the count.
    fn wait_dropped(&self) -> u64 {
        let start = Instant::now();
        loop {
            if let Some(n) = dropped_in_scrape(self.metrics)
                && n > 0
            {
                return n;
            }
            assert!(
                start.elapsed() < STEP_TIMEOUT,
                "the server never counted a dropped log line"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits up to `--shutdown-timeout` + 1 s for the exit.
    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child, not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill");
        let deadline = Instant::now() + Duration::from_secs(SHUTDOWN_TIMEOUT + 1);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within --shutdown-timeout + 1 s of SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for StuckLog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `echo_reactor_log_lines_dropped_total` of one scrape, every worker's
/// summed when a master answers.
fn dropped_in_scrape(metrics: SocketAddr) -> Option<u64> {
    let mut s = connect(metrics);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("echo_reactor_log_lines_dropped_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as u64)
}

/// The numbers of every `N log lines dropped` line of `log`, summed.
fn summarised(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let (head, _) = l.split_once(" log lines dropped")?;
            head.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

on_every_backend! {
    fn a_log_sink_that_never_reads_stops_neither_serving_nor_shutdown() {
        let mut server = StuckLog::spawn(&[]);
        server.serve_every_connection();
        server.wait_dropped();
        // Serving goes on while the sink stays stuck.
        let mut late = connect(server.addr);
        assert_echo(&mut late, &pattern(7, 1000));
        drop(late);
        let status = server.terminate();
        assert!(status.success(), "{status:?}");
        // What reached the pipe is whole log lines.
        let mut log = String::new();
        server
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut log)
            .expect("read the pipe");
        assert!(log.len() >= 4096, "{} bytes", log.len());
        let cut = log
            .lines()
            .find(|l| !(l.starts_with('[') && l.contains("] ")));
        assert!(cut.is_none(), "not a log line: {cut:?}");
    }
}

#[test]
fn a_log_sink_that_never_reads_stops_neither_a_master_nor_its_workers() {
    // The workers inherit the master's stderr: one stuck pipe for all.
    let mut server = StuckLog::spawn(&["--workers", "2"]);
    server.serve_every_connection();
    server.wait_dropped();
    let mut late = connect(server.addr);
    assert_echo(&mut late, &pattern(7, 1000));
    drop(late);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn once_the_sink_reads_again_the_next_line_comes_after_one_that_says_how_many_were_dropped() {
    let mut server = StuckLog::spawn(&[]);
    server.serve_every_connection();
    let seen = server.wait_dropped();
    // Now read the pipe.
    let log = Arc::new(Mutex::new(String::new()));
    let mut pipe = server.stderr.take().expect("stderr");
    let sink = Arc::clone(&log);
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("log")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    // Each connection logs lines (debug level); the first line that finds
    // room, once the reader has made some, comes after the summary.
    let start = Instant::now();
    let mut seed = 0;
    while !log.lock().expect("log").contains(" log lines dropped") {
        assert!(start.elapsed() < STEP_TIMEOUT, "no summary line");
        let mut client = connect(server.addr);
        assert_echo(&mut client, &pattern(seed, 100));
        seed += 1;
        thread::sleep(Duration::from_millis(20));
    }
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    reader.join().expect("reader");
    let log = log.lock().expect("log").clone();
    let last = log
        .lines()
        .rfind(|l| l.contains("final stats:"))
        .unwrap_or_else(|| panic!("no final stats; log ends:\n{}", tail(&log)));
    let stats = util::proc::counters(last, "final stats:");
    let dropped = util::get(&stats, "log_dropped");
    assert!(dropped >= seen, "final {dropped} < scraped {seen}");
    assert_eq!(summarised(&log), dropped, "{}", tail(&log));
}

/// The last lines of `log`, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
