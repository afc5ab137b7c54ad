//! Messages of the user's choice: one given on the command line or in a
//! file, a first message on each connection, and a template whose
//! `{conn}` and `{seq}` let each answer be matched to its request. A
//! recording stand-in shows what was really sent.

mod bench_support;

use bench_support::{assert_clean, bench};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;

/// A line-mode stand-in that answers every line with itself (upper-cased
/// if `upper`) and keeps every line it got, per connection in accept
/// order; `swap` answers the 3rd and 4th lines of each connection in the
/// wrong order.
fn line_server(upper: bool, swap: bool) -> (String, Arc<Mutex<Vec<Vec<String>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("local_addr").to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let all = Arc::clone(&seen);
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let at = {
                let mut g = all.lock().unwrap();
                g.push(Vec::new());
                g.len() - 1
            };
            let all = Arc::clone(&all);
            thread::spawn(move || {
                let Ok(mut out) = s.try_clone() else { return };
                let mut held: Option<Vec<u8>> = None;
                for (n, line) in BufReader::new(s).split(b'\n').enumerate() {
                    let Ok(mut line) = line else { return };
                    all.lock().unwrap()[at].push(String::from_utf8_lossy(&line).into_owned());
                    if upper {
                        line.make_ascii_uppercase();
                    }
                    line.push(b'\n');
                    if swap && n == 2 {
                        held = Some(line);
                        continue;
                    }
                    let mut answer = line;
                    if let Some(h) = held.take() {
                        answer.extend_from_slice(&h);
                    }
                    if out.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[test]
fn a_given_message_is_what_every_connection_sends() {
    let (addr, seen) = line_server(true, false);
    let run = bench(&[
        "--mode",
        "line",
        "--line-transform",
        "upper",
        "--message",
        "ping pong",
        "-c",
        "2",
        "-n",
        "20",
        "--json",
        &addr,
    ]);
    let v = assert_clean(&run, 2);
    assert_eq!(v["size"], 10, "9 bytes and the LF");
    for conn in seen.lock().unwrap().iter() {
        assert!(conn.len() >= 2, "{conn:?}");
        assert!(conn.iter().all(|l| l == "ping pong"), "{conn:?}");
    }
}

#[test]
fn a_message_file_is_sent_as_it_is() {
    let (addr, seen) = line_server(false, false);
    let path = std::env::temp_dir().join(format!("echo-bench-msg-{}", std::process::id()));
    std::fs::write(&path, "from a file\n").expect("write");
    let p = path.to_str().expect("utf-8 path");
    let run = bench(&[
        "--mode",
        "line",
        "--message-file",
        p,
        "-c",
        "1",
        "-n",
        "5",
        "--json",
        &addr,
    ]);
    let _ = std::fs::remove_file(&path);
    assert_clean(&run, 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], vec!["from a file"; 6], "the proving message and 5");
}

#[test]
fn the_first_message_goes_first_and_its_answer_is_checked() {
    let (addr, seen) = line_server(true, false);
    let run = bench(&[
        "--mode",
        "line",
        "--line-transform",
        "upper",
        "--first-message",
        "login bob",
        "-c",
        "3",
        "-n",
        "30",
        "-s",
        "16",
        "--json",
        &addr,
    ]);
    assert_clean(&run, 3);
    {
        // The guard must go before the next run: the server's threads
        // take the lock for every line.
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for conn in seen.iter() {
            assert_eq!(conn[0], "login bob", "{conn:?}");
            assert_eq!(conn.iter().filter(|l| *l == "login bob").count(), 1);
            assert!(conn.len() >= 2, "then the pattern's lines: {conn:?}");
        }
    }
    // Expecting the wrong answer to it (no transform) fails the run.
    let run = bench(&[
        "--mode",
        "line",
        "--first-message",
        "login bob",
        "-c",
        "1",
        "-n",
        "5",
        &addr,
    ]);
    assert_ne!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn a_template_numbers_every_message_of_every_connection() {
    let (addr, seen) = line_server(false, false);
    let run = bench(&[
        "--mode",
        "line",
        "--template",
        "conn={conn} seq={seq}",
        "-c",
        "2",
        "-d",
        "3",
        "-n",
        "60",
        "--json",
        &addr,
    ]);
    let v = assert_clean(&run, 2);
    assert_eq!(v["messages"], 60);
    let seen = seen.lock().unwrap();
    let mut conns: Vec<String> = Vec::new();
    for lines in seen.iter() {
        let c = &lines[0][5..13];
        conns.push(c.to_string());
        for (seq, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("conn={c} seq={seq:012}"), "{lines:?}");
        }
    }
    conns.sort();
    assert_eq!(conns, ["00000000", "00000001"]);
}

#[test]
fn a_template_finds_answers_that_come_back_out_of_order() {
    // Each line differs from the next only in its number: a server that
    // swaps two answers is caught, which the same message repeated never
    // would be.
    let (addr, _) = line_server(false, true);
    let run = bench(&[
        "--mode",
        "line",
        "--template",
        "seq={seq}",
        "-c",
        "1",
        "-d",
        "4",
        "-n",
        "20",
        "--json",
        &addr,
    ]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["errors"]["mismatch"], 1);
    let (addr, _) = line_server(false, true);
    let run = bench(&[
        "--mode",
        "line",
        "--message",
        "same",
        "-c",
        "1",
        "-d",
        "4",
        "-n",
        "20",
        "--json",
        &addr,
    ]);
    assert_clean(&run, 1);
}

#[test]
fn payloads_that_cannot_work_are_refused() {
    for args in [
        &["--message", "x", "-s", "10"][..],
        &["--template", "no number"][..],
        &["--template", "{seq} {bogus}"][..],
        &["--mode", "line", "--message", "two\nlines"][..],
        &["--message-file", "/nonexistent/file"][..],
        &["--udp", "--message", "x"][..],
    ] {
        let run = bench(args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}
