//! How a `--procs` run is shared out: which child a process is, and the
//! part of the whole run ([`plan()`]) each child works out for itself.

use super::*;

/// Which part of a `--procs` run a child process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildOf {
    /// Its index, `0..procs`.
    pub index: usize,
    /// How many processes the run has.
    pub procs: usize,
}

impl FromStr for ChildOf {
    type Err = String;

    fn from_str(s: &str) -> Result<ChildOf, String> {
        let bad = || format!("{s:?} is not INDEX/PROCS");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.parse().map_err(|_| bad())?;
        let procs: usize = n.parse().map_err(|_| bad())?;
        if index >= procs {
            return Err(bad());
        }
        Ok(ChildOf { index, procs })
    }
}

impl fmt::Display for ChildOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.procs)
    }
}

/// The whole run's split over its processes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// What each process runs, in process order.
    pub parts: Vec<Config>,
    /// Whether each process has source addresses of its own (then the
    /// report's count of addresses is their sum, else their largest).
    pub own_sources: bool,
}

/// Splits the run `total` over `procs` processes; refuses (naming the flag)
/// a split that would leave a process without its share.
pub fn plan(total: &Config, procs: usize) -> Result<Plan, BenchError> {
    total.validate()?;
    let n = procs;
    if n == 0 {
        return refuse("--procs", "must be at least 1".into());
    }
    let c = total.connections;
    if n > c {
        return refuse(
            "--procs",
            format!("{n} processes for {c} connections would leave processes idle"),
        );
    }
    let split = |whole: u64, flag: &'static str, what: &str| -> Result<Vec<u64>, BenchError> {
        if whole < n as u64 {
            return refuse(
                flag,
                format!("{whole} {what} cannot be split over {n} processes (at least 1 each)"),
            );
        }
        Ok((0..n as u64)
            .map(|i| whole / n as u64 + u64::from(i < whole % n as u64))
            .collect())
    };
    let conns = split(c as u64, "--connections", "connection(s)")?;
    if let Ok(limit) = limits::nofile_hard_limit()
        && conns[0] > limits::connections_per_process(limit)
    {
        return refuse(
            "--procs",
            format!(
                "{n} process(es) of up to {} connections each need about {} file descriptors \
                 each, but RLIMIT_NOFILE's hard limit is {limit}: give --procs {} (or --procs auto)",
                conns[0],
                conns[0] + limits::FD_SLACK,
                limits::procs_needed(c, limit)
            ),
        );
    }
    let smallest = conns[n - 1] as usize;
    if total.threads > smallest {
        return refuse(
            "--threads",
            format!(
                "{} threads run in each process, but process {} of {n} has only {smallest} connections",
                total.threads,
                n - 1
            ),
        );
    }
    let rates = total
        .rate
        .map(|r| split(r, "--rate", "msg/s"))
        .transpose()?;
    let connect_rates = total
        .connect_rate
        .map(|r| split(u64::from(r), "--connect-rate", "connections/s"))
        .transpose()?;
    let quotas = match total.stop {
        StopAt::Requests(q) => Some(split(q, "--requests", "message(s)")?),
        StopAt::Duration(_) => None,
    };
    let (ranges, own_sources) = plan_source_ranges(total, &conns)?;
    let parts = (0..n)
        .map(|i| {
            let mut p = total.clone();
            p.connections = conns[i] as usize;
            p.rate = rates.as_ref().map(|r| r[i]);
            // Each part is at most the whole, which is a u32.
            p.connect_rate = connect_rates.as_ref().map(|r| r[i] as u32);
            if let Some(q) = &quotas {
                p.stop = StopAt::Requests(q[i]);
            }
            p.max_connecting = total.max_connecting.div_ceil(n).max(1);
            if let Some(r) = ranges.get(i).copied().flatten() {
                p.source_range = Some(r);
                if total.source_ips.is_some() {
                    // Exactly the addresses given (at most the whole
                    // --source-ips, so it fits); none added later.
                    p.source_ips = Some(r.count as u8);
                }
            }
            p
        })
        .collect::<Vec<Config>>();
    for p in &parts {
        p.validate()?;
    }
    Ok(Plan { parts, own_sources })
}

/// The source addresses of each process (`None`: the process plans its
/// own, sharing the addresses with the others), and whether each has its
/// own.
pub(super) fn plan_source_ranges(
    total: &Config,
    conns: &[u64],
) -> Result<(Vec<Option<SourceRange>>, bool), BenchError> {
    let n = conns.len();
    let loopback_v4 = total.addr.is_ipv4() && total.addr.ip().is_loopback();
    let capacity = limits::ports_per_source();
    let given = total.source_ips.map(usize::from);
    if !loopback_v4 || given.is_some_and(|m| m < n) {
        // Shared addresses: the whole run must fit in their port ranges,
        // as in one process (the same check, with the same message).
        plan_sources(total, limits::connections_per_source(total.addr), capacity)?;
        return Ok((vec![None; n], false));
    }
    let per_source = match given {
        Some(_) => capacity,
        None => limits::connections_per_source(total.addr),
    };
    let needed: Vec<usize> = conns
        .iter()
        .map(|&c| limits::source_ips_needed(c as usize, per_source))
        .collect();
    let counts = match given {
        None => needed,
        Some(m) => {
            // m >= n here: split them evenly, the first processes (which
            // also have the most connections) getting one more.
            let counts: Vec<usize> = (0..n).map(|i| m / n + usize::from(i < m % n)).collect();
            if counts.iter().zip(&needed).any(|(have, need)| have < need) {
                let sum: usize = needed.iter().sum();
                return Err(BenchError::Config(ConfigError {
                    flag: "--source-ips",
                    why: format!(
                        "{} connections over {n} processes need at least {sum} source addresses \
                         ({capacity} local ports each, every process its own), not {m}: give \
                         --source-ips {sum} or more, or leave it out",
                        total.connections
                    ),
                }));
            }
            counts
        }
    };
    let planned: usize = counts.iter().sum();
    let mut first = 0;
    let ranges = counts
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let r = SourceRange {
                first,
                count,
                extra_first: planned + i * crate::tcp::MAX_EXTRA_SOURCES,
            };
            first += count;
            Some(r)
        })
        .collect();
    Ok((ranges, true))
}

/// A refusal of `flag`'s value.
pub(super) fn refuse<T>(flag: &'static str, why: String) -> Result<T, BenchError> {
    Err(BenchError::Config(ConfigError { flag, why }))
}
