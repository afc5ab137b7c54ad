//! The multi-user chat room, the companion of every select() tutorial, on
//! echo-reactor's event loop without a change to the library: a
//! [`Protocol`] whose connections speak to each other through a [`Link`].
//! The walk-through is `docs/adding-a-protocol.md`, part 7.
//!
//! ```text
//! server: * welcome; your nickname?
//! client: ada
//! server: * you are ada; 2 others here
//! others: * ada joined
//! client: hello
//! others: ada: hello
//! (ada leaves)
//! others: * ada left
//! ```
//!
//! One line per message (LF or CRLF). The first line a connection sends is
//! its nickname (1 to [`MAX_NICK`] letters, digits, `-` or `_`, not taken);
//! every line after it goes to every other connection as `nick: line`;
//! `/msg nick text` goes to that member only, as `(sender) text`; `/quit`
//! leaves. A connection hears the room from the moment it connects
//! (one letter to all others, [`Link::send_to_others`], is one copy
//! however many read it; a letter per member would count as many answers). The room (who is here) is the protocol value, shared by every
//! connection; each connection's nickname is its session.
//!
//! A member that does not read is cut off by the loop once its pending
//! output would pass [`echo_reactor::MAIL_SHARE`] (64 KiB), so the others
//! are not held up by it (`protocol/link.rs` in the library).
//!
//! `cargo run --release --example chat -- --listen 127.0.0.1:7009`, then
//! `nc 127.0.0.1 7009` from a few terminals.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Parser;
use echo_reactor::{
    Backend, Config, ConnId, Link, ListenAddr, Protocol, Refusal, Server, Status, Verdict,
};

/// The longest nickname.
pub const MAX_NICK: usize = 32;
/// The longest line a member may send, CR LF included.
pub const MAX_LINE: usize = 512;
/// The longest answer to one line: `nick: ` and the line (or a notice),
/// posted once however many read it.
const MAX_ANSWER: usize = MAX_NICK + 2 + MAX_LINE + 64;

/// The room: every member's nickname, shared by every connection.
#[derive(Default)]
pub struct Room {
    members: HashMap<ConnId, String>,
}

/// What one connection keeps: its nickname, once it has one.
#[derive(Default)]
pub struct Member {
    nick: Option<String>,
}

impl Room {
    fn taken(&self, nick: &str) -> bool {
        self.members.values().any(|n| n == nick)
    }

    /// A connection's first line: it wants to be called `nick`.
    fn join(&mut self, link: &mut Link<'_>, member: &mut Member, nick: &[u8], out: &mut Vec<u8>) {
        let valid = !nick.is_empty()
            && nick.len() <= MAX_NICK
            && (nick.iter()).all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let nick = String::from_utf8_lossy(nick);
        if !valid {
            out.extend_from_slice(b"* a nickname is 1 to 32 letters, digits, - or _; again?\n");
        } else if self.taken(&nick) {
            out.extend_from_slice(b"* that nickname is taken; another?\n");
        } else {
            let others = self.members.len();
            out.extend_from_slice(format!("* you are {nick}; {others} others here\n").as_bytes());
            link.send_to_others(format!("* {nick} joined\n").as_bytes());
            self.members.insert(link.id(), nick.to_string());
            member.nick = Some(nick.into_owned());
        }
    }
}

impl Protocol for Room {
    type Session = Member;

    fn decode(&self, buf: &[u8], scanned: usize) -> Result<Status, Refusal> {
        let from = scanned.min(buf.len());
        match buf[from..].iter().position(|&b| b == b'\n') {
            Some(i) if from + i < MAX_LINE => Ok(Status::Complete(from + i + 1)),
            None if buf.len() < MAX_LINE => Ok(Status::Partial),
            _ => Err(Refusal::LineTooLong),
        }
    }

    fn open(&mut self, _link: &mut Link<'_>, _member: &mut Member, out: &mut Vec<u8>) {
        out.extend_from_slice(b"* welcome; your nickname?\n");
    }

    fn answer_with(
        &mut self,
        link: &mut Link<'_>,
        member: &mut Member,
        msg: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict {
        let line = msg.strip_suffix(b"\n").unwrap_or(msg);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(nick) = member.nick.as_deref() else {
            self.join(link, member, line, out);
            return Verdict::Continue;
        };
        if line == b"/quit" {
            out.extend_from_slice(b"* bye\n");
            return Verdict::Close;
        }
        if let Some(rest) = line.strip_prefix(b"/msg ") {
            // To one member only: `/msg bob see you`.
            let (to, text) = match rest.iter().position(|&b| b == b' ') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            let to = String::from_utf8_lossy(to);
            match self.members.iter().find(|(_, n)| **n == to) {
                Some((&id, _)) => {
                    let mut said = format!("({nick}) ").into_bytes();
                    said.extend_from_slice(text);
                    said.push(b'\n');
                    link.send(id, &said);
                }
                None => out.extend_from_slice(format!("* no {to} here\n").as_bytes()),
            }
            return Verdict::Continue;
        }
        if !line.is_empty() {
            let mut said = Vec::with_capacity(nick.len() + 3 + line.len());
            said.extend_from_slice(nick.as_bytes());
            said.extend_from_slice(b": ");
            said.extend_from_slice(line);
            said.push(b'\n');
            link.send_to_others(&said);
        }
        Verdict::Continue
    }

    fn close(&mut self, link: &mut Link<'_>, member: &mut Member) {
        if let Some(nick) = member.nick.take() {
            self.members.remove(&link.id());
            link.send_to_others(format!("* {nick} left\n").as_bytes());
        }
    }

    fn refuse(&mut self, _why: Refusal, out: &mut Vec<u8>) {
        out.extend_from_slice(b"* line too long; bye\n");
    }

    fn max_message(&self) -> usize {
        MAX_LINE
    }

    fn max_answer(&self) -> usize {
        MAX_ANSWER
    }

    fn amplification(&self) -> usize {
        // The shortest line that says something, `x\n`, becomes
        // `nick: x\n`; a 2-byte nickname line, a welcome and a join notice.
        MAX_ANSWER.div_ceil(2)
    }
}

/// A multi-user chat room on echo-reactor's event loop.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7009")]
    listen: ListenAddr,
    /// The multiplexer: epoll, poll or select.
    #[arg(long, default_value = "epoll")]
    backend: Backend,
}

#[allow(dead_code)] // `tests/chat.rs` includes this file for `Room`
fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = Config {
        listen: vec![args.listen],
        backend: args.backend,
        handle_signals: true,
        ..Config::default()
    };
    let server = match Server::with_protocol(&config, Room::default()) {
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
            println!(
                "served {} connections, cut off {} that did not read",
                report.stats.accepted, report.stats.mail_cutoffs
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
