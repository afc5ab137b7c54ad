//! `--proxy-protocol`: the client a PROXY header names is the one
//! `--max-connections-per-ip` counts; a malformed, missing or slow header
//! is refused and counted; the bytes after the header are the protocol's.
//! In-process (`util::inprocess`).

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use echo_reactor::{Config, ProxyMode};
use util::inprocess::{self, InProcess};
use util::{assert_echo, connect};

/// What a proxy sends first: a v2 header for `client` reaching `server`
/// (IPv4).
fn v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(c), SocketAddr::V4(s)) = (client, server) else {
        panic!("IPv4 only here");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&s.port().to_be_bytes());
    h
}

fn proxied(mode: ProxyMode, per_ip: Option<usize>) -> InProcess {
    InProcess::start(Config {
        proxy_protocol: Some(mode),
        max_connections_per_ip: per_ip,
        ..inprocess::config()
    })
}

/// A connection that sends `header` (and then whatever it sends).
fn through_proxy(server: &InProcess, header: &[u8]) -> TcpStream {
    let mut s = connect(server.addr);
    s.write_all(header).expect("header");
    s
}

/// Whether the server closed this connection without a byte of answer
/// (EOF, or a reset: it closed with the refused header unread).
fn closed_unanswered(s: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset && got.is_empty(),
    }
}

/// Whether the server turned this connection away: its notice then EOF.
fn turned_away(s: &mut TcpStream) -> bool {
    s.write_all(b"x").ok();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got.starts_with(b"ERR too many connections")
}

on_every_backend! {
    fn the_sixth_connection_of_one_client_behind_one_proxy_is_refused() {
        let server = proxied(ProxyMode::V2, Some(5));
        let client: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let mut held = Vec::new();
        for i in 0..5 {
            let mut s = through_proxy(&server, &v2(client, server.addr));
            assert_echo(&mut s, format!("conn {i}").as_bytes());
            held.push(s);
        }
        let mut sixth = through_proxy(&server, &v2(client, server.addr));
        assert!(turned_away(&mut sixth), "the sixth of one client was served");
        // Another client behind the same proxy is not the first one.
        let other: SocketAddr = "198.51.100.4:40001".parse().unwrap();
        let mut s = through_proxy(&server, &v2(other, server.addr));
        assert_echo(&mut s, b"another client");
        let stats = server.wait_stats("counted", |s| s.rejected_per_ip == 1);
        assert_eq!(stats.proxy_headers, 7);
        assert_eq!(stats.proxy_refused, 0);
    }

    fn a_garbage_header_is_refused_and_counted() {
        let server = proxied(ProxyMode::V2, None);
        let mut s = through_proxy(&server, b"GET / HTTP/1.0\r\n\r\n");
        assert!(closed_unanswered(&mut s), "answered without a header");
        let mut s = through_proxy(&server, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
        assert!(closed_unanswered(&mut s), "v1 accepted in v2 mode");
        let stats = server.wait_stats("counted", |s| s.proxy_refused == 2);
        assert_eq!(stats.accepted, 0);
    }

    fn bytes_after_the_header_and_headers_split_anywhere_are_the_protocols() {
        let server = proxied(ProxyMode::Any, None);
        let client: SocketAddr = "192.0.2.1:1".parse().unwrap();
        // With the first message in the same segment.
        let mut first = v2(client, server.addr);
        first.extend_from_slice(b"hello");
        let mut s = through_proxy(&server, &first);
        let mut got = [0u8; 5];
        s.read_exact(&mut got).expect("echo");
        assert_eq!(&got, b"hello");
        // A v1 header a byte at a time, then a message.
        let mut s = connect(server.addr);
        for b in b"PROXY TCP4 192.0.2.1 192.0.2.2 5 6\r\n" {
            s.write_all(&[*b]).expect("a byte");
        }
        assert_echo(&mut s, b"after v1");
        server.wait_stats("both accepted", |s| s.proxy_headers == 2);
    }

    fn optional_mode_serves_connections_without_a_header() {
        let server = proxied(ProxyMode::Optional, Some(5));
        let mut plain = connect(server.addr);
        assert_echo(&mut plain, b"no header at all, and more than sixteen bytes");
        let client: SocketAddr = "192.0.2.7:9".parse().unwrap();
        let mut s = through_proxy(&server, &v2(client, server.addr));
        assert_echo(&mut s, b"with one");
        let stats = server.wait_stats("one header", |s| s.accepted == 2);
        assert_eq!((stats.proxy_headers, stats.proxy_refused), (1, 0));
    }
}

on_every_backend! {
    fn an_undecided_optional_prefix_does_not_spin_the_loop() {
        // "PROX" may yet be a v1 header or a client's own bytes: optional
        // mode can only wait for more. A level-triggered backend reports
        // the unread bytes at every wait; the loop must not turn with it.
        let server = proxied(ProxyMode::Optional, None);
        let before = server.next_stats().ticks;
        let mut s = through_proxy(&server, b"PROX");
        // Ones that decide later, header or not, are served as usual.
        let mut late = through_proxy(&server, b"PROX");
        let mut plain = through_proxy(&server, b"\r\n");
        late.write_all(b"Y TCP4 192.0.2.1 192.0.2.2 5 6\r\n").expect("the rest");
        assert_echo(&mut late, b"after a late header");
        plain.write_all(b"not a header after all").expect("the rest");
        let mut got = [0u8; 24];
        plain.read_exact(&mut got).expect("echo");
        assert_eq!(&got, b"\r\nnot a header after all");
        // Refused at its timeout (5 s), since it never became anything.
        assert!(closed_unanswered(&mut s));
        let stats = server.wait_stats("refused at its timeout", |s| s.proxy_refused == 1);
        // A look every 20 ms is 250 ticks in 5 s; spinning is hundreds
        // of thousands.
        let ticks = stats.ticks - before;
        assert!(ticks < 2_000, "{ticks} loop ticks while one prefix waited");
    }
}

#[test]
fn a_header_that_never_completes_is_refused_after_its_timeout() {
    let server = proxied(ProxyMode::V1, None);
    let mut s = through_proxy(&server, b"PROXY TCP4 1.2.3.4");
    // The server gives up on it (5 s): EOF, and counted.
    assert!(closed_unanswered(&mut s));
    server.wait_stats("counted", |s| s.proxy_refused == 1);
}

#[test]
fn the_banner_template_greets_the_client_the_header_names() {
    let server = InProcess::start(Config {
        proxy_protocol: Some(ProxyMode::V2),
        mode: echo_reactor::Mode::Line(echo_reactor::Line::new(
            echo_reactor::Transform::None,
            Some("hello {peer} worker {worker}"),
            100,
        )),
        ..inprocess::config()
    });
    let client: SocketAddr = "203.0.113.5:4242".parse().unwrap();
    let mut s = through_proxy(&server, &v2(client, server.addr));
    let want = b"hello 203.0.113.5:4242 worker 0\n";
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).expect("banner");
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    // Without a proxy, the socket's own peer.
    let plain = InProcess::start(Config {
        mode: echo_reactor::Mode::Line(echo_reactor::Line::new(
            echo_reactor::Transform::None,
            Some("hi {peer}"),
            100,
        )),
        ..inprocess::config()
    });
    let mut s = connect(plain.addr);
    let mine = s.local_addr().expect("local address");
    let want = format!("hi {mine}\n");
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).expect("banner");
    assert_eq!(String::from_utf8_lossy(&got), want);
}
