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

/// Who answers a connection, for a banner template: the host's name and
/// the worker slot.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    host: String,
    worker: usize,
}

impl Who {
    /// This host (`gethostname`), as worker `worker` (0 for one process).
    pub(crate) fn this_host(worker: Option<usize>) -> Who {
        let mut name = [0u8; 256];
        // SAFETY: the buffer is valid and writable for its length, which
        // is passed; the name is NUL-terminated when it fits, and cut at
        // the first NUL below either way.
        let rc = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
        let host = if rc == 0 {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        } else {
            String::from("unknown")
        };
        Who {
            host,
            worker: worker.unwrap_or(0),
        }
    }
}

/// Line mode's `--banner` rendered for a connection from `peer` (the
/// client a PROXY header named, with `--proxy-protocol`): `{peer}`,
/// `{host}` and `{worker}` replaced; `None` when it has none of them
/// (then the banner is sent as it is, with no copy).
pub(crate) fn render_banner(template: &[u8], peer: SocketAddr, who: &Who) -> Option<Vec<u8>> {
    const NAMES: [&[u8]; 3] = [b"{peer}", b"{host}", b"{worker}"];
    let has = |name: &[u8]| template.windows(name.len()).any(|w| w == name);
    if !NAMES.iter().any(|n| has(n)) {
        return None;
    }
    let values = [peer.to_string(), who.host.clone(), who.worker.to_string()];
    let mut out = Vec::with_capacity(template.len() + 64);
    let mut rest = template;
    'scan: while !rest.is_empty() {
        for (name, value) in NAMES.iter().zip(&values) {
            if rest.starts_with(name) {
                out.extend_from_slice(value.as_bytes());
                rest = &rest[name.len()..];
                continue 'scan;
            }
        }
        out.push(rest[0]);
        rest = &rest[1..];
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_banner_template_names_the_peer_the_host_and_the_worker() {
        let who = Who {
            host: "box".into(),
            worker: 3,
        };
        let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let got = render_banner(b"hello {peer} from {host} worker {worker}\n", peer, &who);
        assert_eq!(
            got.as_deref(),
            Some(&b"hello 192.0.2.1:4000 from box worker 3\n"[..])
        );
        let got = render_banner(b"{host}{host} {nope} {peer", peer, &who);
        assert_eq!(got.as_deref(), Some(&b"boxbox {nope} {peer"[..]));
        assert_eq!(render_banner(b"plain {x}\n", peer, &who), None);
        assert_eq!(render_banner(b"", peer, &who), None);
    }

    #[test]
    fn this_host_has_a_name() {
        let who = Who::this_host(None);
        assert!(!who.host.is_empty() && who.worker == 0);
        assert_eq!(Who::this_host(Some(2)).worker, 2);
    }

    #[test]
    fn every_service_has_a_name_that_reads_back() {
        for s in [
            Service::Echo,
            Service::Daytime,
            Service::Metrics,
            Service::Discard,
            Service::Chargen,
        ] {
            assert_eq!(Service::from_name(s.name()), Some(s));
        }
    }
}
