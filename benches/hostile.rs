//! Hostile clients against one server, with well-behaved ones beside them:
//! what the memory budget (`--max-buffered`) holds, what the attackers cost
//! the server and the kernel, and what the well-behaved clients still get.
//!
//! ```sh
//! cargo bench --bench hostile --no-run          # build first, at low priority
//! cargo bench --bench hostile                   # 19,000 attackers, raw mode, ~2 min
//! cargo bench --bench hostile -- --quick        # 120 attackers, seconds (CI)
//! cargo bench --bench hostile -- --mode line --attackers 5000 --evict-after 2
//! ```
//!
//! One release `echo-reactor` runs pinned to CPU 0; this process, pinned to
//! CPU 1, drives everything else. The attackers, spread over the loopback
//! addresses 127.0.0.1-8 (`support::proc::idle_source`), are:
//!
//! | kind | what it does |
//! | --- | --- |
//! | pusher | writes `--push` bytes (1 MiB) and reads nothing |
//! | zero-window | the same with `SO_RCVBUF` at its minimum, so its window closes at once |
//! | flood | line mode: empty lines, each answered `hello \n` (7 bytes for 1); frame mode: empty frames |
//! | slow reader | writes 8 KiB, then reads 1 byte a second |
//! | half-closer | writes 8 KiB, sends its FIN, reads nothing |
//! | partial | line and frame modes: one message one byte short of `--max-line` / `--max-frame` |
//! | head only | line and frame modes: the same message, of which only the head is written before the read-back (16 bytes of the line; the frame's 4-byte header): a reservation never filled |
//! | churn | connects, writes 1 KiB and resets (`SO_LINGER` 0), round after round |
//!
//! The heavy kinds (pusher, zero-window, flood) are at most 200 each and
//! churn at most 256 connections a round, so that the bytes in flight stay
//! far below the machine's `net.ipv4.tcp_mem`; the light kinds share the
//! rest. The run, each step bounded in time:
//!
//! 1. 10 well-behaved ping-pong clients (64-byte messages, every answer
//!    checked) alone: req/s and p99.
//! 2. The attackers connect and write what they write before reading.
//! 3. The same well-behaved clients beside them (churn and the slow
//!    readers at work): req/s and p99.
//! 4. The attackers sit idle: the server's CPU over that window, the
//!    kernel's send queue of each attacker's connection (`tx_queue` of
//!    `/proc/net/tcp`, `Send-Q` in `ss -tn`), the server's counters.
//! 5. Every attacker sends what it held back (the last byte of a partial
//!    message), reads everything it is owed and checks it byte by byte
//!    against its pattern: bytes not returned must be 0 (without
//!    `--evict-after`, which closes stalled clients by design).
//! 6. Everything is closed: the server's descriptors must be back where
//!    they started.
//!
//! The report is printed and written to `target/hostile/hostile-MODE.md`
//! (or `--out DIR`).

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use support::{Placement, Server, ServerSpec, markdown_table, proc, thousands};

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Raw,
    Line,
    Frame,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Line => "line",
            Mode::Frame => "frame",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    attackers: usize,
    mode: Mode,
    max_buffered: usize,
    evict_after: Option<String>,
    sndbuf: Option<String>,
    push: usize,
    out: PathBuf,
}

impl Opts {
    fn parse() -> Opts {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = Opts {
            quick,
            attackers: if quick { 120 } else { 19_000 },
            mode: Mode::Raw,
            max_buffered: if quick { 4 << 20 } else { 16 << 20 },
            evict_after: None,
            sndbuf: None,
            push: 1 << 20,
            out: PathBuf::from("target/hostile"),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .unwrap_or_else(|| panic!("{a} needs a value"))
                    .clone()
            };
            match a.as_str() {
                "--quick" | "--bench" => {}
                "--attackers" => o.attackers = number(a, &value()),
                "--max-buffered" => o.max_buffered = number(a, &value()),
                "--push" => o.push = number(a, &value()),
                "--evict-after" => o.evict_after = Some(value()),
                "--sndbuf" => o.sndbuf = Some(value()),
                "--out" => o.out = PathBuf::from(value()),
                "--mode" => {
                    o.mode = match value().as_str() {
                        "raw" => Mode::Raw,
                        "line" => Mode::Line,
                        "frame" => Mode::Frame,
                        m => panic!("--mode raw|line|frame, not {m:?}"),
                    }
                }
                other => panic!(
                    "unknown option {other:?}; options: --quick --attackers N \
                     --mode raw|line|frame --max-buffered BYTES --evict-after SECS \
                     --sndbuf BYTES|auto --push BYTES --out DIR"
                ),
            }
        }
        o
    }

    /// Seconds of `--evict-after`, if given.
    fn evict_secs(&self) -> Option<f64> {
        self.evict_after.as_ref().map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("--evict-after {s:?}: seconds"))
        })
    }
}

fn number(flag: &str, v: &str) -> usize {
    v.parse()
        .unwrap_or_else(|_| panic!("{flag} {v:?}: a whole number"))
}

/// Well-behaved ping-pong clients, and their message size.
const WELL_BEHAVED: usize = 10;
const MESSAGE: usize = 64;
/// What the light attackers write before reading.
const LIGHT_PUSH: usize = 8 * 1024;
/// At most this many of each heavy kind.
const HEAVY_MAX: usize = 200;
/// At most this many churn connections a round, and rounds this far apart.
const CHURN_MAX: usize = 256;
const CHURN_PAUSE: Duration = Duration::from_millis(100);
/// `--max-frame` of the frame-mode server (`--max-line` stays at 8,192).
const MAX_FRAME: usize = 64 * 1024;
const MAX_LINE: usize = 8 * 1024;
/// Line and frame bodies of the pushing kinds.
const LINE_BODY: usize = 63;
const FRAME_BODY: usize = 1020;

// ---------------------------------------------------------------------------
// What each attacker sends and is owed: a pattern per attacker, generated
// on the fly (19,000 attackers x 1 MiB would not fit in memory twice).
// ---------------------------------------------------------------------------

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Byte `i` of attacker `id`'s pattern: any value.
fn raw_byte(id: u64, i: usize) -> u8 {
    (mix((id << 40) ^ (i as u64 >> 3)) >> ((i & 7) * 8)) as u8
}

/// Byte `i` of attacker `id`'s text: printable, never LF or CR.
fn text_byte(id: u64, i: usize) -> u8 {
    b'!' + raw_byte(id, i) % 94
}

const HELLO: &[u8] = b"hello ";

/// The byte stream an attacker writes, and the one it is owed.
#[derive(Debug, Clone, Copy)]
enum Script {
    /// Raw mode: the echo is the pattern itself.
    Raw { id: u64, len: usize },
    /// Line mode (`hello`): lines of [`LINE_BODY`] bytes.
    Lines { id: u64, lines: usize },
    /// Frame mode: frames of [`FRAME_BODY`] bytes.
    Frames { id: u64, frames: usize },
    /// Line mode: empty lines, 1 byte in, `hello \n` out.
    EmptyLines { lines: usize },
    /// Frame mode: empty frames (a zero length), echoed whole.
    EmptyFrames { frames: usize },
    /// A line of `body` bytes of which the first `hold` are written before
    /// the read-back (all but the LF, or only its head).
    PartialLine { id: u64, body: usize, hold: usize },
    /// A frame of `body` bytes of which the first `hold` are written
    /// before the read-back (all but its last byte, or only its header).
    PartialFrame { id: u64, body: usize, hold: usize },
}

impl Script {
    /// For a kind that writes about `bytes`, in `mode`.
    fn stream(mode: Mode, id: u64, bytes: usize) -> Script {
        match mode {
            Mode::Raw => Script::Raw { id, len: bytes },
            Mode::Line => Script::Lines {
                id,
                lines: bytes.div_ceil(LINE_BODY + 1),
            },
            Mode::Frame => Script::Frames {
                id,
                frames: bytes.div_ceil(FRAME_BODY + 4),
            },
        }
    }

    fn send_len(&self) -> usize {
        match *self {
            Script::Raw { len, .. } => len,
            Script::Lines { lines, .. } => lines * (LINE_BODY + 1),
            Script::Frames { frames, .. } => frames * (FRAME_BODY + 4),
            Script::EmptyLines { lines } => lines,
            Script::EmptyFrames { frames } => frames * 4,
            Script::PartialLine { body, .. } => body + 1,
            Script::PartialFrame { body, .. } => body + 4,
        }
    }

    /// What is written before the attacker reads: a partial message's
    /// first `hold` bytes.
    fn hold_len(&self) -> usize {
        match *self {
            Script::PartialLine { hold, .. } | Script::PartialFrame { hold, .. } => hold,
            _ => self.send_len(),
        }
    }

    fn expect_len(&self) -> usize {
        match *self {
            Script::Lines { lines, .. } => lines * (LINE_BODY + 1 + HELLO.len()),
            Script::EmptyLines { lines } => lines * (1 + HELLO.len()),
            Script::PartialLine { body, .. } => body + 1 + HELLO.len(),
            _ => self.send_len(),
        }
    }

    fn sent(&self, i: usize) -> u8 {
        match *self {
            Script::Raw { id, .. } => raw_byte(id, i),
            Script::Lines { id, .. } => {
                let (l, k) = (i / (LINE_BODY + 1), i % (LINE_BODY + 1));
                if k == LINE_BODY {
                    b'\n'
                } else {
                    text_byte(id, l * LINE_BODY + k)
                }
            }
            Script::Frames { id, .. } => frame_byte(id, FRAME_BODY, i),
            Script::EmptyLines { .. } => b'\n',
            Script::EmptyFrames { .. } => 0,
            Script::PartialLine { id, body, .. } => {
                if i < body {
                    text_byte(id, i)
                } else {
                    b'\n'
                }
            }
            Script::PartialFrame { id, body, .. } => frame_byte(id, body, i),
        }
    }

    fn expected(&self, j: usize) -> u8 {
        match *self {
            Script::Lines { id, .. } => {
                let q = LINE_BODY + 1 + HELLO.len();
                let (l, k) = (j / q, j % q);
                if k < HELLO.len() {
                    HELLO[k]
                } else if k == q - 1 {
                    b'\n'
                } else {
                    text_byte(id, l * LINE_BODY + k - HELLO.len())
                }
            }
            Script::EmptyLines { .. } => b"hello \n"[j % 7],
            Script::PartialLine { id, body, .. } => {
                if j < HELLO.len() {
                    HELLO[j]
                } else if j < HELLO.len() + body {
                    text_byte(id, j - HELLO.len())
                } else {
                    b'\n'
                }
            }
            _ => self.sent(j),
        }
    }
}

/// Byte `i` of a stream of frames of `body` bytes: a 4-byte big-endian
/// length, then the pattern.
fn frame_byte(id: u64, body: usize, i: usize) -> u8 {
    let (f, k) = (i / (body + 4), i % (body + 4));
    if k < 4 {
        (body as u32).to_be_bytes()[k]
    } else {
        raw_byte(id, f * body + k - 4)
    }
}

// ---------------------------------------------------------------------------
// Attackers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Pusher,
    ZeroWindow,
    Flood,
    SlowReader,
    HalfCloser,
    Partial,
    HeadOnly,
    Churn,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pusher => "pusher",
            Kind::ZeroWindow => "zero-window",
            Kind::Flood => "flood",
            Kind::SlowReader => "slow reader",
            Kind::HalfCloser => "half-closer",
            Kind::Partial => "partial",
            Kind::HeadOnly => "head only",
            Kind::Churn => "churn",
        }
    }

    /// The kinds a server in `mode` meets.
    fn all(mode: Mode) -> Vec<Kind> {
        let mut kinds = vec![Kind::Pusher, Kind::ZeroWindow];
        if mode != Mode::Raw {
            kinds.push(Kind::Flood);
        }
        kinds.extend([Kind::SlowReader, Kind::HalfCloser]);
        if mode != Mode::Raw {
            kinds.extend([Kind::Partial, Kind::HeadOnly]);
        }
        kinds.push(Kind::Churn);
        kinds
    }

    fn heavy(self) -> bool {
        matches!(self, Kind::Pusher | Kind::ZeroWindow | Kind::Flood)
    }
}

/// How many of each kind make `total` attackers (see the module docs).
fn mix_of(mode: Mode, total: usize) -> Vec<(Kind, usize)> {
    let kinds = Kind::all(mode);
    let share = total / kinds.len();
    let mut counts: Vec<(Kind, usize)> = kinds
        .iter()
        .map(|&k| match k {
            k if k.heavy() => (k, share.min(HEAVY_MAX)),
            Kind::Churn => (k, share.min(CHURN_MAX)),
            _ => (k, 0),
        })
        .collect();
    let light: Vec<usize> = (0..counts.len())
        .filter(|&i| counts[i].1 == 0 && counts[i].0 != Kind::Churn)
        .collect();
    let left = total - counts.iter().map(|c| c.1).sum::<usize>();
    for (n, &i) in light.iter().enumerate() {
        counts[i].1 = left / light.len() + usize::from(n < left % light.len());
    }
    counts
}

/// The script of attacker `id` of `kind`.
fn script_of(kind: Kind, mode: Mode, id: u64, push: usize) -> Script {
    match (kind, mode) {
        (Kind::Pusher | Kind::ZeroWindow, _) => Script::stream(mode, id, push),
        (Kind::Flood, Mode::Line) => Script::EmptyLines { lines: push / 8 },
        (Kind::Flood, _) => Script::EmptyFrames { frames: push / 4 },
        (Kind::Partial, Mode::Line) => Script::PartialLine {
            id,
            body: MAX_LINE - 1,
            hold: MAX_LINE - 1,
        },
        (Kind::Partial, _) => Script::PartialFrame {
            id,
            body: MAX_FRAME,
            hold: MAX_FRAME + 3,
        },
        (Kind::HeadOnly, Mode::Line) => Script::PartialLine {
            id,
            body: MAX_LINE - 1,
            hold: 16,
        },
        (Kind::HeadOnly, _) => Script::PartialFrame {
            id,
            body: MAX_FRAME,
            hold: 4,
        },
        _ => Script::stream(mode, id, LIGHT_PUSH),
    }
}

/// One attacker's connection and how far it got.
struct Attacker {
    kind: Kind,
    sock: TcpStream,
    script: Script,
    /// Bytes of the script written so far.
    sent: usize,
    /// Bytes it may write now: [`Script::hold_len`] until the read-back.
    may_send: usize,
    /// Bytes of the answer read and checked.
    got: usize,
    fin_sent: bool,
    /// The server closed or reset it before it got everything.
    cut: bool,
    /// The first answer byte that differed from the pattern.
    wrong_at: Option<usize>,
}

impl Attacker {
    fn open(kind: Kind, script: Script, src: IpAddr, to: SocketAddr) -> io::Result<Attacker> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        if kind == Kind::ZeroWindow {
            // The kernel's minimum: its window closes after a few bytes.
            s.set_recv_buffer_size(1)?;
        }
        s.bind(&SocketAddr::new(src, 0).into())?;
        s.connect(&to.into())?;
        s.set_nonblocking(true)?;
        s.set_tcp_nodelay(true)?;
        Ok(Attacker {
            kind,
            sock: s.into(),
            script,
            sent: 0,
            may_send: script.hold_len(),
            got: 0,
            fin_sent: false,
            cut: false,
            wrong_at: None,
        })
    }

    fn done_writing(&self) -> bool {
        self.sent >= self.script.send_len()
    }

    fn done(&self) -> bool {
        self.cut || self.got >= self.script.expect_len()
    }

    /// Writes what it may, as far as the socket takes it; returns bytes
    /// written.
    fn write_some(&mut self, buf: &mut [u8]) -> usize {
        let mut wrote = 0;
        while self.sent < self.may_send && !self.cut {
            let n = buf.len().min(self.may_send - self.sent);
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = self.script.sent(self.sent + k);
            }
            match self.sock.write(&buf[..n]) {
                Ok(w) => {
                    self.sent += w;
                    wrote += w;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.cut = true,
            }
        }
        if self.kind == Kind::HalfCloser && self.done_writing() && !self.fin_sent {
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
            self.fin_sent = true;
        }
        wrote
    }

    /// Reads up to `limit` bytes of its answer, checking each; returns
    /// bytes read.
    fn read_some(&mut self, buf: &mut [u8], limit: usize) -> usize {
        let mut read = 0;
        while read < limit && !self.done() {
            let want = buf.len().min(limit - read);
            match self.sock.read(&mut buf[..want]) {
                Ok(0) => self.cut = true,
                Ok(n) => {
                    let owed = self.script.expect_len();
                    for (k, &b) in buf[..n].iter().enumerate() {
                        let at = self.got + k;
                        if self.wrong_at.is_none() && (at >= owed || b != self.script.expected(at))
                        {
                            self.wrong_at = Some(at);
                        }
                    }
                    self.got += n;
                    read += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.cut = true,
            }
        }
        read
    }
}

/// Every attacker but the churners, driven from this thread.
struct Attack {
    list: Vec<Attacker>,
    buf: Vec<u8>,
    next_slow_read: Instant,
}

impl Attack {
    /// One pass of writes over every attacker; returns bytes written.
    fn write_pass(&mut self) -> usize {
        let buf = &mut self.buf;
        self.list.iter_mut().map(|a| a.write_some(buf)).sum()
    }

    /// Once a second, each slow reader reads one byte.
    fn tick_slow_readers(&mut self) {
        if Instant::now() < self.next_slow_read {
            return;
        }
        self.next_slow_read += Duration::from_secs(1);
        let buf = &mut self.buf;
        for a in self.list.iter_mut().filter(|a| a.kind == Kind::SlowReader) {
            a.read_some(buf, 1);
        }
    }

    /// Writes until every attacker wrote what it writes before reading,
    /// or nothing moved for a second (the rest waits in full queues), or
    /// `limit` passed.
    fn push(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut moved = Instant::now();
        while Instant::now() < deadline && moved.elapsed() < Duration::from_secs(1) {
            if self.write_pass() > 0 {
                moved = Instant::now();
            } else if self.list.iter().all(|a| a.sent >= a.may_send || a.cut) {
                break;
            } else {
                thread::sleep(Duration::from_millis(10));
            }
            self.tick_slow_readers();
        }
    }

    /// Every attacker sends the rest and reads everything it is owed,
    /// until all are done, nothing moved for `stall`, or `limit` passed.
    fn read_back(&mut self, limit: Duration, stall: Duration) {
        for a in &mut self.list {
            a.may_send = a.script.send_len();
        }
        let deadline = Instant::now() + limit;
        let mut moved = Instant::now();
        while Instant::now() < deadline && moved.elapsed() < stall {
            let buf = &mut self.buf;
            let mut n = 0;
            for a in self.list.iter_mut().filter(|a| !a.done()) {
                n += a.write_some(buf);
                n += a.read_some(buf, usize::MAX);
            }
            if self.list.iter().all(Attacker::done) {
                break;
            }
            if n > 0 {
                moved = Instant::now();
            } else {
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Connects and resets `slots` connections a round until `stop`, counting
/// them in `made`.
fn churn(to: SocketAddr, slots: usize, stop: Arc<AtomicBool>, made: Arc<AtomicU64>) {
    let payload = vec![b'\n'; 1024];
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut conns = Vec::with_capacity(slots);
        for i in 0..slots {
            if let Ok(c) = try_connect(proc::idle_source(round * slots + i), to) {
                let _ = (&c).write(&payload);
                conns.push(c);
            }
        }
        for c in conns {
            let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
            made.fetch_add(1, Ordering::Relaxed);
        }
        round += 1;
        thread::sleep(CHURN_PAUSE);
    }
}

fn try_connect(src: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

// ---------------------------------------------------------------------------
// Well-behaved clients
// ---------------------------------------------------------------------------

/// What the well-behaved clients saw over one window.
#[derive(Debug, Clone, Copy, Default)]
struct Served {
    req_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

/// One request and its answer in `mode`.
fn exchange(mode: Mode, client: usize) -> (Vec<u8>, Vec<u8>) {
    let text: Vec<u8> = (0..MESSAGE).map(|i| text_byte(client as u64, i)).collect();
    match mode {
        Mode::Raw => (text.clone(), text),
        Mode::Line => {
            let mut ask = text[..MESSAGE - 1].to_vec();
            ask.push(b'\n');
            let mut answer = HELLO.to_vec();
            answer.extend_from_slice(&ask);
            (ask, answer)
        }
        Mode::Frame => {
            let mut ask = ((MESSAGE - 4) as u32).to_be_bytes().to_vec();
            ask.extend_from_slice(&text[..MESSAGE - 4]);
            (ask.clone(), ask)
        }
    }
}

/// [`WELL_BEHAVED`] clients, each on its own thread, ping-pong with `addr`
/// for `warmup` + `window`; the window's echoes are counted and timed.
fn serve_well_behaved(addr: SocketAddr, mode: Mode, warmup: Duration, window: Duration) -> Served {
    let start = Instant::now() + warmup;
    let end = start + window;
    let handles: Vec<_> = (0..WELL_BEHAVED)
        .map(|c| {
            thread::spawn(move || {
                let (ask, answer) = exchange(mode, c);
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let Ok(mut s) = TcpStream::connect(addr) else {
                    return (lat, 1);
                };
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut back = vec![0u8; answer.len()];
                while Instant::now() < end {
                    let t = Instant::now();
                    if s.write_all(&ask)
                        .and_then(|_| s.read_exact(&mut back))
                        .is_err()
                    {
                        errors += 1;
                        break;
                    }
                    if back != answer {
                        errors += 1;
                    }
                    if t >= start {
                        lat.push(t.elapsed().as_nanos() as u64);
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (lat, e) = h.join().expect("well-behaved client thread");
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::NAN, |&ns| ns as f64 / 1000.0)
    };
    Served {
        req_per_sec: all.len() as f64 / window.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// How long each step lasts.
struct Steps {
    window: Duration,
    idle: Duration,
    push_limit: Duration,
    read_limit: Duration,
}

fn main() {
    let opts = Opts::parse();
    std::fs::create_dir_all(&opts.out).expect("create the output directory");
    let nofile = echo_bench::raise_nofile_limit().unwrap_or(0);
    let placement = Placement::detect();
    if let Some(cpu) = placement.client_cpu {
        support::pin_current_thread(cpu);
    }
    let idle = if opts.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    // With --evict-after, the idle window outlasts it and two checks.
    let idle = idle.max(Duration::from_secs_f64(
        opts.evict_secs().unwrap_or(0.0) + 2.5,
    ));
    let steps = if opts.quick {
        Steps {
            window: Duration::from_secs(1),
            idle,
            push_limit: Duration::from_secs(10),
            read_limit: Duration::from_secs(30),
        }
    } else {
        Steps {
            window: Duration::from_secs(5),
            idle,
            push_limit: Duration::from_secs(60),
            read_limit: Duration::from_secs(180),
        }
    };

    let mut args: Vec<String> = vec![
        "--mode".into(),
        opts.mode.name().into(),
        "--max-buffered".into(),
        opts.max_buffered.to_string(),
    ];
    match opts.mode {
        Mode::Raw => {}
        Mode::Line => args.extend(["--line-transform".into(), "hello".into()]),
        Mode::Frame => args.extend(["--max-frame".into(), MAX_FRAME.to_string()]),
    }
    if let Some(e) = &opts.evict_after {
        args.extend(["--evict-after".into(), e.clone()]);
    }
    if let Some(s) = &opts.sndbuf {
        args.extend(["--sndbuf".into(), s.clone()]);
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let spec = ServerSpec::new(
        "echo-reactor",
        env!("CARGO_BIN_EXE_echo-reactor"),
        &arg_refs,
    );
    let server = Server::start_logged(&spec, placement.server_cpu);
    let pid = server.pid();
    let addr = server.addr();
    thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let mut r = Report {
        command: command_line(&opts),
        server_args: args.join(" "),
        machine: proc::machine(),
        placement: placement.describe(),
        date: proc::utc_now("%F %H:%M UTC"),
        nofile,
        fds_before: proc::fd_count(pid),
        rss_before_kib: proc::vm_rss_kib(pid),
        tcp_mem_before: proc::tcp_mem_bytes(),
        ..Report::default()
    };
    eprintln!(
        "hostile: {} attackers, server {}",
        opts.attackers, r.server_args
    );

    // 1. The well-behaved clients alone.
    let warmup = Duration::from_millis(200);
    r.alone = serve_well_behaved(addr, opts.mode, warmup, steps.window);
    eprintln!("hostile: alone {:.0} req/s", r.alone.req_per_sec);

    // 2. The attackers connect and push.
    r.mix = mix_of(opts.mode, opts.attackers);
    let t = Instant::now();
    let mut attack = Attack {
        list: Vec::new(),
        buf: vec![0u8; 64 * 1024],
        next_slow_read: Instant::now() + Duration::from_secs(1),
    };
    let mut id = 0u64;
    for &(kind, count) in r.mix.iter().filter(|(k, _)| *k != Kind::Churn) {
        for _ in 0..count {
            let script = script_of(kind, opts.mode, id, opts.push);
            match Attacker::open(kind, script, proc::idle_source(id as usize), addr) {
                Ok(a) => attack.list.push(a),
                Err(e) => {
                    r.connect_failed += 1;
                    if r.connect_failed == 1 {
                        eprintln!("hostile: connect failed: {e}");
                    }
                }
            }
            id += 1;
        }
    }
    r.connected = attack.list.len();
    r.open_secs = t.elapsed().as_secs_f64();
    eprintln!(
        "hostile: {} attackers connected in {:.1} s",
        r.connected, r.open_secs
    );
    let stop_churn = Arc::new(AtomicBool::new(false));
    let churned = Arc::new(AtomicU64::new(0));
    let churn_slots = r.count(Kind::Churn);
    let churner = (churn_slots > 0).then(|| {
        let (stop, made) = (Arc::clone(&stop_churn), Arc::clone(&churned));
        thread::spawn(move || churn(addr, churn_slots, stop, made))
    });
    let t = Instant::now();
    attack.push(steps.push_limit);
    r.push_secs = t.elapsed().as_secs_f64();
    r.written_before_reading = attack.list.iter().map(|a| a.sent as u64).sum();
    eprintln!(
        "hostile: pushed {} MiB in {:.1} s",
        r.written_before_reading >> 20,
        r.push_secs
    );

    // 3. The well-behaved clients beside them; the slow readers read on.
    let beside = {
        let mode = opts.mode;
        let window = steps.window;
        thread::spawn(move || serve_well_behaved(addr, mode, warmup, window))
    };
    while !beside.is_finished() {
        attack.tick_slow_readers();
        thread::sleep(Duration::from_millis(50));
    }
    r.beside = beside.join().expect("well-behaved clients");
    eprintln!("hostile: beside {:.0} req/s", r.beside.req_per_sec);
    stop_churn.store(true, Ordering::Relaxed);
    if let Some(c) = churner {
        c.join().expect("churn thread");
    }
    r.churned = churned.load(Ordering::Relaxed);

    // 4. The attackers sit idle.
    thread::sleep(Duration::from_millis(500));
    let cpu0 = proc::cpu_ticks(pid).total();
    let w0 = Instant::now();
    let mut tcp_mem_peak = proc::tcp_mem_bytes();
    while w0.elapsed() < steps.idle {
        thread::sleep(Duration::from_millis(250));
        tcp_mem_peak = tcp_mem_peak.max(proc::tcp_mem_bytes());
    }
    r.idle_ticks = proc::cpu_ticks(pid).total() - cpu0;
    r.idle_secs = w0.elapsed().as_secs_f64();
    r.fds_during = proc::fd_count(pid);
    r.rss_attacked_kib = proc::vm_rss_kib(pid);
    r.tcp_mem_peak = tcp_mem_peak;
    r.send_queues = send_queues(&attack, addr.port());
    r.stats_idle = server.stats();
    eprintln!(
        "hostile: idle: {} ticks, buffered {}",
        r.idle_ticks,
        r.stats_idle.get("buffered").copied().unwrap_or(0)
    );

    // 5. The attackers read back.
    let t = Instant::now();
    attack.read_back(steps.read_limit, Duration::from_secs(20));
    r.read_secs = t.elapsed().as_secs_f64();
    r.rss_peak_kib = proc::vm_hwm_kib(pid);
    r.outcomes = outcomes(&attack);
    eprintln!("hostile: read back in {:.1} s", r.read_secs);

    // 6. Everything closed.
    drop(attack);
    let deadline = Instant::now() + Duration::from_secs(30);
    while proc::fd_count(pid) > r.fds_before && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    r.fds_after = proc::fd_count(pid);
    r.left_behind = left_behind(addr.port());
    r.stats_end = server.stats();
    r.total_secs = t0.elapsed().as_secs_f64();
    let log = server.terminate(Duration::from_secs(10));
    r.final_stats = log
        .lines()
        .rev()
        .find(|l| l.contains("final stats:"))
        .map(|l| proc::counters(l, "final stats:"))
        .unwrap_or_default();
    r.warnings = log.lines().filter(|l| l.contains(" WARN ")).count();

    let text = r.render(&opts);
    println!("{text}");
    let path = opts.out.join(format!("hostile-{}.md", opts.mode.name()));
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("hostile: report written to {}", path.display());
}

/// The command that reproduces this run.
fn command_line(o: &Opts) -> String {
    let mut c = String::from("cargo bench --bench hostile --");
    if o.quick {
        c.push_str(" --quick");
    }
    let _ = write!(
        c,
        " --attackers {} --mode {} --max-buffered {}",
        o.attackers,
        o.mode.name(),
        o.max_buffered
    );
    if let Some(e) = &o.evict_after {
        let _ = write!(c, " --evict-after {e}");
    }
    if let Some(s) = &o.sndbuf {
        let _ = write!(c, " --sndbuf {s}");
    }
    if o.push != 1 << 20 {
        let _ = write!(c, " --push {}", o.push);
    }
    c
}

/// The kernel's send queue of the server's side of each attacker's
/// connection, summed per kind: (kind, connections seen, bytes).
fn send_queues(attack: &Attack, port: u16) -> Vec<(Kind, usize, u64)> {
    let kind_of: HashMap<SocketAddr, Kind> = attack
        .list
        .iter()
        .filter_map(|a| Some((a.sock.local_addr().ok()?, a.kind)))
        .collect();
    let mut sums: HashMap<Kind, (usize, u64)> = HashMap::new();
    for s in proc::tcp_sockets(port) {
        if let Some(&k) = kind_of.get(&s.peer) {
            let e = sums.entry(k).or_default();
            e.0 += 1;
            e.1 += s.tx_queue;
        }
    }
    let mut v: Vec<(Kind, usize, u64)> = sums.into_iter().map(|(k, (n, b))| (k, n, b)).collect();
    v.sort();
    v
}

/// The server's connections still open after every client closed, by TCP
/// state, with the bytes still unread in them (`Recv-Q`).
fn left_behind(port: u16) -> Vec<(&'static str, usize, u64)> {
    let mut by: HashMap<&'static str, (usize, u64)> = HashMap::new();
    for s in proc::tcp_sockets(port)
        .iter()
        .filter(|s| s.state != "LISTEN")
    {
        let e = by.entry(s.state).or_default();
        e.0 += 1;
        e.1 += s.rx_queue;
    }
    let mut v: Vec<_> = by.into_iter().map(|(k, (n, b))| (k, n, b)).collect();
    v.sort();
    v
}

/// What became of each kind's attackers.
#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    attackers: usize,
    /// Bytes written before reading, each (the script's hold length).
    held_back_each: usize,
    owed: u64,
    returned: u64,
    whole: usize,
    cut: usize,
    unfinished: usize,
    wrong: usize,
}

fn outcomes(attack: &Attack) -> Vec<(Kind, Outcome)> {
    let mut by: HashMap<Kind, Outcome> = HashMap::new();
    for a in &attack.list {
        let o = by.entry(a.kind).or_default();
        o.attackers += 1;
        o.held_back_each = a.script.hold_len();
        o.owed += a.script.expect_len() as u64;
        let good = a.wrong_at.unwrap_or(a.got).min(a.script.expect_len());
        o.returned += good as u64;
        if a.wrong_at.is_some() {
            o.wrong += 1;
        } else if a.got >= a.script.expect_len() {
            o.whole += 1;
        } else if a.cut {
            o.cut += 1;
        } else {
            o.unfinished += 1;
        }
    }
    let mut v: Vec<(Kind, Outcome)> = by.into_iter().collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Report {
    command: String,
    server_args: String,
    machine: String,
    placement: String,
    date: String,
    nofile: u64,
    mix: Vec<(Kind, usize)>,
    connected: usize,
    connect_failed: usize,
    open_secs: f64,
    push_secs: f64,
    read_secs: f64,
    total_secs: f64,
    written_before_reading: u64,
    churned: u64,
    alone: Served,
    beside: Served,
    idle_ticks: u64,
    idle_secs: f64,
    fds_before: usize,
    fds_during: usize,
    fds_after: usize,
    left_behind: Vec<(&'static str, usize, u64)>,
    rss_before_kib: u64,
    rss_attacked_kib: u64,
    rss_peak_kib: u64,
    tcp_mem_before: u64,
    tcp_mem_peak: u64,
    send_queues: Vec<(Kind, usize, u64)>,
    stats_idle: HashMap<String, u64>,
    stats_end: HashMap<String, u64>,
    final_stats: HashMap<String, u64>,
    outcomes: Vec<(Kind, Outcome)>,
    warnings: usize,
}

impl Report {
    fn count(&self, kind: Kind) -> usize {
        self.mix
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }

    fn stat(&self, key: &str) -> u64 {
        // The final line has the peaks of the whole run; the idle one is
        // the fallback if the server did not exit cleanly.
        self.final_stats
            .get(key)
            .or_else(|| self.stats_end.get(key))
            .copied()
            .unwrap_or(0)
    }

    fn render(&self, opts: &Opts) -> String {
        let kib = |b: u64| format!("{} KiB", thousands(b as f64 / 1024.0));
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
        let owed: u64 = self.outcomes.iter().map(|(_, o)| o.owed).sum();
        let returned: u64 = self.outcomes.iter().map(|(_, o)| o.returned).sum();
        let wrong: usize = self.outcomes.iter().map(|(_, o)| o.wrong).sum();
        let cut: usize = self.outcomes.iter().map(|(_, o)| o.cut).sum();
        let unfinished: usize = self.outcomes.iter().map(|(_, o)| o.unfinished).sum();
        let evicted = self.stat("evicted");
        let queued: u64 = self.send_queues.iter().map(|q| q.2).sum();
        let queued_conns: usize = self.send_queues.iter().map(|q| q.1).sum();
        let hz = proc::clock_ticks_per_sec() as f64;
        let mix: Vec<String> = self
            .mix
            .iter()
            .map(|(k, n)| format!("{} {}", k.name(), thousands(*n as f64)))
            .collect();
        let served = |s: &Served| {
            format!(
                "{} req/s, p50 {:.0} us, p99 {:.0} us, {} errors",
                thousands(s.req_per_sec),
                s.p50_us,
                s.p99_us,
                s.errors
            )
        };
        let budget = opts.max_buffered as u64;
        let peak = self.stat("buffered_peak");
        let rows: Vec<Vec<String>> = vec![
            vec![
                "attackers (connected)".into(),
                format!(
                    "{} ({}; {} failed; in {:.1} s): {}",
                    thousands(opts.attackers as f64),
                    thousands(self.connected as f64 + self.count(Kind::Churn) as f64),
                    self.connect_failed,
                    self.open_secs,
                    mix.join(", ")
                ),
            ],
            vec![
                "written by the attackers before reading".into(),
                format!(
                    "{} in {:.1} s",
                    mib(self.written_before_reading),
                    self.push_secs
                ),
            ],
            vec![
                "server RSS: start / attackers idle / peak (VmHWM)".into(),
                format!(
                    "{} / {} / {} kB",
                    thousands(self.rss_before_kib as f64),
                    thousands(self.rss_attacked_kib as f64),
                    thousands(self.rss_peak_kib as f64)
                ),
            ],
            vec![
                "`buffered_peak` (server) / `--max-buffered`".into(),
                format!(
                    "{} / {} ({:.1} %)",
                    thousands(peak as f64),
                    thousands(budget as f64),
                    peak as f64 * 100.0 / budget as f64
                ),
            ],
            vec![
                "`buffered` with the attackers idle".into(),
                thousands(self.stats_idle.get("buffered").copied().unwrap_or(0) as f64),
            ],
            vec![
                "`budget_full` / `backpressure_pauses` / `evicted`".into(),
                format!(
                    "{} / {} / {}",
                    thousands(self.stat("budget_full") as f64),
                    thousands(self.stat("backpressure_pauses") as f64),
                    evicted
                ),
            ],
            vec![
                format!("{WELL_BEHAVED} well-behaved clients alone"),
                served(&self.alone),
            ],
            vec![
                format!("{WELL_BEHAVED} well-behaved clients beside the attackers"),
                served(&self.beside),
            ],
            vec![
                "server CPU, attackers idle".into(),
                format!(
                    "{} ticks in {:.1} s ({:.1} % of a core)",
                    self.idle_ticks,
                    self.idle_secs,
                    self.idle_ticks as f64 / hz / self.idle_secs * 100.0
                ),
            ],
            vec![
                "kernel send queue (Send-Q), per attacker".into(),
                format!(
                    "{} on average ({} over {} connections)",
                    kib(queued / queued_conns.max(1) as u64),
                    mib(queued),
                    thousands(queued_conns as f64)
                ),
            ],
            vec![
                "machine TCP memory (sockstat): before / peak".into(),
                format!("{} / {}", mib(self.tcp_mem_before), mib(self.tcp_mem_peak)),
            ],
            vec![
                "bytes owed to the attackers / returned in order".into(),
                format!(
                    "{} / {}",
                    thousands(owed as f64),
                    thousands(returned as f64)
                ),
            ],
            vec![
                "bytes not returned (0 unless evicted)".into(),
                format!(
                    "{} ({cut} attackers cut short, {evicted} evicted, {unfinished} unfinished \
                     after {:.1} s)",
                    thousands((owed - returned) as f64),
                    self.read_secs
                ),
            ],
            vec!["attackers with a wrong byte".into(), wrong.to_string()],
            vec![
                "churn connections (connect, 1 KiB, reset)".into(),
                thousands(self.churned as f64),
            ],
            vec![
                "server descriptors: start / attacked / after".into(),
                format!(
                    "{} / {} / {}{}",
                    self.fds_before,
                    thousands(self.fds_during as f64),
                    self.fds_after,
                    if self.fds_after == self.fds_before {
                        " (back to start)"
                    } else {
                        " (NOT back to start)"
                    }
                ),
            ],
            vec![
                "server sockets left after the run (state: count, unread bytes)".into(),
                if self.left_behind.is_empty() {
                    "none".into()
                } else {
                    self.left_behind
                        .iter()
                        .map(|(st, n, b)| {
                            format!("{st}: {}, {}", thousands(*n as f64), thousands(*b as f64))
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                },
            ],
            vec!["server warnings logged".into(), self.warnings.to_string()],
            vec!["whole run".into(), format!("{:.0} s", self.total_secs)],
        ];
        let kinds: Vec<Vec<String>> = self
            .outcomes
            .iter()
            .map(|(k, o)| {
                let q = self.send_queues.iter().find(|q| q.0 == *k);
                let per = q.map_or(0, |q| q.2 / q.1.max(1) as u64);
                vec![
                    k.name().into(),
                    thousands(o.attackers as f64),
                    thousands(o.held_back_each as f64),
                    thousands(per as f64),
                    thousands(o.whole as f64),
                    thousands(o.cut as f64),
                    thousands(o.unfinished as f64),
                    thousands(o.wrong as f64),
                ]
            })
            .collect();
        let mut s = String::new();
        let _ = writeln!(s, "# Hostile clients: `--mode {}`\n", opts.mode.name());
        let _ = writeln!(s, "`{}`\n", self.command);
        let _ = writeln!(
            s,
            "Server: `echo-reactor {}` (release). Machine: {}; {}; client \
             RLIMIT_NOFILE {}. {}.\n",
            self.server_args, self.machine, self.placement, self.nofile, self.date
        );
        s.push_str(&markdown_table(&["figure", "value"], &rows));
        s.push('\n');
        s.push_str(&markdown_table(
            &[
                "attacker",
                "count",
                "bytes written before reading, each",
                "Send-Q per connection, bytes",
                "got everything",
                "cut short",
                "unfinished",
                "wrong byte",
            ],
            &kinds,
        ));
        s
    }
}
