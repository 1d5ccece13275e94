//! The snapshots a backup writes before its set exists, deleted on every
//! exit: whole-or-nothing by construction.

use rustic_core::repofile::{SnapshotFile, SnapshotId};

use crate::repository::OpenRepo;

/// The part snapshots of one backup run (the archive runs and the manifest
/// snapshot), all tagged `stack-backup-incomplete`.
///
/// Contract: dropping it deletes every part it holds, on success (the
/// parts were merged into the set) and on failure (an error, an early
/// return, a panic unwinding through the run). A process killed outright
/// leaves them; they are never listed as a set, and the next backup of the
/// stack on this host removes them.
pub struct Parts {
    repo: OpenRepo,
    snaps: Vec<SnapshotFile>,
}

impl Parts {
    /// No parts yet; `repo` is a handle used only to delete them.
    pub fn new(repo: OpenRepo) -> Self {
        Self {
            repo,
            snaps: Vec::new(),
        }
    }

    /// Takes a part written by this run.
    pub fn add(&mut self, snap: SnapshotFile) {
        self.snaps.push(snap);
    }

    /// The parts, in the order they were written.
    pub fn snaps(&self) -> &[SnapshotFile] {
        &self.snaps
    }

    fn ids(&self) -> Vec<SnapshotId> {
        self.snaps.iter().map(|s| s.id).collect()
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        let ids = self.ids();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.repo.delete_snapshots(&ids) {
            log::error!(
                "could not delete {} incomplete snapshot(s) (the next backup removes them): {}",
                ids.len(),
                e.display_log()
            );
        }
    }
}
