//! pprof output read by `go tool pprof` itself (Debian's `golang-go`): the sampled CPU profile
//! gives the same top functions with and without the binary, and `-raw` / `-traces` read it.
//!
//! Skipped with a loud message when `go` is absent; required under `PROFILING_REQUIRE_TOOLS=1`
//! (`.ci/run`). Tolerance: the hot function holds at least half of the samples in both
//! readings (it spins ~1 s of the ~1 s profiled).

mod fleet_tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleet_tools::tool;
use profiling_core::render::cpu_profile;
use profiling_integration::{serial, spin_cpu};

#[inline(never)]
fn hot_spin_for_pprof_tools(d: Duration) {
    spin_cpu(d);
    std::hint::black_box(());
}

/// `go tool pprof <args>`; panics with its stderr when it fails.
fn pprof(go: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run go tool pprof");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "go tool pprof {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Rows of `-top`: `(flat %, cum %, function)`, highest flat first; pprof's ` (inline)` mark
/// is dropped (it appears only when the binary is read).
fn top_rows(top: &str) -> Vec<(f64, f64, String)> {
    top.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let flat = cols.get(1)?.strip_suffix('%')?.parse().ok()?;
            let cum = cols.get(4)?.strip_suffix('%')?.parse().ok()?;
            let name = cols[5..].join(" ");
            Some((flat, cum, name.trim_end_matches(" (inline)").to_owned()))
        })
        .collect()
}

/// Cumulative share of the first row whose function contains `needle`.
fn cum(rows: &[(f64, f64, String)], needle: &str) -> f64 {
    rows.iter().find(|r| r.2.contains(needle)).map_or(0.0, |r| r.1)
}

fn write_profile(dir: &Path) -> PathBuf {
    let ((), profile) = cpu_profile::profile_cpu_while(cpu_profile::DEFAULT_FREQUENCY_HZ, || {
        hot_spin_for_pprof_tools(Duration::from_millis(1000))
    })
    .unwrap();
    assert!(profile.samples() >= 40, "too few samples: {profile:?}");
    let path = dir.join("cpu.pb.gz");
    std::fs::write(&path, profile.pprof_gzip().unwrap()).unwrap();
    path
}

#[test]
fn go_tool_pprof_reads_the_cpu_profile_with_and_without_the_binary() {
    let Some(go) = tool("go", "golang-go") else {
        return;
    };
    let _s = serial();
    let dir = std::env::temp_dir().join(format!("profiling-pprof-tools-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = write_profile(&dir);
    let exe = std::env::current_exe().unwrap();

    let without = pprof(&go, &["-top".as_ref(), file.as_os_str()]);
    let with = pprof(&go, &["-top".as_ref(), exe.as_os_str(), file.as_os_str()]);
    let (rows_without, rows_with) = (top_rows(&without), top_rows(&with));
    let both = format!("without the binary:\n{without}\nwith the binary:\n{with}");
    // The same leading functions, in the same order, with the same flat shares.
    let names = |rows: &[(f64, f64, String)]| rows.iter().take(3).map(|r| (r.0, r.2.clone())).collect::<Vec<_>>();
    assert!(rows_with.len() > 3, "the profile collapsed:\n{both}");
    assert_eq!(names(&rows_without), names(&rows_with), "{both}");
    for rows in [&rows_without, &rows_with] {
        assert!(cum(rows, "hot_spin_for_pprof_tools") >= 50.0, "{both}");
        // No profiler frame and no unsymbolized frame leads.
        assert!(
            !rows[0].2.contains("backtrace") && !rows[0].2.starts_with('['),
            "{both}"
        );
    }

    let raw = pprof(&go, &["-raw".as_ref(), exe.as_os_str(), file.as_os_str()]);
    assert!(raw.contains("Mappings"), "{raw}");
    assert!(raw.contains("hot_spin_for_pprof_tools"), "{raw}");
    let traces = pprof(&go, &["-traces".as_ref(), exe.as_os_str(), file.as_os_str()]);
    assert!(traces.contains("hot_spin_for_pprof_tools"), "{traces}");
    let _ = std::fs::remove_dir_all(&dir);
}
