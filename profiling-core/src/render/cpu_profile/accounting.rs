//! What became of every sample of a profile, as counted by
//! [`sample_guard`](super::sample_guard): the ones unwound into the stack table, and the
//! others as leaves under their thread (see the parent module's docs), with the marker
//! addresses those leaves are given in pprof output.

use std::collections::HashMap;

use super::sample_guard;
use super::{IN_LIBC_FRAME, NOT_UNWOUND_FRAME, SYSTEM_CALL_FRAME};

/// What became of the samples of a profile. `taken = unwound + system_call + in_libc +
/// not_unwound`: every sample is in the profile, each standing for the same share of the
/// measured CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SampleCounts {
    /// Samples taken (`SIGPROF` signals handled while the profile ran).
    pub taken: u64,
    /// Samples unwound into call stacks.
    pub unwound: u64,
    /// Samples taken at a system call or in the vDSO ([`SYSTEM_CALL_FRAME`]).
    pub system_call: u64,
    /// Samples taken elsewhere in blocklisted code ([`IN_LIBC_FRAME`]).
    pub in_libc: u64,
    /// Samples to be unwound that are not in a call stack ([`NOT_UNWOUND_FRAME`]): the
    /// unwinder gave no frame, or the profile's stack table had no room left for a new stack
    /// (see `docs/reliability.md` for its size).
    pub not_unwound: u64,
}

/// Labels of the handler's thread rows: the thread's name, else its id;
/// `[other threads]` for the overflow row.
pub(super) fn thread_labels(counts: &[sample_guard::ThreadCounts]) -> HashMap<u32, String> {
    counts
        .iter()
        .map(|row| {
            let label = match row {
                r if r.tid == 0 => "[other threads]".to_owned(),
                r if r.name.is_empty() => r.tid.to_string(),
                r => r.name.clone(),
            };
            (row.row, label)
        })
        .collect()
}

/// The samples of `counts` that were not unwound, as `(thread row, leaf frame, samples)`, and
/// the totals of every kind.
pub(super) fn leaf_samples(counts: &[sample_guard::ThreadCounts]) -> (Vec<(u32, &'static str, u64)>, SampleCounts) {
    let mut total = SampleCounts::default();
    let mut leaves = Vec::new();
    for row in counts {
        total.unwound += row.unwound;
        total.system_call += row.system_call;
        total.in_libc += row.in_libc;
        total.not_unwound += row.not_unwound;
        for (frame, n) in [
            (SYSTEM_CALL_FRAME, row.system_call),
            (IN_LIBC_FRAME, row.in_libc),
            (NOT_UNWOUND_FRAME, row.not_unwound),
        ] {
            if n > 0 {
                leaves.push((row.row, frame, n));
            }
        }
    }
    total.taken = total.unwound + total.system_call + total.in_libc + total.not_unwound;
    (leaves, total)
}

// Samples that were not unwound get, as their location's address, the address of one of
// these functions (as Go's profiles do with `runtime._System`): a real address in the main
// mapping, whose location is named after the leaf. Bodies differ so they are never folded.
#[inline(never)]
fn system_call_marker() -> u32 {
    std::hint::black_box(1)
}
#[inline(never)]
fn in_libc_marker() -> u32 {
    std::hint::black_box(2)
}
#[inline(never)]
fn not_unwound_marker() -> u32 {
    std::hint::black_box(3)
}

/// The address of the marker function of a leaf frame (see above).
pub(super) fn marker_address(frame: &str) -> u64 {
    let f: fn() -> u32 = match frame {
        SYSTEM_CALL_FRAME => system_call_marker,
        IN_LIBC_FRAME => in_libc_marker,
        _ => not_unwound_marker,
    };
    f as usize as u64
}
