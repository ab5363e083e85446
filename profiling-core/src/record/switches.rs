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
//! Cost and limits: one `perf_event_open` and one mapped page per recording thread, opened at
//! the thread's first recorded call and closed when it exits. At most [`MAX_OPEN`] threads
//! hold one at a time, so a process with thousands of threads does not spend its file
//! descriptors on profiling; threads beyond that, and every thread where the kernel refuses
//! the event (`perf_event_paranoid` above 2, a seccomp filter, a non-Linux system), fall back
//! to windowed attribution. `PROFILING_CPU_SWITCH_DETECTION=0` switches it off.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

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

impl SwitchDetector {
    /// A detector for the calling thread, or `None` where the kernel or the limit refuses.
    pub(crate) fn open() -> Option<Self> {
        if !enabled_by_env() || OPEN.fetch_add(1, Relaxed) >= MAX_OPEN {
            OPEN.fetch_sub(1, Relaxed);
            return None;
        }
        let opened = Self::open_event();
        if opened.is_none() {
            OPEN.fetch_sub(1, Relaxed);
        }
        opened
    }

    fn open_event() -> Option<Self> {
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_TASK_CLOCK,
            ..PerfEventAttr::default()
        };
        // SAFETY: `attr` is a valid, initialised perf_event_attr of the size it declares;
        // pid 0 and cpu -1 mean "this thread, any CPU"; no group fd.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                0 as libc::pid_t,
                -1 as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        let fd = fd as libc::c_int;
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

impl Drop for SwitchDetector {
    fn drop(&mut self) {
        // SAFETY: `page` and `fd` came from `open_event` and are released once, here.
        unsafe {
            libc::munmap(self.page, self.page_len);
            libc::close(self.fd);
        }
        OPEN.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeping_changes_the_sequence_and_spinning_does_not() {
        let Some(d) = SwitchDetector::open() else {
            eprintln!("perf events unavailable here: nothing to test");
            return;
        };
        let before = d.sequence();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_ne!(d.sequence(), before, "a 2 ms sleep switches the thread out");
        // A spin can still be preempted on a loaded machine: most short spins are not.
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
