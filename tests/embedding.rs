//! The library in-process, as an embedder uses it: bind on 127.0.0.1:0,
//! run on a thread, stop with a [`ShutdownHandle`]. One call drains
//! gracefully; two end the loop at once.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use echo_reactor::{Config, ListenAddr, Report, Server};

/// A generous bound on any single wait (the machine is shared).
const STEP: Duration = Duration::from_secs(20);

fn config() -> Config {
    Config {
        listen: vec!["127.0.0.1:0".parse::<ListenAddr>().unwrap()],
        // Long enough that only the handle can end a shutdown in time.
        shutdown_timeout: Duration::from_secs(120),
        ..Config::default()
    }
}

/// Starts a server on a thread; the report arrives on the channel.
fn start() -> (
    std::net::SocketAddr,
    echo_reactor::ShutdownHandle,
    mpsc::Receiver<Report>,
) {
    let server = Server::bind(&config()).expect("bind");
    let addr = server.local_addrs()[0];
    let handle = server.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let report = server.run().expect("the loop");
        let _ = tx.send(report);
    });
    (addr, handle, rx)
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(STEP)).unwrap();
    s
}

#[test]
fn one_shutdown_call_drains_gracefully() {
    let (addr, handle, reports) = start();
    let mut client = connect(addr);
    client.write_all(b"before").unwrap();
    let mut echo = [0u8; 6];
    client.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"before");

    handle.shutdown().unwrap();
    // The connection is drained: FIN after everything owed, then the loop
    // waits (lingers) for the client's FIN before it returns.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(
        reports.recv_timeout(Duration::from_millis(200)).is_err(),
        "returned before the client closed"
    );
    // New connections are refused by the kernel: the listener is closed.
    assert!(TcpStream::connect(addr).is_err(), "still accepting");
    client.shutdown(Shutdown::Write).unwrap();
    let report = reports.recv_timeout(STEP).expect("the loop returned");
    assert!(!report.forced);
    assert_eq!(report.stats.accepted, 1);
    assert_eq!(report.stats.closed, 1);
    assert_eq!(report.stats.bytes_out, 6);
}

#[test]
fn a_second_shutdown_call_ends_the_loop_at_once() {
    let (addr, handle, reports) = start();
    // A client that never closes would hold a graceful shutdown until its
    // deadline (two minutes here).
    let mut client = connect(addr);
    client.write_all(b"x").unwrap();
    let mut echo = [0u8; 1];
    client.read_exact(&mut echo).unwrap();
    handle.shutdown().unwrap();
    assert!(
        reports.recv_timeout(Duration::from_millis(200)).is_err(),
        "a graceful shutdown should wait for the client"
    );
    handle.shutdown().unwrap();
    let report = reports.recv_timeout(STEP).expect("the loop returned");
    assert!(report.forced);
    drop(client);
}
