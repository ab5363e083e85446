//! Where CPU time is attributed to call-tree nodes.
//!
//! Reading the thread CPU clock is a system call (about 200 ns here), too dear for every
//! boundary of every call. The recorder already reads the TSC at every boundary (entry or
//! exit of an annotated frame), so it knows exactly how long each node was the innermost
//! frame (its *self segments*). It keeps those segments, merged per node, and reads the
//! CPU clock only when at least [`WINDOW_NS`] of wall time has passed since the last read
//! (or 32 distinct nodes are pending). The CPU consumed since the last read is then shared
//! among the pending nodes in proportion to their wall time in the window.
//!
//! What this gives:
//! - A segment of [`WINDOW_NS`] or more is read on its own: exact to the clock's precision.
//! - Shorter segments share a window of at most [`WINDOW_NS`] with their neighbours; error
//!   arises only when neighbours in one window differ in CPU/wall ratio, and is at most the
//!   window's CPU (50 µs) per read. For a function with at least 1 ms of CPU that is
//!   interleaved with others at sub-50 µs granularity, the error stays within a few percent
//!   unless its neighbours block or sleep in sub-50 µs slices.
//! - Cost: one read per 50 µs of wall at most, i.e. under 0.5% of run time, and a few ns
//!   per boundary for the bookkeeping, whatever the call rate.
//! - CPU outside any annotated frame goes to the root node (reported as unattributed).

use crate::record::clock::{thread_cpu_ns, ticks_for_nanos, Timestamp};
use crate::record::storage::{bump, Chunked, NodeCell, NODE_CHUNK};

/// Wall time between two reads of the thread CPU clock, at least.
pub const WINDOW_NS: u64 = 50_000;
const PENDING: usize = 32;

pub(crate) struct CpuAttribution {
    /// [`WINDOW_NS`] in raw clock ticks: segments are kept in ticks, never converted.
    window_ticks: u64,
    last_boundary: Timestamp,
    last_read_at: Timestamp,
    last_cpu: u64,
    pending: [(u32, u64); PENDING],
    len: usize,
}

impl CpuAttribution {
    pub(crate) fn new() -> Self {
        let now = Timestamp::now();
        Self {
            window_ticks: ticks_for_nanos(WINDOW_NS),
            last_boundary: now,
            last_read_at: now,
            last_cpu: thread_cpu_ns(),
            pending: [(0, 0); PENDING],
            len: 0,
        }
    }

    /// Closes the self segment of `node` at `now`. Returns true when a read is due.
    #[inline(always)]
    pub(crate) fn boundary(&mut self, node: u32, now: Timestamp) -> bool {
        let seg = now.ticks_since(self.last_boundary);
        self.last_boundary = now;
        let mut i = self.len;
        while i > 0 {
            i -= 1;
            if self.pending[i].0 == node {
                self.pending[i].1 += seg;
                return now.ticks_since(self.last_read_at) >= self.window_ticks;
            }
        }
        self.pending[self.len] = (node, seg);
        self.len += 1;
        self.len == PENDING || now.ticks_since(self.last_read_at) >= self.window_ticks
    }

    /// Reads the CPU clock and shares what was used since the last read among the pending
    /// nodes. Returns the time after the read, where the next segment starts.
    #[cold]
    pub(crate) fn flush(&mut self, nodes: &Chunked<NodeCell, NODE_CHUNK>) -> Timestamp {
        let cpu = thread_cpu_ns();
        let delta = cpu.saturating_sub(self.last_cpu);
        self.last_cpu = cpu;
        let total: u64 = self.pending[..self.len].iter().map(|p| p.1).sum();
        let mut given = 0u64;
        for k in 0..self.len {
            let (node, seg) = self.pending[k];
            let share = if k + 1 == self.len {
                delta - given
            } else if total == 0 {
                delta / self.len as u64
            } else {
                ((delta as u128 * seg as u128) / total as u128) as u64
            };
            given += share;
            if let Some(cell) = nodes.get_or_alloc(node as usize) {
                bump(&cell.cpu_self, share);
            }
        }
        self.len = 0;
        let now = Timestamp::now();
        self.last_read_at = now;
        self.last_boundary = now;
        now
    }

    /// Forgets pending segments (after a reset) and restarts the window now.
    pub(crate) fn restart(&mut self) {
        self.len = 0;
        self.last_cpu = thread_cpu_ns();
        let now = Timestamp::now();
        self.last_read_at = now;
        self.last_boundary = now;
    }
}
