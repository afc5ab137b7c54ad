//! A key-value store on the reactor, without a change to the library: a
//! [`Protocol`] given to [`Server::with_protocol`]. The walk-through is
//! `docs/adding-a-protocol.md`.
//!
//! ```text
//! SET key value   ->  OK              GET key  ->  VALUE value | NOT_FOUND
//! DEL key         ->  DELETED | NOT_FOUND        INFO     ->  INFO commands=N keys=M
//! ```
//!
//! One command per line (LF or CRLF). The store is shared by every
//! connection (the protocol value itself: the loop is single-threaded, so
//! no lock); each connection counts its own commands (its session). A line
//! longer than [`MAX_LINE`] is refused and the connection closed.
//!
//! `cargo run --release --example kv_store -- --listen 127.0.0.1:7008`

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Parser;
use echo_reactor::{Backend, Config, ListenAddr, Protocol, Refusal, Server, Status, Verdict};

/// The longest key and value accepted.
const MAX_KEY: usize = 250;
const MAX_VALUE: usize = 1024;
/// The longest line: `SET`, key, value, two spaces and CR LF.
const MAX_LINE: usize = 3 + 1 + MAX_KEY + 1 + MAX_VALUE + 2;
/// The longest answer: `VALUE ` and a value, CR LF.
const MAX_ANSWER: usize = 6 + MAX_VALUE + 2;
/// The shortest command that can get the longest answer: `GET k\n`.
const SHORTEST_GET: usize = 6;
/// Keys kept at most; a SET of a new key past it is refused.
const MAX_KEYS: usize = 100_000;

/// The store: what every connection shares.
#[derive(Default)]
struct Store {
    map: HashMap<Vec<u8>, Vec<u8>>,
}

/// What one connection keeps: how many commands it sent.
#[derive(Default)]
struct Session {
    commands: u64,
}

impl Protocol for Store {
    type Session = Session;

    fn decode(&self, buf: &[u8], scanned: usize) -> Result<Status, Refusal> {
        let from = scanned.min(buf.len());
        match buf[from..].iter().position(|&b| b == b'\n') {
            Some(i) if from + i < MAX_LINE => Ok(Status::Complete(from + i + 1)),
            None if buf.len() <= MAX_LINE => Ok(Status::Partial),
            // Past the limit, with or without its end: never stored whole.
            _ => Err(Refusal::Other("line too long")),
        }
    }

    fn answer(&mut self, session: &mut Session, msg: &[u8], out: &mut Vec<u8>) -> Verdict {
        session.commands += 1;
        let line = msg.strip_suffix(b"\n").unwrap_or(msg);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut words = line.splitn(3, |&b| b == b' ');
        let (command, key, value) = (words.next(), words.next(), words.next());
        match (command, key, value) {
            (Some(b"GET"), Some(key), None) => match self.map.get(key) {
                Some(value) => {
                    out.extend_from_slice(b"VALUE ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(b"NOT_FOUND\r\n"),
            },
            (Some(b"SET"), Some(key), Some(value)) => {
                if key.is_empty() || key.len() > MAX_KEY || value.len() > MAX_VALUE {
                    out.extend_from_slice(b"ERR key or value too long\r\n");
                } else if self.map.len() >= MAX_KEYS && !self.map.contains_key(key) {
                    out.extend_from_slice(b"ERR store full\r\n");
                } else {
                    self.map.insert(key.to_vec(), value.to_vec());
                    out.extend_from_slice(b"OK\r\n");
                }
            }
            (Some(b"DEL"), Some(key), None) => match self.map.remove(key) {
                Some(_) => out.extend_from_slice(b"DELETED\r\n"),
                None => out.extend_from_slice(b"NOT_FOUND\r\n"),
            },
            (Some(b"INFO"), None, None) => {
                let info = format!(
                    "INFO commands={} keys={}\r\n",
                    session.commands,
                    self.map.len()
                );
                out.extend_from_slice(info.as_bytes());
            }
            _ => out.extend_from_slice(b"ERR unknown command\r\n"),
        }
        Verdict::Continue
    }

    fn refuse(&mut self, _why: Refusal, out: &mut Vec<u8>) {
        out.extend_from_slice(b"ERR line too long\r\n");
    }

    fn at_eof(&mut self, session: &mut Session, rest: &[u8], out: &mut Vec<u8>) -> Verdict {
        // A last command without its newline is still a command.
        self.answer(session, rest, out);
        Verdict::Close
    }

    fn max_message(&self) -> usize {
        MAX_LINE
    }

    fn max_answer(&self) -> usize {
        MAX_ANSWER
    }

    fn amplification(&self) -> usize {
        // A read full of `GET k` lines, each answered with the longest value.
        MAX_ANSWER.div_ceil(SHORTEST_GET)
    }
}

/// A key-value store (GET/SET/DEL) on echo-reactor's event loop.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7008")]
    listen: ListenAddr,
    /// The multiplexer: epoll, poll or select.
    #[arg(long, default_value = "epoll")]
    backend: Backend,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = Config {
        listen: vec![args.listen],
        backend: args.backend,
        handle_signals: true,
        ..Config::default()
    };
    let server = match Server::with_protocol(&config, Store::default()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in server.local_addrs() {
        println!("listening on tcp://{addr}");
    }
    match server.run() {
        Ok(report) => {
            println!("served {} connections", report.stats.accepted);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
