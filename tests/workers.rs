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

// ----- the supervisor under stray signals, shared limits, hung workers,
// ----- a second instance and a deleted binary

/// Ping-pong clients, each on its own connection, echoing until stopped;
/// every failure is recorded.
struct PingPong {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Result<usize, String>>>,
}

impl PingPong {
    fn start(addr: SocketAddr, clients: usize) -> PingPong {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|i| {
                let stop = Arc::clone(&stop);
                let mut c = connect(addr);
                thread::spawn(move || {
                    let mut rounds = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let data = pattern((i * 1000 + rounds) as u64, 64);
                        if !echo_once_on(&mut c, &data) {
                            return Err(format!("client {i} lost its echo after {rounds} rounds"));
                        }
                        rounds += 1;
                    }
                    Ok(rounds)
                })
            })
            .collect();
        PingPong { stop, threads }
    }

    /// Stops; panics unless every client echoed throughout.
    #[track_caller]
    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let rounds = t.join().expect("client thread").expect("echoes throughout");
            assert!(rounds > 0);
        }
    }
}

/// Every signal an operator or a tool may send to the master of
/// `--workers 2`, while 20 ping-pong clients run: each is logged or
/// ignored, no client loses its connection or a byte, and new connections
/// succeed. SIGUSR1 and SIGUSR2 used to end the whole service.
#[test]
fn stray_signals_to_the_master_end_nothing() {
    let mut server = spawn(2, &[]);
    wait_serving(&server, 2);
    let clients = PingPong::start(server.addr, 20);
    for (signal, says) in [
        (libc::SIGUSR1, Some("] stats: accepted=")),
        (libc::SIGUSR2, Some("SIGUSR2 means nothing to the master")),
        (libc::SIGQUIT, Some("master: status: 2 slots, 2 workers")),
        (libc::SIGALRM, Some("master: SIGALRM")),
        (libc::SIGWINCH, None),
        (libc::SIGPIPE, None),
    ] {
        server.signal(signal);
        if let Some(says) = says {
            server.wait_log(says);
        }
        echo_once(server.addr, b"a new client").expect("new connections succeed");
    }
    let log = server.wait_log("master: worker 1 (pid");
    assert!(log.contains("last heartbeat"), "{log}");
    clients.finish();
    // Still the same two workers, and the master still decides.
    assert_eq!(util::workers_serving(&server.stderr_text()).len(), 2);
    let (status, log) = util::stop(&mut server);
    assert!(status.success(), "{log}");
}

/// The workers' own signals mean what they mean in a single process:
/// SIGUSR1, SIGQUIT, SIGALRM and SIGHUP to a worker are logged and its
/// clients go on.
#[test]
fn stray_signals_to_a_worker_end_nothing() {
    let server = spawn(2, &[]);
    let workers = wait_serving(&server, 2);
    let clients = PingPong::start(server.addr, 10);
    for (_, pid) in &workers {
        for signal in [
            libc::SIGUSR1,
            libc::SIGQUIT,
            libc::SIGALRM,
            libc::SIGHUP,
            libc::SIGWINCH,
        ] {
            kill(*pid, signal);
        }
    }
    server.wait_log("worker 0: status: serving");
    server.wait_log("worker 1: status: serving");
    clients.finish();
    assert_eq!(util::workers_serving(&server.stderr_text()).len(), 2);
    assert!(!server.stderr_text().contains("restarting it in"));
}

/// What one connection from `src` to `addr` is told: true if it is
/// served (its echo comes back), false if turned away at a limit.
fn served_from(src: std::net::IpAddr, addr: SocketAddr) -> (bool, std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut c = util::connect_from(src, addr);
    c.set_read_timeout(Some(STEP_TIMEOUT)).expect("timeout");
    c.write_all(b"hi").expect("write");
    let mut first = [0u8; 2];
    c.read_exact(&mut first).expect("an echo or the notice");
    (&first == b"hi", c)
}

/// Opens connections from `src` until one is turned away; returns the
/// served ones.
fn fill_from(src: std::net::IpAddr, addr: SocketAddr) -> Vec<std::net::TcpStream> {
    let mut held = Vec::new();
    loop {
        let (served, c) = served_from(src, addr);
        if !served {
            return held;
        }
        held.push(c);
        assert!(held.len() <= 1000, "no limit at all");
    }
}

/// `--max-connections-per-ip 10 --workers 4`: one host holds exactly 10
/// however the kernel spreads them (it held 10 per worker before);
/// another host still connects; and when a worker holding some of them
/// is killed, the host regains exactly those once its slot restarts.
#[test]
fn the_per_host_limit_holds_across_workers() {
    let server = spawn(4, &["--max-connections-per-ip", "10"]);
    wait_serving(&server, 4);
    let host: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let other: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut held = fill_from(host, server.addr);
    assert_eq!(held.len(), 10);
    for _ in 0..20 {
        assert!(
            !served_from(host, server.addr).0,
            "an 11th connection was served"
        );
    }
    let (served, elsewhere) = served_from(other, server.addr);
    assert!(served, "another host is turned away");
    drop(elsewhere);
    // The worker holding the most of them dies.
    let pids: Vec<u32> = wait_serving(&server, 4).iter().map(|&(_, p)| p).collect();
    let seen = wait_workers(&server, "the 10 connections", |w| {
        pids.iter().all(|p| w.contains_key(p))
            && pids.iter().map(|p| get(&w[p], "active")).sum::<u64>() == 10
    });
    let victim = *pids
        .iter()
        .max_by_key(|p| get(&seen[p], "active"))
        .expect("a worker");
    let on_victim = get(&seen[&victim], "active") as usize;
    assert!(on_victim > 0);
    kill(victim, libc::SIGKILL);
    wait_serving(&server, 5);
    let mut alive = Vec::new();
    for (i, mut c) in held.drain(..).enumerate() {
        if echo_once_on(&mut c, &pattern(i as u64, 10)) {
            alive.push(c);
        }
    }
    assert_eq!(alive.len(), 10 - on_victim);
    let regained = fill_from(host, server.addr);
    assert_eq!(regained.len(), on_victim, "{}", server.stderr_text());
}

/// An HTTP/1.1 GET of `path` on a fresh connection; the whole answer.
fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = connect(addr);
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("answer");
    answer
}

/// `--workers 2 --metrics`: 32 idle connections and 32 that pipeline
/// requests and never read used to deny every scrape for a minute and
/// more (a thread each, at most 32). The master's metrics are served by
/// an event loop: fresh scrapes are answered, and the master holds no
/// thread per connection.
#[test]
fn the_masters_metrics_outlast_idle_and_unread_connections() {
    use std::io::Write;
    let server = spawn(2, &["--metrics", "127.0.0.1:0"]);
    wait_serving(&server, 2);
    let metrics = util::listening_addr(&server, "http", "(metrics)");
    assert!(http_get(metrics, "/metrics").contains("echo_reactor_master_workers_up 2"));
    let threads = util::proc::threads(server.pid());
    let idle: Vec<_> = (0..32).map(|_| connect(metrics)).collect();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    let pushers: Vec<_> = (0..32)
        .map(|_| {
            let mut c = connect(metrics);
            c.set_write_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let _ = c.write_all(&request);
            c
        })
        .collect();
    for _ in 0..10 {
        let answer = http_get(metrics, "/metrics");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("echo_reactor_master_workers 2"), "{answer}");
    }
    assert_eq!(
        util::proc::threads(server.pid()),
        threads,
        "threads per connection"
    );
    drop((idle, pushers));
}

/// A second `--workers` server on a port in use exits 1 with the message
/// a single process gives (it used to join the first one's
/// `SO_REUSEPORT` group and take half its clients).
#[test]
fn a_second_master_on_a_port_in_use_is_refused() {
    let first = spawn(2, &["--udp", "127.0.0.1:0"]);
    wait_serving(&first, 2);
    let tcp = first.addr.to_string();
    let udp = util::listening_addr(&first, "udp", "").to_string();
    for (what, args) in [
        ("tcp", vec!["--listen", tcp.as_str()]),
        (
            "udp",
            vec!["--listen", "127.0.0.1:0", "--udp", udp.as_str()],
        ),
    ] {
        let (alone, _, alone_err) = util::run_to_exit(&args);
        let mut master_args = args.clone();
        master_args.extend(["--workers", "2"]);
        let (master, _, master_err) = util::run_to_exit(&master_args);
        assert_eq!(alone.code(), Some(1), "{what}: {alone_err}");
        assert_eq!(master.code(), Some(1), "{what}: {master_err}");
        let error = |stderr: &str| {
            stderr
                .lines()
                .find(|l| l.starts_with("error:"))
                .map(String::from)
        };
        assert!(error(&alone_err).is_some(), "{what}: {alone_err}");
        assert_eq!(error(&master_err), error(&alone_err), "{what}");
    }
    let mut c = connect(first.addr);
    assert_echo(&mut c, b"the first server keeps its port");
}

/// The state letter of `/proc/PID/stat` (`T`: stopped).
fn process_state(pid: u32) -> Option<char> {
    util::proc::stat(pid).map(|s| s.state)
}

/// One of 4 workers SIGSTOPped: the master notices its loop has stopped
/// turning (the default `--watchdog`, 3 s), kills and replaces it, and
/// every client that connected meanwhile (queued in the stopped worker's
/// slot) is then served. It was reported up forever, and a quarter of new
/// clients hung.
#[test]
fn a_stopped_worker_is_killed_and_replaced() {
    let server = spawn(4, &[]);
    let workers = wait_serving(&server, 4);
    let (slot, victim) = workers[1];
    kill(victim, libc::SIGSTOP);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while process_state(victim) != Some('T') {
        assert!(Instant::now() < deadline, "never stopped");
        thread::sleep(Duration::from_millis(10));
    }
    let waiting: Vec<_> = (0..40)
        .map(|i| {
            let addr = server.addr;
            thread::spawn(move || echo_once(addr, &pattern(i, 100)))
        })
        .collect();
    server.wait_log(&format!("(pid {victim}) has not turned its loop"));
    let replaced = wait_serving(&server, 5);
    assert_eq!(replaced[4].0, slot);
    for (i, t) in waiting.into_iter().enumerate() {
        t.join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("client {i} was never served: {e}"));
    }
    let deadline = Instant::now() + STEP_TIMEOUT;
    while process_state(victim).is_some() {
        assert!(
            Instant::now() < deadline,
            "the stopped worker was not reaped"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A worker restarts, and SIGHUP rolls every slot, after the binary's
/// file is deleted (a package upgrade does this): workers start from the
/// program the master runs. After a new file appears at the path, SIGHUP
/// runs it.
#[test]
fn a_deleted_binary_still_restarts_workers_and_sighup_runs_the_new_one() {
    let dir = std::env::temp_dir().join(format!("echo-reactor-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let program = dir.join("echo-reactor");
    let built = env!("CARGO_BIN_EXE_echo-reactor");
    std::fs::copy(built, &program).expect("copy the binary");
    let args = ["--workers", "2", "--stats-interval", "0.05"];
    let server = Server::spawn_program(&program, &args, MASTER_DEBUG);
    let workers = wait_serving(&server, 2);
    std::fs::remove_file(&program).expect("delete the binary");
    kill(workers[0].1, libc::SIGKILL);
    let after_kill = wait_serving(&server, 3);
    let mut c = connect(server.addr);
    assert_echo(&mut c, b"served by the replacement or its neighbour");
    let exe = |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe link");
    assert!(
        exe(after_kill[2].1)
            .to_string_lossy()
            .ends_with("(deleted)"),
        "{:?}",
        exe(after_kill[2].1)
    );
    // SIGHUP with the path still gone: every slot rolls on the old program.
    server.signal(libc::SIGHUP);
    server.wait_log("cannot open the program again");
    server.wait_log("master: rolling restart done");
    assert_eq!(util::workers_serving(&server.stderr_text()).len(), 5);
    // An upgrade: a new file at the path; SIGHUP runs it.
    std::fs::copy(built, &program).expect("copy the binary again");
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while server.stderr_text().matches("rolling restart done").count() < 2 {
        assert!(Instant::now() < deadline, "{}", server.stderr_text());
        thread::sleep(Duration::from_millis(20));
    }
    let newest = util::workers_serving(&server.stderr_text());
    assert_eq!(newest.len(), 7);
    for &(_, pid) in &newest[5..] {
        assert_eq!(exe(pid), program, "worker {pid} runs the new file");
    }
    assert_echo(&mut connect(server.addr), b"after the upgrade");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--drain-delay` with workers: the master's `/healthz` says 503 at once
/// on SIGTERM while every worker keeps accepting; then they drain and the
/// master exits 0.
#[test]
fn drain_delay_says_503_on_the_masters_page_while_workers_accept() {
    let mut server = spawn(2, &["--metrics", "127.0.0.1:0", "--drain-delay", "3"]);
    wait_serving(&server, 2);
    let metrics = util::listening_addr(&server, "http", "(metrics)");
    assert!(http_get(metrics, "/healthz").starts_with("HTTP/1.1 200"));
    server.signal(libc::SIGTERM);
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !http_get(metrics, "/healthz").starts_with("HTTP/1.1 503") {
        assert!(Instant::now() < deadline, "/healthz never said 503");
        thread::sleep(Duration::from_millis(10));
    }
    // Still accepting after the master's page turned 503: enough clients
    // that both workers' sockets are tried.
    let mut clients = open_echoed(server.addr, 10);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_echo(c, &pattern(i as u64, 100));
    }
    drop(clients);
    let status = server
        .wait_exit(STEP_TIMEOUT)
        .expect("exits after the delay");
    assert_eq!(status.code(), Some(0), "{}", server.stderr_text());
}
