//! The Prometheus text exposition format (version 0.0.4): every counter of
//! [`Stats`] as a metric family with `# HELP` and `# TYPE` lines, in base
//! units (bytes, seconds), one sample per process.
//!
//! One process (the loop's own `/metrics`) writes one sample per family,
//! unlabelled; a master writes one per worker slot, labelled
//! `worker="N"`, so that `sum()` over them is the server's total.

use std::fmt::Write;

use crate::stats::{Stats, WAIT_BUCKETS};

/// A metric's type, as the `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// How a family's value is read from the counters.
#[derive(Clone, Copy)]
enum Read {
    /// A count, as it is.
    Count(fn(&Stats) -> u64),
    /// Nanoseconds, exported in seconds.
    Seconds(fn(&Stats) -> u64),
}

/// One plain family: a name, what it means, its type, where it comes from.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    read: Read,
}

/// Every family with one sample per process, in the order they are
/// written. Closed connections (by reason) and the events-per-wait
/// histogram have labels of their own and are written apart.
const FAMILIES: &[Family] = &[
    Family {
        name: "echo_reactor_connections_accepted_total",
        help: "TCP connections accepted and served (metrics connections included).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.accepted),
    },
    Family {
        name: "echo_reactor_connections_rejected_total",
        help: "TCP connections closed at once on arrival: a connection limit, shutdown, no descriptor left, or a descriptor the backend cannot watch.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.rejected),
    },
    Family {
        name: "echo_reactor_connections_rejected_per_ip_total",
        help: "TCP connections turned away by --max-connections-per-ip (also in connections_rejected_total).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.rejected_per_ip),
    },
    Family {
        name: "echo_reactor_connections_unwatchable_total",
        help: "TCP connections turned away because the backend cannot watch their descriptor (select: FD_SETSIZE; also in connections_rejected_total).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.unwatchable),
    },
    Family {
        name: "echo_reactor_connections_open",
        help: "Echo (and daytime) TCP connections open now, metrics connections not included.",
        kind: Kind::Gauge,
        read: Read::Count(|s| s.active.saturating_sub(s.http_active)),
    },
    Family {
        name: "echo_reactor_http_connections_open",
        help: "Metrics (HTTP) connections open now.",
        kind: Kind::Gauge,
        read: Read::Count(|s| s.http_active),
    },
    Family {
        name: "echo_reactor_http_requests_total",
        help: "HTTP requests answered on --metrics listeners, errors included.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.http_requests),
    },
    Family {
        name: "echo_reactor_http_connections_rejected_total",
        help: "Metrics (HTTP) connections answered 503 and closed on arrival by --metrics-max-connections (also in connections_rejected_total).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.http_rejected),
    },
    Family {
        name: "echo_reactor_http_connections_reclaimed_total",
        help: "Idle keep-alive metrics connections closed to make room for a new one at --metrics-max-connections.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.http_reclaimed),
    },
    Family {
        name: "echo_reactor_protocol_errors_total",
        help: "Connections closed for breaking their protocol (an over-long line, an over-size frame, a malformed or over-large HTTP request).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.protocol_errors),
    },
    Family {
        name: "echo_reactor_received_bytes_total",
        help: "Bytes read from TCP clients.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.bytes_in),
    },
    Family {
        name: "echo_reactor_sent_bytes_total",
        help: "Bytes written to TCP clients.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.bytes_out),
    },
    Family {
        name: "echo_reactor_backpressure_pauses_total",
        help: "Times a connection stopped reading because its pending output passed the high watermark.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.backpressure_pauses),
    },
    Family {
        name: "echo_reactor_accept_errors_total",
        help: "accept calls that failed (descriptor exhaustion and others).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.accept_errors),
    },
    Family {
        name: "echo_reactor_listeners_paused",
        help: "Listeners resting after an accept error they could not shed.",
        kind: Kind::Gauge,
        read: Read::Count(|s| s.listeners_paused),
    },
    Family {
        name: "echo_reactor_timers",
        help: "Entries in the event loop's timer heap.",
        kind: Kind::Gauge,
        read: Read::Count(|s| s.timers),
    },
    Family {
        name: "echo_reactor_udp_datagrams_received_total",
        help: "UDP datagrams received (echo and daytime).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.datagrams_in),
    },
    Family {
        name: "echo_reactor_udp_datagrams_sent_total",
        help: "UDP answers sent.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.datagrams_out),
    },
    Family {
        name: "echo_reactor_udp_datagrams_dropped_total",
        help: "UDP answers dropped because the socket could not send them at once.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.datagrams_dropped),
    },
    Family {
        name: "echo_reactor_udp_datagrams_refused_total",
        help: "UDP datagrams left unanswered because answering could start a loop or keep one going (a peer sending back our recent answers).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.datagrams_refused),
    },
    Family {
        name: "echo_reactor_buffered_bytes",
        help: "Bytes held for clients now (pending output, partial messages), against --max-buffered.",
        kind: Kind::Gauge,
        read: Read::Count(|s| s.buffered),
    },
    Family {
        name: "echo_reactor_buffered_limit_bytes",
        help: "The memory budget, --max-buffered.",
        kind: Kind::Gauge,
        read: Read::Count(|s| s.buffered_limit),
    },
    Family {
        name: "echo_reactor_buffered_peak_bytes",
        help: "The most bytes held for clients at once since the process started.",
        kind: Kind::Gauge,
        read: Read::Count(|s| s.buffered_peak),
    },
    Family {
        name: "echo_reactor_budget_full_total",
        help: "Reads that found the memory budget full (and passed input through, or waited).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.budget_full),
    },
    Family {
        name: "echo_reactor_reservations_released_total",
        help: "Split messages stalled while others waited for memory that gave back the unfilled part of their reservation.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.reservations_released),
    },
    Family {
        name: "echo_reactor_log_lines_dropped_total",
        help: "Log lines dropped because the log sink (stderr) did not keep up.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.log_dropped),
    },
    Family {
        name: "echo_reactor_loop_wait_seconds_total",
        help: "Time the event loop spent inside the poller's wait (idle, or asking the kernel).",
        kind: Kind::Counter,
        read: Read::Seconds(|s| s.wait_ns),
    },
    Family {
        name: "echo_reactor_loop_busy_seconds_total",
        help: "Time the event loop spent between waits: handling events, queued turns and timers.",
        kind: Kind::Counter,
        read: Read::Seconds(|s| s.busy_ns),
    },
    Family {
        name: "echo_reactor_faults_delayed_reads_total",
        help: "Reads whose echo was held back by --delay (faults on demand).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.faults_delayed),
    },
    Family {
        name: "echo_reactor_faults_closed_total",
        help: "Echo connections closed (FIN) by --close-after (also in connections_closed_total).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.faults_closed),
    },
    Family {
        name: "echo_reactor_faults_reset_total",
        help: "Echo connections reset (RST) by --reset-after (also in connections_closed_total).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.faults_reset),
    },
    Family {
        name: "echo_reactor_relays",
        help: "Relay pairs open: a client and the connection opened for it to the upstream.",
        kind: Kind::Gauge,
        read: Read::Count(|s| s.relays),
    },
    Family {
        name: "echo_reactor_upstream_connects_total",
        help: "Connects to the upstream that succeeded.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.upstream_connected),
    },
    Family {
        name: "echo_reactor_upstream_connect_failures_total",
        help: "Connects to the upstream that failed (refused, unreachable, timed out); the client was told.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.upstream_failed),
    },
    Family {
        name: "echo_reactor_proxy_headers_total",
        help: "PROXY protocol headers accepted that named a client (--proxy-protocol).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.proxy_headers),
    },
    Family {
        name: "echo_reactor_proxy_refused_total",
        help: "Connections refused for their PROXY header: malformed, missing, or not whole within 5 s.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.proxy_refused),
    },
    Family {
        name: "echo_reactor_protocol_overruns_total",
        help: "Connections closed because their protocol answered more than it declared (max_answer, amplification, reservation).",
        kind: Kind::Counter,
        read: Read::Count(|s| s.protocol_overruns),
    },
    Family {
        name: "echo_reactor_mail_cutoffs_total",
        help: "Connections cut off because a letter from another connection would have taken their pending output past MAIL_SHARE.",
        kind: Kind::Counter,
        read: Read::Count(|s| s.mail_cutoffs),
    },
];

/// Builds an exposition: families of counters for one or more processes,
/// then any family of the caller's own (the unit test
/// `an_exposition_labels_each_process_and_adds_the_callers_families` shows
/// one).
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    text: String,
}

impl Exposition {
    /// An empty page.
    pub(crate) fn new() -> Exposition {
        Exposition::default()
    }

    /// Every counter family, one sample per `(labels, stats)` pair;
    /// `labels` is written inside the braces as given (`worker="2"`, or
    /// empty for none).
    pub(crate) fn stats(&mut self, samples: &[(&str, &Stats)]) {
        for family in FAMILIES {
            self.head(family.name, family.help, family.kind.name());
            for &(labels, stats) in samples {
                match family.read {
                    Read::Count(read) => self.sample(family.name, labels, "", read(stats)),
                    Read::Seconds(read) => {
                        let secs = read(stats) as f64 / 1e9;
                        self.sample_f64(family.name, labels, "", secs)
                    }
                }
            }
        }
        self.closed(samples);
        self.waits(samples);
    }

    /// Closed connections, one sample per reason; the reasons add up to
    /// every close.
    fn closed(&mut self, samples: &[(&str, &Stats)]) {
        const NAME: &str = "echo_reactor_connections_closed_total";
        self.head(
            NAME,
            "TCP connections closed after being served, by reason: idle_timeout (--idle-timeout), linger_timeout (no FIN within the linger bound), evicted (--evict-after), other (peer closed, errors, shutdown, protocol).",
            "counter",
        );
        for &(labels, s) in samples {
            let reasoned = (s.timed_out)
                .saturating_add(s.linger_timeouts)
                .saturating_add(s.evicted);
            let other = s.closed.saturating_sub(reasoned);
            for (reason, value) in [
                ("idle_timeout", s.timed_out),
                ("linger_timeout", s.linger_timeouts),
                ("evicted", s.evicted),
                ("other", other),
            ] {
                self.sample(NAME, labels, &format!("reason=\"{reason}\""), value);
            }
        }
    }

    /// Events per wait, as a histogram (its count is the loop's ticks).
    fn waits(&mut self, samples: &[(&str, &Stats)]) {
        const NAME: &str = "echo_reactor_loop_events_per_wait";
        self.head(
            NAME,
            "Events each call of the poller's wait reported; the count is the loop's ticks.",
            "histogram",
        );
        let bucket = format!("{NAME}_bucket");
        for &(labels, s) in samples {
            let mut cumulative = 0;
            for (le, count) in WAIT_BUCKETS.iter().zip(s.wait_buckets()) {
                cumulative = u64::saturating_add(cumulative, count);
                self.sample(&bucket, labels, &format!("le=\"{le}\""), cumulative);
            }
            self.sample(&bucket, labels, "le=\"+Inf\"", s.ticks);
            self.sample(&format!("{NAME}_sum"), labels, "", s.events);
            self.sample(&format!("{NAME}_count"), labels, "", s.ticks);
        }
    }

    /// A family of the caller's own: `kind` is `counter` or `gauge`, one
    /// sample per `(labels, value)`.
    pub(crate) fn family(&mut self, name: &str, help: &str, kind: &str, samples: &[(&str, f64)]) {
        self.head(name, help, kind);
        for &(labels, value) in samples {
            self.sample_f64(name, labels, "", value);
        }
    }

    /// The text, ready to serve as `text/plain; version=0.0.4`.
    pub(crate) fn finish(self) -> String {
        self.text
    }

    fn head(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn labels(&mut self, name: &str, labels: &str, more: &str) {
        self.text.push_str(name);
        match (labels.is_empty(), more.is_empty()) {
            (true, true) => {}
            (false, true) => {
                let _ = write!(self.text, "{{{labels}}}");
            }
            (true, false) => {
                let _ = write!(self.text, "{{{more}}}");
            }
            (false, false) => {
                let _ = write!(self.text, "{{{labels},{more}}}");
            }
        }
    }

    fn sample(&mut self, name: &str, labels: &str, more: &str, value: u64) {
        self.labels(name, labels, more);
        let _ = writeln!(self.text, " {value}");
    }

    fn sample_f64(&mut self, name: &str, labels: &str, more: &str, value: f64) {
        self.labels(name, labels, more);
        let _ = writeln!(self.text, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exposition_labels_each_process_and_adds_the_callers_families() {
        let stats = Stats {
            accepted: 3,
            ..Stats::default()
        };
        let mut page = Exposition::new();
        page.stats(&[("worker=\"0\"", &stats)]);
        page.family("up_workers", "Workers serving.", "gauge", &[("", 1.0)]);
        let text = page.finish();
        assert!(text.contains("echo_reactor_connections_accepted_total{worker=\"0\"} 3\n"));
        assert!(text.contains("# TYPE up_workers gauge\nup_workers 1\n"));
    }

    #[test]
    fn a_protocols_overruns_and_mail_cutoffs_are_on_the_page() {
        let stats = Stats {
            protocol_overruns: 5,
            mail_cutoffs: 7,
            ..Stats::default()
        };
        let mut page = Exposition::new();
        page.stats(&[("", &stats)]);
        let text = page.finish();
        assert!(
            text.contains("\necho_reactor_protocol_overruns_total 5\n"),
            "{text}"
        );
        assert!(
            text.contains("\necho_reactor_mail_cutoffs_total 7\n"),
            "{text}"
        );
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let stats = Stats {
            closed: 10,
            timed_out: 2,
            evicted: 1,
            wait_ns: 1_500_000_000,
            ..Stats::default()
        };
        let mut page = Exposition::new();
        page.stats(&[("worker=\"0\"", &stats), ("worker=\"1\"", &stats)]);
        let text = page.finish();
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap_or("").to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|f| declared.contains(*f))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{line}: no TYPE before it");
            }
        }
        assert!(
            text.contains(
                "echo_reactor_connections_closed_total{worker=\"1\",reason=\"other\"} 7\n"
            )
        );
        assert!(text.contains("echo_reactor_loop_wait_seconds_total{worker=\"0\"} 1.5\n"));
    }
}
