//! Delivering the letters connections post to each other
//! (`protocol/link.rs`): after every turn of a tick, never inside one.
//!
//! The loop drains its one mailbox at the end of the tick, recipient by
//! recipient, each getting its letters in the order posted (so every
//! sender's letters in order) in one write, and no protocol call runs
//! inside another. A letter
//! to a closed connection (its id's generation is gone) is dropped; a
//! recipient past its share is cut off (`connection/mail.rs`) and closed,
//! and its close hook may post letters of its own (a leave notice): they
//! are delivered in the same drain, which ends when the mailbox stays
//! empty (each connection closes once, so it does).
//!
//! Only connections of the echo class (those that speak the server's
//! protocol) get letters; a raw echo server never posts any, and the only
//! cost to its ticks is the one emptiness test in `Reactor::run`.

use crate::connection::{CloseReason, Delivery};
use crate::poller::Poller;
use crate::protocol::To;
use crate::token;

use super::Reactor;
use super::class::Class;

impl<P: Poller> Reactor<P> {
    /// Delivers every letter posted, including those posted by the close
    /// hooks of the connections it cuts off.
    ///
    /// **One write per recipient per drain**, not one per letter: each
    /// recipient gets the letters for it, in the order posted, as one
    /// piece. When the loop falls behind (its CPU shared, a burst of
    /// lines), a tick gathers more letters, and a letter to all would
    /// otherwise cost one `write` per recipient *per letter*: the next
    /// tick is longer still, and the room never catches up. Grouped, the
    /// writes per tick stay one per recipient however many letters the
    /// tick gathered. The share is judged on what the socket does not
    /// take of the whole piece, as it would be letter by letter.
    #[cold]
    pub(super) fn deliver_mail(&mut self) {
        let mut mail = std::mem::take(&mut self.lent.scratch.mail);
        let mut ended = Vec::new();
        let mut piece = Vec::new();
        while !mail.is_empty() {
            for (key, conn) in self.conns.iter_mut() {
                let generation = conn.generation();
                if Class::of_generation(generation) != Class::Echo {
                    continue;
                }
                let me = token::connection(key, generation);
                let mut mine = mail.letters().filter(|&(to, _)| match to {
                    To::One(id) => id.token() == me,
                    To::AllBut(sender) => sender.token() != me,
                });
                let Some((_, first)) = mine.next() else {
                    continue;
                };
                let bytes = match mine.next() {
                    // One letter: from the mailbox as it lies.
                    None => first,
                    Some((_, second)) => {
                        piece.clear();
                        piece.extend_from_slice(first);
                        piece.extend_from_slice(second);
                        for (_, more) in mine {
                            piece.extend_from_slice(more);
                        }
                        &piece[..]
                    }
                };
                let delivery = conn.deliver(
                    bytes,
                    me,
                    &mut self.poller,
                    &mut self.stats,
                    &mut self.budget,
                    self.clock.stamp,
                );
                note(&mut ended, key, delivery);
            }
            mail.clear();
            // Closed after their piece: their close hooks' letters (a
            // leave notice) go out in the next round of this drain.
            for (key, reason) in ended.drain(..) {
                self.close(key, reason);
            }
            std::mem::swap(&mut mail, &mut self.lent.scratch.mail);
        }
    }
}

/// Remembers a recipient to close after the letter.
fn note(ended: &mut Vec<(usize, CloseReason)>, key: usize, delivery: Delivery) {
    match delivery {
        Delivery::Sent | Delivery::Skipped => {}
        Delivery::CutOff => ended.push((key, CloseReason::MailCutOff)),
        Delivery::Failed(e) => ended.push((key, CloseReason::Error(e))),
    }
}
