//! Histograms out of the run, in the forms HdrHistogram's own tools read:
//! the compressed V2 encoding in base64 (what a line of an interval log
//! holds, and what `--json` carries as `histogram`), and an interval log
//! file (`--hdr-log FILE`). Values are nanoseconds.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde_json::{Value, json};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The interval log's max column is in milliseconds, as HdrHistogram's
/// log processors expect of a log recorded in nanoseconds.
const NS_PER_MS: f64 = 1e6;

/// `h` in HdrHistogram's compressed V2 encoding, base64: the form a line
/// of an interval log holds (`HISTFAAA...`).
pub fn to_base64(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serializing into a Vec fails only if compression does, which it does
    // not for an in-memory buffer; an empty string then reads back as an
    // error, never as wrong numbers.
    if V2DeflateSerializer::new().serialize(h, &mut bytes).is_err() {
        return String::new();
    }
    STANDARD.encode(bytes)
}

/// The inverse of [`to_base64`] (any V2 encoding, compressed or not).
pub fn from_base64(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(s.trim())
        .map_err(|e| format!("not a base64 histogram: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an HdrHistogram encoding: {e:?}"))
}

/// One interval of an interval log: a histogram of what was recorded from
/// `offset` after the log's start for `length`, with its tag.
#[derive(Debug)]
pub struct Interval {
    /// `latency`, `connect`, ...: a log may interleave several series.
    pub tag: &'static str,
    /// From the log's start time.
    pub offset: Duration,
    /// How long the interval lasted.
    pub length: Duration,
    /// What it recorded, in nanoseconds.
    pub histogram: Histogram<u64>,
}

/// Writes an HdrHistogram interval log to `path`: a comment naming the
/// run, the start time (`started`), then one line per interval, taken
/// from `intervals` one at a time (a long run's many need not all be in
/// memory at once).
pub fn write_interval_log(
    path: &Path,
    comment: &str,
    started: SystemTime,
    intervals: impl IntoIterator<Item = Interval>,
) -> io::Result<()> {
    let mut out = io::BufWriter::new(std::fs::File::create(path)?);
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(comment)
        .with_start_time(started)
        .with_base_time(started)
        .with_max_value_divisor(NS_PER_MS)
        .begin_log_with(&mut out, &mut serializer)?;
    for i in intervals {
        log.write_histogram(&i.histogram, i.offset, i.length, Tag::new(i.tag))
            .map_err(|e| io::Error::other(format!("cannot write a histogram: {e:?}")))?;
    }
    drop(log);
    out.flush()
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// The percentiles asked for (`--percentiles`), each with its value.
    pub chosen: Vec<(f64, f64)>,
}

impl Percentiles {
    /// The figures of `h` (in ns), with the percentiles `chosen` (0-100).
    pub fn of(h: &Histogram<u64>, chosen: &[f64]) -> Percentiles {
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
            chosen: chosen
                .iter()
                .map(|&p| (p, us(h.value_at_quantile(p / 100.0))))
                .collect(),
        }
    }

    /// `p50 12.3  p99.99 45.6`: the chosen percentiles for a table.
    pub fn chosen_text(&self) -> String {
        let parts: Vec<String> = self
            .chosen
            .iter()
            .map(|(p, v)| format!("p{} {v:.1}", percentile_name(*p)))
            .collect();
        parts.join("  ")
    }

    /// These figures as JSON (the fixed ones, and the chosen ones under
    /// `percentiles`, keyed by their name: `"99.99"`).
    pub fn json(&self) -> Value {
        let chosen: serde_json::Map<String, Value> = self
            .chosen
            .iter()
            .map(|(p, v)| (percentile_name(*p), json!(v)))
            .collect();
        json!({
            "count": self.count,
            "min": self.min, "mean": self.mean, "p50": self.p50, "p90": self.p90,
            "p99": self.p99, "p99_9": self.p999, "max": self.max,
            "percentiles": chosen,
        })
    }
}

/// `50`, `99.9`, `99.99`: a percentile as people write it.
pub fn percentile_name(p: f64) -> String {
    let s = format!("{p}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// The percentiles reported when none are asked for.
pub const DEFAULT_PERCENTILES: [f64; 4] = [50.0, 90.0, 99.0, 99.9];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
        for v in [1_000u64, 2_000, 3_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let s = to_base64(&h);
        assert!(s.starts_with("HISTF"), "{s}");
        let back = from_base64(&s).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back.max(), h.max());
    }
}
