//! Broken on purpose: closing a connection while its input is unread.
//!
//! The mistake: a line echo server (the protocol of `echo-reactor --mode
//! line`: each line comes back, a line `exit` ends the conversation)
//! writes its last answer and then simply closes the socket. Whatever the
//! client sent after `exit` is still in the server's receive queue.
//!
//! What you see: the client does not get its whole answer. It reads part
//! of it, then `ECONNRESET` ("connection reset by peer") instead of EOF.
//! The bytes the server had written but the client had not yet received
//! are gone, although every `write` in the server succeeded.
//!
//! Why: Linux (like most TCP stacks, RFC 2525 section 2.17) answers a
//! `close` with unread data in the receive queue by sending RST, not FIN,
//! and a reset connection throws away its send queue. The client's
//! pipelined bytes, which the server never meant to read, destroy the
//! answer the server already wrote. It shows only when the client is
//! slower than the server, so on a real network rather than on a laptop.
//!
//! The fix, in `echo-reactor` (and nginx's `lingering_close`): after the
//! last answer, `shutdown(Write)` sends FIN behind the data, then the
//! server keeps reading and discarding input until the client's own FIN,
//! for at most `LINGER_TIMEOUT`, and only then closes (`Phase::Draining`
//! and `Phase::Lingering` in `src/connection/mod.rs`, `Connection::turn`).
//!
//! Run: `cargo run --example broken_close_unread -- --listen
//! 127.0.0.1:7018` (prints `listening on tcp://ADDR`); `tests/broken_loops.rs`
//! has a client slow enough to lose its answer on loopback.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};

use clap::Parser;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(0);

/// A mio line echo server that closes right after its last answer.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7018")]
    listen: std::net::SocketAddr,
}

/// A client: its unfinished line, its answers not yet written, and
/// whether it said `exit`.
struct Client {
    stream: TcpStream,
    line: Vec<u8>,
    out: Vec<u8>,
    done: bool,
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
                            // The send buffer `echo-reactor` uses (its
                            // `--sndbuf` default), for a fair comparison.
                            socket2::SockRef::from(&stream).set_send_buffer_size(64 * 1024)?;
                            let token = Token(next);
                            next += 1;
                            let interest = Interest::READABLE | Interest::WRITABLE;
                            poll.registry().register(&mut stream, token, interest)?;
                            let (line, out) = (Vec::new(), Vec::new());
                            let done = false;
                            clients.insert(
                                token,
                                Client {
                                    stream,
                                    line,
                                    out,
                                    done,
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
            if !serve(client) {
                // THE MISTAKE: dropping the stream is `close(2)`, and the
                // input after `exit` is still queued in the kernel: RST.
                clients.remove(&event.token());
            }
        }
    }
}

/// Reads lines until `exit`, answers them, and writes the answers; false
/// when the connection should be closed.
fn serve(c: &mut Client) -> bool {
    let mut buf = [0u8; 4096];
    while !c.done {
        match c.stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                for &b in &buf[..n] {
                    c.line.push(b);
                    if b != b'\n' {
                        continue;
                    }
                    if c.line.trim_ascii_end() == b"exit" {
                        // Done with this client: the rest of the input
                        // is none of our business (or so it seems).
                        c.done = true;
                        break;
                    }
                    c.out.append(&mut c.line);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    // Every answer is in the kernel's hands: close, as soon as `exit` came.
    !c.done
}
