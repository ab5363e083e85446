//! The instrumented call tree as a pprof profile: one sample per call-tree node, its
//! locations the path from that node to the root (one location per function, no address:
//! these are functions, not code), its values the node's self figures, one per weight:
//!
//! | sample type | unit | figure of the node |
//! |---|---|---|
//! | `wall` | nanoseconds | self wall time |
//! | `cpu` | nanoseconds | self CPU time |
//! | `off_cpu` | nanoseconds | self wall minus self CPU |
//! | `alloc_space` | bytes | bytes allocated (self) |
//! | `alloc_objects` | count | allocations (self) |
//! | `calls` | count | calls on this path |
//!
//! pprof sums flat values up the stacks, so a function's cumulative figure is its inclusive
//! one, as in the flamegraphs. [`tree_profile_delta`] subtracts an earlier snapshot of the same
//! window: what happened between the two, which is what a scraper's `?seconds=N` asks for.

use std::collections::HashMap;

use pprof::protos;

use super::{FrameInfo, ProfileBuilder};
use crate::record::snapshot::{CallTreeNode, Snapshot};
use crate::render::fold::Weight;

/// `(weight, pprof sample type, unit)`, in the order of the sample values.
pub const TREE_SAMPLE_TYPES: [(Weight, &str, &str); 6] = [
    (Weight::Wall, "wall", "nanoseconds"),
    (Weight::Cpu, "cpu", "nanoseconds"),
    (Weight::OffCpu, "off_cpu", "nanoseconds"),
    (Weight::AllocBytes, "alloc_space", "bytes"),
    (Weight::AllocCount, "alloc_objects", "count"),
    (Weight::Calls, "calls", "count"),
];

/// Everything recorded in `snapshot`'s window as a pprof profile whose default sample type
/// is `default`'s.
pub fn tree_profile(snapshot: &Snapshot, default: Weight) -> protos::Profile {
    let start_ms = snapshot.window.started_unix_ms;
    encode(
        snapshot,
        &snapshot.call_tree,
        default,
        start_ms,
        snapshot.window.duration_ns,
    )
}

/// What happened between `earlier` and `later`: each node's figures in `later` minus those
/// in `earlier`. When a reset started a new window in between (different epochs), that is
/// `later`'s whole window, which began after `earlier` was taken.
pub fn tree_profile_delta(earlier: &Snapshot, later: &Snapshot, default: Weight) -> protos::Profile {
    if earlier.window.epoch != later.window.epoch {
        return tree_profile(later, default);
    }
    let before: HashMap<u32, &CallTreeNode> = earlier.call_tree.iter().map(|n| (n.id, n)).collect();
    let nodes: Vec<CallTreeNode> = later
        .call_tree
        .iter()
        .map(|n| match before.get(&n.id) {
            Some(b) => minus(n, b),
            None => n.clone(),
        })
        .collect();
    let start_ms = earlier.window.taken_unix_ms;
    let duration_ns = later.window.duration_ns.saturating_sub(earlier.window.duration_ns);
    encode(later, &nodes, default, start_ms, duration_ns)
}

fn minus(n: &CallTreeNode, b: &CallTreeNode) -> CallTreeNode {
    let mut d = n.clone();
    d.calls = n.calls.saturating_sub(b.calls);
    d.self_wall_ns = n.self_wall_ns.saturating_sub(b.self_wall_ns);
    d.self_busy_ns = n.self_busy_ns.saturating_sub(b.self_busy_ns);
    d.self_cpu_ns = n.self_cpu_ns.saturating_sub(b.self_cpu_ns);
    d.self_alloc.alloc_bytes = n.self_alloc.alloc_bytes.saturating_sub(b.self_alloc.alloc_bytes);
    d.self_alloc.alloc_count = n.self_alloc.alloc_count.saturating_sub(b.self_alloc.alloc_count);
    d.self_alloc.freed_bytes = n.self_alloc.freed_bytes.saturating_sub(b.self_alloc.freed_bytes);
    d.self_alloc.freed_count = n.self_alloc.freed_count.saturating_sub(b.self_alloc.freed_count);
    d
}

fn encode(
    snapshot: &Snapshot,
    nodes: &[CallTreeNode],
    default: Weight,
    start_ms: u64,
    duration_ns: u64,
) -> protos::Profile {
    let functions: HashMap<u32, FrameInfo> = snapshot
        .functions
        .iter()
        .map(|f| {
            let info = FrameInfo {
                name: f.name.clone(),
                system_name: f.name.clone(),
                file: f.file.clone(),
                line: i64::from(f.line),
            };
            (f.id, info)
        })
        .collect();
    let by_id: HashMap<u32, &CallTreeNode> = nodes.iter().map(|n| (n.id, n)).collect();
    let mut b = ProfileBuilder::new();
    for node in nodes {
        let value: Vec<i64> = TREE_SAMPLE_TYPES
            .iter()
            .map(|(w, _, _)| i64::try_from(w.of(node)).unwrap_or(i64::MAX))
            .collect();
        if node.function.is_none() || value.iter().all(|&v| v == 0) {
            continue;
        }
        // Leaf first, up to (not including) the root; a cyclic (hand-edited) tree stops.
        let mut locations = Vec::new();
        let mut cur = Some(node);
        while let Some(n) = cur {
            if locations.len() > nodes.len() {
                break;
            }
            if let Some(info) = n.function.and_then(|f| functions.get(&f)) {
                locations.push(b.location(0, 0, std::slice::from_ref(info)));
            }
            cur = n.parent.and_then(|p| by_id.get(&p).copied());
        }
        b.sample(locations, value, &[]);
    }
    let default_index = TREE_SAMPLE_TYPES
        .iter()
        .position(|(w, _, _)| *w == default)
        .unwrap_or(0);
    let types: Vec<(&str, &str)> = TREE_SAMPLE_TYPES.iter().map(|(_, t, u)| (*t, *u)).collect();
    let mut profile = b.finish(
        &types,
        ("wall", "nanoseconds", 1),
        i64::try_from(start_ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
        i64::try_from(duration_ns).unwrap_or(i64::MAX),
    );
    // `default_sample_type` is an index into the string table.
    let name = TREE_SAMPLE_TYPES[default_index].1;
    profile.default_sample_type = profile.string_table.iter().position(|s| s == name).unwrap_or(0) as i64;
    profile
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fold::tests::known_snapshot;

    fn decode_stacks(p: &protos::Profile, type_index: usize) -> Vec<(String, i64)> {
        let fname = |loc_id: u64| {
            let loc = &p.location[loc_id as usize - 1];
            let f = &p.function[loc.line[0].function_id as usize - 1];
            p.string_table[f.name as usize].clone()
        };
        let mut out: Vec<(String, i64)> = p
            .sample
            .iter()
            .map(|s| {
                let names: Vec<String> = s.location_id.iter().rev().map(|&l| fname(l)).collect();
                (names.join(";"), s.value[type_index])
            })
            .filter(|(_, v)| *v != 0)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn tree_profile_has_the_folded_stacks_of_each_weight() {
        let snap = known_snapshot();
        let p = tree_profile(&snap, Weight::Cpu);
        assert_eq!(p.string_table[p.default_sample_type as usize], "cpu");
        for (i, (w, ty, unit)) in TREE_SAMPLE_TYPES.iter().enumerate() {
            let st = &p.sample_type[i];
            assert_eq!(
                (
                    p.string_table[st.ty as usize].as_str(),
                    p.string_table[st.unit as usize].as_str()
                ),
                (*ty, *unit)
            );
            let mut folded: Vec<(String, i64)> = crate::render::fold::fold(&snap, *w)
                .into_iter()
                .map(|l| (l.stack, l.value as i64))
                .collect();
            folded.sort();
            assert_eq!(decode_stacks(&p, i), folded, "{ty}");
        }
        assert!(p.location.iter().all(|l| l.address == 0 && l.mapping_id == 0));
    }

    #[test]
    fn delta_subtracts_the_earlier_snapshot_of_the_same_window() {
        let later = known_snapshot();
        let mut earlier = later.clone();
        for n in &mut earlier.call_tree {
            n.calls /= 2;
            n.self_wall_ns /= 4;
        }
        earlier.window.duration_ns = later.window.duration_ns / 2;
        let p = tree_profile_delta(&earlier, &later, Weight::Wall);
        let wall: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        // The root (no function) is not a sample.
        let wall_of = |s: &Snapshot| -> u64 {
            s.call_tree
                .iter()
                .filter(|n| n.function.is_some())
                .map(|n| n.self_wall_ns)
                .sum()
        };
        let (total_later, total_earlier) = (wall_of(&later), wall_of(&earlier));
        assert_eq!(wall as u64, total_later - total_earlier);
        let calls: i64 = p.sample.iter().map(|s| s.value[5]).sum();
        let calls_expected: u64 = later.call_tree.iter().map(|n| n.calls - n.calls / 2).sum();
        assert_eq!(calls as u64, calls_expected);
        assert_eq!(
            p.duration_nanos as u64,
            later.window.duration_ns - later.window.duration_ns / 2
        );

        // A reset in between: the later window is all of it.
        earlier.window.epoch += 1;
        let whole = tree_profile_delta(&earlier, &later, Weight::Wall);
        assert_eq!(whole.sample.iter().map(|s| s.value[0]).sum::<i64>() as u64, total_later);
    }
}
