//! The tutorials' UDP time client (seed 5), for `echo-reactor --daytime`.
//!
//! What it teaches: UDP has no connection: bind any local port, `sendto`
//! one datagram, `recvfrom` one back. Nothing guarantees an answer (the
//! datagram or the reply may be lost), so a client must bound its wait and
//! may retry; here it tries `--tries` times with a timeout each.
//!
//! Run the server: `cargo run -- --daytime 127.0.0.1:7013`
//! then: `cargo run --example udp_time -- --server 127.0.0.1:7013`
//! (prints the server's time line).

use std::io;
use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Daytime (RFC 867) client over UDP.
#[derive(Parser)]
struct Args {
    /// Daytime server address.
    #[arg(long, default_value = "127.0.0.1:7013")]
    server: String,
    /// Datagrams to try before giving up.
    #[arg(long, default_value_t = 3)]
    tries: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match ask(&args) {
        Ok(line) => {
            print!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("no answer from {}: {e}", args.server);
            ExitCode::FAILURE
        }
    }
}

fn ask(args: &Args) -> io::Result<String> {
    // Port 0: any free local port; the server answers to it.
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 512];
    let mut last = io::Error::from(io::ErrorKind::TimedOut);
    for _ in 0..args.tries.max(1) {
        // RFC 867: any datagram will do; the content is ignored.
        socket.send_to(b"\n", &args.server)?;
        match socket.recv_from(&mut buf) {
            Ok((n, _from)) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                last = e;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}
