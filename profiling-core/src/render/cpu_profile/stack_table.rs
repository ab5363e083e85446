//! The table a CPU profile's unwound samples go into, written from the `SIGPROF` handler.
//!
//! A signal handler may not allocate or lock, so the table is one fixed block, mapped
//! (anonymous, zero pages) when a profile starts and unmapped when its report is built:
//!
//! - **buckets**: an open-addressing hash table ([`BUCKETS`] × 32 bytes) of distinct
//!   `(thread, stack)` keys, each with its count. A bucket goes empty → being written →
//!   holding its key's hash, by compare-and-swap; a sample whose key is already there adds 1
//!   to its count. A bucket being written by another thread is passed over (the same key may
//!   then get a second bucket: the report adds them up).
//! - **frames**: one array of instruction addresses ([`FRAMES`] × 8 bytes); a new key claims
//!   the run its stack needs by compare-and-swap on the next free index.
//!
//! Atomics only, no lock, no allocation: every operation is async-signal-safe. A sample that
//! does not fit (every bucket of its probe sequence taken by other keys, or the frames used
//! up) is refused, and the handler counts it as not unwound: it is never lost silently.
//!
//! Size: at most [`BUCKETS`] distinct stacks and [`FRAMES`] frames (e.g. 65,536 stacks of
//! 16 frames), 12 MiB of address space; pages are made resident as they are first written,
//! so a profile of a few hundred distinct stacks holds well under that.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Buckets of the table: distinct `(thread, stack)` keys it holds at most (fewer when their
/// probe sequences collide).
pub(crate) const BUCKETS: usize = 1 << 17;
/// Instruction addresses the table holds, over all its stacks.
pub(crate) const FRAMES: usize = 1 << 20;
/// Innermost frames kept of a stack (as pprof-rs keeps).
pub(crate) const MAX_DEPTH: usize = 128;
/// Buckets looked at for one key before the sample is refused.
const MAX_PROBES: usize = 128;

const EMPTY: u64 = 0;
const WRITING: u64 = 1;
/// Claimed, but the frames were used up: holds nothing.
const DEAD: u64 = 2;
/// Smallest hash a bucket holds (the states above are reserved).
const FIRST_HASH: u64 = 3;

#[repr(C)]
struct Bucket {
    /// [`EMPTY`], [`WRITING`], [`DEAD`], or the hash of the key it holds.
    state: AtomicU64,
    count: AtomicU64,
    start: AtomicU32,
    len: AtomicU32,
    thread: AtomicU32,
    from_interrupted: AtomicU32,
}

/// One distinct stack of the table, read after the profile stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stack {
    /// The thread's row in the handler's thread table.
    pub thread: u32,
    /// Whether `ips[0]` is the interrupted instruction (the handler found it in the unwound
    /// frames and dropped the frames of the handler itself); else `ips` starts inside the
    /// handler.
    pub from_interrupted: bool,
    /// Instruction addresses, innermost first: the interrupted one, then return addresses.
    pub ips: Vec<u64>,
    /// Samples of this stack.
    pub count: u64,
}

/// The mapped table (see the module docs).
pub(crate) struct Table {
    map: *mut libc::c_void,
    map_len: usize,
    buckets: usize,
    frames: usize,
    next_frame: AtomicUsize,
}

// SAFETY: the mapping is only accessed through atomics; `Table` owns it.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("buckets", &self.buckets)
            .field("frames", &self.frames)
            .field("frames_used", &self.next_frame.load(Ordering::Relaxed))
            .finish()
    }
}

impl Table {
    /// Maps a table of `buckets` (a power of two) and `frames`.
    pub(crate) fn new(buckets: usize, frames: usize) -> Result<Self> {
        if !buckets.is_power_of_two() || frames == 0 || frames > u32::MAX as usize {
            return Err(Error::Profiler(format!(
                "sample table of {buckets} buckets and {frames} frames: buckets must be a power of two, frames 1..2^32"
            )));
        }
        let map_len = buckets * std::mem::size_of::<Bucket>() + frames * std::mem::size_of::<AtomicU64>();
        // SAFETY: an anonymous private mapping, no address hint; checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(Error::Profiler(format!(
                "mapping the CPU sample table ({} MiB): {}",
                map_len >> 20,
                std::io::Error::last_os_error()
            )));
        }
        Ok(Self {
            map,
            map_len,
            buckets,
            frames,
            next_frame: AtomicUsize::new(0),
        })
    }

    fn bucket_slice(&self) -> &[Bucket] {
        // SAFETY: the mapping starts with `buckets` buckets, page-aligned, zero-filled (a
        // zeroed `Bucket` is valid: all atomics) and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.map.cast::<Bucket>(), self.buckets) }
    }

    fn frame_slice(&self) -> &[AtomicU64] {
        // SAFETY: `frames` zeroed atomics follow the buckets (32-byte entries: aligned).
        unsafe {
            let base = self.map.cast::<u8>().add(self.buckets * std::mem::size_of::<Bucket>());
            std::slice::from_raw_parts(base.cast::<AtomicU64>(), self.frames)
        }
    }

    /// Counts one sample of `ips` (innermost first, at most [`MAX_DEPTH`]) on `thread`.
    /// False when it does not fit. Async-signal-safe.
    pub(crate) fn record(&self, thread: u32, from_interrupted: bool, ips: &[usize]) -> bool {
        if ips.is_empty() || ips.len() > MAX_DEPTH {
            return false;
        }
        let h = hash(thread, from_interrupted, ips);
        let buckets = self.bucket_slice();
        let mask = buckets.len() - 1;
        for probe in 0..MAX_PROBES.min(buckets.len()) {
            let b = &buckets[(h as usize).wrapping_add(probe) & mask];
            let mut state = b.state.load(Ordering::Acquire);
            if state == EMPTY {
                match b
                    .state
                    .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Acquire)
                {
                    Ok(_) => return self.fill(b, h, thread, from_interrupted, ips),
                    Err(now) => state = now,
                }
            }
            if state == h && self.holds(b, thread, from_interrupted, ips) {
                b.count.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Writes a new key into `b`, which this thread set to [`WRITING`].
    fn fill(&self, b: &Bucket, h: u64, thread: u32, from_interrupted: bool, ips: &[usize]) -> bool {
        let claimed = self
            .next_frame
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                next.checked_add(ips.len()).filter(|&end| end <= self.frames)
            });
        let Ok(start) = claimed else {
            b.state.store(DEAD, Ordering::Release);
            return false;
        };
        for (slot, &ip) in self.frame_slice()[start..start + ips.len()].iter().zip(ips) {
            slot.store(ip as u64, Ordering::Relaxed);
        }
        // `start + len <= frames <= u32::MAX` (checked in `new`) and `len <= MAX_DEPTH`.
        b.start.store(start as u32, Ordering::Relaxed);
        b.len.store(ips.len() as u32, Ordering::Relaxed);
        b.thread.store(thread, Ordering::Relaxed);
        b.from_interrupted.store(u32::from(from_interrupted), Ordering::Relaxed);
        b.count.store(1, Ordering::Relaxed);
        b.state.store(h, Ordering::Release);
        true
    }

    /// Whether `b` (published: its state was read with `Acquire`) holds this key.
    fn holds(&self, b: &Bucket, thread: u32, from_interrupted: bool, ips: &[usize]) -> bool {
        if b.thread.load(Ordering::Relaxed) != thread
            || (b.from_interrupted.load(Ordering::Relaxed) != 0) != from_interrupted
            || b.len.load(Ordering::Relaxed) as usize != ips.len()
        {
            return false;
        }
        let start = b.start.load(Ordering::Relaxed) as usize;
        self.frame_slice().get(start..start + ips.len()).is_some_and(|stored| {
            stored
                .iter()
                .zip(ips)
                .all(|(s, &ip)| s.load(Ordering::Relaxed) == ip as u64)
        })
    }

    /// The stacks recorded, in table order (a key written twice, see the module docs, comes
    /// twice). Read once no handler writes any more.
    pub(crate) fn stacks(&self) -> impl Iterator<Item = Stack> + '_ {
        let frames = self.frame_slice();
        self.bucket_slice().iter().filter_map(move |b| {
            if b.state.load(Ordering::Acquire) < FIRST_HASH {
                return None;
            }
            let start = b.start.load(Ordering::Relaxed) as usize;
            let len = b.len.load(Ordering::Relaxed) as usize;
            Some(Stack {
                thread: b.thread.load(Ordering::Relaxed),
                from_interrupted: b.from_interrupted.load(Ordering::Relaxed) != 0,
                ips: frames
                    .get(start..start + len)?
                    .iter()
                    .map(|f| f.load(Ordering::Relaxed))
                    .collect(),
                count: b.count.load(Ordering::Relaxed),
            })
        })
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no reference into it outlives
        // `self` (the handler stops using it before the guard drops it, see `sample_guard`).
        unsafe {
            libc::munmap(self.map, self.map_len);
        }
    }
}

/// A hash of the key, at least [`FIRST_HASH`].
fn hash(thread: u32, from_interrupted: bool, ips: &[usize]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (u64::from(thread) << 1 | u64::from(from_interrupted)).wrapping_mul(K);
    for &ip in ips {
        h = (h.rotate_left(5) ^ ip as u64).wrapping_mul(K);
    }
    // Final mix: the low bits pick the bucket.
    h ^= h >> 29;
    h.max(FIRST_HASH)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;

    fn totals(t: &Table) -> HashMap<(u32, Vec<u64>), u64> {
        let mut m = HashMap::new();
        for s in t.stacks() {
            *m.entry((s.thread, s.ips)).or_default() += s.count;
        }
        m
    }

    #[test]
    fn counts_distinct_stacks_per_thread() {
        let t = Table::new(64, 1024).unwrap();
        assert!(t.record(1, true, &[10, 20, 30]));
        assert!(t.record(1, true, &[10, 20, 30]));
        assert!(t.record(2, true, &[10, 20, 30]));
        assert!(t.record(1, true, &[10, 20]));
        assert!(!t.record(1, true, &[]), "an empty stack is refused");
        let m = totals(&t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[&(1, vec![10, 20, 30])], 2);
        assert_eq!(m[&(2, vec![10, 20, 30])], 1);
        assert_eq!(m[&(1, vec![10, 20])], 1);
        let s = t.stacks().find(|s| s.thread == 2).unwrap();
        assert!(s.from_interrupted);
    }

    #[test]
    fn refuses_what_does_not_fit_and_keeps_counting_what_is_there() {
        // 8 frames: two stacks of 4 fit, a third does not.
        let t = Table::new(8, 8).unwrap();
        assert!(t.record(0, true, &[1, 2, 3, 4]));
        assert!(t.record(0, true, &[5, 6, 7, 8]));
        assert!(!t.record(0, true, &[9, 10, 11, 12]), "frames used up");
        assert!(
            t.record(0, true, &[1, 2, 3, 4]),
            "a stack already there is still counted"
        );
        // 2 buckets: the third distinct key finds no room.
        let t = Table::new(2, 64).unwrap();
        assert!(t.record(0, true, &[1]));
        assert!(t.record(0, true, &[2]));
        assert!(!t.record(0, true, &[3]), "buckets used up");
        let m = totals(&t);
        assert_eq!(m.values().sum::<u64>(), 2);
        assert!(!t.record(0, true, &[0; MAX_DEPTH + 1]), "deeper than MAX_DEPTH");
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        // 4 threads × 20,000 samples over 200 keys, (thread % 2, i % 100): each key written by
        // two threads at once.
        let t = Arc::new(Table::new(1 << 12, 1 << 16).unwrap());
        let handles: Vec<_> = (0..4u32)
            .map(|thread| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut refused = 0u64;
                    for i in 0..20_000usize {
                        let key = (thread as usize % 2, i % 100);
                        if !t.record(key.0 as u32, true, &[key.1 + 1, 7, 9]) {
                            refused += 1;
                        }
                    }
                    refused
                })
            })
            .collect();
        let refused: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(refused, 0);
        let m = totals(&t);
        assert_eq!(m.len(), 200);
        assert!(m.values().all(|&n| n == 400), "{m:?}");
    }

    #[test]
    fn holds_the_documented_capacity() {
        // The docs' figure: 65,536 distinct stacks of 16 frames fit in the default table.
        let t = Table::new(BUCKETS, FRAMES).unwrap();
        let mut ips = [0usize; 16];
        for i in 0..65_536usize {
            ips[0] = 0x1000 + i * 16;
            assert!(t.record((i % 7) as u32, true, &ips), "stack {i} refused");
        }
        assert!(!t.record(0, true, &[1]), "frames are used up");
        assert_eq!(t.stacks().count(), 65_536);
    }
}
