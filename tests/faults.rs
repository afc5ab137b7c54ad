//! Faults on demand (`src/faults.rs`): `--delay` (with `--delay-jitter`)
//! on the loop's timers, `--close-after` and `--reset-after`, in-process
//! (`util::inprocess`). Timing is asserted as a lower bound only (an echo
//! never arrives before its delay is due), measured with a monotonic
//! clock; no upper bound (the machine is shared).

mod util;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use echo_reactor::{Config, Line, Mode, Server, Transform};
use util::inprocess::{self, InProcess};
use util::{connect, pattern, read_n, read_to_eof};

fn faulty(f: impl FnOnce(&mut Config)) -> InProcess {
    let mut config = inprocess::config();
    f(&mut config);
    InProcess::start(config)
}

on_every_backend! {
    fn a_delayed_echo_arrives_intact_and_never_before_its_delay() {
        let delay = Duration::from_millis(200);
        let server = faulty(|c| c.delay = Some(delay));
        let mut s = connect(server.addr);
        for i in 0..3u64 {
            let msg = pattern(i, 100);
            let sent = Instant::now();
            s.write_all(&msg).expect("write");
            assert_eq!(read_n(&mut s, msg.len()), msg);
            let waited = sent.elapsed();
            assert!(waited >= delay, "echo {i} after {waited:?}, before its delay");
        }
        let stats = server.wait_stats("counted", |s| s.faults_delayed >= 3);
        assert_eq!(stats.faults_closed + stats.faults_reset, 0);
    }

    fn close_after_echoes_exactly_that_many_bytes_then_fin() {
        let server = faulty(|c| c.close_after = Some(10));
        let mut s = connect(server.addr);
        let msg = pattern(7, 25);
        s.write_all(&msg).expect("write");
        assert_eq!(read_to_eof(&mut s), &msg[..10]);
        server.wait_stats("counted", |s| s.faults_closed == 1 && s.closed == 1);
    }

    fn reset_after_echoes_that_many_bytes_then_rst() {
        let server = faulty(|c| c.reset_after = Some(10));
        let mut s = connect(server.addr);
        let msg = pattern(8, 25);
        s.write_all(&msg).expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let ending = loop {
            match s.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break Some(e.kind()),
            }
        };
        assert_eq!(ending, Some(ErrorKind::ConnectionReset), "got {got:?}");
        assert!(msg[..10].starts_with(&got), "only the first 10 bytes: {got:?}");
        server.wait_stats("counted", |s| s.faults_reset == 1 && s.closed == 1);
    }
}

#[test]
fn jittered_delays_keep_the_bytes_in_order_and_in_the_budget() {
    let delay = Duration::from_millis(60);
    let server = faulty(|c| {
        c.delay = Some(delay);
        c.delay_jitter = Duration::from_millis(50);
    });
    let mut s = connect(server.addr);
    let data = pattern(3, 200_000);
    let writer = {
        let mut w = s.try_clone().expect("clone");
        let data = data.clone();
        std::thread::spawn(move || {
            for chunk in data.chunks(1000) {
                w.write_all(chunk).expect("write");
            }
        })
    };
    // Held while delayed: in the budget.
    server.wait_stats_ever("delayed bytes held", |s| s.buffered > 0);
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).expect("read");
    writer.join().expect("writer");
    assert!(got == data, "the echo differs from what was sent");
    let stats = server.wait_stats("all given back", |s| s.buffered == 0);
    assert!(stats.faults_delayed > 0);
}

#[test]
fn an_idle_delayed_server_sleeps_until_the_next_echo_is_due() {
    // One read waits 300 ms: the loop wakes for it, not in between.
    let server = faulty(|c| {
        c.delay = Some(Duration::from_millis(300));
        c.stats_interval = None;
    });
    let mut s = connect(server.addr);
    s.write_all(b"x").expect("write");
    assert_eq!(read_n(&mut s, 1), b"x");
    drop(s);
    let report = server.stop();
    // Accept, read, the timer, the close, the stop: a handful of ticks,
    // not one per millisecond.
    assert!(report.stats.ticks < 50, "{} ticks", report.stats.ticks);
}

#[test]
fn fault_flags_need_raw_mode() {
    let config = Config {
        delay: Some(Duration::from_millis(5)),
        mode: Mode::Line(Line::new(Transform::None, None, 100)),
        ..inprocess::config()
    };
    let err = Server::bind(&config).expect_err("line mode with --delay");
    assert!(err.to_string().contains("raw mode only"), "{err}");
}

#[test]
fn the_flags_are_the_binarys() {
    let server = util::Server::spawn(&["--delay", "1", "--close-after", "4"]);
    let mut s = connect(util::listening_addr(&server, "tcp", ""));
    s.write_all(b"abcdef").expect("write");
    assert_eq!(read_to_eof(&mut s), b"abcd");
    let (status, _, stderr) = util::run_to_exit(&["--delay", "x"]);
    assert!(
        !status.success() && stderr.contains("milliseconds"),
        "{stderr}"
    );
}

#[test]
fn a_graceful_shutdown_still_sends_the_echoes_waiting_for_their_delay() {
    let server = faulty(|c| c.delay = Some(Duration::from_millis(300)));
    let mut s = connect(server.addr);
    s.write_all(b"owed").expect("write");
    server.wait_stats("held back", |s| s.faults_delayed == 1);
    server.shutdown_handle().shutdown().expect("shutdown");
    // RFC 862: what was received is echoed before our FIN.
    assert_eq!(read_to_eof(&mut s), b"owed");
}
