//! `--interval SECS`: a report every SECS of the window, while it runs.
//!
//! Each engine thread records its latencies twice: into the run's
//! histogram and into one of the current interval ([`Stats::interval`]).
//! When an interval ends, the thread hands that histogram and its count of
//! messages to [`Intervals`] (one lock per thread per interval, nothing
//! per message) and starts a fresh one. Once every thread has handed in
//! interval `i`, it is complete: its histograms are added, and whoever
//! watches the run takes it ([`Intervals::take_ready`]) and prints it.
//! Interval boundaries are each thread's own window start plus `i * SECS`;
//! the threads open their windows together, so they line up.

use crate::histogram::Percentiles;
use crate::stats::Stats;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// UDP: what became of an interval's datagrams (counted when it happened:
/// a loss when the loss timeout gave a datagram up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounts {
    /// Datagrams given up on.
    pub lost: u64,
    /// Echoes that came after their datagram was given up on, or twice.
    pub late: u64,
    /// Echoes that came after an echo of a later datagram of the same
    /// socket.
    pub reordered: u64,
}

impl UdpCounts {
    fn of(stats: &Stats) -> UdpCounts {
        UdpCounts {
            lost: stats.udp_lost,
            late: stats.udp_late,
            reordered: stats.udp_reordered,
        }
    }

    fn since(self, before: UdpCounts) -> UdpCounts {
        UdpCounts {
            lost: self.lost - before.lost,
            late: self.late - before.late,
            reordered: self.reordered - before.reordered,
        }
    }

    fn add(self, other: UdpCounts) -> UdpCounts {
        UdpCounts {
            lost: self.lost + other.lost,
            late: self.late + other.late,
            reordered: self.reordered + other.reordered,
        }
    }

    fn json(self) -> Value {
        json!({"lost": self.lost, "late": self.late, "reordered": self.reordered})
    }

    fn from_json(v: &Value) -> Option<UdpCounts> {
        Some(UdpCounts {
            lost: v["lost"].as_u64()?,
            late: v["late"].as_u64()?,
            reordered: v["reordered"].as_u64()?,
        })
    }
}

/// One complete interval, all threads together.
#[derive(Debug, Clone)]
pub struct IntervalReport {
    /// 0, 1, ...
    pub index: u64,
    /// Its start, seconds after the window's.
    pub from_s: f64,
    /// Its end (the last one may be short: the window closed).
    pub to_s: f64,
    /// Messages echoed in it.
    pub messages: u64,
    /// Their latencies, in ns.
    pub latency: Histogram<u64>,
    /// UDP runs: losses, late and reordered echoes in it.
    pub udp: Option<UdpCounts>,
}

impl IntervalReport {
    /// Messages per second over the interval.
    pub fn req_per_s(&self) -> f64 {
        let secs = self.to_s - self.from_s;
        if secs > 0.0 {
            self.messages as f64 / secs
        } else {
            0.0
        }
    }

    /// One line for people.
    pub fn text(&self, percentiles: &[f64]) -> String {
        let latency = if self.latency.is_empty() {
            "-".to_string()
        } else {
            let p = Percentiles::of(&self.latency, percentiles);
            format!("{}  max {:.1}", p.chosen_text(), p.max)
        };
        let udp = match self.udp {
            Some(u) => format!(
                "  lost {}  late {}  reordered {}",
                u.lost, u.late, u.reordered
            ),
            None => String::new(),
        };
        format!(
            "interval {:>3}  {:>7.2}-{:<7.2} s  {:>8} msgs  {:>9.0} req/s  latency us  {latency}{udp}",
            self.index,
            self.from_s,
            self.to_s,
            self.messages,
            self.req_per_s(),
        )
    }

    /// One JSON object (a line of `--json` output).
    pub fn json(&self, percentiles: &[f64]) -> Value {
        let mut v = json!({
            "interval": self.index,
            "from_s": self.from_s,
            "to_s": self.to_s,
            "messages": self.messages,
            "req_per_s": self.req_per_s(),
            "latency_us": Percentiles::of(&self.latency, percentiles).json(),
        });
        if let Some(u) = self.udp {
            v["udp"] = u.json();
        }
        v
    }
}

/// Over `--procs`, a client process's complete intervals go to the parent
/// as `interval` events (one line each, the histogram in base64), and the
/// parent hands each in as one part of its own [`Intervals`], one part per
/// process.
impl IntervalReport {
    /// This interval as a child's event line.
    pub fn to_event(&self) -> Value {
        let mut v = json!({
            "event": "interval",
            "index": self.index,
            "from_s": self.from_s,
            "to_s": self.to_s,
            "messages": self.messages,
            "latency": crate::histogram::to_base64(&self.latency),
        });
        if let Some(u) = self.udp {
            v["udp"] = u.json();
        }
        v
    }

    /// An interval a child sent ([`IntervalReport::to_event`]).
    pub fn from_event(v: &Value) -> Result<IntervalReport, String> {
        let int = |k: &str| v[k].as_u64().ok_or_else(|| format!("interval without {k}"));
        let float = |k: &str| v[k].as_f64().ok_or_else(|| format!("interval without {k}"));
        Ok(IntervalReport {
            index: int("index")?,
            from_s: float("from_s")?,
            to_s: float("to_s")?,
            messages: int("messages")?,
            latency: crate::histogram::from_base64(v["latency"].as_str().unwrap_or(""))?,
            udp: UdpCounts::from_json(&v["udp"]),
        })
    }
}

/// What the threads have handed in, and the complete intervals not yet
/// taken.
#[derive(Debug, Default)]
pub struct Intervals {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Interval index -> (threads that handed it in, the sum so far).
    pending: BTreeMap<u64, (usize, IntervalReport)>,
    ready: Vec<IntervalReport>,
    /// How many intervals each thread whose window has closed handed in (a
    /// thread that met its share of `-n` early hands in no later ones).
    closed: Vec<u64>,
}

impl State {
    /// Threads that will hand in interval `index`.
    fn expected(&self, index: u64, threads: usize) -> usize {
        threads - self.closed.iter().filter(|&&n| n <= index).count()
    }

    /// Moves every pending interval that is complete to `ready`.
    fn complete(&mut self, threads: usize) {
        let done: Vec<u64> = self
            .pending
            .iter()
            .filter(|(i, (n, _))| *n >= self.expected(**i, threads))
            .map(|(i, _)| *i)
            .collect();
        for i in done {
            if let Some((_, r)) = self.pending.remove(&i) {
                self.ready.push(r);
            }
        }
    }
}

impl Intervals {
    /// Thread's part of interval `part.index`; complete once `threads`
    /// parts are in.
    pub(crate) fn hand_in(&self, part: IntervalReport, threads: usize) {
        let Ok(mut s) = self.state.lock() else { return };
        let entry = s.pending.entry(part.index).or_insert_with(|| {
            let mut empty = part.clone();
            empty.messages = 0;
            empty.latency.reset();
            empty.udp = part.udp.map(|_| UdpCounts::default());
            (0, empty)
        });
        entry.0 += 1;
        entry.1.messages += part.messages;
        if let (Some(sum), Some(u)) = (entry.1.udp.as_mut(), part.udp) {
            *sum = sum.add(u);
        }
        entry.1.to_s = entry.1.to_s.max(part.to_s);
        // Same bounds on every thread: adding cannot fail.
        let _ = entry.1.latency.add(&part.latency);
        s.complete(threads);
    }

    /// A thread's window closed after it handed in `handed` intervals.
    pub(crate) fn close(&self, handed: u64, threads: usize) {
        let Ok(mut s) = self.state.lock() else { return };
        s.closed.push(handed);
        s.complete(threads);
    }

    /// The intervals completed since the last call, in order.
    pub fn take_ready(&self) -> Vec<IntervalReport> {
        match self.state.lock() {
            Ok(mut s) => {
                let mut r = std::mem::take(&mut s.ready);
                r.sort_by_key(|i| i.index);
                r
            }
            Err(_) => Vec::new(),
        }
    }
}

/// One thread's clock of intervals.
#[derive(Debug)]
pub(crate) struct Clock {
    every: Duration,
    window_start: Instant,
    index: u64,
    /// `stats.messages` when the current interval began.
    messages_before: u64,
    /// UDP runs: the counts when the current interval began.
    udp_before: Option<UdpCounts>,
}

impl Clock {
    /// Intervals of `every`, from the window's start; starts recording
    /// into `stats.interval`. A `udp` run's intervals carry its losses.
    pub(crate) fn new(
        every: Duration,
        window_start: Instant,
        stats: &mut Stats,
        udp: bool,
    ) -> Clock {
        let mut h = stats.latency.clone();
        h.reset();
        stats.interval = Some(h);
        Clock {
            every,
            window_start,
            index: 0,
            messages_before: stats.messages,
            udp_before: udp.then(|| UdpCounts::of(stats)),
        }
    }

    /// When the current interval ends.
    pub(crate) fn next_at(&self) -> Instant {
        self.window_start + self.every * (self.index as u32 + 1)
    }

    /// Hands in every interval that has ended by `now` (all of them, the
    /// current one too, if `closing`).
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        closing: bool,
        stats: &mut Stats,
        out: (&Intervals, usize),
    ) {
        while now >= self.window_start && (now >= self.next_at() || closing) {
            let end = if closing && now < self.next_at() {
                now
            } else {
                self.next_at()
            };
            let Some(h) = stats.interval.as_mut() else {
                return;
            };
            let latency = h.clone();
            h.reset();
            let from = self.every * self.index as u32;
            out.0.hand_in(
                IntervalReport {
                    index: self.index,
                    from_s: from.as_secs_f64(),
                    to_s: end
                        .saturating_duration_since(self.window_start)
                        .as_secs_f64(),
                    messages: stats.messages - self.messages_before,
                    latency,
                    udp: self.udp_before.map(|b| UdpCounts::of(stats).since(b)),
                },
                out.1,
            );
            self.messages_before = stats.messages;
            if self.udp_before.is_some() {
                self.udp_before = Some(UdpCounts::of(stats));
            }
            self.index += 1;
            if closing && end == now {
                stats.interval = None;
                out.0.close(self.index, out.1);
                return;
            }
        }
        if closing {
            // Closed before its window even began (a stop during the
            // warmup): it hands in nothing.
            stats.interval = None;
            out.0.close(self.index, out.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(index: u64, messages: u64) -> IntervalReport {
        IntervalReport {
            index,
            from_s: index as f64,
            to_s: index as f64 + 1.0,
            messages,
            latency: Histogram::new_with_bounds(1, 1_000_000, 3).unwrap(),
            udp: None,
        }
    }

    #[test]
    fn udp_counts_of_an_interval_are_the_sum_of_its_parts() {
        let iv = Intervals::default();
        let counts = |lost, late, reordered| UdpCounts {
            lost,
            late,
            reordered,
        };
        let mut a = part(0, 5);
        a.udp = Some(counts(1, 0, 2));
        let mut b = part(0, 7);
        b.udp = Some(counts(3, 1, 0));
        iv.hand_in(a, 2);
        iv.hand_in(b, 2);
        let r = iv.take_ready();
        assert_eq!(r[0].udp, Some(counts(4, 1, 2)));
        assert!(r[0].text(&[50.0]).ends_with("lost 4  late 1  reordered 2"));
        assert_eq!(r[0].json(&[50.0])["udp"]["reordered"], 2);
        let back = IntervalReport::from_event(&r[0].to_event()).unwrap();
        assert_eq!(back.udp, r[0].udp);
    }

    #[test]
    fn an_interval_is_complete_once_every_thread_handed_it_in() {
        let iv = Intervals::default();
        iv.hand_in(part(0, 5), 2);
        assert!(iv.take_ready().is_empty());
        iv.hand_in(part(0, 7), 2);
        let r = iv.take_ready();
        assert_eq!((r.len(), r[0].messages), (1, 12));
    }

    #[test]
    fn a_thread_that_closed_early_is_not_waited_for() {
        let iv = Intervals::default();
        iv.hand_in(part(0, 1), 2);
        iv.hand_in(part(0, 1), 2);
        iv.close(1, 2);
        iv.hand_in(part(1, 3), 2);
        assert_eq!(iv.take_ready().len(), 2);
        // One that handed in nothing at all is not waited for either.
        let iv = Intervals::default();
        iv.close(0, 2);
        iv.hand_in(part(0, 1), 2);
        assert_eq!(iv.take_ready().len(), 1);
    }
}
