//! pprof `profile.proto` encoding shared by every profile this crate writes: a builder that
//! interns strings, functions, locations and mappings (`ProfileBuilder`), the process's
//! executable mappings read from `/proc/self/maps` with their ELF build ids ([`maps`]), and
//! the instrumented call tree as a pprof profile ([`tree`]).
//!
//! Locations of sampled profiles carry real instruction addresses inside real mappings
//! (start, limit, file offset, file, build id) marked `has_functions`, so `go tool pprof
//! BINARY PROFILE` and `go tool pprof PROFILE` read the same functions. Locations of the
//! instrumented tree have no address and no mapping: they are functions, not code.
//!
//! Only with the `profiling-full` feature.

pub mod maps;
pub mod tree;

use std::collections::HashMap;

use pprof::protos::{self, Message};

use crate::error::Result;

pub use tree::{tree_profile, tree_profile_delta, TREE_SAMPLE_TYPES};

/// One frame of a location: a function (possibly inlined into the next one) and its line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FrameInfo {
    pub name: String,
    pub system_name: String,
    pub file: String,
    pub line: i64,
}

/// Builds a `Profile`: string table, functions, locations and mappings deduplicated.
#[derive(Debug, Default)]
pub(crate) struct ProfileBuilder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<protos::Function>,
    function_ids: HashMap<(String, String, String), u64>,
    locations: Vec<protos::Location>,
    location_ids: HashMap<(u64, u64, Vec<FrameInfo>), u64>,
    mappings: Vec<protos::Mapping>,
    samples: Vec<protos::Sample>,
}

impl ProfileBuilder {
    pub(crate) fn new() -> Self {
        let mut b = Self::default();
        b.string(""); // index 0 is the empty string
        b
    }

    pub(crate) fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), i);
        i
    }

    fn function(&mut self, f: &FrameInfo) -> u64 {
        let key = (f.name.clone(), f.system_name.clone(), f.file.clone());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        let function = protos::Function {
            id,
            name: self.string(&f.name),
            system_name: self.string(&f.system_name),
            filename: self.string(&f.file),
            ..Default::default()
        };
        self.functions.push(function);
        self.function_ids.insert(key, id);
        id
    }

    /// Adds a mapping; returns its id. The first one added is the main binary's, by pprof's
    /// convention.
    pub(crate) fn mapping(&mut self, m: &maps::Mapping) -> u64 {
        let id = self.mappings.len() as u64 + 1;
        let mapping = protos::Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename: self.string(&m.path),
            build_id: self.string(m.build_id.as_deref().unwrap_or("")),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        };
        self.mappings.push(mapping);
        id
    }

    /// The location of `frames` (innermost inlined frame first) at `address` in mapping
    /// `mapping_id` (0: none).
    pub(crate) fn location(&mut self, address: u64, mapping_id: u64, frames: &[FrameInfo]) -> u64 {
        let key = (address, mapping_id, frames.to_vec());
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let line = frames
            .iter()
            .map(|f| protos::Line {
                function_id: self.function(f),
                line: f.line,
            })
            .collect::<Vec<_>>();
        let id = self.locations.len() as u64 + 1;
        self.locations.push(protos::Location {
            id,
            mapping_id,
            address,
            line,
            ..Default::default()
        });
        self.location_ids.insert(key, id);
        id
    }

    /// Adds a sample: locations leaf first, one value per sample type, string labels.
    pub(crate) fn sample(&mut self, location_ids: Vec<u64>, value: Vec<i64>, labels: &[(&str, &str)]) {
        let label = labels
            .iter()
            .map(|(k, v)| protos::Label {
                key: self.string(k),
                str: self.string(v),
                ..Default::default()
            })
            .collect::<Vec<_>>();
        self.samples.push(protos::Sample {
            location_id: location_ids,
            value,
            label,
        });
    }

    /// The profile: `sample_types` as `(type, unit)`, the period's type and value, start time
    /// and duration (ns).
    pub(crate) fn finish(
        mut self,
        sample_types: &[(&str, &str)],
        period: (&str, &str, i64),
        time_nanos: i64,
        duration_nanos: i64,
    ) -> protos::Profile {
        let sample_type = sample_types
            .iter()
            .map(|(t, u)| protos::ValueType {
                ty: self.string(t),
                unit: self.string(u),
            })
            .collect::<Vec<_>>();
        let period_type = protos::ValueType {
            ty: self.string(period.0),
            unit: self.string(period.1),
        };
        protos::Profile {
            sample_type,
            sample: self.samples,
            mapping: self.mappings,
            location: self.locations,
            function: self.functions,
            string_table: self.strings,
            time_nanos,
            duration_nanos,
            period_type: Some(period_type),
            period: period.2,
            ..Default::default()
        }
    }
}

/// A profile as gzip-compressed protobuf: what `go tool pprof` and the scrapers expect.
pub fn gzip_profile(profile: &protos::Profile) -> Result<Vec<u8>> {
    crate::render::cpu_profile::gzip(&profile.encode_to_vec())
}

/// Nanoseconds since the Unix epoch, for `time_nanos`.
pub(crate) fn unix_nanos(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A valid profile with `sample_types` (`(type, unit)`) and no sample: what a scraper gets
/// for a kind of profile this process has nothing of (goroutines, mutexes).
pub fn empty_profile(sample_types: &[(&str, &str)]) -> protos::Profile {
    let (ty, unit) = sample_types.first().copied().unwrap_or(("samples", "count"));
    ProfileBuilder::new().finish(sample_types, (ty, unit, 1), unix_nanos(std::time::SystemTime::now()), 0)
}
