//! Stand-in servers and a runner for the `echo-bench` tests.
//!
//! Each server listens on `127.0.0.1:0` and serves every connection on its
//! own std thread: simple code whose behaviour is obvious, so that a test
//! failure points at the client. The servers live until the test process
//! exits; the runner kills `echo-bench` if it outlives [`RUN_TIMEOUT`].
#![allow(dead_code)]

/// `/proc` as the server's tests and benches read it: one parser of
/// `/proc/PID/stat` for the whole workspace.
#[path = "../../../tests/util/proc.rs"]
pub mod proc;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any one `echo-bench` run of a test may take before the test
/// kills it and fails. Generous: the machine is shared.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a stand-in server does with the bytes of one connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Echo everything.
    Echo,
    /// Echo, but flip the lowest bit of the byte at this stream offset.
    FlipByteAt(u64),
    /// Answer every byte with its complement: as many bytes as an echo,
    /// none of them right.
    Garble,
    /// Echo this many bytes, then close.
    CloseAfter(u64),
    /// Echo this many bytes, then reset the connection (RST, not FIN).
    ResetAfter(u64),
    /// Echo the first `.0` bytes at once; after that echo nothing until
    /// `.1` bytes are buffered, then all of them together (only a client
    /// that pipelines ever gets an answer).
    EchoInBatchesAfter(u64, usize),
    /// Echo, but sleep this long before echoing the byte at this offset.
    StallAt(u64, Duration),
    /// Echo, but hold each connection's first echo back this long. While
    /// held, the connection counts in [`TcpStandIn::unanswered`].
    SlowFirstEcho(Duration),
    /// Echo, but once `.0` has passed since the connection was accepted,
    /// hold the next echo back for `.1` (one pause per connection, then
    /// echo normally again): a server that stalls part-way through a run.
    PauseAfter(Duration, Duration),
}

/// A running stand-in TCP server.
pub struct TcpStandIn {
    pub addr: SocketAddr,
    /// Peer address of every accepted connection.
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
    /// For each connection that ended: (time of its last echo, time of its EOF).
    pub closes: Arc<Mutex<Vec<(Instant, Instant)>>>,
    /// Bytes received over all connections.
    pub received: Arc<AtomicU64>,
    /// (now, most ever) of connections accepted whose first echo has not
    /// been sent yet.
    pub unanswered: Arc<Mutex<(u64, u64)>>,
}

/// Starts a TCP server that treats every connection with `b`.
pub fn tcp_server(b: Behaviour) -> TcpStandIn {
    tcp_server_by_order(move |_| b)
}

/// Starts a TCP server that treats its `n`-th accepted connection (from 0)
/// with `f(n)`.
pub fn tcp_server_by_order(f: impl Fn(usize) -> Behaviour + Send + 'static) -> TcpStandIn {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let peers = Arc::new(Mutex::new(Vec::new()));
    let closes = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(AtomicU64::new(0));
    let unanswered = Arc::new(Mutex::new((0u64, 0u64)));
    let (p, c, r, u) = (
        Arc::clone(&peers),
        Arc::clone(&closes),
        Arc::clone(&received),
        Arc::clone(&unanswered),
    );
    thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(conn) = conn else { continue };
            let b = f(n);
            if let Ok(peer) = conn.peer_addr() {
                p.lock().unwrap().push(peer);
            }
            if let Behaviour::SlowFirstEcho(_) = b {
                let mut g = u.lock().unwrap();
                g.0 += 1;
                g.1 = g.1.max(g.0);
            }
            let (c, r, u) = (Arc::clone(&c), Arc::clone(&r), Arc::clone(&u));
            thread::spawn(move || serve(conn, b, &c, &r, &u));
        }
    });
    TcpStandIn {
        addr,
        peers,
        closes,
        received,
        unanswered,
    }
}

fn serve(
    mut s: TcpStream,
    b: Behaviour,
    closes: &Mutex<Vec<(Instant, Instant)>>,
    received: &AtomicU64,
    unanswered: &Mutex<(u64, u64)>,
) {
    let mut first = true;
    let mut buf = vec![0u8; 64 * 1024];
    let mut held = Vec::new();
    let mut offset = 0u64;
    let mut last_echo = Instant::now();
    let accepted = Instant::now();
    let mut paused = false;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        received.fetch_add(n as u64, Ordering::Relaxed);
        let chunk = &mut buf[..n];
        match b {
            Behaviour::EchoInBatchesAfter(first, k) if offset + n as u64 > first => {
                let skip = first.saturating_sub(offset) as usize;
                if skip > 0 && s.write_all(&chunk[..skip]).is_err() {
                    break;
                }
                held.extend_from_slice(&chunk[skip..]);
                offset += n as u64;
                if held.len() >= k {
                    if s.write_all(&held).is_err() {
                        break;
                    }
                    held.clear();
                    last_echo = Instant::now();
                }
                continue;
            }
            Behaviour::ResetAfter(limit) if offset + n as u64 >= limit => {
                let keep = (limit - offset) as usize;
                let _ = s.write_all(&chunk[..keep]);
                // Linger 0: close() sends RST instead of FIN.
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                break;
            }
            Behaviour::Echo | Behaviour::EchoInBatchesAfter(..) | Behaviour::ResetAfter(_) => {}
            Behaviour::Garble => chunk.iter_mut().for_each(|b| *b = !*b),
            Behaviour::CloseAfter(limit) => {
                let keep = limit.saturating_sub(offset).min(n as u64) as usize;
                let _ = s.write_all(&chunk[..keep]);
                if offset + n as u64 >= limit {
                    // FIN after the echoed bytes, then keep reading until the
                    // client closes: closing with unread input would send a
                    // RST, and the client would see a reset, not an EOF.
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                    break;
                }
                offset += n as u64;
                continue;
            }
            Behaviour::FlipByteAt(_)
            | Behaviour::StallAt(..)
            | Behaviour::SlowFirstEcho(_)
            | Behaviour::PauseAfter(..) => {
                before_echo(b, chunk, offset, first, accepted, &mut paused)
            }
        }
        offset += n as u64;
        // Counted as answered just before the echo leaves: once it has
        // left, the client may open its next connection, which the accept
        // loop could count before this thread got to run again.
        if first && matches!(b, Behaviour::SlowFirstEcho(_)) {
            unanswered.lock().unwrap().0 -= 1;
        }
        first = false;
        if s.write_all(chunk).is_err() {
            break;
        }
        last_echo = Instant::now();
    }
    closes.lock().unwrap().push((last_echo, Instant::now()));
}

/// The behaviours that echo every chunk, but alter it or wait first.
/// `offset` is the chunk's offset in the stream; `paused` is whether
/// [`Behaviour::PauseAfter`] has paused this connection already.
fn before_echo(
    b: Behaviour,
    chunk: &mut [u8],
    offset: u64,
    first: bool,
    accepted: Instant,
    paused: &mut bool,
) {
    let span = offset..offset + chunk.len() as u64;
    match b {
        Behaviour::FlipByteAt(at) if span.contains(&at) => {
            chunk[(at - offset) as usize] ^= 0x01;
        }
        Behaviour::StallAt(at, pause) if span.contains(&at) => thread::sleep(pause),
        Behaviour::SlowFirstEcho(pause) if first => thread::sleep(pause),
        Behaviour::PauseAfter(after, pause) if !*paused && accepted.elapsed() >= after => {
            *paused = true;
            thread::sleep(pause);
        }
        _ => {}
    }
}

/// Starts a UDP echo server (every datagram straight back to its sender).
pub fn udp_echo() -> SocketAddr {
    udp_echo_dropping(None)
}

/// A UDP echo server that drops every `n`-th datagram it receives, if `n`
/// is given.
pub fn udp_echo_dropping(n: Option<u64>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = sock.local_addr().expect("local_addr");
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut count = 0u64;
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            count += 1;
            if n.is_some_and(|n| count.is_multiple_of(n)) {
                continue;
            }
            let _ = sock.send_to(&buf[..len], from);
        }
    });
    addr
}

/// A UDP echo server that holds each datagram with an odd sequence number
/// (its first 8 bytes, little-endian) until the next datagram from the
/// same sender, and echoes that one first: echoes come out of order.
pub fn udp_echo_swapping() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = sock.local_addr().expect("local_addr");
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut held: std::collections::HashMap<SocketAddr, Vec<u8>> = Default::default();
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            let seq = buf[..len]
                .first_chunk::<8>()
                .map_or(0, |h| u64::from_le_bytes(*h));
            let older = held.remove(&from);
            if seq % 2 == 1 && older.is_none() {
                // It goes after the next one.
                held.insert(from, buf[..len].to_vec());
                continue;
            }
            let _ = sock.send_to(&buf[..len], from);
            if let Some(older) = older {
                let _ = sock.send_to(&older, from);
            }
        }
    });
    addr
}

/// A UDP server that echoes every datagram with its last byte flipped.
pub fn udp_echo_flipping_last_byte() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = sock.local_addr().expect("local_addr");
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            if len > 0 {
                buf[len - 1] ^= 0x01;
            }
            let _ = sock.send_to(&buf[..len], from);
        }
    });
    addr
}

/// A UDP echo server that, `after` the first datagram it receives, stops
/// for `pause` (once): datagrams that arrive meanwhile wait in its socket
/// and are echoed late.
pub fn udp_echo_pausing(after: Duration, pause: Duration) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = sock.local_addr().expect("local_addr");
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut first = None;
        let mut paused = false;
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            let t0 = *first.get_or_insert_with(Instant::now);
            if !paused && t0.elapsed() >= after {
                paused = true;
                thread::sleep(pause);
            }
            let _ = sock.send_to(&buf[..len], from);
        }
    });
    addr
}

/// A UDP echo server that, whenever no datagram has come for `quiet`,
/// sends every sender seen since the last such time one datagram that is
/// no echo: a server that goes wrong while the client holds its sockets
/// idle.
pub fn udp_echo_then_junk_when_quiet(quiet: Duration) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let addr = sock.local_addr().expect("local_addr");
    sock.set_read_timeout(Some(quiet))
        .expect("set_read_timeout");
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut peers = Vec::new();
        loop {
            match sock.recv_from(&mut buf) {
                Ok((len, from)) => {
                    if !peers.contains(&from) {
                        peers.push(from);
                    }
                    let _ = sock.send_to(&buf[..len], from);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    for peer in peers.drain(..) {
                        let _ = sock.send_to(b"not an echo", peer);
                    }
                }
                Err(_) => break,
            }
        }
    });
    addr
}

/// An address where nothing listens (a port we bound and released).
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local_addr")
}

/// What one `echo-bench` run left behind.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The `--json` report.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `echo-bench` with `args`, killing it after [`RUN_TIMEOUT`].
pub fn bench(args: &[&str]) -> Run {
    wait_run(spawn_bench(args), args)
}

/// Starts `echo-bench` with `args`, its stdout and stderr piped.
pub fn spawn_bench(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_echo-bench"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn echo-bench")
}

/// Waits for a started `echo-bench` (run with `args`), killing it after
/// [`RUN_TIMEOUT`].
pub fn wait_run(mut child: Child, args: &[&str]) -> Run {
    let deadline = Instant::now() + RUN_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "echo-bench {args:?} ran longer than {RUN_TIMEOUT:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The processes whose parent is `pid` (from `/proc/*/stat`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| proc::stat(p).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// Whether process `pid` still exists (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    proc::stat(pid).is_some_and(|s| s.state != 'Z')
}

/// Sends `signal` (e.g. "INT") to process `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{signal} {pid} failed");
}

/// Polls `cond` every 10 ms until it holds, failing the test after
/// [`RUN_TIMEOUT`].
#[track_caller]
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + RUN_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts a clean run: exit 0, no errors, every connection established.
#[track_caller]
pub fn assert_clean(run: &Run, connections: u64) -> Value {
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let v = run.json();
    assert_eq!(v["errors_total"], 0, "{v:#}");
    assert_eq!(v["connections"]["established"], connections, "{v:#}");
    assert_eq!(v["connections"]["failed"], 0, "{v:#}");
    assert_eq!(v["passed"], true, "{v:#}");
    v
}

/// A histogram in HdrHistogram's base64 form (`--json`), read back.
pub fn decode_histogram(b64: &str) -> hdrhistogram::Histogram<u64> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .expect("an HdrHistogram encoding")
}

/// `--interval` with `--json`: one JSON object a line, the report last;
/// the report and the intervals before it.
pub fn report_and_intervals(stdout: &str) -> (Value, Vec<Value>) {
    let mut lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let report = lines.pop().expect("the report last");
    (report, lines)
}
