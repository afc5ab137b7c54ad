//! inetd's other two small services beside echo and daytime: discard
//! (RFC 863) and chargen (RFC 864), over TCP and UDP, in-process
//! (`util::inprocess`).
//!
//! Chargen over TCP is an infinite source: the tests check that it sends
//! RFC 864's pattern with no seam however the socket cut its writes, that
//! it holds at most one cycle for a client that does not read, and that
//! under a full memory budget it waits instead of holding more.

mod util;

use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};

use echo_reactor::{Config, MIN_MAX_BUFFERED};
use util::inprocess::{self, InProcess, loopback};
use util::{connect, pattern, read_n, read_to_eof, udp_client};

/// One cycle of the pattern: 95 lines of 72 characters and CRLF.
const CYCLE: usize = 95 * 74;

fn with(discard: bool, chargen: bool) -> Config {
    Config {
        discard: if discard { vec![loopback()] } else { vec![] },
        chargen: if chargen { vec![loopback()] } else { vec![] },
        ..inprocess::config()
    }
}

/// Line `i` of RFC 864's pattern.
fn line(i: usize) -> Vec<u8> {
    let mut l: Vec<u8> = (0..72).map(|c| b' ' + ((i + c) % 95) as u8).collect();
    l.extend_from_slice(b"\r\n");
    l
}

/// Asserts that `bytes`, read from a chargen stream's start, are the
/// pattern.
#[track_caller]
fn assert_pattern(bytes: &[u8]) {
    for (i, got) in bytes.chunks(74).enumerate() {
        let want = line(i);
        assert_eq!(got, &want[..got.len()], "line {i} of the stream");
    }
}

on_every_backend! {
    fn tcp_discard_reads_everything_and_answers_nothing() {
        let server = InProcess::start(with(true, false));
        let mut s = connect(server.discard[0]);
        let data = pattern(1, 1 << 20);
        s.write_all(&data).expect("write");
        s.shutdown(Shutdown::Write).expect("FIN");
        // Our FIN read, the server closes: nothing came back.
        assert!(read_to_eof(&mut s).is_empty(), "discard sent something");
        let stats = server.wait_stats("all read and dropped", |s| s.closed == 1);
        assert!(stats.bytes_in >= 1 << 20, "{stats:?}");
        assert_eq!(stats.bytes_out, 0);
        assert_eq!(stats.buffered, 0);
        // Echo beside it still echoes.
        let mut e = connect(server.addr);
        util::assert_echo(&mut e, b"still echo");
    }

    fn tcp_chargen_sends_the_pattern_while_the_client_reads() {
        let server = InProcess::start(with(false, true));
        let mut s = connect(server.chargen[0]);
        // Input is dropped, and changes nothing.
        s.write_all(b"ignored\r\n").expect("write");
        let got = read_n(&mut s, 5 * CYCLE + 1000);
        assert_pattern(&got);
        drop(s);
        let stats = server.wait_stats("closed", |s| s.closed == 1);
        assert_eq!(stats.buffered, 0, "{stats:?}");
    }

    fn udp_discard_answers_nothing_and_chargen_answers_with_the_pattern() {
        let server = InProcess::start(with(true, true));
        let client = udp_client();
        for i in 0..5u8 {
            client.send_to(&[i; 10], server.discard[0]).expect("send_to");
        }
        server.wait_stats("five datagrams read", |s| s.datagrams_in == 5);
        let mut buf = [0u8; 2048];
        let mut lengths = std::collections::HashSet::new();
        for i in 0..40u8 {
            client.send_to(&[i], server.chargen[0]).expect("send_to");
            let (n, from) = client.recv_from(&mut buf).expect("a chargen datagram");
            assert_eq!(from, server.chargen[0]);
            assert!(n <= 512, "{n} bytes");
            assert!(
                buf[..n].iter().all(|&b| (32..127).contains(&b) || b == b'\r' || b == b'\n'),
                "{:?}",
                String::from_utf8_lossy(&buf[..n])
            );
            lengths.insert(n);
        }
        assert!(lengths.len() > 1, "every answer had the same length: {lengths:?}");
        let stats = server.wait_stats("every datagram counted", |s| s.datagrams_in == 45);
        // Only chargen's were answered: discard's five were not.
        assert_eq!(stats.datagrams_out, 40, "{stats:?}");
    }
}

#[test]
fn tcp_chargen_holds_at_most_one_cycle_for_a_client_that_does_not_read() {
    let server = InProcess::start(Config {
        sndbuf: Some(4096),
        ..with(false, true)
    });
    let mut s = connect(server.chargen[0]);
    // The kernel's buffers fill, then the connection holds the rest of
    // one cycle and waits for a writable edge.
    let stuck = server.wait_stats("holding output", |s| s.buffered > 0);
    for stats in server.all_stats().iter().chain([&stuck]) {
        assert!(stats.buffered <= CYCLE as u64, "held {}", stats.buffered);
    }
    // Reading resumes it; the stream has no seam where writes were cut.
    let got = read_n(&mut s, 40 * CYCLE);
    assert_pattern(&got);
    let held = server.all_stats().iter().map(|s| s.buffered).max();
    assert!(held <= Some(CYCLE as u64), "held {held:?}");
}

#[test]
fn tcp_chargen_waits_for_a_full_budget_instead_of_holding_more() {
    // 1 MiB of budget, and more stalled chargen clients than it has
    // cycles for: some must wait with nothing held.
    let server = InProcess::start(Config {
        sndbuf: Some(4096),
        max_buffered: MIN_MAX_BUFFERED,
        ..with(false, true)
    });
    let clients = MIN_MAX_BUFFERED / CYCLE + 30;
    let mut streams: Vec<TcpStream> = (0..clients).map(|_| connect(server.chargen[0])).collect();
    let full = server.wait_stats("the budget full", |s| s.budget_full > 0);
    for stats in server.all_stats().iter().chain([&full]) {
        assert!(
            stats.buffered <= stats.buffered_limit,
            "held {} of {}",
            stats.buffered,
            stats.buffered_limit
        );
    }
    // Every client, parked or not, gets the whole pattern once it reads.
    for s in &mut streams {
        let mut got = vec![0u8; 3 * CYCLE];
        s.read_exact(&mut got).expect("read");
        assert_pattern(&got);
    }
    drop(streams);
    server.wait_stats("all closed", |s| s.closed == clients as u64);
    let peak = server.all_stats().iter().map(|s| s.buffered_peak).max();
    assert!(peak <= Some(MIN_MAX_BUFFERED as u64), "peak {peak:?}");
}

#[test]
fn a_client_sending_chargen_its_own_answers_back_is_refused() {
    // An echo service between us and chargen would send each answer
    // back: the loop guard answers such repeats only a few times.
    let server = InProcess::start(with(false, true));
    let client = udp_client();
    let mut buf = [0u8; 2048];
    client.send_to(b"x", server.chargen[0]).expect("send_to");
    let (mut n, _) = client.recv_from(&mut buf).expect("first answer");
    let mut last = buf[..n].to_vec();
    client
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    for _ in 0..200 {
        client.send_to(&last, server.chargen[0]).expect("send back");
        if let Ok((got, _)) = client.recv_from(&mut buf) {
            n = got;
            last = buf[..n].to_vec();
        }
        if server.latest().is_some_and(|s| s.datagrams_refused > 0) {
            break;
        }
    }
    server.wait_stats("a repeat refused", |s| s.datagrams_refused > 0);
}

#[test]
fn the_binary_serves_both_with_their_flags_and_with_workers() {
    for workers in ["1", "2"] {
        let server = util::Server::spawn(&[
            "--listen",
            "127.0.0.1:0",
            "--discard",
            "127.0.0.1:0",
            "--chargen",
            "127.0.0.1:0",
            "--workers",
            workers,
        ]);
        let discard = util::listening_addr(&server, "tcp", "(discard)");
        assert_eq!(util::listening_addr(&server, "udp", "(discard)"), discard);
        let chargen = util::listening_addr(&server, "tcp", "(chargen)");
        assert_eq!(util::listening_addr(&server, "udp", "(chargen)"), chargen);
        let mut s = connect(chargen);
        assert_pattern(&read_n(&mut s, 2 * CYCLE));
        let mut d = connect(discard);
        d.write_all(b"dropped").expect("write");
        d.shutdown(Shutdown::Write).expect("FIN");
        assert!(read_to_eof(&mut d).is_empty(), "--workers {workers}");
    }
}

#[test]
fn the_banner_says_which_worker_answered() {
    let server = util::Server::spawn(&[
        "--workers",
        "2",
        "--mode",
        "line",
        "--banner",
        "worker {worker} on {host}",
    ]);
    let addr = util::listening_addr(&server, "tcp", "");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let s = connect(addr);
        let mut line = String::new();
        std::io::BufReader::new(s)
            .read_line(&mut line)
            .expect("banner");
        let worker = line
            .strip_prefix("worker ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        assert!(line.contains(" on ") && line.ends_with('\n'), "{line:?}");
        seen.insert(worker);
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["0", "1"],
        "both workers answer, each naming its slot"
    );
}
