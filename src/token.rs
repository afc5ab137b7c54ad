//! How a [`mio::Token`] names the thing that became ready.
//!
//! The loop owns four kinds of event sources: its own control sources (the
//! shutdown waker and the signal pipe), the TCP listeners, the UDP sockets,
//! and the connections. A token must tell them apart *and* must never let a
//! stale event reach the wrong connection. The ranges:
//!
//! ```text
//!   0, 1             waker, signals
//!   16 .. 2^16       TCP listener i = token - 16 (every service alike:
//!                    accepting is the same, the slot says what to serve)
//!   2^16 .. 2^31     UDP socket i = token - 2^16 (every UDP service)
//!   2^31 .. 2^31+2^30  a connection still sending its PROXY header, slot
//!                    i = token - 2^31 (`reactor/handshake.rs`)
//!   2^31+2^30 .. 2^32  an end of relay pair i: token - (2^31+2^30) is
//!                    2i (the client) or 2i + 1 (the upstream;
//!                    `reactor/relays.rs`)
//!   2^32 ..          connections, below
//! ```
//!
//! Listeners and UDP sockets live in vectors that never shrink while the
//! loop runs (a closed one leaves an empty slot), so their tokens need no
//! generation.
//!
//! # Why connection tokens carry a generation
//!
//! Connections live in a [`slab::Slab`], whose keys are reused as soon as an
//! entry is freed. `Registry::deregister` only promises that no *future*
//! events are reported; an event already sitting in this tick's batch, in
//! the run-next queue, or in the timer heap still names the old key. If a
//! new connection had taken that key in the meantime, the old event would
//! be delivered to it. So a connection token is
//!
//! ```text
//!   bit 63: not echo (0 echo, 1 another class: reactor/class.rs)
//!   bits 62..61: which other class (metrics, discard, chargen)
//!   bits 60..32: generation (never 0)   bits 31..0: slab key
//! ```
//!
//! and the loop acts on an event only when the connection stored under the
//! key has the same generation (the class bit included: it is part of
//! what the connection stores). The class bit routes an event to its
//! class's turn with no look-up. Control and listener tokens are below
//! 2^32, which no connection token can be, because generations start at 1.

use mio::Token;

/// The wake-up pipe behind [`crate::ShutdownHandle`].
pub(crate) const WAKER: Token = Token(0);
/// Every handled signal, delivered through a self-pipe (`signals.rs`).
pub(crate) const SIGNALS: Token = Token(1);
/// Listener `i` is `Token(LISTENER_BASE + i)`.
const LISTENER_BASE: usize = 16;
/// UDP socket `i` is `Token(UDP_BASE + i)`.
const UDP_BASE: usize = 1 << 16;
/// Most TCP listeners (echo plus daytime) one loop can tell apart.
pub(crate) const MAX_LISTENERS: usize = UDP_BASE - LISTENER_BASE;
/// Handshake slot `i` (a PROXY header awaited) is
/// `Token(HANDSHAKE_BASE + i)`. These carry no generation: a stale event
/// for a reused slot only makes it look at its socket again, which says
/// what is there.
const HANDSHAKE_BASE: usize = 1 << 31;
/// End `side` of relay pair `i` is `Token(RELAY_BASE + 2 * i + side)`.
/// No generation either: a stale event for a reused pair is a spurious
/// hint, which the pair's rules tolerate, and its timers carry their own
/// deadline (`reactor/relays.rs`).
const RELAY_BASE: usize = HANDSHAKE_BASE + (1 << 30);
/// Connection tokens start here (generation 1, key 0).
const CONNECTION_SHIFT: u32 = 32;

// The token layout needs 64-bit tokens; this reference targets 64-bit Unix.
const _: () = assert!(usize::BITS >= 64, "echo-reactor needs a 64-bit target");

/// What a token names, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The shutdown waker fired.
    Waker,
    /// A signal arrived.
    Signals,
    /// Listener number `.0`.
    Listener(usize),
    /// UDP socket number `.0`.
    Udp(usize),
    /// Handshake slot number `.0` (a PROXY header awaited).
    Handshake(usize),
    /// End `.0 % 2` ([`crate::connection::CLIENT`] or
    /// [`crate::connection::UPSTREAM`]) of relay pair `.0 / 2`.
    Relay(usize),
    /// A connection: slab key and generation.
    Connection {
        /// Index in the connection slab.
        key: usize,
        /// Generation the connection had when the token was made.
        generation: u32,
    },
    /// Anything else: never issued by us; ignored.
    Unknown,
}

/// The token of listener number `index`.
pub(crate) fn listener(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(LISTENER_BASE + index)
}

/// The token of UDP socket number `index`.
pub(crate) fn udp(index: usize) -> Token {
    debug_assert!(index < HANDSHAKE_BASE - UDP_BASE);
    Token(UDP_BASE + index)
}

/// The token of handshake slot `index`.
pub(crate) fn handshake(index: usize) -> Token {
    debug_assert!(index < RELAY_BASE - HANDSHAKE_BASE);
    Token(HANDSHAKE_BASE + index)
}

/// The token of end `side` (0 or 1) of relay pair `key`.
pub(crate) fn relay(key: usize, side: usize) -> Token {
    debug_assert!(side < 2 && key < ((1 << CONNECTION_SHIFT) - RELAY_BASE) / 2);
    Token(RELAY_BASE + 2 * key + side)
}

/// The token of the connection at slab `key` with `generation` (> 0).
pub(crate) fn connection(key: usize, generation: u32) -> Token {
    debug_assert!(generation != 0 && key <= u32::MAX as usize);
    Token(((generation as usize) << CONNECTION_SHIFT) | key)
}

/// Decodes a token made by this module.
pub(crate) fn decode(token: Token) -> Target {
    let raw = token.0;
    let generation = (raw >> CONNECTION_SHIFT) as u32;
    if generation != 0 {
        return Target::Connection {
            key: raw & (u32::MAX as usize),
            generation,
        };
    }
    match raw {
        0 => Target::Waker,
        1 => Target::Signals,
        n if n >= RELAY_BASE => Target::Relay(n - RELAY_BASE),
        n if n >= HANDSHAKE_BASE => Target::Handshake(n - HANDSHAKE_BASE),
        n if n >= UDP_BASE => Target::Udp(n - UDP_BASE),
        n if n >= LISTENER_BASE => Target::Listener(n - LISTENER_BASE),
        _ => Target::Unknown,
    }
}

/// The generation a connection token carries (0 for other tokens).
pub(crate) fn generation_of(token: Token) -> u32 {
    (token.0 >> CONNECTION_SHIFT) as u32
}

/// The generation bit that says a connection is not of the echo class
/// (`reactor/class.rs`): the loop picks what drives the connection from
/// its token, with no field in the connection and no look-up. Which other
/// class it is, the two bits below say ([`OTHER_CLASS_SHIFT`]).
/// Generations proper stay below those ([`GENERATION_LIMIT`]).
pub(crate) const CLASS_BIT: u32 = 1 << 31;

/// Where the two bits naming a class other than echo start.
pub(crate) const OTHER_CLASS_SHIFT: u32 = 29;

/// Generations proper are below this (they wrap to 1 there).
pub(crate) const GENERATION_LIMIT: u32 = 1 << OTHER_CLASS_SHIFT;

/// The class's name in a log line, for the classes with their own.
fn class_name(generation: u32) -> &'static str {
    match generation >> OTHER_CLASS_SHIFT {
        0b100 => "http",
        0b101 => "discard",
        0b110 => "chargen",
        0b111 => "faults",
        _ => "conn",
    }
}

/// A token as log lines name what it stands for, the same way in every
/// line: `conn 12/3` (slab key 12, generation 3), `listener 0`, `udp 1`,
/// `waker`, `signals`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Named(pub Token);

impl std::fmt::Display for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match decode(self.0) {
            // The class's name (`conn` for echo) and the generation proper.
            Target::Connection { key, generation } => {
                let name = class_name(generation);
                write!(f, "{name} {key}/{}", generation % GENERATION_LIMIT)
            }
            Target::Listener(i) => write!(f, "listener {i}"),
            Target::Udp(i) => write!(f, "udp {i}"),
            Target::Handshake(i) => write!(f, "handshake {i}"),
            Target::Relay(end) if end % 2 == 0 => write!(f, "relay {} client", end / 2),
            Target::Relay(end) => write!(f, "relay {} upstream", end / 2),
            Target::Waker => f.write_str("waker"),
            Target::Signals => f.write_str("signals"),
            Target::Unknown => write!(f, "token {}", self.0.0),
        }
    }
}

/// Hands out connection generations: 1, 2, ... wrapping before [`CLASS_BIT`]
/// (2^31) back to 1. A collision would need two billion connections to be opened
/// between an event's arrival and its handling, which cannot happen within
/// one tick.
#[derive(Debug, Default)]
pub(crate) struct Generations {
    last: u32,
}

impl Generations {
    /// The next generation; never 0.
    pub(crate) fn next_generation(&mut self) -> u32 {
        self.last = if self.last + 1 >= GENERATION_LIMIT {
            1
        } else {
            self.last + 1
        };
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(decode(WAKER), Target::Waker);
        assert_eq!(decode(SIGNALS), Target::Signals);
        assert_eq!(decode(listener(3)), Target::Listener(3));
        assert_eq!(
            decode(listener(MAX_LISTENERS - 1)),
            Target::Listener(MAX_LISTENERS - 1)
        );
        assert_eq!(decode(udp(0)), Target::Udp(0));
        assert_eq!(decode(udp(5)), Target::Udp(5));
        assert_eq!(decode(handshake(0)), Target::Handshake(0));
        assert_eq!(decode(handshake(9)), Target::Handshake(9));
        assert_eq!(decode(relay(0, 0)), Target::Relay(0));
        assert_eq!(decode(relay(7, 1)), Target::Relay(15));
        assert_eq!(Named(relay(7, 1)).to_string(), "relay 7 upstream");
        assert_eq!(Named(relay(3, 0)).to_string(), "relay 3 client");
        let last = ((1 << CONNECTION_SHIFT) - RELAY_BASE) / 2 - 1;
        assert_eq!(decode(relay(last, 1)), Target::Relay(2 * last + 1));
        assert_eq!(
            decode(handshake((1 << 30) - 1)),
            Target::Handshake((1 << 30) - 1)
        );
        let t = connection(41, 7);
        assert_eq!(
            decode(t),
            Target::Connection {
                key: 41,
                generation: 7
            }
        );
    }

    #[test]
    fn the_ranges_meet_and_nothing_below_the_listeners_is_one() {
        // Every range starts where the one below ends: no token is two
        // things, and none is left out.
        assert_eq!(listener(MAX_LISTENERS - 1).0 + 1, udp(0).0);
        assert_eq!(
            decode(Token(UDP_BASE - 1)),
            Target::Listener(MAX_LISTENERS - 1)
        );
        assert_eq!(
            decode(Token(HANDSHAKE_BASE - 1)),
            Target::Udp(HANDSHAKE_BASE - 1 - UDP_BASE)
        );
        assert_eq!(
            decode(Token(RELAY_BASE - 1)),
            Target::Handshake(RELAY_BASE - 1 - HANDSHAKE_BASE)
        );
        for raw in 2..LISTENER_BASE {
            assert_eq!(decode(Token(raw)), Target::Unknown, "token {raw}");
        }
        assert_eq!(Named(Token(7)).to_string(), "token 7");
    }

    #[test]
    fn log_names_are_the_same_everywhere() {
        assert_eq!(Named(connection(12, 3)).to_string(), "conn 12/3");
        assert_eq!(generation_of(connection(12, 3)), 3);
        assert_eq!(Named(listener(0)).to_string(), "listener 0");
    }

    #[test]
    fn same_key_different_generation_is_a_different_token() {
        assert_ne!(connection(5, 1), connection(5, 2));
    }

    #[test]
    fn generations_skip_zero_on_wrap() {
        let mut g = Generations {
            last: GENERATION_LIMIT - 2,
        };
        assert_eq!(g.next_generation(), GENERATION_LIMIT - 1);
        assert_eq!(g.next_generation(), 1);
        assert_eq!(Named(connection(3, CLASS_BIT | 7)).to_string(), "http 3/7");
        let discard = CLASS_BIT | 1 << OTHER_CLASS_SHIFT | 7;
        assert_eq!(Named(connection(3, discard)).to_string(), "discard 3/7");
        let chargen = CLASS_BIT | 2 << OTHER_CLASS_SHIFT | 7;
        assert_eq!(Named(connection(3, chargen)).to_string(), "chargen 3/7");
        let faults = CLASS_BIT | 3 << OTHER_CLASS_SHIFT | 7;
        assert_eq!(Named(connection(3, faults)).to_string(), "faults 3/7");
        // A generation of the echo class whose bits below the class bits
        // are set is still plain `conn`.
        let high = GENERATION_LIMIT - 1;
        assert_eq!(
            Named(connection(3, high)).to_string(),
            format!("conn 3/{high}")
        );
    }
}
