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
use std::fmt::Write;

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Smallest sample.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }

    fn json(&self) -> Value {
        json!({
            "count": self.count,
            "min": self.min, "mean": self.mean, "p50": self.p50, "p90": self.p90,
            "p99": self.p99, "p99_9": self.p999, "max": self.max,
        })
    }
}

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
            messages: s.messages,
            duration_secs: s.window_secs,
            req_per_sec,
            mb_per_sec: bytes_per_sec / 1e6,
            latency_us: Percentiles::of(&s.latency),
            outstanding: s.outstanding,
            outstanding_oldest_ms: s.outstanding_oldest_ns as f64 / 1e6,
            errors: ErrorKind::ALL
                .iter()
                .map(|&k| (k, s.errors_of(k)))
                .collect(),
            max_errors: cfg.max_errors,
            schedule_lag_us: cfg.rate.map(|_| Percentiles::of(&s.lag)),
            unsent: s.unsent,
            udp: (cfg.transport == Transport::Udp).then_some((s.udp_sent, s.udp_lost, s.udp_late)),
            procs: Vec::new(),
        }
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

    /// A clean run: no mismatch ever, and errors within `--max-errors`.
    pub fn passed(&self) -> bool {
        self.error_count(ErrorKind::Mismatch) == 0 && self.total_errors() <= self.max_errors
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
            "latency_us": self.latency_us.json(),
            "outstanding": {
                "count": self.outstanding,
                "oldest_ms": self.outstanding_oldest_ms,
            },
            "errors": errors,
            "errors_total": self.total_errors(),
            "passed": self.passed(),
            "warnings": self.warnings(),
        });
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
            "latency us   min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.min, l.p50, l.p90, l.p99, l.p999, l.max
        );
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
            if self.passed() { "" } else { "   FAILED" }
        )
    }
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
