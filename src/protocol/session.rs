//! A connection's incomplete message and its [`Protocol::Session`]: where
//! they live between reads, and how a driver call reaches them.
//!
//! # Created once, stored in the connection
//!
//! A session with a size is created once per connection, the first time
//! the connection meets its protocol (its open hook, right after it is
//! accepted), stored behind the connection's [`Partial`] pointer, lent
//! *in place* to every call after that (no copy, no allocation per read),
//! and dropped once, with the connection. A zero-sized session (line and
//! frame modes') has no state to keep: it is not stored, and each call is
//! lent a fresh value, which costs nothing.
//!
//! # Per-connection state costs nothing when there is none
//!
//! A [`Partial`] is a pointer that is null (8 bytes in the connection, no
//! heap) in raw mode, and whenever the input so far ended on a message
//! boundary and the protocol keeps no session, which is the common case
//! for request/reply clients. Only a message split across reads, or a
//! session, allocates, once: a read at a message boundary allocates
//! nothing.

use std::any::Any;

use super::Protocol;

/// The incomplete message and the session of one connection; empty (a
/// null pointer) while there is neither.
///
/// Boxing costs one allocation while a message is split or a session
/// lives, and keeps this field at 8 bytes in every connection: that is
/// what keeps `Connection` within 64 bytes.
#[derive(Debug, Default)]
pub(crate) struct Partial(Option<Box<Held>>);

/// What a [`Partial`] points to.
#[derive(Default)]
struct Held {
    split: Split,
    /// The connection's [`Protocol::Session`], if it has a size.
    session: Option<Box<dyn Any + Send>>,
}

/// A message split across reads.
#[derive(Debug, Default)]
pub(super) struct Split {
    /// The split message's bytes so far; empty between messages.
    pub(super) bytes: Vec<u8>,
    /// [`Protocol::reservation`] for `bytes` (0 when empty).
    pub(super) reserved: usize,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("bytes", &self.split.bytes.len())
            .field("reserved", &self.split.reserved)
            .field("session", &self.session.is_some())
            .finish()
    }
}

impl Partial {
    /// No held bytes and no allocation.
    pub(crate) const fn new() -> Self {
        Partial(None)
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether a session is stored (tests of "created once").
    #[cfg(test)]
    pub(crate) fn has_session(&self) -> bool {
        self.0.as_ref().is_some_and(|held| held.session.is_some())
    }

    /// Whether no message is split (a session may still live).
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// The bytes held (empty when none are).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_ref().map_or(&[], |held| &held.split.bytes)
    }

    /// What the memory budget counts for this message: the heap bytes it
    /// holds, or what it may still grow to with its answer, whichever is
    /// larger (see [`Protocol::reservation`]).
    #[inline]
    pub(crate) fn charge(&self) -> usize {
        self.0.as_ref().map_or(0, |held| {
            let split = &held.split;
            split.bytes.capacity().max(split.reserved)
        })
    }

    /// Gives back the part of a split message's charge that it does not
    /// hold, when it holds less than half of it (a frame header that
    /// declared 1 MiB and brought nothing more): the loop does so for a
    /// message stalled while others wait for room (`reactor/memory.rs`).
    /// Its next read charges it whole again, as a new message would be
    /// (which the read's allowance has room for), and until the budget
    /// has that room it waits in the kernel. True if it gave any back.
    pub(crate) fn release_unfilled(&mut self) -> bool {
        match self.0.as_mut().map(|held| &mut held.split) {
            Some(split)
                if !split.bytes.is_empty() && split.bytes.capacity() < split.reserved / 2 =>
            {
                split.reserved = 0;
                true
            }
            _ => false,
        }
    }

    /// Whether the split message gave its reservation back
    /// ([`Partial::release_unfilled`]) and has not won it back yet.
    #[inline]
    pub(crate) fn is_released(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|held| !held.split.bytes.is_empty() && held.split.reserved == 0)
    }

    /// Drops the split message, if any (a session stays).
    pub(crate) fn clear(&mut self) {
        if let Some(held) = self.0.as_mut() {
            held.split = Split::default();
            if held.session.is_none() {
                self.0 = None;
            }
        }
    }
}

/// Runs `f` with the connection's split message and session, in place:
/// the session stored in `partial` (created on first use, which is the
/// connection's open hook), or for a zero-sized one a fresh value, which
/// allocates nothing. No allocation unless a split message or a session
/// is kept for the first time; whatever is left empty is freed.
pub(super) fn with_session<T: Protocol, R>(
    protocol: &mut T,
    partial: &mut Partial,
    f: impl FnOnce(&mut T, &mut Split, &mut T::Session) -> R,
) -> R {
    if size_of::<T::Session>() == 0 {
        return match partial.0.as_deref_mut() {
            Some(held) => {
                let result = f(protocol, &mut held.split, &mut T::Session::default());
                if held.split.bytes.is_empty() && held.session.is_none() {
                    partial.0 = None;
                }
                result
            }
            None => {
                // The common case of line and frame modes: nothing held,
                // nothing allocated unless a tail is left.
                let mut split = Split::default();
                let result = f(protocol, &mut split, &mut T::Session::default());
                if !split.bytes.is_empty() {
                    partial.0 = Some(Box::new(Held {
                        split,
                        session: None,
                    }));
                }
                result
            }
        };
    }
    let held = partial.0.get_or_insert_with(Box::default);
    let Held { split, session } = &mut **held;
    let stored = session.get_or_insert_with(|| Box::new(T::Session::default()));
    if !stored.is::<T::Session>() {
        // A session of another protocol cannot happen: one connection
        // speaks one protocol. Start afresh rather than panic.
        *stored = Box::new(T::Session::default());
    }
    match stored.downcast_mut::<T::Session>() {
        Some(session) => f(protocol, split, session),
        None => f(protocol, split, &mut T::Session::default()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::protocol::{
        Link, Mailbox, Refusal, Status, Verdict, close, feed_within, open, tests_id,
    };

    static CREATED: AtomicUsize = AtomicUsize::new(0);
    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    /// A session that counts its creations and drops.
    struct Counted(u64);

    impl Default for Counted {
        fn default() -> Counted {
            CREATED.fetch_add(1, Ordering::SeqCst);
            Counted(0)
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Answers each line with where its session lives and how many lines
    /// it has seen.
    struct Where;

    impl Protocol for Where {
        type Session = Counted;

        fn decode(&self, buf: &[u8], _: usize) -> Result<Status, Refusal> {
            Ok(buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(Status::Partial, |i| Status::Complete(i + 1)))
        }

        fn answer(&mut self, session: &mut Counted, _: &[u8], out: &mut Vec<u8>) -> Verdict {
            session.0 += 1;
            let at = session as *const Counted as usize;
            out.extend_from_slice(format!("{at} {}\n", session.0).as_bytes());
            Verdict::Continue
        }

        fn max_message(&self) -> usize {
            100
        }

        fn max_answer(&self) -> usize {
            64
        }
    }

    #[test]
    fn a_session_is_created_once_lent_in_place_and_dropped_once() {
        let (mut protocol, mut partial, mut mail) = (Where, Partial::new(), Mailbox::default());
        let mut link = Link::new(tests_id(), &mut mail);
        let mut out = Vec::new();
        assert!(!open(&mut protocol, &mut partial, &mut out, &mut link).overrun);
        assert!(partial.has_session(), "created when the connection opens");
        // Five lines over four reads, one of them split.
        for read in [&b"a\nb"[..], b"\n", b"c\nd\n", b"e\n"] {
            let answered =
                feed_within(&mut protocol, &mut partial, read, &mut out, &mut link, 1000);
            assert_eq!(answered.verdict, Verdict::Continue);
        }
        let text = String::from_utf8(out).expect("text");
        let lines: Vec<(&str, &str)> = text
            .lines()
            .map(|l| l.split_once(' ').expect("two words"))
            .collect();
        let counts: Vec<&str> = lines.iter().map(|l| l.1).collect();
        assert_eq!(counts, ["1", "2", "3", "4", "5"], "one session throughout");
        assert!(
            lines.iter().all(|l| l.0 == lines[0].0),
            "lent in place, never moved: {lines:?}"
        );
        let created = CREATED.load(Ordering::SeqCst);
        assert_eq!(created, 1, "created once");
        assert_eq!(
            DROPPED.load(Ordering::SeqCst),
            0,
            "never dropped while open"
        );
        assert!(!close(&mut protocol, &mut partial, &mut link));
        assert_eq!(DROPPED.load(Ordering::SeqCst), 1, "dropped once, at close");
        assert!(partial.0.is_none(), "nothing left behind");
    }

    #[test]
    fn a_read_at_a_message_boundary_leaves_no_allocation_without_a_session() {
        let mut line = crate::protocol::Line::default();
        let mut partial = Partial::new();
        let mut mail = Mailbox::default();
        let mut link = Link::new(tests_id(), &mut mail);
        let mut out = Vec::new();
        feed_within(
            &mut line,
            &mut partial,
            b"hi\n",
            &mut out,
            &mut link,
            1 << 20,
        );
        assert!(partial.0.is_none());
        feed_within(
            &mut line,
            &mut partial,
            b"half",
            &mut out,
            &mut link,
            1 << 20,
        );
        assert_eq!(partial.len(), 4);
        feed_within(&mut line, &mut partial, b"\n", &mut out, &mut link, 1 << 20);
        assert!(partial.0.is_none(), "freed once the message is whole");
    }
}
