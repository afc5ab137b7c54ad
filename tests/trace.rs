//! `--trace`: one line per tick saying why the loop woke, how long it
//! slept and why that long, each event, and each connection turn, on every
//! backend; and nothing of it without the flag.

mod util;

use std::thread;
use std::time::Duration;

use util::{Server, assert_echo, connect};

/// The trace lines logged so far.
fn trace_lines(server: &Server) -> Vec<String> {
    server
        .stderr_text()
        .lines()
        .filter(|l| l.contains("echo_reactor::trace]"))
        .map(str::to_string)
        .collect()
}

on_every_backend! {
    fn every_tick_says_why_it_woke_and_what_each_connection_did() {
        let mut server = Server::spawn(&["--trace", "--idle-timeout", "30"]);
        let mut c = connect(server.addr);
        assert_echo(&mut c, b"hello\n");
        drop(c);
        server.wait_log("closed (peer closed, all echoed)");
        let lines = trace_lines(&server);
        let accepted = lines
            .iter()
            .find(|l| l.contains("accepted conn "))
            .unwrap_or_else(|| panic!("no accept traced: {lines:#?}"));
        assert!(accepted.contains("listener 0 [read]"), "{accepted}");
        assert!(
            accepted.contains("slept") && accepted.contains("of up to forever (no timer)"),
            "{accepted}"
        );
        let echoed = lines
            .iter()
            .find(|l| l.contains("read 6, wrote 6"))
            .unwrap_or_else(|| panic!("no echo traced: {lines:#?}"));
        assert!(echoed.contains("[read"), "the event and its hints: {echoed}");
        assert!(echoed.contains("(idle check of conn "), "why it slept that long: {echoed}");
        assert!(echoed.contains("queue empty (a short read)"), "rule 1: {echoed}");
        let ticks: Vec<u64> = lines
            .iter()
            .filter_map(|l| l.split("tick ").nth(1)?.split(':').next()?.parse().ok())
            .collect();
        assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "one line per tick: {ticks:?}");
        let (status, _) = util::stop(&mut server);
        assert!(status.success());
    }

    fn without_the_flag_nothing_is_traced() {
        let mut server = Server::spawn(&[]);
        let mut c = connect(server.addr);
        assert_echo(&mut c, b"quiet\n");
        drop(c);
        thread::sleep(Duration::from_millis(100));
        let (status, log) = util::stop(&mut server);
        assert!(status.success());
        assert!(!log.contains("echo_reactor::trace"), "{log}");
        assert!(!log.contains("tick 1:"), "{log}");
    }
}
