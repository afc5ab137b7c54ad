//! `--mode frame`: length-prefixed messages, the cure for "sticky packets".
//!
//! TCP is a byte stream: two sends may arrive as one read, one send as
//! several (seed 7). The fix the seeds teach is a fixed header: each
//! message is a 4-byte big-endian length, then exactly that many bytes.
//! This mode echoes whole frames: a frame is answered once all of it has
//! arrived, however it was chunked, and never in part.
//!
//! Limits: a header declaring more than `max_frame` bytes is refused the
//! moment its four bytes are in, before a byte of the body is stored (so a
//! client cannot make the server reserve memory by *announcing* a size),
//! and the connection is closed after the frames before it are echoed.
//! While a frame is incomplete the server holds what has arrived of it,
//! growing as bytes arrive, up to `4 + max_frame`. Zero-length frames are
//! valid (a bare header). A frame cut off by EOF is dropped, not echoed in
//! part, and counted as a protocol error.

use super::{Protocol, Refusal, Status, Verdict};

/// Bytes in a frame header.
pub(crate) const HEADER_LEN: usize = 4;

/// The default `--max-frame`: 1 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Frame-mode settings, shared by every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Largest body accepted, in bytes (the header not counted).
    pub max_frame: u32,
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// The header for a body of `len` bytes (for clients and tests).
#[cfg(test)]
pub(crate) fn header(len: u32) -> [u8; HEADER_LEN] {
    len.to_be_bytes()
}

/// `body` with its header in front.
#[cfg(test)]
pub(crate) fn encode(body: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(body.len()).ok()?;
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&header(len));
    frame.extend_from_slice(body);
    Some(frame)
}

impl Protocol for Frame {
    type Session = ();

    fn decode(&self, buf: &[u8], _scanned: usize) -> Result<Status, Refusal> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(Status::Partial);
        };
        let len = u32::from_be_bytes(*head);
        if len > self.max_frame {
            return Err(Refusal::FrameTooLarge(len));
        }
        // `len <= max_frame <= u32::MAX`, which fits a 64-bit usize.
        let total = HEADER_LEN + len as usize;
        if buf.len() < total {
            Ok(Status::Partial)
        } else {
            Ok(Status::Complete(total))
        }
    }

    fn answer(&mut self, _: &mut (), msg: &[u8], out: &mut Vec<u8>) -> Verdict {
        // Echo: the reply to a frame is the frame, header and all.
        out.extend_from_slice(msg);
        Verdict::Continue
    }

    fn refuse(&mut self, _why: Refusal, _out: &mut Vec<u8>) {
        // A binary protocol has no room for an error text a client would
        // not expect; the close says it.
    }

    fn at_eof(&mut self, _: &mut (), _rest: &[u8], _out: &mut Vec<u8>) -> Verdict {
        // Half a message is no message.
        Verdict::Refuse
    }

    fn max_message(&self) -> usize {
        HEADER_LEN + self.max_frame as usize
    }

    fn max_answer(&self) -> usize {
        // The frame itself.
        self.max_message()
    }

    fn reservation(&self, held: &[u8]) -> usize {
        // The whole frame, which is also its answer: once the header is
        // in, exactly the size it declares; before, the largest allowed.
        match held.first_chunk::<HEADER_LEN>() {
            Some(head) => HEADER_LEN + u32::from_be_bytes(*head) as usize,
            None => HEADER_LEN + self.max_frame as usize,
        }
    }

    fn still_wanted(&self, held: &[u8]) -> usize {
        // The header first (it says how much more), then the body.
        match held.first_chunk::<HEADER_LEN>() {
            Some(_) => self.reservation(held).saturating_sub(held.len()),
            None => HEADER_LEN - held.len().min(HEADER_LEN),
        }
    }

    fn rest_of_message(&self, held: &[u8], more: &[u8]) -> usize {
        // `still_wanted` is exact for frames: every one of those bytes
        // belongs to this frame (or its header).
        more.len().min(self.still_wanted(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::testing::{assert_prefixes_consistent, assert_split_invariant, run};
    use crate::protocol::{Mode, Partial, feed};
    use proptest::prelude::*;

    /// What a frame protocol tells the budget, to the byte: a message is
    /// its header and body, its answer the same frame, and a split frame
    /// is reserved (and wanted) exactly as its header declares.
    #[test]
    fn what_a_frame_tells_the_budget_is_exact() {
        let p = Frame { max_frame: 100 };
        assert_eq!(p.max_message(), 104);
        assert_eq!(p.max_answer(), 104);
        // Before the header is whole: the largest frame, and the header.
        assert_eq!(p.reservation(&[0, 0]), 104);
        assert_eq!(p.still_wanted(&[]), 4);
        assert_eq!(p.still_wanted(&[0, 0, 0]), 1);
        // A header declaring 10: 14 in all, 7 of them still to come.
        let held = [0, 0, 0, 10, b'a', b'b', b'c'];
        assert_eq!(p.reservation(&held), 14);
        assert_eq!(p.still_wanted(&held), 7);
        assert_eq!(p.rest_of_message(&held, &[b'x'; 20]), 7);
        assert_eq!(p.rest_of_message(&held, &[b'x'; 5]), 5);
        assert_eq!(p.rest_of_message(&[0, 0], &[0; 9]), 2);
        assert_eq!(p.amplification(), 1);
    }

    fn mode(max_frame: u32) -> Mode {
        Mode::Frame(Frame { max_frame })
    }

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        bodies.iter().flat_map(|b| encode(b).unwrap()).collect()
    }

    #[test]
    fn two_frames_sent_as_one_write_come_back_as_two_frames() {
        let input = frames(&[b"sticky", b"packets"]);
        let t = assert_split_invariant(&mode(64), &input, true);
        assert_eq!(t.out, input);
        assert_eq!(t.verdict, Verdict::Continue);
    }

    #[test]
    fn zero_length_frames_are_valid() {
        let input = frames(&[b"", b"x", b""]);
        let t = assert_split_invariant(&mode(64), &input, true);
        assert_eq!(t.out, input);
        assert_eq!(t.verdict, Verdict::Continue);
    }

    #[test]
    fn nothing_is_echoed_before_a_frame_is_whole() {
        let input = frames(&[b"hello"]);
        for end in 0..input.len() {
            assert_eq!(
                run(&mode(64), &input[..end], &[], false).out,
                b"",
                "prefix {end}"
            );
        }
        assert_prefixes_consistent(&mode(64), &frames(&[b"a", b"", b"bcd"]));
    }

    #[test]
    fn a_frame_of_exactly_max_frame_is_echoed() {
        let input = frames(&[&[7u8; 16]]);
        assert_eq!(assert_split_invariant(&mode(16), &input, true).out, input);
    }

    #[test]
    fn an_oversize_header_is_refused_after_the_earlier_frames() {
        let mut input = frames(&[b"ok"]);
        input.extend_from_slice(&header(17));
        input.extend_from_slice(&[1u8; 17]);
        let t = assert_split_invariant(&mode(16), &input, true);
        assert_eq!(t.out, frames(&[b"ok"]));
        assert_eq!(t.verdict, Verdict::Refuse);
    }

    #[test]
    fn an_oversize_header_is_refused_before_any_body_is_held() {
        let mut frame = Frame { max_frame: 1024 };
        let mut partial = Partial::new();
        let mut out = Vec::new();
        // 4 GiB announced: refused on the header alone, nothing stored.
        let verdict = feed(&mut frame, &mut partial, &header(u32::MAX), &mut out);
        assert_eq!(verdict, Verdict::Refuse);
        assert!(partial.is_empty() && out.is_empty());
    }

    #[test]
    fn held_bytes_grow_with_arrivals_not_with_the_announced_length() {
        let mut frame = Frame::default();
        let mut partial = Partial::new();
        let mut out = Vec::new();
        feed(
            &mut frame,
            &mut partial,
            &header(DEFAULT_MAX_FRAME),
            &mut out,
        );
        feed(&mut frame, &mut partial, b"abc", &mut out);
        assert_eq!(partial.len(), HEADER_LEN + 3);
        assert!(out.is_empty());
    }

    #[test]
    fn a_frame_cut_off_by_eof_is_dropped_and_refused() {
        let mut input = frames(&[b"whole"]);
        input.extend_from_slice(&header(10));
        input.extend_from_slice(b"part");
        let t = assert_split_invariant(&mode(64), &input, true);
        assert_eq!(t.out, frames(&[b"whole"]));
        assert_eq!(t.verdict, Verdict::Refuse);
    }

    #[test]
    fn a_split_frame_is_finished_within_its_charge() {
        use crate::protocol::testing::assert_reservation_covers;
        let m = mode(8);
        let mut input = frames(&[b"", b"12345678", b"abc"]);
        input.extend_from_slice(&header(9));
        assert_reservation_covers(&m, &input);
        let mut partial = Partial::new();
        feed(
            &mut Frame { max_frame: 8 },
            &mut partial,
            &header(5)[..2],
            &mut Vec::new(),
        );
        assert_eq!(
            partial.charge(),
            HEADER_LEN + 8,
            "header unknown: the largest"
        );
        feed(
            &mut Frame { max_frame: 8 },
            &mut partial,
            &header(5)[2..],
            &mut Vec::new(),
        );
        assert_eq!(partial.charge(), HEADER_LEN + 5, "header known: its size");
    }

    proptest! {
        #[test]
        fn any_chunking_echoes_exactly_the_whole_frames(
            bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            tail in proptest::collection::vec(any::<u8>(), 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let bodies: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
            let whole = frames(&bodies);
            let mut input = whole.clone();
            input.extend_from_slice(&tail);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
            cuts.sort_unstable();
            // max_frame 64 accepts every body above. `tail` may be the
            // start of a frame, a whole one, or an oversize header: either
            // way the frames before it come back first, and intact.
            let t = run(&mode(64), &input, &cuts, false);
            prop_assert_eq!(&t, &run(&mode(64), &input, &[], false));
            prop_assert!(t.out.starts_with(&whole));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_grow_past_the_limit(
            input in proptest::collection::vec(any::<u8>(), 0..256),
            max_frame in 0u32..64,
        ) {
            let mut frame = Frame { max_frame };
            let mut partial = Partial::new();
            let mut out = Vec::new();
            for byte in input.chunks(1) {
                if feed(&mut frame, &mut partial, byte, &mut out) != Verdict::Continue {
                    break;
                }
                prop_assert!(partial.len() <= HEADER_LEN + max_frame as usize);
            }
            prop_assert!(out.len() <= input.len());
        }
    }
}
