//! Flamegraph SVGs of a real `#[profiled]` call tree: well-formed XML containing every
//! annotated function, each frame as wide as its measured weight.
//!
//! Tolerances: a frame's width (percent of the image, as inferno writes it) is within 0.2
//! percentage points of the function's inclusive weight share computed from the snapshot
//! (inferno rounds to 1/10000 of a percent and drops frames under 0.1 px); against the
//! workload's true cost (CPU spins, exact allocations) within 10% of the share.

use std::collections::HashMap;
use std::time::Duration;

use profiling_core::render::flamegraph::{render_diff, render_snapshot};
use profiling_core::render::fold::{self, fold, Weight};
use profiling_core::{profiled, snapshot};
use profiling_integration::{serial, spin_cpu};

#[global_allocator]
static ALLOC: profiling_core::ProfilingAllocator = profiling_core::ProfilingAllocator::system();

#[profiled]
fn job() {
    heavy();
    light();
    spin_cpu(Duration::from_millis(20));
}

#[profiled]
fn heavy() {
    spin_cpu(Duration::from_millis(60));
    std::hint::black_box(vec![1u8; 3 << 20]);
}

#[profiled]
fn light() {
    spin_cpu(Duration::from_millis(20));
    std::hint::black_box(vec![1u8; 1 << 20]);
}

/// `title text -> width percent` of every frame of an inferno SVG.
fn frame_widths(svg: &str) -> HashMap<String, f64> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts).expect("well-formed XML");
    let mut out = HashMap::new();
    for g in doc.descendants().filter(|n| n.has_tag_name("g")) {
        let title = g.children().find(|c| c.has_tag_name("title")).and_then(|t| t.text());
        let rect = g.children().find(|c| c.has_tag_name("rect"));
        if let (Some(title), Some(rect)) = (title, rect) {
            let w = rect
                .attribute("width")
                .and_then(|w| w.trim_end_matches('%').parse::<f64>().ok());
            if let Some(w) = w {
                let name = title.split(" (").next().unwrap_or(title).to_owned();
                *out.entry(name).or_default() += w;
            }
        }
    }
    out
}

fn share(inc: &std::collections::BTreeMap<String, u64>, key: &str, total: u64) -> f64 {
    inc.get(key).copied().unwrap_or(0) as f64 / total as f64 * 100.0
}

#[test]
fn svg_frames_are_as_wide_as_measured_weight() {
    let _s = serial();
    profiling_core::reset();
    job();
    let snap = snapshot();
    for (weight, truth) in [
        (Weight::Cpu, [("heavy", 60.0), ("light", 20.0)]),
        (Weight::AllocBytes, [("heavy", 75.0), ("light", 25.0)]),
    ] {
        let svg = String::from_utf8(render_snapshot(&snap, weight).unwrap()).unwrap();
        let widths = frame_widths(&svg);
        let lines = fold(&snap, weight);
        let inc = fold::inclusive(&lines);
        let total = fold::total(&lines);
        // inferno's frame area is the image minus 10 px padding per side: widths are of
        // that, "all" is 100% of it.
        let all = widths.get("all").copied().expect("root frame");
        for f in ["job", "heavy", "light"] {
            let name = format!("flamegraph_svg::{f}");
            let key = if f == "job" {
                name.clone()
            } else {
                format!("flamegraph_svg::job;{name}")
            };
            let got = widths
                .get(&name)
                .copied()
                .unwrap_or_else(|| panic!("{name} missing from {weight} SVG"));
            let got = got / all * 100.0;
            let want = share(&inc, &key, total);
            assert!(
                (got - want).abs() <= 0.2,
                "{weight}: {name} is {got:.3}% wide, weight share {want:.3}%"
            );
        }
        for (f, want) in truth {
            let name = format!("flamegraph_svg::{f}");
            let got = widths[&name] / all * 100.0;
            // Allocation truth is exact up to the Vec headers of the spins (none): 10%.
            assert!(
                (got - want).abs() <= want * 0.10,
                "{weight}: {name} {got:.2}% vs true {want}%"
            );
        }
        assert!(svg.contains(weight.description().split(' ').next().unwrap_or("")));
    }
    let svg = String::from_utf8(render_snapshot(&snap, Weight::AllocBytes).unwrap()).unwrap();
    assert!(svg.contains("bytes, "), "tooltips carry the unit");
}

#[test]
fn differential_svg_is_xml_and_names_functions() {
    let _s = serial();
    profiling_core::reset();
    job();
    let base = snapshot();
    heavy();
    let target = snapshot();
    let svg = String::from_utf8(render_diff(&base, &target, Weight::Cpu).unwrap()).unwrap();
    let widths = frame_widths(&svg);
    assert!(widths.contains_key("flamegraph_svg::heavy"), "{:?}", widths.keys());
    assert!(svg.contains("Differential"));
}
