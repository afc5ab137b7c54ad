//! Thresholds a run must meet (`--max-p99 2ms`, `--min-rps 50000`, ...):
//! a run that breaks one fails (exit 1), and the report names each one
//! broken with the figure that broke it. They are checked on the whole
//! run's figures (with `--procs`, the merged ones).

use hdrhistogram::Histogram;
use std::fmt;

/// One threshold.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// A latency percentile (`None`: the maximum) at most this many
    /// microseconds.
    MaxLatency {
        /// The flag, for the message (`--max-p99`).
        flag: &'static str,
        /// The percentile, 0-100; `None` for the largest latency.
        percentile: Option<f64>,
        /// The limit, microseconds.
        limit_us: f64,
    },
    /// At least this many messages per second.
    MinRps(f64),
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gate::MaxLatency { flag, limit_us, .. } => write!(f, "{flag} {}", time(*limit_us)),
            Gate::MinRps(n) => write!(f, "--min-rps {n}"),
        }
    }
}

impl Gate {
    /// `None` if the run met it; otherwise what broke it, one sentence.
    pub fn check(&self, latency_ns: &Histogram<u64>, req_per_sec: f64) -> Option<String> {
        match *self {
            Gate::MaxLatency {
                percentile,
                limit_us,
                ..
            } => {
                let ns = match percentile {
                    _ if latency_ns.is_empty() => 0,
                    Some(p) => latency_ns.value_at_quantile(p / 100.0),
                    None => latency_ns.max(),
                };
                let us = ns as f64 / 1000.0;
                let what = match percentile {
                    Some(p) => format!("p{}", crate::histogram::percentile_name(p)),
                    None => "max".to_string(),
                };
                (us > limit_us).then(|| format!("{self} broken: {what} was {}", time(us)))
            }
            Gate::MinRps(min) => {
                (req_per_sec < min).then(|| format!("{self} broken: {req_per_sec:.0} req/s"))
            }
        }
    }
}

/// Microseconds as people write a time: `850 us`, `2.5 ms`, `1.2 s`.
fn time(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.3} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.3} ms", us / 1e3)
    } else {
        format!("{us:.1} us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_us: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for v in values_us {
            h.record(v * 1000).unwrap();
        }
        h
    }

    #[test]
    fn a_broken_latency_gate_names_itself_and_the_figure() {
        let g = Gate::MaxLatency {
            flag: "--max-p99",
            percentile: Some(99.0),
            limit_us: 2000.0,
        };
        let h = hist(
            &[100; 98]
                .iter()
                .chain(&[3000, 3000])
                .copied()
                .collect::<Vec<_>>(),
        );
        let broken = g.check(&h, 1.0).expect("broken");
        assert!(
            broken.starts_with("--max-p99 2.000 ms broken: p99 was 3.00"),
            "{broken}"
        );
        assert_eq!(g.check(&hist(&[100; 100]), 1.0), None);
    }

    #[test]
    fn a_rate_gate() {
        let g = Gate::MinRps(50_000.0);
        assert!(g.check(&hist(&[1]), 49_999.0).is_some());
        assert_eq!(g.check(&hist(&[1]), 50_000.0), None);
    }
}
