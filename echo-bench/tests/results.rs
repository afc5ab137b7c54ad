//! Results that can be kept: percentiles of the user's choice, connect
//! and first-echo histograms, the whole histogram in `--json` and in an
//! HdrHistogram interval log (read back here with the hdrhistogram
//! crate's own log reader), and the run's circumstances in every JSON
//! result, a failed one too.

mod bench_support;

use bench_support::{
    Behaviour, assert_clean, bench, dead_addr, decode_histogram, report_and_intervals, tcp_server,
};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde_json::Value;

#[test]
fn percentiles_are_the_ones_asked_for() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&[
        "-c",
        "2",
        "-n",
        "500",
        "--percentiles",
        "50,99.99",
        "--json",
        &addr,
    ]);
    let v = assert_clean(&run, 2);
    let chosen = v["latency_us"]["percentiles"]
        .as_object()
        .expect("percentiles");
    let names: Vec<&str> = chosen.keys().map(String::as_str).collect();
    assert_eq!(names, ["50", "99.99"], "{v:#}");
    let run = bench(&["-c", "2", "-n", "500", "--percentiles", "75,99.999", &addr]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains(" p75 "), "{}", run.stdout);
    assert!(run.stdout.contains(" p99.999 "), "{}", run.stdout);
    assert!(!run.stdout.contains(" p90 "), "{}", run.stdout);
    for bad in ["0", "101", "fifty"] {
        let run = bench(&["--percentiles", bad, &addr]);
        assert_eq!(run.code, Some(2), "{bad}: {}", run.stderr);
    }
}

#[test]
fn json_carries_the_histograms_and_the_runs_circumstances() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let args = ["-c", "3", "-n", "600", "--json", addr.as_str()];
    let run = bench(&args);
    let v = assert_clean(&run, 3);
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["tool"], "echo-bench");
    assert_eq!(v["tool_version"], env!("CARGO_PKG_VERSION"));
    let command: Vec<&str> = v["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(&command[1..], &args[..], "{v:#}");
    assert!(v["cores"].as_u64().unwrap() >= 1);
    let started = v["started_at"].as_str().expect("started_at");
    assert_eq!(started.len(), "2026-12-07T13:29:04.123Z".len(), "{started}");
    assert!(started.ends_with('Z') && started.as_bytes()[10] == b'T');
    let latency = decode_histogram(v["latency_us"]["histogram"].as_str().expect("histogram"));
    assert_eq!(latency.len(), v["latency_us"]["count"].as_u64().unwrap());
    assert_eq!(latency.len(), 600);
    // Connect and first-echo times: one each per established connection.
    for key in ["connect_us", "first_echo_us"] {
        assert_eq!(v[key]["count"], 3, "{key}: {v:#}");
        assert_eq!(
            decode_histogram(v[key]["histogram"].as_str().unwrap()).len(),
            3
        );
    }
    assert!(
        v["first_echo_us"]["min"].as_f64() >= v["connect_us"]["min"].as_f64(),
        "{v:#}"
    );
}

#[test]
fn a_run_that_cannot_happen_still_prints_its_json() {
    let addr = dead_addr().to_string();
    let run = bench(&["-c", "2", "--json", &addr]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["passed"], false);
    assert_eq!(v["schema_version"], 1);
    assert!(
        v["error"].as_str().unwrap().contains("cannot reach"),
        "{v:#}"
    );
    // Bad flags too.
    for args in [
        &["-c", "lots", "--json"][..],
        &["--size", "0", "--json"][..],
    ] {
        let run = bench(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        let v = run.json();
        assert_eq!(v["passed"], false, "{v:#}");
        assert!(v["error"].is_string(), "{v:#}");
    }
}

#[test]
fn the_hdr_log_opens_in_hdrhistograms_log_reader() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let dir = std::env::temp_dir().join(format!("echo-bench-hdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("run.hlog");
    let p = path.to_str().expect("utf-8 path");
    let run = bench(&["-c", "4", "-n", "800", "--hdr-log", p, "--json", &addr]);
    let v = assert_clean(&run, 4);
    let log = std::fs::read(&path).expect("the log");
    let mut seen = Vec::new();
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(i) = entry.expect("a well-formed log") {
            let tag = i.tag().expect("a tag").as_str().to_string();
            let h = decode_histogram(i.encoded_histogram());
            seen.push((tag, h.len()));
        }
    }
    assert_eq!(
        seen,
        [
            ("connect".to_string(), 4),
            ("first_echo".to_string(), 4),
            ("latency".to_string(), 800),
        ],
        "{v:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // A path that cannot be written is refused before the run.
    let run = bench(&["--hdr-log", "/nonexistent-dir/x.hlog", &addr]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--hdr-log"), "{}", run.stderr);
}

#[test]
fn intervals_add_up_to_the_run() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&[
        "-c",
        "4",
        "-T",
        "2",
        "-n",
        "3000",
        "--interval",
        "20ms",
        "--json",
        &addr,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let (report, intervals) = report_and_intervals(&run.stdout);
    assert!(!intervals.is_empty(), "{}", run.stdout);
    let mut sum = 0;
    for (i, v) in intervals.iter().enumerate() {
        assert_eq!(v["interval"], i as u64, "in order: {v}");
        assert_eq!(v["messages"], v["latency_us"]["count"], "{v}");
        sum += v["messages"].as_u64().unwrap();
    }
    assert_eq!(sum, 3000);
    assert_eq!(report["messages"], 3000);
    // As text, a line each before the table.
    let run = bench(&["-c", "2", "-n", "500", "--interval", "20ms", &addr]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.starts_with("interval   0 "), "{}", run.stdout);
}

#[test]
fn intervals_of_several_processes_add_up_to_the_run() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let run = bench(&[
        "-c",
        "6",
        "--procs",
        "3",
        "-n",
        "3000",
        "--interval",
        "20ms",
        "--json",
        &addr,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let (report, intervals) = report_and_intervals(&run.stdout);
    assert!(!intervals.is_empty(), "{}", run.stdout);
    let sum: u64 = intervals
        .iter()
        .map(|v| v["messages"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 3000);
    assert_eq!(report["messages"], 3000);
    assert_eq!(report["procs"].as_array().map(Vec::len), Some(3));
}

#[test]
fn intervals_are_reported_while_the_run_goes_on() {
    use std::io::BufRead;
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let args = [
        "-c",
        "2",
        "-t",
        "50s",
        "--interval",
        "20ms",
        "--json",
        addr.as_str(),
    ];
    let mut child = bench_support::spawn_bench(&args);
    let stdout = child.stdout.take().expect("stdout");
    let mut out = std::io::BufReader::new(stdout);
    let mut first = String::new();
    out.read_line(&mut first).expect("read");
    let v: Value = serde_json::from_str(&first).expect("an interval");
    assert_eq!(v["interval"], 0, "{first}");
    bench_support::signal(child.id(), "INT");
    // Read on to the end, or the client's next line would meet a closed
    // pipe.
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    let run = bench_support::wait_run(child, &args);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // The first interval came while the run went on: Ctrl+C, sent after
    // it, ended the 50 s window early.
    let report: Value = serde_json::from_str(rest.lines().last().expect("report")).expect("json");
    assert!(report["duration_s"].as_f64().unwrap() < 50.0, "{report:#}");
    assert_eq!(report["errors_total"], 0);
}

#[test]
fn with_intervals_the_hdr_log_has_one_latency_line_each() {
    let srv = tcp_server(Behaviour::Echo);
    let addr = srv.addr.to_string();
    let dir = std::env::temp_dir().join(format!("echo-bench-hdri-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("run.hlog");
    let p = path.to_str().expect("utf-8 path");
    let run = bench(&[
        "-c",
        "2",
        "-n",
        "2000",
        "--interval",
        "10ms",
        "--hdr-log",
        p,
        "--json",
        &addr,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let printed: Vec<u64> = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| !v["interval"].is_null())
        .map(|v| v["messages"].as_u64().unwrap())
        .collect();
    let log = std::fs::read(&path).expect("the log");
    let logged: Vec<u64> = IntervalLogIterator::new(&log)
        .filter_map(|e| match e.expect("a well-formed log") {
            LogEntry::Interval(i) if i.tag().map(|t| t.as_str()) == Some("latency") => {
                Some(decode_histogram(i.encoded_histogram()).len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(logged, printed, "one latency line per interval printed");
    assert_eq!(logged.iter().sum::<u64>(), 2000);
    let _ = std::fs::remove_dir_all(&dir);
}
