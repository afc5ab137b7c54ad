//! What the whole machine says, for `cargo bench --bench scale`: kernel
//! memory (`/proc/meminfo`, `/proc/net/sockstat`, `/proc/slabinfo`), the
//! busy share of all CPUs (`/proc/stat`), and about single processes what
//! `support::proc` does not read: their socket descriptors, their
//! descriptor limit, their children. `/proc/PID/stat` is read by
//! `support::proc` alone (`proc::stat`), the parser the tests use too.
//!
//! Kernel figures are machine-wide: whatever else runs on the machine
//! (other people's compilers on a shared VM) moves them too, which is why
//! the bench reads them just before its clients start and again once they
//! are all connected, and reports the slab caches that grew most, so a
//! reader can see that the growth is sockets and not someone's page cache.

#![allow(dead_code)] // the scale bench uses part of it

use std::collections::HashMap;

use crate::support::proc;

/// One slab cache of `/proc/slabinfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlabCache {
    /// Objects in use.
    pub active_objs: u64,
    /// Size of one object, bytes.
    pub objsize: u64,
    /// Memory of the cache's slabs, bytes (`num_slabs` x pages per slab).
    pub bytes: u64,
}

/// Kernel memory at one moment.
#[derive(Debug, Clone, Default)]
pub struct KernelMemory {
    /// Every `/proc/meminfo` field given in kB, by name.
    pub meminfo_kib: HashMap<String, u64>,
    /// `/proc/net/sockstat`, by `TCP_inuse`, `TCP_tw`, `TCP_mem` (pages),
    /// `sockets_used`, ...
    pub sockstat: HashMap<String, u64>,
    /// `/proc/slabinfo` by cache name; empty where it cannot be read (it
    /// needs root).
    pub slabs: HashMap<String, SlabCache>,
}

impl KernelMemory {
    /// Reads all three files now.
    pub fn read() -> KernelMemory {
        KernelMemory {
            meminfo_kib: parse_meminfo(&read_or_empty("/proc/meminfo")),
            sockstat: parse_sockstat(&read_or_empty("/proc/net/sockstat")),
            slabs: parse_slabinfo(&read_or_empty("/proc/slabinfo"), page_size()),
        }
    }

    /// A `/proc/meminfo` field in bytes (0 if absent).
    pub fn meminfo_bytes(&self, key: &str) -> u64 {
        self.meminfo_kib.get(key).copied().unwrap_or(0) * 1024
    }

    /// TCP memory of `/proc/net/sockstat` (`TCP: ... mem PAGES`), bytes:
    /// what the sockets' queues hold.
    pub fn tcp_mem_bytes(&self) -> u64 {
        self.sockstat.get("TCP_mem").copied().unwrap_or(0) * page_size()
    }
}

/// `after - before` of a `/proc/meminfo` field, bytes (negative: it shrank).
pub fn meminfo_delta(before: &KernelMemory, after: &KernelMemory, key: &str) -> i64 {
    after.meminfo_bytes(key) as i64 - before.meminfo_bytes(key) as i64
}

/// How one slab cache grew from one reading to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    /// The cache's name in `/proc/slabinfo`.
    pub name: String,
    /// Objects in use.
    pub objects: i64,
    /// Size of one object, bytes.
    pub objsize: u64,
    /// Objects in use times their size, bytes: what the objects hold,
    /// whether or not the cache needed new slabs for them.
    pub object_bytes: i64,
    /// Memory of the cache's slabs, bytes: only what it had to add (a
    /// cache with room left from earlier objects adds none).
    pub slab_bytes: i64,
}

/// Every slab cache's growth from `before` to `after`.
pub fn slab_growth(before: &KernelMemory, after: &KernelMemory) -> Vec<Growth> {
    after
        .slabs
        .iter()
        .map(|(name, a)| {
            let b = before.slabs.get(name).copied().unwrap_or_default();
            let held = |c: &SlabCache| (c.active_objs * c.objsize) as i64;
            Growth {
                name: name.clone(),
                objects: a.active_objs as i64 - b.active_objs as i64,
                objsize: a.objsize,
                object_bytes: held(a) - held(&b),
                slab_bytes: a.bytes as i64 - b.bytes as i64,
            }
        })
        .collect()
}

/// The caches whose objects grew most, at most `n`, largest first.
pub fn largest_growth(before: &KernelMemory, after: &KernelMemory, n: usize) -> Vec<Growth> {
    let mut grown: Vec<Growth> = slab_growth(before, after)
        .into_iter()
        .filter(|g| g.object_bytes > 0)
        .collect();
    grown.sort_by(|x, y| {
        y.object_bytes
            .cmp(&x.object_bytes)
            .then_with(|| x.name.cmp(&y.name))
    });
    grown.truncate(n);
    grown
}

/// How one slab cache changed from `before` to `after`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheDelta {
    /// Memory, bytes.
    pub bytes: i64,
    /// Objects in use.
    pub objects: i64,
}

/// How the slab cache `name` changed (zero where it is not listed).
pub fn cache_delta(before: &KernelMemory, after: &KernelMemory, name: &str) -> CacheDelta {
    let b = before.slabs.get(name).copied().unwrap_or_default();
    let a = after.slabs.get(name).copied().unwrap_or_default();
    CacheDelta {
        bytes: a.bytes as i64 - b.bytes as i64,
        objects: a.active_objs as i64 - b.active_objs as i64,
    }
}

/// The other slab caches that share `name`'s slabs: SLUB merges caches of
/// like object size and flags, and `/proc/slabinfo` lists such a group
/// under one of its names (`eventpoll_epi` may hold the TCP bind buckets
/// too). Read from `/sys/kernel/slab`, where each merged name is a link to
/// the group; empty where that cannot be read or nothing is merged.
pub fn slab_aliases(name: &str) -> Vec<String> {
    let dir = std::path::Path::new("/sys/kernel/slab");
    let target = |n: &str| std::fs::read_link(dir.join(n)).ok();
    let Some(group) = target(name) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != name && !n.starts_with(':') && target(n).as_ref() == Some(&group))
        .collect();
    names.sort();
    names
}

fn read_or_empty(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The page size, bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).unwrap_or(4096)
}

/// `Name:   123 kB` lines (fields without a unit, such as `HugePages_Total`,
/// are left out).
fn parse_meminfo(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut f = v.split_whitespace();
            let n = f.next()?.parse().ok()?;
            (f.next() == Some("kB")).then(|| (k.trim().to_string(), n))
        })
        .collect()
}

/// `TCP: inuse 4 orphan 0 tw 12 alloc 4 mem 0` lines, as `TCP_inuse`,
/// `TCP_tw`, ... (and `sockets_used`).
fn parse_sockstat(text: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        for pair in words.chunks(2) {
            if let [k, v] = pair
                && let Ok(v) = v.parse()
            {
                out.insert(format!("{proto}_{k}"), v);
            }
        }
    }
    out
}

/// `/proc/slabinfo` 2.1: `name active_objs num_objs objsize objperslab
/// pagesperslab : tunables ... : slabdata active_slabs num_slabs ...`.
fn parse_slabinfo(text: &str, page: u64) -> HashMap<String, SlabCache> {
    text.lines()
        .filter(|l| !l.starts_with("slabinfo") && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let num = |i: usize| f.get(i)?.parse::<u64>().ok();
            let slabdata = f.iter().position(|w| *w == "slabdata")?;
            let num_slabs = num(slabdata + 2)?;
            Some((
                f.first()?.to_string(),
                SlabCache {
                    active_objs: num(1)?,
                    objsize: num(3)?,
                    bytes: num_slabs * num(5)? * page,
                },
            ))
        })
        .collect()
}

/// (busy, total) ticks of all CPUs together (the `cpu` line of
/// `/proc/stat`), every process counted; idle and iowait are not busy.
pub fn machine_ticks() -> (u64, u64) {
    let stat = read_or_empty("/proc/stat");
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return (0, 0);
    }
    let total: u64 = v.iter().sum();
    (total - v[3] - v[4], total)
}

/// Socket descriptors of `pid` (entries of `/proc/PID/fd` that link to
/// `socket:[...]`); `None` once the process is gone.
pub fn socket_count(pid: u32) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(Result::ok)
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
            })
            .count(),
    )
}

/// Open descriptors of `pid`; `None` once the process is gone.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The soft `RLIMIT_NOFILE` of `pid` (`Max open files` of
/// `/proc/PID/limits`).
pub fn nofile_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A number of `/proc/PID/status` (`VmRSS` in KiB, say); `None` once the
/// process is gone.
pub fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User + system CPU ticks of `pid` so far (0 once it is gone).
pub fn cpu_ticks(pid: u32) -> u64 {
    proc::stat(pid).map_or(0, |s| s.cpu.total())
}

/// The state letter (`R`, `S`, `Z`, ...) and process group of `pid`;
/// `None` once it is gone (reaped).
pub fn state_and_group(pid: u32) -> Option<(char, i32)> {
    proc::stat(pid).map(|s| (s.state, s.pgrp))
}

/// When `pid` started, in clock ticks after boot: with the pid, it names
/// one process for good.
pub fn start_time(pid: u32) -> Option<u64> {
    proc::stat(pid).map(|s| s.start_time)
}

/// The children of every thread of `pid` (`/proc/PID/task/*/children`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<u32> = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// A `/proc/sys` value as a number (`fs/file-max`, ...).
pub fn sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
