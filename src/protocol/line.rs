//! `--mode line`: one reply per complete line, the handlers of seed 4.
//!
//! A line ends with LF; a CR before the LF belongs to the terminator, so
//! `telnet` (CRLF) and `nc` (LF) clients both work, and each reply keeps
//! the terminator its line came with. What a reply says is the
//! [`Transform`]: the line itself, upper-cased, or prefixed with `hello `.
//! A banner (`--banner`) greets each connection; a line `exit` or `quit`
//! ends it after the replies before it are sent.
//!
//! Limits: a line may hold at most `max_line` bytes, not counting its
//! terminator. A longer one is refused as soon as that is certain (so an
//! endless line costs at most `max_line + 1` held bytes): the client reads
//! [`LINE_TOO_LONG`] and the connection is closed. At EOF, an unterminated
//! last line is answered like any other (without a terminator), then FIN.
//!
//! Transforms work on bytes, not text: `upper` changes ASCII letters only,
//! so any input, valid UTF-8 or not, gets an answer and never a panic.

use super::{Protocol, Refusal, Status, Verdict};

/// The default `--max-line`: 8 KiB.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;

/// What an over-long line is answered with before the connection closes.
pub(crate) const LINE_TOO_LONG: &[u8] = b"ERR line too long\n";

/// What `--line-transform hello` puts before each line.
const HELLO: &[u8] = b"hello ";

/// Lines that end the conversation (after their terminator is removed).
const GOODBYES: [&[u8]; 2] = [b"exit", b"quit"];

/// What the reply to a line says (`--line-transform`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transform {
    /// The line itself (echo per line).
    #[default]
    None,
    /// The line with ASCII letters upper-cased.
    Upper,
    /// `hello ` followed by the line.
    Hello,
}

/// Line-mode settings, shared by every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// How a reply is made from a line.
    pub transform: Transform,
    /// Sent to every client on connect (the banner plus LF), or empty.
    greeting: Vec<u8>,
    /// Longest line accepted, terminator not counted.
    pub max_line: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line::new(Transform::None, None, DEFAULT_MAX_LINE)
    }
}

impl Line {
    /// Line mode with `transform`, an optional banner line and a maximum
    /// line length (at least 1).
    pub fn new(transform: Transform, banner: Option<&str>, max_line: usize) -> Line {
        let greeting = match banner {
            Some(text) => {
                let mut g = text.as_bytes().to_vec();
                g.push(b'\n');
                g
            }
            None => Vec::new(),
        };
        Line {
            transform,
            greeting,
            max_line: max_line.max(1),
        }
    }

    /// Answers one line given as `content` (no terminator) and the
    /// `terminator` it came with (`\n`, `\r\n`, or empty at EOF).
    fn reply(&self, content: &[u8], terminator: &[u8], out: &mut Vec<u8>) -> Verdict {
        if content.len() > self.max_line {
            out.extend_from_slice(LINE_TOO_LONG);
            return Verdict::Refuse;
        }
        if GOODBYES.contains(&content) {
            return Verdict::Close;
        }
        match self.transform {
            Transform::None => out.extend_from_slice(content),
            Transform::Upper => out.extend(content.iter().map(u8::to_ascii_uppercase)),
            Transform::Hello => {
                out.extend_from_slice(HELLO);
                out.extend_from_slice(content);
            }
        }
        out.extend_from_slice(terminator);
        Verdict::Continue
    }
}

impl Protocol for Line {
    type Session = ();

    fn decode(&self, buf: &[u8], scanned: usize) -> Result<Status, Refusal> {
        let from = scanned.min(buf.len());
        match buf[from..].iter().position(|&b| b == b'\n') {
            Some(i) => Ok(Status::Complete(from + i + 1)),
            // Without a LF yet, the line is refused as soon as no
            // terminator can make it short enough: past `max_line` bytes,
            // unless the last one is a CR that a LF may turn into the
            // terminator (then `max_line + 1` bytes are legitimately held).
            None if buf.len() > self.max_line.saturating_add(1) => Err(Refusal::LineTooLong),
            None if buf.len() > self.max_line && buf.last() != Some(&b'\r') => {
                Err(Refusal::LineTooLong)
            }
            None => Ok(Status::Partial),
        }
    }

    fn answer(&mut self, _: &mut (), msg: &[u8], out: &mut Vec<u8>) -> Verdict {
        let cut = match msg {
            [.., b'\r', b'\n'] => 2,
            [.., b'\n'] => 1,
            _ => 0,
        };
        let (content, terminator) = msg.split_at(msg.len() - cut);
        self.reply(content, terminator, out)
    }

    fn refuse(&mut self, why: Refusal, out: &mut Vec<u8>) {
        if why == Refusal::LineTooLong {
            out.extend_from_slice(LINE_TOO_LONG);
        }
    }

    fn at_eof(&mut self, _: &mut (), rest: &[u8], out: &mut Vec<u8>) -> Verdict {
        // Answered like a line, minus the terminator it never got.
        self.reply(rest, b"", out)
    }

    fn greeting(&self) -> &[u8] {
        &self.greeting
    }

    fn max_message(&self) -> usize {
        // The longest line and its CR LF.
        self.max_line.saturating_add(2)
    }

    fn max_answer(&self) -> usize {
        // The longest line with CR LF, answered with its `hello ` prefix
        // or refused with `LINE_TOO_LONG` (the longer of the two).
        const EXTRA: usize = if LINE_TOO_LONG.len() > HELLO.len() {
            LINE_TOO_LONG.len()
        } else {
            HELLO.len()
        };
        self.max_message().saturating_add(EXTRA)
    }

    fn amplification(&self) -> usize {
        match self.transform {
            // `hello ` + an empty line: 1 byte in ("\n"), 7 out.
            Transform::Hello => 1 + HELLO.len(),
            Transform::None | Transform::Upper => 1,
        }
    }

    fn reservation(&self, _held: &[u8]) -> usize {
        // The line is held, then answered: never both at once.
        self.max_answer()
    }

    fn still_wanted(&self, held: &[u8]) -> usize {
        // Enough for the terminator of the longest line, or for `decode`
        // to be sure the line is too long.
        self.max_message().saturating_sub(held.len())
    }

    fn rest_of_message(&self, held: &[u8], more: &[u8]) -> usize {
        let window = &more[..more.len().min(self.still_wanted(held))];
        window
            .iter()
            .position(|&b| b == b'\n')
            .map_or(window.len(), |i| i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Mode;
    use crate::protocol::testing::{
        Transcript, assert_prefixes_consistent, assert_split_invariant, run,
    };
    use proptest::prelude::*;

    /// What a line protocol tells the budget, to the byte: the longest
    /// line and its CR LF, answered with the longer of `hello ` and the
    /// refusal before it; an empty line's `hello ` answer is the most a
    /// byte can become; a split line wants up to the longest line's end.
    #[test]
    fn what_a_line_tells_the_budget_is_exact() {
        let echo = Line::new(Transform::None, None, 100);
        assert_eq!(echo.max_message(), 102);
        assert_eq!(echo.max_answer(), 102 + LINE_TOO_LONG.len());
        assert_eq!(echo.reservation(b"abc"), echo.max_answer());
        assert_eq!(echo.amplification(), 1);
        assert_eq!(Line::new(Transform::Upper, None, 100).amplification(), 1);
        assert_eq!(Line::new(Transform::Hello, None, 100).amplification(), 7);
        assert_eq!(echo.still_wanted(b""), 102);
        assert_eq!(echo.still_wanted(&[b'a'; 30]), 72);
        assert_eq!(echo.still_wanted(&[b'a'; 200]), 0);
        // The rest of a split line: up to its newline, included...
        assert_eq!(echo.rest_of_message(b"ab", b"cd\nnext"), 3);
        // ...or all that may still be line, when no newline is in sight.
        assert_eq!(echo.rest_of_message(b"ab", &[b'x'; 50]), 50);
        assert_eq!(echo.rest_of_message(&[b'a'; 90], &[b'x'; 50]), 12);
        // The documented default (README, `--max-line`).
        assert_eq!(DEFAULT_MAX_LINE, 8192);
        let saturated = Line::new(Transform::None, None, usize::MAX);
        assert_eq!(saturated.max_message(), usize::MAX);
        assert_eq!(saturated.max_answer(), usize::MAX);
    }

    fn mode(transform: Transform, banner: Option<&str>, max_line: usize) -> Mode {
        Mode::Line(Line::new(transform, banner, max_line))
    }

    fn echo() -> Mode {
        mode(Transform::None, None, DEFAULT_MAX_LINE)
    }

    fn said(t: &Transcript) -> String {
        String::from_utf8_lossy(&t.out).into_owned()
    }

    // ----- answers ---------------------------------------------------------

    #[test]
    fn echoes_each_line_keeping_its_terminator() {
        let t = assert_split_invariant(&echo(), b"one\ntwo\r\n\nthree\n", false);
        assert_eq!(said(&t), "one\ntwo\r\n\nthree\n");
        assert_eq!(t.verdict, Verdict::Continue);
    }

    #[test]
    fn upper_changes_ascii_letters_only() {
        let m = mode(Transform::Upper, None, 64);
        let t = assert_split_invariant(&m, "abc xyZ 1é\r\n".as_bytes(), false);
        assert_eq!(said(&t), "ABC XYZ 1é\r\n");
    }

    #[test]
    fn hello_prefixes_every_line() {
        let m = mode(Transform::Hello, None, 64);
        let t = assert_split_invariant(&m, b"world\r\n\nbob\n", false);
        assert_eq!(said(&t), "hello world\r\nhello \nhello bob\n");
    }

    #[test]
    fn banner_comes_first_and_once() {
        let m = mode(Transform::None, Some("welcome"), 64);
        let t = assert_split_invariant(&m, b"hi\n", false);
        assert_eq!(said(&t), "welcome\nhi\n");
    }

    #[test]
    fn no_answer_before_the_line_is_complete() {
        for input in [&b"partial"[..], b"partial\r", b""] {
            assert_eq!(run(&echo(), input, &[], false).out, b"");
        }
    }

    #[test]
    fn binary_bytes_and_nul_are_just_bytes() {
        let t = assert_split_invariant(&echo(), b"\0\xff\xfe\r\x00\n", false);
        assert_eq!(t.out, b"\0\xff\xfe\r\x00\n");
    }

    // ----- exit and quit ---------------------------------------------------

    #[test]
    fn exit_closes_after_earlier_replies_and_ignores_the_rest() {
        for bye in ["exit", "quit"] {
            let input = format!("a\nb\r\n{bye}\r\nnot answered\n");
            let t = assert_split_invariant(&echo(), input.as_bytes(), true);
            assert_eq!(said(&t), "a\nb\r\n");
            assert_eq!(t.verdict, Verdict::Close);
        }
    }

    #[test]
    fn exit_must_be_the_whole_line() {
        let t = assert_split_invariant(&echo(), b"exit now\n exit\nEXIT\n", false);
        assert_eq!(said(&t), "exit now\n exit\nEXIT\n");
        assert_eq!(t.verdict, Verdict::Continue);
    }

    // ----- end of input ----------------------------------------------------

    #[test]
    fn unterminated_last_line_is_answered_at_eof() {
        let m = mode(Transform::Hello, None, 64);
        let t = assert_split_invariant(&m, b"a\nlast", true);
        assert_eq!(said(&t), "hello a\nhello last");
    }

    #[test]
    fn exit_without_terminator_at_eof_says_nothing() {
        let t = assert_split_invariant(&echo(), b"a\nexit", true);
        assert_eq!(said(&t), "a\n");
    }

    // ----- limits ----------------------------------------------------------

    #[test]
    fn a_line_of_exactly_max_line_is_fine_with_either_terminator() {
        let m = mode(Transform::None, None, 4);
        assert_eq!(assert_split_invariant(&m, b"abcd\n", true).out, b"abcd\n");
        assert_eq!(
            assert_split_invariant(&m, b"abcd\r\n", true).out,
            b"abcd\r\n"
        );
        assert_eq!(assert_split_invariant(&m, b"abcd", true).out, b"abcd");
    }

    #[test]
    fn an_over_long_line_is_refused_after_the_earlier_replies() {
        let m = mode(Transform::None, None, 4);
        for input in [
            &b"ok\nabcde\n"[..],
            b"ok\nabcde",
            b"ok\nabcdefghijk",
            b"ok\nabcd\re\n",
        ] {
            let t = assert_split_invariant(&m, input, true);
            assert_eq!(said(&t), "ok\nERR line too long\n", "{input:?}");
            assert_eq!(t.verdict, Verdict::Refuse);
        }
    }

    #[test]
    fn an_endless_line_is_refused_without_waiting_for_its_end() {
        let m = mode(Transform::None, None, 4);
        // No LF ever comes, and no EOF: the refusal may not wait for either.
        let t = run(&m, b"abcdef", &[1, 2, 3, 4, 5], false);
        assert_eq!(t.verdict, Verdict::Refuse);
        assert_eq!(t.out, LINE_TOO_LONG);
    }

    #[test]
    fn a_line_is_refused_at_the_first_byte_past_max_line() {
        let m = mode(Transform::None, None, 4);
        // Five bytes without a terminator: no LF can make that line fit.
        let t = run(&m, b"abcde", &[], false);
        assert_eq!(t.verdict, Verdict::Refuse);
        assert_eq!(t.out, LINE_TOO_LONG);
        // Four and a CR may still be a line of four: not yet.
        assert_eq!(run(&m, b"abcd\r", &[], false).verdict, Verdict::Continue);
    }

    #[test]
    fn held_bytes_never_exceed_max_line_plus_one() {
        let mut line = Line::new(Transform::None, None, 16);
        let mut partial = crate::protocol::Partial::new();
        let mut out = Vec::new();
        for _ in 0..100 {
            if crate::protocol::feed(&mut line, &mut partial, b"x", &mut out) != Verdict::Continue {
                break;
            }
            assert!(partial.len() <= 17, "holding {}", partial.len());
        }
        assert_eq!(out, LINE_TOO_LONG);
        assert!(partial.is_empty());
    }

    #[test]
    fn held_state_is_released_on_a_message_boundary() {
        let mut line = Line::default();
        let mut partial = crate::protocol::Partial::new();
        let mut out = Vec::new();
        crate::protocol::feed(&mut line, &mut partial, b"half", &mut out);
        assert_eq!(partial.len(), 4);
        crate::protocol::feed(&mut line, &mut partial, b" and half\n", &mut out);
        assert!(partial.is_empty());
        assert_eq!(out, b"half and half\n");
    }

    #[test]
    fn every_prefix_answers_a_prefix_of_the_whole() {
        let m = mode(Transform::Hello, Some("hi"), 8);
        assert_prefixes_consistent(&m, b"a\r\nbb\n\nccc\r\nexit\nzzz\n");
        assert_prefixes_consistent(&m, b"a\nway too long line\n");
    }

    // ----- properties ------------------------------------------------------

    /// A line protocol written the obvious way over the whole input, to
    /// compare the incremental decoder with.
    fn model(transform: Transform, max_line: usize, input: &[u8]) -> (Vec<u8>, Verdict) {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let (line, term, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i > 0 && rest[i - 1] == b'\r' => {
                    (&rest[..i - 1], &b"\r\n"[..], &rest[i + 1..])
                }
                Some(i) => (&rest[..i], &b"\n"[..], &rest[i + 1..]),
                None => (rest, &b""[..], &b""[..]),
            };
            if line.len() > max_line {
                out.extend_from_slice(LINE_TOO_LONG);
                return (out, Verdict::Refuse);
            }
            if line == b"exit" || line == b"quit" {
                return (out, Verdict::Close);
            }
            match transform {
                Transform::None => out.extend_from_slice(line),
                Transform::Upper => out.extend(line.to_ascii_uppercase()),
                Transform::Hello => {
                    out.extend_from_slice(b"hello ");
                    out.extend_from_slice(line);
                }
            }
            out.extend_from_slice(term);
            rest = next;
        }
        (out, Verdict::Continue)
    }

    fn transform() -> impl Strategy<Value = Transform> {
        prop_oneof![
            Just(Transform::None),
            Just(Transform::Upper),
            Just(Transform::Hello)
        ]
    }

    /// Inputs rich in terminators and goodbyes, not just random noise.
    fn conversation() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"exit".to_vec()),
            Just(b"quit".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|p| p.concat())
    }

    #[test]
    fn a_split_line_is_finished_within_its_charge() {
        use crate::protocol::testing::assert_reservation_covers;
        for transform in [Transform::None, Transform::Upper, Transform::Hello] {
            let m = mode(transform, None, 16);
            assert_reservation_covers(&m, b"abc\nfifteen bytes..\r\n\nexit\nmore");
            assert_reservation_covers(&m, b"sixteen bytes...\r\nx\n");
            assert_reservation_covers(&m, b"seventeen bytes...\nx\n");
            assert_reservation_covers(&m, b"sixteen bytes...\r\r\n");
        }
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_answer(
            input in conversation(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            t in transform(),
            max_line in 1usize..24,
        ) {
            let m = mode(t, None, max_line);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(run(&m, &input, &cuts, true), run(&m, &input, &[], true));
        }

        #[test]
        fn agrees_with_the_whole_input_model(
            input in conversation(),
            t in transform(),
            max_line in 1usize..24,
        ) {
            let got = run(&mode(t, None, max_line), &input, &[], true);
            let (out, verdict) = model(t, max_line, &input);
            prop_assert_eq!(got.out, out);
            prop_assert_eq!(got.verdict, verdict);
        }
    }
}
