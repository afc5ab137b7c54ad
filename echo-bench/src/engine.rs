//! The run skeleton both engines share: one thread's phases, its poll
//! loop, the measured window, and what it publishes while it runs.
//!
//! The life of a thread is a sequence of [`Phase`]s:
//!
//! 1. **Opening**: the engine opens its share of the connections and
//!    *proves* each one: a connection counts as established only once its
//!    first message has come back intact, because only then is the server
//!    known to serve it.
//! 2. **Settling**: this thread is done opening and waits (still polling)
//!    until every thread is, so that all threads measure the same load.
//! 3. **Idle** (`--idle`): every connection stays open and silent, until
//!    the idle time is over, no connection is left, or a stop is
//!    requested. Whatever arrives meanwhile is still read and checked (an
//!    unasked-for byte is a mismatch, a close an error).
//! 4. **Running**: warmup, then the measured window, until its duration is
//!    up, the `-n` share of this thread is measured and answered, no
//!    connection is left, or a stop is requested.
//! 5. **Draining**: nothing new is sent. The echoes still due as the window
//!    closes are counted with their age so far, then awaited for at most
//!    [`Engine::drain_time`].
//! 6. **Holding** (`--hold`): every connection stays open and idle, until
//!    the hold is over, no connection is left, or a stop is requested.
//! 7. **Done**: the thread hands back its [`Stats`].
//!
//! Those rules are written once, here: an engine (TCP, UDP) says how its
//! sockets open, send, answer, time out and are counted, by implementing
//! [`Engine`], and [`drive`] takes it through the phases. A phase changes
//! in one place only, [`Core::set_phase`], which logs every change at
//! debug level (`RUST_LOG=debug`).

use crate::Shared;
use crate::StopAt;
use crate::live::Live;
use crate::stats::{ErrorKind, Stats};
use log::debug;
use mio::event::Event;
use mio::{Events, Poll};
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events taken per `poll` call. Large enough that a busy thread with
/// thousands of ready connections needs few `epoll_wait` calls per sweep,
/// small enough (~12 KiB) to stay in cache.
const EVENTS_CAPACITY: usize = 1024;

/// Poll interval while this thread waits for the others to settle.
const SETTLE_POLL: Duration = Duration::from_millis(2);

/// Where a thread is in its run (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Opening,
    Settling,
    Idle { until: Instant },
    Running,
    Draining { until: Instant },
    Holding { until: Instant },
    Done,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Opening => "opening",
            Phase::Settling => "settling",
            Phase::Idle { .. } => "idle",
            Phase::Running => "running",
            Phase::Draining { .. } => "draining",
            Phase::Holding { .. } => "holding",
            Phase::Done => "done",
        })
    }
}

/// This thread's part of the run, worked out by the caller.
#[derive(Debug)]
pub(crate) struct Share {
    /// Index of this thread, `0..threads`.
    pub thread: usize,
    /// Connection ids of this thread: `thread, thread + threads, ...`.
    pub ids: Vec<usize>,
    /// Connects per second for this thread.
    pub connect_rate: Option<f64>,
    /// This thread's window of unproven connections.
    pub max_connecting: usize,
    /// `-n`: messages this thread measures before it stops.
    pub quota: Option<u64>,
    /// `--rate`: messages per second of this thread.
    pub rate: Option<f64>,
}

/// The measured window.
#[derive(Debug)]
pub(crate) struct Window {
    /// When it opens (the end of the warmup).
    pub start: Instant,
    /// When it closes; `None` with `-n`, where the count ends it.
    pub end: Option<Instant>,
    /// Messages issued inside it.
    pub issued: u64,
}

/// The counts last added to [`Live`], so that each turn adds the difference.
#[derive(Debug, Default)]
struct Published {
    messages: u64,
    established: u64,
    failed: u64,
    errors: u64,
}

/// What every engine thread keeps, whatever its transport.
pub(crate) struct Core {
    pub sh: Arc<Shared>,
    pub share: Share,
    pub poll: Poll,
    pub stats: Stats,
    phase: Phase,
    pub window: Window,
    /// When this thread started opening its connections.
    pub open_started: Instant,
    /// When [`Engine::sweep`] last ran.
    pub last_sweep: Instant,
    /// Connections started whose first echo has not come back yet (nor
    /// have they failed).
    pub unproven: usize,
    /// The first reason a connection failed to open, for the
    /// "unreachable" message.
    pub first_error: Option<String>,
    /// Run messages echoed so far (warmup and drain included), for [`Live`].
    pub completed_any: u64,
    /// `--interval`: this thread's clock of intervals, once the window is
    /// open.
    pub interval: Option<crate::interval::Clock>,
    published: Published,
}

impl Core {
    /// `--interval`: starts the thread's clock as its window opens.
    fn start_intervals(&mut self) {
        if let Some(every) = self.sh.cfg.interval {
            let udp = self.sh.cfg.transport == crate::config::Transport::Udp;
            let clock = crate::interval::Clock::new(every, self.window.start, &mut self.stats, udp);
            self.interval = Some(clock);
        }
    }

    /// `--interval`: hands in the thread's intervals that ended by `now`
    /// (and the last, short one, when `closing`).
    fn tick_intervals(&mut self, now: Instant, closing: bool) {
        if let Some(clock) = &mut self.interval {
            let threads = self.sh.cfg.threads;
            clock.tick(
                now,
                closing,
                &mut self.stats,
                (&self.sh.live.intervals, threads),
            );
        }
    }

    /// A thread about to open its `share` of the run.
    pub(crate) fn new(sh: Arc<Shared>, share: Share) -> io::Result<Core> {
        let now = Instant::now();
        Ok(Core {
            sh,
            share,
            poll: Poll::new()?,
            stats: Stats::new(),
            phase: Phase::Opening,
            window: Window {
                start: now,
                end: None,
                issued: 0,
            },
            open_started: now,
            last_sweep: now,
            unproven: 0,
            first_error: None,
            completed_any: 0,
            interval: None,
            published: Published::default(),
        })
    }

    /// The phase the thread is in.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether echoes now count: inside [`Phase::Running`] (and then only
    /// those of messages sent after the warmup).
    pub(crate) fn measuring(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The one way a phase changes.
    fn set_phase(&mut self, next: Phase) {
        debug!("thread {}: {} => {next}", self.share.thread, self.phase);
        self.phase = next;
    }

    /// Whether a new message may be issued now: only while running, and
    /// with `-n` only until `counted` (this engine's count of the window's
    /// messages) reaches this thread's share. The warmup is not counted.
    pub(crate) fn may_issue(&self, now: Instant, counted: u64) -> bool {
        self.measuring()
            && self
                .share
                .quota
                .is_none_or(|q| now < self.window.start || counted < q)
    }

    /// Counts a connection that failed before it was proven, of `kind`,
    /// and keeps `why` if it is the first such failure.
    pub(crate) fn count_failed(&mut self, kind: ErrorKind, why: &dyn fmt::Display) {
        self.stats.failed += 1;
        self.stats.error(kind);
        if self.first_error.is_none() {
            self.first_error = Some(why.to_string());
        }
    }

    /// Adds this thread's progress since the last call to [`Live`], for
    /// the progress line.
    fn publish(&mut self) {
        let live = &self.sh.live;
        let now = Published {
            messages: self.completed_any,
            established: self.stats.established,
            failed: self.stats.failed,
            errors: self.stats.total_errors(),
        };
        let was = &self.published;
        Live::add(&live.messages, now.messages - was.messages);
        Live::add(&live.established, now.established - was.established);
        Live::add(&live.failed, now.failed - was.failed);
        Live::add(&live.errors, now.errors - was.errors);
        self.published = now;
    }

    /// What the thread hands back: its counts and its first connect error.
    pub(crate) fn into_result(self) -> (Stats, Option<String>) {
        (self.stats, self.first_error)
    }
}

/// One transport's side of a thread: how its sockets open, send, answer,
/// time out and are counted. [`drive`] calls these at the points of the
/// run the module docs name.
pub(crate) trait Engine {
    /// The longest the loop sleeps, and how often [`Engine::sweep`] runs.
    const TICK: Duration;

    /// The engine's [`Core`].
    fn core(&mut self) -> &mut Core;

    /// Opening: starts the connections that pacing allows by `now`. The
    /// default opens nothing (an engine that opened everything up front).
    fn open_more(&mut self, _now: Instant) {}

    /// Opening: every connection has been started and has been proven or
    /// has failed.
    fn settled(&self) -> bool;

    /// Loopback source addresses added past the planned ones while
    /// opening (the planned ones ran out of ports).
    fn extra_sources(&self) -> usize {
        0
    }

    /// No connection is left.
    fn is_empty(&self) -> bool;

    /// Echoes still due.
    fn outstanding(&self) -> u64;

    /// `-n`: this thread's share of the count is measured and answered.
    fn quota_met(&self) -> bool;

    /// Every thread has settled and the window is set: start the traffic.
    fn start(&mut self, now: Instant);

    /// Every [`Engine::TICK`] while opening, running and draining: connect
    /// timeouts, stalls, losses.
    fn sweep(&mut self, now: Instant);

    /// Each turn while the window stays open (open-loop releases).
    fn run_turn(&mut self, _now: Instant) {}

    /// The window has closed: count what is still due, with its age.
    fn close_window(&mut self, now: Instant);

    /// How long the drain after the window may last.
    fn drain_time(&self) -> Duration;

    /// The drain is over: deal with whatever is still due.
    fn drained(&mut self) {}

    /// A wake-up earlier than the phase's own, if the engine needs one.
    fn wake_in(&self, _now: Instant) -> Option<Duration> {
        None
    }

    /// One readiness event.
    fn on_event(&mut self, ev: &Event);

    /// After a batch of events or a sweep: frees the connections that
    /// failed meanwhile (never during a batch, whose later events may
    /// still name them).
    fn free_closed(&mut self);
}

/// Runs one engine thread through every phase, to [`Phase::Done`].
pub(crate) fn drive<E: Engine>(e: &mut E) -> io::Result<()> {
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    loop {
        let now = Instant::now();
        advance(e, now);
        if e.core().phase == Phase::Done {
            break;
        }
        let timeout = timeout(e, now);
        match e.core().poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            // A signal interrupted epoll_wait: nothing happened, go on.
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        }
        for ev in events.iter() {
            e.on_event(ev);
        }
        e.free_closed();
        e.core().publish();
    }
    e.core().publish();
    Ok(())
}

/// Moves the thread's clock forward: from phase to phase, and within one.
fn advance<E: Engine>(e: &mut E, now: Instant) {
    match e.core().phase {
        Phase::Opening => {
            e.open_more(now);
            sweep_if_due(e, now);
            if e.settled() {
                settle(e, now);
            }
        }
        Phase::Settling => {
            let sh = &e.core().sh;
            if sh.live.settled_threads() >= sh.cfg.threads && sh.live.gate_open() {
                idle_or_open_window(e, now);
            }
        }
        Phase::Idle { until } => {
            if now >= until || e.is_empty() || e.core().sh.live.stop_requested() {
                open_window(e, now);
            }
        }
        Phase::Running => {
            sweep_if_due(e, now);
            if window_over(e, now) {
                close_window(e, now);
            } else {
                e.run_turn(now);
                e.core().tick_intervals(now, false);
            }
        }
        Phase::Draining { until } => {
            sweep_if_due(e, now);
            if e.outstanding() == 0 || now >= until {
                e.drained();
                hold_or_finish(e, now);
            }
        }
        Phase::Holding { until } => {
            if now >= until || e.is_empty() || e.core().sh.live.stop_requested() {
                e.core().set_phase(Phase::Done);
            }
        }
        Phase::Done => {}
    }
}

/// Runs [`Engine::sweep`] if a [`Engine::TICK`] has passed since the last.
fn sweep_if_due<E: Engine>(e: &mut E, now: Instant) {
    if now >= e.core().last_sweep + E::TICK {
        e.core().last_sweep = now;
        e.sweep(now);
        e.free_closed();
    }
}

/// This thread is done opening: it says so to the others, and waits.
fn settle<E: Engine>(e: &mut E, now: Instant) {
    let extra = e.extra_sources();
    let c = e.core();
    c.stats.open_secs = (now - c.open_started).as_secs_f64();
    c.stats.sources_used = c.sh.sources + extra;
    debug!(
        "thread {}: {} connections established, {} failed, in {:.3} s",
        c.share.thread, c.stats.established, c.stats.failed, c.stats.open_secs
    );
    c.sh.live.thread_settled();
    c.set_phase(Phase::Settling);
}

/// Every thread has settled (and the gate is open): the connections sit
/// idle for `--idle` first, if there is an idle time; otherwise the
/// window opens now.
fn idle_or_open_window<E: Engine>(e: &mut E, now: Instant) {
    let idle = e.core().sh.cfg.idle;
    if idle.is_zero() {
        open_window(e, now);
    } else {
        e.core().set_phase(Phase::Idle { until: now + idle });
    }
}

/// The warmup starts now, the window after it.
fn open_window<E: Engine>(e: &mut E, now: Instant) {
    let c = e.core();
    c.window.start = now + c.sh.cfg.warmup;
    c.window.end = match c.sh.cfg.stop {
        StopAt::Duration(d) => Some(c.window.start + d),
        StopAt::Requests(_) => None,
    };
    c.start_intervals();
    c.set_phase(Phase::Running);
    e.start(now);
}

/// Whether the window ends now: its time is up, the count is met and
/// answered, no connection is left, or a stop was requested.
fn window_over<E: Engine>(e: &mut E, now: Instant) -> bool {
    let c = e.core();
    let time_up = c.window.end.is_some_and(|end| now >= end);
    let stop = c.sh.live.stop_requested();
    time_up || e.quota_met() || e.is_empty() || stop
}

/// Closes the window and starts the drain.
fn close_window<E: Engine>(e: &mut E, now: Instant) {
    let c = e.core();
    c.stats.window_secs = now.saturating_duration_since(c.window.start).as_secs_f64();
    e.close_window(now);
    e.core().tick_intervals(now, true);
    let outstanding = e.outstanding();
    let c = e.core();
    debug!(
        "thread {}: window closed after {:.3} s, {} messages, {outstanding} outstanding",
        c.share.thread, c.stats.window_secs, c.stats.messages
    );
    let until = now + e.drain_time();
    e.core().set_phase(Phase::Draining { until });
}

/// After the drain: hold the connections open for `--hold`, if there is a
/// hold and anything left to hold; otherwise the thread is done.
fn hold_or_finish<E: Engine>(e: &mut E, now: Instant) {
    let hold = e.core().sh.cfg.hold;
    let next = if hold.is_zero() || e.is_empty() {
        Phase::Done
    } else {
        Phase::Holding { until: now + hold }
    };
    e.core().set_phase(next);
}

/// How long the next `poll` may sleep.
fn timeout<E: Engine>(e: &mut E, now: Instant) -> Duration {
    let until = |t: Instant| t.saturating_duration_since(now);
    let c = e.core();
    let t = match c.phase {
        Phase::Opening => E::TICK,
        Phase::Settling => SETTLE_POLL,
        Phase::Running => {
            let end = c.window.end.map_or(E::TICK, until);
            c.interval
                .as_ref()
                .map_or(end, |i| end.min(until(i.next_at())))
        }
        Phase::Idle { until: end }
        | Phase::Draining { until: end }
        | Phase::Holding { until: end } => until(end),
        Phase::Done => Duration::ZERO,
    };
    e.wake_in(now).map_or(t, |w| t.min(w)).min(E::TICK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pattern::Pattern;

    /// An engine without sockets: its connections, echoes due and count
    /// are whatever the test says, and it notes what it is asked to do.
    struct Fake {
        core: Core,
        conns: usize,
        due: u64,
        quota_met: bool,
        calls: Vec<&'static str>,
    }

    impl Engine for Fake {
        const TICK: Duration = Duration::from_millis(100);
        fn core(&mut self) -> &mut Core {
            &mut self.core
        }
        fn settled(&self) -> bool {
            true
        }
        fn is_empty(&self) -> bool {
            self.conns == 0
        }
        fn outstanding(&self) -> u64 {
            self.due
        }
        fn quota_met(&self) -> bool {
            self.quota_met
        }
        fn start(&mut self, _now: Instant) {
            self.calls.push("start");
        }
        fn sweep(&mut self, _now: Instant) {
            self.calls.push("sweep");
        }
        fn close_window(&mut self, _now: Instant) {
            self.calls.push("close");
        }
        fn drain_time(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn drained(&mut self) {
            self.calls.push("drained");
        }
        fn on_event(&mut self, _ev: &Event) {}
        fn free_closed(&mut self) {}
    }

    /// A thread of a run of `threads` threads, measuring for 1 s after a
    /// 0.5 s warmup, then holding for `hold`.
    fn fake(threads: usize, hold: Duration) -> Fake {
        let mut cfg = Config::new("127.0.0.1:7007".parse().unwrap());
        cfg.threads = threads;
        cfg.warmup = Duration::from_millis(500);
        cfg.stop = StopAt::Duration(Duration::from_secs(1));
        cfg.hold = hold;
        let sh = Arc::new(Shared {
            cfg,
            pattern: Pattern::new(),
            answers: None,
            template: None,
            sources: 1,
            source_first: None,
            extra_first: 1,
            live: Arc::new(Live::new()),
        });
        let share = Share {
            thread: 0,
            ids: vec![0, 1],
            connect_rate: None,
            max_connecting: 2,
            quota: None,
            rate: None,
        };
        Fake {
            core: Core::new(sh, share).unwrap(),
            conns: 2,
            due: 0,
            quota_met: false,
            calls: Vec::new(),
        }
    }

    /// Takes `e` from opening into its window, at `t`.
    fn into_window(e: &mut Fake, t: Instant) {
        advance(e, t);
        assert_eq!(e.core.phase, Phase::Settling);
        for _ in 1..e.core.sh.cfg.threads {
            e.core.sh.live.thread_settled();
        }
        advance(e, t);
        assert_eq!(e.core.phase, Phase::Running);
    }

    #[test]
    fn the_window_opens_when_every_thread_has_settled() {
        let mut e = fake(2, Duration::ZERO);
        let t = Instant::now();
        advance(&mut e, t);
        assert_eq!(e.core.phase, Phase::Settling);
        assert_eq!(timeout(&mut e, t), SETTLE_POLL);
        advance(&mut e, t + Duration::from_millis(10));
        assert_eq!(
            e.core.phase,
            Phase::Settling,
            "the other thread is still opening"
        );
        e.core.sh.live.thread_settled();
        advance(&mut e, t + Duration::from_millis(20));
        assert_eq!(e.core.phase, Phase::Running);
        assert_eq!(e.calls, ["start"]);
        let start = t + Duration::from_millis(520);
        assert_eq!(e.core.window.start, start, "after the warmup");
        assert_eq!(e.core.window.end, Some(start + Duration::from_secs(1)));
    }

    #[test]
    fn a_closed_gate_keeps_the_window_shut_until_it_opens() {
        let mut e = fake(1, Duration::ZERO);
        e.core.sh.live.close_gate();
        let t = Instant::now();
        advance(&mut e, t);
        advance(&mut e, t + Duration::from_millis(10));
        assert_eq!(
            e.core.phase,
            Phase::Settling,
            "every thread settled, but the parent has not said go"
        );
        e.core.sh.live.open_gate();
        let go = t + Duration::from_millis(20);
        advance(&mut e, go);
        assert_eq!(e.core.phase, Phase::Running);
        assert_eq!(e.core.window.start, go + Duration::from_millis(500));
    }

    #[test]
    fn an_idle_time_comes_between_settling_and_the_window() {
        let idle = Duration::from_secs(5);
        let mut e = fake(1, Duration::ZERO);
        Arc::get_mut(&mut e.core.sh).unwrap().cfg.idle = idle;
        let t = Instant::now();
        advance(&mut e, t);
        advance(&mut e, t);
        assert_eq!(e.core.phase, Phase::Idle { until: t + idle });
        assert!(e.calls.is_empty(), "nothing is sent while idle");
        assert_eq!(timeout(&mut e, t), Fake::TICK, "a tick at most");
        advance(&mut e, t + idle - Duration::from_millis(1));
        assert_eq!(e.core.phase, Phase::Idle { until: t + idle });
        advance(&mut e, t + idle);
        assert_eq!(e.core.phase, Phase::Running);
        assert_eq!(e.calls, ["start"]);
        let start = t + idle + Duration::from_millis(500);
        assert_eq!(e.core.window.start, start, "the warmup follows the idle");
    }

    #[test]
    fn a_stop_or_no_connection_left_ends_the_idle_time() {
        let t = Instant::now();
        let mut e = fake(1, Duration::ZERO);
        Arc::get_mut(&mut e.core.sh).unwrap().cfg.idle = Duration::from_secs(30);
        advance(&mut e, t);
        advance(&mut e, t);
        e.core.sh.live.request_stop();
        advance(&mut e, t + Duration::from_secs(1));
        advance(&mut e, t + Duration::from_secs(1));
        assert!(matches!(e.core.phase, Phase::Draining { .. }));
        let mut e = fake(1, Duration::ZERO);
        Arc::get_mut(&mut e.core.sh).unwrap().cfg.idle = Duration::from_secs(30);
        advance(&mut e, t);
        advance(&mut e, t);
        e.conns = 0;
        advance(&mut e, t + Duration::from_secs(1));
        assert_eq!(e.core.phase, Phase::Running);
    }

    #[test]
    fn the_window_closes_on_time_then_the_drain_waits_for_the_echoes_due() {
        let mut e = fake(1, Duration::ZERO);
        let t = Instant::now();
        into_window(&mut e, t);
        let end = e.core.window.end.unwrap();
        advance(&mut e, end - Duration::from_millis(1));
        assert_eq!(e.core.phase, Phase::Running);
        e.due = 3;
        advance(&mut e, end);
        let until = end + Duration::from_secs(1);
        assert_eq!(e.core.phase, Phase::Draining { until });
        advance(&mut e, until - Duration::from_millis(1));
        assert_eq!(
            e.core.phase,
            Phase::Draining { until },
            "3 echoes still due"
        );
        advance(&mut e, until);
        assert_eq!(e.core.phase, Phase::Done, "the drain is over, no hold");
        let calls: Vec<_> = e.calls.iter().filter(|c| **c != "sweep").collect();
        assert_eq!(calls, [&"start", &"close", &"drained"]);
    }

    #[test]
    fn a_met_count_or_a_stop_closes_the_window_early() {
        let t = Instant::now();
        let mut e = fake(1, Duration::ZERO);
        into_window(&mut e, t);
        e.quota_met = true;
        advance(&mut e, t);
        assert!(matches!(e.core.phase, Phase::Draining { .. }));
        let mut e = fake(1, Duration::ZERO);
        into_window(&mut e, t);
        e.core.sh.live.request_stop();
        advance(&mut e, t);
        assert!(matches!(e.core.phase, Phase::Draining { .. }));
    }

    #[test]
    fn a_hold_ends_when_no_connection_is_left() {
        let hold = Duration::from_secs(30);
        let mut e = fake(1, hold);
        let t = Instant::now();
        into_window(&mut e, t);
        let end = e.core.window.end.unwrap();
        advance(&mut e, end);
        advance(&mut e, end);
        assert_eq!(e.core.phase, Phase::Holding { until: end + hold });
        advance(&mut e, end + Duration::from_secs(1));
        assert_eq!(e.core.phase, Phase::Holding { until: end + hold });
        e.conns = 0;
        advance(&mut e, end + Duration::from_secs(2));
        assert_eq!(e.core.phase, Phase::Done, "nothing is left to hold");
    }

    #[test]
    fn no_hold_without_connections_and_the_loop_never_sleeps_past_a_tick() {
        let mut e = fake(1, Duration::from_secs(30));
        let t = Instant::now();
        into_window(&mut e, t);
        assert_eq!(timeout(&mut e, t), Fake::TICK);
        let end = e.core.window.end.unwrap();
        assert_eq!(
            timeout(&mut e, end - Duration::from_millis(7)),
            Duration::from_millis(7)
        );
        e.conns = 0;
        advance(&mut e, t);
        advance(&mut e, t);
        assert_eq!(e.core.phase, Phase::Done);
    }

    #[test]
    fn sweeps_run_once_a_tick() {
        let mut e = fake(1, Duration::ZERO);
        let t = e.core.last_sweep;
        into_window(&mut e, t);
        advance(&mut e, t + Duration::from_millis(50));
        assert!(!e.calls.contains(&"sweep"));
        advance(&mut e, t + Fake::TICK);
        advance(&mut e, t + Fake::TICK + Duration::from_millis(50));
        assert_eq!(e.calls.iter().filter(|c| **c == "sweep").count(), 1);
    }
}
