//! Analysis: what the recorded figures mean.
//!
//! What lives here: bottleneck rankings ([`ranking`]), snapshot diffs ([`diff`]), memory
//! sampling and growth ([`memory`]), leak detection ([`leak`]) and live heap by allocating
//! function ([`live_heap`]).
//!
//! May depend on: [`crate::record`] (its snapshot types and readings). Never on
//! [`crate::render`].

pub mod diff;
pub mod leak;
pub mod live_heap;
pub mod memory;
pub mod ranking;
