//! The bug a token's generation prevents, shown (`token.rs`, "Why
//! connection tokens carry a generation").
//!
//! A slab key is reused as soon as its connection is closed, but what was
//! said about the old connection lives on: a timer in the heap (a linger
//! bound, an idle check), an event already in this tick's batch. Without
//! the generation, all of it would name the *next* connection at that key.
//! These tests close a connection, let a new one take its key, and deliver
//! the old one's late timer and late event: the new connection must not
//! notice. Remove the generation check in `Reactor::current`
//! (`deadlines.rs`; the first test fails: the new connection is closed by
//! the old one's linger bound) or in `turn` (`mod.rs`; the second fails:
//! the new connection takes a turn on the old one's event).
//!
//! The loop is driven by hand, with its clock set by the test: no sleeping,
//! no timing.

use std::io::Write;
use std::time::Duration;

use mio::net::TcpStream;

use super::Reactor;
use super::class::Class;
use crate::config::Config;
use crate::connection::{CloseReason, Connection, LINGER_TIMEOUT, Ready};
use crate::poller::{Epoll, Token};
use crate::protocol::Handler;
use crate::sockets::Sockets;
use crate::token;

/// A raw echo reactor on a loopback port, not running.
fn reactor() -> Reactor<Epoll> {
    let config = Config {
        listen: vec!["127.0.0.1:0".parse().expect("address")],
        ..Config::default()
    };
    let sockets = Sockets::bind(&config).expect("bind");
    Reactor::bind(&config, sockets, Handler::Raw).expect("reactor")
}

/// A connection taken into the loop as `admit` takes one: the next free
/// slab key, the next generation. Returns the client's end, the slab key
/// and the connection's token.
fn connect(r: &mut Reactor<Epoll>) -> (std::net::TcpStream, usize, Token) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let client =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    let key = r.conns.vacant_key();
    let token = token::connection(key, Class::Echo.mark(r.generations.next_generation()));
    let stream = TcpStream::from_std(server);
    let conn = Connection::register(stream, token, &mut r.poller, r.clock.stamp).expect("register");
    assert_eq!(r.conns.insert(conn), key);
    r.classes[Class::Echo].open += 1;
    (client, key, token)
}

/// Starts the server's close sequence on the connection at `key`: with
/// nothing pending, FIN at once, then lingering, its bound armed.
fn shut_down(r: &mut Reactor<Epoll>, key: usize) {
    r.with_connection(key, |conn, cx| Some(conn.begin_shutdown(cx)));
    assert!(r.conns[key].is_lingering());
}

#[test]
fn a_closed_connections_late_timer_does_not_close_the_next_one_at_its_key() {
    let mut r = reactor();
    let start = r.clock.now;

    // The first connection lingers; its bound is due at start + 5 s.
    let (_first_client, key, _first) = connect(&mut r);
    shut_down(&mut r, key);
    // Its client's FIN ends it early; the bound stays in the heap.
    r.close(key, CloseReason::Lingered);

    // A second later the next connection takes the same key, and lingers
    // too: its own bound is due at start + 6 s.
    r.clock.now = start + Duration::from_secs(1);
    let (_second_client, second_key, second) = connect(&mut r);
    assert_eq!(second_key, key, "the slab did not reuse the key");
    shut_down(&mut r, key);

    // start + 5 s: only the first connection's bound is due.
    r.clock.now = start + LINGER_TIMEOUT;
    r.fire_timers();
    assert!(
        r.current(second).is_some(),
        "closed by the linger bound of the connection before it"
    );
    assert_eq!(r.stats.linger_timeouts, 0);

    // start + 6 s: its own bound closes it.
    r.clock.now = start + Duration::from_secs(1) + LINGER_TIMEOUT;
    r.fire_timers();
    assert!(r.current(second).is_none());
    assert_eq!(r.stats.linger_timeouts, 1);
}

#[test]
fn a_closed_connections_late_event_does_not_drive_the_next_one_at_its_key() {
    let mut r = reactor();
    let (_first_client, key, first) = connect(&mut r);
    r.close(key, CloseReason::PeerClosed);
    let (mut second_client, second_key, _second) = connect(&mut r);
    assert_eq!(second_key, key, "the slab did not reuse the key");
    // The new client's bytes are announced by an event of its own, not
    // delivered yet.
    second_client.write_all(b"mine").expect("send");

    // The old connection's hang-up, reported in the same batch as its
    // close.
    let hang_up = Ready {
        readable: true,
        writable: true,
        read_closed: true,
        urgent: false,
    };
    r.dispatch(first, hang_up);
    assert_eq!(
        r.stats.bytes_in, 0,
        "the new connection took a turn on the old one's event"
    );
}
