//! The command line made easy: numbers with units, `--procs auto`, a
//! descriptor limit that names the `--procs` that would work, and the
//! warning for a window shorter than one round over all connections.

mod bench_support;

use bench_support::{Behaviour, Run, assert_clean, bench, dead_addr, tcp_server, wait_run};
use std::process::{Command, Stdio};

/// Runs `echo-bench` with `args` under a descriptor limit of `limit`
/// (soft and hard), as on a machine whose hard limit is that.
fn bench_with_nofile(limit: u64, args: &[&str]) -> Run {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_echo-bench"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    wait_run(child, args)
}

#[test]
fn counts_and_sizes_take_units() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&["-c", "4", "-n", "1k", "-s", "1KiB", "--json", &addr]);
    let v = assert_clean(&run, 4);
    assert_eq!(v["messages"], 1000);
    assert_eq!(v["size"], 1024);
}

#[test]
fn times_take_units() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&[
        "-c",
        "2",
        "-t",
        "300ms",
        "--timeout",
        "10s",
        "--json",
        &addr,
    ]);
    let v = assert_clean(&run, 2);
    assert!(v["duration_s"].as_f64().unwrap() > 0.0, "{v:#}");
    let run = bench(&["-t", "3 fortnights", &addr]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("fortnights"), "{}", run.stderr);
}

#[test]
fn too_few_descriptors_name_the_procs_that_would_work() {
    // 936 connections per process under a limit of 1,000 (64 kept back):
    // 5,000 connections need 6 processes.
    let addr = dead_addr().to_string();
    for args in [
        &["-c", "5k", "-t", "1", &addr][..],
        &["-c", "5k", "--procs", "2", "-t", "1", &addr][..],
    ] {
        let run = bench_with_nofile(1000, args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("--procs 6 "),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    }
}

#[test]
fn procs_auto_takes_as_few_processes_as_the_limit_allows() {
    // 236 connections per process under a limit of 300: 500 need 3.
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench_with_nofile(
        300,
        &["-c", "500", "--procs", "auto", "-n", "2k", "--json", &addr],
    );
    let v = assert_clean(&run, 500);
    assert_eq!(v["procs"].as_array().map(Vec::len), Some(3), "{v:#}");
    assert_eq!(v["messages"], 2000);
    // Under no limit to speak of, one process does it all.
    let run = bench(&["-c", "10", "--procs", "auto", "-n", "100", "--json", &addr]);
    let v = assert_clean(&run, 10);
    assert!(v["procs"].is_null(), "{v:#}");
}

#[test]
fn a_window_shorter_than_one_round_is_warned_about() {
    // Every connection's first measured message (bytes 64..128, after the
    // proving message 0..64) is held 3 s: a 200 ms window measures none.
    let srv = tcp_server(Behaviour::StallAt(64, std::time::Duration::from_secs(3)));
    let addr = srv.addr.to_string();
    let run = bench(&["-c", "4", "-t", "200ms", "--json", &addr]);
    let v = assert_clean(&run, 4);
    let warnings = v["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{v:#}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("shorter than one round over all 4"),
        "{v:#}"
    );
    let share = v["connections"]["open_share"].as_f64().expect("open_share");
    assert!((0.0..=1.0).contains(&share), "{v:#}");
    // The table says it too.
    let run = bench(&["-c", "4", "-t", "200ms", &addr]);
    assert!(run.stdout.contains("warning      the 0."), "{}", run.stdout);
    // A window that holds a round has no warning.
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&["-c", "2", "-n", "100", "--json", &addr]);
    let v = assert_clean(&run, 2);
    assert_eq!(v["warnings"], serde_json::json!([]), "{v:#}");
}
