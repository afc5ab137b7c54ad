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
//! no lock) and the connection's own [`Protocol::Session`]. [`feed`] is the
//! one driver: it decodes in place from the loop's read buffer and copies
//! only an incomplete tail.
//!
//! # Per-connection state costs nothing when there is none
//!
//! A connection's incomplete message and session live in a [`Partial`]: a
//! pointer that is null (8 bytes in the connection, no heap) in raw mode
//! and whenever the input so far ended on a message boundary and the
//! protocol keeps no session (a zero-sized `Session`, like line and frame
//! modes'), which is the common case for request/reply clients. Only a
//! message split across reads, or a session, allocates; a protocol bounds
//! how much a message may hold before it refuses (`--max-line`,
//! `--max-frame`).
//!
//! # Raw mode is not a protocol
//!
//! Byte-for-byte echo (RFC 862) has nothing to decode: the connection writes
//! straight from the loop's read buffer, with no copy, and never calls into
//! this module. [`Handler::Raw`] is one branch in `connection/mod.rs`, so
//! protocols cost the raw path nothing. A protocol is called through one
//! `dyn` call per read ([`Erased`]), never per byte.

use std::any::Any;

pub(crate) mod frame;
pub(crate) mod line;

pub use frame::Frame;
pub use line::{Line, Transform};

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
    /// transaction). Created the first time the connection is fed, and
    /// only if it has a size: `()` costs nothing.
    type Session: Default + Send + 'static;

    /// Recognises the first message of `buf`. `scanned` bytes at the start
    /// of `buf` are already known to hold no message end (they were looked
    /// at before more bytes arrived); a protocol may skip them. A buffer
    /// longer than [`Protocol::max_message`] that holds no whole message
    /// must be refused.
    fn decode(&self, buf: &[u8], scanned: usize) -> Result<Status, Refusal>;

    /// Answers one whole message (as [`Protocol::decode`] cut it) into
    /// `out`, with the state of every connection (`self`) and of this one
    /// (`session`).
    fn answer(&mut self, session: &mut Self::Session, msg: &[u8], out: &mut Vec<u8>) -> Verdict;

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

/// The incomplete message and the session of one connection; empty (a
/// null pointer) while there is neither.
///
/// Boxing costs one allocation while a message is split or a session
/// lives, and keeps this field at 8 bytes in every connection: that is
/// what keeps `Connection` within 64 bytes.
#[derive(Debug, Default)]
pub(crate) struct Partial(Option<Box<Held>>);

/// What a [`Partial`] points to.
#[derive(Default)]
struct Held {
    /// The split message's bytes so far; empty between messages.
    bytes: Vec<u8>,
    /// [`Protocol::reservation`] for `bytes` (0 when empty).
    reserved: usize,
    /// The connection's [`Protocol::Session`], if it has a size.
    session: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("bytes", &self.bytes.len())
            .field("reserved", &self.reserved)
            .field("session", &self.session.is_some())
            .finish()
    }
}

impl Partial {
    /// No held bytes and no allocation.
    pub(crate) const fn new() -> Self {
        Partial(None)
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether no message is split (a session may still live).
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The bytes held (empty when none are).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |held| &held.bytes)
    }

    /// What the memory budget counts for this message: the heap bytes it
    /// holds, or what it may still grow to with its answer, whichever is
    /// larger (see [`Protocol::reservation`]).
    #[inline]
    pub(crate) fn charge(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |held| held.bytes.capacity().max(held.reserved))
    }

    /// Gives back the part of a split message's charge that it does not
    /// hold, when it holds less than half of it (a frame header that
    /// declared 1 MiB and brought nothing more): the loop does so for a
    /// message stalled while others wait for room (`reactor/memory.rs`).
    /// Its next read charges it whole again, as a new message would be
    /// (which the read's allowance has room for), and until the budget
    /// has that room it waits in the kernel. True if it gave any back.
    pub(crate) fn release_unfilled(&mut self) -> bool {
        match self.0.as_mut() {
            Some(held) if !held.bytes.is_empty() && held.bytes.capacity() < held.reserved / 2 => {
                held.reserved = 0;
                true
            }
            _ => false,
        }
    }

    /// Whether the split message gave its reservation back
    /// ([`Partial::release_unfilled`]) and has not won it back yet.
    #[inline]
    pub(crate) fn is_released(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|held| !held.bytes.is_empty() && held.reserved == 0)
    }

    /// Drops the split message, if any (a session stays).
    pub(crate) fn clear(&mut self) {
        if let Some(held) = self.0.as_mut() {
            held.bytes = Vec::new();
            held.reserved = 0;
            if held.session.is_none() {
                self.0 = None;
            }
        }
    }
}

/// Above this much spare capacity a held buffer is shrunk after use, so a
/// connection that once held a large frame does not keep its storage.
const KEEP_SPARE: usize = 4096;

/// Runs `protocol` over `input`, the bytes that arrived after whatever
/// `partial` holds: answers every complete message into `out`, and keeps
/// the incomplete tail in `partial`. After any verdict but
/// [`Verdict::Continue`], later input is ignored and the split message
/// dropped.
pub(crate) fn feed<T: Protocol>(
    protocol: &mut T,
    partial: &mut Partial,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Verdict {
    with_session(protocol, partial, |protocol, held, session| {
        let verdict = if held.bytes.is_empty() {
            // The common case: decode straight from the read buffer, and
            // copy only a tail that is not a whole message yet.
            let (used, verdict, _) = answer_all(protocol, session, input, 0, out, usize::MAX);
            if verdict == Verdict::Continue && used < input.len() {
                held.bytes = input[used..].to_vec();
            }
            verdict
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
            let (used, verdict, _) = answer_all(protocol, session, bytes, scanned, out, usize::MAX);
            bytes.drain(..used);
            verdict
        };
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
        verdict
    })
}

/// The peer sent FIN: answers what `partial` still holds, if anything.
pub(crate) fn finish<T: Protocol>(
    protocol: &mut T,
    partial: &mut Partial,
    out: &mut Vec<u8>,
) -> Verdict {
    if partial.is_empty() {
        return Verdict::Continue;
    }
    with_session(protocol, partial, |protocol, held, session| {
        let rest = std::mem::take(&mut held.bytes);
        held.reserved = 0;
        protocol.at_eof(session, &rest, out)
    })
}

/// Answers the whole messages at the start of `input` whose answers fit
/// in `max_out` bytes of `out` together, and nothing of a message that is
/// incomplete or would not fit: returns how many bytes of `input` the
/// answered messages took, the verdict, and whether a complete message was
/// held back because its answer did not fit. Nothing is held, so the
/// caller can take exactly those bytes (a connection passing input through
/// a full budget).
pub(crate) fn answer_whole<T: Protocol>(
    protocol: &mut T,
    partial: &mut Partial,
    input: &[u8],
    out: &mut Vec<u8>,
    max_out: usize,
) -> (usize, Verdict, bool) {
    with_session(protocol, partial, |protocol, _, session| {
        answer_all(protocol, session, input, 0, out, max_out)
    })
}

/// Runs `f` with the connection's held message and session: the session
/// stored in `partial` (created on first use), or for a zero-sized one a
/// fresh value, which allocates nothing. Whatever is left empty is freed.
fn with_session<T: Protocol, R>(
    protocol: &mut T,
    partial: &mut Partial,
    f: impl FnOnce(&mut T, &mut Held, &mut T::Session) -> R,
) -> R {
    let mut held = partial.0.take().unwrap_or_default();
    let result = if size_of::<T::Session>() == 0 {
        f(protocol, &mut held, &mut T::Session::default())
    } else {
        let stored = held
            .session
            .get_or_insert_with(|| Box::new(T::Session::default()));
        match stored.downcast_mut::<T::Session>() {
            Some(session) => {
                let mut session = std::mem::take(session);
                let result = f(protocol, &mut held, &mut session);
                held.session = Some(Box::new(session));
                result
            }
            // A session of another protocol cannot happen: one server
            // speaks one protocol. Start afresh rather than panic.
            None => {
                let mut session = T::Session::default();
                let result = f(protocol, &mut held, &mut session);
                held.session = Some(Box::new(session));
                result
            }
        }
    };
    if !held.bytes.is_empty() || held.session.is_some() {
        partial.0 = Some(held);
    }
    result
}

/// Answers the complete messages at the start of `buf`, stopping before
/// one whose answer would take `out` past `max_out` bytes; returns how
/// many bytes they took, the verdict, and whether it stopped for that.
fn answer_all<T: Protocol>(
    protocol: &mut T,
    session: &mut T::Session,
    buf: &[u8],
    mut scanned: usize,
    out: &mut Vec<u8>,
    max_out: usize,
) -> (usize, Verdict, bool) {
    let mut used = 0;
    while used < buf.len() {
        match protocol.decode(&buf[used..], scanned) {
            Ok(Status::Complete(n)) => {
                // A protocol that claimed zero or too many bytes would loop
                // forever or slice out of bounds; treat it as "not yet".
                if n == 0 || n > buf.len() - used {
                    debug_assert!(false, "decode returned Complete({n})");
                    break;
                }
                let mark = out.len();
                let verdict = protocol.answer(session, &buf[used..used + n], out);
                if out.len() > max_out {
                    // Not answered after all: left for later.
                    out.truncate(mark);
                    return (used, Verdict::Continue, true);
                }
                used += n;
                scanned = 0;
                if verdict != Verdict::Continue {
                    return (used, verdict, false);
                }
            }
            Ok(Status::Partial) => break,
            Err(why) => {
                protocol.refuse(why, out);
                return (used, Verdict::Refuse, false);
            }
        }
    }
    (used, Verdict::Continue, false)
}

/// A [`Protocol`] behind one object-safe interface, so that the loop holds
/// any of them in one [`Handler`] (one `dyn` call per read).
pub(crate) trait Erased: Send {
    fn feed(&mut self, partial: &mut Partial, input: &[u8], out: &mut Vec<u8>) -> Verdict;
    fn finish(&mut self, partial: &mut Partial, out: &mut Vec<u8>) -> Verdict;
    fn answer_whole(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> (usize, Verdict, bool);
    fn still_wanted(&self, partial: &Partial) -> usize;
    fn rest_of_message(&self, partial: &Partial, more: &[u8]) -> usize;
    fn greeting(&self) -> &[u8];
    fn amplification(&self) -> usize;
    fn max_reservation(&self) -> usize;
}

impl<T: Protocol> Erased for T {
    fn feed(&mut self, partial: &mut Partial, input: &[u8], out: &mut Vec<u8>) -> Verdict {
        feed(self, partial, input, out)
    }

    fn finish(&mut self, partial: &mut Partial, out: &mut Vec<u8>) -> Verdict {
        finish(self, partial, out)
    }

    fn answer_whole(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> (usize, Verdict, bool) {
        answer_whole(self, partial, input, out, max_out)
    }

    fn still_wanted(&self, partial: &Partial) -> usize {
        Protocol::still_wanted(self, partial.bytes())
    }

    fn rest_of_message(&self, partial: &Partial, more: &[u8]) -> usize {
        Protocol::rest_of_message(self, partial.bytes(), more)
    }

    fn greeting(&self) -> &[u8] {
        Protocol::greeting(self)
    }

    fn amplification(&self) -> usize {
        Protocol::amplification(self)
    }

    fn max_reservation(&self) -> usize {
        self.reservation(&[])
    }
}

/// What the loop's connections speak: raw echo (no protocol at all), or a
/// protocol.
pub(crate) enum Handler {
    Raw,
    Protocol(Box<dyn Erased>),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Raw => "Raw",
            Handler::Protocol(_) => "Protocol",
        })
    }
}

impl From<Mode> for Handler {
    fn from(mode: Mode) -> Handler {
        match mode {
            Mode::Raw => Handler::Raw,
            Mode::Line(line) => Handler::Protocol(Box::new(line)),
            Mode::Frame(frame) => Handler::Protocol(Box::new(frame)),
        }
    }
}

impl Handler {
    /// The protocol behind this handler; `None` for raw echo.
    fn protocol(&self) -> Option<&dyn Erased> {
        match self {
            Handler::Raw => None,
            Handler::Protocol(p) => Some(p.as_ref()),
        }
    }

    /// [`Handler::protocol`], to feed.
    fn protocol_mut(&mut self) -> Option<&mut dyn Erased> {
        match self {
            Handler::Raw => None,
            Handler::Protocol(p) => Some(p.as_mut()),
        }
    }

    /// At most how many bytes one byte of input can make the connection
    /// hold (the memory budget reserves a read's size times this).
    pub(crate) fn amplification(&self) -> usize {
        self.protocol().map_or(1, |p| p.amplification().max(1))
    }

    /// The largest charge of one split message (0 in raw mode, which never
    /// splits one).
    pub(crate) fn max_reservation(&self) -> usize {
        self.protocol().map_or(0, |p| p.max_reservation())
    }

    /// What a new connection is sent before it says anything.
    pub(crate) fn greeting(&self) -> &[u8] {
        self.protocol().map_or(&[], |p| p.greeting())
    }

    /// [`feed`]. Raw mode echoes `input` (the connection does that itself
    /// without calling here; this arm keeps the function total).
    pub(crate) fn feed(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict {
        match self.protocol_mut() {
            Some(p) => p.feed(partial, input, out),
            None => {
                out.extend_from_slice(input);
                Verdict::Continue
            }
        }
    }

    /// [`finish`].
    pub(crate) fn finish(&mut self, partial: &mut Partial, out: &mut Vec<u8>) -> Verdict {
        match self.protocol_mut() {
            Some(p) => p.finish(partial, out),
            None => {
                partial.clear();
                Verdict::Continue
            }
        }
    }

    /// [`answer_whole`] (raw mode: at most `max_out` bytes of `input`,
    /// echoed).
    pub(crate) fn answer_whole(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> (usize, Verdict, bool) {
        match self.protocol_mut() {
            Some(p) => p.answer_whole(partial, input, out, max_out),
            None => {
                let n = input.len().min(max_out.saturating_sub(out.len()));
                out.extend_from_slice(&input[..n]);
                (n, Verdict::Continue, n < input.len())
            }
        }
    }

    /// [`Protocol::still_wanted`] for the message `partial` holds.
    pub(crate) fn still_wanted(&self, partial: &Partial) -> usize {
        self.protocol().map_or(0, |p| p.still_wanted(partial))
    }

    /// [`Protocol::rest_of_message`] for the message `partial` holds.
    pub(crate) fn rest_of_message(&self, partial: &Partial, more: &[u8]) -> usize {
        self.protocol()
            .map_or(0, |p| p.rest_of_message(partial, more))
    }
}

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
            handler.finish(&mut partial, &mut out)
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
