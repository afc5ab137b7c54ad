//! Faults on demand, for testing clients: `--delay MS` (with
//! `--delay-jitter MS`) before each echo, `--close-after BYTES` and
//! `--reset-after BYTES`.
//!
//! # A class of its own
//!
//! With any fault flag, echo listeners' connections are of the *faults*
//! class (`reactor/class.rs`), driven by their own turn
//! (`connection/faults.rs`) with their own state beside the connection
//! ([`FaultState`], in the loop's [`FaultTable`]). The echo class and its
//! path are untouched: without the flags no connection is of this class,
//! and the echo turn has no branch for it.
//!
//! # Delay: on the loop's timers, never sleeping
//!
//! A delayed connection reads as usual; each read is kept, with the time
//! it is due (now + delay, +- a random jitter, never before the chunk
//! ahead of it: bytes keep their order), and the loop schedules a timer
//! for it (`timer.rs`). When the timer fires, the connection's turn sends
//! what is due. The loop sleeps until the earliest due time, so 1,000
//! connections waiting on their delays cost nothing but the timer heap.
//! What is kept is charged to the memory budget as it is read (so the
//! read allowance applies), and above the high watermark the connection
//! stops reading, as under rule 4.
//!
//! # Close and reset after N bytes
//!
//! A connection that has been echoed `--close-after` bytes stops reading
//! and closes as the server closes any connection (flush, FIN, linger);
//! one that has been echoed `--reset-after` bytes is closed with
//! `SO_LINGER` 0 once those bytes are written, so that the client sees an
//! RST. Bytes past the limit are never echoed. Each is counted
//! (`faults_delayed`, `faults_closed`, `faults_reset`).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::config::Config;

/// How a connection is cut after its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// FIN after the last byte (`--close-after`).
    Close,
    /// RST after the last byte (`--reset-after`).
    Reset,
}

/// The faults asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Faults {
    /// Before each echo; `None`: none.
    pub(crate) delay: Option<Duration>,
    /// At most this much earlier or later than `delay`, at random.
    pub(crate) jitter: Duration,
    /// After echoing this many bytes, the connection is cut so.
    pub(crate) cut: Option<(u64, Cut)>,
}

impl Faults {
    /// The faults `config` asks for; `None` when it asks for none (then
    /// no connection is of the faults class).
    pub(crate) fn from_config(config: &Config) -> Option<Faults> {
        let delay = match (config.delay, config.delay_jitter) {
            (None, j) if j.is_zero() => None,
            (d, _) => Some(d.unwrap_or_default()),
        };
        let cut = match (config.close_after, config.reset_after) {
            (None, None) => None,
            (Some(c), None) => Some((c, Cut::Close)),
            (None, Some(r)) => Some((r, Cut::Reset)),
            (Some(c), Some(r)) if c < r => Some((c, Cut::Close)),
            (Some(_), Some(r)) => Some((r, Cut::Reset)),
        };
        (delay.is_some() || cut.is_some()).then_some(Faults {
            delay,
            jitter: config.delay_jitter,
            cut,
        })
    }
}

impl Faults {
    /// [`Faults::from_config`], for a server whose connections speak
    /// `handler`: faults are raw mode's only.
    pub(crate) fn for_server(
        config: &Config,
        handler: &crate::protocol::Handler,
    ) -> std::io::Result<Option<Faults>> {
        let faults = Faults::from_config(config);
        if faults.is_some() && !matches!(handler, crate::protocol::Handler::Raw) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "--delay, --delay-jitter, --close-after and --reset-after work in raw mode only",
            ));
        }
        Ok(faults)
    }
}

/// Bytes read and not yet due.
#[derive(Debug)]
pub(crate) struct Delayed {
    /// When they go out.
    pub(crate) due: Instant,
    /// What goes out then.
    pub(crate) bytes: Vec<u8>,
}

/// One faults-class connection's state.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    /// Reads waiting for their delay, oldest first.
    pub(crate) queue: VecDeque<Delayed>,
    /// Bytes in `queue`, as charged to the memory budget.
    pub(crate) held: usize,
    /// Bytes echoed (handed to the socket or its pending output) so far.
    pub(crate) echoed: u64,
    /// Its byte limit is reached: it reads no more and is being cut.
    pub(crate) cut: Option<Cut>,
}

/// The loop's faults: what was asked, and each faults-class connection's
/// state by slab key.
#[derive(Debug)]
pub(crate) struct FaultTable {
    pub(crate) faults: Faults,
    states: HashMap<usize, FaultState>,
    /// xorshift64 state for the jitter.
    rng: u64,
}

impl FaultTable {
    pub(crate) fn new(faults: Faults) -> FaultTable {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
        FaultTable {
            faults,
            states: HashMap::new(),
            rng: seed | 1,
        }
    }

    /// The state of the connection at `key`, taken out for its turn (a
    /// fresh one for a new connection).
    pub(crate) fn take(&mut self, key: usize) -> FaultState {
        self.states.remove(&key).unwrap_or_default()
    }

    /// Puts back the state taken for a turn.
    pub(crate) fn put(&mut self, key: usize, state: FaultState) {
        self.states.insert(key, state);
    }

    /// The state of a connection that closed (if it is in the table).
    pub(crate) fn remove(&mut self, key: usize) -> Option<FaultState> {
        self.states.remove(&key)
    }

    /// When a read at `now` is due: after the delay, +- the jitter.
    pub(crate) fn due(&mut self, now: Instant) -> Instant {
        let delay = self.faults.delay.unwrap_or_default();
        let jitter = self.faults.jitter;
        if jitter.is_zero() {
            return now + delay;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = jitter.as_nanos() as u64;
        // Uniform in [delay - jitter, delay + jitter], never before now.
        let offset = Duration::from_nanos(self.rng % (2 * span + 1));
        (now + delay + offset)
            .checked_sub(jitter)
            .map_or(now, |due| due.max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::default()
    }

    #[test]
    fn no_flag_no_faults_class() {
        assert_eq!(Faults::from_config(&config()), None);
    }

    #[test]
    fn the_smaller_limit_cuts_and_a_tie_resets() {
        let c = Config {
            close_after: Some(10),
            reset_after: Some(20),
            ..config()
        };
        assert_eq!(Faults::from_config(&c).unwrap().cut, Some((10, Cut::Close)));
        let c = Config {
            close_after: Some(20),
            reset_after: Some(20),
            ..config()
        };
        assert_eq!(Faults::from_config(&c).unwrap().cut, Some((20, Cut::Reset)));
    }

    #[test]
    fn due_times_stay_within_the_jitter_of_the_delay() {
        let c = Config {
            delay: Some(Duration::from_millis(200)),
            delay_jitter: Duration::from_millis(20),
            ..config()
        };
        let mut table = FaultTable::new(Faults::from_config(&c).unwrap());
        let now = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let due = table.due(now) - now;
            assert!(due >= Duration::from_millis(180) && due <= Duration::from_millis(220));
            seen.insert(due);
        }
        assert!(seen.len() > 100, "the jitter is random: {}", seen.len());
        let c = Config {
            delay: Some(Duration::from_millis(5)),
            delay_jitter: Duration::from_millis(50),
            ..config()
        };
        let mut table = FaultTable::new(Faults::from_config(&c).unwrap());
        for _ in 0..1000 {
            assert!(table.due(now) >= now, "never before the read");
        }
    }
}
