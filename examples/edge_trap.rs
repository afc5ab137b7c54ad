//! The edge-triggered trap (seed 10), shown happening, beside its fix.
//!
//! What it teaches: mio registers sockets edge-triggered (`EPOLLET` on
//! Linux). A readable event means "bytes arrived since you last looked",
//! not "bytes are waiting". A loop that answers each event with one `read`
//! and goes back to `poll` leaves in the socket whatever did not fit in its
//! buffer, and those bytes raise no new edge: they wait until the client
//! sends something else. A client that sent two messages in one go and now
//! waits for both answers waits forever.
//!
//! - `--read once` is the trap: one 16-byte read per event, then `poll`.
//!   Two messages that arrive together, longer than 16 bytes, come back
//!   only in part.
//! - `--read drain` is the fix, mio's documented rule: on each event, read
//!   until `WouldBlock`. Only then is it safe to wait, since anything that
//!   arrives from then on raises a new edge. The buffer stays 16 bytes: a
//!   bigger one only moves the trap, as any client can send more than one
//!   read holds.
//!
//! `echo-reactor` goes further (`src/connection/mod.rs`, "The readiness
//! rules"): it stops after a read budget and keeps the readiness on a
//! run-next queue, so one flooding client cannot starve the others; and on
//! Linux it takes a short read as "drained", saving the `read` that would
//! only say `WouldBlock`, except after an event that reported the peer's
//! FIN or urgent data (`docs/limits.md`, "Urgent data").
//!
//! What it skips: writes are naive. An echo the kernel will not take whole
//! drops the client; `select_loop.rs` shows the pending buffer and
//! `WRITABLE` interest that a real server needs.
//!
//! Run: `cargo run --example edge_trap -- --read once --listen 127.0.0.1:7015`
//! (prints `listening on tcp://ADDR`), then `nc 127.0.0.1 7015` and type a
//! line longer than 16 bytes: only its first 16 bytes come back, and the
//! rest only when your next line raises a new edge. With `--read drain`
//! every line comes back whole.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);

/// Small on purpose: two short messages that arrive together do not fit
/// in one read.
const READ_SIZE: usize = 16;

#[derive(Clone, Copy, ValueEnum)]
enum ReadMode {
    /// One read per event: the trap.
    Once,
    /// Read until `WouldBlock`: the fix.
    Drain,
}

/// A mio echo server that reads once per event, or drains.
#[derive(Parser)]
struct Args {
    /// How to read on each readable event.
    #[arg(long, value_enum)]
    read: ReadMode,
    /// Address to listen on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7015")]
    listen: SocketAddr,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(args.listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on tcp://{}", listener.local_addr()?);

    let mut clients: HashMap<Token, TcpStream> = HashMap::new();
    let mut next = 1;
    let mut events = Events::with_capacity(128);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            if event.token() == LISTENER {
                // The listener is edge-triggered too: accept until
                // `WouldBlock`, or a second client that connected in the
                // same edge would never be accepted.
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let token = Token(next);
                            next += 1;
                            poll.registry()
                                .register(&mut stream, token, Interest::READABLE)?;
                            clients.insert(token, stream);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let Some(stream) = clients.get_mut(&event.token()) else {
                continue;
            };
            let open = match args.read {
                ReadMode::Once => read_once(stream),
                ReadMode::Drain => read_drain(stream),
            };
            if !matches!(open, Ok(true)) {
                // EOF or an error: dropping the stream closes it.
                clients.remove(&event.token());
            }
        }
    }
}

/// The trap: one read, one echo, back to `poll`. Returns false at EOF.
fn read_once(stream: &mut TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; READ_SIZE];
    match stream.read(&mut buf) {
        Ok(0) => Ok(false),
        // Whatever did not fit stays in the socket. It belonged to the
        // edge this event reported, so no event will report it again: only
        // new bytes from the client raise another edge.
        Ok(n) => stream.write_all(&buf[..n]).map(|()| true),
        // Events are hints (mio allows spurious ones): nothing yet.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}

/// The fix: read and echo until the kernel says the socket is empty.
/// Returns false at EOF.
fn read_drain(stream: &mut TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; READ_SIZE];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => stream.write_all(&buf[..n])?,
            // Empty now: the next arrival raises a new edge, so waiting in
            // `poll` is safe.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
