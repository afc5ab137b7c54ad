//! The loop's side of the memory budget (`budget.rs`): connections parked
//! because the budget had no room for their input, let go when it frees;
//! `--evict-after`; the budget's gauges in the counters.
//!
//! A parked connection is marked queued, so events for it only add hints
//! (as for a connection on the run-next queue), and it asks for no read
//! interest (level-triggered backends would report its input forever).
//! Most wait until the budget has room; those that wait for their own send
//! queue to empty (a protocol's answer written through,
//! `connection/pass_through.rs`) are retried every [`STARVED_RETRY`], since
//! an emptying send queue raises no event; while no one leaves that list,
//! the pause doubles up to [`STARVED_RETRY_MAX`], so that clients that
//! never read their answers cost next to nothing (retried every 10 ms,
//! the hostile bench's line-mode attackers kept 14 % of a core busy while
//! they sat idle).

use std::time::Duration;

use log::{info, warn};

use super::Reactor;
use super::class::Class;
use crate::connection::CloseReason;
use crate::poller::{Poller, Token};
use crate::timer::TimerKind;
use crate::token::{self, Target};

/// How often connections parked for budget try again even if the budget
/// is still full (a send queue that emptied raises no event).
pub(super) const STARVED_RETRY: Duration = Duration::from_millis(10);

/// The longest pause between retries while the same connections keep
/// waiting for their send queues.
pub(super) const STARVED_RETRY_MAX: Duration = Duration::from_millis(320);

/// How long a split message must have been silent before its unfilled
/// reservation is taken back (while others wait for room).
pub(super) const RESERVATION_STALL: Duration = Duration::from_secs(1);

/// How often stalled reservations are looked for while connections wait
/// for room.
pub(super) const RECLAIM_CHECK: Duration = Duration::from_secs(1);

/// How often `--evict-after` looks for stalled connections.
pub(super) const EVICT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Connections parked because the budget had no room for their input
/// (marked queued, so events for them only add hints meanwhile), and the
/// state of the timers that let them go.
#[derive(Debug)]
pub(super) struct Parking {
    /// Parked until the budget has room ...
    pub(super) starved: Vec<Token>,
    /// ... or until [`TimerKind::BudgetRetry`].
    pub(super) retrying: Vec<Token>,
    /// A [`TimerKind::BudgetRetry`] is pending.
    pub(super) retry_armed: bool,
    /// A [`TimerKind::ReclaimCheck`] is pending.
    pub(super) reclaim_armed: bool,
    /// The pause before the next retry, and how many the last one let go.
    pub(super) retry_pause: Duration,
    pub(super) retried_last: usize,
    /// `--evict-after` found the budget full and has not yet brought it
    /// below half.
    pub(super) evicting: bool,
}

impl Default for Parking {
    fn default() -> Parking {
        Parking {
            starved: Vec::new(),
            retrying: Vec::new(),
            retry_armed: false,
            reclaim_armed: false,
            retry_pause: STARVED_RETRY,
            retried_last: 0,
            evicting: false,
        }
    }
}

impl Parking {
    /// Anyone parked.
    pub(super) fn any(&self) -> bool {
        !self.starved.is_empty() || !self.retrying.is_empty()
    }
}

impl<P: Poller> Reactor<P> {
    /// Parks a connection the budget has no room for: marked queued (so
    /// events for it only add hints), let go when the budget has room, or
    /// with `retry` also after [`STARVED_RETRY`].
    #[cold]
    pub(super) fn park(&mut self, key: usize, token: Token, retry: bool) {
        if !self.conns[key].enqueue() {
            return;
        }
        // Raw mode splits no message: nothing to reclaim, no timer. (A
        // metrics request head is bounded by its own check.)
        if !self.parking.reclaim_armed && self.classes[Class::Echo].handler.max_reservation() > 0 {
            let at = self.clock.now + RECLAIM_CHECK;
            self.timers.schedule(at, TimerKind::ReclaimCheck);
            self.parking.reclaim_armed = true;
        }
        if !retry {
            self.parking.starved.push(token);
            return;
        }
        if !self.parking.retry_armed {
            let at = self.clock.now + self.parking.retry_pause;
            self.timers.schedule(at, TimerKind::BudgetRetry);
            self.parking.retry_armed = true;
        }
        self.parking.retrying.push(token);
    }

    /// Gives parked connections their turn again, next tick: all of them
    /// (`all`, the budget has room), or those waiting for their own send
    /// queue ([`TimerKind::BudgetRetry`]); retrying those that hold half a
    /// message before there is room would only cost CPU.
    pub(super) fn release_starved(&mut self, all: bool) {
        let mut tokens = std::mem::take(&mut self.parking.retrying);
        // Back off while the same connections keep coming back.
        self.parking.retry_pause = if !all && tokens.len() >= self.parking.retried_last {
            (self.parking.retry_pause * 2).min(STARVED_RETRY_MAX)
        } else {
            STARVED_RETRY
        };
        self.parking.retried_last = tokens.len();
        if all {
            tokens.append(&mut self.parking.starved);
        }
        for token in tokens {
            if let Target::Connection { key, generation } = token::decode(token)
                && let Some(conn) = self.conns.get_mut(key)
                && conn.generation() == generation
            {
                // Still marked queued: the run-next entry is its turn.
                conn.unstarve();
                self.run_next.push(token);
            }
        }
    }

    /// Takes back the unfilled part of the reservations of split messages
    /// silent for [`RESERVATION_STALL`], while connections wait for room
    /// (see "Reservations that are not filled" in docs/memory.md): a
    /// reservation must cost its holder something to keep, or 60 frame
    /// headers declaring 1 MiB each hold a 64 MiB budget with 240 bytes.
    /// Checked again every [`RECLAIM_CHECK`] while anyone waits.
    pub(super) fn reclaim_stalled(&mut self) {
        self.parking.reclaim_armed = false;
        if self.parking.starved.is_empty() && self.parking.retrying.is_empty() {
            return;
        }
        let (epoch, now) = (self.clock.epoch, self.clock.now);
        let (mut released, mut freed) = (0u64, 0usize);
        for (_, conn) in self.conns.iter_mut() {
            if conn.last_active().to_instant(epoch) + RESERVATION_STALL > now {
                continue;
            }
            let gave = conn.release_unfilled();
            if gave > 0 {
                self.budget.settle(gave, 0);
                released += 1;
                freed += gave;
            }
        }
        if released > 0 {
            self.stats.reservations_released += released;
            info!(
                "budget: {released} split messages stalled for {RESERVATION_STALL:?} or \
                 more gave back {freed} reserved bytes they did not hold"
            );
        }
        let at = now + RECLAIM_CHECK;
        self.timers.schedule(at, TimerKind::ReclaimCheck);
        self.parking.reclaim_armed = true;
    }

    /// `--evict-after`: while the budget is full, closes the connections
    /// that hold buffered bytes and moved none for the whole interval,
    /// largest first, until the budget is below half (an opted-in policy:
    /// their clients lose what they had not read).
    pub(super) fn evict_stalled(&mut self) {
        let Some(after) = self.settings.evict_after else {
            return;
        };
        let at = self.clock.now + EVICT_CHECK_INTERVAL;
        self.timers.schedule(at, TimerKind::EvictCheck);
        // Eviction starts when the budget is nearly full and goes on, pass
        // after pass, until it is below half: a budget that frees a little
        // would otherwise stop it short of relief.
        self.parking.evicting = if self.budget.is_nearly_full() {
            true
        } else {
            self.parking.evicting && self.budget.under_pressure()
        };
        if !self.parking.evicting {
            return;
        }
        let epoch = self.clock.epoch;
        let now = self.clock.now;
        let mut stalled: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.held() > 0 && c.last_active().to_instant(epoch) + after <= now)
            .map(|(key, c)| (c.held(), key))
            .collect();
        stalled.sort_unstable_by(|a, b| b.cmp(a));
        let (mut closed, mut freed) = (0, 0);
        for (held, key) in stalled {
            if !self.budget.under_pressure() {
                self.parking.evicting = false;
                break;
            }
            self.close(key, CloseReason::Evicted);
            closed += 1;
            freed += held;
        }
        if closed > 0 {
            warn!(
                "budget full: evicted {closed} connections stalled for {after:?} or more, \
                 largest first ({freed} bytes freed)"
            );
        }
    }

    /// Copies the gauges (the budget's, the timer heap's size, the log
    /// lines dropped) into the counters before they are shown.
    pub(super) fn sync_gauges(&mut self) {
        self.stats.buffered = self.budget.used() as u64;
        self.stats.buffered_peak = self.budget.peak() as u64;
        self.stats.budget_full = self.budget.times_full();
        self.stats.buffered_limit = self.budget.limit() as u64;
        self.stats.listeners_paused = self.sources.paused() as u64;
        self.stats.timers = self.timers.len() as u64;
        self.stats.log_dropped = crate::log_sink::dropped_lines();
    }
}

#[cfg(test)]
mod tests {
    //! The loop's memory decisions driven by hand, with the clock and the
    //! budget's fill set by the test: no sleeping, no timing. Connections
    //! are real loopback sockets whose kernel buffers are as small as the
    //! kernel allows, so that what a client does not read piles up in the
    //! server's pending output, where the budget counts it; the rest of
    //! the fill is settled into the budget directly, to the byte.

    use std::io::Write;
    use std::time::{Duration, Instant};

    use mio::net::TcpStream;

    use super::super::Reactor;
    use super::super::class::Class;
    use super::{
        EVICT_CHECK_INTERVAL, RECLAIM_CHECK, RESERVATION_STALL, STARVED_RETRY, STARVED_RETRY_MAX,
    };
    use crate::budget::MIN_MAX_BUFFERED as LIMIT;
    use crate::config::Config;
    use crate::connection::{Connection, Ready};
    use crate::poller::{Epoll, Token};
    use crate::protocol::Handler;
    use crate::sockets::Sockets;
    use crate::timer::{Stamp, TimerKind};
    use crate::token;

    /// `--evict-after`.
    const AFTER: Duration = Duration::from_secs(5);

    /// Three quarters of the budget (a whole number of bytes).
    const THREE_QUARTERS: usize = LIMIT / 4 * 3;

    /// A raw echo reactor with the smallest budget and `--evict-after 5`,
    /// not running.
    fn reactor() -> Reactor<Epoll> {
        reactor_of(Handler::Raw)
    }

    /// [`reactor`] speaking `handler`'s protocol.
    fn reactor_of(handler: Handler) -> Reactor<Epoll> {
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().expect("address")],
            max_buffered: LIMIT,
            evict_after: Some(AFTER),
            ..Config::default()
        };
        let sockets = Sockets::bind(&config).expect("bind");
        Reactor::bind(&config, sockets, handler).expect("reactor")
    }

    /// A line-mode reactor (split messages, reservations).
    fn line_reactor() -> Reactor<Epoll> {
        reactor_of(Handler::Protocol(
            Box::new(crate::protocol::Line::default()),
        ))
    }

    /// What an event for a connection with input and room says.
    const READY: Ready = Ready {
        readable: true,
        writable: true,
        read_closed: false,
        urgent: false,
    };

    /// A client taken into the loop as `admit` takes one, at the loop's
    /// current time; both ends' kernel buffers as small as they go.
    /// Returns the client's end (nonblocking) and the connection's key.
    fn connect(r: &mut Reactor<Epoll>) -> (std::net::TcpStream, usize) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        client.set_recv_buffer_size(1).expect("SO_RCVBUF");
        let to = listener.local_addr().expect("addr");
        client.connect(&to.into()).expect("connect");
        let client = std::net::TcpStream::from(client);
        client.set_nonblocking(true).expect("nonblocking");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        socket2::SockRef::from(&server)
            .set_send_buffer_size(1)
            .expect("SO_SNDBUF");
        let key = r.conns.vacant_key();
        let generation = Class::Echo.mark(r.generations.next_generation());
        let token = token::connection(key, generation);
        let stream = TcpStream::from_std(server);
        let conn =
            Connection::register(stream, token, &mut r.poller, r.clock.stamp).expect("register");
        assert_eq!(r.conns.insert(conn), key);
        r.classes[Class::Echo].open += 1;
        (client, key)
    }

    /// One turn of the connection at `key`, as for an event.
    fn turn(r: &mut Reactor<Epoll>, key: usize) {
        let generation = r.conns[key].generation();
        r.drive(key, generation, READY);
        // A requeued turn is given here, by the next call.
        r.run_next.clear();
        r.conns[key].dequeue();
    }

    /// A client that sends `bytes` and reads nothing: the server reads
    /// them all now, and holds what the kernel did not take.
    fn slow_reader(r: &mut Reactor<Epoll>, bytes: usize) -> (std::net::TcpStream, usize) {
        let (mut client, key) = connect(r);
        let data = vec![b'x'; bytes];
        let (before, mut sent) = (r.stats.bytes_in, 0);
        for turns in 0.. {
            if r.stats.bytes_in - before == bytes as u64 {
                break;
            }
            assert!(turns < 10_000, "the server read {sent} bytes at most");
            match client.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("send: {e}"),
            }
            turn(r, key);
        }
        assert!(r.conns[key].held() > 0, "the kernel took it all");
        (client, key)
    }

    /// Settles the budget to hold exactly `used` bytes.
    fn fill_to(r: &mut Reactor<Epoll>, used: usize) {
        let now = r.budget.used();
        r.budget.settle(now, used);
        assert_eq!(r.budget.used(), used);
    }

    /// The loop's clock set to `at`, as a tick sets it.
    fn set_clock(r: &mut Reactor<Epoll>, at: Instant) {
        r.clock.now = at;
        r.clock.stamp = Stamp::new(r.clock.epoch, at);
    }

    fn token_of(r: &Reactor<Epoll>, key: usize) -> Token {
        token::connection(key, r.conns[key].generation())
    }

    #[test]
    fn a_slow_reader_below_three_quarters_is_never_evicted_and_at_three_quarters_is() {
        let mut r = reactor();
        let start = r.clock.now;
        let (_client, key) = slow_reader(&mut r, 64 * 1024);
        let token = token_of(&r, key);
        // Half the budget held, then a byte short of three quarters, the
        // client stalled for hours: no check takes it.
        for used in [LIMIT / 2, THREE_QUARTERS - 1] {
            fill_to(&mut r, used);
            for hours in 1..=3 {
                set_clock(&mut r, start + Duration::from_secs(3600 * hours));
                r.evict_stalled();
                assert!(r.current(token).is_some(), "evicted at {used} of {LIMIT}");
                assert_eq!(r.stats.evicted, 0);
            }
        }
        // Three quarters: the next check takes it.
        fill_to(&mut r, THREE_QUARTERS);
        r.evict_stalled();
        assert!(r.current(token).is_none(), "not evicted at three quarters");
        assert_eq!(r.stats.evicted, 1);
    }

    #[test]
    fn only_connections_that_hold_bytes_and_moved_none_for_the_interval_are_evicted() {
        let mut r = reactor();
        let start = r.clock.now;
        let (_a, stalled) = slow_reader(&mut r, 64 * 1024);
        let stalled = token_of(&r, stalled);
        let (_b, holds_nothing) = connect(&mut r);
        let holds_nothing = token_of(&r, holds_nothing);
        // A nanosecond later, another slow reader.
        set_clock(&mut r, start + Duration::from_nanos(1));
        let (_c, recent) = slow_reader(&mut r, 64 * 1024);
        let recent = token_of(&r, recent);
        fill_to(&mut r, LIMIT - LIMIT / 16);
        // Exactly `--evict-after` since the first moved its last byte.
        let now = start + AFTER;
        set_clock(&mut r, now);
        // The check armed when the loop started is past.
        while r.timers.pop_due(now).is_some() {}
        r.evict_stalled();
        assert!(r.current(stalled).is_none(), "stalled for the interval");
        assert!(r.current(recent).is_some(), "a nanosecond short of it");
        assert!(r.current(holds_nothing).is_some(), "holds nothing");
        assert_eq!(r.stats.evicted, 1);
        // The next look is one interval on, not sooner.
        let mut due = Vec::new();
        while let Some(kind) = r
            .timers
            .pop_due(now + EVICT_CHECK_INTERVAL - Duration::from_nanos(1))
        {
            due.push(kind);
        }
        assert!(!due.contains(&TimerKind::EvictCheck), "{due:?}");
        assert_eq!(
            r.timers.pop_due(now + EVICT_CHECK_INTERVAL),
            Some(TimerKind::EvictCheck)
        );
    }

    #[test]
    fn eviction_takes_the_largest_first_and_stops_below_half() {
        let mut r = reactor();
        let start = r.clock.now;
        let (_small, small) = slow_reader(&mut r, 8 * 1024);
        let (_large, large) = slow_reader(&mut r, 64 * 1024);
        let (small_held, large_held) = (r.conns[small].held(), r.conns[large].held());
        assert!(large_held > small_held, "{large_held} and {small_held}");
        let (small, large) = (token_of(&r, small), token_of(&r, large));
        // Three quarters, before either has stalled long enough: eviction
        // starts, and has no one to take.
        fill_to(&mut r, THREE_QUARTERS);
        r.evict_stalled();
        assert_eq!(r.stats.evicted, 0);
        // Both stalled, and taking the large one is just enough to bring
        // the budget below half.
        fill_to(&mut r, LIMIT / 2 + large_held - 1);
        set_clock(&mut r, start + AFTER);
        r.evict_stalled();
        assert!(r.current(large).is_none(), "the largest goes first");
        assert!(r.current(small).is_some(), "and is enough");
        // Between half and three quarters again: eviction has stopped,
        // and waits for three quarters.
        fill_to(&mut r, THREE_QUARTERS - 1);
        r.evict_stalled();
        assert!(r.current(small).is_some(), "evicted below three quarters");
        assert_eq!(r.stats.evicted, 1);
    }

    #[test]
    fn eviction_that_has_started_goes_on_pass_after_pass_while_half_is_held() {
        let mut r = reactor();
        let start = r.clock.now;
        let (_first, first) = slow_reader(&mut r, 16 * 1024);
        let first = token_of(&r, first);
        set_clock(&mut r, start + AFTER);
        let (_second, second) = slow_reader(&mut r, 16 * 1024);
        let second = token_of(&r, second);
        // Three quarters: the first has stalled long enough, the second
        // not yet; evicting the first leaves more than half held.
        fill_to(&mut r, THREE_QUARTERS);
        r.evict_stalled();
        assert!(r.current(first).is_none());
        assert!(r.current(second).is_some());
        assert!(r.budget.under_pressure());
        // Below three quarters but above half, the second stalled too:
        // the eviction under way takes it.
        fill_to(&mut r, LIMIT / 2);
        set_clock(&mut r, start + AFTER + AFTER);
        r.evict_stalled();
        assert!(r.current(second).is_none(), "eviction stopped above half");
        assert_eq!(r.stats.evicted, 2);
    }

    #[test]
    fn without_evict_after_nothing_is_evicted_and_no_check_is_armed() {
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().expect("address")],
            max_buffered: LIMIT,
            ..Config::default()
        };
        let sockets = Sockets::bind(&config).expect("bind");
        let mut r = Reactor::<Epoll>::bind(&config, sockets, Handler::Raw).expect("reactor");
        let start = r.clock.now;
        let (_client, key) = slow_reader(&mut r, 16 * 1024);
        let token = token_of(&r, key);
        fill_to(&mut r, LIMIT - LIMIT / 16);
        set_clock(&mut r, start + Duration::from_secs(3600));
        let timers = r.timers.len();
        r.evict_stalled();
        assert!(r.current(token).is_some());
        assert_eq!(
            r.timers.len(),
            timers,
            "a check armed without --evict-after"
        );
    }

    #[test]
    fn budget_full_counts_each_read_that_found_no_room_and_the_gauges_follow_the_budget() {
        let mut r = reactor();
        let (mut client, key) = connect(&mut r);
        // No room for a read: each turn with input waiting is one read
        // that found the budget full.
        fill_to(&mut r, LIMIT);
        for turns in 1..=3 {
            client.write_all(b"hello").expect("send");
            turn(&mut r, key);
            r.sync_gauges();
            assert_eq!(r.stats.budget_full, turns);
        }
        // Room again: the read goes through and is not counted.
        fill_to(&mut r, 0);
        turn(&mut r, key);
        r.sync_gauges();
        assert_eq!(r.stats.budget_full, 3);
        assert_eq!(r.stats.buffered, r.budget.used() as u64);
        assert_eq!(r.stats.buffered_peak, LIMIT as u64);
        assert_eq!(r.stats.buffered_limit, LIMIT as u64);
    }

    /// Parks the connection at `key` as a turn that found no room does.
    fn park(r: &mut Reactor<Epoll>, key: usize, retry: bool) {
        let token = token_of(r, key);
        r.park(key, token, retry);
    }

    /// The parked connection at `key` given its turn, as the loop does
    /// (so that it can be parked again).
    fn take_turn(r: &mut Reactor<Epoll>, key: usize) {
        let token = token_of(r, key);
        assert!(r.run_next.contains(&token), "not let go");
        r.run_next.retain(|t| *t != token);
        r.conns[key].dequeue();
    }

    #[test]
    fn parked_connections_wait_in_their_list_once_each() {
        let mut r = reactor();
        assert!(!r.parking.any());
        let (_a, a) = connect(&mut r);
        let (_b, b) = connect(&mut r);
        park(&mut r, a, false);
        assert!(r.parking.any(), "one waiting for room");
        park(&mut r, a, false);
        assert_eq!(r.parking.starved, vec![token_of(&r, a)], "parked twice");
        r.parking.starved.clear();
        park(&mut r, b, true);
        assert!(r.parking.any(), "one waiting for its send queue");
        assert_eq!(r.parking.retrying, vec![token_of(&r, b)]);
        // Raw mode splits no message: no reclaim check.
        assert!(!r.parking.reclaim_armed);
    }

    #[test]
    fn a_retry_is_armed_once_and_backs_off_while_the_same_ones_come_back() {
        let mut r = reactor();
        let now = r.clock.now;
        let (_a, a) = connect(&mut r);
        let (_b, b) = connect(&mut r);
        let timers = r.timers.len();
        park(&mut r, a, true);
        park(&mut r, b, true);
        assert_eq!(r.timers.len(), timers + 1, "one retry for both");
        let early = due_kinds(&mut r, now + STARVED_RETRY - Duration::from_nanos(1));
        assert!(!early.contains(&TimerKind::BudgetRetry), "{early:?}");
        assert!(due_kinds(&mut r, now + STARVED_RETRY).contains(&TimerKind::BudgetRetry));
        // Each retry that lets the same ones go doubles the pause, up to
        // the most.
        let mut pause = STARVED_RETRY;
        for _ in 0..8 {
            r.release_starved(false);
            take_turn(&mut r, a);
            take_turn(&mut r, b);
            pause = (pause * 2).min(STARVED_RETRY_MAX);
            assert_eq!(r.parking.retry_pause, pause);
            r.parking.retry_armed = false;
            park(&mut r, a, true);
            park(&mut r, b, true);
        }
        assert_eq!(pause, STARVED_RETRY_MAX);
        // Fewer come back: the pause starts over.
        r.release_starved(false);
        take_turn(&mut r, a);
        take_turn(&mut r, b);
        park(&mut r, a, true);
        r.release_starved(false);
        assert_eq!(r.parking.retry_pause, STARVED_RETRY);
    }

    #[test]
    fn room_lets_everyone_go_and_a_retry_only_those_waiting_for_their_send_queue() {
        let mut r = reactor();
        let (_a, a) = connect(&mut r);
        let (_b, b) = connect(&mut r);
        park(&mut r, a, false);
        park(&mut r, b, true);
        r.release_starved(false);
        assert_eq!(
            r.run_next,
            vec![token_of(&r, b)],
            "a retry lets only them go"
        );
        assert_eq!(r.parking.starved, vec![token_of(&r, a)]);
        take_turn(&mut r, b);
        park(&mut r, b, true);
        r.release_starved(true);
        assert_eq!(r.run_next.len(), 2, "room lets everyone go");
        assert!(!r.parking.any());
        assert_eq!(r.parking.retry_pause, STARVED_RETRY);
    }

    #[test]
    fn a_parked_connection_closed_meanwhile_lets_the_next_at_its_key_alone() {
        let mut r = reactor();
        let (_a, a) = connect(&mut r);
        park(&mut r, a, false);
        r.close(a, crate::connection::CloseReason::PeerClosed);
        let (_b, b) = connect(&mut r);
        assert_eq!(a, b, "the slab did not reuse the key");
        r.release_starved(true);
        assert!(
            r.run_next.is_empty(),
            "the next connection at the key let go"
        );
    }

    #[test]
    fn a_line_mode_park_arms_one_reclaim_check() {
        let mut r = line_reactor();
        let now = r.clock.now;
        let (_a, a) = connect(&mut r);
        let (_b, b) = connect(&mut r);
        let timers = r.timers.len();
        park(&mut r, a, false);
        park(&mut r, b, false);
        assert!(r.parking.reclaim_armed);
        assert_eq!(r.timers.len(), timers + 1, "one check for both");
        let early = due_kinds(&mut r, now + RECLAIM_CHECK - Duration::from_nanos(1));
        assert!(!early.contains(&TimerKind::ReclaimCheck), "{early:?}");
        assert!(due_kinds(&mut r, now + RECLAIM_CHECK).contains(&TimerKind::ReclaimCheck));
    }

    #[test]
    fn a_split_message_silent_for_the_stall_gives_back_its_reservation_while_others_wait() {
        let mut r = line_reactor();
        let start = r.clock.now;
        // Half a line: charged a whole line's reservation.
        let (mut half, holder) = connect(&mut r);
        half.write_all(b"half a line").expect("send");
        for tries in 0.. {
            turn(&mut r, holder);
            if r.conns[holder].held() > 0 {
                break;
            }
            assert!(tries < 10_000, "the half line never arrived");
        }
        let charged = r.conns[holder].held();
        // A connection that holds nothing, stalled as long.
        let (_quiet, _) = connect(&mut r);
        // Nobody waits for room: nothing is taken back, and no check is
        // armed again.
        set_clock(&mut r, start + RESERVATION_STALL);
        let timers = r.timers.len();
        r.reclaim_stalled();
        assert_eq!(r.conns[holder].held(), charged);
        assert_eq!(r.timers.len(), timers);
        // Someone waits (only for room); a nanosecond short of the stall.
        set_clock(&mut r, start);
        let (_waiting, waiting) = connect(&mut r);
        park(&mut r, waiting, false);
        set_clock(&mut r, start + RESERVATION_STALL - Duration::from_nanos(1));
        r.reclaim_stalled();
        assert_eq!(r.conns[holder].held(), charged, "taken back too early");
        // Exactly the stall: taken back, counted once, and checked again
        // one interval on.
        let used = r.budget.used();
        let now = start + RESERVATION_STALL;
        set_clock(&mut r, now);
        // (The checks armed so far are out of the way.)
        while r.timers.pop_due(now + RECLAIM_CHECK).is_some() {}
        r.reclaim_stalled();
        let held = r.conns[holder].held();
        assert!(held < charged, "kept its reservation");
        assert_eq!(r.budget.used(), used - (charged - held));
        assert_eq!(r.stats.reservations_released, 1);
        assert!(r.parking.reclaim_armed);
        let early = due_kinds(&mut r, now + RECLAIM_CHECK - Duration::from_nanos(1));
        assert!(!early.contains(&TimerKind::ReclaimCheck), "{early:?}");
        assert!(due_kinds(&mut r, now + RECLAIM_CHECK).contains(&TimerKind::ReclaimCheck));
        // Only waiting for a send queue counts as waiting too.
        r.parking.starved.clear();
        r.parking.retrying.push(token_of(&r, waiting));
        let timers = r.timers.len();
        r.reclaim_stalled();
        assert_eq!(
            r.timers.len(),
            timers + 1,
            "not checked while one waits to retry"
        );
    }

    /// The kinds of the timers due by `at` (taken out of the heap).
    fn due_kinds(r: &mut Reactor<Epoll>, at: Instant) -> Vec<TimerKind> {
        std::iter::from_fn(|| r.timers.pop_due(at)).collect()
    }
}
