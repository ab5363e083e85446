//! Where CPU time is measured and attributed to call-tree nodes.
//!
//! Reading the thread CPU clock is a system call (about 500 ns in the VMs this project is
//! tested on), too dear for every boundary of every call. The recorder already reads the TSC
//! at every boundary (entry or exit of an annotated frame), so it knows exactly how long each
//! node was the innermost frame (its *self segments*). It keeps those segments, merged per
//! node, and reads the CPU clock when the segment that just ended contained a context switch,
//! or when at least [`DETECTED_WINDOW_NS`] ([`WINDOW_NS`] without switch detection) of wall
//! time has passed since the last read, or 32 distinct nodes are pending.
//!
//! The method. A thread that was not switched off its CPU during a segment was running the
//! whole segment: its CPU time *is* the segment's wall time. Whether it was switched out is
//! known for a nanosecond per boundary from the kernel's perf metadata page
//! (`record/switches.rs`). So at each read, the CPU consumed since the last read is
//! split in two: every segment that ran without a switch gets its wall time; the rest goes to
//! the segments that contained a switch (that blocked, slept or were preempted), and since a
//! read follows each such segment at once, there is normally exactly one of them and it gets
//! exactly its own CPU time. A function that computes in short bursts beside a neighbour
//! that waits in short blocking calls is thus credited with its own CPU, whatever the grain.
//!
//! Error bound, with switch detection (the default on Linux):
//! - a segment without a switch: exact up to the two clocks' agreement (TSC and the kernel's
//!   task clock; within 0.3-3% in `tests/cpu_truth.rs`, which allows 10%);
//! - a segment with a switch: exact up to the CPU of the boundary bookkeeping between the
//!   switch and the read (tens of ns), since the read comes at its end;
//! - cost: at most one read per [`DETECTED_WINDOW_NS`] of wall (0.05%) plus one per context
//!   switch inside a recorded segment. A switch costs the kernel more than the read does, so the reads add at
//!   most about 1% to run time for any mix of call lengths, and nothing to the per-call hot
//!   path but one load of the metadata page.
//!
//! Without switch detection (perf events refused, more than
//! [`crate::record::switches::MAX_OPEN`] threads, or `PROFILING_CPU_SWITCH_DETECTION=0`), the
//! CPU of a window is shared among its segments in proportion to their wall time, as before:
//! exact for segments of [`WINDOW_NS`] or more, and wrong by up to the window's CPU (50 µs)
//! per read when neighbours in one window differ in CPU/wall ratio (a computing function next
//! to one that blocks in sub-50 µs waits: 60% for the computing one in `tests/cpu_truth.rs`; the
//! issue that asked for switch detection reported 63% and 129%).
//!
//! CPU outside any annotated frame goes to the root node (reported as unattributed).

use crate::record::clock::{nanos_for_ticks, thread_cpu_ns, ticks_for_nanos, Timestamp};
use crate::record::storage::{bump, Chunked, NodeCell, NODE_CHUNK};
use crate::record::switches::{Requested, SwitchDetector};

/// Wall time between two reads of the thread CPU clock, at least, without switch detection.
pub const WINDOW_NS: u64 = 50_000;
/// The same with switch detection, where a window's running segments need no read to be
/// exact: reads then only keep the figures current.
pub const DETECTED_WINDOW_NS: u64 = 1_000_000;
const PENDING: usize = 32;
/// How long a thread waits for its switch detector, reading its CPU clock at every
/// boundary meanwhile, before it falls back to windows.
const GIVE_UP_WAITING_NS: u64 = 200_000_000;

pub(crate) struct CpuAttribution {
    /// [`WINDOW_NS`] in raw clock ticks: segments are kept in ticks, never converted.
    window_ticks: u64,
    last_boundary: Timestamp,
    last_read_at: Timestamp,
    last_cpu: u64,
    pending: [Segment; PENDING],
    len: usize,
    switches: Option<SwitchDetector>,
    /// The detector asked for and not yet answered (see `record/switches.rs`), and when.
    requested: Option<(Requested, Timestamp)>,
    /// No request was ready when the thread asked (a burst of new threads outran the
    /// background thread): it asks again at each read until one is.
    ask_again: bool,
    /// The detector's sequence at the last boundary.
    last_sequence: u32,
}

/// Self time of one node since the last read, in raw clock ticks.
#[derive(Clone, Copy, Default)]
struct Segment {
    node: u32,
    ticks: u64,
    /// The thread was switched out during (some of) it.
    switched: bool,
}

impl CpuAttribution {
    /// Until the detector asked for here arrives (normally within tens of microseconds),
    /// the CPU clock is read at every boundary: exact, at the cost of a read per boundary
    /// for that short while. Without a detector to wait for, attribution is by windows.
    pub(crate) fn new() -> Self {
        let now = Timestamp::now();
        let requested = SwitchDetector::request();
        Self {
            window_ticks: if requested.is_some() {
                0
            } else {
                ticks_for_nanos(WINDOW_NS)
            },
            last_boundary: now,
            last_read_at: now,
            last_cpu: thread_cpu_ns(),
            pending: [Segment::default(); PENDING],
            len: 0,
            switches: None,
            ask_again: requested.is_none() && SwitchDetector::may_ask_again(),
            requested: requested.map(|r| (r, now)),
            last_sequence: 0,
        }
    }

    /// Whether a detector was asked for and its answer not yet picked up.
    pub(crate) fn awaiting_detector(&self) -> bool {
        self.requested.is_some()
    }

    /// Starts detecting switches if the detector asked for has arrived. Called right after a
    /// read, when no segment is pending but the one the read opened (which ran on the CPU).
    #[cold]
    fn adopt_detector(&mut self, now: Timestamp) {
        let Some((requested, at)) = self.requested.as_mut() else {
            return;
        };
        let answer = match requested.take() {
            Some(answer) => answer,
            // Unanswered for longer than the kernel ever took here (the background thread
            // stalled or gone): stop paying a read per boundary, attribute by windows.
            None if now.nanos_since(*at) > GIVE_UP_WAITING_NS => None,
            None => return,
        };
        self.requested = None;
        match answer {
            Some(d) => {
                self.last_sequence = d.sequence();
                self.window_ticks = ticks_for_nanos(DETECTED_WINDOW_NS);
                self.switches = Some(d);
            }
            None => self.window_ticks = ticks_for_nanos(WINDOW_NS),
        }
    }

    /// Closes the self segment of `node` at `now`. Returns true when a read is due.
    #[inline(always)]
    pub(crate) fn boundary(&mut self, node: u32, now: Timestamp) -> bool {
        let ticks = now.ticks_since(self.last_boundary);
        self.last_boundary = now;
        let switched = match &self.switches {
            Some(d) => {
                let s = d.sequence();
                let changed = s != self.last_sequence;
                self.last_sequence = s;
                changed
            }
            None => false,
        };
        if !switched {
            if let Some(p) = self.pending[..self.len]
                .iter_mut()
                .rev()
                .find(|p| p.node == node && !p.switched)
            {
                p.ticks += ticks;
                return now.ticks_since(self.last_read_at) >= self.window_ticks;
            }
        }
        self.pending[self.len] = Segment { node, ticks, switched };
        self.len += 1;
        switched || self.len == PENDING || now.ticks_since(self.last_read_at) >= self.window_ticks
    }

    /// Reads the CPU clock and shares what was used since the last read among the pending
    /// segments (see the module docs). Returns the time after the read, where the next
    /// segment starts.
    #[cold]
    pub(crate) fn flush(&mut self, nodes: &Chunked<NodeCell, NODE_CHUNK>) -> Timestamp {
        let before = Timestamp::now();
        let cpu = thread_cpu_ns();
        let delta = cpu.saturating_sub(self.last_cpu);
        self.last_cpu = cpu;
        let pending = &self.pending[..self.len];
        let mut shares = [0u64; PENDING];
        share(pending, delta, self.switches.is_some(), &mut shares);
        for (p, &cpu) in pending.iter().zip(&shares) {
            if let Some(cell) = nodes.get_or_alloc(p.node as usize) {
                bump(&cell.cpu_self, cpu);
            }
        }
        // The read itself (a system call) is the cost of the segment that asked for it, as a
        // frame's bookkeeping is its own: it opens the next window as that node's segment, so
        // the caller's clock around a call and the recorded figure agree.
        let trigger = self.pending[self.len.saturating_sub(1)].node;
        let now = Timestamp::now();
        self.pending[0] = Segment {
            node: trigger,
            ticks: now.ticks_since(before),
            switched: false,
        };
        self.len = 1;
        if let Some(d) = &self.switches {
            // A switch during the read makes the read's segment a switched one.
            let s = d.sequence();
            self.pending[0].switched = s != self.last_sequence;
            self.last_sequence = s;
        }
        self.last_read_at = now;
        self.last_boundary = now;
        if self.requested.is_some() {
            self.adopt_detector(now);
        } else if self.ask_again {
            self.ask_for_detector_again(now);
        }
        now
    }

    /// Asks again for a detector that found no request ready; once asked, the CPU clock is
    /// read at every boundary until it arrives, as after a first call.
    #[cold]
    fn ask_for_detector_again(&mut self, now: Timestamp) {
        if let Some(r) = SwitchDetector::request() {
            self.requested = Some((r, now));
            self.ask_again = false;
            self.window_ticks = 0;
        }
    }

    /// Forgets pending segments (after a reset) and restarts the window now.
    pub(crate) fn restart(&mut self) {
        self.len = 0;
        if let Some(d) = &self.switches {
            self.last_sequence = d.sequence();
        }
        self.last_cpu = thread_cpu_ns();
        let now = Timestamp::now();
        self.last_read_at = now;
        self.last_boundary = now;
    }
}

/// Splits `delta` ns of CPU among `pending` segments into `out`. With switch detection,
/// segments that ran without a switch get their wall time (scaled down if together they
/// exceed `delta`: the clocks disagree slightly) and the segments with a switch share the
/// rest; without it, or when no segment had a switch, all share in proportion to wall time.
fn share(pending: &[Segment], delta: u64, detected: bool, out: &mut [u64]) {
    let wall = |p: &Segment| nanos_for_ticks(p.ticks);
    let any_switched = pending.iter().any(|p| p.switched);
    if detected && any_switched {
        let on_cpu: u64 = pending.iter().filter(|p| !p.switched).map(wall).sum();
        let running = on_cpu.min(delta);
        let rest = delta - running;
        let running_parts = proportional(pending, running, |p| !p.switched, out);
        let rest_parts = proportional(pending, rest, |p| p.switched, out);
        debug_assert_eq!(running_parts + rest_parts, delta);
    } else {
        proportional(pending, delta, |_| true, out);
    }
}

/// Shares `amount` among the segments `pick` selects, in proportion to their ticks (equally
/// when they have none), adding into `out`; the last picked segment takes the rounding
/// remainder. Returns what was given.
fn proportional(pending: &[Segment], amount: u64, pick: impl Fn(&Segment) -> bool, out: &mut [u64]) -> u64 {
    let total: u64 = pending.iter().filter(|p| pick(p)).map(|p| p.ticks).sum();
    let count = pending.iter().filter(|p| pick(p)).count() as u64;
    let Some(last) = pending.iter().rposition(&pick) else {
        return 0;
    };
    let mut given = 0u64;
    for (k, p) in pending.iter().enumerate().filter(|(_, p)| pick(p)) {
        let part = if k == last {
            amount - given
        } else if total == 0 {
            amount / count
        } else {
            ((amount as u128 * p.ticks as u128) / total as u128) as u64
        };
        out[k] += part;
        given += part;
    }
    given
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(node: u32, ns: u64, switched: bool) -> Segment {
        Segment {
            node,
            ticks: ticks_for_nanos(ns),
            switched,
        }
    }

    #[test]
    fn running_segments_get_their_wall_time_and_the_switched_one_the_rest() {
        // 20 µs of computing, then a 30 µs wait that used 8 µs of CPU: 28 µs in all.
        let pending = [seg(1, 20_000, false), seg(2, 30_000, true)];
        let mut out = [0; PENDING];
        share(&pending, 28_000, true, &mut out);
        assert!(out[0].abs_diff(20_000) <= 2, "{}", out[0]);
        assert!(out[1].abs_diff(8_000) <= 2, "{}", out[1]);
        assert_eq!(out[0] + out[1], 28_000);
    }

    #[test]
    fn without_detection_the_window_is_shared_by_wall_time() {
        let pending = [seg(1, 20_000, false), seg(2, 30_000, true)];
        let mut out = [0; PENDING];
        share(&pending, 28_000, false, &mut out);
        assert!(out[0].abs_diff(11_200) <= 2, "{}", out[0]);
        assert_eq!(out[0] + out[1], 28_000);
    }

    #[test]
    fn clocks_that_disagree_never_give_more_than_was_used() {
        let pending = [seg(1, 20_000, false), seg(3, 10_000, false), seg(2, 5_000, true)];
        let mut out = [0; PENDING];
        share(&pending, 29_000, true, &mut out);
        assert_eq!(out.iter().sum::<u64>(), 29_000);
        assert_eq!(out[2], 0, "the running segments took it all");
    }
}
