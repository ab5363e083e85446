//! The call-tree cap: state grows with distinct paths up to the cap, and paths beyond it
//! fold into their parent while per-function figures stay exact.

use profiling_core::record::config::set_max_call_tree_nodes;
use profiling_core::{profiled, snapshot};

#[profiled]
fn leaf(_i: u32) {}

#[profiled]
fn mid_a(i: u32) {
    leaf(i);
}

#[profiled]
fn mid_b(i: u32) {
    leaf(i);
}

#[profiled]
fn mid_c(i: u32) {
    leaf(i);
}

#[profiled]
fn top(i: u32) {
    match i % 3 {
        0 => mid_a(i),
        1 => mid_b(i),
        _ => mid_c(i),
    }
}

#[test]
fn paths_beyond_the_cap_fold_into_their_parent() {
    // Root + top + mid_a + mid_a;leaf = 4 nodes; the cap leaves no room for mid_b or mid_c.
    set_max_call_tree_nodes(4).unwrap();
    for i in 0..3_000 {
        top(i);
    }
    let s = snapshot();
    assert!(s.call_tree_nodes <= 4, "{} nodes > cap 4", s.call_tree_nodes);
    assert!(s.call_tree.len() <= 4);
    assert_eq!(s.call_tree_node_cap, 4);
    // Per-function figures stay exact.
    let calls = |n: &str| s.function(&format!("node_cap::{n}")).map_or(0, |f| f.calls);
    assert_eq!(calls("top"), 3_000);
    assert_eq!(calls("mid_a") + calls("mid_b") + calls("mid_c"), 3_000);
    assert_eq!(calls("leaf"), 3_000);
    // 1000 calls of mid_b, 1000 of mid_c, and their 2000 leaf calls had no node of their own.
    assert_eq!(s.folded_calls, 4_000, "folded calls");
    // Their self time went to the parent's node: the tree still accounts for all wall time.
    let top_fn = s.function("node_cap::top").unwrap();
    assert_eq!(s.profiled_wall_ns(), top_fn.total_wall_ns);
    // Calls on folded paths are not counted as calls of the parent's node.
    let top_node = s.call_tree.iter().find(|n| n.function == Some(top_fn.id)).unwrap();
    assert_eq!(top_node.calls, 3_000);
}
