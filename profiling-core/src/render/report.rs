//! Where reports are written to local files: a guard that, when the program ends (when it
//! is dropped), writes the flamegraph SVG, the folded text and the JSON snapshot (through
//! [`crate::render::snapshot_file`], atomically), and the text table of a snapshot diff.
//! [`load_snapshot`] and [`save_snapshot`] are re-exported from there.
//!
//! ```no_run
//! # fn main() -> profiling_core::Result<()> {
//! // Writes profile.svg (with `profiling-full`), profile.folded and profile.json at the end of main.
//! let _report = profiling_core::render::report::ReportBuilder::new()
//!     .flamegraph("target/profile.svg")
//!     .weight(profiling_core::render::fold::Weight::Cpu)
//!     .build()?;
//! // Or from the environment: PROFILING_FLAMEGRAPH=target/profile.svg
//! let _from_env = profiling_core::render::report::from_env()?;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use crate::analyze::diff::{DeltaStatus, SnapshotDiff};
use crate::error::{Error, Result};
use crate::record::snapshot::Snapshot;
use crate::render::fold::{self, Weight};

/// Path of the flamegraph SVG to write at exit; the folded text and JSON go beside it.
pub const ENV_FLAMEGRAPH: &str = "PROFILING_FLAMEGRAPH";
/// Weight of that flamegraph (`wall`, `cpu`, `off_cpu`, `alloc_bytes`, `alloc_count`, `calls`).
pub const ENV_FLAMEGRAPH_WEIGHT: &str = "PROFILING_FLAMEGRAPH_WEIGHT";

pub use crate::render::snapshot_file::{load_snapshot, parse_snapshot, save_snapshot};

/// Every report file is written atomically, like the snapshots.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::render::snapshot_file::write_atomic(path, bytes)
}

/// Which files a [`ReportGuard`] writes.
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until build() returns the guard"]
pub struct ReportBuilder {
    svg: Option<PathBuf>,
    folded: Option<PathBuf>,
    json: Option<PathBuf>,
    weight: Weight,
}

impl ReportBuilder {
    /// Writes nothing until told where.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the flamegraph SVG to `path` (needs the `profiling-full` feature), and the
    /// folded text and JSON snapshot beside it (`.folded`, `.json`) unless set otherwise.
    pub fn flamegraph(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.folded.get_or_insert_with(|| path.with_extension("folded"));
        self.json.get_or_insert_with(|| path.with_extension("json"));
        self.svg = Some(path);
        self
    }

    /// Writes the folded stacks (`a;b;c value` lines) to `path`.
    pub fn folded(mut self, path: impl Into<PathBuf>) -> Self {
        self.folded = Some(path.into());
        self
    }

    /// Writes the snapshot as JSON to `path` (readable by the `profiling` tool).
    pub fn json(mut self, path: impl Into<PathBuf>) -> Self {
        self.json = Some(path.into());
        self
    }

    /// The weight of the flamegraph and folded text (default: self wall time).
    pub fn weight(mut self, weight: Weight) -> Self {
        self.weight = weight;
        self
    }

    /// Reads [`ENV_FLAMEGRAPH`] and [`ENV_FLAMEGRAPH_WEIGHT`]: `None` when the first is unset
    /// or empty.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(path) = std::env::var_os(ENV_FLAMEGRAPH).filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let mut b = Self::new().flamegraph(PathBuf::from(path));
        if let Ok(w) = std::env::var(ENV_FLAMEGRAPH_WEIGHT) {
            b.weight = w.parse().map_err(|_| Error::InvalidEnv {
                name: ENV_FLAMEGRAPH_WEIGHT,
                value: w.clone(),
                reason: "expected wall, cpu, off_cpu, alloc_bytes, alloc_count or calls".into(),
            })?;
        }
        Ok(Some(b))
    }

    /// The guard. Fails if an SVG is asked for in a build without `profiling-full`.
    pub fn build(self) -> Result<ReportGuard> {
        if self.svg.is_some() && !cfg!(feature = "profiling-full") {
            return Err(Error::InvalidConfig(
                "writing a flamegraph SVG needs the `profiling-full` feature of profiling-core; \
                 ask for .folded(..) or .json(..) alone, or enable the feature"
                    .to_owned(),
            ));
        }
        Ok(ReportGuard {
            builder: self,
            done: false,
        })
    }
}

/// [`ReportBuilder::from_env`], built: the one line a batch job needs in `main`.
pub fn from_env() -> Result<Option<ReportGuard>> {
    ReportBuilder::from_env()?.map(ReportBuilder::build).transpose()
}

/// Files written by a [`ReportGuard`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WrittenReport {
    /// The flamegraph SVG.
    pub svg: Option<PathBuf>,
    /// The folded text.
    pub folded: Option<PathBuf>,
    /// The JSON snapshot.
    pub json: Option<PathBuf>,
}

/// Writes its report when dropped (or on [`ReportGuard::finish`], which returns errors
/// instead of printing them to stderr).
#[derive(Debug)]
#[must_use = "the report is written when the guard is dropped: bind it to a variable (`let _report = ...`)"]
pub struct ReportGuard {
    builder: ReportBuilder,
    done: bool,
}

impl ReportGuard {
    /// Takes a snapshot now and writes the files.
    pub fn finish(mut self) -> Result<WrittenReport> {
        self.done = true;
        write_report(&crate::snapshot(), &self.builder)
    }
}

impl Drop for ReportGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match write_report(&crate::snapshot(), &self.builder) {
            Ok(w) => {
                if let Some(p) = w.svg.as_ref().or(w.folded.as_ref()).or(w.json.as_ref()) {
                    eprintln!("profiling: report written to {}", p.display());
                }
            }
            Err(e) => eprintln!("profiling: could not write the report: {e}"),
        }
    }
}

fn write_report(snapshot: &Snapshot, b: &ReportBuilder) -> Result<WrittenReport> {
    let mut out = WrittenReport::default();
    if let Some(p) = &b.folded {
        write_file(p, fold::fold_text(snapshot, b.weight).as_bytes())?;
        out.folded = Some(p.clone());
    }
    if let Some(p) = &b.json {
        save_snapshot(snapshot, p)?;
        out.json = Some(p.clone());
    }
    #[cfg(feature = "profiling-full")]
    if let Some(p) = &b.svg {
        write_file(p, &crate::render::flamegraph::render_snapshot(snapshot, b.weight)?)?;
        out.svg = Some(p.clone());
    }
    Ok(out)
}

/// The diff of two snapshots as a text table, worst regression first: per-call self time,
/// mean and p99 on both sides, and the regression key.
pub fn render_diff_table(diff: &SnapshotDiff) -> String {
    use crate::render::table::fmt_ns;
    use std::fmt::Write as _;
    let pct = |p: Option<f64>| p.map_or("-".to_owned(), |p| format!("{p:+.1}%"));
    let ns = |v: Option<u64>| v.map_or("-".to_owned(), fmt_ns);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>3}  {:<10} {:<40} {:>10} {:>10} {:>8} {:>10} {:>10} {:>12}",
        "#", "status", "function", "self/call", "→", "Δself", "p99", "→", "regression"
    );
    for d in &diff.functions {
        let status = match d.status {
            DeltaStatus::Regressed => "regressed",
            DeltaStatus::Improved => "improved",
            DeltaStatus::Unchanged => "unchanged",
            DeltaStatus::Added => "added",
            DeltaStatus::Removed => "removed",
        };
        let mut name = d.function.clone();
        if name.chars().count() > 40 {
            let tail: String = name
                .chars()
                .rev()
                .take(39)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            name = format!("…{tail}");
        }
        let reg = if d.regression_ns < 0 {
            format!("-{}", fmt_ns(d.regression_ns.unsigned_abs()))
        } else {
            format!("+{}", fmt_ns(d.regression_ns as u64))
        };
        let _ = writeln!(
            out,
            "{:>3}  {:<10} {:<40} {:>10} {:>10} {:>8} {:>10} {:>10} {:>12}",
            d.rank,
            status,
            name,
            ns(d.base.map(|b| b.self_mean_ns)),
            ns(d.target.map(|t| t.self_mean_ns)),
            pct(d.self_change_percent),
            ns(d.base.map(|b| b.p99_ns)),
            ns(d.target.map(|t| t.p99_ns)),
            reg
        );
    }
    let _ = writeln!(out, "{} regressed, {} improved", diff.regressed, diff.improved);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fold::tests::known_snapshot;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("profiling-report-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn snapshot_round_trips_through_a_file_bare_or_wrapped() {
        let dir = tmp("roundtrip");
        let s = known_snapshot();
        save_snapshot(&s, dir.join("a/s.json")).unwrap();
        assert_eq!(load_snapshot(dir.join("a/s.json")).unwrap(), s);
        for key in ["snapshot", "profile"] {
            let wrapped = serde_json::json!({ "id": "1-1", key: s });
            std::fs::write(dir.join("w.json"), wrapped.to_string()).unwrap();
            assert_eq!(load_snapshot(dir.join("w.json")).unwrap(), s);
        }
    }

    #[test]
    fn missing_and_malformed_files_say_which_and_why() {
        let dir = tmp("bad");
        std::fs::create_dir_all(&dir).unwrap();
        let e = load_snapshot(dir.join("nope.json")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.json"), "{e}");
        std::fs::write(dir.join("garbage.json"), "{not json").unwrap();
        let e = load_snapshot(dir.join("garbage.json")).unwrap_err().to_string();
        assert!(e.contains("garbage.json") && e.contains("not JSON"), "{e}");
        std::fs::write(dir.join("other.json"), r#"{"hello": 1}"#).unwrap();
        let e = load_snapshot(dir.join("other.json")).unwrap_err().to_string();
        assert!(e.contains("not a snapshot"), "{e}");
    }

    #[test]
    fn builder_derives_sibling_paths() {
        let b = ReportBuilder::new().flamegraph("out/run.svg");
        assert_eq!(b.folded.as_deref(), Some(Path::new("out/run.folded")));
        assert_eq!(b.json.as_deref(), Some(Path::new("out/run.json")));
        let b = ReportBuilder::new().folded("x.txt").flamegraph("run.svg");
        assert_eq!(b.folded.as_deref(), Some(Path::new("x.txt")));
    }

    #[test]
    fn writes_folded_and_json() {
        let dir = tmp("write");
        let b = ReportBuilder::new()
            .folded(dir.join("p.folded"))
            .json(dir.join("p.json"))
            .weight(Weight::Calls);
        let w = write_report(&known_snapshot(), &b).unwrap();
        assert_eq!(w.svg, None);
        let folded = std::fs::read_to_string(dir.join("p.folded")).unwrap();
        assert_eq!(folded, fold::fold_text(&known_snapshot(), Weight::Calls));
        assert_eq!(load_snapshot(dir.join("p.json")).unwrap(), known_snapshot());
    }

    #[cfg(not(feature = "profiling-full"))]
    #[test]
    fn svg_without_the_feature_is_refused_up_front() {
        let e = ReportBuilder::new().flamegraph("x.svg").build().unwrap_err();
        assert!(e.to_string().contains("profiling-full"), "{e}");
    }

    #[cfg(feature = "profiling-full")]
    #[test]
    fn writes_svg_with_the_feature() {
        let dir = tmp("svg");
        let b = ReportBuilder::new().flamegraph(dir.join("p.svg"));
        let w = write_report(&known_snapshot(), &b).unwrap();
        assert_eq!(w.svg.as_deref(), Some(dir.join("p.svg").as_path()));
        let svg = std::fs::read_to_string(dir.join("p.svg")).unwrap();
        assert!(svg.contains("app::lex"));
        assert!(dir.join("p.folded").exists() && dir.join("p.json").exists());
    }

    #[test]
    fn diff_table_lists_regressions_first() {
        let mut base = known_snapshot();
        let mut target = known_snapshot();
        target.functions[2].self_wall_ns = 1_000_000;
        target.functions[2].total_wall_ns = 1_000_000;
        base.functions[2].self_wall_ns = 1_000;
        base.functions[2].total_wall_ns = 1_000;
        let t = render_diff_table(&crate::analyze::diff::diff(&base, &target));
        let first = t.lines().nth(1).unwrap();
        assert!(first.contains("regressed") && first.contains("app::lex"), "{t}");
        assert!(t.ends_with("1 regressed, 0 improved\n"), "{t}");
    }
}
