//! The one read and the one write: every call a connection (or a relay's
//! end, `relay.rs`) makes on its socket for data goes through these two,
//! so that rule 1 (what a read proves about the receive queue) and rule
//! 3's "no progress" (a full send buffer) are each coded once
//! (`connection/mod.rs`, "The readiness rules").
//!
//! Both are always inlined: over the stream trait, the compiler's own
//! choice left three to five more instructions per echo on the two calls
//! (callgrind, 100 x 64 B: 326.5 -> 321.7).

use std::io;

use super::Stream;

/// What one read found.
pub(super) enum Input {
    /// This many bytes, now at the start of the loop's buffer.
    Data(usize),
    /// Nothing for now (`WouldBlock`).
    Empty,
    /// The peer's FIN.
    Eof,
}

/// Whether a read takes the bytes or only looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Take {
    /// `read`: the bytes leave the kernel.
    Read,
    /// `recv(MSG_PEEK)`: the bytes are copied and stay queued (while the
    /// budget is full, `pass_through.rs`).
    Peek,
}

/// One `read` (or, with [`Take::Peek`], one `recv(MSG_PEEK)`) into `buf`,
/// under rule 1: the only place a socket is read (a connection's, and a
/// relay's ends, `relay.rs`), so the rule and its exceptions are coded
/// once. `read_ready` and `short_reads_prove_nothing` are the reader's
/// readiness memo. A peek is judged as the read it stands for: a short
/// one saw the whole receive queue (what the caller then leaves queued,
/// it says so itself, see `pass_through.rs`).
#[inline(always)]
pub(super) fn read_by_rule_1<S: Stream>(
    stream: &mut S,
    buf: &mut [u8],
    how: Take,
    read_ready: &mut bool,
    short_reads_prove_nothing: &mut bool,
) -> io::Result<Input> {
    loop {
        let got = match how {
            Take::Read => stream.read(buf),
            Take::Peek => stream.peek(buf),
        };
        return match got {
            Ok(0) => {
                *read_ready = false;
                Ok(Input::Eof)
            }
            Ok(n) => {
                if n < buf.len() && !*short_reads_prove_nothing {
                    // Rule 1: a short read emptied the receive queue.
                    *read_ready = false;
                }
                Ok(Input::Data(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *read_ready = false;
                *short_reads_prove_nothing = false;
                Ok(Input::Empty)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// One `write`, the only place a socket is written (a connection's, and
/// a relay's ends): how many bytes
/// the socket took, 0 when it is full (`WouldBlock`, rule 3's "no
/// progress"). A socket that takes nothing of non-empty data without
/// saying `WouldBlock` is broken: `WriteZero`, as `write_all` says.
#[inline(always)]
pub(super) fn write_once<S: Stream>(stream: &mut S, data: &[u8]) -> io::Result<usize> {
    loop {
        return match stream.write(data) {
            Ok(0) if !data.is_empty() => Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}
