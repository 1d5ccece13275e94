//! The restore plan: one set, pinned by its snapshot id, and a
//! [`Restorer`] per component bound to its live target. What the user is
//! shown is this plan, and [`super::execute`] runs exactly it.

use rustic_core::repofile::SnapshotFile;
use serde::Serialize;

use super::Request;
use crate::checksums::Checksums;
use crate::components::restoring::Indexed;
use crate::components::{check_manifest, ComponentId, Restore, RestoreOptions, Restorer, KINDS};
use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest};
use crate::repository;
use crate::sets::{self, BackupSet};

/// One thing the restore replaces.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Component name.
    pub component: String,
    /// What happens to it, naming host, port, database, container, volume.
    pub action: String,
}

/// A restore plan: the set (pinned by snapshot id), its manifest, and what
/// will be replaced. Holds the repository with its index loaded, so the
/// restore that runs it loads the index no second time.
pub struct Plan {
    /// The set.
    pub set: BackupSet,
    pub(super) snap: SnapshotFile,
    /// Its manifest.
    pub manifest: Manifest,
    pub(super) checksums: Checksums,
    pub(super) restorers: Vec<Box<dyn Restorer>>,
    pub(super) repo: Indexed,
    pub(super) request: Request,
    /// Components to restore (in the set and configured).
    pub components: Vec<String>,
    /// What will be replaced.
    pub targets: Vec<Target>,
    /// Components in the set that are not restored, with why.
    pub skipped: Vec<(String, String)>,
}

/// A manifest file of the set; failing to read it is a verification failure.
fn read_small(repo: &Indexed, snap: &SnapshotFile, path: &str) -> Result<Vec<u8>> {
    sets::read_file(repo, snap, path).map_err(|e| Error::Verification(e.to_string()))
}

/// Reads the set's manifest and works out what the restore replaces.
/// Changes nothing.
pub fn plan(cfg: &Config, env: &Env, req: &Request) -> Result<Plan> {
    let repo = repository::open_indexed(cfg, env)?;
    let (set, snap) = sets::find(&repo, &cfg.stack.name.0, &req.name)?;
    let (manifest, checksums) = read_set(&repo, &set, &snap)?;
    crate::validate::check_against(
        &format!("set `{}`", set.name),
        &manifest,
        checksums.keys(),
        cfg,
        &req.only,
    )?;
    let opts = RestoreOptions {
        flush_redis: req.flush_redis,
        restore_role_passwords: req.restore_role_passwords,
        restoring: manifest
            .components
            .keys()
            .filter(|id| id.selected_by(&req.only))
            .cloned()
            .collect(),
    };
    let mut restorers: Vec<Box<dyn Restorer>> = Vec::new();
    let mut skipped = Vec::new();
    for (id, record) in &manifest.components {
        if !id.selected_by(&req.only) {
            continue;
        }
        match id.kind().restorer(cfg, &opts, id, record)? {
            Restore::Into(r) => restorers.push(r),
            Restore::Skip(why) => skipped.push((id.to_string(), why)),
        }
    }
    let in_set: Vec<ComponentId> = manifest.components.keys().cloned().collect();
    for kind in KINDS {
        let extra = kind.extra_restorers(cfg, &opts, &in_set)?;
        restorers.extend(extra.into_iter().filter(|r| r.id().selected_by(&req.only)));
    }
    if restorers.is_empty() {
        let names: Vec<&str> = in_set.iter().map(ComponentId::as_str).collect();
        return Err(Error::Usage(format!(
            "nothing to restore from `{}` (components in the set: {})",
            set.name,
            names.join(", ")
        )));
    }
    Ok(Plan {
        components: restorers.iter().map(|r| r.id().to_string()).collect(),
        targets: restorers
            .iter()
            .map(|r| Target {
                component: r.id().to_string(),
                action: r.action(),
            })
            .collect(),
        set,
        snap,
        manifest,
        checksums,
        restorers,
        repo,
        request: req.clone(),
        skipped,
    })
}

/// The manifest (checked: a restorable schema, ids that agree with their
/// records) and the checksums of a set.
pub(crate) fn read_set(
    repo: &Indexed,
    set: &BackupSet,
    snap: &SnapshotFile,
) -> Result<(Manifest, Checksums)> {
    let manifest: Manifest = serde_json::from_slice(&read_small(repo, snap, manifest::JSON_PATH)?)
        .map_err(|e| {
            Error::Verification(format!(
                "manifest.json of `{}` is unreadable: {e}",
                set.name
            ))
        })?;
    if manifest
        .imported
        .as_ref()
        .is_some_and(|i| i.layout == "legacy")
    {
        return Err(Error::Refused(format!(
            "set `{0}` was imported from a legacy backup directory and is restored by hand: `stack-backup export {0} DIR`, then follow DIR/MANIFEST.md and DIR/legacy/MANIFEST.md",
            set.name
        )));
    }
    if manifest.schema > manifest::SCHEMA {
        return Err(Error::Refused(format!(
            "set `{}` has manifest schema {}; this stack-backup reads up to {}: upgrade it",
            set.name,
            manifest.schema,
            manifest::SCHEMA
        )));
    }
    check_manifest(&manifest)
        .map_err(|m| Error::Verification(format!("manifest.json of `{}`: {m}", set.name)))?;
    let checksums = Checksums::parse(&String::from_utf8_lossy(&read_small(
        repo,
        snap,
        manifest::CHECKSUM_PATH,
    )?));
    Ok((manifest, checksums))
}
