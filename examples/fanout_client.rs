//! The tutorials' select() client (seed 9): many non-blocking connects at
//! once, one thread, one `Poll`.
//!
//! What it teaches: `connect` on a non-blocking socket returns at once
//! (seed 8); the handshake finishes later and the socket becomes
//! *writable*. So the client registers every socket for writable, sends its
//! request when one is, then waits for readable and reads the reply. All
//! `--connections` conversations progress together, in any order, driven
//! by readiness; none waits for another. A connect that failed shows up as
//! an error on that socket (`take_error`), not as a hang.
//!
//! Run against any echo server, e.g. `cargo run` then:
//! `cargo run --example fanout_client -- --to 127.0.0.1:7007 --connections 100`
//! (prints `N/N replies ok` and exits 0 when every reply matched).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Non-blocking fan-out client.
#[derive(Parser)]
struct Args {
    /// Echo server address.
    #[arg(long, default_value = "127.0.0.1:7007")]
    to: SocketAddr,
    /// Connections opened at once.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Give up after this many seconds without progress.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// One conversation: request out, then the same bytes back.
struct Conversation {
    stream: TcpStream,
    request: Vec<u8>,
    sent: usize,
    reply: Vec<u8>,
    done: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(ok) => {
            println!("{ok}/{} replies ok", args.connections);
            if ok == args.connections {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> io::Result<usize> {
    let mut poll = Poll::new()?;
    let mut convs = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        // Returns before the handshake is done.
        let mut stream = TcpStream::connect(args.to)?;
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::WRITABLE | Interest::READABLE,
        )?;
        convs.push(Conversation {
            stream,
            request: format!("request {i}\n").into_bytes(),
            sent: 0,
            reply: Vec::new(),
            done: false,
        });
    }
    let (mut ok, mut left) = (0, args.connections);
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    while left > 0 {
        poll.poll(&mut events, Some(Duration::from_secs(args.timeout)))?;
        if events.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{left} conversations stalled"),
            ));
        }
        for event in &events {
            let c = &mut convs[event.token().0];
            if c.done {
                continue;
            }
            if let Some(e) = c.stream.take_error()? {
                eprintln!("connection {}: {e}", event.token().0);
                c.done = true;
                left -= 1;
                continue;
            }
            // Edge-triggered: write and read until they would block.
            while c.sent < c.request.len() {
                match c.stream.write(&c.request[c.sent..]) {
                    Ok(n) => c.sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Not connected yet: writable will be reported later.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(e) => return Err(e),
                }
            }
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => c.reply.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                        ) =>
                    {
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if c.reply.len() >= c.request.len() {
                c.done = true;
                left -= 1;
                if c.reply == c.request {
                    ok += 1;
                }
            }
        }
    }
    Ok(ok)
}
