//! Results compared, merged and gated: two saved runs side by side with
//! the change and where their histograms differ beyond noise, several
//! runs' results made one, and thresholds that fail a run by name.

mod bench_support;

use bench_support::{Behaviour, Run, assert_clean, bench, decode_histogram, tcp_server};
use std::path::PathBuf;
use std::process::Command;

/// A scratch directory of this test process.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("echo-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// `echo-bench` with `args`, no runner needed (no sockets).
fn tool(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_echo-bench"))
        .args(args)
        .output()
        .expect("run echo-bench");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Two saved runs: 2 connections, then 6 with 400 messages each.
fn two_results(d: &std::path::Path) -> (String, String) {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let mut paths = Vec::new();
    for (name, c) in [("a.json", "2"), ("b.json", "6")] {
        let run = bench(&["-c", c, "-n", "400", "--json", &addr]);
        assert_clean(&run, c.parse().unwrap());
        let p = d.join(name);
        std::fs::write(&p, &run.stdout).expect("save");
        paths.push(p.to_str().expect("utf-8").to_string());
    }
    (paths[0].clone(), paths[1].clone())
}

#[test]
fn compare_prints_every_figure_side_by_side() {
    let d = dir("compare");
    let (a, b) = two_results(&d);
    let run = tool(&["compare", &a, &b]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let t = &run.stdout;
    for row in [
        "req/s",
        "messages                        400            400         =",
        "connections                       2              6   +200.0%",
        "latency p50 us",
        "latency p99.99 us",
        "connect p50 us",
    ] {
        assert!(t.contains(row), "no {row:?} in:\n{t}");
    }
    assert!(
        t.contains("settings differ: connections/requested 2 vs 6"),
        "{t}"
    );
    assert!(t.contains("latency"), "{t}");
    // The same file twice differs nowhere.
    let run = tool(&["compare", &a, &a]);
    assert!(
        run.stdout.contains("no percentile differs"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("settings differ"), "{}", run.stdout);
    // A file that is no result is refused.
    let run = tool(&["compare", &a, "/nonexistent.json"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn merge_adds_counts_and_histograms() {
    let d = dir("merge");
    let (a, b) = two_results(&d);
    let run = tool(&["merge", &a, &b]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["messages"], 800);
    assert_eq!(v["connections"]["established"], 8);
    assert_eq!(v["latency_us"]["count"], 800);
    let h = decode_histogram(v["latency_us"]["histogram"].as_str().expect("histogram"));
    assert_eq!(h.len(), 800);
    assert_eq!(
        decode_histogram(v["connect_us"]["histogram"].as_str().unwrap()).len(),
        8
    );
    assert_eq!(v["merged_from"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["passed"], true);
    assert_eq!(v["errors"]["mismatch"], 0, "errors by kind: {v:#}");
    // The merge of one result with itself is what compare reads, too.
    let m = d.join("m.json");
    std::fs::write(&m, &run.stdout).expect("save");
    let run = tool(&["compare", &a, m.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_broken_threshold_fails_the_run_by_name() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&[
        "-c",
        "2",
        "-n",
        "200",
        "--min-rps",
        "1000m",
        "--json",
        &addr,
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["errors_total"], 0);
    let broken = v["thresholds_broken"]
        .as_array()
        .expect("thresholds_broken");
    assert_eq!(broken.len(), 1, "{v:#}");
    assert!(
        broken[0]
            .as_str()
            .unwrap()
            .starts_with("--min-rps 1000000000 broken"),
        "{v:#}"
    );
    let run = bench(&["-c", "2", "-n", "200", "--max-p99", "1us", &addr]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("threshold    --max-p99 1.0 us broken: p99 was"),
        "{}",
        run.stdout
    );
    // Thresholds the run meets pass it.
    let run = bench(&[
        "-c",
        "2",
        "-n",
        "200",
        "--max-latency",
        "60s",
        "--min-rps",
        "1",
        "--json",
        &addr,
    ]);
    let v = assert_clean(&run, 2);
    assert_eq!(v["thresholds_broken"], serde_json::json!([]));
}
