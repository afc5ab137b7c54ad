//! `echo-bench` against the real `echo-reactor`, started as a child on
//! `127.0.0.1:0`: the runs the issue asks for complete with zero errors and
//! exact counts. (The reactor has no UDP service yet; UDP runs are covered
//! against a stand-in in `bench_standin.rs`.)

mod bench_support;
mod util;

use bench_support::{assert_clean, bench};
use util::Server;

on_every_backend! {
    fn ping_pong_against_the_reactor() {
        let srv = Server::spawn(&[]);
        let addr = srv.addr.to_string();
        let v = assert_clean(&bench(&["-c", "20", "-n", "20000", "--json", &addr]), 20);
        assert_eq!(v["messages"], 20000);
        assert_eq!(v["latency_us"]["count"], 20000);
    }

    fn pipelined_large_messages_against_the_reactor() {
        // 8 x 16 KiB in flight per connection: past the reactor's 64 KiB high
        // watermark together, so its backpressure path is crossed too.
        let srv = Server::spawn(&[]);
        let addr = srv.addr.to_string();
        let run = bench(&[
            "-c", "4", "-d", "8", "-s", "16384", "-n", "4000", "--json", &addr,
        ]);
        let v = assert_clean(&run, 4);
        assert_eq!(v["messages"], 4000);
    }

    fn open_loop_against_the_reactor() {
        let srv = Server::spawn(&[]);
        let addr = srv.addr.to_string();
        let run = bench(&["-c", "10", "-r", "5000", "-n", "2500", "--json", &addr]);
        let v = assert_clean(&run, 10);
        assert_eq!(v["messages"], 2500);
        assert_eq!(v["schedule"]["lag_us"]["count"], 2500);
    }

    fn many_connections_over_two_threads_against_the_reactor() {
        let srv = Server::spawn(&[]);
        let addr = srv.addr.to_string();
        let run = bench(&[
            "-T", "2", "-c", "1000", "-d", "2", "-n", "20000", "--json", &addr,
        ]);
        let v = assert_clean(&run, 1000);
        assert_eq!(v["messages"], 20000);
    }

    fn a_full_server_shows_as_failed_connections_not_a_hang() {
        // The reactor rejects connections past --max-connections with an
        // error line and a close; those never echo their first message, so
        // they are counted as failed connections, of kind "rejected" (not as
        // corrupted echoes), and the run still completes.
        let srv = Server::spawn(&["--max-connections", "5"]);
        let addr = srv.addr.to_string();
        let run = bench(&["-c", "8", "-n", "100", "--max-errors", "3", "--json", &addr]);
        assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
        let v = run.json();
        assert_eq!(v["connections"]["established"], 5, "{v:#}");
        assert_eq!(v["connections"]["failed"], 3, "{v:#}");
        assert_eq!(v["errors"]["rejected"], 3, "{v:#}");
        assert_eq!(v["errors_total"], 3, "{v:#}");
    }
}
