//! The stress client against the real `echo-reactor`, started as a child on
//! `127.0.0.1:0`: the runs the issue asks for complete with zero errors and
//! exact counts. (UDP runs against the reactor are in `tests/udp.rs`, and
//! against a stand-in in `echo-bench/tests/bench_standin.rs`.)
//!
//! The client runs in this process, through the `echo_bench` library: its
//! flags go through the binary's own parser ([`Args`]), the run through
//! the engine the binary calls, and the report is read as `--json` prints
//! it. What the binary adds (the progress line, printing, the exit code,
//! which is 0 exactly when [`Report::passed`]) is tested against stand-ins
//! in `echo-bench/tests/`, where the binary is built.

mod util;

use clap::Parser;
use echo_bench::cli::Args;
use echo_bench::{Live, Report};
use serde_json::Value;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;
use util::Server;

/// The longest one run of a test may take before the test stops it and
/// fails. Generous: the machine is shared.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the stress client with `args` (as on its command line) and returns
/// its report; a run that could not happen at all (the binary's exit 2)
/// fails the test, and so does one that outlives [`RUN_TIMEOUT`].
#[track_caller]
fn bench(args: &[&str]) -> Report {
    let argv = std::iter::once("echo-bench").chain(args.iter().copied());
    let cfg = Args::try_parse_from(argv)
        .map_err(|e| e.to_string())
        .and_then(|a| a.config())
        .unwrap_or_else(|e| panic!("echo-bench {args:?}: {e}"));
    let live = Arc::new(Live::new());
    let (tx, rx) = mpsc::channel();
    let engine_live = Arc::clone(&live);
    thread::spawn(move || {
        // The receiver is gone only if the test already failed.
        let _ = tx.send(echo_bench::run(&cfg, engine_live));
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(result) => result.unwrap_or_else(|e| panic!("echo-bench {args:?}: {e}")),
        Err(_) => {
            live.request_stop();
            panic!("echo-bench {args:?} ran longer than {RUN_TIMEOUT:?}");
        }
    }
}

/// Asserts a clean run (the binary would exit 0: passed, no errors, every
/// connection established) and returns the report as `--json` prints it.
#[track_caller]
fn assert_clean(report: &Report, connections: u64) -> Value {
    let v = report.to_json();
    assert!(report.passed(), "{v:#}");
    assert_eq!(report.total_errors(), 0, "{v:#}");
    assert_eq!(report.connections_established, connections, "{v:#}");
    assert_eq!(report.connections_failed, 0, "{v:#}");
    v
}

on_every_backend! {
    fn ping_pong_against_the_reactor() {
        let srv = Server::spawn(&[]);
        let addr = srv.addr.to_string();
        let v = assert_clean(&bench(&["-c", "20", "-n", "20000", "--json", &addr]), 20);
        assert_eq!(v["messages"], 20000);
        assert_eq!(v["latency_us"]["count"], 20000);
    }

    fn pipelined_large_messages_against_the_reactor() {
        // 8 x 16 KiB in flight per connection: past the reactor's 64 KiB high
        // watermark together, so its backpressure path is crossed too.
        let srv = Server::spawn(&[]);
        let addr = srv.addr.to_string();
        let run = bench(&[
            "-c", "4", "-d", "8", "-s", "16384", "-n", "4000", "--json", &addr,
        ]);
        let v = assert_clean(&run, 4);
        assert_eq!(v["messages"], 4000);
    }

    fn open_loop_against_the_reactor() {
        let srv = Server::spawn(&[]);
        let addr = srv.addr.to_string();
        let run = bench(&["-c", "10", "-r", "5000", "-n", "2500", "--json", &addr]);
        let v = assert_clean(&run, 10);
        assert_eq!(v["messages"], 2500);
        assert_eq!(v["schedule"]["lag_us"]["count"], 2500);
    }

    fn many_connections_over_two_threads_against_the_reactor() {
        let srv = Server::spawn(&[]);
        let addr = srv.addr.to_string();
        let run = bench(&[
            "-T", "2", "-c", "1000", "-d", "2", "-n", "20000", "--json", &addr,
        ]);
        let v = assert_clean(&run, 1000);
        assert_eq!(v["messages"], 20000);
    }

    fn a_full_server_shows_as_failed_connections_not_a_hang() {
        // The reactor rejects connections past --max-connections with an
        // error line and a close; those never echo their first message, so
        // they are counted as failed connections, of kind "rejected" (not as
        // corrupted echoes), and the run still completes.
        let srv = Server::spawn(&["--max-connections", "5"]);
        let addr = srv.addr.to_string();
        let run = bench(&["-c", "8", "-n", "100", "--max-errors", "3", "--json", &addr]);
        let v = run.to_json();
        assert!(run.passed(), "{v:#}");
        assert_eq!(v["connections"]["established"], 5, "{v:#}");
        assert_eq!(v["connections"]["failed"], 3, "{v:#}");
        assert_eq!(v["errors"]["rejected"], 3, "{v:#}");
        assert_eq!(v["errors_total"], 3, "{v:#}");
    }
}

// ----- the reactor's line and frame modes ----------------------------------

#[test]
fn line_mode_transforms_and_banner_against_the_reactor() {
    for (server, client) in [
        (
            &["--mode", "line", "--line-transform", "upper"][..],
            &["--mode", "line", "--line-transform", "upper"][..],
        ),
        (
            &[
                "--mode",
                "line",
                "--line-transform",
                "hello",
                "--banner",
                "welcome",
            ][..],
            &["--mode", "line", "--line-transform", "hello", "--banner"][..],
        ),
    ] {
        let srv = Server::spawn(server);
        let addr = srv.addr.to_string();
        let mut args = client.to_vec();
        args.extend(["-c", "50", "-d", "4", "-n", "20000", "--json", &addr]);
        let v = assert_clean(&bench(&args), 50);
        assert_eq!(v["messages"], 20000, "{server:?}");
        // Every line numbered by its connection and sequence number.
        let mut args = client.to_vec();
        args.extend([
            "-c",
            "5",
            "-n",
            "500",
            "--template",
            "c{conn} s{seq}",
            &addr,
        ]);
        assert_clean(&bench(&args), 5);
    }
}

#[test]
fn frame_mode_against_the_reactor() {
    let srv = Server::spawn(&["--mode", "frame"]);
    let addr = srv.addr.to_string();
    let run = bench(&[
        "--mode", "frame", "-c", "50", "-d", "4", "-s", "4KiB", "-n", "20000", "--json", &addr,
    ]);
    let v = assert_clean(&run, 50);
    assert_eq!(v["messages"], 20000);
}
