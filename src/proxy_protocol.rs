//! The PROXY protocol header (HAProxy's, versions 1 and 2), as a pure
//! function: bytes in, a verdict out, no I/O, no clock.
//!
//! A proxy in front of the server (HAProxy, nginx's `proxy_protocol`, an
//! AWS network load balancer) starts every connection with one header
//! that says whom it carries: the client's address and port, and the
//! address it reached. With `--proxy-protocol`, that client address is the
//! one per-address limits, logs and the banner use (`reactor/accept.rs`).
//!
//! - **v1**: one text line, `PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\r\n` (or
//!   `TCP6`, or `UNKNOWN` with anything up to the CRLF), at most 107 bytes.
//! - **v2**: a 12-byte signature, a version/command byte (`0x21` PROXY,
//!   `0x20` LOCAL: a health check from the proxy itself, which carries no
//!   client), a family byte (`0x11` TCP over IPv4, `0x21` TCP over IPv6,
//!   `0x00` unspecified), a 2-byte big-endian length, then the addresses
//!   and any TLVs (skipped). Bounded here at [`MAX_V2`] bytes in all.
//!
//! [`parse`] is given the bytes received so far and says: a whole header
//! of `len` bytes (with the client, if it names one), not enough yet
//! (then every byte so far belongs to the header, so a caller may consume
//! them all), not a header at all (only when the absence is accepted), or
//! a header this server refuses. Like the protocol decoders, its answer
//! does not depend on how the bytes were split (every split is tested, and
//! proptest checks it on arbitrary input).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The longest v1 header (the specification's bound), CRLF included.
pub(crate) const MAX_V1: usize = 107;

/// The longest v2 header accepted, its 16-byte fixed part included: the
/// addresses (at most 216 bytes for the unix family) and some TLVs. A
/// proxy that sends more is refused.
pub(crate) const MAX_V2: usize = 16 + 512;

/// The longest header of either version.
pub(crate) const MAX_HEADER: usize = if MAX_V1 > MAX_V2 { MAX_V1 } else { MAX_V2 };

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Which headers `--proxy-protocol` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Version 1 only.
    V1,
    /// Version 2 only.
    V2,
    /// Either version.
    Any,
    /// Either version, or none at all (the connection's own address then).
    Optional,
}

impl FromStr for ProxyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<ProxyMode, String> {
        match s {
            "v1" => Ok(ProxyMode::V1),
            "v2" => Ok(ProxyMode::V2),
            "any" => Ok(ProxyMode::Any),
            "optional" => Ok(ProxyMode::Optional),
            _ => Err(format!("{s:?}: expected v1, v2, any or optional")),
        }
    }
}

/// What the bytes so far are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parse {
    /// A whole header of `len` bytes; `client` is the address it carries
    /// (`None`: v1 `UNKNOWN`, v2 `LOCAL` or an unspecified family: the
    /// connection's own address stands).
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// Not enough bytes to decide; all of them belong to the header.
    Incomplete,
    /// No header (accepted only in [`ProxyMode::Optional`]): the bytes are
    /// the protocol's.
    Absent,
    /// Refused: malformed, a version not accepted, or too long.
    Invalid(&'static str),
}

/// Decides what `buf` (the first bytes of a connection) is, under `mode`.
pub(crate) fn parse(buf: &[u8], mode: ProxyMode) -> Parse {
    let (v1, v2) = match mode {
        ProxyMode::V1 => (true, false),
        ProxyMode::V2 => (false, true),
        ProxyMode::Any | ProxyMode::Optional => (true, true),
    };
    let could_be = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    if v1 && could_be(V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Parse::Incomplete;
        }
        return parse_v1(buf);
    }
    if v2 && could_be(V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Parse::Incomplete;
        }
        return parse_v2(buf);
    }
    if mode == ProxyMode::Optional {
        Parse::Absent
    } else {
        Parse::Invalid("no PROXY header")
    }
}

fn parse_v1(buf: &[u8]) -> Parse {
    // The first LF decides, so that every split decides alike.
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_V1 {
            Parse::Invalid("v1 header longer than 107 bytes")
        } else {
            Parse::Incomplete
        };
    };
    if window[lf - 1] != b'\r' {
        return Parse::Invalid("v1 header with a bare LF");
    }
    let (end, len) = (lf - 1, lf + 1);
    let Ok(line) = std::str::from_utf8(&buf[V1_PREFIX.len()..end]) else {
        return Parse::Invalid("v1 header not ASCII");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Parse::Header { len, client: None },
        [family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v6 = *family == "TCP6";
            let (Some(src), Some(_dst)) = (v1_ip(src, v6), v1_ip(dst, v6)) else {
                return Parse::Invalid("v1 header with a bad address");
            };
            let (Some(sport), Some(_dport)) = (v1_port(sport), v1_port(dport)) else {
                return Parse::Invalid("v1 header with a bad port");
            };
            Parse::Header {
                len,
                client: Some(SocketAddr::new(src, sport)),
            }
        }
        _ => Parse::Invalid("v1 header malformed"),
    }
}

fn v1_ip(s: &str, v6: bool) -> Option<IpAddr> {
    if v6 {
        s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

/// A port as v1 writes it: decimal, no sign, no leading zero.
fn v1_port(s: &str) -> Option<u16> {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !plain || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

fn parse_v2(buf: &[u8]) -> Parse {
    if buf.len() < 16 {
        // The version must be 2 as soon as its byte is there.
        if buf.len() > 12 && buf[12] >> 4 != 2 {
            return Parse::Invalid("v2 header with a version other than 2");
        }
        return Parse::Incomplete;
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Parse::Invalid("v2 header with a version other than 2");
    }
    let len = 16 + body;
    if len > MAX_V2 {
        return Parse::Invalid("v2 header too long");
    }
    let local = match ver_cmd & 0x0F {
        0 => true,
        1 => false,
        _ => return Parse::Invalid("v2 header with an unknown command"),
    };
    if buf.len() < len {
        return Parse::Incomplete;
    }
    let addrs = &buf[16..len];
    let client = match family {
        // TCP (or UDP) over IPv4: src, dst, sport, dport.
        0x11 | 0x12 => {
            if addrs.len() < 12 {
                return Parse::Invalid("v2 header too short for IPv4 addresses");
            }
            let ip = Ipv4Addr::new(addrs[0], addrs[1], addrs[2], addrs[3]);
            let port = u16::from_be_bytes([addrs[8], addrs[9]]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        0x21 | 0x22 => {
            if addrs.len() < 36 {
                return Parse::Invalid("v2 header too short for IPv6 addresses");
            }
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addrs[..16]);
            let port = u16::from_be_bytes([addrs[32], addrs[33]]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        // Unspecified, or unix sockets: no client address to use.
        0x00 | 0x31 | 0x32 => None,
        _ => return Parse::Invalid("v2 header with an unknown family"),
    };
    Parse::Header {
        len,
        client: if local { None } else { client },
    }
}

/// A v2 header for `client` reaching `server`: what a proxy sends.
#[cfg(test)]
pub(crate) fn v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x21);
    match (client, server) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) => {
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&c.ip().octets());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&s.port().to_be_bytes());
        }
        (c, s) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(c).octets());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&s.port().to_be_bytes());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [ProxyMode; 4] = [
        ProxyMode::V1,
        ProxyMode::V2,
        ProxyMode::Any,
        ProxyMode::Optional,
    ];

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// What `parse` says once all of `input` arrived, checked against what
    /// it said at every shorter prefix: `Incomplete` until the end, and the
    /// same verdict for every split.
    fn at_every_split(input: &[u8], mode: ProxyMode) -> Parse {
        let whole = parse(input, mode);
        for cut in 0..input.len() {
            let early = parse(&input[..cut], mode);
            match (early, whole) {
                (Parse::Incomplete, _) => {}
                (early, whole) if early == whole => {}
                // A header followed by more bytes: the same header.
                (Parse::Header { .. }, _) => {
                    panic!("{mode:?}: {early:?} at {cut}, {whole:?} whole")
                }
                // Refused or absent early: refused or absent for good.
                (early, whole) => assert_eq!(early, whole, "{mode:?} at {cut}"),
            }
        }
        whole
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nhello";
        let want = Parse::Header {
            len: h.len() - 5,
            client: Some(addr("192.0.2.1:56324")),
        };
        for mode in [ProxyMode::V1, ProxyMode::Any, ProxyMode::Optional] {
            assert_eq!(at_every_split(h, mode), want);
        }
        assert_eq!(parse(h, ProxyMode::V2), Parse::Invalid("no PROXY header"));
        let h6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert_eq!(
            at_every_split(h6, ProxyMode::Any),
            Parse::Header {
                len: h6.len(),
                client: Some(addr("[2001:db8::1]:1"))
            }
        );
        let unknown = b"PROXY UNKNOWN whatever\r\n";
        assert_eq!(
            at_every_split(unknown, ProxyMode::V1),
            Parse::Header {
                len: unknown.len(),
                client: None
            }
        );
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \xff\r\n",
        ] {
            let got = at_every_split(bad, ProxyMode::Any);
            assert!(
                matches!(got, Parse::Invalid(_)),
                "{:?}: {got:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(200, b'x');
        assert_eq!(
            at_every_split(&long, ProxyMode::V1),
            Parse::Invalid("v1 header longer than 107 bytes")
        );
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_tlvs() {
        let client = addr("203.0.113.7:40000");
        let mut h = v2_header(client, addr("10.0.0.1:7007"));
        let len = h.len();
        h.extend_from_slice(b"payload");
        for mode in [ProxyMode::V2, ProxyMode::Any, ProxyMode::Optional] {
            assert_eq!(
                at_every_split(&h, mode),
                Parse::Header {
                    len,
                    client: Some(client)
                }
            );
        }
        assert_eq!(parse(&h, ProxyMode::V1), Parse::Invalid("no PROXY header"));
        let c6 = addr("[2001:db8::7]:1234");
        let h6 = v2_header(c6, addr("[2001:db8::1]:7007"));
        assert_eq!(
            at_every_split(&h6, ProxyMode::V2),
            Parse::Header {
                len: h6.len(),
                client: Some(c6)
            }
        );
        // LOCAL: the proxy's own health check carries no client.
        let mut local = v2_header(client, addr("10.0.0.1:7007"));
        local[12] = 0x20;
        assert_eq!(
            parse(&local, ProxyMode::V2),
            Parse::Header {
                len: local.len(),
                client: None
            }
        );
        // TLVs after the addresses are part of the header, and skipped.
        let mut tlv = v2_header(client, addr("10.0.0.1:7007"));
        tlv[15] += 7;
        tlv.extend_from_slice(&[0x04, 0, 4, 1, 2, 3, 4]);
        assert_eq!(
            at_every_split(&tlv, ProxyMode::V2),
            Parse::Header {
                len: tlv.len(),
                client: Some(client)
            }
        );
    }

    #[test]
    fn v2_refusals() {
        let good = v2_header(addr("1.2.3.4:5"), addr("6.7.8.9:10"));
        let mutate = |i: usize, b: u8| {
            let mut h = good.clone();
            h[i] = b;
            h
        };
        for (bad, why) in [
            (mutate(12, 0x11), "version 1 byte"),
            (mutate(12, 0x22), "unknown command"),
            (mutate(13, 0x41), "unknown family"),
            (mutate(15, 4), "too short for IPv4"),
            (mutate(14, 0xFF), "too long"),
        ] {
            let got = at_every_split(&bad, ProxyMode::V2);
            assert!(matches!(got, Parse::Invalid(_)), "{why}: {got:?}");
        }
    }

    #[test]
    fn absence_is_accepted_only_when_optional() {
        for input in [
            &b"hello\r\n"[..],
            b"PROXX",
            b"\r\n\r\nX",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert_eq!(
                parse(input, ProxyMode::Optional),
                Parse::Absent,
                "{input:?}"
            );
            for mode in [ProxyMode::V1, ProxyMode::V2, ProxyMode::Any] {
                assert!(
                    matches!(parse(input, mode), Parse::Invalid(_)),
                    "{mode:?} {input:?}"
                );
            }
        }
        // Nothing yet, or a prefix of a signature: not decided.
        for mode in ALL {
            assert_eq!(parse(b"", mode), Parse::Incomplete);
        }
        assert_eq!(parse(b"PRO", ProxyMode::Optional), Parse::Incomplete);
        assert_eq!(parse(b"\r\n\r\n", ProxyMode::Optional), Parse::Incomplete);
    }

    proptest! {
        /// Any bytes: never a panic, a header never longer than its bound
        /// or than the input, and the verdict does not depend on how the
        /// bytes were split.
        #[test]
        fn any_input_any_split(input in proptest::collection::vec(any::<u8>(), 0..200), m in 0..4usize) {
            let mode = ALL[m];
            if let Parse::Header { len, .. } = at_every_split(&input, mode) {
                prop_assert!(len <= input.len() && len <= MAX_HEADER);
            }
        }

        /// Headers built from any addresses parse back to their client.
        #[test]
        fn built_headers_round_trip(a in any::<[u8; 4]>(), port in any::<u16>(), v6 in any::<[u8; 16]>(), tail in proptest::collection::vec(any::<u8>(), 0..20)) {
            let c4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port);
            let c6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(v6)), port);
            let server = addr("[::1]:7");
            for (client, server) in [(c4, addr("10.0.0.1:7")), (c6, server)] {
                let mut h = v2_header(client, server);
                let len = h.len();
                h.extend_from_slice(&tail);
                prop_assert_eq!(at_every_split(&h, ProxyMode::Any), Parse::Header { len, client: Some(client) });
            }
            let line = format!("PROXY TCP4 {} 10.0.0.1 {port} 7\r\n", Ipv4Addr::from(a));
            let mut h = line.clone().into_bytes();
            h.extend_from_slice(&tail);
            prop_assert_eq!(at_every_split(&h, ProxyMode::Any), Parse::Header { len: line.len(), client: Some(c4) });
        }
    }
}
