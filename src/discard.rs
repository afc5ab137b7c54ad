//! The discard service (RFC 863): every byte a client sends is read and
//! thrown away; nothing is ever sent back. Over UDP, no datagram is
//! answered.
//!
//! Over TCP, a discard connection is a connection like any other (the
//! readiness rules, the read budget, the memory budget's read allowance,
//! the idle timeout), speaking [`Swallow`], a protocol whose every read is
//! one whole message with no answer: it holds nothing between reads, so a
//! discard connection costs the budget nothing. Chargen (`chargen.rs`)
//! reads its input the same way.

use crate::protocol::{Protocol, Refusal, Status, Verdict};

/// The protocol of discard and chargen connections: whatever arrived is
/// one message, answered with nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Swallow;

impl Protocol for Swallow {
    type Session = ();

    fn decode(&self, buf: &[u8], _scanned: usize) -> Result<Status, Refusal> {
        Ok(if buf.is_empty() {
            Status::Partial
        } else {
            Status::Complete(buf.len())
        })
    }

    fn answer(&mut self, _session: &mut (), _msg: &[u8], _out: &mut Vec<u8>) -> Verdict {
        Verdict::Continue
    }

    fn at_eof(&mut self, _session: &mut (), _rest: &[u8], _out: &mut Vec<u8>) -> Verdict {
        // Never reached (nothing is ever held), and never an error.
        Verdict::Close
    }

    fn max_message(&self) -> usize {
        // Every read is a whole message, never held: no read can leave
        // more than one byte to decode later.
        1
    }

    fn max_answer(&self) -> usize {
        0
    }

    fn reservation(&self, _held: &[u8]) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Partial, feed};

    #[test]
    fn every_split_is_swallowed_whole_and_nothing_is_held_or_answered() {
        let input: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        for split in [1, 2, 7, 100, 2999, 3000] {
            let mut p = Swallow;
            let mut partial = Partial::new();
            let mut out = Vec::new();
            for chunk in input.chunks(split) {
                assert_eq!(
                    feed(&mut p, &mut partial, chunk, &mut out),
                    Verdict::Continue
                );
                assert!(partial.is_empty(), "split {split}: nothing held");
                assert_eq!(partial.charge(), 0);
            }
            assert!(out.is_empty(), "split {split}: nothing answered");
        }
    }
}
