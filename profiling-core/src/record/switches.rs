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
//! to windowed attribution. `PROFILING_CPU_SWITCH_DETECTION=0` switches it off. Asking
//! allocates nothing either: requests are pooled, and a second background thread
//! (`profiling-kits`) resets them, with the recording threads' kits (`record/kits.rs`).
//!
//! The kernel switches its per-task perf hooks on (a code-patching static key, then an RCU
//! grace period, under a global mutex) when the first per-task event of the system opens,
//! and off about a second after the last one closes. Threads that open their event while
//! that happens all sleep on the mutex: with one event per thread, a burst of short-lived
//! threads would pay it again after every quiet second, 12-23 ms each time on the VMs this
//! project is tested on (`docs/reliability.md`, thread stall). So
//! the first detector also opens one disabled event that stays open for the life of the
//! process (one file descriptor), and the hooks stay on.

use std::cell::UnsafeCell;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};
use std::sync::{Arc, OnceLock};

use crate::record::storage::Slots;

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
    /// Answered by the background thread, which then drops its clone.
    req: Arc<Request>,
}

/// One thread's request for a detector, and its answer. Requests are pooled (see
/// [`REQUESTS_POOL`]), so that asking, at a thread's first call, allocates nothing.
struct Request {
    /// The thread to open the detector for.
    tid: AtomicI32,
    /// [`UNANSWERED`], [`ANSWERED`] once `answer` is written, [`TAKEN`] once the requester
    /// has moved it out.
    state: AtomicU8,
    /// Written by the background thread before it publishes [`ANSWERED`], then moved out
    /// by the requester; reset by the background thread once the request is its only owner.
    answer: UnsafeCell<Option<SwitchDetector>>,
    /// The next request in [`REQUESTS`].
    next: AtomicPtr<Request>,
}

const UNANSWERED: u8 = 0;
const ANSWERED: u8 = 1;
const TAKEN: u8 = 2;

// SAFETY: `answer` is written by the background thread only before it publishes ANSWERED
// (Release), read by the requester only after it sees ANSWERED (Acquire), and reset by the
// background thread only when it holds the only reference.
unsafe impl Sync for Request {}

impl Request {
    fn new() -> Self {
        Self {
            tid: AtomicI32::new(0),
            state: AtomicU8::new(UNANSWERED),
            answer: UnsafeCell::new(None),
            next: AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

impl Requested {
    /// The detector once the background thread has answered: `Some(Some(_))` opened,
    /// `Some(None)` refused, `None` not yet (or already taken).
    pub(crate) fn take(&mut self) -> Option<Option<SwitchDetector>> {
        if self.req.state.load(Acquire) != ANSWERED {
            return None;
        }
        // SAFETY: answered, so the background thread no longer touches `answer`, and the
        // requester (`&mut self`) is the only one that moves it out.
        let answer = unsafe { (*self.req.answer.get()).take() };
        self.req.state.store(TAKEN, Relaxed);
        Some(answer)
    }
}

impl Drop for Requested {
    /// Gives the request back to the pool: ready at once when the detectors' thread is done
    /// with it (a detector answered and never taken is handed over to be closed), else for
    /// the kits' thread to reset once it is. Threads starting in a burst thus find requests
    /// ready without that thread's help; nothing here allocates.
    fn drop(&mut self) {
        let kind = match Arc::get_mut(&mut self.req) {
            Some(req) => {
                drop(req.answer.get_mut().take());
                *req.state.get_mut() = UNANSWERED;
                READY
            }
            None => RETURNED,
        };
        let _ = REQUESTS_POOL.put(Arc::clone(&self.req), kind);
    }
}

/// Requests, ready to be asked (kind [`READY`]) or given back by their requester (kind
/// [`RETURNED`]) for the background thread to reset.
static REQUESTS_POOL: Slots<Arc<Request>, 256> = Slots::new();
const READY: u8 = 1;
const RETURNED: u8 = 2;
/// Requests the background thread keeps ready: a burst of 128 threads finds one each
/// (64 bytes each, with the `Arc`'s counts: checked below).
const READY_REQUESTS: usize = 128;
const _: () = assert!(std::mem::size_of::<Request>() + 2 * std::mem::size_of::<usize>() == 64);

/// Requests for the background thread, newest first: a lock-free stack linked through
/// [`Request::next`], each entry one reference (`Arc::into_raw`).
static REQUESTS: AtomicPtr<Request> = AtomicPtr::new(std::ptr::null_mut());

enum Job {
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

/// Pushes a reference to `req` on [`REQUESTS`] and wakes the background thread: no
/// allocation, no lock.
fn push_request(req: &Arc<Request>, worker: &std::thread::Thread) {
    let p = Arc::into_raw(Arc::clone(req)) as *mut Request;
    let mut head = REQUESTS.load(Relaxed);
    loop {
        req.next.store(head, Relaxed);
        match REQUESTS.compare_exchange_weak(head, p, Release, Relaxed) {
            Ok(_) => break,
            Err(h) => head = h,
        }
    }
    worker.unpark();
}

/// Every request pushed so far, oldest first.
fn take_requests() -> Vec<Arc<Request>> {
    let mut p = REQUESTS.swap(std::ptr::null_mut(), Acquire);
    let mut out = Vec::new();
    while !p.is_null() {
        // SAFETY: every entry is a reference made by `Arc::into_raw` in `push_request` and
        // published by the Release exchange; the swap above made this thread its owner.
        let req = unsafe { Arc::from_raw(p) };
        p = req.next.load(Relaxed);
        out.push(req);
    }
    out.reverse();
    out
}

/// Resets returned requests that nothing else holds and makes them ready, and tops the
/// ready ones up to [`READY_REQUESTS`]. Returns whether one was still held (to try again).
fn tend_requests() -> bool {
    if REQUESTS_HELD.load(Relaxed) {
        return false;
    }
    let mut returned = Vec::new();
    while let Some(r) = REQUESTS_POOL.take(RETURNED) {
        returned.push(r);
    }
    let mut waiting = false;
    for mut r in returned {
        match Arc::get_mut(&mut r) {
            Some(req) => {
                // A detector answered but never taken (its thread exited first) is closed, by
                // the detectors' thread (dropping it hands it there).
                drop(req.answer.get_mut().take());
                *req.state.get_mut() = UNANSWERED;
                if REQUESTS_POOL.count(READY) < READY_REQUESTS {
                    let _ = REQUESTS_POOL.put(r, READY);
                }
            }
            None => {
                waiting = true;
                let _ = REQUESTS_POOL.put(r, RETURNED);
            }
        }
    }
    while REQUESTS_POOL.count(READY) < READY_REQUESTS {
        if REQUESTS_POOL.put(Arc::new(Request::new()), READY).is_err() {
            break;
        }
    }
    waiting
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
            // The process's first request finds requests ready, like every later one (the
            // process's first recorded call makes its kit here too).
            crate::record::alloc::untracked(tend_requests);
            spawn_named("profiling-switches", work)
        })
        .as_ref()
}

/// Starts the background thread `name` running `f`; `None` if it could not be.
fn spawn_named(name: &str, f: fn()) -> Option<std::thread::Thread> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .ok()
        .map(|h| h.thread().clone())
}

/// Wakes the kits' background thread (starting it if it is not yet); `false` if it could
/// not be started. An unpark never waits (nor allocates).
pub(crate) fn wake_background() -> bool {
    kits_worker().map(std::thread::Thread::unpark).is_some()
}

/// Whether the kits' background thread runs (starting it if it is not yet).
pub(crate) fn background_running() -> bool {
    kits_worker().is_some()
}

/// The thread that tends the recording threads' kits (`record/kits.rs`, `Kit`) and the
/// detector requests, started at the first need; `None` if it could not be. Apart from the
/// detectors' thread: opening a detector maps a page, and waits for the memory-map lock
/// while threads start and exit, which is when kits must be made ready quickly.
fn kits_worker() -> Option<&'static std::thread::Thread> {
    static WORKER: OnceLock<Option<std::thread::Thread>> = OnceLock::new();
    WORKER.get_or_init(|| spawn_named("profiling-kits", tend)).as_ref()
}

/// The kits' thread's loop. It records no calls (so it has no kit itself).
fn tend() {
    loop {
        let held = crate::record::kits::tend_kits() | crate::record::alloc::untracked(tend_requests);
        // Woken by `wake_background` (an unpark before the park makes it return at once).
        if held {
            std::thread::park_timeout(RETRY_KITS);
        } else {
            std::thread::park();
        }
    }
}

/// Whether a thread starting now would find what its first recorded call needs made ahead
/// (a kit and a detector request, see `record/kits.rs`), so that neither its first call
/// nor its exit calls the allocator. For tests and diagnostics.
#[doc(hidden)]
pub fn ready_for_new_thread() -> bool {
    crate::record::kits::kits_ready() && REQUESTS_POOL.count(READY) > 0
}

/// Threads that found no kit ready at their first recorded call and made their own (calling
/// the allocator), since the process started. For tests and diagnostics.
#[doc(hidden)]
pub fn kits_made_on_the_spot() -> u64 {
    crate::record::kits::kits_made_on_the_spot()
}

/// Times a thread asked for a switch detector and found no request ready (it attributes
/// CPU by windows meanwhile, and asks again at its next CPU read), since the process
/// started. For tests and diagnostics.
#[doc(hidden)]
pub fn requests_not_ready() -> u64 {
    REQUESTS_NOT_READY.load(Relaxed)
}

static REQUESTS_NOT_READY: AtomicU64 = AtomicU64::new(0);

/// Set while a [`HeldRequests`] exists: the background thread makes no request ready.
static REQUESTS_HELD: AtomicBool = AtomicBool::new(false);

/// Takes every ready detector request and keeps the background thread from making more
/// until the value is dropped, as a burst of new threads that outran that thread would.
/// For tests.
#[doc(hidden)]
pub fn hold_detector_requests() -> HeldRequests {
    REQUESTS_HELD.store(true, Relaxed);
    let mut held = Vec::new();
    // The background thread may be topping the pool up as the flag is set: take what it
    // put until a pause finds nothing more.
    for _ in 0..100 {
        while let Some(r) = REQUESTS_POOL.take(READY) {
            held.push(r);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        if REQUESTS_POOL.count(READY) == 0 {
            break;
        }
    }
    HeldRequests(held)
}

/// See [`hold_detector_requests`]: dropping it gives the requests back.
#[doc(hidden)]
pub struct HeldRequests(Vec<Arc<Request>>);

impl std::fmt::Debug for HeldRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldRequests").field("held", &self.0.len()).finish()
    }
}

impl Drop for HeldRequests {
    fn drop(&mut self) {
        for r in self.0.drain(..) {
            let _ = REQUESTS_POOL.put(r, READY);
        }
        REQUESTS_HELD.store(false, Relaxed);
        wake_background();
    }
}

/// Holds the thread registry's lock until the value is dropped, as a snapshot reader
/// preempted while copying the registry would (the kits' thread cannot fold meanwhile). For
/// tests: a thread's first recorded call and its exit must not wait for it.
#[doc(hidden)]
pub fn hold_thread_registry() -> crate::record::threads::RegistryHold {
    crate::record::threads::hold_registry()
}

/// How soon the background thread looks again at kits a reader still held.
const RETRY_KITS: std::time::Duration = std::time::Duration::from_millis(2);

/// The detectors' thread's loop: detectors to open and close. It records no calls (so it
/// has no tables or detector).
fn work() {
    keep_hooks_on();
    loop {
        for req in take_requests() {
            let d = SwitchDetector::open_for(req.tid.load(Relaxed));
            // Held elsewhere: by its requester, alive, so `tid` was its thread throughout the
            // open; or by the pool it was given back to (its thread gone), whose reset closes
            // an answer nobody took. Held nowhere else: nobody will take it; close it.
            if Arc::strong_count(&req) > 1 {
                // SAFETY: unanswered until the store below; only this thread writes it.
                unsafe { *req.answer.get() = d };
                req.state.store(ANSWERED, Release);
            } else if let Some(d) = d {
                d.close_now();
            }
        }
        while let Some(d) = TO_CLOSE.take(CLOSE) {
            d.close_now();
        }
        for job in take_jobs() {
            match job {
                Job::Close(d) => d.close_now(),
            }
        }
        // Woken by `submit` or `push_request` (an unpark before the park makes it return at
        // once).
        std::thread::park();
    }
}

impl SwitchDetector {
    /// Asks the background thread for a detector for the calling thread; `None` where it is
    /// switched off, or no request is ready (see [`SwitchDetector::may_ask_again`]): the
    /// caller then attributes by windows. Allocates nothing: a thread's first call must not
    /// call the allocator (a new thread's first allocation waits for the allocator's shared
    /// arena and the allocation counters' list lock, seen here for 40-55 ms under load).
    pub(crate) fn request() -> Option<Requested> {
        if !enabled_by_env() {
            return None;
        }
        let worker = background()?;
        let Some(req) = REQUESTS_POOL.take(READY) else {
            REQUESTS_NOT_READY.fetch_add(1, Relaxed);
            wake_background();
            return None;
        };
        // SAFETY: gettid has no preconditions.
        req.tid.store(unsafe { libc::gettid() }, Relaxed);
        push_request(&req, worker);
        Some(Requested { req })
    }

    /// Whether asking again later can bring a detector: switch detection is on and its
    /// thread runs (a request refused now found none ready).
    pub(crate) fn may_ask_again() -> bool {
        enabled_by_env() && background().is_some()
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
        // SAFETY: the word is in a live read-only mapping (see `sequence_word`); the kernel
        // updates it in place, hence the volatile read.
        unsafe { std::ptr::read_volatile(self.sequence_word()) }
    }

    /// Where the sequence number is: valid to read while `self` is alive. An aligned u32
    /// that the kernel updates in place: read it with `read_volatile`.
    pub(crate) fn sequence_word(&self) -> *const u32 {
        // `page` is a mapping of at least one page; `lock` is at `LOCK_OFFSET` in it.
        (self.page as *const u8).wrapping_add(LOCK_OFFSET) as *const u32
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

/// Detectors handed to the detectors' thread to close. As many slots as detectors may be
/// open at once, so that handing one over never allocates (an exiting thread drops its
/// detector: `record/kits.rs`); the job stack ([`submit`]) remains for the impossible case
/// of a full set.
static TO_CLOSE: Slots<SwitchDetector, MAX_OPEN> = Slots::new();
/// Kind of a detector in [`TO_CLOSE`].
const CLOSE: u8 = 1;

impl Drop for SwitchDetector {
    /// Hands the detector to the background thread to close (an exiting thread does not wait
    /// for the memory-map lock), without allocating; closes it here if that thread is not
    /// running.
    fn drop(&mut self) {
        let d = Self {
            fd: self.fd,
            page: self.page,
            page_len: self.page_len,
        };
        let Some(worker) = background() else {
            d.close_now();
            return;
        };
        match TO_CLOSE.put(d, CLOSE) {
            Ok(()) => worker.unpark(),
            Err(d) => {
                if let Err(Job::Close(d)) = submit(Job::Close(d)) {
                    d.close_now();
                }
            }
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
