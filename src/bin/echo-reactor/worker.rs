//! A worker: an ordinary single-threaded server on the sockets its master
//! bound for its slot (`master.rs`), reporting to the master through its
//! stdout, which is a pipe the master reads:
//!
//! - `ready` once its loop is set up (the master's rolling restart waits
//!   for it before stopping the worker it replaces);
//! - `stats KEY=VALUE ...` every stats interval (1 s unless
//!   `--stats-interval` says otherwise), so that the master's totals keep
//!   a worker's counters even if it is killed;
//! - `final KEY=VALUE ...` as it exits.
//!
//! Everything else is the single process's behaviour: the same flags, the
//! same signals (SIGTERM from the master drains it, a second ends it), the
//! same exit codes. Its log lines say which worker wrote them.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use echo_reactor::{Config, Inheritance, Server, Sockets};

/// How often a worker reports its counters when `--stats-interval` is not
/// given.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Serves as worker `slot` on the inherited sockets until stopped.
pub fn run(mut config: Config, slot: usize, inherited: &Inheritance) -> ExitCode {
    // SAFETY: `--inherit` is written only by the master (`master.rs`),
    // which leaves exactly these descriptors open across exec, each the
    // kind of socket it is listed as; nothing in this process has opened,
    // closed or claimed them before this point.
    let sockets = match unsafe { Sockets::adopt(inherited) } {
        Ok(sockets) => sockets,
        Err(e) => {
            log::error!("worker {slot}: cannot adopt its sockets: {e}");
            return ExitCode::FAILURE;
        }
    };
    config.stats_interval = config.stats_interval.or(Some(REPORT_INTERVAL));
    let mut server = match Server::with_sockets(&config, sockets) {
        Ok(server) => server,
        Err(e) => {
            log::error!("worker {slot}: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.on_stats(|stats| tell_master(&format!("stats {stats}")));
    tell_master("ready");
    let run = server.run();
    if let Ok(report) = &run {
        tell_master(&format!("final {}", report.stats));
    }
    crate::exit_code(run)
}

/// One line to the master. If the master is gone there is no one to tell:
/// the worker goes on serving (and `PR_SET_PDEATHSIG` stops it).
fn tell_master(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Log lines name the worker: `[... INFO echo_reactor::reactor] worker 2: ...`.
/// Returns what goes before each message (`worker 2: `), for the lines
/// the log sink writes itself.
pub fn name_log_lines(logger: &mut env_logger::Builder, slot: usize) -> String {
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
