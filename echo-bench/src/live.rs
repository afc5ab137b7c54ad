//! Numbers shared while the run is going: for the progress line, for the
//! threads to agree when every connection has settled, and to stop early.
//!
//! Threads publish their counts here once per loop turn (not per message),
//! with relaxed atomics: the progress line only needs roughly current
//! values, and nothing is ordered by them except the `settled` hand-off,
//! which uses acquire/release.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Shared between the engine's threads and whoever watches the run.
#[derive(Debug, Default)]
pub struct Live {
    /// Connections proven by their first echo, all threads.
    pub established: AtomicU64,
    /// Connections that failed to open, all threads.
    pub failed: AtomicU64,
    /// Messages echoed since the start (warmup included), all threads.
    pub messages: AtomicU64,
    /// Errors of any kind so far, all threads.
    pub errors: AtomicU64,
    /// Threads whose connections have all either opened or failed.
    settled: AtomicUsize,
    /// Set by anyone (e.g. a signal handler thread) to end the run early.
    stop: AtomicBool,
    /// While set, threads that have settled do not open the window: a
    /// client process of `--procs` waits for its parent's word, so that
    /// every process measures the same load.
    gated: AtomicBool,
    /// `--interval`: the intervals the threads hand in, and those complete.
    pub intervals: crate::interval::Intervals,
}

impl Live {
    /// Fresh counters.
    pub fn new() -> Live {
        Live::default()
    }

    /// Asks every thread to end the measured part now and drain.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`Live::request_stop`] was called.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Keeps the window shut after every thread has settled, until
    /// [`Live::open_gate`] (call it before the run starts).
    pub fn close_gate(&self) {
        self.gated.store(true, Ordering::Release);
    }

    /// Lets the settled threads open the window.
    pub fn open_gate(&self) {
        self.gated.store(false, Ordering::Release);
    }

    /// Whether the window may open once every thread has settled.
    pub(crate) fn gate_open(&self) -> bool {
        !self.gated.load(Ordering::Acquire)
    }

    /// Whether `threads` threads have settled all of their connections
    /// (or failed).
    pub fn all_settled(&self, threads: usize) -> bool {
        self.settled_threads() >= threads
    }

    /// One thread has settled all of its connections.
    pub(crate) fn thread_settled(&self) {
        self.settled.fetch_add(1, Ordering::Release);
    }

    /// How many threads have settled.
    pub(crate) fn settled_threads(&self) -> usize {
        self.settled.load(Ordering::Acquire)
    }

    /// Adds a thread's progress since its last report.
    #[inline]
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n != 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
