//! The turn of a faults-class connection (`faults.rs`): the readiness
//! rules of `connection/mod.rs`, with each read kept until it is due
//! (`--delay`) and the echo cut after a byte limit (`--close-after`,
//! `--reset-after`). Only faults-class connections come here: the echo
//! turn is not this function and has no branch for it.
//!
//! The rules hold as for an echo: rule 1 through `read_once`; rule 2, a
//! turn reads once and is queued when input may be left; rule 3 through
//! `send` and `flush`; rule 4 counts what waits for its delay with the
//! pending output: above the high watermark the connection stops reading
//! (phase `Paused`, no read interest), below the low one it reads again.

use std::io;
use std::os::fd::RawFd;

use super::{
    CloseReason, Connection, Cx, HIGH_WATERMARK, Input, LINGER_TIMEOUT, LOW_WATERMARK, Outcome,
    Phase, Ready, Stream, Take,
};
use crate::faults::{Cut, Delayed, FaultState, FaultTable};
use crate::poller::Poller;
use crate::timer::TimerKind;

impl<S: Stream> Connection<S> {
    /// One turn of a faults-class connection, then the interest its new
    /// state calls for.
    pub(crate) fn fault_turn<P: Poller>(
        &mut self,
        ready: Ready,
        table: &mut FaultTable,
        state: &mut FaultState,
        cx: &mut Cx<'_, P>,
    ) -> Outcome {
        match self.fault_io(ready, table, state, cx) {
            Ok(Outcome::Close(reason)) => Outcome::Close(reason),
            Ok(outcome) => match self.sync_interest(cx.token, cx.poller) {
                Ok(()) => outcome,
                Err(e) => Outcome::Close(CloseReason::Error(e)),
            },
            Err(e) => Outcome::Close(CloseReason::Error(e)),
        }
    }

    /// The server's shutdown: no new input; flush, what waits for its
    /// delay when due, then FIN and linger (or, past `--reset-after`, RST).
    pub(crate) fn fault_shutdown<P: Poller>(
        &mut self,
        table: &mut FaultTable,
        state: &mut FaultState,
        cx: &mut Cx<'_, P>,
    ) -> Outcome {
        if matches!(self.phase, Phase::Open | Phase::Paused) {
            // phase: Open|Paused -> Draining (server shutdown)
            self.set_phase(cx.token, Phase::Draining);
        }
        self.fault_turn(Ready::default(), table, state, cx)
    }

    fn fault_io<P: Poller>(
        &mut self,
        ready: Ready,
        table: &mut FaultTable,
        state: &mut FaultState,
        cx: &mut Cx<'_, P>,
    ) -> io::Result<Outcome> {
        self.hold(ready);
        if cx.read_until_would_block {
            self.short_reads_prove_nothing = true;
        }
        if std::mem::take(&mut self.write_hinted) {
            self.write_blocked = false;
            self.flush(cx)?;
        }
        // What is due goes first: it is older than any input.
        while let Some(first) = state.queue.front() {
            if first.due > cx.clock.now || state.cut.is_some() {
                break;
            }
            let chunk = state.queue.pop_front().map(|d| d.bytes).unwrap_or_default();
            cx.budget.settle(state.held, state.held - chunk.len());
            state.held -= chunk.len();
            self.echo_limited(&chunk, table, state, cx)?;
        }
        let mut outcome = Outcome::Keep;
        match self.phase {
            Phase::Open if self.read_ready && !self.write_blocked => {
                outcome = self.fault_read(table, state, cx)?;
            }
            Phase::Lingering => outcome = self.discard_input(cx)?,
            _ => {}
        }
        // Rule 4, counting what waits for its delay.
        let waiting = state.held + self.out.len();
        if self.phase == Phase::Open && waiting > HIGH_WATERMARK {
            cx.stats.backpressure_pauses += 1;
            // phase: Open -> Paused (delayed and pending bytes above the high watermark)
            self.set_phase(cx.token, Phase::Paused);
        } else if self.phase == Phase::Paused && waiting < LOW_WATERMARK {
            // phase: Paused -> Open (delayed and pending bytes below the low watermark)
            self.set_phase(cx.token, Phase::Open);
            self.read_ready = true;
            outcome = Outcome::Requeue;
        }
        if !(self.out.is_empty() && state.queue.is_empty()) {
            return Ok(outcome);
        }
        match (self.phase, state.cut) {
            (Phase::Closing | Phase::Draining, Some(Cut::Reset)) => {
                linger_zero(self.stream.as_raw_fd())?;
                Ok(Outcome::Close(CloseReason::Reset))
            }
            (Phase::Closing, _) => Ok(Outcome::Close(CloseReason::PeerClosed)),
            (Phase::Draining, _) => {
                self.stream.shutdown_write()?;
                // phase: Draining -> Lingering (everything written, our FIN sent)
                self.set_phase(cx.token, Phase::Lingering);
                let at = cx.clock.now + LINGER_TIMEOUT;
                cx.timers.schedule(at, TimerKind::LingerDeadline(cx.token));
                self.read_ready = true;
                self.discard_input(cx)
            }
            _ => Ok(outcome),
        }
    }

    /// One read: echoed at once, or kept until it is due.
    fn fault_read<P: Poller>(
        &mut self,
        table: &mut FaultTable,
        state: &mut FaultState,
        cx: &mut Cx<'_, P>,
    ) -> io::Result<Outcome> {
        let allowed = cx.budget.read_allowance(cx.buf.len());
        if allowed == 0 {
            cx.budget.note_full();
            self.starved = true;
            return Ok(Outcome::Starved { retry: false });
        }
        let n = match self.read_once(&mut cx.buf[..allowed], Take::Read)? {
            Input::Data(n) => n,
            Input::Empty => return Ok(Outcome::Keep),
            Input::Eof => {
                // phase: Open -> Closing (the peer's FIN read)
                self.set_phase(cx.token, Phase::Closing);
                return Ok(Outcome::Keep);
            }
        };
        cx.stats.bytes_in += n as u64;
        self.last_active = cx.clock.stamp;
        if table.faults.delay.is_none() {
            let data = std::mem::take(&mut cx.buf);
            let echoed = self.echo_limited(&data[..n], table, state, cx);
            cx.buf = data;
            echoed?;
        } else {
            let after = state.queue.back().map(|d| d.due);
            let due = table.due(cx.clock.now).max(after.unwrap_or(cx.clock.now));
            cx.budget.settle(state.held, state.held + n);
            state.held += n;
            state.queue.push_back(Delayed {
                due,
                bytes: cx.buf[..n].to_vec(),
            });
            cx.stats.faults_delayed += 1;
            cx.timers.schedule(due, TimerKind::FaultDue(cx.token));
        }
        Ok(if self.read_ready && self.phase == Phase::Open {
            Outcome::Requeue
        } else {
            Outcome::Keep
        })
    }

    /// Echoes `data`, or as much of it as the byte limit leaves; at the
    /// limit, stops reading and starts the cut.
    fn echo_limited<P: Poller>(
        &mut self,
        data: &[u8],
        table: &FaultTable,
        state: &mut FaultState,
        cx: &mut Cx<'_, P>,
    ) -> io::Result<()> {
        let Some((limit, cut)) = table.faults.cut else {
            state.echoed += data.len() as u64;
            return self.send(data, cx.token, cx.stats, cx.budget);
        };
        let room = limit.saturating_sub(state.echoed).min(data.len() as u64) as usize;
        state.echoed += room as u64;
        // Accounted before held: what the socket does not take is kept.
        self.send(&data[..room], cx.token, cx.stats, cx.budget)?;
        if state.echoed >= limit && state.cut.is_none() {
            state.cut = Some(cut);
            match cut {
                Cut::Close => cx.stats.faults_closed += 1,
                Cut::Reset => cx.stats.faults_reset += 1,
            }
            // Nothing past the limit is echoed: what waits is dropped.
            cx.budget.settle(state.held, 0);
            state.held = 0;
            state.queue.clear();
            if matches!(self.phase, Phase::Open | Phase::Paused) {
                // phase: Open|Paused -> Draining (the fault's byte limit reached)
                self.set_phase(cx.token, Phase::Draining);
            }
        }
        Ok(())
    }
}

/// `SO_LINGER` {on, 0}: the close that follows sends RST, not FIN.
fn linger_zero(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the connection's open socket; the option value is a
    // valid `linger` that outlives the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
