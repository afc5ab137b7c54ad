//! Backpressure: a client that writes without reading must not make the
//! server buffer without bound; once it reads, every byte still arrives,
//! in order. (Line and frame modes: `protocol_backpressure.rs`.)

mod util;

use std::sync::Arc;

use util::{Server, connect, pattern};

const TOTAL: usize = 64 << 20;
/// Generous: the server may buffer ~128 KiB of its own per connection;
/// 16 MiB is far below the 64 MiB an unbounded server would hold.
const MAX_RSS_GROWTH_KIB: u64 = 16 * 1024;

on_every_backend! {
    fn writer_that_never_reads_does_not_grow_server_memory_and_loses_nothing() {
        let mut server = Server::spawn(&[]);
        let mut s = connect(server.addr);
        // Let the server touch its per-connection state before the baseline.
        util::assert_echo(&mut s, b"warm up");

        // Asserts that the writer got stuck (the server stopped reading) and
        // that every byte comes back in order once the client reads.
        let (before, peak) =
            util::flood_without_reading_then_verify(&server, &mut s, Arc::new(pattern(64, TOTAL)));
        drop(s);
        assert!(
            peak.saturating_sub(before) < MAX_RSS_GROWTH_KIB,
            "server RSS grew from {before} KiB to {peak} KiB while the client did not read"
        );

        // The server says it paused reading at least once, and read it all.
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
}
