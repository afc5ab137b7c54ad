//! `echo-reactor`: parse flags, start logging, bind, print where we listen,
//! run the loop. Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use echo_reactor::Server;

mod cli;
use cli::Args;

/// Exit code when a second signal cut the graceful shutdown short
/// (128 + SIGINT, the shell's convention for "interrupted").
const EXIT_FORCED: u8 = 130;

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
    let args = Args::parse();
    if let Err(msg) = args.check() {
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    give_freed_memory_back();

    let config = args.into_config();
    let reactor = match Server::bind(&config) {
        Ok(reactor) => reactor,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One line per listener on stdout, flushed, before serving: scripts and
    // tests read the port from here when they asked for port 0.
    let mut stdout = std::io::stdout().lock();
    for addr in reactor.local_addrs() {
        let _ = writeln!(stdout, "listening on tcp://{addr}");
    }
    for addr in reactor.udp_addrs() {
        let _ = writeln!(stdout, "listening on udp://{addr}");
    }
    for addr in reactor.daytime_addrs() {
        let _ = writeln!(stdout, "listening on tcp://{addr} (daytime)");
        let _ = writeln!(stdout, "listening on udp://{addr} (daytime)");
    }
    let _ = stdout.flush();
    drop(stdout);

    match reactor.run() {
        Ok(report) if report.forced => ExitCode::from(EXIT_FORCED),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
