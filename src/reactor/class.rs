//! Connection classes: what kind of connection a token names, and so what
//! the loop lends it and how it admits, bounds and ends it.
//!
//! A connection's class is decided once, by the service of the listener
//! that accepted it, and carried in the top bit of its token's generation
//! (`token.rs`): the loop routes an event to its class with no field in
//! the connection and no look-up, and the echo class's path is compiled on
//! its own (a constant class parameter, `Reactor::with_connection`), so
//! supporting other classes costs an echo turn nothing.
//!
//! | | echo (echo and daytime listeners) | http (metrics listeners) | discard, chargen (their listeners) |
//! | --- | --- | --- | --- |
//! | what it speaks | the server's `--mode`, or an embedder's protocol | HTTP/1.1, answering from the loop's counters (`metrics/`) | nothing: input is read and dropped (`discard.rs`); chargen also sends its pattern while the socket takes it (`chargen.rs`) |
//! | read size | [`READ_BUFFER_SIZE`] | [`HTTP_READ`] | [`READ_BUFFER_SIZE`] |
//! | memory budget | the budget's own profile | HTTP's: a whole page may answer a 23-byte request | a read holds nothing; chargen holds at most one pattern cycle, charged before it is held |
//! | how many | `--max-connections`, and `--max-connections-per-ip` | `--metrics-max-connections`; at the limit the one idle longest makes room | as echo (each class its own `--max-connections`) |
//! | turned away with | `ERR too many connections` | `503 Service Unavailable` | as echo |
//! | deadline | `--idle-timeout` | a request check every [`HTTP_CHECK_INTERVAL`]: a stalled head or unread answer, and `--metrics-idle-timeout` | as echo |
//! | holds a shutdown up | yes | no: served on with `Connection: close` while the others drain, so that `/healthz` can say 503 | yes |
//!
//! The faults class (`--delay`, `--close-after`, `--reset-after`,
//! `faults.rs`) is the echo class with a turn of its own
//! (`connection/faults.rs`) and state beside the connection: with a fault
//! flag every echo connection is of this class, without one none is, and
//! the echo class's turn is the same code either way.
//!
//! [`READ_BUFFER_SIZE`]: super::READ_BUFFER_SIZE

use std::ops::{Index, IndexMut};
use std::sync::Arc;
use std::time::Duration;

use crate::budget::{Budget, Profile};
use crate::discard::Swallow;
use crate::metrics::{self, PageCell};
use crate::protocol::Handler;
use crate::service::Service;
use crate::token;

/// The largest read of a metrics (HTTP) connection: a request head takes
/// one or two, and the budget reserves an answer's worth per request
/// that fits in it (`metrics/http.rs`). Not above
/// [`PRESSURE_READ`](crate::connection::PRESSURE_READ), the most a
/// connection asks for under memory pressure.
pub(crate) const HTTP_READ: usize = 4096;

/// How often a metrics connection is checked for a stalled request: one
/// that holds half a request head (or an answer its client does not read)
/// at two checks in a row is closed, so a head has 2 to 4 s to arrive
/// (slowloris). The same check closes a keep-alive connection silent for
/// `--metrics-idle-timeout` (so up to this much later).
pub(crate) const HTTP_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// What kind of connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Echo and daytime connections: the server's own.
    Echo,
    /// Metrics connections.
    Http,
    /// Discard connections (RFC 863): every byte read and dropped.
    Discard,
    /// Character generator connections (RFC 864): input dropped, the
    /// pattern sent while the socket takes it.
    Chargen,
    /// Echo connections with faults on demand (`--delay`,
    /// `--close-after`, `--reset-after`; `faults.rs`): every echo
    /// connection when a fault flag is given, none otherwise.
    Faults,
}

impl Class {
    /// Every class, in index order.
    pub(crate) const ALL: [Class; 5] = [
        Class::Echo,
        Class::Http,
        Class::Discard,
        Class::Chargen,
        Class::Faults,
    ];

    /// The class of a connection accepted on a listener of `service`.
    pub(crate) fn of(service: Service) -> Class {
        match service {
            Service::Echo | Service::Daytime => Class::Echo,
            Service::Metrics => Class::Http,
            Service::Discard => Class::Discard,
            Service::Chargen => Class::Chargen,
        }
    }

    /// The class a connection's generation carries. The echo class is one
    /// bit test (the loop's common case); the others are named by the two
    /// bits below it (`token.rs`).
    #[inline(always)]
    pub(crate) fn of_generation(generation: u32) -> Class {
        if generation & token::CLASS_BIT == 0 {
            Class::Echo
        } else {
            match (generation >> token::OTHER_CLASS_SHIFT) & 0b11 {
                0 => Class::Http,
                1 => Class::Discard,
                2 => Class::Chargen,
                _ => Class::Faults,
            }
        }
    }

    /// `generation` (below [`token::GENERATION_LIMIT`]) marked with this
    /// class.
    pub(crate) fn mark(self, generation: u32) -> u32 {
        let other = |bits: u32| generation | token::CLASS_BIT | bits << token::OTHER_CLASS_SHIFT;
        match self {
            Class::Echo => generation,
            Class::Http => other(0),
            Class::Discard => other(1),
            Class::Chargen => other(2),
            Class::Faults => other(3),
        }
    }

    /// Its index in [`Classes`] (and the constant `Reactor::with_connection`
    /// is compiled for).
    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// Whether the loop's end waits for its connections (a graceful
    /// shutdown drains them).
    pub(crate) fn holds_shutdown(self) -> bool {
        self != Class::Http
    }

    /// Whether it is one of the server's own small services (echo,
    /// daytime, discard, chargen): admitted, bounded and timed alike
    /// (`--max-connections-per-ip`, `--idle-timeout`, turned away with
    /// `ERR too many connections`).
    pub(crate) fn is_small_service(self) -> bool {
        self != Class::Http
    }
}

/// What the loop keeps for one class.
#[derive(Debug)]
pub(crate) struct ClassState {
    /// What its connections speak.
    pub(crate) handler: Handler,
    /// The budget's view of one read of its connections.
    pub(crate) profile: Profile,
    /// How much one read may take.
    pub(crate) read_size: usize,
    /// Its connections open now.
    pub(crate) open: usize,
    /// The most it may have open.
    pub(crate) limit: usize,
}

impl ClassState {
    /// A class speaking `handler`, reading up to `read_size` at a time (its
    /// budget profile follows from both), with at most `limit` open.
    fn new(handler: Handler, budget: &Budget, read_size: usize, limit: usize) -> ClassState {
        ClassState {
            profile: budget.profile(
                read_size,
                handler.amplification(),
                handler.max_reservation(),
            ),
            handler,
            read_size,
            open: 0,
            limit,
        }
    }
}

/// Every class's state, indexed by [`Class`]; and the page the http class
/// answers from.
#[derive(Debug)]
pub(crate) struct Classes {
    states: [ClassState; 5],
    /// What metrics connections answer from (refreshed before each of
    /// their turns).
    pub(crate) page: Arc<PageCell>,
}

impl Classes {
    /// The echo class speaking `handler` with at most `max_echo`
    /// connections (its budget profile is the budget's own), and the http
    /// class with at most `max_http`.
    pub(crate) fn new(
        handler: Handler,
        budget: &Budget,
        read_size: usize,
        max_echo: usize,
        max_http: usize,
    ) -> Classes {
        let echo = ClassState::new(handler, budget, read_size, max_echo);
        let page = PageCell::new(None);
        let http = http_state(&page, budget, max_http);
        let discard = swallow_state(budget, read_size, max_echo);
        let chargen = swallow_state(budget, read_size, max_echo);
        // Raw echo only (the server refuses fault flags in other modes).
        let faults = ClassState {
            profile: echo.profile,
            handler: Handler::Raw,
            read_size,
            open: 0,
            limit: max_echo,
        };
        Classes {
            states: [echo, http, discard, chargen, faults],
            page,
        }
    }

    /// Metrics connections answer from `page` instead of the loop's
    /// counters.
    pub(crate) fn serve_page(&mut self, page: Arc<dyn metrics::Page + Sync>, budget: &Budget) {
        self.page = PageCell::new(Some(page));
        let limit = self[Class::Http].limit;
        self.states[Class::Http.index()] = http_state(&self.page, budget, limit);
    }

    /// Connections open in classes that do not hold a shutdown up.
    pub(crate) fn open_not_holding(&self) -> usize {
        (Class::ALL.iter())
            .filter(|c| !c.holds_shutdown())
            .map(|&c| self[c].open)
            .sum()
    }

    /// The state at index `i` (a constant in the loop's turn).
    #[inline(always)]
    pub(crate) fn at(&mut self, i: usize) -> &mut ClassState {
        &mut self.states[i]
    }
}

fn http_state(page: &Arc<PageCell>, budget: &Budget, limit: usize) -> ClassState {
    ClassState::new(metrics::loop_http(page), budget, HTTP_READ, limit)
}

/// Discard and chargen: their input is read and dropped ([`Swallow`]),
/// so a read holds nothing; what chargen sends it charges itself.
fn swallow_state(budget: &Budget, read_size: usize, limit: usize) -> ClassState {
    ClassState::new(
        Handler::Protocol(Box::new(Swallow)),
        budget,
        read_size,
        limit,
    )
}

impl Index<Class> for Classes {
    type Output = ClassState;

    fn index(&self, class: Class) -> &ClassState {
        &self.states[class.index()]
    }
}

impl IndexMut<Class> for Classes {
    fn index_mut(&mut self, class: Class) -> &mut ClassState {
        &mut self.states[class.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_survives_its_generation_and_only_metrics_is_http() {
        for generation in [1, 2, token::GENERATION_LIMIT - 1] {
            for class in Class::ALL {
                assert_eq!(Class::of_generation(class.mark(generation)), class);
            }
        }
        assert_eq!(Class::of(Service::Echo), Class::Echo);
        assert_eq!(Class::of(Service::Daytime), Class::Echo);
        assert_eq!(Class::of(Service::Metrics), Class::Http);
        assert_eq!(Class::of(Service::Discard), Class::Discard);
        assert_eq!(Class::of(Service::Chargen), Class::Chargen);
        assert!(Class::Echo.holds_shutdown() && !Class::Http.holds_shutdown());
        assert!(Class::Discard.holds_shutdown() && Class::Chargen.holds_shutdown());
        assert!(Class::Faults.holds_shutdown() && Class::Faults.is_small_service());
        for (i, class) in Class::ALL.into_iter().enumerate() {
            assert_eq!(class.index(), i);
        }
    }
}
