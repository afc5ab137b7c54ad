//! HTTP/1.1 for `--metrics` listeners: one more [`Protocol`], beside line
//! and frame, that the connection feeds like any other.
//!
//! A request head is recognised by `httparse`, a pure decoder, so this
//! protocol is tested on every split point like the others. What it
//! answers:
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /metrics` | 200, the Prometheus text exposition (`text/plain; version=0.0.4`) |
//! | `GET /healthz` | 200 `ok` while serving, 503 `draining` while shutting down |
//! | `GET` anything else | 404 |
//! | any other method | 405, `Allow: GET` |
//! | a malformed head | 400, then close |
//! | a head over [`MAX_HEAD`] bytes, or over [`MAX_HEADERS`] headers | 431, then close |
//!
//! Connections are kept alive (HTTP/1.1) unless the client says
//! `Connection: close`, speaks HTTP/1.0, or sends a body (which this
//! server never reads: it answers, then closes), or the server is
//! draining. A head that does not complete in time is the loop's business
//! (a timer, `reactor/mod.rs`), since a protocol reads no clock.

use std::fmt::Write as _;

use crate::protocol::{Protocol, Refusal, Status, Verdict};

/// The longest request head accepted, request line and headers, blank
/// line included.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// The most header lines a request may carry.
pub(super) const MAX_HEADERS: usize = 64;

/// What a metrics client turned away at the connection limit reads
/// (`--metrics-max-connections`) before the server closes: a whole HTTP
/// answer, so that an HTTP client reports a busy server rather than a
/// protocol error. Short enough for one write to a fresh socket.
pub(crate) const BUSY_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 29\r\n\
Connection: close\r\n\
Retry-After: 1\r\n\
\r\n\
too many metrics connections\n";

/// The longest answer the loop's own page may take; the memory budget
/// reserves this much per request (a unit test checks the page with
/// every counter at its largest).
pub(crate) const MAX_ANSWER: usize = 16 * 1024;

/// The shortest request answered with the page, `GET /metrics HTTP/1.1`
/// and a bare LF each: with [`MAX_ANSWER`], the most answer bytes one byte
/// of input can cause.
const SHORTEST_SCRAPE: usize = "GET /metrics HTTP/1.1\n\n".len();

/// The content type of the page: the Prometheus text format.
const EXPOSITION: &str = "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n";

/// The refusal of a malformed head (answered 400).
const MALFORMED: Refusal = Refusal::Other("malformed request");
/// The refusal of a head over the limits (answered 431).
const TOO_LARGE: Refusal = Refusal::Other("request head too large");

/// What `/metrics` and `/healthz` report: the page, and whether the server
/// is serving (or draining).
pub(crate) trait Page: Send + 'static {
    /// Appends the exposition text to `out`.
    fn render(&self, out: &mut String);

    /// False while the server drains: `/healthz` answers 503.
    fn serving(&self) -> bool;

    /// The longest answer (the text [`Page::render`] appends, and the
    /// status line and headers, about 200 bytes) a request can get: the
    /// memory budget reserves this much per request. Default: enough for
    /// the loop's own page at its largest.
    fn max_len(&self) -> usize {
        MAX_ANSWER
    }

    /// A request was answered (errors included). Default: nothing.
    fn answered(&self) {}
}

/// The metrics protocol: HTTP/1.1 answering from a [`Page`].
#[derive(Debug, Default)]
pub(crate) struct MetricsHttp<P> {
    /// What it answers from; its owner refreshes it between requests.
    pub page: P,
}

impl<P: Page> MetricsHttp<P> {
    /// A protocol answering from `page`.
    pub(crate) fn new(page: P) -> MetricsHttp<P> {
        MetricsHttp { page }
    }

    /// Writes a whole response: status line, headers, body.
    fn respond(&self, out: &mut Vec<u8>, status: &str, extra: &str, body: &[u8], close: bool) {
        let kind = if extra == EXPOSITION {
            ""
        } else {
            "Content-Type: text/plain; charset=utf-8\r\n"
        };
        let mut head = String::with_capacity(160);
        let _ = write!(
            head,
            "HTTP/1.1 {status}\r\n{kind}Content-Length: {}\r\n{extra}",
            body.len()
        );
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(body);
    }
}

/// What one request head says that the answer depends on.
struct Head<'a> {
    method: &'a str,
    path: &'a str,
    /// The client may send another request on this connection.
    keep_alive: bool,
    /// A body follows the head (which is never read).
    body: bool,
}

/// Parses a complete head; `None` if it is malformed after all (a
/// `Content-Length` that is no number).
fn head(msg: &[u8]) -> Option<Head<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(msg).ok()?;
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return None;
    };
    let mut keep_alive = version == 1;
    let mut body = false;
    for header in request.headers.iter() {
        let value = std::str::from_utf8(header.value).ok()?.trim();
        if header.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                keep_alive = false;
            }
        } else if header.name.eq_ignore_ascii_case("content-length") {
            body |= value.parse::<u64>().ok()? > 0;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            body = true;
        }
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Some(Head {
        method,
        path,
        keep_alive: keep_alive && !body,
        body,
    })
}

impl<P: Page> Protocol for MetricsHttp<P> {
    type Session = ();

    fn decode(&self, buf: &[u8], _scanned: usize) -> Result<Status, Refusal> {
        // Never look past the limit, so that a head too long is refused
        // the same way however it arrives (a byte at a time, or at once).
        let window = &buf[..buf.len().min(MAX_HEAD + 1)];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Request::new(&mut headers).parse(window) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => Ok(Status::Complete(n)),
            Ok(httparse::Status::Complete(_)) => Err(TOO_LARGE),
            Ok(httparse::Status::Partial) if window.len() > MAX_HEAD => Err(TOO_LARGE),
            Ok(httparse::Status::Partial) => Ok(Status::Partial),
            Err(httparse::Error::TooManyHeaders) => Err(TOO_LARGE),
            Err(_) => Err(MALFORMED),
        }
    }

    fn answer(&mut self, _: &mut (), msg: &[u8], out: &mut Vec<u8>) -> Verdict {
        self.page.answered();
        let Some(head) = head(msg) else {
            self.respond(out, "400 Bad Request", "", b"bad request\n", true);
            return Verdict::Refuse;
        };
        let serving = self.page.serving();
        let close = !head.keep_alive || !serving;
        if head.method != "GET" {
            self.respond(
                out,
                "405 Method Not Allowed",
                "Allow: GET\r\n",
                b"method not allowed\n",
                close,
            );
        } else if head.path == "/metrics" {
            let mut body = String::with_capacity(self.page.max_len() / 2);
            self.page.render(&mut body);
            self.respond(out, "200 OK", EXPOSITION, body.as_bytes(), close);
        } else if head.path == "/healthz" {
            if serving {
                self.respond(out, "200 OK", "", b"ok\n", close);
            } else {
                self.respond(out, "503 Service Unavailable", "", b"draining\n", close);
            }
        } else {
            self.respond(out, "404 Not Found", "", b"not found\n", close);
        }
        if head.body {
            // The body is never read: what follows the head is not a
            // request, so the connection ends here.
            Verdict::Close
        } else if close {
            Verdict::Close
        } else {
            Verdict::Continue
        }
    }

    fn refuse(&mut self, why: Refusal, out: &mut Vec<u8>) {
        self.page.answered();
        if why == TOO_LARGE {
            let body = b"request header fields too large\n";
            self.respond(out, "431 Request Header Fields Too Large", "", body, true);
        } else {
            self.respond(out, "400 Bad Request", "", b"bad request\n", true);
        }
    }

    /// Half a head and then FIN: nothing to answer.
    fn at_eof(&mut self, _: &mut (), _rest: &[u8], _out: &mut Vec<u8>) -> Verdict {
        Verdict::Close
    }

    fn max_message(&self) -> usize {
        MAX_HEAD
    }

    fn max_answer(&self) -> usize {
        self.page.max_len()
    }

    fn amplification(&self) -> usize {
        self.max_answer().div_ceil(SHORTEST_SCRAPE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Handler, Partial};

    /// A page with fixed text.
    #[derive(Debug, Default)]
    struct Fixed {
        draining: bool,
    }

    impl Page for Fixed {
        fn render(&self, out: &mut String) {
            out.push_str("# TYPE up gauge\nup 1\n");
        }
        fn serving(&self) -> bool {
            !self.draining
        }
    }

    /// Feeds `input` cut at `cuts`; what was answered, and the verdict.
    fn run(input: &[u8], cuts: &[usize], draining: bool) -> (String, Verdict) {
        let mut http = Handler::Protocol(Box::new(MetricsHttp::new(Fixed { draining })));
        let mut partial = Partial::new();
        let mut out = Vec::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain([input.len()]) {
            let end = end.clamp(start, input.len());
            let verdict = http.feed(&mut partial, &input[start..end], &mut out);
            start = end;
            if verdict != Verdict::Continue {
                return (String::from_utf8_lossy(&out).into_owned(), verdict);
            }
        }
        (
            String::from_utf8_lossy(&out).into_owned(),
            Verdict::Continue,
        )
    }

    /// The same answer wherever the input is split, and a byte at a time.
    #[track_caller]
    fn split_invariant(input: &[u8]) -> (String, Verdict) {
        let whole = run(input, &[], false);
        for cut in 0..=input.len() {
            assert_eq!(run(input, &[cut], false), whole, "split at {cut}");
        }
        let every: Vec<usize> = (0..input.len()).collect();
        assert_eq!(run(input, &every, false), whole, "a byte at a time");
        whole
    }

    fn statuses(out: &str) -> Vec<&str> {
        out.match_indices("HTTP/1.1 ")
            .map(|(i, _)| &out[i + 9..i + 12])
            .collect()
    }

    #[test]
    fn each_request_gets_its_status_on_every_split() {
        let cases: &[(&[u8], &[&str], Verdict)] = &[
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &["200"], Verdict::Continue),
            (b"GET /metrics?x=1 HTTP/1.1\n\n", &["200"], Verdict::Continue),
            (b"GET /healthz HTTP/1.1\r\n\r\n", &["200"], Verdict::Continue),
            (b"GET /nope HTTP/1.1\r\n\r\n", &["404"], Verdict::Continue),
            (b"POST /metrics HTTP/1.1\r\n\r\n", &["405"], Verdict::Continue),
            (b"GET /metrics HTTP/1.0\r\n\r\n", &["200"], Verdict::Close),
            (b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n", &["200"], Verdict::Close),
            (b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", &["405"], Verdict::Close),
            (b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", &["400"], Verdict::Refuse),
            (b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n", &["400"], Verdict::Refuse),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01", &["400"], Verdict::Refuse),
            (b"GET /metrics HTTP/9.9\r\n\r\n", &["400"], Verdict::Refuse),
            (
                b"GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nPUT / HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n",
                &["200", "404", "405", "200"],
                Verdict::Continue,
            ),
            (
                b"GET /healthz HTTP/1.1\r\n\r\nGARBAGE\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
                &["200", "400"],
                Verdict::Refuse,
            ),
        ];
        for (input, want, verdict) in cases {
            let (out, got) = split_invariant(input);
            assert_eq!(
                statuses(&out),
                *want,
                "{:?}: {out}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(got, *verdict, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn a_head_over_the_limit_is_431_however_it_arrives() {
        let mut huge = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
        huge.resize(MAX_HEAD + 100, b'a');
        huge.extend_from_slice(b"\r\n\r\n");
        let whole = run(&huge, &[], false);
        assert_eq!(statuses(&whole.0), ["431"]);
        assert_eq!(whole.1, Verdict::Refuse);
        for cut in [1, 100, MAX_HEAD - 1, MAX_HEAD, MAX_HEAD + 1, MAX_HEAD + 50] {
            assert_eq!(run(&huge, &[cut], false), whole, "split at {cut}");
        }
        let every: Vec<usize> = (0..huge.len()).collect();
        assert_eq!(run(&huge, &every, false), whole);
        // Too many headers, within the size.
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(statuses(&split_invariant(&many).0), ["431"]);
    }

    #[test]
    fn the_busy_answer_is_a_whole_503_with_its_length() {
        let text = std::str::from_utf8(BUSY_ANSWER).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
    }

    #[test]
    fn health_says_draining_and_closes() {
        let (out, verdict) = run(b"GET /healthz HTTP/1.1\r\n\r\n", &[], true);
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert_eq!(verdict, Verdict::Close);
    }

    #[test]
    fn the_page_is_served_with_its_length_and_type() {
        let (out, _) = run(b"GET /metrics HTTP/1.1\r\n\r\n", &[], false);
        let (head, body) = out.split_once("\r\n\r\n").expect("a head");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
        assert_eq!(body, "# TYPE up gauge\nup 1\n");
    }
}
