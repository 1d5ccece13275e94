//! Backup sets: the snapshots stack-backup wrote, seen through their tags.
//!
//! A backup set is exactly one snapshot. Its identity lives in tags that
//! stock `restic` shows too: `stack-backup`, `stack:<stack>`, `tier:<tier>`,
//! `name:<name>`. A small JSON summary (components, git commit) is kept in
//! the snapshot's description so that `list` needs no tree reads.

use serde::{Deserialize, Serialize};

use rustic_core::repofile::SnapshotFile;

use crate::error::{Error, Result};
use crate::tiers::Tier;

/// The tag every stack-backup snapshot carries.
pub const MARKER_TAG: &str = "stack-backup";

/// The extra tag of a set that is written but not yet verified (an
/// immaculate being created): such a snapshot is not a backup set yet, and
/// one left by a killed run is removed by the next backup.
pub const UNVERIFIED_TAG: &str = "stack-backup-unverified";

/// The summary stored in a snapshot's description.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// Components in the set, e.g. `postgres.main`, `docker.image.web`.
    #[serde(default)]
    pub components: Vec<String>,
    /// The git commit the code was at, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// When the set was read back in full and verified at creation
    /// (immaculate sets), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// The set this one pins (a sacred set made with `--from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_from: Option<String>,
}

/// One backup set as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupSet {
    /// Unique human name.
    pub name: String,
    /// Full snapshot id (hex).
    pub id: String,
    /// Tier.
    pub tier: Tier,
    /// The stack it belongs to.
    pub stack: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// The git commit, if recorded.
    pub git_commit: Option<String>,
    /// Components in the set.
    pub components: Vec<String>,
    /// Bytes of data the set holds (sum of file sizes), when known.
    pub size: Option<u64>,
    /// The description summary (verification time, pin origin).
    #[serde(skip)]
    pub summary: Summary,
}

impl BackupSet {
    /// The set described by a snapshot, or `None` for a snapshot that
    /// stack-backup did not write.
    #[must_use]
    pub fn from_snapshot(snap: &SnapshotFile) -> Option<Self> {
        if snap.tags.contains(UNVERIFIED_TAG) {
            return None;
        }
        Self::from_snapshot_any(snap)
    }

    /// [`Self::from_snapshot`], also for a set not yet verified.
    #[must_use]
    pub fn from_snapshot_any(snap: &SnapshotFile) -> Option<Self> {
        let tags: Vec<String> = snap.tags.iter().cloned().collect();
        if !tags.iter().any(|t| t == MARKER_TAG) {
            return None;
        }
        let value = |prefix: &str| {
            tags.iter()
                .find_map(|t| t.strip_prefix(prefix).map(str::to_string))
        };
        let tier = value("tier:")?.parse().ok()?;
        let summary: Summary = snap
            .description
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        Some(Self {
            name: value("name:").unwrap_or_else(|| snap.id.to_hex().to_string()),
            id: snap.id.to_hex().to_string(),
            tier,
            stack: value("stack:").unwrap_or_default(),
            time: snap.time.timestamp().to_string(),
            git_commit: summary.git_commit.clone(),
            components: summary.components.clone(),
            size: snap.summary.as_ref().map(|s| s.total_bytes_processed),
            summary,
        })
    }

    /// The first 8 hex digits of the id.
    #[must_use]
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(8)]
    }
}

/// Every backup set of `stack` in the repository, oldest first.
pub fn list<S: rustic_core::Open>(
    repo: &rustic_core::Repository<S>,
    stack: &str,
) -> Result<Vec<(BackupSet, SnapshotFile)>> {
    let snaps = repo.get_all_snapshots().map_err(|e| Error::Repository {
        location: repo.name.clone(),
        message: e.display_log(),
    })?;
    let mut sets: Vec<_> = snaps
        .into_iter()
        .filter_map(|s| BackupSet::from_snapshot(&s).map(|b| (b, s)))
        .filter(|(b, _)| b.stack == stack)
        .collect();
    sets.sort_by(|a, b| a.1.time.cmp(&b.1.time));
    Ok(sets)
}

/// Finds a set by name, by (a prefix of at least 4 digits of) its id, or
/// `latest`. An ambiguous id prefix is an error.
pub fn find<S: rustic_core::Open>(
    repo: &rustic_core::Repository<S>,
    stack: &str,
    wanted: &str,
) -> Result<(BackupSet, SnapshotFile)> {
    let mut sets = list(repo, stack)?;
    if wanted == "latest" {
        return sets.pop().ok_or_else(|| Error::NotFound("latest".into()));
    }
    if let Some(i) = sets.iter().position(|(b, _)| b.name == wanted) {
        return Ok(sets.swap_remove(i));
    }
    if wanted.len() >= 4 && wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut hits: Vec<_> = sets
            .into_iter()
            .filter(|(b, _)| b.id.starts_with(wanted))
            .collect();
        match hits.len() {
            1 => return Ok(hits.remove(0)),
            0 => {}
            n => {
                return Err(Error::Refused(format!(
                    "`{wanted}` matches {n} backup sets; give more digits of the id"
                )))
            }
        }
    }
    Err(Error::NotFound(wanted.to_string()))
}

/// Reads one file of a snapshot into memory (for small files: manifests).
/// `path` is inside the set, with or without the leading `/`.
pub fn read_file<S: rustic_core::IndexedFull>(
    repo: &rustic_core::Repository<S>,
    snap: &SnapshotFile,
    path: &str,
) -> Result<Vec<u8>> {
    let path = format!("/{}", path.trim_start_matches('/'));
    let err = |e: Box<rustic_core::RusticError>| Error::Repository {
        location: repo.name.clone(),
        message: format!(
            "reading {path} from snapshot {}: {}",
            snap.id,
            e.display_log()
        ),
    };
    let node = repo.node_from_snapshot_and_path(snap, &path).map_err(err)?;
    let mut out = Vec::new();
    repo.dump(&node, &mut out).map_err(err)?;
    Ok(out)
}
