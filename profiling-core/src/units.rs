//! Human units: how every figure is written for people (tables, recommendation texts, leak
//! reports, flamegraph titles).
//!
//! A leaf module: it depends on nothing else in the crate, so every wing may use it.
//!
//! - durations with 3 significant digits: `950 ns`, `12.3 µs`, `4.56 ms`, `1.23 s`;
//! - bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `3.1 MiB`, `2.0 GiB`;
//! - counts abbreviated from a thousand up: `999`, `1.5k`, `41k`, `2.35M`, `1.2G`;
//! - percentages: `75.0%` in columns, `97%` / `0.3%` in prose.

/// A duration in ns with 3 significant digits: `950 ns`, `12.3 µs`, `4.56 ms`, `1.23 s`.
pub fn fmt_ns(ns: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "µs")];
    for (scale, unit) in UNITS {
        if ns >= scale {
            return format!("{} {unit}", sig3(ns as f64 / scale as f64));
        }
    }
    format!("{ns} ns")
}

/// A byte count in binary units with one decimal: `512 B`, `1.5 KiB`, `3.1 MiB`, `2.0 GiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (scale, unit) in UNITS {
        if bytes >= scale {
            return format!("{:.1} {unit}", bytes as f64 / scale as f64);
        }
    }
    format!("{bytes} B")
}

/// A signed, possibly fractional byte figure (a growth rate, a fitted slope) as
/// [`fmt_bytes`] writes it, with a leading `-` when negative: `-3.1 MiB`, `13 B`.
pub fn fmt_signed_bytes(bytes: f64) -> String {
    let magnitude = fmt_bytes(bytes.abs().round() as u64);
    if bytes < 0.0 && magnitude != "0 B" {
        format!("-{magnitude}")
    } else {
        magnitude
    }
}

/// A count, abbreviated from a thousand up: `999`, `1.5k`, `41k`, `2.35M`, `1.2G`.
pub fn fmt_count(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")];
    for (scale, unit) in UNITS {
        if n >= scale {
            let s = sig3(n as f64 / scale as f64);
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.')
            } else {
                &s
            };
            return format!("{s}{unit}");
        }
    }
    n.to_string()
}

/// A fraction in [0, 1] as a percentage with one decimal, for columns: `75.0%`, `0.2%`.
pub fn fmt_percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// A fraction as a percentage for prose: whole from 10% up (and for 0), one decimal below:
/// `97%`, `0%`, `0.3%`.
pub fn fmt_percent_rounded(fraction: f64) -> String {
    let p = fraction * 100.0;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// `x` (at least 1) with 3 significant digits.
fn sig3(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(fmt_ns(0), "0 ns");
        assert_eq!(fmt_ns(999), "999 ns");
        assert_eq!(fmt_ns(1_000), "1.00 µs");
        assert_eq!(fmt_ns(12_345), "12.3 µs");
        assert_eq!(fmt_ns(4_560_000), "4.56 ms");
        assert_eq!(fmt_ns(999_999_999), "1000 ms");
        assert_eq!(fmt_ns(1_230_000_000), "1.23 s");
        assert_eq!(fmt_ns(3_600_000_000_000), "3600 s");
    }

    #[test]
    fn bytes() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(3_250_586), "3.1 MiB");
        assert_eq!(fmt_bytes(2 << 30), "2.0 GiB");
        assert_eq!(fmt_bytes(3 << 40), "3.0 TiB");
        assert_eq!(fmt_signed_bytes(512.0), "512 B");
        assert_eq!(fmt_signed_bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(fmt_signed_bytes(-1536.0), "-1.5 KiB");
        assert_eq!(fmt_signed_bytes(12.7), "13 B");
        assert_eq!(fmt_signed_bytes(-0.2), "0 B");
    }

    #[test]
    fn counts() {
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1_000), "1k");
        assert_eq!(fmt_count(1_500), "1.5k");
        assert_eq!(fmt_count(41_000), "41k");
        assert_eq!(fmt_count(41_230), "41.2k");
        assert_eq!(fmt_count(2_345_678), "2.35M");
        assert_eq!(fmt_count(120_000_000), "120M");
        assert_eq!(fmt_count(1_200_000_000), "1.2G");
    }

    #[test]
    fn percentages() {
        assert_eq!(fmt_percent(0.75), "75.0%");
        assert_eq!(fmt_percent(0.002), "0.2%");
        assert_eq!(fmt_percent_rounded(0.97), "97%");
        assert_eq!(fmt_percent_rounded(0.0), "0%");
        assert_eq!(fmt_percent_rounded(0.003), "0.3%");
    }
}
