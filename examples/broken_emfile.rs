//! Broken on purpose: an accept loop that shrugs off `EMFILE`.
//!
//! The mistake: on a level-triggered poller, when `accept` fails because
//! the process is out of descriptors (`EMFILE`), the loop just goes back
//! to `poll`, hoping the next turn goes better.
//!
//! What you see: start it with a low descriptor limit (`--nofile 16`) and
//! connect clients until one is not answered. From then on the server
//! burns a whole core (`top`), although nothing happens: the clients it
//! serves are idle and the one it cannot take waits.
//!
//! Why: `EMFILE` is not `WouldBlock`. The connection is not taken out of
//! the listen queue, so the listener is still readable, and poll(2),
//! being level-triggered, says so again at once: `accept` fails again,
//! and again, as fast as the CPU allows, until some client leaves. (On an
//! edge-triggered poller such as epoll through mio the same mistake
//! stalls instead: no new edge comes, and the listener is never heard
//! from again, even after descriptors free up.)
//!
//! The fix, in `echo-reactor`: keep one spare descriptor open; on `EMFILE`
//! close it, accept the waiting connection, close that at once (the client
//! sees the connection end instead of hanging) and reopen the spare
//! (`src/fdlimit.rs`, `SpareFd`; `src/reactor/accept.rs`,
//! `Reactor::on_accept_error` and `shed_one`). Without a spare it stops
//! watching the listener and retries from a timer (`pause_listener`).
//!
//! What it skips: writes are naive (an echo the kernel will not take whole
//! drops the client).
//!
//! Run: `cargo run --example broken_emfile -- --nofile 16 --listen
//! 127.0.0.1:7019` (prints `listening on tcp://ADDR`), then open `nc
//! 127.0.0.1 7019` in a dozen terminals.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use clap::Parser;

/// A poll(2) echo server that retries `accept` forever on `EMFILE`.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7019")]
    listen: SocketAddr,
    /// Lower the descriptor limit (RLIMIT_NOFILE) to this first.
    #[arg(long)]
    nofile: Option<u64>,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.nofile {
        let lim = libc::rlimit {
            rlim_cur: n as libc::rlim_t,
            rlim_max: n as libc::rlim_t,
        };
        // SAFETY: `lim` is a valid rlimit; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let listener = TcpListener::bind(args.listen)?;
    listener.set_nonblocking(true)?;
    println!("listening on tcp://{}", listener.local_addr()?);

    let mut clients: Vec<TcpStream> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut warned = false;
    loop {
        // Entry 0 is the listener, entry i + 1 is clients[i].
        fds.clear();
        fds.extend(
            std::iter::once(listener.as_raw_fd())
                .chain(clients.iter().map(|c| c.as_raw_fd()))
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                }),
        );
        // SAFETY: `fds` is an initialised array of `fds.len()` pollfds that
        // poll(2) reads and whose `revents` it writes during the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Clients first, back to front, so that `swap_remove` only moves a
        // client that was already served this turn.
        for i in (0..fds.len() - 1).rev() {
            if fds[i + 1].revents != 0 && !echo(&mut clients[i], &mut buf) {
                clients.swap_remove(i);
            }
        }
        if fds[0].revents & libc::POLLIN == 0 {
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(true)?;
                    clients.push(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                    if !std::mem::replace(&mut warned, true) {
                        eprintln!("accept: {e}; will try again");
                    }
                    // THE MISTAKE: back to `poll`, which reports the
                    // listener again at once, for the same connection.
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Echoes what one read returns; false when the client is gone.
fn echo(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    match stream.read(buf) {
        Ok(0) => false,
        Ok(n) => stream.write_all(&buf[..n]).is_ok(),
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    }
}
