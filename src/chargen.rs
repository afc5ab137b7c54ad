//! The character generator service (RFC 864): lines of printable ASCII,
//! sent for as long as the client reads them; whatever the client sends
//! is thrown away.
//!
//! # The pattern
//!
//! RFC 864's "popular pattern": the 95 printable characters (space to
//! `~`) in a ring; line `i` is the 72 characters starting at the ring's
//! `i`-th, then CRLF. After 95 lines the pattern is back where it began,
//! so one *cycle* of 95 lines ([`CYCLE`], 7,030 bytes, built at compile
//! time) repeated forever is the whole stream. A connection therefore
//! needs no position of its own: it sends whole cycles, and the part of
//! one the socket did not take waits as pending output, like an echo's.
//!
//! # Over TCP: an infinite source under the readiness rules
//!
//! A chargen connection reads (and drops, [`Swallow`](crate::discard::Swallow))
//! like any connection, and sends under rule 3: it writes a cycle only
//! when nothing is pending, straight from [`CYCLE`] (no copy); the rest of
//! a partial write waits in its output buffer with write interest, and
//! the writable edge that says the client read some brings the next
//! write. So it never holds more than one cycle (less than rule 4's
//! watermarks, so it never pauses its reading), and it charges the memory
//! budget for a cycle *before* writing one: with no room for it, it is
//! parked until the budget frees, sending nothing (`connection/source.rs`).
//! A client that reads fast gets [`CYCLES_PER_TURN`] cycles a turn, then
//! the connection yields to the others (rule 2's run-next queue, since no
//! edge will say the socket still has room).
//!
//! # Over UDP
//!
//! Each datagram is answered with one datagram of a random length from 0
//! to 512 bytes (RFC 864), cut from the pattern at a random line. The
//! loop guard (`udp.rs`) covers it as every UDP answer: never to a
//! reflector's port or our own, and not over and over to a peer that
//! sends our answers back.

use std::hash::BuildHasher;

/// Characters per line, CRLF not counted.
const LINE: usize = 72;
/// Printable ASCII, space to `~`.
const RING: usize = 95;
/// Bytes of one line, CRLF included.
const LINE_BYTES: usize = LINE + 2;

/// One cycle of RFC 864's pattern: 95 lines, after which it repeats.
pub(crate) static CYCLE: [u8; RING * LINE_BYTES] = cycle();

/// How many cycles a chargen connection writes in one turn before it
/// yields to the other connections (about 55 KiB, one read buffer's
/// worth, like an echo's turn).
pub(crate) const CYCLES_PER_TURN: usize = 8;

/// The most a UDP answer holds (RFC 864: "between 0 and 512").
pub(crate) const MAX_DATAGRAM: usize = 512;

const fn cycle() -> [u8; RING * LINE_BYTES] {
    let mut out = [0u8; RING * LINE_BYTES];
    let mut line = 0;
    while line < RING {
        let mut col = 0;
        while col < LINE {
            out[line * LINE_BYTES + col] = b' ' + ((line + col) % RING) as u8;
            col += 1;
        }
        out[line * LINE_BYTES + LINE] = b'\r';
        out[line * LINE_BYTES + LINE + 1] = b'\n';
        line += 1;
    }
    out
}

/// A UDP answer, written to `out` (cleared first): `len` bytes of the
/// pattern starting at line `line` (both taken modulo their ranges).
pub(crate) fn datagram_into(out: &mut String, line: usize, len: usize) {
    out.clear();
    let start = (line % RING) * LINE_BYTES;
    let len = len % (MAX_DATAGRAM + 1);
    // The pattern is ASCII: every byte is a char.
    out.extend(
        CYCLE[start..]
            .iter()
            .chain(CYCLE.iter())
            .take(len)
            .map(|&b| b as char),
    );
}

/// A UDP answer of a random length at a random line (std's per-process
/// random hash keys, drawn anew for each answer: no generator to keep).
pub(crate) fn random_datagram(out: &mut String) {
    let draw = std::collections::hash_map::RandomState::new().hash_one(0u8);
    datagram_into(out, (draw >> 32) as usize, draw as usize);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfcs_first_lines() {
        let text = std::str::from_utf8(&CYCLE).expect("ascii");
        let mut lines = text.split("\r\n");
        assert_eq!(
            lines.next(),
            Some(r##" !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefg"##)
        );
        assert_eq!(
            lines.next(),
            Some(r##"!"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefgh"##)
        );
        let last = text.split("\r\n").nth(94).expect("95 lines");
        assert!(last.starts_with("~ !\"#"), "{last}");
        assert_eq!(text.split("\r\n").count(), 96, "95 lines and an empty tail");
    }

    #[test]
    fn cycles_join_seamlessly() {
        // Line 95 would be line 0 again: a stream of whole cycles is the
        // pattern with no seam.
        let first_char = |line: usize| CYCLE[(line % RING) * LINE_BYTES];
        for line in 0..RING {
            assert_eq!(first_char(line + 1), b' ' + ((line + 1) % RING) as u8);
        }
        assert!(
            CYCLE
                .iter()
                .all(|&b| (32..127).contains(&b) || b == b'\r' || b == b'\n')
        );
    }

    #[test]
    fn datagrams_are_cut_from_the_pattern_and_bounded() {
        let mut out = String::new();
        datagram_into(&mut out, 0, 10);
        assert_eq!(out, " !\"#$%&'()");
        datagram_into(&mut out, 94, 80);
        assert!(out.starts_with("~ !"), "{out}");
        assert_eq!(&out[74..], " !\"#$%", "wraps to the cycle's start");
        datagram_into(&mut out, 3, 0);
        assert!(out.is_empty());
        datagram_into(&mut out, 3, MAX_DATAGRAM);
        assert_eq!(out.len(), MAX_DATAGRAM);
        for _ in 0..200 {
            random_datagram(&mut out);
            assert!(out.len() <= MAX_DATAGRAM);
            assert!(
                out.bytes()
                    .all(|b| (32..127).contains(&b) || b == b'\r' || b == b'\n')
            );
        }
    }
}
