//! An interactive client for `--mode line` (the tutorials' client side of
//! seed 4's handlers).
//!
//! What it teaches: a client needs two directions at once, keyboard to
//! socket and socket to screen, so replies (and a banner) show up even
//! while you are typing; here a reader thread does the second. Typing `q`
//! sends `exit` first, so the server flushes its replies and closes, and
//! the client leaves when it sees that FIN: nothing in flight is lost.
//!
//! Run the server: `cargo run -- --mode line --line-transform upper --banner hi`
//! then: `cargo run --example line_client -- --to 127.0.0.1:7007`
//! (type lines; `q` quits).

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

use clap::Parser;

/// Interactive line-mode client.
#[derive(Parser)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:7007")]
    to: String,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mut stream = TcpStream::connect(&args.to)?;
    let mut reader = stream.try_clone()?;
    let printer = thread::spawn(move || {
        let mut out = io::stdout();
        let mut buf = [0u8; 4096];
        // Until the server's FIN (or an error): print whatever comes.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
        }
    });
    for line in io::stdin().lock().lines() {
        let line = line?;
        if line == "q" {
            break;
        }
        stream.write_all(line.as_bytes())?;
        stream.write_all(b"\n")?;
    }
    // `exit` asks the server to flush and close; our FIN follows it.
    stream.write_all(b"exit\n")?;
    stream.shutdown(Shutdown::Write)?;
    let _ = printer.join();
    Ok(())
}
