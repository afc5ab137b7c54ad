//! One TCP connection of the client, and how its echo is checked.
//!
//! A connection's stream is tracked with three byte counters: `want`
//! (bytes of whole messages issued), `sent` (written to the socket) and
//! `recvd` (echoed and checked). Message `m` is bytes
//! `m*size .. (m+1)*size`, so issuing, completing and checking need no
//! per-message bookkeeping except one send time per in-flight message.

use super::open_loop::Slot;
use crate::schedule::Schedule;
use crate::stats::ErrorKind;
use log::{debug, warn};
use mio::net::TcpStream;
use std::time::Instant;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    /// `connect` returned EINPROGRESS; waiting for the writable event.
    Connecting,
    /// Connected; message 0 is in flight to prove the server serves us.
    Proving,
    /// Proven; takes part in the run.
    Ready,
}

/// One TCP connection. Its buffers are not its own: it writes straight
/// from the shared [`Pattern`](crate::pattern::Pattern) and reads into the thread's buffer, so an
/// idle connection costs its socket and this struct only.
pub(super) struct Conn {
    pub stream: TcpStream,
    /// Number across all threads; picks the pattern start and names the
    /// connection in logs.
    pub id: usize,
    /// Where this connection's stream starts in the pattern cycle.
    pub start: usize,
    /// Where the answers it must get start in theirs (the same as `start`
    /// when answers are echoes).
    pub rstart: usize,
    /// The server's greeting line has yet to be skipped (`--banner`).
    pub banner: bool,
    /// Bytes of the answer to `--first-message` still to be read and
    /// checked.
    pub first_left: u32,
    pub state: ConnState,
    /// When `connect` was called, for the connect timeout.
    pub opened_at: Instant,
    /// Last time an echo completed, or a message was issued while none was
    /// in flight: an echo overdue by `--timeout` from here is a stall.
    pub last_progress: Instant,
    /// Bytes of whole messages issued so far.
    pub want: u64,
    /// Bytes written to the socket; `sent < want` means a write is pending
    /// and waits for the next writable event.
    pub sent: u64,
    /// Bytes of answers read back and checked (the same as echoed bytes,
    /// except under a transform that lengthens each line).
    pub recvd: u64,
    /// Closed loop: when each in-flight message was issued, indexed by
    /// message number modulo `depth`. At most `depth` messages are in
    /// flight, so a slot is free again by the time it is reused.
    pub times: Box<[Instant]>,
    /// Open loop: this connection's place in the schedule.
    pub slot: Slot,
    /// Failed; its key waits on the thread's list of deferred frees.
    pub dead: bool,
}

impl Conn {
    /// A connection whose `connect` was just started, at `now`; its
    /// requests and answers start at `starts`, and it first skips a
    /// greeting line if `banner`.
    pub(super) fn new(
        stream: TcpStream,
        id: usize,
        starts: (usize, usize),
        banner: bool,
        depth: usize,
        now: Instant,
    ) -> Conn {
        Conn {
            stream,
            id,
            start: starts.0,
            rstart: starts.1,
            banner,
            first_left: 0,
            state: ConnState::Connecting,
            opened_at: now,
            last_progress: now,
            want: 0,
            sent: 0,
            recvd: 0,
            times: vec![now; depth].into_boxed_slice(),
            slot: Slot::default(),
            dead: false,
        }
    }

    /// Messages issued whose echo is not complete yet (`size` bytes each,
    /// answered with `reply` bytes each).
    pub(super) fn in_flight(&self, size: u64, reply: u64) -> u64 {
        self.want / size - self.recvd / reply
    }

    /// Answer bytes due for what has been written: an echo may come back
    /// in any pieces, but a transformed answer only for a whole message.
    fn due(&self, size: u64, reply: u64) -> u64 {
        if size == reply {
            self.sent - self.recvd
        } else {
            self.sent / size * reply - self.recvd
        }
    }

    /// Drops the server's greeting line from the front of `got`, if it is
    /// still to be skipped, and returns the rest.
    pub(super) fn skip_banner<'a>(&mut self, got: &'a [u8]) -> &'a [u8] {
        if !self.banner {
            return got;
        }
        match got.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                self.banner = false;
                &got[lf + 1..]
            }
            None => &[],
        }
    }

    /// Checks the front of `got` against what is left of the answer to the
    /// first message (`answer`), and returns the rest; or the error if it
    /// is wrong (an answer that is mostly wrong is no answer at all: the
    /// server declined the connection).
    pub(super) fn check_first<'a>(
        &mut self,
        got: &'a [u8],
        answer: &[u8],
    ) -> Result<&'a [u8], ErrorKind> {
        if self.first_left == 0 {
            return Ok(got);
        }
        let take = (self.first_left as usize).min(got.len());
        let at = answer.len() - self.first_left as usize;
        let want = &answer[at..at + take];
        if want != &got[..take] {
            let right = want.iter().zip(got).filter(|(a, b)| a == b).count();
            warn!(
                "connection {}: the answer to the first message is wrong at byte {}",
                self.id,
                at + want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0)
            );
            return Err(if right * 2 <= take {
                ErrorKind::Rejected
            } else {
                ErrorKind::Mismatch
            });
        }
        self.first_left -= take as u32;
        Ok(&got[take..])
    }

    /// When run message `m` (1, 2, ...) counts as sent: in open loop its
    /// due time, not the moment it left (so a stall is charged to every
    /// message that should have left during it); in closed loop the moment
    /// it was issued.
    pub(super) fn sent_at(&self, schedule: Option<&Schedule>, m: u64, depth: u64) -> Instant {
        match schedule {
            Some(s) => s.due_at_on_slot(self.slot.index, m - 1),
            None => self.times[(m % depth) as usize],
        }
    }
}

/// Checks `got`, just read on `conn`, against the echo it must be, and
/// says (and logs) what is wrong with it, if anything.
///
/// Any wrong byte is a [`ErrorKind::Mismatch`], with one exception: the
/// reply to a connection's first message may be no echo at all but the
/// server declining to serve it (a "too many connections" line, say),
/// which is [`ErrorKind::Rejected`]. A first reply most of whose bytes are
/// right, though, is an echo that came back corrupted: a mismatch.
///
/// `want` is what `got` must be: as many bytes of the answers due from
/// `conn.recvd` on.
pub(super) fn check_echo(
    conn: &Conn,
    got: &[u8],
    want: &[u8],
    (size, reply): (u64, u64),
) -> Option<ErrorKind> {
    let due = conn.due(size, reply) as usize;
    // An echo can never be ahead of what was written.
    let i = if got.len() > due {
        due
    } else if want == got {
        // The common case: one memcmp.
        return None;
    } else {
        want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0)
    };
    let echoed = &got[..got.len().min(due)];
    // The bytes of this reply checked before `got` were all right.
    let agreeing = want.iter().zip(echoed).filter(|(a, b)| a == b).count();
    let right = conn.recvd + agreeing as u64;
    if conn.state != ConnState::Ready && right * 2 <= conn.recvd + echoed.len() as u64 {
        debug!(
            "connection {}: first reply is not an echo: {:?}",
            conn.id,
            String::from_utf8_lossy(&got[..got.len().min(80)])
        );
        return Some(ErrorKind::Rejected);
    }
    warn!(
        "connection {}: echoed byte at stream offset {} is wrong (got {:#04x})",
        conn.id,
        conn.recvd + i as u64,
        got[i.min(got.len() - 1)]
    );
    Some(ErrorKind::Mismatch)
}
