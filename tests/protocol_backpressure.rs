//! The core's backpressure holds in line and frame modes: a client that
//! sends without reading cannot grow the server without bound, and once it
//! reads, every answer arrives, in order.

mod util;

use std::sync::Arc;

use util::{Server, connect, frame, pattern};

const TOTAL: usize = 64 << 20;
/// As in `backpressure.rs`: far below the 64 MiB an unbounded server
/// would hold.
const MAX_RSS_GROWTH_KIB: u64 = 16 * 1024;

#[track_caller]
fn assert_bounded(server: &mut Server, data: Vec<u8>) {
    let mut s = connect(server.addr);
    let (before, peak) = util::flood_without_reading_then_verify(server, &mut s, Arc::new(data));
    drop(s);
    assert!(
        peak.saturating_sub(before) < MAX_RSS_GROWTH_KIB,
        "server RSS grew from {before} KiB to {peak} KiB"
    );
    let (status, log) = util::stop(server);
    assert!(status.success(), "{log}");
    let stats = util::counters(&log, "final stats:");
    assert!(util::get(&stats, "backpressure_pauses") >= 1, "{stats:?}");
}

on_every_backend! {
    fn line_client_that_never_reads_does_not_grow_the_server() {
        // Lines of 0..200 bytes (no LF inside), echoed unchanged.
        let mut data = Vec::with_capacity(TOTAL);
        let noise = pattern(3, 1 << 16);
        let mut i = 0;
        while data.len() < TOTAL - 256 {
            let len = noise[i % noise.len()] as usize % 200;
            data.extend(
                noise[i..i + len]
                    .iter()
                    .map(|b| if *b == b'\n' { b'.' } else { *b }),
            );
            data.push(b'\n');
            i = (i + len + 1) % (noise.len() - 256);
        }
        let mut server = Server::spawn(&["--mode", "line"]);
        assert_bounded(&mut server, data);
    }

    fn frame_client_that_never_reads_does_not_grow_the_server() {
        // Frames of 0..64 KiB, echoed unchanged.
        let noise = pattern(4, 1 << 16);
        let mut data = Vec::with_capacity(TOTAL);
        let mut n = 0usize;
        while data.len() < TOTAL - (1 << 17) {
            let len = (n * 7919) % (1 << 16);
            data.extend_from_slice(&frame(&noise[..len]));
            n += 1;
        }
        let mut server = Server::spawn(&["--mode", "frame"]);
        assert_bounded(&mut server, data);
    }
}
