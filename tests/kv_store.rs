//! `examples/kv_store.rs`, a protocol added without editing the library,
//! as a black box on every backend: the commands, the store shared by
//! every connection, each connection's own session, a command split at
//! every byte, 100 concurrent clients with every reply checked, and a line
//! over the limit refused.

#[path = "util/example.rs"]
mod example;
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use example::Example;
use util::connect;

fn spawn() -> Example {
    Example::spawn("kv_store", &["--backend", util::backend()])
}

/// Sends `command` and reads one reply line.
fn ask(reader: &mut BufReader<TcpStream>, command: &str) -> String {
    reader
        .get_mut()
        .write_all(format!("{command}\r\n").as_bytes())
        .expect("write");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("read reply");
    reply
}

fn client(server: &Example) -> BufReader<TcpStream> {
    BufReader::new(connect(server.addr))
}

on_every_backend! {
    fn set_get_and_del_share_one_store_and_count_per_connection() {
        let server = spawn();
        let mut a = client(&server);
        let mut b = client(&server);
        assert_eq!(ask(&mut a, "GET fruit"), "NOT_FOUND\r\n");
        assert_eq!(ask(&mut a, "SET fruit apple pie"), "OK\r\n");
        assert_eq!(ask(&mut b, "GET fruit"), "VALUE apple pie\r\n", "one store for all");
        assert_eq!(ask(&mut b, "DEL fruit"), "DELETED\r\n");
        assert_eq!(ask(&mut a, "GET fruit"), "NOT_FOUND\r\n");
        assert_eq!(ask(&mut a, "DEL fruit"), "NOT_FOUND\r\n");
        assert_eq!(ask(&mut a, "FLY away"), "ERR unknown command\r\n");
        assert_eq!(ask(&mut b, "SET x 1"), "OK\r\n");
        // Each connection counts its own commands (its session).
        assert_eq!(ask(&mut a, "INFO"), "INFO commands=6 keys=1\r\n");
        assert_eq!(ask(&mut b, "INFO"), "INFO commands=4 keys=1\r\n");
    }

    /// However TCP cuts the bytes, the answers are the same.
    fn a_conversation_split_at_every_byte_gets_the_same_answers() {
        let server = spawn();
        let talk = b"SET k v1\r\nGET k\r\nSET k v2\nGET k\nDEL k\r\nGET k\r\n";
        let expect = "OK\r\nVALUE v1\r\nOK\r\nVALUE v2\r\nDELETED\r\nNOT_FOUND\r\n";
        for cut in 1..talk.len() {
            let mut c = connect(server.addr);
            c.set_nodelay(true).expect("nodelay");
            c.write_all(&talk[..cut]).expect("write");
            thread::sleep(Duration::from_millis(2));
            c.write_all(&talk[cut..]).expect("write");
            let mut got = vec![0; expect.len()];
            c.read_exact(&mut got).expect("answers");
            assert_eq!(String::from_utf8_lossy(&got), expect, "split at {cut}");
        }
    }

    fn a_line_over_the_limit_is_refused_and_the_connection_closed() {
        let server = spawn();
        let mut c = connect(server.addr);
        let long = format!("SET k {}\r\n", "x".repeat(4000));
        let _ = c.write_all(long.as_bytes());
        let mut got = String::new();
        c.read_to_string(&mut got).expect("read to EOF");
        assert_eq!(got, "ERR line too long\r\n");
        // The server goes on serving others.
        let mut other = client(&server);
        assert_eq!(ask(&mut other, "SET k ok"), "OK\r\n");
    }
}

/// 100 concurrent clients, each setting its own keys and reading them
/// back; every reply is checked.
#[test]
fn a_hundred_clients_set_and_get_with_every_reply_checked() {
    let server = Example::spawn("kv_store", &[]);
    let addr = server.addr;
    let clients: Vec<_> = (0..100)
        .map(|id| {
            thread::spawn(move || {
                let mut c = BufReader::new(connect(addr));
                for round in 0..50 {
                    let key = format!("c{id}-k{}", round % 10);
                    let value = format!("value {id} {round} {}", "v".repeat(round * 7));
                    assert_eq!(ask(&mut c, &format!("SET {key} {value}")), "OK\r\n");
                    assert_eq!(
                        ask(&mut c, &format!("GET {key}")),
                        format!("VALUE {value}\r\n")
                    );
                }
                assert_eq!(ask(&mut c, "INFO").split(' ').nth(1), Some("commands=101"));
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    let mut c = BufReader::new(connect(addr));
    assert_eq!(ask(&mut c, "INFO"), "INFO commands=1 keys=1000\r\n");
}
