//! The server's protocols from the client's side: what a message looks
//! like on the wire in each of echo-reactor's modes, and what must come
//! back for it.
//!
//! - **raw**: any bytes; the echo is the same bytes, in the same order,
//!   however the stream is cut.
//! - **line**: a message is a line: `size - 1` bytes and an LF. The answer
//!   is the line itself, upper-cased (`upper`: ASCII letters only), or
//!   after `hello ` (`hello`: 6 bytes longer). A server with `--banner`
//!   greets each connection with one line before any answer; the client
//!   skips it ([`Protocol::banner`]).
//! - **frame**: a message is a 4-byte big-endian length and `size - 4`
//!   bytes of body; the whole frame comes back.
//!
//! Whatever the mode, a connection's requests and the answers they must
//! get are two [`Pattern`]s with the same messages in the same order, so
//! the engine sends slices of one and compares what it reads with the
//! other (one `memcmp`), byte for byte, as for a raw echo.

use crate::pattern::{MAX_SPAN, PERIOD, Pattern};
use std::fmt;

/// The length header of a frame.
pub const FRAME_HEADER: usize = 4;

/// What `--line-transform hello` puts before each line.
const HELLO: &[u8] = b"hello ";

/// A cycle of messages holds at least this many, so that neighbouring
/// connections start on different messages even when messages are large.
const MIN_MESSAGES: usize = 7;

/// How the server answers a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transform {
    /// The line itself.
    #[default]
    None,
    /// ASCII letters upper-cased.
    Upper,
    /// `hello ` and the line.
    Hello,
}

/// Which of the server's modes the run speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Byte-stream echo.
    #[default]
    Raw,
    /// Lines, answered as `transform` says; `banner`: the server sends one
    /// line first, to be skipped.
    Line {
        /// How each line is answered.
        transform: Transform,
        /// Whether a greeting line comes before any answer.
        banner: bool,
    },
    /// Length-prefixed frames, echoed whole.
    Frame,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Raw => write!(f, "raw"),
            Protocol::Frame => write!(f, "frame"),
            Protocol::Line { transform, banner } => {
                write!(f, "line")?;
                match transform {
                    Transform::None => {}
                    Transform::Upper => write!(f, " upper")?,
                    Transform::Hello => write!(f, " hello")?,
                }
                if *banner {
                    write!(f, " after a banner")?;
                }
                Ok(())
            }
        }
    }
}

impl Protocol {
    /// The smallest message of this mode: a line needs its LF, a frame its
    /// header.
    pub fn min_size(self) -> usize {
        match self {
            Protocol::Raw | Protocol::Line { .. } => 1,
            Protocol::Frame => FRAME_HEADER,
        }
    }

    /// Bytes of the answer to one message of `size` bytes.
    pub fn reply_size(self, size: usize) -> usize {
        match self {
            Protocol::Line {
                transform: Transform::Hello,
                ..
            } => size + HELLO.len(),
            _ => size,
        }
    }

    /// Whether the server greets each connection with a line to skip.
    pub fn banner(self) -> bool {
        matches!(self, Protocol::Line { banner: true, .. })
    }

    /// `body` as one message of this mode: a line gets its LF, a frame its
    /// length header; raw bytes stay as they are.
    pub fn wrap(self, body: &[u8]) -> Vec<u8> {
        match self {
            Protocol::Raw => body.to_vec(),
            Protocol::Line { .. } => [body, b"\n"].concat(),
            Protocol::Frame => {
                // Bodies are checked to fit (payload::check_body, and
                // MAX_MESSAGE_SIZE for generated ones).
                let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
                [&len.to_be_bytes()[..], body].concat()
            }
        }
    }

    /// The answer the server gives to `request` (one whole message).
    pub fn answer(self, request: &[u8]) -> Vec<u8> {
        match self {
            Protocol::Line {
                transform: Transform::Upper,
                ..
            } => request.to_ascii_uppercase(),
            Protocol::Line {
                transform: Transform::Hello,
                ..
            } => [HELLO, request].concat(),
            _ => request.to_vec(),
        }
    }

    /// The requests and answers of a run whose every message is `body`
    /// (`--message`): a cycle of one message.
    pub fn patterns_of(self, body: &[u8]) -> (Pattern, Option<Pattern>) {
        let request = self.wrap(body);
        let answer = self.answer(&request);
        let answers = (answer != request).then(|| Pattern::of_messages(&[answer]));
        (Pattern::of_messages(&[request]), answers)
    }

    /// The requests of a run with `size`-byte messages, and the answers
    /// they must get when those differ from the requests (`None`: the
    /// answer is the request).
    pub fn patterns(self, size: usize) -> (Pattern, Option<Pattern>) {
        if self == Protocol::Raw {
            return (Pattern::new(), None);
        }
        let framed = self == Protocol::Frame;
        let requests: Vec<Vec<u8>> = bodies(size - self.min_size(), framed)
            .iter()
            .map(|body| self.wrap(body))
            .collect();
        let answers: Vec<Vec<u8>> = requests.iter().map(|m| self.answer(m)).collect();
        let answers = (answers != requests).then(|| Pattern::of_messages(&answers));
        (Pattern::of_messages(&requests), answers)
    }
}

/// The bodies of one cycle of messages, `len` bytes each: a prime number
/// of them (so a stride through them visits each), about [`PERIOD`] bytes
/// in all. Their bytes come from the raw pattern, so they hold every byte
/// value; a line's body holds no CR or LF (which would end it early), and
/// is never `exit` or `quit` (which would end the connection).
fn bodies(len: usize, framed: bool) -> Vec<Vec<u8>> {
    let count = next_prime((PERIOD / len.max(1)).max(MIN_MESSAGES));
    let raw = Pattern::new();
    (0..count)
        .map(|k| {
            let mut body = Vec::with_capacity(len);
            let mut offset = (k * len) as u64;
            while body.len() < len {
                let n = (len - body.len()).min(MAX_SPAN);
                body.extend_from_slice(raw.slice(0, offset, n));
                offset += n as u64;
            }
            if !framed {
                for b in &mut body {
                    if *b == b'\n' || *b == b'\r' {
                        *b ^= 0x80;
                    }
                }
                if body == b"exit" || body == b"quit" {
                    body[0] = b'E';
                }
            }
            body
        })
        .collect()
}

/// The smallest prime at least `n`.
fn next_prime(n: usize) -> usize {
    let is_prime = |p: usize| {
        p >= 2
            && (2..)
                .take_while(|d| d * d <= p)
                .all(|d| !p.is_multiple_of(d))
    };
    (n..).find(|&p| is_prime(p)).unwrap_or(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(transform: Transform) -> Protocol {
        Protocol::Line {
            transform,
            banner: false,
        }
    }

    #[test]
    fn every_line_ends_in_its_only_lf() {
        let (p, answers) = line(Transform::None).patterns(16);
        assert!(answers.is_none());
        let start = p.start(3);
        let stream = p.slice(start, 0, 16 * 50);
        for l in stream.chunks(16) {
            assert_eq!(l[15], b'\n');
            assert!(!l[..15].contains(&b'\n') && !l[..15].contains(&b'\r'));
        }
    }

    #[test]
    fn answers_line_up_with_their_requests() {
        let (p, answers) = line(Transform::Hello).patterns(10);
        let a = answers.expect("hello answers differ");
        let (ps, as_) = (p.start(5), a.start(5));
        for m in 0..30u64 {
            let req = p.slice(ps, m * 10, 10);
            let ans = a.slice(as_, m * 16, 16);
            assert_eq!(ans, [HELLO, req].concat());
        }
        let (p, answers) = line(Transform::Upper).patterns(40);
        let a = answers.expect("upper answers differ");
        let req = p.slice(p.start(2), 400, 40);
        assert_eq!(a.slice(a.start(2), 400, 40), req.to_ascii_uppercase());
    }

    #[test]
    fn frames_carry_their_body_length() {
        let (p, answers) = Protocol::Frame.patterns(100);
        assert!(answers.is_none());
        let stream = p.slice(p.start(7), 0, 100 * 20);
        for f in stream.chunks(100) {
            assert_eq!(&f[..4], &96u32.to_be_bytes());
        }
    }

    #[test]
    fn neighbouring_connections_start_on_different_messages() {
        let (p, _) = Protocol::Frame.patterns(64);
        let a = p.slice(p.start(0), 0, 64);
        let b = p.slice(p.start(1), 0, 64);
        assert_ne!(a, b);
        assert_eq!(p.start(1) % 64, 0);
    }

    #[test]
    fn reply_sizes() {
        assert_eq!(line(Transform::Hello).reply_size(64), 70);
        assert_eq!(line(Transform::Upper).reply_size(64), 64);
        assert_eq!(Protocol::Frame.reply_size(64), 64);
    }
}
