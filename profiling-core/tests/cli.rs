//! The `profiling` command-line tool on good and bad input, run as a real process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use profiling_core::profiled;

#[profiled]
fn cli_parent() -> u64 {
    (0..3).map(|_| cli_child()).sum()
}

#[profiled]
fn cli_child() -> u64 {
    let v: Vec<u64> = (0..10_000).collect();
    v.iter().sum()
}

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_profiling"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("profiling-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Two snapshots of this process: one after a little work, one after more.
fn snapshots(d: &Path) -> (PathBuf, PathBuf) {
    std::hint::black_box(cli_parent());
    let a = d.join("base.json");
    profiling_core::render::report::save_snapshot(&profiling_core::snapshot(), &a).unwrap();
    for _ in 0..5 {
        std::hint::black_box(cli_parent());
    }
    let b = d.join("target.json");
    profiling_core::render::report::save_snapshot(&profiling_core::snapshot(), &b).unwrap();
    (a, b)
}

#[test]
fn help_for_every_subcommand() {
    let o = bin(&["--help"]);
    assert!(o.status.success());
    for sub in ["render", "diff", "top"] {
        assert!(text(&o).contains(sub), "{}", text(&o));
        let o = bin(&[sub, "--help"]);
        assert!(o.status.success(), "{sub} --help: {}", text(&o));
        assert!(text(&o).contains("Usage: profiling"), "{}", text(&o));
    }
}

#[test]
fn render_diff_and_top_on_good_input() {
    let d = dir("good");
    let (a, b) = snapshots(&d);

    let svg = d.join("out.svg");
    let o = bin(&["render", s(&b), "--weight", "calls", "-o", s(&svg)]);
    assert!(o.status.success(), "{}", text(&o));
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<?xml") && svg.contains("cli::cli_child"), "svg");
    assert!(svg.contains("Calls — window"), "title names the weight");

    let o = bin(&["render", s(&b), "--folded", "-o", "-"]);
    assert!(o.status.success(), "{}", text(&o));
    let folded = String::from_utf8(o.stdout).unwrap();
    assert!(
        folded.lines().any(|l| l.starts_with("cli::cli_parent;cli::cli_child ")),
        "{folded}"
    );

    // Default output path: beside the snapshot.
    let o = bin(&["render", s(&a), "-w", "cpu"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(d.join("base.cpu.svg").exists());

    let o = bin(&["diff", s(&a), s(&b)]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("cli::cli_child") && t.contains("regressed"), "{t}");
    assert!(d.join("target.diff.svg").exists());

    let o = bin(&["top", s(&b), "--sort", "calls", "-n", "5"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("cli::cli_child"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let d = dir("bad");
    let missing = d.join("missing.json");
    let o = bin(&["render", s(&missing)]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("error:") && t.contains("missing.json"), "{t}");

    let garbage = d.join("garbage.json");
    std::fs::write(&garbage, "not json at all").unwrap();
    let o = bin(&["top", s(&garbage)]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("garbage.json") && t.contains("not a profiling snapshot"),
        "{t}"
    );

    let other = d.join("other.json");
    std::fs::write(&other, r#"{"functions": 3}"#).unwrap();
    let o = bin(&["diff", s(&other), s(&other)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not a snapshot"), "{}", text(&o));

    let o = bin(&["render", s(&garbage), "--weight", "heat"]);
    assert_eq!(o.status.code(), Some(2), "usage error");
    assert!(text(&o).contains("alloc_bytes"), "{}", text(&o));

    let o = bin(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}
