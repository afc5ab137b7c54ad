//! `--max-buffered`: one budget for every byte the server holds on behalf
//! of its clients.
//!
//! Per connection the readiness rules already bound what one client can
//! make the server hold (rule 4's watermarks, `--max-line`, `--max-frame`);
//! across connections nothing did: 2,000 clients that push and never read
//! grew the server by 224 MB, and the default connection limit allowed
//! ~2.2 GB. The budget bounds the sum. It counts the heap bytes of every
//! connection's pending output ([`OutBuf`](crate::outbuf::OutBuf)) and
//! partial message ([`Partial`](crate::protocol::Partial)), by capacity,
//! since capacity is what the allocator hands out.
//!
//! # Accounted before held
//!
//! A measurement after the fact is already broken, so the budget is
//! consulted *before* a read: a read can make a connection hold at most
//! what it read, times its protocol's amplification (line mode's `hello `
//! turns an empty line of 1 byte into 7), plus a small constant for an
//! error line. [`Budget::read_allowance`] says how large a read may be so
//! that this worst case still fits; the connection reads no more, and
//! settles the exact change afterwards ([`Budget::settle`]). The loop is
//! single-threaded, so nothing can take the room between the two.
//!
//! # Near and at the limit (graduated, like Envoy's overload manager)
//!
//! - Below half: nothing changes.
//! - From half on ([`Budget::under_pressure`]): a connection that already
//!   holds output pauses at a low watermark and reads in small pieces, so
//!   the clients that hold memory stop adding to it first.
//! - When a normal read no longer fits: no connection reads more than it
//!   can pass straight on (`connection/mod.rs`, "pass-through"): it *peeks* at
//!   its input, writes what the socket takes, and only then consumes that
//!   many bytes from the kernel. Bytes that cannot be written through stay
//!   in the kernel, where they cost the server nothing and TCP flow control
//!   slows the sender. A protocol's answers are written through the same
//!   way, from a small part of the budget kept back for them
//!   ([`Budget::RESERVE_SHARE`]), and only when the socket's send queue is
//!   empty. New partial messages are not started.
//!
//! No byte that was read is ever dropped: a client that is paused gets
//! every byte, in order, once it reads. Closing connections to free the
//! budget is a policy the operator opts into (`--evict-after`).
//!
//! # Split messages
//!
//! A message split across reads (half a line, most of a frame) is charged
//! what it may still grow to with its answer, not what it holds so far
//! ([`Protocol::reservation`](crate::protocol::Protocol::reservation)): a
//! frame its declared size, a line `--max-line` and a little. So every
//! message the budget let in can be finished with no more room: when the
//! rest of it arrives and the budget is full, the connection peeks and
//! reads exactly the bytes that belong to it (`connection/mod.rs`,
//! `finish_message`), and its answer takes the place the reservation
//! kept. Charging only what had arrived would let clients that each send
//! most of a message fill the budget with halves that can never complete:
//! completing one needs room that only a completed one would free.
//!
//! For that charge to fit, a read that may *start* a split message needs
//! room for one more reservation besides its own worst case
//! ([`Budget::read_allowance`]); when there is none, no new message is
//! started (pass-through takes whole messages only), and the client's
//! bytes wait in the kernel.

/// The default `--max-buffered`: small enough for a small machine, large
/// enough that well-behaved clients never notice it.
pub const DEFAULT_MAX_BUFFERED: usize = 64 * 1024 * 1024;

/// The smallest `--max-buffered` accepted: room for a few full reads.
pub const MIN_MAX_BUFFERED: usize = 1024 * 1024;

/// The smallest read worth waking a parked connection for.
const USEFUL_READ: usize = 4096;

/// Bytes a read may add beyond its amplified size: an error line
/// (`ERR line too long`), a terminator.
const SLACK: usize = 64;

/// What a read may cause, as a protocol declares it (see
/// [`Budget::profile`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Profile {
    amplification: usize,
    split: usize,
    calm_below: usize,
}

/// The bytes held for clients, against the limit.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    /// The limit less the reserve: what ordinary reads may fill.
    general: usize,
    /// Below this much held, a full read of the largest size fits and the
    /// budget is under no pressure: the one comparison of the common case.
    calm_below: usize,
    /// The amplification of the server's protocol (see
    /// [`Budget::read_allowance`]).
    amplification: usize,
    /// The largest charge of one split message (see "Split messages").
    split: usize,
    used: usize,
    peak: usize,
    /// Reads that found no room and fell back to pass-through or waiting.
    full: u64,
}

impl Budget {
    /// The share of the budget (1 / this) kept back for protocol answers
    /// written through while the rest is full.
    pub(crate) const RESERVE_SHARE: usize = 16;

    /// A budget of `limit` bytes (at least [`MIN_MAX_BUFFERED`]) for
    /// reads of at most `max_read` bytes that may each hold up to
    /// `amplification` times their size, and may start a split message
    /// charged up to `split` bytes.
    pub(crate) fn new(limit: usize, max_read: usize, amplification: usize, split: usize) -> Budget {
        let limit = limit.max(MIN_MAX_BUFFERED);
        let general = limit - limit / Self::RESERVE_SHARE;
        let mut budget = Budget {
            limit,
            general,
            calm_below: 0,
            amplification,
            split,
            used: 0,
            peak: 0,
            full: 0,
        };
        budget.swap_profile(budget.profile(max_read, amplification, split));
        budget
    }

    /// How reads of at most `max_read` bytes, each holding up to
    /// `amplification` times their size and starting a split message of
    /// up to `split`, are judged against this budget: what [`Budget::new`]
    /// sets for the server's protocol. Connections of another protocol
    /// (`--metrics`'s HTTP) are driven under their own profile
    /// ([`Budget::swap_profile`]), so that their worst case is counted as
    /// theirs.
    pub(crate) fn profile(&self, max_read: usize, amplification: usize, split: usize) -> Profile {
        let full_read = SLACK + max_read.saturating_mul(amplification) + split;
        Profile {
            amplification,
            split,
            calm_below: self.general.saturating_sub(full_read).min(self.limit / 2),
        }
    }

    /// Judges reads by `profile` from now on; returns the one it replaces.
    pub(crate) fn swap_profile(&mut self, profile: Profile) -> Profile {
        let old = Profile {
            amplification: self.amplification,
            split: self.split,
            calm_below: self.calm_below,
        };
        self.amplification = profile.amplification;
        self.split = profile.split;
        self.calm_below = profile.calm_below;
        old
    }

    /// The limit, `--max-buffered`.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// The most bytes ever held at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    /// How many reads found the budget full.
    pub(crate) fn times_full(&self) -> u64 {
        self.full
    }

    /// Whether a read of the largest size fits, with no pressure: the
    /// common case, in one comparison.
    #[inline]
    pub(crate) fn is_calm(&self) -> bool {
        self.used < self.calm_below
    }

    /// Whether three quarters of the budget or more are held: full enough
    /// for `--evict-after` to start (a budget whose holders are all paused
    /// settles short of the very last byte).
    pub(crate) fn is_nearly_full(&self) -> bool {
        self.used >= self.limit / 4 * 3
    }

    /// Whether at least half the budget is held.
    #[inline]
    pub(crate) fn under_pressure(&self) -> bool {
        self.used >= self.limit / 2
    }

    /// Whether no useful read fits: less room than [`USEFUL_READ`] bytes
    /// of input would need. Parked connections are let go only past this,
    /// so that a few bytes of room do not wake them all for nothing.
    pub(crate) fn is_full(&self) -> bool {
        self.read_allowance(USEFUL_READ) < USEFUL_READ
    }

    /// The largest read (at most `want`) whose worst case fits in the
    /// room left outside the reserve: the protocol's amplification times
    /// its size, plus a constant, plus one split message it may start
    /// (see "Split messages"); 0 when none does (the caller passes
    /// through or finishes a message, and the refusal is counted by
    /// [`Budget::note_full`]).
    #[inline]
    pub(crate) fn read_allowance(&self, want: usize) -> usize {
        let amplification = self.amplification;
        // The common case, far from the limit, in a few instructions (no
        // overflow: a read is at most the loop's 64 KiB buffer, the
        // amplification a small constant, a split message at most a
        // quarter of the limit).
        if self.used + SLACK + self.split + want * amplification <= self.general {
            return want;
        }
        self.allowance_near_the_limit(want, amplification)
    }

    #[cold]
    fn allowance_near_the_limit(&self, want: usize, amplification: usize) -> usize {
        let room = self.general.saturating_sub(self.used + SLACK + self.split);
        want.min(room / amplification.max(1))
    }

    /// The most one read of `read` bytes may make a connection hold, as
    /// [`Budget::read_allowance`] made room for it: amplified, a slack,
    /// and one split message. A protocol's answers are held to it
    /// (`protocol/mod.rs`, "Sizes are enforced").
    pub(crate) fn worst_case(&self, read: usize) -> usize {
        SLACK + self.split + read.saturating_mul(self.amplification)
    }

    /// Whether `bytes` more fit in the whole budget, reserve included (for
    /// answers written through, and greetings).
    pub(crate) fn fits(&self, bytes: usize) -> bool {
        self.used + bytes <= self.limit
    }

    /// Counts a read that found no room.
    pub(crate) fn note_full(&mut self) {
        self.full += 1;
    }

    /// Records that a connection's held bytes went from `before` to
    /// `after`.
    #[inline]
    pub(crate) fn settle(&mut self, before: usize, after: usize) {
        if after >= before {
            self.used += after - before;
            self.peak = self.peak.max(self.used);
        } else {
            self.used -= before - after;
        }
        debug_assert!(self.used <= self.limit, "{} over {}", self.used, self.limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reads_worst_case_is_exactly_the_room_read_allowance_wants_for_it() {
        // Amplified, one split message, the slack: what a protocol's
        // answers to one read are held to.
        let mut b = Budget::new(MIN_MAX_BUFFERED, 65_536, 3, 1000);
        assert_eq!(b.worst_case(0), SLACK + 1000);
        assert_eq!(b.worst_case(100), SLACK + 1000 + 300);
        let general = MIN_MAX_BUFFERED - MIN_MAX_BUFFERED / Budget::RESERVE_SHARE;
        b.settle(0, general - b.worst_case(100));
        assert_eq!(
            b.read_allowance(100),
            100,
            "room for exactly its worst case"
        );
        b.settle(0, 1);
        assert!(
            b.read_allowance(100) < 100,
            "a byte short of its worst case"
        );
    }

    #[test]
    fn a_read_is_cut_to_what_its_worst_case_leaves_room_for() {
        let mut b = Budget::new(MIN_MAX_BUFFERED, 65_536, 1, 0);
        assert!(b.is_calm());
        let general = MIN_MAX_BUFFERED - MIN_MAX_BUFFERED / Budget::RESERVE_SHARE;
        assert_eq!(b.read_allowance(65_536), 65_536);
        b.settle(0, general - SLACK - 1000);
        assert_eq!(b.read_allowance(65_536), 1000);
        let mut hello = Budget::new(MIN_MAX_BUFFERED, 65_536, 7, 0);
        hello.settle(0, b.used());
        assert_eq!(hello.read_allowance(65_536), 142);
        assert!(b.is_full(), "1000 bytes of room is not a useful read");
        b.settle(0, 1000);
        assert_eq!(b.read_allowance(65_536), 0);
        assert!(b.is_full());
        assert!(b.fits(MIN_MAX_BUFFERED / Budget::RESERVE_SHARE));
        assert!(!b.fits(MIN_MAX_BUFFERED / Budget::RESERVE_SHARE + SLACK + 1));
    }

    #[test]
    fn settling_tracks_use_and_peak() {
        let mut b = Budget::new(0, 65_536, 7, 0);
        assert!(!b.under_pressure());
        b.settle(0, MIN_MAX_BUFFERED / 2);
        assert!(b.under_pressure());
        b.settle(MIN_MAX_BUFFERED / 2, 10);
        assert_eq!(b.used(), 10);
        assert_eq!(b.peak(), MIN_MAX_BUFFERED / 2);
    }

    #[test]
    fn a_read_that_may_start_a_split_message_needs_room_for_its_charge() {
        let split = 100_000;
        let mut b = Budget::new(MIN_MAX_BUFFERED, 65_536, 1, split);
        let general = MIN_MAX_BUFFERED - MIN_MAX_BUFFERED / Budget::RESERVE_SHARE;
        b.settle(0, general - SLACK - split - 1000);
        assert!(!b.is_calm());
        assert_eq!(b.read_allowance(65_536), 1000);
        b.settle(0, 1000);
        assert_eq!(
            b.read_allowance(65_536),
            0,
            "no room for one more split message"
        );
        assert!(b.is_full());
    }

    #[test]
    fn nearly_full_is_three_quarters_and_no_less() {
        // `--evict-after` starts here: an honest slow reader below three
        // quarters must be left alone.
        let limit = 4 * MIN_MAX_BUFFERED;
        let mut b = Budget::new(limit, 65_536, 1, 0);
        assert!(!b.is_nearly_full(), "an empty budget");
        b.settle(0, limit / 4 * 3 - 1);
        assert!(!b.is_nearly_full(), "a byte short of three quarters");
        b.settle(0, 1);
        assert!(b.is_nearly_full(), "three quarters");
    }

    #[test]
    fn every_read_that_found_no_room_is_counted() {
        let mut b = Budget::new(MIN_MAX_BUFFERED, 65_536, 1, 0);
        assert_eq!(b.times_full(), 0);
        for _ in 0..3 {
            b.note_full();
        }
        assert_eq!(b.times_full(), 3);
    }

    #[test]
    fn calm_ends_where_a_whole_read_and_its_charges_no_longer_fit() {
        // calm_below = general - (SLACK + max_read * amplification + split),
        // at most half the limit.
        let limit = MIN_MAX_BUFFERED;
        let general = limit - limit / Budget::RESERVE_SHARE;
        let (max_read, amplification, split) = (65_536, 7, 100_000);
        let b = Budget::new(limit, max_read, amplification, split);
        let calm_below = general - (SLACK + max_read * amplification + split);
        assert!(calm_below < limit / 2, "the test needs the first bound");
        let profile = b.profile(max_read, amplification, split);
        assert_eq!(profile.calm_below, calm_below);
        let mut b = b;
        b.settle(0, calm_below - 1);
        assert!(b.is_calm(), "a byte below the line");
        b.settle(0, 1);
        assert!(!b.is_calm(), "on the line");
    }

    #[test]
    fn full_is_less_room_than_one_useful_read() {
        let mut b = Budget::new(MIN_MAX_BUFFERED, 65_536, 1, 0);
        assert!(!b.is_full(), "an empty budget");
        let general = MIN_MAX_BUFFERED - MIN_MAX_BUFFERED / Budget::RESERVE_SHARE;
        b.settle(0, general - SLACK - USEFUL_READ);
        assert!(!b.is_full(), "room for one useful read");
        b.settle(0, 1);
        assert!(b.is_full(), "a byte short of it");
    }

    #[test]
    fn the_default_budget_is_the_64_mib_the_docs_promise() {
        // README and docs/memory.md say 64 MiB, and at least 1 MiB.
        assert_eq!(DEFAULT_MAX_BUFFERED, 67_108_864);
        assert_eq!(MIN_MAX_BUFFERED, 1_048_576);
    }

    #[test]
    fn the_quick_answer_near_the_limit_is_the_careful_one() {
        // `read_allowance` answers the common case in one comparison; a
        // byte either side of where a read stops fitting, it must agree
        // with the careful computation.
        let general = MIN_MAX_BUFFERED - MIN_MAX_BUFFERED / Budget::RESERVE_SHARE;
        let b = Budget::new(MIN_MAX_BUFFERED, 65_536, 1, 0);
        let fits = general - SLACK;
        assert_eq!(b.read_allowance(fits), fits, "nothing held, fits exactly");
        assert_eq!(b.read_allowance(fits + 1), fits, "a byte too many");
        let mut split = Budget::new(MIN_MAX_BUFFERED, 65_536, 1, 1000);
        assert_eq!(split.read_allowance(fits - 1000), fits - 1000);
        assert_eq!(split.read_allowance(fits - 999), fits - 1000);
        split.settle(0, 1);
        assert_eq!(split.read_allowance(fits - 1000), fits - 1001);
        let mut hello = Budget::new(MIN_MAX_BUFFERED, 65_536, 7, 0);
        hello.settle(0, general - SLACK - 7 * 1000);
        assert_eq!(hello.read_allowance(1000), 1000, "seven times it fits");
        hello.settle(0, 1);
        assert_eq!(hello.read_allowance(1000), 999, "a byte short");
    }
}
