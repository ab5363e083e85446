//! The process's executable mappings, for pprof `Mapping`s: `/proc/self/maps` entries that
//! hold code, with the ELF build id of their file (`.note.gnu.build-id`, read through
//! `object` from the few bytes of the file that hold the notes, cached per file).
//!
//! Linux only: elsewhere [`Mappings::current`] is empty and locations carry no mapping.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// One executable mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub limit: u64,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// The file (or `[vdso]`-style pseudo name).
    pub path: String,
    /// GNU build id, lower-case hex, when the file has one.
    pub build_id: Option<String>,
}

impl Mapping {
    /// Whether `addr` falls inside.
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.limit).contains(&addr)
    }
}

/// The executable mappings of this process, main binary first.
#[derive(Clone, Debug, Default)]
pub struct Mappings(pub Vec<Mapping>);

impl Mappings {
    /// Reads `/proc/self/maps` now.
    pub fn current() -> Self {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let exe = std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut maps: Vec<Mapping> = text.lines().filter_map(parse_line).collect();
        // pprof treats the first mapping as the main binary (`go tool pprof BINARY PROFILE`
        // puts BINARY there).
        maps.sort_by_key(|m| (m.path != exe, m.start));
        for m in &mut maps {
            m.build_id = build_id(&m.path);
        }
        Self(maps)
    }

    /// The index of the mapping holding `addr`.
    pub fn find(&self, addr: u64) -> Option<usize> {
        self.0.iter().position(|m| m.contains(addr))
    }
}

/// `start-limit perms offset dev inode path`, executable entries only.
fn parse_line(line: &str) -> Option<Mapping> {
    let mut f = line.split_whitespace();
    let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
    let path = f.nth(2).unwrap_or("").to_owned();
    if !perms.contains('x') {
        return None;
    }
    let (start, limit) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        limit: u64::from_str_radix(limit, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
        build_id: None,
    })
}

/// The GNU build id of the ELF file at `path`, cached.
fn build_id(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    static CACHE: OnceLock<Mutex<HashMap<String, Option<String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(id) = cache.lock().ok()?.get(path) {
        return id.clone();
    }
    let id = read_build_id(path);
    cache.lock().ok()?.insert(path.to_owned(), id.clone());
    id
}

fn read_build_id(path: &str) -> Option<String> {
    use object::Object;
    let file = std::fs::File::open(path).ok()?;
    // Reads only the headers and the note, not the whole (possibly large) file.
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let id = elf.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_entries_only() {
        let m = parse_line("55d0c0a00000-55d0c0b00000 r-xp 00001000 08:01 1234   /usr/bin/app").unwrap();
        assert_eq!((m.start, m.limit, m.offset), (0x55d0c0a00000, 0x55d0c0b00000, 0x1000));
        assert_eq!(m.path, "/usr/bin/app");
        assert!(parse_line("55d0c0a00000-55d0c0b00000 r--p 00000000 08:01 1234 /usr/bin/app").is_none());
        let vdso = parse_line("7ffd1000-7ffd3000 r-xp 00000000 00:00 0   [vdso]").unwrap();
        assert_eq!(vdso.path, "[vdso]");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_binary_is_mapped_first_with_its_build_id() {
        let maps = Mappings::current();
        let here = parses_executable_entries_only as *const () as usize as u64;
        let i = maps.find(here).expect("this function's code is mapped");
        assert_eq!(i, 0, "{maps:?}");
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(maps.0[0].path, exe.to_string_lossy());
        // Debian's linker adds a GNU build id by default (`ld --build-id`).
        let id = maps.0[0].build_id.as_deref().expect("a build id");
        assert!(id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}
