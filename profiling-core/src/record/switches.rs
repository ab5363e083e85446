//! Where a thread learns, for about a nanosecond, whether it was switched off its CPU.
//!
//! The kernel keeps a page of metadata for every perf event a thread opens, and bumps a
//! sequence number in it (`perf_event_mmap_page::lock`) whenever it rewrites the page, which
//! for a per-thread `task-clock` software event happens when the thread is scheduled out and
//! back in, and not while it runs. A thread that maps that page read-only can therefore tell
//! whether it blocked, slept or was preempted since it last looked with one plain load, where
//! reading its CPU clock is a system call (about 500 ns in the VMs this project is tested on).
//! `record/cpu.rs` uses it to read the CPU clock only where it must (see there).
//!
//! Cost and limits: one `perf_event_open` and one mapped page per recording thread, asked for
//! at the thread's first recorded call and closed when it exits. Mapping and unmapping a page
//! take the process's memory-map lock for writing, for which a thread can wait many
//! milliseconds while other threads start, exit or map memory; so neither the recording
//! thread nor its exit makes these calls: a background thread (`profiling-switches`) opens
//! the event for it (a perf event can be opened for another thread of the process, and a
//! mapping is the whole process's) and closes it, and the recording thread picks the detector
//! up at its next CPU read; until then it reads its CPU clock at every boundary (see
//! `record/cpu.rs`). At most [`MAX_OPEN`] threads
//! hold one at a time, so a process with thousands of threads does not spend its file
//! descriptors on profiling; threads beyond that, and every thread where the kernel refuses
//! the event (`perf_event_paranoid` above 2, a seccomp filter, a non-Linux system), fall back
//! to windowed attribution. `PROFILING_CPU_SWITCH_DETECTION=0` switches it off.
//!
//! The kernel switches its per-task perf hooks on (a code-patching static key, then an RCU
//! grace period, under a global mutex) when the first per-task event of the system opens,
//! and off about a second after the last one closes. Threads that open their event while
//! that happens all sleep on the mutex: with one event per thread, a burst of short-lived
//! threads would pay it again after every quiet second, 12-23 ms each time on the VMs this
//! project is tested on (`docs/reliability.md`, thread stall). So
//! the first detector also opens one disabled event that stays open for the life of the
//! process (one file descriptor), and the hooks stay on.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, OnceLock};

/// Threads holding a detector at one time, at most.
pub const MAX_OPEN: usize = 256;

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER0` (64 bytes), which every kernel
/// since 2.6.31 accepts. Only `type`, `size` and `config` are set; all flags zero (enabled,
/// counting user and kernel time).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `perf_event_attr::disabled`, the first bit of its flags.
const ATTR_DISABLED: u64 = 1;
/// Offset of `lock` in `struct perf_event_mmap_page` (after `version` and `compat_version`).
const LOCK_OFFSET: usize = 8;

fn enabled_by_env() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("PROFILING_CPU_SWITCH_DETECTION")
            .map(|v| !matches!(v.trim(), "0" | "false" | "off" | "no"))
            .unwrap_or(true)
    })
}

/// The calling thread's view of its own scheduling: see the module docs.
pub(crate) struct SwitchDetector {
    fd: libc::c_int,
    page: *mut libc::c_void,
    page_len: usize,
}

// SAFETY: the page is a read-only mapping of the process, valid until the detector is
// closed; reading it from any thread is sound (only its owner's reads mean anything), and
// the only method reads it.
unsafe impl Send for SwitchDetector {}
// SAFETY: as above.
unsafe impl Sync for SwitchDetector {}

/// A detector asked for on behalf of the calling thread: see [`SwitchDetector::request`].
pub(crate) struct Requested {
    /// Filled by the background thread, which then drops its clone.
    slot: Arc<OnceLock<Option<SwitchDetector>>>,
}

impl Requested {
    /// The detector once the background thread has answered: `Some(Some(_))` opened,
    /// `Some(None)` refused, `None` not yet.
    pub(crate) fn take(&mut self) -> Option<Option<SwitchDetector>> {
        Arc::get_mut(&mut self.slot).and_then(OnceLock::take)
    }
}

enum Job {
    /// Open a detector for thread `tid`, unless its requester has gone.
    Open {
        tid: libc::pid_t,
        slot: Arc<OnceLock<Option<SwitchDetector>>>,
    },
    Close(SwitchDetector),
}

/// A job in [`JOBS`].
struct Node {
    job: Job,
    next: *mut Node,
}

/// Jobs for the background thread, newest first: a lock-free stack (push by compare and
/// swap, taken whole by swap), since a channel's send can wait on the channel's own lock.
static JOBS: AtomicPtr<Node> = AtomicPtr::new(std::ptr::null_mut());

/// Pushes `job` and wakes the background thread (an unpark never waits). `Err` gives the
/// job back when that thread is not running.
fn submit(job: Job) -> Result<(), Job> {
    let Some(worker) = background() else {
        return Err(job);
    };
    let node = Box::into_raw(Box::new(Node {
        job,
        next: std::ptr::null_mut(),
    }));
    let mut head = JOBS.load(Relaxed);
    loop {
        // SAFETY: `node` is ours until the exchange below publishes it.
        unsafe { (*node).next = head };
        match JOBS.compare_exchange_weak(head, node, Release, Relaxed) {
            Ok(_) => break,
            Err(h) => head = h,
        }
    }
    worker.unpark();
    Ok(())
}

/// Every job pushed so far, oldest first.
fn take_jobs() -> Vec<Job> {
    let mut p = JOBS.swap(std::ptr::null_mut(), Acquire);
    let mut jobs = Vec::new();
    while !p.is_null() {
        // SAFETY: every node was made by `Box::into_raw` in `submit` and published by the
        // Release exchange; the swap above made this thread its only owner.
        let node = unsafe { Box::from_raw(p) };
        p = node.next;
        jobs.push(node.job);
    }
    jobs.reverse();
    jobs
}

/// The background thread, started at the first request; `None` if it could not be.
fn background() -> Option<&'static std::thread::Thread> {
    static WORKER: OnceLock<Option<std::thread::Thread>> = OnceLock::new();
    WORKER
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("profiling-switches".into())
                .spawn(work)
                .ok()
                .map(|h| h.thread().clone())
        })
        .as_ref()
}

/// The background thread's loop. It records no calls (so it has no tables or detector).
fn work() {
    keep_hooks_on();
    loop {
        for job in take_jobs() {
            match job {
                Job::Open { tid, slot } => {
                    let d = SwitchDetector::open_for(tid);
                    // The requester still holds its clone, so it is alive, and `tid` was its
                    // thread throughout the open: keep the detector. Otherwise the id may
                    // already name another thread: close it.
                    if Arc::strong_count(&slot) > 1 {
                        let _ = slot.set(d);
                    } else if let Some(d) = d {
                        d.close_now();
                    }
                }
                Job::Close(d) => d.close_now(),
            }
        }
        // Woken by `submit` (an unpark before the park makes it return at once).
        std::thread::park();
    }
}

impl SwitchDetector {
    /// Asks the background thread for a detector for the calling thread; `None` where it is
    /// switched off or the limit is reached (the caller then attributes by windows).
    pub(crate) fn request() -> Option<Requested> {
        if !enabled_by_env() {
            return None;
        }
        let slot = Arc::new(OnceLock::new());
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let job = Job::Open {
            tid,
            slot: Arc::clone(&slot),
        };
        submit(job).ok()?;
        Some(Requested { slot })
    }

    /// A detector for the calling thread, opened now, or `None` where the kernel or the
    /// limit refuses.
    #[cfg(test)]
    pub(crate) fn open() -> Option<Self> {
        if !enabled_by_env() {
            return None;
        }
        Self::open_for(0)
    }

    /// A detector for thread `tid` (0: the calling thread).
    fn open_for(tid: libc::pid_t) -> Option<Self> {
        if OPEN.fetch_add(1, Relaxed) >= MAX_OPEN {
            OPEN.fetch_sub(1, Relaxed);
            return None;
        }
        keep_hooks_on();
        let opened = Self::open_event(tid);
        if opened.is_none() {
            OPEN.fetch_sub(1, Relaxed);
        }
        opened
    }

    fn open_event(tid: libc::pid_t) -> Option<Self> {
        let fd = open_task_clock(tid, 0)?;
        // SAFETY: sysconf has no preconditions.
        let page_len = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        // SAFETY: maps the event's metadata page read-only; `fd` is a perf event we own.
        let page = unsafe { libc::mmap(std::ptr::null_mut(), page_len, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
        if page == libc::MAP_FAILED {
            // SAFETY: `fd` is ours and not used after this.
            unsafe { libc::close(fd) };
            return None;
        }
        Some(Self { fd, page, page_len })
    }

    /// The page's sequence number: it changes when the thread has been switched out and in.
    #[inline(always)]
    pub(crate) fn sequence(&self) -> u32 {
        // SAFETY: `page` is a live read-only mapping of at least one page; `lock` is an
        // aligned u32 the kernel updates in place, hence the volatile read.
        unsafe { std::ptr::read_volatile((self.page as *const u8).add(LOCK_OFFSET) as *const u32) }
    }
}

/// Opens a `task-clock` event on thread `tid` (0: the calling thread) with the given
/// attribute flags.
fn open_task_clock(tid: libc::pid_t, flags: u64) -> Option<libc::c_int> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_TASK_CLOCK,
        flags,
        ..PerfEventAttr::default()
    };
    // SAFETY: `attr` is a valid, initialised perf_event_attr of the size it declares; pid
    // `tid` (0: this thread) and cpu -1 mean "that thread, any CPU"; no group fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    (fd >= 0).then_some(fd as libc::c_int)
}

/// Opens, once per process, the disabled event that keeps the kernel's per-task perf hooks
/// on (see the module docs); it is never closed.
fn keep_hooks_on() {
    static KEEPER: OnceLock<Option<libc::c_int>> = OnceLock::new();
    KEEPER.get_or_init(|| open_task_clock(0, ATTR_DISABLED));
}

impl SwitchDetector {
    /// Unmaps and closes now, on the calling thread.
    fn close_now(self) {
        // SAFETY: `page` and `fd` came from `open_event` and are released once, here
        // (`forget` below keeps `drop` from releasing them again).
        unsafe {
            libc::munmap(self.page, self.page_len);
            libc::close(self.fd);
        }
        OPEN.fetch_sub(1, Relaxed);
        std::mem::forget(self);
    }
}

impl Drop for SwitchDetector {
    /// Hands the detector to the background thread to close (an exiting thread does not wait
    /// for the memory-map lock); closes it here if that thread is not running.
    fn drop(&mut self) {
        let d = Self {
            fd: self.fd,
            page: self.page,
            page_len: self.page_len,
        };
        if let Err(Job::Close(d)) = submit(Job::Close(d)) {
            d.close_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detector opened by the background thread for this one sees this thread's switches
    /// (not the background thread's, which sleeps throughout).
    #[test]
    fn a_requested_detector_watches_the_requesting_thread() {
        let Some(probe) = SwitchDetector::open() else {
            eprintln!("perf events unavailable here: nothing to test");
            return;
        };
        drop(probe);
        let mut requested = SwitchDetector::request().expect("switch detection is on");
        let started = std::time::Instant::now();
        let d = loop {
            if let Some(answer) = requested.take() {
                break answer.expect("the kernel opened one for the calling thread just now");
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "no answer in 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        sees_sleeps_not_spins(&d);
    }

    #[test]
    fn sleeping_changes_the_sequence_and_spinning_does_not() {
        let Some(d) = SwitchDetector::open() else {
            eprintln!("perf events unavailable here: nothing to test");
            return;
        };
        sees_sleeps_not_spins(&d);
    }

    /// The calling thread's 2 ms sleep changes `d`'s sequence; most of its 20 µs spins do
    /// not (a spin can still be preempted on a loaded machine).
    fn sees_sleeps_not_spins(d: &SwitchDetector) {
        let before = d.sequence();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_ne!(d.sequence(), before, "a 2 ms sleep switches the thread out");
        let mut unchanged = 0;
        for _ in 0..20 {
            let s = d.sequence();
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_micros(20) {}
            unchanged += usize::from(d.sequence() == s);
        }
        assert!(unchanged >= 10, "only {unchanged} of 20 spins of 20 µs saw no switch");
    }
}
