//! A server process seen from outside, written once for the tests and the
//! benches: what `/proc` says about it (CPU time, memory, descriptors, the
//! kernel's view of its TCP sockets) and about the machine, the
//! `listening on SCHEME://ADDR` lines and `key=value` counters it prints,
//! idle connections opened to it, and a client that floods it without
//! reading.
//!
//! Tests and benches are separate crates, so each compiles this file:
//! `tests/util/mod.rs` declares it as `util::proc`,
//! `benches/support/mod.rs` includes it as `support::proc` with
//! `#[path = "../../tests/util/proc.rs"]`, and echo-bench's tests as
//! `bench_support::proc`. It needs only std, libc and socket2, which all
//! three have.
//!
//! Everything panics with a message on failure: a test or bench that cannot
//! read `/proc` or reach the server has nothing to report.
#![allow(dead_code)] // each includer uses part of it

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

// ---------------------------------------------------------------------------
// One process: /proc/PID
// ---------------------------------------------------------------------------

/// CPU time a process has used, in clock ticks (`/proc/PID/stat` fields 14
/// and 15; threads that already exited are included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    /// User-space time: the program and its libraries.
    pub user: u64,
    /// Kernel time spent on the process's behalf (its system calls).
    pub system: u64,
}

impl CpuTicks {
    /// User + system.
    pub fn total(self) -> u64 {
        self.user + self.system
    }
}

/// The CPU time `pid` has used so far.
pub fn cpu_ticks(pid: u32) -> CpuTicks {
    stat(pid)
        .unwrap_or_else(|| panic!("no /proc/{pid}/stat to read CPU time from"))
        .cpu
}

/// What `/proc/PID/stat` says about a process, the fields the tests and
/// benches read. This is the one reader of that file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The state letter (field 3): `R` running, `S` sleeping, `T`
    /// stopped, `Z` a zombie (exited, not yet reaped), ...
    pub state: char,
    /// The parent's pid (field 4).
    pub ppid: u32,
    /// The process group (field 5).
    pub pgrp: i32,
    /// CPU time used (fields 14 and 15).
    pub cpu: CpuTicks,
    /// When the process started, in clock ticks after boot (field 22):
    /// with the pid, it names one process for good.
    pub start_time: u64,
}

/// `/proc/PID/stat` of `pid`; `None` when there is no such process (or it
/// has been reaped).
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its last `)`: the
/// state (field 3) is the first after it.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field n of the line is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        cpu: CpuTicks {
            user: field(14)?.parse().ok()?,
            system: field(15)?.parse().ok()?,
        },
        start_time: field(22)?.parse().ok()?,
    })
}

/// `sysconf(_SC_CLK_TCK)`, the unit of `/proc/PID/stat` times.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

/// A number from `/proc/PID/status`: `VmRSS` and `VmHWM` are in KiB,
/// `Threads` is a count. `key` is the name without its colon.
pub fn status_field(pid: u32, key: &str) -> u64 {
    let status = read(&format!("/proc/{pid}/status"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Resident set size of `pid`, KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS")
}

/// Peak resident set size of `pid` so far, KiB.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    status_field(pid, "VmHWM")
}

/// Threads of `pid`.
pub fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads")
}

/// Open descriptors of `pid` (entries of `/proc/PID/fd`).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/fd: {e}"))
        .count()
}

/// One IPv4 TCP socket as `/proc/net/tcp` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    /// The other end (`0.0.0.0:0` for a listener).
    pub peer: SocketAddr,
    /// The TCP state: `ESTABLISHED`, `CLOSE_WAIT`, `LISTEN`, ...
    pub state: &'static str,
    /// Bytes written and not yet acknowledged by the peer (`Send-Q` in
    /// `ss -tn`).
    pub tx_queue: u64,
    /// Bytes received and not yet read by the owner (`Recv-Q`).
    pub rx_queue: u64,
}

/// Every IPv4 TCP socket whose local port is `port`: for a server
/// listening on `port`, its listener and the server side of each of its
/// connections (whatever process holds them).
pub fn tcp_sockets(port: u16) -> Vec<TcpSocket> {
    read("/proc/net/tcp")
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace().skip(1);
            let local = proc_net_addr(f.next()?)?;
            let peer = proc_net_addr(f.next()?)?;
            let state = tcp_state(u8::from_str_radix(f.next()?, 16).ok()?);
            let (tx, rx) = f.next()?.split_once(':')?;
            (local.port() == port).then_some(TcpSocket {
                peer,
                state,
                tx_queue: u64::from_str_radix(tx, 16).ok()?,
                rx_queue: u64::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// The name of a TCP state number (`include/net/tcp_states.h`).
fn tcp_state(n: u8) -> &'static str {
    match n {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// An `ADDR:PORT` of `/proc/net/tcp`: the address as the kernel's 32-bit
/// word in hex (network byte order in memory, so read back in native
/// order), the port in hex.
fn proc_net_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from(ip.to_ne_bytes())),
        port,
    ))
}

/// TCP memory of the whole machine, in bytes (`TCP: ... mem PAGES` of
/// `/proc/net/sockstat`): what every socket's queues hold in the kernel,
/// against `net.ipv4.tcp_mem`.
pub fn tcp_mem_bytes() -> u64 {
    let sockstat = read("/proc/net/sockstat");
    let pages: u64 = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let mut f = l.split_whitespace();
            f.position(|w| w == "mem")?;
            f.next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no TCP mem in /proc/net/sockstat: {sockstat:?}"));
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

// ---------------------------------------------------------------------------
// The machine: /proc/stat, /proc/loadavg, /proc/cpuinfo
// ---------------------------------------------------------------------------

/// (busy, total) ticks of one CPU from `/proc/stat`, every process
/// counted; idle and iowait are not busy.
pub fn core_ticks(cpu: usize) -> (u64, u64) {
    let stat = read("/proc/stat");
    let tag = format!("cpu{cpu} ");
    let line = stat
        .lines()
        .find(|l| l.starts_with(&tag))
        .unwrap_or_else(|| panic!("no {tag:?} line in /proc/stat"));
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .map(|x| x.parse().expect("numeric field in /proc/stat"))
        .collect();
    let total: u64 = v.iter().sum();
    (total - v[3] - v[4], total)
}

/// The first three fields of `/proc/loadavg` (1, 5 and 15 minutes): how
/// busy the shared machine was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine in one line: `2 CPUs (MODEL), Linux RELEASE`. CPUs are
/// counted in `/proc/cpuinfo`, not from this process's affinity: a bench
/// pins itself to one CPU before it writes its report.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {kernel}")
}

/// The time now, in UTC, formatted by `date -u +FORMAT` (e.g. `%F`).
pub fn utc_now(format: &str) -> String {
    std::process::Command::new("date")
        .args(["-u", &format!("+{format}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// What a server prints
// ---------------------------------------------------------------------------

/// One `listening on SCHEME://ADDR [TAG]` line, the first thing every
/// server of this project prints per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening<'a> {
    /// `tcp` or `udp`.
    pub scheme: &'a str,
    /// The bound address (the real port when port 0 was asked for).
    pub addr: SocketAddr,
    /// What follows the address (`(daytime)`), or "".
    pub tag: &'a str,
}

/// Parses a `listening on ...` line; `None` for any other line.
pub fn listening(line: &str) -> Option<Listening<'_>> {
    let rest = line.trim_end().strip_prefix("listening on ")?;
    let (scheme, rest) = rest.split_once("://")?;
    let (addr, tag) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Listening {
        scheme,
        addr: addr.parse().ok()?,
        tag,
    })
}

/// The address of a plain `listening on tcp://ADDR` line, or a panic that
/// quotes the line.
#[track_caller]
pub fn tcp_listening_addr(line: &str) -> SocketAddr {
    match listening(line) {
        Some(l) if l.scheme == "tcp" && l.tag.is_empty() => l.addr,
        _ => panic!("not a `listening on tcp://ADDR` line: {line:?}"),
    }
}

/// Parses the `key=value` counters of the last log line containing
/// `marker` (e.g. `"final stats:"`, or `"stats:"` for the latest line of
/// either kind); panics, quoting the log, when there is none.
pub fn counters(log: &str, marker: &str) -> HashMap<String, u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} line in log:\n{log}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

/// A blocking connection to `addr` from source address `src` (port chosen
/// by the kernel), no timeouts set.
pub fn connect_from(src: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(src, 0).into())
        .unwrap_or_else(|e| panic!("bind source address {src}: {e}"));
    socket
        .connect(&addr.into())
        .unwrap_or_else(|e| panic!("connect to {addr} from {src}: {e}"));
    socket.into()
}

/// Idle connections come from 127.0.0.1 ..= 127.0.0.IDLE_SOURCES, so that
/// tens of thousands of them never crowd one ephemeral port range.
pub const IDLE_SOURCES: u8 = 8;

/// The loopback source address of the `i`th idle connection.
pub fn idle_source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        0,
        (i % IDLE_SOURCES as usize) as u8 + 1,
    ))
}

/// Connections that have each echoed once and now sit silent.
#[derive(Debug)]
pub struct Idle {
    /// The connections, open until this is dropped.
    pub conns: Vec<TcpStream>,
    /// How many echoed their 8 bytes correctly.
    pub echoed: usize,
}

/// Opens `n` connections to `addr` (from [`idle_source`] addresses) and has
/// each echo its index as 8 bytes, so the server has accepted and
/// registered every one before anything is measured; then they stay
/// silent. All are connected before the first byte is sent.
pub fn open_idle(addr: SocketAddr, n: usize) -> Idle {
    let mut conns: Vec<TcpStream> = (0..n).map(|i| connect_from(idle_source(i), addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(&(i as u64).to_be_bytes())
            .expect("write to an idle connection");
    }
    let mut echoed = 0;
    for (i, c) in conns.iter_mut().enumerate() {
        let mut back = [0u8; 8];
        c.read_exact(&mut back)
            .expect("read the echo of an idle connection");
        echoed += usize::from(back == (i as u64).to_be_bytes());
    }
    Idle { conns, echoed }
}

// ---------------------------------------------------------------------------
// A client that writes without reading
// ---------------------------------------------------------------------------

/// What [`flood_without_reading`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// Server `VmRSS` before the first byte, KiB.
    pub rss_before_kib: u64,
    /// Highest server `VmRSS` sampled while the client wrote and while it
    /// read the echo back, KiB.
    pub rss_peak_kib: u64,
    /// Bytes written when the writer had made no progress for a second
    /// (the server stopped reading); `None` when all of it went through
    /// without the client reading, i.e. the server buffered it all.
    pub stuck_at: Option<usize>,
    /// The first offset where the echo differed from what was sent.
    pub first_difference: Option<usize>,
}

/// How long the writer may stay still before it counts as stuck.
const STUCK_AFTER: Duration = Duration::from_secs(1);
/// The longest a flood may take to get stuck or finish, and the writer's
/// write timeout.
const FLOOD_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes `data` to `s` from a thread while this thread only watches the
/// server (`pid`) until the writer is stuck or done, then reads the echo of
/// all of it back, comparing as it goes. Panics on EOF or an I/O error.
pub fn flood_without_reading(pid: u32, s: &mut TcpStream, data: Arc<Vec<u8>>) -> Flood {
    let rss_before_kib = vm_rss_kib(pid);
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut w = s.try_clone().expect("clone the flooding socket");
        w.set_write_timeout(Some(FLOOD_TIMEOUT))
            .expect("set a write timeout");
        let (data, written) = (Arc::clone(&data), Arc::clone(&written));
        thread::spawn(move || {
            for chunk in data.chunks(64 * 1024) {
                w.write_all(chunk).expect("flood write");
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        })
    };
    let (stuck_at, peak) = watch_writer(pid, &written, data.len(), rss_before_kib);
    let mut read_peak = peak;
    let first_difference = read_and_compare(s, &data, || {
        read_peak = read_peak.max(vm_rss_kib(pid));
    });
    writer.join().expect("flood writer thread");
    Flood {
        rss_before_kib,
        rss_peak_kib: read_peak,
        stuck_at,
        first_difference,
    }
}

/// Samples the server's RSS until the writer finished (`None`) or made no
/// progress for [`STUCK_AFTER`] (`Some(bytes written)`); returns that and
/// the peak RSS.
fn watch_writer(
    pid: u32,
    written: &AtomicUsize,
    total: usize,
    mut peak: u64,
) -> (Option<usize>, u64) {
    let deadline = Instant::now() + FLOOD_TIMEOUT;
    let (mut last, mut still_since) = (0, Instant::now());
    loop {
        thread::sleep(Duration::from_millis(50));
        peak = peak.max(vm_rss_kib(pid));
        let now = written.load(Ordering::Relaxed);
        if now == total {
            return (None, peak);
        }
        if now != last {
            (last, still_since) = (now, Instant::now());
        } else if still_since.elapsed() >= STUCK_AFTER {
            return (Some(now), peak);
        }
        assert!(
            Instant::now() < deadline,
            "the flood writer neither got stuck nor finished in {FLOOD_TIMEOUT:?}"
        );
    }
}

/// Reads `expected.len()` bytes from `s`, comparing each chunk as it
/// arrives and calling `after_each_read` after every read; returns the
/// first offset that differed, if any. Panics on EOF or a read error.
pub fn read_and_compare(
    s: &mut TcpStream,
    expected: &[u8],
    mut after_each_read: impl FnMut(),
) -> Option<usize> {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut got, mut first_difference) = (0, None);
    while got < expected.len() {
        let want = buf.len().min(expected.len() - got);
        let n = s.read(&mut buf[..want]).expect("read the echo back");
        assert!(n > 0, "EOF after {got} of {} bytes", expected.len());
        if first_difference.is_none() {
            first_difference = (0..n)
                .find(|&k| buf[k] != expected[got + k])
                .map(|k| got + k);
        }
        got += n;
        after_each_read();
    }
    first_difference
}
