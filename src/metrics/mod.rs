//! `--metrics ADDR`: the loop's counters for Prometheus, served over
//! HTTP/1.1 by the loop itself.
//!
//! A metrics listener is one more kind of source (`reactor/sources.rs`,
//! [`Service::Metrics`](crate::service::Service::Metrics)), and its
//! connections speak one more protocol beside raw, line and frame
//! (`http.rs`), whatever `--mode` says: no thread, no HTTP framework. The
//! connection code moves their bytes exactly as it moves an echo
//! client's, with the same readiness rules, backpressure and memory
//! budget.
//!
//! The protocol answers from a [`LoopPage`], a copy of the loop's counters
//! that the loop refreshes right before it drives a metrics connection
//! (`Reactor::with_connection`), so echo connections never pay for it.
//! The text itself is written by [`Exposition`] (`exposition.rs`), which a
//! master (`--workers`) also uses for every worker's counters at once;
//! `process.rs` adds the `process_*` series and the build's version.
//!
//! docs/metrics.md lists every metric.

mod exposition;
mod http;
mod process;

pub(crate) use exposition::Exposition;
pub(crate) use http::{BUSY_ANSWER, MAX_ANSWER, MAX_HEAD, MetricsHttp, Page};
pub(crate) use process::{Process, write_build_info};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::protocol::Handler;
use crate::stats::Stats;

/// What a loop shares with its metrics connections' protocol: its
/// counters as of the turn being driven (the loop refreshes them right
/// before it drives a metrics connection, so echo connections never pay
/// for it), whether it drains, and how many requests were answered; or a
/// page an embedder serves instead ([`Server::serve_page`]: a master
/// serves every worker's counters from its own loop this way).
///
/// [`Server::serve_page`]: crate::Server::serve_page
#[derive(Default)]
pub(crate) struct PageCell {
    now: Mutex<(Stats, bool)>,
    requests: AtomicU64,
    instead: Option<Arc<dyn Page + Sync>>,
}

impl std::fmt::Debug for PageCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCell")
            .field("requests", &self.requests)
            .field("instead", &self.instead.is_some())
            .finish_non_exhaustive()
    }
}

impl PageCell {
    /// The loop's own counters; or, with `instead`, that page.
    pub(crate) fn new(instead: Option<Arc<dyn Page + Sync>>) -> Arc<PageCell> {
        Arc::new(PageCell {
            instead,
            ..PageCell::default()
        })
    }

    /// The counters a request answered now sees (gauges synced), and
    /// whether the loop drains (`/healthz` answers 503).
    pub(crate) fn refresh(&self, stats: &Stats, draining: bool) {
        if let Ok(mut now) = self.now.lock() {
            *now = (*stats, draining);
        }
    }

    /// Requests answered so far, errors included.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn now(&self) -> (Stats, bool) {
        self.now.lock().map(|now| *now).unwrap_or_default()
    }
}

/// The loop's page: the [`PageCell`] it shares with its loop.
#[derive(Debug, Default)]
pub(crate) struct LoopPage(pub(crate) Arc<PageCell>);

impl Page for LoopPage {
    fn render(&self, out: &mut String) {
        if let Some(page) = &self.0.instead {
            return page.render(out);
        }
        let (stats, draining) = self.0.now();
        let mut page = Exposition::new();
        page.stats(&[("", &stats)]);
        page.family(
            "echo_reactor_draining",
            "1 while the server shuts down or retires (no new echo connections), else 0.",
            "gauge",
            &[("", if draining { 1.0 } else { 0.0 })],
        );
        Process::read().write(&mut page);
        write_build_info(&mut page);
        out.push_str(&page.finish());
    }

    fn serving(&self) -> bool {
        !self.0.now().1 && self.0.instead.as_ref().is_none_or(|page| page.serving())
    }

    fn max_len(&self) -> usize {
        (self.0.instead.as_ref()).map_or(MAX_ANSWER, |page| page.max_len())
    }

    fn answered(&self) {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// The protocol of a loop's metrics connections, answering from `cell`.
pub(crate) fn loop_http(cell: &Arc<PageCell>) -> Handler {
    Handler::Protocol(Box::new(MetricsHttp::new(LoopPage(Arc::clone(cell)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_loop_page_fits_the_answer_the_budget_reserves() {
        // Every counter at its widest.
        let text: String = Stats::default()
            .to_string()
            .split_whitespace()
            .map(|pair| {
                let name = pair.split('=').next().unwrap_or("");
                format!("{name}={} ", u64::MAX)
            })
            .collect();
        let stats: Stats = text.parse().expect("counters");
        let cell = PageCell::new(None);
        cell.refresh(&stats, true);
        let page = LoopPage(cell);
        let mut out = String::new();
        page.render(&mut out);
        // Head included.
        assert!(out.len() + 200 < MAX_ANSWER, "{} bytes", out.len());
    }
}
