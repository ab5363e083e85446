//! One call as the recorder's callers see it: where it sits in the call tree, the frame
//! just opened for it, what one poll measured, and an async call or span in flight between
//! its first poll and its completion.

use crate::record::clock::Timestamp;

/// What one poll (or span entry) measured.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PollOutcome {
    pub(crate) busy: u64,
    pub(crate) child_wall: u64,
    pub(crate) end: Timestamp,
}

/// Where a call sits in the call tree, resolved when its first frame opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TreePlace {
    /// The call's node.
    pub(crate) node: u32,
    /// The node cap was reached: `node` is the parent's, and the call has no node of its own.
    pub(crate) folded: bool,
    /// The node the call was made under.
    pub(crate) parent: u32,
}

/// A frame just opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenedFrame {
    /// Its index on the thread's frame stack.
    pub(crate) index: usize,
    pub(crate) place: TreePlace,
    /// The clock when the frame was asked for, read before its start (so a call's latency
    /// measured from here covers its busy time).
    pub(crate) at: Timestamp,
}

/// One async call or span, from its first poll (or entry) until it completes: what it has
/// measured so far. Its polls may run on any threads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InFlightCall {
    pub(crate) func: u32,
    pub(crate) place: TreePlace,
    /// When the first poll (or entry) began: ns since the Unix epoch for a future; raw
    /// clock ticks for a span of the `tracing` layer, which converts only the wall time, at
    /// close (`layer.rs`, `ticks`).
    pub(crate) started_ns: u64,
    /// Sum of its polls (or entries).
    pub(crate) busy_ns: u64,
    /// Latency of the calls it made, summed over its polls.
    pub(crate) child_latency_ns: u64,
}

impl InFlightCall {
    /// A call whose first frame opened at `place`, begun at `started_ns`.
    pub(crate) fn new(func: u32, place: TreePlace, started_ns: u64) -> Self {
        Self {
            func,
            place,
            started_ns,
            busy_ns: 0,
            child_latency_ns: 0,
        }
    }

    /// Adds what one poll (or entry) measured.
    #[inline]
    pub(crate) fn add_poll(&mut self, poll: &PollOutcome) {
        self.busy_ns += poll.busy;
        self.child_latency_ns += poll.child_wall;
    }
}
