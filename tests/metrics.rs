//! `--metrics ADDR` as a black box, on every backend: a scrape is valid
//! exposition format (read back by a real parser, and by `promtool` when
//! it is installed), its counters move as clients act, every bad request
//! gets its status without disturbing echo clients, a stalled head is
//! closed, `/healthz` says 503 while draining; with `--workers`, the
//! master's one scrape covers every worker. And a real Prometheus server
//! scraping a running echo-reactor (`prometheus_scrapes_a_running_server`).
//!
//! The servers run in-process (`util::inprocess`), but where the binary
//! is the point: draining on SIGTERM, `--workers`, and a real Prometheus
//! scraping the program.

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::Config;
use util::inprocess::{self, InProcess, loopback};
use util::{STEP_TIMEOUT, Server, assert_echo, connect, pattern};

/// An echo server with a metrics listener, in-process; its metrics
/// address is `metrics[0]`.
fn with_metrics() -> InProcess {
    InProcess::start(Config {
        metrics: vec![loopback()],
        ..inprocess::config()
    })
}

/// The metrics address a server printed (`listening on http://ADDR (metrics)`).
fn metrics_addr(server: &Server) -> SocketAddr {
    server
        .listening
        .iter()
        .find_map(|line| {
            let l = util::proc::listening(line)?;
            (l.scheme == "http" && l.tag == "(metrics)").then_some(l.addr)
        })
        .unwrap_or_else(|| panic!("no metrics listener in {:?}", server.listening))
}

/// One HTTP response: status, headers (lower-case names), body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Reads one response from a keep-alive connection (by Content-Length),
/// a byte at a time up to the body, so that nothing of the next one is
/// taken.
fn read_response(stream: &mut TcpStream) -> Response {
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("utf-8 head");
    let mut lines = head.lines();
    let line = lines.next().unwrap_or("");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut headers = HashMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').expect("a header");
        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
    }
    let len: usize = headers["content-length"].parse().expect("length");
    let mut body = vec![0; len];
    stream.read_exact(&mut body).expect("body");
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("utf-8"),
    }
}

/// `GET path` on a fresh connection.
fn get(addr: SocketAddr, path: &str) -> Response {
    let mut s = connect(addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    read_response(&mut s)
}

/// A scrape, parsed by `prometheus-parse`: every sample by name and
/// labels (`name{k="v",...}` with labels sorted).
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let response = get(addr, "/metrics");
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response.headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{:?}",
        response.headers
    );
    parse(&response.body)
}

/// Parses exposition text with a real parser, and checks every family
/// has its HELP and TYPE.
fn parse(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
    let mut samples = HashMap::new();
    for sample in &scrape.samples {
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|suffix| sample.metric.strip_suffix(suffix))
            .filter(|family| scrape.docs.contains_key(*family))
            .unwrap_or(&sample.metric);
        assert!(
            scrape.docs.contains_key(family),
            "{} has no HELP",
            sample.metric
        );
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        let value = match &sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        samples.insert(key, value);
    }
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap_or("");
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: no HELP");
    }
    samples
}

/// The sum of every sample of `name` (any labels).
fn sum(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Scrapes until `pred` holds, or fails after [`STEP_TIMEOUT`].
fn scrape_until(
    addr: SocketAddr,
    what: &str,
    pred: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let start = Instant::now();
    loop {
        let samples = scrape(addr);
        if pred(&samples) {
            return samples;
        }
        assert!(start.elapsed() < STEP_TIMEOUT, "never {what}: {samples:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `process_*` series and the build's version, as Prometheus' own
/// clients write them: present, and sensible for a running process.
#[track_caller]
fn assert_process_series(page: &HashMap<String, f64>) {
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(page.get(name).is_some_and(|&v| v > 0.0), "{name}: {page:?}");
    }
    assert!(page["process_cpu_seconds_total"] >= 0.0);
    assert!(page["process_open_fds"] <= page["process_max_fds"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(page["process_start_time_seconds"] <= now + 1.0, "{page:?}");
    let version = format!(
        "echo_reactor_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(page.get(&version), Some(&1.0), "{page:?}");
}

/// `promtool check metrics` on `text`, if promtool is installed (see
/// [`util::have_program`]); true if it ran.
#[track_caller]
fn promtool_check(text: &str, test: &str) -> bool {
    if !util::have_program(
        "promtool",
        &format!("the promtool check in tests/metrics.rs {test}"),
    ) {
        return false;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Sends `request` a byte at a time, then reads until EOF: everything
/// the server answered before closing.
fn send_slowly_then_eof(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = connect(addr);
    for byte in request {
        if s.write_all(&[*byte]).is_err() {
            break; // closed already (a refusal): the answer is waiting
        }
    }
    s.set_read_timeout(Some(STEP_TIMEOUT)).expect("timeout");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// An echo client that ping-pongs until told to stop, checking every
/// byte; returns how many round trips it made.
fn echo_client(addr: SocketAddr, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> usize {
    let mut s = connect(addr);
    let mut rounds = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        assert_echo(&mut s, &pattern(rounds as u64, 64));
        rounds += 1;
    }
    rounds
}

on_every_backend! {
    fn a_scrape_is_valid_exposition_and_counters_move() {
        let server = with_metrics();
        let metrics = server.metrics[0];
        let response = get(metrics, "/metrics");
        let first = parse(&response.body);
        promtool_check(&response.body, "a_scrape_is_valid_exposition_and_counters_move");
        assert_eq!(first["echo_reactor_connections_open"], 0.0);
        assert_eq!(first["echo_reactor_http_connections_open"], 1.0);
        assert_process_series(&first);
        let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(server.addr)).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            assert_echo(c, &pattern(i as u64, 1000));
        }
        // Echo connections open: all open ones but the metrics ones.
        server.wait_stats("3 open", |s| s.active - s.http_active == 3);
        let during = scrape(metrics);
        assert_eq!(during["echo_reactor_connections_open"], 3.0, "{during:?}");
        assert!(during["echo_reactor_received_bytes_total"] >= 3000.0, "{during:?}");
        assert!(during["echo_reactor_sent_bytes_total"] >= 3000.0, "{during:?}");
        assert!(during["echo_reactor_connections_accepted_total"] >= 5.0, "{during:?}");
        assert!(during["echo_reactor_loop_events_per_wait_count"] > 0.0, "{during:?}");
        assert!(during["echo_reactor_loop_wait_seconds_total"] > 0.0, "{during:?}");
        assert!(during["echo_reactor_loop_busy_seconds_total"] > 0.0, "{during:?}");
        assert_eq!(during["echo_reactor_buffered_limit_bytes"], 64.0 * 1024.0 * 1024.0);
        drop(clients);
        server.wait_stats("3 closed", |s| s.closed >= 3 && s.active == s.http_active);
        let after = scrape(metrics);
        assert_eq!(after["echo_reactor_connections_open"], 0.0, "{after:?}");
        let closed = sum(&after, "echo_reactor_connections_closed_total");
        assert!(closed >= 3.0, "{after:?}");
        assert_eq!(after["echo_reactor_connections_closed_total{reason=\"other\"}"], closed);
    }

    fn bad_requests_get_their_status_and_echo_clients_notice_nothing() {
        let server = with_metrics();
        let metrics = server.metrics[0];
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pinger = {
            let (addr, stop) = (server.addr, stop.clone());
            thread::spawn(move || echo_client(addr, stop))
        };
        // Keep-alive answers, a byte at a time, then on one connection.
        let mut huge = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        huge.resize(9000, b'x');
        huge.extend_from_slice(b"\r\n\r\n");
        let cases: &[(&[u8], &str)] = &[
            (b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 404 "),
            (b"DELETE /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 405 "),
            (b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", "HTTP/1.1 200 "),
            (b"GET /metrics HTTP/1.1\r\nBroken header\r\n\r\n", "HTTP/1.1 400 "),
            (b"\x16\x03\x01\x00\xa5\x01\x00\x00", "HTTP/1.1 400 "),
            (&huge, "HTTP/1.1 431 "),
        ];
        for (request, want) in cases {
            let answer = send_slowly_then_eof(metrics, request);
            assert!(answer.starts_with(want), "{want}: got {answer:?}");
            assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        }
        // Pipelined: three requests in one write, three answers in order,
        // the connection kept.
        let mut s = connect(metrics);
        s.write_all(b"GET /healthz HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n")
            .expect("pipelined");
        let statuses: Vec<u16> = (0..3).map(|_| read_response(&mut s).status).collect();
        assert_eq!(statuses, [200, 404, 200]);
        s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").expect("again");
        assert_eq!(read_response(&mut s).status, 200);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let rounds = pinger.join().expect("the echo client saw every byte");
        assert!(rounds > 0);
        let after = scrape(metrics);
        assert!(after["echo_reactor_protocol_errors_total"] >= 3.0, "{after:?}");
        assert!(after["echo_reactor_http_requests_total"] >= 10.0, "{after:?}");
    }

    fn a_stalled_request_head_is_closed_within_seconds() {
        let server = with_metrics();
        let metrics = server.metrics[0];
        let mut s = connect(metrics);
        let start = Instant::now();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: slow").expect("half a head");
        // A byte now and then does not keep it open.
        s.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
        let mut buf = [0u8; 64];
        let closed_after = loop {
            let _ = s.write_all(b"x");
            match s.read(&mut buf) {
                Ok(0) => break start.elapsed(),
                Ok(n) => panic!("answered half a head: {:?}", &buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break start.elapsed(), // reset: closed
            }
            assert!(start.elapsed() < Duration::from_secs(10), "still open after 10 s");
        };
        assert!(closed_after >= Duration::from_secs(2), "closed after {closed_after:?}");
        // Echo is untouched.
        let mut c = connect(server.addr);
        assert_echo(&mut c, b"still here");
    }

    fn a_scrape_during_a_flood_changes_no_echo() {
        let server = with_metrics();
        let metrics = server.metrics[0];
        let floods: Vec<_> = (0..4u64)
            .map(|i| {
                let addr = server.addr;
                thread::spawn(move || {
                    let mut s = connect(addr);
                    let data = pattern(i, 2 << 20);
                    let mut w = s.try_clone().expect("clone");
                    let sent = data.clone();
                    let writer = thread::spawn(move || w.write_all(&sent).expect("flood"));
                    let back = util::read_n(&mut s, data.len());
                    writer.join().expect("writer");
                    assert!(back == data, "flood {i}: the echo differs");
                })
            })
            .collect();
        let mut keep = connect(metrics);
        let mut scrapes = 0;
        while floods.iter().any(|f| !f.is_finished()) {
            keep.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").expect("scrape");
            let r = read_response(&mut keep);
            assert_eq!(r.status, 200);
            parse(&r.body);
            scrapes += 1;
            thread::sleep(Duration::from_millis(10));
        }
        for f in floods {
            f.join().expect("every flood echoed exactly");
        }
        assert!(scrapes > 0);
    }

    fn healthz_says_503_while_draining() {
        let mut server = Server::spawn(&["--metrics", "127.0.0.1:0", "--shutdown-timeout", "3"]);
        let metrics = metrics_addr(&server);
        let mut keep = connect(metrics);
        keep.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").expect("healthz");
        assert_eq!(read_response(&mut keep).status, 200);
        // An echo client that does not read keeps the drain going.
        let mut stuck = connect(server.addr);
        socket2::SockRef::from(&stuck).set_recv_buffer_size(4096).expect("rcvbuf");
        let _ = stuck.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = stuck.write_all(&vec![1u8; 4 << 20]);
        server.signal(libc::SIGTERM);
        server.wait_log("shutting down");
        keep.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").expect("healthz");
        let r = read_response(&mut keep);
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.headers.get("connection").map(String::as_str), Some("close"));
        let fresh = get(metrics, "/healthz");
        assert_eq!(fresh.status, 503);
        assert_eq!(sum(&scrape(metrics), "echo_reactor_draining"), 1.0);
        drop(stuck);
        assert!(server.wait_exit(STEP_TIMEOUT).is_some(), "never exited");
    }
}

#[test]
fn a_master_scrape_sums_every_worker_and_keeps_the_dead_ones_counts() {
    let server = Server::spawn(&["--workers", "4", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let mut clients: Vec<TcpStream> = (0..40).map(|_| connect(server.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_echo(c, &pattern(i as u64, 100));
    }
    let held = scrape_until(metrics, "40 open", |s| {
        sum(s, "echo_reactor_connections_open") == 40.0
    });
    promtool_check(
        &get(metrics, "/metrics").body,
        "a_master_scrape_sums_every_worker_and_keeps_the_dead_ones_counts",
    );
    let labelled = held
        .keys()
        .filter(|k| k.starts_with("echo_reactor_connections_open{worker="))
        .count();
    assert_eq!(labelled, 4, "{held:?}");
    assert_eq!(held["echo_reactor_master_workers_up"], 4.0);
    // The master's own process, which holds every slot's sockets.
    assert_process_series(&held);
    assert!(held["process_open_fds"] >= 4.0, "{held:?}");
    let accepted = sum(&held, "echo_reactor_connections_accepted_total");
    assert!(accepted >= 40.0, "{held:?}");
    // A worker dies: its counters stay in the totals, and its slot's.
    let log = server.wait_log("serving");
    let pids: HashMap<usize, u32> = util::workers_serving(&log).into_iter().collect();
    let victim = pids[&0];
    // SAFETY: kill(2) only sends a signal, to a worker of this test's server.
    unsafe {
        libc::kill(victim as i32, libc::SIGKILL);
    }
    let after = scrape_until(metrics, "a restart", |s| {
        s["echo_reactor_master_worker_restarts_total"] == 1.0
            && s["echo_reactor_master_workers_up"] == 4.0
    });
    assert!(
        sum(&after, "echo_reactor_connections_accepted_total") >= accepted,
        "totals went down: {after:?}"
    );
    drop(clients);
}

/// A real Prometheus server scrapes a running echo-reactor; its HTTP API
/// then says the target is up and has the counters the clients caused.
/// Without `prometheus` on PATH it is skipped, loudly
/// ([`util::have_program`]); `.ci/run` installs it, and makes a skip a
/// failure.
#[test]
fn prometheus_scrapes_a_running_server() {
    const TEST: &str = "tests/metrics.rs prometheus_scrapes_a_running_server";
    if !util::have_program("prometheus", TEST) || !util::have_program("promtool", TEST) {
        return;
    }
    let server = Server::spawn(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let mut client = connect(server.addr);
    assert_echo(&mut client, &pattern(7, 5000));
    assert!(
        promtool_check(&get(metrics, "/metrics").body, TEST),
        "promtool missing"
    );

    let dir = std::env::temp_dir().join(format!("echo-reactor-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 200ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: echo-reactor\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .expect("config");
    let web = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
        .spawn()
        .expect("start prometheus");
    let query = |q: &str| -> Option<f64> {
        let mut s = TcpStream::connect(web).ok()?;
        let q: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        write!(s, "GET /api/v1/query?query={q} HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let start = Instant::now();
    let deadline = Duration::from_secs(60);
    let result = loop {
        let up = query("up{job=\"echo-reactor\"}");
        let bytes = query("echo_reactor_received_bytes_total");
        let open = query("echo_reactor_connections_open");
        if up == Some(1.0) && bytes.is_some_and(|b| b >= 5000.0) && open == Some(1.0) {
            break Ok((up, bytes, open));
        }
        if start.elapsed() > deadline {
            break Err((up, bytes, open));
        }
        thread::sleep(Duration::from_millis(200));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(seen) = result {
        panic!("Prometheus never saw the server: (up, bytes, open) = {seen:?}\n{log}");
    }
    drop(client);
}
