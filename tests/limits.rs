//! Limits: `--max-connections`, running out of descriptors (EMFILE),
//! `--idle-timeout`, and no descriptor leak over many connections.
//!
//! The tests of connection limits and timeouts run the server in-process
//! (`util::inprocess`). Those of descriptors stay on the binary: its
//! `RLIMIT_NOFILE` and its descriptor table are a process's own, and the
//! select test checks a log line.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::Config;
use util::inprocess::{self, InProcess};
use util::{STEP_TIMEOUT, Server, assert_echo, connect, read_to_eof};

/// What a new connection got from the server.
#[derive(Debug)]
enum Fate {
    /// Its `ping` came back; the connection stays open.
    Served(TcpStream),
    /// It was closed (EOF or reset) without an echo; carries what arrived.
    Closed(Vec<u8>),
}

/// Connects, sends `ping`, and tells whether it was echoed or the
/// connection was closed. Panics if neither happens in time.
#[track_caller]
fn try_new_connection(addr: SocketAddr) -> Fate {
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => panic!("connect: {e}"),
    };
    s.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(STEP_TIMEOUT)).unwrap();
    // A closed connection may fail the write (EPIPE/reset): that's fine.
    let _ = s.write_all(b"ping");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Fate::Closed(got),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got == b"ping" {
                    return Fate::Served(s);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("server neither served nor closed a new connection (got {got:?})")
            }
            Err(_) => return Fate::Closed(got),
        }
    }
}

// --- --max-connections ----------------------------------------------------

on_every_backend! {
    fn connection_over_max_gets_error_line_and_others_are_unaffected() {
        let server = InProcess::start(Config {
            max_connections: Some(2),
            ..inprocess::config()
        });
        let mut a = connect(server.addr);
        assert_echo(&mut a, b"a");
        let mut b = connect(server.addr);
        assert_echo(&mut b, b"b");

        let mut c = connect(server.addr);
        assert_eq!(
            String::from_utf8_lossy(&read_to_eof(&mut c)),
            "ERR too many connections\n"
        );

        // The two admitted clients carry on.
        assert_echo(&mut a, &util::pattern(1, 100_000));
        assert_echo(&mut b, &util::pattern(2, 100_000));

        // Free a slot: once the server has seen the close, a new connection
        // is served again.
        drop(a);
        server.wait_stats("the first client closed", |s| s.closed == 1);
        let mut d = match try_new_connection(server.addr) {
            Fate::Served(s) => s,
            fate => panic!("no connection served after a slot was freed: {fate:?}"),
        };
        assert_echo(&mut d, b"d");
        assert_echo(&mut b, b"b again");

        // Full again: the limit still holds.
        let mut e = connect(server.addr);
        assert_eq!(
            String::from_utf8_lossy(&read_to_eof(&mut e)),
            "ERR too many connections\n"
        );

        drop((b, c, d, e));
        let stats = server.stop().stats;
        assert_eq!(stats.rejected, 2, "{stats:?}");
        assert_eq!(stats.accept_errors, 0, "{stats:?}");
    }

    // --- Descriptor exhaustion --------------------------------------------------

    fn emfile_closes_pending_connection_without_spinning_and_recovers() {
        const LIMIT: u64 = 32;
        let started = Instant::now();
        let mut server = Server::spawn_with_nofile(&["--max-connections", "100000"], LIMIT);
        let pid = server.pid();

        // Open connections until the server stops serving new ones.
        let mut served = Vec::new();
        let mut closed_attempts = 0u64;
        for _ in 0..LIMIT + 16 {
            match try_new_connection(server.addr) {
                Fate::Served(s) => served.push(s),
                Fate::Closed(got) => {
                    assert!(
                        got.is_empty(),
                        "expected a bare close at the descriptor limit, got {:?}",
                        String::from_utf8_lossy(&got)
                    );
                    closed_attempts += 1;
                    break;
                }
            }
        }
        assert!(closed_attempts == 1, "never hit the descriptor limit");
        assert!(
            served.len() as u64 >= LIMIT / 2 && (served.len() as u64) < LIMIT,
            "served {} connections under a limit of {LIMIT}",
            served.len()
        );

        // Stuck at the limit: more connections are closed at once, and the
        // server does not burn CPU meanwhile.
        let cpu = util::CpuWatch::start(pid);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            let fate = try_new_connection(server.addr);
            assert!(
                matches!(&fate, Fate::Closed(got) if got.is_empty()),
                "at the descriptor limit: {fate:?}"
            );
            closed_attempts += 1;
            thread::sleep(Duration::from_millis(50));
        }
        // Leave one connection pending while measuring too.
        let pending = TcpStream::connect(server.addr).expect("connect");
        thread::sleep(Duration::from_millis(300));
        cpu.assert_under_half_a_core("at the descriptor limit");
        drop(pending);
        assert!(
            server.wait_exit(Duration::ZERO).is_none(),
            "server exited at the descriptor limit"
        );
        // The established connections are untouched.
        for s in served.iter_mut() {
            assert_echo(s, b"still");
        }

        // Free half the descriptors: new connections are served again.
        let keep = served.len() / 2;
        served.truncate(keep);
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            match try_new_connection(server.addr) {
                Fate::Served(s) => {
                    served.push(s);
                    break;
                }
                fate => {
                    closed_attempts += 1;
                    assert!(
                        Instant::now() < deadline,
                        "server did not recover after descriptors were freed: {fate:?}"
                    );
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        for i in 0..3 {
            match try_new_connection(server.addr) {
                Fate::Served(s) => served.push(s),
                fate => panic!("connection {i} after recovery: {fate:?}"),
            }
        }

        drop(served);
        let (status, log) = util::stop(&mut server);
        assert!(status.success(), "exit status {status}; log:\n{log}");
        let stats = util::counters(&log, "final stats:");
        let accept_errors = util::get(&stats, "accept_errors");
        assert!(accept_errors >= 1, "no accept error counted: {stats:?}");
        // A few failed accepts per refused connection are fine; an accept loop
        // that keeps retrying while stuck counts thousands.
        assert!(
            accept_errors <= 10 * closed_attempts + 10,
            "accept_errors={accept_errors} for {closed_attempts} connections closed at the limit \
             (retrying accept in a loop?)"
        );
        // Warnings are rate-limited: at most one per started second, plus
        // slack for a start-up warning about the low limit.
        let warnings = log.lines().filter(|l| l.contains("WARN")).count() as u64;
        let secs = started.elapsed().as_secs() + 3;
        assert!(
            (1..=secs).contains(&warnings),
            "{warnings} warnings for {closed_attempts} refused connections over ~{secs} s:\n{log}"
        );
    }

    fn without_a_spare_descriptor_the_listener_rests_and_retries_instead_of_spinning() {
        // Where the spare goes: the last descriptor the server opens at
        // startup, on /dev/null (descriptors inherited from the test
        // runner, such as cargo's jobserver pipe, may sit above it).
        let mut probe = Server::spawn_with_nofile(&["--max-connections", "100000"], 64);
        // Looked at until seen: a test running beside this one may hold
        // /dev/null at the same number for a moment (a child's stdin while
        // it spawns), which hides it from `spare_fd`.
        let deadline = Instant::now() + STEP_TIMEOUT;
        let spare = loop {
            match spare_fd(probe.pid()) {
                Some(fd) => break fd,
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                None => panic!("no spare descriptor on /dev/null"),
            }
        };
        let _ = util::stop(&mut probe);

        // A limit that fits everything but the spare: the EMFILE path
        // cannot shed a pending connection, so it must pause the listener
        // (and on poll/select stop watching it) and retry from a timer.
        let mut server = Server::spawn_with_nofile(&["--max-connections", "100000"], spare);
        let pid = server.pid();
        assert!(
            spare_fd(pid).is_none_or(|fd| fd < spare),
            "the spare was opened after all under a limit of {spare}"
        );
        let cpu = util::CpuWatch::start(pid);
        let mut pending = TcpStream::connect(server.addr).expect("connect");
        pending.write_all(b"ping").expect("send");
        thread::sleep(Duration::from_secs(1));
        let elapsed = cpu.assert_under_half_a_core("with a pending connection it cannot accept");
        // Never accepted, so never echoed.
        pending
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let mut buf = [0u8; 8];
        match pending.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("a connection the server could not accept got {other:?}"),
        }

        let (status, log) = util::stop(&mut server);
        assert!(status.success(), "exit status {status}; log:\n{log}");
        let stats = util::counters(&log, "final stats:");
        // One failed accept per retry, every ACCEPT_RETRY_DELAY (100 ms):
        // a few over the second, not one per loop tick.
        let errors = util::get(&stats, "accept_errors");
        let at_most = elapsed.as_millis() as u64 / 100 + 5;
        assert!(
            (3..=at_most).contains(&errors),
            "{errors} failed accepts in {elapsed:?} (retries expected every 100 ms)"
        );
    }

    fn low_descriptor_limit_with_default_max_connections_degrades_and_recovers() {
        // No --max-connections: the default comes from the descriptor limit.
        // Whichever path turns clients away (the connection limit or EMFILE),
        // the server keeps serving what it admitted and recovers.
        let mut server = Server::spawn_with_nofile(&[], 32);
        let mut served = Vec::new();
        let mut turned_away = None;
        for _ in 0..48 {
            match try_new_connection(server.addr) {
                Fate::Served(s) => served.push(s),
                Fate::Closed(got) => {
                    turned_away = Some(got);
                    break;
                }
            }
        }
        let got = turned_away.expect("48 connections under a descriptor limit of 32");
        assert!(
            got.is_empty() || got == b"ERR too many connections\n",
            "unexpected reply: {:?}",
            String::from_utf8_lossy(&got)
        );
        for s in served.iter_mut() {
            assert_echo(s, b"still");
        }
        served.clear();
        let deadline = Instant::now() + STEP_TIMEOUT;
        while !matches!(try_new_connection(server.addr), Fate::Served(_)) {
            assert!(Instant::now() < deadline, "server did not recover");
            thread::sleep(Duration::from_millis(20));
        }

        let (status, log) = util::stop(&mut server);
        assert!(status.success(), "exit status {status}; log:\n{log}");
        let stats = util::counters(&log, "final stats:");
        assert!(
            util::get(&stats, "rejected") + util::get(&stats, "accept_errors") >= 1,
            "no counter shows the turned-away connection: {stats:?}"
        );
    }

    // --- --idle-timeout ---------------------------------------------------------

    fn idle_timeout_closes_idle_connection_but_not_active_one() {
        let server = InProcess::start(Config {
            idle_timeout: Some(Duration::from_millis(1500)),
            ..inprocess::config()
        });
        let mut idle = connect(server.addr);
        assert_echo(&mut idle, b"then silence");

        // The active client talks every 100 ms, well below the timeout.
        let mut active = connect(server.addr);
        let stop = Arc::new(AtomicBool::new(false));
        let talker = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut i = 0u8;
                while !stop.load(Ordering::Relaxed) {
                    assert_echo(&mut active, &[i, 0, i]);
                    i = i.wrapping_add(1);
                    thread::sleep(Duration::from_millis(100));
                }
                active
            })
        };

        // The idle one is closed by the server: EOF, nothing more.
        assert_eq!(read_to_eof(&mut idle), b"");
        // Keep talking for two more timeout periods.
        thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let mut active = talker.join().expect("active client was cut off");
        assert_echo(&mut active, b"still open");

        drop((idle, active));
        let stats = server.stop().stats;
        assert_eq!(stats.timed_out, 1, "{stats:?}");
    }

    fn without_idle_timeout_silent_connection_stays_open() {
        let server = InProcess::start(inprocess::config());
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"x");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 1];
        match s.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("silent connection ended without --idle-timeout: {other:?}"),
        }
        assert_echo(&mut s, b"y");
    }

    // --- Descriptor leaks -------------------------------------------------------

    fn twenty_thousand_connect_close_cycles_leak_no_descriptors() {
        const THREADS: u8 = 4;
        const PER_THREAD: usize = 5_000;
        let mut server = Server::spawn(&["--stats-interval", "0.2"]);
        let pid = server.pid();
        let addr = server.addr;
        let fds_before = util::fd_count(pid);

        // Each thread uses its own source address so TIME_WAIT entries are
        // spread out; every other connection ends with a reset instead.
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                thread::spawn(move || {
                    let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + t));
                    for i in 0..PER_THREAD {
                        let mut s = util::connect_from(src, addr);
                        assert_echo(&mut s, &[t, (i % 251) as u8]);
                        if i % 2 == 0 {
                            util::set_linger_zero(&s);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }

        let total = THREADS as u64 * PER_THREAD as u64;
        let stats = util::wait_stats(&server, "all connections closed", |s| {
            util::get(s, "closed") == total && util::get(s, "active") == 0
        });
        assert_eq!(util::get(&stats, "accepted"), total, "{stats:?}");
        let deadline = Instant::now() + STEP_TIMEOUT;
        while util::fd_count(pid) != fds_before && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(util::fd_count(pid), fds_before, "descriptors leaked");

        // And it still works.
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"after 20k");
        drop(s);
        let (status, _) = util::stop(&mut server);
        assert!(status.success());
    }
}

// --- select's FD_SETSIZE ----------------------------------------------------

/// select(2) cannot watch a descriptor at or above FD_SETSIZE (1024): a
/// connection that gets one is closed at once with the notice of a full
/// server, counted and logged once, and everyone else is still served. (A
/// test of one backend's limit, so not stamped for all three.)
#[test]
fn select_refuses_descriptors_past_fd_setsize_and_keeps_serving() {
    const FD_SETSIZE: usize = 1024;
    // This process holds the ~1,100 client ends.
    echo_bench::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    let mut server = Server::spawn(&["--backend", "select", "--stats-interval", "0.2"]);
    let mut served = Vec::new();
    let mut refused = 0u64;
    while refused < 5 {
        assert!(
            served.len() < FD_SETSIZE,
            "{} connections served on select, past FD_SETSIZE",
            served.len()
        );
        match try_new_connection(server.addr) {
            Fate::Served(s) => served.push(s),
            Fate::Closed(got) => {
                assert_eq!(got, b"ERR too many connections\n");
                refused += 1;
            }
        }
    }
    // The server's own descriptors (stdio, listener, pipes, spare) come
    // first; nearly all the rest of the 1024 serve clients.
    assert!(
        served.len() > FD_SETSIZE - 32,
        "only {} served before the limit",
        served.len()
    );
    for s in served.iter_mut().step_by(97) {
        assert_echo(s, b"still served");
    }
    // Free some descriptors below the limit: new clients get them.
    served.truncate(served.len() - 10);
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match try_new_connection(server.addr) {
            Fate::Served(s) => {
                served.push(s);
                break;
            }
            Fate::Closed(_) => refused += 1,
        }
        assert!(Instant::now() < deadline, "freed descriptors never reused");
        thread::sleep(Duration::from_millis(20));
    }
    drop(served);
    let (status, log) = util::stop(&mut server);
    assert!(status.success(), "exit status {status}");
    let stats = util::counters(&log, "final stats:");
    assert_eq!(util::get(&stats, "unwatchable"), refused, "{stats:?}");
    assert_eq!(
        log.matches("FD_SETSIZE").count(),
        1,
        "logged once, not per connection"
    );
}

/// The highest descriptor of `pid` open on /dev/null that it did not
/// inherit from this process (stdin, or whatever the test runner's parent
/// left open): the server's spare descriptor.
fn spare_fd(pid: u32) -> Option<u64> {
    let on_dev_null = |owner: &str, fd: u64| {
        std::fs::read_link(format!("/proc/{owner}/fd/{fd}"))
            .is_ok_and(|target| target == std::path::Path::new("/dev/null"))
    };
    let owner = pid.to_string();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list /proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&fd| fd > 2 && on_dev_null(&owner, fd) && !on_dev_null("self", fd))
        .max()
}
