//! `--metrics` with `--workers`: the master serves every worker's
//! counters at one address.
//!
//! The master is no event loop, so this is the plainest server that
//! does the job: a thread per listener that accepts, and a thread per
//! connection (at most `--metrics-max-connections`; more are answered
//! [`BUSY_ANSWER`], a 503, as the loop does) that reads request heads with
//! a deadline and answers them with the library's HTTP protocol
//! ([`MetricsHttp`]), the same decoder, statuses and keep-alive rules as
//! a single process's loop. The page is rendered by the master's
//! supervising thread whenever a worker reports (`master.rs`) and shared
//! behind a mutex; answering only copies it.
//!
//! Each worker slot's series carry `worker="SLOT"`, and hold every
//! counter of every worker that has served the slot, the exited ones
//! included, so that neither a restart nor `sum()` loses a count; the
//! master adds its own (`echo_reactor_master_*`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use echo_reactor::{
    BUSY_ANSWER, ListenAddr, MAX_HEAD, MetricsHttp, Page, Protocol, Status, Verdict,
};
use log::{debug, warn};

/// How long a request head may take to arrive (slowloris).
const HEAD_TIMEOUT: Duration = Duration::from_secs(3);

/// `--metrics-max-connections` and `--metrics-idle-timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
}

/// What the master serves, as its supervising thread last rendered it.
#[derive(Debug, Clone, Default)]
pub struct MasterPage {
    /// The exposition text.
    pub text: String,
    /// False once the master is stopping: `/healthz` answers 503.
    pub serving: bool,
}

/// The page, shared between the supervising thread and the servers.
pub type Shared = Arc<Mutex<MasterPage>>;

/// The page a connection answers from: a snapshot of the shared one,
/// taken before each request is answered.
#[derive(Debug, Default)]
struct Snapshot(MasterPage);

impl Page for Snapshot {
    fn render(&self, out: &mut String) {
        out.push_str(&self.0.text);
    }

    fn serving(&self) -> bool {
        self.0.serving
    }
}

/// Binds every address and serves the shared page on each from threads
/// of its own; returns the addresses as bound.
pub fn serve(addrs: &[ListenAddr], page: Shared, limits: Limits) -> io::Result<Vec<SocketAddr>> {
    let mut bound = Vec::new();
    let open = Arc::new(AtomicUsize::new(0));
    for addr in addrs {
        for resolved in addr.resolve()? {
            let listener = TcpListener::bind(resolved)
                .map_err(|e| io::Error::new(e.kind(), format!("{resolved}: {e}")))?;
            bound.push(listener.local_addr()?);
            let (page, open) = (page.clone(), open.clone());
            thread::spawn(move || accept(listener, page, open, limits));
        }
    }
    Ok(bound)
}

fn accept(listener: TcpListener, page: Shared, open: Arc<AtomicUsize>, limits: Limits) {
    let max = limits.max_connections;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= max {
            open.fetch_sub(1, Ordering::SeqCst);
            warn!("master: metrics: {max} connections open, answering 503 to a new one");
            // A fresh socket has room for it; if not, the client sees EOF.
            let _ = stream.write(BUSY_ANSWER);
            continue;
        }
        let (page, open) = (page.clone(), open.clone());
        thread::spawn(move || {
            if let Err(e) = converse(stream, &page, limits.idle_timeout) {
                debug!("master: metrics connection: {e}");
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Serves one connection: requests, answered in order, until the client
/// closes, a verdict closes, a head takes too long, or it idles too long.
fn converse(mut stream: TcpStream, page: &Shared, idle_timeout: Duration) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut http = MetricsHttp::new(Snapshot::default());
    let mut held: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    // When the head under way began: it must be whole within
    // HEAD_TIMEOUT of its first byte, however slowly its bytes come.
    let mut head_started: Option<Instant> = None;
    loop {
        // Answer every whole request held.
        loop {
            match http.decode(&held, 0) {
                Ok(Status::Complete(n)) => {
                    http.page.0 = page.lock().map(|p| p.clone()).unwrap_or_default();
                    let verdict = http.answer(&mut (), &held[..n], &mut out);
                    stream.write_all(&out)?;
                    out.clear();
                    held.drain(..n);
                    head_started = (!held.is_empty()).then(Instant::now);
                    if verdict != Verdict::Continue {
                        return Ok(());
                    }
                }
                Ok(Status::Partial) => break,
                Err(why) => {
                    http.refuse(why, &mut out);
                    stream.write_all(&out)?;
                    return Ok(());
                }
            }
        }
        // Between requests the connection may idle longer.
        let deadline = match head_started {
            Some(at) => at + HEAD_TIMEOUT,
            None => Instant::now() + idle_timeout,
        };
        let n = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            stream.set_read_timeout(Some(left))?;
            match stream.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(());
        }
        head_started.get_or_insert_with(Instant::now);
        held.extend_from_slice(&buf[..n]);
        if held.len() > MAX_HEAD + buf.len() {
            // decode refuses past MAX_HEAD; never hold much more.
            held.truncate(MAX_HEAD + 1);
        }
    }
}
