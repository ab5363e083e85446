//! Live heap by the function that allocated it, from the sampled blocks of
//! [`crate::record::heap_sample`]: per function, per call path, and the functions whose
//! allocations stay live (leak suspects).
//!
//! Every figure is a **scaled estimate**: each live sampled block of `s` bytes stands for
//! `1 / p` blocks and `s / p` bytes, `p = 1 - exp(-s / rate)`. With `n` live samples behind
//! a figure, its relative standard error is about `1 / sqrt(n)` for blocks much smaller than
//! the interval (less for larger ones); `samples` is reported beside each figure for that
//! reason. A function's figures are its *self* figures: bytes allocated while it was the
//! innermost annotated function on the thread, wherever they were freed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::record::callsite::{self, FunctionMeta};
use crate::record::heap_sample::{self, HeapSamplerStats, LiveSample, NodeAllocated};
use crate::record::tree::{self, NO_FUNCTION, ROOT};

/// Name given to allocations made with no annotated function open.
pub const UNATTRIBUTED: &str = "[no profiled function]";

/// Estimated live and allocated heap of one function or path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveHeapFigures {
    /// Estimated bytes allocated and not yet freed.
    pub inuse_bytes: u64,
    /// Estimated blocks allocated and not yet freed.
    pub inuse_objects: u64,
    /// Estimated bytes allocated since the process started (freed or not).
    pub alloc_space: u64,
    /// Estimated blocks allocated since the process started.
    pub alloc_objects: u64,
    /// Live sampled blocks behind `inuse_*` (the estimate's precision: about `1/sqrt(n)`).
    pub samples: u64,
    /// Age of the oldest live sampled block, ms (0 when none is live).
    pub oldest_age_ms: u64,
}

/// Live heap of one function (self: allocated while it was the innermost annotated one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionLiveHeap {
    /// Function name ([`UNATTRIBUTED`] for allocations outside any).
    pub function: String,
    /// Its estimates.
    #[serde(flatten)]
    pub figures: LiveHeapFigures,
}

/// Live heap of one call path (root first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathLiveHeap {
    /// Annotated functions from the outermost to the allocating one.
    pub path: Vec<String>,
    /// Its estimates.
    #[serde(flatten)]
    pub figures: LiveHeapFigures,
}

/// Live heap by allocating function and call path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveHeapReport {
    /// The sampler's counters (interval, samples live, dropped).
    pub sampler: HeapSamplerStats,
    /// Always true: figures are estimates scaled from samples.
    pub estimated: bool,
    /// When the report was read, ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// Estimated bytes live, all functions.
    pub total_inuse_bytes: u64,
    /// Per function, by `inuse_bytes` descending (then `alloc_space`).
    pub functions: Vec<FunctionLiveHeap>,
    /// Per call path, same order.
    pub paths: Vec<PathLiveHeap>,
}

impl LiveHeapReport {
    /// The entry of `function` (exact name), if it allocated anything sampled.
    pub fn function(&self, function: &str) -> Option<&FunctionLiveHeap> {
        self.functions.iter().find(|f| f.function == function)
    }
}

/// Figures per call-tree node, accumulated from samples.
#[derive(Default, Clone, Copy)]
struct Acc {
    inuse_bytes: f64,
    inuse_objects: f64,
    alloc_bytes: f64,
    alloc_objects: f64,
    samples: u64,
    oldest_ms: Option<u64>,
}

impl Acc {
    fn add(&mut self, o: &Acc) {
        self.inuse_bytes += o.inuse_bytes;
        self.inuse_objects += o.inuse_objects;
        self.alloc_bytes += o.alloc_bytes;
        self.alloc_objects += o.alloc_objects;
        self.samples += o.samples;
        self.oldest_ms = match (self.oldest_ms, o.oldest_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn figures(&self, now_ms: u64) -> LiveHeapFigures {
        LiveHeapFigures {
            inuse_bytes: self.inuse_bytes.round() as u64,
            inuse_objects: self.inuse_objects.round() as u64,
            alloc_space: self.alloc_bytes.round() as u64,
            alloc_objects: self.alloc_objects.round() as u64,
            samples: self.samples,
            oldest_age_ms: self.oldest_ms.map_or(0, |t| now_ms.saturating_sub(t)),
        }
    }
}

/// Samples grouped by node, with what is needed to name nodes: the pure part of every
/// report, testable without the global table.
pub(crate) struct ByNode {
    acc: BTreeMap<u32, Acc>,
    shape: Vec<(u32, u32)>,
    names: Vec<FunctionMeta>,
    now_ms: u64,
}

impl ByNode {
    pub(crate) fn new(
        live: &[LiveSample],
        allocated: &[NodeAllocated],
        shape: Vec<(u32, u32)>,
        names: Vec<FunctionMeta>,
        now_ms: u64,
    ) -> Self {
        let mut acc: BTreeMap<u32, Acc> = BTreeMap::new();
        for s in live {
            let a = acc.entry(s.node).or_default();
            a.inuse_objects += s.scale;
            a.inuse_bytes += s.scale * s.size as f64;
            a.samples += 1;
            a.oldest_ms = Some(a.oldest_ms.map_or(s.at_ms, |t| t.min(s.at_ms)));
        }
        for n in allocated {
            let a = acc.entry(n.node).or_default();
            a.alloc_objects += n.objects;
            a.alloc_bytes += n.bytes;
        }
        Self {
            acc,
            shape,
            names,
            now_ms,
        }
    }

    fn function_name(&self, func: u32) -> String {
        if func == NO_FUNCTION {
            return UNATTRIBUTED.to_owned();
        }
        self.names
            .get(func as usize)
            .map_or_else(|| format!("<function {func}>"), |m| m.name.clone())
    }

    /// The function of `node` (`NO_FUNCTION` for the root or an unknown node).
    fn func_of(&self, node: u32) -> u32 {
        self.shape.get(node as usize).map_or(NO_FUNCTION, |&(_, f)| f)
    }

    /// Names from the outermost frame to `node`'s function (`[UNATTRIBUTED]` for the root).
    pub(crate) fn path(&self, node: u32) -> Vec<String> {
        let mut path = Vec::new();
        let mut n = node;
        // A path is at most as long as the table (guards against a malformed shape).
        for _ in 0..=self.shape.len() {
            if n == ROOT || n as usize >= self.shape.len() {
                break;
            }
            let (parent, func) = self.shape[n as usize];
            path.push(self.function_name(func));
            n = parent;
        }
        if path.is_empty() {
            path.push(UNATTRIBUTED.to_owned());
        }
        path.reverse();
        path
    }

    pub(crate) fn functions(&self) -> Vec<FunctionLiveHeap> {
        let mut by_fn: BTreeMap<u32, Acc> = BTreeMap::new();
        for (&node, a) in &self.acc {
            by_fn.entry(self.func_of(node)).or_default().add(a);
        }
        let mut out: Vec<FunctionLiveHeap> = by_fn
            .into_iter()
            .map(|(f, a)| FunctionLiveHeap {
                function: self.function_name(f),
                figures: a.figures(self.now_ms),
            })
            .collect();
        out.sort_by(|a, b| order(&a.figures, &b.figures).then_with(|| a.function.cmp(&b.function)));
        out
    }

    pub(crate) fn paths(&self) -> Vec<PathLiveHeap> {
        let mut out: Vec<PathLiveHeap> = self
            .acc
            .iter()
            .map(|(&node, a)| PathLiveHeap {
                path: self.path(node),
                figures: a.figures(self.now_ms),
            })
            .collect();
        out.sort_by(|a, b| order(&a.figures, &b.figures).then_with(|| a.path.cmp(&b.path)));
        out
    }

    /// Each node's path and figures, for renderers.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = (Vec<String>, LiveHeapFigures)> + '_ {
        self.acc.iter().map(|(&n, a)| (self.path(n), a.figures(self.now_ms)))
    }
}

fn order(a: &LiveHeapFigures, b: &LiveHeapFigures) -> std::cmp::Ordering {
    b.inuse_bytes
        .cmp(&a.inuse_bytes)
        .then_with(|| b.alloc_space.cmp(&a.alloc_space))
}

/// Reads the sampler now, grouped by node.
pub(crate) fn read_by_node() -> ByNode {
    let (live, allocated) = heap_sample::read();
    ByNode::new(
        &live,
        &allocated,
        tree::shape(),
        callsite::all_functions(),
        crate::record::clock::unix_now_ns() / 1_000_000,
    )
}

/// Live heap by allocating function and call path, now.
///
/// Needs [`crate::ProfilingAllocator`] as the global allocator (otherwise empty) and sampling
/// on ([`heap_sample::set_heap_sample_bytes`], `PROFILING_HEAP_SAMPLE_BYTES`; default 512 KiB).
pub fn report() -> LiveHeapReport {
    let by_node = read_by_node();
    let functions = by_node.functions();
    LiveHeapReport {
        sampler: heap_sample::heap_sampler_stats(),
        estimated: true,
        at_unix_ms: by_node.now_ms,
        total_inuse_bytes: functions.iter().map(|f| f.figures.inuse_bytes).sum(),
        paths: by_node.paths(),
        functions,
    }
}

/// How sure a suspect is, from the number of live samples behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// 1-3 samples: the function does hold live blocks (each sample is a real live block),
    /// but the size estimate may be off by a factor of two or more.
    Low,
    /// 4-24 samples: size within `±1.96/sqrt(n)` (95%): ±98% at 4 down to ±40% at 24.
    Medium,
    /// 25 samples or more: within ±39% at 25, ±20% at 100 (95%).
    High,
}

impl Confidence {
    /// The confidence of an estimate from `samples` live samples.
    pub fn of(samples: u64) -> Confidence {
        match samples {
            0..=3 => Confidence::Low,
            4..=24 => Confidence::Medium,
            _ => Confidence::High,
        }
    }
}

/// A function whose sampled allocations stay live.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveHeapSuspect {
    /// Function name.
    pub function: String,
    /// Estimated live bytes allocated by it at least `min_age` ago.
    pub inuse_bytes: u64,
    /// Estimated live blocks, same age.
    pub inuse_objects: u64,
    /// Live samples behind the estimate.
    pub samples: u64,
    /// Age of its oldest live sampled block, ms.
    pub oldest_age_ms: u64,
    /// Median age of its live sampled blocks, ms.
    pub median_age_ms: u64,
    /// Half-width of the 95% interval of `inuse_bytes`, relative (`1.96 / sqrt(samples)`,
    /// an upper bound for blocks smaller than the sampling interval).
    pub relative_error_95: f64,
    /// From the number of samples.
    pub confidence: Confidence,
}

/// What counts as a live-heap leak suspect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspectOptions {
    /// Only blocks live for at least this long count.
    pub min_age: Duration,
    /// Functions with fewer estimated live bytes (of that age) are left out.
    pub min_inuse_bytes: u64,
}

impl Default for SuspectOptions {
    /// Blocks of any age, at least 1 MiB live.
    fn default() -> Self {
        Self {
            min_age: Duration::ZERO,
            min_inuse_bytes: 1 << 20,
        }
    }
}

/// Functions whose sampled allocations stay live, largest first: what the leak report can
/// name even in a short window (no growth over time needed).
pub fn suspects(opts: &SuspectOptions) -> Vec<LiveHeapSuspect> {
    let (live, _) = heap_sample::read();
    let by_node = ByNode::new(
        &[],
        &[],
        tree::shape(),
        callsite::all_functions(),
        crate::record::clock::unix_now_ns() / 1_000_000,
    );
    suspects_from(&by_node, &live, opts)
}

fn suspects_from(by_node: &ByNode, live: &[LiveSample], opts: &SuspectOptions) -> Vec<LiveHeapSuspect> {
    let min_age_ms = opts.min_age.as_millis() as u64;
    let mut by_fn: BTreeMap<u32, Vec<&LiveSample>> = BTreeMap::new();
    for s in live {
        if by_node.now_ms.saturating_sub(s.at_ms) >= min_age_ms {
            by_fn.entry(by_node.func_of(s.node)).or_default().push(s);
        }
    }
    let mut out: Vec<LiveHeapSuspect> = by_fn
        .into_iter()
        .filter(|(f, _)| *f != NO_FUNCTION)
        .filter_map(|(f, samples)| {
            let bytes: f64 = samples.iter().map(|s| s.scale * s.size as f64).sum();
            if (bytes.round() as u64) < opts.min_inuse_bytes {
                return None;
            }
            let mut ages: Vec<u64> = samples.iter().map(|s| by_node.now_ms.saturating_sub(s.at_ms)).collect();
            ages.sort_unstable();
            let n = samples.len() as u64;
            Some(LiveHeapSuspect {
                function: by_node.function_name(f),
                inuse_bytes: bytes.round() as u64,
                inuse_objects: samples.iter().map(|s| s.scale).sum::<f64>().round() as u64,
                samples: n,
                oldest_age_ms: ages.last().copied().unwrap_or(0),
                median_age_ms: ages[ages.len() / 2],
                relative_error_95: 1.96 / (n as f64).sqrt(),
                confidence: Confidence::of(n),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.inuse_bytes
            .cmp(&a.inuse_bytes)
            .then_with(|| a.function.cmp(&b.function))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::callsite::CallsiteKind;

    fn meta(name: &str) -> FunctionMeta {
        FunctionMeta {
            name: name.to_owned(),
            module: String::new(),
            file: String::new(),
            line: 0,
            kind: CallsiteKind::Sync,
        }
    }

    fn sample(node: u32, size: u64, scale: f64, at_ms: u64) -> LiveSample {
        LiveSample {
            node,
            size,
            scale,
            at_ms,
        }
    }

    /// Root -> a (node 1) -> b (node 2); root -> b (node 3).
    fn fixture() -> (Vec<LiveSample>, ByNode) {
        let live = vec![
            sample(1, 1000, 2.0, 1_000),
            sample(2, 100, 10.0, 5_000),
            sample(3, 100, 10.0, 9_000),
            sample(0, 50, 4.0, 9_500),
        ];
        let allocated = [NodeAllocated {
            node: 2,
            objects: 100.0,
            bytes: 10_000.0,
        }];
        let shape = vec![(ROOT, NO_FUNCTION), (ROOT, 0), (1, 1), (ROOT, 1)];
        let by_node = ByNode::new(&live, &allocated, shape, vec![meta("a"), meta("b")], 10_000);
        (live, by_node)
    }

    #[test]
    fn functions_sum_their_nodes_and_paths_name_the_chain() {
        let (_, by_node) = fixture();
        let f = by_node.functions();
        let names: Vec<&str> = f.iter().map(|f| f.function.as_str()).collect();
        // a and b both hold 2,000 bytes; b allocated more in all, so it ranks first.
        assert_eq!(names, ["b", "a", UNATTRIBUTED]);
        assert_eq!(f[1].figures.inuse_bytes, 2000);
        assert_eq!(f[0].figures.inuse_bytes, 2000);
        assert_eq!(f[0].figures.inuse_objects, 20);
        assert_eq!(f[0].figures.samples, 2);
        assert_eq!(f[0].figures.alloc_space, 10_000);
        assert_eq!(f[0].figures.oldest_age_ms, 5_000);
        assert_eq!(by_node.path(2), ["a", "b"]);
        assert_eq!(by_node.path(0), [UNATTRIBUTED]);
        let paths = by_node.paths();
        assert_eq!(paths[0].path, ["a"]);
        assert_eq!(paths.len(), 4);
    }

    #[test]
    fn suspects_filter_by_age_and_size() {
        let (live, by_node) = fixture();
        let all = SuspectOptions {
            min_age: Duration::ZERO,
            min_inuse_bytes: 1,
        };
        let s = suspects_from(&by_node, &live, &all);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].function, "a");
        assert_eq!(s[0].confidence, Confidence::Low);
        let old = SuspectOptions {
            min_age: Duration::from_secs(3),
            min_inuse_bytes: 1,
        };
        let s = suspects_from(&by_node, &live, &old);
        let b = s.iter().find(|s| s.function == "b").expect("b");
        assert_eq!((b.inuse_bytes, b.samples, b.oldest_age_ms), (1000, 1, 5_000));
        assert!(suspects_from(&by_node, &live, &SuspectOptions::default()).is_empty());
    }

    #[test]
    fn confidence_grows_with_samples() {
        assert_eq!(Confidence::of(1), Confidence::Low);
        assert_eq!(Confidence::of(10), Confidence::Medium);
        assert_eq!(Confidence::of(40), Confidence::High);
    }
}
