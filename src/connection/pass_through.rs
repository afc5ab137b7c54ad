//! Pass-through: how a connection reads while the memory budget is full.
//!
//! When even a small read no longer fits the budget (`budget.rs`), a read
//! that cannot be written straight on must not be taken from the kernel:
//! bytes left there cost the server nothing, and TCP flow control slows
//! their sender. So the connection *peeks* (`MSG_PEEK`: the bytes stay
//! queued), writes what it would have echoed, and only then consumes from
//! the kernel exactly what went out. Nothing is held, nothing is lost, and
//! a client that reads its echoes goes on being served at full speed.
//!
//! - Raw mode: the peeked bytes are the echo. If the socket takes only
//!   part, only that part is consumed, and the connection asks for
//!   `WRITABLE` to go on (no pending output, no budget used).
//! - Line and frame modes: the peeked bytes are decoded as if read, and the
//!   complete messages are answered and consumed only when the answers can
//!   go out whole: the socket's send queue is empty (`TIOCOUTQ`, so the
//!   kernel takes an answer of up to [`ANSWER_MAX`] at once), and the
//!   answers fit in the part of the budget kept back for this. So only as
//!   many whole messages are taken as have answers that fit in
//!   [`ANSWER_MAX`] together (an empty-line flood in `hello` mode answers
//!   a 64 KiB window with 448 KiB: it goes through 2,340 lines at a time);
//!   the rest stays queued. An incomplete message is not started (nothing
//!   is consumed); a message larger than the loop's buffer, or with an
//!   answer larger than [`ANSWER_MAX`], waits for the budget to free.
//! - A connection with output already pending does not pass through: its
//!   socket is full, and the writable edge that comes with room flushes it
//!   first.
//! - A connection holding half a message does not pass through either: the
//!   budget already charged the whole message (`budget.rs`, "Split
//!   messages"), so it reads the rest of that message and not a byte more
//!   ([`Connection::finish_message`]): it peeks, asks the protocol where
//!   the message ends, and takes exactly that much.

use std::io;

use super::{Connection, Cx, Input, Outcome, Phase, Stream, Take};
use crate::protocol::{ConnId, Handler, Link, Verdict};

/// The largest answer written through while the budget is full: an empty
/// send queue takes it whole (the smallest send buffer Linux gives a TCP
/// socket holds more).
pub(crate) const ANSWER_MAX: usize = 16 * 1024;

impl<S: Stream> Connection<S> {
    /// A turn's reading while the budget is full (see the module docs).
    pub(super) fn pass_through<P>(&mut self, cx: &mut Cx<'_, P>) -> io::Result<Outcome> {
        if !self.out.is_empty() {
            // Its output is pending because the socket is full: pause its
            // input (rule 4, and no read interest, or level-triggered
            // backends would report the waiting input forever) until the
            // writable edge that comes with room has flushed it.
            // phase: Open -> Paused (budget full with output pending)
            self.set_phase(cx.token, Phase::Paused);
            return Ok(Outcome::Keep);
        }
        debug_assert!(
            self.partial.is_empty(),
            "a split message is finished, not passed"
        );
        let n = match self.read_once(cx.buf, Take::Peek)? {
            Input::Data(n) => n,
            Input::Empty => return Ok(Outcome::Keep),
            Input::Eof => {
                // phase: Open -> Closing (the peer's FIN, peeked with the budget full)
                self.set_phase(cx.token, Phase::Closing);
                return Ok(Outcome::Keep);
            }
        };
        let outcome = if let Handler::Raw = cx.handler {
            self.echo_through(n, cx)?
        } else {
            self.answer_through(n, cx)?
        };
        // Rule 2, as for any read: input may be left (a window's worth, or
        // a FIN behind the last bytes) that no new edge will announce.
        if matches!(outcome, Outcome::Keep)
            && self.read_ready
            && !self.write_blocked
            && self.phase == Phase::Open
        {
            return Ok(Outcome::Requeue);
        }
        Ok(outcome)
    }

    /// A turn's reading while the budget is full, for a connection holding
    /// half a message: the bytes that belong to that message, and no more.
    /// Whatever they make the connection hold (the message grown, or its
    /// answer) is within the reservation it was charged, so they need no
    /// room (see the module docs).
    pub(super) fn finish_message<P>(&mut self, cx: &mut Cx<'_, P>) -> io::Result<Outcome> {
        let window = cx.handler.still_wanted(&self.partial).min(cx.buf.len());
        let n = match self.read_once(&mut cx.buf[..window], Take::Peek)? {
            Input::Data(n) => n,
            Input::Empty => return Ok(Outcome::Keep),
            Input::Eof => {
                // Its reservation pays for its answer: no more room.
                self.end_of_input(0, cx)?;
                return Ok(Outcome::Keep);
            }
        };
        let take = cx.handler.rest_of_message(&self.partial, &cx.buf[..n]);
        self.consume(take, n, cx)?;
        // The reservation pays for the message and its answer: no more.
        self.answer(take, 0, cx)?;
        // Rule 2: what follows the message (or a FIN) raises no new edge.
        if self.read_ready && self.phase == Phase::Open && !self.write_blocked {
            return Ok(Outcome::Requeue);
        }
        Ok(Outcome::Keep)
    }

    /// Raw mode: write the peeked bytes, consume what went out.
    fn echo_through<P>(&mut self, n: usize, cx: &mut Cx<'_, P>) -> io::Result<Outcome> {
        let written = super::write_once(&mut self.stream, &cx.buf[..n])?;
        self.consume(written, n, cx)?;
        cx.stats.bytes_out += written as u64;
        if written < n {
            // The socket is full: the rest stays in the kernel until it
            // has room.
            self.write_blocked = true;
        }
        Ok(Outcome::Keep)
    }

    /// Line and frame modes: answer the complete messages among the peeked
    /// bytes, if the answers can go out whole.
    fn answer_through<P>(&mut self, n: usize, cx: &mut Cx<'_, P>) -> io::Result<Outcome> {
        if self.send_queue()? != 0 {
            // An emptying send queue raises no event: try again shortly.
            return Ok(self.starve(true));
        }
        // Only whole messages, and only as many as have answers that fit
        // in one write the kernel takes whole: the rest stays queued.
        let scratch = &mut *cx.scratch;
        let mark = scratch.mail.mark();
        let mut link = Link::new(ConnId::of(cx.token), &mut scratch.mail);
        let answered = (cx.handler).answer_whole(
            &mut self.partial,
            &cx.buf[..n],
            &mut scratch.answers,
            &mut link,
            ANSWER_MAX,
        );
        let (complete, verdict, held_back) = (answered.used, answered.verdict, answered.held_back);
        if verdict == Verdict::Continue && complete == 0 {
            if n < cx.buf.len() && !held_back {
                // Only an incomplete message, left queued in the kernel.
                // On epoll its next segment would raise an edge; on poll
                // and select the socket stays readable, and waiting with
                // read interest would report it on every wait and spin
                // the loop (494 CPU ticks in 5 s). So it is parked like
                // any connection that waits for room, without read
                // interest: let go when the budget frees, and retried
                // meanwhile on the backing-off timer, which finds the
                // message whole once its rest has come.
                return Ok(self.starve(true));
            }
            // A message larger than the window, or with an answer larger
            // than one write: it cannot pass through.
            return Ok(self.starve(false));
        }
        if !cx.budget.fits(cx.scratch.answers.len()) {
            cx.scratch.answers.clear();
            cx.scratch.mail.truncate(mark);
            return Ok(self.starve(false));
        }
        self.consume(complete, n, cx)?;
        self.send_answers(answered, cx)?;
        Ok(Outcome::Keep)
    }

    /// Parks the connection until the budget frees, or with `retry` also
    /// for a short while: no read interest meanwhile (see
    /// [`Outcome::Starved`]).
    fn starve(&mut self, retry: bool) -> Outcome {
        self.starved = true;
        // What was peeked is still queued.
        self.read_ready = true;
        Outcome::Starved { retry }
    }

    /// Takes from the kernel the first `n` of the `peeked` bytes in the
    /// loop's buffer (they land where the peek put them).
    ///
    /// The peek already applied rule 1 to what it saw; these reads take
    /// bytes known to be there, so they leave the readiness as the peek
    /// judged it, except that bytes left behind are still queued.
    fn consume<P>(&mut self, n: usize, peeked: usize, cx: &mut Cx<'_, P>) -> io::Result<()> {
        let judged = self.read_ready;
        let mut done = 0;
        while done < n {
            // A read may still stop short at an urgent mark, hence the loop.
            match self.read_once(&mut cx.buf[done..n], Take::Read)? {
                Input::Data(got) => done += got,
                Input::Eof => return Err(io::ErrorKind::UnexpectedEof.into()),
                Input::Empty => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
        self.read_ready = judged || n < peeked;
        if n > 0 {
            cx.stats.bytes_in += n as u64;
            self.last_active = cx.clock.stamp;
        }
        Ok(())
    }

    /// Bytes in the socket's send queue, not yet acknowledged by the peer.
    fn send_queue(&self) -> io::Result<usize> {
        self.stream.send_queue()
    }
}
