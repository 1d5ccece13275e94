//! Sacred sets: milestone rollback points, never pruned, each tied to the
//! annotated git tag `sacred/NAME` at the commit the set recorded.
//!
//! A sacred set is named `sacred/NAME`, so `restore sacred/NAME` finds it.
//! Pinning an existing set (`--from`) saves a new snapshot of the same tree
//! with the sacred tags: nothing is copied and the original set is left as
//! it is (it may be pruned later; the sacred snapshot keeps the data).

use std::path::PathBuf;
use std::sync::Arc;

use rustic_core::ProgressBars;
use serde::Serialize;

use crate::backup::{self, Request};
use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::git;
use crate::ledger::Observer;
use crate::lock::{Mode, RepoLock};
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet, Summary};
use crate::tags::SetTags;
use crate::tiers::Tier;

/// What `sacred` did.
#[derive(Debug, Clone, Serialize)]
pub struct Pinned {
    /// The sacred set.
    pub set: BackupSet,
    /// The set it pins, when `--from` was given.
    pub from: Option<String>,
    /// The git tag created (`sacred/NAME`), if the set recorded a commit.
    pub git_tag: Option<String>,
    /// Why no tag was created, when none was.
    pub note: Option<String>,
    /// The Object Lock retention given to its objects (`[tiers]
    /// immaculate-retain`), when configured.
    pub retention: Option<crate::object_lock::Protected>,
    /// In a local repository: its pack files and snapshot file made
    /// read-only.
    pub read_only: Option<crate::read_only::LocalProtected>,
    /// Why its files could not be made read-only, when they could not (the
    /// set stands; `immaculate protect` retries).
    pub protect_warning: Option<String>,
}

/// Makes `sacred/NAME` from an existing set (`from`) or a new backup, then
/// tags the recorded commit. Refused (nothing changed) when the name or the
/// tag is taken, or the commit is unknown to the configured git repository.
/// If tagging fails, the new sacred snapshot is deleted again.
pub fn pin<P: ProgressBars>(
    cfg: &Config,
    env: &Env,
    name: &str,
    from: Option<&str>,
    observer: Option<Arc<dyn Observer>>,
    progress: P,
) -> Result<Pinned> {
    crate::config::validate_name(name).map_err(|m| Error::Usage(format!("sacred name: {m}")))?;
    // The set's name and the git tag are the same.
    let full = format!("sacred/{name}");
    let stack = cfg.stack.name.0.clone();
    let _lock = RepoLock::acquire(cfg, env, Mode::Shared, "stack-backup sacred")?;
    // A retention that cannot be applied is refused before anything is
    // written.
    drop(crate::object_lock::policy(cfg)?);
    let repo = repository::open_from(cfg, env)?;
    let existing = sets::list(&repo, &stack)?;
    if existing.iter().any(|(b, _)| b.name == full) {
        return Err(Error::Refused(format!(
            "a sacred set `{full}` already exists; sacred sets are never replaced"
        )));
    }
    let git_dir: Option<PathBuf> = cfg.git.as_ref().map(|g| g.path.clone());
    if let Some(dir) = &git_dir {
        if let Some(at) = git::tag_target(dir, &full)? {
            return Err(Error::Refused(format!(
                "the git tag `{full}` already exists (at {at}) in {}; choose another name",
                dir.display()
            )));
        }
    }
    let location = Location::of(cfg).to_string();
    let repo_err = |what: &str, e: Box<rustic_core::RusticError>| Error::Repository {
        location: location.clone(),
        message: format!("{what}: {}", e.display_log()),
    };

    let (set, from_name) = match from {
        Some(f) => {
            let (orig, snap) = sets::find(&repo, &stack, f)?;
            if let (Some(dir), Some(c)) = (&git_dir, &orig.git_commit) {
                if !git::has_commit(dir, c) {
                    return Err(Error::Refused(format!(
                        "backup set `{}` was taken at git commit {c}, which {} does not have; fetch it first",
                        orig.name,
                        dir.display()
                    )));
                }
            }
            let mut pinned = snap.clone();
            pinned.tags = SetTags::set(&stack, Tier::Sacred, &full).to_list();
            let mut summary: Summary = orig.summary.clone();
            summary.pinned_from = Some(orig.name.clone());
            summary.verified = None;
            pinned.description = Some(serde_json::to_string(&summary).unwrap_or_default());
            pinned.delete = rustic_core::repofile::DeleteOption::Never;
            pinned.label = full.clone();
            repo.save_snapshots(vec![pinned])
                .map_err(|e| repo_err("saving the sacred set", e))?;
            let (set, _) = sets::find(&repo, &stack, &full)?;
            (set, Some(orig.name))
        }
        None => {
            drop(repo);
            let r = backup::run_locked(
                cfg,
                env,
                &Request {
                    name: Some(full.clone()),
                    tier: Tier::Sacred,
                    include_redis: false,
                    only: Vec::new(),
                    databases_only: false,
                    skip_missing: false,
                    hold: false,
                },
                observer,
                progress,
            )?;
            (r.set, None)
        }
    };

    let (git_tag, note) = match (&git_dir, &set.git_commit) {
        (Some(dir), Some(commit)) => {
            let message = format!(
                "stack-backup sacred set {full} of stack {stack} (snapshot {})",
                set.short_id()
            );
            if let Err(e) = git::create_tag(dir, &full, commit, &message) {
                let repo = repository::open_from(cfg, env)?;
                if let Ok(snap) = repo.get_snapshot_from_str(&set.id, |_| true) {
                    if let Err(d) = repo.delete_snapshots(&[snap.id]) {
                        log::error!(
                            "could not remove the untagged sacred set: {}",
                            d.display_log()
                        );
                    }
                }
                return Err(Error::component(
                    "git",
                    format!(
                        "creating the tag {full} failed, so the sacred set was removed again: {e}"
                    ),
                ));
            }
            (Some(full.clone()), None)
        }
        (None, _) => (
            None,
            Some("no [git] in the config: no git tag created".to_string()),
        ),
        (Some(_), None) => (
            None,
            Some("the set recorded no git commit: no git tag created".to_string()),
        ),
    };
    let local = matches!(Location::of(cfg), Location::Local(_));
    let (retention, (read_only, protect_warning)) =
        if cfg.tiers.immaculate_retain.is_some() || local {
            let repo = repository::open_indexed(cfg, env)?;
            let snap = repo
                .get_snapshot_from_str(&set.id, |_| true)
                .map_err(|e| repo_err("reading back the sacred set", e))?;
            (
                crate::object_lock::protect(cfg, &repo, &snap)?,
                crate::immutability::protect_new(cfg, &repo, &snap),
            )
        } else {
            (None, (None, None))
        };
    Ok(Pinned {
        set,
        from: from_name,
        git_tag,
        note,
        retention,
        read_only,
        protect_warning,
    })
}
