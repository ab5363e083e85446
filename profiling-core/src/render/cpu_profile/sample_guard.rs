//! The sampler: `setitimer(ITIMER_PROF)` and a `SIGPROF` handler that accounts for every
//! sample and unwinds the ones it can.
//!
//! [`Guard::start`] installs the handler (`SA_SIGINFO | SA_RESTART`) and starts the
//! process's profiling timer at the requested frequency. At each signal the handler:
//!
//! - looks up the interrupted instruction address (`RIP` / `PC` in the `ucontext`) in a
//!   fixed table of address ranges of blocklisted code (libc, libgcc, pthread, the loader,
//!   the vDSO), computed from `/proc/self/maps` before the profile starts: unwinding from
//!   there can deadlock on a lock the interrupted code holds;
//! - in one of them, counts the sample as a [system call](Kind::SystemCall) when the
//!   instruction just before (or at, for a call the kernel restarts) the address is `syscall`
//!   (x86_64 `0f 05`) / `svc #0` (aarch64 `d4000001`) or the address is in the vDSO, else as
//!   [in libc](Kind::InLibc);
//! - elsewhere, unwinds the thread with `backtrace::trace_unsynchronized` (libgcc's unwinder,
//!   which keeps the innermost frame; what pprof-rs does in its handler), drops the frames of
//!   the handler itself (those before the one at the interrupted address) and counts the
//!   stack in the [`stack_table`](super::stack_table) as [unwound](Kind::Unwound); a stack
//!   the table has no room for, or an unwind that gave no frame, is counted as
//!   [not unwound](Kind::NotUnwound).
//!
//! Counts go, with atomics only (no allocation, no lock: async-signal-safe), into a fixed
//! table of threads keyed by thread id (`gettid`), which also records the thread's name
//! (`PR_GET_NAME`) at its first sample. Every invocation while the
//! profile runs is counted in exactly one kind, so `taken` is the sum of the kinds.
//!
//! The system-call test reads the code bytes before the address: an instruction elsewhere in
//! libc that happens to end in the same bytes would be counted as a system call rather than
//! as in libc (both are leaves under the thread; only the label would be wrong).
//!
//! [`Guard::stop`] stops the timer, makes the handler a no-op, waits for invocations in
//! flight to return, restores the previous `SIGPROF` action (a default action becomes
//! "ignored": a signal still pending must not end the process) and the previous timer, and
//! hands over the counts and the stack table. Linux on x86_64 and aarch64 only: elsewhere
//! [`Guard::start`] returns an error.

/// What happened to one sample the handler saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Interrupted right after (or at) a system call instruction, or in the vDSO.
    SystemCall,
    /// Interrupted elsewhere in a blocklisted library (libc, libgcc, pthread, the loader).
    InLibc,
    /// Unwound and counted in the stack table.
    Unwound,
    /// To be unwound, but the unwinder gave no frame or the stack table had no room for it.
    NotUnwound,
}

/// One thread's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThreadCounts {
    /// The thread's row: what the stack table's [`Stack::thread`](super::stack_table::Stack)
    /// refers to.
    pub row: u32,
    /// Kernel thread id (0: the overflow row, threads beyond the table's size).
    pub tid: i32,
    /// The thread's name (`PR_GET_NAME`) when its first sample was counted.
    pub name: String,
    pub system_call: u64,
    pub in_libc: u64,
    pub unwound: u64,
    pub not_unwound: u64,
}

/// What a stopped profile collected: the threads' counts and the unwound stacks.
#[derive(Debug)]
pub(crate) struct Samples {
    /// One row per thread that was sampled; the overflow row (tid 0) last when it holds any.
    pub threads: Vec<ThreadCounts>,
    /// The unwound stacks; `None` where sampling is not supported.
    pub table: Option<super::stack_table::Table>,
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
    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::super::stack_table::{self, Table};
    use super::{Kind, Range, Samples, ThreadCounts};
    use crate::error::{Error, Result};

    /// Most blocklisted ranges kept (a process has a handful: libc, libgcc, ld.so, vDSO).
    const MAX_RANGES: usize = 64;
    /// Threads counted one by one; more share the overflow row.
    const SLOTS: usize = 1024;
    /// Frames unwound in the handler: the stack's [`stack_table::MAX_DEPTH`] and the
    /// handler's own frames above it (the unwinder's, this module's, the signal trampoline).
    const CAPTURE: usize = stack_table::MAX_DEPTH + 32;

    struct AtomicRange {
        start: AtomicUsize,
        end: AtomicUsize,
        /// Bit 0: readable; bit 1: vDSO.
        flags: AtomicUsize,
    }

    struct Slot {
        tid: AtomicI32,
        name: [AtomicU64; 2],
        system_call: AtomicU64,
        in_libc: AtomicU64,
        unwound: AtomicU64,
        not_unwound: AtomicU64,
    }

    impl Slot {
        const fn new() -> Self {
            Self {
                tid: AtomicI32::new(0),
                name: [AtomicU64::new(0), AtomicU64::new(0)],
                system_call: AtomicU64::new(0),
                in_libc: AtomicU64::new(0),
                unwound: AtomicU64::new(0),
                not_unwound: AtomicU64::new(0),
            }
        }

        fn counter(&self, kind: Kind) -> &AtomicU64 {
            match kind {
                Kind::SystemCall => &self.system_call,
                Kind::InLibc => &self.in_libc,
                Kind::Unwound => &self.unwound,
                Kind::NotUnwound => &self.not_unwound,
            }
        }

        fn reset(&self) {
            self.tid.store(0, Ordering::Relaxed);
            for n in &self.name {
                n.store(0, Ordering::Relaxed);
            }
            for k in [Kind::SystemCall, Kind::InLibc, Kind::Unwound, Kind::NotUnwound] {
                self.counter(k).store(0, Ordering::Relaxed);
            }
        }

        fn read(&self, row: usize) -> ThreadCounts {
            let mut name = [0u8; 16];
            name[..8].copy_from_slice(&self.name[0].load(Ordering::Relaxed).to_ne_bytes());
            name[8..].copy_from_slice(&self.name[1].load(Ordering::Relaxed).to_ne_bytes());
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            ThreadCounts {
                row: row as u32,
                tid: self.tid.load(Ordering::Relaxed),
                name: String::from_utf8_lossy(&name[..len]).into_owned(),
                system_call: self.system_call.load(Ordering::Relaxed),
                in_libc: self.in_libc.load(Ordering::Relaxed),
                unwound: self.unwound.load(Ordering::Relaxed),
                not_unwound: self.not_unwound.load(Ordering::Relaxed),
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
    /// Rows `0..SLOTS` one thread each, row `SLOTS` the overflow row.
    static TABLE: [Slot; SLOTS + 1] = [const { Slot::new() }; SLOTS + 1];
    /// The stack table of the running profile (null outside one).
    static STACKS: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());
    /// Counting on; off, the handler returns at once.
    static ACTIVE: AtomicBool = AtomicBool::new(false);
    /// Handler invocations that have not returned.
    static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

    /// The sampler of the running profile (only one profile runs at a time: the caller
    /// holds `cpu_profile`'s RUNNING flag).
    pub(crate) struct Guard {
        /// Boxed: the handler reads it through [`STACKS`], so its address must not move.
        table: Option<Box<Table>>,
        previous_action: libc::sigaction,
        previous_timer: libc::itimerval,
        /// Whether our timer was set (and `previous_timer` read): only then is it put back.
        timer_set: bool,
        stopped: bool,
    }

    impl std::fmt::Debug for Guard {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Guard")
                .field("table", &self.table)
                .field("stopped", &self.stopped)
                .finish()
        }
    }

    fn os_error(what: &str) -> Error {
        Error::Profiler(format!("{what}: {}", std::io::Error::last_os_error()))
    }

    impl Guard {
        /// Records `ranges`, clears the counts, maps a stack table, installs the handler and
        /// starts the profiling timer at `frequency_hz` (1..=1000).
        pub(crate) fn start(ranges: &[Range], frequency_hz: i32) -> Result<Self> {
            if ranges.len() > MAX_RANGES {
                return Err(Error::Profiler(format!(
                    "{} blocklisted code ranges, at most {MAX_RANGES} supported",
                    ranges.len()
                )));
            }
            let table = Box::new(Table::new(stack_table::BUCKETS, stack_table::FRAMES)?);
            // No handler of ours runs now: the last profile ended with ACTIVE false and no
            // invocation in flight, and only one profile runs at a time.
            for (slot, r) in RANGES.iter().zip(ranges) {
                slot.start.store(r.start, Ordering::Relaxed);
                slot.end.store(r.end, Ordering::Relaxed);
                slot.flags
                    .store(usize::from(r.readable) | usize::from(r.vdso) << 1, Ordering::Relaxed);
            }
            RANGE_COUNT.store(ranges.len(), Ordering::Relaxed);
            for s in &TABLE {
                s.reset();
            }
            // The unwinder's first use on a process sets up its state (libgcc's lookup of
            // each object's unwind tables): do it here, not in the first signal. Walking
            // the frames resolves no symbol.
            backtrace::trace(|_| true);
            STACKS.store(std::ptr::from_ref::<Table>(&table).cast_mut(), Ordering::SeqCst);
            ACTIVE.store(true, Ordering::SeqCst);
            // SAFETY: a zeroed `sigaction` is valid; the fields set below make it ours.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction =
                on_sigprof as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            // SAFETY: zeroed, valid out-value.
            let mut previous_action: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers; the handler only uses async-signal-safe operations.
            let rc = unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGPROF, &action, &mut previous_action)
            };
            let mut guard = Self {
                table: Some(table),
                previous_action,
                // SAFETY: a zeroed `itimerval` is valid (a stopped timer).
                previous_timer: unsafe { std::mem::zeroed() },
                timer_set: false,
                stopped: false,
            };
            if rc != 0 {
                let e = os_error("installing the SIGPROF handler");
                guard.stopped = true;
                ACTIVE.store(false, Ordering::SeqCst);
                STACKS.store(std::ptr::null_mut(), Ordering::SeqCst);
                return Err(e);
            }
            let period_us = 1_000_000 / i64::from(frequency_hz.clamp(1, 1_000_000));
            let interval = libc::timeval {
                tv_sec: (period_us / 1_000_000) as libc::time_t,
                tv_usec: (period_us % 1_000_000) as libc::suseconds_t,
            };
            let timer = libc::itimerval {
                it_interval: interval,
                it_value: interval,
            };
            // SAFETY: valid pointers.
            if unsafe { libc::setitimer(libc::ITIMER_PROF, &timer, &mut guard.previous_timer) } != 0 {
                // Dropping `guard` restores the action and unmaps the table.
                return Err(os_error("starting the profiling timer"));
            }
            guard.timer_set = true;
            Ok(guard)
        }

        /// Stops sampling (see the module docs) and returns what was collected. An error if a
        /// handler did not return within a second: its table is then left mapped (it may
        /// still write there) and the samples are not read.
        pub(crate) fn stop(&mut self) -> Result<Samples> {
            if !self.halt() {
                // A handler may still write to the table: never unmap it.
                std::mem::forget(self.table.take());
                return Err(Error::Profiler(
                    "a SIGPROF handler did not return within 1 s of the profile's end".to_owned(),
                ));
            }
            let mut threads: Vec<ThreadCounts> = TABLE[..SLOTS]
                .iter()
                .enumerate()
                .filter(|(_, s)| s.tid.load(Ordering::Relaxed) != 0)
                .map(|(i, s)| s.read(i))
                .collect();
            let overflow = TABLE[SLOTS].read(SLOTS);
            if overflow.system_call + overflow.in_libc + overflow.unwound + overflow.not_unwound > 0 {
                threads.push(overflow);
            }
            Ok(Samples {
                threads,
                table: self.table.take().map(|t| *t),
            })
        }

        /// Stops the timer and the handler and restores what was there before. False if an
        /// invocation was still in flight after a second.
        fn halt(&mut self) -> bool {
            if self.stopped {
                return true;
            }
            self.stopped = true;
            if self.timer_set {
                // SAFETY: valid pointer; the previous timer (usually stopped) is put back.
                unsafe { libc::setitimer(libc::ITIMER_PROF, &self.previous_timer, std::ptr::null_mut()) };
            }
            ACTIVE.store(false, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(1);
            while IN_FLIGHT.load(Ordering::SeqCst) != 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(50));
            }
            let done = IN_FLIGHT.load(Ordering::SeqCst) == 0;
            STACKS.store(std::ptr::null_mut(), Ordering::SeqCst);
            let mut previous = self.previous_action;
            if previous.sa_sigaction == libc::SIG_DFL {
                // SIGPROF's default action ends the process: one generated before the timer
                // stopped and not yet delivered must not. Ignoring it also discards it.
                previous.sa_sigaction = libc::SIG_IGN;
            }
            // SAFETY: an action read by sigaction(2), valid pointers.
            unsafe { libc::sigaction(libc::SIGPROF, &previous, std::ptr::null_mut()) };
            done
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if !self.halt() {
                std::mem::forget(self.table.take());
            }
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
    fn slot() -> usize {
        // SAFETY: gettid cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let first = (tid as u32 as usize).wrapping_mul(0x9E37_79B9) % SLOTS;
        for i in 0..SLOTS {
            let row = (first + i) % SLOTS;
            let s = &TABLE[row];
            match s.tid.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: prctl(PR_GET_NAME) into a 16-byte buffer is an
                    // async-signal-safe system call.
                    let mut name = [0u8; 16];
                    unsafe {
                        libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr());
                    }
                    name[15] = 0;
                    let (a, b) = name.split_at(8);
                    s.name[0].store(u64::from_ne_bytes(a.try_into().unwrap_or([0; 8])), Ordering::Relaxed);
                    s.name[1].store(u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])), Ordering::Relaxed);
                    return row;
                }
                Err(owner) if owner == tid => return row,
                Err(_) => {}
            }
        }
        SLOTS
    }

    /// Unwinds the interrupted thread and counts its stack in the table: false when the
    /// unwinder gave no frame or the table had no room.
    fn unwind(row: usize, pc: usize) -> bool {
        let mut ips = [0usize; CAPTURE];
        let mut n = 0;
        // SAFETY: no other unwind of this thread runs (SIGPROF is blocked while its handler
        // runs), and the interrupted code is outside libc, libgcc and the loader, so no lock
        // the unwinder takes is held by it.
        unsafe {
            backtrace::trace_unsynchronized(|frame| {
                if n < CAPTURE {
                    ips[n] = frame.ip() as usize;
                    n += 1;
                    true
                } else {
                    false
                }
            });
        }
        // The frames before the interrupted instruction are the handler's own (the unwinder,
        // this function, the signal trampoline): found, they are dropped here; else the
        // report drops them by name.
        let (stack, from_interrupted) = match ips[..n].iter().position(|&ip| ip == pc && pc != 0) {
            Some(i) => (&ips[i..n], true),
            None => (&ips[..n], false),
        };
        let stack = &stack[..stack.len().min(stack_table::MAX_DEPTH)];
        let table = STACKS.load(Ordering::Acquire);
        // SAFETY: non-null, STACKS points to the running profile's table, which is unmapped
        // only after ACTIVE is false and no invocation is in flight (`Guard::halt`).
        !table.is_null() && unsafe { &*table }.record(row as u32, from_interrupted, stack)
    }

    extern "C" fn on_sigprof(_signal: libc::c_int, _info: *mut libc::siginfo_t, ucontext: *mut libc::c_void) {
        // SAFETY: errno of the interrupted code is saved and restored around the handler.
        let errno = unsafe { *libc::__errno_location() };
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        if ACTIVE.load(Ordering::SeqCst) {
            // SAFETY: the kernel's ucontext.
            let pc = unsafe { interrupted_pc(ucontext) };
            let row = slot();
            let kind = match classify(pc) {
                Some(kind) => kind,
                None if unwind(row, pc) => Kind::Unwound,
                None => Kind::NotUnwound,
            };
            TABLE[row].counter(kind).fetch_add(1, Ordering::Relaxed);
        }
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
    }
}

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
mod imp {
    use super::{Range, Samples};
    use crate::error::{Error, Result};

    /// Sampling needs the interrupted address from the signal context and `gettid`.
    #[derive(Debug)]
    pub(crate) struct Guard;

    impl Guard {
        pub(crate) fn start(_ranges: &[Range], _frequency_hz: i32) -> Result<Self> {
            Err(Error::Profiler(
                "sampled CPU profiles need Linux on x86_64 or aarch64".to_owned(),
            ))
        }

        pub(crate) fn stop(&mut self) -> Result<Samples> {
            Ok(Samples {
                threads: Vec::new(),
                table: None,
            })
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
