//! Protocols that speak to other connections: connection ids, and the
//! loop's mailbox.
//!
//! A request/response protocol answers the connection that spoke, into its
//! `out`, and needs nothing here. A protocol that addresses other
//! connections (a chat room) implements [`Protocol::answer_with`](super::Protocol::answer_with) and the
//! open and close hooks, which get a [`Link`]: the speaker's [`ConnId`],
//! and a way to post bytes to another connection or to all of them.
//!
//! # Posted, not written
//!
//! Nothing posted is written during the speaker's turn: a [`Link`] only
//! appends a letter to the loop's one [`Mailbox`], and the loop delivers
//! every letter after the tick's turns, in the order posted
//! (`reactor/mailbox.rs`). So a protocol is never called re-entrantly, one
//! connection's turn never does another's I/O in the middle of its own,
//! and every recipient sees every sender's letters in the order the
//! sender posted them.
//!
//! # A recipient that does not read
//!
//! A letter is written to its recipient straight away if the recipient's
//! socket takes it; what the socket does not take is pending output of the
//! recipient, counted in `--max-buffered` like any other. A recipient may
//! hold at most [`MAIL_SHARE`] bytes of pending output when a letter
//! comes; a letter that would take it past that, or that the budget has
//! no room for, **disconnects** it (counted in `mail_cutoffs`; its close
//! hook runs as for any close). Dropping the letter instead would leave
//! the recipient with a stream that silently misses lines, which no
//! protocol can tell from a sender's silence; a member that cannot keep up
//! is better told by a closed connection.
//!
//! # Bounded per turn
//!
//! What one call posts counts as its answer: the bytes a call writes to
//! `out` and posts together must stay within what the protocol declared
//! (`Protocol::max_answer` per message, `Protocol::amplification` per
//! read), or the call is an overrun (`protocol.rs`, "Sizes are
//! enforced"): its answer and its letters are dropped.

use std::fmt;
use std::ops::Range;

use crate::poller::Token;
use crate::token::Named;

/// A connection, as a protocol names it: unique over the server's life
/// (a slot's key and its generation), so an id kept after its connection
/// closed never names a newer one. Shown as `conn KEY/GENERATION`, as in
/// the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// The id of the connection with `token`.
    pub(crate) fn of(token: Token) -> ConnId {
        ConnId(token.0 as u64)
    }

    /// The connection's token.
    pub(crate) fn token(self) -> Token {
        Token(self.0 as usize)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Named(self.token()).fmt(f)
    }
}

/// The most pending output a recipient may hold when a letter comes:
/// the connection's own high watermark (64 KiB), so that a member of a
/// room costs the server no more than an echo client that does not read.
/// Past it, the letter disconnects it (see the module docs).
pub const MAIL_SHARE: usize = crate::connection::HIGH_WATERMARK;

/// Who a letter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum To {
    /// One connection.
    One(ConnId),
    /// Every connection of the protocol but this one (the sender).
    AllBut(ConnId),
}

/// One letter: its recipient, and where its bytes are in the mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Letter {
    pub(crate) to: To,
    pub(crate) bytes: Range<usize>,
}

/// The loop's one mailbox: letters posted during a tick, delivered after
/// its turns (`reactor/mailbox.rs`). Its bytes are in one vector, so a
/// letter to all costs one copy however many read it.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    bytes: Vec<u8>,
    letters: Vec<Letter>,
}

/// A point in a [`Mailbox`] to go back to ([`Mailbox::truncate`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    bytes: usize,
    letters: usize,
}

impl Mailbox {
    /// Whether no letter waits.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.letters.is_empty()
    }

    /// Bytes posted so far.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    fn post(&mut self, to: To, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.letters.push(Letter {
            to,
            bytes: start..self.bytes.len(),
        });
    }

    /// Where the mailbox is now.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            bytes: self.bytes.len(),
            letters: self.letters.len(),
        }
    }

    /// Takes back every letter posted since `mark`.
    pub(crate) fn truncate(&mut self, mark: Mark) {
        self.bytes.truncate(mark.bytes);
        self.letters.truncate(mark.letters);
    }

    /// The letters, in the order posted, with their bytes.
    pub(crate) fn letters(&self) -> impl Iterator<Item = (To, &[u8])> {
        self.letters
            .iter()
            .map(|letter| (letter.to, &self.bytes[letter.bytes.clone()]))
    }

    /// Empties it, keeping its storage unless it grew large.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.letters.clear();
        if self.bytes.capacity() > MAIL_SHARE {
            self.bytes = Vec::new();
            self.letters = Vec::new();
        }
    }
}

/// What a protocol's call is lent to reach other connections: who spoke,
/// and the loop's mailbox. See the module docs of `protocol/link.rs` for
/// when letters are delivered and what happens to a recipient that does
/// not read.
#[derive(Debug)]
pub struct Link<'a> {
    me: ConnId,
    mail: &'a mut Mailbox,
}

impl<'a> Link<'a> {
    /// A link for the connection `me`, posting into `mail`.
    pub(crate) fn new(me: ConnId, mail: &'a mut Mailbox) -> Link<'a> {
        Link { me, mail }
    }

    /// The connection this call is about (the speaker, or the one opening
    /// or closing).
    pub fn id(&self) -> ConnId {
        self.me
    }

    /// Sends `bytes` to the connection `to`, after this turn. A connection
    /// that has closed, or is closing, gets nothing, silently: a protocol
    /// learns of a close from its close hook. Sending to oneself is
    /// allowed (it arrives after `out`).
    pub fn send(&mut self, to: ConnId, bytes: &[u8]) {
        self.mail.post(To::One(to), bytes);
    }

    /// Sends `bytes` to every other open connection of this protocol
    /// (all but [`Link::id`]), after this turn.
    pub fn send_to_others(&mut self, bytes: &[u8]) {
        self.mail.post(To::AllBut(self.me), bytes);
    }

    /// Bytes posted through any link since the mailbox was last emptied.
    pub(crate) fn posted(&self) -> usize {
        self.mail.len()
    }

    /// Where the mailbox is now.
    pub(crate) fn mark(&self) -> Mark {
        self.mail.mark()
    }

    /// Takes back every letter posted since `mark`.
    pub(crate) fn truncate(&mut self, mark: Mark) {
        self.mail.truncate(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token;

    #[test]
    fn letters_keep_their_order_and_a_mark_takes_back_what_followed_it() {
        let mut mail = Mailbox::default();
        let me = ConnId::of(token::connection(1, 1));
        let other = ConnId::of(token::connection(2, 1));
        let mut link = Link::new(me, &mut mail);
        link.send(other, b"one");
        link.send_to_others(b"two");
        link.send(other, b"");
        let mark = link.mark();
        link.send(other, b"three");
        assert_eq!(link.posted(), 11);
        link.truncate(mark);
        let got: Vec<(To, Vec<u8>)> = mail.letters().map(|(to, b)| (to, b.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (To::One(other), b"one".to_vec()),
                (To::AllBut(me), b"two".to_vec())
            ]
        );
        assert_eq!(other.to_string(), "conn 2/1");
        mail.clear();
        assert!(mail.is_empty());
        assert_eq!(mail.mark().bytes, 0);
    }
}
