//! Where process figures are read: resident and virtual size, threads, user and system CPU
//! time from `/proc/self/stat` and `/proc/self/statm`, load averages from `/proc/loadavg`.
//!
//! The files are parsed by hand (a few fields of fixed position): no dependency, no
//! allocation beyond one read buffer. On systems without `/proc` every reader returns
//! [`crate::Error::Io`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Figures of the current process at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Threads in the process.
    pub threads: u64,
    /// CPU time spent in user mode, ns (kernel clock-tick resolution, usually 10 ms).
    pub user_cpu_ns: u64,
    /// CPU time spent in kernel mode, ns (same resolution).
    pub system_cpu_ns: u64,
}

/// System load averages (runnable and uninterruptible tasks), as in `uptime`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadAverage {
    /// Over 1 minute.
    pub one: f64,
    /// Over 5 minutes.
    pub five: f64,
    /// Over 15 minutes.
    pub fifteen: f64,
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: as above.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

/// Reads the current process's figures.
pub fn process_stats() -> Result<ProcessStats> {
    let stat = read("/proc/self/stat")?;
    let statm = read("/proc/self/statm")?;
    parse(&stat, &statm, page_size(), clock_ticks_per_second())
}

/// Reads the system load averages.
pub fn load_average() -> Result<LoadAverage> {
    parse_loadavg(&read("/proc/loadavg")?)
}

/// Number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn malformed(path: &str, what: &str) -> Error {
    Error::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("malformed: {what}")),
    }
}

/// Parses `/proc/self/stat` and `/proc/self/statm` contents.
fn parse(stat: &str, statm: &str, page_size: u64, ticks_per_s: u64) -> Result<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces and ')': the fields
    // after it start after the last ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| malformed("/proc/self/stat", "no ')' after the command name"))?;
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| malformed("/proc/self/stat", "missing numeric field"))
    };
    let tick_ns = 1_000_000_000 / ticks_per_s.max(1);
    let utime = field(14)?;
    let stime = field(15)?;
    let threads = field(20)?;
    let vsize = field(23)?;
    let mut m = statm.split_ascii_whitespace();
    let _size = m.next();
    let resident: u64 = m
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed("/proc/self/statm", "missing resident pages"))?;
    Ok(ProcessStats {
        rss_bytes: resident * page_size,
        virtual_bytes: vsize,
        threads,
        user_cpu_ns: utime * tick_ns,
        system_cpu_ns: stime * tick_ns,
    })
}

fn parse_loadavg(s: &str) -> Result<LoadAverage> {
    let mut it = s.split_ascii_whitespace().map(|f| f.parse::<f64>().ok());
    match (it.next(), it.next(), it.next()) {
        (Some(Some(one)), Some(Some(five)), Some(Some(fifteen))) => Ok(LoadAverage { one, five, fifteen }),
        _ => Err(malformed("/proc/loadavg", "expected three numbers")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "11780 (my (odd) cmd) R 11778 11778 8826 0 -1 4194304 100 0 0 0 250 30 0 0 20 0 7 0 78694 3133440 360 18446744073709551615 0";

    #[test]
    fn parses_stat_with_parentheses_in_the_name() {
        let s = parse(STAT, "765 444 416 5 0 123 0\n", 4096, 100).unwrap();
        assert_eq!(s.rss_bytes, 444 * 4096);
        assert_eq!(s.virtual_bytes, 3_133_440);
        assert_eq!(s.threads, 7);
        assert_eq!(s.user_cpu_ns, 2_500_000_000);
        assert_eq!(s.system_cpu_ns, 300_000_000);
    }

    #[test]
    fn rejects_truncated_files() {
        assert!(parse("1 (x) R 1 2", "1 2", 4096, 100).is_err());
        assert!(parse(STAT, "", 4096, 100).is_err());
        assert!(parse("no parenthesis", "1 2", 4096, 100).is_err());
    }

    #[test]
    fn parses_loadavg() {
        let l = parse_loadavg("2.74 1.06 0.41 8/154 11782\n").unwrap();
        assert_eq!(
            l,
            LoadAverage {
                one: 2.74,
                five: 1.06,
                fifteen: 0.41
            }
        );
        assert!(parse_loadavg("x y z").is_err());
    }

    #[test]
    fn reads_this_process() {
        let s = process_stats().unwrap();
        assert!(s.rss_bytes > 0 && s.virtual_bytes >= s.rss_bytes, "{s:?}");
        assert!(s.threads >= 1);
        // 30 ms of CPU (not of wall: a loaded machine may give a wall spin little) shows up in
        // user time (tick resolution: 10 ms at 100 Hz).
        let before = s.user_cpu_ns + s.system_cpu_ns;
        let t = crate::record::clock::thread_cpu_ns();
        while crate::record::clock::thread_cpu_ns() - t < 30_000_000 {}
        let after = process_stats().unwrap();
        assert!(after.user_cpu_ns + after.system_cpu_ns > before, "{after:?}");
        assert!(load_average().unwrap().one >= 0.0);
    }
}
