//! `--portable-reads`: every connection reads until `WouldBlock`, as mio
//! documents, instead of stopping at a short read (docs/short-reads.md).
//! Echo must behave exactly as without it on every backend, and it must
//! cost the one extra `read` per message it is there to show.
//!
//! The state change itself (a short read keeps the readiness, the next
//! turn reads `WouldBlock`) is checked where it happens, by the unit test
//! `connection::tests::portable_reads_read_again_after_a_short_read_until_would_block`.
//!
//! The echo runs in-process (`util::inprocess`); the cost is counted by
//! strace attached to the binary, a process of its own.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;

use echo_reactor::Config;
use util::inprocess::{self, InProcess};
use util::{Server, assert_echo, connect, pattern, read_to_eof};

on_every_backend! {
    /// Small messages one at a time (each read is short), a stream larger
    /// than every buffer on the way (full reads, then the short one at the
    /// end of each burst), and a half-close (the FIN behind the last bytes).
    fn portable_reads_echo_everything_and_close_after_the_fin() {
        let server = InProcess::start(Config {
            read_until_would_block: true,
            ..inprocess::config()
        });
        let mut s = connect(server.addr);
        for i in 0..200u64 {
            assert_echo(&mut s, &pattern(i, 1 + (i as usize * 37) % 1500));
        }

        let data = Arc::new(pattern(7, 8 << 20));
        let mut w = s.try_clone().expect("clone");
        let to_send = Arc::clone(&data);
        let writer = thread::spawn(move || {
            for chunk in to_send.chunks(64 * 1024) {
                w.write_all(chunk).expect("write");
            }
        });
        util::read_exactly_checking(&mut s, &data);
        writer.join().expect("writer thread");

        s.write_all(b"last words").expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown(Write)");
        assert_eq!(read_to_eof(&mut s), b"last words");
    }
}

/// Ping-pong echoes of 64 bytes counted with strace attached to the server.
const ECHOES: usize = 1000;

/// The client's pause after each echo. A traced server is slow (every
/// system call stops it for strace): without a pause, the next message
/// would already be queued when the requeued turn reads, and that read
/// would find it instead of `EAGAIN`.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// The server's reads per echo, and how many of those failed (`EAGAIN`),
/// over [`ECHOES`] ping-pong echoes of 64 bytes on one connection, a
/// [`PAUSE`] after each, counted by `strace -c`; `None` when strace is missing or may not attach here.
fn reads_per_echo(args: &[&str]) -> Option<(f64, f64)> {
    let server = Server::spawn(args);
    let mut s = connect(server.addr);
    assert_echo(&mut s, b"warm up");

    let out = std::env::temp_dir().join(format!(
        "portable-reads-{}-{}.strace",
        std::process::id(),
        server.pid()
    ));
    let pid = server.pid().to_string();
    let spawned = Command::new("strace")
        .args(["-f", "-c", "-e", "trace=read,recvfrom", "-p", &pid, "-o"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut strace = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped: cannot run strace: {e}");
            return None;
        }
    };
    // strace says "Process N attached" once it traces the server; if it
    // cannot (no ptrace here), it says why and exits.
    let mut stderr = BufReader::new(strace.stderr.take().expect("stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).expect("strace stderr") == 0 {
            let _ = strace.wait();
            eprintln!("skipped: strace could not attach");
            return None;
        }
        if line.contains("attached") {
            break;
        }
    }

    let msg = [0x5a_u8; 64];
    let mut echo = [0u8; 64];
    for _ in 0..ECHOES {
        s.write_all(&msg).expect("write");
        s.read_exact(&mut echo).expect("echo");
        thread::sleep(PAUSE);
    }

    // SIGINT: strace detaches and writes its summary.
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(strace.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill strace: {}", std::io::Error::last_os_error());
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    strace.wait().expect("strace exit");
    let summary = std::fs::read_to_string(&out).expect("strace summary");
    let _ = std::fs::remove_file(&out);

    // Rows: % time, seconds, usecs/call, calls, [errors,] syscall.
    let (mut calls, mut errors) = (0u64, 0u64);
    for row in summary.lines() {
        let cols: Vec<&str> = row.split_whitespace().collect();
        if matches!(cols.last(), Some(&"read" | &"recvfrom")) && cols.len() >= 5 {
            calls += cols[3].parse::<u64>().expect("calls column");
            if cols.len() == 6 {
                errors += cols[4].parse::<u64>().expect("errors column");
            }
        }
    }
    let per = |n: u64| n as f64 / ECHOES as f64;
    Some((per(calls), per(errors)))
}

/// The cost the flag is there to show, where strace can attach (skipped,
/// with a note on stderr, where it cannot): by default one read per echo,
/// the short one; with `--portable-reads` two, the second one `EAGAIN`.
#[test]
fn portable_reads_cost_one_failed_read_per_echo() {
    let Some((default_reads, default_failed)) = reads_per_echo(&[]) else {
        return;
    };
    let Some((portable_reads, portable_failed)) = reads_per_echo(&["--portable-reads"]) else {
        return;
    };
    eprintln!(
        "reads per echo: default {default_reads:.2} ({default_failed:.2} EAGAIN), \
         --portable-reads {portable_reads:.2} ({portable_failed:.2} EAGAIN)"
    );
    assert!(
        default_reads < 1.3 && default_failed < 0.3,
        "default: {default_reads:.2} reads per echo, {default_failed:.2} failed"
    );
    assert!(
        portable_reads > 1.8 && portable_failed > 0.8,
        "--portable-reads: {portable_reads:.2} reads per echo, {portable_failed:.2} failed"
    );
}
