//! The `process_*` series every Prometheus dashboard starts with, as the
//! official clients write them (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`),
//! and `echo_reactor_build_info{version="..."} 1`.
//!
//! They describe the process that serves the page, read from Linux's
//! `/proc/self` when a scrape asks (never on the echo path): `stat` (CPU
//! time, start time), `statm` (memory), the entries of `fd`, `limits`
//! (`Max open files`), and `btime` in `/proc/stat` (when the machine
//! booted, which the start time counts from). These are files of the
//! kernel's making: reading them does not wait on a disk. Listing `fd` is
//! the dearest, a few microseconds per open descriptor, paid once per
//! scrape. A series whose file cannot be read (not Linux, a `/proc`
//! mounted without them) is left out, not written as zero.

use std::fs;

use super::Exposition;

/// What `/proc/self` says of this process.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Process {
    /// User and system CPU time, in seconds.
    cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    resident_bytes: Option<f64>,
    /// Virtual memory size, in bytes.
    virtual_bytes: Option<f64>,
    open_fds: Option<f64>,
    /// The soft `RLIMIT_NOFILE`; `None` when unlimited or unknown.
    max_fds: Option<f64>,
    /// When the process started, in seconds since the Unix epoch.
    start_time_seconds: Option<f64>,
}

impl Process {
    /// This process, now.
    pub(crate) fn read() -> Process {
        let text = |path: &str| fs::read_to_string(path).ok();
        let ticks = sysconf(libc::_SC_CLK_TCK);
        let page = sysconf(libc::_SC_PAGESIZE);
        let stat = text("/proc/self/stat").and_then(|s| parse_stat(&s));
        let statm = text("/proc/self/statm").and_then(|s| parse_statm(&s));
        let btime = text("/proc/stat").and_then(|s| parse_btime(&s));
        Process {
            cpu_seconds: stat.zip(ticks).map(|(s, t)| (s.utime + s.stime) as f64 / t),
            resident_bytes: statm.zip(page).map(|((_, rss), p)| rss as f64 * p),
            virtual_bytes: statm.zip(page).map(|((size, _), p)| size as f64 * p),
            open_fds: (fs::read_dir("/proc/self/fd").ok()).map(|dir| dir.count() as f64),
            max_fds: text("/proc/self/limits").and_then(|s| parse_max_fds(&s)),
            start_time_seconds: (stat.zip(ticks).zip(btime))
                .map(|((s, t), boot)| boot as f64 + s.starttime as f64 / t),
        }
    }

    /// The `process_*` families, unlabelled (one process per page).
    pub(crate) fn write(&self, page: &mut Exposition) {
        let families: [(&str, &str, &str, Option<f64>); 6] = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                "counter",
                self.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                "gauge",
                self.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                "gauge",
                self.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                "gauge",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                "gauge",
                self.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
                self.start_time_seconds,
            ),
        ];
        for (name, help, kind, value) in families {
            if let Some(value) = value {
                page.family(name, help, kind, &[("", value)]);
            }
        }
    }
}

/// `echo_reactor_build_info{version="..."} 1`: which build serves.
pub(crate) fn write_build_info(page: &mut Exposition) {
    let version = concat!("version=\"", env!("CARGO_PKG_VERSION"), "\"");
    page.family(
        "echo_reactor_build_info",
        "Always 1; the labels say which build of echo-reactor serves.",
        "gauge",
        &[(version, 1.0)],
    );
}

/// The fields of `/proc/self/stat` used here, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    /// Since the machine booted.
    starttime: u64,
}

/// `/proc/self/stat`: `pid (comm) state ...`; the name may hold spaces
/// and parentheses, so fields are counted from the last `)`. After it,
/// field 3 (`state`) comes first: utime is field 14, stime 15, starttime
/// 22 (`proc(5)`).
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// `/proc/self/statm`: size and resident, in pages.
fn parse_statm(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// `/proc/stat`'s `btime` line: when the machine booted, in seconds since
/// the epoch.
fn parse_btime(text: &str) -> Option<u64> {
    (text.lines())
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|n| n.trim().parse().ok())
}

/// `/proc/self/limits`' `Max open files` line, its soft limit.
fn parse_max_fds(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse::<u64>().ok().map(|n| n as f64)
}

/// A `sysconf` value, if the system has one.
fn sysconf(name: libc::c_int) -> Option<f64> {
    // SAFETY: sysconf only reads a system constant.
    let value = unsafe { libc::sysconf(name) };
    (value > 0).then_some(value as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 125 0 0 20 0 1 0 98765 1000000 300 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 250,
                stime: 125,
                starttime: 98765
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn statm_btime_and_limits_are_read() {
        assert_eq!(parse_statm("2048 300 100 1 0 500 0\n"), Some((2048, 300)));
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1765000000\nprocesses 9\n"),
            Some(1_765_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(20000.0));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
    }

    #[test]
    fn this_process_is_described() {
        let me = Process::read();
        let resident = me.resident_bytes.expect("resident memory");
        assert!(resident > 0.0);
        assert!(me.open_fds.expect("open descriptors") >= 3.0);
        assert!(me.max_fds.expect("a descriptor limit") >= 3.0);
        let started = me.start_time_seconds.expect("a start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started before now, and this year (boot time plus ticks).
        assert!(started <= now + 1.0 && started > now - 366.0 * 86400.0);
        let mut page = Exposition::new();
        me.write(&mut page);
        write_build_info(&mut page);
        let text = page.finish();
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text.contains(concat!(
            "echo_reactor_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1\n"
        )));
    }
}
