//! Backpressure: a client that writes without reading must not make the
//! server buffer without bound; once it reads, every byte still arrives,
//! in order.

mod util;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use util::{STEP_TIMEOUT, Server, connect, pattern, vm_rss_kib};

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 64 * 1024;
/// Generous: the server may buffer ~128 KiB of its own per connection;
/// 16 MiB is far below the 64 MiB an unbounded server would hold.
const MAX_RSS_GROWTH_KIB: u64 = 16 * 1024;

#[test]
fn writer_that_never_reads_does_not_grow_server_memory_and_loses_nothing() {
    let mut server = Server::spawn(&[]);
    let pid = server.pid();
    let mut s = connect(server.addr);
    // Let the server touch its per-connection state before the baseline.
    util::assert_echo(&mut s, b"warm up");
    let rss_before = vm_rss_kib(pid);

    let data = Arc::new(pattern(64, TOTAL));
    let written = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut w = s.try_clone().unwrap();
        // The writer may block for as long as the reader below is away.
        w.set_write_timeout(Some(STEP_TIMEOUT * 3)).unwrap();
        let (data, written, done) = (Arc::clone(&data), Arc::clone(&written), Arc::clone(&done));
        thread::spawn(move || {
            for chunk in data.chunks(CHUNK) {
                w.write_all(chunk).expect("write");
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            done.store(true, Ordering::Relaxed);
        })
    };

    // Watch the server's memory while the writer pushes; stop once the
    // writer has been stuck for a while (everything is full) or is done.
    let mut peak = rss_before;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = 0;
    let mut still_since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(50));
        peak = peak.max(vm_rss_kib(pid));
        let now = written.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
        if done.load(Ordering::Relaxed) || still_since.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writer neither blocked nor finished"
        );
    }
    let blocked_at = written.load(Ordering::Relaxed);
    assert!(
        blocked_at < TOTAL,
        "the writer sent all {TOTAL} bytes without the client reading: \
         the server is buffering without bound"
    );
    assert!(
        peak.saturating_sub(rss_before) < MAX_RSS_GROWTH_KIB,
        "server RSS grew from {rss_before} KiB to {peak} KiB while the client did not read"
    );

    // Now read everything back and check every byte, in order.
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < TOTAL {
        let want = buf.len().min(TOTAL - got);
        let n = s.read(&mut buf[..want]).expect("read echo");
        assert!(n > 0, "EOF after {got} of {TOTAL} bytes");
        assert!(
            buf[..n] == data[got..got + n],
            "echo differs in bytes {got}..{}",
            got + n
        );
        got += n;
        if got % (4 << 20) < n {
            peak = peak.max(vm_rss_kib(pid));
        }
    }
    writer.join().expect("writer thread");
    drop(s);
    assert!(
        peak.saturating_sub(rss_before) < MAX_RSS_GROWTH_KIB,
        "server RSS grew from {rss_before} KiB to {peak} KiB during the transfer"
    );

    // The server says it paused reading at least once.
    let (status, log) = util::stop(&mut server);
    assert!(status.success(), "exit status {status}; log:\n{log}");
    let stats = util::counters(&log, "final stats:");
    assert!(
        util::get(&stats, "backpressure_pauses") >= 1,
        "no backpressure pause counted: {stats:?}"
    );
    assert_eq!(
        util::get(&stats, "bytes_in"),
        (TOTAL + 7) as u64,
        "{stats:?}"
    );
}
