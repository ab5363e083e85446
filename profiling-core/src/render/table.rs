//! Plain-text rendering of a [`Ranking`] for terminals. Figures are written in the human
//! units of [`crate::units`].

use std::fmt::{self, Write as _};

use crate::analyze::ranking::{Ranking, WindowStart};
use crate::units::fmt_percent;
pub use crate::units::{fmt_bytes, fmt_count, fmt_ns};

/// Widest function name shown; longer names keep their tail (the most specific part).
pub const MAX_FUNCTION_WIDTH: usize = 48;

/// `name` cut to `width` characters, keeping its end.
fn truncate_front(name: &str, width: usize) -> String {
    let n = name.chars().count();
    if n <= width {
        return name.to_owned();
    }
    let tail: String = name.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

/// Renders `ranking` as a plain-text table, then each entry's recommendations and the notes.
///
/// Columns: rank, function, calls, self and total wall time, share of profiled time, self
/// CPU, self allocated bytes (`-` when allocations are not counted), p50, p99, impact score
/// and classification.
pub fn render_table(ranking: &Ranking) -> String {
    let w = &ranking.window;
    let mut out = String::new();
    let since = match w.since {
        WindowStart::ProcessStart => "since process start",
        WindowStart::LastReset => "since last reset",
    };
    let _ = writeln!(
        out,
        "Bottlenecks by {} | window {} ({since}, {}) | profiled {} | {} of {} functions",
        ranking.sort,
        w.epoch,
        fmt_ns(w.duration_ns),
        fmt_ns(w.profiled_wall_ns),
        ranking.bottlenecks.len(),
        w.functions,
    );

    const HEAD: [&str; 12] = [
        "#", "function", "calls", "self", "total", "share", "cpu", "alloc", "p50", "p99", "impact", "class",
    ];
    let rows: Vec<[String; 12]> = ranking
        .bottlenecks
        .iter()
        .map(|b| {
            let s = &b.stats;
            [
                b.rank.to_string(),
                truncate_front(&s.name, MAX_FUNCTION_WIDTH),
                fmt_count(s.calls),
                fmt_ns(s.self_wall_ns),
                fmt_ns(s.total_wall_ns),
                fmt_percent(b.share),
                fmt_ns(s.cpu_self_ns),
                if w.allocations_counted {
                    fmt_bytes(s.alloc_self.alloc_bytes)
                } else {
                    "-".to_owned()
                },
                fmt_ns(s.p50_ns),
                fmt_ns(s.p99_ns),
                format!("{:.2}", b.impact_score),
                b.classification.to_string(),
            ]
        })
        .collect();
    let mut widths = HEAD.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    // Text columns (function, class) are left-aligned; figures right-aligned.
    let left = |i: usize| i == 1 || i == 11;
    let mut line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if left(i) {
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', pad));
            } else {
                s.extend(std::iter::repeat_n(' ', pad));
                s.push_str(c);
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(&HEAD.map(str::to_owned));
    for r in &rows {
        line(r);
    }

    let with_recs: Vec<_> = ranking
        .bottlenecks
        .iter()
        .filter(|b| !b.recommendations.is_empty())
        .collect();
    if !with_recs.is_empty() {
        out.push('\n');
        for b in with_recs {
            let s = &b.stats;
            let _ = writeln!(out, "{}. {} ({}:{})", b.rank, s.name, s.file, s.line);
            for r in &b.recommendations {
                let _ = writeln!(out, "   - {r}");
            }
        }
    }
    if !ranking.notes.is_empty() {
        out.push('\n');
        for n in &ranking.notes {
            let _ = writeln!(out, "note: {n}");
        }
    }
    out
}

impl fmt::Display for Ranking {
    /// The plain-text table of [`render_table`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render_table(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::ranking::tests::{func, snap};
    use crate::analyze::ranking::{rank, RankOptions};
    use crate::record::alloc::AllocCounters;

    const MS: u64 = 1_000_000;

    #[test]
    fn long_names_keep_their_tail() {
        let name = "a".repeat(60) + "::parse";
        let t = truncate_front(&name, 20);
        assert_eq!(t.chars().count(), 20);
        assert!(t.starts_with('…') && t.ends_with("aaaa::parse"));
        assert_eq!(truncate_front("short", 20), "short");
    }

    #[test]
    fn renders_the_ranking() {
        let mut a = func(1, "app::parse", 1_200, 30 * MS, 30 * MS, 29 * MS);
        a.alloc_self = AllocCounters {
            alloc_bytes: 3 << 20,
            alloc_count: 10,
            freed_bytes: 0,
            freed_count: 0,
        };
        let b = func(2, "app::io::read", 3, 10 * MS, 10 * MS, 0);
        let r = rank(&snap(vec![a, b], true), &RankOptions::new());
        let expected = "\
Bottlenecks by self_wall | window 1 (since process start, 1.00 s) | profiled 40.0 ms | 2 of 2 functions
#  function       calls     self    total  share      cpu    alloc      p50      p99  impact  class
1  app::parse      1.2k  30.0 ms  30.0 ms  75.0%  29.0 ms  3.0 MiB  25.0 µs  25.0 µs    0.85  cpu_bound
2  app::io::read      3  10.0 ms  10.0 ms  25.0%     0 ns      0 B  3.33 ms  3.33 ms    0.15  wait_bound

1. app::parse (src/m.rs:1)
   - computes: 97% of its 30.0 ms self time is on CPU over 1.2k calls (25.0 µs per call): improve the algorithm or data layout, cache results, or parallelize; a sampling profile shows the hot lines
2. app::io::read (src/m.rs:2)
   - waits: only 0% of its 10.0 ms self time is on CPU (0 ns CPU): look for blocking I/O, lock contention, sleeps or sequential awaits (or a run queue, if the machine is oversubscribed); overlap independent waits
";
        assert_eq!(render_table(&r), expected);
        assert_eq!(r.to_string(), expected);
    }

    #[test]
    fn no_alloc_column_values_and_notes_without_counting() {
        let r = rank(
            &snap(vec![func(1, "app::f", 1, 5 * MS, 5 * MS, 5 * MS)], false),
            &RankOptions::new(),
        );
        let t = render_table(&r);
        let row = t.lines().nth(2).unwrap();
        assert!(row.contains("  -  "), "{row}");
        assert!(t.contains("\nnote: allocations not counted"), "{t}");
    }
}
