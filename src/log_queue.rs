//! Logging that cannot stop the loop: a bounded queue between the code
//! that logs and the descriptor its lines go to.
//!
//! The server logs to stderr, and stderr can be anything: a terminal, a
//! file, or a pipe to a supervisor (a service manager, a container
//! runtime, `2> >(...)`) that may stop reading. A write to a full pipe
//! blocks, and a loop blocked in its logger serves nobody and does not
//! hear SIGTERM: with a synchronous logger, `RUST_LOG=debug` and an
//! unread pipe froze the server after 642 connections. So the binary's
//! logger never writes. It formats a record, hands the line to a
//! [`LogQueue`] and returns; one thread of its own, the writer, takes
//! what is queued and writes it to the sink, blocking there if the sink
//! blocks.
//!
//! # The policy
//!
//! - At most [`QUEUE_BYTES`] of lines wait to be written. A line that does
//!   not fit is dropped whole (never cut) and counted: `log_dropped` in
//!   the stats line, `echo_reactor_log_lines_dropped_total` in
//!   `/metrics` ([`dropped_lines`] is the count; it is process-wide, like
//!   the logger).
//! - Once the lines queued before the drops are written, one line says how
//!   many were lost: `N log lines dropped: the log sink did not keep up`
//!   (warn, target `echo_reactor::log_queue`). If that line too finds the
//!   queue full it is counted with the next ones.
//! - At exit the process gives the queue a short, fixed time to drain
//!   (the binary's `LOG_DRAIN_AT_EXIT`), then exits anyway: a stuck sink
//!   must not hold the shutdown either. What was still queued is lost.
//!
//! # Why a thread, and not the sink's descriptor in the poller
//!
//! A loop could own its sink: make it non-blocking, write when it is
//! writable. But `O_NONBLOCK` belongs to the open file description, and
//! stderr's is shared: with the shell and the terminal it was started
//! from, with a master and all its workers. Setting it would make their
//! writes fail with `EAGAIN` too. A thread that may block in `write(2)`
//! needs no flag, works for any kind of sink, and does the same in a
//! single process, a master and a worker. The loop stays single-threaded:
//! the writer touches nothing but the queue, and the loop's side of the
//! queue ([`LogQueue::push`]) only takes a lock that the writer holds to
//! swap two buffers, never across a write. Logging at the default level
//! puts nothing on the echo path: no record is formatted there.
//!
//! # Using it
//!
//! The binary gives a clone of the queue to its logger as the place
//! formatted records go (`env_logger`'s `Target::Pipe`), and keeps one
//! to drain at exit ([`LogQueue::drain`]). Any `Write` works as the sink.

use std::io::{self, Write};
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes of log lines that may wait for the sink: as much as a Linux pipe
/// holds, some 650 lines of about 100 bytes, so that the sink's buffer
/// and this queue together absorb a burst of twice what the pipe alone
/// would. The writer holds at most as much again while it writes a batch
/// it took: 128 KiB of memory at most, whatever the sink does. A larger
/// queue would only postpone the drops from a sink that has stopped.
pub const QUEUE_BYTES: usize = 64 * 1024;

/// Lines dropped so far by every queue in this process.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines this process has dropped because the sink did not keep up
/// (0 when the binary's logger is not installed: an embedder logs its own
/// way).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// What the logging side and the writer share, under one lock.
#[derive(Debug, Default)]
struct State {
    /// Whole lines, waiting for the writer.
    queued: Vec<u8>,
    /// Lines dropped since the writer last took the queue: the summary it
    /// owes.
    unreported: u64,
    /// The writer is writing a batch it took (so the sink has not seen all
    /// of it yet).
    writing: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when there is something for the writer.
    work: Condvar,
    /// Signalled when the writer finished a batch.
    written: Condvar,
    /// [`QUEUE_BYTES`], or less in tests.
    capacity: usize,
}

impl Shared {
    /// The state; a panic elsewhere while it was held leaves nothing half
    /// done in it (every change is one assignment or one append), so a
    /// poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bounded queue of log lines, written to its sink by a thread of its
/// own. Clones share the queue. As an [`io::Write`], each `write` is one
/// whole line (what a logger writes per record) and always "succeeds":
/// queued, or dropped and counted.
#[derive(Debug, Clone)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

impl LogQueue {
    /// Starts the writer thread for `sink`, with room for [`QUEUE_BYTES`].
    pub fn start(sink: impl Write + Send + 'static) -> io::Result<LogQueue> {
        LogQueue::with_capacity(sink, QUEUE_BYTES)
    }

    /// Starts the writer thread for `sink`, with room for `capacity` bytes.
    pub fn with_capacity(
        sink: impl Write + Send + 'static,
        capacity: usize,
    ) -> io::Result<LogQueue> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            written: Condvar::new(),
            capacity,
        });
        let writer = Arc::clone(&shared);
        thread::Builder::new()
            .name("log writer".into())
            .spawn(move || write_lines(&writer, sink))?;
        Ok(LogQueue { shared })
    }

    /// Queues `line` if it fits, else drops and counts it. Never waits
    /// for the sink. True if queued.
    pub fn push(&self, line: &[u8]) -> bool {
        let mut state = self.shared.lock();
        if state.queued.len() + line.len() > self.shared.capacity {
            state.unreported += 1;
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let was_empty = state.queued.is_empty();
        state.queued.extend_from_slice(line);
        drop(state);
        if was_empty {
            self.shared.work.notify_one();
        }
        true
    }

    /// Waits until everything queued so far has been written (and any
    /// summary of dropped lines too), for at most `bound`. True if it was.
    pub fn drain(&self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let mut state = self.shared.lock();
        while !state.queued.is_empty() || state.writing || state.unreported > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Write for LogQueue {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.push(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer: takes the whole queue at once, writes it, and again.
///
/// The lines dropped while a batch filled up were dropped after that
/// batch's lines and before any line queued after it was taken, so the
/// summary is logged right when the batch is taken: it is the first line
/// of the next batch. It goes through `log`, so that it is formatted like
/// every other line (a worker's says which worker).
fn write_lines(shared: &Shared, mut sink: impl Write) {
    let mut batch = Vec::new();
    loop {
        let dropped = {
            let mut state = shared.lock();
            state.writing = false;
            shared.written.notify_all();
            while state.queued.is_empty() && state.unreported == 0 {
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            mem::swap(&mut state.queued, &mut batch);
            state.writing = true;
            mem::take(&mut state.unreported)
        };
        if dropped > 0 {
            log::warn!(
                target: "echo_reactor::log_queue",
                "{dropped} log lines dropped: the log sink did not keep up"
            );
        }
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(chunk_len(rest));
            // Nobody to tell if the sink fails (a closed pipe): the lines
            // are lost, as they would be with any logger.
            if sink.write_all(chunk).is_err() {
                break;
            }
            rest = after;
        }
        let _ = sink.flush();
        batch.clear();
    }
}

/// The most bytes a write to a pipe puts in at once, never interleaved
/// with another writer's (POSIX `PIPE_BUF`, 4096 on Linux).
const PIPE_BUF: usize = 4096;

/// How much of `bytes` (whole lines) to write at once: whole lines of at
/// most [`PIPE_BUF`] bytes together, or one longer line alone. A pipe
/// takes such a write whole or waits, so a reader never gets a line cut
/// off when the writer stops (the process exits with the sink stuck), and
/// the lines of a master and its workers, which share the pipe, never mix
/// (a logger that writes each record with one `write` keeps the same
/// promise).
fn chunk_len(bytes: &[u8]) -> usize {
    if bytes.len() <= PIPE_BUF {
        return bytes.len();
    }
    match bytes[..PIPE_BUF].iter().rposition(|&b| b == b'\n') {
        Some(end) => end + 1,
        None => bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |end| end + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn writes_are_whole_lines_of_at_most_pipe_buf_bytes_or_one_long_line() {
        let line = |len: usize| {
            let mut l = vec![b'x'; len - 1];
            l.push(b'\n');
            l
        };
        let short: Vec<u8> = (0..100).flat_map(|_| line(100)).collect();
        assert_eq!(chunk_len(&short), 4000);
        assert_eq!(chunk_len(&short[..4000]), 4000);
        assert_eq!(chunk_len(&short[..50]), 50);
        let long = [line(5000), line(10)].concat();
        assert_eq!(chunk_len(&long), 5000);
        assert_eq!(chunk_len(&[b'x'; 6000]), 6000);
    }

    /// A sink that takes nothing until it is told to, then everything.
    struct Gate {
        open: mpsc::Receiver<()>,
        opened: bool,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self.opened {
                let _ = self.open.recv();
                self.opened = true;
            }
            self.out.lock().expect("out").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_drops_and_counts_whole_lines_and_never_blocks_the_pusher() {
        let (open, gate) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Gate {
            open: gate,
            opened: false,
            out: Arc::clone(&out),
        };
        let queue = LogQueue::with_capacity(sink, 100).expect("writer thread");
        // The first line is taken by the writer, which then blocks on the
        // closed gate; the queue behind it holds 100 bytes: ten lines.
        assert!(queue.push(b"line 0000\n"));
        while !queue.shared.lock().writing {
            thread::yield_now();
        }
        assert!(!queue.drain(Duration::ZERO), "a stuck sink drained");
        let before = dropped_lines();
        let queued = (1..=1000)
            .filter(|i| queue.push(format!("line {i:04}\n").as_bytes()))
            .count();
        assert_eq!(queued, 10, "lines queued in 100 bytes");
        assert!(
            dropped_lines() - before >= 1000 - 10,
            "{} dropped",
            dropped_lines() - before
        );
        open.send(()).expect("gate");
        assert!(queue.drain(Duration::from_secs(20)), "never drained");
        let text = String::from_utf8(out.lock().expect("out").clone()).expect("utf-8");
        // Whole lines only, the first one first, then the ten that fit.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11, "{text}");
        assert_eq!(lines[..2], ["line 0000", "line 0001"]);
        assert!(lines.iter().all(|l| l.len() == 9), "{text}");
        // Room again once drained.
        assert!(queue.push(b"after\n"));
        assert!(queue.drain(Duration::from_secs(20)));
        assert!(out.lock().expect("out").ends_with(b"line 0010\nafter\n"));
    }
}
