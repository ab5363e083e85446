//! Analysis: what the recorded figures mean.
//!
//! What lives here: bottleneck rankings ([`ranking`]), call paths and function detail
//! ([`call_paths`]), snapshot diffs ([`diff`]), memory
//! sampling and growth ([`memory`]) and leak detection ([`leak`]).
//!
//! May depend on: [`crate::record`] (its snapshot types and readings). Never on
//! [`crate::render`].

pub mod call_paths;
pub mod diff;
pub mod leak;
pub mod memory;
pub mod ranking;
