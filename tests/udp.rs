//! UDP on the reactor's loop: echo (RFC 862 over UDP) up to the largest
//! IPv4 datagram, daytime (RFC 867) over UDP and TCP on one port, and TCP
//! echo still served alongside. The server runs in-process
//! (`util::inprocess`).

mod util;

use echo_reactor::Config;
use util::inprocess::{self, InProcess, loopback};
use util::{assert_echo, connect, pattern, read_to_eof, udp_client};

/// A TCP echo server that also serves UDP echo.
fn with_udp() -> InProcess {
    InProcess::start(Config {
        udp: vec![loopback()],
        ..inprocess::config()
    })
}

/// A TCP echo server that also serves daytime over TCP and UDP.
fn with_daytime() -> InProcess {
    InProcess::start(Config {
        daytime: vec![loopback()],
        ..inprocess::config()
    })
}

/// The largest UDP payload over IPv4: 65,535 − 20 (IP) − 8 (UDP).
const MAX_DATAGRAM: usize = 65_507;

/// `Weekday, Month Day, Year HH:MM:SS-UTC\r\n`.
#[track_caller]
fn assert_daytime_line(bytes: &[u8]) {
    let text = std::str::from_utf8(bytes).expect("daytime is text");
    let line = text
        .strip_suffix("-UTC\r\n")
        .unwrap_or_else(|| panic!("{text:?}"));
    let (weekday, rest) = line.split_once(", ").unwrap_or_else(|| panic!("{text:?}"));
    assert!(weekday.ends_with("day"), "{text:?}");
    let time = rest.rsplit(' ').next().unwrap();
    assert_eq!(time.len(), 8, "{text:?}");
    assert_eq!(time.matches(':').count(), 2, "{text:?}");
}

on_every_backend! {
    fn udp_datagrams_echo_intact_up_to_65507_bytes() {
        let server = with_udp();
        let addr = server.udp[0];
        let client = udp_client();
        let mut buf = vec![0u8; 70_000];
        let sizes = [0, 1, 1000, 9000, MAX_DATAGRAM];
        for (i, &len) in sizes.iter().enumerate() {
            let data = pattern(i as u64, len);
            client.send_to(&data, addr).expect("send_to");
            let (n, from) = client.recv_from(&mut buf).expect("echo datagram");
            assert_eq!(from, addr);
            assert!(
                buf[..n] == data[..],
                "datagram of {len} bytes came back as {n} bytes"
            );
        }
        // TCP echo shares the loop.
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"tcp too");
        drop(s);
        let stats = server.stop().stats;
        assert_eq!(stats.datagrams_in, sizes.len() as u64, "{stats:?}");
        assert_eq!(stats.datagrams_out, sizes.len() as u64, "{stats:?}");
    }

    fn udp_echo_answers_each_peer_separately() {
        let server = with_udp();
        let addr = server.udp[0];
        let (a, b) = (udp_client(), udp_client());
        a.send_to(b"from a", addr).unwrap();
        b.send_to(b"from b", addr).unwrap();
        let mut buf = [0u8; 64];
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from b");
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from a");
    }

    fn daytime_answers_over_tcp_and_udp_on_the_same_port() {
        let server = with_daytime();
        // One address: TCP and UDP share the port number.
        let (tcp, udp) = (server.daytime[0], server.daytime[0]);

        // TCP: the line, then the server closes.
        let mut s = connect(tcp);
        assert_daytime_line(&read_to_eof(&mut s));

        // UDP: any datagram, even an empty one, gets the line.
        let client = udp_client();
        let mut buf = [0u8; 256];
        for probe in [&b""[..], b"what time is it?"] {
            client.send_to(probe, udp).unwrap();
            let n = client.recv(&mut buf).unwrap();
            assert_daytime_line(&buf[..n]);
        }
        // The echo listener is still plain echo.
        let mut e = connect(server.addr);
        assert_echo(&mut e, b"echo");
        drop((s, e));
        server.stop();
    }

    fn daytime_tcp_client_that_sends_data_still_gets_the_line_and_a_clean_close() {
        use std::io::Write;
        let server = with_daytime();
        let tcp = server.daytime[0];
        let mut s = connect(tcp);
        // Input the server never reads: a plain close would turn into a reset.
        s.write_all(&[b'z'; 10_000]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_daytime_line(&read_to_eof(&mut s));
    }
}
