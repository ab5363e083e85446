//! Analysis: what the recorded figures mean.
//!
//! What lives here: bottleneck rankings ([`ranking`]), snapshot diffs ([`diff`]), memory
//! sampling and growth ([`memory`]) and leak detection ([`leak`]).
//!
//! May depend on: [`crate::record`] (its snapshot types and readings). Never on
//! [`crate::render`].

pub mod diff;
pub mod leak;
pub mod memory;
pub mod ranking;
