//! `profiling`: render saved snapshots as flamegraphs, diff two snapshots, print the ranking.
//!
//! Snapshots are the JSON files written by `PROFILING_FLAMEGRAPH=path.svg` (beside the SVG)
//! or served by the HTTP API. Built with `--features cli`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use profiling_core::analyze::ranking::SortKey;
use profiling_core::render::flamegraph;
use profiling_core::render::fold::{self, Weight};
use profiling_core::render::report::{load_snapshot, render_diff_table};
use profiling_core::render::table::render_table;
use profiling_core::{rank, Error, RankOptions};

/// Flamegraphs, diffs and rankings from saved profiling snapshots.
#[derive(Debug, Parser)]
#[command(name = "profiling", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Render a saved snapshot as a flamegraph SVG (or folded text).
    Render {
        /// Snapshot JSON file.
        snapshot: PathBuf,
        /// Frame width: wall, cpu, off_cpu, alloc_bytes, alloc_count or calls.
        #[arg(short, long, default_value = "wall", value_parser = parse_weight)]
        weight: Weight,
        /// Output file; `-` for stdout. Default: the snapshot's path with `.<weight>.svg`
        /// (or `.<weight>.folded` with --folded).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write the folded stacks (`a;b;c value`) instead of an SVG.
        #[arg(long)]
        folded: bool,
    },
    /// Compare two saved snapshots: a table of per-function changes and a differential
    /// flamegraph (red: grew, blue: shrank).
    Diff {
        /// The earlier snapshot JSON.
        base: PathBuf,
        /// The later snapshot JSON.
        target: PathBuf,
        /// Frame width of the differential flamegraph.
        #[arg(short, long, default_value = "wall", value_parser = parse_weight)]
        weight: Weight,
        /// Differential SVG output; default: the target's path with `.diff.svg`.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print the table only; write no SVG.
        #[arg(long)]
        no_svg: bool,
        /// Rows of the table (0: all).
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// Print the ranking of functions (bottlenecks first) as a table.
    Top {
        /// Snapshot JSON file.
        snapshot: PathBuf,
        /// Sort key: self_wall, total_wall, cpu, alloc_bytes, alloc_count, calls or p99.
        #[arg(short, long, default_value = "self_wall", value_parser = parse_sort)]
        sort: SortKey,
        /// Rows (0: all).
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
}

fn parse_weight(s: &str) -> Result<Weight, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn parse_sort(s: &str) -> Result<SortKey, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}"))
}

fn write_out(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        return out
            .write_all(bytes)
            .and_then(|_| out.flush())
            .map_err(|source| Error::Io {
                path: "<stdout>".to_owned(),
                source,
            });
    }
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Render {
            snapshot,
            weight,
            output,
            folded,
        } => {
            let snap = load_snapshot(&snapshot)?;
            let (bytes, ext) = if folded {
                (fold::fold_text(&snap, weight).into_bytes(), "folded")
            } else {
                (flamegraph::render_snapshot(&snap, weight)?, "svg")
            };
            let out = output.unwrap_or_else(|| with_suffix(&snapshot, &format!(".{weight}.{ext}")));
            write_out(&out, &bytes)
        }
        Command::Diff {
            base,
            target,
            weight,
            output,
            no_svg,
            limit,
        } => {
            let b = load_snapshot(&base)?;
            let t = load_snapshot(&target)?;
            let mut diff = profiling_core::analyze::diff::diff(&b, &t);
            if limit > 0 {
                diff.functions.truncate(limit);
            }
            print!("{}", render_diff_table(&diff));
            if !no_svg {
                let out = output.unwrap_or_else(|| with_suffix(&target, ".diff.svg"));
                write_out(&out, &flamegraph::render_diff(&b, &t, weight)?)?;
            }
            Ok(())
        }
        Command::Top { snapshot, sort, limit } => {
            let snap = load_snapshot(&snapshot)?;
            let mut opts = RankOptions::new().sort(sort);
            if limit > 0 {
                opts = opts.limit(limit);
            }
            print!("{}", render_table(&rank(&snap, &opts)));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
