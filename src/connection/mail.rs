//! Letters from other connections (`protocol/link.rs`): how a connection
//! takes one outside its own turn, and when it is cut off instead.
//!
//! A letter goes out like an answer: straight to the socket when nothing
//! is pending, else behind the pending output (rule 3 adds `WRITABLE`).
//! What waits is counted in the memory budget. A recipient is cut off,
//! not written to, when the letter would take its pending output past
//! [`MAIL_SHARE`], or past the budget; letters are not its own answers,
//! so rule 4 (pausing its reading) cannot slow their senders down.

use std::io;

use super::{Connection, Phase, Stream};
use crate::budget::Budget;
use crate::poller::{Poller, Token};
use crate::protocol::MAIL_SHARE;
use crate::stats::Stats;
use crate::timer::Stamp;

/// What became of a letter.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// Written, or pending behind the recipient's output.
    Sent,
    /// The recipient is closing (or not reading letters): nothing done.
    Skipped,
    /// Past its share: the caller closes it.
    CutOff,
    /// The socket failed: the caller closes it.
    Failed(io::Error),
}

impl<S: Stream> Connection<S> {
    /// Takes a letter from another connection, after the turns of a tick
    /// (`now`: the tick's stamp).
    pub(crate) fn deliver<P: Poller>(
        &mut self,
        bytes: &[u8],
        token: Token,
        poller: &mut P,
        stats: &mut Stats,
        budget: &mut Budget,
        now: Stamp,
    ) -> Delivery {
        if !matches!(self.phase, Phase::Open | Phase::Paused) {
            // Closing or draining: its stream is ending; a letter now
            // could follow its last answer or our FIN.
            return Delivery::Skipped;
        }
        let mut rest = bytes;
        if self.out.is_empty() && !self.write_blocked {
            match super::write_once(&mut self.stream, bytes) {
                Ok(n) => {
                    stats.bytes_out += n as u64;
                    if n > 0 {
                        // Bytes moved: not idle (`--idle-timeout`).
                        self.last_active = now;
                    }
                    rest = &bytes[n..];
                }
                Err(e) => return Delivery::Failed(e),
            }
        }
        if !rest.is_empty() {
            if self.out.len() + rest.len() > MAIL_SHARE || !budget.fits(rest.len()) {
                return Delivery::CutOff;
            }
            self.keep(rest, token, stats, budget);
        }
        match self.sync_interest(token, poller) {
            Ok(()) => Delivery::Sent,
            Err(e) => Delivery::Failed(e),
        }
    }
}
