//! Rules 3 and 4 as the poller sees them: the interest a connection's
//! state calls for, registered only when it changes (one `epoll_ctl`,
//! never per message), and none at all while it wants nothing.

use std::io;

use super::{Connection, Phase, Stream};
use crate::poller::{Interest, Poller, Token};

impl<S: Stream> Connection<S> {
    /// Removes the socket from the poller before the connection is dropped.
    pub(crate) fn deregister<P: Poller>(&mut self, poller: &mut P) {
        // Closing the descriptor would also remove it from epoll, but the
        // poll and select backends keep their own tables, which would go on
        // watching the number (and whatever socket reuses it next). An
        // error here changes nothing: the socket closes next.
        if self.interest.is_some() {
            let _ = poller.deregister(self.stream.as_raw_fd());
        }
    }

    /// The interest the current state calls for (rules 3 and 4).
    pub(super) fn wanted_interest(&self) -> Option<Interest> {
        // While passed-through input waits for room in the socket
        // (`write_blocked`), reading waits too.
        let read = matches!(self.phase, Phase::Open | Phase::Lingering)
            && !self.starved
            && !self.write_blocked;
        let write = !self.out.is_empty() || self.write_blocked;
        match (read, write) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            // Only reachable on the way to being closed.
            (false, false) => None,
        }
    }

    /// Re-registers only when the wanted interest differs from the
    /// registered one: no `epoll_ctl` on the per-message path.
    #[inline(always)]
    pub(super) fn sync_interest<P: Poller>(
        &mut self,
        token: Token,
        poller: &mut P,
    ) -> io::Result<()> {
        let want = self.wanted_interest();
        if want == self.interest {
            return Ok(());
        }
        self.change_interest(want, token, poller)
    }

    /// The rare path of [`Connection::sync_interest`]: one `epoll_ctl`.
    #[cold]
    fn change_interest<P: Poller>(
        &mut self,
        want: Option<Interest>,
        token: Token,
        poller: &mut P,
    ) -> io::Result<()> {
        let fd = self.stream.as_raw_fd();
        match (self.interest, want) {
            (Some(_), Some(want)) => poller.reregister(fd, token, want)?,
            (None, Some(want)) => poller.register(fd, token, want)?,
            (Some(_), None) => {
                // Closing, or parked with nothing to send.
                if matches!(self.phase, Phase::Closing | Phase::Draining) {
                    return Ok(());
                }
                poller.deregister(fd)?
            }
            (None, None) => {}
        }
        self.interest = want;
        Ok(())
    }
}
