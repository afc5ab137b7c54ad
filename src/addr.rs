//! Listen addresses: `HOST:PORT` as a user writes it, resolved the way
//! getaddrinfo does.
//!
//! Accepted forms: an IPv4 literal (`127.0.0.1:7007`), a bracketed IPv6
//! literal (`[::1]:7007`), or a host name (`localhost:7007`). A name may
//! resolve to several addresses (`localhost` is usually `127.0.0.1` and
//! `::1`); the server binds every one of them, as servers that use
//! getaddrinfo's list do. Port 0 asks the kernel for a free port.
//!
//! Parsing is strict and happens before anything is bound, so a typo is a
//! usage error (exit code 2), while a name that does not resolve is a
//! runtime error (exit code 1).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A parsed, not yet resolved, listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Name(String),
}

/// Why a listen address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError(String);

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddrError {}

impl FromStr for ListenAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, AddrError> {
        let err = |why: &str| AddrError(format!("invalid address {s:?}: {why}"));
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| err("expected HOST:PORT, e.g. 127.0.0.1:7007 or [::1]:7007"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| err("port must be a number from 0 to 65535"))?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| err("missing ']' after IPv6 address"))?;
            Host::V6(inner.parse().map_err(|_| err("bad IPv6 address"))?)
        } else if host.contains(':') {
            return Err(err("write IPv6 addresses in brackets, e.g. [::1]:7007"));
        } else if !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            Host::V4(host.parse().map_err(|_| err("bad IPv4 address"))?)
        } else if is_host_name(host) {
            Host::Name(host.to_string())
        } else {
            return Err(err("bad host name"));
        };
        Ok(ListenAddr { host, port })
    }
}

/// Letters, digits, hyphens and dots, 1 to 253 characters (RFC 1123).
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::V4(ip) => write!(f, "{ip}:{}", self.port),
            Host::V6(ip) => write!(f, "[{ip}]:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl ListenAddr {
    /// Every socket address this stands for, without duplicates, in the
    /// resolver's order. Literals need no lookup.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let found: Vec<SocketAddr> = match &self.host {
            Host::V4(ip) => vec![SocketAddr::from((*ip, self.port))],
            Host::V6(ip) => vec![SocketAddr::from((*ip, self.port))],
            Host::Name(name) => (name.as_str(), self.port).to_socket_addrs()?.collect(),
        };
        let mut unique = Vec::with_capacity(found.len());
        for addr in found {
            if !unique.contains(&addr) {
                unique.push(addr);
            }
        }
        if unique.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "name resolved to no address",
            ));
        }
        Ok(unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            "127.0.0.1:7007".parse::<ListenAddr>().unwrap().to_string(),
            "127.0.0.1:7007"
        );
        assert_eq!(
            "[::1]:0".parse::<ListenAddr>().unwrap().to_string(),
            "[::1]:0"
        );
        assert_eq!(
            "localhost:80".parse::<ListenAddr>().unwrap().to_string(),
            "localhost:80"
        );
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:70000",
            "300.1.1.1:80",
            "::1:80",
            "[::1:80",
            "[zz]:80",
            ":80",
            "exa mple:80",
            "a..b:80",
        ] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn literals_resolve_without_lookup() {
        let a: ListenAddr = "[::1]:9".parse().unwrap();
        assert_eq!(a.resolve().unwrap(), vec!["[::1]:9".parse().unwrap()]);
    }
}
