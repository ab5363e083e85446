//! The recording window: figures count from the window's start until the next
//! [`crate::reset`], which starts a new one.
//!
//! A window is known by its epoch, a counter bumped at each reset. Threads compare it with
//! the epoch of their tables at each recorded boundary and clear those tables lazily.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::record::clock::Timestamp;

/// The window counter: bumped by [`begin_new`].
static EPOCH: AtomicU64 = AtomicU64::new(1);
/// Start of the current window, ns since the Unix epoch (0: not yet touched).
static START_NS: AtomicU64 = AtomicU64::new(0);

/// The current window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CurrentWindow {
    pub(crate) epoch: u64,
    /// Start, in ns since the Unix epoch.
    pub(crate) start_ns: u64,
}

/// The current window's epoch.
#[inline(always)]
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Relaxed)
}

/// The current window: its epoch and start.
pub(crate) fn current() -> CurrentWindow {
    let start_ns = START_NS.load(Relaxed);
    CurrentWindow {
        epoch: EPOCH.load(Relaxed),
        start_ns,
    }
}

/// Records the process start as the first window's start (first use).
pub(crate) fn touch() {
    if START_NS.load(Relaxed) == 0 {
        let _ = START_NS.compare_exchange(0, Timestamp::now().unix_ns(), Relaxed, Relaxed);
    }
}

/// Starts a new window now. The caller clears what it keeps of the old one.
pub(crate) fn begin_new() {
    EPOCH.fetch_add(1, Relaxed);
    START_NS.store(Timestamp::now().unix_ns(), Relaxed);
}
