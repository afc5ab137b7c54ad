//! A TCP proxy on the event loop: the step after echo.
//!
//! Echo writes what it reads back to the same socket. A proxy writes it
//! to another one, which the loop opens itself: for each client a
//! non-blocking connect to the upstream (in progress, connected, refused,
//! timed out), then each socket's input relayed to the other. The rules
//! are echo's, across two sockets (`src/connection/relay.rs`): a side is
//! read only while the other side's pending output is under its
//! watermark, so a slow reader on either side stalls the sender on the
//! other through TCP's own flow control, and the proxy holds at most a
//! watermark and a read per direction; a half-close (FIN) is passed on
//! and the other direction keeps flowing. A client whose upstream cannot
//! be reached is told `ERR upstream: REASON`, and counted.
//!
//! The library does the work (`Config::upstream`); this program is the
//! whole of what a user writes. `docs/proxy.md` walks through it.
//!
//! ```text
//! cargo run --release &                    # the echo server, on 127.0.0.1:7007
//! cargo run --release --example proxy      # on 127.0.0.1:7020, relaying to it
//! cargo run --release --bin echo-bench -- 127.0.0.1:7020
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use echo_reactor::{Backend, Config, ListenAddr, Server};

/// A TCP proxy on echo-reactor's event loop.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7020")]
    listen: ListenAddr,
    /// Where every client is relayed to.
    #[arg(long, default_value = "127.0.0.1:7007")]
    upstream: SocketAddr,
    /// How long a connect to the upstream may take, in seconds.
    #[arg(long, default_value = "5")]
    connect_timeout: u64,
    /// The multiplexer: epoll, poll or select.
    #[arg(long, default_value = "epoll")]
    backend: Backend,
    /// Log the counters every this many seconds (0: only at exit).
    #[arg(long, default_value = "0")]
    stats_interval: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = Config {
        listen: vec![args.listen],
        backend: args.backend,
        upstream: Some(args.upstream),
        connect_timeout: Duration::from_secs(args.connect_timeout),
        stats_interval: (args.stats_interval > 0).then(|| Duration::from_secs(args.stats_interval)),
        handle_signals: true,
        ..Config::default()
    };
    let server = match Server::bind(&config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in server.local_addrs() {
        println!("listening on tcp://{addr}");
    }
    println!("relaying to tcp://{}", args.upstream);
    match server.run() {
        Ok(report) => {
            let s = report.stats;
            println!(
                "relayed {} clients ({} upstream connects failed)",
                s.upstream_connected, s.upstream_failed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
