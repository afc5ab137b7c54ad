//! Protocols: *what to answer*, kept apart from *how bytes move*.
//!
//! This is socketserver's handler classes (seed 4) turned inside out for a
//! readiness loop: the server owns the loop and the sockets, and a protocol
//! never does I/O. The connection hands it the bytes that just arrived; it
//! appends its answers to an output vector and returns a [`Verdict`]: go
//! on, or close after the answers are sent. Because nothing here touches a
//! socket, every protocol is tested on every split point of its input (the
//! answer must not depend on how TCP chunked the stream, seed 7), with
//! proptest.
//!
//! # The interface
//!
//! [`Protocol`] is public: a server built with
//! [`Server::with_protocol`](crate::Server::with_protocol) speaks any
//! implementation, without a change to the library (`examples/kv_store.rs`
//! adds GET/SET/DEL; `docs/adding-a-protocol.md` walks through it). The
//! built-in line and frame modes are implementations like any other.
//!
//! Like httparse and mini-redis, a protocol *decodes*: it looks at buffered
//! bytes and says [`Status::Complete`] (a whole message of `n` bytes is
//! there), [`Status::Partial`] (not enough bytes yet, which is *not* an
//! error), or refuses the input for good ([`Refusal`]). Then it *answers*
//! each whole message, with `&mut self` (state shared by every connection
//! of the loop, such as a key-value store: the loop is single-threaded, so
//! no lock) and the connection's own [`Protocol::Session`]. [`feed_within`] is the
//! one driver: it decodes in place from the loop's read buffer and copies
//! only an incomplete tail.
//!
//! # Sessions
//!
//! A connection's incomplete message and its session live behind one
//! pointer in the connection ([`Partial`], `session.rs`): null while there
//! is neither, a session created once per connection and lent in place to
//! every call, no allocation per read.
//!
//! # Other connections
//!
//! A protocol that speaks to other connections (`examples/chat.rs`)
//! implements [`Protocol::answer_with`] and the [`Protocol::open`] and
//! [`Protocol::close`] hooks; their [`Link`] names the connection
//! ([`ConnId`]) and posts to others, delivered by the loop after the turn
//! (`link.rs`). The defaults make a request/response protocol what it
//! was: `decode`, `answer` and its sizes.
//!
//! # Sizes are enforced
//!
//! The memory budget trusts what a protocol declares
//! ([`Protocol::max_answer`], [`Protocol::amplification`],
//! [`Protocol::reservation`]) *before* it reads. A protocol that says less
//! than it does cannot make the server hold more: every call's answer and
//! letters are measured against the declaration (an answer longer than
//! `max_answer`, a read's answers past `amplification` times its size plus
//! the slack the budget reserved, a split message charged more than the
//! budget set aside for one), and a call past it is an **overrun**: its
//! answer and letters are dropped, the connection is closed (what was
//! answered before it is still sent), the stats count it
//! (`protocol_overruns`), and the first one is logged as a warning, once
//! per process, since it is the protocol's bug and not the client's.
//!
//! # Raw mode is not a protocol
//!
//! Byte-for-byte echo (RFC 862) has nothing to decode: the connection writes
//! straight from the loop's read buffer, with no copy, and never calls into
//! this module. [`Handler::Raw`] is one branch in `connection/mod.rs`, so
//! protocols cost the raw path nothing. A protocol is called through one
//! `dyn` call per read (`handler.rs`), never per byte.

use std::sync::atomic::{AtomicBool, Ordering};

use log::warn;

pub(crate) mod frame;
mod handler;
pub(crate) mod line;
mod link;
mod session;

pub use frame::Frame;
pub(crate) use handler::Handler;
pub use line::{Line, Transform};
pub use link::{ConnId, Link, MAIL_SHARE};
pub(crate) use link::{Mailbox, To};
pub(crate) use session::Partial;
use session::{Split, with_session};

/// What a server's TCP connections speak (`--mode`): the built-in
/// choices. Any other [`Protocol`] is given to
/// [`Server::with_protocol`](crate::Server::with_protocol).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every byte comes back as it arrived (RFC 862). The default.
    #[default]
    Raw,
    /// A reply per complete line (`line.rs`).
    Line(Line),
    /// A reply per length-prefixed frame (`frame.rs`).
    Frame(Frame),
}

/// How much of a buffer a protocol recognised (httparse's `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The buffer starts with a whole message of this many bytes.
    Complete(usize),
    /// The message has not fully arrived yet.
    Partial,
}

/// Input a protocol will never accept; the connection answers with
/// whatever [`Protocol::refuse`] says and is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A line longer than `--max-line`.
    LineTooLong,
    /// A frame header declaring more than `--max-frame` bytes.
    FrameTooLarge(u32),
    /// Anything else a protocol refuses, in a few words.
    Other(&'static str),
}

/// What the connection should do after the protocol has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep reading.
    Continue,
    /// The client asked to leave (`exit`): send the answers, then FIN.
    Close,
    /// The input broke a limit: send the answers (and the error), then
    /// FIN. Counted in `protocol_errors`.
    Refuse,
}

/// A protocol: how a connection's bytes are cut into messages, and what
/// each is answered. Implementations do no I/O, read no clock, and never
/// panic on any input.
///
/// The memory budget (`--max-buffered`) holds a protocol to its word on
/// sizes: [`Protocol::max_message`], [`Protocol::max_answer`] and
/// [`Protocol::amplification`] say the most a client can make the server
/// hold through it, and the budget charges that much *before* reading.
/// State the protocol keeps itself (a store's keys and values) is its own
/// to bound.
pub trait Protocol: Send + 'static {
    /// What one connection keeps between messages (a selected database, a
    /// transaction, a nickname). Created once, when the connection opens,
    /// lent in place to every call, and dropped when it closes; only if it
    /// has a size: `()` costs nothing and is not stored.
    type Session: Default + Send + 'static;

    /// Recognises the first message of `buf`. `scanned` bytes at the start
    /// of `buf` are already known to hold no message end (they were looked
    /// at before more bytes arrived); a protocol may skip them. A buffer
    /// longer than [`Protocol::max_message`] that holds no whole message
    /// must be refused.
    fn decode(&self, buf: &[u8], scanned: usize) -> Result<Status, Refusal>;

    /// Answers one whole message (as [`Protocol::decode`] cut it) into
    /// `out`, with the state of every connection (`self`) and of this one
    /// (`session`). Every request/response protocol implements this; one
    /// that speaks to other connections implements
    /// [`Protocol::answer_with`] instead (default: answers nothing).
    fn answer(&mut self, session: &mut Self::Session, msg: &[u8], out: &mut Vec<u8>) -> Verdict {
        let _ = (session, msg, out);
        Verdict::Continue
    }

    /// [`Protocol::answer`], with a [`Link`]: the speaker's [`ConnId`],
    /// and letters to other connections, delivered after this turn
    /// (`protocol/link.rs`). Default: [`Protocol::answer`]. What `out`
    /// and the letters take together counts against
    /// [`Protocol::max_answer`] and [`Protocol::amplification`].
    fn answer_with(
        &mut self,
        link: &mut Link<'_>,
        session: &mut Self::Session,
        msg: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict {
        let _ = link;
        self.answer(session, msg, out)
    }

    /// A connection opened (after its [`Protocol::greeting`]): `out` is
    /// sent to it, letters to others. At most [`Protocol::max_answer`]
    /// bytes in all. Default: nothing.
    fn open(&mut self, link: &mut Link<'_>, session: &mut Self::Session, out: &mut Vec<u8>) {
        let _ = (link, session, out);
    }

    /// A connection is closing, for any reason (its client left, a
    /// refusal, a cut-off for not reading, shutdown): the last call with
    /// its session, which is dropped after it. Letters to others (at most
    /// [`Protocol::max_answer`] bytes) still go out; the closing connection
    /// gets none. Default: nothing.
    fn close(&mut self, link: &mut Link<'_>, session: &mut Self::Session) {
        let _ = (link, session);
    }

    /// Appends what the client is told before a refusal closes it
    /// (default: nothing).
    fn refuse(&mut self, why: Refusal, out: &mut Vec<u8>) {
        let _ = (why, out);
    }

    /// The peer sent FIN with `rest` (non-empty, incomplete) still held.
    /// The connection closes whatever the verdict; it says why (default:
    /// half a message is no message, [`Verdict::Refuse`]).
    fn at_eof(&mut self, session: &mut Self::Session, rest: &[u8], out: &mut Vec<u8>) -> Verdict {
        let _ = (session, rest, out);
        Verdict::Refuse
    }

    /// What a new connection is sent before it says anything (default:
    /// nothing).
    fn greeting(&self) -> &[u8] {
        &[]
    }

    /// The longest message, every byte counted (terminators, headers).
    fn max_message(&self) -> usize;

    /// The longest answer to one message (an error line included).
    fn max_answer(&self) -> usize;

    /// At most how many answer bytes one byte of input can cause, over a
    /// whole read: line mode's `hello ` answers an empty line (1 byte) with
    /// 7. A store whose `GET k` (6 bytes) may return 1 KiB says about 175.
    /// Default 1 (every byte answered at most once).
    fn amplification(&self) -> usize {
        1
    }

    /// The most a connection can come to hold for the message `held`
    /// begins, its answer included, however the rest of it arrives. The
    /// memory budget charges this much for a split message, so that
    /// finishing it never needs room the budget may not have (`budget.rs`,
    /// "Split messages"). Default: the longer of a whole message and an
    /// answer.
    fn reservation(&self, held: &[u8]) -> usize {
        let _ = held;
        self.max_message().max(self.max_answer())
    }

    /// At most how many of the bytes after `held` can still belong to its
    /// message: a read that finishes a message under a full budget takes
    /// no more. Default: enough to reach the longest message and one byte
    /// past it (for [`Protocol::decode`] to refuse).
    fn still_wanted(&self, held: &[u8]) -> usize {
        (self.max_message() + 1).saturating_sub(held.len())
    }

    /// How many bytes at the start of `more` (at most
    /// [`Protocol::still_wanted`] of them) belong to the message `held`
    /// begins: up to its end, or all of them if it does not end there.
    /// The default decodes `held` and `more` together (a copy, made only
    /// while the budget is full); a protocol that can tell more cheaply
    /// says so.
    fn rest_of_message(&self, held: &[u8], more: &[u8]) -> usize {
        let window = &more[..more.len().min(self.still_wanted(held))];
        let mut joined = Vec::with_capacity(held.len() + window.len());
        joined.extend_from_slice(held);
        joined.extend_from_slice(window);
        match self.decode(&joined, held.len()) {
            Ok(Status::Complete(n)) if n > held.len() => (n - held.len()).min(window.len()),
            _ => window.len(),
        }
    }
}

/// What a driver call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answered {
    /// Bytes of the input the answered messages took ([`answer_whole`]).
    pub(crate) used: usize,
    /// What the connection does next. After an overrun: [`Verdict::Close`].
    pub(crate) verdict: Verdict,
    /// A complete message was left unanswered because its answer did not
    /// fit ([`answer_whole`] only).
    pub(crate) held_back: bool,
    /// The protocol answered past what it declared ("Sizes are enforced"
    /// in the module docs): the answer that did so was dropped.
    pub(crate) overrun: bool,
}

impl Answered {
    fn go_on() -> Answered {
        Answered {
            used: 0,
            verdict: Verdict::Continue,
            held_back: false,
            overrun: false,
        }
    }

    fn overrun(used: usize) -> Answered {
        Answered {
            used,
            verdict: Verdict::Close,
            held_back: false,
            overrun: true,
        }
    }
}

/// Logs the first overrun of the process, as a warning: it is a bug of the
/// protocol, not of its client, and one line says so (the stats count
/// every one).
pub(crate) fn warn_overrun_once(what: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        warn!(
            "the protocol answered more than it declares ({what}); the connection \
             was closed, and further overruns are counted in protocol_overruns only"
        );
    }
}

/// Runs `protocol` over `input`, the bytes that arrived after whatever
/// `partial` holds: answers every complete message into `out` (and its
/// letters through `link`), and keeps the incomplete tail in `partial`.
/// The answers and letters together, and what `partial` is charged
/// afterwards, may take at most `limit` bytes (what the budget made room
/// for); past it, an overrun. After any verdict but
/// [`Verdict::Continue`], later input is ignored and the split message
/// dropped.
pub(crate) fn feed_within<T: Protocol>(
    protocol: &mut T,
    partial: &mut Partial,
    input: &[u8],
    out: &mut Vec<u8>,
    link: &mut Link<'_>,
    limit: usize,
) -> Answered {
    let cap = Cap {
        total: limit,
        posted_before: link.posted(),
        hold_back: false,
    };
    let mut answered = with_session(protocol, partial, |protocol, held, session| {
        let mut answered = if held.bytes.is_empty() {
            // The common case: decode straight from the read buffer, and
            // copy only a tail that is not a whole message yet.
            let answered = answer_all(protocol, link, session, input, 0, out, cap);
            if answered.verdict == Verdict::Continue && answered.used < input.len() {
                held.bytes = input[answered.used..].to_vec();
            }
            answered
        } else {
            // A message is split across reads: complete it behind what is
            // held. The held bytes were scanned already (see `scanned`), so
            // a long line arriving a byte at a time is not rescanned.
            let bytes = &mut held.bytes;
            let scanned = bytes.len();
            // Exactly, not doubled: the budget counts capacity, and a read
            // may grow it by at most the bytes read (`budget.rs`).
            bytes.reserve_exact(input.len());
            bytes.extend_from_slice(input);
            let answered = answer_all(protocol, link, session, bytes, scanned, out, cap);
            bytes.drain(..answered.used);
            answered
        };
        settle_split(protocol, held, answered.verdict);
        let charged = held.bytes.capacity().max(held.reserved);
        if out.len() + (link.posted() - cap.posted_before) + charged > limit {
            // The split message is charged more than was set aside for it
            // (a `reservation` or `max_message` understated): dropped.
            *held = Split::default();
            answered.verdict = Verdict::Close;
            answered.overrun = true;
        }
        answered
    });
    if answered.overrun {
        answered.verdict = Verdict::Close;
    }
    answered
}

/// After a read: a split message's storage kept no larger than it needs,
/// and its reservation.
fn settle_split<T: Protocol>(protocol: &T, held: &mut Split, verdict: Verdict) {
    if verdict != Verdict::Continue || held.bytes.is_empty() {
        held.bytes = Vec::new();
    } else if held.bytes.capacity() > held.bytes.len() + KEEP_SPARE {
        held.bytes.shrink_to_fit();
    }
    held.reserved = if held.bytes.is_empty() {
        0
    } else {
        protocol.reservation(&held.bytes)
    };
}

/// [`feed_within`] with no limit and no one else to speak to: the
/// decoders' unit tests.
#[cfg(test)]
pub(crate) fn feed<T: Protocol>(
    protocol: &mut T,
    partial: &mut Partial,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Verdict {
    let mut mail = Mailbox::default();
    let mut link = Link::new(tests_id(), &mut mail);
    feed_within(protocol, partial, input, out, &mut link, usize::MAX).verdict
}

/// The peer sent FIN: answers what `partial` still holds, if anything,
/// within `limit` bytes as [`feed_within`].
pub(crate) fn finish<T: Protocol>(
    protocol: &mut T,
    partial: &mut Partial,
    out: &mut Vec<u8>,
    limit: usize,
) -> Answered {
    if partial.is_empty() {
        return Answered::go_on();
    }
    let mark = out.len();
    let answered = with_session(protocol, partial, |protocol, held, session| {
        let rest = std::mem::take(&mut held.bytes);
        held.reserved = 0;
        protocol.at_eof(session, &rest, out)
    });
    let answer = out.len() - mark;
    if answer > limit.min(protocol.max_answer()) {
        out.truncate(mark);
        return Answered::overrun(0);
    }
    Answered {
        verdict: answered,
        ..Answered::go_on()
    }
}

/// Answers the whole messages at the start of `input` whose answers fit
/// in `max_out` bytes of `out` together, and nothing of a message that is
/// incomplete or would not fit: how many bytes of `input` the answered
/// messages took, the verdict, and whether a complete message was held
/// back because its answer did not fit. Nothing is held, so the caller can
/// take exactly those bytes (a connection passing input through a full
/// budget).
pub(crate) fn answer_whole<T: Protocol>(
    protocol: &mut T,
    partial: &mut Partial,
    input: &[u8],
    out: &mut Vec<u8>,
    link: &mut Link<'_>,
    max_out: usize,
) -> Answered {
    let cap = Cap {
        total: max_out,
        posted_before: link.posted(),
        hold_back: true,
    };
    with_session(protocol, partial, |protocol, _, session| {
        answer_all(protocol, link, session, input, 0, out, cap)
    })
}

/// The open hook ([`Protocol::open`]): creates the session, and sends
/// what the hook says, at most [`Protocol::max_answer`] bytes in all.
pub(crate) fn open<T: Protocol>(
    protocol: &mut T,
    partial: &mut Partial,
    out: &mut Vec<u8>,
    link: &mut Link<'_>,
) -> Answered {
    let (mark, before, posted) = (out.len(), link.mark(), link.posted());
    with_session(protocol, partial, |protocol, _, session| {
        protocol.open(link, session, out);
    });
    if out.len() - mark + (link.posted() - posted) > protocol.max_answer() {
        out.truncate(mark);
        link.truncate(before);
        return Answered::overrun(0);
    }
    Answered::go_on()
}

/// The close hook ([`Protocol::close`]), then the session is dropped;
/// true if the hook posted past [`Protocol::max_answer`] (its letters
/// are dropped).
pub(crate) fn close<T: Protocol>(
    protocol: &mut T,
    partial: &mut Partial,
    link: &mut Link<'_>,
) -> bool {
    let mark = link.mark();
    let before = link.posted();
    with_session(protocol, partial, |protocol, _, session| {
        protocol.close(link, session);
    });
    *partial = Partial::new();
    if link.posted() - before > protocol.max_answer() {
        link.truncate(mark);
        return true;
    }
    false
}

/// How much a run of answers may take (see [`answer_all`]).
#[derive(Debug, Clone, Copy)]
struct Cap {
    /// Bytes of `out` plus bytes posted during the run.
    total: usize,
    /// The mailbox's length when the run began.
    posted_before: usize,
    /// Past `total`: hold the message back for later (pass-through), not
    /// an overrun.
    hold_back: bool,
}

/// Answers the complete messages at the start of `buf`, stopping before
/// one whose answer would take `out` and the letters past `cap`; an answer
/// longer than [`Protocol::max_answer`] is an overrun, and so is one past
/// `cap` unless the cap holds messages back.
fn answer_all<T: Protocol>(
    protocol: &mut T,
    link: &mut Link<'_>,
    session: &mut T::Session,
    buf: &[u8],
    mut scanned: usize,
    out: &mut Vec<u8>,
    cap: Cap,
) -> Answered {
    let mut used = 0;
    let max_answer = protocol.max_answer();
    while used < buf.len() {
        match protocol.decode(&buf[used..], scanned) {
            Ok(Status::Complete(n)) => {
                // A protocol that claimed zero or too many bytes would loop
                // forever or slice out of bounds; treat it as "not yet".
                if n == 0 || n > buf.len() - used {
                    debug_assert!(false, "decode returned Complete({n})");
                    break;
                }
                let (mark, letters) = (out.len(), link.mark());
                let posted = link.posted();
                let verdict = protocol.answer_with(link, session, &buf[used..used + n], out);
                let answer = out.len() - mark + (link.posted() - posted);
                let total = out.len() + (link.posted() - cap.posted_before);
                if answer > max_answer || total > cap.total {
                    // Not answered after all.
                    out.truncate(mark);
                    link.truncate(letters);
                    if cap.hold_back && answer <= max_answer {
                        // Left for later.
                        return Answered {
                            used,
                            verdict: Verdict::Continue,
                            held_back: true,
                            overrun: false,
                        };
                    }
                    return Answered::overrun(used);
                }
                used += n;
                scanned = 0;
                if verdict != Verdict::Continue {
                    return Answered {
                        used,
                        verdict,
                        ..Answered::go_on()
                    };
                }
            }
            Ok(Status::Partial) => break,
            Err(why) => {
                let mark = out.len();
                protocol.refuse(why, out);
                if out.len() - mark > max_answer.max(SLACK_FOR_REFUSAL) {
                    out.truncate(mark);
                    return Answered::overrun(used);
                }
                return Answered {
                    used,
                    verdict: Verdict::Refuse,
                    ..Answered::go_on()
                };
            }
        }
    }
    Answered {
        used,
        ..Answered::go_on()
    }
}

/// A refusal's message may be as long as an answer, or this (the budget
/// keeps this much slack for an error line, `budget.rs`).
const SLACK_FOR_REFUSAL: usize = 64;

/// A connection id for tests that have no loop.
#[cfg(test)]
pub(crate) fn tests_id() -> ConnId {
    ConnId::of(crate::token::connection(0, 1))
}

/// Above this much spare capacity a held buffer is shrunk after use, so a
/// connection that once held a large frame does not keep its storage.
const KEEP_SPARE: usize = 4096;

/// Test support shared by the decoders' unit tests: feed an input in
/// pieces and collect what a client would see.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// What a whole conversation produced: every answer byte, and the
    /// first verdict that was not `Continue` (or `Continue`).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Transcript {
        pub out: Vec<u8>,
        pub verdict: Verdict,
    }

    /// Feeds `input` cut at `cuts` (sorted offsets), then EOF when `eof`.
    pub(crate) fn run(mode: &Mode, input: &[u8], cuts: &[usize], eof: bool) -> Transcript {
        let mut handler = Handler::from(mode.clone());
        let mut partial = Partial::new();
        let mut out = handler.greeting().to_vec();
        let mut start = 0;
        let ends = cuts.iter().copied().chain(std::iter::once(input.len()));
        for end in ends {
            let end = end.clamp(start, input.len());
            let verdict = handler.feed(&mut partial, &input[start..end], &mut out);
            start = end;
            if verdict != Verdict::Continue {
                assert!(partial.is_empty(), "state kept after {verdict:?}");
                return Transcript { out, verdict };
            }
        }
        let verdict = if eof {
            handler.finish_unlimited(&mut partial, &mut out)
        } else {
            Verdict::Continue
        };
        Transcript { out, verdict }
    }

    /// Asserts that every single split point, and byte-at-a-time feeding,
    /// give the same transcript as feeding `input` whole.
    #[track_caller]
    pub(crate) fn assert_split_invariant(mode: &Mode, input: &[u8], eof: bool) -> Transcript {
        let whole = run(mode, input, &[], eof);
        for cut in 0..=input.len() {
            assert_eq!(run(mode, input, &[cut], eof), whole, "split at {cut}");
        }
        let every: Vec<usize> = (0..input.len()).collect();
        assert_eq!(run(mode, input, &every, eof), whole, "byte at a time");
        whole
    }

    /// Asserts the promise the memory budget relies on ("Split messages"
    /// in `budget.rs`): wherever `input` is cut, the message left split is
    /// finished by taking [`Mode::rest_of_message`] of what follows, a
    /// piece at a time, and what the connection then holds (the message so
    /// far, or its answer) never exceeds the charge it started with.
    #[track_caller]
    pub(crate) fn assert_reservation_covers(mode: &Mode, input: &[u8]) {
        let mut mode = Handler::from(mode.clone());
        for cut in 0..input.len() {
            let mut partial = Partial::new();
            let mut out = Vec::new();
            if mode.feed(&mut partial, &input[..cut], &mut out) != Verdict::Continue
                || partial.is_empty()
            {
                continue;
            }
            let charged = partial.charge();
            let mut rest = &input[cut..];
            while !partial.is_empty() && !rest.is_empty() {
                let window = &rest[..rest.len().min(mode.still_wanted(&partial))];
                let take = mode.rest_of_message(&partial, window);
                assert!(take > 0, "cut {cut}: nothing taken");
                let mut answers = Vec::new();
                let verdict = mode.feed(&mut partial, &rest[..take], &mut answers);
                rest = &rest[take..];
                let held = answers.len() + partial.charge();
                assert!(held <= charged, "cut {cut}: {held} held, {charged} charged");
                if verdict != Verdict::Continue {
                    break;
                }
            }
        }
    }

    /// Asserts that every proper prefix of `input` (without EOF) answers a
    /// prefix of what the whole input answers, and never closes earlier.
    #[track_caller]
    pub(crate) fn assert_prefixes_consistent(mode: &Mode, input: &[u8]) {
        let whole = run(mode, input, &[], false);
        for end in 0..input.len() {
            let part = run(mode, &input[..end], &[], false);
            assert!(
                whole.out.starts_with(&part.out),
                "prefix {end} answered something the whole input does not"
            );
            if part.verdict != Verdict::Continue {
                assert_eq!(part, whole, "prefix {end} closed differently");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every line with `size` bytes, whatever it declares.
    struct Liar {
        size: usize,
        max_answer: usize,
    }

    impl Protocol for Liar {
        type Session = ();

        fn decode(&self, buf: &[u8], _: usize) -> Result<Status, Refusal> {
            Ok(buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(Status::Partial, |i| Status::Complete(i + 1)))
        }

        fn answer(&mut self, _: &mut (), _: &[u8], out: &mut Vec<u8>) -> Verdict {
            out.resize(out.len() + self.size, b'x');
            Verdict::Continue
        }

        fn max_message(&self) -> usize {
            100
        }

        fn max_answer(&self) -> usize {
            self.max_answer
        }
    }

    fn drive(liar: &mut Liar, input: &[u8], limit: usize) -> (Answered, usize) {
        let mut mail = Mailbox::default();
        let mut link = Link::new(tests_id(), &mut mail);
        let mut out = Vec::new();
        let mut partial = Partial::new();
        let answered = feed_within(liar, &mut partial, input, &mut out, &mut link, limit);
        (answered, out.len())
    }

    #[test]
    fn answers_past_the_declared_amplification_are_an_overrun_within_the_limit() {
        // Honest per answer (10 <= 10), but ten answers to ten bytes of
        // input where the limit allows 35 bytes in all.
        let mut liar = Liar {
            size: 10,
            max_answer: 10,
        };
        let (answered, held) = drive(&mut liar, &[b'\n'; 10], 35);
        assert!(answered.overrun);
        assert_eq!(answered.verdict, Verdict::Close);
        assert_eq!(held, 30, "the answers within the limit stay, no more");
        let (answered, held) = drive(&mut liar, &[b'\n'; 3], 35);
        assert!(!answered.overrun && answered.verdict == Verdict::Continue);
        assert_eq!(held, 30);
    }

    #[test]
    fn an_answer_past_max_answer_is_an_overrun_even_with_room() {
        let mut liar = Liar {
            size: 11,
            max_answer: 10,
        };
        let (answered, held) = drive(&mut liar, b"a\n", usize::MAX);
        assert!(answered.overrun && held == 0);
    }

    #[test]
    fn letters_count_with_the_answer() {
        struct Poster;
        impl Protocol for Poster {
            type Session = ();
            fn decode(&self, buf: &[u8], _: usize) -> Result<Status, Refusal> {
                Ok(Status::Complete(buf.len()))
            }
            fn answer_with(
                &mut self,
                link: &mut Link<'_>,
                _: &mut (),
                msg: &[u8],
                out: &mut Vec<u8>,
            ) -> Verdict {
                link.send_to_others(msg);
                out.extend_from_slice(msg);
                Verdict::Continue
            }
            fn max_message(&self) -> usize {
                10
            }
            fn max_answer(&self) -> usize {
                10
            }
        }
        let mut mail = Mailbox::default();
        let mut link = Link::new(tests_id(), &mut mail);
        let (mut out, mut partial) = (Vec::new(), Partial::new());
        let answered = feed_within(
            &mut Poster,
            &mut partial,
            b"123456",
            &mut out,
            &mut link,
            100,
        );
        assert!(answered.overrun, "6 answered and 6 posted: 12 > 10");
        assert!(out.is_empty() && mail.is_empty(), "both taken back");
    }
}
