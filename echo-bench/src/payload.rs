//! What the messages say, when the user chooses: one message given on the
//! command line or read from a file (`--message`, `--message-file`), or a
//! template (`--template`) whose `{conn}` and `{seq}` are filled in with
//! the connection's number and the message's, so that every message is
//! different and each echo names the request it answers.
//!
//! A fixed message is a cycle of one message: the engine sends and checks
//! it from a [`Pattern`](crate::pattern::Pattern) like any other. A template cannot be a table (the
//! sequence number never repeats), so its messages are rendered as they
//! are sent and again as their answers are checked ([`Template::requests`],
//! [`Template::answers`]), into the thread's scratch buffer. Every rendered
//! message has the same length (the numbers are zero-padded to a fixed
//! width), so the engine's arithmetic, message `m` at `m * size`, holds.

use crate::protocol::Protocol;

/// Digits of `{conn}`: connection numbers below 10^8.
pub const CONN_DIGITS: usize = 8;

/// Digits of `{seq}`: message numbers below 10^12, years of messages.
pub const SEQ_DIGITS: usize = 12;

/// What the messages of a run say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Payload {
    /// The generated pattern: every connection its own bytes
    /// ([`Pattern`](crate::pattern::Pattern)).
    #[default]
    Pattern,
    /// Every message is this body (wrapped in the mode's framing).
    Message(Vec<u8>),
    /// Every message rendered from this template.
    Template(Template),
}

/// The most a first message (`--first-message`) may hold, wrapped: a new
/// connection's send buffer always takes it in one write, so it needs no
/// bookkeeping of its own for a partial write.
pub const MAX_FIRST_MESSAGE: usize = 4096;

/// A message sent once on each connection before any other, and the
/// answer it must get (checked, not timed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstMessage {
    /// The message, wrapped in the mode's framing.
    pub request: Vec<u8>,
    /// Its answer.
    pub answer: Vec<u8>,
}

impl FirstMessage {
    /// `body` as the first message of `protocol`; refused if it does not
    /// fit the mode or [`MAX_FIRST_MESSAGE`].
    pub fn new(mut body: Vec<u8>, protocol: Protocol) -> Result<FirstMessage, String> {
        if matches!(protocol, Protocol::Line { .. }) && body.last() == Some(&b'\n') {
            body.pop();
        }
        check_body(&body, protocol)?;
        let request = protocol.wrap(&body);
        if request.is_empty() || request.len() > MAX_FIRST_MESSAGE {
            return Err(format!(
                "a first message holds 1 to {MAX_FIRST_MESSAGE} bytes"
            ));
        }
        let answer = protocol.answer(&request);
        Ok(FirstMessage { request, answer })
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Conn,
    Seq,
}

/// A message template: text with `{conn}` and `{seq}` in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    /// The mode messages are wrapped in (a line's LF, a frame's header)
    /// and answered by (a line transform).
    protocol: Protocol,
    /// Bytes of one request, wrapped.
    size: usize,
    /// Bytes of one answer.
    reply: usize,
}

impl Template {
    /// Reads `text`; `{conn}` and `{seq}` are the placeholders, `{{` and
    /// `}}` a literal brace. The error says what is wrong.
    pub fn parse(text: &str, protocol: Protocol) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (piece, skip) = if rest.starts_with("{{") {
                (None, 2)
            } else if rest.starts_with("}}") {
                lit.push(b'}');
                rest = &rest[2..];
                continue;
            } else if rest.starts_with("{conn}") {
                (Some(Piece::Conn), 6)
            } else if rest.starts_with("{seq}") {
                (Some(Piece::Seq), 5)
            } else if rest.starts_with('{') || rest.starts_with('}') {
                return Err(format!(
                    "unknown placeholder at {rest:?}: use {{conn}}, {{seq}}, or {{{{ and }}}} for a brace"
                ));
            } else {
                let c = rest.chars().next().unwrap_or('?');
                let mut b = [0u8; 4];
                lit.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                rest = &rest[c.len_utf8()..];
                continue;
            };
            match piece {
                None => lit.push(b'{'),
                Some(p) => {
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    pieces.push(p);
                }
            }
            rest = &rest[skip..];
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        if !pieces.contains(&Piece::Seq) {
            return Err("a template needs {seq}, or every message would be the same".into());
        }
        let mut t = Template {
            pieces,
            protocol,
            size: 0,
            reply: 0,
        };
        let mut body = Vec::new();
        t.body(0, 0, &mut body);
        check_body(&body, protocol)?;
        let request = protocol.wrap(&body);
        t.size = request.len();
        t.reply = protocol.answer(&request).len();
        Ok(t)
    }

    /// Bytes of one request, as sent.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Message `seq` of connection `conn`, unwrapped, appended to `out`.
    fn body(&self, conn: usize, seq: u64, out: &mut Vec<u8>) {
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Conn => out.extend_from_slice(
                    format!(
                        "{:0w$}",
                        conn % 10usize.pow(CONN_DIGITS as u32),
                        w = CONN_DIGITS
                    )
                    .as_bytes(),
                ),
                Piece::Seq => out.extend_from_slice(
                    format!("{:0w$}", seq % 10u64.pow(SEQ_DIGITS as u32), w = SEQ_DIGITS)
                        .as_bytes(),
                ),
            }
        }
    }

    /// `len` bytes of connection `conn`'s requests from stream offset
    /// `offset`, rendered into `scratch`.
    pub fn requests<'a>(
        &self,
        conn: usize,
        offset: u64,
        len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        self.render(offset, len, self.size, scratch, |t, m, out| {
            let mut body = Vec::with_capacity(t.size);
            t.body(conn, m, &mut body);
            out.extend_from_slice(&t.protocol.wrap(&body));
        })
    }

    /// `len` bytes of the answers connection `conn` must get, from answer
    /// stream offset `offset`, rendered into `scratch`.
    pub fn answers<'a>(
        &self,
        conn: usize,
        offset: u64,
        len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        self.render(offset, len, self.reply, scratch, |t, m, out| {
            let mut body = Vec::with_capacity(t.size);
            t.body(conn, m, &mut body);
            out.extend_from_slice(&t.protocol.answer(&t.protocol.wrap(&body)));
        })
    }

    /// The messages of `unit` bytes that cover `offset..offset + len`,
    /// rendered by `one`, and the span asked for out of them.
    fn render<'a>(
        &self,
        offset: u64,
        len: usize,
        unit: usize,
        scratch: &'a mut Vec<u8>,
        one: impl Fn(&Template, u64, &mut Vec<u8>),
    ) -> &'a [u8] {
        let unit = unit as u64;
        let (first, last) = (offset / unit, (offset + len as u64).div_ceil(unit));
        scratch.clear();
        for m in first..last {
            one(self, m, scratch);
        }
        let skip = (offset - first * unit) as usize;
        &scratch[skip..skip + len]
    }
}

/// A fixed message's or a template's body must fit its mode: a line's
/// holds no CR or LF (they would end it early) and is not `exit` or
/// `quit` (which would end the connection).
pub fn check_body(body: &[u8], protocol: Protocol) -> Result<(), String> {
    if let Protocol::Line { .. } = protocol {
        if body.contains(&b'\n') || body.contains(&b'\r') {
            return Err("a line-mode message holds no CR or LF (the LF is added)".into());
        }
        if body == b"exit" || body == b"quit" {
            return Err("that line would end the connection".into());
        }
    }
    if let Protocol::Frame = protocol
        && u32::try_from(body.len()).is_err()
    {
        return Err("a frame body is at most 4 GiB".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Transform;

    #[test]
    fn placeholders_are_filled_at_a_fixed_width() {
        let t = Template::parse("c={conn} s={seq} {{x}}", Protocol::Raw).unwrap();
        let mut s = Vec::new();
        let one = t.requests(42, 0, t.size(), &mut s).to_vec();
        assert_eq!(one, b"c=00000042 s=000000000000 {x}");
        let second = t.requests(42, t.size() as u64, t.size(), &mut s).to_vec();
        assert_eq!(second, b"c=00000042 s=000000000001 {x}");
    }

    #[test]
    fn spans_cut_across_messages() {
        let t = Template::parse("{seq}", Protocol::Raw).unwrap();
        let mut s = Vec::new();
        assert_eq!(t.requests(0, 10, 4, &mut s), b"0000");
        assert_eq!(t.requests(0, 22, 3, &mut s), b"010");
    }

    #[test]
    fn answers_follow_the_transform() {
        let p = Protocol::Line {
            transform: Transform::Hello,
            banner: false,
        };
        let t = Template::parse("n{seq}", p).unwrap();
        let mut s = Vec::new();
        assert_eq!(t.size(), 14);
        assert_eq!(t.answers(1, 20, 20, &mut s), b"hello n000000000001\n");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(Template::parse("no number", Protocol::Raw).is_err());
        assert!(Template::parse("{seq} {nope}", Protocol::Raw).is_err());
        let line = Protocol::Line {
            transform: Transform::None,
            banner: false,
        };
        assert!(Template::parse("a\nb {seq}", line).is_err());
    }
}
