//! echo-reactor: a single-threaded, readiness-based event-loop server.
//!
//! One thread, one multiplexer (epoll through mio by default; poll(2) or
//! select(2) with `--backend`), every socket non-blocking; connections
//! live in a `slab`; readiness is edge-triggered (epoll) or
//! level-triggered (poll, select) underneath and handled with one
//! discipline on top that is correct for both. By default the server echoes every
//! byte (RFC 862), which leaves nothing to look at but the event loop
//! itself; `--mode line` and `--mode frame` put a protocol between input
//! and output, and UDP echo and daytime services share the same loop.
//!
//! # Layout
//!
//! Data flows one way: socket -> connection -> protocol -> output buffer ->
//! socket, with the loop only routing readiness (raw mode skips the
//! protocol step).
//!
//! - [`reactor`]: the event loop. Ticks, routing by token, the run-next
//!   queue, accepting (budget, connection limit, descriptor exhaustion),
//!   timers, graceful shutdown.
//! - [`connection`]: one client. The readiness rules (drain or remember,
//!   budgets, write interest only while output is pending, backpressure)
//!   and the connection's phases up to a lingering close.
//! - [`outbuf`]: pending output, only after a partial write.
//! - [`protocol`]: what to answer, without I/O: the [`protocol::Mode`]
//!   enum, the decoder interface and its driver; [`protocol::line`]
//!   (replies per line, banner, `exit`) and [`protocol::frame`] (4-byte
//!   length header, whole frames).
//! - [`poller`]: the multiplexer interface and its three backends, epoll
//!   (mio), poll(2) and select(2): the contract, and the traps of each.
//! - [`udp`]: UDP echo and daytime sockets on the same poller.
//! - [`daytime`]: the current time as an RFC 867 text line.
//! - [`token`]: what a token names, and why it carries a generation.
//! - [`timer`]: the deadline heap that bounds the poll timeout.
//! - [`shutdown`]: stop requests from signals or another thread.
//! - `signals`: every signal the server expects, handled on purpose.
//! - `per_ip`: `--max-connections-per-ip`, connections per host.
//! - [`listener`]: socket, `SO_REUSEADDR`, bind, listen(backlog).
//! - [`addr`]: `HOST:PORT` parsing and getaddrinfo-style resolution.
//! - [`fdlimit`]: `RLIMIT_NOFILE` and the spare descriptor for `EMFILE`.
//! - [`stats`]: the counters the loop keeps and logs.
//! - [`config`], [`cli`]: what to run, and the command line that says it.
#![deny(missing_docs, rust_2018_idioms, unsafe_op_in_unsafe_fn)]

pub mod addr;
pub mod cli;
pub mod config;
pub mod connection;
pub mod daytime;
pub mod fdlimit;
pub mod listener;
pub mod outbuf;
mod per_ip;
pub mod poller;
pub mod protocol;
pub mod reactor;
pub mod shutdown;
mod signals;
pub mod stats;
pub mod timer;
pub mod token;
pub mod udp;

pub use config::Config;
pub use reactor::{Reactor, Report, Server};
pub use shutdown::ShutdownHandle;
pub use stats::Stats;
