//! Counters: the [`echo_reactor::Report`] at the end and the periodic
//! counters agree with what clients saw; the binary logs them as a
//! `final stats:` line at exit and, with `--stats-interval`, as periodic
//! `stats:` lines.

mod util;

use std::thread;
use std::time::Duration;

use util::inprocess::{self, InProcess};
use util::{Server, assert_echo, connect, pattern};

on_every_backend! {
    fn final_stats_match_what_clients_saw() {
        let server = InProcess::start(inprocess::config());
        let mut total = 0u64;
        for i in 0..5u64 {
            let data = pattern(i, 1000 * (i as usize + 1));
            let mut s = connect(server.addr);
            assert_echo(&mut s, &data);
            // Close (not half-close: that has its own tests in echo.rs).
            drop(s);
            total += data.len() as u64;
        }
        let report = server.stop();
        let stats = report.stats;
        assert!(!report.forced, "{report:?}");
        assert_eq!(stats.accepted, 5, "{stats:?}");
        assert_eq!(stats.closed, 5, "{stats:?}");
        assert_eq!(stats.active, 0, "{stats:?}");
        assert_eq!(stats.bytes_in, total, "{stats:?}");
        assert_eq!(stats.bytes_out, total, "{stats:?}");
        assert_eq!(stats.rejected, 0, "{stats:?}");
        assert_eq!(stats.timed_out, 0, "{stats:?}");
        assert_eq!(stats.accept_errors, 0, "{stats:?}");
    }

    fn stats_interval_prints_periodic_lines_with_live_counters() {
        let mut server = Server::spawn(&["--stats-interval", "0.2"]);
        let mut a = connect(server.addr);
        assert_echo(&mut a, b"0123456789");
        let mut b = connect(server.addr);
        assert_echo(&mut b, b"abc");
        let seen = util::wait_stats(&server, "two active connections and 13 bytes", |s| {
            util::get(s, "accepted") == 2
                && util::get(s, "active") == 2
                && util::get(s, "bytes_in") == 13
                && util::get(s, "bytes_out") == 13
        });
        assert_eq!(util::get(&seen, "closed"), 0, "{seen:?}");

        drop(a);
        util::wait_stats(&server, "one closed", |s| {
            util::get(s, "active") == 1 && util::get(s, "closed") == 1
        });

        let log = server.stderr_text();
        let periodic = util::periodic_stats(&log);
        assert!(periodic.len() >= 2, "{log}");
        for line in &periodic {
            for key in util::STATS_KEYS {
                util::get(line, key);
            }
        }
        drop(b);
        let (status, log) = util::stop(&mut server);
        assert!(status.success(), "{log}");
        let last = util::counters(&log, "final stats:");
        for key in util::STATS_KEYS {
            util::get(&last, key);
        }
    }

    fn no_periodic_stats_without_stats_interval() {
        let mut server = Server::spawn(&[]);
        let mut s = connect(server.addr);
        assert_echo(&mut s, b"quiet");
        thread::sleep(Duration::from_secs(1));
        drop(s);
        let (status, log) = util::stop(&mut server);
        assert!(status.success());
        assert!(
            util::periodic_stats(&log).is_empty(),
            "periodic stats without --stats-interval:\n{log}"
        );
        util::counters(&log, "final stats:");
    }
}
