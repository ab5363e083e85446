//! Profiles a small batch job and writes its flamegraph.
//!
//! ```text
//! PROFILING_FLAMEGRAPH=target/batch_job.svg cargo run --release --example batch_job --features profiling-full
//! ```
//!
//! Writes `target/batch_job.svg` (self wall time; `PROFILING_FLAMEGRAPH_WEIGHT=cpu` and
//! others change the width), `target/batch_job.folded` and `target/batch_job.json` (for
//! `profiling render|diff|top`) when `main` returns. Without the variable it writes
//! `target/batch_job.svg` anyway, so the one command above is optional.

use std::time::Duration;

use profiling_core::render::report::{self, ReportBuilder};
use profiling_core::{profiled, ProfilingAllocator};

#[global_allocator]
static ALLOC: ProfilingAllocator = ProfilingAllocator::system();

#[derive(Debug)]
struct Record {
    id: u64,
    name: String,
    score: f64,
}

/// Reads the input: waits on "I/O" (a sleep), so it shows up in the off-CPU view.
#[profiled]
fn load(batch: u64) -> String {
    std::thread::sleep(Duration::from_millis(15));
    (0..2_000)
        .map(|i| format!("{},item-{},{}\n", batch * 10_000 + i, i, (i * 37) % 1000))
        .collect()
}

#[profiled]
fn parse(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(',');
            Some(Record {
                id: f.next()?.parse().ok()?,
                name: f.next()?.to_owned(),
                score: f.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// The CPU-heavy step.
#[profiled]
fn score(records: &mut [Record]) {
    for r in records.iter_mut() {
        let mut x = r.score;
        for _ in 0..400 {
            x = (x * 1.000_1 + 0.5).sqrt() * 31.0;
        }
        r.score = x;
    }
    records.sort_by(|a, b| b.score.total_cmp(&a.score));
}

#[profiled]
fn save(records: &[Record]) -> usize {
    let out: Vec<String> = records
        .iter()
        .take(100)
        .map(|r| format!("{} {} {:.3}", r.id, r.name, r.score))
        .collect();
    std::thread::sleep(Duration::from_millis(5));
    out.len()
}

#[profiled]
fn run_batch(batch: u64) -> usize {
    let text = load(batch);
    let mut records = parse(&text);
    score(&mut records);
    save(&records)
}

fn main() -> profiling_core::Result<()> {
    // PROFILING_FLAMEGRAPH=path.svg decides where; this example falls back to target/.
    let _report = match report::from_env()? {
        Some(guard) => guard,
        None => ReportBuilder::new().flamegraph("target/batch_job.svg").build()?,
    };
    let saved: usize = (0..8).map(run_batch).sum();
    println!("saved {saved} records");
    Ok(())
    // `_report` is dropped here: the SVG, folded text and JSON are written.
}
