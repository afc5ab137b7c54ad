//! The turns of connections of other classes than echo (`class.rs`):
//! routed here by their token, so that the echo class's turn
//! (`Reactor::drive`) has no branch for any of them.

use super::class::Class;
use super::{CHARGEN, DISCARD, ECHO, FAULTS, HTTP, Reactor, turn};
use crate::connection::{Connection, Cx, Outcome, Ready};
use crate::poller::Poller;

impl<P: Poller> Reactor<P> {
    /// [`Reactor::drive`] for a connection of another class than echo.
    #[cold]
    #[inline(never)]
    pub(super) fn drive_other(&mut self, class: Class, key: usize, generation: u32, ready: Ready) {
        let f = |conn: &mut Connection, cx: &mut Cx<'_, P>| turn(conn, cx, generation, ready);
        match class {
            Class::Echo => self.with_class::<ECHO>(key, f),
            Class::Http => self.with_class::<HTTP>(key, f),
            Class::Discard => self.with_class::<DISCARD>(key, f),
            Class::Chargen => self.with_class::<CHARGEN>(key, |conn, cx| {
                let outcome = turn(conn, cx, generation, ready)?;
                Some(chargen_pump(conn, outcome, cx))
            }),
            Class::Faults => self.drive_faulty(key, generation, Some(ready)),
        }
    }

    /// A faults-class connection's turn (`connection/faults.rs`), with its
    /// state taken out of the table for it and put back after, unless the
    /// turn closed it (then what it held is given back here).
    /// `ready` is `None` for the start of a graceful shutdown: no new
    /// input, and what waits for its delay still goes out, when due.
    pub(super) fn drive_faulty(&mut self, key: usize, generation: u32, ready: Option<Ready>) {
        if self
            .conns
            .get(key)
            .is_none_or(|c| c.generation() != generation)
        {
            // A stale event or timer: the state at `key` is another's.
            return;
        }
        let Some(mut table) = self.faults.take() else {
            return;
        };
        let mut state = table.take(key);
        self.with_class::<FAULTS>(key, |conn, cx| {
            if conn.generation() != generation {
                return None;
            }
            let Some(ready) = ready else {
                return Some(conn.fault_shutdown(&mut table, &mut state, cx));
            };
            if conn.is_queued() {
                conn.hold(ready);
                return None;
            }
            Some(conn.fault_turn(ready, &mut table, &mut state, cx))
        });
        if self
            .conns
            .get(key)
            .is_some_and(|c| c.generation() == generation)
        {
            table.put(key, state);
        } else {
            self.budget.settle(state.held, 0);
        }
        self.faults = Some(table);
    }
}

/// After a chargen connection's turn (its input read and dropped, what
/// was pending flushed): the pattern, while the socket takes it
/// (`chargen.rs`, `connection/source.rs`).
pub(super) fn chargen_pump<P: Poller>(
    conn: &mut Connection,
    outcome: Outcome,
    cx: &mut Cx<'_, P>,
) -> Outcome {
    conn.pump(
        outcome,
        &crate::chargen::CYCLE,
        crate::chargen::CYCLES_PER_TURN,
        cx,
    )
}
