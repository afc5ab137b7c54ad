//! `--mode line` over real sockets: a reply per line whatever the
//! chunking, transforms, banner, `exit`, the line limit, a last line at
//! EOF, and the core's connection limit.

mod util;

use std::io::Write;
use std::net::Shutdown;

use util::{Server, connect, read_n, read_to_eof};

on_every_backend! {
    fn lines_are_answered_with_their_own_terminators() {
        let server = Server::spawn(&["--mode", "line"]);
        let mut s = connect(server.addr);
        s.write_all(b"one\ntwo\r\n\nthree\n").unwrap();
        assert_eq!(read_n(&mut s, 16), b"one\ntwo\r\n\nthree\n");
    }

    fn a_line_split_over_many_writes_gets_one_reply() {
        let server = Server::spawn(&["--mode", "line", "--line-transform", "hello"]);
        let mut s = connect(server.addr);
        // Byte by byte with TCP_NODELAY: the server sees many small reads.
        s.set_nodelay(true).unwrap();
        for b in b"sticky\r\n" {
            s.write_all(&[*b]).unwrap();
        }
        s.write_all(b"a\nb\n").unwrap();
        assert_eq!(read_n(&mut s, 30), b"hello sticky\r\nhello a\nhello b\n");
    }

    fn upper_transform_upper_cases_ascii() {
        let server = Server::spawn(&["--mode", "line", "--line-transform", "upper"]);
        let mut s = connect(server.addr);
        s.write_all(b"Hello, World 42\n").unwrap();
        assert_eq!(read_n(&mut s, 16), b"HELLO, WORLD 42\n");
    }

    fn banner_comes_first_then_exit_flushes_replies_and_closes() {
        let server = Server::spawn(&["--mode", "line", "--banner", "welcome to echo"]);
        let mut s = connect(server.addr);
        assert_eq!(read_n(&mut s, 16), b"welcome to echo\n");
        s.write_all(b"a\nb\r\nexit\r\nnever answered\n").unwrap();
        // Replies before `exit`, then FIN; nothing after it.
        assert_eq!(read_to_eof(&mut s), b"a\nb\r\n");
    }

    fn quit_closes_too() {
        let server = Server::spawn(&["--mode", "line"]);
        let mut s = connect(server.addr);
        s.write_all(b"x\nquit\n").unwrap();
        assert_eq!(read_to_eof(&mut s), b"x\n");
    }

    fn an_over_long_line_is_refused_closed_and_counted() {
        let mut server = Server::spawn(&["--mode", "line", "--max-line", "16"]);
        let mut s = connect(server.addr);
        let mut input = b"fine\n".to_vec();
        input.extend_from_slice(&[b'x'; 100]);
        input.extend_from_slice(b"\nlater\n");
        s.write_all(&input).unwrap();
        assert_eq!(read_to_eof(&mut s), b"fine\nERR line too long\n");
        // Other clients are unaffected.
        let mut other = connect(server.addr);
        other.write_all(b"still here\n").unwrap();
        assert_eq!(read_n(&mut other, 11), b"still here\n");
        drop(other);
        let (status, log) = util::stop(&mut server);
        assert!(status.success());
        assert_eq!(
            util::get(&util::counters(&log, "final stats:"), "protocol_errors"),
            1
        );
    }

    fn an_endless_line_is_refused_without_waiting_for_a_terminator() {
        let server = Server::spawn(&["--mode", "line", "--max-line", "1000"]);
        let mut s = connect(server.addr);
        // No LF ever; the client keeps its side open.
        s.write_all(&[b'y'; 5000]).unwrap();
        assert_eq!(read_to_eof(&mut s), b"ERR line too long\n");
    }

    fn a_partial_last_line_is_answered_at_eof_then_fin() {
        let server = Server::spawn(&["--mode", "line", "--line-transform", "hello"]);
        let mut s = connect(server.addr);
        s.write_all(b"one\ntwo").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut s), b"hello one\nhello two");
    }

    fn the_connection_limit_holds_in_line_mode() {
        let server = Server::spawn(&["--mode", "line", "--banner", "hi", "--max-connections", "1"]);
        let mut first = connect(server.addr);
        assert_eq!(read_n(&mut first, 3), b"hi\n");
        let mut second = connect(server.addr);
        assert_eq!(read_to_eof(&mut second), b"ERR too many connections\n");
        first.write_all(b"ok\n").unwrap();
        assert_eq!(read_n(&mut first, 3), b"ok\n");
    }
}

#[test]
fn flags_of_another_mode_are_a_usage_error() {
    let (status, _, err) = util::run_to_exit(&["--banner", "hi"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--mode line"), "{err}");
}
