//! What a connection costs the server: memory and CPU while idle, and memory
//! while a client floods it without reading.
//!
//! Run: `cargo bench --bench footprint` (optionally `-- --connections N`).
//!
//! It starts the release `echo-reactor` as a child process, opens the
//! connections from this process (spread over loopback source addresses so
//! one ephemeral port range is enough), and reads the server's `VmRSS`,
//! `VmHWM` and CPU ticks from `/proc`, all with the helpers the tests use
//! too (`tests/util/proc.rs`, through `benches/support`). Loopback only;
//! everything is closed and the server stopped at the end.

mod support;

use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::{Server, ServerSpec, proc};

/// Idle connections opened for the memory and CPU figures.
const DEFAULT_CONNECTIONS: usize = 19_000;
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
    println!("# echo-reactor footprint");
    println!();
    println!("| figure | value |");
    println!("| --- | --- |");
    flood_figures();
    // A fresh server for the idle figures, so memory the flood freed
    // cannot flatter them.
    idle_figures(connections);
}

/// The release server on a free loopback port, given a moment to settle.
fn start_server() -> Server {
    let spec = ServerSpec::new("echo-reactor", env!("CARGO_BIN_EXE_echo-reactor"), &[]);
    let server = Server::start(&spec, None);
    thread::sleep(Duration::from_millis(200));
    server
}

/// A client that writes 64 MiB and reads nothing until it is stuck, then
/// reads it all back.
fn flood_figures() {
    let server = start_server();
    let pid = server.pid();
    let hwm_before = proc::vm_hwm_kib(pid);
    let mut s = TcpStream::connect(server.addr()).expect("connect");
    let data: Vec<u8> = (0..FLOOD_BYTES)
        .map(|i| (((i % 65_521) as u32).wrapping_mul(31) >> 3) as u8)
        .collect();
    let flood = proc::flood_without_reading(pid, &mut s, Arc::new(data));
    drop(s);
    thread::sleep(Duration::from_millis(200));
    let stuck = match flood.stuck_at {
        Some(n) => format!(
            "{:.1} MiB of {} MiB",
            n as f64 / (1 << 20) as f64,
            FLOOD_BYTES >> 20
        ),
        None => format!("never: all {} MiB went through", FLOOD_BYTES >> 20),
    };
    println!("| non-reading client: writer stuck after | {stuck} |");
    println!(
        "| server VmRSS growth while flooded: sampled peak / VmHWM | {} kB / {} kB |",
        flood.rss_peak_kib.saturating_sub(flood.rss_before_kib),
        proc::vm_hwm_kib(pid).saturating_sub(hwm_before)
    );
    println!(
        "| all {} MiB echoed back in order | {} |",
        FLOOD_BYTES >> 20,
        if flood.first_difference.is_none() {
            "yes"
        } else {
            "NO"
        }
    );
}

/// `connections` idle connections: the server's memory growth, and the CPU
/// it uses while they sit idle.
fn idle_figures(connections: usize) {
    let server = start_server();
    let pid = server.pid();
    let rss0 = proc::vm_rss_kib(pid);
    let t = Instant::now();
    // Each connection proves it echoes, then stays idle.
    let idle = proc::open_idle(server.addr(), connections);
    let setup = t.elapsed();
    thread::sleep(Duration::from_millis(500));
    let rss1 = proc::vm_rss_kib(pid);
    let cpu0 = proc::cpu_ticks(pid).total();
    thread::sleep(IDLE_WINDOW);
    let cpu1 = proc::cpu_ticks(pid).total();
    let ticks_per_sec = proc::clock_ticks_per_sec() as f64;
    let idle_cpu = (cpu1 - cpu0) as f64 / ticks_per_sec / IDLE_WINDOW.as_secs_f64() * 100.0;
    println!(
        "| connections opened, each echoed correctly | {} of {connections} (in {:.1} s) |",
        idle.echoed,
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
    drop(idle);
}
