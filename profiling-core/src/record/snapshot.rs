//! The reader's side: [`snapshot`] merges every thread's tables into plain,
//! serde-serializable figures per function and per call-tree node.

use serde::{Deserialize, Serialize};

use crate::record::alloc::AllocCounters;
use crate::record::callsite::{self, CallsiteKind};
use crate::record::histogram;
use crate::record::recorder;
use crate::record::storage::{FnSums, NodeSums};
use crate::record::threads::Merged;
use crate::record::tree::{self, NO_FUNCTION, ROOT};
use crate::record::window;

/// The time window a snapshot covers: since process start or since the last [`crate::reset`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Window counter: 1 for the first window, +1 per reset.
    pub epoch: u64,
    /// Start, in ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// When the snapshot was taken, in ms since the Unix epoch.
    pub taken_unix_ms: u64,
    /// Length of the window so far, in ns.
    pub duration_ns: u64,
}

/// Everything recorded about one function in the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionStats {
    /// Function id (stable within the process).
    pub id: u32,
    /// Display name.
    pub name: String,
    /// Module path or tracing target.
    pub module: String,
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: u32,
    /// Sync function, async function or tracing span.
    pub kind: CallsiteKind,
    /// Completed calls, plus cancelled ones.
    pub calls: u64,
    /// Async calls dropped before completion (included in `calls`).
    pub cancelled: u64,
    /// Inclusive wall time (latency for async calls); recursive calls are counted once.
    pub total_wall_ns: u64,
    /// Exclusive wall time: total minus time in annotated callees.
    pub self_wall_ns: u64,
    /// Shortest call.
    pub min_ns: u64,
    /// Longest call.
    pub max_ns: u64,
    /// Mean call.
    pub mean_ns: u64,
    /// Time actually spent running (sum of polls for async; equal to total for sync).
    pub busy_ns: u64,
    /// Median latency.
    pub p50_ns: u64,
    /// 90th percentile latency.
    pub p90_ns: u64,
    /// 95th percentile latency.
    pub p95_ns: u64,
    /// 99th percentile latency.
    pub p99_ns: u64,
    /// 99.9th percentile latency.
    pub p999_ns: u64,
    /// Thread CPU time, inclusive.
    pub cpu_total_ns: u64,
    /// Thread CPU time, exclusive of annotated callees.
    pub cpu_self_ns: u64,
    /// Allocations during calls, inclusive.
    pub alloc_total: AllocCounters,
    /// Allocations during calls, exclusive of annotated callees.
    pub alloc_self: AllocCounters,
    /// Latency histogram: `(exclusive upper bound ns, count)` for non-empty buckets.
    pub histogram: Vec<(u64, u64)>,
}

/// One node of the call tree: a path of annotated functions from a root.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTreeNode {
    /// Node id.
    pub id: u32,
    /// Parent node id (`None` for the root).
    pub parent: Option<u32>,
    /// Function id (`None` for the root).
    pub function: Option<u32>,
    /// Calls on this path.
    pub calls: u64,
    /// Self wall time on this path (for async calls: latency minus awaited annotated callees).
    pub self_wall_ns: u64,
    /// Self busy time (time this frame was innermost and running).
    pub self_busy_ns: u64,
    /// Self CPU time.
    pub self_cpu_ns: u64,
    /// Self allocations.
    pub self_alloc: AllocCounters,
}

/// Counts of threads that recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadCounts {
    /// Threads alive that have recorded.
    pub live: usize,
    /// Threads that recorded and have exited (their data is kept).
    pub exited: u64,
}

/// Everything recorded in the current window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The window covered.
    pub window: Window,
    /// Functions with at least one call, by id.
    pub functions: Vec<FunctionStats>,
    /// The call tree, nodes with any figure, by id (parents before children).
    pub call_tree: Vec<CallTreeNode>,
    /// CPU time of recording threads outside any annotated frame.
    pub unattributed_cpu_ns: u64,
    /// Threads.
    pub threads: ThreadCounts,
    /// Calls whose path was folded into its parent because the node cap was reached.
    pub folded_calls: u64,
    /// Distinct call-tree nodes so far, and the cap.
    pub call_tree_nodes: usize,
    /// The cap on call-tree nodes.
    pub call_tree_node_cap: u32,
    /// Whether allocations are counted (a [`crate::ProfilingAllocator`] is installed).
    pub allocations_counted: bool,
    /// `"tsc"` or `"monotonic"`.
    pub clock: String,
}

impl Snapshot {
    /// The function with this exact name.
    pub fn function(&self, name: &str) -> Option<&FunctionStats> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The function with this id.
    pub fn function_by_id(&self, id: u32) -> Option<&FunctionStats> {
        self.functions.iter().find(|f| f.id == id)
    }

    /// Names along the path of `node`, root first (the root itself is left out).
    ///
    /// Indexes the whole tree on each call (O(nodes)); for the paths of many nodes, walk
    /// `analyze::call_paths::PathTree` once instead.
    pub fn path(&self, node: u32) -> Vec<&str> {
        let by_id: std::collections::HashMap<u32, &CallTreeNode> = self.call_tree.iter().map(|n| (n.id, n)).collect();
        let mut out = Vec::new();
        let mut cur = by_id.get(&node).copied();
        // A snapshot read from a file may be malformed: a cycle must not hang the caller.
        let mut steps = 0;
        while let Some(n) = cur {
            steps += 1;
            if steps > self.call_tree.len() {
                break;
            }
            if let Some(f) = n.function {
                out.push(self.function_by_id(f).map_or("?", |f| f.name.as_str()));
            }
            cur = n.parent.and_then(|p| by_id.get(&p).copied());
        }
        out.reverse();
        out
    }

    /// Profiled wall time counted once: the sum of self wall time over the call tree.
    pub fn profiled_wall_ns(&self) -> u64 {
        self.call_tree.iter().map(|n| n.self_wall_ns).sum()
    }
}

/// Takes a snapshot of the current window.
pub fn snapshot() -> Snapshot {
    crate::record::alloc::untracked(snapshot_untracked)
}

fn snapshot_untracked() -> Snapshot {
    let merged = recorder::collect();
    let started_ns = window::current().start_ns;
    let now_ns = recorder::now_ns();
    let metas = callsite::all_functions();
    let shape = tree::shape();
    build(&merged, &shape, &metas, started_ns, now_ns)
}

fn build(
    merged: &Merged,
    shape: &[(u32, u32)],
    metas: &[callsite::FunctionMeta],
    started_ns: u64,
    now_ns: u64,
) -> Snapshot {
    let nodes: &[NodeSums] = &merged.totals.nodes;
    let fns: &[FnSums] = &merged.totals.fns;
    let n = shape.len().max(nodes.len());
    let get = |i: usize| nodes.get(i).copied().unwrap_or_default();
    let parent_of = |i: usize| shape.get(i).map_or(ROOT, |s| s.0);
    let func_of = |i: usize| shape.get(i).map_or(NO_FUNCTION, |s| s.1);

    // Subtree sums of CPU and allocations (children have larger ids than parents).
    let mut sub_cpu: Vec<u64> = (0..n).map(|i| get(i).cpu_self).collect();
    let mut sub_alloc: Vec<AllocCounters> = (0..n).map(|i| get(i).alloc).collect();
    for i in (1..n).rev() {
        let p = parent_of(i) as usize;
        if p < n && p != i {
            sub_cpu[p] += sub_cpu[i];
            let a = sub_alloc[i];
            sub_alloc[p].add(&a);
        }
    }

    let nested = nested_in_same_function(n, &parent_of, &func_of);
    let nf = metas.len().max(fns.len());
    let mut cpu_self = vec![0u64; nf];
    let mut cpu_total = vec![0u64; nf];
    let mut wall_self = vec![0u64; nf];
    let mut alloc_self = vec![AllocCounters::default(); nf];
    let mut alloc_total = vec![AllocCounters::default(); nf];
    for i in 1..n {
        let f = func_of(i);
        if f == NO_FUNCTION || f as usize >= nf {
            continue;
        }
        let s = get(i);
        let fi = f as usize;
        cpu_self[fi] += s.cpu_self;
        wall_self[fi] += s.wall_self;
        alloc_self[fi].add(&s.alloc);
        // Inclusive figures come from the outermost node of each recursion only.
        if !nested[i] {
            cpu_total[fi] += sub_cpu[i];
            alloc_total[fi].add(&sub_alloc[i]);
        }
    }

    let mut functions = Vec::new();
    for (id, meta) in metas.iter().enumerate() {
        let Some(s) = fns.get(id) else { continue };
        if s.calls == 0 {
            continue;
        }
        let q = |p: f64| histogram::quantile(&s.hist, p, s.min, s.max);
        functions.push(FunctionStats {
            id: id as u32,
            name: meta.name.clone(),
            module: meta.module.clone(),
            file: meta.file.clone(),
            line: meta.line,
            kind: meta.kind,
            calls: s.calls,
            cancelled: s.cancelled,
            total_wall_ns: s.wall_total,
            self_wall_ns: wall_self[id],
            min_ns: if s.min == u64::MAX { 0 } else { s.min },
            max_ns: s.max,
            mean_ns: s.wall_total / s.calls.max(1),
            busy_ns: s.busy_total,
            p50_ns: q(0.50),
            p90_ns: q(0.90),
            p95_ns: q(0.95),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            cpu_total_ns: cpu_total[id],
            cpu_self_ns: cpu_self[id],
            alloc_total: alloc_total[id],
            alloc_self: alloc_self[id],
            histogram: histogram::sparse(&s.hist),
        });
    }

    let mut call_tree = Vec::new();
    for i in 0..n {
        let s = get(i);
        if i != 0 && s.calls == 0 && s.wall_self == 0 && s.cpu_self == 0 && s.alloc == AllocCounters::default() {
            continue;
        }
        call_tree.push(CallTreeNode {
            id: i as u32,
            parent: (i != 0).then(|| parent_of(i)),
            function: (i != 0).then(|| func_of(i)).filter(|&f| f != NO_FUNCTION),
            calls: s.calls,
            self_wall_ns: s.wall_self,
            self_busy_ns: s.busy_self,
            self_cpu_ns: s.cpu_self,
            self_alloc: s.alloc,
        });
    }
    let root = get(0);
    Snapshot {
        window: Window {
            epoch: merged.epoch,
            started_unix_ms: started_ns / 1_000_000,
            taken_unix_ms: now_ns / 1_000_000,
            duration_ns: now_ns.saturating_sub(started_ns),
        },
        functions,
        call_tree,
        unattributed_cpu_ns: root.cpu_self,
        threads: ThreadCounts {
            live: merged.live_threads,
            exited: merged.exited_threads,
        },
        folded_calls: merged.totals.folded_calls,
        call_tree_nodes: tree::len(),
        call_tree_node_cap: crate::record::config::max_call_tree_nodes(),
        allocations_counted: crate::record::alloc::counting_allocator_installed(),
        clock: if crate::record::clock::uses_tsc() {
            "tsc"
        } else {
            "monotonic"
        }
        .to_owned(),
    }
}

/// Per node, whether an ancestor runs the same function (the node is an inner frame of a
/// recursion). One depth-first walk with a count of open frames per function: O(nodes), where
/// walking up from every node would cost O(nodes × depth).
fn nested_in_same_function(n: usize, parent_of: &impl Fn(usize) -> u32, func_of: &impl Fn(usize) -> u32) -> Vec<bool> {
    if n == 0 {
        return Vec::new();
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 1..n {
        let p = parent_of(i) as usize;
        // Children have larger ids than their parents; anything else is not walked.
        if p < i {
            children[p].push(i);
        }
    }
    let mut nested = vec![false; n];
    let mut open: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    // (node, entering?)
    let mut stack: Vec<(usize, bool)> = vec![(ROOT as usize, true)];
    while let Some((i, entering)) = stack.pop() {
        let f = if i == ROOT as usize { NO_FUNCTION } else { func_of(i) };
        if !entering {
            if let Some(c) = open.get_mut(&f) {
                *c -= 1;
            }
            continue;
        }
        let c = open.entry(f).or_default();
        nested[i] = f != NO_FUNCTION && *c > 0;
        *c += 1;
        stack.push((i, false));
        stack.extend(children[i].iter().map(|&c| (c, true)));
    }
    nested
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32, parent: Option<u32>, function: Option<u32>) -> CallTreeNode {
        CallTreeNode {
            id,
            parent,
            function,
            ..CallTreeNode::default()
        }
    }

    fn named(id: u32, name: &str) -> FunctionStats {
        FunctionStats {
            id,
            name: name.to_owned(),
            ..FunctionStats::default()
        }
    }

    #[test]
    fn path_walks_to_the_root_and_survives_a_cycle() {
        let snap = Snapshot {
            functions: vec![named(1, "a"), named(2, "b")],
            call_tree: vec![
                node(0, None, None),
                node(1, Some(0), Some(1)),
                node(2, Some(1), Some(2)),
            ],
            ..Snapshot::default()
        };
        assert_eq!(snap.path(2), ["a", "b"]);
        assert_eq!(snap.path(9), Vec::<&str>::new());
        let cyclic = Snapshot {
            call_tree: vec![node(1, Some(2), None), node(2, Some(1), None)],
            ..snap
        };
        assert!(cyclic.path(1).is_empty());
    }
}
