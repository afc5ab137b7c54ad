//! Asking the loop to stop, from a signal or from another thread (seed 11).
//!
//! The loop spends its life blocked in `poll`, so a stop request has to be
//! something `poll` can see. Two sources are registered in the same `Poll`:
//!
//! - SIGINT/SIGTERM through signal-hook-mio: the signal handler writes to a
//!   self-pipe whose read end is a readiness source.
//! - a [`mio::Waker`], behind [`ShutdownHandle`], for programs that embed
//!   the reactor and stop it from another thread (tests, benches).
//!
//! The first request starts a graceful shutdown (see `Reactor`); a second
//! one ends the loop at once.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mio::{Registry, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

/// A cloneable, thread-safe handle that asks a running reactor to stop.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    waker: Arc<Waker>,
    requests: Arc<AtomicUsize>,
}

impl ShutdownHandle {
    pub(crate) fn new(registry: &Registry, token: Token) -> io::Result<Self> {
        Ok(ShutdownHandle {
            waker: Arc::new(Waker::new(registry, token)?),
            requests: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Requests a stop: the first call starts a graceful shutdown, a second
    /// one makes the loop return at once.
    pub fn shutdown(&self) -> io::Result<()> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.waker.wake()
    }

    /// Requests made so far (read by the loop when the waker fires).
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// SIGINT and SIGTERM as a readiness source.
pub(crate) struct SignalSource {
    signals: Signals,
}

impl SignalSource {
    /// Installs the handlers and registers the pipe under `token`.
    pub(crate) fn register(registry: &Registry, token: Token) -> io::Result<Self> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        registry.register(&mut signals, token, mio::Interest::READABLE)?;
        Ok(SignalSource { signals })
    }

    /// How many stop signals arrived since the last call (drains the pipe,
    /// as edge-triggered readiness requires).
    pub(crate) fn take_count(&mut self) -> usize {
        self.signals.pending().count()
    }
}
