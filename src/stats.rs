//! The server's counters: what happened to connections and bytes.
//!
//! The loop is single-threaded, so these are plain integers, not atomics.
//! They are logged every `--stats-interval` and once at exit, as
//! `key=value` pairs that are easy to grep and to parse in tests.

use std::fmt;

/// Counters kept by the event loop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections closed at once on arrival: over `--max-connections`,
    /// during shutdown, or shed while descriptors were exhausted.
    pub rejected: u64,
    /// Connections open now.
    pub active: u64,
    /// Served connections closed, for any reason (timeouts included).
    pub closed: u64,
    /// Connections closed by the idle timeout.
    pub timed_out: u64,
    /// Bytes read from clients (and so echoed, or about to be).
    pub bytes_in: u64,
    /// Bytes written back to clients.
    pub bytes_out: u64,
    /// Times a connection's input was paused because its pending output
    /// passed the high watermark.
    pub backpressure_pauses: u64,
    /// `accept` calls that failed (descriptor exhaustion and others).
    pub accept_errors: u64,
    /// Connections closed for breaking their protocol: an over-long line,
    /// an over-size frame, a frame cut off by EOF.
    pub protocol_errors: u64,
    /// UDP datagrams received (echo and daytime).
    pub datagrams_in: u64,
    /// UDP datagrams sent back.
    pub datagrams_out: u64,
    /// UDP answers dropped because the socket could not send them at once.
    pub datagrams_dropped: u64,
    /// UDP datagrams left unanswered because answering could start a loop
    /// (from our own sockets, port 0, or a reflecting service's port).
    pub datagrams_refused: u64,
    /// Connections turned away by `--max-connections-per-ip`; also in
    /// `rejected`.
    pub rejected_per_ip: u64,
    /// Lingering closes cut short because the client never sent its FIN
    /// within the linger bound.
    pub linger_timeouts: u64,
    /// Bytes held for clients now (pending output, partial messages),
    /// against `--max-buffered`.
    pub buffered: u64,
    /// The most bytes held for clients at once.
    pub buffered_peak: u64,
    /// Reads that found the memory budget full (and passed through, or
    /// waited).
    pub budget_full: u64,
    /// Connections closed by `--evict-after`.
    pub evicted: u64,
    /// Connections closed at once because the backend cannot watch their
    /// descriptor (select: at or above `FD_SETSIZE`); also in `rejected`.
    pub unwatchable: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted={} rejected={} active={} closed={} timed_out={} bytes_in={} \
             bytes_out={} backpressure_pauses={} accept_errors={} protocol_errors={} \
             datagrams_in={} datagrams_out={} datagrams_dropped={} datagrams_refused={} \
             rejected_per_ip={} linger_timeouts={} buffered={} buffered_peak={} budget_full={} \
             evicted={} unwatchable={}",
            self.accepted,
            self.rejected,
            self.active,
            self.closed,
            self.timed_out,
            self.bytes_in,
            self.bytes_out,
            self.backpressure_pauses,
            self.accept_errors,
            self.protocol_errors,
            self.datagrams_in,
            self.datagrams_out,
            self.datagrams_dropped,
            self.datagrams_refused,
            self.rejected_per_ip,
            self.linger_timeouts,
            self.buffered,
            self.buffered_peak,
            self.budget_full,
            self.evicted,
            self.unwatchable
        )
    }
}
