//! Where a CPU profile's addresses become function names, with a bound on the memory it takes.
//!
//! `backtrace::resolve` (what this module replaces) parses every object it touches into a
//! process-wide cache: for a binary with line tables, the unit index and every line table and
//! function list it meets, +148 MiB of RSS while a profile of the 34 MB test binary was
//! symbolized. Here each object file is read once per profile, for the distinct addresses of
//! that profile only, and everything is dropped when the profile is built:
//!
//! - the file is mapped read-only (`mmap`): its pages are file-backed, read on demand and
//!   given back with the mapping;
//! - [`Mode::Symbols`]: the ELF symbol table (`.symtab`, else `.dynsym`) gives the function
//!   that holds each address. One sorted vector of (address, name) per file, names borrowed
//!   from the mapping.
//! - [`Mode::DebugInfo`]: the DWARF line tables and inlined-call records (`addr2line`, the
//!   reader `backtrace` uses) give inlined functions, files and lines as well, one
//!   compilation unit at a time: a context over `.debug_info` cut down to that unit, dropped
//!   (and the file's pages with it) before the next. A unit that takes function names from
//!   another unit (`DW_FORM_ref_addr`) is read through a context over the whole file, rebuilt
//!   every [`WHOLE_FILE_UNITS`] such units, when the file's DWARF is at most
//!   [`WHOLE_FILE_BUDGET_BYTES`]; a unit over [`UNIT_BUDGET_BYTES`], or one that would need an
//!   over-budget whole-file context, and an address that DWARF does not cover, fall back to
//!   the symbol table.
//!
//! The mode is chosen by [`SYMBOLIZE_ENV`]; see [`Mode`].
//!
//! (Over 500 lines only with its unit tests: the code is the first 465 lines.)
//!
//! Separate debug files are looked up by build id (`/usr/lib/debug/.build-id/xx/yyyy.debug`),
//! as `backtrace` does. Compressed debug sections (`SHF_COMPRESSED`) are not decompressed:
//! such a file is symbolized from its symbol table.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use addr2line::gimli;
use addr2line::gimli::{Reader as _, Section as _};
use object::{Object, ObjectSection, ObjectSegment};

use crate::error::{Error, Result};
use crate::render::pprof::maps::Mappings;
use crate::render::pprof::FrameInfo;

/// Environment variable that chooses how CPU profiles are symbolized: `debuginfo` (default)
/// or `symbols`.
pub const SYMBOLIZE_ENV: &str = "PROFILING_CPU_SYMBOLIZE";

/// Largest compilation unit read in [`Mode::DebugInfo`], bytes of `.debug_info` and
/// `.debug_line`; addresses in a larger one are symbolized from the symbol table.
pub(crate) const UNIT_BUDGET_BYTES: u64 = 4 << 20;

/// Units parsed through one whole-file context before it is dropped and rebuilt.
const WHOLE_FILE_UNITS: usize = 2;

/// Largest DWARF (`.debug_info`, `.debug_line`, `.debug_ranges`, `.debug_rnglists`) for
/// which a whole-file context is built; above it, units that need one are symbolized from
/// the symbol table. Measured: 14.9 MB of these sections peaked at +38 MiB with every unit
/// read, 21.4 MB at +47 MiB with a profile's few units.
pub(crate) const WHOLE_FILE_BUDGET_BYTES: u64 = 16 << 20;

/// How addresses are turned into functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The ELF symbol table only: one frame per address, the function that holds it; no
    /// inlined frames, files or lines. The least memory (the symbol table of each object).
    Symbols,
    /// The DWARF debug information where the binary has it (inlined frames, files, lines),
    /// the symbol table elsewhere. The default: a binary without debug information (Cargo's
    /// default `release` profile) costs the same as [`Mode::Symbols`], and one with it gets
    /// the frames its debug information was kept for.
    DebugInfo,
}

impl Mode {
    /// Reads [`SYMBOLIZE_ENV`]: unset or empty is [`Mode::DebugInfo`]; anything but
    /// `symbols` or `debuginfo` is an error.
    pub fn from_env() -> Result<Self> {
        match std::env::var(SYMBOLIZE_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Mode::DebugInfo),
            Ok(v) => Self::parse(&v),
            Err(e) => Err(Error::InvalidConfig(format!("{SYMBOLIZE_ENV}: {e}"))),
        }
    }

    fn parse(v: &str) -> Result<Self> {
        match v.trim() {
            "" | "debuginfo" => Ok(Mode::DebugInfo),
            "symbols" => Ok(Mode::Symbols),
            other => Err(Error::InvalidConfig(format!(
                "{SYMBOLIZE_ENV} must be `debuginfo` or `symbols`, got `{other}`"
            ))),
        }
    }
}

/// The functions at each of `addrs` (run-time addresses of this process), innermost inlined
/// frame first; an address that nothing resolves is absent.
pub(crate) fn resolve(addrs: &BTreeSet<u64>, maps: &Mappings, mode: Mode) -> HashMap<u64, Vec<FrameInfo>> {
    let mut by_mapping: HashMap<usize, Vec<u64>> = HashMap::new();
    for &addr in addrs {
        if let Some(m) = maps.find(addr) {
            by_mapping.entry(m).or_default().push(addr);
        }
    }
    // One pass per file: a file may be mapped more than once.
    let mut by_file: HashMap<&str, Vec<(usize, Vec<u64>)>> = HashMap::new();
    for (m, addrs) in by_mapping {
        by_file.entry(maps.0[m].path.as_str()).or_default().push((m, addrs));
    }
    let exe = std::fs::read_link("/proc/self/exe").ok();
    let mut out = HashMap::new();
    for (path, groups) in by_file {
        if !path.starts_with('/') {
            continue;
        }
        // The running image, even if the file at its path was replaced since it started.
        let open = if exe.as_deref().is_some_and(|e| e.as_os_str() == path) {
            "/proc/self/exe"
        } else {
            path
        };
        let Some(file) = MappedFile::open(open) else { continue };
        let Ok(obj) = object::File::parse(&*file) else { continue };
        // Run-time address -> address in the file's own layout.
        let mut svmas: Vec<(u64, u64)> = Vec::new();
        for (m, addrs) in groups {
            let map = &maps.0[m];
            let Some(bias) = load_bias(&obj, map.start, map.offset) else {
                continue;
            };
            svmas.extend(addrs.into_iter().map(|a| (a.wrapping_sub(bias), a)));
        }
        svmas.sort_unstable();
        let debug_map = match mode {
            Mode::DebugInfo => debug_file_path(&obj).and_then(|p| MappedFile::open(&p)),
            Mode::Symbols => None,
        };
        let debug_obj = debug_map.as_deref().and_then(|d| object::File::parse(d).ok());
        let dwarf_obj = match mode {
            Mode::DebugInfo => Some(debug_obj.as_ref().unwrap_or(&obj)),
            Mode::Symbols => None,
        };
        // The pages a unit read stay resident while the file is mapped: dropped after each.
        let release = || {
            file.release_pages();
            if let Some(d) = &debug_map {
                d.release_pages();
            }
        };
        resolve_file(&obj, dwarf_obj, &svmas, &release, &mut out);
    }
    out
}

/// Resolves the (file address, run-time address) pairs of one object, sorted by file address.
fn resolve_file(
    obj: &object::File<'_>,
    dwarf_obj: Option<&object::File<'_>>,
    svmas: &[(u64, u64)],
    release_pages: &dyn Fn(),
    out: &mut HashMap<u64, Vec<FrameInfo>>,
) {
    let dwarf = dwarf_obj.and_then(load_dwarf);
    let index = dwarf.as_ref().map(unit_index).unwrap_or_default();
    // Addresses by unit; those no unit within budget covers go to the symbol table.
    let mut by_unit: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    let mut rest: Vec<(u64, u64)> = Vec::new();
    for &(svma, addr) in svmas {
        match find_unit(&index, svma) {
            Some(unit) => by_unit.entry(unit).or_default().push((svma, addr)),
            None => rest.push((svma, addr)),
        }
    }
    if let (Some(dwarf), Some(dwarf_obj)) = (&dwarf, dwarf_obj) {
        // A context over the whole file, for units that take names from other units: its
        // index of every unit is kept, the units it parses are dropped with it after
        // `WHOLE_FILE_UNITS` of them.
        let mut whole = None;
        let mut whole_units = 0;
        let whole_allowed = whole_file_bytes(dwarf_obj) <= WHOLE_FILE_BUDGET_BYTES;
        for (unit, addrs) in by_unit {
            // A context over this one unit: the memory it takes is that unit's.
            let mut use_whole = false;
            let alone = match unit_dwarf(dwarf, dwarf_obj, unit) {
                UnitDwarf::Alone(d) => addr2line::Context::from_dwarf(*d).ok(),
                UnitDwarf::Skip => None,
                UnitDwarf::NeedsWhole if !whole_allowed => None,
                UnitDwarf::NeedsWhole => {
                    if whole_units >= WHOLE_FILE_UNITS {
                        whole = None;
                        whole_units = 0;
                        release_pages();
                    }
                    if whole.is_none() {
                        whole = load_dwarf(dwarf_obj).and_then(|d| addr2line::Context::from_dwarf(d).ok());
                        // Its index is built: the pages it read are not needed now.
                        release_pages();
                    }
                    whole_units += 1;
                    use_whole = true;
                    None
                }
            };
            // A skipped unit is not parsed through a whole-file context built for another.
            let ctx = alone.as_ref().or(whole.as_ref().filter(|_| use_whole));
            for (svma, addr) in addrs {
                let mut frames = Vec::new();
                if let Some(ctx) = ctx {
                    dwarf_frames(ctx, svma, &mut frames);
                }
                if frames.is_empty() {
                    rest.push((svma, addr));
                } else {
                    out.insert(addr, frames);
                }
            }
            drop(alone);
            release_pages();
        }
    } else {
        rest.extend(by_unit.into_values().flatten());
    }
    if rest.is_empty() {
        return;
    }
    let symbols = obj.symbol_map();
    for (svma, addr) in rest {
        if let Some(sym) = symbols.containing(svma) {
            out.insert(addr, vec![frame_info(sym.name().as_bytes(), String::new(), 0)]);
        }
    }
}

/// The DWARF of `obj` with `.debug_info` cut down to the unit at `offset`, when that unit
/// reads at most [`UNIT_BUDGET_BYTES`] and takes no function name from another unit
/// (`DW_FORM_ref_addr`, whose offsets the cut would shift: cross-unit inlining under LTO).
fn unit_dwarf<'a>(dwarf: &gimli::Dwarf<Slice<'a>>, obj: &object::File<'a>, offset: u64) -> UnitDwarf<'a> {
    let Ok(start) = usize::try_from(offset) else {
        return UnitDwarf::Skip;
    };
    let Ok(header) = dwarf.debug_info.header_from_offset(gimli::DebugInfoOffset(start)) else {
        return UnitDwarf::Skip;
    };
    let info_len = header.length_including_self();
    let Ok(unit) = dwarf.unit(header) else {
        return UnitDwarf::Skip;
    };
    let line_len = unit.line_program.as_ref().map_or(0, |p| p.header().unit_length());
    if (info_len + line_len) as u64 > UNIT_BUDGET_BYTES {
        return UnitDwarf::Skip;
    }
    // Abbreviation codes run from 1 without gaps in what LLVM and GCC emit. Only the
    // references `addr2line` follows for a function's name matter (full debug information
    // also refers to types in other units, which it never reads).
    let cross_unit = (1..).map_while(|code| unit.abbreviations.get(code)).any(|a| {
        a.attributes().iter().any(|s| {
            matches!(s.name(), gimli::DW_AT_abstract_origin | gimli::DW_AT_specification)
                && matches!(
                    s.form(),
                    gimli::DW_FORM_ref_addr
                        | gimli::DW_FORM_GNU_ref_alt
                        | gimli::DW_FORM_ref_sup4
                        | gimli::DW_FORM_ref_sup8
                )
        })
    });
    if cross_unit {
        return UnitDwarf::NeedsWhole;
    }
    let info: &'a [u8] = dwarf.debug_info.reader().slice();
    let (Some(mut cut), Some(bytes)) = (load_dwarf(obj), info.get(start..start + info_len)) else {
        return UnitDwarf::Skip;
    };
    cut.debug_info = gimli::DebugInfo::from(gimli::EndianSlice::new(bytes, dwarf.debug_info.reader().endian()));
    UnitDwarf::Alone(Box::new(cut))
}

/// Bytes of the sections a whole-file context indexes.
fn whole_file_bytes(obj: &object::File<'_>) -> u64 {
    [".debug_info", ".debug_line", ".debug_ranges", ".debug_rnglists"]
        .iter()
        .filter_map(|name| obj.section_by_name(name))
        .map(|s| s.size())
        .sum()
}

/// How a unit's addresses are read from DWARF.
enum UnitDwarf<'a> {
    /// Through its own context over `.debug_info` cut down to it.
    Alone(Box<gimli::Dwarf<Slice<'a>>>),
    /// Through a context over the whole file: it takes function names from other units.
    NeedsWhole,
    /// Not at all: the symbol table (over [`UNIT_BUDGET_BYTES`], or unreadable).
    Skip,
}

/// Address ranges of the compilation units (`.debug_aranges`), sorted: (start, end, offset
/// of the unit in `.debug_info`).
fn unit_index(dwarf: &gimli::Dwarf<Slice<'_>>) -> Vec<(u64, u64, u64)> {
    let mut ranges = Vec::new();
    let mut headers = dwarf.debug_aranges.headers();
    while let Ok(Some(header)) = headers.next() {
        let unit = header.debug_info_offset().0 as u64;
        let mut entries = header.entries();
        while let Ok(Some(entry)) = entries.next() {
            let r = entry.range();
            if r.end > r.begin {
                ranges.push((r.begin, r.end, unit));
            }
        }
    }
    ranges.sort_unstable();
    ranges
}

/// The unit whose range holds `svma`.
fn find_unit(index: &[(u64, u64, u64)], svma: u64) -> Option<u64> {
    let i = index.partition_point(|&(start, _, _)| start <= svma);
    index[..i]
        .iter()
        .rev()
        .take(64)
        .find(|&&(_, end, _)| svma < end)
        .map(|&(_, _, unit)| unit)
}

/// Inlined frames of `svma`, innermost first, from DWARF; frames without a name are left out.
fn dwarf_frames<R: gimli::Reader>(ctx: &addr2line::Context<R>, svma: u64, frames: &mut Vec<FrameInfo>) {
    let Ok(mut iter) = ctx.find_frames(svma).skip_all_loads() else {
        return;
    };
    while let Ok(Some(frame)) = iter.next() {
        let Some(function) = frame.function else { continue };
        let Ok(raw) = function.name.to_slice() else { continue };
        let (file, line) = frame.location.map_or((String::new(), 0), |l| {
            (l.file.unwrap_or_default().to_owned(), l.line.map_or(0, i64::from))
        });
        frames.push(frame_info(&raw, file, line));
    }
}

fn frame_info(raw: &[u8], file: String, line: i64) -> FrameInfo {
    let name = backtrace::SymbolName::new(raw);
    FrameInfo {
        name: super::strip_hash(&format!("{name:#}")).to_owned(),
        system_name: name.as_str().unwrap_or_default().to_owned(),
        file,
        line,
    }
}

type Slice<'a> = gimli::EndianSlice<'a, gimli::RunTimeEndian>;

/// The DWARF sections of `obj`, borrowed from its mapping; `None` without `.debug_info` or
/// when a section is compressed.
fn load_dwarf<'a>(obj: &object::File<'a>) -> Option<gimli::Dwarf<Slice<'a>>> {
    obj.section_by_name(".debug_info")?;
    let endian = if obj.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    gimli::Dwarf::load(|id| -> std::result::Result<Slice<'a>, ()> {
        let Some(section) = obj.section_by_name(id.name()) else {
            return Ok(gimli::EndianSlice::new(&[], endian));
        };
        let compressed = section.compressed_data().map_err(|_| ())?;
        if compressed.format != object::CompressionFormat::None {
            return Err(());
        }
        Ok(gimli::EndianSlice::new(section.data().map_err(|_| ())?, endian))
    })
    .ok()
}

/// Run-time address minus file address for the executable mapping of `obj` that starts at
/// `start`, mapped from file offset `offset`: the executable loadable segment whose pages
/// hold that offset (the kernel maps whole pages, so the offset is the segment's rounded
/// down to a page, which may also lie in the segment before).
fn load_bias(obj: &object::File<'_>, start: u64, offset: u64) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .unwrap_or(4096)
        .max(1);
    obj.segments()
        .filter(|seg| matches!(seg.flags(), object::SegmentFlags::Elf { p_flags, .. } if p_flags.contains(object::elf::PF_X)))
        .find_map(|seg| {
            let (file_start, file_len) = seg.file_range();
            (file_start / page * page..file_start + file_len.max(1))
                .contains(&offset)
                .then(|| start.wrapping_sub(offset.wrapping_sub(file_start).wrapping_add(seg.address())))
        })
}

/// Where the separate debug file of `obj` would be, by its build id.
fn debug_file_path(obj: &object::File<'_>) -> Option<String> {
    let id = obj.build_id().ok()??;
    let (first, rest) = id.split_first()?;
    let hex: String = rest.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("/usr/lib/debug/.build-id/{first:02x}/{hex}.debug"))
}

/// A whole file mapped read-only; unmapped on drop.
struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
}

impl MappedFile {
    fn open(path: &str) -> Option<Self> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: a fresh private read-only mapping of an open file; the descriptor may be
        // closed afterwards. A file truncated while mapped would fault on access, the risk
        // `backtrace` takes too (it maps the same files).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // Only the pages that are read: no read-ahead around each unit header.
        // SAFETY: advice on the mapping just made.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_RANDOM);
        }
        Some(Self { ptr, len })
    }
}

impl MappedFile {
    /// Drops the resident pages of the mapping; they are read again from the file if used.
    fn release_pages(&self) {
        // SAFETY: a private read-only file mapping: its pages, once dropped, read the same
        // bytes from the file again, so slices into it stay valid.
        unsafe {
            libc::madvise(self.ptr, self.len, libc::MADV_DONTNEED);
        }
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`, once.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn symbolize_marker_function(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(31)
    }

    /// The address of a function of this binary, resolved in both modes: its name, and in
    /// `DebugInfo` mode (tests are built with debug information) its file and line.
    #[cfg(target_os = "linux")]
    #[test]
    fn resolves_a_function_of_this_binary() {
        let addr = symbolize_marker_function as *const () as usize as u64 + 1;
        assert_eq!(symbolize_marker_function(1), 31);
        let maps = Mappings::current();
        let addrs = BTreeSet::from([addr]);
        let symbols = resolve(&addrs, &maps, Mode::Symbols);
        let frames = &symbols[&addr];
        assert_eq!(frames.len(), 1);
        assert!(
            frames[0].name.ends_with("symbolize_marker_function"),
            "{:?}",
            frames[0].name
        );
        assert!(frames[0].system_name.starts_with("_ZN") || frames[0].system_name.starts_with("_R"));
        // With debug information: the same function (its outermost frame), with its file and
        // line when its unit could be read alone (a unit that takes names from other units,
        // as full debug information may, falls back to the symbol table).
        let dwarf = resolve(&addrs, &maps, Mode::DebugInfo);
        let frame = dwarf[&addr].last().unwrap();
        assert!(frame.name.ends_with("symbolize_marker_function"), "{:?}", frame.name);
        assert!(
            frame.file.is_empty() || frame.file.ends_with("symbolize.rs"),
            "{:?}",
            frame.file
        );
        assert_eq!(frame.file.is_empty(), frame.line == 0);
        // An address outside every mapping resolves to nothing.
        assert!(resolve(&BTreeSet::from([8]), &maps, Mode::DebugInfo).is_empty());
    }

    fn rss() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Every function of this binary symbolized at once (every unit of its DWARF read): RSS
    /// rises by at most 40 MiB while it runs and is back within 8 MiB after. Measures RSS,
    /// so it runs alone, on demand, in a release build (the workspace's line tables):
    /// `cargo test --release -p profiling-core --features profiling-full --lib -- --ignored --nocapture symbolizing_every_function`
    #[cfg(target_os = "linux")]
    #[test]
    #[ignore = "measures RSS: run alone (see the doc comment)"]
    fn symbolizing_every_function_stays_within_40_mib() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let maps = Mappings::current();
        let main = maps.0.first().unwrap();
        let addrs: BTreeSet<u64> = {
            let file = MappedFile::open("/proc/self/exe").unwrap();
            let obj = object::File::parse(&*file).unwrap();
            let bias = load_bias(&obj, main.start, main.offset).unwrap();
            obj.symbol_map()
                .symbols()
                .iter()
                .map(|s| s.address().wrapping_add(bias))
                .filter(|&a| main.contains(a))
                .collect()
        };
        assert!(addrs.len() > 1000, "{} functions", addrs.len());
        crate::render::cpu_profile::release_freed_memory();
        let before = rss();
        let (stop, peak) = (AtomicBool::new(false), AtomicU64::new(before));
        let resolved = std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(), Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
            let out = resolve(&addrs, &maps, Mode::DebugInfo);
            peak.fetch_max(rss(), Ordering::Relaxed);
            let n = out.len();
            let with_lines = out.values().filter(|f| f.iter().any(|f| f.line > 0)).count();
            drop(out);
            stop.store(true, Ordering::Relaxed);
            (n, with_lines)
        });
        crate::render::cpu_profile::release_freed_memory();
        let (peak, after) = (peak.load(Ordering::Relaxed), rss());
        let mib = |b: i64| b as f64 / (1 << 20) as f64;
        eprintln!(
            "symbolized {} of {} functions ({} with lines): RSS before {:.1} MiB, peak {:+.1} MiB, after {:+.1} MiB",
            resolved.0,
            addrs.len(),
            resolved.1,
            mib(before as i64),
            mib(peak as i64 - before as i64),
            mib(after as i64 - before as i64)
        );
        assert!(resolved.0 * 10 >= addrs.len() * 9, "{resolved:?} of {}", addrs.len());
        assert!(
            peak - before <= 40 << 20,
            "peak {:+.1} MiB",
            mib(peak as i64 - before as i64)
        );
        assert!(
            after as i64 - before as i64 <= 8 << 20,
            "after {:+.1} MiB",
            mib(after as i64 - before as i64)
        );
    }

    #[test]
    fn parses_the_mode() {
        assert_eq!(Mode::parse("").unwrap(), Mode::DebugInfo);
        assert_eq!(Mode::parse("debuginfo").unwrap(), Mode::DebugInfo);
        assert_eq!(Mode::parse(" symbols\n").unwrap(), Mode::Symbols);
        assert!(matches!(Mode::parse("dwarf"), Err(Error::InvalidConfig(_))));
    }
}
