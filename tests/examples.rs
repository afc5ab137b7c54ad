//! The non-interactive examples, run as the programs they are: the three
//! servers answer an echo, the proxy relays to a real `echo-reactor`, the
//! clients talk to one, and
//! `framed_upload` stores a file and refuses an escaping name. The
//! interactive `line_client` is driven through a pipe.
//!
//! `cargo test` builds the examples into `target/<profile>/examples/`; when
//! a test is run alone (`cargo test --test examples`) they may be missing,
//! and are built here first.

#[path = "util/example.rs"]
mod example;
mod util;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;

use example::example;
use util::{STEP_TIMEOUT, Server, assert_echo, connect, listening_addr, parse_listening};

/// An example server process; killed on drop.
struct Running {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Running {
    fn spawn(name: &str, args: &[&str]) -> Running {
        let mut child = Command::new(example(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn example");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout after the first line: a server whose stdout
        // pipe closed would fail on its next print.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let first = rx.recv_timeout(STEP_TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("{name} printed no listening line")
        });
        Running {
            child,
            addr: parse_listening(&first),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a client example to completion (bounded by the examples' own
/// timeouts), feeding `stdin`.
fn run(name: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(example(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("wait for example")
}

#[test]
fn the_three_example_servers_echo() {
    for name in ["blocking_echo", "thread_per_connection", "select_loop"] {
        let server = Running::spawn(name, &["--listen", "127.0.0.1:0"]);
        let mut a = connect(server.addr);
        assert_echo(&mut a, b"hello from the first client");
        assert_echo(&mut a, &util::pattern(9, 200_000));
        drop(a);
        let mut b = connect(server.addr);
        assert_echo(&mut b, b"and the next");
    }
}

#[test]
fn the_proxy_example_relays_to_the_reactor_and_reports_a_refused_upstream() {
    let server = Server::spawn(&[]);
    let to = server.addr.to_string();
    let proxy = Running::spawn("proxy", &["--listen", "127.0.0.1:0", "--upstream", &to]);
    let mut a = connect(proxy.addr);
    assert_echo(&mut a, b"through the proxy");
    assert_echo(&mut a, &util::pattern(3, 300_000));
    let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nobody = gone.local_addr().expect("addr").to_string();
    drop(gone);
    let refused = Running::spawn("proxy", &["--listen", "127.0.0.1:0", "--upstream", &nobody]);
    let mut b = connect(refused.addr);
    b.set_read_timeout(Some(STEP_TIMEOUT)).expect("timeout");
    let mut told = String::new();
    std::io::Read::read_to_string(&mut b, &mut told).expect("read to EOF");
    assert_eq!(told, "ERR upstream: connection refused\r\n");
}

#[test]
fn fanout_client_gets_every_reply_from_the_reactor() {
    let server = Server::spawn(&[]);
    let to = server.addr.to_string();
    let out = run("fanout_client", &["--to", &to, "--connections", "200"], b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "200/200 replies ok");
}

#[test]
fn udp_time_reads_the_daytime_service() {
    let server = Server::spawn(&["--daytime", "127.0.0.1:0"]);
    let addr = listening_addr(&server, "udp", "(daytime)").to_string();
    let out = run("udp_time", &["--server", &addr], b"");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("-UTC\r\n"), "{stdout:?}");
}

#[test]
fn line_client_sends_lines_and_q_leaves_after_the_replies() {
    let server = Server::spawn(&[
        "--mode",
        "line",
        "--line-transform",
        "upper",
        "--banner",
        "hi",
    ]);
    let to = server.addr.to_string();
    let out = run("line_client", &["--to", &to], b"one\ntwo\nq\nnot sent\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\nONE\nTWO\n");
}

#[test]
fn framed_upload_stores_files_and_refuses_names_that_escape() {
    let root = std::env::temp_dir().join(format!("echo-reactor-upload-{}", std::process::id()));
    let dir = root.join("inbox");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let source = root.join("source.bin");
    let data = util::pattern(5, 300_000);
    std::fs::write(&source, &data).unwrap();

    let receiver = Running::spawn(
        "framed_upload",
        &[
            "receive",
            "--listen",
            "127.0.0.1:0",
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    let to = receiver.addr.to_string();
    let src = source.to_str().unwrap();

    let out = run(
        "framed_upload",
        &["send", "--to", &to, "--file", src, "--name", "copy.bin"],
        b"",
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(dir.join("copy.bin")).unwrap() == data,
        "stored file differs"
    );

    let out = run(
        "framed_upload",
        &["send", "--to", &to, "--message", "hello"],
        b"",
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for evil in [
        "../escaped.bin",
        "/tmp/absolute.bin",
        "sub/dir.bin",
        "..",
        "",
    ] {
        let out = run(
            "framed_upload",
            &["send", "--to", &to, "--file", src, "--name", evil],
            b"",
        );
        assert!(!out.status.success(), "{evil:?} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("refused"),
            "{evil:?}"
        );
    }
    assert!(!root.join("escaped.bin").exists());
    drop(receiver);
    let _ = std::fs::remove_dir_all(&root);
}
