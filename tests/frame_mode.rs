//! `--mode frame` over real sockets: whole frames back whatever the
//! chunking (the "sticky packets" cure), zero-length and large frames, and
//! the frame limit. The server runs in-process (`util::inprocess`).

mod util;

use std::io::Write;
use std::net::Shutdown;

use echo_reactor::{Config, DEFAULT_MAX_FRAME, Frame, Mode};
use util::inprocess::{self, InProcess};
use util::{connect, frame, pattern, read_n, read_to_eof};

/// A frame-mode server taking bodies of up to `max_frame` bytes
/// (`--max-frame`).
fn start(max_frame: u32) -> InProcess {
    InProcess::start(Config {
        mode: Mode::Frame(Frame { max_frame }),
        ..inprocess::config()
    })
}

on_every_backend! {
    fn frames_sent_in_one_write_come_back_as_the_same_frames() {
        let server = start(DEFAULT_MAX_FRAME);
        let mut s = connect(server.addr);
        let input = [frame(b"sticky"), frame(b""), frame(b"packets")].concat();
        s.write_all(&input).unwrap();
        assert_eq!(read_n(&mut s, input.len()), input);
    }

    fn a_frame_dribbled_in_byte_by_byte_comes_back_whole() {
        let server = start(DEFAULT_MAX_FRAME);
        let mut s = connect(server.addr);
        s.set_nodelay(true).unwrap();
        let input = frame(&pattern(1, 300));
        for b in &input {
            s.write_all(&[*b]).unwrap();
        }
        assert_eq!(read_n(&mut s, input.len()), input);
    }

    fn a_frame_of_max_frame_bytes_echoes_intact() {
        let server = start(DEFAULT_MAX_FRAME);
        let mut s = connect(server.addr);
        // The default limit, 1 MiB: the server holds it whole before echoing,
        // so the client can write it all before reading.
        let input = frame(&pattern(2, 1 << 20));
        s.write_all(&input).unwrap();
        assert!(read_n(&mut s, input.len()) == input, "1 MiB frame differs");
    }

    fn an_oversize_frame_closes_the_connection_after_earlier_frames_and_is_counted() {
        let server = start(1024);
        let mut s = connect(server.addr);
        let ok = frame(b"ok");
        let mut input = ok.clone();
        // Announce 4 GiB: refused on the header, nothing allocated for it.
        input.extend_from_slice(&u32::MAX.to_be_bytes());
        input.extend_from_slice(&[0u8; 100]);
        s.write_all(&input).unwrap();
        assert_eq!(read_to_eof(&mut s), ok);
        let mut other = connect(server.addr);
        other.write_all(&frame(b"alive")).unwrap();
        assert_eq!(read_n(&mut other, 9), frame(b"alive"));
        // Closed by both ends, so the shutdown waits for no one.
        drop((s, other));
        assert_eq!(server.stop().stats.protocol_errors, 1);
    }

    fn a_frame_cut_off_by_eof_is_not_echoed_in_part() {
        let server = start(DEFAULT_MAX_FRAME);
        let mut s = connect(server.addr);
        let whole = frame(b"whole");
        let mut input = whole.clone();
        input.extend_from_slice(&frame(b"cut off")[..6]);
        s.write_all(&input).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut s), whole);
    }
}
