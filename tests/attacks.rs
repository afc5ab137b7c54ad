//! Attacks a hostile client can make, each with the fix that defeats it:
//! UDP datagrams spoofed to start an echo loop, urgent data that strands
//! the bytes behind it, one host holding every slot, metrics connections
//! taking echo slots, clients that never finish a lingering close, peers
//! that vanish, and stray signals.
//!
//! The servers run in-process (`util::inprocess`), but for two tests on the
//! binary: one watches the server process's CPU time, one sends it
//! signals.

mod util;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::{Config, Frame, Mode};
use util::inprocess::{self, InProcess, loopback};
use util::{
    CpuWatch, Server, assert_echo, connect, connect_from, frame, get, listening_addr, read_n,
    read_to_eof, udp_client,
};

/// A TCP echo server that also serves UDP echo and daytime.
fn udp_and_daytime() -> Config {
    Config {
        udp: vec![loopback()],
        daytime: vec![loopback()],
        ..inprocess::config()
    }
}

// ----- UDP loops ------------------------------------------------------------

/// Sends one UDP datagram with a forged source address through a raw
/// socket (the kernel trusts whatever source the IP header says). Returns
/// false when this process may not open raw sockets (needs `CAP_NET_RAW`).
fn send_spoofed(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> bool {
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
        panic!("IPv4 only");
    };
    // SAFETY: plain socket(2) call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return false;
    }
    // IPPROTO_RAW means IP_HDRINCL: we write the IP header; the kernel
    // fills in the total length, the id and the header checksum.
    let udp_len = 8 + payload.len();
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, libc::IPPROTO_UDP as u8, 0, 0];
    packet.extend_from_slice(&from.ip().octets());
    packet.extend_from_slice(&to.ip().octets());
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&(udp_len as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    packet.extend_from_slice(payload);
    let dest = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `packet` and `dest` are live for the call, lengths match.
    let sent = unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&dest as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    assert_eq!(sent, packet.len() as isize, "raw sendto failed");
    true
}

on_every_backend! {
    /// One datagram "from" the server's own echo socket, and one from its
    /// daytime socket to its echo socket: each would bounce forever.
    fn a_datagram_spoofed_from_the_servers_own_sockets_starts_no_loop() {
        let mut server = Server::spawn(&["--udp", "127.0.0.1:0", "--daytime", "127.0.0.1:0"]);
        let echo = listening_addr(&server, "udp", "");
        let daytime = listening_addr(&server, "udp", "(daytime)");
        if !send_spoofed(echo, echo, b"loop me") {
            eprintln!("skipped: raw sockets need CAP_NET_RAW");
            return;
        }
        assert!(send_spoofed(daytime, echo, b"and me"));
        thread::sleep(Duration::from_millis(300));
        let watch = CpuWatch::start(server.pid());
        thread::sleep(Duration::from_secs(2));
        watch.assert_under_half_a_core("after two spoofed datagrams");

        // Legitimate clients, UDP and TCP, are served as before.
        let client = udp_client();
        client.send_to(b"hi", echo).unwrap();
        let mut buf = [0u8; 16];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_echo(&mut connect(server.addr), b"tcp");
        let (status, log) = util::stop(&mut server);
        assert!(status.success(), "{log}");
        let stats = util::counters(&log, "final stats:");
        assert_eq!(get(&stats, "datagrams_refused"), 2, "{log}");
        assert_eq!(get(&stats, "datagrams_out"), 1, "{log}");
    }

    /// A datagram from chargen's port (19): answering it would start a
    /// loop with any host running chargen.
    fn a_datagram_from_a_reflecting_service_port_is_not_answered() {
        let server = InProcess::start(Config {
            udp: vec![loopback()],
            ..inprocess::config()
        });
        let echo = server.udp[0];
        let chargen: SocketAddr = "127.0.0.9:19".parse().unwrap();
        if !send_spoofed(chargen, echo, b"x") {
            eprintln!("skipped: raw sockets need CAP_NET_RAW");
            return;
        }
        // A real client after it is answered: the spoofed one came first.
        let client = udp_client();
        client.send_to(b"after", echo).unwrap();
        let mut buf = [0u8; 16];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
        let stats = server.stop().stats;
        assert_eq!(stats.datagrams_in, 2, "{stats:?}");
        assert_eq!(stats.datagrams_refused, 1, "{stats:?}");
        assert_eq!(stats.datagrams_out, 1, "{stats:?}");
    }
}

/// Sends one datagram to `to` as if from `from`, each a UDP service of
/// its own server, and waits until one of the two refuses to answer: the
/// loop is over then, since it was the only datagram in flight. Returns
/// both servers' final counters.
fn ping_pong_between(
    (a, from): (InProcess, SocketAddr),
    (b, to): (InProcess, SocketAddr),
) -> Option<[echo_reactor::Stats; 2]> {
    if !send_spoofed(from, to, b"ping-pong") {
        eprintln!("skipped: raw sockets need CAP_NET_RAW");
        return None;
    }
    let deadline = Instant::now() + util::STEP_TIMEOUT;
    loop {
        // `a`'s counters arrive every few milliseconds: the clock here.
        a.next_stats();
        let refused: u64 = [&a, &b]
            .iter()
            .filter_map(|s| s.latest())
            .map(|stats| stats.datagrams_refused)
            .sum();
        if refused > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the loop never ended: {:?}, {:?}",
            a.latest(),
            b.latest()
        );
    }
    Some([a.stop().stats, b.stop().stats])
}

on_every_backend! {
    /// Two echo services on ordinary ports, here two instances of this
    /// server, and one datagram spoofed from one to the other: they used
    /// to play ping-pong for ever (482 CPU ticks in 10 s each). Each now
    /// stops answering a peer that keeps sending back its own answers.
    /// The same between an echo and a daytime service.
    fn two_services_on_ordinary_ports_stop_their_ping_pong() {
        let (a, b) = (InProcess::start(udp_and_daytime()), InProcess::start(udp_and_daytime()));
        let (echo_a, echo_b) = (a.udp[0], b.udp[0]);
        let Some(echo_echo) = ping_pong_between((a, echo_a), (b, echo_b)) else {
            return;
        };
        let (a, b) = (InProcess::start(udp_and_daytime()), InProcess::start(udp_and_daytime()));
        let (echo_a, daytime_b) = (a.udp[0], b.daytime[0]);
        let echo_daytime = ping_pong_between((b, daytime_b), (a, echo_a))
            .expect("raw sockets worked a moment ago");
        for (case, stats) in [("echo-echo", echo_echo), ("daytime-echo", echo_daytime)] {
            let sent: u64 = stats.iter().map(|s| s.datagrams_out).sum();
            let refused: u64 = stats.iter().map(|s| s.datagrams_refused).sum();
            assert_eq!(refused, 1, "{case}: one datagram in flight, refused once: {stats:?}");
            assert!(sent < 100, "{case}: {sent} datagrams exchanged: {stats:?}");
        }
    }
}

// ----- urgent data ----------------------------------------------------------

/// Sends `before`, one urgent byte, then `after`, corked into one segment
/// so that they arrive together, as a client typing fast would have them.
fn send_with_urgent_byte(s: &TcpStream, before: &[u8], urgent: u8, after: &[u8]) {
    let cork = |on: libc::c_int| {
        // SAFETY: setsockopt on our own socket with a live c_int.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CORK,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "TCP_CORK");
    };
    cork(1);
    (&*s).write_all(before).unwrap();
    // SAFETY: send(2) of one byte from a live local.
    let sent = unsafe {
        libc::send(
            s.as_raw_fd(),
            (&urgent as *const u8).cast(),
            1,
            libc::MSG_OOB,
        )
    };
    assert_eq!(sent, 1, "send MSG_OOB");
    (&*s).write_all(after).unwrap();
    cork(0);
}

/// A client whose reads give up after `secs`, so a stall fails quickly.
fn impatient(addr: SocketAddr, secs: u64) -> TcpStream {
    let s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    s
}

on_every_backend! {
    /// The urgent byte stays in the stream (inline) and the bytes behind
    /// it come back without the client sending anything more.
    fn urgent_data_is_echoed_inline_and_strands_nothing_behind_it() {
        let server = InProcess::start(inprocess::config());
        // Twice: on a fresh connection, and on one that has echoed before.
        for _ in 0..2 {
            let mut s = impatient(server.addr, 3);
            send_with_urgent_byte(&s, b"abc", b'!', b"def\n");
            assert_eq!(read_n(&mut s, 8), b"abc!def\n");
            assert_echo(&mut s, b"and on");
            send_with_urgent_byte(&s, b"abc", b'!', b"def\n");
            assert_eq!(read_n(&mut s, 8), b"abc!def\n");
        }
    }

    fn a_frame_with_an_urgent_byte_inside_is_echoed_whole() {
        let server = InProcess::start(Config {
            mode: Mode::Frame(Frame::default()),
            ..inprocess::config()
        });
        let mut s = impatient(server.addr, 5);
        let whole = frame(b"abc!def\n");
        let (head, tail) = whole.split_at(4 + 3);
        send_with_urgent_byte(&s, head, tail[0], &tail[1..]);
        assert_eq!(read_n(&mut s, whole.len()), whole);
    }
}

/// The same exchange against an echo server on tokio (read, then
/// write_all, like `examples/tokio_echo.rs`). tokio also treats a short
/// read as "drained" (`PollEvented::poll_read` clears readiness when
/// `0 < n < len`) and does not ask for `EPOLLPRI`, so the bytes behind the
/// urgent mark wait for the client's next segment: the hole this project
/// closed, documented in docs/limits.md. If tokio fixes it, this fails,
/// and that page must change.
#[test]
fn tokio_short_read_strands_the_bytes_behind_urgent_data() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = socket.read(&mut buf).await {
                if socket.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    });
    // Generous timeouts for what must arrive (a loaded machine is slow);
    // one second only for what must not.
    let mut s = connect(addr);
    assert_echo(&mut s, b"warm up ");
    send_with_urgent_byte(&s, b"abc", b'!', b"def\n");
    assert_eq!(read_n(&mut s, 3), b"abc");
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut rest = [0u8; 16];
    let stalled = s.read(&mut rest);
    assert!(
        stalled.is_err(),
        "tokio echoed the rest by itself: {stalled:?}"
    );
    // The next segment raises a new edge, and the stranded bytes follow
    // (without the urgent byte: tokio's sockets do not set SO_OOBINLINE).
    s.write_all(b"x").unwrap();
    s.set_read_timeout(Some(util::STEP_TIMEOUT)).unwrap();
    assert_eq!(read_n(&mut s, 5), b"def\nx");
}

// ----- slots held ----------------------------------------------------------

/// A connection the server served: it echoes.
fn served(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let mut s = connect_from(from, addr);
    assert_echo(&mut s, b"in");
    s
}

on_every_backend! {
    fn one_host_gets_its_share_of_slots_and_others_still_connect() {
        const LIMIT: usize = 20;
        let server = InProcess::start(Config {
            max_connections_per_ip: Some(LIMIT),
            ..inprocess::config()
        });
        let greedy = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
        let mut kept: Vec<TcpStream> = (0..LIMIT).map(|_| served(server.addr, greedy)).collect();
        for _ in 0..30 {
            let mut s = connect_from(greedy, server.addr);
            assert_eq!(read_to_eof(&mut s), b"ERR too many connections\n");
        }
        let mut other = served(server.addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_echo(&mut other, b"another host is served");
        // A slot the host gives back is its own again, once the server
        // has seen it closed.
        drop(kept.pop());
        server.wait_stats("the slot given back", |s| s.closed == 1);
        let mut again = connect_from(greedy, server.addr);
        assert_echo(&mut again, b"again");
        drop((kept, other, again));
        let stats = server.stop().stats;
        assert_eq!(stats.rejected_per_ip, 30, "{stats:?}");
        assert_eq!(stats.rejected, stats.rejected_per_ip, "{stats:?}");
    }

    /// Clients that say `exit` and then neither read nor close: the server
    /// sends its FIN, lingers for theirs, and gives up after the linger
    /// bound (5 s), with no option set.
    fn clients_that_never_finish_a_lingering_close_lose_their_slot() {
        const CLIENTS: u64 = 10;
        let server = InProcess::start(Config {
            mode: Mode::Line(Default::default()),
            ..inprocess::config()
        });
        let quiet: Vec<TcpStream> = (0..CLIENTS)
            .map(|_| {
                let s = connect(server.addr);
                (&s).write_all(b"exit\n").unwrap();
                s
            })
            .collect();
        server.wait_stats("the clients connected", |s| s.accepted == CLIENTS);
        thread::sleep(Duration::from_secs(1));
        let lingering = server.next_stats();
        assert_eq!(lingering.active, CLIENTS, "closed before the bound");
        let freed = server.wait_stats("the slots freed", |s| s.active == 0);
        assert_eq!(freed.linger_timeouts, CLIENTS);
        drop(quiet);
        server.stop();
    }
}

// ----- metrics connections ----------------------------------------------

/// `GET /healthz` on a keep-alive connection; the status code.
fn healthz(s: &mut TcpStream) -> u16 {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("utf-8 head");
    let len: usize = (head.lines())
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no length in {head:?}"));
    read_n(s, len);
    head[9..12].parse().expect("a status")
}

on_every_backend! {
    /// Metrics connections used to take echo slots (idle scrapers locked
    /// echo clients out) and, past the limit, heard the echo notice
    /// (curl: "Received HTTP/0.9"). Now they have slots of their own: 50
    /// idle keep-alive scrapers beside 50 echo clients at
    /// `--max-connections 50`, a full echo server still serves scrapes, a
    /// new scraper takes the slot of the one idle longest, and one past
    /// `--metrics-max-connections` while every slot has a request under
    /// way reads a 503.
    fn metrics_connections_have_slots_of_their_own_and_hear_http() {
        let server = InProcess::start(Config {
            max_connections: Some(50),
            metrics: vec![loopback()],
            metrics_max_connections: 50,
            ..inprocess::config()
        });
        let metrics = server.metrics[0];
        let mut scrapers: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = connect(metrics);
                assert_eq!(healthz(&mut s), 200);
                s
            })
            .collect();
        let clients: Vec<TcpStream> = (0..50)
            .map(|i| {
                let mut s = connect(server.addr);
                assert_echo(&mut s, format!("client {i}").as_bytes());
                s
            })
            .collect();
        // The echo slots are full, and echo clients hear so ...
        let mut late = connect(server.addr);
        assert_eq!(read_to_eof(&mut late), b"ERR too many connections\n");
        // ... while the metrics slots make room: the scraper idle longest
        // is closed for a new one, so idle connections cannot deny a
        // scrape.
        let mut newcomer = connect(metrics);
        assert_eq!(healthz(&mut newcomer), 200);
        assert_eq!(read_to_eof(&mut scrapers[0]), b"", "the longest idle one is closed");
        scrapers[0] = newcomer;
        server.wait_stats("one reclaimed", |s| s.http_reclaimed == 1);
        // Slots with a request under way are not taken: a new scraper then
        // reads an HTTP answer, a 503.
        let head = b"GET /healthz HTTP/1.1\r\n";
        for s in &mut scrapers {
            s.write_all(head).expect("half a request");
        }
        server.wait_stats("every half request held", |s| {
            s.buffered >= (50 * head.len()) as u64
        });
        let mut busy = connect(metrics);
        let answer = String::from_utf8(read_to_eof(&mut busy)).expect("utf-8");
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer:?}");
        assert!(answer.ends_with("\r\n\r\ntoo many metrics connections\n"), "{answer:?}");
        // A scraper's slot given back is a scraper's again, echo full or not.
        drop(scrapers.pop());
        server.wait_stats("a scraper gone", |s| s.http_active == 49);
        let mut again = connect(metrics);
        assert_eq!(healthz(&mut again), 200);
        scrapers.push(again);
        drop((scrapers, clients, late, busy));
        let stats = server.stop().stats;
        assert!(stats.http_rejected >= 1, "{stats:?}");
        assert_eq!(stats.rejected, stats.http_rejected + 1, "{stats:?}");
    }

    /// An idle keep-alive metrics connection used to hold its slot for
    /// ever without `--idle-timeout`; now `--metrics-idle-timeout` (on by
    /// default) closes it.
    fn an_idle_metrics_connection_is_closed() {
        let server = InProcess::start(Config {
            metrics: vec![loopback()],
            metrics_idle_timeout: Duration::from_millis(500),
            ..inprocess::config()
        });
        let metrics = server.metrics[0];
        let mut s = connect(metrics);
        assert_eq!(healthz(&mut s), 200);
        // Closed by the server (read_to_eof would time out and panic if not).
        assert_eq!(read_to_eof(&mut s), b"");
        let mut echo = connect(server.addr);
        assert_echo(&mut echo, b"echo clients are not concerned");
    }
}

/// The server-side socket of `client` in `/proc/net/tcp`: its timer kind
/// (`tr`: 0 none, 1 retransmit, 2 keepalive, ...) and when it fires, in
/// seconds from now.
fn server_side_timer(server: SocketAddr, client: &TcpStream) -> (u32, f64) {
    let local = format!("{:04X}", server.port());
    let remote = format!("{:04X}", client.local_addr().unwrap().port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f[1].ends_with(&format!(":{local}")) && f[2].ends_with(&format!(":{remote}")) {
            let (tr, when) = f[5].split_once(':').unwrap();
            let ticks = u64::from_str_radix(when, 16).unwrap();
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            return (tr.parse().unwrap(), ticks as f64 / hz);
        }
    }
    panic!("no server-side socket for {remote} in /proc/net/tcp");
}

on_every_backend! {
    /// `--keepalive 7`: every accepted connection runs the keepalive timer
    /// (inherited from the listener), due within 7 s; without the flag no
    /// timer runs on an idle connection.
    fn keepalive_arms_a_probe_timer_on_every_connection() {
        let server = InProcess::start(Config {
            keepalive: Some(Duration::from_secs(7)),
            ..inprocess::config()
        });
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"x");
        thread::sleep(Duration::from_millis(100));
        let (kind, due) = server_side_timer(server.addr, &s);
        assert_eq!(kind, 2, "no keepalive timer");
        assert!(due > 0.0 && due <= 7.0, "keepalive due in {due} s");

        let plain = InProcess::start(inprocess::config());
        let mut p = connect(plain.addr);
        assert_echo(&mut p, b"x");
        thread::sleep(Duration::from_millis(100));
        assert_eq!(server_side_timer(plain.addr, &p).0, 0);
    }

    /// SIGHUP (a closed terminal), SIGUSR1, SIGQUIT and SIGALRM used to
    /// kill the server with no drain (SIGQUIT with a core dump). Now each
    /// is handled, SIGWINCH and SIGPIPE stay ignored, and serving goes on
    /// (SIGUSR2 retires the server: `tests/workers.rs`).
    fn stray_signals_do_not_stop_the_server() {
        let mut server = Server::spawn(&[]);
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"before");
        server.signal(libc::SIGHUP);
        server.wait_log("SIGHUP");
        server.signal(libc::SIGUSR1);
        server.wait_log("stats: accepted=1");
        server.signal(libc::SIGQUIT);
        server.wait_log("status: serving; 1 connections");
        server.signal(libc::SIGALRM);
        server.wait_log("SIGALRM");
        server.signal(libc::SIGWINCH);
        server.signal(libc::SIGPIPE);
        assert_echo(&mut s, b"between");
        let log = server.stderr_text();
        assert!(!log.contains("final stats"), "{log}");
        assert_echo(&mut s, b"after");
        drop(s);
        let (status, log) = util::stop(&mut server);
        assert!(status.success(), "{log}");
    }
}
