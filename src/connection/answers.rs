//! A connection's side of its protocol: handing it a read and sending
//! what it answered, its open and close hooks, and the room each call may
//! take (`protocol/mod.rs`, "Sizes are enforced"). Out of line from the
//! echo turn: raw echo never comes here (`Handler::Raw`).

use std::io;

use super::{Connection, Cx, Phase, Stream};
use crate::poller::Token;
use crate::protocol::{Answered, ConnId, Handler, Link, Mailbox, Verdict, warn_overrun_once};
use crate::stats::Stats;

impl<S: Stream> Connection<S> {
    /// [`Connection::answer`] for a read of `n` bytes, with the room the
    /// budget made for it. Kept out of line: the raw echo turn, which never
    /// comes here, stays as small as it was.
    #[inline(never)]
    pub(super) fn answer_read<P>(&mut self, n: usize, cx: &mut Cx<'_, P>) -> io::Result<()> {
        self.answer(n, cx.budget.worst_case(n), cx)
    }

    /// [`Connection::end_of_input`] after a read found EOF, with the room
    /// the budget made for that read.
    #[cold]
    #[inline(never)]
    pub(super) fn end_of_read_input<P>(&mut self, cx: &mut Cx<'_, P>) -> io::Result<()> {
        self.end_of_input(cx.budget.worst_case(0), cx)
    }

    /// Hands the first `n` bytes of the loop's buffer to the protocol and
    /// sends its answers. A message split across reads is kept, and
    /// charged what it may grow to (`budget.rs`, "Split messages").
    /// `room` is what the budget made room for besides what the connection
    /// is charged now: the answers, letters and split message may take no
    /// more (an overrun otherwise, `protocol/mod.rs`).
    pub(super) fn answer<P>(
        &mut self,
        n: usize,
        room: usize,
        cx: &mut Cx<'_, P>,
    ) -> io::Result<()> {
        let before = self.partial.charge();
        let scratch = &mut *cx.scratch;
        let mut link = Link::new(ConnId::of(cx.token), &mut scratch.mail);
        let answered = (cx.handler).feed_within(
            &mut self.partial,
            &cx.buf[..n],
            &mut scratch.answers,
            &mut link,
            before + room,
        );
        cx.budget.settle(before, self.partial.charge());
        self.send_answers(answered, cx)
    }

    /// The protocol's open hook, once the connection is registered and
    /// greeted: creates its session, and sends what the hook answers.
    pub(super) fn open_protocol<P>(&mut self, cx: &mut Cx<'_, P>) -> io::Result<()> {
        if let Handler::Raw = cx.handler {
            return Ok(());
        }
        let scratch = &mut *cx.scratch;
        let mut link = Link::new(ConnId::of(cx.token), &mut scratch.mail);
        let answered = (cx.handler).open(&mut self.partial, &mut scratch.answers, &mut link);
        if !cx.budget.fits(cx.scratch.answers.len()) {
            cx.scratch.answers.clear();
            return Err(io::Error::other(
                "no room in the memory budget for the open hook's answer",
            ));
        }
        self.send_answers(answered, cx)
    }

    /// The connection is being closed: the protocol's close hook, with its
    /// session, which is dropped after it. Its letters go to others.
    pub(crate) fn hang_up(
        &mut self,
        token: Token,
        handler: &mut Handler,
        mail: &mut Mailbox,
        stats: &mut Stats,
    ) {
        let mut link = Link::new(ConnId::of(token), mail);
        if handler.close(&mut self.partial, &mut link) {
            stats.protocol_overruns += 1;
            warn_overrun_once("letters of a close hook");
        }
    }

    /// The peer's FIN: what is pending still goes out (phase `Closing`),
    /// and an unfinished message gets what the protocol still owes it (a
    /// last line is answered).
    pub(super) fn end_of_input<P>(&mut self, room: usize, cx: &mut Cx<'_, P>) -> io::Result<()> {
        // phase: Open -> Closing (the peer's FIN read)
        self.set_phase(cx.token, Phase::Closing);
        if !self.partial.is_empty() {
            let before = self.partial.charge();
            let answered =
                (cx.handler).finish(&mut self.partial, &mut cx.scratch.answers, before + room);
            cx.budget.settle(before, self.partial.charge());
            self.send_answers(answered, cx)?;
        }
        Ok(())
    }

    /// Sends what the protocol answered (in `cx.scratch.answers`) and acts
    /// on its verdict: a close stops the input and starts flush, FIN,
    /// linger. An overrun is counted, and closes like `exit`.
    pub(super) fn send_answers<P>(
        &mut self,
        answered: Answered,
        cx: &mut Cx<'_, P>,
    ) -> io::Result<()> {
        if answered.overrun {
            cx.stats.protocol_overruns += 1;
            warn_overrun_once(
                "an answer past max_answer or amplification, or a split message past its reservation",
            );
        }
        let answers = &mut cx.scratch.answers;
        if !answers.is_empty() {
            // Most reads of a split message answer nothing: no `write`.
            let sent = self.send(answers, cx.token, cx.stats, cx.budget);
            answers.clear();
            sent?;
        }
        let verdict = answered.verdict;
        match verdict {
            Verdict::Continue => {}
            Verdict::Close | Verdict::Refuse => {
                if verdict == Verdict::Refuse {
                    cx.stats.protocol_errors += 1;
                }
                cx.budget.settle(self.partial.charge(), 0);
                self.partial.clear();
                if matches!(self.phase, Phase::Open | Phase::Paused) {
                    // phase: Open|Paused -> Draining (protocol close: exit, a limit broken)
                    self.set_phase(cx.token, Phase::Draining);
                }
            }
        }
        Ok(())
    }
}
