//! A protocol that understates its sizes cannot panic the server or break
//! `--max-buffered`: answers past what it declared are dropped, their
//! connections closed, and the overruns counted (`protocol_overruns`).
//! Driven hard, with debug assertions on (the budget asserts that it is
//! never exceeded), on every backend.

mod util;

use std::io::{Read, Write};
use std::thread;

use echo_reactor::{MIN_MAX_BUFFERED, Protocol, Refusal, Status, Verdict};
use util::connect;
use util::inprocess::{self, InProcess};

/// Answers every line with 32 KiB, and says one byte of input answers at
/// most one (the default amplification): a read of 100 empty lines would
/// hold 3.2 MB against a 1 MiB budget.
struct Understated;

const ANSWER: usize = 32 * 1024;

impl Protocol for Understated {
    type Session = ();

    fn decode(&self, buf: &[u8], _: usize) -> Result<Status, Refusal> {
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => Ok(Status::Complete(i + 1)),
            None if buf.len() <= 100 => Ok(Status::Partial),
            None => Err(Refusal::LineTooLong),
        }
    }

    fn answer(&mut self, _: &mut (), _: &[u8], out: &mut Vec<u8>) -> Verdict {
        out.resize(out.len() + ANSWER, b'x');
        Verdict::Continue
    }

    fn max_message(&self) -> usize {
        101
    }

    fn max_answer(&self) -> usize {
        ANSWER
    }
}

const CLIENTS: usize = 40;
const ROUNDS: usize = 20;

on_every_backend! {
    fn a_protocol_that_understates_amplification_is_cut_off_not_trusted() {
        let server = InProcess::with_protocol(
            echo_reactor::Config {
                max_buffered: MIN_MAX_BUFFERED,
                ..inprocess::config()
            },
            Understated,
        );
        let addr = server.addr;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                thread::spawn(move || {
                    // Rounds of 100 empty lines in one write, reading
                    // nothing until the server closes the connection.
                    let mut s = connect(addr);
                    for _ in 0..ROUNDS {
                        if s.write_all(&[b'\n'; 100]).is_err() {
                            break;
                        }
                    }
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                    sink.len()
                })
            })
            .collect();
        let mut received = 0;
        for client in clients {
            received += client.join().expect("a client");
        }
        let stats = server.wait_stats("every connection closed", |s| s.closed == CLIENTS as u64);
        let report = server.stop();
        let stats = report.stats.max(stats);
        assert!(
            stats.protocol_overruns >= 1,
            "the overruns are counted: {stats:?}"
        );
        assert!(
            stats.buffered_peak <= stats.buffered_limit,
            "the budget held: {} of {}",
            stats.buffered_peak,
            stats.buffered_limit
        );
        // Every client got only whole answers, as many as fit its reads.
        assert_eq!(received % ANSWER, 0, "{received}");
    }
}

/// The larger of two snapshots' counters that only grow.
trait Max {
    fn max(self, other: Self) -> Self;
}

impl Max for echo_reactor::Stats {
    fn max(self, other: Self) -> Self {
        echo_reactor::Stats {
            protocol_overruns: self.protocol_overruns.max(other.protocol_overruns),
            buffered_peak: self.buffered_peak.max(other.buffered_peak),
            buffered_limit: self.buffered_limit.max(other.buffered_limit),
            ..self
        }
    }
}
