//! Delivering the letters connections post to each other
//! (`protocol/link.rs`): after every turn of a tick, never inside one.
//!
//! The loop drains its one mailbox at the end of the tick, letter by
//! letter in the order posted, so each recipient gets each sender's
//! letters in order, and no protocol call runs inside another. A letter
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
use crate::token::{self, Target};

use super::Reactor;
use super::class::Class;

impl<P: Poller> Reactor<P> {
    /// Delivers every letter posted, including those posted by the close
    /// hooks of the connections it cuts off.
    #[cold]
    pub(super) fn deliver_mail(&mut self) {
        let mut mail = std::mem::take(&mut self.lent.scratch.mail);
        let mut ended = Vec::new();
        while !mail.is_empty() {
            for (to, bytes) in mail.letters() {
                match to {
                    To::One(id) => {
                        if let Target::Connection { key, generation } = token::decode(id.token())
                            && Class::of_generation(generation) == Class::Echo
                            && let Some(conn) = self.conns.get_mut(key)
                            && conn.generation() == generation
                        {
                            let delivery = conn.deliver(
                                bytes,
                                id.token(),
                                &mut self.poller,
                                &mut self.stats,
                                &mut self.budget,
                                self.clock.stamp,
                            );
                            note(&mut ended, key, delivery);
                        }
                    }
                    To::AllBut(sender) => {
                        for (key, conn) in self.conns.iter_mut() {
                            let generation = conn.generation();
                            let recipient = token::connection(key, generation);
                            if Class::of_generation(generation) != Class::Echo
                                || recipient == sender.token()
                            {
                                continue;
                            }
                            let delivery = conn.deliver(
                                bytes,
                                recipient,
                                &mut self.poller,
                                &mut self.stats,
                                &mut self.budget,
                                self.clock.stamp,
                            );
                            note(&mut ended, key, delivery);
                        }
                    }
                }
                // Closed before the next letter: it gets no more.
                for (key, reason) in ended.drain(..) {
                    self.close(key, reason);
                }
            }
            mail.clear();
            // What the close hooks posted meanwhile, if anything.
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
