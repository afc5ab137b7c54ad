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
//! # Using it as a library
//!
//! The binary is a thin shell around [`Server`]: build a [`Config`], bind,
//! print where it listens, run. An embedder does the same, and stops it
//! from another thread with a [`ShutdownHandle`]:
//!
//! ```
//! use echo_reactor::{Config, ListenAddr, Server};
//! use std::io::{Read, Write};
//!
//! let config = Config {
//!     listen: vec!["127.0.0.1:0".parse::<ListenAddr>()?],
//!     ..Config::default()
//! };
//! let server = Server::bind(&config)?;
//! let addr = server.local_addrs()[0];
//! let stop = server.shutdown_handle();
//! let serving = std::thread::spawn(move || server.run());
//!
//! let mut client = std::net::TcpStream::connect(addr)?;
//! client.write_all(b"ping")?;
//! let mut echo = [0u8; 4];
//! client.read_exact(&mut echo)?;
//! assert_eq!(&echo, b"ping");
//! drop(client);
//!
//! stop.shutdown()?; // graceful: drain, then return
//! let report = serving.join().expect("the loop thread")?;
//! assert_eq!(report.stats.accepted, 1);
//! assert!(!report.forced);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! Data flows one way: socket -> connection -> protocol -> output buffer ->
//! socket, with the loop only routing readiness (raw mode skips the
//! protocol step). Every module is private; the items above are the whole
//! public API. `cargo doc --document-private-items --open` renders the
//! modules below with their docs, which is how this crate is meant to be
//! read.
//!
//! - `reactor`: the event loop (`reactor/mod.rs`: ticks, routing by token,
//!   the run-next queue, timers, graceful shutdown), delivering letters
//!   between connections after each tick (`reactor/mailbox.rs`), accepting
//!   and turning clients away (`reactor/accept.rs`), PROXY headers awaited
//!   before a connection exists (`reactor/handshake.rs`), relay pairs and
//!   the loop's own non-blocking connects (`reactor/relays.rs`,
//!   `Config::upstream`), the turns of the
//!   classes other than echo (`reactor/others.rs`), opening the sockets
//!   (`reactor/sources.rs`), the backend choice (`reactor/server.rs`), and
//!   the loop's side of the memory budget (`reactor/memory.rs`).
//! - `connection`: one client. The readiness rules (drain or remember,
//!   budgets, write interest only while output is pending, backpressure),
//!   each coded once, and the connection's phases up to a lingering close;
//!   over a `Stream` trait (`connection/stream.rs`), so that its tests
//!   drive every phase against a scripted stream instead of a socket.
//!   A relay pair (`connection/relay.rs`) is the same rules across two
//!   sockets, each one's input the other's output.
//! - `outbuf`: pending output, only after a partial write.
//! - `budget`: `--max-buffered`, one budget for every byte held for
//!   clients, and what happens near and at its limit (with
//!   `connection/pass_through.rs`).
//! - `service`: what a listener serves (echo, daytime, discard, chargen,
//!   metrics): greetings and
//!   datagram answers, so that the loop never touches bytes.
//! - `protocol`: what to answer, without I/O: the [`Mode`] enum, the
//!   decoder interface and its driver, and the sizes it enforces;
//!   `protocol/session.rs` (a connection's split message and session,
//!   created once), `protocol/link.rs` ([`ConnId`], [`Link`]: letters to
//!   other connections, and the policy for a recipient that does not
//!   read), `protocol/line.rs` (replies per line, banner, `exit`) and
//!   `protocol/frame.rs` (4-byte length header, whole frames).
//! - `poller`: the multiplexer interface and its three backends, epoll
//!   (mio), poll(2) and select(2): the contract, and the traps of each.
//! - `udp`: UDP echo, daytime, discard and chargen sockets on the same poller: a socket's
//!   turn, one batch of datagrams (`udp/mod.rs`), the batch calls
//!   `recvmmsg`/`sendmmsg` with GSO and GRO (`udp/batch.rs`), answers
//!   waiting for room within the budget (`udp/queue.rs`), and the loop
//!   guard against spoofed datagrams (`udp/guard.rs`); the loop's side is
//!   `reactor/datagram.rs`.
//! - `daytime`: the current time as an RFC 867 text line.
//! - `discard`: RFC 863, input read and dropped (the protocol discard and
//!   chargen connections speak); `chargen`: RFC 864's pattern, sent by a
//!   TCP connection under the readiness rules and budget
//!   (`connection/source.rs`), and cut into UDP answers.
//! - `faults`: `--delay`, `--close-after`, `--reset-after`: faults on
//!   demand, in a connection class of their own (`connection/faults.rs`),
//!   so that the echo path has no branch for them.
//! - `token`: what a token names, why it carries a generation, and how log
//!   lines name a connection (`conn KEY/GENERATION`).
//! - `timer`: the deadline heap that bounds the poll timeout.
//! - `shutdown`: stop requests from another thread; `signals`: every
//!   signal the server expects, handled on purpose.
//! - `per_ip`: `--max-connections-per-ip`, connections per host.
//! - `proxy_protocol`: the PROXY protocol header (v1, v2), parsed by a
//!   pure function, for `--proxy-protocol`.
//! - `sockets`: everything a server serves, bound before any loop exists:
//!   by the server itself, or once per worker slot by a master and
//!   inherited by its workers.
//! - `supervisor`: `--workers`, a master of worker processes
//!   ([`Supervisor`]): starting, watching (a heartbeat in shared memory)
//!   and replacing them, rolling restarts, every signal's meaning, the
//!   per-host counts every worker shares, and the master's metrics page;
//!   a worker's side is [`run_worker`].
//! - `seat`: a worker's seat in the memory its master shares with every
//!   worker: the heartbeat the master watches, and the per-host counts that
//!   make `--max-connections-per-ip` the whole server's.
//! - `listener`: socket, `SO_REUSEADDR`, `SO_REUSEPORT`, `SO_OOBINLINE`,
//!   keepalive, bind, listen(backlog).
//! - `addr`: `HOST:PORT` parsing and getaddrinfo-style resolution.
//! - `fdlimit`: `RLIMIT_NOFILE` and the spare descriptor for `EMFILE`.
//! - `stats`: the counters the loop keeps and logs.
//! - `log_sink`: logging that cannot block the loop: stderr written
//!   without waiting, on a description of its own; lines dropped and
//!   counted when it is full ([`LogSink`]).
//! - `metrics`: `--metrics`, the counters for Prometheus over HTTP/1.1,
//!   served by the loop as one more service and protocol.
//! - `activation`: socket activation, serving on sockets a service
//!   manager (systemd) passed (`LISTEN_FDS`); `notify`: telling it when
//!   the server is ready, reloading and stopping (`NOTIFY_SOCKET`).
//! - `config`: what to run ([`Config`]); the command line that says it is
//!   the binary's (`src/bin/echo-reactor/cli.rs`).
#![deny(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    rust_2018_idioms,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

mod activation;
mod addr;
mod budget;
mod chargen;
mod config;
mod connection;
mod daytime;
mod discard;
mod faults;
mod fdlimit;
mod listener;
mod log_sink;
mod metrics;
mod notify;
mod outbuf;
mod per_ip;
mod poller;
mod protocol;
mod proxy_protocol;
mod reactor;
mod seat;
mod service;
mod shutdown;
mod signals;
mod sockets;
mod stats;
mod supervisor;
mod timer;
mod token;
mod udp;

pub use addr::{AddrError, ListenAddr};
pub use budget::{DEFAULT_MAX_BUFFERED, MIN_MAX_BUFFERED};
pub use config::{
    Config, DEFAULT_BACKLOG, DEFAULT_CONNECT_TIMEOUT, DEFAULT_LISTEN, DEFAULT_METRICS_IDLE_TIMEOUT,
    DEFAULT_METRICS_MAX_CONNECTIONS, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_SNDBUF, DEFAULT_UDP_BATCH,
    DEFAULT_WATCHDOG,
};
pub use listener::ListenError;
pub use log_sink::{LogSink, dropped_lines};
pub use poller::Backend;
pub use protocol::frame::DEFAULT_MAX_FRAME;
pub use protocol::line::DEFAULT_MAX_LINE;
pub use protocol::{
    ConnId, Frame, Line, Link, MAIL_SHARE, Mode, Protocol, Refusal, Status, Transform, Verdict,
};
pub use proxy_protocol::ProxyMode;
pub use reactor::{Report, Server};
pub use service::{Endpoint, Service, Transport};
pub use shutdown::ShutdownHandle;
pub use stats::{Stats, WAIT_BUCKETS};
pub use supervisor::{Ending, Supervisor, WorkerSpec, run_worker};
