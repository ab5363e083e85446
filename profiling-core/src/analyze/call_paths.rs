//! Where call paths are computed: the call tree with recursion folded ([`PathTree`]), and one
//! function's detail, its call paths, callers and callees ([`function_detail`]).
//!
//! Every read here costs O(nodes) time and memory (plus the size of its output), whatever the
//! depth of the tree: the tree is walked once, with one stack, and no path is rebuilt per node.
//!
//! **Recursion.** The recorder gives every call path its own node, so a function recursing
//! 5,000 deep is a chain of 5,000 nodes. Read as paths, such a chain would spell 5,000 paths of
//! up to 5,000 frames. [`PathTree`] folds it instead: a frame whose function is already open
//! on its path (direct recursion `f → f`, or through others `f → g → f`) is merged into that
//! earlier frame, and the merged node records its `recursion_depth` (how many frames of the
//! function were open at once at the deepest). Figures are summed, so calls stay exact and a
//! frame stays as wide as everything below it; every path then names a function at most once.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::record::snapshot::{CallTreeNode, FunctionStats, Snapshot, Window};

/// The call tree of a snapshot with recursion folded (see the module docs). Node `i` has id
/// `i`; node 0 is the root; parents come before their children.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PathTree {
    /// Nodes with summed self figures; `id` is the index, `parent` an index.
    pub nodes: Vec<CallTreeNode>,
    /// Per node: the most frames of its function open at once on one path folded into it
    /// (1 without recursion, 0 for the root).
    pub recursion_depth: Vec<u32>,
}

impl PathTree {
    /// Folds the call tree of `snap`. O(nodes): one depth-first walk with a stack; the order
    /// of `snap.call_tree` does not matter, and a cyclic (hand-edited) tree terminates.
    pub fn new(snap: &Snapshot) -> Self {
        let raw = &snap.call_tree;
        let index: HashMap<u32, usize> = raw.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        // Children of each raw node; nodes without a known parent hang under the root.
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); raw.len()];
        let mut tops = Vec::new();
        for (i, n) in raw.iter().enumerate() {
            match n.parent.and_then(|p| index.get(&p)) {
                Some(&p) if p != i => children[p].push(i),
                _ => tops.push(i),
            }
        }

        let mut tree = PathTree {
            nodes: vec![CallTreeNode::default()],
            recursion_depth: vec![0],
        };
        // Raw nodes already folded (a node in a cycle is never reached from a root).
        let mut seen = vec![false; raw.len()];
        // (parent in the folded tree, function) -> folded node.
        let mut child_of: HashMap<(u32, u32), u32> = HashMap::new();
        // Function -> folded node of its frame on the current path, and open frames per function.
        let mut on_path: HashMap<u32, u32> = HashMap::new();
        let mut open: HashMap<u32, u32> = HashMap::new();

        enum Step {
            Enter(usize, u32),
            Leave(Option<u32>, bool),
        }
        let mut stack: Vec<Step> = tops.iter().rev().map(|&i| Step::Enter(i, 0)).collect();
        while let Some(step) = stack.pop() {
            let (i, parent) = match step {
                Step::Enter(i, parent) => (i, parent),
                Step::Leave(f, added) => {
                    if let Some(f) = f {
                        if let Some(c) = open.get_mut(&f) {
                            *c -= 1;
                        }
                        if added {
                            on_path.remove(&f);
                        }
                    }
                    continue;
                }
            };
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let n = &raw[i];
            let (target, added) = match n.function {
                None => (0, false),
                Some(f) => match on_path.get(&f) {
                    Some(&c) => (c, false),
                    None => {
                        let c = *child_of.entry((parent, f)).or_insert_with(|| {
                            tree.nodes.push(CallTreeNode {
                                id: tree.nodes.len() as u32,
                                parent: Some(parent),
                                function: Some(f),
                                ..CallTreeNode::default()
                            });
                            tree.recursion_depth.push(0);
                            tree.nodes.len() as u32 - 1
                        });
                        on_path.insert(f, c);
                        (c, true)
                    }
                },
            };
            let t = target as usize;
            let acc = &mut tree.nodes[t];
            acc.calls += n.calls;
            acc.self_wall_ns += n.self_wall_ns;
            acc.self_busy_ns += n.self_busy_ns;
            acc.self_cpu_ns += n.self_cpu_ns;
            acc.self_alloc.add(&n.self_alloc);
            if let Some(f) = n.function {
                let depth = open.entry(f).or_default();
                *depth += 1;
                tree.recursion_depth[t] = tree.recursion_depth[t].max(*depth);
            }
            stack.push(Step::Leave(n.function, added));
            stack.extend(children[i].iter().rev().map(|&c| Step::Enter(c, target)));
        }
        tree
    }

    /// Visits every node once, parents before children, with its path: the names of its
    /// frames root first, joined by `;` (empty for the root). One string buffer is reused, cut
    /// back to the parent's length at each step, so the walk costs O(nodes + output).
    pub fn walk<'n>(&self, name_of: impl Fn(u32) -> &'n str, mut visit: impl FnMut(&CallTreeNode, u32, &str)) {
        let mut children: Vec<Vec<u32>> = vec![Vec::new(); self.nodes.len()];
        for n in self.nodes.iter().skip(1) {
            if let Some(p) = n.parent {
                children[p as usize].push(n.id);
            }
        }
        let mut path = String::new();
        // (node, length of the path before this node's frame)
        let mut stack: Vec<(u32, usize)> = vec![(0, 0)];
        while let Some((id, prefix)) = stack.pop() {
            path.truncate(prefix);
            let n = &self.nodes[id as usize];
            if let Some(f) = n.function {
                if !path.is_empty() {
                    path.push(';');
                }
                path.push_str(name_of(f));
            }
            visit(n, self.recursion_depth[id as usize], &path);
            let len = path.len();
            stack.extend(children[id as usize].iter().rev().map(|&c| (c, len)));
        }
    }

    /// Function ids of the frames of `node`, root first. O(length of the path), which is at
    /// most the number of distinct functions.
    pub fn frames(&self, node: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = self.nodes.get(node as usize);
        while let Some(n) = cur {
            out.extend(n.function);
            cur = n.parent.and_then(|p| self.nodes.get(p as usize));
        }
        out.reverse();
        out
    }
}

/// One path from a root to a function, with the function's self figures on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallPath {
    /// Function names, root first, ending with the function itself; recursion folded.
    pub path: Vec<String>,
    /// Calls of the function on this path (every recursion level included).
    pub calls: u64,
    /// Self wall time on this path.
    pub self_wall_ns: u64,
    /// Self CPU time on this path.
    pub self_cpu_ns: u64,
    /// Most frames of the function open at once on this path: 1 without recursion.
    pub recursion_depth: u32,
}

/// A caller or a callee of a function, with the calls along that edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEdge {
    /// The other function's name.
    pub function: String,
    /// Calls from the caller into the callee.
    pub calls: u64,
}

/// One function's statistics with where it is called from and what it calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDetail {
    /// The window covered.
    pub window: Window,
    /// The function's figures (flattened in JSON).
    #[serde(flatten)]
    pub stats: FunctionStats,
    /// Paths through the function, most self wall time first.
    pub call_paths: Vec<CallPath>,
    /// Annotated functions that call it (itself, when it recurses), most calls first.
    pub callers: Vec<CallEdge>,
    /// Annotated functions it calls (itself, when it recurses), most calls first.
    pub callees: Vec<CallEdge>,
}

/// Why [`find_function`] found no single function.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No function of that name was called in the window.
    #[error("no function named {0:?} has been called in this window")]
    NotFound(String),
    /// A short name matched several functions.
    #[error("{name:?} is ambiguous: {}; use the full name", candidates.join(", "))]
    Ambiguous {
        /// The name given.
        name: String,
        /// Full names that end with it.
        candidates: Vec<String>,
    },
}

/// The function named `name` in full, or else the only one whose name ends with `::name`.
pub fn find_function<'s>(snap: &'s Snapshot, name: &str) -> Result<&'s FunctionStats, LookupError> {
    if let Some(f) = snap.function(name) {
        return Ok(f);
    }
    let suffix = format!("::{name}");
    let found: Vec<&FunctionStats> = snap.functions.iter().filter(|f| f.name.ends_with(&suffix)).collect();
    match found.as_slice() {
        [f] => Ok(f),
        [] => Err(LookupError::NotFound(name.to_owned())),
        many => Err(LookupError::Ambiguous {
            name: name.to_owned(),
            candidates: many.iter().map(|f| f.name.clone()).collect(),
        }),
    }
}

/// The detail of the function `name` (full name or unique last segment): its statistics,
/// call paths (recursion folded, see the module docs), callers and callees with exact call
/// counts. O(nodes) time and memory plus the output.
pub fn function_detail(snap: &Snapshot, name: &str) -> Result<FunctionDetail, LookupError> {
    let stats = find_function(snap, name)?;
    let id = stats.id;
    let names: HashMap<u32, &str> = snap.functions.iter().map(|f| (f.id, f.name.as_str())).collect();
    let name_of = |f: u32| names.get(&f).copied().unwrap_or("?").to_owned();

    let tree = PathTree::new(snap);
    let mut call_paths: Vec<CallPath> = tree
        .nodes
        .iter()
        .filter(|n| n.function == Some(id) && n.calls > 0)
        .map(|n| CallPath {
            path: tree.frames(n.id).into_iter().map(name_of).collect(),
            calls: n.calls,
            self_wall_ns: n.self_wall_ns,
            self_cpu_ns: n.self_cpu_ns,
            recursion_depth: tree.recursion_depth[n.id as usize],
        })
        .collect();
    call_paths.sort_by(|a, b| b.self_wall_ns.cmp(&a.self_wall_ns).then_with(|| a.path.cmp(&b.path)));

    // Callers and callees from the recorded edges (not the folded tree), so they are exact.
    let function_of: HashMap<u32, Option<u32>> = snap.call_tree.iter().map(|n| (n.id, n.function)).collect();
    let mut callers: HashMap<u32, u64> = HashMap::new();
    let mut callees: HashMap<u32, u64> = HashMap::new();
    for n in &snap.call_tree {
        let Some(parent_fn) = n.parent.and_then(|p| function_of.get(&p).copied().flatten()) else {
            continue;
        };
        match n.function {
            Some(f) if f == id => *callers.entry(parent_fn).or_default() += n.calls,
            Some(f) if parent_fn == id => *callees.entry(f).or_default() += n.calls,
            _ => {}
        }
        if n.function == Some(id) && parent_fn == id {
            *callees.entry(id).or_default() += n.calls;
        }
    }
    let edges = |m: HashMap<u32, u64>| {
        let mut v: Vec<CallEdge> = m
            .into_iter()
            .filter(|&(_, calls)| calls > 0)
            .map(|(f, calls)| CallEdge {
                function: name_of(f),
                calls,
            })
            .collect();
        v.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.function.cmp(&b.function)));
        v
    };
    Ok(FunctionDetail {
        window: snap.window.clone(),
        stats: stats.clone(),
        call_paths,
        callers: edges(callers),
        callees: edges(callees),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn func(id: u32, name: &str) -> FunctionStats {
        FunctionStats {
            id,
            name: name.to_owned(),
            calls: 1,
            ..FunctionStats::default()
        }
    }

    fn node(id: u32, parent: u32, function: u32, calls: u64, wall: u64) -> CallTreeNode {
        CallTreeNode {
            id,
            parent: Some(parent),
            function: Some(function),
            calls,
            self_wall_ns: wall,
            self_cpu_ns: wall / 2,
            ..CallTreeNode::default()
        }
    }

    /// A snapshot whose call tree is one chain: `functions[chain[0]] -> functions[chain[1]] -> ...`,
    /// node `i + 1` with 1 call and `i + 1` ns of self wall time.
    fn chain(functions: &[&str], chain: &[u32]) -> Snapshot {
        let mut call_tree = vec![CallTreeNode::default()];
        for (i, &f) in chain.iter().enumerate() {
            call_tree.push(node(i as u32 + 1, i as u32, f, 1, i as u64 + 1));
        }
        Snapshot {
            functions: functions.iter().enumerate().map(|(i, n)| func(i as u32, n)).collect(),
            call_tree,
            ..Snapshot::default()
        }
    }

    fn paths(tree: &PathTree, snap: &Snapshot) -> Vec<(String, u64, u64, u32)> {
        let mut out = Vec::new();
        tree.walk(
            |f| snap.function_by_id(f).map_or("?", |f| f.name.as_str()),
            |n, depth, path| {
                if n.function.is_some() {
                    out.push((path.to_owned(), n.calls, n.self_wall_ns, depth));
                }
            },
        );
        out
    }

    #[test]
    fn direct_recursion_folds_into_one_node_with_its_depth() {
        let mut ids = vec![0];
        ids.extend(std::iter::repeat_n(1, 1_000));
        ids.push(2);
        let snap = chain(&["main", "deep", "leaf"], &ids);
        let tree = PathTree::new(&snap);
        assert_eq!(tree.nodes.len(), 4, "root, main, deep, leaf");
        // 1000 calls of deep, exact; self wall 2 + 3 + ... + 1001.
        assert_eq!(
            paths(&tree, &snap),
            [
                ("main".to_owned(), 1, 1, 1),
                ("main;deep".to_owned(), 1_000, (2..=1_001).sum(), 1_000),
                ("main;deep;leaf".to_owned(), 1, 1_002, 1),
            ]
        );
        assert_eq!(tree.frames(3), [0, 1, 2]);
    }

    #[test]
    fn recursion_through_other_functions_folds_to_the_nearest_open_frame() {
        // a -> b -> a -> b -> a: every frame of a folds into the first a, of b into the first b.
        let snap = chain(&["a", "b", "c"], &[0, 1, 0, 1, 0]);
        let tree = PathTree::new(&snap);
        assert_eq!(
            paths(&tree, &snap),
            [("a".to_owned(), 3, 1 + 3 + 5, 3), ("a;b".to_owned(), 2, 2 + 4, 2)]
        );
        // a -> b -> c -> a -> c: the last c folds into the c already open, not under a.
        let snap = chain(&["a", "b", "c"], &[0, 1, 2, 0, 2]);
        let got = paths(&PathTree::new(&snap), &snap);
        assert_eq!(
            got,
            [
                ("a".to_owned(), 2, 1 + 4, 2),
                ("a;b".to_owned(), 1, 2, 1),
                ("a;b;c".to_owned(), 2, 3 + 5, 2),
            ]
        );
    }

    #[test]
    fn order_does_not_matter_and_cycles_terminate() {
        let snap = chain(&["a", "b", "c"], &[0, 1, 0, 2]);
        let mut shuffled = snap.clone();
        shuffled.call_tree.reverse();
        assert_eq!(
            paths(&PathTree::new(&snap), &snap),
            paths(&PathTree::new(&shuffled), &shuffled)
        );
        let mut cyclic = snap.clone();
        cyclic.call_tree[1].parent = Some(3);
        let tree = PathTree::new(&cyclic);
        // Nodes 1..=3 form a cycle unreachable from the root; node 4 hangs under node 3.
        assert_eq!(tree.nodes.len(), 1);
    }

    #[test]
    fn function_detail_has_paths_callers_and_callees_with_exact_calls() {
        // main -> parse -> parse -> lex, and main -> save -> parse (2 calls).
        let mut snap = chain(&["app::main", "app::parse", "app::lex", "app::save"], &[0, 1, 1, 2]);
        snap.call_tree.push(node(5, 1, 3, 1, 10));
        snap.call_tree.push(node(6, 5, 1, 2, 20));
        let d = function_detail(&snap, "parse").unwrap();
        assert_eq!(d.stats.name, "app::parse");
        let got: Vec<_> = d
            .call_paths
            .iter()
            .map(|p| (p.path.join(";"), p.calls, p.self_wall_ns, p.recursion_depth))
            .collect();
        assert_eq!(
            got,
            [
                ("app::main;app::save;app::parse".to_owned(), 2, 20, 1),
                ("app::main;app::parse".to_owned(), 2, 2 + 3, 2),
            ]
        );
        let edges = |v: &[CallEdge]| v.iter().map(|e| (e.function.clone(), e.calls)).collect::<Vec<_>>();
        assert_eq!(
            edges(&d.callers),
            [
                ("app::save".to_owned(), 2),
                ("app::main".to_owned(), 1),
                ("app::parse".to_owned(), 1)
            ]
        );
        assert_eq!(
            edges(&d.callees),
            [("app::lex".to_owned(), 1), ("app::parse".to_owned(), 1)]
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["name"], "app::parse");
        assert_eq!(json["call_paths"][0]["path"][2], "app::parse");
    }

    #[test]
    fn lookup_by_short_name_errors_when_missing_or_ambiguous() {
        let snap = chain(&["a::run", "b::run"], &[0, 1]);
        assert_eq!(find_function(&snap, "a::run").unwrap().id, 0);
        assert_eq!(
            find_function(&snap, "walk").unwrap_err().to_string(),
            "no function named \"walk\" has been called in this window"
        );
        assert_eq!(
            find_function(&snap, "run").unwrap_err().to_string(),
            "\"run\" is ambiguous: a::run, b::run; use the full name"
        );
    }
}
