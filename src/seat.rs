//! A worker's seat in memory its master shares with every worker: what
//! makes one server of several processes where a promise is about the
//! whole server (`--workers`, `supervisor/`).
//!
//! The master creates one region (`memfd_create`, sized once, never
//! resized) before it starts any worker; every worker maps it from the
//! descriptor it inherits. Each running worker owns a *seat*: the master
//! hands out seats (a slot's old and new worker hold two during a rolling
//! restart) and takes one back when its worker has exited. Three things
//! live there, each written by one side and read by the other:
//!
//! | part | written by | read by | for |
//! | --- | --- | --- | --- |
//! | a heartbeat per seat | its worker's loop, every [`HEARTBEAT_EVERY`] | the master | finding a worker whose loop stopped turning |
//! | a connection count per host bucket | every worker (atomic add, bounded) | every worker | `--max-connections-per-ip` across workers |
//! | a ledger per seat: the bucket each connection was counted in, by slab key | its worker | the master, once the worker is gone | giving back a dead worker's counts |
//!
//! **Counting hosts across processes.** A host's count must be one number
//! every worker sees, raised only if it stays within the limit: a
//! compare-and-swap on a 32-bit counter does exactly that, without a lock
//! (a lock held by a stopped worker would stop every other one). The
//! counters are an array indexed by a keyed hash of the host (SipHash-1-3
//! with a key the master draws at start, so no client can aim at another
//! host's counter), not a hash table: nothing to insert or delete, so
//! nothing for a stopped or killed process to leave half-done. Two hosts
//! whose hashes meet share one counter: the limit then holds for the two
//! together, so a host can be refused below its limit (the chance is about
//! the number of hosts connected over the number of counters, which is
//! sized at four per connection the workers can hold together), but never
//! admitted above it.
//!
//! **A worker that dies** holds counts in that array. Its ledger says which
//! counter each of its connections raised; once the master has reaped it
//! (its connections are closed by then), [`Region::reclaim`] lowers each
//! one and clears the ledger before the seat is given to anyone else. A
//! worker killed in the one instruction between raising a counter and
//! writing its ledger entry leaves that one count behind for good (its
//! host can then hold one connection fewer); the other order would
//! instead give back a count never taken, letting a host past its limit.
//!
//! **Time** is `CLOCK_MONOTONIC` in milliseconds, one clock for every
//! process on the machine.

use std::fs::File;
use std::hash::Hasher;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How often a worker's loop proves it is turning.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);

/// Identifies the layout below; a worker refuses a region of another
/// (a binary of another version, in a rolling upgrade).
const MAGIC: u64 = 0x6563_686f_0001_0001;

/// Header words: magic, seats, counters, ledger length, two key words.
const HEADER_WORDS: usize = 6;

/// A ledger entry for a slab key that holds no counted connection.
const EMPTY: u32 = 0;

/// The fewest and most host counters a region has.
const MIN_COUNTERS: usize = 1 << 16;
const MAX_COUNTERS: usize = 1 << 22;

/// A worker's seat in its master's shared memory, as its loop holds it.
#[derive(Debug, Clone)]
pub(crate) struct Seat {
    pub(crate) region: Arc<Region>,
    pub(crate) index: usize,
}

impl Seat {
    /// The loop is turning.
    pub(crate) fn beat(&self) {
        self.region.beat(self.index);
    }
}

/// The shared region, mapped.
#[derive(Debug)]
pub(crate) struct Region {
    memory: NonNull<u8>,
    bytes: usize,
    seats: usize,
    counters: usize,
    ledger_len: usize,
    key: (u64, u64),
    fd: OwnedFd,
}

// SAFETY: every access to the mapping goes through atomics (the header is
// written once, before the region is shared, and only read afterwards), so
// the region may be used from any thread.
unsafe impl Send for Region {}
// SAFETY: as above: shared access is atomic access.
unsafe impl Sync for Region {}

impl Region {
    /// A new region for `seats` seats whose workers each hold at most
    /// `ledger_len` connections (slab keys below it).
    pub(crate) fn create(seats: usize, ledger_len: usize) -> io::Result<Region> {
        let counters = (4 * seats * ledger_len / 2)
            .next_power_of_two()
            .clamp(MIN_COUNTERS, MAX_COUNTERS);
        let bytes = layout_bytes(seats, counters, ledger_len);
        let name = c"echo-reactor-shared";
        // SAFETY: memfd_create reads the NUL-terminated name and returns a
        // new descriptor or -1.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        File::from(fd.try_clone()?).set_len(bytes as u64)?;
        let key = random_key()?;
        let mut region = Region::map(fd, bytes)?;
        let header = region.header();
        let words = [
            MAGIC,
            seats as u64,
            counters as u64,
            ledger_len as u64,
            key.0,
            key.1,
        ];
        for (slot, word) in header.iter().zip(words) {
            slot.store(word, Ordering::Relaxed);
        }
        (region.seats, region.counters, region.ledger_len) = (seats, counters, ledger_len);
        region.key = key;
        Ok(region)
    }

    /// Maps the region a master created, from a descriptor this process
    /// inherited.
    ///
    /// # Safety
    ///
    /// `fd` must be open, owned by nothing else in this process, and be
    /// the master's region (anything else is refused if it is too small
    /// or lacks the header, but a file of the right shape would be
    /// mapped).
    pub(crate) unsafe fn attach(fd: RawFd) -> io::Result<Region> {
        // SAFETY: the caller promises `fd` is open and ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let bytes = usize::try_from(File::from(fd.try_clone()?).metadata()?.len())
            .map_err(|_| invalid("shared region too large"))?;
        if bytes < HEADER_WORDS * 8 {
            return Err(invalid("shared region too small"));
        }
        let mut region = Region::map(fd, bytes)?;
        let header: Vec<u64> = (region.header().iter())
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        if header[0] != MAGIC {
            return Err(invalid(
                "shared region of another layout (another version?)",
            ));
        }
        let (seats, counters, ledger_len) =
            (header[1] as usize, header[2] as usize, header[3] as usize);
        if layout_bytes(seats, counters, ledger_len) != bytes || !counters.is_power_of_two() {
            return Err(invalid("shared region's header and size disagree"));
        }
        (region.seats, region.counters, region.ledger_len) = (seats, counters, ledger_len);
        region.key = (header[4], header[5]);
        Ok(region)
    }

    fn map(fd: OwnedFd, bytes: usize) -> io::Result<Region> {
        // SAFETY: a fresh shared mapping of `bytes` bytes of `fd`, which
        // is at least that long; the kernel picks the address.
        let memory = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if memory == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let memory = NonNull::new(memory.cast::<u8>()).ok_or_else(|| invalid("mmap gave null"))?;
        Ok(Region {
            memory,
            bytes,
            seats: 0,
            counters: 0,
            ledger_len: 0,
            key: (0, 0),
            fd,
        })
    }

    /// The descriptor a worker inherits.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// How many seats there are.
    pub(crate) fn seats(&self) -> usize {
        self.seats
    }

    /// `n` 64-bit words from byte `offset`, as atomics.
    fn words(&self, offset: usize, n: usize) -> &[AtomicU64] {
        assert!(offset.is_multiple_of(8) && offset + 8 * n <= self.bytes);
        // SAFETY: in bounds (checked above) of a live mapping aligned to a
        // page; AtomicU64 has the size and alignment of u64, and every
        // process touches these words only atomically.
        unsafe { std::slice::from_raw_parts(self.memory.as_ptr().add(offset).cast(), n) }
    }

    /// `n` 32-bit words from byte `offset`, as atomics.
    fn words32(&self, offset: usize, n: usize) -> &[AtomicU32] {
        assert!(offset.is_multiple_of(4) && offset + 4 * n <= self.bytes);
        // SAFETY: as in `words`, for AtomicU32.
        unsafe { std::slice::from_raw_parts(self.memory.as_ptr().add(offset).cast(), n) }
    }

    fn header(&self) -> &[AtomicU64] {
        self.words(0, HEADER_WORDS)
    }

    fn heartbeats(&self) -> &[AtomicU64] {
        self.words(HEADER_WORDS * 8, self.seats)
    }

    fn counts(&self) -> &[AtomicU32] {
        self.words32((HEADER_WORDS + self.seats) * 8, self.counters)
    }

    fn ledger(&self, seat: usize) -> &[AtomicU32] {
        let start = (HEADER_WORDS + self.seats) * 8 + 4 * (self.counters + seat * self.ledger_len);
        self.words32(start, self.ledger_len)
    }

    /// Seat `seat`'s worker is alive now.
    pub(crate) fn beat(&self, seat: usize) {
        if let Some(beat) = self.heartbeats().get(seat) {
            beat.store(monotonic_ms(), Ordering::Relaxed);
        }
    }

    /// When seat `seat`'s worker last proved alive ([`monotonic_ms`]),
    /// 0 if never.
    pub(crate) fn last_beat(&self, seat: usize) -> u64 {
        (self.heartbeats().get(seat)).map_or(0, |b| b.load(Ordering::Relaxed))
    }

    /// Forgets seat `seat`'s heartbeat, for its next worker.
    pub(crate) fn clear_beat(&self, seat: usize) {
        if let Some(beat) = self.heartbeats().get(seat) {
            beat.store(0, Ordering::Relaxed);
        }
    }

    /// The counter `host` is counted in.
    fn bucket(&self, host: u128) -> usize {
        let mut hash = siphasher::sip::SipHasher13::new_with_keys(self.key.0, self.key.1);
        hash.write_u128(host);
        (hash.finish() as usize) & (self.counters - 1)
    }

    /// Counts a connection from `host` (a host as `per_ip.rs` numbers
    /// them) at slab `key` of seat `seat` if the host holds fewer than
    /// `limit`; false (nothing counted) if not, or if `key` is past the
    /// ledger.
    pub(crate) fn try_admit(&self, seat: usize, key: usize, host: u128, limit: u32) -> bool {
        let Some(entry) = self.ledger(seat).get(key) else {
            return false;
        };
        let bucket = self.bucket(host);
        let admitted = self.counts()[bucket]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            entry.store(bucket as u32 + 1, Ordering::Release);
        }
        admitted
    }

    /// Uncounts the connection at slab `key` of seat `seat`, if it was
    /// counted.
    pub(crate) fn release(&self, seat: usize, key: usize) {
        if let Some(entry) = self.ledger(seat).get(key) {
            self.give_back(entry);
        }
    }

    /// Clears a ledger entry and lowers the counter it names, if any;
    /// whether it named one.
    fn give_back(&self, entry: &AtomicU32) -> bool {
        let held = entry.swap(EMPTY, Ordering::AcqRel);
        let bucket = (held as usize).checked_sub(1);
        if let Some(bucket) = bucket {
            decrement(&self.counts()[bucket]);
        }
        bucket.is_some()
    }

    /// Gives back every count seat `seat` holds (its worker has exited);
    /// returns how many.
    pub(crate) fn reclaim(&self, seat: usize) -> usize {
        let mut given_back = 0;
        for entry in self.ledger(seat) {
            given_back += usize::from(self.give_back(entry));
        }
        given_back
    }

    /// Connections from `host` counted now, by every worker (for tests).
    #[cfg(test)]
    pub(crate) fn count_of(&self, host: u128) -> u32 {
        self.counts()[self.bucket(host)].load(Ordering::Acquire)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; nothing borrows
        // from it past `&self` methods.
        unsafe {
            libc::munmap(self.memory.as_ptr().cast(), self.bytes);
        }
    }
}

/// Lowers a counter, never below 0.
fn decrement(counter: &AtomicU32) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

fn layout_bytes(seats: usize, counters: usize, ledger_len: usize) -> usize {
    (HEADER_WORDS + seats) * 8 + 4 * (counters + seats * ledger_len)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// `CLOCK_MONOTONIC` in milliseconds: the same clock in every process.
pub(crate) fn monotonic_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the valid timespec it is given.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
    }
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

/// 128 random bits from the kernel.
fn random_key() -> io::Result<(u64, u64)> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    let (a, b) = bytes.split_at(8);
    let word = |s: &[u8]| u64::from_ne_bytes(s.try_into().unwrap_or_default());
    Ok((word(a), word(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host number (`per_ip.rs` makes them from addresses).
    fn ip(s: &str) -> u128 {
        u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().unwrap()))
    }

    /// The same region as a worker would see it: mapped again from a
    /// duplicate of its descriptor.
    fn attach_again(region: &Region) -> Region {
        // SAFETY: dup gives a new descriptor this test owns alone.
        let fd = unsafe { libc::dup(region.fd()) };
        assert!(fd >= 0);
        // SAFETY: `fd` is open, ours, and the master's region.
        unsafe { Region::attach(fd) }.unwrap()
    }

    #[test]
    fn a_host_is_admitted_up_to_its_limit_across_seats_and_no_further() {
        let master = Region::create(4, 100).unwrap();
        let (a, b) = (attach_again(&master), attach_again(&master));
        let host = ip("10.0.0.1");
        let mut admitted = 0;
        for key in 0..8 {
            admitted += usize::from(a.try_admit(0, key, host, 10));
            admitted += usize::from(b.try_admit(1, key, host, 10));
        }
        assert_eq!(admitted, 10);
        assert_eq!(master.count_of(host), 10);
        assert!(a.try_admit(0, 50, ip("10.0.0.2"), 10), "another host");
        b.release(1, 0);
        assert!(a.try_admit(0, 51, host, 10), "a slot freed by another seat");
        assert!(!a.try_admit(0, 52, host, 10));
    }

    #[test]
    fn reclaiming_a_seat_gives_back_exactly_its_counts() {
        let r = Region::create(2, 100).unwrap();
        let host = ip("192.0.2.7");
        for key in 0..6 {
            assert!(r.try_admit(0, key, host, 10));
        }
        for key in 0..3 {
            assert!(r.try_admit(1, key, host, 10));
        }
        r.release(0, 2);
        assert_eq!(r.count_of(host), 8);
        assert_eq!(r.reclaim(0), 5);
        assert_eq!(r.count_of(host), 3);
        assert_eq!(r.reclaim(0), 0, "cleared");
        // The seat's next worker starts with an empty ledger.
        assert!(r.try_admit(0, 0, host, 4));
        assert!(!r.try_admit(0, 1, host, 4));
    }

    #[test]
    fn releasing_an_uncounted_key_changes_nothing() {
        let r = Region::create(1, 10).unwrap();
        let host = ip("192.0.2.1");
        assert!(r.try_admit(0, 3, host, 5));
        r.release(0, 4);
        r.release(0, 3);
        r.release(0, 3);
        assert_eq!(r.count_of(host), 0);
        assert!(!r.try_admit(0, 10, host, 5), "a key past the ledger");
    }

    #[test]
    fn racing_threads_never_pass_the_limit() {
        let r = Arc::new(Region::create(8, 1000).unwrap());
        let host = ip("203.0.113.9");
        let threads: Vec<_> = (0..8)
            .map(|seat| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|&key| r.try_admit(seat, key, host, 37))
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 37);
        assert_eq!(r.count_of(host), 37);
    }

    #[test]
    fn heartbeats_are_per_seat_and_cleared() {
        let r = Region::create(3, 1).unwrap();
        let w = attach_again(&r);
        assert_eq!(r.last_beat(1), 0);
        let before = monotonic_ms();
        w.beat(1);
        assert!(r.last_beat(1) >= before);
        assert_eq!(r.last_beat(0), 0);
        r.clear_beat(1);
        assert_eq!(r.last_beat(1), 0);
    }

    #[test]
    fn a_region_of_another_shape_is_refused() {
        let file = tempfile_of(vec![0u8; 4096]);
        // SAFETY: a descriptor this test owns alone.
        let err = unsafe { Region::attach(file) }.unwrap_err();
        assert!(err.to_string().contains("another layout"), "{err}");
    }

    fn tempfile_of(bytes: Vec<u8>) -> RawFd {
        // SAFETY: as in `Region::create`.
        let fd = unsafe { libc::memfd_create(c"test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: `fd` is ours; the File closes nothing (into_raw_fd).
        let mut file = unsafe { File::from_raw_fd(fd) };
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        std::os::fd::IntoRawFd::into_raw_fd(file)
    }
}
