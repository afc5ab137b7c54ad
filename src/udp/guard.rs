//! The loop guard: which datagrams must go unanswered because answering
//! could start a loop, or keep one going (see the module docs of `udp`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Source ports of services that answer any datagram unprompted: echo (7),
/// systat (11), daytime (13), qotd (17), chargen (19), time (37). A reply
/// to one of them comes back, and a loop starts.
pub(crate) const REFLECTING_PORTS: [u16; 6] = [7, 11, 13, 17, 19, 37];

/// Peers whose recent answers the guard remembers: a direct-mapped table
/// (a peer's slot is a hash of its address; a newcomer takes the slot of
/// whoever had it), so that no datagram allocates and a scan of many
/// sources pins no memory. 256 slots of 120 bytes: 30 KiB.
pub(crate) const PEER_SLOTS: usize = 256;

/// Answers remembered per peer: a loop of up to this many datagrams in
/// flight between two services is caught.
pub(crate) const RECENT_ANSWERS: usize = 8;

/// Repeats of a recent answer from one peer answered in a row before the
/// rate below applies. A one-datagram loop between two servers dies after
/// about twice this many exchanges.
pub(crate) const REPEAT_BURST: u32 = 8;

/// Repeats of a recent answer answered per second and peer once the burst
/// is spent: a client sending the same payload this often or less is
/// served in full.
pub(crate) const REPEATS_PER_SEC: u32 = 10;

/// One remembered peer.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// Whose slot it is now; `None` while unused.
    addr: Option<SocketAddr>,
    /// Fingerprints of the last answers sent to it (0: none), a ring.
    answers: [u64; RECENT_ANSWERS],
    /// Where the next answer's fingerprint goes.
    next: usize,
    /// The repeat allowance as a "theoretical arrival time" (GCRA): each
    /// repeat answered pushes it one interval on; a repeat that would push
    /// it more than the burst past now is refused.
    repeats_at: Option<Instant>,
}

const EMPTY_PEER: Peer = Peer {
    addr: None,
    answers: [0; RECENT_ANSWERS],
    next: 0,
    repeats_at: None,
};

/// Decides which datagrams must not be answered (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct LoopGuard {
    /// Every UDP socket of this server, as bound.
    own: Vec<SocketAddr>,
    /// Recently answered peers ([`PEER_SLOTS`]).
    peers: Box<[Peer]>,
}

impl Default for LoopGuard {
    fn default() -> LoopGuard {
        LoopGuard::new(Vec::new())
    }
}

/// The time one repeat takes from the allowance.
const REPEAT_INTERVAL: Duration = Duration::from_nanos(1_000_000_000 / REPEATS_PER_SEC as u64);

/// A cheap fingerprint of a datagram: its length, its first and its last
/// 64 bytes (all of it up to 128), eight bytes at a time. Two different
/// datagrams of one client differ there in practice (a sequence number, a
/// timestamp); a wrong match costs one unanswered repeat at worst.
pub(crate) fn fingerprint(data: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (data.len() as u64 ^ 0x51_7CC1_B727_220A).wrapping_mul(K);
    let head = &data[..data.len().min(64)];
    let tail = &data[data.len().saturating_sub(64).max(head.len())..];
    for part in [head, tail] {
        for chunk in part.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(word))
                .wrapping_mul(K)
                .rotate_left(29);
        }
    }
    // Never 0, which marks an empty entry.
    h | 1
}

/// The slot of `peer` in the table.
fn slot_of(peer: SocketAddr) -> usize {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let ip = match peer.ip() {
        IpAddr::V4(ip) => u64::from(u32::from(ip)),
        IpAddr::V6(ip) => {
            let bits = u128::from(ip);
            (bits as u64) ^ ((bits >> 64) as u64).rotate_left(17)
        }
    };
    let h = (ip << 16 | u64::from(peer.port())).wrapping_mul(K);
    (h >> 56) as usize % PEER_SLOTS
}

impl LoopGuard {
    /// A guard for a server whose UDP sockets are bound to `own`.
    pub(crate) fn new(own: Vec<SocketAddr>) -> LoopGuard {
        LoopGuard {
            own,
            peers: vec![EMPTY_PEER; PEER_SLOTS].into_boxed_slice(),
        }
    }

    /// Whether a datagram from `peer` with fingerprint `print`, arriving
    /// at `now`, repeats a recent answer to that peer past the allowance
    /// (and must go unanswered: a loop, most likely).
    #[inline]
    pub(crate) fn repeats_too_often(&mut self, peer: SocketAddr, print: u64, now: Instant) -> bool {
        let slot = &mut self.peers[slot_of(peer)];
        if slot.addr != Some(peer) || !slot.answers.contains(&print) {
            return false;
        }
        let at = slot.repeats_at.map_or(now, |at| at.max(now)) + REPEAT_INTERVAL;
        if at.saturating_duration_since(now) > REPEAT_INTERVAL * REPEAT_BURST {
            return true;
        }
        slot.repeats_at = Some(at);
        false
    }

    /// Remembers that `peer` was sent an answer with fingerprint `print`.
    #[inline]
    pub(crate) fn answered(&mut self, peer: SocketAddr, print: u64) {
        let slot = &mut self.peers[slot_of(peer)];
        if slot.addr != Some(peer) {
            *slot = EMPTY_PEER;
            slot.addr = Some(peer);
        }
        slot.answers[slot.next] = print;
        slot.next = (slot.next + 1) % RECENT_ANSWERS;
    }

    /// Whether a datagram from `peer` must go unanswered.
    pub(crate) fn refuses(&self, peer: SocketAddr) -> bool {
        let port = peer.port();
        port == 0
            || REFLECTING_PORTS.contains(&port)
            || self.own.iter().any(|own| {
                own.port() == port
                    && own.is_ipv4() == peer.is_ipv4()
                    && (own.ip() == peer.ip() || own.ip().is_unspecified())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_sockets_reflectors_and_port_zero_are_refused() {
        let guard = LoopGuard::new(vec![addr("127.0.0.1:9000"), addr("0.0.0.0:9013")]);
        assert!(guard.refuses(addr("127.0.0.1:9000")), "our own socket");
        assert!(guard.refuses(addr("127.0.0.5:9013")), "our wildcard socket");
        assert!(guard.refuses(addr("10.1.1.1:19")), "chargen");
        assert!(guard.refuses(addr("10.1.1.1:7")), "echo");
        assert!(guard.refuses(addr("10.1.1.1:0")), "port 0");
        assert!(
            !guard.refuses(addr("127.0.0.2:9000")),
            "same port, other host"
        );
        assert!(!guard.refuses(addr("127.0.0.1:40000")), "a client");
        assert!(!guard.refuses(addr("[::1]:9013")), "other family");
    }

    #[test]
    fn repeats_of_recent_answers_are_answered_up_to_the_allowance() {
        let mut guard = LoopGuard::default();
        let (peer, other) = (addr("10.0.0.1:5000"), addr("10.0.0.2:5000"));
        let now = Instant::now();
        let ping = fingerprint(b"ping");
        assert!(!guard.repeats_too_often(peer, ping, now), "never answered");
        guard.answered(peer, ping);
        for i in 0..REPEAT_BURST {
            assert!(!guard.repeats_too_often(peer, ping, now), "repeat {i}");
            guard.answered(peer, ping);
        }
        assert!(guard.repeats_too_often(peer, ping, now), "past the burst");
        // Something new from the same peer, and the same from another peer.
        assert!(!guard.repeats_too_often(peer, fingerprint(b"pong"), now));
        assert!(!guard.repeats_too_often(other, ping, now));
        // The allowance comes back with time: one repeat per interval.
        let later = now + REPEAT_INTERVAL;
        assert!(!guard.repeats_too_often(peer, ping, later));
        assert!(guard.repeats_too_often(peer, ping, later));
        let much_later = now + REPEAT_INTERVAL * (2 * REPEAT_BURST);
        for _ in 0..REPEAT_BURST {
            assert!(!guard.repeats_too_often(peer, ping, much_later));
        }
    }

    #[test]
    fn every_recent_answer_counts_and_older_ones_are_forgotten() {
        let mut guard = LoopGuard::default();
        let peer = addr("10.0.0.1:5000");
        let now = Instant::now();
        let prints: Vec<u64> = (0..=RECENT_ANSWERS as u64)
            .map(|i| fingerprint(&i.to_le_bytes()))
            .collect();
        for &p in &prints {
            guard.answered(peer, p);
        }
        // The first was pushed out of the ring; the others are repeats.
        let repeats = |guard: &mut LoopGuard, p| {
            (0..=REPEAT_BURST).any(|_| guard.repeats_too_often(peer, p, now))
        };
        assert!(!repeats(&mut guard, prints[0]));
        assert!(repeats(&mut guard, prints[RECENT_ANSWERS]));
    }

    #[test]
    fn fingerprints_see_length_head_and_tail() {
        let base = vec![7u8; 1000];
        let mut head = base.clone();
        head[3] = 8;
        let mut tail = base.clone();
        tail[999] = 8;
        let prints = [
            fingerprint(&base),
            fingerprint(&head),
            fingerprint(&tail),
            fingerprint(&base[..999]),
            fingerprint(b""),
        ];
        for (i, a) in prints.iter().enumerate() {
            assert_ne!(*a, 0);
            for b in &prints[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(fingerprint(b"same"), fingerprint(b"same"));
    }
}
