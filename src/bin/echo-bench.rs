//! `echo-bench`: the stress client. Parses flags, sets up logging and the
//! progress line, runs the engine in `echo_reactor::bench`, prints the
//! report. Everything that talks to sockets lives in the library.
//!
//! ```text
//! cargo run --release --bin echo-bench -- -c 1000 -d 4 -t 10 127.0.0.1:7007
//! ```

use clap::Parser;
use echo_reactor::bench::{self, Config, Live, StopAt, Transport, config::DEFAULT_MAX_CONNECTING};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How often the progress line is redrawn on a terminal.
const PROGRESS_REDRAW: Duration = Duration::from_millis(250);

/// How often a plain progress line is written when stderr is not a
/// terminal (logs and CI): rarely, so it does not drown the log.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Drive many concurrent connections against an echo service, check every
/// echoed byte, and report throughput, latency percentiles and errors.
#[derive(Parser, Debug)]
#[command(
    name = "echo-bench",
    version,
    after_help = "Latencies are in microseconds, MB/s is payload echoed back (10^6 bytes/s).\n\
                  Exit status: 0 clean run; 1 a mismatch (a corrupted first echo too), or more\n\
                  errors than --max-errors; 2 bad flags, unreachable address or too few\n\
                  descriptors; 130 second Ctrl+C.\n\
                  The first Ctrl+C ends the measurement early and prints the report."
)]
struct Args {
    /// Address of the echo service (host:port).
    #[arg(default_value = "127.0.0.1:7007")]
    addr: String,

    /// Connections to open (all threads together).
    #[arg(short = 'c', long, default_value_t = 50)]
    connections: usize,

    /// New connections per second (default: as fast as the connect window allows).
    #[arg(long, value_name = "N")]
    connect_rate: Option<u32>,

    /// At most this many connections opening at once (not yet answered by
    /// their first echo); keeps the server's listen backlog from overflowing.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTING)]
    max_connecting: usize,

    /// Loopback source addresses to use (127.0.0.1, 127.0.0.2, ...), exactly
    /// N (refused if too few for the connections and the ephemeral port
    /// range); default: as many as the port range requires.
    #[arg(long, value_name = "N")]
    source_ips: Option<u8>,

    /// Message size in bytes.
    #[arg(short = 's', long, default_value_t = 64)]
    size: usize,

    /// Messages in flight per connection (1 = ping-pong).
    #[arg(short = 'd', long, default_value_t = 1)]
    depth: usize,

    /// Seconds to measure (after the warmup).
    #[arg(
        short = 't',
        long,
        value_name = "SECS",
        default_value_t = 10.0,
        conflicts_with = "requests"
    )]
    duration: f64,

    /// Measure this many messages instead of a duration.
    #[arg(short = 'n', long, value_name = "N")]
    requests: Option<u64>,

    /// Seconds of traffic before measuring, not counted.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    warmup: f64,

    /// Open-loop mode: N messages per second in total on a fixed schedule;
    /// latency counts from each message's intended send time.
    #[arg(short = 'r', long, value_name = "N")]
    rate: Option<u64>,

    /// Threads, each with its own poll loop and share of the connections.
    #[arg(short = 'T', long, default_value_t = 1)]
    threads: usize,

    /// Datagram mode against a UDP echo service (loss is counted, not fatal).
    #[arg(long)]
    udp: bool,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,

    /// After the run, keep all connections open and idle for SECS.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    hold: f64,

    /// Seconds a connect may take, or an echo may be overdue (also after
    /// the window, while the last echoes are awaited), before the
    /// connection counts as timed out and is closed.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,

    /// Errors tolerated before the exit code says failure (mismatches never are).
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_errors: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match Args::try_parse() {
        Ok(a) => a,
        // --help and --version arrive as "errors" that print and exit 0.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message runs over several lines (usage, a hint); keep
            // its first line, which names the flag and the problem.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("echo-bench: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("echo-bench: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Exit code after a second Ctrl+C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: i32 = 130;

fn run(args: &Args) -> Result<ExitCode, String> {
    let cfg = config_of(args)?;
    let live = Arc::new(Live::new());
    let done = Arc::new(AtomicBool::new(false));
    // The first Ctrl+C ends the measurement early (the report still
    // prints); a second one exits at once. The handler only sets a flag;
    // the progress thread passes it on to the engine.
    let interrupted = Arc::new(AtomicBool::new(false));
    let sigint = signal_hook::consts::SIGINT;
    let _ = signal_hook::flag::register_conditional_shutdown(
        sigint,
        EXIT_INTERRUPTED,
        Arc::clone(&interrupted),
    );
    let _ = signal_hook::flag::register(sigint, Arc::clone(&interrupted));
    let progress = spawn_progress(
        &cfg,
        Arc::clone(&live),
        Arc::clone(&done),
        Arc::clone(&interrupted),
    );
    let result = bench::run(&cfg, live);
    done.store(true, Ordering::Relaxed);
    if let Some(h) = progress {
        let _ = h.join();
    }
    let report = result.map_err(|e| e.to_string())?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn config_of(args: &Args) -> Result<Config, String> {
    let addr = resolve(&args.addr)?;
    let secs = |flag: &str, v: f64| {
        Duration::try_from_secs_f64(v)
            .map_err(|_| format!("bad option {flag}: {v} is not a number of seconds"))
    };
    let mut cfg = Config::new(addr);
    cfg.connections = args.connections;
    cfg.connect_rate = args.connect_rate;
    cfg.max_connecting = args.max_connecting;
    cfg.source_ips = args.source_ips;
    cfg.size = args.size;
    cfg.depth = args.depth;
    cfg.stop = match args.requests {
        Some(n) => StopAt::Requests(n),
        None => StopAt::Duration(secs("--duration", args.duration)?),
    };
    cfg.warmup = secs("--warmup", args.warmup)?;
    cfg.rate = args.rate;
    cfg.threads = args.threads;
    cfg.transport = if args.udp {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    cfg.hold = secs("--hold", args.hold)?;
    cfg.max_errors = args.max_errors;
    cfg.timeout = secs("--timeout", args.timeout)?;
    cfg.validate().map_err(|e| format!("bad option {e}"))?;
    Ok(cfg)
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("bad address {addr:?}: resolves to nothing"))
}

/// A live line on stderr: redrawn in place on a terminal, a plain line now
/// and then otherwise. Also relays Ctrl+C to the engine.
fn spawn_progress(
    cfg: &Config,
    live: Arc<Live>,
    done: Arc<AtomicBool>,
    interrupted: Arc<AtomicBool>,
) -> Option<thread::JoinHandle<()>> {
    let tty = std::io::stderr().is_terminal();
    let requested = cfg.connections;
    thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            let started = Instant::now();
            let bar = tty.then(|| {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar
            });
            let (mut last_msgs, mut last_t) = (0u64, Instant::now());
            let mut last_plain = Instant::now();
            while !done.load(Ordering::Relaxed) {
                thread::sleep(PROGRESS_REDRAW);
                if interrupted.load(Ordering::Relaxed) && !live.stop_requested() {
                    live.request_stop();
                }
                let msgs = Live::get(&live.messages);
                let now = Instant::now();
                let rate = (msgs - last_msgs) as f64 / (now - last_t).as_secs_f64().max(1e-9);
                (last_msgs, last_t) = (msgs, now);
                let line = format!(
                    "{:.0} req/s  connections {}/{} (failed {})  errors {}",
                    rate,
                    Live::get(&live.established),
                    requested,
                    Live::get(&live.failed),
                    Live::get(&live.errors)
                );
                match &bar {
                    Some(bar) => {
                        bar.set_message(line);
                        bar.tick();
                    }
                    None if now - last_plain >= PLAIN_PROGRESS_EVERY => {
                        last_plain = now;
                        eprintln!("[{:>5.1}s] {line}", (now - started).as_secs_f64());
                    }
                    None => {}
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        })
        .ok()
}
