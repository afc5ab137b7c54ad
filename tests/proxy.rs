//! Relaying (`Config::upstream`, `examples/proxy.rs`) on every backend: a
//! proxy in process in front of an echo server in process, real loopback
//! sockets between the three. Bytes go through both ways in order; a
//! client that does not read holds the proxy to its watermarks (what the
//! proxy holds stays near one watermark and one read per direction while
//! megabytes wait); a half-close is passed on; an upstream that refuses or
//! does not answer is reported to the client and counted; a shutdown lets
//! the upstream's answers finish.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use echo_reactor::{Config, Line, Mode, Server, Transform};
use util::inprocess::{self, InProcess};
use util::{STEP_TIMEOUT, connect};

/// A proxy in process relaying to `upstream`.
fn proxy_to(upstream: SocketAddr) -> InProcess {
    InProcess::start(Config {
        upstream: Some(upstream),
        ..inprocess::config()
    })
}

/// Reads until EOF.
fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(STEP_TIMEOUT)).expect("timeout");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read to EOF");
    got
}

/// Most a pair may hold: per direction, the high watermark (64 KiB) and
/// one read on top of it (64 KiB).
const PAIR_HOLDS_AT_MOST: u64 = 2 * (64 + 64) * 1024;

on_every_backend! {
    /// 8 MiB through the proxy while the client reads nothing: the proxy
    /// stops reading where the bytes pile up, holds no more than a pair's
    /// bound, and once the client reads, every byte comes back in order.
    fn a_client_that_does_not_read_holds_the_proxy_to_its_watermarks() {
        let echo = InProcess::start(inprocess::config());
        let proxy = proxy_to(echo.addr);
        let data = util::pattern(1, 8 << 20);
        let mut client = connect(proxy.addr);
        let mut writer = client.try_clone().expect("clone");
        let sent = data.clone();
        let writing = thread::spawn(move || writer.write_all(&sent));
        proxy.wait_stats_ever("the proxy pausing a side", |s| s.backpressure_pauses > 0);
        // Everything the kernels hold is full now, and stays so while the
        // client does not read: the proxy holds what it held.
        let stalled = proxy.wait_stats("a stalled pair", |s| s.relays == 1);
        assert!(stalled.buffered <= PAIR_HOLDS_AT_MOST, "{stalled:?}");
        client.set_read_timeout(Some(STEP_TIMEOUT)).expect("timeout");
        let mut got = vec![0; data.len()];
        client.read_exact(&mut got).expect("read everything back");
        assert!(got == data, "bytes lost, repeated or reordered");
        writing.join().expect("writer").expect("write");
        client.shutdown(Shutdown::Write).expect("FIN");
        assert_eq!(read_to_end(&mut client), b"");
        let report = proxy.stop();
        let s = report.stats;
        assert!(s.buffered_peak <= PAIR_HOLDS_AT_MOST, "{s:?}");
        assert_eq!((s.upstream_connected, s.upstream_failed), (1, 0), "{s:?}");
        assert_eq!((s.relays, s.closed), (0, 1), "{s:?}");
        assert_eq!(s.buffered, 0, "{s:?}");
        // Both directions counted: the client's bytes and the echoes.
        assert_eq!(s.bytes_in, 2 * data.len() as u64, "{s:?}");
        assert_eq!(s.bytes_out, 2 * data.len() as u64, "{s:?}");
    }

    /// The client's FIN reaches the upstream (the echo server then ends
    /// its side), and the echo of everything sent before it still comes
    /// back, then the upstream's FIN.
    fn a_half_close_is_passed_on_and_the_answers_still_come_back() {
        let echo = InProcess::start(inprocess::config());
        let proxy = proxy_to(echo.addr);
        let mut client = connect(proxy.addr);
        let data = util::pattern(2, 300_000);
        let mut writer = client.try_clone().expect("clone");
        let sent = data.clone();
        let writing = thread::spawn(move || {
            writer.write_all(&sent)?;
            writer.shutdown(Shutdown::Write)
        });
        assert!(read_to_end(&mut client) == data, "echo through the proxy differs");
        writing.join().expect("writer").expect("write and FIN");
        let s = proxy.wait_stats("the pair closed", |s| s.closed == 1);
        assert_eq!(s.relays, 0, "{s:?}");
        assert_eq!(echo.wait_stats("echo's side closed", |s| s.closed == 1).active, 0);
    }

    /// Nobody listens at the upstream's address: the client is told so in
    /// one line, then EOF, and the failure is counted.
    fn a_refused_upstream_is_reported_to_the_client_and_counted() {
        let gone = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = gone.local_addr().expect("addr");
        drop(gone);
        let proxy = proxy_to(addr);
        let mut client = connect(proxy.addr);
        client.write_all(b"anyone there?\n").expect("write");
        assert_eq!(
            String::from_utf8_lossy(&read_to_end(&mut client)),
            "ERR upstream: connection refused\r\n"
        );
        let s = proxy.wait_stats("the refusal counted", |s| s.upstream_failed == 1);
        assert_eq!(s.upstream_connected, 0, "{s:?}");
        // Our FIN came after the line; the proxy waits for the client's.
        drop(client);
        let s = proxy.wait_stats("the client gone", |s| s.closed == 1 && s.relays == 0);
        assert_eq!(s.linger_timeouts, 0, "{s:?}");
    }

    /// An upstream whose accept queue is full drops the SYN: the connect
    /// neither succeeds nor fails, and its timeout tells the client.
    fn an_upstream_that_does_not_answer_times_out_and_the_client_is_told() {
        let (full, addr) = full_listener();
        let proxy = InProcess::start(Config {
            upstream: Some(addr),
            connect_timeout: Duration::from_millis(300),
            ..inprocess::config()
        });
        let mut client = connect(proxy.addr);
        assert_eq!(
            String::from_utf8_lossy(&read_to_end(&mut client)),
            "ERR upstream: connect timed out\r\n"
        );
        let s = proxy.wait_stats("the timeout counted", |s| s.upstream_failed == 1);
        assert_eq!(s.upstream_connected, 0, "{s:?}");
        drop(full);
    }

    /// A graceful shutdown ends the clients' input: the upstream gets our
    /// FIN, its answers still reach the client, then the client's EOF,
    /// and the loop ends on its own (not at its deadline).
    fn a_shutdown_lets_the_upstream_answer_what_it_was_sent() {
        let echo = InProcess::start(inprocess::config());
        // A deadline far past the test's patience: the loop must end
        // because the pair did, not because the deadline closed it.
        let proxy = InProcess::start(Config {
            upstream: Some(echo.addr),
            shutdown_timeout: 3 * STEP_TIMEOUT,
            ..inprocess::config()
        });
        let mut client = connect(proxy.addr);
        client.write_all(b"before the shutdown").expect("write");
        let mut got = [0u8; 19];
        client.set_read_timeout(Some(STEP_TIMEOUT)).expect("timeout");
        client.read_exact(&mut got).expect("echo");
        assert_eq!(&got, b"before the shutdown");
        let report = proxy.stop();
        assert!(!report.forced);
        assert_eq!(report.stats.relays, 0);
        assert_eq!(read_to_end(&mut client), b"");
    }
}

/// A listener whose accept queue is full (backlog 0 holds one
/// connection, which a first client takes), so a further SYN is dropped.
fn full_listener() -> ((socket2::Socket, TcpStream), SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let bind: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&bind.into()).expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    let first = TcpStream::connect(addr).expect("the one queued connection");
    ((socket, first), addr)
}

#[test]
fn an_upstream_cannot_be_combined_with_a_protocol_or_a_per_host_limit() {
    let upstream = Some("127.0.0.1:9".parse().expect("address"));
    let line = Config {
        upstream,
        mode: Mode::Line(Line::new(Transform::None, None, 1024)),
        ..inprocess::config()
    };
    let per_host = Config {
        upstream,
        max_connections_per_ip: Some(4),
        ..inprocess::config()
    };
    for (config, named) in [(line, "a protocol"), (per_host, "--max-connections-per-ip")] {
        let Err(err) = Server::bind(&config) else {
            panic!("an upstream with {named} was accepted");
        };
        let msg = err.to_string();
        assert!(msg.contains("upstream") && msg.contains(named), "{msg}");
    }
}
