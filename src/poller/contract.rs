//! The contract of [`Poller`] (see the module docs of `poller`), checked on
//! every backend.
//!
//! Each property is one generic function; `on_every_backend!` stamps it out
//! as a test per backend, so `cargo test poller::contract::fairness` runs
//! `fairness_across_waits::{epoll, poll, select}`. The sources are Unix
//! socket pairs, and TCP over loopback where the peer's FIN or reset is the
//! point; nothing here looks inside a backend.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use super::{Event, Interest, Poller, Token};

/// Declares a test per backend for each generic property function.
macro_rules! on_every_backend {
    ($($property:ident),* $(,)?) => {$(
        mod $property {
            #[test]
            fn epoll() {
                super::$property::<crate::poller::Epoll>()
            }
            #[test]
            fn poll() {
                super::$property::<crate::poller::Poll>()
            }
            #[test]
            fn select() {
                super::$property::<crate::poller::Select>()
            }
        }
    )*};
}

on_every_backend!(
    register_reregister_deregister,
    misuse_is_refused_with_the_errno_epoll_gives,
    no_event_after_deregister,
    a_hang_up_is_a_readable_hint,
    a_zero_timeout_returns_at_once,
    a_wait_sleeps_until_ready_or_timeout,
    the_capacity_of_the_event_list_is_respected,
    fairness_across_waits,
);

/// One `wait`, retried on `EINTR`; the events it returned.
fn wait<P: Poller>(p: &mut P, events: &mut P::Events, timeout: Option<Duration>) -> Vec<Event> {
    loop {
        match p.wait(events, timeout) {
            Ok(()) => return P::iter(events).collect(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("wait: {e}"),
        }
    }
}

/// A `wait` with a zero timeout: what is ready now.
fn look<P: Poller>(p: &mut P, events: &mut P::Events) -> Vec<Event> {
    wait(p, events, Some(Duration::ZERO))
}

/// Waits up to a few seconds for the first non-empty `wait` (for TCP,
/// where the peer's FIN or reset arrives a moment after the call that sent
/// it).
fn next_events<P: Poller>(p: &mut P, events: &mut P::Events) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = wait(p, events, Some(Duration::from_millis(100)));
        if !got.is_empty() || Instant::now() >= deadline {
            return got;
        }
    }
}

/// `n` socket pairs with a byte waiting on the first end of each.
fn readable_pairs(n: usize) -> Vec<(UnixStream, UnixStream)> {
    (0..n)
        .map(|_| {
            let (a, b) = UnixStream::pair().expect("socket pair");
            (&b).write_all(b"x").expect("write to a socket pair");
            (a, b)
        })
        .collect()
}

/// A connected TCP pair over loopback: (accepted side, client side).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (server, client)
}

/// The one event of `events`, with its token checked.
#[track_caller]
fn only(events: &[Event], token: usize) -> Event {
    assert_eq!(events.len(), 1, "expected one event, got {events:?}");
    assert_eq!(events[0].token, Token(token), "{events:?}");
    events[0]
}

/// A poller watching one end of a socket pair for reading, as token 1;
/// the other end is returned to write to.
fn watching_one_pair<P: Poller>() -> (P, P::Events, UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().expect("socket pair");
    let mut p = P::new().expect("new poller");
    p.register(a.as_raw_fd(), Token(1), Interest::READABLE)
        .expect("register");
    (p, P::events(8), a, b)
}

/// Writes a byte to `b` from a thread, `after` from now.
fn write_later(b: UnixStream, after: Duration) -> thread::JoinHandle<UnixStream> {
    thread::spawn(move || {
        thread::sleep(after);
        (&b).write_all(b"x").expect("write");
        b
    })
}

fn register_reregister_deregister<P: Poller>() {
    let (mut p, mut events, a, b) = watching_one_pair::<P>();
    let fd = a.as_raw_fd();
    assert!(look(&mut p, &mut events).is_empty(), "nothing to read yet");
    (&b).write_all(b"x").expect("write");
    assert!(only(&look(&mut p, &mut events), 1).readable);

    // A new token and interest replace the old ones: input is still
    // waiting, but only writability is asked for now.
    p.reregister(fd, Token(2), Interest::WRITABLE)
        .expect("reregister");
    let e = only(&look(&mut p, &mut events), 2);
    assert!(e.writable && !e.readable, "{e:?}");
    p.reregister(fd, Token(3), Interest::READABLE | Interest::WRITABLE)
        .expect("reregister");
    let e = only(&look(&mut p, &mut events), 3);
    assert!(e.readable && e.writable, "{e:?}");

    p.deregister(fd).expect("deregister");
    assert!(look(&mut p, &mut events).is_empty());
    // Deregistered means forgotten: it can be registered afresh.
    p.register(fd, Token(4), Interest::READABLE)
        .expect("register again");
    assert!(only(&look(&mut p, &mut events), 4).readable);
}

fn misuse_is_refused_with_the_errno_epoll_gives<P: Poller>() {
    let (a, _b) = UnixStream::pair().expect("socket pair");
    let fd = a.as_raw_fd();
    let mut p = P::new().expect("new poller");
    let errno = |r: io::Result<()>| r.expect_err("misuse accepted").raw_os_error();
    let enoent = Some(libc::ENOENT);
    assert_eq!(
        errno(p.reregister(fd, Token(1), Interest::READABLE)),
        enoent
    );
    assert_eq!(errno(p.deregister(fd)), enoent);
    p.register(fd, Token(1), Interest::READABLE)
        .expect("register");
    let again = p.register(fd, Token(2), Interest::READABLE);
    assert_eq!(errno(again), Some(libc::EEXIST));
    p.deregister(fd).expect("deregister");
    assert_eq!(errno(p.deregister(fd)), enoent);
}

fn no_event_after_deregister<P: Poller>() {
    let pairs = readable_pairs(2);
    let mut p = P::new().expect("new poller");
    let mut events = P::events(8);
    for (i, (a, _)) in pairs.iter().enumerate() {
        p.register(a.as_raw_fd(), Token(i), Interest::READABLE)
            .expect("register");
    }
    // Deregistered while its readiness is pending, not yet collected.
    p.deregister(pairs[0].0.as_raw_fd()).expect("deregister");
    assert!(only(&look(&mut p, &mut events), 1).readable);
    // Nor when it becomes ready again later.
    (&pairs[0].1).write_all(b"more").expect("write");
    for _ in 0..2 {
        let got = look(&mut p, &mut events);
        assert!(got.iter().all(|e| e.token == Token(1)), "{got:?}");
    }
}

fn a_hang_up_is_a_readable_hint<P: Poller>() {
    let mut p = P::new().expect("new poller");
    let mut events = P::events(8);
    // A socket pair whose other end is closed.
    let (a, b) = UnixStream::pair().expect("socket pair");
    p.register(a.as_raw_fd(), Token(1), Interest::READABLE)
        .expect("register");
    drop(b);
    assert!(only(&look(&mut p, &mut events), 1).readable);
    p.deregister(a.as_raw_fd()).expect("deregister");

    // TCP: the peer's FIN, then the read that tells what happened.
    let (mut server, client) = tcp_pair();
    p.register(server.as_raw_fd(), Token(2), Interest::READABLE)
        .expect("register");
    assert!(look(&mut p, &mut events).is_empty(), "nothing happened yet");
    client.shutdown(std::net::Shutdown::Write).expect("FIN");
    assert!(only(&next_events(&mut p, &mut events), 2).readable);
    assert_eq!(server.read(&mut [0u8; 8]).expect("read after FIN"), 0);
    p.deregister(server.as_raw_fd()).expect("deregister");

    // TCP: a reset (SO_LINGER 0, then close).
    let (server, client) = tcp_pair();
    p.register(server.as_raw_fd(), Token(3), Interest::READABLE)
        .expect("register");
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(client);
    assert!(only(&next_events(&mut p, &mut events), 3).readable);
}

fn a_zero_timeout_returns_at_once<P: Poller>() {
    let (mut p, mut events, _a, b) = watching_one_pair::<P>();
    // Input arrives late: a backend that took zero for "no timeout"
    // returns then, and fails below, instead of hanging the test.
    let late = write_later(b, Duration::from_secs(2));
    let start = Instant::now();
    let got = look(&mut p, &mut events);
    let took = start.elapsed();
    assert!(got.is_empty(), "{got:?}");
    assert!(
        took < Duration::from_secs(1),
        "a zero timeout took {took:?}"
    );
    drop(late.join().expect("writer thread"));
}

fn a_wait_sleeps_until_ready_or_timeout<P: Poller>() {
    let (mut p, mut events, _a, b) = watching_one_pair::<P>();
    let timeout = Duration::from_millis(50);
    let start = Instant::now();
    assert!(wait(&mut p, &mut events, Some(timeout)).is_empty());
    assert!(
        start.elapsed() >= timeout,
        "woke after {:?}",
        start.elapsed()
    );

    let late = write_later(b, Duration::from_millis(50));
    // No timeout: back when the input is there (a wait may also come back
    // empty, as a hint; then wait again).
    let got = loop {
        let got = wait(&mut p, &mut events, None);
        if !got.is_empty() {
            break got;
        }
    };
    assert!(only(&got, 1).readable);
    drop(late.join().expect("writer thread"));
}

fn the_capacity_of_the_event_list_is_respected<P: Poller>() {
    let pairs = readable_pairs(5);
    let mut p = P::new().expect("new poller");
    for (i, (a, _)) in pairs.iter().enumerate() {
        p.register(a.as_raw_fd(), Token(i), Interest::READABLE)
            .expect("register");
    }
    for capacity in [1, 2] {
        let mut events = P::events(capacity);
        assert_eq!(look(&mut p, &mut events).len(), capacity);
    }
    // Room for all: under edge-triggering, those already reported are not
    // reported again until something new happens, so make it happen.
    for (_, b) in &pairs {
        (&*b).write_all(b"x").expect("write");
    }
    let mut events = P::events(8);
    assert_eq!(look(&mut p, &mut events).len(), pairs.len());
}

/// More sources are ready than the event list holds, and none is served:
/// each `wait` must begin with the ones the waits before it left out, so
/// that every source is reported within ready / capacity waits. A backend
/// that scans from the start every time reports the same first ones for
/// ever, and the rest starve.
fn fairness_across_waits<P: Poller>() {
    const READY: usize = 5;
    const CAPACITY: usize = 2;
    let pairs = readable_pairs(READY);
    let mut p = P::new().expect("new poller");
    for (i, (a, _)) in pairs.iter().enumerate() {
        p.register(a.as_raw_fd(), Token(i), Interest::READABLE)
            .expect("register");
    }
    let mut events = P::events(CAPACITY);
    let mut waiting: BTreeSet<usize> = (0..READY).collect();
    for round in 0..READY.div_ceil(CAPACITY) {
        let got: Vec<usize> = look(&mut p, &mut events)
            .iter()
            .map(|e| e.token.0)
            .collect();
        let fresh = got.iter().take_while(|t| waiting.contains(t)).count();
        assert_eq!(
            fresh,
            CAPACITY.min(waiting.len()),
            "wait {round} reported {got:?} while {waiting:?} were still waiting their turn"
        );
        for t in got {
            waiting.remove(&t);
        }
    }
    assert!(waiting.is_empty(), "never reported: {waiting:?}");
}
