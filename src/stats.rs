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
    /// UDP datagrams received (echo and daytime).
    datagrams_in,
    /// UDP datagrams sent back.
    datagrams_out,
    /// UDP answers dropped because the socket could not send them at once.
    datagrams_dropped,
    /// UDP datagrams left unanswered because answering could start a loop
    /// (from our own sockets, port 0, or a reflecting service's port).
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
    /// Reads that found the memory budget full (and passed through, or
    /// waited).
    budget_full,
    /// Connections closed by `--evict-after`.
    evicted,
    /// Connections closed at once because the backend cannot watch their
    /// descriptor (select: at or above `FD_SETSIZE`); also in `rejected`.
    unwatchable,
}

impl Stats {
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
        assert!(text.ends_with(" evicted=0 unwatchable=1"), "{text}");
        assert_eq!(text.parse::<Stats>(), Ok(a));
        a.add(&a.clone());
        assert_eq!((a.accepted, a.bytes_in, a.unwatchable), (6, 140, 2));
        assert!("accepted=x".parse::<Stats>().is_err());
        assert!("nonsense=1".parse::<Stats>().is_err());
        assert!("accepted".parse::<Stats>().is_err());
    }
}
