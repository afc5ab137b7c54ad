//! `--mode line` and `--mode frame` against stand-ins that speak the
//! server's protocols: lines answered as they are, upper-cased or after
//! `hello `, a banner first; length-prefixed frames echoed whole. Every
//! answer is checked, so one corrupted byte fails the run.

mod bench_support;

use bench_support::{assert_clean, bench};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

/// How a stand-in speaks.
#[derive(Clone, Copy)]
enum Speaks {
    /// Lines; each answered with `prefix` and the line, upper-cased if
    /// `upper`; `banner` first if any.
    Line {
        upper: bool,
        prefix: &'static [u8],
        banner: Option<&'static str>,
    },
    /// Length-prefixed frames, echoed whole.
    Frame,
}

/// Starts a stand-in on 127.0.0.1:0 that speaks `how` on every connection
/// and flips the lowest bit of the answer byte at stream offset `flip`
/// (counted over its answers, the banner not included), if given.
fn server(how: Speaks, flip: Option<u64>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local_addr").to_string();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || serve(s, how, flip));
        }
    });
    addr
}

fn serve(s: TcpStream, how: Speaks, flip: Option<u64>) {
    let Ok(mut out) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    let mut offset = 0u64;
    if let Speaks::Line {
        banner: Some(b), ..
    } = how
        && out.write_all(format!("{b}\n").as_bytes()).is_err()
    {
        return;
    }
    loop {
        let mut answer = match how {
            Speaks::Line { upper, prefix, .. } => {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if upper {
                    line.make_ascii_uppercase();
                }
                [prefix, &line].concat()
            }
            Speaks::Frame => {
                let mut head = [0u8; 4];
                if r.read_exact(&mut head).is_err() {
                    return;
                }
                let mut frame = head.to_vec();
                frame.resize(4 + u32::from_be_bytes(head) as usize, 0);
                if r.read_exact(&mut frame[4..]).is_err() {
                    return;
                }
                frame
            }
        };
        let span = offset..offset + answer.len() as u64;
        if let Some(at) = flip.filter(|at| span.contains(at)) {
            answer[(at - offset) as usize] ^= 0x01;
        }
        offset = span.end;
        if out.write_all(&answer).is_err() {
            return;
        }
    }
}

const ECHO_LINES: Speaks = Speaks::Line {
    upper: false,
    prefix: b"",
    banner: None,
};
const UPPER_LINES: Speaks = Speaks::Line {
    upper: true,
    prefix: b"",
    banner: None,
};

// ----- clean runs -----------------------------------------------------------

#[test]
fn line_mode_checks_echoed_lines() {
    let addr = server(ECHO_LINES, None);
    let run = bench(&[
        "--mode", "line", "-c", "8", "-d", "4", "-n", "4000", "--json", &addr,
    ]);
    let v = assert_clean(&run, 8);
    assert_eq!(v["messages"], 4000);
    assert_eq!(v["protocol"], "line");
}

#[test]
fn line_mode_expects_upper_cased_answers() {
    let addr = server(UPPER_LINES, None);
    let run = bench(&[
        "--mode",
        "line",
        "--line-transform",
        "upper",
        "-c",
        "8",
        "-n",
        "2000",
        "-s",
        "200",
        "--json",
        &addr,
    ]);
    let v = assert_clean(&run, 8);
    assert_eq!(v["messages"], 2000);
    // Expecting a plain echo from the same server fails: the answers are
    // really compared with the transform's.
    let run = bench(&["--mode", "line", "-c", "2", "-n", "100", "-s", "200", &addr]);
    assert_ne!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn line_mode_expects_hello_answers_after_a_banner() {
    let how = Speaks::Line {
        upper: false,
        prefix: b"hello ",
        banner: Some("welcome to the stand-in"),
    };
    let addr = server(how, None);
    let run = bench(&[
        "--mode",
        "line",
        "--line-transform",
        "hello",
        "--banner",
        "-c",
        "6",
        "-d",
        "3",
        "-n",
        "3000",
        "--json",
        &addr,
    ]);
    let v = assert_clean(&run, 6);
    assert_eq!(v["messages"], 3000);
    // Without --banner the greeting is taken for the first answer.
    let run = bench(&[
        "--mode",
        "line",
        "--line-transform",
        "hello",
        "-c",
        "2",
        "-n",
        "100",
        &addr,
    ]);
    assert_ne!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn frame_mode_checks_whole_frames() {
    let addr = server(Speaks::Frame, None);
    let run = bench(&[
        "--mode", "frame", "-c", "8", "-d", "4", "-s", "1KiB", "-n", "4000", "--json", &addr,
    ]);
    let v = assert_clean(&run, 8);
    assert_eq!(v["messages"], 4000);
    assert_eq!(v["protocol"], "frame");
}

// ----- faults ---------------------------------------------------------------

#[test]
fn one_corrupted_byte_fails_a_line_run() {
    let addr = server(UPPER_LINES, Some(1000));
    let run = bench(&[
        "--mode",
        "line",
        "--line-transform",
        "upper",
        "-c",
        "2",
        "-n",
        "200",
        "--json",
        &addr,
    ]);
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    let v = run.json();
    assert_eq!(v["errors"]["mismatch"], 2, "{v:#}");
    assert!(run.stderr.contains("stream offset 1000"), "{}", run.stderr);
}

#[test]
fn one_corrupted_byte_fails_a_frame_run() {
    let addr = server(Speaks::Frame, Some(1000));
    let run = bench(&["--mode", "frame", "-c", "2", "-n", "200", "--json", &addr]);
    assert_eq!(run.code, Some(1), "stderr:\n{}", run.stderr);
    let v = run.json();
    assert_eq!(v["errors"]["mismatch"], 2, "{v:#}");
    assert!(run.stderr.contains("stream offset 1000"), "{}", run.stderr);
}

#[test]
fn modes_refuse_what_they_cannot_carry() {
    for args in [
        &["--mode", "frame", "-s", "3"][..],
        &["--line-transform", "upper"][..],
        &["--banner"][..],
        &["--mode", "line", "--udp"][..],
        &["--mode", "smoke-signals"][..],
    ] {
        let run = bench(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}
