//! A connection that is also a source: chargen (`chargen.rs`) sends a
//! pattern of its own, not answers to what it read. Called after the
//! connection's usual turn (which read and dropped its input, and flushed
//! what was pending), only for chargen connections: echo turns never come
//! here.
//!
//! The rules, as for every write (module docs of `connection/mod.rs`):
//! write only while nothing is pending (rule 3: the writable edge of a
//! pending remainder brings the next turn); charge the budget for what
//! may be kept *before* writing it; yield after a turn's worth (rule 2:
//! a socket that took everything raises no edge, so the turn is queued).

use super::{Connection, Cx, Outcome, Phase, Stream};
use crate::poller::Poller;

impl<S: Stream> Connection<S> {
    /// After a turn that ended in `outcome`, sends whole copies of `block`
    /// while the socket takes them all, up to `per_turn`; returns what the
    /// loop should do next.
    pub(crate) fn pump<P: Poller>(
        &mut self,
        outcome: Outcome,
        block: &'static [u8],
        per_turn: usize,
        cx: &mut Cx<'_, P>,
    ) -> Outcome {
        if matches!(outcome, Outcome::Close(_)) || self.phase != Phase::Open || self.starved {
            return outcome;
        }
        let mut sent = 0;
        while sent < per_turn && self.out.is_empty() {
            // Accounted before held: whatever the socket does not take of
            // this block is kept, and must fit.
            if !cx.budget.fits(block.len()) {
                cx.budget.note_full();
                self.starved = true;
                return self.settle_interest(Outcome::Starved { retry: false }, cx);
            }
            if let Err(e) = self.send(block, cx.token, cx.stats, cx.budget) {
                return Outcome::Close(super::CloseReason::Error(e));
            }
            self.last_active = cx.clock.stamp;
            sent += 1;
        }
        // Everything taken, and a turn's worth sent: the socket may have
        // room still, and no edge will say so.
        let outcome = if self.out.is_empty() {
            match outcome {
                Outcome::Keep | Outcome::Requeue => Outcome::Requeue,
                other => other,
            }
        } else {
            outcome
        };
        self.settle_interest(outcome, cx)
    }

    /// Registers the interest the connection's state now calls for.
    fn settle_interest<P: Poller>(&mut self, outcome: Outcome, cx: &mut Cx<'_, P>) -> Outcome {
        match self.sync_interest(cx.token, cx.poller) {
            Ok(()) => outcome,
            Err(e) => Outcome::Close(super::CloseReason::Error(e)),
        }
    }
}
