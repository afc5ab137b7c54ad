//! Command line: listen addresses (IPv4, IPv6, host names, several flags),
//! usage errors (exit 2) and runtime failures (exit 1).

mod util;

use std::collections::HashSet;
use std::net::{IpAddr, TcpListener, ToSocketAddrs};

use util::{Server, assert_echo, connect, run_to_exit};

// --- Usage errors: exit 2, a message, no panic ------------------------------

#[track_caller]
fn assert_usage_error(args: &[&str]) {
    let (status, stdout, stderr) = run_to_exit(args);
    assert_eq!(
        status.code(),
        Some(2),
        "echo-reactor {args:?}: status {status}; stderr:\n{stderr}"
    );
    assert!(
        !stderr.trim().is_empty(),
        "echo-reactor {args:?}: no error message on stderr"
    );
    assert!(
        !stderr.contains("panicked"),
        "echo-reactor {args:?} panicked:\n{stderr}"
    );
    assert!(
        !stdout.contains("listening on"),
        "echo-reactor {args:?} started listening:\n{stdout}"
    );
}

/// One test per bad command line, so they run in parallel and each failure
/// names its case.
macro_rules! usage_errors {
    ($($name:ident: [$($arg:expr),* $(,)?];)*) => {
        $(
            #[test]
            fn $name() {
                assert_usage_error(&[$($arg),*]);
            }
        )*
    };
}

usage_errors! {
    unknown_flag_is_usage_error: ["--listen", "127.0.0.1:0", "--bogus"];
    flag_without_value_is_usage_error: ["--listen", "127.0.0.1:0", "--backlog"];
    non_numeric_backlog_is_usage_error: ["--listen", "127.0.0.1:0", "--backlog", "lots"];
    non_numeric_max_connections_is_usage_error:
        ["--listen", "127.0.0.1:0", "--max-connections", "ten"];
    non_numeric_idle_timeout_is_usage_error:
        ["--listen", "127.0.0.1:0", "--idle-timeout", "soon"];
    non_numeric_shutdown_timeout_is_usage_error:
        ["--listen", "127.0.0.1:0", "--shutdown-timeout", "5s"];
    non_numeric_stats_interval_is_usage_error:
        ["--listen", "127.0.0.1:0", "--stats-interval", "often"];
    listen_address_without_port_is_usage_error: ["--listen", "127.0.0.1"];
    listen_address_with_bad_octet_is_usage_error: ["--listen", "300.1.1.1:80"];
    listen_port_out_of_range_is_usage_error: ["--listen", "127.0.0.1:70000"];
    ipv6_listen_port_out_of_range_is_usage_error: ["--listen", "[::1]:70000"];
}

// --- Runtime failures: exit 1, one `error:` line ---------------------------

#[track_caller]
fn assert_runtime_error(args: &[&str]) {
    let (status, _stdout, stderr) = run_to_exit(args);
    assert_eq!(
        status.code(),
        Some(1),
        "echo-reactor {args:?}: status {status}; stderr:\n{stderr}"
    );
    let error_lines = stderr.lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(
        error_lines, 1,
        "echo-reactor {args:?}: expected one `error:` line; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "echo-reactor {args:?} panicked:\n{stderr}"
    );
}

#[test]
fn port_already_in_use_exits_1_with_error_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_runtime_error(&["--listen", &addr]);
}

#[test]
fn any_listener_failing_exits_1_even_if_others_bound() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_runtime_error(&["--listen", "127.0.0.1:0", "--listen", &addr]);
}

#[test]
fn unresolvable_host_exits_1_with_error_line() {
    assert_runtime_error(&["--listen", "no-such-host.invalid:80"]);
}

on_every_backend! {
    // --- Listen addresses -------------------------------------------------------

    fn ipv6_loopback_listener_serves() {
        if !util::have_ipv6_loopback() {
            eprintln!("skipped: no IPv6 loopback on this machine");
            return;
        }
        let server = Server::spawn(&["--listen", "[::1]:0"]);
        assert!(
            server.listening[0].starts_with("listening on tcp://[::1]:"),
            "{:?}",
            server.listening
        );
        assert!(server.addr.is_ipv6() && server.addr.port() != 0);
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"over IPv6\0");
    }

    fn several_listen_flags_each_print_a_line_and_serve() {
        let mut server = Server::spawn(&["--listen", "127.0.0.1:0", "--listen", "127.0.0.2:0"]);
        assert_eq!(server.listening.len(), 2, "{:?}", server.listening);
        let addrs: Vec<_> = server
            .listening
            .iter()
            .map(|l| util::parse_listening(l))
            .collect();
        assert_eq!(addrs[0].ip().to_string(), "127.0.0.1");
        assert_eq!(addrs[1].ip().to_string(), "127.0.0.2");
        let mut clients: Vec<_> = addrs.iter().map(|a| connect(*a)).collect();
        for (i, c) in clients.iter_mut().enumerate() {
            assert_echo(c, format!("via listener {i}").as_bytes());
        }
        drop(clients);
        let (status, log) = util::stop(&mut server);
        assert!(status.success(), "log:\n{log}");
        let stats = util::counters(&log, "final stats:");
        assert_eq!(util::get(&stats, "accepted"), 2, "{stats:?}");
    }

    fn ipv4_and_ipv6_listeners_together() {
        if !util::have_ipv6_loopback() {
            eprintln!("skipped: no IPv6 loopback on this machine");
            return;
        }
        let server = Server::spawn(&["--listen", "[::1]:0", "--listen", "127.0.0.1:0"]);
        assert_eq!(server.listening.len(), 2, "{:?}", server.listening);
        for line in &server.listening {
            let mut s = connect(util::parse_listening(line));
            assert_echo(&mut s, line.as_bytes());
        }
    }

    fn host_name_listen_binds_every_resolved_address() {
        let resolved: HashSet<IpAddr> = ("localhost", 0)
            .to_socket_addrs()
            .expect("resolve localhost")
            .map(|a| a.ip())
            .collect();
        let server = Server::spawn(&["--listen", "localhost:0"]);
        let bound: HashSet<IpAddr> = server
            .listening
            .iter()
            .map(|l| util::parse_listening(l).ip())
            .collect();
        assert_eq!(bound, resolved, "{:?}", server.listening);
        assert_eq!(server.listening.len(), resolved.len());
        for line in &server.listening {
            let mut s = connect(util::parse_listening(line));
            assert_echo(&mut s, b"by name");
        }
    }

    // --- Valid options ----------------------------------------------------------

    fn all_numeric_options_accept_valid_values_including_decimals() {
        let mut server = Server::spawn(&[
            "--backlog",
            "16",
            "--max-connections",
            "8",
            "--idle-timeout",
            "30.5",
            "--shutdown-timeout",
            "0.25",
            "--stats-interval",
            "0.5",
        ]);
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"configured");
        drop(s);
        let (status, log) = util::stop(&mut server);
        assert_eq!(status.code(), Some(0), "log:\n{log}");
    }
}

// --- Flags from the environment ----------------------------------------------

/// The binary with `env` set and `args`, serving until dropped.
fn spawn_with_env(env: &[(&str, &str)], args: &[&str]) -> Server {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    cmd.args(args).envs(env.iter().copied());
    Server::spawn_command(cmd)
}

/// The first line a line-mode server sends (its banner).
fn banner_at(addr: std::net::SocketAddr) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(connect(addr))
        .read_line(&mut line)
        .expect("a banner");
    line
}

#[test]
fn every_flag_can_come_from_an_echo_reactor_variable() {
    let server = spawn_with_env(
        &[
            ("ECHO_REACTOR_LISTEN", "127.0.0.1:0,127.0.0.1:0"),
            ("ECHO_REACTOR_MODE", "line"),
            ("ECHO_REACTOR_BANNER", "from the environment"),
            ("ECHO_REACTOR_METRICS", "127.0.0.1:0"),
            ("ECHO_REACTOR_TRACE", "false"),
        ],
        &[],
    );
    let tcp: Vec<&String> = (server.listening.iter())
        .filter(|l| l.starts_with("listening on tcp://"))
        .collect();
    assert_eq!(tcp.len(), 2, "{:?}", server.listening);
    assert!(
        server.listening.iter().any(|l| l.ends_with("(metrics)")),
        "{:?}",
        server.listening
    );
    assert_eq!(banner_at(server.addr), "from the environment\n");
}

#[test]
fn the_command_line_wins_over_a_variable() {
    let server = spawn_with_env(
        &[
            ("ECHO_REACTOR_LISTEN", "127.0.0.1:1"),
            ("ECHO_REACTOR_MODE", "line"),
            ("ECHO_REACTOR_BANNER", "from the environment"),
        ],
        &[
            "--listen",
            "127.0.0.1:0",
            "--banner",
            "from the command line",
        ],
    );
    assert_ne!(server.addr.port(), 1);
    assert_eq!(banner_at(server.addr), "from the command line\n");
}

#[test]
fn a_bad_variable_is_a_usage_error_naming_it() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["--listen", "127.0.0.1:0"])
        .env("ECHO_REACTOR_BACKLOG", "lots")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let status = child.wait().expect("exit");
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("lots") && err.contains("--backlog"), "{err}");
}
