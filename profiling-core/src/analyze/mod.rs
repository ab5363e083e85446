//! Analysis: what the recorded figures mean.
//!
//! What lives here: bottleneck rankings ([`ranking`]), call paths and function detail
//! ([`call_paths`]), snapshot diffs ([`diff`]), memory sampling and thresholds ([`memory`]),
//! growth rates ([`trend`]), leak detection ([`leak`]), live heap by allocating function
//! ([`live_heap`]), the recording overhead ([`overhead`]) and the reports a server serves
//! ([`reports`]: memory, CPU, allocations).
//!
//! May depend on: [`crate::record`] (its snapshot types and readings). Never on
//! [`crate::render`].

pub mod call_paths;
pub mod diff;
pub mod leak;
pub mod live_heap;
pub mod memory;
pub mod overhead;
pub mod ranking;
pub mod reports;
pub mod trend;
