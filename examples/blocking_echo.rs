//! The first server of the tutorials (seed 2): blocking sockets, one
//! client at a time.
//!
//! What it teaches: the socket lifecycle in its plainest form (bind,
//! listen, accept, recv, send, close) and why it is not enough. While one
//! client is connected, the next one completes its handshake (the kernel
//! queues it in the listen backlog) but gets no answer until the first
//! leaves: `accept` is not called again until `serve` returns. Try two
//! `nc` sessions at once. `thread_per_connection` is the next step;
//! `echo-reactor` itself is where the road ends.
//!
//! Run: `cargo run --example blocking_echo -- --listen 127.0.0.1:7010`
//! (prints `listening on tcp://ADDR`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use clap::Parser;

/// One-client-at-a-time echo server.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7010")]
    listen: String,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    // socket + SO_REUSEADDR + bind + listen(128), all in one std call.
    let listener = TcpListener::bind(&args.listen)?;
    println!("listening on tcp://{}", listener.local_addr()?);
    loop {
        // Blocks until a client arrives; nobody else is served meanwhile.
        let (stream, peer) = listener.accept()?;
        eprintln!("serving {peer}; everyone else waits");
        if let Err(e) = serve(stream) {
            eprintln!("{peer}: {e}");
        }
    }
}

fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        // recv returns what the kernel has buffered (seed 6), 0 at EOF.
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        // A send may be partial; write_all loops until every byte is in
        // the kernel's send buffer, blocking while it is full.
        stream.write_all(&buf[..n])?;
    }
}
