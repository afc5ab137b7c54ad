//! Broken on purpose: write interest kept on a level-triggered poller.
//!
//! The mistake: every client is watched for `POLLOUT` on every turn, "in
//! case there is something to write". There almost never is.
//!
//! What you see: one client connects, echoes a line, and goes quiet. The
//! server should now sleep in `poll`; instead it burns a whole core (`top`
//! shows ~100% CPU) doing nothing, and it keeps doing so as long as the
//! idle client stays connected.
//!
//! Why: poll(2) and select(2) are level-triggered. They report a descriptor
//! on every call for as long as its condition holds, and "writable" holds
//! whenever the socket's send buffer has room, which is nearly always. So
//! `poll` returns at once, the loop finds nothing to write, and calls
//! `poll` again: a busy loop. (Read interest is handled correctly below,
//! for contrast: it is dropped while too much output is pending, the same
//! reasoning applied to the other direction.)
//!
//! The fix, in `echo-reactor`: ask for `WRITABLE` only while output is
//! pending, and drop it again when the buffer drains (rule 3 in
//! `src/connection/mod.rs`, `Connection::wanted_interest`). The poll(2)
//! backend (`src/poller/poll.rs`) turns that interest into `POLLOUT` only
//! then. `echo-reactor --backend poll` with an idle client uses no CPU.
//!
//! Run: `cargo run --example broken_always_writable -- --listen
//! 127.0.0.1:7016` (prints `listening on tcp://ADDR`), then `nc 127.0.0.1
//! 7016` and watch the server in `top`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use clap::Parser;

/// Stop reading a client whose pending echo passed this many bytes.
const PENDING_LIMIT: usize = 64 * 1024;

/// A poll(2) echo server that always asks for `POLLOUT`.
#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:7016")]
    listen: SocketAddr,
}

/// A client and the echo the kernel has not taken yet.
struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)?;
    listener.set_nonblocking(true)?;
    println!("listening on tcp://{}", listener.local_addr()?);

    let mut clients: Vec<Client> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // The interest list, rebuilt every turn: entry 0 is the listener,
        // entry i + 1 is clients[i].
        fds.clear();
        fds.push(pollfd(listener.as_raw_fd(), libc::POLLIN));
        for c in &clients {
            let mut events = libc::POLLOUT; // THE MISTAKE: always.
            if c.pending.len() < PENDING_LIMIT {
                events |= libc::POLLIN;
            }
            fds.push(pollfd(c.stream.as_raw_fd(), events));
        }
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
            if !serve(&mut clients[i], fds[i + 1].revents, &mut buf) {
                clients.swap_remove(i);
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(true)?;
                        clients.push(Client {
                            stream,
                            pending: Vec::new(),
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// One client's turn; false when it is gone.
fn serve(c: &mut Client, revents: libc::c_short, buf: &mut [u8]) -> bool {
    if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
        // Level-triggered: one read is enough, whatever is left is
        // reported again on the next turn.
        match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => c.pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    // Reported writable on every turn, so this runs on every turn, and
    // nearly always finds `pending` empty: the wasted work of the spin.
    while !c.pending.is_empty() {
        match c.stream.write(&c.pending) {
            Ok(n) => {
                c.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    true
}
