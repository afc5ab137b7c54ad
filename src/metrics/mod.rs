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
//! master (`--workers`) also uses for every worker's counters at once.
//!
//! docs/metrics.md lists every metric.

mod exposition;
mod http;

pub(crate) use exposition::Exposition;
pub(crate) use http::{BUSY_ANSWER, MAX_ANSWER, MAX_HEAD, MetricsHttp, Page};

use std::sync::Arc;

use crate::stats::Stats;

/// The loop's page: its counters as of the turn being driven, or a page
/// an embedder serves instead ([`Server::serve_page`]: a master serves
/// every worker's counters from its own loop this way).
///
/// [`Server::serve_page`]: crate::Server::serve_page
#[derive(Default, Clone)]
pub(crate) struct LoopPage {
    /// The counters, gauges synced.
    pub(crate) stats: Stats,
    /// Shutting down or retiring: `/healthz` answers 503.
    pub(crate) draining: bool,
    /// The page served instead of the loop's counters, if any.
    pub(crate) instead: Option<Arc<dyn Page + Sync>>,
}

impl std::fmt::Debug for LoopPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopPage")
            .field("draining", &self.draining)
            .field("instead", &self.instead.is_some())
            .finish_non_exhaustive()
    }
}

impl Page for LoopPage {
    fn render(&self, out: &mut String) {
        if let Some(page) = &self.instead {
            return page.render(out);
        }
        let mut page = Exposition::new();
        page.stats(&[("", &self.stats)]);
        page.family(
            "echo_reactor_draining",
            "1 while the server shuts down or retires (no new echo connections), else 0.",
            "gauge",
            &[("", if self.draining { 1.0 } else { 0.0 })],
        );
        out.push_str(&page.finish());
    }

    fn serving(&self) -> bool {
        !self.draining && self.instead.as_ref().is_none_or(|page| page.serving())
    }

    fn max_len(&self) -> usize {
        self.instead
            .as_ref()
            .map_or(MAX_ANSWER, |page| page.max_len())
    }
}

/// The loop's metrics protocol.
pub(crate) type LoopHttp = MetricsHttp<LoopPage>;

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
        let page = LoopPage {
            stats,
            draining: true,
            instead: None,
        };
        let mut out = String::new();
        page.render(&mut out);
        // Head included.
        assert!(out.len() + 200 < MAX_ANSWER, "{} bytes", out.len());
    }
}
