//! Where CPU time is measured and attributed to call-tree nodes.
//!
//! Reading the thread CPU clock is a system call (about 500 ns in the VMs this project is
//! tested on), too dear for every boundary of every call. The recorder already reads the TSC
//! at every boundary (entry or exit of an annotated frame), so it knows exactly how long each
//! frame was the innermost one: its *self time*, made of *self segments* between boundaries.
//!
//! The method. A thread that was not switched off its CPU during a segment was running the
//! whole segment: its CPU time *is* the segment's wall time. Whether it was switched out is
//! known for a nanosecond per boundary from the kernel's perf metadata page
//! (`record/switches.rs`). So CPU is attributed *by frames*: a frame's self CPU is its self
//! time less the time it spent off the CPU, booked when it closes, with its self time. The
//! CPU clock is read only when the segment that just ended contained a switch (the thread
//! blocked, slept or was preempted): that segment's CPU is then the clock's advance since the
//! last read less the wall time of the segments in between (which ran on the CPU), and its
//! frame counts the rest of the segment as off the CPU. The clock is also read once
//! [`DETECTED_WINDOW_NS`] of wall time has passed since the last read, to keep that
//! reckoning short, and the time outside every frame (the root's) is booked at each read. A
//! boundary with no switch and no read due costs a load of the metadata page, two compares
//! and a store. A function that computes in short bursts beside a neighbour that waits in
//! short blocking calls is credited with its own CPU, whatever the grain.
//!
//! Until a new thread's detector arrives (normally within tens of microseconds), the clock
//! is read at every boundary instead, which makes every segment's CPU exact.
//!
//! Error bound, by frames (the default on Linux):
//! - a segment without a switch: exact up to the two clocks' agreement (TSC and the kernel's
//!   task clock; within 0.3-3% in `tests/cpu_truth.rs`, which allows 10%);
//! - a segment with a switch: exact up to that agreement over the segments since the last
//!   read (at most [`DETECTED_WINDOW_NS`] of them) and the CPU of the boundary bookkeeping
//!   between the switch and the read (tens of ns), since the read comes at its end;
//! - a read's own time, and any time the thread is switched out in it (a loaded machine
//!   preempts at a system call's return), lies in the segment after it, whose clock advance
//!   accounts for both: so a frame open across many reads is never credited CPU for time
//!   it spent switched out (`tests/cpu_truth.rs`: a frame spinning beside five competing
//!   threads gets its own CPU within 0.1% in five runs, the test allowing 1%; before, it
//!   was over by up to 7.4%);
//! - a frame's CPU appears when it closes, as its wall and busy times do (so a frame still
//!   open at a snapshot shows none yet, and a frame open across a reset lands in the new
//!   window in full);
//! - cost: at most one read per [`DETECTED_WINDOW_NS`] of wall (0.05%) plus one per context
//!   switch inside a recorded segment. A switch costs the kernel more than the read does, so
//!   the reads add at most about 1% to run time for any mix of call lengths.
//!
//! Without switch detection (perf events refused, more than
//! [`crate::record::switches::MAX_OPEN`] threads, or `PROFILING_CPU_SWITCH_DETECTION=0`),
//! CPU is attributed *by windows*: the recorder keeps the self segments since the last read,
//! merged per node, and reads the clock when [`WINDOW_NS`] of wall time has passed or 32
//! distinct nodes are pending; the CPU of a window is shared among its segments in
//! proportion to their wall time: exact for segments of [`WINDOW_NS`] or more, and wrong by
//! up to the window's CPU (50 µs) per read when neighbours in one window differ in CPU/wall
//! ratio (a computing function next to one that blocks in sub-50 µs waits: 60% for the
//! computing one in `tests/cpu_truth.rs`; the issue that asked for switch detection reported
//! 63% and 129%). A thread that changes from one to the other hands its open frames over
//! (`ThreadRecorder::cpu_attribution_changed` in `record/recorder.rs`).
//!
//! CPU outside any annotated frame goes to the root node (reported as unattributed).

use crate::record::clock::{nanos_for_ticks, refine_if_due, thread_cpu_ns, ticks_for_nanos, Timestamp};
use crate::record::storage::{bump, Chunked, NodeCell, NODE_CHUNK};
use crate::record::switches::{Requested, SwitchDetector};
use crate::record::tree::ROOT;

/// Wall time between two reads of the thread CPU clock, at least, without switch detection.
pub const WINDOW_NS: u64 = 50_000;
/// The same by frames, where segments that ran on the CPU need no read to be exact: reads
/// then only keep short the stretch a switched segment's CPU is reckoned over.
pub const DETECTED_WINDOW_NS: u64 = 1_000_000;
const PENDING: usize = 32;
/// How long a thread waits for its switch detector, reading its CPU clock at every
/// boundary meanwhile, before it falls back to windows.
const GIVE_UP_WAITING_NS: u64 = 200_000_000;

pub(crate) struct CpuAttribution {
    /// CPU is attributed by frames, not by windows (see the module docs): always
    /// `switches.is_some() || requested.is_some()`, kept as one word because every boundary
    /// reads it (deriving it costs 3 instructions per call, 324 -> 327).
    by_frames: bool,
    /// The word that changes when the thread is switched out and back in: the detector's
    /// (`record/switches.rs`), or [`NEVER_SWITCHES`] while there is none.
    sequence: *const u32,
    /// Its value at the last read.
    last_sequence: u32,
    /// No read is due before this, unless the thread was switched out ([`WINDOW_NS`] or
    /// [`DETECTED_WINDOW_NS`] after the last read; the last read itself while a detector is
    /// awaited, so that every boundary reads).
    next_read_at: Timestamp,
    /// The wall time between reads, at least, in raw clock ticks.
    window_ticks: u64,
    /// By frames: wall time outside every frame since the last read, in ticks, and how much
    /// of it the thread spent off its CPU, in ns (the root node's CPU, booked at reads).
    root_ticks: u64,
    root_off_cpu: u64,
    last_boundary: Timestamp,
    last_read_at: Timestamp,
    last_cpu: u64,
    /// By windows: the self segments since the last read, merged per node.
    pending: [Segment; PENDING],
    len: usize,
    switches: Option<SwitchDetector>,
    /// The detector asked for and not yet answered (see `record/switches.rs`), and when.
    requested: Option<(Requested, Timestamp)>,
    /// No request was ready when the thread asked (a burst of new threads outran the
    /// background thread): it asks again at each read until one is.
    ask_again: bool,
}

/// The sequence word of a thread without a detector: it never changes.
static NEVER_SWITCHES: u32 = 0;

/// Self time of one node since the last read, in raw clock ticks.
#[derive(Clone, Copy, Default)]
struct Segment {
    node: u32,
    ticks: u64,
}

impl CpuAttribution {
    /// Until the detector asked for here arrives (normally within tens of microseconds),
    /// the CPU clock is read at every boundary: exact, at the cost of a read per boundary
    /// for that short while. Without a detector to wait for, attribution is by windows.
    pub(crate) fn new() -> Self {
        let now = Timestamp::now();
        let requested = SwitchDetector::request();
        let window_ticks = if requested.is_some() {
            0
        } else {
            ticks_for_nanos(WINDOW_NS)
        };
        Self {
            by_frames: requested.is_some(),
            sequence: &NEVER_SWITCHES,
            last_sequence: 0,
            next_read_at: Timestamp::from_ticks(now.ticks().saturating_add(window_ticks)),
            window_ticks,
            root_ticks: 0,
            root_off_cpu: 0,
            last_boundary: now,
            last_read_at: now,
            last_cpu: thread_cpu_ns(),
            pending: [Segment::default(); PENDING],
            len: 0,
            switches: None,
            ask_again: requested.is_none() && SwitchDetector::may_ask_again(),
            requested: requested.map(|r| (r, now)),
        }
    }

    /// Whether a detector was asked for and its answer not yet picked up.
    pub(crate) fn awaiting_detector(&self) -> bool {
        self.requested.is_some()
    }

    /// Whether CPU is attributed by frames: each frame books its self CPU as it closes (its
    /// self time less what it spent off the CPU), rather than windows sharing each read.
    #[inline(always)]
    pub(crate) fn by_frames(&self) -> bool {
        debug_assert_eq!(self.by_frames, self.switches.is_some() || self.requested.is_some());
        self.by_frames
    }

    /// The sequence word's value now.
    #[inline(always)]
    fn sequence_now(&self) -> u32 {
        // SAFETY: `sequence` points to `NEVER_SWITCHES` or into the page of the detector in
        // `self.switches`, mapped for as long as it is held; the kernel writes that word in
        // place, hence the volatile read.
        unsafe { std::ptr::read_volatile(self.sequence) }
    }

    /// A read ended at `at`: the next segment starts there, and the next read is due a
    /// window later.
    fn read_done(&mut self, at: Timestamp) {
        self.last_read_at = at;
        self.last_boundary = at;
        self.next_read_at = Timestamp::from_ticks(at.ticks().saturating_add(self.window_ticks));
    }

    /// Starts detecting switches if the detector asked for has arrived. Called right after a
    /// read, by frames.
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
                self.sequence = d.sequence_word();
                self.last_sequence = d.sequence();
                self.window_ticks = ticks_for_nanos(DETECTED_WINDOW_NS);
                self.switches = Some(d);
            }
            None => {
                self.window_ticks = ticks_for_nanos(WINDOW_NS);
                self.by_frames = false;
                self.len = 0;
            }
        }
        self.read_done(now);
    }

    /// Closes the self segment of `node` at `now`. Returns true when a read is due: then
    /// [`CpuAttribution::flush`] must follow, at the same `now`.
    #[inline(always)]
    pub(crate) fn boundary(&mut self, node: u32, now: Timestamp) -> bool {
        if self.by_frames && node == ROOT {
            self.root_ticks += now.ticks_since(self.last_boundary);
        }
        self.frame_boundary(node, now)
    }

    /// [`CpuAttribution::boundary`] of a segment of a frame's node (not the root's).
    #[inline(always)]
    pub(crate) fn frame_boundary(&mut self, node: u32, now: Timestamp) -> bool {
        if self.by_frames {
            // The segment's wall time is its frame's self time already: only a switch
            // needs a read (which also needs the segment's start), or the window's end.
            if self.sequence_now() != self.last_sequence || now >= self.next_read_at {
                return true;
            }
            self.last_boundary = now;
            return false;
        }
        let ticks = now.ticks_since(self.last_boundary);
        self.last_boundary = now;
        if let Some(p) = self.pending[..self.len].iter_mut().rev().find(|p| p.node == node) {
            p.ticks += ticks;
            return now >= self.next_read_at;
        }
        self.pending[self.len] = Segment { node, ticks };
        self.len += 1;
        self.len == PENDING || now >= self.next_read_at
    }

    /// Reads the CPU clock, after [`CpuAttribution::boundary`] closed a segment of `node` at
    /// `now`. Returns where the next segment starts (by frames `now` itself, by windows the
    /// time after the read, which opens a segment of its own) and, by frames, how long the
    /// segment's frame was off the CPU in it (0 for the root's segments, which are booked
    /// here). By windows, shares what was used since the last read among the pending
    /// segments instead (see the module docs).
    #[cold]
    pub(crate) fn flush(
        &mut self,
        nodes: &Chunked<NodeCell, NODE_CHUNK>,
        node: u32,
        now: Timestamp,
    ) -> (Timestamp, u64) {
        if self.by_frames {
            self.read_by_frames(nodes, node, now)
        } else {
            (self.flush_windows(nodes), 0)
        }
    }

    /// [`CpuAttribution::flush`] by frames.
    fn read_by_frames(&mut self, nodes: &Chunked<NodeCell, NODE_CHUNK>, node: u32, now: Timestamp) -> (Timestamp, u64) {
        // Read before the clock: a switch from here on shows at the next boundary.
        self.last_sequence = self.sequence_now();
        let cpu = thread_cpu_ns();
        // Every segment between the last read and this one ran on the CPU (a switch would
        // have called for a read): the CPU clock read `last_cpu` plus their wall time when
        // this segment started.
        let at_start = self.last_cpu + nanos_for_ticks(self.last_boundary.ticks_since(self.last_read_at));
        let wall = nanos_for_ticks(now.ticks_since(self.last_boundary));
        let off_cpu = wall.saturating_sub(cpu.saturating_sub(at_start));
        self.last_cpu = cpu;
        let frame_off_cpu = if node == ROOT {
            self.root_off_cpu += off_cpu;
            0
        } else {
            off_cpu
        };
        let root = nanos_for_ticks(self.root_ticks).saturating_sub(self.root_off_cpu);
        if root > 0 {
            if let Some(cell) = nodes.get_or_alloc(ROOT as usize) {
                bump(&cell.cpu_self, root);
            }
        }
        self.root_ticks = 0;
        self.root_off_cpu = 0;
        refine_if_due(now);
        // The next segment starts where this one ended, not after the read: the read's own
        // time, and any time the thread spends switched out in it (a system call's return
        // is where a loaded machine preempts), then lies in the next segment, whose clock
        // advance from `cpu` counts the first and not the second. Started after the read,
        // that time lay in no segment but in the enclosing frame's self time, counted as
        // CPU: beside two spinning processes a frame by frames read 12-48 ms more CPU than
        // its thread used (`tests/cpu_truth.rs`, a frame open when the wait ends).
        self.read_done(now);
        if self.requested.is_some() {
            self.adopt_detector(now);
        }
        (now, frame_off_cpu)
    }

    /// [`CpuAttribution::flush`] by windows.
    fn flush_windows(&mut self, nodes: &Chunked<NodeCell, NODE_CHUNK>) -> Timestamp {
        let before = Timestamp::now();
        let cpu = thread_cpu_ns();
        let delta = cpu.saturating_sub(self.last_cpu);
        self.last_cpu = cpu;
        let pending = &self.pending[..self.len];
        let mut shares = [0u64; PENDING];
        share(pending, delta, &mut shares);
        for (p, &cpu) in pending.iter().zip(&shares) {
            if let Some(cell) = nodes.get_or_alloc(p.node as usize) {
                bump(&cell.cpu_self, cpu);
            }
        }
        // The read itself (a system call) is the cost of the segment that asked for it, as a
        // frame's bookkeeping is its own: it opens the next window as that node's segment, so
        // the caller's clock around a call and the recorded figure agree.
        let trigger = self.pending[self.len.saturating_sub(1)].node;
        refine_if_due(before);
        let now = Timestamp::now();
        self.pending[0] = Segment {
            node: trigger,
            ticks: now.ticks_since(before),
        };
        self.len = 1;
        self.read_done(now);
        if self.ask_again {
            self.ask_for_detector_again(now);
        }
        now
    }

    /// Asks again for a detector that found no request ready; once asked, the CPU clock is
    /// read at every boundary until it arrives, as after a first call (by frames).
    #[cold]
    fn ask_for_detector_again(&mut self, now: Timestamp) {
        if let Some(r) = SwitchDetector::request() {
            self.requested = Some((r, now));
            self.ask_again = false;
            self.window_ticks = 0;
            self.by_frames = true;
            self.len = 0;
            self.read_done(now);
        }
    }

    /// Forgets pending segments (after a reset) and restarts the window now.
    pub(crate) fn restart(&mut self) {
        self.len = 0;
        self.root_ticks = 0;
        self.root_off_cpu = 0;
        self.last_sequence = self.sequence_now();
        self.last_cpu = thread_cpu_ns();
        self.read_done(Timestamp::now());
    }
}

/// Shares `delta` ns of CPU among `pending` segments into `out`, in proportion to their
/// ticks (equally when they have none); the last segment takes the rounding remainder.
fn share(pending: &[Segment], delta: u64, out: &mut [u64]) {
    let total: u64 = pending.iter().map(|p| p.ticks).sum();
    let count = pending.len() as u64;
    let mut given = 0u64;
    for (k, p) in pending.iter().enumerate() {
        let part = if k + 1 == pending.len() {
            delta - given
        } else if total == 0 {
            delta / count
        } else {
            ((delta as u128 * p.ticks as u128) / total as u128) as u64
        };
        out[k] += part;
        given += part;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(node: u32, ns: u64) -> Segment {
        Segment {
            node,
            ticks: ticks_for_nanos(ns),
        }
    }

    #[test]
    fn a_window_is_shared_by_wall_time() {
        // 20 µs and 30 µs of wall time, 28 µs of CPU between them.
        let pending = [seg(1, 20_000), seg(2, 30_000)];
        let mut out = [0; PENDING];
        share(&pending, 28_000, &mut out);
        assert!(out[0].abs_diff(11_200) <= 2, "{}", out[0]);
        assert_eq!(out[0] + out[1], 28_000);
    }

    #[test]
    fn segments_without_wall_time_share_equally_and_nothing_is_lost() {
        let pending = [seg(1, 0), seg(2, 0), seg(3, 0)];
        let mut out = [0; PENDING];
        share(&pending, 30_001, &mut out);
        assert_eq!(&out[..3], &[10_000, 10_000, 10_001]);
    }
}
