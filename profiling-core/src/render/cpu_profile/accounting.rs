//! What became of every sample of a profile: the ones pprof unwound, and the ones counted by
//! [`sample_guard`](super::sample_guard) as leaves under their thread (see the parent
//! module's docs), with the marker addresses those leaves are given in pprof output.

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
    /// Samples passed to the unwinder that it did not record ([`NOT_UNWOUND_FRAME`]).
    pub not_unwound: u64,
}

/// The name pprof recorded for a sample's thread, else its id.
pub(super) fn thread_label(name: &[u8], len: usize, id: u64) -> String {
    match String::from_utf8_lossy(&name[..len.min(name.len())]) {
        n if n.is_empty() => format!("{id:?}"),
        n => n.into_owned(),
    }
}

/// The samples of `counts` that pprof did not unwind, as `(thread, leaf frame, samples)`, and
/// their totals. A thread's name is the one pprof recorded for it when it has unwound samples
/// (so its stacks merge), else its own (`PR_GET_NAME`).
pub(super) fn leaf_samples(
    report: &pprof::UnresolvedReport,
    counts: &[sample_guard::ThreadCounts],
) -> (Vec<(String, &'static str, u64)>, SampleCounts) {
    let mut unwound_by_thread: HashMap<u64, (u64, String)> = HashMap::new();
    let mut total = SampleCounts::default();
    for (frames, &count) in &report.data {
        let count = count.max(0) as u64;
        total.unwound += count;
        let e = unwound_by_thread.entry(frames.thread_id).or_insert_with(|| {
            (
                0,
                thread_label(&frames.thread_name, frames.thread_name_length, frames.thread_id),
            )
        });
        e.0 += count;
    }
    let mut leaves = Vec::new();
    for row in counts {
        let (unwound, name) = match unwound_by_thread.get(&row.pthread) {
            Some((n, name)) if row.tid != 0 => (*n, name.clone()),
            _ if row.tid == 0 => (row.chained, "[other threads]".to_owned()),
            _ if row.name.is_empty() => (0, row.tid.to_string()),
            _ => (0, row.name.clone()),
        };
        let not_unwound = row.chained.saturating_sub(unwound);
        total.system_call += row.system_call;
        total.in_libc += row.in_libc;
        total.not_unwound += not_unwound;
        for (frame, n) in [
            (SYSTEM_CALL_FRAME, row.system_call),
            (IN_LIBC_FRAME, row.in_libc),
            (NOT_UNWOUND_FRAME, not_unwound),
        ] {
            if n > 0 {
                leaves.push((name.clone(), frame, n));
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
