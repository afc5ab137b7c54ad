//! `--mode line` over real sockets: a reply per line whatever the
//! chunking, transforms, banner, `exit`, the line limit, a last line at
//! EOF, and the core's connection limit. The server runs in-process
//! (`util::inprocess`); the flags' parsing is the CLI's, tested at the end
//! on the binary.

mod util;

use std::io::Write;
use std::net::Shutdown;

use echo_reactor::{Config, DEFAULT_MAX_LINE, Line, Mode, Transform};
use util::inprocess::{self, InProcess};
use util::{connect, read_n, read_to_eof};

/// A line-mode server: `transform`, `banner` and `max_line` as
/// `--line-transform`, `--banner` and `--max-line` set them.
fn line_server(transform: Transform, banner: Option<&str>, max_line: usize) -> Config {
    Config {
        mode: Mode::Line(Line::new(transform, banner, max_line)),
        ..inprocess::config()
    }
}

/// A line-mode server with the defaults.
fn start() -> InProcess {
    InProcess::start(line_server(Transform::None, None, DEFAULT_MAX_LINE))
}

on_every_backend! {
    fn lines_are_answered_with_their_own_terminators() {
        let server = start();
        let mut s = connect(server.addr);
        s.write_all(b"one\ntwo\r\n\nthree\n").unwrap();
        assert_eq!(read_n(&mut s, 16), b"one\ntwo\r\n\nthree\n");
    }

    fn a_line_split_over_many_writes_gets_one_reply() {
        let server = InProcess::start(line_server(Transform::Hello, None, DEFAULT_MAX_LINE));
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
        let server = InProcess::start(line_server(Transform::Upper, None, DEFAULT_MAX_LINE));
        let mut s = connect(server.addr);
        s.write_all(b"Hello, World 42\n").unwrap();
        assert_eq!(read_n(&mut s, 16), b"HELLO, WORLD 42\n");
    }

    fn banner_comes_first_then_exit_flushes_replies_and_closes() {
        let server = InProcess::start(line_server(Transform::None, Some("welcome to echo"), DEFAULT_MAX_LINE));
        let mut s = connect(server.addr);
        assert_eq!(read_n(&mut s, 16), b"welcome to echo\n");
        s.write_all(b"a\nb\r\nexit\r\nnever answered\n").unwrap();
        // Replies before `exit`, then FIN; nothing after it.
        assert_eq!(read_to_eof(&mut s), b"a\nb\r\n");
    }

    fn quit_closes_too() {
        let server = start();
        let mut s = connect(server.addr);
        s.write_all(b"x\nquit\n").unwrap();
        assert_eq!(read_to_eof(&mut s), b"x\n");
    }

    fn an_over_long_line_is_refused_closed_and_counted() {
        let server = InProcess::start(line_server(Transform::None, None, 16));
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
        // Closed by both ends, so the shutdown waits for no one.
        drop((s, other));
        assert_eq!(server.stop().stats.protocol_errors, 1);
    }

    fn an_endless_line_is_refused_without_waiting_for_a_terminator() {
        let server = InProcess::start(line_server(Transform::None, None, 1000));
        let mut s = connect(server.addr);
        // No LF ever; the client keeps its side open.
        s.write_all(&[b'y'; 5000]).unwrap();
        assert_eq!(read_to_eof(&mut s), b"ERR line too long\n");
    }

    fn a_partial_last_line_is_answered_at_eof_then_fin() {
        let server = InProcess::start(line_server(Transform::Hello, None, DEFAULT_MAX_LINE));
        let mut s = connect(server.addr);
        s.write_all(b"one\ntwo").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut s), b"hello one\nhello two");
    }

    fn the_connection_limit_holds_in_line_mode() {
        let server = InProcess::start(Config {
            max_connections: Some(1),
            ..line_server(Transform::None, Some("hi"), DEFAULT_MAX_LINE)
        });
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
