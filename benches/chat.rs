//! The chat room (`examples/chat.rs`) full: 200 members each say 50
//! lines, every other member must hear every line exactly once and in each
//! speaker's order, and every delivery is timed, from the speaker's write
//! to the listener's read. Then the same room with one more member that
//! joins and never reads again: it must be cut off at its share
//! (`MAIL_SHARE`, 64 KiB of pending output), and the others' latency must
//! not move (issue 22's "done means").
//!
//! ```sh
//! cargo bench --bench chat --no-run     # build first, at low priority
//! cargo bench --bench chat              # 3 rounds of each room, interleaved, ~6 min
//! cargo bench --bench chat -- --rounds 1 --members 50 --lines 10   # seconds
//! ```
//!
//! Options: `--members N` (200), `--lines N` (50 per member), `--interval-ms
//! MS` (each member says a line every MS, 1000), `--size BYTES` (of a line
//! as said, newline included, 100), `--rounds N` (3), `--threads N` (client
//! threads, 2), `--deaf-rcvbuf BYTES` (4096; 0: the kernel's default),
//! `--out FILE` (the report, `target/chat/chat.md`).
//!
//! The room is the release `examples/chat` on CPU 0 (a fresh process per
//! round); this process, on CPU 1, drives the members: `--threads` threads,
//! each owning a share of the members' sockets on a mio `Poll` of its own
//! (non-blocking, TCP_NODELAY). Every member joins before anyone speaks.
//! Member `i` says its `k`-th line at `start + k * interval + i *
//! interval / members`, so the room hears an even stream of `members /
//! interval` lines a second (200 by default, 39,800 deliveries a
//! second). A line carries its number and its send time, nanoseconds since
//! an instant this process took (`K NANOS xxx...`); the room prefixes
//! the nickname (`cI: K NANOS xxx...`). A listener checks that the line of
//! speaker `I` is the one after the last it heard from `I` (exactly once,
//! in order; a gap, a repeat or a line from itself is an error), and
//! records its trip: the read's time minus the stamp. A round ends when
//! every member has heard all `(members - 1) * lines` lines, or after its
//! time limit (then what is missing is reported).
//!
//! The member that never reads (`deaf`) joins first, reads its welcome and
//! its `* you are deaf` line, and reads nothing more while the room talks.
//! Its `SO_RCVBUF` is set to `--deaf-rcvbuf` (4 KiB; the kernel doubles
//! it) before it connects, so that what it is owed soon passes what the
//! kernel holds for it and the server's share decides; with the kernel's
//! default (`--deaf-rcvbuf 0`) the kernel took the whole round's 1 MiB for
//! it at this pace, and the server never held a byte for it (nor cut it
//! off). Once every member has heard
//! everything, the server's counters are read (SIGUSR1) and then the deaf
//! member reads what reached it until the server's close (EOF): how many
//! bytes, and that those are whole lines in each speaker's order, a prefix
//! of what was said (the server dropped its pending output when it cut it
//! off, which may end the stream inside a line). While the room talks the
//! server's counters are read every 250 ms in both rooms alike, for when
//! `mail_cutoffs` became 1.
//!
//! Latency here is the server's fan-out plus the client's own reading: a
//! line is one `write` per listener, in the order the server keeps its
//! connections, and each client thread reads its sockets one after
//! another. Both are the same with and without the deaf member.

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};
use support::{Placement, Server, ServerSpec, markdown_table, median, pin_current_thread};

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Opts {
    members: usize,
    lines: usize,
    interval: Duration,
    size: usize,
    rounds: usize,
    threads: usize,
    deaf_rcvbuf: usize,
    out: PathBuf,
}

impl Opts {
    fn parse() -> Opts {
        let mut o = Opts {
            members: 200,
            lines: 50,
            interval: Duration::from_millis(1000),
            size: 100,
            rounds: 3,
            threads: 2,
            deaf_rcvbuf: 4096,
            out: PathBuf::from("target/chat/chat.md"),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .unwrap_or_else(|| panic!("{a} needs a value"))
                    .clone()
            };
            match a.as_str() {
                "--bench" => {}
                "--members" => o.members = number(a, &value()),
                "--lines" => o.lines = number(a, &value()),
                "--interval-ms" => o.interval = Duration::from_millis(number(a, &value()) as u64),
                "--size" => o.size = number(a, &value()),
                "--rounds" => o.rounds = number(a, &value()),
                "--threads" => o.threads = number(a, &value()),
                "--deaf-rcvbuf" => o.deaf_rcvbuf = number(a, &value()),
                "--out" => o.out = PathBuf::from(value()),
                other => panic!(
                    "unknown option {other:?}; options: --members N --lines N \
                     --interval-ms MS --size BYTES --rounds N --threads N --deaf-rcvbuf BYTES --out FILE"
                ),
            }
        }
        assert!(o.members >= 2, "--members: at least 2");
        assert!(o.threads >= 1, "--threads: at least 1");
        // `K NANOS ` and the newline need room: 20 + 1 + 20 + 1 + 1.
        assert!(o.size >= 48, "--size: at least 48 bytes");
        // The room's longest line (examples/chat.rs MAX_LINE).
        assert!(o.size < 512, "--size: under 512 bytes");
        o
    }

    /// How long a round may take before it is called off: its speaking
    /// time, twice, and 20 s for joining and the last lines.
    fn time_limit(&self) -> Duration {
        self.interval * (2 * self.lines as u32) + Duration::from_secs(20)
    }
}

fn number(flag: &str, v: &str) -> usize {
    v.parse()
        .unwrap_or_else(|_| panic!("{flag} {v:?}: a whole number"))
}

// ---------------------------------------------------------------------------
// Lines
// ---------------------------------------------------------------------------

/// The `k`-th line a member says, sent at `nanos` (since the epoch), padded
/// with `x` to `size` bytes, newline included.
fn line(k: usize, nanos: u64, size: usize) -> Vec<u8> {
    let mut l = format!("{k} {nanos} ").into_bytes();
    l.resize(size - 1, b'x');
    l.push(b'\n');
    l
}

/// A line as the room passes it on: `cI: K NANOS xxx...` into (I, K, NANOS).
/// `None` for anything else (a notice, `* ...`).
fn parse(line: &[u8]) -> Option<(usize, usize, u64)> {
    let rest = line.strip_prefix(b"c")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let from = ascii_number(&rest[..colon])?;
    let mut words = rest[colon + 1..].split(|&b| b == b' ').skip(1);
    let k = ascii_number(words.next()?)?;
    let nanos = ascii_number(words.next()?)?;
    Some((from as usize, k as usize, nanos))
}

fn ascii_number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.wrapping_mul(10).wrapping_add(u64::from(b - b'0')))
    })
}

// ---------------------------------------------------------------------------
// Members
// ---------------------------------------------------------------------------

/// One member, owned by one client thread.
struct Member {
    /// Its number: its nickname is `c{id}`.
    id: usize,
    stream: mio::net::TcpStream,
    /// Bytes read and not yet a whole line.
    partial: Vec<u8>,
    /// Bytes said and not yet taken by its socket.
    unsent: Vec<u8>,
    /// Whether its `* you are` line came.
    joined: bool,
    /// Lines said so far.
    said: usize,
    /// The number of the next line expected from each member.
    next: Vec<u32>,
    /// Lines heard (from other members).
    heard: usize,
}

/// What a client thread measured.
#[derive(Default)]
struct Heard {
    /// Every delivery: when its line was said (nanoseconds since the
    /// epoch) and its trip (nanoseconds).
    trips: Vec<(u64, u64)>,
    /// Lines heard in all.
    lines: u64,
    /// Lines out of order, repeated, or from the listener itself.
    errors: u64,
    /// The first few errors, described.
    first_errors: Vec<String>,
    /// Lines not heard when the round ended.
    missing: u64,
    /// Members whose connection ended during the round.
    closed: u64,
}

impl Member {
    /// Connects as `c{id}` and says its nickname (its welcome is read with
    /// the rest, later).
    fn connect(addr: SocketAddr, id: usize, members: usize) -> Member {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("c{id}: connect: {e}"));
        s.set_nodelay(true).expect("TCP_NODELAY");
        (&s).write_all(format!("c{id}\n").as_bytes())
            .expect("say a nickname");
        s.set_nonblocking(true).expect("non-blocking");
        Member {
            id,
            stream: mio::net::TcpStream::from_std(s),
            partial: Vec::new(),
            unsent: Vec::new(),
            joined: false,
            said: 0,
            next: vec![0; members],
            heard: 0,
        }
    }

    /// Reads what is there; every whole line goes to `hear`. Returns false
    /// when the connection ended.
    fn read(&mut self, buf: &mut [u8], epoch: Instant, heard: &mut Heard) -> bool {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return false,
                Ok(n) => {
                    let now = epoch.elapsed().as_nanos() as u64;
                    let mut partial = std::mem::take(&mut self.partial);
                    partial.extend_from_slice(&buf[..n]);
                    let mut start = 0;
                    while let Some(i) = partial[start..].iter().position(|&b| b == b'\n') {
                        let end = start + i + 1;
                        self.hear(&partial[start..end], now, heard);
                        start = end;
                    }
                    partial.drain(..start);
                    self.partial = partial;
                    if n < buf.len() {
                        // A short read emptied the socket's queue; new
                        // bytes make a new edge (epoll wakes on every
                        // arrival), so the read that would say WouldBlock
                        // is saved (half the client's reads).
                        return true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    fn hear(&mut self, line: &[u8], now: u64, heard: &mut Heard) {
        let Some((from, k, nanos)) = parse(line) else {
            if line.starts_with(format!("* you are c{};", self.id).as_bytes()) {
                self.joined = true;
            }
            return;
        };
        heard.lines += 1;
        let expected = self.next.get(from).copied();
        if from == self.id || expected != Some(k as u32) {
            heard.errors += 1;
            if heard.first_errors.len() < 5 {
                heard.first_errors.push(format!(
                    "c{} heard c{from}'s line {k}, expected {expected:?}",
                    self.id
                ));
            }
            if let Some(n) = self.next.get_mut(from) {
                *n = (*n).max(k as u32 + 1);
            }
            return;
        }
        self.next[from] += 1;
        self.heard += 1;
        heard.trips.push((nanos, now.saturating_sub(nanos)));
    }

    /// Writes what is unsent; false when the connection failed.
    fn flush(&mut self) -> bool {
        while !self.unsent.is_empty() {
            match self.stream.write(&self.unsent) {
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// What every client thread shares for one round.
struct Plan {
    members: usize,
    lines: usize,
    interval: Duration,
    size: usize,
    epoch: Instant,
    deadline: Instant,
    /// All members joined: speaking starts (the main thread waits too).
    joined: Barrier,
    /// Every thread's members heard everything (or the round was called off).
    done: Barrier,
}

/// One client thread: its members join, speak on time and listen, until
/// each has heard every other member's every line or the deadline passes.
fn client_thread(plan: &Plan, mut members: Vec<Member>) -> Heard {
    let mut heard = Heard {
        trips: Vec::with_capacity(members.len() * (plan.members - 1) * plan.lines),
        ..Heard::default()
    };
    let mut poll = Poll::new().expect("mio poll");
    for (i, m) in members.iter_mut().enumerate() {
        poll.registry()
            .register(
                &mut m.stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .expect("register a member");
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = vec![true; members.len()];
    // Join: until every member of this thread has its `* you are` line.
    while members.iter().any(|m| !m.joined) {
        assert!(
            Instant::now() < plan.deadline,
            "members did not join in time"
        );
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        for ev in events.iter() {
            let m = &mut members[ev.token().0];
            assert!(
                m.read(&mut buf, plan.epoch, &mut heard),
                "c{} closed while joining",
                m.id
            );
        }
    }
    plan.joined.wait();
    let start = Instant::now();
    let expected = (plan.members - 1) * plan.lines;
    let due = |m: &Member| {
        start + plan.interval * m.said as u32 + plan.interval * m.id as u32 / plan.members as u32
    };
    loop {
        let now = Instant::now();
        let mut next_due: Option<Instant> = None;
        for m in members.iter_mut().filter(|m| m.said < plan.lines) {
            if due(m) <= now {
                let nanos = plan.epoch.elapsed().as_nanos() as u64;
                m.unsent.extend_from_slice(&line(m.said, nanos, plan.size));
                m.said += 1;
                let _ = m.flush();
            }
            if m.said < plan.lines {
                let d = due(m);
                next_due = Some(next_due.map_or(d, |n| n.min(d)));
            }
        }
        let done = (members.iter().zip(&open))
            .all(|(m, &o)| m.said == plan.lines && (m.heard == expected || !o));
        if done || now >= plan.deadline {
            break;
        }
        let wait = next_due
            .map_or(Duration::from_millis(50), |d| {
                d.saturating_duration_since(now)
            })
            .min(plan.deadline.saturating_duration_since(now));
        poll.poll(&mut events, Some(wait)).expect("poll");
        for ev in events.iter() {
            let i = ev.token().0;
            let m = &mut members[i];
            if !open[i] {
                continue;
            }
            let mut alive = true;
            if ev.is_writable() {
                alive &= m.flush();
            }
            if ev.is_readable() {
                alive &= m.read(&mut buf, plan.epoch, &mut heard);
            }
            if !alive {
                open[i] = false;
                heard.closed += 1;
            }
        }
    }
    heard.missing = members
        .iter()
        .map(|m| (expected - m.heard.min(expected)) as u64)
        .sum();
    // The others may still be reading: nobody leaves (and makes the room
    // post a notice) until every thread is done.
    plan.done.wait();
    drop(members);
    heard
}

// ---------------------------------------------------------------------------
// The member that never reads
// ---------------------------------------------------------------------------

/// Joins as `deaf` and reads up to its `* you are deaf` line, then no more
/// (until [`deaf_reads_to_the_end`]).
fn deaf_joins(addr: SocketAddr, rcvbuf: usize) -> BufReader<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    if rcvbuf > 0 {
        // Before the connect: the window scale is agreed in the handshake.
        socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    }
    socket.connect(&addr.into()).expect("deaf: connect");
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    (&s).write_all(b"deaf\n").expect("deaf: nickname");
    let mut r = BufReader::new(s);
    loop {
        let mut l = String::new();
        r.read_line(&mut l).expect("deaf: joining");
        assert!(!l.is_empty(), "deaf: closed while joining");
        if l.starts_with("* you are deaf;") {
            return r;
        }
    }
}

/// What the deaf member got.
struct DeafEnd {
    /// Bytes received after it joined, until the end.
    bytes: usize,
    /// Whether the end was the server's close (EOF), not a timeout.
    closed: bool,
    /// Whole lines in each speaker's order, nothing skipped (a prefix of
    /// each speaker's lines).
    in_order: bool,
}

/// Reads everything that reached the deaf member until EOF, or until
/// nothing comes for 3 s.
fn deaf_reads_to_the_end(mut r: BufReader<TcpStream>, members: usize) -> DeafEnd {
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("read timeout");
    let mut all = r.buffer().to_vec();
    r.consume(all.len());
    let mut s = r.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false;
            }
            Err(_) => break true,
        }
    };
    let mut next = vec![0usize; members];
    let mut in_order = true;
    for l in all
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
    {
        if let Some((from, k, _)) = parse(l) {
            match next.get_mut(from) {
                Some(n) if *n == k => *n += 1,
                _ => in_order = false,
            }
        }
    }
    DeafEnd {
        bytes: all.len(),
        closed,
        in_order,
    }
}

// ---------------------------------------------------------------------------
// A round
// ---------------------------------------------------------------------------

/// One room, once.
struct Round {
    deaf: bool,
    /// Every delivery's trip, nanoseconds, sorted.
    trips: Vec<u64>,
    /// The same with when its line was said, since speaking began.
    said_trips: Vec<(Duration, u64)>,
    lines: u64,
    expected: u64,
    errors: u64,
    first_errors: Vec<String>,
    missing: u64,
    closed: u64,
    /// From the first line said to the last heard.
    talk: Duration,
    /// The server's CPU over that time, seconds.
    server_cpu: f64,
    /// This process's CPU (the members) over that time, seconds.
    client_cpu: f64,
    /// The server's ticks over that time, and their time in all.
    ticks: u64,
    busy_ns: u64,
    mail_cutoffs: u64,
    /// When `mail_cutoffs` was first seen at 1, after speaking began.
    cut_off_after: Option<Duration>,
    deaf_end: Option<DeafEnd>,
}

impl Round {
    /// The `q`-quantile of the trips, microseconds.
    fn trip_us(&self, q: f64) -> f64 {
        if self.trips.is_empty() {
            return f64::NAN;
        }
        let i = ((self.trips.len() as f64 * q) as usize).min(self.trips.len() - 1);
        self.trips[i] as f64 / 1e3
    }

    /// The `q`-quantile of the trips of lines said in the first `t` of
    /// speaking, microseconds.
    fn trip_us_before(&self, t: Duration, q: f64) -> f64 {
        let mut trips: Vec<u64> = (self.said_trips.iter())
            .filter(|(said, _)| *said < t)
            .map(|&(_, trip)| trip)
            .collect();
        if trips.is_empty() {
            return f64::NAN;
        }
        trips.sort_unstable();
        let i = ((trips.len() as f64 * q) as usize).min(trips.len() - 1);
        trips[i] as f64 / 1e3
    }
}

fn run_round(chat: &ServerSpec, placement: &Placement, o: &Opts, deaf: bool) -> Round {
    let server = Server::start_logged(chat, placement.server_cpu);
    let addr = server.addr();
    let deaf_member = deaf.then(|| deaf_joins(addr, o.deaf_rcvbuf));
    let plan = Plan {
        members: o.members,
        lines: o.lines,
        interval: o.interval,
        size: o.size,
        epoch: Instant::now(),
        deadline: Instant::now() + o.time_limit(),
        joined: Barrier::new(o.threads + 1),
        done: Barrier::new(o.threads),
    };
    let mut shares: Vec<Vec<Member>> = (0..o.threads).map(|_| Vec::new()).collect();
    for id in 0..o.members {
        shares[id % o.threads].push(Member::connect(addr, id, o.members));
    }
    let talking = AtomicBool::new(true);
    let (heard, start, talk, server_cpu, client_cpu, cut_off_after, before) =
        thread::scope(|scope| {
            let threads: Vec<_> = shares
                .into_iter()
                .map(|share| {
                    let plan = &plan;
                    scope.spawn(move || client_thread(plan, share))
                })
                .collect();
            plan.joined.wait();
            let start = Instant::now();
            let before = server.stats();
            let cpu_before = server.cpu_secs();
            let client_before = client_cpu_secs();
            // The server's counters every 250 ms while the room talks, in both
            // rooms alike: when the deaf member was cut off.
            let (server, talking) = (&server, &talking);
            let watch = scope.spawn(move || {
                while talking.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(250));
                    let stats = try_stats(server, Duration::from_secs(2));
                    if stats.and_then(|s| s.get("mail_cutoffs").copied()) > Some(0) {
                        return Some(start.elapsed());
                    }
                }
                None
            });
            let heard: Vec<Heard> = threads
                .into_iter()
                .map(|t| t.join().expect("a client thread"))
                .collect();
            let talk = start.elapsed();
            let server_cpu = server.cpu_secs() - cpu_before;
            let client_cpu = client_cpu_secs() - client_before;
            talking.store(false, Ordering::Relaxed);
            let cut_off_after = watch.join().expect("the watcher");
            (
                heard,
                start,
                talk,
                server_cpu,
                client_cpu,
                cut_off_after,
                before,
            )
        });
    let stats = server.stats();
    let delta = |k: &str| stats.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let (ticks, busy_ns) = (delta("ticks"), delta("busy_ns"));
    let deaf_end = deaf_member.map(|r| deaf_reads_to_the_end(r, o.members));
    server.stop();
    let mut round = Round {
        deaf,
        trips: Vec::new(),
        said_trips: Vec::new(),
        lines: 0,
        expected: (o.members * (o.members - 1) * o.lines) as u64,
        errors: 0,
        first_errors: Vec::new(),
        missing: 0,
        closed: 0,
        talk,
        server_cpu,
        client_cpu,
        ticks,
        busy_ns,
        mail_cutoffs: stats.get("mail_cutoffs").copied().unwrap_or(0),
        cut_off_after,
        deaf_end,
    };
    for h in heard {
        let began = (start - plan.epoch).as_nanos() as u64;
        round.said_trips.extend(
            (h.trips.iter())
                .map(|&(said, trip)| (Duration::from_nanos(said.saturating_sub(began)), trip)),
        );
        round.trips.extend(h.trips.iter().map(|&(_, trip)| trip));
        round.lines += h.lines;
        round.errors += h.errors;
        round.first_errors.extend(h.first_errors);
        round.missing += h.missing;
        round.closed += h.closed;
    }
    round.trips.sort_unstable();
    round
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

fn us(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else if x >= 10_000.0 {
        format!("{:.1} ms", x / 1e3)
    } else {
        format!("{x:.0} µs")
    }
}

/// The server's counters (SIGUSR1), or `None` if its answer takes longer
/// than `timeout` (a tick of the loop as long as that).
fn try_stats(server: &Server, timeout: Duration) -> Option<HashMap<String, u64>> {
    let before = server.log().matches("stats:").count();
    server.signal(libc::SIGUSR1);
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let log = server.log();
        if log.matches("stats:").count() > before {
            return Some(support::proc::counters(&log, "stats:"));
        }
        thread::sleep(Duration::from_millis(10));
    }
    None
}

/// User + system CPU of this process so far, seconds.
fn client_cpu_secs() -> f64 {
    let t = support::proc::cpu_ticks(std::process::id());
    (t.user + t.system) as f64 / support::proc::clock_ticks_per_sec() as f64
}

fn room_name(deaf: bool) -> &'static str {
    if deaf {
        "+ 1 never reads"
    } else {
        "room alone"
    }
}

fn deaf_cell(r: &Round) -> String {
    match &r.deaf_end {
        None => "-".into(),
        Some(d) => format!(
            "{} {} B{}",
            if d.closed {
                "closed after"
            } else {
                "OPEN after"
            },
            support::thousands(d.bytes as f64),
            if d.in_order { "" } else { " (OUT OF ORDER)" }
        ),
    }
}

fn main() {
    let o = Opts::parse();
    let placement = Placement::detect();
    let chat = support::build_examples(&["chat"]);
    let spec = ServerSpec::new("chat", &chat[0], &[]);
    if let Some(cpu) = placement.client_cpu {
        pin_current_thread(cpu);
    }
    let _ = echo_bench::raise_nofile_limit();
    println!("# chat room: {} members x {} lines", o.members, o.lines);
    println!();
    println!(
        "each member says a {}-byte line every {} ms; {} client threads; {}",
        o.size,
        o.interval.as_millis(),
        o.threads,
        placement.describe()
    );
    println!();
    let rounds = support::interleave(o.rounds, 2, |variant, round| {
        let deaf = variant == 1;
        let r = run_round(&spec, &placement, &o, deaf);
        eprintln!(
            "round {} {}: p50 {} p99 {} max {}; {} of {} lines, {} errors, {} missing, cutoffs {}, deaf: {}; server {:.0}%, client {:.0}%, {} ticks",
            round + 1,
            room_name(deaf),
            us(r.trip_us(0.5)),
            us(r.trip_us(0.99)),
            us(r.trip_us(1.0)),
            r.lines,
            r.expected,
            r.errors,
            r.missing,
            r.mail_cutoffs,
            deaf_cell(&r),
            100.0 * r.server_cpu / r.talk.as_secs_f64(),
            100.0 * r.client_cpu / r.talk.as_secs_f64(),
            r.ticks,
        );
        for e in &r.first_errors {
            eprintln!("  {e}");
        }
        r
    });
    // Latency, and beside it the lines said while the deaf member was
    // still there: before round r's cut-off was seen, in both rooms of
    // round r alike.
    let cut_at = |round: usize| rounds[1][round].cut_off_after;
    let mut rows = Vec::new();
    let mut more = Vec::new();
    for round in 0..o.rounds {
        for variant in &rounds {
            let r = &variant[round];
            let name = format!("{} ({})", room_name(r.deaf), round + 1);
            rows.push(vec![
                name.clone(),
                us(r.trip_us(0.5)),
                us(r.trip_us(0.9)),
                us(r.trip_us(0.99)),
                us(r.trip_us(0.999)),
                us(r.trip_us(1.0)),
                cut_at(round).map_or("-".into(), |t| us(r.trip_us_before(t, 0.99))),
            ]);
            more.push(vec![
                name,
                format!(
                    "{} / {}",
                    support::thousands(r.lines as f64),
                    support::thousands(r.expected as f64)
                ),
                format!("{} / {}", r.errors, r.missing),
                format!("{:.1} s", r.talk.as_secs_f64()),
                format!("{:.0}%", 100.0 * r.server_cpu / r.talk.as_secs_f64()),
                format!("{:.0}%", 100.0 * r.client_cpu / r.talk.as_secs_f64()),
                format!(
                    "{} / {}",
                    support::thousands(r.ticks as f64),
                    us(r.busy_ns as f64 / 1e3 / r.ticks.max(1) as f64)
                ),
                r.mail_cutoffs.to_string(),
                r.cut_off_after
                    .map_or("-".into(), |t| format!("{:.2} s", t.as_secs_f64())),
                deaf_cell(r),
            ]);
        }
    }
    for variant in &rounds {
        let deaf = variant[0].deaf;
        let m = |q: f64| us(median(variant, |r| r.trip_us(q)));
        let indexed: Vec<(usize, &Round)> = variant.iter().enumerate().collect();
        let before = median(&indexed, |&(i, r)| {
            cut_at(i).map_or(f64::NAN, |t| r.trip_us_before(t, 0.99))
        });
        rows.push(vec![
            format!("**{}, median**", room_name(deaf)),
            m(0.5),
            m(0.9),
            m(0.99),
            m(0.999),
            m(1.0),
            us(before),
        ]);
    }
    let table = markdown_table(
        &[
            "room (round)",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "p99, lines said before the cut-off",
        ],
        &rows,
    );
    let table_more = markdown_table(
        &[
            "room (round)",
            "lines heard / expected",
            "errors / missing",
            "talk",
            "server busy",
            "client busy",
            "server ticks / mean tick",
            "mail_cutoffs",
            "cut off seen at",
            "the deaf member",
        ],
        &more,
    );
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{} members x {} lines of {} bytes, a line every {} ms per member; the deaf member's SO_RCVBUF {}; {} rounds each, interleaved; {}\n",
        o.members,
        o.lines,
        o.size,
        o.interval.as_millis(),
        if o.deaf_rcvbuf == 0 {
            "the kernel's default".to_string()
        } else {
            format!("{} B", o.deaf_rcvbuf)
        },
        o.rounds,
        placement.describe()
    );
    report.push_str(&table);
    report.push('\n');
    report.push_str(&table_more);
    println!("{report}");
    let all_heard = rounds
        .iter()
        .flatten()
        .all(|r| r.errors == 0 && r.missing == 0 && r.lines == r.expected);
    let cut = rounds[1].iter().all(|r| {
        r.mail_cutoffs == 1 && r.deaf_end.as_ref().is_some_and(|d| d.closed && d.in_order)
    });
    let alone_uncut = rounds[0].iter().all(|r| r.mail_cutoffs == 0);
    let verdict = format!(
        "every line heard exactly once, in order: {}; the deaf member cut off (and only it): {}",
        if all_heard { "yes" } else { "NO" },
        if cut && alone_uncut { "yes" } else { "NO" }
    );
    println!("{verdict}");
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir).expect("create the output directory");
    }
    std::fs::write(&o.out, format!("{report}\n{verdict}\n"))
        .unwrap_or_else(|e| panic!("write {}: {e}", o.out.display()));
    println!("written to {}", o.out.display());
    let _ = io::stdout().flush();
}
