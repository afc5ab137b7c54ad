//! What the loop holds a protocol as: [`Handler`], raw echo or any
//! [`Protocol`] behind one object-safe interface ([`Erased`]), called
//! through one `dyn` call per read, never per byte.

#[cfg(test)]
use super::Verdict;
use super::{Answered, Link, Mode, Partial, Protocol};

/// A [`Protocol`] behind one object-safe interface, so that the loop holds
/// any of them in one [`Handler`] (one `dyn` call per read).
pub(crate) trait Erased: Send {
    fn feed_within(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
        link: &mut Link<'_>,
        limit: usize,
    ) -> Answered;
    fn finish(&mut self, partial: &mut Partial, out: &mut Vec<u8>, limit: usize) -> Answered;
    fn answer_whole(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
        link: &mut Link<'_>,
        max_out: usize,
    ) -> Answered;
    fn open(&mut self, partial: &mut Partial, out: &mut Vec<u8>, link: &mut Link<'_>) -> Answered;
    fn close(&mut self, partial: &mut Partial, link: &mut Link<'_>) -> bool;
    fn still_wanted(&self, partial: &Partial) -> usize;
    fn rest_of_message(&self, partial: &Partial, more: &[u8]) -> usize;
    fn greeting(&self) -> &[u8];
    fn amplification(&self) -> usize;
    fn max_reservation(&self) -> usize;
}

impl<T: Protocol> Erased for T {
    fn feed_within(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
        link: &mut Link<'_>,
        limit: usize,
    ) -> Answered {
        super::feed_within(self, partial, input, out, link, limit)
    }

    fn finish(&mut self, partial: &mut Partial, out: &mut Vec<u8>, limit: usize) -> Answered {
        super::finish(self, partial, out, limit)
    }

    fn answer_whole(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
        link: &mut Link<'_>,
        max_out: usize,
    ) -> Answered {
        super::answer_whole(self, partial, input, out, link, max_out)
    }

    fn open(&mut self, partial: &mut Partial, out: &mut Vec<u8>, link: &mut Link<'_>) -> Answered {
        super::open(self, partial, out, link)
    }

    fn close(&mut self, partial: &mut Partial, link: &mut Link<'_>) -> bool {
        super::close(self, partial, link)
    }

    fn still_wanted(&self, partial: &Partial) -> usize {
        Protocol::still_wanted(self, partial.bytes())
    }

    fn rest_of_message(&self, partial: &Partial, more: &[u8]) -> usize {
        Protocol::rest_of_message(self, partial.bytes(), more)
    }

    fn greeting(&self) -> &[u8] {
        Protocol::greeting(self)
    }

    fn amplification(&self) -> usize {
        Protocol::amplification(self)
    }

    fn max_reservation(&self) -> usize {
        self.reservation(&[])
    }
}

/// What the loop's connections speak: raw echo (no protocol at all), or a
/// protocol.
pub(crate) enum Handler {
    Raw,
    Protocol(Box<dyn Erased>),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Raw => "Raw",
            Handler::Protocol(_) => "Protocol",
        })
    }
}

impl From<Mode> for Handler {
    fn from(mode: Mode) -> Handler {
        match mode {
            Mode::Raw => Handler::Raw,
            Mode::Line(line) => Handler::Protocol(Box::new(line)),
            Mode::Frame(frame) => Handler::Protocol(Box::new(frame)),
        }
    }
}

impl Handler {
    /// The protocol behind this handler; `None` for raw echo.
    fn protocol(&self) -> Option<&dyn Erased> {
        match self {
            Handler::Raw => None,
            Handler::Protocol(p) => Some(p.as_ref()),
        }
    }

    /// [`Handler::protocol`], to feed.
    fn protocol_mut(&mut self) -> Option<&mut dyn Erased> {
        match self {
            Handler::Raw => None,
            Handler::Protocol(p) => Some(p.as_mut()),
        }
    }

    /// At most how many bytes one byte of input can make the connection
    /// hold (the memory budget reserves a read's size times this).
    pub(crate) fn amplification(&self) -> usize {
        self.protocol().map_or(1, |p| p.amplification().max(1))
    }

    /// The largest charge of one split message (0 in raw mode, which never
    /// splits one).
    pub(crate) fn max_reservation(&self) -> usize {
        self.protocol().map_or(0, |p| p.max_reservation())
    }

    /// What a new connection is sent before it says anything.
    pub(crate) fn greeting(&self) -> &[u8] {
        self.protocol().map_or(&[], |p| p.greeting())
    }

    /// [`feed_within`](super::feed_within). Raw mode echoes `input` (the
    /// connection does that itself without calling here; this arm keeps
    /// the function total).
    pub(crate) fn feed_within(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
        link: &mut Link<'_>,
        limit: usize,
    ) -> Answered {
        match self.protocol_mut() {
            Some(p) => p.feed_within(partial, input, out, link, limit),
            None => {
                out.extend_from_slice(input);
                Answered::go_on()
            }
        }
    }

    /// [`finish`](super::finish).
    pub(crate) fn finish(
        &mut self,
        partial: &mut Partial,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Answered {
        match self.protocol_mut() {
            Some(p) => p.finish(partial, out, limit),
            None => {
                partial.clear();
                Answered::go_on()
            }
        }
    }

    /// [`answer_whole`](super::answer_whole) (raw mode: at most `max_out`
    /// bytes of `input`, echoed).
    pub(crate) fn answer_whole(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
        link: &mut Link<'_>,
        max_out: usize,
    ) -> Answered {
        match self.protocol_mut() {
            Some(p) => p.answer_whole(partial, input, out, link, max_out),
            None => {
                let n = input.len().min(max_out.saturating_sub(out.len()));
                out.extend_from_slice(&input[..n]);
                Answered {
                    used: n,
                    held_back: n < input.len(),
                    ..Answered::go_on()
                }
            }
        }
    }

    /// [`open`](super::open): the protocol's open hook (raw mode: none).
    pub(crate) fn open(
        &mut self,
        partial: &mut Partial,
        out: &mut Vec<u8>,
        link: &mut Link<'_>,
    ) -> Answered {
        match self.protocol_mut() {
            Some(p) => p.open(partial, out, link),
            None => Answered::go_on(),
        }
    }

    /// [`close`](super::close): the protocol's close hook (raw mode: none);
    /// true on an overrun.
    pub(crate) fn close(&mut self, partial: &mut Partial, link: &mut Link<'_>) -> bool {
        match self.protocol_mut() {
            Some(p) => p.close(partial, link),
            None => false,
        }
    }

    /// [`Protocol::still_wanted`] for the message `partial` holds.
    pub(crate) fn still_wanted(&self, partial: &Partial) -> usize {
        self.protocol().map_or(0, |p| p.still_wanted(partial))
    }

    /// [`Protocol::rest_of_message`] for the message `partial` holds.
    pub(crate) fn rest_of_message(&self, partial: &Partial, more: &[u8]) -> usize {
        self.protocol()
            .map_or(0, |p| p.rest_of_message(partial, more))
    }

    /// Feeds `input` with no limit and no one else to speak to (tests).
    #[cfg(test)]
    pub(crate) fn feed(
        &mut self,
        partial: &mut Partial,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict {
        let mut mail = super::Mailbox::default();
        let mut link = Link::new(super::tests_id(), &mut mail);
        self.feed_within(partial, input, out, &mut link, usize::MAX)
            .verdict
    }

    /// Finishes with no limit (tests).
    #[cfg(test)]
    pub(crate) fn finish_unlimited(&mut self, partial: &mut Partial, out: &mut Vec<u8>) -> Verdict {
        self.finish(partial, out, usize::MAX).verdict
    }
}
