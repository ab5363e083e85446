//! Where sampled CPU profiles are taken: on demand for N seconds, or around a closure;
//! rendered as a flamegraph SVG, folded text, or a gzip pprof protobuf that `go tool pprof`
//! and other standard tooling read.
//!
//! - Sampling is process-wide (`setitimer(ITIMER_PROF)` + `SIGPROF`, our own handler in
//!   `cpu_profile/sample_guard.rs`), at [`DEFAULT_FREQUENCY_HZ`] by default. The kernel tick
//!   caps what a process receives (about 250 signals per second here), so samples are
//!   converted to time from the process CPU time measured over the profile, not from the
//!   nominal rate: each sample stands for `measured CPU / samples taken`.
//! - The handler unwinds with libgcc's unwinder (through `backtrace::trace_unsynchronized`,
//!   as pprof-rs does), which keeps the innermost frame, and drops its own frames up to the
//!   interrupted instruction. Stacks go into a fixed, lock-free table mapped for the profile
//!   and unmapped after it (`cpu_profile/stack_table.rs`: at most 131,072 distinct (thread,
//!   stack) pairs and 1,048,576 frames in all, 12 MiB of address space, resident only as
//!   used).
//! - Every sample is accounted for. Unwinding from libc, libgcc, the loader or the vDSO
//!   ([`BLOCKLIST`]) can deadlock, so the handler (Linux, x86_64 and aarch64; elsewhere a
//!   profile is refused at its start) looks at the interrupted instruction first: in
//!   blocklisted code it counts the sample, with atomics only, as a leaf under its thread,
//!   [`SYSTEM_CALL_FRAME`] when the thread was interrupted at a system call (the instruction
//!   before is `syscall` / `svc #0`) or in the vDSO, else [`IN_LIBC_FRAME`]; elsewhere it
//!   unwinds. A sample whose unwind gave no frame or whose stack the table had no room for is
//!   the leaf [`NOT_UNWOUND_FRAME`]. All of them share the measured CPU equally, so time
//!   spent in system calls is not credited to the user code that happened to be unwound.
//!   [`CpuProfile::sample_counts`] says how many samples were taken and how many unwound
//!   (also in the flamegraph subtitle and the pprof comments).
//! - What is not known: the functions that called into libc or made the system call (their
//!   time shows under the thread, not under them).
//! - One profile at a time per process: a second request gets [`Error::ProfilerBusy`].
//! - Samples are symbolized here (`cpu_profile/symbolize.rs`, [`SymbolizeMode`]; not `backtrace`, whose
//!   process-wide cache holds the whole binary's parsed debug information): the ELF symbol
//!   table, and DWARF one compilation unit at a time where there is some; [`SYMBOLIZE_ENV`]
//!   (`PROFILING_CPU_SYMBOLIZE=debuginfo|symbols`, default `debuginfo`) chooses. Memory
//!   figures in `docs/reliability.md` (a profile added +1.6 to +8.5 MiB of RSS while it ran in
//!   the soak test, and gave it back after).
//! - The `pprof` crate is used for its protobuf types only ([`protos`]).
//!
//! Only with the `profiling-full` feature.
//!
//! (Over 500 lines with its unit tests: the code is the first 545 lines, one profile's life
//! from start to pprof output; the signal handler, the stack table, the sample accounting
//! and the symbolizer are submodules.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use pprof::protos::Message;

/// The pprof protobuf messages (`Profile`, `Sample`, ...) and prost's `Message` to decode them.
pub use pprof::protos;

use crate::error::{Error, Result};
use crate::render::flamegraph::{self, SvgOptions, Unit};
use crate::render::fold::{self, FoldedStack};
use crate::render::pprof::maps::Mappings;
use crate::render::pprof::{unix_nanos, FrameInfo, ProfileBuilder};

/// Default sampling frequency, Hz: not a multiple of common timer periods, so sampling does
/// not lock step with periodic work.
pub const DEFAULT_FREQUENCY_HZ: i32 = 99;
/// Longest profile [`profile_cpu`] accepts, seconds.
pub const MAX_SECONDS: u64 = 60;
/// Code that is never unwound from (see the module docs): mappings whose path contains one
/// of these. Matched on the path (`/libc.so`, not `libc`, which would also catch
/// `libcrypto` or `libcurl`).
pub const BLOCKLIST: [&str; 8] = [
    "/libc.so",
    "/libc-",
    "/libgcc_s",
    "/libpthread",
    "/ld-linux",
    "/ld-musl",
    "/libc.musl",
    "vdso",
];
/// Leaf of samples taken at a system call or in the vDSO, under their thread.
pub const SYSTEM_CALL_FRAME: &str = "[system call]";
/// Leaf of samples taken elsewhere in blocklisted code, under their thread.
pub const IN_LIBC_FRAME: &str = "[in libc]";
/// Leaf of samples passed to the unwinder that it did not record, under their thread.
pub const NOT_UNWOUND_FRAME: &str = "[not unwound]";

mod accounting;
mod sample_guard;
mod stack_table;
pub(crate) mod symbolize;

pub use accounting::SampleCounts;
use accounting::{leaf_samples, marker_address, thread_labels};
pub use symbolize::{Mode as SymbolizeMode, SYMBOLIZE_ENV};

static RUNNING: AtomicBool = AtomicBool::new(false);

/// Whether a CPU profile is being taken right now.
pub fn is_running() -> bool {
    RUNNING.load(Ordering::Acquire)
}

/// A sampling CPU profiler that is running; [`CpuSampler::finish`] stops it and returns the
/// profile. Dropping it without finishing stops sampling and discards the samples.
#[must_use = "sampling stops when the sampler is dropped"]
pub struct CpuSampler {
    guard: Option<sample_guard::Guard>,
    frequency_hz: i32,
    symbolize: symbolize::Mode,
    start_time: SystemTime,
    started: Instant,
    cpu_at_start: u64,
}

/// When and how long a profile ran, and the CPU it measured.
#[derive(Clone, Copy, Debug)]
struct Timing {
    cpu_ns: u64,
    wall: Duration,
    start_time: SystemTime,
    frequency_hz: i32,
}

impl std::fmt::Debug for CpuSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuSampler")
            .field("frequency_hz", &self.frequency_hz)
            .field("elapsed", &self.started.elapsed())
            .finish()
    }
}

impl CpuSampler {
    /// Starts sampling every thread of the process at `frequency_hz` (1..=1000).
    ///
    /// [`Error::ProfilerBusy`] if a profile is already being taken.
    pub fn start(frequency_hz: i32) -> Result<Self> {
        if !(1..=1000).contains(&frequency_hz) {
            return Err(Error::InvalidConfig(format!(
                "sampling frequency must be in 1..=1000 Hz, got {frequency_hz}"
            )));
        }
        let symbolize = symbolize::Mode::from_env()?;
        if RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::ProfilerBusy);
        }
        // Computed before sampling starts: the handler only reads them.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let ranges = sample_guard::blocklisted_ranges(&maps, &BLOCKLIST);
        let start_time = SystemTime::now();
        let started = Instant::now();
        let cpu_at_start = crate::record::clock::process_cpu_ns();
        let guard = match sample_guard::Guard::start(&ranges, frequency_hz) {
            Ok(g) => g,
            Err(e) => {
                RUNNING.store(false, Ordering::Release);
                return Err(e);
            }
        };
        Ok(Self {
            guard: Some(guard),
            frequency_hz,
            symbolize,
            start_time,
            started,
            cpu_at_start,
        })
    }

    /// Stops sampling and symbolizes the samples.
    pub fn finish(mut self) -> Result<CpuProfile> {
        let cpu_ns = crate::record::clock::process_cpu_ns().saturating_sub(self.cpu_at_start);
        let wall = self.started.elapsed();
        let Some(mut guard) = self.guard.take() else {
            return Err(Error::Profiler("sampler already finished".to_owned()));
        };
        // The timer and the handler stop here: the counts and the stack table are final.
        let samples = guard.stop();
        drop(guard);
        // Let the next profile start while this one is symbolized (the table is this
        // profile's own, freed below).
        RUNNING.store(false, Ordering::Release);
        let samples = samples?;
        let profile = CpuProfile::from_samples(
            &samples,
            Timing {
                cpu_ns,
                wall,
                start_time: self.start_time,
                frequency_hz: self.frequency_hz,
            },
            self.symbolize,
        );
        drop(samples);
        release_freed_memory();
        Ok(profile)
    }
}

impl Drop for CpuSampler {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            RUNNING.store(false, Ordering::Release);
        }
    }
}

/// Gives the pages freed by a symbolization back to the system: glibc's malloc keeps freed
/// memory in its arenas otherwise, so RSS would stay higher after a profile even though the
/// live heap is back (by 100 MiB when symbolizing went through `backtrace`'s cache, before
/// our own symbolizer). No-op with other C libraries.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Samples the whole process for `duration` (1..=[`MAX_SECONDS`] s) at
/// [`DEFAULT_FREQUENCY_HZ`]. Blocks the calling thread for `duration`: from async code call
/// it in `spawn_blocking`.
pub fn profile_cpu(duration: Duration) -> Result<CpuProfile> {
    profile_cpu_at(duration, DEFAULT_FREQUENCY_HZ)
}

/// [`profile_cpu`] at another frequency.
pub fn profile_cpu_at(duration: Duration, frequency_hz: i32) -> Result<CpuProfile> {
    check_duration(duration)?;
    let sampler = CpuSampler::start(frequency_hz)?;
    std::thread::sleep(duration);
    sampler.finish()
}

/// Checks a requested profile length: 1 to [`MAX_SECONDS`] seconds.
pub fn check_duration(duration: Duration) -> Result<()> {
    if duration < Duration::from_secs(1) || duration > Duration::from_secs(MAX_SECONDS) {
        return Err(Error::InvalidConfig(format!(
            "profile length must be 1 to {MAX_SECONDS} seconds, got {:.3} s",
            duration.as_secs_f64()
        )));
    }
    Ok(())
}

/// Runs `f` while sampling the process at `frequency_hz`; returns its result and the profile.
pub fn profile_cpu_while<R>(frequency_hz: i32, f: impl FnOnce() -> R) -> Result<(R, CpuProfile)> {
    let sampler = CpuSampler::start(frequency_hz)?;
    let r = f();
    Ok((r, sampler.finish()?))
}

/// A finished CPU profile.
#[derive(Clone)]
pub struct CpuProfile {
    /// Folded stacks, thread name first, values in samples.
    stacks: Vec<FoldedStack>,
    counts: SampleCounts,
    cpu_ns: u64,
    wall: Duration,
    frequency_hz: i32,
    profile: pprof::protos::Profile,
}

impl std::fmt::Debug for CpuProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuProfile")
            .field("counts", &self.counts)
            .field("cpu_ns", &self.cpu_ns)
            .field("wall", &self.wall)
            .field("frequency_hz", &self.frequency_hz)
            .field("stacks", &self.stacks.len())
            .finish()
    }
}

/// Rust legacy mangling leaves a `::h0123456789abcdef` hash on demangled names.
fn strip_hash(name: &str) -> &str {
    match name.rfind("::h") {
        Some(i) if name.len() - i == 19 && name[i + 3..].bytes().all(|b| b.is_ascii_hexdigit()) => &name[..i],
        _ => name,
    }
}

/// Frames of the profiler itself at the innermost end of every sample.
fn is_profiler_frame(name: &str) -> bool {
    name.starts_with("backtrace::") || name.contains("cpu_profile::sample_guard::") || name == "__restore_rt"
}

/// Index of the interrupted frame in a stack unwound from inside the signal handler (frames
/// innermost first, each as its symbols): the one past the profiler's own frames, and past
/// the signal trampoline (`__restore_rt`). In a stripped libc the trampoline has no symbol:
/// then the unnamed frame right after the handler is it, not the interrupted code; after a
/// named trampoline, an unnamed frame is the program's (a stripped library, generated
/// code). 0 when no frame is the profiler's.
fn first_frame_past_profiler(callers: &[Vec<FrameInfo>]) -> usize {
    let Some(last) = callers
        .iter()
        .rposition(|fs| fs.iter().any(|f| is_profiler_frame(&f.name)))
    else {
        return 0;
    };
    let trampoline_named = callers[last].iter().any(|f| f.name == "__restore_rt");
    if !trampoline_named && callers.get(last + 1).is_some_and(Vec::is_empty) {
        last + 2
    } else {
        last + 1
    }
}

impl CpuProfile {
    /// Symbolizes the raw samples: each frame's instruction address becomes a pprof location
    /// in the mapping that holds it (`/proc/self/maps`); the interrupted (leaf) frame keeps
    /// its exact address, callers use `return address - 1` (inside the call instruction), the
    /// address that both this symbolizer and `go tool pprof BINARY` resolve. Frames of the
    /// profiler itself (innermost, up to the signal trampoline), when the handler could not
    /// drop them, are removed by name.
    ///
    /// Then the samples that were not unwound (`samples.threads`, from our signal handler)
    /// become leaf frames under their thread, and every sample stands for `cpu_ns / taken`.
    fn from_samples(samples: &sample_guard::Samples, timing: Timing, mode: symbolize::Mode) -> Self {
        let Timing {
            cpu_ns,
            wall,
            start_time,
            frequency_hz,
        } = timing;
        let (leaves, counts) = leaf_samples(&samples.threads);
        let labels = thread_labels(&samples.threads);
        let label = |row: u32| labels.get(&row).map_or("[unknown thread]", String::as_str);
        let per_sample = cpu_ns.checked_div(counts.taken).unwrap_or(0);
        let maps = Mappings::current();
        let stacks = || samples.table.iter().flat_map(stack_table::Table::stacks);
        // Every frame's address as a caller (`ip - 1`) and as the interrupted instruction
        // (`ip`): which frame is the leaf is known only once the callers are named.
        let addrs: BTreeSet<u64> = stacks()
            .flat_map(|s| s.ips)
            .flat_map(|ip| [ip, ip.saturating_sub(1)])
            .collect();
        let symbols = symbolize::resolve(&addrs, &maps, mode);
        let resolve = |addr: u64| symbols.get(&addr).cloned().unwrap_or_default();
        let mut b = ProfileBuilder::new();
        let mut mapping_ids: HashMap<usize, u64> = HashMap::new();
        if let Some(main) = maps.0.first() {
            mapping_ids.insert(0, b.mapping(main));
        }
        let mut by_stack: BTreeMap<String, u64> = BTreeMap::new();
        for sample in stacks() {
            let count = sample.count;
            if count == 0 {
                continue;
            }
            let ips = &sample.ips;
            let callers: Vec<Vec<FrameInfo>> = ips.iter().map(|&ip| resolve(ip.saturating_sub(1))).collect();
            let leaf = if sample.from_interrupted {
                0
            } else {
                first_frame_past_profiler(&callers)
            };
            let thread = label(sample.thread);
            let mut locations = Vec::new();
            let mut stack: Vec<String> = Vec::new();
            // An outermost frame with a null return address ends the stack.
            for (i, &ip) in ips.iter().enumerate().skip(leaf).take_while(|&(_, &ip)| ip > 1) {
                let (addr, info) = if i == leaf {
                    (ip, resolve(ip))
                } else {
                    (ip.saturating_sub(1), callers[i].clone())
                };
                let mapping_id = match maps.find(addr) {
                    Some(m) => *mapping_ids.entry(m).or_insert_with(|| b.mapping(&maps.0[m])),
                    None => 0,
                };
                if info.is_empty() {
                    stack.push(format!("{addr:#x}"));
                }
                stack.extend(info.iter().map(|f| fold::sanitize_frame(&f.name)));
                locations.push(b.location(addr, mapping_id, &info));
            }
            let cpu = count.saturating_mul(per_sample);
            b.sample(
                locations,
                vec![count as i64, i64::try_from(cpu).unwrap_or(i64::MAX)],
                &[("thread", thread)],
            );
            stack.push(fold::sanitize_frame(thread));
            stack.reverse();
            *by_stack.entry(stack.join(";")).or_default() += count;
        }
        for (row, frame, count) in leaves {
            let thread = label(row);
            let info = FrameInfo {
                name: frame.to_owned(),
                system_name: frame.to_owned(),
                file: String::new(),
                line: 0,
            };
            let addr = marker_address(frame);
            let mapping_id = match maps.find(addr) {
                Some(m) => *mapping_ids.entry(m).or_insert_with(|| b.mapping(&maps.0[m])),
                None => 0,
            };
            let location = b.location(addr, mapping_id, &[info]);
            let cpu = count.saturating_mul(per_sample);
            b.sample(
                vec![location],
                vec![count as i64, i64::try_from(cpu).unwrap_or(i64::MAX)],
                &[("thread", thread)],
            );
            let stack = format!("{};{frame}", fold::sanitize_frame(thread));
            *by_stack.entry(stack).or_default() += count;
        }
        let comments = [
            format!("samples_taken={}", counts.taken),
            format!("samples_unwound={}", counts.unwound),
            format!("samples_system_call={}", counts.system_call),
            format!("samples_in_libc={}", counts.in_libc),
            format!("samples_not_unwound={}", counts.not_unwound),
        ]
        .map(|c| b.string(&c));
        let stacks = by_stack
            .into_iter()
            .map(|(stack, value)| FoldedStack { stack, value })
            .collect();
        let nominal = 1_000_000_000 / i64::from(frequency_hz.max(1));
        let period = if per_sample > 0 { per_sample as i64 } else { nominal };
        let mut profile = b.finish(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds", period),
            unix_nanos(start_time),
            i64::try_from(wall.as_nanos()).unwrap_or(i64::MAX),
        );
        profile.comment = comments.to_vec();
        Self {
            stacks,
            counts,
            cpu_ns,
            wall,
            frequency_hz,
            profile,
        }
    }

    /// Samples in the profile: every sample taken, unwound or not ([`SampleCounts::taken`]).
    pub fn samples(&self) -> u64 {
        self.counts.taken
    }

    /// Samples taken ([`SampleCounts::taken`]).
    pub fn samples_taken(&self) -> u64 {
        self.counts.taken
    }

    /// Samples unwound into call stacks ([`SampleCounts::unwound`]).
    pub fn samples_unwound(&self) -> u64 {
        self.counts.unwound
    }

    /// What became of the samples: taken, unwound, and the kinds that were not unwound.
    pub fn sample_counts(&self) -> SampleCounts {
        self.counts
    }

    /// Process CPU time measured over the profile, ns.
    pub fn cpu_ns(&self) -> u64 {
        self.cpu_ns
    }

    /// Wall time the profile covered.
    pub fn wall(&self) -> Duration {
        self.wall
    }

    /// Nominal sampling frequency, Hz.
    pub fn frequency_hz(&self) -> i32 {
        self.frequency_hz
    }

    /// Measured CPU time each sample stands for, ns.
    pub fn ns_per_sample(&self) -> u64 {
        self.cpu_ns.checked_div(self.counts.taken).unwrap_or(0)
    }

    /// Folded stacks (thread name, then frames root first), values in samples.
    pub fn folded_samples(&self) -> &[FoldedStack] {
        &self.stacks
    }

    /// Folded stacks with values in ns of CPU (samples × measured CPU per sample; the values
    /// add up to the measured CPU time, give or take rounding).
    pub fn folded(&self) -> Vec<FoldedStack> {
        let (cpu, n) = (self.cpu_ns as u128, self.counts.taken.max(1) as u128);
        self.stacks
            .iter()
            .map(|l| FoldedStack {
                stack: l.stack.clone(),
                value: (l.value as u128 * cpu / n) as u64,
            })
            .collect()
    }

    /// Folded text, values in ns of CPU.
    pub fn folded_text(&self) -> String {
        fold::to_text(&self.folded())
    }

    /// Samples whose stack contains a frame whose name contains `needle`.
    pub fn samples_in(&self, needle: &str) -> u64 {
        self.stacks
            .iter()
            .filter(|l| l.stack.split(';').any(|f| f.contains(needle)))
            .map(|l| l.value)
            .sum()
    }

    /// Flamegraph SVG: width is sampled CPU time.
    pub fn flamegraph_svg(&self) -> Result<Vec<u8>> {
        let title = format!(
            "CPU (sampled) — {} of CPU in {:.1} s",
            flamegraph::format_value(self.cpu_ns, Unit::Nanoseconds),
            self.wall.as_secs_f64()
        );
        let subtitle = subtitle(&self.counts, self.frequency_hz, self.ns_per_sample());
        flamegraph::render(
            &self.folded(),
            &SvgOptions::new(title, Unit::Nanoseconds).subtitle(subtitle),
        )
    }

    /// The pprof `Profile` message (sample types: samples/count, cpu/nanoseconds).
    pub fn pprof(&self) -> &pprof::protos::Profile {
        &self.profile
    }

    /// The pprof protobuf, uncompressed.
    pub fn pprof_protobuf(&self) -> Vec<u8> {
        self.profile.encode_to_vec()
    }

    /// The pprof protobuf, gzip-compressed: what `go tool pprof` expects in a `.pb.gz`.
    pub fn pprof_gzip(&self) -> Result<Vec<u8>> {
        gzip(&self.pprof_protobuf())
    }
}

/// The flamegraph's subtitle: what its samples are, and every kind of leaf that stands for
/// samples that were not unwound.
fn subtitle(counts: &SampleCounts, frequency_hz: i32, ns_per_sample: u64) -> String {
    format!(
        "{} samples taken ({} unwound) at {} Hz nominal; each sample = {} of measured process CPU. \
         Root frames are threads; {SYSTEM_CALL_FRAME}, {IN_LIBC_FRAME} and {NOT_UNWOUND_FRAME} \
         are samples that were not unwound.",
        counts.taken,
        counts.unwound,
        frequency_hz,
        flamegraph::format_value(ns_per_sample, Unit::Nanoseconds)
    )
}

pub(crate) fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)
        .and_then(|_| enc.finish())
        .map_err(|e| Error::Render(format!("gzip: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame's symbols as the symbolizer gives them: one per function (inlined ones
    /// first), none for an address it cannot name.
    fn frame(names: &[&str]) -> Vec<FrameInfo> {
        names
            .iter()
            .map(|n| FrameInfo {
                name: (*n).to_owned(),
                system_name: (*n).to_owned(),
                file: String::new(),
                line: 0,
            })
            .collect()
    }

    #[test]
    fn the_interrupted_frame_is_past_the_handler_and_the_trampoline() {
        let handler = frame(&[
            "backtrace::trace",
            "profiling_core::render::cpu_profile::sample_guard::on_signal",
        ]);
        // Named trampoline (libc with symbols): the frame after it is the interrupted one.
        let named = [
            handler.clone(),
            frame(&["__restore_rt"]),
            frame(&["app::work"]),
            frame(&["main"]),
        ];
        assert_eq!(first_frame_past_profiler(&named), 2);
        // Unnamed trampoline (stripped libc): the unnamed frame right after the handler is
        // skipped as well.
        let unnamed = [handler.clone(), frame(&[]), frame(&["app::work"]), frame(&["main"])];
        assert_eq!(first_frame_past_profiler(&unnamed), 2);
        // An unnamed frame further out is the program's (a JIT, a stripped library): kept.
        let later = [handler, frame(&["__restore_rt"]), frame(&[]), frame(&["main"])];
        assert_eq!(first_frame_past_profiler(&later), 2);
        // No profiler frame (the handler dropped its own): the innermost frame is the leaf,
        // unnamed or not.
        assert_eq!(first_frame_past_profiler(&[frame(&[]), frame(&["main"])]), 0);
        assert_eq!(first_frame_past_profiler(&[]), 0);
    }

    #[test]
    fn strips_legacy_hashes_only() {
        assert_eq!(strip_hash("app::f::h0123456789abcdef"), "app::f");
        assert_eq!(strip_hash("app::hash"), "app::hash");
        assert_eq!(strip_hash("app::f::h0123"), "app::f::h0123");
    }

    #[test]
    fn every_sample_is_accounted_for_under_its_thread() {
        let row = |row, tid, name: &str, system_call, in_libc, unwound, not_unwound| sample_guard::ThreadCounts {
            row,
            tid,
            name: name.to_owned(),
            system_call,
            in_libc,
            unwound,
            not_unwound,
        };
        let counts = [
            row(3, 70, "worker", 5, 1, 3, 2),
            row(4, 80, "", 2, 0, 4, 0),
            row(1024, 0, "", 1, 0, 0, 0),
        ];
        let (leaves, total) = leaf_samples(&counts);
        assert_eq!(
            total,
            SampleCounts {
                taken: 7 + 8 + 1 + 2,
                unwound: 7,
                system_call: 8,
                in_libc: 1,
                not_unwound: 2,
            }
        );
        let labels = thread_labels(&counts);
        let leaves: Vec<(&str, &str, u64)> = leaves.iter().map(|(r, f, n)| (labels[r].as_str(), *f, *n)).collect();
        assert_eq!(
            leaves,
            [
                ("worker", SYSTEM_CALL_FRAME, 5),
                ("worker", IN_LIBC_FRAME, 1),
                ("worker", NOT_UNWOUND_FRAME, 2),
                ("80", SYSTEM_CALL_FRAME, 2),
                ("[other threads]", SYSTEM_CALL_FRAME, 1),
            ]
        );
    }

    #[test]
    fn subtitle_names_every_kind_of_sample_not_unwound() {
        let counts = SampleCounts {
            taken: 10,
            unwound: 6,
            system_call: 2,
            in_libc: 1,
            not_unwound: 1,
        };
        let s = subtitle(&counts, 99, 1_000_000);
        for marker in [SYSTEM_CALL_FRAME, IN_LIBC_FRAME, NOT_UNWOUND_FRAME] {
            assert!(s.contains(marker), "{marker} missing from {s:?}");
        }
        assert!(s.starts_with("10 samples taken (6 unwound) at 99 Hz"), "{s}");
    }

    #[test]
    fn marker_addresses_are_distinct_functions() {
        let a = [SYSTEM_CALL_FRAME, IN_LIBC_FRAME, NOT_UNWOUND_FRAME].map(marker_address);
        assert!(a[0] != a[1] && a[1] != a[2] && a[0] != a[2] && a.iter().all(|&x| x != 0));
    }

    #[test]
    fn rejects_out_of_range_lengths_and_frequencies() {
        assert!(check_duration(Duration::from_millis(500)).is_err());
        assert!(check_duration(Duration::from_secs(61)).is_err());
        assert!(check_duration(Duration::from_secs(60)).is_ok());
        assert!(matches!(CpuSampler::start(0), Err(Error::InvalidConfig(_))));
    }
}
