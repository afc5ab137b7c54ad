//! Logging that cannot stop the loop: stderr written without ever
//! blocking, lines dropped and counted when it is full.
//!
//! The server logs to stderr, and stderr can be anything: a terminal, a
//! file, or a pipe to a supervisor (a service manager, a container
//! runtime, `2> >(...)`) that may stop reading. A write to a full pipe
//! blocks, and a loop blocked in its logger serves nobody and does not
//! hear SIGTERM: with a logger that wrote to stderr as it is,
//! `RUST_LOG=debug` and an unread pipe froze the server after 642
//! connections. So the binary's logger writes each formatted record
//! through a [`LogSink`], which never waits.
//!
//! # The policy
//!
//! - The queue is the sink's own buffer (64 KiB for a Linux pipe, a
//!   socket's send buffer): a line goes there whole, or not at all. A line
//!   that does not fit is dropped and counted: `log_dropped` in the stats
//!   line, `echo_reactor_log_lines_dropped_total` in `/metrics`
//!   ([`dropped_lines`]; process-wide, like the logger).
//! - The first line that fits again is preceded by one that says how many
//!   were lost: `N log lines dropped: the log sink did not keep up` (warn,
//!   target `echo_reactor::log_sink`, in the logger's format).
//! - A line the sink took only part of (a socket, a terminal, a line
//!   longer than `PIPE_BUF`) is finished before any other line is
//!   written, so no line is ever cut; lines logged meanwhile are dropped.
//! - At exit the binary gives the sink a short, fixed time to take the
//!   rest of a line and the summary ([`LogSink::drain`]), then exits
//!   anyway: a stuck sink must not hold the shutdown either.
//!
//! # Without blocking, and without touching anyone else's stderr
//!
//! `O_NONBLOCK` belongs to the *open file description*, and stderr's is
//! shared: with the shell and the terminal the server was started from,
//! with a master and all its workers. Setting it on descriptor 2 would
//! make their writes fail with `EAGAIN`. So the sink gets a description of
//! its own, by kind of stderr:
//!
//! - a pipe, FIFO or terminal: opened again through `/proc/self/fd/2`,
//!   which makes a new description of the same pipe or terminal, and that
//!   one non-blocking;
//! - a socket (a service manager's stream socket): the same socket, sent
//!   to with `MSG_DONTWAIT`, a per-call flag;
//! - a regular file, `/dev/null`: written as it is; writes to them do not
//!   wait for a reader.
//!
//! Only when `/proc` cannot reopen a pipe or terminal does the sink write
//! to stderr as it is, blocking, and it says so in its first line.
//!
//! # Why not a queue and a writer thread
//!
//! That was the first version: a bounded queue in memory, written out by a
//! thread that may block. It kept the loop serving, but a second thread
//! makes every `recv` and `send` of the echo path dearer: glibc's syscall
//! wrappers switch cancellation on and off around each call once a process
//! has more than one thread, and it never switches back. Callgrind, 100
//! connections x 64 B, 100,000 echoes: 322.7 instructions per echo before,
//! 422.1 with the thread (docs/limits.md). The sink's own buffer is as
//! good a queue, and costs the process nothing until a line is written.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines dropped so far by every sink in this process.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines this process has dropped because the sink did not take them
/// (0 when the binary's logger is not installed: an embedder logs its own
/// way).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Where the lines go, and how a write there is kept from waiting.
#[derive(Debug)]
enum Target {
    /// A description of our own, non-blocking (a pipe, FIFO or terminal).
    Private(File),
    /// A socket, sent to with `MSG_DONTWAIT`.
    Socket(socket2::Socket),
    /// A regular file or `/dev/null`: written as it is, never waits; or,
    /// when nothing else was possible, stderr as it is.
    Shared(File),
}

impl Target {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Target::Private(f) | Target::Shared(f) => f.write(buf),
            Target::Socket(s) => s.send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL),
        }
    }

    fn raw_fd(&self) -> i32 {
        match self {
            Target::Private(f) | Target::Shared(f) => f.as_raw_fd(),
            Target::Socket(s) => s.as_raw_fd(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    target: Target,
    /// The unwritten end of a line the sink took only part of.
    tail: Vec<u8>,
    /// Lines dropped since the last summary.
    unreported: u64,
    /// Put before the summary's text, as the logger puts it before every
    /// message (a worker's `worker N: `).
    prefix: String,
}

/// How one write attempt went.
#[derive(Debug, PartialEq, Eq)]
enum Wrote {
    /// All of it, or a part, the rest kept in `tail`.
    Taken,
    /// None of it: the sink is full (or gone).
    Full,
}

impl Inner {
    /// Writes `line` once, without waiting; keeps what the sink did not
    /// take of it in `tail`.
    fn write_line(&mut self, line: &[u8]) -> Wrote {
        loop {
            return match self.target.write(line) {
                Ok(0) => Wrote::Full,
                Ok(n) => {
                    self.tail.extend_from_slice(&line[n..]);
                    Wrote::Taken
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Full (WouldBlock), or a reader that is gone (EPIPE):
                // either way the line is not written.
                Err(_) => Wrote::Full,
            };
        }
    }

    /// Writes what is left of a partly written line; true once none is.
    fn finish_tail(&mut self) -> bool {
        while !self.tail.is_empty() {
            match self.target.write(&self.tail) {
                Ok(0) => return false,
                Ok(n) => {
                    self.tail.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // The sink is gone: the rest will never be read.
                Err(_) => self.tail.clear(),
            }
        }
        true
    }

    /// Writes the summary of dropped lines, if one is owed; true if none
    /// is owed any more.
    fn report_drops(&mut self) -> bool {
        if self.unreported == 0 {
            return true;
        }
        let summary = summary_line(&self.prefix, self.unreported, SystemTime::now());
        if self.write_line(summary.as_bytes()) == Wrote::Full {
            return false;
        }
        self.unreported = 0;
        true
    }

    fn drop_line(&mut self) {
        self.unreported += 1;
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A log sink that never waits: whole lines, or dropped and counted.
/// Clones share the sink. As an [`io::Write`], each `write` is one whole
/// line (what a logger writes per record) and always "succeeds": written,
/// or dropped and counted.
#[derive(Debug, Clone)]
pub struct LogSink {
    inner: Arc<Mutex<Inner>>,
}

impl LogSink {
    /// A sink writing to this process's stderr (descriptor 2).
    /// `prefix` goes before the text of the summary of dropped lines, as
    /// the logger puts it before every message.
    pub fn stderr(prefix: &str) -> io::Result<LogSink> {
        LogSink::open(io::stderr().as_fd(), prefix)
    }

    /// A sink writing to `fd`, by the rules of the module docs.
    pub fn open(fd: BorrowedFd<'_>, prefix: &str) -> io::Result<LogSink> {
        let own: OwnedFd = fd.try_clone_to_owned()?;
        let file = File::from(own);
        let kind = file.metadata()?.file_type();
        let target = if kind.is_socket() {
            Target::Socket(socket2::Socket::from(OwnedFd::from(file)))
        } else if kind.is_fifo() || kind.is_char_device() {
            match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            {
                Ok(private) => Target::Private(private),
                Err(e) => {
                    let mut shared = file;
                    let _ = writeln!(
                        shared,
                        "echo-reactor: cannot reopen stderr without blocking ({e}); \
                         a log sink that stops reading will stop the server"
                    );
                    Target::Shared(shared)
                }
            }
        } else {
            Target::Shared(file)
        };
        Ok(LogSink {
            inner: Arc::new(Mutex::new(Inner {
                target,
                tail: Vec::new(),
                unreported: 0,
                prefix: prefix.to_string(),
            })),
        })
    }

    /// The state; a panic elsewhere while it was held leaves nothing half
    /// done in it that matters (at worst a summary written twice), so a
    /// poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `line` (whole, ending in a newline) if the sink takes it,
    /// after the rest of an earlier line and any summary owed; else drops
    /// and counts it. Never waits. True if written.
    pub fn push(&self, line: &[u8]) -> bool {
        let mut inner = self.lock();
        if inner.finish_tail() && inner.report_drops() && inner.write_line(line) == Wrote::Taken {
            return true;
        }
        inner.drop_line();
        false
    }

    /// Waits until the sink has taken the rest of a partly written line
    /// and any summary owed, for at most `bound`. True if it has.
    pub fn drain(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let mut inner = self.lock();
        loop {
            if inner.finish_tail() && inner.report_drops() && inner.finish_tail() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let mut pfd = libc::pollfd {
                fd: inner.target.raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd, for a descriptor this sink owns;
            // poll only writes its `revents`.
            if unsafe { libc::poll(&mut pfd, 1, ms) } < 0
                && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
            {
                return false;
            }
        }
    }
}

impl Write for LogSink {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The summary of `dropped` lines, as `env_logger`'s default format would
/// write it at warn level: `[2026-12-07T13:09:38Z WARN  target] text`.
fn summary_line(prefix: &str, dropped: u64, now: SystemTime) -> String {
    format!(
        "[{} WARN  echo_reactor::log_sink] {prefix}{dropped} log lines dropped: \
         the log sink did not keep up\n",
        rfc3339_seconds(now)
    )
}

/// `now` in UTC as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339_seconds(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{at:.0}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn dates_are_the_calendars() {
        assert_eq!(rfc3339_seconds(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_millis(11_016 * 86_400_000 + 999);
        assert_eq!(rfc3339_seconds(leap), "2000-02-29T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(20_794 * 86_400 + 13 * 3600 + 9 * 60 + 38);
        assert_eq!(rfc3339_seconds(t), "2026-12-07T13:09:38Z");
        assert_eq!(
            summary_line("worker 1: ", 42, t),
            "[2026-12-07T13:09:38Z WARN  echo_reactor::log_sink] worker 1: 42 log lines \
             dropped: the log sink did not keep up\n"
        );
    }

    #[test]
    fn a_full_pipe_drops_and_counts_whole_lines_then_says_how_many() {
        let (mut reader, writer) = io::pipe().expect("pipe");
        let sink = LogSink::open(writer.as_fd(), "").expect("sink");
        assert!(matches!(sink.lock().target, Target::Private(_)));
        // Nobody reads: the pipe fills, and the pushes go on returning.
        let before = dropped_lines();
        let line = |i: usize| format!("line {i:06} {}\n", "x".repeat(80));
        let written = (0..5000).filter(|&i| sink.push(line(i).as_bytes())).count();
        assert!(written < 5000, "a pipe took 5000 lines");
        let dropped = dropped_lines() - before;
        assert_eq!(dropped, 5000 - written as u64);
        // The writer end stays open in `sink`; read what is there.
        drop(writer);
        let mut got = vec![0u8; 1 << 20];
        let n = reader.read(&mut got).expect("read");
        let text = String::from_utf8_lossy(&got[..n]).into_owned();
        assert_eq!(text.lines().count(), written, "whole lines only");
        assert!(text.ends_with('\n'));
        // Room again: the summary first, then the line.
        assert!(sink.push(b"after\n"));
        assert!(sink.drain(Duration::ZERO));
        let n = reader.read(&mut got).expect("read");
        let text = String::from_utf8_lossy(&got[..n]).into_owned();
        let (summary, after) = text.split_once('\n').expect("two lines");
        assert!(
            summary.ends_with(&format!(
                "] {dropped} log lines dropped: the log sink did not keep up"
            )),
            "{summary}"
        );
        assert_eq!(after, "after\n");
    }
}
