//! `echo-reactor`: parse flags, start logging (through a sink that never
//! blocks the loop, `log_sink.rs` in the library), bind, print where we
//! listen, run the loop, or (`--workers`) a master of worker processes
//! ([`Supervisor`]). Everything else lives in the library.

#![deny(unreachable_pub)]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use echo_reactor::{Config, Ending, Endpoint, LogSink, Report, Server, Supervisor, WorkerSpec};

mod cli;
use cli::Args;

/// Exit code when a second signal cut the graceful shutdown short
/// (128 + SIGINT, the shell's convention for "interrupted").
const EXIT_FORCED: u8 = 130;

/// How long the log sink may take at exit to finish a line it took part
/// of and to say how many lines it dropped. Long enough for any sink that
/// reads; one that does not must not hold the exit either
/// (`--shutdown-timeout` + 1 s is the promise).
const LOG_DRAIN_AT_EXIT: Duration = Duration::from_millis(500);

/// Blocks this large or larger are mapped on their own, and unmapped (given
/// back to the system) when freed.
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Makes freed output buffers and partial frames go back to the system.
///
/// glibc's malloc maps blocks of 128 KiB or more on their own at first, but
/// raises that threshold (up to 32 MiB) each time such a block is freed,
/// after which large blocks come from the heap and stay with the process
/// when freed: waves of clients that each held most of a 1 MiB frame left
/// hundreds of MB behind after every one of them had gone. Setting the
/// threshold fixes it where it starts. Only the binary does this: an
/// embedder's allocator is the embedder's business.
fn give_freed_memory_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable; it is called before
    // any other thread exists, as glibc asks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

fn main() -> ExitCode {
    // Usage errors exit with code 2 and clap's message.
    let mut args = Args::parse();
    if let Err(msg) = args.check() {
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit();
    }
    let role = match args.worker.take() {
        Some(spec) => Role::Worker(spec),
        None if args.workers > 1 => Role::Master {
            workers: args.workers,
        },
        None => Role::Alone,
    };
    let logs = match start_logging(&role) {
        Ok(logs) => logs,
        Err(e) => {
            eprintln!("error: cannot open stderr for logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    give_freed_memory_back();

    let config = args.into_config();
    let code = match role {
        Role::Alone => serve_alone(&config),
        Role::Master { workers } => supervise(&config, workers),
        Role::Worker(spec) => exit_code(
            echo_reactor::run_worker(config, &spec)
                .map_err(|e| std::io::Error::other(format!("worker {}: {e}", spec.slot()))),
        ),
    };
    logs.drain(LOG_DRAIN_AT_EXIT);
    code
}

/// Installs the logger: `RUST_LOG` filters (info by default), records are
/// formatted as `env_logger` does, and each line goes to stderr through a
/// [`LogSink`], which drops and counts it rather than wait for a full
/// stderr. Returns the sink, to drain at exit.
fn start_logging(role: &Role) -> std::io::Result<LogSink> {
    let logs = env_logger::Env::default().default_filter_or("info");
    let mut logger = env_logger::Builder::from_env(logs);
    let prefix = match role {
        Role::Worker(spec) => name_log_lines(&mut logger, spec.slot()),
        _ => String::new(),
    };
    // The logger cannot see that the sink is a terminal: colours as it
    // would choose them writing to stderr itself.
    if std::env::var_os("RUST_LOG_STYLE").is_none() && std::io::stderr().is_terminal() {
        logger.write_style(env_logger::WriteStyle::Always);
    }
    let sink = LogSink::stderr(&prefix)?;
    logger.target(env_logger::Target::Pipe(Box::new(sink.clone())));
    logger.init();
    Ok(sink)
}

/// What this process is.
enum Role {
    /// The whole server, in this one process (`--workers 1`, the default).
    Alone,
    /// The master of `workers` worker processes.
    Master { workers: usize },
    /// One worker, started by a master, on the sockets it inherited.
    Worker(WorkerSpec),
}

/// Log lines of a worker name it:
/// `[... INFO echo_reactor::reactor] worker 2: ...`. Returns what goes
/// before each message (`worker 2: `), for the lines the log sink writes
/// itself.
fn name_log_lines(logger: &mut env_logger::Builder, slot: usize) -> String {
    logger.format(move |buf, record| {
        writeln!(
            buf,
            "[{} {:<5} {}] worker {slot}: {}",
            buf.timestamp(),
            record.level(),
            record.target(),
            record.args()
        )
    });
    format!("worker {slot}: ")
}

/// A master: bind every slot, say where, start and watch the workers
/// (each is this program again, with the same flags).
fn supervise(config: &Config, workers: usize) -> ExitCode {
    let args = std::env::args_os().skip(1).collect();
    let master = match Supervisor::bind(config, workers, args) {
        Ok(master) => master,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_listening(master.endpoints());
    match master.run() {
        Ok(Ending::Drained) => ExitCode::SUCCESS,
        Ok(Ending::Forced) => ExitCode::from(EXIT_FORCED),
        Ok(Ending::Failed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One process serves everything: bind, say where, run.
fn serve_alone(config: &Config) -> ExitCode {
    let reactor = match Server::bind(config) {
        Ok(reactor) => reactor,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_listening(reactor.endpoints());
    exit_code(reactor.run())
}

/// One line per socket on stdout, flushed, before serving: scripts and
/// tests read the port from here when they asked for port 0.
fn print_listening(endpoints: &[Endpoint]) {
    let mut stdout = std::io::stdout().lock();
    for endpoint in endpoints {
        let _ = writeln!(stdout, "listening on {}", endpoint.url());
    }
    let _ = stdout.flush();
}

/// How a served run ends, as an exit code: 0, 130 after a forced
/// shutdown, 1 if the loop failed.
fn exit_code<E: std::fmt::Display>(run: Result<Report, E>) -> ExitCode {
    match run {
        Ok(report) if report.forced => ExitCode::from(EXIT_FORCED),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
