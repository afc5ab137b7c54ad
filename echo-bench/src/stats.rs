//! What each thread counts while it runs, and how the threads' counts merge.
//!
//! Every thread owns its own [`Stats`], touched only by that thread, so the
//! hot path takes no lock and shares no cache line; the threads hand their
//! `Stats` back when they finish and [`Stats::merge`] adds them up. Live
//! numbers for the progress line travel separately, through [`crate::live`].

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde_json::{Value, json};
use std::io;

/// Latencies are recorded in nanoseconds: loopback round trips are tens of
/// microseconds, and whole microseconds would blur the low percentiles.
pub const LATENCY_SIGFIGS: u8 = 3;

/// The highest latency the histogram can hold (100 s); longer ones are
/// clamped to it rather than dropped, so they still show as the maximum.
pub const LATENCY_MAX_NS: u64 = 100_000_000_000;

/// Every kind of failure the client tells apart. The names are the keys of
/// the report's `errors` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An echoed byte differed from the byte sent (the stream is closed).
    Mismatch,
    /// The server closed the connection while echoes were still due (or
    /// while the connection was being held open).
    EarlyEof,
    /// The connection was reset (ECONNRESET, EPIPE).
    Reset,
    /// The connect was refused (nothing listening, or a full backlog that
    /// answers with RST).
    ConnectRefused,
    /// The connect, or the first echo that proves it, did not finish in time.
    ConnectTimeout,
    /// No local address/port was free for the connect (EADDRNOTAVAIL).
    AddrUnavailable,
    /// Any other connect failure (EMFILE, ENETUNREACH, ...).
    ConnectOther,
    /// The server answered a connection's first message with bytes that
    /// are not its echo (e.g. `ERR too many connections`): it accepted the
    /// socket but refused to serve it. (A first echo that is mostly right
    /// but has wrong bytes is a [`ErrorKind::Mismatch`].)
    Rejected,
    /// An established connection went `--timeout` without an echo it was
    /// owed, during the window or the drain after it; or echoes were still
    /// missing when the drain gave up.
    Timeout,
    /// Any other I/O failure on an established connection.
    Io,
}

impl ErrorKind {
    /// All kinds, in report order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Mismatch,
        ErrorKind::EarlyEof,
        ErrorKind::Reset,
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::AddrUnavailable,
        ErrorKind::ConnectOther,
        ErrorKind::Rejected,
        ErrorKind::Timeout,
        ErrorKind::Io,
    ];

    /// The report key.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::EarlyEof => "early_eof",
            ErrorKind::Reset => "reset",
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::AddrUnavailable => "addr_unavailable",
            ErrorKind::ConnectOther => "connect_other",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
        }
    }

    /// Classifies a failed connect.
    pub fn of_connect(e: &io::Error) -> ErrorKind {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
            io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
            io::ErrorKind::AddrNotAvailable => ErrorKind::AddrUnavailable,
            _ => ErrorKind::ConnectOther,
        }
    }

    /// Classifies a failed read or write on an established connection.
    pub fn of_io(e: &io::Error) -> ErrorKind {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
            io::ErrorKind::UnexpectedEof => ErrorKind::EarlyEof,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        }
    }
}

/// One thread's counts (or, after merging, the whole run's).
#[derive(Debug)]
pub struct Stats {
    /// Connections that were proven by their first echo (TCP) or opened (UDP).
    pub established: u64,
    /// Connections that never got there.
    pub failed: u64,
    /// Messages echoed inside the measured window.
    pub messages: u64,
    /// Payload bytes echoed back inside the measured window.
    pub bytes: u64,
    /// Round-trip latency of each measured message, in ns.
    pub latency: Histogram<u64>,
    /// Open loop: how late each measured message was sent compared with its
    /// schedule, in ns.
    pub lag: Histogram<u64>,
    /// Open loop: messages due inside the window that were never sent.
    pub unsent: u64,
    /// `--interval`: the latencies of the current interval, in ns
    /// ([`crate::interval`]); `None` when not reporting intervals.
    pub interval: Option<Histogram<u64>>,
    /// TCP: from each `connect` call to the connection being established,
    /// in ns (every connection that got there, not only the window's).
    pub connect: Histogram<u64>,
    /// TCP: from each `connect` call to the connection's first echo (the
    /// one that proves it), in ns.
    pub first_echo: Histogram<u64>,
    /// Echoes still due when the window closed (TCP: messages; UDP:
    /// datagrams). Those sent inside the window are also in `latency`,
    /// at their age so far.
    pub outstanding: u64,
    /// Age of the oldest of them when the window closed, in ns.
    pub outstanding_oldest_ns: u64,
    /// Counts per [`ErrorKind`], indexed like [`ErrorKind::ALL`].
    pub errors: [u64; ErrorKind::ALL.len()],
    /// UDP: datagrams sent in the window.
    pub udp_sent: u64,
    /// UDP: datagrams given up on (no echo within the loss timeout).
    pub udp_lost: u64,
    /// UDP: echoes that came after their datagram was declared lost, or twice.
    pub udp_late: u64,
    /// UDP: echoes that came after an echo of a later datagram of the same
    /// socket (out of order).
    pub udp_reordered: u64,
    /// Length of this thread's measured window, in seconds.
    pub window_secs: f64,
    /// Seconds this thread took to open (or fail) all its connections.
    pub open_secs: f64,
    /// Loopback source addresses this thread ended up using.
    pub sources_used: usize,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    /// Empty counts.
    pub fn new() -> Stats {
        let hist = || {
            // Fails only for low > high or sigfigs > 5: not for these constants.
            Histogram::new_with_bounds(1, LATENCY_MAX_NS, LATENCY_SIGFIGS)
                .expect("constant histogram bounds are valid")
        };
        Stats {
            established: 0,
            failed: 0,
            messages: 0,
            bytes: 0,
            latency: hist(),
            lag: hist(),
            unsent: 0,
            interval: None,
            connect: hist(),
            first_echo: hist(),
            outstanding: 0,
            outstanding_oldest_ns: 0,
            errors: [0; ErrorKind::ALL.len()],
            udp_sent: 0,
            udp_lost: 0,
            udp_late: 0,
            udp_reordered: 0,
            window_secs: 0.0,
            open_secs: 0.0,
            sources_used: 0,
        }
    }

    /// Counts one error.
    #[inline]
    pub fn error(&mut self, kind: ErrorKind) {
        self.errors[kind as usize] += 1;
    }

    /// The count for one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize]
    }

    /// All errors together.
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Records one round trip of `ns` nanoseconds.
    #[inline]
    pub fn record_latency(&mut self, ns: u64) {
        self.latency.saturating_record(ns.max(1));
        if let Some(h) = &mut self.interval {
            h.saturating_record(ns.max(1));
        }
    }

    /// Counts one echo still due as the window closes, `ns` after it was
    /// sent (or due, in open loop). One sent inside the window is also
    /// recorded as a latency of that age: the echo takes at least that
    /// long, and leaving it out would let a stall at the end of the window
    /// vanish from the percentiles.
    pub fn record_outstanding(&mut self, ns: u64, in_window: bool) {
        self.outstanding += 1;
        self.outstanding_oldest_ns = self.outstanding_oldest_ns.max(ns);
        if in_window {
            self.record_latency(ns);
        }
    }

    /// Records how late one message left, in nanoseconds.
    #[inline]
    pub fn record_lag(&mut self, ns: u64) {
        self.lag.saturating_record(ns.max(1));
    }

    /// Adds another thread's counts. Windows overlap in time, so the merged
    /// window is the longest one (rates are computed per thread and summed
    /// by the report, not from this field).
    pub fn merge(&mut self, other: &Stats) {
        self.established += other.established;
        self.failed += other.failed;
        self.messages += other.messages;
        self.bytes += other.bytes;
        // Both histograms share bounds, so adding cannot fail; if it ever
        // did, the counts above still hold.
        let _ = self.latency.add(&other.latency);
        let _ = self.lag.add(&other.lag);
        let _ = self.connect.add(&other.connect);
        let _ = self.first_echo.add(&other.first_echo);
        self.unsent += other.unsent;
        self.outstanding += other.outstanding;
        self.outstanding_oldest_ns = self.outstanding_oldest_ns.max(other.outstanding_oldest_ns);
        for (a, b) in self.errors.iter_mut().zip(other.errors.iter()) {
            *a += b;
        }
        self.udp_sent += other.udp_sent;
        self.udp_lost += other.udp_lost;
        self.udp_late += other.udp_late;
        self.udp_reordered += other.udp_reordered;
        self.window_secs = self.window_secs.max(other.window_secs);
        self.open_secs = self.open_secs.max(other.open_secs);
        self.sources_used = self.sources_used.max(other.sources_used);
    }
}

/// Counts as one JSON object, histograms included (each in HdrHistogram's
/// V2 encoding, as hex): how a client process of `--procs` hands its
/// counts to the parent, which adds them with [`Stats::merge`], so that
/// percentiles come from the merged histograms, never from averaging.
impl Stats {
    /// These counts as JSON ([`Stats::from_json`] reads them back).
    pub fn to_json(&self) -> Value {
        let errors: serde_json::Map<String, Value> = ErrorKind::ALL
            .iter()
            .map(|&k| (k.name().to_string(), json!(self.errors_of(k))))
            .collect();
        json!({
            "established": self.established,
            "failed": self.failed,
            "messages": self.messages,
            "bytes": self.bytes,
            "latency": hist_to_hex(&self.latency),
            "lag": hist_to_hex(&self.lag),
            "connect": hist_to_hex(&self.connect),
            "first_echo": hist_to_hex(&self.first_echo),
            "unsent": self.unsent,
            "outstanding": self.outstanding,
            "outstanding_oldest_ns": self.outstanding_oldest_ns,
            "errors": errors,
            "udp_sent": self.udp_sent,
            "udp_lost": self.udp_lost,
            "udp_late": self.udp_late,
            "udp_reordered": self.udp_reordered,
            "window_secs": self.window_secs,
            "open_secs": self.open_secs,
            "sources_used": self.sources_used,
        })
    }

    /// Counts written by [`Stats::to_json`]; the error names the field
    /// that is missing or malformed.
    pub fn from_json(v: &Value) -> Result<Stats, String> {
        let int = |k: &str| {
            v[k].as_u64()
                .ok_or_else(|| format!("field {k:?} is not a count"))
        };
        let float = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| format!("field {k:?} is not a number"))
        };
        let hist = |k: &str| {
            let hex = v[k]
                .as_str()
                .ok_or_else(|| format!("field {k:?} is not a string"))?;
            hist_from_hex(hex).map_err(|e| format!("field {k:?}: {e}"))
        };
        let mut s = Stats::new();
        s.established = int("established")?;
        s.failed = int("failed")?;
        s.messages = int("messages")?;
        s.bytes = int("bytes")?;
        s.latency = hist("latency")?;
        s.lag = hist("lag")?;
        s.connect = hist("connect")?;
        s.first_echo = hist("first_echo")?;
        s.unsent = int("unsent")?;
        s.outstanding = int("outstanding")?;
        s.outstanding_oldest_ns = int("outstanding_oldest_ns")?;
        for k in ErrorKind::ALL {
            s.errors[k as usize] = v["errors"][k.name()]
                .as_u64()
                .ok_or_else(|| format!("error count {:?} is missing", k.name()))?;
        }
        s.udp_sent = int("udp_sent")?;
        s.udp_lost = int("udp_lost")?;
        s.udp_late = int("udp_late")?;
        // Absent from results saved before it was counted.
        s.udp_reordered = v["udp_reordered"].as_u64().unwrap_or(0);
        s.window_secs = float("window_secs")?;
        s.open_secs = float("open_secs")?;
        s.sources_used = int("sources_used")? as usize;
        Ok(s)
    }
}

/// A histogram in the V2 encoding, as lowercase hex.
fn hist_to_hex(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serializing into a Vec cannot fail for a histogram of u64 counts;
    // an empty string would read back as an error, not as wrong numbers.
    if V2Serializer::new().serialize(h, &mut bytes).is_err() {
        return String::new();
    }
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    hex
}

/// The inverse of [`hist_to_hex`].
fn hist_from_hex(hex: &str) -> Result<Histogram<u64>, String> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return Err("not a hex-encoded histogram".into());
    }
    let digit = |c: u8| {
        (c as char)
            .to_digit(16)
            .ok_or_else(|| "not a hex-encoded histogram".to_string())
    };
    let bytes = hex
        .as_bytes()
        .chunks(2)
        .map(|p| Ok((digit(p[0])? << 4 | digit(p[1])?) as u8))
        .collect::<Result<Vec<u8>, String>>()?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not a V2 histogram: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histograms_survive_json() {
        let mut a = Stats::new();
        a.established = 7;
        a.messages = 1234;
        a.error(ErrorKind::Mismatch);
        a.error(ErrorKind::Timeout);
        a.error(ErrorKind::Timeout);
        for ns in [1_000, 25_000, 25_001, 3_000_000, LATENCY_MAX_NS] {
            a.record_latency(ns);
        }
        a.record_lag(42);
        a.window_secs = 1.5;
        a.sources_used = 3;
        let text = a.to_json().to_string();
        let b = Stats::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(b.established, 7);
        assert_eq!(b.messages, 1234);
        assert_eq!(b.errors, a.errors);
        assert_eq!(b.latency, a.latency);
        assert_eq!(b.lag, a.lag);
        assert_eq!(b.window_secs, 1.5);
        assert_eq!(b.sources_used, 3);
        // Merging what came back adds the histograms.
        let mut m = Stats::new();
        m.merge(&b);
        m.merge(&b);
        assert_eq!(m.latency.len(), 10);
        assert_eq!(m.latency.max(), a.latency.max());
    }

    #[test]
    fn malformed_counts_name_the_field() {
        let mut v = Stats::new().to_json();
        v["latency"] = json!("zz");
        let e = Stats::from_json(&v).unwrap_err();
        assert!(e.contains("latency"), "{e}");
        v["messages"] = json!("many");
        assert!(Stats::from_json(&v).unwrap_err().contains("messages"));
    }

    #[test]
    fn kinds_index_their_own_slot() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        a.error(ErrorKind::Reset);
        b.error(ErrorKind::Reset);
        b.error(ErrorKind::Mismatch);
        a.record_latency(1000);
        b.record_latency(3000);
        a.merge(&b);
        assert_eq!(a.errors_of(ErrorKind::Reset), 2);
        assert_eq!(a.total_errors(), 3);
        assert_eq!(a.latency.len(), 2);
    }
}
