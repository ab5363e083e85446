//! Where a memory sample is read: [`read_sample`] takes one [`MemorySample`] (resident and
//! virtual size, live heap, threads, process CPU, calls recorded) and, for the leak
//! analysis, a [`FunctionObservation`]: how many bytes each annotated function has kept so
//! far. The series of these readings is kept by [`crate::analyze::memory::MemorySampler`].

use serde::{Deserialize, Serialize};

/// One reading of the process's memory and CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    /// When, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Virtual size, bytes.
    pub virtual_bytes: u64,
    /// Live heap counted by the [`crate::ProfilingAllocator`]; `None` when it is not installed.
    pub heap_bytes: Option<u64>,
    /// Threads in the process.
    pub threads: u64,
    /// Process CPU time (user + system), ns, from `CLOCK_PROCESS_CPUTIME_ID`.
    pub process_cpu_ns: u64,
    /// User CPU time, ns (clock-tick resolution).
    pub user_cpu_ns: u64,
    /// System CPU time, ns (clock-tick resolution).
    pub system_cpu_ns: u64,
    /// Calls recorded in the current window, all functions together.
    pub profiled_calls: u64,
    /// The profiling window (see [`crate::record::snapshot::Window::epoch`]) the call count belongs to.
    pub window_epoch: u64,
}

impl MemorySample {
    /// The memory series the analyses use: live heap when counted, otherwise RSS.
    pub fn tracked_bytes(&self) -> u64 {
        self.heap_bytes.unwrap_or(self.rss_bytes)
    }
}

/// Bytes one function has kept so far in a window: allocated minus freed during its calls,
/// exclusive of annotated callees.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRetention {
    /// Function name.
    pub function: String,
    /// Calls so far.
    pub calls: u64,
    /// Net bytes (allocated minus freed) so far; negative when it frees more than it allocates.
    pub net_bytes: i64,
}

/// Every function's retention at one sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionObservation {
    /// When, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// The window the figures belong to (they restart at each reset).
    pub window_epoch: u64,
    /// Functions with at least one call.
    pub functions: Vec<FunctionRetention>,
}

/// Reads one sample now.
pub fn read_sample() -> MemorySample {
    read_sample_and_functions().0
}

/// Reads one sample and every function's retention at the same instant (one snapshot).
pub(crate) fn read_sample_and_functions() -> (MemorySample, FunctionObservation) {
    let snap = crate::snapshot();
    let proc_stats = crate::record::process::process_stats().unwrap_or_default();
    let alloc = crate::record::alloc_report::allocation_totals();
    let at_unix_ms = snap.window.taken_unix_ms;
    let sample = MemorySample {
        at_unix_ms,
        rss_bytes: proc_stats.rss_bytes,
        virtual_bytes: proc_stats.virtual_bytes,
        heap_bytes: alloc.installed.then_some(alloc.live_bytes),
        threads: proc_stats.threads,
        process_cpu_ns: crate::record::clock::process_cpu_ns(),
        user_cpu_ns: proc_stats.user_cpu_ns,
        system_cpu_ns: proc_stats.system_cpu_ns,
        profiled_calls: snap.functions.iter().map(|f| f.calls).sum(),
        window_epoch: snap.window.epoch,
    };
    let obs = FunctionObservation {
        at_unix_ms,
        window_epoch: snap.window.epoch,
        functions: snap
            .functions
            .iter()
            .map(|f| FunctionRetention {
                function: f.name.clone(),
                calls: f.calls,
                net_bytes: f.alloc_self.net_bytes(),
            })
            .collect(),
    };
    (sample, obs)
}

/// The series the memory analyses follow over `samples`: `"heap"` when every sample has a
/// counted live heap, `"rss"` otherwise (and for no samples).
pub fn tracked_series(samples: &[MemorySample]) -> &'static str {
    if !samples.is_empty() && samples.iter().all(|s| s.heap_bytes.is_some()) {
        "heap"
    } else {
        "rss"
    }
}
