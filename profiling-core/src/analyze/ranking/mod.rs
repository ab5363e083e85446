//! Bottleneck rankings: which functions to fix first, and why.
//!
//! [`rank`] is a pure function of a [`Snapshot`]: it sorts the functions by a [`SortKey`],
//! and derives for each its share of profiled time, an impact score ([`score`]), a
//! classification ([`classify`](mod@classify)) and recommendations whose text quotes the figures they
//! come from ([`advice`]). The formula and every threshold are constants of
//! [`thresholds`], documented in `docs/rankings.md`.
//!
//! Unqualified figures of an entry are *self* (exclusive) figures: `cpu_ns` is self CPU time
//! and `alloc_bytes` self allocated bytes, as a ranking asks where the work itself happens.
//! Inclusive figures carry `total` in their name.
//!
//! (Over 500 lines only with its unit tests: the code is the first 351 lines, the tests the
//! other 205, kept beside it as the house does for pure functions.)

pub mod advice;
pub mod classify;
pub mod score;

use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};

pub use classify::{classify, thresholds, Classification, Profile};
pub use score::{impact_score, Shares};

use crate::record::snapshot::{FunctionStats, Snapshot};
use score::{ratio, round4};

/// The metric a ranking is sorted by (descending).
///
/// Names are `snake_case` (`self_wall`, `alloc_bytes`, ...); parsing is case-insensitive and
/// takes `-` for `_` (see the crate's one spelling rule in `names.rs`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SortKey {
    /// Self (exclusive) wall time: where time is spent in the function's own code.
    #[default]
    SelfWall,
    /// Total (inclusive) wall time, callees included.
    TotalWall,
    /// Self thread CPU time.
    Cpu,
    /// Self allocated bytes.
    AllocBytes,
    /// Self allocation count.
    AllocCount,
    /// Calls.
    Calls,
    /// 99th percentile latency of a call.
    P99,
}

impl SortKey {
    /// Every key, in the order listed in errors and docs.
    pub const ALL: &'static [SortKey] = <SortKey as strum::VariantArray>::VARIANTS;

    /// The key's name, as accepted by [`FromStr`] and written by serde.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The value of this metric for a function.
    fn value(self, f: &FunctionStats) -> u64 {
        match self {
            SortKey::SelfWall => f.self_wall_ns,
            SortKey::TotalWall => f.total_wall_ns,
            SortKey::Cpu => f.cpu_self_ns,
            SortKey::AllocBytes => f.alloc_self.alloc_bytes,
            SortKey::AllocCount => f.alloc_self.alloc_count,
            SortKey::Calls => f.calls,
            SortKey::P99 => f.p99_ns,
        }
    }
}

/// A string that names no [`SortKey`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown sort key {input:?}; valid keys: {}", crate::names::list::<SortKey>())]
pub struct ParseSortKeyError {
    /// The string that was given.
    pub input: String,
}

impl FromStr for SortKey {
    type Err = ParseSortKeyError;

    /// Parses a key name (case-insensitive; `-` may stand for `_`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::parse(s, &[]).ok_or_else(|| ParseSortKeyError { input: s.to_owned() })
    }
}

/// How to rank.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankOptions {
    /// The metric to sort by.
    pub sort: SortKey,
    /// Keep at most this many entries (`None`: all).
    pub limit: Option<usize>,
}

impl RankOptions {
    /// Sort by self wall time, no limit.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sorts by `sort`.
    #[must_use]
    pub fn sort(mut self, sort: SortKey) -> Self {
        self.sort = sort;
        self
    }

    /// Keeps at most `limit` entries.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// Where a ranking's window starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStart {
    /// The first window: since the process started recording.
    ProcessStart,
    /// Since the last [`crate::reset`].
    LastReset,
}

/// The window a ranking covers, with the totals its shares are relative to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankingWindow {
    /// Window counter: 1 for the first window, +1 per reset.
    pub epoch: u64,
    /// Since process start or since the last reset.
    pub since: WindowStart,
    /// Start, in ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// When the snapshot was taken, in ms since the Unix epoch.
    pub taken_unix_ms: u64,
    /// Length of the window, in ns.
    pub duration_ns: u64,
    /// Profiled wall time counted once (sum of self wall time): the denominator of `share`.
    pub profiled_wall_ns: u64,
    /// Functions with calls in the window (before `limit`).
    pub functions: usize,
    /// Whether allocations were counted.
    pub allocations_counted: bool,
}

/// One ranked function: its measured figures ([`FunctionStats`], embedded), then what is
/// derived from them.
///
/// In JSON the statistics are flattened into the entry, beside the names the ranking has
/// always served: `function` (= `name`), `cpu_ns` (= `cpu_self_ns`), and the self
/// allocation figures `alloc_bytes`, `alloc_count`, `freed_bytes`, with `alloc_total_bytes`
/// the inclusive allocated bytes.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Bottleneck {
    /// 1-based position.
    pub rank: usize,
    /// The function's figures in the window.
    #[serde(flatten)]
    pub stats: FunctionStats,
    /// `self_wall_ns` / profiled wall time of the window, in [0, 1].
    pub share: f64,
    /// Self CPU / all self CPU of the window, in [0, 1].
    pub cpu_share: f64,
    /// Self allocated bytes / all self allocated bytes of the window, in [0, 1].
    pub alloc_share: f64,
    /// Weighted mean of the shares, in [0, 1] (see [`impact_score`]).
    pub impact_score: f64,
    /// The dominant cost: the first of `classifications`.
    pub classification: Classification,
    /// Every classification that applies, most specific first.
    pub classifications: Vec<Classification>,
    /// What to do, each naming the figures that call for it.
    pub recommendations: Vec<String>,
}

impl Bottleneck {
    /// Display name of the function.
    pub fn function(&self) -> &str {
        &self.stats.name
    }
}

impl Serialize for Bottleneck {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The entry as served: the embedded statistics plus the names rankings have always
        /// used for the self figures. Borrowed, so nothing is copied.
        #[derive(Serialize)]
        struct Entry<'a> {
            rank: usize,
            function: &'a str,
            #[serde(flatten)]
            stats: &'a FunctionStats,
            cpu_ns: u64,
            alloc_bytes: u64,
            alloc_count: u64,
            freed_bytes: u64,
            alloc_total_bytes: u64,
            share: f64,
            cpu_share: f64,
            alloc_share: f64,
            impact_score: f64,
            classification: Classification,
            classifications: &'a [Classification],
            recommendations: &'a [String],
        }
        let s = &self.stats;
        Entry {
            rank: self.rank,
            function: &s.name,
            stats: s,
            cpu_ns: s.cpu_self_ns,
            alloc_bytes: s.alloc_self.alloc_bytes,
            alloc_count: s.alloc_self.alloc_count,
            freed_bytes: s.alloc_self.freed_bytes,
            alloc_total_bytes: s.alloc_total.alloc_bytes,
            share: self.share,
            cpu_share: self.cpu_share,
            alloc_share: self.alloc_share,
            impact_score: self.impact_score,
            classification: self.classification,
            classifications: &self.classifications,
            recommendations: &self.recommendations,
        }
        .serialize(serializer)
    }
}

/// A ranking, as served by the HTTP API and rendered by [`crate::render::table::render_table`].
///
#[doc = include_str!("../../../../docs/rankings.md")]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranking {
    /// The window covered.
    pub window: RankingWindow,
    /// The metric sorted by.
    pub sort: SortKey,
    /// Entries, best candidate first.
    pub bottlenecks: Vec<Bottleneck>,
    /// Caveats about the whole ranking (e.g. allocations not counted).
    pub notes: Vec<String>,
}

/// Ranks the functions of `snap`. Pure: the same snapshot and options give the same ranking.
///
/// Ties on the sort key are broken by self wall time, then by name.
///
/// ```
/// use profiling_core::{profiled, rank, RankOptions};
/// use profiling_core::analyze::ranking::SortKey;
///
/// #[profiled]
/// fn work() -> u64 {
///     (0..1000u64).sum()
/// }
///
/// # fn main() {
/// work();
/// let ranking = rank(&profiling_core::snapshot(), &RankOptions::new().sort(SortKey::Calls).limit(5));
/// assert!(ranking.bottlenecks.len() <= 5);
/// assert!(ranking.bottlenecks.iter().any(|b| b.function().ends_with("::work")));
/// println!("{ranking}"); // a plain-text table
/// # }
/// ```
pub fn rank(snap: &Snapshot, opts: &RankOptions) -> Ranking {
    let wall_total = snap.profiled_wall_ns();
    let cpu_total: u64 = snap.functions.iter().map(|f| f.cpu_self_ns).sum();
    let alloc_total: u64 = snap.functions.iter().map(|f| f.alloc_self.alloc_bytes).sum();
    let cpu_measured = cpu_total > 0 || snap.unattributed_cpu_ns > 0;
    let allocs = snap.allocations_counted;

    let key = opts.sort;
    let mut order: Vec<&FunctionStats> = snap.functions.iter().collect();
    order.sort_by(|a, b| {
        key.value(b)
            .cmp(&key.value(a))
            .then(b.self_wall_ns.cmp(&a.self_wall_ns))
            .then_with(|| a.name.cmp(&b.name))
    });
    let functions = order.len();
    order.truncate(opts.limit.unwrap_or(functions));

    let bottlenecks = order
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let shares = Shares {
                wall: ratio(f.self_wall_ns, wall_total),
                cpu: ratio(f.cpu_self_ns, cpu_total),
                alloc: if allocs {
                    ratio(f.alloc_self.alloc_bytes, alloc_total)
                } else {
                    None
                },
            };
            let classifications = classify(f, allocs, cpu_measured);
            Bottleneck {
                rank: i + 1,
                stats: f.clone(),
                share: round4(shares.wall.unwrap_or(0.0)),
                cpu_share: round4(shares.cpu.unwrap_or(0.0)),
                alloc_share: round4(shares.alloc.unwrap_or(0.0)),
                impact_score: impact_score(shares),
                classification: classifications[0],
                recommendations: advice::recommend(f, &classifications, cpu_measured),
                classifications,
            }
        })
        .collect();

    Ranking {
        window: RankingWindow {
            epoch: snap.window.epoch,
            since: if snap.window.epoch <= 1 {
                WindowStart::ProcessStart
            } else {
                WindowStart::LastReset
            },
            started_unix_ms: snap.window.started_unix_ms,
            taken_unix_ms: snap.window.taken_unix_ms,
            duration_ns: snap.window.duration_ns,
            profiled_wall_ns: wall_total,
            functions,
            allocations_counted: allocs,
        },
        sort: key,
        bottlenecks,
        notes: advice::notes(snap, cpu_measured),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::alloc::AllocCounters;
    use crate::record::callsite::CallsiteKind;
    use crate::record::snapshot::{CallTreeNode, ThreadCounts, Window};

    pub(crate) const MS: u64 = 1_000_000;

    /// A function with the given self figures, on its own root path.
    pub(crate) fn func(id: u32, name: &str, calls: u64, total: u64, self_wall: u64, cpu: u64) -> FunctionStats {
        let per_call = total / calls.max(1);
        FunctionStats {
            id,
            name: name.to_owned(),
            module: "m".to_owned(),
            file: "src/m.rs".to_owned(),
            line: id,
            kind: CallsiteKind::Sync,
            calls,
            cancelled: 0,
            total_wall_ns: total,
            self_wall_ns: self_wall,
            min_ns: per_call,
            max_ns: per_call,
            mean_ns: per_call,
            busy_ns: total,
            p50_ns: per_call,
            p90_ns: per_call,
            p95_ns: per_call,
            p99_ns: per_call,
            p999_ns: per_call,
            cpu_total_ns: cpu,
            cpu_self_ns: cpu,
            alloc_total: AllocCounters::default(),
            alloc_self: AllocCounters::default(),
            histogram: Vec::new(),
        }
    }

    pub(crate) fn snap(functions: Vec<FunctionStats>, allocations_counted: bool) -> Snapshot {
        let call_tree = functions
            .iter()
            .map(|f| CallTreeNode {
                id: f.id,
                parent: Some(0),
                function: Some(f.id),
                calls: f.calls,
                self_wall_ns: f.self_wall_ns,
                self_busy_ns: f.self_wall_ns,
                self_cpu_ns: f.cpu_self_ns,
                self_alloc: f.alloc_self,
            })
            .collect();
        Snapshot {
            window: Window {
                epoch: 1,
                started_unix_ms: 1_700_000_000_000,
                taken_unix_ms: 1_700_000_001_000,
                duration_ns: 1_000 * MS,
            },
            functions,
            call_tree,
            unattributed_cpu_ns: 0,
            threads: ThreadCounts { live: 1, exited: 0 },
            folded_calls: 0,
            call_tree_nodes: 3,
            call_tree_node_cap: 1000,
            allocations_counted,
            clock: "monotonic".to_owned(),
        }
    }

    #[test]
    fn sort_keys_round_trip_and_errors_list_valid_keys() {
        for &k in SortKey::ALL {
            assert_eq!(k.to_string().parse::<SortKey>(), Ok(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<SortKey>(&format!("\"{k}\"")).unwrap(), k);
        }
        assert_eq!("Self-Wall".parse::<SortKey>(), Ok(SortKey::SelfWall));
        assert_eq!(" alloc-bytes ".parse::<SortKey>(), Ok(SortKey::AllocBytes));
        let err = "wall".parse::<SortKey>().unwrap_err();
        assert_eq!(err.input, "wall");
        assert_eq!(
            err.to_string(),
            "unknown sort key \"wall\"; valid keys: self_wall, total_wall, cpu, alloc_bytes, alloc_count, calls, p99"
        );
        assert_eq!(SortKey::default(), SortKey::SelfWall);
    }

    #[test]
    fn ranks_by_each_key_with_shares_and_limit() {
        let mut a = func(1, "m::a", 1, 30 * MS, 30 * MS, 29 * MS);
        let b = func(2, "m::b", 1, 10 * MS, 10 * MS, 10 * MS);
        let mut parent = func(3, "m::parent", 1, 41 * MS, MS, MS);
        parent.p99_ns = 500 * MS;
        a.alloc_self = AllocCounters {
            alloc_bytes: 3 << 20,
            alloc_count: 41_000,
            freed_bytes: 3 << 20,
            freed_count: 41_000,
        };
        let s = snap(vec![a, b, parent], true);
        let r = rank(&s, &RankOptions::new());
        let names: Vec<_> = r.bottlenecks.iter().map(Bottleneck::function).collect();
        assert_eq!(names, ["m::a", "m::b", "m::parent"]);
        assert_eq!(r.bottlenecks[0].rank, 1);
        assert_eq!(r.bottlenecks[0].share, round4(30.0 / 41.0));
        let share_sum: f64 = r.bottlenecks.iter().map(|b| b.share).sum();
        assert!((share_sum - 1.0).abs() < 1e-3);
        assert_eq!(r.window.profiled_wall_ns, 41 * MS);
        assert_eq!(r.window.since, WindowStart::ProcessStart);
        assert!(r.notes.is_empty(), "{:?}", r.notes);

        let first = |k: SortKey| {
            rank(&s, &RankOptions::new().sort(k)).bottlenecks[0]
                .function()
                .to_owned()
        };
        assert_eq!(first(SortKey::TotalWall), "m::parent");
        assert_eq!(first(SortKey::P99), "m::parent");
        assert_eq!(first(SortKey::Cpu), "m::a");
        assert_eq!(first(SortKey::AllocBytes), "m::a");
        assert_eq!(first(SortKey::AllocCount), "m::a");

        let r = rank(&s, &RankOptions::new().sort(SortKey::TotalWall).limit(2));
        assert_eq!(r.bottlenecks.len(), 2);
        assert_eq!(r.bottlenecks[1].rank, 2);
        assert_eq!(r.window.functions, 3);
        assert_eq!(r.sort, SortKey::TotalWall);
        // The parent is a wrapper: told to look at its callees.
        let p = &r.bottlenecks[0];
        assert!(
            p.recommendations
                .iter()
                .any(|t| t.contains("98% of its 41.0 ms total time")),
            "{:?}",
            p.recommendations
        );
    }

    #[test]
    fn json_shape() {
        let mut f = func(1, "m::a", 1, MS, MS, MS);
        f.alloc_self = AllocCounters {
            alloc_bytes: 64,
            alloc_count: 2,
            freed_bytes: 32,
            freed_count: 1,
        };
        f.alloc_total.alloc_bytes = 96;
        let r = rank(&snap(vec![f], true), &RankOptions::new());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["sort"], "self_wall");
        assert_eq!(v["window"]["since"], "process_start");
        let b = &v["bottlenecks"][0];
        // Every key the entry has always had, with the values it has always had.
        let served = [
            ("rank", 1),
            ("calls", 1),
            ("total_wall_ns", MS),
            ("self_wall_ns", MS),
            ("busy_ns", MS),
            ("mean_ns", MS),
            ("cpu_ns", MS),
            ("cpu_self_ns", MS),
            ("cpu_total_ns", MS),
            ("alloc_bytes", 64),
            ("alloc_count", 2),
            ("freed_bytes", 32),
            ("alloc_total_bytes", 96),
            ("p50_ns", MS),
            ("p95_ns", MS),
            ("p99_ns", MS),
            ("max_ns", MS),
            ("line", 1),
        ];
        for (k, want) in served {
            assert_eq!(b[k], want, "{k}");
        }
        for (k, want) in [
            ("function", "m::a"),
            ("module", "m"),
            ("kind", "sync"),
            ("file", "src/m.rs"),
        ] {
            assert_eq!(b[k], want, "{k}");
        }
        for k in [
            "share",
            "cpu_share",
            "alloc_share",
            "impact_score",
            "classifications",
            "recommendations",
        ] {
            assert!(!b[k].is_null(), "missing {k}");
        }
        assert_eq!(b["classification"], "cpu_bound");
        let back: Ranking = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
