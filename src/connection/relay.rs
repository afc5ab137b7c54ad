//! A relay: two sockets, each one's input the other's output. The step
//! after echo, which is a relay whose two ends are the same socket.
//!
//! A pair is a client the server accepted and the connection the loop
//! opened for it to the upstream (`reactor/relays.rs` opens it, routes
//! the events of both ends here, and closes the pair). This file is the
//! pair's turn: which end to read, where the bytes go, when to stop.
//!
//! # The rules, echo's with two sockets
//!
//! Each end keeps echo's readiness memo and obeys echo's rules
//! (`connection/mod.rs`), with "its own output" read as "the other end's":
//!
//! 1. **Read until empty, or the budget.** One read per end per turn
//!    ([`READ_BUDGET`](super::READ_BUDGET)); a short read proves the queue
//!    empty ([`read_by_rule_1`]); an end that may hold more puts the pair
//!    on the run-next queue.
//! 2. **Write interest only while output is pending.** A read is written
//!    straight to the other end's socket; only what it does not take
//!    waits in that end's [`OutBuf`], and that end asks for `WRITABLE`
//!    until it drains.
//! 3. **Backpressure across the pair.** An end is read only while the
//!    *other* end's pending output is at most [`HIGH_WATERMARK`]; past
//!    it, the end is paused (no `READABLE` interest) until that output
//!    drains below [`LOW_WATERMARK`]. A slow reader on one side stops the
//!    relay reading the other side, and TCP's flow control carries the
//!    stall back to the fast sender: a pair holds at most one watermark
//!    plus one read per direction, whatever the two peers do.
//! 4. **A half-close is passed on.** An end's FIN (EOF) becomes our FIN
//!    to the other end, after that end's pending output; the other
//!    direction keeps flowing. The pair is done when both FINs have been
//!    passed on. An error on either end (a reset, say) ends the pair at
//!    once, both sockets closed: a relay cannot half-keep a broken
//!    stream.
//!
//! Bytes held are charged to `--max-buffered` before they are read (a read
//! no larger than the budget has room for); a pair that finds the budget
//! full stops reading and is tried again by the loop.
//!
//! # A refused upstream
//!
//! When the upstream cannot be reached (refused, unreachable, timed out),
//! the client is told in one line, `ERR upstream: REASON`, followed by our
//! FIN ([`Pair::refuse`]); the client's input is read and dropped until its
//! FIN, so that closing cannot turn into a reset that loses the line
//! (the linger of `connection/mod.rs`, bounded by the loop).

use std::io;

use super::{
    CloseReason, HIGH_WATERMARK, Input, LOW_WATERMARK, Outcome, Ready, Stream, Take,
    read_by_rule_1, write_once,
};
use crate::budget::Budget;
use crate::outbuf::OutBuf;
use crate::poller::{Interest, Poller, Token};
use crate::stats::Stats;
use crate::token;

/// The end a client connected to the server with.
pub(crate) const CLIENT: usize = 0;
/// The end the loop opened to the upstream.
pub(crate) const UPSTREAM: usize = 1;

/// One socket of a pair, and the output waiting for it.
#[derive(Debug)]
struct End<S> {
    stream: S,
    /// Bytes read from the other end that this socket has not taken yet.
    out: OutBuf,
    /// What is registered with the poller (`None`: not registered).
    interest: Option<Interest>,
    /// Readiness memo, as a connection's (rule 1).
    read_ready: bool,
    /// Rule 1's exceptions: a FIN or urgent data was announced.
    short_reads_prove_nothing: bool,
    /// A writable event came: flush first.
    write_hinted: bool,
    /// Its peer's FIN was read: no more input from this end.
    eof: bool,
    /// Our FIN was sent to it (after its pending output).
    fin_sent: bool,
    /// Not read: the other end's pending output passed the high
    /// watermark (rule 3).
    paused: bool,
}

impl<S> End<S> {
    fn new(stream: S) -> End<S> {
        End {
            stream,
            out: OutBuf::new(),
            interest: None,
            read_ready: false,
            short_reads_prove_nothing: false,
            write_hinted: false,
            eof: false,
            fin_sent: false,
            paused: false,
        }
    }
}

/// What the loop lends a pair for its turn.
pub(crate) struct RelayCx<'a, P> {
    /// The pair's slot: its ends' tokens are `token::relay(key, side)`.
    pub(crate) key: usize,
    pub(crate) poller: &'a mut P,
    /// The loop's read buffer: a read lands here and is written to the
    /// other end from here.
    pub(crate) buf: &'a mut [u8],
    pub(crate) stats: &'a mut Stats,
    pub(crate) budget: &'a mut Budget,
}

/// A client and its upstream, relayed to each other.
#[derive(Debug)]
pub(crate) struct Pair<S> {
    ends: [End<S>; 2],
    /// Found the budget full: no end is read until the loop lets it try
    /// again ([`Pair::unstarve`]).
    starved: bool,
    /// The upstream could not be reached: the client's input is dropped.
    refused: bool,
}

/// What one end's read came to.
enum Pumped {
    /// Nothing more to read now.
    Done,
    /// It may hold more: a turn next tick.
    More,
    /// The budget has no room for a read.
    NoRoom,
}

impl<S: Stream> Pair<S> {
    /// A pair of `client` and `upstream`, with the upstream registered for
    /// `WRITABLE` (its connect in progress) and the client not at all:
    /// it is not read before there is somewhere to send its bytes.
    pub(crate) fn connecting(client: S, upstream: S) -> Pair<S> {
        let mut upstream = End::new(upstream);
        upstream.interest = Some(Interest::WRITABLE);
        Pair {
            ends: [End::new(client), upstream],
            starved: false,
            refused: false,
        }
    }

    /// The upstream's socket (for the loop to ask how its connect went).
    pub(crate) fn upstream(&self) -> &S {
        &self.ends[UPSTREAM].stream
    }

    /// The upstream's connect succeeded: both ends are looked at in the
    /// next turn (input may have arrived from either already).
    pub(crate) fn connected(&mut self) {
        for end in &mut self.ends {
            end.read_ready = true;
            end.write_hinted = true;
        }
    }

    /// The upstream cannot be reached: `notice` goes to the client, then
    /// our FIN; its input is dropped until its own FIN. The upstream end is
    /// taken off the poller and counts as finished both ways.
    pub(crate) fn refuse<P: Poller>(&mut self, notice: &[u8], cx: &mut RelayCx<'_, P>) {
        let upstream = &mut self.ends[UPSTREAM];
        if upstream.interest.take().is_some() {
            let _ = cx.poller.deregister(upstream.stream.as_raw_fd());
        }
        (upstream.eof, upstream.fin_sent) = (true, true);
        self.refused = true;
        let client = &mut self.ends[CLIENT];
        let before = client.out.capacity();
        client.out.push(notice);
        cx.budget.settle(before, client.out.capacity());
        client.write_hinted = true;
        client.read_ready = true;
    }

    /// The server is shutting down: the client's input is taken as
    /// ended (our FIN goes to the upstream after what is pending), and
    /// the upstream's answers still flow until it closes.
    pub(crate) fn end_client_input(&mut self) {
        self.ends[CLIENT].eof = true;
        self.ends[UPSTREAM].write_hinted = true;
    }

    /// Records an event's hints for end `side`.
    pub(crate) fn hold(&mut self, side: usize, ready: Ready) {
        let end = &mut self.ends[side];
        if ready.readable || ready.read_closed {
            end.read_ready = true;
        }
        if ready.read_closed || ready.urgent {
            end.short_reads_prove_nothing = true;
        }
        if ready.writable {
            end.write_hinted = true;
        }
    }

    /// The budget may have room again: both ends are read next turn
    /// (edges that came while starved were not asked for).
    pub(crate) fn unstarve(&mut self) {
        self.starved = false;
        for end in &mut self.ends {
            end.read_ready = true;
        }
    }

    /// Bytes held for the two peers, as the budget counts them.
    pub(crate) fn held(&self) -> usize {
        self.ends.iter().map(|end| end.out.capacity()).sum()
    }

    /// Takes both ends off the poller (the pair is closing).
    pub(crate) fn deregister<P: Poller>(&mut self, poller: &mut P) {
        for end in &mut self.ends {
            if end.interest.take().is_some() {
                let _ = poller.deregister(end.stream.as_raw_fd());
            }
        }
    }

    /// One turn: every write and read the rules allow, then the interest
    /// each end's new state calls for.
    pub(crate) fn drive<P: Poller>(&mut self, cx: &mut RelayCx<'_, P>) -> Outcome {
        let outcome = self
            .turn(cx)
            .and_then(|outcome| self.sync_interest(cx).map(|()| outcome));
        outcome.unwrap_or_else(|e| Outcome::Close(CloseReason::Error(e)))
    }

    fn turn<P>(&mut self, cx: &mut RelayCx<'_, P>) -> io::Result<Outcome> {
        // Output first: it is older than any input, and draining it may
        // lift the other end's pause so this same turn reads it.
        for side in [CLIENT, UPSTREAM] {
            if std::mem::take(&mut self.ends[side].write_hinted) {
                self.flush(side, cx)?;
            }
        }
        let mut more = false;
        for side in [CLIENT, UPSTREAM] {
            match self.pump(side, cx)? {
                Pumped::Done => {}
                Pumped::More => more = true,
                Pumped::NoRoom => {
                    self.starved = true;
                    return Ok(Outcome::Starved { retry: true });
                }
            }
        }
        // Rule 4: each FIN passed on, after the output it follows.
        for to in [CLIENT, UPSTREAM] {
            let from_eof = self.ends[1 - to].eof;
            let end = &mut self.ends[to];
            if from_eof && !end.fin_sent && end.out.is_empty() {
                end.stream.shutdown_write()?;
                end.fin_sent = true;
            }
        }
        if self.ends.iter().all(|end| end.eof && end.fin_sent) {
            return Ok(Outcome::Close(CloseReason::PeerClosed));
        }
        Ok(if more {
            Outcome::Requeue
        } else {
            Outcome::Keep
        })
    }

    /// One read from end `from`, written on to the other end (rules 1, 2
    /// and 3); with the upstream refused, the client's input is dropped.
    fn pump<P>(&mut self, from: usize, cx: &mut RelayCx<'_, P>) -> io::Result<Pumped> {
        let [a, b] = ends_from(&mut self.ends, from);
        if a.eof || a.paused || !a.read_ready || self.starved {
            return Ok(Pumped::Done);
        }
        let allowed = cx.budget.read_allowance(cx.buf.len());
        if allowed == 0 {
            cx.budget.note_full();
            return Ok(Pumped::NoRoom);
        }
        let buf = &mut cx.buf[..allowed];
        let n = match read_by_rule_1(
            &mut a.stream,
            buf,
            Take::Read,
            &mut a.read_ready,
            &mut a.short_reads_prove_nothing,
        )? {
            Input::Data(n) => n,
            Input::Empty => return Ok(Pumped::Done),
            Input::Eof => {
                a.eof = true;
                return Ok(Pumped::Done);
            }
        };
        cx.stats.bytes_in += n as u64;
        if !self.refused {
            let data = &buf[..n];
            let sent = if b.out.is_empty() {
                write_once(&mut b.stream, data)?
            } else {
                0
            };
            cx.stats.bytes_out += sent as u64;
            let rest = &data[sent..];
            if !rest.is_empty() {
                let before = b.out.capacity();
                b.out.push(rest);
                cx.budget.settle(before, b.out.capacity());
                if b.out.len() > HIGH_WATERMARK {
                    // Rule 3: stop reading what the other end cannot take.
                    a.paused = true;
                    cx.stats.backpressure_pauses += 1;
                }
            }
        }
        Ok(if a.read_ready && !a.paused {
            Pumped::More
        } else {
            Pumped::Done
        })
    }

    /// Writes end `to`'s pending output: one `write`, since the output is
    /// one contiguous slice and a short write means the socket is full
    /// (rule 2 waits for its next writable edge). Below the low watermark,
    /// the other end is read again.
    fn flush<P>(&mut self, to: usize, cx: &mut RelayCx<'_, P>) -> io::Result<()> {
        let [b, a] = ends_from(&mut self.ends, to);
        if b.out.is_empty() {
            return Ok(());
        }
        let written = write_once(&mut b.stream, b.out.as_slice())?;
        let before = b.out.capacity();
        b.out.consume(written);
        cx.budget.settle(before, b.out.capacity());
        cx.stats.bytes_out += written as u64;
        if a.paused && b.out.len() < LOW_WATERMARK {
            a.paused = false;
            // Edges that came while paused were not asked for.
            a.read_ready = true;
        }
        Ok(())
    }

    /// Registers each end for what its state calls for, on a change only:
    /// `READABLE` while it may be read (rule 3, and not starved),
    /// `WRITABLE` while output waits for it (rule 2), and not at all when
    /// neither (a level-triggered backend would report a finished end's
    /// EOF forever).
    fn sync_interest<P: Poller>(&mut self, cx: &mut RelayCx<'_, P>) -> io::Result<()> {
        for (side, end) in self.ends.iter_mut().enumerate() {
            let read = !end.eof && !end.paused && !self.starved;
            let write = !end.out.is_empty();
            let want = match (read, write) {
                (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
                (true, false) => Some(Interest::READABLE),
                (false, true) => Some(Interest::WRITABLE),
                (false, false) => None,
            };
            if want == end.interest {
                continue;
            }
            let fd = end.stream.as_raw_fd();
            let token: Token = token::relay(cx.key, side);
            match (end.interest, want) {
                (None, Some(w)) => cx.poller.register(fd, token, w)?,
                (Some(_), Some(w)) => cx.poller.reregister(fd, token, w)?,
                (Some(_), None) => cx.poller.deregister(fd)?,
                (None, None) => {}
            }
            end.interest = want;
        }
        Ok(())
    }
}

/// The end `from` and the other one, both mutable.
fn ends_from<S>(ends: &mut [End<S>; 2], from: usize) -> [&mut End<S>; 2] {
    let [client, upstream] = ends;
    if from == CLIENT {
        [client, upstream]
    } else {
        [upstream, client]
    }
}

#[cfg(test)]
mod tests {
    //! A pair driven against two scripted streams: every read, write and
    //! `WouldBlock` chosen by the test, every interest change recorded.

    use super::*;
    use crate::connection::scripted::{FD, Recording, Scripted, Step};

    const BUF: usize = 64 * 1024;

    struct Rig {
        pair: Pair<Scripted>,
        poller: Recording,
        buf: Vec<u8>,
        stats: Stats,
        budget: Budget,
    }

    impl Rig {
        /// A connected pair: the client's socket takes `client_room`
        /// bytes, the upstream's `upstream_room`.
        fn new(client_room: usize, upstream_room: usize) -> Rig {
            let mut rig = Rig::connecting(
                Scripted::new(client_room, []),
                Scripted::new(upstream_room, []),
            );
            rig.pair.connected();
            rig
        }

        /// A pair whose upstream connect is under way, registered as the
        /// loop registers it (`WRITABLE` on the upstream only).
        fn connecting(client: Scripted, mut upstream: Scripted) -> Rig {
            upstream.fd_offset = 1;
            let mut poller = Recording::default();
            poller
                .register(FD + 1, token::relay(0, UPSTREAM), Interest::WRITABLE)
                .expect("register");
            Rig {
                pair: Pair::connecting(client, upstream),
                poller,
                buf: vec![0; BUF],
                stats: Stats::default(),
                budget: Budget::new(usize::MAX, BUF, 1, 0),
            }
        }

        /// The upstream could not be reached: the pair tells the client.
        fn refuse(&mut self, notice: &[u8]) {
            let mut cx = RelayCx {
                key: 0,
                poller: &mut self.poller,
                buf: &mut self.buf,
                stats: &mut self.stats,
                budget: &mut self.budget,
            };
            self.pair.refuse(notice, &mut cx);
        }

        fn drive(&mut self) -> Outcome {
            let mut cx = RelayCx {
                key: 0,
                poller: &mut self.poller,
                buf: &mut self.buf,
                stats: &mut self.stats,
                budget: &mut self.budget,
            };
            self.pair.drive(&mut cx)
        }

        fn end(&mut self, side: usize) -> &mut Scripted {
            &mut self.pair.ends[side].stream
        }

        fn interest(&self, side: usize) -> Option<Interest> {
            self.poller.interest(FD + side as i32)
        }

        /// `side`'s input arrives, with the event that says so.
        fn arrive(&mut self, side: usize, steps: impl IntoIterator<Item = Step>) {
            self.end(side).arrive(steps);
            let ready = Ready {
                readable: true,
                ..Ready::default()
            };
            self.pair.hold(side, ready);
        }

        /// `side`'s socket has room for `n` more bytes, and says so.
        fn room(&mut self, side: usize, n: usize) {
            self.end(side).room += n;
            let ready = Ready {
                writable: true,
                ..Ready::default()
            };
            self.pair.hold(side, ready);
        }
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn each_end_s_input_is_written_to_the_other_and_both_are_read() {
        let mut rig = Rig::new(1 << 20, 1 << 20);
        rig.arrive(CLIENT, [Step::Data(b"hello".to_vec())]);
        rig.arrive(UPSTREAM, [Step::Data(b"world".to_vec())]);
        assert!(matches!(rig.drive(), Outcome::Keep));
        assert_eq!(rig.end(UPSTREAM).written, b"hello");
        assert_eq!(rig.end(CLIENT).written, b"world");
        assert_eq!((rig.stats.bytes_in, rig.stats.bytes_out), (10, 10));
        assert_eq!(rig.interest(CLIENT), Some(Interest::READABLE));
        assert_eq!(rig.interest(UPSTREAM), Some(Interest::READABLE));
        assert_eq!(rig.budget.used(), 0);
    }

    #[test]
    fn a_turn_with_nothing_hinted_reads_nothing() {
        let mut rig = Rig::new(1 << 20, 1 << 20);
        rig.arrive(CLIENT, [Step::Data(b"once".to_vec())]);
        rig.drive();
        let reads = (rig.end(CLIENT).reads, rig.end(UPSTREAM).reads);
        // Input the kernel announced no edge for is not looked for.
        rig.end(CLIENT)
            .arrive([Step::Data(b"unannounced".to_vec())]);
        assert!(matches!(rig.drive(), Outcome::Keep));
        assert_eq!((rig.end(CLIENT).reads, rig.end(UPSTREAM).reads), reads);
        assert_eq!(rig.end(UPSTREAM).written, b"once");
    }

    #[test]
    fn once_connected_both_ends_are_looked_at_without_an_event() {
        let client = Scripted::new(1 << 20, [Step::Data(b"early".to_vec())]);
        let upstream = Scripted::new(1 << 20, [Step::Data(b"banner".to_vec())]);
        let mut rig = Rig::connecting(client, upstream);
        rig.pair.connected();
        rig.drive();
        assert_eq!(rig.end(UPSTREAM).written, b"early");
        assert_eq!(rig.end(CLIENT).written, b"banner");
        // The client, not registered while connecting, now is.
        assert_eq!(rig.interest(CLIENT), Some(Interest::READABLE));
        rig.pair.deregister(&mut rig.poller);
        assert!(rig.poller.watched.is_empty(), "{:?}", rig.poller.watched);
    }

    #[test]
    fn a_full_read_may_leave_more_so_the_pair_takes_another_turn() {
        let mut rig = Rig::new(1 << 20, 1 << 20);
        rig.arrive(CLIENT, [Step::Data(data(BUF + 10, 1))]);
        assert!(matches!(rig.drive(), Outcome::Requeue));
        assert!(matches!(rig.drive(), Outcome::Keep));
        assert_eq!(rig.end(UPSTREAM).written, data(BUF + 10, 1));
    }

    #[test]
    fn a_slow_reader_pauses_the_other_side_above_the_watermark_and_resumes_it_below() {
        // The client reads nothing: the upstream's answers pile up for it.
        let mut rig = Rig::new(0, 1 << 20);
        let chunk = data(HIGH_WATERMARK / 2, 3);
        rig.arrive(UPSTREAM, [Step::Data(chunk.clone())]);
        rig.drive();
        assert_eq!(rig.interest(UPSTREAM), Some(Interest::READABLE));
        assert_eq!(
            rig.interest(CLIENT),
            Some(Interest::READABLE | Interest::WRITABLE)
        );
        for _ in 0..2 {
            rig.arrive(UPSTREAM, [Step::Data(chunk.clone())]);
            rig.drive();
        }
        // Past the watermark: the upstream is not read (nor watched for
        // input), and what it sends waits in the kernel.
        assert_eq!(rig.pair.ends[CLIENT].out.len(), 3 * chunk.len());
        assert_eq!(rig.pair.held(), rig.budget.used());
        assert!(rig.pair.held() >= 3 * chunk.len());
        assert_eq!(rig.stats.backpressure_pauses, 1);
        assert_eq!(rig.interest(UPSTREAM), None);
        rig.arrive(UPSTREAM, [Step::Data(chunk.clone())]);
        let reads = rig.end(UPSTREAM).reads;
        rig.drive();
        assert_eq!(rig.end(UPSTREAM).reads, reads, "read while paused");
        assert!(rig.budget.used() >= 3 * chunk.len());
        // The client reads down to the low watermark exactly, in one
        // write (a short write ends the flush: no second write to learn
        // the socket is full): still paused.
        let writes = rig.end(CLIENT).writes;
        rig.room(CLIENT, 3 * chunk.len() - LOW_WATERMARK);
        rig.drive();
        assert_eq!(rig.end(CLIENT).writes, writes + 1);
        assert_eq!(rig.pair.ends[CLIENT].out.len(), LOW_WATERMARK);
        assert_eq!(rig.interest(UPSTREAM), None);
        // Below the low watermark: the upstream is read again, in the
        // same turn.
        rig.room(CLIENT, 1);
        rig.drive();
        assert_eq!(rig.end(UPSTREAM).reads, reads + 1);
        assert_eq!(rig.interest(UPSTREAM), Some(Interest::READABLE));
        rig.room(CLIENT, 1 << 20);
        rig.drive();
        assert_eq!(rig.end(CLIENT).written, chunk.repeat(4));
        assert_eq!(rig.stats.bytes_out, 4 * chunk.len() as u64);
        assert_eq!(rig.budget.used(), 0);
        assert_eq!(rig.pair.held(), 0);
        assert_eq!(rig.interest(CLIENT), Some(Interest::READABLE));
    }

    #[test]
    fn a_half_close_is_passed_on_after_the_pending_output_and_the_other_way_flows() {
        let mut rig = Rig::new(1 << 20, 3);
        rig.arrive(CLIENT, [Step::Data(b"abcdef".to_vec()), Step::Eof]);
        rig.drive();
        // The upstream took 3 bytes; our FIN waits behind the other 3.
        assert!(!rig.end(UPSTREAM).shut_write);
        rig.pair.hold(
            CLIENT,
            Ready {
                read_closed: true,
                ..Ready::default()
            },
        );
        rig.drive();
        assert!(!rig.end(UPSTREAM).shut_write);
        rig.room(UPSTREAM, 3);
        assert!(matches!(rig.drive(), Outcome::Keep));
        assert_eq!(rig.end(UPSTREAM).written, b"abcdef");
        assert!(
            rig.end(UPSTREAM).shut_write,
            "the client's FIN was not passed on"
        );
        assert!(!rig.end(CLIENT).shut_write);
        // The client's end is no longer watched for input; the upstream's
        // answers still reach it.
        assert_eq!(rig.interest(CLIENT), None);
        rig.arrive(UPSTREAM, [Step::Data(b"answer".to_vec())]);
        rig.drive();
        assert_eq!(rig.end(CLIENT).written, b"answer");
        rig.arrive(UPSTREAM, [Step::Eof]);
        assert!(matches!(
            rig.drive(),
            Outcome::Close(CloseReason::PeerClosed)
        ));
        assert!(rig.end(CLIENT).shut_write);
    }

    #[test]
    fn an_error_on_either_end_ends_the_pair() {
        for side in [CLIENT, UPSTREAM] {
            let mut rig = Rig::new(1 << 20, 1 << 20);
            rig.arrive(side, [Step::Error(io::ErrorKind::ConnectionReset)]);
            assert!(matches!(
                rig.drive(),
                Outcome::Close(CloseReason::Error(e)) if e.kind() == io::ErrorKind::ConnectionReset
            ));
        }
        let mut rig = Rig::new(1 << 20, 1 << 20);
        rig.end(UPSTREAM).write_error = Some(io::ErrorKind::BrokenPipe);
        rig.arrive(CLIENT, [Step::Data(b"x".to_vec())]);
        assert!(matches!(rig.drive(), Outcome::Close(CloseReason::Error(_))));
    }

    #[test]
    fn a_full_budget_stops_reading_until_the_pair_is_let_try_again() {
        let mut rig = Rig::new(1 << 20, 1 << 20);
        rig.budget = Budget::new(0, BUF, 1, 0);
        rig.budget.settle(0, crate::budget::MIN_MAX_BUFFERED);
        rig.arrive(CLIENT, [Step::Data(b"waits".to_vec())]);
        assert!(matches!(rig.drive(), Outcome::Starved { .. }));
        assert_eq!(rig.end(CLIENT).reads, 0);
        // Not watched for input meanwhile (poll and select would report
        // it at every wait).
        assert_eq!(rig.interest(CLIENT), None);
        assert_eq!(rig.interest(UPSTREAM), None);
        rig.budget = Budget::new(usize::MAX, BUF, 1, 0);
        rig.pair.unstarve();
        rig.drive();
        assert_eq!(rig.end(UPSTREAM).written, b"waits");
        assert_eq!(rig.interest(CLIENT), Some(Interest::READABLE));
    }

    #[test]
    fn a_refused_client_is_told_then_finned_and_its_input_dropped_until_its_fin() {
        let client = Scripted::new(1 << 20, [Step::Data(b"request".to_vec())]);
        let mut rig = Rig::connecting(client, Scripted::new(0, []));
        rig.refuse(b"ERR upstream: connection refused\r\n");
        assert_eq!(
            rig.interest(UPSTREAM),
            None,
            "the failed socket is still watched"
        );
        assert!(matches!(rig.drive(), Outcome::Keep));
        assert_eq!(
            rig.end(CLIENT).written,
            b"ERR upstream: connection refused\r\n"
        );
        assert!(rig.end(CLIENT).shut_write);
        assert_eq!(
            rig.end(UPSTREAM).written,
            b"",
            "input went to the failed socket"
        );
        assert_eq!(rig.interest(CLIENT), Some(Interest::READABLE));
        rig.arrive(CLIENT, [Step::Eof]);
        assert!(matches!(
            rig.drive(),
            Outcome::Close(CloseReason::PeerClosed)
        ));
    }

    #[test]
    fn a_shutdown_ends_the_client_s_input_and_lets_the_answers_finish() {
        let mut rig = Rig::new(1 << 20, 1 << 20);
        rig.drive();
        rig.pair.end_client_input();
        rig.arrive(CLIENT, [Step::Data(b"late".to_vec())]);
        rig.drive();
        assert!(rig.end(UPSTREAM).shut_write);
        assert_eq!(
            rig.end(UPSTREAM).written,
            b"",
            "input read after the shutdown"
        );
        rig.arrive(UPSTREAM, [Step::Data(b"last answer".to_vec()), Step::Eof]);
        rig.pair.hold(
            UPSTREAM,
            Ready {
                read_closed: true,
                ..Ready::default()
            },
        );
        assert!(matches!(rig.drive(), Outcome::Requeue | Outcome::Keep));
        assert!(matches!(
            rig.drive(),
            Outcome::Close(CloseReason::PeerClosed)
        ));
        assert_eq!(rig.end(CLIENT).written, b"last answer");
    }
}
