//! Folding a real `#[profiled]` call tree (default build: no inferno needed). The calls
//! weight is exact, so the folded text is compared whole; time weights are checked against
//! CPU-time spins with stated tolerances.

use std::time::Duration;

use profiling_core::render::fold::{self, fold, fold_text, Weight};
use profiling_core::{profiled, snapshot};
use profiling_integration::{serial, spin_cpu};

#[profiled]
fn batch() {
    for i in 0..3 {
        load(i);
    }
    transform();
    transform();
}

#[profiled]
fn load(i: u32) {
    if i == 2 {
        parse();
    }
}

#[profiled]
fn parse() {
    spin_cpu(Duration::from_millis(30));
}

#[profiled]
fn transform() {
    spin_cpu(Duration::from_millis(10));
    parse();
}

#[test]
fn folds_a_real_call_tree() {
    let _s = serial();
    batch();
    let snap = snapshot();
    let calls = fold_text(&snap, Weight::Calls);
    assert_eq!(
        calls,
        "\
flamegraph_fold::batch 1
flamegraph_fold::batch;flamegraph_fold::load 3
flamegraph_fold::batch;flamegraph_fold::load;flamegraph_fold::parse 1
flamegraph_fold::batch;flamegraph_fold::transform 2
flamegraph_fold::batch;flamegraph_fold::transform;flamegraph_fold::parse 2
"
    );

    // CPU: parse under load spun 30 ms, under transform 2 x 30 ms; transform itself 2 x 10 ms.
    let cpu = fold::inclusive(&fold(&snap, Weight::Cpu));
    let ms = |k: &str| cpu.get(k).copied().unwrap_or(0) as f64 / 1e6;
    let close = |got: f64, want: f64| (got - want).abs() <= want * 0.10;
    assert!(
        close(
            ms("flamegraph_fold::batch;flamegraph_fold::load;flamegraph_fold::parse"),
            30.0
        ),
        "{cpu:?}"
    );
    assert!(
        close(
            ms("flamegraph_fold::batch;flamegraph_fold::transform;flamegraph_fold::parse"),
            60.0
        ),
        "{cpu:?}"
    );
    assert!(
        close(ms("flamegraph_fold::batch;flamegraph_fold::transform"), 80.0),
        "{cpu:?}"
    );
    assert!(close(ms("flamegraph_fold::batch"), 110.0), "{cpu:?}");

    // Off-CPU of a spin is small: the spins computed, they did not wait.
    let off: u64 = fold(&snap, Weight::OffCpu).iter().map(|l| l.value).sum();
    let wall: u64 = fold(&snap, Weight::Wall).iter().map(|l| l.value).sum();
    assert!(off <= wall, "off-CPU {off} > wall {wall}");

    // Deterministic: folding twice gives the same text.
    assert_eq!(fold_text(&snap, Weight::Wall), fold_text(&snap, Weight::Wall));
}
