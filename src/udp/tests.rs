//! A UDP socket's turn against a scripted socket (what arrives, how many
//! sends it takes before `WouldBlock`), and the batch calls against real
//! loopback sockets.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::batch::{Batch, Datagrams, MAX_BATCH, Pick, portable};
use super::queue::MAX_QUEUED;
use super::*;
use crate::budget::{Budget, MIN_MAX_BUFFERED};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A socket that receives what the test queued and sends until its room
/// runs out.
#[derive(Default)]
struct Scripted {
    incoming: RefCell<VecDeque<(Vec<u8>, SocketAddr)>>,
    /// Sends taken before `WouldBlock`.
    room: Cell<usize>,
    sent: RefCell<Vec<(Vec<u8>, SocketAddr)>>,
    recv_calls: Cell<usize>,
    send_calls: Cell<usize>,
    /// Arrivals (by their place in `incoming`) that come coalesced, and
    /// their segment size.
    coalesced: RefCell<Vec<(usize, usize)>>,
}

impl Scripted {
    fn with_room(room: usize) -> Scripted {
        let s = Scripted::default();
        s.room.set(room);
        s
    }

    fn arrive(&self, data: &[u8], peer: SocketAddr) {
        self.incoming.borrow_mut().push_back((data.to_vec(), peer));
    }

    fn take(&self, data: &[u8], peer: SocketAddr) -> std::io::Result<()> {
        if self.room.get() == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        self.room.set(self.room.get() - 1);
        self.sent.borrow_mut().push((data.to_vec(), peer));
        Ok(())
    }

    fn sent(&self) -> Vec<Vec<u8>> {
        self.sent.borrow().iter().map(|(d, _)| d.clone()).collect()
    }
}

impl Datagrams for Scripted {
    fn recv_batch(&self, batch: &mut Batch) -> std::io::Result<usize> {
        self.recv_calls.set(self.recv_calls.get() + 1);
        batch.clear();
        let mut incoming = self.incoming.borrow_mut();
        while let Some((data, peer)) = incoming.front() {
            let mut coalesced = self.coalesced.borrow_mut();
            let pushed = match coalesced.first() {
                Some(&(0, seg)) => batch.push_coalesced(data, seg, *peer),
                _ => batch.push(data, *peer),
            };
            if !pushed {
                break;
            }
            incoming.pop_front();
            coalesced.retain_mut(|(at, _)| {
                let first = *at == 0;
                *at = at.saturating_sub(1);
                !first
            });
        }
        match batch.filled() {
            0 => Err(std::io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn send_batch(&self, batch: &Batch, picks: &[Pick]) -> std::io::Result<usize> {
        self.send_calls.set(self.send_calls.get() + 1);
        let mut sent = 0;
        for &pick in picks {
            match self.take(batch.bytes(pick), batch.peer(usize::from(pick.slot))) {
                Ok(()) => sent += 1,
                Err(e) if sent == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(sent)
    }

    fn send_one(&self, data: &[u8], peer: SocketAddr) -> std::io::Result<usize> {
        self.send_calls.set(self.send_calls.get() + 1);
        self.take(data, peer).map(|()| data.len())
    }
}

/// The loop's side, for a turn.
struct Loop {
    guard: LoopGuard,
    stats: Stats,
    budget: Budget,
}

impl Loop {
    fn new() -> Loop {
        Loop {
            guard: LoopGuard::new(vec![addr("127.0.0.1:9000")]),
            stats: Stats::default(),
            budget: Budget::new(MIN_MAX_BUFFERED, 65_536, 1, 0),
        }
    }

    fn turn(&mut self, socket: &Scripted, port: &mut Port) -> Turn {
        let mut cx = UdpCx {
            guard: &mut self.guard,
            stats: &mut self.stats,
            budget: &mut self.budget,
            now: Instant::now(),
        };
        serve(socket, Service::Echo, port, &mut cx)
    }
}

fn numbered(i: usize) -> Vec<u8> {
    format!("datagram {i}").into_bytes()
}

#[test]
fn several_datagrams_are_answered_in_one_turn_by_one_receive_and_one_send() {
    let (socket, mut port, mut lp) = (Scripted::with_room(100), Port::new(8), Loop::new());
    let peer = addr("127.0.0.1:40000");
    for i in 0..5 {
        socket.arrive(&numbered(i), peer);
    }
    assert_eq!(lp.turn(&socket, &mut port), Turn::Drained, "a short batch");
    let want: Vec<Vec<u8>> = (0..5).map(numbered).collect();
    assert_eq!(socket.sent(), want, "every datagram answered, in order");
    assert!(socket.sent.borrow().iter().all(|(_, to)| *to == peer));
    assert_eq!((socket.recv_calls.get(), socket.send_calls.get()), (1, 1));
    assert_eq!((lp.stats.datagrams_in, lp.stats.datagrams_out), (5, 5));
    assert_eq!(port.interest_change(), None, "no write interest");
}

#[test]
fn a_lone_datagram_is_answered_in_its_own_turn() {
    let (socket, mut port, mut lp) = (Scripted::with_room(100), Port::new(32), Loop::new());
    socket.arrive(b"alone", addr("127.0.0.1:40000"));
    assert_eq!(lp.turn(&socket, &mut port), Turn::Drained);
    assert_eq!(socket.sent(), vec![b"alone".to_vec()]);
}

#[test]
fn a_turn_takes_one_batch_and_a_full_one_asks_for_another_turn() {
    let (socket, mut port, mut lp) = (Scripted::with_room(100), Port::new(4), Loop::new());
    for i in 0..10 {
        socket.arrive(&numbered(i), addr("127.0.0.1:40000"));
    }
    assert_eq!(lp.turn(&socket, &mut port), Turn::Requeue);
    assert_eq!(socket.recv_calls.get(), 1, "one receive per turn");
    assert_eq!(lp.stats.datagrams_in, 4, "one batch per turn");
    assert_eq!(socket.incoming.borrow().len(), 6, "the rest waits");
    assert_eq!(lp.turn(&socket, &mut port), Turn::Requeue);
    assert_eq!(lp.turn(&socket, &mut port), Turn::Drained);
    assert_eq!(lp.stats.datagrams_out, 10);
}

#[test]
fn every_datagram_of_a_batch_meets_the_loop_guard() {
    let (socket, mut port, mut lp) = (Scripted::with_room(100), Port::new(8), Loop::new());
    socket.arrive(b"a", addr("127.0.0.1:40000"));
    socket.arrive(b"from chargen", addr("10.0.0.1:19"));
    socket.arrive(b"from ourselves", addr("127.0.0.1:9000"));
    socket.arrive(b"b", addr("127.0.0.1:40001"));
    lp.turn(&socket, &mut port);
    assert_eq!(socket.sent(), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(lp.stats.datagrams_in, 4);
    assert_eq!(lp.stats.datagrams_refused, 2);
    // A peer that keeps sending back our answers is refused past the
    // burst, within one batch as across batches.
    let reflector = addr("10.0.0.2:5000");
    for _ in 0..(guard::REPEAT_BURST + 4) {
        socket.arrive(b"ping", reflector);
    }
    port = Port::new(MAX_BATCH);
    lp.turn(&socket, &mut port);
    let answered = socket.sent().len() - 2;
    assert_eq!(answered, 1 + guard::REPEAT_BURST as usize);
}

#[test]
fn daytime_answers_each_datagram_with_the_time() {
    let (socket, mut port, mut lp) = (Scripted::with_room(100), Port::new(8), Loop::new());
    socket.arrive(b"", addr("127.0.0.1:40000"));
    socket.arrive(b"anything", addr("127.0.0.1:40001"));
    let mut cx = UdpCx {
        guard: &mut lp.guard,
        stats: &mut lp.stats,
        budget: &mut lp.budget,
        now: Instant::now(),
    };
    serve(&socket, Service::Daytime, &mut port, &mut cx);
    let sent = socket.sent();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|d| d.ends_with(b"-UTC\r\n")), "{sent:?}");
}

#[test]
fn answers_that_would_block_wait_in_order_with_write_interest_and_are_charged() {
    let (socket, mut port, mut lp) = (Scripted::with_room(2), Port::new(8), Loop::new());
    for i in 0..5 {
        socket.arrive(&numbered(i), addr("127.0.0.1:40000"));
    }
    lp.turn(&socket, &mut port);
    assert_eq!(socket.sent().len(), 2);
    assert_eq!(port.queued(), 3);
    assert_eq!(port.interest_change(), Some(true), "write interest now");
    assert_eq!(port.interest_change(), None, "once");
    assert!(port.held() > 0);
    assert_eq!(lp.budget.used(), port.held(), "charged to the budget");
    assert_eq!(lp.stats.datagrams_dropped, 0);
    // New datagrams queue behind the waiting answers, even with room.
    socket.room.set(100);
    socket.arrive(&numbered(5), addr("127.0.0.1:40000"));
    lp.turn(&socket, &mut port);
    let want: Vec<Vec<u8>> = (0..6).map(numbered).collect();
    assert_eq!(socket.sent(), want, "in order");
    assert_eq!(
        port.interest_change(),
        Some(false),
        "write interest dropped"
    );
    assert_eq!(lp.budget.used(), 0, "given back");
    assert_eq!(lp.stats.datagrams_out, 6);
}

#[test]
fn past_the_budget_answers_are_dropped_and_counted() {
    let (socket, mut port, mut lp) = (Scripted::with_room(0), Port::new(MAX_BATCH), Loop::new());
    let big = vec![7u8; 60_000];
    let n = 40; // 2.4 MB of answers against a budget of 1 MiB.
    for i in 0..n {
        let mut d = big.clone();
        d[0] = i as u8;
        socket.arrive(&d, addr("127.0.0.1:40000"));
    }
    lp.turn(&socket, &mut port);
    let kept = port.queued() as u64;
    assert!(kept > 0);
    assert_eq!(
        kept + lp.stats.datagrams_dropped,
        n as u64,
        "each kept or counted"
    );
    assert!(lp.stats.datagrams_dropped > 0);
    // At most half the budget, and one answer past it.
    assert!(lp.budget.used() <= MIN_MAX_BUFFERED / 2 + big.len() + 64);
    assert_eq!(lp.budget.used(), port.held());
    port.close(&mut lp.budget);
    assert_eq!(lp.budget.used(), 0, "closing gives the bytes back");
}

#[test]
fn the_queue_is_bounded_in_answers_too() {
    let (socket, mut port, mut lp) = (Scripted::with_room(0), Port::new(MAX_BATCH), Loop::new());
    let turns = MAX_QUEUED / MAX_BATCH + 2;
    for i in 0..turns * MAX_BATCH {
        socket.arrive(&numbered(i), addr("127.0.0.1:40000"));
    }
    for _ in 0..turns {
        lp.turn(&socket, &mut port);
    }
    assert_eq!(port.queued(), MAX_QUEUED);
    assert_eq!(
        lp.stats.datagrams_dropped,
        (turns * MAX_BATCH - MAX_QUEUED) as u64
    );
}

/// Real loopback sockets: `client` sends `n` datagrams to `server`; waits
/// until all are taken by `recv` (a batch call), and returns them.
fn exchange(
    n: usize,
    recv: impl Fn(&mio::net::UdpSocket, &mut Batch) -> std::io::Result<usize>,
    send: impl Fn(&mio::net::UdpSocket, &Batch, &[Pick]) -> std::io::Result<usize>,
    v6: bool,
) {
    let any = if v6 { "[::1]:0" } else { "127.0.0.1:0" };
    let Ok(server) = std::net::UdpSocket::bind(any) else {
        eprintln!("SKIPPED: no {any} here");
        return;
    };
    server.set_nonblocking(true).unwrap();
    let server = mio::net::UdpSocket::from_std(server);
    let client = std::net::UdpSocket::bind(any).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let to = server.local_addr().unwrap();
    for i in 0..n {
        client.send_to(&numbered(i), to).unwrap();
    }
    let mut batch = Batch::new(MAX_BATCH);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < n && Instant::now() < deadline {
        match recv(&server, &mut batch) {
            Ok(k) => {
                let picks: Vec<Pick> = (0..k).flat_map(|i| batch.datagrams(i)).collect();
                for &p in &picks {
                    let peer = batch.peer(usize::from(p.slot));
                    assert_eq!(peer, client.local_addr().unwrap());
                    got.push(batch.bytes(p).to_vec());
                }
                assert_eq!(send(&server, &batch, &picks).unwrap(), k);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    let want: Vec<Vec<u8>> = (0..n).map(numbered).collect();
    assert_eq!(got, want);
    let mut buf = [0u8; 64];
    for w in &want {
        let (k, from) = client.recv_from(&mut buf).expect("the answer");
        assert_eq!((&buf[..k], from), (&w[..], to));
    }
}

#[test]
fn the_batch_calls_receive_and_answer_real_datagrams() {
    let recv = |s: &mio::net::UdpSocket, b: &mut Batch| s.recv_batch(b);
    let send = |s: &mio::net::UdpSocket, b: &Batch, p: &[Pick]| s.send_batch(b, p);
    exchange(10, recv, send, false);
    exchange(10, recv, send, true);
    // A lone answer goes by its own call (`sendto`), to the same peer.
    exchange(1, recv, send, false);
    exchange(1, recv, send, true);
}

/// A batch's receive headers are kept from call to call, and the kernel
/// writes into them (the length of the sender's address): that must not
/// limit the next call. IPv4 and IPv6 senders in turn into one batch: each
/// IPv6 address (28 bytes, after a call that wrote 16) is read whole, and
/// each lone datagram answered to its sender.
#[test]
fn one_batch_receives_call_after_call_whatever_the_last_call_left() {
    let mut batch = Batch::new(4);
    for any in ["127.0.0.1:0", "[::1]:0", "127.0.0.1:0", "[::1]:0"] {
        let Ok(server) = std::net::UdpSocket::bind(any) else {
            eprintln!("SKIPPED: no {any} here");
            return;
        };
        server.set_nonblocking(true).unwrap();
        let server = mio::net::UdpSocket::from_std(server);
        let client = std::net::UdpSocket::bind(any).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = server.local_addr().unwrap();
        client.send_to(b"one", to).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            match server.recv_batch(&mut batch) {
                Ok(got) => break got,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(got, 1);
        assert_eq!(batch.peer(0), client.local_addr().unwrap());
        let picks: Vec<Pick> = batch.datagrams(0).collect();
        assert_eq!(server.send_batch(&batch, &picks).unwrap(), 1);
        let mut buf = [0u8; 8];
        let (k, from) = client.recv_from(&mut buf).expect("the answer");
        assert_eq!((&buf[..k], from), (&b"one"[..], to));
    }
}

#[test]
fn runs_of_answers_to_one_peer_arrive_as_the_datagrams_they_were() {
    // Sizes that end runs every way: shorter (the run's last segment),
    // longer (a new run), empty (never a segment).
    let sizes = [100, 100, 40, 100, 300, 300, 300, 0, 7, 7, 65_000, 65_000];
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let server = mio::net::UdpSocket::from_std(server);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let to = server.local_addr().unwrap();
    let sent: Vec<Vec<u8>> = (sizes.iter().enumerate())
        .map(|(i, &n)| (0..n).map(|b| (b * 7 + i) as u8).collect())
        .collect();
    for d in &sent {
        client.send_to(d, to).unwrap();
    }
    let mut batch = Batch::new(MAX_BATCH);
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while got < sizes.len() && Instant::now() < deadline {
        match server.recv_batch(&mut batch) {
            Ok(k) => {
                let picks: Vec<Pick> = (0..k).flat_map(|i| batch.datagrams(i)).collect();
                let mut done = 0;
                while done < picks.len() {
                    done += server.send_batch(&batch, &picks[done..]).unwrap();
                }
                got += k;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    let mut buf = vec![0u8; 70_000];
    for d in &sent {
        let n = client.recv(&mut buf).expect("the answer");
        assert_eq!(n, d.len());
        assert!(buf[..n] == d[..], "a datagram of {} bytes changed", d.len());
    }
}

#[test]
fn the_portable_calls_do_the_same() {
    exchange(10, portable::recv, portable::send, false);
    exchange(10, portable::recv, portable::send, true);
}

#[test]
fn every_datagram_of_a_coalesced_slot_is_counted_checked_and_answered() {
    let (socket, mut port, mut lp) = (Scripted::with_room(100), Port::new(8), Loop::new());
    // Seven datagrams of 10 bytes and a last of 4, coalesced in one slot.
    let run: Vec<u8> = (0..74u8).collect();
    port_push(&socket, &run, 10, addr("127.0.0.1:40000"));
    // And a run from a reflector's port: refused, every one of it.
    port_push(&socket, &[1; 30], 10, addr("10.0.0.1:7"));
    lp.turn(&socket, &mut port);
    let want: Vec<Vec<u8>> = run.chunks(10).map(<[u8]>::to_vec).collect();
    assert_eq!(socket.sent(), want);
    assert_eq!(lp.stats.datagrams_in, 8 + 3);
    assert_eq!(lp.stats.datagrams_refused, 3);
    assert_eq!(lp.stats.datagrams_out, 8);
}

/// Scripted coalesced arrivals go through the same queue as single ones.
fn port_push(socket: &Scripted, data: &[u8], seg: usize, peer: SocketAddr) {
    socket
        .coalesced
        .borrow_mut()
        .push((socket.incoming.borrow().len(), seg));
    socket.arrive(data, peer);
}

/// A run of datagrams sent as one segmented message (UDP GSO) reaches an
/// echo socket that accepts coalesced datagrams as one slot, is split into
/// its datagrams, and goes back as the same datagrams.
#[cfg(target_os = "linux")]
#[test]
fn a_coalesced_run_is_split_into_its_datagrams_and_echoed_as_them() {
    use std::os::fd::AsRawFd;
    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_nonblocking(true).unwrap();
    let server = mio::net::UdpSocket::from_std(server);
    accept_coalesced(&server);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.connect(server.local_addr().unwrap()).unwrap();
    let run: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    send_segmented(client.as_raw_fd(), &run, 64);
    let mut batch = Batch::new(8);
    let mut picks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while picks.len() < 16 && Instant::now() < deadline {
        match server.recv_batch(&mut batch) {
            Ok(k) => {
                for i in 0..k {
                    picks.extend(batch.datagrams(i).map(|p| (p, batch.bytes(p).to_vec())));
                }
                let these: Vec<Pick> = (0..k).flat_map(|i| batch.datagrams(i)).collect();
                let mut done = 0;
                while done < these.len() {
                    done += server.send_batch(&batch, &these[done..]).unwrap();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
    let want: Vec<Vec<u8>> = run.chunks(64).map(<[u8]>::to_vec).collect();
    let got: Vec<Vec<u8>> = picks.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(got, want, "the datagrams of the run, in order");
    assert!(picks.iter().any(|(p, _)| p.at > 0), "some came coalesced");
    let mut buf = [0u8; 2048];
    for w in &want {
        let n = client.recv(&mut buf).expect("an echo");
        assert_eq!(&buf[..n], &w[..]);
    }
}

/// Sends `data` on connected `fd` as one message cut into datagrams of
/// `seg` bytes by the kernel (`UDP_SEGMENT`).
#[cfg(target_os = "linux")]
fn send_segmented(fd: std::os::fd::RawFd, data: &[u8], seg: u16) {
    #[repr(C)]
    struct Control {
        header: libc::cmsghdr,
        segment: u16,
        _pad: [u8; 6],
    }
    // SAFETY: plain old data.
    let mut control: Control = unsafe { std::mem::zeroed() };
    control.header.cmsg_len = (std::mem::size_of::<libc::cmsghdr>() + 2) as _;
    control.header.cmsg_level = libc::SOL_UDP;
    control.header.cmsg_type = libc::UDP_SEGMENT;
    control.segment = seg;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: plain old data; the fields that matter are set next.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&raw mut control).cast();
    msg.msg_controllen = std::mem::size_of::<Control>() as _;
    // SAFETY: `msg` points at live `iov`, `data` and `control`.
    let sent = unsafe { libc::sendmsg(fd, &msg, 0) };
    assert_eq!(
        sent,
        data.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}
