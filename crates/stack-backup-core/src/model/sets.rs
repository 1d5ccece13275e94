//! Backup sets: the snapshots stack-backup wrote, seen through their tags.
//!
//! A backup set is exactly one snapshot. Its identity lives in tags that
//! stock `restic` shows too: `stack-backup`, `stack:<stack>`, `tier:<tier>`,
//! `name:<name>`. A small JSON summary (components, git commit) is kept in
//! the snapshot's description so that `list` needs no tree reads.

use serde::{Deserialize, Serialize};

use rustic_core::repofile::SnapshotFile;

use crate::error::{Error, Result};
use crate::tags::SetTags;
use crate::tiers::Tier;

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
        Self::from_snapshot_any(snap).filter(|_| SetTags::of(snap).is_some_and(|t| t.is_set()))
    }

    /// [`Self::from_snapshot`], also for a set not yet verified.
    #[must_use]
    pub fn from_snapshot_any(snap: &SnapshotFile) -> Option<Self> {
        let SetTags::Set {
            stack, tier, name, ..
        } = SetTags::of(snap)?
        else {
            return None;
        };
        let summary: Summary = snap
            .description
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        Some(Self {
            name,
            id: snap.id.to_hex().to_string(),
            tier,
            stack,
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

/// The names a user can give for one of `sets` (oldest first, as
/// [`list`] returns them): the set names, newest first, then `latest`
/// (kept by [`find_in`]). With `tier`, only that tier's names, and no
/// `latest`, which means the newest set of any tier.
#[must_use]
pub fn references(sets: &[(BackupSet, SnapshotFile)], tier: Option<Tier>) -> Vec<String> {
    let mut names: Vec<String> = sets
        .iter()
        .rev()
        .filter(|(b, _)| tier.is_none_or(|t| b.tier == t))
        .map(|(b, _)| b.name.clone())
        .collect();
    if tier.is_none() && !names.is_empty() {
        names.push("latest".into());
    }
    names
}

/// Finds a set by name, by (a prefix of at least 4 digits of) its id, or
/// `latest`. An ambiguous id prefix is an error.
pub fn find<S: rustic_core::Open>(
    repo: &rustic_core::Repository<S>,
    stack: &str,
    wanted: &str,
) -> Result<(BackupSet, SnapshotFile)> {
    find_in(list(repo, stack)?, wanted)
}

/// [`find`] among `sets` (oldest first).
pub fn find_in(
    mut sets: Vec<(BackupSet, SnapshotFile)>,
    wanted: &str,
) -> Result<(BackupSet, SnapshotFile)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::SetTags;

    fn snap(name: &str, tier: Tier, id_byte: u8, hour: i8) -> SnapshotFile {
        let mut bytes = [0u8; 32];
        bytes[0] = id_byte;
        bytes[1] = 0xab;
        SnapshotFile {
            time: jiff::civil::date(2026, 1, 1)
                .at(hour, 0, 0, 0)
                .to_zoned(jiff::tz::TimeZone::UTC)
                .unwrap(),
            tags: SetTags::set("shop", tier, name).to_list(),
            id: rustic_core::repofile::SnapshotId::from(rustic_core::Id::new(bytes)),
            ..SnapshotFile::default()
        }
    }

    fn sets() -> Vec<(BackupSet, SnapshotFile)> {
        let mut held = snap("held", Tier::Immaculate, 0x13, 3);
        held.tags = SetTags::set("shop", Tier::Immaculate, "held")
            .verified(false)
            .to_list();
        assert!(
            BackupSet::from_snapshot(&held).is_none(),
            "unverified is no set"
        );
        assert!(BackupSet::from_snapshot_any(&held).is_some());
        [
            snap("one", Tier::Backups, 0x11, 1),
            snap("two", Tier::Data, 0x12, 2),
            snap("sacred/v1", Tier::Sacred, 0x21, 4),
        ]
        .into_iter()
        .map(|s| (BackupSet::from_snapshot(&s).unwrap(), s))
        .collect()
    }

    #[test]
    fn sets_are_found_by_name_latest_or_a_unique_id_prefix() {
        let name = |w: &str| find_in(sets(), w).map(|(b, _)| b.name);
        assert_eq!(name("two").unwrap(), "two");
        assert_eq!(name("sacred/v1").unwrap(), "sacred/v1");
        assert_eq!(name("latest").unwrap(), "sacred/v1");
        assert_eq!(name("12ab").unwrap(), "two");
        // Three digits are never an id prefix; `1` prefixes two sets.
        assert!(matches!(name("12a"), Err(Error::NotFound(_))));
        assert!(matches!(name("1"), Err(Error::NotFound(_))));
        let ambiguous = find_in(
            vec![
                (
                    BackupSet::from_snapshot(&snap("a", Tier::Backups, 0x11, 1)).unwrap(),
                    snap("a", Tier::Backups, 0x11, 1),
                ),
                (
                    BackupSet::from_snapshot(&snap("b", Tier::Backups, 0x11, 2)).unwrap(),
                    snap("b", Tier::Backups, 0x11, 2),
                ),
            ],
            "11ab",
        );
        assert!(matches!(ambiguous, Err(Error::Refused(m)) if m.contains("matches 2")));
        assert!(matches!(name("nope"), Err(Error::NotFound(n)) if n == "nope"));
        assert!(matches!(
            find_in(Vec::new(), "latest"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn references_are_names_newest_first_then_latest() {
        assert_eq!(
            references(&sets(), None),
            ["sacred/v1", "two", "one", "latest"]
        );
        assert_eq!(references(&sets(), Some(Tier::Data)), ["two"]);
        assert!(references(&sets(), Some(Tier::Immaculate)).is_empty());
        assert!(references(&[], None).is_empty());
    }
}
