//! Run by a service manager: sockets passed with `LISTEN_FDS` (socket
//! activation) serve their services, and `NOTIFY_SOCKET` hears `READY=1`
//! once the server accepts, `STOPPING=1` on SIGTERM; alone and with
//! `--workers 2`. The tests play the service manager themselves (a
//! wrapper passes the descriptors, a unix datagram socket listens for the
//! notifications); one runs the unit files of `contrib/systemd/` under
//! `systemd-socket-activate`, which is skipped loudly where that program
//! is missing (and fails under `ECHO_REACTOR_REQUIRE_EXTERNAL`).

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use util::{STEP_TIMEOUT, Server, assert_echo, connect, pattern};

/// The server, run through `sh` so that `LISTEN_PID` can name the very
/// process that `exec`s it (`$$`), with `fds` at descriptors 3, 4, ... as
/// a service manager leaves them, and `env` set.
fn activated(fds: &[RawFd], env: &[(&str, &str)], listen_pid: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    let script = format!("LISTEN_PID={listen_pid} exec \"$0\" \"$@\"");
    cmd.arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(args)
        .env("LISTEN_FDS", fds.len().to_string())
        .env("RUST_LOG", "info");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let fds = fds.to_vec();
    // SAFETY: only fcntl and dup2 between fork and exec (async-signal-
    // safe), on descriptors open in this process and so in the child; the
    // closure allocates nothing (`fds` is moved in, and indexed).
    unsafe {
        cmd.pre_exec(move || {
            // First out of the way (above any target), then in place: a
            // source may sit where another one goes. dup2 clears
            // close-on-exec on the copy it makes.
            let mut high = [0 as RawFd; 8];
            for (i, &fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in high[..fds.len()].iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// A unix datagram socket playing the service manager's notify socket,
/// at a path of its own.
struct Manager {
    socket: UnixDatagram,
    name: String,
    dir: Option<PathBuf>,
}

impl Manager {
    fn at_path(test: &str) -> Manager {
        let dir = std::env::temp_dir().join(format!("er-notify-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager {
            socket,
            name: path.to_str().expect("a UTF-8 path").to_owned(),
            dir: Some(dir),
        }
    }

    /// On an abstract name (`@...` in `NOTIFY_SOCKET`).
    fn abstract_name(test: &str) -> Manager {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("er-notify-{test}-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("an abstract name");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the notify socket");
        Manager {
            socket,
            name: format!("@{name}"),
            dir: None,
        }
    }

    /// Waits for the next notification that holds `line` (a whole line);
    /// returns it.
    fn wait_for(&self, line: &str) -> String {
        self.socket
            .set_read_timeout(Some(STEP_TIMEOUT))
            .expect("timeout");
        let mut buf = [0u8; 4096];
        loop {
            let n = (self.socket.recv(&mut buf))
                .unwrap_or_else(|e| panic!("no notification with {line:?}: {e}"));
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.lines().any(|l| l == line) {
                return text;
            }
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `GET path` on a fresh connection: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let status = (text.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

fn addrs(server: &Server) -> Vec<(String, SocketAddr)> {
    (server.listening.iter())
        .filter_map(|line| {
            let l = util::proc::listening(line)?;
            Some((format!("{} {}", l.scheme, l.tag).trim().to_owned(), l.addr))
        })
        .collect()
}

#[test]
fn passed_sockets_serve_by_name_and_type_and_replace_their_flags() {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let metrics = TcpListener::bind("127.0.0.1:0").expect("metrics");
    let fds = [tcp.as_raw_fd(), udp.as_raw_fd(), metrics.as_raw_fd()];
    let names = [("LISTEN_FDNAMES", "echo-reactor.socket:echo:metrics")];
    // --listen and --metrics are given, and ignored: their services were
    // passed. --daytime was not passed, so it is bound.
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--daytime",
        "127.0.0.1:0",
    ];
    let server = Server::spawn_command(activated(&fds, &names, "$$", &args));
    let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    let metrics_addr = metrics.local_addr().unwrap();
    drop((tcp, udp, metrics));
    let printed = addrs(&server);
    let daytime = printed
        .iter()
        .find(|(kind, _)| kind == "tcp (daytime)")
        .map(|(_, a)| *a);
    assert_eq!(
        printed,
        [
            ("tcp".into(), tcp_addr),
            ("udp".into(), udp_addr),
            ("tcp (daytime)".into(), daytime.expect("daytime bound")),
            ("udp (daytime)".into(), daytime.expect("daytime bound")),
            ("http (metrics)".into(), metrics_addr),
        ],
        "{:?}",
        server.listening
    );
    assert_echo(&mut connect(tcp_addr), &pattern(1, 1000));
    let client = util::udp_client();
    client.send_to(b"datagram", udp_addr).expect("send");
    let mut buf = [0u8; 64];
    let (n, from) = client.recv_from(&mut buf).expect("udp echo");
    assert_eq!((&buf[..n], from), (&b"datagram"[..], udp_addr));
    assert_eq!(http_get(metrics_addr, "/healthz").0, 200);
    server.wait_log("socket activation: serving echo/tcp");
}

#[test]
fn variables_meant_for_another_process_are_ignored() {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
    let passed = tcp.local_addr().unwrap();
    let server = Server::spawn_command(activated(
        &[tcp.as_raw_fd()],
        &[],
        "1",
        &["--listen", "127.0.0.1:0"],
    ));
    assert_ne!(server.addr, passed, "served the socket meant for pid 1");
    assert_echo(&mut connect(server.addr), b"own socket");
    server.wait_log("meant for process 1");
}

#[test]
fn a_bad_name_is_a_clear_error() {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
    let mut child = activated(
        &[tcp.as_raw_fd()],
        &[("LISTEN_FDNAMES", "gopher")],
        "$$",
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().expect("exit");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("passed descriptor 3") && err.contains("\"gopher\""),
        "{err}"
    );
}

/// READY=1 once the server accepts, STOPPING=1 on SIGTERM.
fn ready_then_stopping(manager: Manager, extra: &[&str]) {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
    let notify = [("NOTIFY_SOCKET", manager.name.as_str())];
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut server = Server::spawn_command(activated(&[tcp.as_raw_fd()], &notify, "$$", &args));
    drop(tcp);
    let ready = manager.wait_for("READY=1");
    assert!(ready.contains("STATUS=serving"), "{ready}");
    // Ready means serving: echo answers, and with workers, every one is up.
    assert_echo(&mut connect(server.addr), b"after READY=1");
    let metrics = addrs(&server)
        .into_iter()
        .find(|(kind, _)| kind == "http (metrics)")
        .expect("metrics")
        .1;
    let (status, page) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    if extra.contains(&"--workers") {
        assert!(
            page.contains("echo_reactor_master_workers_up 2\n"),
            "READY=1 before both workers served:\n{page}"
        );
    }
    server.signal(libc::SIGTERM);
    let stopping = manager.wait_for("STOPPING=1");
    assert!(stopping.contains("STATUS="), "{stopping}");
    assert!(server.wait_exit(STEP_TIMEOUT).is_some_and(|s| s.success()));
}

#[test]
fn notify_ready_when_serving_and_stopping_on_sigterm() {
    ready_then_stopping(Manager::at_path("alone"), &[]);
}

#[test]
fn notify_ready_once_every_worker_serves_on_an_abstract_socket() {
    ready_then_stopping(Manager::abstract_name("workers"), &["--workers", "2"]);
}

#[test]
fn workers_share_the_passed_sockets_and_never_see_the_variables() {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
    let addr = tcp.local_addr().unwrap();
    let manager = Manager::at_path("share");
    let server = Server::spawn_command(activated(
        &[tcp.as_raw_fd()],
        &[("NOTIFY_SOCKET", manager.name.as_str())],
        "$$",
        &["--workers", "2"],
    ));
    drop(tcp);
    assert_eq!(server.addr, addr);
    manager.wait_for("READY=1");
    let log = server.wait_log("worker 1 (pid");
    for (slot, pid) in util::workers_serving(&log) {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let names: Vec<String> = (environ.split(|&b| b == 0))
            .filter_map(|kv| {
                Some(String::from_utf8_lossy(kv.split(|&b| b == b'=').next()?).into_owned())
            })
            .collect();
        for variable in [
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
        ] {
            assert!(
                !names.iter().any(|n| n == variable),
                "worker {slot} has {variable}"
            );
        }
    }
    let mut clients: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_echo(c, &pattern(i as u64, 100));
    }
    let log = server.stderr_text();
    // The master took them once; a worker that read the variables would
    // log it (or fail on descriptors it does not have).
    assert_eq!(
        log.matches("socket activation: serving").count(),
        1,
        "{log}"
    );
}

/// `KEY=VALUE` lines of a unit file's section, in order.
fn unit_values(file: &str, key: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/systemd")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    (text.lines())
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

/// Kills the child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The unit files' own settings, under `systemd-socket-activate`: the
/// socket unit's stream socket (on a free port instead of 7007) with its
/// `FileDescriptorName`, and the service's `ExecStart` flags; the service
/// is `Type=notify`, so it must say READY=1, and it echoes on the port.
#[test]
fn the_unit_files_run_under_systemd_socket_activate() {
    const TEST: &str = "the_unit_files_run_under_systemd_socket_activate in tests/systemd.rs";
    if !util::have_program("systemd-socket-activate", TEST) {
        return;
    }
    assert_eq!(unit_values("echo-reactor.service", "Type"), ["notify"]);
    let exec = unit_values("echo-reactor.service", "ExecStart");
    let mut words = exec[0].split_whitespace();
    assert!(words.next().is_some_and(|w| w.ends_with("/echo-reactor")));
    let flags: Vec<&str> = words.collect();
    let stream = unit_values("echo-reactor.socket", "ListenStream");
    assert_eq!(stream, ["127.0.0.1:7007"]);
    let name = unit_values("echo-reactor.socket", "FileDescriptorName");
    let free = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = free.local_addr().unwrap();
    drop(free);
    let manager = Manager::at_path("unit");
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(addr.to_string())
        .arg(format!("--fdname={}", name[0]))
        .arg(format!("-ENOTIFY_SOCKET={}", manager.name))
        .arg("-ERUST_LOG=info")
        .arg(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(&flags)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn systemd-socket-activate");
    let mut child = Reaped(child);
    // systemd-socket-activate listens, and starts the server on the first
    // connection, which the server then accepts from the queue.
    let mut client = connect_when_listening(addr);
    assert_echo(&mut client, &pattern(7, 5000));
    let ready = manager.wait_for("READY=1");
    assert!(ready.contains(&format!("tcp://{addr}")), "{ready}");
    let mut out = String::new();
    let mut stdout = child.0.stdout.take().expect("stdout");
    let mut byte = [0u8; 1];
    while !out.ends_with('\n') && stdout.read(&mut byte).unwrap_or(0) == 1 {
        out.push(byte[0] as char);
    }
    assert_eq!(out.trim(), format!("listening on tcp://{addr}"));
    drop(client);
    // SAFETY: kill(2) on our unreaped child (the server, by now: it was
    // exec'd in systemd-socket-activate's place).
    unsafe {
        libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM);
    }
    manager.wait_for("STOPPING=1");
    assert!(child.0.wait().expect("exit").success());
}

/// Connects once `addr` listens (the program binds it after it starts).
fn connect_when_listening(addr: SocketAddr) -> TcpStream {
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
                return s;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{addr} never listened: {e}"),
        }
    }
}

/// A master's SIGHUP (workers replaced one slot at a time): RELOADING=1,
/// then READY=1 once every slot is served by a new worker.
#[test]
fn sighup_says_reloading_then_ready_again() {
    let manager = Manager::at_path("reload");
    let notify = [("NOTIFY_SOCKET", manager.name.as_str())];
    let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
    let server = Server::spawn_command(activated(
        &[tcp.as_raw_fd()],
        &notify,
        "$$",
        &["--workers", "2"],
    ));
    drop(tcp);
    manager.wait_for("READY=1");
    server.signal(libc::SIGHUP);
    let reloading = manager.wait_for("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    manager.wait_for("READY=1");
    server.wait_log("rolling restart done");
    assert_echo(&mut connect(server.addr), b"after the reload");
}
