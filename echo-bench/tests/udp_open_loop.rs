//! `echo-bench --udp --rate`: datagrams on a fixed timetable against
//! stand-in UDP echo servers. Counts are asserted, not times: the schedule
//! decides how many datagrams fall due in a window, whatever the machine's
//! load.

mod bench_support;

use bench_support::{
    assert_clean, bench, report_and_intervals, udp_echo, udp_echo_dropping, udp_echo_pausing,
};
use std::time::Duration;

#[test]
fn udp_open_loop_sends_at_the_rate() {
    let addr = udp_echo().to_string();
    let run = bench(&["--udp", "-c", "2", "-r", "200", "-t", "1", "--json", &addr]);
    let v = assert_clean(&run, 2);
    assert_eq!(v["mode"], "open-loop");
    assert_eq!(v["schedule"]["rate"], 200);
    // 200 datagrams fall due in the 1 s window; a closed loop on loopback
    // would send thousands.
    let sent = v["udp"]["sent"].as_u64().unwrap();
    assert!((150..=250).contains(&sent), "sent {sent}\n{v:#}");
    assert_eq!(v["schedule"]["lag_us"]["count"], sent, "{v:#}");
    assert!(v["messages"].as_u64().unwrap() > 0, "{v:#}");
}

#[test]
fn udp_open_loop_with_a_count_sends_exactly_that_many() {
    let addr = udp_echo().to_string();
    let run = bench(&[
        "--udp", "-c", "3", "-r", "1000", "-n", "150", "--json", &addr,
    ]);
    let v = assert_clean(&run, 3);
    assert_eq!(v["udp"]["sent"], 150, "{v:#}");
    assert_eq!(v["messages"], 150, "{v:#}");
    assert_eq!(v["schedule"]["unsent"], 0, "{v:#}");
}

#[test]
fn udp_open_loop_reports_loss_per_interval() {
    // The stand-in drops every 5th datagram it receives.
    let addr = udp_echo_dropping(Some(5)).to_string();
    let run = bench(&[
        "--udp",
        "-c",
        "2",
        "-r",
        "400",
        "-t",
        "1",
        "--interval",
        "0.5",
        "--json",
        &addr,
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let (v, intervals) = report_and_intervals(&run.stdout);
    let sent = v["udp"]["sent"].as_u64().unwrap();
    let lost = v["udp"]["lost"].as_u64().unwrap();
    // A fifth of the window's datagrams are dropped; those still awaited
    // when the window closes count as outstanding, not lost.
    assert!(
        lost > 0 && lost <= sent / 5 + 2,
        "lost {lost} of {sent}\n{v:#}"
    );
    let per_interval: u64 = (intervals.iter())
        .map(|i| i["udp"]["lost"].as_u64().expect("udp counts per interval"))
        .sum();
    assert_eq!(per_interval, lost, "{intervals:#?}");
}

#[test]
fn udp_open_loop_charges_a_server_stall_to_every_datagram_due_in_it() {
    // One socket, 200 datagrams/s; the server stops for 200 ms (less than
    // the loss timeout) 300 ms after the first datagram. About 40
    // datagrams fall due meanwhile and keep leaving on time; each waits
    // in the server's socket, so a tenth of the window's datagrams is at
    // least ~100 ms late. A client that sent the next datagram only on an
    // echo would see one slow echo.
    let addr = udp_echo_pausing(Duration::from_millis(300), Duration::from_millis(200)).to_string();
    let run = bench(&["--udp", "-c", "1", "-r", "200", "-t", "1", "--json", &addr]);
    let v = assert_clean(&run, 1);
    let p90 = v["latency_us"]["p90"].as_f64().unwrap();
    assert!(
        p90 >= 50_000.0,
        "p90 {p90} us: the stall was not charged to the datagrams due in it\n{v:#}"
    );
}
