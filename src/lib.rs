//! echo-reactor: a single-threaded, readiness-based event-loop server.
//!
//! One thread, one `mio::Poll`, every socket non-blocking; connections live
//! in a `slab`; readiness is edge-triggered underneath and handled with
//! level-triggered discipline on top. The server echoes every byte (RFC
//! 862), which leaves nothing to look at but the event loop itself.
//!
//! # Layout
//!
//! Data flows one way: socket -> connection -> output buffer -> socket, with
//! the loop only routing readiness.
//!
//! - [`reactor`]: the event loop. Ticks, routing by token, the run-next
//!   queue, accepting (budget, connection limit, descriptor exhaustion),
//!   timers, graceful shutdown.
//! - [`connection`]: one client. The readiness rules (drain or remember,
//!   budgets, write interest only while output is pending, backpressure)
//!   and the connection's phases up to a lingering close.
//! - [`outbuf`]: pending output, only after a partial write.
//! - [`token`]: what a token names, and why it carries a generation.
//! - [`timer`]: the deadline heap that bounds the poll timeout.
//! - [`shutdown`]: stop requests from signals or another thread.
//! - [`listener`]: socket, `SO_REUSEADDR`, bind, listen(backlog).
//! - [`addr`]: `HOST:PORT` parsing and getaddrinfo-style resolution.
//! - [`fdlimit`]: `RLIMIT_NOFILE` and the spare descriptor for `EMFILE`.
//! - [`stats`]: the counters the loop keeps and logs.
//! - [`config`], [`cli`]: what to run, and the command line that says it.
//! - [`bench`]: the engine of the `echo-bench` stress client.
#![deny(missing_docs, rust_2018_idioms, unsafe_op_in_unsafe_fn)]

pub mod addr;
pub mod bench;
pub mod cli;
pub mod config;
pub mod connection;
pub mod fdlimit;
pub mod listener;
pub mod outbuf;
pub mod reactor;
pub mod shutdown;
pub mod stats;
pub mod timer;
pub mod token;

pub use config::Config;
pub use reactor::{Reactor, Report};
pub use shutdown::ShutdownHandle;
pub use stats::Stats;
