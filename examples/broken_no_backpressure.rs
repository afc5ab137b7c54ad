//! Broken on purpose: an echo server without backpressure.
//!
//! The mistake: the server reads everything a client sends and appends
//! the echo to a per-client buffer, whether or not the client reads the
//! echo. The buffer has no limit.
//!
//! What you see: a client that sends and never reads makes the server's
//! memory grow by every byte it sends (`VmRSS` in `/proc/PID/status`):
//! 64 MiB sent, 64 MiB more resident. A few such clients, or one that
//! keeps going, and the server is killed for lack of memory.
//!
//! Why: TCP has flow control, but only between two socket buffers. Once
//! the client's receive buffer and the server's send buffer are full, the
//! kernel stops taking the echo (`write` says `WouldBlock`); a server that
//! keeps reading anyway moves the client's data out of the kernel, which
//! would have pushed back, into its own heap, which does not.
//!
//! The fix, in `echo-reactor`: above `HIGH_WATERMARK` (64 KiB) of pending
//! output a connection stops reading and drops its read interest, and
//! resumes below `LOW_WATERMARK` (rule 4 in `src/connection/mod.rs`,
//! `Connection::keep` and `Connection::flush`). The unread input then
//! waits in the kernel, whose full buffers stop the client's sends: the
//! client, not the server, holds its own data. `docs/memory.md` measures
//! the rest (the server-wide budget, `--max-buffered`).
//!
//! Run: `cargo run --example broken_no_backpressure -- --listen
//! 127.0.0.1:7017` (prints `listening on tcp://ADDR`), then `head -c 1G
//! /dev/zero | nc 127.0.0.1 7017 > /dev/null & sleep 1; kill -STOP %1`
//! and watch the server's RSS in `top`.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);

/// A mio echo server whose per-client buffer grows without bound.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7017")]
    listen: std::net::SocketAddr,
}

/// A client and the echo the kernel has not taken yet: `pending[sent..]`.
struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
    sent: usize,
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
    let mut events = Events::with_capacity(128);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let token = Token(next);
                            next += 1;
                            // Edge-triggered, so both interests can stay
                            // registered for good: an edge comes only when
                            // something changed.
                            poll.registry().register(
                                &mut stream,
                                token,
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            let (pending, sent) = (Vec::new(), 0);
                            clients.insert(
                                token,
                                Client {
                                    stream,
                                    pending,
                                    sent,
                                },
                            );
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let Some(client) = clients.get_mut(&event.token()) else {
                continue;
            };
            if !serve(client, &mut buf) {
                clients.remove(&event.token());
            }
        }
    }
}

/// Reads all that arrived and writes what the kernel takes; false when
/// the client is gone. Correct for mio's edges (drains both ways), and
/// unbounded.
fn serve(c: &mut Client, buf: &mut [u8]) -> bool {
    loop {
        // THE MISTAKE: no `if c.pending.len() > LIMIT { stop reading }`.
        match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => c.pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    while c.sent < c.pending.len() {
        match c.stream.write(&c.pending[c.sent..]) {
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if c.sent == c.pending.len() {
        // All written: let the buffer go.
        (c.sent, c.pending) = (0, Vec::new());
    }
    true
}
