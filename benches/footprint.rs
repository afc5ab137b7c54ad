//! What a connection costs the server: memory and CPU while idle, and memory
//! while a client floods it without reading.
//!
//! Run: `cargo bench --bench footprint` (optionally `-- --connections N`).
//!
//! It starts the release `echo-reactor` as a child process, opens the
//! connections from this process (spread over loopback source addresses so
//! one ephemeral port range is enough), and reads the server's `VmRSS`,
//! `VmHWM` and CPU ticks from `/proc`. Loopback only; everything is closed
//! and the server stopped at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Idle connections opened for the memory and CPU figures.
const DEFAULT_CONNECTIONS: usize = 19_000;
/// Source addresses 127.0.0.1 ..= 127.0.0.SOURCES.
const SOURCES: usize = 8;
/// How long the idle CPU is sampled.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// What the non-reading client pushes.
const FLOOD_BYTES: usize = 64 << 20;

fn main() {
    let mut connections = DEFAULT_CONNECTIONS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--connections" {
            connections = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--connections N");
        }
    }
    let ticks_per_sec = clock_ticks_per_sec();

    println!("# echo-reactor footprint");
    println!();
    let (mut server, addr) = start_server();
    let pid = server.id();
    thread::sleep(Duration::from_millis(200));
    println!("| figure | value |");
    println!("| --- | --- |");
    // A client that writes 64 MiB and reads nothing until it is stuck.
    let rss_before = proc_status_kib(pid, "VmRSS:");
    let hwm_before = proc_status_kib(pid, "VmHWM:");
    let mut flood = TcpStream::connect(addr).expect("connect");
    let mut writer = flood.try_clone().expect("clone");
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = sent.clone();
    let pusher = thread::spawn(move || {
        let chunk = pattern_chunk();
        let mut n = 0;
        while n < FLOOD_BYTES {
            writer.write_all(&chunk).expect("flood write");
            n += chunk.len();
            progress.store(n, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // Wait until the writer has made no progress for a second: the server
    // has stopped reading and every buffer on the way is full.
    let mut last = 0;
    let mut still_since = Instant::now();
    let mut peak = rss_before;
    while still_since.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(50));
        peak = peak.max(proc_status_kib(pid, "VmRSS:"));
        let now = sent.load(std::sync::atomic::Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    let stuck_at = last;
    // Now read everything back and check it.
    let chunk = pattern_chunk();
    let mut buf = vec![0u8; chunk.len()];
    let mut received = 0;
    let mut intact = true;
    while received < FLOOD_BYTES {
        let n = flood.read(&mut buf).expect("read back");
        assert!(n > 0, "server closed early");
        for (k, b) in buf[..n].iter().enumerate() {
            intact &= *b == chunk[(received + k) % chunk.len()];
        }
        received += n;
        peak = peak.max(proc_status_kib(pid, "VmRSS:"));
    }
    pusher.join().expect("pusher");
    drop(flood);
    thread::sleep(Duration::from_millis(200));
    println!(
        "| non-reading client: writer stuck after | {:.1} MiB of {} MiB |",
        stuck_at as f64 / (1 << 20) as f64,
        FLOOD_BYTES >> 20
    );
    println!(
        "| server VmRSS growth while flooded: sampled peak / VmHWM | {} kB / {} kB |",
        peak.saturating_sub(rss_before),
        proc_status_kib(pid, "VmHWM:").saturating_sub(hwm_before)
    );
    println!(
        "| all {} MiB echoed back in order | {} |",
        FLOOD_BYTES >> 20,
        if intact { "yes" } else { "NO" }
    );
    // A fresh server for the idle figures, so memory the flood freed
    // cannot flatter them.
    let _ = server.kill();
    let _ = server.wait();
    let (mut server, addr) = start_server();
    let pid = server.id();
    thread::sleep(Duration::from_millis(200));
    let rss0 = proc_status_kib(pid, "VmRSS:");

    let t = Instant::now();
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        clients.push(connect_from(addr, i % SOURCES));
    }
    // Each connection proves it echoes, then stays idle.
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&(i as u64).to_be_bytes()).expect("write");
    }
    let mut ok = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        let mut back = [0u8; 8];
        c.read_exact(&mut back).expect("read");
        ok += usize::from(back == (i as u64).to_be_bytes());
    }
    let setup = t.elapsed();
    thread::sleep(Duration::from_millis(500));
    let rss1 = proc_status_kib(pid, "VmRSS:");
    let cpu0 = cpu_ticks(pid);
    thread::sleep(IDLE_WINDOW);
    let cpu1 = cpu_ticks(pid);
    let idle_cpu = (cpu1 - cpu0) as f64 / ticks_per_sec / IDLE_WINDOW.as_secs_f64() * 100.0;

    println!(
        "| connections opened, each echoed correctly | {ok} of {connections} (in {:.1} s) |",
        setup.as_secs_f64()
    );
    println!("| server VmRSS before / after | {rss0} kB / {rss1} kB |");
    println!(
        "| VmRSS growth per idle connection | {:.0} bytes |",
        (rss1.saturating_sub(rss0) * 1024) as f64 / connections as f64
    );
    println!(
        "| server CPU over {} s with all of them idle | {} ticks ({idle_cpu:.2} % of a core) |",
        IDLE_WINDOW.as_secs(),
        cpu1 - cpu0
    );
    drop(clients);

    let _ = server.kill();
    let _ = server.wait();
}

fn start_server() -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start echo-reactor");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on tcp://")
        .and_then(|a| a.parse().ok())
        .expect("address in listening line");
    (child, addr)
}

fn connect_from(addr: SocketAddr, source: usize) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let src: SocketAddr = format!("127.0.0.{}:0", source + 1).parse().expect("src");
    socket.bind(&src.into()).expect("bind source");
    socket.connect(&addr.into()).expect("connect");
    socket.into()
}

fn pattern_chunk() -> Vec<u8> {
    (0..65_521u32)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect()
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("status field")
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}
