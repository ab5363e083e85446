//! Where snapshots are kept: a bounded in-memory store and, when a directory is configured,
//! one JSON file per snapshot written atomically.
//!
//! A file is written to a hidden temporary name in the same directory (`.{id}.json.tmp`),
//! flushed to disk, then renamed over `{id}.json` and the directory synced. A crash at any
//! point leaves either no `{id}.json` or a complete one, never a truncated one; a leftover
//! temporary file is hidden (dot name, `.tmp` suffix) and ignored when loading.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use profiling_core::{AllocationTotals, Snapshot};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reports::{CpuReport, MemoryReport};

/// Everything captured by `POST /api/profiling/snapshot`.
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

/// A line of `GET /api/profiling/snapshots`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Identifier.
    pub id: String,
    /// When taken, ms since the Unix epoch.
    pub taken_unix_ms: u64,
    /// Label.
    pub label: Option<String>,
    /// Functions recorded.
    pub functions: usize,
    /// Calls recorded, all functions.
    pub calls: u64,
    /// Window epoch of the profile.
    pub window_epoch: u64,
    /// File it was written to, when persisted.
    pub file: Option<String>,
}

impl SnapshotSummary {
    fn of(s: &StoredSnapshot, file: Option<&Path>) -> Self {
        Self {
            id: s.id.clone(),
            taken_unix_ms: s.taken_unix_ms,
            label: s.label.clone(),
            functions: s.profile.functions.len(),
            calls: s.profile.functions.iter().map(|f| f.calls).sum(),
            window_epoch: s.profile.window.epoch,
            file: file.map(|p| p.display().to_string()),
        }
    }
}

/// Whether `id` can name a snapshot: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug)]
pub(crate) struct SnapshotStore {
    dir: Option<PathBuf>,
    max: usize,
    items: Mutex<VecDeque<Arc<StoredSnapshot>>>,
    seq: AtomicU64,
}

impl SnapshotStore {
    /// Opens the store; with a directory, creates it and loads its newest `max` snapshots.
    pub(crate) fn open(dir: Option<PathBuf>, max: usize) -> Result<Self> {
        let mut items = VecDeque::new();
        if let Some(d) = &dir {
            fs::create_dir_all(d).map_err(|source| profiling_core::Error::Io {
                path: d.display().to_string(),
                source,
            })?;
            let mut loaded = load_dir(d);
            loaded.sort_by(|a, b| (a.taken_unix_ms, &a.id).cmp(&(b.taken_unix_ms, &b.id)));
            let skip = loaded.len().saturating_sub(max);
            items.extend(loaded.into_iter().skip(skip).map(Arc::new));
        }
        Ok(Self {
            dir,
            max,
            items: Mutex::new(items),
            seq: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<StoredSnapshot>>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh identifier for a snapshot taken at `taken_unix_ms`.
    pub(crate) fn next_id(&self, taken_unix_ms: u64) -> String {
        format!("{taken_unix_ms}-{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    fn file_of(&self, id: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{id}.json")))
    }

    /// Keeps `snap` (writing it first when persisting) and drops the oldest beyond the bound.
    pub(crate) fn insert(&self, snap: StoredSnapshot) -> Result<SnapshotSummary> {
        let file = self.file_of(&snap.id);
        if let Some(path) = &file {
            let json = serde_json::to_vec_pretty(&snap).map_err(profiling_core::Error::Json)?;
            write_atomic(path, |f| f.write_all(&json)).map_err(|source| {
                Error::Core(profiling_core::Error::Io {
                    path: path.display().to_string(),
                    source,
                })
            })?;
        }
        let summary = SnapshotSummary::of(&snap, file.as_deref());
        let mut items = self.lock();
        while items.len() >= self.max {
            items.pop_front();
        }
        items.push_back(Arc::new(snap));
        Ok(summary)
    }

    /// The snapshots in memory, oldest first.
    pub(crate) fn list(&self) -> Vec<SnapshotSummary> {
        self.lock()
            .iter()
            .map(|s| SnapshotSummary::of(s, self.file_of(&s.id).as_deref()))
            .collect()
    }

    /// The snapshot `id`, from memory or, when evicted, from its file.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<StoredSnapshot>> {
        if let Some(s) = self.lock().iter().find(|s| s.id == id) {
            return Some(Arc::clone(s));
        }
        if !valid_id(id) {
            return None;
        }
        let bytes = fs::read(self.file_of(id)?).ok()?;
        serde_json::from_slice::<StoredSnapshot>(&bytes)
            .ok()
            .filter(|s| s.id == id)
            .map(Arc::new)
    }

    /// Snapshots kept in memory.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

fn load_dir(dir: &Path) -> Vec<StoredSnapshot> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if !valid_id(id) {
            continue;
        }
        match fs::read(e.path()).map(|b| serde_json::from_slice::<StoredSnapshot>(&b)) {
            Ok(Ok(s)) if s.id == id => out.push(s),
            _ => tracing::warn!(file = %e.path().display(), "skipping unreadable snapshot file"),
        }
    }
    out
}

/// Writes `path` atomically: `write` fills a hidden temporary file in the same directory,
/// which is synced and renamed over `path` only if `write` succeeded. On error the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(valid_id("1764100000000-3"));
        assert!(valid_id("nightly_base"));
        for bad in ["", "../etc/passwd", "a b", "a.json", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn failed_write_leaves_no_visible_file_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, |f| f.write_all(b"{\"complete\": true}")).unwrap();
        // A writer that dies halfway: half the bytes are written, then an error.
        let err = write_atomic(&path, |f| {
            f.write_all(b"{\"comp")?;
            Err(io::Error::other("simulated crash before rename"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "simulated crash before rename");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"complete\": true}");
        // Nothing else is left in the directory: the temporary file was removed.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);

        // A new file that fails is never visible at all.
        let fresh = dir.path().join("b.json");
        assert!(write_atomic(&fresh, |f| {
            f.write_all(b"{")?;
            Err(io::Error::other("boom"))
        })
        .is_err());
        assert!(!fresh.exists());
    }

    #[test]
    fn leftover_temporary_files_are_ignored_when_loading() {
        let dir = tempfile::tempdir().unwrap();
        // What a crash between write and rename leaves behind.
        fs::write(dir.path().join(".1-1.json.tmp"), b"{\"id\": \"1-1\", \"trunc").unwrap();
        // A truncated file under a visible name (e.g. copied in by hand) is skipped too.
        fs::write(dir.path().join("2-1.json"), b"{\"id\": \"2-1\"").unwrap();
        let store = SnapshotStore::open(Some(dir.path().to_owned()), 8).unwrap();
        assert_eq!(store.len(), 0);
        assert!(store.get("1-1").is_none());
    }
}
