//! `echo-bench --procs N` against stand-in servers: the run is split over
//! N client processes, and their parts add up to the one report.

mod bench_support;

use bench_support::{
    Behaviour, alive, assert_clean, bench, children_of, signal, spawn_bench, tcp_server,
    tcp_server_by_order, udp_echo, wait_for, wait_run,
};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The `procs` array of a `--json` report.
#[track_caller]
fn parts(v: &Value) -> &Vec<Value> {
    v["procs"]
        .as_array()
        .unwrap_or_else(|| panic!("no procs array: {v:#}"))
}

/// The sum of one number over the parts.
fn sum(parts: &[Value], f: impl Fn(&Value) -> &Value) -> u64 {
    parts.iter().map(|p| f(p).as_u64().unwrap_or(0)).sum()
}

#[test]
fn two_processes_split_the_run_and_their_parts_add_up() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&["-c", "5", "--procs", "2", "-n", "2001", "--json", &addr]);
    let v = assert_clean(&run, 5);
    let parts = parts(&v);
    assert_eq!(parts.len(), 2, "{v:#}");
    // Connections and -n are split as evenly as possible, the first
    // process taking the remainder; both did their share of the work.
    let requested: Vec<u64> = parts
        .iter()
        .map(|p| p["connections"]["requested"].as_u64().unwrap())
        .collect();
    assert_eq!(requested, [3, 2]);
    let messages: Vec<u64> = parts
        .iter()
        .map(|p| p["messages"].as_u64().unwrap())
        .collect();
    assert_eq!(messages, [1001, 1000]);
    // The totals are the sums of the parts.
    assert_eq!(v["messages"], 2001);
    assert_eq!(sum(parts, |p| &p["connections"]["established"]), 5, "{v:#}");
    assert_eq!(
        sum(parts, |p| &p["latency_us"]["count"]),
        v["latency_us"]["count"].as_u64().unwrap()
    );
    assert_eq!(sum(parts, |p| &p["errors_total"]), 0);
    // Two separate processes, neither of them this test's runner.
    let pids: HashSet<u64> = parts.iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{v:#}");
    assert!(!pids.contains(&u64::from(std::process::id())));
    // Each with its own loopback source address.
    let peers = srv.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 5);
    let sources: HashSet<String> = peers.iter().map(|p| p.ip().to_string()).collect();
    let want: HashSet<String> = ["127.0.0.1", "127.0.0.2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(sources, want);
    assert_eq!(v["source_ips"], 2);
}

#[test]
fn the_table_names_the_processes_and_shows_the_totals() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&["-c", "4", "--procs", "2", "-n", "400", &addr]);
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert!(
        run.stdout.contains("1 thread(s) x 2 processes"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("requested 4  established 4"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("messages     400 in"), "{}", run.stdout);
}

#[test]
fn a_mismatch_in_one_process_fails_the_whole_run() {
    // Only the third connection accepted is corrupted (in its sixth
    // 64-byte message, after it was proven): it belongs to one process.
    let srv = tcp_server_by_order(|n| {
        if n == 2 {
            Behaviour::FlipByteAt(5 * 64 + 7)
        } else {
            Behaviour::Echo
        }
    });
    let addr = srv.addr.to_string();
    let args = ["-c", "4", "--procs", "2", "-n", "2000", "--json", &addr];
    let run = bench(&args);
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    let v = run.json();
    assert_eq!(v["errors"]["mismatch"], 1, "{v:#}");
    assert_eq!(v["passed"], false);
    let mismatches: Vec<u64> = parts(&v)
        .iter()
        .map(|p| p["errors"]["mismatch"].as_u64().unwrap())
        .collect();
    assert_eq!(mismatches.iter().sum::<u64>(), 1, "{v:#}");
    assert!(
        mismatches.contains(&0),
        "one process saw no mismatch: {v:#}"
    );
}

#[test]
fn procs_must_be_a_number_of_at_least_one() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    for (value, why) in [("0", "at least 1"), ("abc", "not a whole number")] {
        let run = bench(&["-c", "4", "--procs", value, "-n", "10", &addr]);
        assert_eq!(run.code, Some(2), "--procs {value}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("--procs"), "{}", run.stderr);
        assert!(run.stderr.contains(why), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    assert!(srv.peers.lock().unwrap().is_empty());
}

#[test]
fn more_processes_than_connections_are_refused() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&["-c", "2", "--procs", "3", "-n", "10", &addr]);
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("--procs: 3 processes for 2 connections"),
        "{}",
        run.stderr
    );
    assert!(srv.peers.lock().unwrap().is_empty());
}

#[test]
fn every_process_sits_idle_before_the_window() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let started = std::time::Instant::now();
    let run = bench(&[
        "-c", "4", "--procs", "2", "--idle", "1", "-n", "2", "--json", &addr,
    ]);
    let took = started.elapsed();
    let v = assert_clean(&run, 4);
    assert_eq!(v["messages"], 2, "{v:#}");
    // One proving message per connection, then one echo per process.
    assert_eq!(srv.received.load(Ordering::Relaxed), (4 + 2) * 64);
    for p in parts(&v) {
        assert_eq!(p["connections"]["idle_s"], 1.0, "{v:#}");
    }
    assert!(took >= Duration::from_secs(1), "the run took {took:?}");
}

#[test]
fn udp_runs_over_processes_too() {
    let addr = udp_echo().to_string();
    let run = bench(&[
        "--udp", "-c", "4", "--procs", "2", "-n", "400", "--json", &addr,
    ]);
    let v = assert_clean(&run, 4);
    assert_eq!(v["transport"], "udp");
    assert_eq!(v["messages"], 400);
    let messages: Vec<u64> = parts(&v)
        .iter()
        .map(|p| p["messages"].as_u64().unwrap())
        .collect();
    assert_eq!(messages, [200, 200]);
}

#[test]
fn a_first_ctrl_c_ends_every_process_with_a_report() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let args = ["-c", "4", "--procs", "2", "-t", "300", "--json", &addr];
    let parent = spawn_bench(&args);
    let pid = parent.id();
    // Both children are running and every connection is echoing.
    wait_for("two client processes", || children_of(pid).len() == 2);
    let children = children_of(pid);
    // Well past the 4 proving messages: the window is open.
    wait_for("traffic", || {
        srv.received.load(Ordering::Relaxed) > 4 * 64 * 20
    });
    // The parent alone gets it (not the terminal's whole group).
    signal(pid, "INT");
    let run = wait_run(parent, &args);
    let v = assert_clean(&run, 4);
    let pids: HashSet<u64> = parts(&v)
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    let want: HashSet<u64> = children.iter().map(|&p| u64::from(p)).collect();
    assert_eq!(pids, want);
    assert!(v["messages"].as_u64().unwrap() > 0);
    for c in children {
        assert!(!alive(c), "client process {c} outlived its parent");
    }
}

#[test]
fn a_second_ctrl_c_kills_every_process() {
    // Every echo after the first stalls for far longer than the test:
    // the children are still draining when the second Ctrl+C comes.
    let srv = tcp_server(Behaviour::StallAt(64, Duration::from_secs(600)));
    let addr = srv.addr.to_string();
    let args = [
        "-c",
        "2",
        "--procs",
        "2",
        "-t",
        "300",
        "--timeout",
        "300",
        &addr,
    ];
    let parent = spawn_bench(&args);
    let pid = parent.id();
    wait_for("two client processes", || children_of(pid).len() == 2);
    let children = children_of(pid);
    wait_for("2 stalled connections", || {
        srv.received.load(Ordering::Relaxed) >= 2 * 128
    });
    // Ctrl+C until it is gone: two signals sent close together may
    // arrive as one, and only a second one ends a drain of 300 s.
    let mut parent = parent;
    while parent.try_wait().expect("try_wait").is_none() {
        signal(pid, "INT");
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = wait_run(parent, &args);
    assert_eq!(run.code, Some(130), "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("killed"), "{}", run.stderr);
    for c in children {
        assert!(!alive(c), "client process {c} outlived its parent");
    }
}

#[test]
fn a_process_that_dies_before_reporting_fails_the_run_by_name() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let args = ["-c", "4", "--procs", "2", "-t", "300", "--json", &addr];
    let parent = spawn_bench(&args);
    let pid = parent.id();
    wait_for("two client processes", || children_of(pid).len() == 2);
    wait_for("4 connections", || srv.peers.lock().unwrap().len() == 4);
    let children = children_of(pid);
    let victim = children[0];
    signal(victim, "KILL");
    let run = wait_run(parent, &args);
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    // No report: --json prints the error alone, with no counts.
    let v = run.json();
    assert_eq!(v["passed"], false, "{v:#}");
    assert!(v["messages"].is_null(), "no report: {v:#}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("was killed by signal 9"),
        "{v:#}"
    );
    assert!(
        run.stderr
            .contains(&format!("(pid {victim}) was killed by signal 9")),
        "{}",
        run.stderr
    );
    for c in children {
        assert!(!alive(c), "client process {c} outlived its parent");
    }
}
