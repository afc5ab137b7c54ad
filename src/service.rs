//! What a listening socket serves: echo, daytime, or metrics.
//!
//! The loop routes readiness and never looks at bytes; what a new
//! connection is told first, and what a datagram is answered, is decided
//! here, by the service of the socket it came through.
//!
//! - **Echo** (RFC 862): TCP connections speak the server's `--mode`, whose
//!   greeting (line mode's `--banner`) they get on connect; UDP datagrams
//!   come back as they are.
//! - **Daytime** (RFC 867): the current time as one line (`daytime.rs`),
//!   then the TCP connection is closed (flush, FIN, linger, like any
//!   close); over UDP, any datagram is answered with the line.
//! - **Metrics**: HTTP/1.1 for Prometheus (`metrics/`), TCP only; no
//!   greeting. Its connections are driven with the HTTP protocol instead
//!   of the server's `--mode` (`Reactor::with_connection`).

use std::borrow::Cow;

use crate::daytime;
use crate::protocol::Handler;

/// What a listening socket (TCP or UDP) serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// Echo (RFC 862), in the server's `--mode` for TCP.
    Echo,
    /// The current time as a line (RFC 867), then close.
    Daytime,
    /// Prometheus metrics over HTTP/1.1 (`--metrics`), whatever `--mode`
    /// says (`metrics/`). TCP only.
    Metrics,
}

/// What a new TCP connection is sent before it says anything.
#[derive(Debug)]
pub(crate) struct Greeting<'a> {
    /// The bytes, possibly none.
    pub(crate) bytes: Cow<'a, [u8]>,
    /// Whether the connection is closed once they are sent.
    pub(crate) then_close: bool,
}

impl Service {
    /// The greeting of a new connection on a server speaking `handler`.
    pub(crate) fn greeting(self, handler: &Handler) -> Greeting<'_> {
        match self {
            Service::Echo => Greeting {
                bytes: Cow::Borrowed(handler.greeting()),
                then_close: false,
            },
            Service::Daytime => Greeting {
                bytes: Cow::Owned(daytime::now_line().into_bytes()),
                then_close: true,
            },
            Service::Metrics => Greeting {
                bytes: Cow::Borrowed(&[]),
                then_close: false,
            },
        }
    }

    /// The answer to `datagram`; `scratch` holds a daytime line.
    pub(crate) fn answer<'a>(self, datagram: &'a [u8], scratch: &'a mut String) -> &'a [u8] {
        match self {
            Service::Echo => datagram,
            // No UDP socket serves metrics.
            Service::Metrics => &[],
            Service::Daytime => {
                *scratch = daytime::now_line();
                scratch.as_bytes()
            }
        }
    }
}
