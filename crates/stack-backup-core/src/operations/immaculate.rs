//! Immaculate baselines: backup sets that are read back in full before they
//! become immaculate, and are never modified or pruned afterwards.
//!
//! `create` writes the set tagged [`crate::tags::UNVERIFIED`] (not a backup set
//! yet), reads every tree, blob and SHA-256 back ([`verify::verify_set`]) and
//! only then saves the same tree as a snapshot tagged `tier:immaculate` and
//! deletes the unverified one. A failed read-back deletes it: no immaculate
//! exists afterwards. A run killed half-way leaves only an unverified
//! snapshot, which the next backup removes.
//!
//! The result of later `immaculate verify` runs is kept on this machine
//! (`verifications.json` in the state directory, see [`state_dir`]): an
//! immaculate set itself is never rewritten. See
//! `docs/decisions/0005-immaculate-verification.md`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustic_core::repofile::SnapshotFile;
use rustic_core::ProgressBars;
use serde::{Deserialize, Serialize};

use crate::backup::{self, Request};
use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::ledger::Observer;
use crate::lock::{Mode, RepoLock};
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet, Summary};
use crate::tags::SetTags;
use crate::tiers::Tier;
use crate::verify::{self, SetReport};

/// One recorded verification of a set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verification {
    /// When (RFC 3339).
    pub time: String,
    /// Whether every blob and checksum was right.
    pub ok: bool,
    /// Files read.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The first problems, when not ok.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl Verification {
    fn of(r: &SetReport) -> Self {
        Self {
            time: jiff::Timestamp::now().to_string(),
            ok: r.ok(),
            files: r.files,
            bytes: r.bytes,
            problems: r.problems.clone(),
        }
    }
}

/// The directory for state kept on this machine: the one that holds the
/// process lock and restore journals ([`crate::system::state::of`]: owned by
/// us or root, writable by no one else).
pub fn state_dir(cfg: &Config) -> Result<PathBuf> {
    crate::system::state::of(cfg)
}

fn state_file(cfg: &Config) -> Result<PathBuf> {
    Ok(state_dir(cfg)?.join("verifications.json"))
}

/// Recorded verifications by snapshot id (empty when there is no file).
#[must_use]
pub fn recorded(cfg: &Config) -> BTreeMap<String, Verification> {
    state_file(cfg)
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records a verification (atomically: written beside, then renamed, in
/// the checked state directory, which no other user can write). A failure
/// to record is logged, not fatal: the verification itself stands.
fn record(cfg: &Config, id: &str, v: &Verification) {
    let mut all = recorded(cfg);
    all.insert(id.to_string(), v.clone());
    let res = state_file(cfg).and_then(|path| {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&all).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io("writing", &path, e))
    });
    if let Err(e) = res {
        log::warn!("could not record the verification: {e}");
    }
}

/// An immaculate set with its last verification.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// The set.
    pub set: BackupSet,
    /// The newest verification known here (at creation, or a later
    /// `immaculate verify` on this machine).
    pub last_verification: Option<Verification>,
}

/// Every immaculate set of the stack, oldest first.
pub fn list(cfg: &Config, env: &Env) -> Result<Vec<Baseline>> {
    let repo = repository::open_from(cfg, env)?;
    let rec = recorded(cfg);
    Ok(sets::list(&repo, &cfg.stack.name.0)?
        .into_iter()
        .filter(|(b, _)| b.tier == Tier::Immaculate)
        .map(|(set, _)| {
            let at_creation = set.summary.verified.clone().map(|time| Verification {
                time,
                ok: true,
                files: 0,
                bytes: 0,
                problems: Vec::new(),
            });
            let later = rec.get(&set.id).cloned();
            let last = match (at_creation, later) {
                (Some(a), Some(b)) => Some(if b.time >= a.time { b } else { a }),
                (a, b) => b.or(a),
            };
            Baseline {
                set,
                last_verification: last,
            }
        })
        .collect())
}

/// The newest immaculate set, or the one named (by name or id prefix).
pub fn find(cfg: &Config, env: &Env, name: Option<&str>) -> Result<BackupSet> {
    let repo = repository::open_from(cfg, env)?;
    let stack = &cfg.stack.name.0;
    match name {
        Some(n) => {
            let (b, _) = sets::find(&repo, stack, n)?;
            if b.tier != Tier::Immaculate {
                return Err(Error::Refused(format!(
                    "backup set `{}` is in tier {}, not an immaculate baseline",
                    b.name, b.tier
                )));
            }
            Ok(b)
        }
        None => sets::list(&repo, stack)?
            .into_iter()
            .rev()
            .map(|(b, _)| b)
            .find(|b| b.tier == Tier::Immaculate)
            .ok_or_else(|| {
                Error::Refused(
                    "there is no immaculate baseline; create one with `stack-backup immaculate create`"
                        .into(),
                )
            }),
    }
}

/// What `create` did.
#[derive(Debug)]
pub struct Created {
    /// The backup (its `set` is the final, immaculate set).
    pub backup: backup::Report,
    /// The read-back.
    pub verification: SetReport,
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

/// Takes a new backup set and makes it immaculate once it has been read back
/// in full. Holds the repository lock throughout. On a failed read-back the
/// set is deleted and the error is a verification failure.
pub fn create<P: ProgressBars>(
    cfg: &Config,
    env: &Env,
    name: Option<String>,
    include_redis: bool,
    observer: Option<Arc<dyn Observer>>,
    progress: P,
) -> Result<Created> {
    let _lock = RepoLock::acquire(cfg, env, Mode::Shared, "stack-backup immaculate create")?;
    // A retention that cannot be applied is refused before the backup.
    drop(crate::object_lock::policy(cfg)?);
    let mut report = backup::run_locked(
        cfg,
        env,
        &Request {
            name,
            tier: Tier::Immaculate,
            include_redis,
            only: Vec::new(),
            databases_only: false,
            skip_missing: false,
            hold: true,
        },
        observer,
        progress,
    )?;
    let repo = repository::open_indexed(cfg, env)?;
    let location = Location::of(cfg).to_string();
    let repo_err = |what: &str, e: Box<rustic_core::RusticError>| Error::Repository {
        location: location.clone(),
        message: format!("{what}: {}", e.display_log()),
    };
    let held = repo
        .get_snapshot_from_str(&report.set.id, |_| true)
        .map_err(|e| repo_err("reading back the new set", e))?;
    let check = verify::verify_set(&repo, &report.set, &held);
    if !check.ok() {
        if let Err(e) = repo.delete_snapshots(&[held.id]) {
            log::error!(
                "could not delete the unverified set (the next backup removes it): {}",
                e.display_log()
            );
        }
        return Err(Error::Verification(format!(
            "the new set did not read back intact, so no immaculate baseline was created ({} problem(s)): {}",
            check.problem_count,
            check.problems.join("; ")
        )));
    }
    // Promote: the same tree, without the unverified tag, with the time of
    // the verification in its description.
    let mut promoted = held.clone();
    let tags = SetTags::of(&held).ok_or_else(|| Error::Repository {
        location: location.clone(),
        message: "the held set lost its tags".into(),
    })?;
    promoted.tags = tags.verified(true).to_list();
    let mut summary: Summary = report.set.summary.clone();
    summary.verified = Some(jiff::Timestamp::now().to_string());
    promoted.description = Some(serde_json::to_string(&summary).unwrap_or_default());
    repo.save_snapshots(vec![promoted])
        .map_err(|e| repo_err("saving the immaculate set", e))?;
    repo.delete_snapshots(&[held.id])
        .map_err(|e| repo_err("removing the unverified set", e))?;
    let (set, snap) = sets::find(&repo, &cfg.stack.name.0, &report.set.name)?;
    record(cfg, &set.id, &Verification::of(&check));
    report.set = set;
    let retention = crate::object_lock::protect(cfg, &repo, &snap)?;
    let (read_only, protect_warning) = crate::immutability::protect_new(cfg, &repo, &snap);
    Ok(Created {
        backup: report,
        verification: check,
        retention,
        read_only,
        protect_warning,
    })
}

/// Reads immaculate sets back in full (the named one, or all), records each
/// result on this machine and returns the reports. Holds the lock.
pub fn verify(cfg: &Config, env: &Env, name: Option<&str>) -> Result<Vec<SetReport>> {
    let _lock = RepoLock::acquire(cfg, env, Mode::Shared, "stack-backup immaculate verify")?;
    let repo = repository::open_indexed(cfg, env)?;
    let stack = &cfg.stack.name.0;
    let chosen: Vec<(BackupSet, SnapshotFile)> = match name {
        Some(n) => {
            let (b, s) = sets::find(&repo, stack, n)?;
            if b.tier != Tier::Immaculate {
                return Err(Error::Refused(format!(
                    "backup set `{}` is in tier {}, not immaculate; use `stack-backup verify {}`",
                    b.name, b.tier, b.name
                )));
            }
            vec![(b, s)]
        }
        None => sets::list(&repo, stack)?
            .into_iter()
            .filter(|(b, _)| b.tier == Tier::Immaculate)
            .collect(),
    };
    if chosen.is_empty() {
        return Err(Error::NotFound("an immaculate baseline".into()));
    }
    let mut out = Vec::new();
    for (b, s) in chosen {
        let r = verify::verify_set(&repo, &b, &s);
        record(cfg, &b.id, &Verification::of(&r));
        // A baseline read back intact keeps its Object Lock retention
        // ahead of it (a third of `immaculate-retain` left, or none).
        if r.ok() {
            if let Some(p) = crate::object_lock::extend_if_due(cfg, &repo, &s)? {
                log::warn!(
                    "Object Lock retention of `{}` extended: {} object(s) retained in {} mode until {}",
                    b.name,
                    p.objects,
                    p.mode,
                    p.until
                );
            }
        }
        out.push(r);
    }
    Ok(out)
}
