//! The bytes every connection sends, and how echoes are checked against them.
//!
//! Each connection's stream is an endless deterministic byte sequence: byte
//! `i` of connection `c` is `TABLE[(start(c) + i) % PERIOD]`. One read-only
//! table, built once, serves every connection and thread, which gives the
//! client its two cheap paths:
//!
//! * sending copies nothing: a write takes a slice of the table directly;
//! * checking is one `memcmp` of the received bytes against a table slice.
//!
//! The table is `period + MAX_SPAN` bytes long, its first `MAX_SPAN` bytes
//! repeated at the end, so any span of up to `MAX_SPAN` bytes starting at any
//! offset below the period is contiguous: no wrap-around case in the hot path.
//!
//! A raw echo's table is a cycle of [`PERIOD`] bytes. The server's line and
//! frame modes need messages with a shape (a line ends in LF, a frame
//! starts with its length), so their table is a cycle of whole messages
//! ([`Pattern::of_messages`], built by [`crate::protocol`]) and every
//! connection starts on a message boundary; the same spans and `memcmp`s
//! serve them.

/// Length of one cycle of the pattern. A prime, so that no power-of-two
/// message size or buffer size lines up with the cycle: data echoed at the
/// wrong stream offset (duplicated, dropped or reordered bytes) or sent by
/// the wrong connection differs from what was expected.
pub const PERIOD: usize = 65_521;

/// The longest span one send or one check may cover. Writes and reads are
/// cut to this size; it is also the size of each thread's read buffer.
pub const MAX_SPAN: usize = 256 * 1024;

/// Distance between the starting offsets of consecutive connections: a
/// prime that is not a factor of [`PERIOD`], so the first `PERIOD`
/// connections all start at different offsets.
const START_STRIDE: usize = 7_919;

/// The shared pattern table. Cheap to share by reference across threads.
pub struct Pattern {
    table: Box<[u8]>,
    /// Length of one cycle: [`PERIOD`], or a whole number of messages.
    period: usize,
    /// Length of one message of a cycle of messages; 1 for a raw stream
    /// (any offset is a start).
    unit: usize,
}

impl std::fmt::Debug for Pattern {
    /// The table's size only: its quarter megabyte of bytes says nothing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pattern")
            .field("table_len", &self.table.len())
            .field("unit", &self.unit)
            .finish()
    }
}

impl Default for Pattern {
    fn default() -> Self {
        Self::new()
    }
}

impl Pattern {
    /// Builds the table (xorshift bytes: every value 0..=255 appears,
    /// NUL and 0xFF included, so no byte is special to a careless server).
    pub fn new() -> Pattern {
        let mut table = Vec::with_capacity(PERIOD + MAX_SPAN);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..PERIOD {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            table.push((x >> 24) as u8);
        }
        Pattern::cycle(table, 1)
    }

    /// A cycle of whole messages, all of the same length, one after the
    /// other. Connections start on a message boundary ([`Pattern::start`]),
    /// so a connection's stream is these messages, from one of them on.
    pub fn of_messages(messages: &[Vec<u8>]) -> Pattern {
        let unit = messages.first().map_or(1, Vec::len).max(1);
        debug_assert!(messages.iter().all(|m| m.len() == unit));
        Pattern::cycle(messages.concat(), unit)
    }

    /// `bytes` as one cycle, with the first `MAX_SPAN` bytes of the
    /// cycle (repeated as often as needed) after it.
    fn cycle(mut table: Vec<u8>, unit: usize) -> Pattern {
        let period = table.len();
        table.reserve(MAX_SPAN);
        for i in 0..MAX_SPAN {
            table.push(table[i % period]);
        }
        Pattern {
            table: table.into_boxed_slice(),
            period,
            unit,
        }
    }

    /// Where connection `id` starts in this pattern's cycle: as
    /// [`Pattern::start_of`] for a raw stream; at the start of one of the
    /// messages otherwise, neighbours on different ones.
    pub fn start(&self, id: usize) -> usize {
        if self.unit == 1 {
            return Pattern::start_of(id);
        }
        let messages = self.period / self.unit;
        let stride = (START_STRIDE % messages).max(1);
        (id % messages) * stride % messages * self.unit
    }

    /// Where connection `id` (numbered across all threads) starts in the cycle.
    pub fn start_of(id: usize) -> usize {
        (id % PERIOD) * START_STRIDE % PERIOD
    }

    /// `len` bytes of the stream that starts at `start`, from stream offset
    /// `offset`. `len` must be at most [`MAX_SPAN`]; callers cut their
    /// writes to it.
    #[inline]
    pub fn slice(&self, start: usize, offset: u64, len: usize) -> &[u8] {
        debug_assert!(len <= MAX_SPAN);
        let at = ((start as u64 + offset) % self.period as u64) as usize;
        &self.table[at..at + len]
    }

    /// Checks `got` against the stream starting at `start`, from stream
    /// offset `offset`. Returns the index of the first wrong byte, if any.
    /// The common case is one `memcmp`; the byte-by-byte search runs only
    /// once a mismatch is known.
    #[inline]
    pub fn check(&self, start: usize, offset: u64, got: &[u8]) -> Option<usize> {
        let want = self.slice(start, offset, got.len());
        if want == got {
            return None;
        }
        want.iter().zip(got).position(|(a, b)| a != b)
    }

    /// How many bytes of `got` are the expected ones (compared like
    /// [`Pattern::check`]). Tells a corrupted echo, nearly all of whose
    /// bytes are right, from an answer that is no echo at all, of whose
    /// bytes about 1 in 256 happen to be.
    pub fn agreeing(&self, start: usize, offset: u64, got: &[u8]) -> usize {
        let want = self.slice(start, offset, got.len());
        want.iter().zip(got).filter(|(a, b)| a == b).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_through_the_cycle_boundary() {
        let p = Pattern::new();
        let s = p.slice(0, (PERIOD - 3) as u64, 6);
        assert_eq!(&s[3..], p.slice(0, 0, 3));
    }

    #[test]
    fn a_flipped_byte_is_found_at_its_index() {
        let p = Pattern::new();
        let mut got = p.slice(Pattern::start_of(5), 1000, 64).to_vec();
        assert_eq!(p.check(Pattern::start_of(5), 1000, &got), None);
        got[17] ^= 0x01;
        assert_eq!(p.check(Pattern::start_of(5), 1000, &got), Some(17));
    }

    #[test]
    fn a_corrupted_echo_agrees_mostly_and_text_hardly() {
        let p = Pattern::new();
        let start = Pattern::start_of(3);
        let mut got = p.slice(start, 0, 64).to_vec();
        got[0] ^= 0x01;
        assert_eq!(p.agreeing(start, 0, &got), 63);
        let text = b"ERR too many connections\n";
        assert!(p.agreeing(start, 0, text) < 3);
    }

    #[test]
    fn neighbouring_connections_differ() {
        let p = Pattern::new();
        let a = p.slice(Pattern::start_of(0), 0, 64);
        assert!(p.check(Pattern::start_of(1), 0, a).is_some());
    }

    #[test]
    fn every_byte_value_appears() {
        let p = Pattern::new();
        let mut seen = [false; 256];
        for &b in p.slice(0, 0, 4096) {
            seen[b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
