//! `copy`: backup sets to a second repository (an off-site copy).
//!
//! Each set is copied whole with rustic's `Repository::copy`, which
//! re-encrypts blobs for the target's key and writes the snapshot with the
//! same time, tags (stack, tier, name) and description; the set's manifest
//! and checksums travel inside it. Blobs the target already holds are not
//! sent again.
//!
//! A set is *already there* when the target has a set of the same stack
//! and name with the same tree and time: it is skipped, so running `copy`
//! again copies nothing new. A target set with the same name but other
//! content is a conflict: nothing is copied and the command refuses
//! (names are unique within a repository).

use std::path::PathBuf;

use rustic_core::repofile::SnapshotFile;
use serde::Serialize;

use crate::config::{looks_like_url, Config};
use crate::error::{Error, Result};
use crate::lock::{Mode, RepoLock};
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet};
use crate::tiers::Tier;

/// Which sets to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One set by name, id prefix or `latest`.
    Name(String),
    /// Every set of a tier.
    Tier(Tier),
    /// Every set of the stack.
    All,
}

/// A copy request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The sets to copy.
    pub selection: Selection,
    /// The target repository: a local path or a `scheme:` URL.
    pub to: String,
    /// The target's password (never shown).
    pub to_password: String,
    /// Create the target repository when there is none.
    pub init: bool,
}

/// What a copy did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The target, as shown to users (no secret).
    pub target: String,
    /// True when the target repository was created by this run.
    pub initialized: bool,
    /// Sets copied by this run.
    pub copied: Vec<BackupSet>,
    /// Sets the target already held (skipped).
    pub skipped: Vec<BackupSet>,
}

/// The config of the target repository: `cfg` with `[repository]` pointing
/// at `to` (its own options and password sources dropped; the cache
/// directory is kept: rustic separates repositories by id in it).
#[must_use]
pub fn target_config(cfg: &Config, to: &str) -> Config {
    let mut t = cfg.clone();
    if looks_like_url(to) {
        t.repository.url = Some(to.to_string());
        t.repository.path = None;
    } else {
        t.repository.path = Some(PathBuf::from(to));
        t.repository.url = None;
    }
    t.repository.options.clear();
    t.repository.password_file = None;
    t.repository.password_command = None;
    t
}

/// Copies the selected backup sets of `cfg`'s stack to `req.to`. Holds the
/// target's repository lock while it writes.
pub fn run(cfg: &Config, env: &crate::config::Env, req: &Request) -> Result<Report> {
    let stack = cfg.stack.name.0.clone();
    let target_cfg = target_config(cfg, &req.to);
    let src_loc = Location::of(cfg);
    let dst_loc = Location::of(&target_cfg);
    if src_loc == dst_loc {
        return Err(Error::Usage(format!(
            "--to {dst_loc} is the repository itself; name another one"
        )));
    }

    let _source_lock = RepoLock::acquire(cfg, env, Mode::Shared, "stack-backup copy")?;
    // Which sets.
    let source = repository::open_from(cfg, env)?;
    let all = sets::list(&source, &stack)?;
    let selected: Vec<(BackupSet, SnapshotFile)> = match &req.selection {
        Selection::Name(n) => vec![sets::find(&source, &stack, n)?],
        Selection::Tier(t) => all.into_iter().filter(|(b, _)| b.tier == *t).collect(),
        Selection::All => all,
    };

    // A target that does not exist yet has no `locks/`: the local lock
    // keeps this machine's processes out until it is created.
    let _lock = if repository::exists(&target_cfg)? {
        RepoLock::acquire_with_password(
            &target_cfg,
            &req.to_password,
            Mode::Shared,
            "stack-backup copy",
        )?
    } else {
        RepoLock::local_in(&crate::system::state::of(cfg)?, &dst_loc)?
    };
    let mut initialized = false;
    let target = if repository::exists(&target_cfg)? {
        repository::open(&target_cfg, &req.to_password)?
    } else if req.init {
        initialized = true;
        repository::init(&target_cfg, &req.to_password)?
    } else {
        return Err(Error::Repository {
            location: dst_loc.to_string(),
            message: "no repository here; pass --init to create it (with the target password)"
                .into(),
        });
    };
    let existing = sets::list(&target, &stack)?;

    let mut to_copy = Vec::new();
    let mut skipped = Vec::new();
    for (set, snap) in selected {
        match existing.iter().find(|(b, _)| b.name == set.name) {
            Some((_, there)) if there.tree == snap.tree && there.time == snap.time => {
                skipped.push(set);
            }
            Some((b, _)) => {
                return Err(Error::Refused(format!(
                    "{dst_loc} already holds another backup set named `{}` (id {}); names are unique, nothing was copied",
                    set.name,
                    b.short_id()
                )));
            }
            None => to_copy.push((set, snap)),
        }
    }

    if !to_copy.is_empty() {
        let src_err =
            |e: Box<rustic_core::RusticError>| repository::op_error(cfg, "reading the index", &e);
        let dst_err = |what: &str, e: Box<rustic_core::RusticError>| {
            repository::op_error(&target_cfg, what, &e)
        };
        let source = source.to_indexed().map_err(src_err)?;
        let target = target
            .to_indexed_ids()
            .map_err(|e| dst_err("reading the index", e))?;
        let snaps: Vec<SnapshotFile> = to_copy.iter().map(|(_, s)| s.clone()).collect();
        crate::system::fault::point("copy-ready")?;
        crate::repo::restic_lock::still_held()?;
        source
            .copy(&target, snaps.iter())
            .map_err(|e| dst_err("copying backup sets", e))?;
        // rustic writes the snapshots at the end of the copy, with no step
        // between: a lock lost during the copy (decision 0025) is noticed
        // here, and the snapshots just written, whose packs another host's
        // prune may have deleted meanwhile, are removed again.
        if let Err(e) = crate::repo::restic_lock::still_held() {
            let copied: Vec<_> = sets::list(&target, &stack)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, t)| snaps.iter().any(|s| s.tree == t.tree && s.time == t.time))
                .map(|(_, t)| t.id)
                .collect();
            if let Err(d) = target.delete_snapshots(&copied) {
                log::error!(
                    "could not remove the sets copied under a lost lock from {dst_loc}: {}",
                    d.display_log()
                );
            }
            return Err(e);
        }
    }
    // For `status`: the copy lag of this target.
    crate::records::record_copy(
        cfg,
        &stack,
        &dst_loc.to_string(),
        to_copy
            .iter()
            .map(|(b, _)| b.id.clone())
            .chain(skipped.iter().map(|b| b.id.clone())),
    );
    Ok(Report {
        target: dst_loc.to_string(),
        initialized,
        copied: to_copy.into_iter().map(|(b, _)| b).collect(),
        skipped,
    })
}
