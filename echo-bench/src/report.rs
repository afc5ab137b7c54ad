//! The report of one run, as data first: the binary prints it as a table
//! or as one JSON object, tests read its fields directly.
//!
//! Units: latencies in microseconds (with fractions: loopback round trips
//! are a few tens of them), throughput in messages per second and in
//! MB/s (10^6 bytes per second) of payload echoed back, one direction.

use crate::config::{Config, StopAt, Transport};
use crate::stats::{ErrorKind, Stats};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

pub use crate::histogram::Percentiles;
use crate::histogram::{Interval, write_interval_log};
use crate::run_info::RunInfo;
use std::fmt::Write;
use std::io;
use std::path::Path;
use std::time::Duration;

/// Everything a run found out.
#[derive(Debug, Clone)]
pub struct Report {
    /// The echo service's address.
    pub addr: String,
    /// TCP or UDP.
    pub transport: Transport,
    /// The server's mode spoken (`raw`, `line upper`, `frame`, ...).
    pub protocol: String,
    /// Engine threads.
    pub threads: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub depth: usize,
    /// Open-loop target rate, if any.
    pub rate: Option<u64>,
    /// `-n`: the messages asked for, when the run measured a count rather
    /// than a time.
    pub requests: Option<u64>,
    /// Loopback source addresses the connections were spread over.
    pub source_ips: usize,
    /// Connections asked for.
    pub connections_requested: u64,
    /// Connections proven by their first echo.
    pub connections_established: u64,
    /// Connections that failed before their first echo.
    pub connections_failed: u64,
    /// Seconds until every connection was open or had failed (slowest thread).
    pub open_secs: f64,
    /// `--idle`: seconds every connection sat open and silent before the
    /// window (0 for none).
    pub idle_secs: f64,
    /// `--warmup`: seconds of traffic before the window, not counted.
    pub warmup_secs: f64,
    /// Messages echoed inside the measured window.
    pub messages: u64,
    /// Length of the measured window (longest thread), seconds.
    pub duration_secs: f64,
    /// Messages per second (sum of the threads' rates).
    pub req_per_sec: f64,
    /// Payload echoed back per second, in 10^6 bytes.
    pub mb_per_sec: f64,
    /// Round-trip latency of the measured messages, microseconds (echoes
    /// still due when the window closed count at their age then).
    pub latency_us: Percentiles,
    /// Echoes still due when the window closed.
    pub outstanding: u64,
    /// Age of the oldest of them at that moment, milliseconds.
    pub outstanding_oldest_ms: f64,
    /// Errors by kind, in [`ErrorKind::ALL`] order.
    pub errors: Vec<(ErrorKind, u64)>,
    /// Errors tolerated (`--max-errors`).
    pub max_errors: u64,
    /// Thresholds broken (`--max-p99`, `--min-rps`, ...), each a sentence
    /// that names it; any fails the run.
    pub broken: Vec<String>,
    /// The latency histogram itself, in nanoseconds (for `--json` and
    /// `--hdr-log`).
    pub latency_hist: Histogram<u64>,
    /// TCP: from `connect` to established, microseconds.
    pub connect_us: Percentiles,
    /// TCP: from `connect` to the first echo, microseconds.
    pub first_echo_us: Percentiles,
    /// Their histograms, in nanoseconds.
    pub connect_hist: Histogram<u64>,
    /// See `connect_hist`.
    pub first_echo_hist: Histogram<u64>,
    /// Open loop: lateness of sends against the schedule, microseconds.
    pub schedule_lag_us: Option<Percentiles>,
    /// Open loop: messages due in the window that never left.
    pub unsent: u64,
    /// UDP: datagrams sent, lost and late (in the window).
    pub udp: Option<(u64, u64, u64)>,
    /// `--procs`: each client process's own part, in process order (empty
    /// for a run in one process). The fields above are then the sums over
    /// them (latencies: of the merged histograms; oldest outstanding,
    /// window and opening time: the largest).
    pub procs: Vec<ProcPart>,
}

/// One client process's part of a `--procs` run.
#[derive(Debug, Clone)]
pub struct ProcPart {
    /// Its index, `0..procs`.
    pub index: usize,
    /// Its process id.
    pub pid: u32,
    /// Its own report (its connections, its share of the rates).
    pub report: Report,
}

/// The keys of a process's part in `--json` that are the whole run's.
const RUN_KEYS: [&str; 8] = [
    "addr",
    "transport",
    "mode",
    "protocol",
    "threads",
    "size",
    "depth",
    "passed",
];

impl Report {
    pub(crate) fn new(
        cfg: &Config,
        sources: usize,
        s: &Stats,
        req_per_sec: f64,
        bytes_per_sec: f64,
    ) -> Report {
        Report {
            addr: cfg.addr.to_string(),
            transport: cfg.transport,
            protocol: cfg.protocol.to_string(),
            threads: cfg.threads,
            size: cfg.size,
            depth: cfg.depth,
            rate: cfg.rate,
            requests: match cfg.stop {
                StopAt::Requests(n) => Some(n),
                StopAt::Duration(_) => None,
            },
            source_ips: sources.max(s.sources_used),
            connections_requested: cfg.connections as u64,
            connections_established: s.established,
            connections_failed: s.failed,
            open_secs: s.open_secs,
            idle_secs: cfg.idle.as_secs_f64(),
            warmup_secs: cfg.warmup.as_secs_f64(),
            messages: s.messages,
            duration_secs: s.window_secs,
            req_per_sec,
            mb_per_sec: bytes_per_sec / 1e6,
            latency_us: Percentiles::of(&s.latency, &cfg.percentiles),
            latency_hist: s.latency.clone(),
            connect_us: Percentiles::of(&s.connect, &cfg.percentiles),
            first_echo_us: Percentiles::of(&s.first_echo, &cfg.percentiles),
            connect_hist: s.connect.clone(),
            first_echo_hist: s.first_echo.clone(),
            outstanding: s.outstanding,
            outstanding_oldest_ms: s.outstanding_oldest_ns as f64 / 1e6,
            errors: ErrorKind::ALL
                .iter()
                .map(|&k| (k, s.errors_of(k)))
                .collect(),
            max_errors: cfg.max_errors,
            broken: cfg
                .gates
                .iter()
                .filter_map(|g| g.check(&s.latency, req_per_sec))
                .collect(),
            schedule_lag_us: cfg.rate.map(|_| Percentiles::of(&s.lag, &cfg.percentiles)),
            unsent: s.unsent,
            udp: (cfg.transport == Transport::Udp).then_some((s.udp_sent, s.udp_lost, s.udp_late)),
            procs: Vec::new(),
        }
    }

    /// Writes the window's histograms to `path` as an HdrHistogram
    /// interval log, in nanoseconds, timed from the run's start (the window
    /// begins after opening, idling and warming up): `connect` and
    /// `first_echo` (TCP) over the opening, then `latency`, one line for
    /// the whole window or, with `--interval`, one per interval
    /// (`intervals`: from and to, in seconds of the window, and the
    /// histogram in base64, as [`crate::histogram::to_base64`] writes it).
    pub fn write_hdr_log(
        &self,
        path: &Path,
        info: &RunInfo,
        intervals: &[(f64, f64, String)],
    ) -> io::Result<()> {
        let secs = |s: f64| Duration::try_from_secs_f64(s).unwrap_or_default();
        let opening = secs(self.open_secs);
        let before_window = self.open_secs + self.idle_secs + self.warmup_secs;
        let mut fixed = Vec::new();
        if self.transport == Transport::Tcp {
            for (tag, histogram) in [
                ("connect", &self.connect_hist),
                ("first_echo", &self.first_echo_hist),
            ] {
                fixed.push(Interval {
                    tag,
                    offset: Duration::ZERO,
                    length: opening,
                    histogram: histogram.clone(),
                });
            }
        }
        let whole = intervals.is_empty().then(|| Interval {
            tag: "latency",
            offset: secs(before_window),
            length: secs(self.duration_secs),
            histogram: self.latency_hist.clone(),
        });
        let each = intervals.iter().filter_map(|(from, to, b64)| {
            Some(Interval {
                tag: "latency",
                offset: secs(before_window + from),
                length: secs(to - from),
                histogram: crate::histogram::from_base64(b64).ok()?,
            })
        });
        let intervals = fixed.into_iter().chain(whole).chain(each);
        let comment = format!(
            "echo-bench {}: {}",
            env!("CARGO_PKG_VERSION"),
            info.command.join(" ")
        );
        write_interval_log(path, &comment, info.started, intervals)
    }

    /// The count of one error kind.
    pub fn error_count(&self, kind: ErrorKind) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    /// All errors together (UDP loss is not an error).
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    /// The share of the run (opening plus window) spent opening the
    /// connections, 0 to 1.
    pub fn open_share(&self) -> f64 {
        let whole = self.open_secs + self.duration_secs;
        if whole > 0.0 {
            self.open_secs / whole
        } else {
            0.0
        }
    }

    /// What a reader of the figures must know before trusting them; each
    /// one a sentence. Today one: a closed-loop window shorter than one
    /// round over all connections, where fewer echoes were measured than
    /// there are connections. Then most connections waited longer than
    /// the window for their turn, so req/s counts only the few measured
    /// (far below what the live line showed) and the latency is their
    /// age at the window's end.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let closed_timed = self.rate.is_none() && self.requests.is_none();
        if closed_timed
            && self.transport == Transport::Tcp
            && self.connections_established > 0
            && self.messages < self.connections_established
        {
            w.push(format!(
                "the {:.2} s window is shorter than one round over all {} connections (only {} \
                 echoes were measured in it): most connections waited longer than the window for \
                 their turn, so req/s counts only those few and latency is mostly their age at \
                 the end; measure longer (-t) or use fewer connections",
                self.duration_secs, self.connections_established, self.messages
            ));
        }
        w
    }

    /// A clean run: no mismatch ever, errors within `--max-errors`, no
    /// threshold broken, and at least one connection served.
    pub fn passed(&self) -> bool {
        self.error_count(ErrorKind::Mismatch) == 0
            && self.total_errors() <= self.max_errors
            && self.broken.is_empty()
            && !self.served_none()
    }

    /// Connections were tried and not one was served, although the server
    /// answered (a server that never answers makes no report: it cannot
    /// be reached): every first reply was something else than the echo.
    pub fn served_none(&self) -> bool {
        self.connections_established == 0 && self.connections_failed > 0
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let errors: serde_json::Map<String, Value> = self
            .errors
            .iter()
            .map(|(k, n)| (k.name().to_string(), json!(n)))
            .collect();
        let mut v = json!({
            "addr": self.addr,
            "transport": match self.transport { Transport::Tcp => "tcp", Transport::Udp => "udp" },
            "mode": if self.rate.is_some() { "open-loop" } else { "closed-loop" },
            "protocol": self.protocol,
            "threads": self.threads,
            "size": self.size,
            "depth": self.depth,
            "source_ips": self.source_ips,
            "connections": {
                "requested": self.connections_requested,
                "established": self.connections_established,
                "failed": self.connections_failed,
                "open_s": self.open_secs,
                "open_share": self.open_share(),
                "idle_s": self.idle_secs,
            },
            "messages": self.messages,
            "duration_s": self.duration_secs,
            "req_per_s": self.req_per_sec,
            "mb_per_s": self.mb_per_sec,
            "latency_us": with_histogram(self.latency_us.json(), &self.latency_hist),
            "outstanding": {
                "count": self.outstanding,
                "oldest_ms": self.outstanding_oldest_ms,
            },
            "errors": errors,
            "errors_total": self.total_errors(),
            "passed": self.passed(),
            "thresholds_broken": self.broken,
            "warnings": self.warnings(),
        });
        if self.transport == Transport::Tcp {
            v["connect_us"] = with_histogram(self.connect_us.json(), &self.connect_hist);
            v["first_echo_us"] = with_histogram(self.first_echo_us.json(), &self.first_echo_hist);
        }
        if let (Some(rate), Some(lag)) = (self.rate, &self.schedule_lag_us) {
            v["schedule"] = json!({
                "rate": rate,
                "lag_us": lag.json(),
                "unsent": self.unsent,
            });
        }
        if let Some((sent, lost, late)) = self.udp {
            v["udp"] = json!({ "sent": sent, "lost": lost, "late": late });
        }
        if !self.procs.is_empty() {
            v["procs"] = self.procs.iter().map(ProcPart::to_json).collect();
        }
        v
    }

    /// The header's "N thread(s)", with the processes if there are several.
    fn threads_text(&self) -> String {
        match self.procs.len() {
            0 | 1 => format!("{} thread(s)", self.threads),
            n => format!("{} thread(s) x {n} processes", self.threads),
        }
    }

    /// The table's `outstanding` value: the count, and the oldest age if
    /// there is one.
    fn outstanding_line(&self) -> String {
        if self.outstanding == 0 {
            "0".to_string()
        } else {
            format!(
                "{} (oldest {:.3} ms)",
                self.outstanding, self.outstanding_oldest_ms
            )
        }
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let mut o = String::new();
        let proto = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        };
        let mut mode = match self.rate {
            Some(r) => format!("open loop at {r} msg/s"),
            None => "closed loop".to_string(),
        };
        if self.protocol != "raw" {
            mode = format!("{}, {mode}", self.protocol);
        }
        if self.idle_secs > 0.0 {
            let _ = write!(mode, " after {} s idle", self.idle_secs);
        }
        // Writing to a String cannot fail.
        let _ = writeln!(
            o,
            "echo-bench {proto}://{}  {} B x depth {}, {mode}, {}, {} source address(es)",
            self.addr,
            self.size,
            self.depth,
            self.threads_text(),
            self.source_ips
        );
        let _ = writeln!(
            o,
            "connections  requested {}  established {}  failed {}  (opened in {:.2} s, {:.0}% of \
             opening and window)",
            self.connections_requested,
            self.connections_established,
            self.connections_failed,
            self.open_secs,
            self.open_share() * 100.0
        );
        let _ = writeln!(
            o,
            "messages     {} in {:.2} s   {:.0} req/s   {:.2} MB/s",
            self.messages, self.duration_secs, self.req_per_sec, self.mb_per_sec
        );
        let l = &self.latency_us;
        let _ = writeln!(
            o,
            "latency us   min {:.1}  {}  max {:.1}",
            l.min,
            l.chosen_text(),
            l.max
        );
        if self.transport == Transport::Tcp && self.connect_us.count > 0 {
            for (name, p) in [
                ("connect", &self.connect_us),
                ("first echo", &self.first_echo_us),
            ] {
                let _ = writeln!(
                    o,
                    "{name:<10} us  min {:.1}  {}  max {:.1}",
                    p.min,
                    p.chosen_text(),
                    p.max
                );
            }
        }
        let _ = writeln!(o, "outstanding  {}", self.outstanding_line());
        if let Some(lag) = &self.schedule_lag_us {
            let _ = writeln!(
                o,
                "schedule lag us  p50 {:.1}  p99 {:.1}  max {:.1}   unsent {}",
                lag.p50, lag.p99, lag.max, self.unsent
            );
        }
        if let Some((sent, lost, late)) = self.udp {
            let _ = writeln!(o, "udp          sent {sent}  lost {lost}  late {late}");
        }
        let _ = writeln!(o, "errors       {}", self.errors_line());
        for b in &self.broken {
            let _ = writeln!(o, "threshold    {b}   FAILED");
        }
        for w in self.warnings() {
            let _ = writeln!(o, "warning      {w}");
        }
        o
    }

    /// The table's `errors` value: each kind seen with its count, or
    /// `none`, and `FAILED` when the run did not pass.
    fn errors_line(&self) -> String {
        let errs: Vec<String> = self
            .errors
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        format!(
            "{}{}",
            if errs.is_empty() {
                "none".to_string()
            } else {
                errs.join("  ")
            },
            if self.error_count(ErrorKind::Mismatch) == 0 && self.total_errors() <= self.max_errors
            {
                ""
            } else {
                "   FAILED"
            }
        )
    }
}

/// Percentiles' JSON with the whole histogram beside them, as
/// HdrHistogram's compressed V2 encoding in base64 (nanoseconds).
fn with_histogram(mut v: Value, h: &Histogram<u64>) -> Value {
    v["histogram"] = json!(crate::histogram::to_base64(h));
    v
}

impl ProcPart {
    /// This process's entry in the `procs` array of `--json`: its report
    /// without what the whole run's report already says, with its index
    /// and process id.
    pub fn to_json(&self) -> Value {
        let mut v = self.report.to_json();
        if let Some(o) = v.as_object_mut() {
            for k in RUN_KEYS {
                o.remove(k);
            }
            o.insert("index".into(), json!(self.index));
            o.insert("pid".into(), json!(self.pid));
        }
        v
    }
}
