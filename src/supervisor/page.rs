//! `--metrics` with `--workers`: the master serves every worker's counters
//! at one address, from an event loop of its own.
//!
//! That loop is the library's ([`Server`](crate::Server)), bound to the
//! metrics addresses alone and run on one thread of the master: the same
//! HTTP protocol code, the same deadlines for a request head and an
//! unread answer, the same memory budget, and no thread per connection.
//! What it answers from is [`MasterPage`]: the supervisor writes the
//! latest figures into it as workers report (a copy of their counters,
//! nothing rendered), and the page is rendered only when a request asks
//! for it.
//!
//! Each worker slot's series carry `worker="SLOT"`, and hold every counter
//! of every worker that has served the slot, the exited ones included, so
//! that neither a restart nor `sum()` loses a count; the master adds its
//! own (`echo_reactor_master_*`). The `process_*` series are the master's
//! own process (docs/metrics.md says why).

use std::sync::{Arc, Mutex};

use crate::metrics::{Exposition, MAX_ANSWER, Page, Process, write_build_info};
use crate::stats::Stats;

/// What the master knows, as of the latest report.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    /// Each slot's counters: every worker that has served it.
    pub(crate) slots: Vec<Stats>,
    /// Workers serving: said ready, loop turning, not yet exited.
    pub(crate) workers_up: usize,
    /// Workers whose loop has stopped turning and that are being replaced.
    pub(crate) workers_hung: usize,
    pub(crate) restarts: u64,
    pub(crate) hangs: u64,
    /// Log lines the master itself dropped.
    pub(crate) log_dropped: u64,
    /// False once the master is stopping: `/healthz` answers 503.
    pub(crate) serving: bool,
}

/// The master's page: [`Figures`] behind a lock, rendered on request.
#[derive(Debug, Default)]
pub(crate) struct MasterPage(Mutex<Figures>);

impl MasterPage {
    /// A page for `slots` slots, serving.
    pub(crate) fn new(slots: usize) -> Arc<MasterPage> {
        Arc::new(MasterPage(Mutex::new(Figures {
            slots: vec![Stats::default(); slots],
            serving: true,
            ..Figures::default()
        })))
    }

    /// Replaces the figures.
    pub(crate) fn update(&self, figures: Figures) {
        if let Ok(mut held) = self.0.lock() {
            *held = figures;
        }
    }

    fn figures(&self) -> Figures {
        self.0.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

impl Page for MasterPage {
    fn render(&self, out: &mut String) {
        let figures = self.figures();
        let labels: Vec<String> = (0..figures.slots.len())
            .map(|i| format!("worker=\"{i}\""))
            .collect();
        let samples: Vec<(&str, &Stats)> = (labels.iter().map(String::as_str))
            .zip(&figures.slots)
            .collect();
        let mut text = Exposition::new();
        text.stats(&samples);
        let gauge = |n: usize| [("", n as f64)];
        text.family(
            "echo_reactor_master_workers_up",
            "Worker processes serving (said ready, loop turning, not yet exited).",
            "gauge",
            &gauge(figures.workers_up),
        );
        text.family(
            "echo_reactor_master_workers_hung",
            "Worker processes whose loop stopped turning, being replaced.",
            "gauge",
            &gauge(figures.workers_hung),
        );
        text.family(
            "echo_reactor_master_workers",
            "Worker slots (--workers).",
            "gauge",
            &gauge(figures.slots.len()),
        );
        text.family(
            "echo_reactor_master_worker_restarts_total",
            "Workers restarted after exiting while serving.",
            "counter",
            &[("", figures.restarts as f64)],
        );
        text.family(
            "echo_reactor_master_worker_hangs_total",
            "Workers killed because their loop stopped turning (--watchdog).",
            "counter",
            &[("", figures.hangs as f64)],
        );
        text.family(
            "echo_reactor_master_log_lines_dropped_total",
            "Log lines the master dropped because the log sink (stderr) did not keep up.",
            "counter",
            &[("", figures.log_dropped as f64)],
        );
        text.family(
            "echo_reactor_draining",
            "1 while the server shuts down (no new echo connections), else 0.",
            "gauge",
            &[("", if figures.serving { 0.0 } else { 1.0 })],
        );
        // The master's own process: its workers are processes of their
        // own, whose memory and descriptors are not summed here.
        Process::read().write(&mut text);
        write_build_info(&mut text);
        out.push_str(&text.finish());
    }

    fn serving(&self) -> bool {
        self.figures().serving
    }

    /// A loop's page per slot (a label adds a few bytes to each line, well
    /// inside the room the loop's own page leaves), and the master's own.
    fn max_len(&self) -> usize {
        (self.figures().slots.len() + 1) * MAX_ANSWER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_labels_each_slot_and_fits_its_stated_length() {
        let page = MasterPage::new(3);
        let widest: Stats = Stats::default()
            .to_string()
            .split_whitespace()
            .map(|pair| format!("{}={} ", pair.split('=').next().unwrap_or(""), u64::MAX))
            .collect::<String>()
            .parse()
            .expect("counters");
        page.update(Figures {
            slots: vec![widest; 3],
            workers_up: 2,
            workers_hung: 1,
            restarts: 4,
            hangs: 1,
            log_dropped: 3,
            serving: false,
        });
        let mut out = String::new();
        page.render(&mut out);
        assert!(out.len() + 200 < page.max_len(), "{} bytes", out.len());
        assert!(out.contains("worker=\"2\""));
        assert!(out.contains("echo_reactor_master_workers_hung 1"));
        assert!(out.contains("echo_reactor_master_worker_hangs_total 1"));
        assert!(out.contains("echo_reactor_draining 1"));
        assert!(!page.serving());
    }
}
