//! UDP on the reactor's loop: echo (RFC 862 over UDP) up to the largest
//! IPv4 datagram, daytime (RFC 867) over UDP and TCP on one port, and TCP
//! echo still served alongside, and the stress client's UDP runs, plain and
//! with segmentation offload, against batched UDP. The server runs in-process
//! (`util::inprocess`).

mod util;

use clap::Parser;
use echo_bench::Live;
use echo_bench::cli::Args;
use echo_reactor::Config;
use std::sync::{Arc, mpsc};
use std::time::Duration;
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

/// Runs the stress client in this process with `args` (as on its command
/// line) and returns its report as `--json` prints it; fails the test if
/// the run cannot happen or outlives a minute.
#[track_caller]
fn bench(args: &[&str]) -> serde_json::Value {
    let argv = std::iter::once("echo-bench").chain(args.iter().copied());
    let cfg = Args::try_parse_from(argv)
        .map_err(|e| e.to_string())
        .and_then(|a| a.config())
        .unwrap_or_else(|e| panic!("echo-bench {args:?}: {e}"));
    let live = Arc::new(Live::new());
    let (tx, rx) = mpsc::channel();
    let engine_live = Arc::clone(&live);
    std::thread::spawn(move || {
        // The receiver is gone only if the test already failed.
        let _ = tx.send(echo_bench::run(&cfg, engine_live));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(result) => {
            let report = result.unwrap_or_else(|e| panic!("echo-bench {args:?}: {e}"));
            let v = report.to_json();
            assert!(report.passed(), "{v:#}");
            assert_eq!(report.total_errors(), 0, "{v:#}");
            v
        }
        Err(_) => {
            live.request_stop();
            panic!("echo-bench {args:?} ran longer than a minute");
        }
    }
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

    fn many_datagrams_in_flight_are_all_answered_in_batches() {
        // 8 sockets x 8 lanes: datagrams arrive many per tick, and every one
        // is answered, intact (echo-bench checks each), counted once.
        let server = with_udp();
        let addr = server.udp[0].to_string();
        let v = bench(&["--udp", "-c", "8", "-d", "8", "-s", "200", "-n", "20000", "--json", &addr]);
        assert_eq!(v["messages"], 20000, "{v:#}");
        assert_eq!(v["udp"]["lost"], 0, "{v:#}");
        let stats = server.stop().stats;
        assert_eq!(stats.datagrams_in, stats.datagrams_out, "{stats:?}");
        assert_eq!(stats.datagrams_dropped, 0, "{stats:?}");
        assert_eq!(stats.datagrams_refused, 0, "{stats:?}");
    }

    fn runs_sent_segmented_come_back_as_their_datagrams() {
        // The client sends each socket's datagrams as one segmented
        // message (UDP GSO) and takes echoes coalesced (UDP GRO): the
        // server receives runs coalesced and answers them as runs. Every
        // datagram is still checked, counted and answered.
        let server = with_udp();
        let addr = server.udp[0].to_string();
        let v = bench(&[
            "--udp", "--udp-offload", "-c", "4", "-d", "16", "-s", "100", "-n", "20000", "--json", &addr,
        ]);
        assert_eq!(v["messages"], 20000, "{v:#}");
        assert_eq!(v["udp"]["lost"], 0, "{v:#}");
        let stats = server.stop().stats;
        assert_eq!(stats.datagrams_in, stats.datagrams_out, "{stats:?}");
        assert!(stats.datagrams_in >= 20000, "{stats:?}");
        assert_eq!(stats.datagrams_dropped, 0, "{stats:?}");
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
