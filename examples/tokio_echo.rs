//! A tokio echo server, the yardstick the reactor is measured against.
//!
//! What it teaches: the same RFC 862 echo written on an async runtime, a
//! task per connection with `read` then `write_all`, TCP_NODELAY like the
//! reactor. `current_thread` (the default) runs every task on one thread,
//! which makes it the fair single-core comparison; `--multi-thread` uses
//! tokio's work-stealing scheduler with one worker (pin it with `taskset`).
//!
//! Run: `cargo run --release --example tokio_echo -- --listen 127.0.0.1:7008`
//! (prints `listening on tcp://ADDR` like echo-reactor).

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// tokio echo server for comparisons.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7008")]
    listen: String,
    /// Use the multi-threaded scheduler (one worker) instead of current_thread.
    #[arg(long)]
    multi_thread: bool,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = if args.multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(&args.listen))
}

async fn serve(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on tcp://{}", listener.local_addr()?);
    loop {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        tokio::spawn(async move {
            // Same buffer size as the reactor's shared read buffer, but one
            // per connection, as a task must own its buffer across awaits.
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
