//! A tokio UDP echo server, the yardstick for the reactor's batched UDP.
//!
//! What it teaches: UDP echo as an async runtime user writes it, one
//! `recv_from` then one `send_to` per datagram on a `current_thread`
//! runtime (tokio's `UdpSocket` has no batched calls), so the fair
//! single-core comparison with `echo-reactor --udp`.
//!
//! Run: `cargo run --release --example tokio_udp_echo -- --listen 127.0.0.1:7009`
//! (prints `listening on udp://ADDR` like echo-reactor).

use clap::Parser;
use tokio::net::UdpSocket;

/// tokio UDP echo server for comparisons.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7009")]
    listen: String,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(&args.listen))
}

async fn serve(addr: &str) -> std::io::Result<()> {
    let socket = UdpSocket::bind(addr).await?;
    println!("listening on udp://{}", socket.local_addr()?);
    // The largest UDP payload fits, as in the reactor.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        // A reply that cannot go out is dropped, as the network may drop it.
        let _ = socket.send_to(&buf[..n], peer).await;
    }
}
