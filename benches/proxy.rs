//! `examples/proxy.rs` under a slow reader: what the proxy holds while
//! a client pushes far more than it reads back through it.
//!
//! Run: `cargo bench --bench proxy` (optionally `-- --mib N --read-every-ms
//! M`, defaults 256 and 1).
//!
//! It starts the release `echo-reactor` (the upstream) and the release
//! `proxy` example in front of it, pinned to the first CPU, and one client
//! in this process: a thread writes N MiB of a pattern as fast as the
//! proxy takes it, and the reader takes 64 KiB every M ms, checking every
//! byte that comes back against the pattern. Meanwhile it samples the
//! proxy's and the upstream's `VmRSS` (and `VmHWM` at the end) from
//! `/proc`. It prints the throughput the slow reader allowed, the RSS
//! figures and the proxy's counters. Loopback only; both servers are
//! stopped at the end.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::{Server, ServerSpec};

/// One read of the slow client.
const READ: usize = 64 * 1024;

fn main() {
    let mut mib: usize = 256;
    let mut every_ms: u64 = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mib" => mib = args.next().and_then(|v| v.parse().ok()).expect("--mib N"),
            "--read-every-ms" => {
                every_ms = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--read-every-ms M")
            }
            _ => {}
        }
    }
    let total = mib << 20;
    let proxy_exe = support::build_examples(&["proxy"]).remove(0);
    let cpus = support::allowed_cpus();
    let server_cpu = cpus.first().copied();
    let upstream = Server::start(
        &ServerSpec::new("echo-reactor", env!("CARGO_BIN_EXE_echo-reactor"), &[]),
        server_cpu,
    );
    let up = upstream.addr().to_string();
    let proxy = Server::start_logged(
        &ServerSpec::new("proxy", &proxy_exe, &["--upstream", &up]),
        server_cpu,
    );
    println!("# examples/proxy.rs under a slow reader");
    println!(
        "{mib} MiB through the proxy to echo-reactor and back; the client reads \
         {} KiB every {every_ms} ms",
        READ / 1024
    );
    println!(
        "before: proxy RSS {} KiB, upstream RSS {} KiB",
        proxy.rss_kib(),
        upstream.rss_kib()
    );

    let client = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    let mut writer = client.try_clone().expect("clone");
    let writing = thread::spawn(move || {
        let mut sent = 0;
        let mut chunk = vec![0u8; 1 << 20];
        while sent < total {
            let n = chunk.len().min(total - sent);
            fill(&mut chunk[..n], sent);
            writer.write_all(&chunk[..n]).expect("write to the proxy");
            sent += n;
        }
        writer.shutdown(std::net::Shutdown::Write).expect("FIN");
    });

    let done = Arc::new(AtomicBool::new(false));
    let samples = {
        let done = Arc::clone(&done);
        let (proxy_pid, upstream_pid) = (proxy.pid(), upstream.pid());
        thread::spawn(move || {
            let (mut proxy_max, mut upstream_max) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                proxy_max = proxy_max.max(support::proc::vm_rss_kib(proxy_pid));
                upstream_max = upstream_max.max(support::proc::vm_rss_kib(upstream_pid));
                thread::sleep(Duration::from_millis(50));
            }
            (proxy_max, upstream_max)
        })
    };

    let started = Instant::now();
    let mut reader = client;
    reader
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = vec![0u8; READ];
    let mut expect = vec![0u8; READ];
    let mut got = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => panic!("read from the proxy after {got} bytes: {e}"),
        };
        fill(&mut expect[..n], got);
        assert!(buf[..n] == expect[..n], "byte {got}+: not what was sent");
        got += n;
        if every_ms > 0 {
            thread::sleep(Duration::from_millis(every_ms));
        }
    }
    let took = started.elapsed();
    writing.join().expect("writer");
    done.store(true, Ordering::Relaxed);
    let (proxy_max, upstream_max) = samples.join().expect("sampler");
    assert_eq!(got, total, "bytes back");
    println!(
        "all {got} bytes back in order in {:.1} s ({:.1} MiB/s, as fast as the reader read)",
        took.as_secs_f64(),
        got as f64 / took.as_secs_f64() / (1 << 20) as f64
    );
    println!(
        "proxy:    RSS max sampled {proxy_max} KiB, VmHWM {} KiB",
        proxy.hwm_kib()
    );
    println!(
        "upstream: RSS max sampled {upstream_max} KiB, VmHWM {} KiB",
        upstream.hwm_kib()
    );
    let log = proxy.terminate(Duration::from_secs(10));
    if let Some(line) = log.lines().rev().find(|l| l.contains("final stats:")) {
        let keep = [
            "bytes_in",
            "bytes_out",
            "backpressure_pauses",
            "buffered_peak",
            "upstream_connected",
            "upstream_failed",
        ];
        let picked: Vec<&str> = line
            .split_whitespace()
            .filter(|kv| keep.iter().any(|k| kv.starts_with(&format!("{k}="))))
            .collect();
        println!("proxy counters: {}", picked.join(" "));
    }
    upstream.stop();
}

/// The pattern's bytes at offset `at` onward, into `buf`.
fn fill(buf: &mut [u8], at: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (at + i) as u64;
        *b = (x.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
}
