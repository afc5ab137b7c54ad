//! `--workers N`: a master and N worker processes on `SO_REUSEPORT`
//! sockets, as black boxes: connections land on every worker, a killed
//! worker is replaced in its slot while the others' clients notice
//! nothing, SIGTERM drains them all, SIGHUP replaces them one slot at a
//! time without refusing or resetting a connection attempt, and
//! `--workers 1` is the single process it always was.

mod util;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::{STEP_TIMEOUT, Server, assert_echo, connect, counters, get, pattern};

/// The master's own lines at debug level (each worker's counters), the
/// rest at info.
const MASTER_DEBUG: &str = "info,echo_reactor::supervisor=debug";

/// Starts a master of `workers` workers reporting every 50 ms.
fn spawn(workers: usize, extra: &[&str]) -> Server {
    let n = workers.to_string();
    let mut args = vec!["--workers", &n, "--stats-interval", "0.05"];
    args.extend_from_slice(extra);
    Server::spawn_logging(&args, MASTER_DEBUG)
}

/// Waits until `count` workers have been reported serving in total.
#[track_caller]
fn wait_serving(server: &Server, count: usize) -> Vec<(usize, u32)> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let found = util::workers_serving(&server.stderr_text());
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "only {} workers ever served; log:\n{}",
            found.len(),
            server.stderr_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Each worker's latest periodic counters, by pid (the master's debug
/// lines `worker SLOT (pid PID): stats: ...`).
fn per_worker(log: &str) -> HashMap<u32, HashMap<String, u64>> {
    let mut latest = HashMap::new();
    for line in log.lines() {
        let Some(rest) = line.split("(pid ").nth(1) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once("): stats:") else {
            continue;
        };
        if let Ok(pid) = pid.parse::<u32>() {
            latest.insert(pid, counters(line, "): stats:"));
        }
    }
    latest
}

/// Waits until the workers' latest counters, together, satisfy `pred`.
#[track_caller]
fn wait_workers(
    server: &Server,
    what: &str,
    pred: impl Fn(&HashMap<u32, HashMap<String, u64>>) -> bool,
) -> HashMap<u32, HashMap<String, u64>> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let seen = per_worker(&server.stderr_text());
        if pred(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the workers' counters never showed {what}: {seen:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Connections opened and echoed once each, held open.
fn open_echoed(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    (0..n)
        .map(|i| {
            let mut c = connect(addr);
            assert_echo(&mut c, &pattern(i as u64, 1000));
            c
        })
        .collect()
}

/// A client that connects, echoes 100 bytes and closes, over and over,
/// until stopped; every failure is recorded.
struct Connector {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<(usize, Vec<String>)>,
}

impl Connector {
    fn start(addr: SocketAddr) -> Connector {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let (mut done, mut failures) = (0, Vec::new());
            let data = pattern(7, 100);
            while !flag.load(Ordering::Relaxed) {
                match echo_once(addr, &data) {
                    Ok(()) => done += 1,
                    Err(e) => failures.push(format!("attempt {}: {e}", done + failures.len())),
                }
            }
            (done, failures)
        });
        Connector { stop, thread }
    }

    /// Stops; returns how many attempts succeeded and every failure.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("connector thread")
    }
}

fn echo_once(addr: SocketAddr, data: &[u8]) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect_timeout(&addr, STEP_TIMEOUT)?;
    c.set_read_timeout(Some(STEP_TIMEOUT))?;
    c.write_all(data)?;
    let mut back = vec![0; data.len()];
    c.read_exact(&mut back)?;
    if back != data {
        return Err(std::io::Error::other("wrong echo"));
    }
    Ok(())
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) only sends a signal; the pid is a worker of the
    // master this test started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

on_every_backend! {
    /// SIGUSR2 retires a server (what a rolling restart does to the old
    /// worker): new connections are refused, open ones are served until
    /// their clients close them, and then it exits 0.
    fn sigusr2_serves_the_open_connections_and_accepts_no_more() {
        let mut server = Server::spawn(&[]);
        let mut open = connect(server.addr);
        assert_echo(&mut open, b"before");
        server.signal(libc::SIGUSR2);
        server.wait_log("retiring");
        assert!(
            std::net::TcpStream::connect_timeout(&server.addr, STEP_TIMEOUT).is_err(),
            "a retired server accepted"
        );
        assert_echo(&mut open, b"still served");
        thread::sleep(Duration::from_millis(200));
        assert_echo(&mut open, b"as long as it stays");
        drop(open);
        let status = server.wait_exit(STEP_TIMEOUT).expect("exits once the client left");
        assert!(status.success(), "{}", server.stderr_text());
    }

    /// Connections land on both workers, every byte echoes, and the
    /// master's totals are the sum of the workers'.
    fn two_workers_share_the_connections_and_echo_every_byte() {
        let mut server = spawn(2, &[]);
        let pids: Vec<u32> = wait_serving(&server, 2).iter().map(|&(_, pid)| pid).collect();
        let clients = open_echoed(server.addr, 40);
        let seen = wait_workers(&server, "40 connections between them", |w| {
            pids.iter().all(|pid| w.contains_key(pid))
                && w.values().map(|s| get(s, "active")).sum::<u64>() == 40
        });
        for pid in &pids {
            assert!(get(&seen[pid], "accepted") > 0, "worker {pid} got none: {seen:?}");
        }
        drop(clients);
        let (status, log) = util::stop(&mut server);
        assert!(status.success(), "{log}");
        let total = counters(&log, "final stats:");
        assert_eq!(get(&total, "accepted"), 40, "{log}");
        assert_eq!(get(&total, "bytes_out"), 40 * 1000, "{log}");
    }

    /// SIGKILL to one worker: its slot gets a new worker, the other
    /// worker's clients go on echoing, and new connections succeed
    /// throughout (they wait in the slot's queue, which the master keeps).
    fn a_killed_worker_is_replaced_and_nobody_else_notices() {
        let server = spawn(2, &[]);
        let workers = wait_serving(&server, 2);
        let clients = open_echoed(server.addr, 30);
        let seen = wait_workers(&server, "30 connections between them", |w| {
            w.len() == 2 && w.values().map(|s| get(s, "active")).sum::<u64>() == 30
        });
        let (victim_slot, victim) = workers[0];
        let on_victim = get(&seen[&victim], "active") as usize;
        kill(victim, libc::SIGKILL);
        // From its death on (a connection it had accepted dies with it),
        // through the wait for its successor, new connections succeed:
        // they queue on the slot's socket, which the master keeps open.
        server.wait_log("restarting it in");
        let connector = Connector::start(server.addr);
        let replaced = wait_serving(&server, 3);
        let (slot, pid) = replaced[2];
        assert_eq!(slot, victim_slot, "{}", server.stderr_text());
        assert_ne!(pid, victim);
        thread::sleep(Duration::from_millis(300));
        let (done, failures) = connector.finish();
        assert!(failures.is_empty(), "{} connect+echo failed: {failures:?}", failures.len());
        assert!(done > 0);
        // The victim's clients lost their connection; every other one
        // still echoes.
        let mut alive = 0;
        for (i, mut c) in clients.into_iter().enumerate() {
            if echo_once_on(&mut c, &pattern(100 + i as u64, 500)) {
                alive += 1;
            }
        }
        assert_eq!(alive, 30 - on_victim, "victim held {on_victim}");
        assert!(server.stderr_text().contains("restarting it in"), "{}", server.stderr_text());
    }

    /// SIGHUP replaces each worker in turn while a client connects in a
    /// loop: not one attempt is refused or reset.
    fn sighup_replaces_every_worker_without_refusing_a_connection() {
        let server = spawn(2, &[]);
        let before = wait_serving(&server, 2);
        let connector = Connector::start(server.addr);
        thread::sleep(Duration::from_millis(200));
        server.signal(libc::SIGHUP);
        server.wait_log("master: rolling restart done");
        thread::sleep(Duration::from_millis(200));
        let (done, failures) = connector.finish();
        assert!(failures.is_empty(), "{} connect+echo failed: {failures:?}", failures.len());
        assert!(done > 0);
        let after = &util::workers_serving(&server.stderr_text())[2..];
        let mut slots: Vec<usize> = after.iter().map(|&(slot, _)| slot).collect();
        slots.sort_unstable();
        assert_eq!(slots, [0, 1], "{after:?}");
        for (_, pid) in after {
            assert!(before.iter().all(|(_, old)| old != pid), "{pid} was not replaced");
        }
    }
}

/// One echo on an open connection; false if the connection is gone.
fn echo_once_on(c: &mut std::net::TcpStream, data: &[u8]) -> bool {
    use std::io::{Read, Write};
    if c.write_all(data).is_err() {
        return false;
    }
    let mut back = vec![0; data.len()];
    c.read_exact(&mut back).is_ok() && back == data
}

/// SIGTERM: every worker drains (its clients get their echo, then EOF),
/// and the master exits 0 with the workers' summed counters.
#[test]
fn sigterm_drains_every_worker_and_the_master_exits_0() {
    use std::io::{Read, Write};
    let mut server = spawn(2, &[]);
    wait_serving(&server, 2);
    let mut clients = open_echoed(server.addr, 20);
    // Each sends more and is answered during the drain.
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&pattern(50 + i as u64, 2000)).expect("write");
    }
    let (status, log) = util::stop(&mut server);
    assert_eq!(status.code(), Some(0), "{log}");
    for (i, c) in clients.iter_mut().enumerate() {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("read to EOF");
        assert_eq!(rest, pattern(50 + i as u64, 2000), "client {i}");
    }
    let total = counters(&log, "final stats:");
    assert_eq!(get(&total, "accepted"), 20, "{log}");
    assert_eq!(get(&total, "bytes_in"), 20 * 3000, "{log}");
}

/// A second SIGINT ends every worker at once: the master exits 130.
#[test]
fn a_second_signal_ends_every_worker_at_once() {
    use std::io::Write;
    let mut server = spawn(2, &["--shutdown-timeout", "60", "--sndbuf", "4096"]);
    wait_serving(&server, 2);
    // Clients that never read keep their workers draining.
    let pushers: Vec<_> = (0..4)
        .map(|_| {
            let mut c = connect(server.addr);
            c.set_write_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let _ = c.write_all(&vec![1; 4 << 20]);
            c
        })
        .collect();
    server.signal(libc::SIGINT);
    server.wait_log("shutting down 2 workers gracefully");
    thread::sleep(Duration::from_millis(300));
    assert!(
        server.wait_exit(Duration::from_millis(10)).is_none(),
        "drain ended early"
    );
    server.signal(libc::SIGINT);
    let status = server.wait_exit(STEP_TIMEOUT).expect("master exits");
    assert_eq!(status.code(), Some(130), "{}", server.stderr_text());
    drop(pushers);
}

/// `--workers 1` is the single process: the same stdout, the same log
/// lines, no master.
#[test]
fn one_worker_is_the_single_process() {
    let normalize = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_once("] ").map_or(l, |(_, rest)| rest))
            .map(|l| l.split(':').next().unwrap_or(l).to_string())
            .collect()
    };
    let run = |extra: &[&str]| {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut server = Server::spawn(&args);
        let mut c = connect(server.addr);
        assert_echo(&mut c, b"one process");
        drop(c);
        let listening: Vec<String> = server
            .listening
            .iter()
            .map(|l| l.replace(&server.addr.port().to_string(), "PORT"))
            .collect();
        let (status, log) = util::stop(&mut server);
        (status.code(), listening, normalize(&log))
    };
    let alone = run(&[]);
    let one = run(&["--workers", "1"]);
    assert_eq!(alone, one);
    assert!(
        !one.2
            .iter()
            .any(|l| l.contains("master") || l.contains("worker"))
    );
}

/// `--workers auto` starts one worker per online CPU.
#[test]
fn auto_is_one_per_cpu() {
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let mut server = Server::spawn(&["--workers", "auto"]);
    if cpus > 1 {
        server.wait_log(&format!("master: starting {cpus} workers"));
        wait_serving(&server, cpus);
    }
    let mut c = connect(server.addr);
    assert_echo(&mut c, b"auto");
    drop(c);
    let (status, _) = util::stop(&mut server);
    assert!(status.success());
}

#[test]
fn bad_worker_counts_are_refused() {
    for bad in ["0", "abc", "-1", "99999"] {
        let flag = format!("--workers={bad}");
        let (status, _, stderr) = util::run_to_exit(&[&flag]);
        assert_eq!(status.code(), Some(2), "--workers {bad}: {stderr}");
        assert!(stderr.contains("--workers"), "--workers {bad}: {stderr}");
    }
}
