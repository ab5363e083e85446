//! Where flamegraph SVGs are drawn (inferno): from the instrumented call tree by any
//! [`Weight`], as a differential between two snapshots, and from any folded lines (the
//! sampled CPU and heap profiles use [`render`] too).
//!
//! Only with the `profiling-full` feature: inferno is CDDL-1.0 and kept out of the default
//! build. Folding itself ([`mod@crate::render::fold`]) is in the default build.

use std::io::BufReader;

use crate::error::{Error, Result};
use crate::record::snapshot::Snapshot;
use crate::render::escape;
use crate::render::fold::{self, FoldedStack, Weight};
use crate::units::{fmt_bytes, fmt_count, fmt_ns};

/// How the values of folded lines are shown in titles and tooltips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Nanoseconds, shown in ns, µs or ms depending on the total.
    Nanoseconds,
    /// Bytes.
    Bytes,
    /// A plain count, named (e.g. "calls", "allocations", "samples").
    Count(&'static str),
}

impl Unit {
    /// The unit of a [`Weight`].
    pub fn of(weight: Weight) -> Unit {
        match weight {
            Weight::Wall | Weight::Cpu | Weight::OffCpu => Unit::Nanoseconds,
            Weight::AllocBytes => Unit::Bytes,
            Weight::AllocCount => Unit::Count("allocations"),
            Weight::Calls => Unit::Count("calls"),
        }
    }

    /// `(count_name, factor)` for inferno: tooltips show `value * factor count_name`.
    fn scale(self, total: u64) -> (&'static str, f64) {
        match self {
            Unit::Nanoseconds if total >= 10_000_000_000 => ("ms", 1e-6),
            Unit::Nanoseconds if total >= 10_000_000 => ("µs", 1e-3),
            Unit::Nanoseconds => ("ns", 1.0),
            Unit::Bytes => ("bytes", 1.0),
            Unit::Count(name) => (name, 1.0),
        }
    }
}

/// Text and layout of one SVG.
#[derive(Clone, Debug)]
pub struct SvgOptions {
    /// Title at the top.
    pub title: String,
    /// Line under the title.
    pub subtitle: Option<String>,
    /// Unit of the folded values.
    pub unit: Unit,
    /// Image width in pixels (`None`: inferno's default, 1200).
    pub width: Option<usize>,
}

impl SvgOptions {
    /// Options with a title and unit.
    pub fn new(title: impl Into<String>, unit: Unit) -> Self {
        Self {
            title: title.into(),
            subtitle: None,
            unit,
            width: None,
        }
    }

    /// Sets the subtitle.
    #[must_use]
    pub fn subtitle(mut self, s: impl Into<String>) -> Self {
        self.subtitle = Some(s.into());
        self
    }

    /// Sets the image width in pixels.
    #[must_use]
    pub fn width(mut self, px: usize) -> Self {
        self.width = Some(px);
        self
    }
}

/// Formats a figure of `unit` for titles, in the human units of [`crate::units`]:
/// `1.23 s`, `12.3 MiB`, `5 calls`.
pub fn format_value(value: u64, unit: Unit) -> String {
    match unit {
        Unit::Nanoseconds => fmt_ns(value),
        Unit::Bytes => fmt_bytes(value),
        Unit::Count(name) => format!("{} {name}", fmt_count(value)),
    }
}

fn inferno_options<'a>(opts: &SvgOptions, total: u64) -> inferno::flamegraph::Options<'a> {
    let (count_name, factor) = opts.unit.scale(total);
    let mut o = inferno::flamegraph::Options::default();
    o.title = opts.title.clone();
    o.subtitle = opts.subtitle.clone();
    o.count_name = count_name.to_owned();
    o.factor = factor;
    o.name_type = "Function:".to_owned();
    o.image_width = opts.width;
    // Colours from a hash of the name, not a random generator: the same input, the same SVG.
    o.hash = true;
    o.deterministic = true;
    o
}

/// Draws folded lines as a flamegraph SVG. No lines draws a small SVG that says so.
pub fn render(lines: &[FoldedStack], opts: &SvgOptions) -> Result<Vec<u8>> {
    let total = fold::total(lines);
    if total == 0 {
        return Ok(empty_svg(
            &opts.title,
            "Nothing to draw: no frame has a non-zero value in this view.",
        ));
    }
    let mut o = inferno_options(opts, total);
    let text: Vec<String> = lines
        .iter()
        .filter(|l| l.value > 0)
        .map(|l| format!("{} {}", l.stack, l.value))
        .collect();
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut o, text.iter().map(String::as_str), &mut out)
        .map_err(|e| Error::Render(e.to_string()))?;
    Ok(out)
}

/// Title of a snapshot's flamegraph: the weight and the window.
pub fn snapshot_title(snapshot: &Snapshot, weight: Weight) -> String {
    format!(
        "{} — window {}, {}",
        capitalize(weight.description()),
        snapshot.window.epoch,
        format_value(snapshot.window.duration_ns, Unit::Nanoseconds)
    )
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Draws the instrumented call tree of `snapshot`, each frame as wide as its `weight`
/// (inclusive of its annotated callees). Exact: no sampling.
pub fn render_snapshot(snapshot: &Snapshot, weight: Weight) -> Result<Vec<u8>> {
    let lines = fold::fold(snapshot, weight);
    let unit = Unit::of(weight);
    let mut subtitle = format!(
        "Instrumented call tree (exact). Width: {}, a frame's own plus its annotated callees'. Total: {}.",
        weight.description(),
        format_value(fold::total(&lines), unit)
    );
    if weight == Weight::OffCpu {
        subtitle.push_str(" Wide frames waited (I/O, locks, sleep, awaiting) rather than computed.");
    }
    if matches!(weight, Weight::AllocBytes | Weight::AllocCount) && !snapshot.allocations_counted {
        subtitle.push_str(" Allocations are not counted: install ProfilingAllocator as the global allocator.");
    }
    render(
        &lines,
        &SvgOptions::new(snapshot_title(snapshot, weight), unit).subtitle(subtitle),
    )
}

/// Differential folded lines: `stack base_value target_value` per stack, via inferno's
/// differential folding (stacks only in one input get 0 in the other).
pub fn diff_folded(base: &[FoldedStack], target: &[FoldedStack]) -> Result<String> {
    let b = fold::to_text(base);
    let t = fold::to_text(target);
    let mut out = Vec::new();
    let opts = inferno::differential::Options::default();
    inferno::differential::from_readers(
        opts,
        BufReader::new(b.as_bytes()),
        BufReader::new(t.as_bytes()),
        &mut out,
    )
    .map_err(|e| Error::Render(e.to_string()))?;
    let mut lines: Vec<String> = String::from_utf8_lossy(&out).lines().map(str::to_owned).collect();
    lines.sort();
    let mut s = lines.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    Ok(s)
}

/// Differential flamegraph from `base` to `target`: frames as wide as in `target`, red
/// where the weight grew (a regression), blue where it shrank.
pub fn render_diff(base: &Snapshot, target: &Snapshot, weight: Weight) -> Result<Vec<u8>> {
    let b = fold::fold(base, weight);
    let t = fold::fold(target, weight);
    let unit = Unit::of(weight);
    let title = format!(
        "Differential: {} — window {} ({}) → window {} ({})",
        weight.description(),
        base.window.epoch,
        format_value(base.window.duration_ns, Unit::Nanoseconds),
        target.window.epoch,
        format_value(target.window.duration_ns, Unit::Nanoseconds),
    );
    let subtitle = format!(
        "Width: target. Red: grew since base, blue: shrank. Total {} → {}.",
        format_value(fold::total(&b), unit),
        format_value(fold::total(&t), unit)
    );
    render_diff_folded(&b, &t, &SvgOptions::new(title, unit).subtitle(subtitle))
}

/// Differential flamegraph of two sets of folded lines.
pub fn render_diff_folded(base: &[FoldedStack], target: &[FoldedStack], opts: &SvgOptions) -> Result<Vec<u8>> {
    let diff = diff_folded(base, target)?;
    let total = fold::total(target);
    if total == 0 {
        return Ok(empty_svg(
            &opts.title,
            "Nothing to draw: the target has no frame with a non-zero value.",
        ));
    }
    let mut o = inferno_options(opts, total);
    let mut out = Vec::new();
    inferno::flamegraph::from_lines(&mut o, diff.lines(), &mut out).map_err(|e| Error::Render(e.to_string()))?;
    Ok(out)
}

fn empty_svg(title: &str, message: &str) -> Vec<u8> {
    format!(
        concat!(
            r#"<?xml version="1.0" standalone="no"?>"#,
            "\n",
            r#"<svg version="1.1" width="1200" height="80" xmlns="http://www.w3.org/2000/svg">"#,
            r#"<text x="600" y="24" text-anchor="middle" font-size="17" font-family="Verdana">{}</text>"#,
            r#"<text x="600" y="56" text-anchor="middle" font-size="12" font-family="Verdana">{}</text>"#,
            "</svg>\n"
        ),
        escape::markup(title),
        escape::markup(message)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fold::tests::known_snapshot;

    fn svg(bytes: &[u8]) -> String {
        let s = String::from_utf8(bytes.to_vec()).unwrap();
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        roxmltree::Document::parse_with_options(&s, opts).unwrap_or_else(|e| panic!("not XML: {e}"));
        s
    }

    #[test]
    fn snapshot_svg_names_weight_window_and_units() {
        let s = svg(&render_snapshot(&known_snapshot(), Weight::Wall).unwrap());
        assert!(s.contains("Self wall time — window 1, 1.00 s"), "title");
        assert!(s.contains("app::lex (20 ns, "), "tooltip with unit");
        let s = svg(&render_snapshot(&known_snapshot(), Weight::AllocBytes).unwrap());
        assert!(s.contains("app::parse (960 bytes, 100.00%)"), "inclusive bytes tooltip");
    }

    #[test]
    fn render_is_deterministic() {
        let a = render_snapshot(&known_snapshot(), Weight::Cpu).unwrap();
        let b = render_snapshot(&known_snapshot(), Weight::Cpu).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn off_cpu_view_shows_waiting_frames() {
        let s = svg(&render_snapshot(&known_snapshot(), Weight::OffCpu).unwrap());
        assert!(s.contains("app::save (35 ns, 87.50%)"), "save waited 35 of 40 ns");
        assert!(!s.contains("app::lex"), "lex never waited");
    }

    #[test]
    fn empty_view_is_still_an_svg() {
        let mut snap = known_snapshot();
        snap.call_tree.truncate(1);
        let s = svg(&render_snapshot(&snap, Weight::Wall).unwrap());
        assert!(s.contains("Nothing to draw"));
    }

    #[test]
    fn differential_marks_growth() {
        let base = known_snapshot();
        let mut target = known_snapshot();
        target.call_tree[3].self_wall_ns = 120; // lex: 20 -> 120
        target.window.epoch = 2;
        let diff = diff_folded(&fold::fold(&base, Weight::Wall), &fold::fold(&target, Weight::Wall)).unwrap();
        assert!(diff.contains("app::main;app::parse;app::lex 20 120\n"), "{diff}");
        let s = svg(&render_diff(&base, &target, Weight::Wall).unwrap());
        assert!(s.contains("window 1"), "base window named");
        assert!(s.contains("window 2"), "target window named");
        // inferno colours a grown frame red: rgb(255,...).
        let lex = s.find("app::lex (").unwrap();
        let rect = &s[lex..s[lex..].find("/>").map_or(s.len(), |i| lex + i)];
        assert!(rect.contains("rgb(255,"), "grown frame is red: {rect}");
    }

    #[test]
    fn formats_values() {
        assert_eq!(format_value(1_500_000, Unit::Nanoseconds), "1.50 ms");
        assert_eq!(format_value(3 << 20, Unit::Bytes), "3.0 MiB");
        assert_eq!(format_value(7, Unit::Count("calls")), "7 calls");
        assert_eq!(format_value(41_000, Unit::Count("samples")), "41k samples");
    }
}
