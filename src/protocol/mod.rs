//! Protocols: *what to answer*, kept apart from *how bytes move*.
//!
//! This is socketserver's handler classes (seed 4) turned inside out for a
//! readiness loop: the server owns the loop and the sockets, and a protocol
//! never does I/O. The connection hands it the bytes that just arrived; it
//! appends its answers to an output vector and returns a [`Verdict`]: go
//! on, or close after the answers are sent. Because nothing here touches a
//! socket, every decoder is tested on every split point of its input (the
//! answer must not depend on how TCP chunked the stream, seed 7), with
//! proptest.
//!
//! # Decoders
//!
//! Like httparse and mini-redis, a [`Decoder`] looks at buffered bytes and
//! says [`Status::Complete`] (a whole message of `n` bytes is there),
//! [`Status::Partial`] (not enough bytes yet, which is *not* an error), or
//! refuses the input for good ([`Refusal`]: a line or frame over its limit).
//! [`feed`] is the one driver shared by every decoder: it decodes in place
//! from the loop's read buffer and copies only an incomplete tail.
//!
//! # Per-connection state costs nothing when there is none
//!
//! A connection's incomplete message lives in a [`Partial`]: a pointer
//! that is null (8 bytes in the connection, no heap) in raw mode and
//! whenever the input so far ended on a message boundary, which is the
//! common case for request/reply clients. Only a message split across
//! reads allocates, and a decoder bounds how much it may hold before it
//! refuses (`--max-line`, `--max-frame`).
//!
//! # Raw mode is not a protocol
//!
//! Byte-for-byte echo (RFC 862) has nothing to decode: the connection writes
//! straight from the loop's read buffer, with no copy, and never calls into
//! this module. [`Mode::Raw`] is one branch in `connection/mod.rs`, so line and
//! frame modes cost the raw path nothing. There is no `dyn` here either:
//! the mode is an enum matched once per read.

pub mod frame;
pub mod line;

pub use frame::Frame;
pub use line::{Line, Transform};

/// What a server's TCP connections speak (`--mode`).
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

/// How much of a buffer a decoder recognised (httparse's `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The buffer starts with a whole message of this many bytes.
    Complete(usize),
    /// The message has not fully arrived yet.
    Partial,
}

/// Input a decoder will never accept; the connection answers with an
/// error (if the protocol has one) and is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A line longer than `--max-line`.
    LineTooLong,
    /// A frame header declaring more than `--max-frame` bytes.
    FrameTooLarge(u32),
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

/// One protocol's rules for cutting a byte stream into messages and
/// answering each. Implementations are pure: no I/O, no clock, no panics
/// on any input.
pub trait Decoder {
    /// Recognises the first message of `buf`. `scanned` bytes at the start
    /// of `buf` are already known to hold no message end (they were looked
    /// at before more bytes arrived); a decoder may skip them.
    fn decode(&self, buf: &[u8], scanned: usize) -> Result<Status, Refusal>;

    /// Answers one complete message (as [`Decoder::decode`] cut it).
    fn answer(&self, msg: &[u8], out: &mut Vec<u8>) -> Verdict;

    /// Appends what the client is told before a refusal closes it.
    fn refuse(&self, why: Refusal, out: &mut Vec<u8>);

    /// The peer sent FIN with `rest` (non-empty, incomplete) still held.
    /// The connection closes whatever the verdict; it says why.
    fn at_eof(&self, rest: &[u8], out: &mut Vec<u8>) -> Verdict;

    /// The most a connection can come to hold for the message `held`
    /// begins, its answer (or error) included, however the rest of it
    /// arrives. The memory budget charges this much for a split message,
    /// so that finishing it never needs room the budget may not have
    /// (`budget.rs`, "Split messages").
    fn reservation(&self, held: &[u8]) -> usize;

    /// At most how many of the bytes after `held` can still belong to its
    /// message: a read that finishes a message under a full budget takes
    /// no more.
    fn still_wanted(&self, held: &[u8]) -> usize;

    /// How many bytes at the start of `more` (at most
    /// [`Decoder::still_wanted`] of them) belong to the message `held`
    /// begins: up to its end, or all of them if it does not end there.
    fn rest_of_message(&self, held: &[u8], more: &[u8]) -> usize {
        more.len().min(self.still_wanted(held))
    }
}

/// The incomplete message of one connection; empty (a null pointer) while
/// the input so far ended on a message boundary.
///
/// Boxing costs one more allocation while a message is split, and keeps
/// this field at 8 bytes in every connection, split or not: that is what
/// keeps `Connection` within 64 bytes.
#[derive(Debug, Default)]
pub struct Partial(Option<Box<Held>>);

/// A split message's bytes, and what the budget charges for it.
#[derive(Debug)]
struct Held {
    bytes: Vec<u8>,
    /// [`Decoder::reservation`] for `bytes`.
    reserved: usize,
}

impl Partial {
    /// No held bytes and no allocation.
    pub const fn new() -> Self {
        Partial(None)
    }

    /// Bytes held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |held| held.bytes.len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The bytes held (empty when none are).
    pub fn bytes(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |held| &held.bytes)
    }

    /// What the memory budget counts for this message: the heap bytes it
    /// holds, or what it may still grow to with its answer, whichever is
    /// larger (see [`Decoder::reservation`]).
    #[inline]
    pub fn charge(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |held| held.bytes.capacity().max(held.reserved))
    }

    /// Drops whatever is held, and its allocation.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

/// Above this much spare capacity a held buffer is shrunk after use, so a
/// connection that once held a large frame does not keep its storage.
const KEEP_SPARE: usize = 4096;

/// Runs `decoder` over `input`, the bytes that arrived after whatever
/// `partial` holds: answers every complete message into `out`, and keeps
/// the incomplete tail in `partial`. After any verdict but
/// [`Verdict::Continue`], later input is ignored and `partial` is emptied.
pub fn feed<D: Decoder>(
    decoder: &D,
    partial: &mut Partial,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Verdict {
    match partial.0.take() {
        // The common case: decode straight from the read buffer, and copy
        // only a tail that is not a whole message yet.
        None => {
            let (used, verdict, _) = answer_all(decoder, input, 0, out, usize::MAX);
            if verdict == Verdict::Continue && used < input.len() {
                let bytes = input[used..].to_vec();
                let reserved = decoder.reservation(&bytes);
                partial.0 = Some(Box::new(Held { bytes, reserved }));
            }
            verdict
        }
        // A message is split across reads: complete it behind what is
        // held. The held bytes were scanned already (see `scanned`), so a
        // long line arriving a byte at a time is not rescanned each time.
        Some(mut held) => {
            let bytes = &mut held.bytes;
            let scanned = bytes.len();
            // Exactly, not doubled: the budget counts capacity, and a read
            // may grow it by at most the bytes read (`budget.rs`).
            bytes.reserve_exact(input.len());
            bytes.extend_from_slice(input);
            let (used, verdict, _) = answer_all(decoder, bytes, scanned, out, usize::MAX);
            if verdict == Verdict::Continue && used < bytes.len() {
                bytes.drain(..used);
                if bytes.capacity() > bytes.len() + KEEP_SPARE {
                    bytes.shrink_to_fit();
                }
                held.reserved = decoder.reservation(&held.bytes);
                partial.0 = Some(held);
            }
            verdict
        }
    }
}

/// The peer sent FIN: answers what `partial` still holds, if anything.
pub fn finish<D: Decoder>(decoder: &D, partial: &mut Partial, out: &mut Vec<u8>) -> Verdict {
    match partial.0.take() {
        Some(held) => decoder.at_eof(&held.bytes, out),
        None => Verdict::Continue,
    }
}

/// Answers the whole messages at the start of `input` whose answers fit
/// in `max_out` bytes of `out` together, and nothing of a message that is
/// incomplete or would not fit: returns how many bytes of `input` the
/// answered messages took, the verdict, and whether a complete message was
/// held back because its answer did not fit. Nothing is held, so the
/// caller can take exactly those bytes (a connection passing input through
/// a full budget).
pub fn answer_whole<D: Decoder>(
    decoder: &D,
    input: &[u8],
    out: &mut Vec<u8>,
    max_out: usize,
) -> (usize, Verdict, bool) {
    answer_all(decoder, input, 0, out, max_out)
}

/// Answers the complete messages at the start of `buf`, stopping before
/// one whose answer would take `out` past `max_out` bytes; returns how
/// many bytes they took, the verdict, and whether it stopped for that.
fn answer_all<D: Decoder>(
    decoder: &D,
    buf: &[u8],
    mut scanned: usize,
    out: &mut Vec<u8>,
    max_out: usize,
) -> (usize, Verdict, bool) {
    let mut used = 0;
    while used < buf.len() {
        match decoder.decode(&buf[used..], scanned) {
            Ok(Status::Complete(n)) => {
                // A decoder that claimed zero or too many bytes would loop
                // forever or slice out of bounds; treat it as "not yet".
                if n == 0 || n > buf.len() - used {
                    debug_assert!(false, "decoder returned Complete({n})");
                    break;
                }
                let mark = out.len();
                let verdict = decoder.answer(&buf[used..used + n], out);
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
                decoder.refuse(why, out);
                return (used, Verdict::Refuse, false);
            }
        }
    }
    (used, Verdict::Continue, false)
}

impl Mode {
    /// At most how many bytes one byte of input can make this mode hold
    /// (the memory budget reserves a read's size times this, `budget.rs`).
    pub(crate) fn amplification(&self) -> usize {
        match self {
            // `hello ` + an empty line: 1 byte in ("\n"), 7 out.
            Mode::Line(line) if line.transform == Transform::Hello => 7,
            // Echo, upper-case, frames: every byte answered once.
            Mode::Raw | Mode::Line(_) | Mode::Frame(_) => 1,
        }
    }

    /// The largest [`Decoder::reservation`] of this mode: what one split
    /// message may be charged (0 in raw mode, which never splits one).
    pub(crate) fn max_reservation(&self) -> usize {
        match self {
            Mode::Raw => 0,
            Mode::Line(line) => line.reservation(&[]),
            Mode::Frame(frame) => frame.reservation(&[]),
        }
    }

    /// [`Decoder::still_wanted`] for the message `partial` holds.
    pub(crate) fn still_wanted(&self, partial: &Partial) -> usize {
        match self {
            Mode::Raw => 0,
            Mode::Line(line) => line.still_wanted(partial.bytes()),
            Mode::Frame(frame) => frame.still_wanted(partial.bytes()),
        }
    }

    /// [`Decoder::rest_of_message`] for the message `partial` holds.
    pub(crate) fn rest_of_message(&self, partial: &Partial, more: &[u8]) -> usize {
        match self {
            Mode::Raw => 0,
            Mode::Line(line) => line.rest_of_message(partial.bytes(), more),
            Mode::Frame(frame) => frame.rest_of_message(partial.bytes(), more),
        }
    }

    /// What a new connection is sent before it says anything.
    pub(crate) fn greeting(&self) -> &[u8] {
        match self {
            Mode::Line(line) => line.greeting(),
            Mode::Raw | Mode::Frame(_) => &[],
        }
    }

    /// [`feed`] with this mode's decoder. Raw mode echoes `input` (the
    /// connection does that itself without calling here; this arm keeps
    /// the function total for tests and other callers).
    pub(crate) fn feed(&self, partial: &mut Partial, input: &[u8], out: &mut Vec<u8>) -> Verdict {
        match self {
            Mode::Raw => {
                out.extend_from_slice(input);
                Verdict::Continue
            }
            Mode::Line(line) => feed(line, partial, input, out),
            Mode::Frame(frame) => feed(frame, partial, input, out),
        }
    }

    /// [`answer_whole`] with this mode's decoder (raw mode: at most
    /// `max_out` bytes of `input`, echoed).
    pub(crate) fn answer_whole(
        &self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_out: usize,
    ) -> (usize, Verdict, bool) {
        match self {
            Mode::Raw => {
                let n = input.len().min(max_out.saturating_sub(out.len()));
                out.extend_from_slice(&input[..n]);
                (n, Verdict::Continue, n < input.len())
            }
            Mode::Line(line) => answer_whole(line, input, out, max_out),
            Mode::Frame(frame) => answer_whole(frame, input, out, max_out),
        }
    }

    /// [`finish`] with this mode's decoder.
    pub(crate) fn finish(&self, partial: &mut Partial, out: &mut Vec<u8>) -> Verdict {
        match self {
            Mode::Raw => {
                partial.clear();
                Verdict::Continue
            }
            Mode::Line(line) => finish(line, partial, out),
            Mode::Frame(frame) => finish(frame, partial, out),
        }
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
    pub struct Transcript {
        pub out: Vec<u8>,
        pub verdict: Verdict,
    }

    /// Feeds `input` cut at `cuts` (sorted offsets), then EOF when `eof`.
    pub fn run(mode: &Mode, input: &[u8], cuts: &[usize], eof: bool) -> Transcript {
        let mut partial = Partial::new();
        let mut out = mode.greeting().to_vec();
        let mut start = 0;
        let ends = cuts.iter().copied().chain(std::iter::once(input.len()));
        for end in ends {
            let end = end.clamp(start, input.len());
            let verdict = mode.feed(&mut partial, &input[start..end], &mut out);
            start = end;
            if verdict != Verdict::Continue {
                assert!(partial.is_empty(), "state kept after {verdict:?}");
                return Transcript { out, verdict };
            }
        }
        let verdict = if eof {
            mode.finish(&mut partial, &mut out)
        } else {
            Verdict::Continue
        };
        Transcript { out, verdict }
    }

    /// Asserts that every single split point, and byte-at-a-time feeding,
    /// give the same transcript as feeding `input` whole.
    #[track_caller]
    pub fn assert_split_invariant(mode: &Mode, input: &[u8], eof: bool) -> Transcript {
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
    pub fn assert_reservation_covers(mode: &Mode, input: &[u8]) {
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
    pub fn assert_prefixes_consistent(mode: &Mode, input: &[u8]) {
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
