//! The tutorials' select() server (seed 9), rewritten on mio in the fewest
//! honest lines: the minimal reactor.
//!
//! What it teaches: one thread, one `Poll`, a listener and every client
//! registered with a token; the loop sleeps until something is ready and
//! then does only the I/O that will not block (seed 8). mio is
//! edge-triggered (seed 10), so "ready" must be drained: accept until
//! `WouldBlock`, read until `WouldBlock`. A send may be partial: what the
//! kernel will not take waits in a per-client buffer, and only then is
//! `WRITABLE` asked for.
//!
//! What it skips, and where `echo-reactor` handles it (`src/`):
//! - a flooding client can starve the others: read budgets and the
//!   run-next queue (`connection/mod.rs` rules 1-2, `reactor/mod.rs`);
//! - a client that never reads grows `pending` without bound:
//!   backpressure (`connection/mod.rs` rule 4);
//! - `HashMap` tokens never reused, so no stale events; a slab reuses keys
//!   and needs generations (`token.rs`);
//! - `EMFILE` on accept spins or stalls: `fdlimit.rs`;
//! - closing with unread input resets the peer: lingering close;
//! - it re-registers interest after every event (a syscall each); the full
//!   one only when interest changes (`connection/mod.rs` rule 3);
//! - no timers, no limits, no graceful shutdown (`timer.rs`, `shutdown.rs`).
//!
//! Run: `cargo run --example select_loop -- --listen 127.0.0.1:7012`
//! (prints `listening on tcp://ADDR`).

use std::collections::HashMap;
use std::io::{self, Read, Write};

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);

/// Minimal mio echo server.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7012")]
    listen: std::net::SocketAddr,
}

/// A client and the echo the kernel has not taken yet.
struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(args.listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on tcp://{}", listener.local_addr()?);

    let mut clients: HashMap<Token, Client> = HashMap::new();
    let mut next = 1;
    let mut events = Events::with_capacity(256);
    let mut buf = [0u8; 16 * 1024];
    loop {
        poll.poll(&mut events, None).or_else(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        for event in &events {
            if event.token() == LISTENER {
                // Drain the accept queue: no new edge comes for old arrivals.
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let token = Token(next);
                            next += 1;
                            poll.registry()
                                .register(&mut stream, token, Interest::READABLE)?;
                            clients.insert(
                                token,
                                Client {
                                    stream,
                                    pending: Vec::new(),
                                },
                            );
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let token = event.token();
            let Some(client) = clients.get_mut(&token) else {
                continue;
            };
            let open = serve(client, &mut buf);
            let want = if client.pending.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            match open {
                Ok(true) => poll
                    .registry()
                    .reregister(&mut client.stream, token, want)?,
                // EOF or an error: dropping the stream closes it.
                Ok(false) | Err(_) => {
                    clients.remove(&token);
                }
            }
        }
    }
}

/// Writes what is pending, then reads and echoes until `WouldBlock`.
/// Returns false at EOF.
fn serve(client: &mut Client, buf: &mut [u8]) -> io::Result<bool> {
    flush(client)?;
    loop {
        match client.stream.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                client.pending.extend_from_slice(&buf[..n]);
                flush(client)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn flush(client: &mut Client) -> io::Result<()> {
    while !client.pending.is_empty() {
        match client.stream.write(&client.pending) {
            Ok(n) => {
                client.pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
