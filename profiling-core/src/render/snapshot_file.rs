//! Where snapshot files are written and read: the one place that knows their format.
//!
//! - [`save_snapshot`] / [`load_snapshot`]: one [`Snapshot`] as JSON at a path of your
//!   choosing (what `PROFILING_FLAMEGRAPH` and the `profiling` tool use). [`load_snapshot`]
//!   also reads a [`StoredSnapshot`], the document the HTTP API stores.
//! - [`SnapshotDir`]: a directory of [`StoredSnapshot`]s, `{id}.json` each, bounded in count
//!   **and** bytes (the oldest are deleted to make room), whose ids never repeat, even
//!   across restarts (the sequence resumes after the highest one on disk).
//! - [`write_atomic`]: every file of this crate is written through it. The bytes go to a
//!   temporary file in the same directory, created with a random name, `create_new` and
//!   `O_NOFOLLOW` (an existing file or a planted symlink makes the open fail instead of being
//!   written through) and mode 0600; it is synced, then renamed over the target, and the
//!   directory synced. A crash leaves either the old file or the new one, never a truncated
//!   one; a leftover temporary file is hidden (`.` prefix, `.tmp` suffix) and never loaded.
//!
//! A [`SnapshotDir`] is created with mode 0700; an existing directory that other users may
//! write to is refused, and its files are read without following symlinks.
//!
//! (Over 500 lines only with its unit tests: the code is the first 451 lines, the tests the
//! other 83, kept beside it as the house does for pure functions.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::analyze::reports::{CpuReport, MemoryReport};
use crate::error::{Error, Result};
use crate::record::alloc_report::AllocationTotals;
use crate::record::snapshot::Snapshot;

/// Everything captured by `POST /api/profiling/snapshot`: the document of a
/// [`SnapshotDir`] file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// Identifier: `{taken_unix_ms}-{sequence}`.
    pub id: String,
    /// When taken, ms since the Unix epoch.
    pub taken_unix_ms: u64,
    /// Optional label given when taking it.
    pub label: Option<String>,
    /// Every function's statistics and the call tree.
    pub profile: Snapshot,
    /// Memory figures at the time.
    pub memory: MemoryReport,
    /// CPU figures at the time.
    pub cpu: CpuReport,
    /// Allocation totals at the time.
    pub allocations: AllocationTotals,
}

/// Whether `id` can name a stored snapshot (and so a file): 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Opens `path` for a new file only: fails if anything (a file, a symlink) is there.
fn create_new_nofollow(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    o.open(path)
}

/// Opens `path` for reading without following a symlink at its last component.
fn open_nofollow(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    }
    o.open(path)
}

/// 64 unpredictable bits (std's randomly seeded SipHash over a counter and the clock).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Writes `bytes` to `path` atomically (see the module docs); creates missing parent
/// directories. On error `path` is untouched and no temporary file is left.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io_error(path, io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let (tmp, mut file) = loop {
        let tmp = dir.join(format!(".{}.{:016x}.tmp", name.to_string_lossy(), random_u64()));
        match create_new_nofollow(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(&tmp, e)),
        }
    };
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    // Make the rename itself durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `snapshot` as pretty JSON, atomically, creating parent directories.
pub fn save_snapshot(snapshot: &Snapshot, path: impl AsRef<Path>) -> Result<()> {
    let json = serde_json::to_vec_pretty(snapshot)?;
    write_atomic(path.as_ref(), &json)
}

/// Reads a snapshot saved as JSON: a bare [`Snapshot`], or an object with a `snapshot` or
/// `profile` field holding one (a [`StoredSnapshot`], as `GET /api/profiling/snapshots/{id}`
/// answers).
pub fn load_snapshot(path: impl AsRef<Path>) -> Result<Snapshot> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    parse_snapshot(&text).map_err(|reason| Error::InvalidSnapshot {
        path: path.display().to_string(),
        reason,
    })
}

/// Parses snapshot JSON (see [`load_snapshot`]); the error is a reason for a message.
pub fn parse_snapshot(text: &str) -> std::result::Result<Snapshot, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    // A stored snapshot of the HTTP API keeps the profile under `profile`.
    let inner = ["snapshot", "profile"]
        .iter()
        .find_map(|k| value.get(*k).filter(|v| v.is_object()))
        .unwrap_or(&value)
        .clone();
    serde_json::from_value(inner).map_err(|e| format!("JSON, but not a snapshot: {e}"))
}

/// How much a [`SnapshotDir`] may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskLimits {
    /// Most files kept (default 256).
    pub max_files: usize,
    /// Most bytes kept, all files together (default 1 GiB).
    pub max_bytes: u64,
}

impl Default for DiskLimits {
    fn default() -> Self {
        Self {
            max_files: 256,
            max_bytes: 1 << 30,
        }
    }
}

/// One file of a [`SnapshotDir`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The snapshot's id (the file name without `.json`).
    pub id: String,
    /// Size on disk, bytes.
    pub bytes: u64,
}

/// `(taken_unix_ms, sequence)` of an id this module wrote; `None` for other names.
fn id_key(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A directory of stored snapshots, bounded in count and bytes. See the module docs.
#[derive(Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    limits: DiskLimits,
    next_seq: AtomicU64,
    /// Held while pruning and writing, so that the bounds hold between concurrent writers.
    writing: Mutex<()>,
}

impl SnapshotDir {
    /// Opens (creating it with mode 0700) the directory, deletes the oldest files beyond
    /// `limits`, and resumes the id sequence after the highest one found.
    ///
    /// Fails when `dir` is a symlink or not a directory, or (on Unix) when users other than
    /// its owner may write to it.
    pub fn open(dir: impl Into<PathBuf>, limits: DiskLimits) -> Result<Self> {
        let dir = dir.into();
        if limits.max_files == 0 || limits.max_bytes == 0 {
            return Err(Error::InvalidConfig(
                "a snapshot directory must be allowed at least one file and one byte".to_owned(),
            ));
        }
        create_private_dir(&dir)?;
        let files = list(&dir)?;
        let highest = files
            .iter()
            .filter_map(|f| id_key(&f.id))
            .map(|k| k.1)
            .max()
            .unwrap_or(0);
        let this = Self {
            dir,
            limits,
            next_seq: AtomicU64::new(highest + 1),
            writing: Mutex::new(()),
        };
        this.prune(0)?;
        Ok(this)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Its bounds.
    pub fn limits(&self) -> DiskLimits {
        self.limits
    }

    /// The file of snapshot `id` (which may not exist).
    pub fn file_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// A fresh identifier for a snapshot taken at `taken_unix_ms`: `{taken_unix_ms}-{n}`,
    /// with `n` above every id this directory has held.
    pub fn next_id(&self, taken_unix_ms: u64) -> String {
        format!("{taken_unix_ms}-{}", self.next_seq.fetch_add(1, Ordering::Relaxed))
    }

    /// The snapshot files, oldest first (by id time and sequence).
    pub fn files(&self) -> Result<Vec<SnapshotFile>> {
        list(&self.dir)
    }

    /// Writes `snap` to `{id}.json` after deleting the oldest files needed to keep both
    /// bounds with it; returns the path. A snapshot larger than the byte bound is refused.
    pub fn write(&self, snap: &StoredSnapshot) -> Result<PathBuf> {
        if !valid_id(&snap.id) {
            return Err(Error::InvalidConfig(format!(
                "{:?} cannot name a snapshot file",
                snap.id
            )));
        }
        let json = serde_json::to_vec_pretty(snap)?;
        if json.len() as u64 > self.limits.max_bytes {
            return Err(Error::InvalidConfig(format!(
                "snapshot {} is {} bytes, above the directory's bound of {} bytes",
                snap.id,
                json.len(),
                self.limits.max_bytes
            )));
        }
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.prune_locked(json.len() as u64)?;
        let path = self.file_of(&snap.id);
        write_atomic(&path, &json)?;
        Ok(path)
    }

    /// Reads snapshot `id` (without following a symlink); `Ok(None)` when there is no such
    /// file, an error when it is unreadable or holds another snapshot.
    pub fn read(&self, id: &str) -> Result<Option<StoredSnapshot>> {
        if !valid_id(id) {
            return Ok(None);
        }
        let path = self.file_of(id);
        let mut file = match open_nofollow(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        let mut bytes = Vec::new();
        // Never read more than the bound allows one file to hold.
        Read::by_ref(&mut file)
            .take(self.limits.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(&path, e))?;
        let snap: StoredSnapshot = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidSnapshot {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if snap.id != id {
            return Err(Error::InvalidSnapshot {
                path: path.display().to_string(),
                reason: format!("holds snapshot {:?}", snap.id),
            });
        }
        Ok(Some(snap))
    }

    /// The newest `n` snapshots, oldest first: only their files are read. Unreadable files
    /// are skipped with a warning.
    pub fn newest(&self, n: usize) -> Result<Vec<StoredSnapshot>> {
        let files = self.files()?;
        let skip = files.len().saturating_sub(n);
        let mut out = Vec::new();
        for f in &files[skip..] {
            match self.read(&f.id) {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping unreadable snapshot file"),
            }
        }
        Ok(out)
    }

    fn prune(&self, room_for: u64) -> Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.prune_locked(room_for)
    }

    /// Deletes the oldest files until one more file of `room_for` bytes (none when 0) fits.
    fn prune_locked(&self, room_for: u64) -> Result<()> {
        let files = list(&self.dir)?;
        let extra = usize::from(room_for > 0);
        let mut count = files.len();
        let mut bytes: u64 = files.iter().map(|f| f.bytes).sum();
        for f in &files {
            if count + extra <= self.limits.max_files && bytes.saturating_add(room_for) <= self.limits.max_bytes {
                break;
            }
            let path = self.file_of(&f.id);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path, e)),
            }
            count -= 1;
            bytes -= f.bytes;
        }
        Ok(())
    }
}

/// Creates `dir` (and its parents) with mode 0700, or checks an existing one.
fn create_private_dir(dir: &Path) -> Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::InvalidConfig(format!(
            "snapshot directory {} is a symlink; give the real path",
            dir.display()
        ))),
        Ok(m) if !m.is_dir() => Err(Error::InvalidConfig(format!(
            "snapshot directory {} is not a directory",
            dir.display()
        ))),
        Ok(m) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if m.permissions().mode() & 0o022 != 0 {
                    return Err(Error::InvalidConfig(format!(
                        "snapshot directory {} may be written by other users (mode {:o}); use a directory of \
                         its own (it is created with mode 0700 when missing) or `chmod go-w` it",
                        dir.display(),
                        m.permissions().mode() & 0o777
                    )));
                }
            }
            #[cfg(not(unix))]
            let _ = m;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut b = fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                b.mode(0o700);
            }
            b.create(dir).map_err(|e| io_error(dir, e))
        }
        Err(e) => Err(io_error(dir, e)),
    }
}

/// The `{id}.json` regular files of `dir`, oldest first. Names are all that is read, plus
/// each file's size (without following symlinks: a symlink is not a snapshot file).
fn list(dir: &Path) -> Result<Vec<SnapshotFile>> {
    let entries = fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    let mut out: Vec<((u64, u64), SnapshotFile)> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if !valid_id(id) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue;
        }
        // Names this module did not write sort by modification time, before any of ours at
        // the same millisecond.
        let key = id_key(id).unwrap_or_else(|| {
            let ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            (ms, 0)
        });
        out.push((
            key,
            SnapshotFile {
                id: id.to_owned(),
                bytes: meta.len(),
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    Ok(out.into_iter().map(|(_, f)| f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("profiling-snapfile-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn stored(id: &str, taken_unix_ms: u64, label_len: usize) -> StoredSnapshot {
        StoredSnapshot {
            id: id.to_owned(),
            taken_unix_ms,
            label: Some("x".repeat(label_len)),
            profile: Snapshot::default(),
            memory: serde_json::from_value(serde_json::json!({
                "taken_unix_ms": 0, "rss_bytes": 0, "virtual_bytes": 0, "heap_bytes": null, "jemalloc": null,
                "growth_rate_mb_per_hour": null, "growth_r_squared": null, "growth_series": "rss", "samples": 0,
                "window_secs": 0.0, "sample_interval_secs": 5.0, "warning": false, "alert": false,
                "warning_threshold_mb": 650.0, "alert_threshold_mb": 700.0
            }))
            .unwrap(),
            cpu: serde_json::from_value(serde_json::json!({
                "cpu_percent": null, "cpu_percent_of_available": null, "interval_secs": null, "user_seconds": 0.0,
                "system_seconds": 0.0, "process_cpu_seconds": 0.0, "load_average": null, "threads": 1,
                "available_cpus": 1, "profiling_overhead_percent": null
            }))
            .unwrap(),
            allocations: AllocationTotals::default(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn ids_are_validated() {
        assert!(valid_id("1764100000000-3"));
        assert!(valid_id("nightly_base"));
        for bad in ["", "../etc/passwd", "a b", "a.json", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn atomic_write_replaces_whole_files_and_leaves_no_temporary() {
        let dir = tempdir("atomic");
        let path = dir.join("sub/a.json");
        write_atomic(&path, b"{\"v\": 1}").unwrap();
        write_atomic(&path, b"{\"v\": 2}").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"v\": 2}");
        assert_eq!(names(&dir.join("sub")), vec!["a.json"]);
        // A target that cannot be renamed over (a directory) fails and leaves nothing behind.
        fs::create_dir_all(dir.join("sub/d.json")).unwrap();
        assert!(write_atomic(&dir.join("sub/d.json"), b"{}").is_err());
        assert_eq!(names(&dir.join("sub")), vec!["a.json", "d.json"]);
    }

    #[test]
    fn directory_round_trips_and_reads_the_newest() {
        let dir = tempdir("roundtrip");
        let d = SnapshotDir::open(&dir, DiskLimits::default()).unwrap();
        let ids: Vec<String> = (0..3).map(|i| d.next_id(1000 + i)).collect();
        assert_eq!(ids, vec!["1000-1", "1001-2", "1002-3"]);
        for (i, id) in ids.iter().enumerate() {
            d.write(&stored(id, 1000 + i as u64, 1)).unwrap();
        }
        assert_eq!(d.read("1001-2").unwrap().unwrap(), stored("1001-2", 1001, 1));
        assert_eq!(d.read("9-9").unwrap(), None);
        let newest: Vec<String> = d.newest(2).unwrap().into_iter().map(|s| s.id).collect();
        assert_eq!(newest, vec!["1001-2", "1002-3"]);
        // A stored snapshot loads as its profile.
        assert_eq!(load_snapshot(d.file_of("1000-1")).unwrap(), Snapshot::default());
    }
}
