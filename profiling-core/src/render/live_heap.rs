//! Live heap by call path, rendered: in-use folded stacks (default build), and with
//! `profiling-full` an in-use flamegraph SVG and a pprof heap profile with Go's four sample
//! types (`alloc_objects/count`, `alloc_space/bytes`, `inuse_objects/count`,
//! `inuse_space/bytes`), readable by `go tool pprof` and any pprof viewer.
//!
//! The figures are the scaled estimates of [`crate::analyze::live_heap`]; frames are the
//! annotated functions (`#[profiled]`, spans), not machine frames, so no symbolization is
//! needed. Allocations made outside any annotated function appear under
//! [`crate::analyze::live_heap::UNATTRIBUTED`].

use std::collections::BTreeMap;

use crate::analyze::live_heap::{self, LiveHeapFigures};
use crate::render::fold::{sanitize_frame, FoldedStack};

/// Which live-heap figure a folded line or flamegraph frame is as wide as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeapWeight {
    /// Estimated bytes live (in use).
    #[default]
    InuseSpace,
    /// Estimated blocks live.
    InuseObjects,
    /// Estimated bytes allocated since the process started.
    AllocSpace,
    /// Estimated blocks allocated since the process started.
    AllocObjects,
}

impl HeapWeight {
    fn of(self, f: &LiveHeapFigures) -> u64 {
        match self {
            HeapWeight::InuseSpace => f.inuse_bytes,
            HeapWeight::InuseObjects => f.inuse_objects,
            HeapWeight::AllocSpace => f.alloc_space,
            HeapWeight::AllocObjects => f.alloc_objects,
        }
    }
}

fn folded_from(nodes: impl Iterator<Item = (Vec<String>, LiveHeapFigures)>, weight: HeapWeight) -> Vec<FoldedStack> {
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for (path, figures) in nodes {
        let value = weight.of(&figures);
        if value == 0 {
            continue;
        }
        let stack: Vec<String> = path.iter().map(|f| sanitize_frame(f)).collect();
        *sums.entry(stack.join(";")).or_default() += value;
    }
    sums.into_iter()
        .map(|(stack, value)| FoldedStack { stack, value })
        .collect()
}

/// Folded stacks of the live heap now, one line per call path, sorted by stack.
pub fn folded(weight: HeapWeight) -> Vec<FoldedStack> {
    folded_from(live_heap::read_by_node().nodes(), weight)
}

#[cfg(feature = "profiling-full")]
pub use full::{flamegraph_svg, pprof_gzip, pprof_profile};

#[cfg(feature = "profiling-full")]
mod full {
    use std::collections::HashMap;

    use pprof::protos::{self, Message};

    use super::{folded, HeapWeight};
    use crate::analyze::live_heap;
    use crate::error::Result;
    use crate::record::heap_sample;
    use crate::render::flamegraph::{self, SvgOptions, Unit};

    /// The in-use flamegraph: each frame as wide as the estimated live bytes allocated on
    /// its path.
    pub fn flamegraph_svg() -> Result<Vec<u8>> {
        let lines = folded(HeapWeight::InuseSpace);
        let rate = heap_sample::heap_sample_bytes();
        let opts = SvgOptions::new("Live heap by allocating call path (in use)", Unit::Bytes).subtitle(format!(
            "Estimated from allocations sampled every {rate} bytes on average; total {}",
            flamegraph::format_value(crate::render::fold::total(&lines), Unit::Bytes)
        ));
        flamegraph::render(&lines, &opts)
    }

    /// Interns strings into a pprof string table (index 0 is "").
    struct Strings {
        table: Vec<String>,
        index: HashMap<String, i64>,
    }

    impl Strings {
        fn new() -> Self {
            Self {
                table: vec![String::new()],
                index: HashMap::from([(String::new(), 0)]),
            }
        }

        fn id(&mut self, s: &str) -> i64 {
            if let Some(&i) = self.index.get(s) {
                return i;
            }
            let i = self.table.len() as i64;
            self.table.push(s.to_owned());
            self.index.insert(s.to_owned(), i);
            i
        }

        fn value_type(&mut self, ty: &str, unit: &str) -> protos::ValueType {
            protos::ValueType {
                ty: self.id(ty),
                unit: self.id(unit),
            }
        }
    }

    /// The live heap as a pprof `Profile`: one sample per call path with values
    /// `[alloc_objects, alloc_space, inuse_objects, inuse_space]` (Go's order; the default
    /// sample type is `inuse_space`), one function and location per annotated function.
    pub fn pprof_profile() -> protos::Profile {
        let by_node = live_heap::read_by_node();
        let mut s = Strings::new();
        let sample_type = vec![
            s.value_type("alloc_objects", "count"),
            s.value_type("alloc_space", "bytes"),
            s.value_type("inuse_objects", "count"),
            s.value_type("inuse_space", "bytes"),
        ];
        let mut functions: Vec<protos::Function> = Vec::new();
        let mut locations: Vec<protos::Location> = Vec::new();
        let mut location_of: HashMap<String, u64> = HashMap::new();
        let mut samples = Vec::new();
        for (path, f) in by_node.nodes() {
            // pprof lists a sample's locations leaf first.
            let location_id = path
                .iter()
                .rev()
                .map(|name| {
                    *location_of.entry(name.clone()).or_insert_with(|| {
                        let id = functions.len() as u64 + 1;
                        let name_id = s.id(name);
                        functions.push(protos::Function {
                            id,
                            name: name_id,
                            system_name: name_id,
                            ..Default::default()
                        });
                        locations.push(protos::Location {
                            id,
                            line: vec![protos::Line {
                                function_id: id,
                                line: 0,
                            }],
                            ..Default::default()
                        });
                        id
                    })
                })
                .collect();
            samples.push(protos::Sample {
                location_id,
                value: vec![
                    f.alloc_objects as i64,
                    f.alloc_space as i64,
                    f.inuse_objects as i64,
                    f.inuse_bytes as i64,
                ],
                label: Vec::new(),
            });
        }
        let period_type = Some(s.value_type("space", "bytes"));
        let default_sample_type = s.id("inuse_space");
        let comment = vec![s.id("estimated from sampled allocations (see docs/guide.md, live heap)")];
        protos::Profile {
            sample_type,
            sample: samples,
            location: locations,
            function: functions,
            string_table: s.table,
            time_nanos: crate::record::clock::unix_now_ns() as i64,
            period_type,
            period: heap_sample::heap_sample_bytes() as i64,
            comment,
            default_sample_type,
            ..Default::default()
        }
    }

    /// [`pprof_profile`], encoded and gzip-compressed: a `.pb.gz` for `go tool pprof`.
    pub fn pprof_gzip() -> Result<Vec<u8>> {
        crate::render::cpu_profile::gzip(&pprof_profile().encode_to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_paths_by_weight_and_skips_zero() {
        let f = |inuse, alloc| LiveHeapFigures {
            inuse_bytes: inuse,
            alloc_space: alloc,
            ..Default::default()
        };
        let nodes = vec![
            (vec!["a".to_owned()], f(10, 100)),
            (vec!["a".to_owned(), "b;c".to_owned()], f(0, 50)),
        ];
        let inuse = folded_from(nodes.clone().into_iter(), HeapWeight::InuseSpace);
        assert_eq!(
            inuse,
            [FoldedStack {
                stack: "a".into(),
                value: 10
            }]
        );
        let alloc = folded_from(nodes.into_iter(), HeapWeight::AllocSpace);
        assert_eq!(alloc[1].stack, "a;b:c");
        assert_eq!(alloc[1].value, 50);
    }
}
