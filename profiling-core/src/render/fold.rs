//! Where the call tree is folded into `a;b;c <value>` lines, the input format of every
//! flamegraph tool (inferno, Brendan Gregg's `flamegraph.pl`, speedscope).
//!
//! Folding is exact (no sampling): every node of [`Snapshot::call_tree`] becomes one line
//! whose frames are the annotated functions from the root to that node and whose value is
//! the node's *self* figure for the chosen [`Weight`]; recursion is folded so a function
//! appears once per path (see [`crate::analyze::call_paths`]). Lines are sorted by stack and lines
//! of value 0 are left out, so the output is deterministic and a flamegraph drawn from it
//! has each frame as wide as its inclusive figure.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::analyze::call_paths::PathTree;
use crate::error::{Error, Result};
use crate::record::snapshot::{CallTreeNode, Snapshot};

/// Which figure of a call-tree node a flamegraph frame is as wide as.
///
/// Names are `snake_case` (`wall`, `off_cpu`, ...), the spelling of [`crate::analyze::ranking::SortKey`];
/// parsing is case-insensitive and takes `-` for `_`, plus the aliases `self_wall`, `time`,
/// `self_cpu`, `offcpu`, `bytes`, `allocs` and `allocations`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Weight {
    /// Self wall time, ns (for async calls: latency minus awaited annotated callees).
    #[default]
    Wall,
    /// Self thread CPU time, ns.
    Cpu,
    /// Self wall time minus self CPU time, ns: where time went waiting rather than computing.
    OffCpu,
    /// Bytes allocated in the frame itself.
    AllocBytes,
    /// Allocations made in the frame itself.
    AllocCount,
    /// Calls on the path.
    Calls,
}

impl Weight {
    /// Every weight, in display order.
    pub const ALL: &'static [Weight] = <Weight as strum::VariantArray>::VARIANTS;

    /// Other names accepted when parsing.
    const ALIASES: &'static [(&'static str, Weight)] = &[
        ("self_wall", Weight::Wall),
        ("time", Weight::Wall),
        ("self_cpu", Weight::Cpu),
        ("offcpu", Weight::OffCpu),
        ("bytes", Weight::AllocBytes),
        ("allocs", Weight::AllocCount),
        ("allocations", Weight::AllocCount),
    ];

    /// The name used in URLs, on the command line and in JSON: `wall`, `cpu`, `off_cpu`,
    /// `alloc_bytes`, `alloc_count`, `calls`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What a frame's width means, for titles: e.g. "self wall time".
    pub fn description(self) -> &'static str {
        match self {
            Weight::Wall => "self wall time",
            Weight::Cpu => "self CPU time",
            Weight::OffCpu => "off-CPU time (self wall minus self CPU)",
            Weight::AllocBytes => "bytes allocated (self)",
            Weight::AllocCount => "allocations (self)",
            Weight::Calls => "calls",
        }
    }

    /// Unit of the folded values: `ns`, `bytes`, `allocations` or `calls`.
    pub fn unit(self) -> &'static str {
        match self {
            Weight::Wall | Weight::Cpu | Weight::OffCpu => "ns",
            Weight::AllocBytes => "bytes",
            Weight::AllocCount => "allocations",
            Weight::Calls => "calls",
        }
    }

    /// Whether the values are nanoseconds.
    pub fn is_time(self) -> bool {
        self.unit() == "ns"
    }

    /// This weight's figure of one node.
    pub fn of(self, node: &CallTreeNode) -> u64 {
        match self {
            Weight::Wall => node.self_wall_ns,
            Weight::Cpu => node.self_cpu_ns,
            Weight::OffCpu => node.self_wall_ns.saturating_sub(node.self_cpu_ns),
            Weight::AllocBytes => node.self_alloc.alloc_bytes,
            Weight::AllocCount => node.self_alloc.alloc_count,
            Weight::Calls => node.calls,
        }
    }
}

impl FromStr for Weight {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        crate::names::parse(s, Weight::ALIASES).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "unknown weight {s:?}; expected one of {}",
                crate::names::list::<Weight>()
            ))
        })
    }
}

/// One folded line: frames root first, joined by `;`, and a value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FoldedStack {
    /// `root;child;grandchild`.
    pub stack: String,
    /// The weight's figure, in [`Weight::unit`].
    pub value: u64,
}

/// Makes a function name safe as one frame of a folded line: `;` separates frames and the
/// value follows the last whitespace, so `;` becomes `:` and line breaks become spaces.
pub fn sanitize_frame(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' | '\t' => ' ',
            c => c,
        })
        .collect();
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if out.is_empty() {
        out.push('?');
    }
    out
}

/// Folds the call tree of `snapshot` by `weight`: one line per path with a non-zero self
/// figure, sorted by stack. Recursion is folded first ([`PathTree`]): a function already on
/// the path is not repeated, its deeper frames' figures are added to its frame. Paths that
/// read the same (two functions with one name, or duplicate nodes of a hand-edited snapshot)
/// are summed.
///
/// O(nodes) time and memory plus the output: the tree is walked once with one path buffer.
pub fn fold(snapshot: &Snapshot, weight: Weight) -> Vec<FoldedStack> {
    let names: HashMap<u32, String> = snapshot
        .functions
        .iter()
        .map(|f| (f.id, sanitize_frame(&f.name)))
        .collect();
    let mut out: Vec<FoldedStack> = Vec::new();
    PathTree::new(snapshot).walk(
        |f| names.get(&f).map_or("?", String::as_str),
        |node, _, stack| {
            let value = weight.of(node);
            if value > 0 && node.function.is_some() {
                out.push(FoldedStack {
                    stack: stack.to_owned(),
                    value,
                });
            }
        },
    );
    out.sort_unstable();
    out.dedup_by(|later, kept| {
        let same = later.stack == kept.stack;
        if same {
            kept.value += later.value;
        }
        same
    });
    out
}

/// The folded lines as text, one `stack value` per line.
pub fn fold_text(snapshot: &Snapshot, weight: Weight) -> String {
    to_text(&fold(snapshot, weight))
}

/// Writes folded lines as text.
pub fn to_text(lines: &[FoldedStack]) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(&l.stack);
        out.push(' ');
        out.push_str(&l.value.to_string());
        out.push('\n');
    }
    out
}

/// Sum of the values: the width of the whole flamegraph.
pub fn total(lines: &[FoldedStack]) -> u64 {
    lines.iter().map(|l| l.value).sum()
}

/// Parses folded text (`stack value` per line; blank lines skipped).
pub fn parse_folded(text: &str) -> Result<Vec<FoldedStack>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let bad = || Error::InvalidConfig(format!("folded line {}: expected `frames value`, got {line:?}", i + 1));
        let (stack, value) = line.rsplit_once(' ').ok_or_else(bad)?;
        let value = value.parse::<u64>().map_err(|_| bad())?;
        out.push(FoldedStack {
            stack: stack.to_owned(),
            value,
        });
    }
    Ok(out)
}

/// Inclusive value of every frame path prefix: what a flamegraph draws as one box.
/// Keys are stack prefixes (`a`, `a;b`, ...).
pub fn inclusive(lines: &[FoldedStack]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines {
        let mut end = 0;
        for (i, c) in l.stack.char_indices() {
            if c == ';' {
                *out.entry(l.stack[..i].to_owned()).or_default() += l.value;
            }
            end = i + c.len_utf8();
        }
        *out.entry(l.stack[..end].to_owned()).or_default() += l.value;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::alloc::AllocCounters;
    use crate::record::snapshot::{FunctionStats, ThreadCounts, Window};

    fn func(id: u32, name: &str) -> FunctionStats {
        FunctionStats {
            id,
            name: name.to_owned(),
            module: "app".to_owned(),
            file: "src/main.rs".to_owned(),
            line: id + 1,
            calls: 1,
            ..FunctionStats::default()
        }
    }

    fn node(id: u32, parent: u32, function: u32, calls: u64, wall: u64, cpu: u64, bytes: u64) -> CallTreeNode {
        CallTreeNode {
            id,
            parent: Some(parent),
            function: Some(function),
            calls,
            self_wall_ns: wall,
            self_busy_ns: wall,
            self_cpu_ns: cpu,
            self_alloc: AllocCounters {
                alloc_bytes: bytes,
                alloc_count: bytes / 8,
                freed_bytes: 0,
                freed_count: 0,
            },
        }
    }

    /// A known tree:
    /// ```text
    /// main (wall 10, cpu 10)
    /// ├── parse (wall 30, cpu 25, 800 bytes)
    /// │   └── lex (wall 20, cpu 20, 160 bytes)
    /// └── save (wall 40, cpu 5)       <- waits on I/O
    ///     └── parse (wall 0, cpu 0, 1 call)   <- only calls
    /// ```
    pub(crate) fn known_snapshot() -> Snapshot {
        let root = CallTreeNode {
            id: 0,
            parent: None,
            function: None,
            calls: 0,
            self_wall_ns: 7,
            self_busy_ns: 7,
            self_cpu_ns: 7,
            self_alloc: AllocCounters::default(),
        };
        Snapshot {
            window: Window {
                epoch: 1,
                started_unix_ms: 1_700_000_000_000,
                taken_unix_ms: 1_700_000_001_000,
                duration_ns: 1_000_000_000,
            },
            functions: vec![
                func(0, "app::main"),
                func(1, "app::parse"),
                func(2, "app::lex"),
                func(3, "app::save"),
            ],
            call_tree: vec![
                root,
                node(1, 0, 0, 1, 10, 10, 0),
                node(2, 1, 1, 3, 30, 25, 800),
                node(3, 2, 2, 6, 20, 20, 160),
                node(4, 1, 3, 1, 40, 5, 0),
                node(5, 4, 1, 1, 0, 0, 0),
            ],
            unattributed_cpu_ns: 7,
            threads: ThreadCounts { live: 1, exited: 0 },
            folded_calls: 0,
            call_tree_nodes: 6,
            call_tree_node_cap: 16384,
            allocations_counted: true,
            clock: "monotonic".to_owned(),
        }
    }

    #[test]
    fn folds_known_tree_by_each_weight() {
        let s = known_snapshot();
        let snap = Weight::ALL
            .iter()
            .map(|w| format!("# {w}\n{}", fold_text(&s, *w)))
            .collect::<Vec<_>>()
            .join("");
        let want = "\
# wall
app::main 10
app::main;app::parse 30
app::main;app::parse;app::lex 20
app::main;app::save 40
# cpu
app::main 10
app::main;app::parse 25
app::main;app::parse;app::lex 20
app::main;app::save 5
# off_cpu
app::main;app::parse 5
app::main;app::save 35
# alloc_bytes
app::main;app::parse 800
app::main;app::parse;app::lex 160
# alloc_count
app::main;app::parse 100
app::main;app::parse;app::lex 20
# calls
app::main 1
app::main;app::parse 3
app::main;app::parse;app::lex 6
app::main;app::save 1
app::main;app::save;app::parse 1
";
        assert_eq!(snap, want);
    }

    #[test]
    fn output_does_not_depend_on_node_order() {
        let s = known_snapshot();
        let mut shuffled = s.clone();
        shuffled.call_tree.reverse();
        shuffled.functions.reverse();
        assert_eq!(fold(&s, Weight::Wall), fold(&shuffled, Weight::Wall));
    }

    #[test]
    fn folded_total_is_profiled_wall_without_root() {
        let s = known_snapshot();
        assert_eq!(total(&fold(&s, Weight::Wall)), s.profiled_wall_ns() - 7);
    }

    #[test]
    fn names_with_separators_are_sanitized() {
        assert_eq!(sanitize_frame("a;b\nc "), "a:b c");
        assert_eq!(sanitize_frame(""), "?");
        assert_eq!(sanitize_frame("<T as Tr>::f"), "<T as Tr>::f");
    }

    #[test]
    fn text_round_trips_and_rejects_garbage() {
        let s = known_snapshot();
        let lines = fold(&s, Weight::Cpu);
        assert_eq!(parse_folded(&to_text(&lines)).unwrap(), lines);
        let err = parse_folded("a;b x\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(parse_folded("nospace").is_err());
    }

    #[test]
    fn inclusive_sums_prefixes() {
        let s = known_snapshot();
        let inc = inclusive(&fold(&s, Weight::Wall));
        assert_eq!(inc["app::main"], 100);
        assert_eq!(inc["app::main;app::parse"], 50);
        assert_eq!(inc["app::main;app::save"], 40);
    }

    #[test]
    fn weights_parse_by_name_and_reject_unknown() {
        for &w in Weight::ALL {
            assert_eq!(w.as_str().parse::<Weight>().unwrap(), w);
            assert_eq!(w.to_string(), w.as_str());
            assert_eq!(serde_json::to_string(&w).unwrap(), format!("\"{w}\""));
        }
        assert_eq!("SELF_CPU".parse::<Weight>().unwrap(), Weight::Cpu);
        assert_eq!("off-cpu".parse::<Weight>().unwrap(), Weight::OffCpu);
        assert_eq!("Alloc-Bytes".parse::<Weight>().unwrap(), Weight::AllocBytes);
        assert_eq!("allocations".parse::<Weight>().unwrap(), Weight::AllocCount);
        let err = "heat".parse::<Weight>().unwrap_err().to_string();
        assert!(
            err.ends_with(
                "unknown weight \"heat\"; expected one of wall, cpu, off_cpu, alloc_bytes, alloc_count, calls"
            ),
            "{err}"
        );
    }

    #[test]
    fn recursion_is_folded_into_one_frame() {
        // main -> parse -> parse -> parse -> lex: parse appears once, with its three calls.
        let mut s = known_snapshot();
        s.call_tree.truncate(2);
        s.call_tree.extend([
            node(2, 1, 1, 1, 30, 0, 0),
            node(3, 2, 1, 1, 20, 0, 0),
            node(4, 3, 1, 1, 10, 0, 0),
            node(5, 4, 2, 4, 5, 0, 0),
        ]);
        assert_eq!(
            fold_text(&s, Weight::Calls),
            "app::main 1\napp::main;app::parse 3\napp::main;app::parse;app::lex 4\n"
        );
        assert_eq!(total(&fold(&s, Weight::Wall)), 10 + 30 + 20 + 10 + 5);
    }

    #[test]
    fn same_names_are_summed() {
        let mut s = known_snapshot();
        s.functions[3].name = "app::parse".to_owned(); // save now reads like parse
        let lines = fold_text(&s, Weight::Calls);
        assert!(lines.contains("app::main;app::parse 4\n"), "{lines}");
    }

    #[test]
    fn cyclic_tree_terminates() {
        let mut s = known_snapshot();
        s.call_tree[1].parent = Some(3);
        let _ = fold(&s, Weight::Wall);
    }
}
