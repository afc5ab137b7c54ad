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
//! - **Discard** (RFC 863): TCP input is read and dropped, nothing is
//!   sent (`discard.rs`); UDP datagrams go unanswered.
//! - **Chargen** (RFC 864): TCP input is dropped, and the pattern is sent
//!   for as long as the client reads it, under the readiness rules and
//!   the memory budget (`chargen.rs`); a UDP datagram is answered with 0
//!   to 512 bytes of the pattern.
//! - **Metrics**: HTTP/1.1 for Prometheus (`metrics/`), TCP only; no
//!   greeting. Its connections are driven with the HTTP protocol instead
//!   of the server's `--mode` (`Reactor::with_connection`).

use std::borrow::Cow;
use std::net::SocketAddr;

use crate::addr::ListenAddr;
use crate::chargen;
use crate::config::Config;
use crate::daytime;
use crate::protocol::Handler;

/// What a listening socket (TCP or UDP) serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Echo (RFC 862), in the server's `--mode` for TCP.
    Echo,
    /// The current time as a line (RFC 867), then close.
    Daytime,
    /// Prometheus metrics over HTTP/1.1 (`--metrics`), whatever `--mode`
    /// says (`metrics/`). TCP only.
    Metrics,
    /// Every byte read and dropped (RFC 863).
    Discard,
    /// RFC 864's character pattern, while the client reads it.
    Chargen,
}

/// How a socket carries a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A listening TCP socket.
    Tcp,
    /// A UDP socket.
    Udp,
}

/// One socket a server serves on: what, how, and where it is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// What it serves.
    pub service: Service,
    /// TCP or UDP.
    pub transport: Transport,
    /// Where it is bound (port 0 asked for is the kernel's port here).
    pub addr: SocketAddr,
}

/// One flag's worth of addresses: a service, the transports it is
/// offered on at each address (several share the address's port), and
/// the addresses.
#[derive(Debug)]
pub(crate) struct Offer<'a> {
    pub(crate) service: Service,
    pub(crate) transports: &'static [Transport],
    pub(crate) addrs: &'a [ListenAddr],
}

/// **The list of services**, from a [`Config`]: the one place that says
/// which flag offers which service on which transports, in the order the
/// sockets are bound, registered and printed. Adding a service is a
/// variant of [`Service`], its behaviour below (greeting, datagram
/// answer, the class of its connections), its flag in [`Config`], and a
/// line here.
pub(crate) fn offers(config: &Config) -> [Offer<'_>; 6] {
    use Transport::{Tcp, Udp};
    [
        Offer {
            service: Service::Echo,
            transports: &[Tcp],
            addrs: &config.listen,
        },
        Offer {
            service: Service::Echo,
            transports: &[Udp],
            addrs: &config.udp,
        },
        Offer {
            service: Service::Daytime,
            transports: &[Tcp, Udp],
            addrs: &config.daytime,
        },
        Offer {
            service: Service::Metrics,
            transports: &[Tcp],
            addrs: &config.metrics,
        },
        Offer {
            service: Service::Discard,
            transports: &[Tcp, Udp],
            addrs: &config.discard,
        },
        Offer {
            service: Service::Chargen,
            transports: &[Tcp, Udp],
            addrs: &config.chargen,
        },
    ]
}

impl Service {
    /// Its name in a worker's inheritance (`sockets.rs`) and in logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::Echo => "echo",
            Service::Daytime => "daytime",
            Service::Metrics => "metrics",
            Service::Discard => "discard",
            Service::Chargen => "chargen",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Service> {
        [
            Service::Echo,
            Service::Daytime,
            Service::Metrics,
            Service::Discard,
            Service::Chargen,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

impl Transport {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Transport> {
        [Transport::Tcp, Transport::Udp]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

impl Endpoint {
    /// How the binary announces it: `tcp://127.0.0.1:7007`,
    /// `udp://[::1]:7 (daytime)`, `http://127.0.0.1:9090 (metrics)`.
    pub fn url(&self) -> String {
        let scheme = match (self.service, self.transport) {
            (Service::Metrics, _) => "http",
            (_, Transport::Tcp) => "tcp",
            (_, Transport::Udp) => "udp",
        };
        match self.service {
            Service::Echo => format!("{scheme}://{}", self.addr),
            Service::Daytime => format!("{scheme}://{} (daytime)", self.addr),
            Service::Metrics => format!("{scheme}://{} (metrics)", self.addr),
            Service::Discard => format!("{scheme}://{} (discard)", self.addr),
            Service::Chargen => format!("{scheme}://{} (chargen)", self.addr),
        }
    }
}

/// The addresses of `service` on `transport` among `endpoints`, in order.
pub(crate) fn addrs_of(
    endpoints: &[Endpoint],
    service: Service,
    transport: Transport,
) -> Vec<SocketAddr> {
    (endpoints.iter())
        .filter(|e| e.service == service && e.transport == transport)
        .map(|e| e.addr)
        .collect()
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
            // Chargen's stream starts after the greeting, from the
            // loop (`connection/source.rs`).
            Service::Metrics | Service::Discard | Service::Chargen => Greeting {
                bytes: Cow::Borrowed(&[]),
                then_close: false,
            },
        }
    }

    /// The answer to `datagram`, or `None` when it goes unanswered;
    /// `scratch` holds a daytime line or a chargen datagram.
    pub(crate) fn answer<'a>(
        self,
        datagram: &'a [u8],
        scratch: &'a mut String,
    ) -> Option<&'a [u8]> {
        match self {
            Service::Echo => Some(datagram),
            // No UDP socket serves metrics; discard answers nothing.
            Service::Metrics | Service::Discard => None,
            Service::Daytime => {
                *scratch = daytime::now_line();
                Some(scratch.as_bytes())
            }
            Service::Chargen => {
                chargen::random_datagram(scratch);
                Some(scratch.as_bytes())
            }
        }
    }
}
