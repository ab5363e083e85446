//! Where snapshots are kept: a bounded in-memory store and, when a directory is configured,
//! `profiling-core`'s [`SnapshotDir`], which owns the file format, writes each snapshot
//! atomically, bounds the directory in count and bytes, and keeps ids unique across
//! restarts. At start only the newest files are read.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use profiling_core::render::snapshot_file::{valid_id, StoredSnapshot};
use profiling_core::render::snapshot_file::{DiskLimits, SnapshotDir};
use serde::{Deserialize, Serialize};

use crate::error::Result;

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

#[derive(Debug)]
pub(crate) struct SnapshotStore {
    dir: Option<SnapshotDir>,
    max: usize,
    items: Mutex<VecDeque<Arc<StoredSnapshot>>>,
    /// The id sequence when there is no directory (a directory keeps its own).
    seq: AtomicU64,
}

impl SnapshotStore {
    /// Opens the store; with a directory, opens it within `limits` and reads its newest
    /// `max` snapshots (and no other file).
    pub(crate) fn open(dir: Option<PathBuf>, max: usize, limits: DiskLimits) -> Result<Self> {
        let dir = dir.map(|d| SnapshotDir::open(d, limits)).transpose()?;
        let items = match &dir {
            Some(d) => d.newest(max)?.into_iter().map(Arc::new).collect(),
            None => VecDeque::new(),
        };
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
        match &self.dir {
            Some(d) => d.next_id(taken_unix_ms),
            None => format!("{taken_unix_ms}-{}", self.seq.fetch_add(1, Ordering::Relaxed)),
        }
    }

    fn file_of(&self, id: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.file_of(id))
    }

    /// Keeps `snap` (writing it first when persisting) and drops the oldest beyond the bound.
    pub(crate) fn insert(&self, snap: StoredSnapshot) -> Result<SnapshotSummary> {
        let file = self.dir.as_ref().map(|d| d.write(&snap)).transpose()?;
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
        match self.dir.as_ref()?.read(id) {
            Ok(s) => s.map(Arc::new),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable snapshot file");
                None
            }
        }
    }

    /// Snapshots kept in memory.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn leftover_temporary_and_truncated_files_are_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        // What a crash between write and rename leaves behind.
        fs::write(
            dir.path().join(".1-1.json.0123456789abcdef.tmp"),
            b"{\"id\": \"1-1\", \"trunc",
        )
        .unwrap();
        // A truncated file under a visible name (e.g. copied in by hand) is skipped too.
        fs::write(dir.path().join("2-1.json"), b"{\"id\": \"2-1\"").unwrap();
        let store = SnapshotStore::open(Some(dir.path().to_owned()), 8, DiskLimits::default()).unwrap();
        assert_eq!(store.len(), 0);
        assert!(store.get("1-1").is_none());
        assert!(store.get("2-1").is_none());
    }
}
