//! The server's counters: what happened to connections and bytes.
//!
//! The loop is single-threaded, so these are plain integers, not atomics.
//! They are logged every `--stats-interval` and once at exit, as
//! `key=value` pairs that are easy to grep and to parse in tests.

use std::fmt;

/// Declares [`Stats`] once, field by field, and derives from that one list
/// how it prints, parses back and adds up (a master sums its workers').
macro_rules! stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Counters kept by the event loop.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Stats {
            /// Every field's name and value, in print order.
            fn fields(&self) -> [(&'static str, u64); [$(stringify!($name)),*].len()] {
                [$((stringify!($name), self.$name)),*]
            }

            /// The field called `name`, if there is one.
            fn field_mut(&mut self, name: &str) -> Option<&mut u64> {
                match name {
                    $(stringify!($name) => Some(&mut self.$name),)*
                    _ => None,
                }
            }
        }
    };
}

stats! {
    /// Connections accepted and served.
    accepted,
    /// Connections closed at once on arrival: over `--max-connections`,
    /// during shutdown, or shed while descriptors were exhausted.
    rejected,
    /// Connections open now.
    active,
    /// Served connections closed, for any reason (timeouts included).
    closed,
    /// Connections closed by the idle timeout.
    timed_out,
    /// Bytes read from clients (and so echoed, or about to be).
    bytes_in,
    /// Bytes written back to clients.
    bytes_out,
    /// Times a connection's input was paused because its pending output
    /// passed the high watermark.
    backpressure_pauses,
    /// `accept` calls that failed (descriptor exhaustion and others).
    accept_errors,
    /// Connections closed for breaking their protocol: an over-long line,
    /// an over-size frame, a frame cut off by EOF.
    protocol_errors,
    /// Connections closed because their protocol answered (or posted)
    /// more than it declares: an answer past `max_answer`, a read's
    /// answers past `amplification`, a split message past its reservation
    /// (`protocol/mod.rs`, "Sizes are enforced"). A bug of the protocol,
    /// not of the client.
    protocol_overruns,
    /// Connections disconnected because a letter from another connection
    /// would have taken their pending output past their share
    /// (`protocol/link.rs`, "A recipient that does not read").
    mail_cutoffs,
    /// UDP datagrams received (echo and daytime).
    datagrams_in,
    /// UDP datagrams sent back.
    datagrams_out,
    /// UDP answers dropped because the socket could not send them at once.
    datagrams_dropped,
    /// UDP datagrams left unanswered because answering could start a loop
    /// (from our own sockets, port 0, or a reflecting service's port) or
    /// keep one going (a peer sending our recent answers back, past the
    /// repeat allowance).
    datagrams_refused,
    /// Connections turned away by `--max-connections-per-ip`; also in
    /// `rejected`.
    rejected_per_ip,
    /// Lingering closes cut short because the client never sent its FIN
    /// within the linger bound.
    linger_timeouts,
    /// Bytes held for clients now (pending output, partial messages),
    /// against `--max-buffered`.
    buffered,
    /// The most bytes held for clients at once.
    buffered_peak,
    /// The memory budget, `--max-buffered`.
    buffered_limit,
    /// Reads that found the memory budget full (and passed through, or
    /// waited).
    budget_full,
    /// Split messages stalled while others waited for room that gave back
    /// the unfilled part of their reservation (`reactor/memory.rs`).
    reservations_released,
    /// Connections closed by `--evict-after`.
    evicted,
    /// Connections closed at once because the backend cannot watch their
    /// descriptor (select: at or above `FD_SETSIZE`); also in `rejected`.
    unwatchable,
    /// Listeners resting after an accept error they could not shed, now.
    listeners_paused,
    /// Entries in the timer heap now: live connections' deadlines plus
    /// closed ones' not yet compacted away (at most about twice what the
    /// live connections account for; `reactor/deadlines.rs`).
    timers,
    /// Metrics (HTTP) connections open now; also in `active`.
    http_active,
    /// HTTP requests answered on `--metrics` listeners, errors included.
    http_requests,
    /// Metrics connections turned away (answered `503`) by
    /// `--metrics-max-connections`; also in `rejected`.
    http_rejected,
    /// Idle keep-alive metrics connections closed to make room for a new
    /// one at `--metrics-max-connections`.
    http_reclaimed,
    /// Log lines dropped because the log sink did not keep up (process
    /// wide; see `log_sink.rs`).
    log_dropped,
    /// Loop ticks: calls of the poller's `wait`.
    ticks,
    /// Nanoseconds spent inside the poller's `wait` (sleeping, or asking
    /// the kernel).
    wait_ns,
    /// Nanoseconds spent between waits: handling events, queued turns and
    /// timers.
    busy_ns,
    /// Events the waits reported, all together.
    events,
    /// Waits that reported no event (a timer or a queued turn woke it).
    waits_0,
    /// Waits that reported exactly 1 event.
    waits_1,
    /// Waits that reported 2 events.
    waits_2,
    /// Waits that reported 3 or 4 events.
    waits_4,
    /// Waits that reported 5 to 8 events.
    waits_8,
    /// Waits that reported 9 to 16 events.
    waits_16,
    /// Waits that reported 17 to 32 events.
    waits_32,
    /// Waits that reported 33 to 64 events.
    waits_64,
    /// Waits that reported 65 to 128 events (the most one wait takes).
    waits_128,
    /// Reads held back by `--delay` before their echo.
    faults_delayed,
    /// Connections closed by `--close-after`.
    faults_closed,
    /// Connections reset by `--reset-after`.
    faults_reset,
    /// Relay pairs open now (a client and its upstream connection;
    /// `Config::upstream`); not in `active`.
    relays,
    /// Upstream connects that succeeded.
    upstream_connected,
    /// Upstream connects that failed (refused, unreachable, timed out);
    /// the client was told so.
    upstream_failed,
    /// PROXY headers accepted that named a client (`--proxy-protocol`).
    proxy_headers,
    /// Connections refused for their PROXY header: malformed, missing,
    /// or not whole within the timeout.
    proxy_refused,
}

/// The upper bounds of the `waits_*` buckets, in field order: a wait that
/// reported `n` events is counted in the first bucket whose bound is `n`
/// or more ([`Stats::count_wait`]).
pub const WAIT_BUCKETS: [u64; 9] = [0, 1, 2, 4, 8, 16, 32, 64, 128];

impl Stats {
    /// Counts one wait that reported `events` events: the total, and the
    /// bucket of [`WAIT_BUCKETS`] it falls in (a wait reports at most 128,
    /// the loop's batch; more would count in the last bucket).
    #[inline]
    pub fn count_wait(&mut self, events: usize) {
        self.ticks += 1;
        self.events += events as u64;
        // 0 -> 0, 1 -> 1, 2 -> 2, 3..=4 -> 3, 5..=8 -> 4, ... 65..=128 -> 8.
        let bucket = if events == 0 {
            0
        } else {
            (usize::BITS - (events - 1).leading_zeros()) as usize + 1
        };
        *self.wait_bucket(bucket.min(WAIT_BUCKETS.len() - 1)) += 1;
    }

    /// The count of waits in bucket `i` of [`WAIT_BUCKETS`].
    fn wait_bucket(&mut self, i: usize) -> &mut u64 {
        match i {
            0 => &mut self.waits_0,
            1 => &mut self.waits_1,
            2 => &mut self.waits_2,
            3 => &mut self.waits_4,
            4 => &mut self.waits_8,
            5 => &mut self.waits_16,
            6 => &mut self.waits_32,
            7 => &mut self.waits_64,
            _ => &mut self.waits_128,
        }
    }

    /// The waits in each bucket of [`WAIT_BUCKETS`] (not cumulative).
    pub fn wait_buckets(&self) -> [u64; 9] {
        [
            self.waits_0,
            self.waits_1,
            self.waits_2,
            self.waits_4,
            self.waits_8,
            self.waits_16,
            self.waits_32,
            self.waits_64,
            self.waits_128,
        ]
    }

    /// Adds `other`'s counters to these (a master summing its workers).
    /// Gauges add too: `active` and `buffered` are the totals held now,
    /// and `buffered_peak` becomes an upper bound of the most held at once.
    pub fn add(&mut self, other: &Stats) {
        for (name, value) in other.fields() {
            if let Some(total) = self.field_mut(name) {
                *total += value;
            }
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.fields().into_iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={value}")?;
        }
        Ok(())
    }
}

/// Reads back what `Display` wrote: `key=value` pairs separated by spaces.
/// Keys not given stay 0; an unknown key or a value that is not a number is
/// an error.
impl std::str::FromStr for Stats {
    type Err = String;

    fn from_str(text: &str) -> Result<Stats, String> {
        let mut stats = Stats::default();
        for pair in text.split_whitespace() {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("expected KEY=VALUE, got {pair:?}"))?;
            let field = stats
                .field_mut(name)
                .ok_or_else(|| format!("unknown counter {name:?}"))?;
            *field = value
                .parse()
                .map_err(|_| format!("{name}: not a count: {value:?}"))?;
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_print_parse_back_and_add_up() {
        let mut a = Stats {
            accepted: 3,
            bytes_in: 70,
            unwatchable: 1,
            ..Stats::default()
        };
        let text = a.to_string();
        assert!(text.starts_with("accepted=3 rejected=0 "), "{text}");
        assert!(text.contains(" evicted=0 unwatchable=1 "), "{text}");
        assert_eq!(text.parse::<Stats>(), Ok(a));
        a.add(&a.clone());
        assert_eq!((a.accepted, a.bytes_in, a.unwatchable), (6, 140, 2));
        assert!("accepted=x".parse::<Stats>().is_err());
        assert!("nonsense=1".parse::<Stats>().is_err());
        assert!("accepted".parse::<Stats>().is_err());
    }

    #[test]
    fn each_wait_lands_in_the_bucket_of_its_event_count() {
        let mut stats = Stats::default();
        for n in [0, 1, 2, 3, 4, 5, 8, 9, 64, 65, 128, 500] {
            stats.count_wait(n);
        }
        assert_eq!(stats.wait_buckets(), [1, 1, 1, 2, 2, 1, 0, 1, 3]);
        assert_eq!(stats.ticks, 12);
        assert_eq!(stats.events, 789);
    }
}
