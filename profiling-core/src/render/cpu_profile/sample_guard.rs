//! The `SIGPROF` handler placed in front of pprof's, so that every sample is accounted for.
//!
//! pprof-rs installs its handler with `sigaction(SIGPROF, SA_SIGINFO | SA_RESTART)` in
//! `ProfilerGuardBuilder::build` and unwinds from the interrupted context; it returns without
//! recording when the interrupted instruction is in a blocklisted library (unwinding from
//! libc, libgcc's unwinder or the loader can deadlock on a lock the interrupted code holds).
//! Those samples used to vanish. After pprof's handler is in place, [`Guard::install`] puts
//! this one in front of it and keeps pprof's action:
//!
//! - the interrupted instruction address (`RIP` / `PC` in the `ucontext`) is looked up in a
//!   fixed table of address ranges, computed from `/proc/self/maps` before the profile starts;
//! - in one of them, the sample is counted here, with atomics only (no allocation, no lock:
//!   async-signal-safe), in a fixed table keyed by thread id (`gettid`), as a
//!   [system call](Kind::SystemCall) when the instruction just before (or at, for a call the
//!   kernel restarts) the address is `syscall` (x86_64 `0f 05`) / `svc #0` (aarch64
//!   `d4000001`) or the address is in the vDSO, else as [in libc](Kind::InLibc);
//! - otherwise it is counted as [chained](Kind::Chained) and pprof's handler runs and unwinds.
//!
//! The system-call test reads the code bytes before the address: an instruction elsewhere in
//! libc that happens to end in the same bytes would be counted as a system call rather than
//! as in libc (both are leaves under the thread; only the label would be wrong).
//!
//! Every invocation while the profile runs is counted, so the report knows how many samples
//! were taken; comparing a thread's chained count with the samples pprof recorded for it
//! also shows the ones pprof could not record (its lock was busy on another thread).
//!
//! [`Guard::stop`] makes the handler a no-op, waits for invocations in flight to return and
//! reads the table; pprof's guard then sets `SIGPROF` to ignored as before. Linux on x86_64 and
//! aarch64 only: elsewhere [`Guard::install`] does nothing and the counts are empty.

/// What happened to one sample the handler saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Interrupted right after (or at) a system call instruction, or in the vDSO.
    SystemCall,
    /// Interrupted elsewhere in a blocklisted library (libc, libgcc, pthread, the loader).
    InLibc,
    /// Handed to pprof's handler to unwind.
    Chained,
}

/// One thread's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThreadCounts {
    /// Kernel thread id (0: the overflow row, threads beyond the table's size).
    pub tid: i32,
    /// `pthread_self()` of the thread: what pprof records as its thread id.
    pub pthread: u64,
    /// The thread's name (`PR_GET_NAME`) when its first sample was counted.
    pub name: String,
    pub system_call: u64,
    pub in_libc: u64,
    pub chained: u64,
}

/// An address range of a blocklisted mapping, and whether its code can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    pub start: usize,
    pub end: usize,
    pub readable: bool,
    pub vdso: bool,
}

/// Executable mappings of `/proc/self/maps` text whose path contains one of `blocklist`.
pub(crate) fn blocklisted_ranges(maps: &str, blocklist: &[&str]) -> Vec<Range> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let path = f.nth(3).unwrap_or("");
            if !perms.contains('x') || !blocklist.iter().any(|b| path.contains(b)) {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Range {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                readable: perms.contains('r'),
                vdso: path == "[vdso]",
            })
        })
        .collect()
}

pub(crate) use imp::Guard;

#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp {
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::{Kind, Range, ThreadCounts};
    use crate::error::{Error, Result};

    /// Most blocklisted ranges kept (a process has a handful: libc, libgcc, ld.so, vDSO).
    const MAX_RANGES: usize = 64;
    /// Threads counted one by one; more share the overflow row.
    const SLOTS: usize = 1024;

    struct AtomicRange {
        start: AtomicUsize,
        end: AtomicUsize,
        /// Bit 0: readable; bit 1: vDSO.
        flags: AtomicUsize,
    }

    struct Slot {
        tid: AtomicI32,
        pthread: AtomicU64,
        name: [AtomicU64; 2],
        system_call: AtomicU64,
        in_libc: AtomicU64,
        chained: AtomicU64,
    }

    impl Slot {
        const fn new() -> Self {
            Self {
                tid: AtomicI32::new(0),
                pthread: AtomicU64::new(0),
                name: [AtomicU64::new(0), AtomicU64::new(0)],
                system_call: AtomicU64::new(0),
                in_libc: AtomicU64::new(0),
                chained: AtomicU64::new(0),
            }
        }

        fn counter(&self, kind: Kind) -> &AtomicU64 {
            match kind {
                Kind::SystemCall => &self.system_call,
                Kind::InLibc => &self.in_libc,
                Kind::Chained => &self.chained,
            }
        }

        fn reset(&self) {
            self.tid.store(0, Ordering::Relaxed);
            self.pthread.store(0, Ordering::Relaxed);
            for n in &self.name {
                n.store(0, Ordering::Relaxed);
            }
            self.system_call.store(0, Ordering::Relaxed);
            self.in_libc.store(0, Ordering::Relaxed);
            self.chained.store(0, Ordering::Relaxed);
        }

        fn read(&self) -> ThreadCounts {
            let mut name = [0u8; 16];
            name[..8].copy_from_slice(&self.name[0].load(Ordering::Relaxed).to_ne_bytes());
            name[8..].copy_from_slice(&self.name[1].load(Ordering::Relaxed).to_ne_bytes());
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            ThreadCounts {
                tid: self.tid.load(Ordering::Relaxed),
                pthread: self.pthread.load(Ordering::Relaxed),
                name: String::from_utf8_lossy(&name[..len]).into_owned(),
                system_call: self.system_call.load(Ordering::Relaxed),
                in_libc: self.in_libc.load(Ordering::Relaxed),
                chained: self.chained.load(Ordering::Relaxed),
            }
        }
    }

    static RANGES: [AtomicRange; MAX_RANGES] = [const {
        AtomicRange {
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            flags: AtomicUsize::new(0),
        }
    }; MAX_RANGES];
    static RANGE_COUNT: AtomicUsize = AtomicUsize::new(0);
    static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
    static OVERFLOW: Slot = Slot::new();
    /// pprof's `sa_sigaction` (or `sa_handler`), and whether it takes `siginfo`.
    static PREVIOUS: AtomicUsize = AtomicUsize::new(0);
    static PREVIOUS_SIGINFO: AtomicBool = AtomicBool::new(false);
    /// Counting and chaining on; off, the handler returns at once.
    static ACTIVE: AtomicBool = AtomicBool::new(false);
    /// Handler invocations that have not returned.
    static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

    /// Our handler is installed over pprof's (only one profile runs at a time: the caller
    /// holds `cpu_profile`'s RUNNING flag).
    #[derive(Debug)]
    pub(crate) struct Guard {
        stopped: bool,
    }

    impl Guard {
        /// Records `ranges`, clears the counts and installs the handler in front of the current
        /// `SIGPROF` action (pprof's). Call after pprof's guard is built.
        pub(crate) fn install(ranges: &[Range]) -> Result<Self> {
            if ranges.len() > MAX_RANGES {
                return Err(Error::Profiler(format!(
                    "{} blocklisted code ranges, at most {MAX_RANGES} supported",
                    ranges.len()
                )));
            }
            // No handler of ours runs now: the last profile ended with ACTIVE false and no
            // invocation in flight, and only one profile runs at a time.
            for (slot, r) in RANGES.iter().zip(ranges) {
                slot.start.store(r.start, Ordering::Relaxed);
                slot.end.store(r.end, Ordering::Relaxed);
                slot.flags
                    .store(usize::from(r.readable) | usize::from(r.vdso) << 1, Ordering::Relaxed);
            }
            RANGE_COUNT.store(ranges.len(), Ordering::Relaxed);
            for s in TABLE.iter().chain(std::iter::once(&OVERFLOW)) {
                s.reset();
            }
            // SAFETY: reading the current action into a zeroed, valid `sigaction`.
            let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: null new action (query only), valid out-pointer.
            if unsafe { libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut previous) } != 0 {
                return Err(Error::Profiler(format!(
                    "reading the SIGPROF action: {}",
                    std::io::Error::last_os_error()
                )));
            }
            let ours = on_sigprof as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
            let previous_handler = if previous.sa_sigaction == ours {
                0
            } else {
                previous.sa_sigaction
            };
            PREVIOUS.store(previous_handler, Ordering::Relaxed);
            PREVIOUS_SIGINFO.store(previous.sa_flags & libc::SA_SIGINFO != 0, Ordering::Relaxed);
            ACTIVE.store(true, Ordering::SeqCst);
            // SAFETY: a zeroed `sigaction` is valid; the fields set below make it ours.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = ours;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            // SAFETY: valid pointers; the handler only uses async-signal-safe operations.
            let rc = unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut())
            };
            if rc != 0 {
                ACTIVE.store(false, Ordering::SeqCst);
                return Err(Error::Profiler(format!(
                    "installing the SIGPROF handler: {}",
                    std::io::Error::last_os_error()
                )));
            }
            Ok(Self { stopped: false })
        }

        /// Stops counting and chaining (the handler stays installed but returns at once, until
        /// pprof's guard sets `SIGPROF` to ignored), waits up to a second for invocations in
        /// flight, and returns the counts: one row per thread, the overflow row (tid 0) last
        /// when it holds any.
        pub(crate) fn stop(&mut self) -> Vec<ThreadCounts> {
            self.halt();
            let mut rows: Vec<ThreadCounts> = TABLE
                .iter()
                .filter(|s| s.tid.load(Ordering::Relaxed) != 0)
                .map(Slot::read)
                .collect();
            let overflow = OVERFLOW.read();
            if overflow.system_call + overflow.in_libc + overflow.chained > 0 {
                rows.push(overflow);
            }
            rows
        }

        fn halt(&mut self) {
            if self.stopped {
                return;
            }
            self.stopped = true;
            ACTIVE.store(false, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(1);
            while IN_FLIGHT.load(Ordering::SeqCst) != 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            self.halt();
        }
    }

    /// The interrupted instruction address.
    ///
    /// # Safety
    /// `ucontext` is the third argument of an `SA_SIGINFO` handler (or null).
    unsafe fn interrupted_pc(ucontext: *mut libc::c_void) -> usize {
        if ucontext.is_null() {
            return 0;
        }
        let uc = ucontext.cast::<libc::ucontext_t>();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel's ucontext for this signal.
        let pc = unsafe { (*uc).uc_mcontext.gregs[libc::REG_RIP as usize] as usize };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the kernel's ucontext for this signal.
        let pc = unsafe { (*uc).uc_mcontext.pc as usize };
        pc
    }

    /// Whether the instruction ending at `pc` (or starting there: the kernel moves the PC back
    /// to the instruction to restart an interrupted call) is a system call. `[start, end)`
    /// is readable code holding `pc`.
    fn is_syscall_site(pc: usize, start: usize, end: usize) -> bool {
        // Checked arithmetic throughout: nothing in a signal handler may panic.
        let inside = |a: usize, len: usize| a >= start && a.checked_add(len).is_some_and(|e| e <= end);
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `a..a + 2` lies inside the readable mapping `[start, end)`.
            let at =
                |a: usize| inside(a, 2) && unsafe { std::ptr::read_unaligned(a as *const [u8; 2]) } == [0x0f, 0x05];
            pc.checked_sub(2).is_some_and(at) || at(pc)
        }
        #[cfg(target_arch = "aarch64")]
        {
            // SAFETY: `a..a + 4` lies inside the readable mapping `[start, end)`, aligned.
            let at = |a: usize| a % 4 == 0 && inside(a, 4) && unsafe { std::ptr::read(a as *const u32) } == 0xd400_0001;
            pc.checked_sub(4).is_some_and(at) || at(pc)
        }
    }

    /// Where `pc` is: `None` when outside every blocklisted range.
    fn classify(pc: usize) -> Option<Kind> {
        let n = RANGE_COUNT.load(Ordering::Relaxed).min(MAX_RANGES);
        for r in &RANGES[..n] {
            let (start, end) = (r.start.load(Ordering::Relaxed), r.end.load(Ordering::Relaxed));
            if !(start..end).contains(&pc) {
                continue;
            }
            let flags = r.flags.load(Ordering::Relaxed);
            let syscall = flags & 2 != 0 || (flags & 1 != 0 && is_syscall_site(pc, start, end));
            return Some(if syscall { Kind::SystemCall } else { Kind::InLibc });
        }
        None
    }

    /// The calling thread's row, claimed on its first sample.
    fn slot() -> &'static Slot {
        // SAFETY: gettid cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let first = (tid as u32 as usize).wrapping_mul(0x9E37_79B9) % SLOTS;
        for i in 0..SLOTS {
            let s = &TABLE[(first + i) % SLOTS];
            match s.tid.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: pthread_self and prctl(PR_GET_NAME) into a 16-byte buffer are
                    // async-signal-safe system calls / register reads.
                    let mut name = [0u8; 16];
                    unsafe {
                        s.pthread.store(libc::pthread_self() as u64, Ordering::Relaxed);
                        libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr());
                    }
                    name[15] = 0;
                    let (a, b) = name.split_at(8);
                    s.name[0].store(u64::from_ne_bytes(a.try_into().unwrap_or([0; 8])), Ordering::Relaxed);
                    s.name[1].store(u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])), Ordering::Relaxed);
                    return s;
                }
                Err(owner) if owner == tid => return s,
                Err(_) => {}
            }
        }
        &OVERFLOW
    }

    extern "C" fn on_sigprof(signal: libc::c_int, info: *mut libc::siginfo_t, ucontext: *mut libc::c_void) {
        // SAFETY: errno of the interrupted code is saved and restored around the handler.
        let errno = unsafe { *libc::__errno_location() };
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        if ACTIVE.load(Ordering::SeqCst) {
            // SAFETY: the kernel's ucontext.
            let pc = unsafe { interrupted_pc(ucontext) };
            match classify(pc) {
                Some(kind) => {
                    slot().counter(kind).fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    slot().counter(Kind::Chained).fetch_add(1, Ordering::Relaxed);
                    chain(signal, info, ucontext);
                }
            }
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
    }

    /// Runs the action that was installed before ours (pprof's).
    fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, ucontext: *mut libc::c_void) {
        let previous = PREVIOUS.load(Ordering::Relaxed);
        if previous == libc::SIG_DFL || previous == libc::SIG_IGN || previous == libc::SIG_ERR {
            return;
        }
        if PREVIOUS_SIGINFO.load(Ordering::Relaxed) {
            // SAFETY: `previous` is the `sa_sigaction` of an SA_SIGINFO action read by
            // sigaction(2): a handler with this signature.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(previous) };
            f(signal, info, ucontext);
        } else {
            // SAFETY: `previous` is the `sa_handler` of a non-SA_SIGINFO action.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(previous) };
            f(signal);
        }
    }
}

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
mod imp {
    use super::{Range, ThreadCounts};
    use crate::error::Result;

    /// Elsewhere pprof's handler runs alone; samples in blocklisted code are dropped by it.
    #[derive(Debug)]
    pub(crate) struct Guard;

    impl Guard {
        pub(crate) fn install(_ranges: &[Range]) -> Result<Self> {
            Ok(Self)
        }

        pub(crate) fn stop(&mut self) -> Vec<ThreadCounts> {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_executable_blocklisted_mappings() {
        let maps = "\
55d0c0000000-55d0c0010000 r-xp 00001000 08:01 123 /usr/bin/app
7f0000000000-7f0000020000 r--p 00000000 08:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000020000-7f0000190000 r-xp 00020000 08:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
7f00001a0000-7f00001b0000 r-xp 00001000 08:01 9 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7fff00000000-7fff00002000 r-xp 00000000 00:00 0 [vdso]
7fff00002000-7fff00003000 --xp 00000000 00:00 0 /lib/ld-linux-x86-64.so.2
";
        let r = blocklisted_ranges(maps, &["/libc.so", "/ld-linux", "vdso"]);
        assert_eq!(
            r,
            vec![
                Range {
                    start: 0x7f0000020000,
                    end: 0x7f0000190000,
                    readable: true,
                    vdso: false
                },
                Range {
                    start: 0x7fff00000000,
                    end: 0x7fff00002000,
                    readable: true,
                    vdso: true
                },
                Range {
                    start: 0x7fff00002000,
                    end: 0x7fff00003000,
                    readable: false,
                    vdso: false
                },
            ]
        );
    }
}
