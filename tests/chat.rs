//! `examples/chat.rs`, the multi-user chat room, on every backend: 200
//! members each say 50 lines and every other member hears every line
//! exactly once, in each speaker's order; a member that never reads is cut
//! off at its share (`MAIL_SHARE`) while the others hear everything; join
//! and leave notices. The room's protocol is the example's own file; the
//! server runs in process, so the test reads its counters.
//!
//! `chat_latency_with_and_without_a_member_that_does_not_read` (ignored;
//! run it with `cargo test --release --test chat -- --ignored --nocapture`)
//! prints the p99 of a line's trip through the room, with and without a
//! member that never reads.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/chat.rs"]
mod chat;
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::{MAIL_SHARE, Stats};
use util::connect;
use util::inprocess::{self, InProcess};

fn room() -> InProcess {
    InProcess::with_protocol(inprocess::config(), chat::Room::default())
}

/// A member: connected, welcomed, named `nick`.
struct Member {
    reader: BufReader<TcpStream>,
}

impl Member {
    fn join(addr: SocketAddr, nick: &str) -> Member {
        let s = connect(addr);
        s.set_read_timeout(Some(util::STEP_TIMEOUT))
            .expect("timeout");
        let mut member = Member {
            reader: BufReader::new(s),
        };
        assert_eq!(member.line(), "* welcome; your nickname?\n");
        member.say(nick);
        // Others may join or talk meanwhile: a connection hears the room
        // from the moment it connects.
        loop {
            let line = member.line();
            assert!(!line.is_empty(), "closed before joining");
            if line.starts_with(&format!("* you are {nick}; ")) {
                return member;
            }
        }
    }

    fn say(&mut self, line: &str) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a line");
        line
    }

    /// Reads and drops everything it is sent, on a thread of its own,
    /// until the connection ends (a member that talks and also listens).
    fn listen_in_background(&self) -> thread::JoinHandle<()> {
        let mut s = self.reader.get_ref().try_clone().expect("clone");
        thread::spawn(move || {
            let mut sink = [0u8; 16 * 1024];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
        })
    }

    /// Ends the connection both ways (which ends a background listener).
    fn leave(self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Both);
    }

    /// The next line that is not a notice (`* ...`).
    fn chat_line(&mut self) -> String {
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "the room closed the connection");
            if !line.starts_with("* ") {
                return line;
            }
        }
    }
}

/// Parses `c12: m34` (and what follows it) into (12, 34).
fn parse(line: &str) -> (usize, usize) {
    let (nick, text) = line.trim_end().split_once(": ").expect("nick: text");
    let from = nick.strip_prefix('c').and_then(|n| n.parse().ok());
    let word = text.split(' ').next().unwrap_or("");
    let k = word.strip_prefix('m').and_then(|n| n.parse().ok());
    (from.expect("a sender"), k.expect("a number"))
}

const MEMBERS: usize = 200;
const LINES: usize = 50;

on_every_backend! {
    fn every_member_hears_every_other_line_once_in_order() {
        let server = room();
        let addr = server.addr;
        let everyone_joined = Arc::new(Barrier::new(MEMBERS));
        let members: Vec<_> = (0..MEMBERS)
            .map(|i| {
                let everyone_joined = Arc::clone(&everyone_joined);
                thread::spawn(move || {
                    let mut me = Member::join(addr, &format!("c{i}"));
                    everyone_joined.wait();
                    for k in 0..LINES {
                        me.say(&format!("m{k}"));
                    }
                    // The next line expected from each other member.
                    let mut next = vec![0usize; MEMBERS];
                    for _ in 0..(MEMBERS - 1) * LINES {
                        let (from, k) = parse(&me.chat_line());
                        assert_ne!(from, i, "c{i} heard itself");
                        assert_eq!(k, next[from], "c{i}: from c{from}, out of order or twice");
                        next[from] += 1;
                    }
                    assert!(
                        next.iter().enumerate().all(|(j, &n)| n == if j == i { 0 } else { LINES }),
                        "c{i} missed lines"
                    );
                    me
                })
            })
            .collect();
        let members: Vec<Member> = members
            .into_iter()
            .map(|m| m.join().expect("a member"))
            .collect();
        drop(members);
        let stats = server.wait_stats("everyone left", |s| s.closed == MEMBERS as u64);
        assert_eq!(stats.mail_cutoffs, 0, "no member was cut off: {stats:?}");
        assert_eq!(stats.protocol_overruns, 0);
    }

    fn joins_leaves_and_nicknames() {
        let server = room();
        let mut ada = Member::join(server.addr, "ada");
        let mut bob = Member::join(server.addr, "bob");
        assert_eq!(ada.line(), "* bob joined\n");
        // A taken nickname, then an invalid one, are refused.
        let s = connect(server.addr);
        let mut eve = BufReader::new(s);
        let mut line = String::new();
        eve.read_line(&mut line).expect("welcome");
        eve.get_mut().write_all(b"ada\nno spaces\ncyd\n").expect("write");
        for expect in [
            "* that nickname is taken; another?\n",
            "* a nickname is 1 to 32 letters, digits, - or _; again?\n",
            "* you are cyd; 2 others here\n",
        ] {
            line.clear();
            eve.read_line(&mut line).expect("answer");
            assert_eq!(line, expect);
        }
        assert_eq!(ada.line(), "* cyd joined\n");
        assert_eq!(bob.line(), "* cyd joined\n");
        bob.say("hi all");
        assert_eq!(ada.line(), "bob: hi all\n");
        // To one member only, by its id: eve (cyd) hears none of it.
        bob.say("/msg ada just you");
        bob.say("/msg zed anyone?");
        assert_eq!(bob.line(), "* no zed here\n");
        bob.say("/msg cyd and you");
        line.clear();
        eve.read_line(&mut line).expect("cyd hears");
        assert_eq!(line, "bob: hi all\n");
        line.clear();
        eve.read_line(&mut line).expect("cyd hears");
        assert_eq!(line, "(bob) and you\n", "the whisper to ada is not heard");
        assert_eq!(ada.line(), "(bob) just you\n");
        bob.say("/quit");
        assert_eq!(bob.line(), "* bye\n");
        assert_eq!(ada.line(), "* bob left\n");
        drop(eve);
        assert_eq!(ada.line(), "* cyd left\n");
        drop(server);
    }

    fn a_member_that_never_reads_is_cut_off_and_the_others_hear_everything() {
        let server = room();
        let addr = server.addr;
        // It joins, then never reads again.
        let silent = Member::join(addr, "silent");
        const READERS: usize = 8;
        const SPEAKERS: usize = 4;
        const SAID: usize = 1000;
        // The speakers stay at most WINDOW lines ahead of the slowest
        // reader (a reader the scheduler leaves aside for a while must not
        // be mistaken for one that does not read), and far ahead of the
        // silent member: all 4,000 lines of ~410 bytes go to it.
        const WINDOW: usize = 100;
        let ready = Arc::new(Barrier::new(READERS + SPEAKERS));
        let said = Arc::new(AtomicUsize::new(0));
        let heard: Arc<Vec<AtomicUsize>> = Arc::new((0..READERS).map(|_| AtomicUsize::new(0)).collect());
        let padding = "x".repeat(400);
        let threads: Vec<_> = (0..READERS + SPEAKERS)
            .map(|i| {
                let (ready, said, heard) = (Arc::clone(&ready), Arc::clone(&said), Arc::clone(&heard));
                let padding = padding.clone();
                thread::spawn(move || {
                    let mut me = Member::join(addr, &format!("c{i}"));
                    ready.wait();
                    if i >= READERS {
                        let listening = me.listen_in_background();
                        for k in 0..SAID {
                            let slowest = || heard.iter().map(|h| h.load(SeqCst)).min().unwrap_or(0);
                            while said.load(SeqCst) >= slowest() + WINDOW {
                                thread::sleep(Duration::from_millis(1));
                            }
                            said.fetch_add(1, SeqCst);
                            me.say(&format!("m{k} {padding}"));
                        }
                        return (me, Some(listening));
                    }
                    let mut next = [0usize; READERS + SPEAKERS];
                    for _ in 0..SPEAKERS * SAID {
                        let (from, k) = parse(&me.chat_line());
                        assert_eq!(k, next[from], "c{i}: from c{from}");
                        next[from] += 1;
                        heard[i].fetch_add(1, SeqCst);
                    }
                    (me, None)
                })
            })
            .collect();
        let members: Vec<_> = threads.into_iter().map(|t| t.join().expect("member")).collect();
        let stats = server.wait_stats("the silent member cut off", |s| s.mail_cutoffs >= 1);
        // 4 x 1000 lines of ~410 bytes went to it: far past its share and
        // what the kernel holds for it.
        assert!(stats.buffered_peak < 4 * MAIL_SHARE as u64, "{stats:?}");
        drop(silent);
        for (member, listening) in members {
            member.leave();
            if let Some(listening) = listening {
                listening.join().expect("a listener");
            }
        }
        let report = server.stop();
        assert_eq!(report.stats.mail_cutoffs, 1, "only the one that never read");
    }
}

/// The p99 (and p50) of a line's trip from one member to another, while
/// `talkers` members flood the room and `listeners` read, with one member
/// that never reads if `deaf`. Lines are timed one at a time: the next is
/// sent when the last has arrived.
fn trip_times(
    talkers: usize,
    listeners: usize,
    deaf: bool,
    probes: usize,
) -> (Duration, Duration, Stats) {
    let server = room();
    let addr = server.addr;
    let deaf = deaf.then(|| Member::join(addr, "deaf"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut background = Vec::new();
    for i in 0..listeners {
        let mut me = Member::join(addr, &format!("l{i}"));
        let stop = Arc::clone(&stop);
        background.push(thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if me.line().is_empty() {
                    break;
                }
            }
        }));
    }
    let text = "y".repeat(100);
    for i in 0..talkers {
        let mut me = Member::join(addr, &format!("t{i}"));
        background.push(me.listen_in_background());
        let stop = Arc::clone(&stop);
        let text = text.clone();
        background.push(thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let line = format!("{k} {text}\n");
                if me.reader.get_mut().write_all(line.as_bytes()).is_err() {
                    break;
                }
                k += 1;
                // A steady chatter, not a flood: the room's other members
                // must be able to keep up.
                thread::sleep(Duration::from_millis(1));
            }
            me.leave();
        }));
    }
    let mut from = Member::join(addr, "from");
    let mut to = Member::join(addr, "to");
    let mut times = Vec::with_capacity(probes);
    for k in 0..probes {
        let said = format!("probe{k}");
        let start = Instant::now();
        from.say(&said);
        loop {
            let line = to.line();
            assert!(!line.is_empty(), "the probe was cut off");
            if line == format!("from: {said}\n") {
                break;
            }
        }
        times.push(start.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let stats = server.latest().unwrap_or_default();
    drop(server);
    drop(deaf);
    for t in background {
        let _ = t.join();
    }
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100], stats)
}

const TALKERS: usize = 2;
const LISTENERS: usize = 20;

#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn chat_latency_with_and_without_a_member_that_does_not_read() {
    for deaf in [false, true] {
        let (p50, p99, stats) = trip_times(TALKERS, LISTENERS, deaf, 3000);
        eprintln!(
            "room of {TALKERS} talkers (a 100-byte line each per ms), {LISTENERS} listeners{}: \
             line trip p50 {p50:?}, p99 {p99:?} (mail_cutoffs {})",
            if deaf {
                " and 1 member that never reads"
            } else {
                ""
            },
            stats.mail_cutoffs
        );
    }
}
