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
}

/// The incomplete message of one connection; empty (a null pointer) while
/// the input so far ended on a message boundary.
///
/// Boxing the `Vec` costs one more allocation while a message is split,
/// and keeps this field at 8 bytes instead of 24 in every connection, split
/// or not: that is what keeps `Connection` within 64 bytes.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub struct Partial(Option<Box<Vec<u8>>>);

impl Partial {
    /// No held bytes and no allocation.
    pub const fn new() -> Self {
        Partial(None)
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |held| held.len())
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Heap bytes held: what the memory budget counts.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |held| held.capacity())
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
            let (used, verdict) = answer_all(decoder, input, 0, out);
            if verdict == Verdict::Continue && used < input.len() {
                partial.0 = Some(Box::new(input[used..].to_vec()));
            }
            verdict
        }
        // A message is split across reads: complete it behind what is
        // held. The held bytes were scanned already (see `scanned`), so a
        // long line arriving a byte at a time is not rescanned each time.
        Some(mut held) => {
            let scanned = held.len();
            // Exactly, not doubled: the budget counts capacity, and a read
            // may grow it by at most the bytes read (`budget.rs`).
            held.reserve_exact(input.len());
            held.extend_from_slice(input);
            let (used, verdict) = answer_all(decoder, &held, scanned, out);
            if verdict == Verdict::Continue && used < held.len() {
                held.drain(..used);
                if held.capacity() > held.len() + KEEP_SPARE {
                    held.shrink_to_fit();
                }
                partial.0 = Some(held);
            }
            verdict
        }
    }
}

/// The peer sent FIN: answers what `partial` still holds, if anything.
pub fn finish<D: Decoder>(decoder: &D, partial: &mut Partial, out: &mut Vec<u8>) -> Verdict {
    match partial.0.take() {
        Some(held) => decoder.at_eof(&held, out),
        None => Verdict::Continue,
    }
}

/// Answers the complete messages at the start of `buf`; returns how many
/// bytes they took and the verdict.
fn answer_all<D: Decoder>(
    decoder: &D,
    buf: &[u8],
    mut scanned: usize,
    out: &mut Vec<u8>,
) -> (usize, Verdict) {
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
                let verdict = decoder.answer(&buf[used..used + n], out);
                used += n;
                scanned = 0;
                if verdict != Verdict::Continue {
                    return (used, verdict);
                }
            }
            Ok(Status::Partial) => break,
            Err(why) => {
                decoder.refuse(why, out);
                return (used, Verdict::Refuse);
            }
        }
    }
    (used, Verdict::Continue)
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
