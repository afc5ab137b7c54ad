//! The second server of the tutorials (seed 3): a thread per client.
//!
//! What it teaches: blocking code stays simple and clients no longer wait
//! for each other, because each gets its own thread (daemon-like: the
//! process exits without joining them). The weakness shows under a burst:
//! every connection costs a thread (a stack of `STACK_SIZE` reserved, a
//! kernel task, a context switch per wake-up), so ten thousand idle clients
//! cost ten thousand threads, and a burst can exhaust threads or memory
//! (`spawn` fails and the client is dropped). `echo-reactor` serves the
//! same clients from one thread at about 64 bytes each.
//!
//! Run: `cargo run --example thread_per_connection -- --listen 127.0.0.1:7011`
//! (prints `listening on tcp://ADDR`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use clap::Parser;

/// Stack reserved per client thread (std's default is 2 MiB).
const STACK_SIZE: usize = 64 * 1024;

/// Thread-per-connection echo server.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7011")]
    listen: String,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen)?;
    println!("listening on tcp://{}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            // EMFILE and friends: this design has no answer but to retry.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let spawned = thread::Builder::new()
            .stack_size(STACK_SIZE)
            .spawn(move || serve(stream));
        if let Err(e) = spawned {
            // The burst case: out of threads or memory; the client is
            // dropped (its stream went with the failed closure).
            eprintln!("cannot spawn a thread: {e}");
        }
    }
    Ok(())
}

fn serve(mut stream: TcpStream) {
    // Like the reactor and the tokio example: an echo is written at once,
    // not held back by Nagle until the previous segment is acknowledged
    // (with 16 KiB messages written 4 KiB at a time that wait is the
    // peer's delayed ACK, ~40 ms per message).
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
