//! `restore`: the safety chain.
//!
//! ```text
//! Preflight (privileges, disk) → Backup verify → Migration check → Pre-restore snapshot
//!   → Restore → Redis flush (if asked) → Post-restore verify
//! ```
//!
//! Each step must pass before the next starts. Nothing in the stack is
//! changed before step 5 (step 4 may end database sessions that block
//! reading a database about to be replaced). Every component is restored
//! through its kind's [`Restorer`]: databases, volumes and paths *beside*
//! the live ones (a temporary database, a staging directory) and swapped
//! in, a Redis database through a scratch database and `SWAPDB`; the
//! originals are kept until the post-restore verify passed, so a failure
//! puts them back exactly (images are re-tagged to their old IDs). A
//! database whose role may not create one is restored in place in one
//! transaction, and put back from the pre-restore set. See
//! `docs/decisions/0004-restore-beside-then-swap.md` and `0011`.
//!
//! [`execute`] runs the [`Plan`] the user was shown: the set is pinned by
//! its snapshot id, and a set taken after the plan (a newer `latest`) is
//! never restored in its place.

mod plan;

use std::collections::BTreeMap;
use std::sync::Mutex;

use rustic_core::repofile::Node;
use serde::Serialize;

pub use plan::{plan, Plan, Target};

use crate::components::restoring::{Applied, Lane, PreRestore, SetContext, Stage, UndoContext};
use crate::components::{Restorer, Stack};
use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::lock::{Mode, RepoLock};
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet};
use crate::tiers::Tier;

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Set name, id prefix or `latest`.
    pub name: String,
    /// Only these components.
    pub only: Vec<String>,
    /// Flush Redis instances with role `cache` instead of restoring them.
    pub flush_redis: bool,
    /// Show the plan, verify, and change nothing.
    pub dry_run: bool,
    /// Restore even when the migration state does not fit the code.
    pub allow_migration_mismatch: bool,
    /// Roles created because the dump needs them get their password hash
    /// from the set (default: created without a password).
    pub restore_role_passwords: bool,
}

/// A step of the chain as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Started.
    Running,
    /// Passed.
    Ok,
    /// Not needed, or not run (dry run).
    Skipped,
    /// Failed.
    Failed,
}

/// Receives the chain's progress.
pub trait Steps {
    /// Step `n` (1-based) named `name` is in `state`.
    fn step(&self, n: usize, name: &str, state: StepState, detail: &str);
}

/// The step names, in order.
pub const STEPS: [&str; 7] = [
    "Preflight",
    "Backup verify",
    "Migration check",
    "Pre-restore snapshot",
    "Restore",
    "Redis flush",
    "Post-restore verify",
];

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The set restored.
    pub set: BackupSet,
    /// The pre-restore set taken, if any.
    pub pre_restore: Option<String>,
    /// Components restored.
    pub restored: Vec<String>,
    /// True for a dry run.
    pub dry_run: bool,
}

/// Runs one step of the chain, reporting it.
fn step(steps: &dyn Steps, n: usize, f: impl FnOnce() -> Result<String>) -> Result<()> {
    steps.step(n, STEPS[n - 1], StepState::Running, "");
    match f() {
        Ok(detail) => {
            steps.step(n, STEPS[n - 1], StepState::Ok, &detail);
            Ok(())
        }
        Err(e) => {
            steps.step(n, STEPS[n - 1], StepState::Failed, &e.to_string());
            Err(e)
        }
    }
}

/// Runs the chain on `plan`. The caller has shown the plan and obtained
/// consent. Takes the repository lock; the set must still be there (it is
/// found again by its snapshot id, never by name).
pub fn execute(cfg: &Config, env: &Env, plan: Plan, steps: &dyn Steps) -> Result<Outcome> {
    let _lock = RepoLock::acquire(cfg, env, Mode::Shared, "stack-backup restore")?;
    pinned(cfg, &plan)?;
    let set = SetContext::new(&plan.repo, cfg, &plan.snap, &plan.manifest, &plan.checksums);
    let req = &plan.request;
    step(steps, 1, || preflight(cfg, &set, &plan.restorers))?;
    step(steps, 2, || verify(&set, &plan.restorers))?;
    step(steps, 3, || {
        migration_check(&set, &plan.restorers, req.allow_migration_mismatch)
    })?;
    if req.dry_run {
        for n in 4..=7 {
            steps.step(
                n,
                STEPS[n - 1],
                StepState::Skipped,
                "dry run: nothing changed",
            );
        }
        return Ok(Outcome {
            set: plan.set.clone(),
            pre_restore: None,
            restored: Vec::new(),
            dry_run: true,
        });
    }
    let mut pre_name = None;
    step(steps, 4, || {
        let (detail, name) = pre_restore_snapshot(cfg, env, &plan.restorers)?;
        pre_name = name;
        Ok(detail)
    })?;
    let load_pre = || load_pre_restore(cfg, env, pre_name.as_deref());
    let undo = UndoContext::new(cfg, &load_pre);
    apply(&set, &plan.restorers, steps, &undo, pre_name.as_deref())?;
    Ok(Outcome {
        set: plan.set.clone(),
        pre_restore: pre_name.clone(),
        restored: plan.components.clone(),
        dry_run: false,
    })
}

/// The planned set is still in the repository, unchanged (a prune or
/// `forget` may have run between the plan and the lock).
fn pinned(cfg: &Config, plan: &Plan) -> Result<()> {
    let sets = sets::list(&plan.repo, &cfg.stack.name.0)?;
    if sets
        .iter()
        .any(|(b, s)| s.id == plan.snap.id && b == &plan.set)
    {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "backup set `{}` ({}) is no longer in the repository as planned; nothing was changed",
        plan.set.name,
        plan.set.short_id()
    )))
}

/// Steps 5 to 7, and what follows: on success the kept originals are
/// dropped, on failure every change is undone in reverse order.
fn apply(
    set: &SetContext,
    restorers: &[Box<dyn Restorer>],
    steps: &dyn Steps,
    undo: &UndoContext,
    pre_name: Option<&str>,
) -> Result<()> {
    let mut done: Vec<Box<dyn Applied>> = Vec::new();
    let result = (|| -> Result<()> {
        step(steps, 5, || {
            let wanted: Vec<&dyn Restorer> = staged(restorers, Stage::Restore);
            // Keep every change that was applied (to undo it), in plan
            // order; report the first failure.
            let mut first_err = None;
            for r in restore_concurrently(set, &wanted) {
                match r {
                    Ok(a) => done.push(a),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            first_err.map_or_else(|| Ok(format!("{} component(s) restored", done.len())), Err)
        })?;
        let flush = staged(restorers, Stage::Flush);
        if flush.is_empty() {
            steps.step(6, STEPS[5], StepState::Skipped, "not asked (--flush-redis)");
        } else {
            step(steps, 6, || {
                for r in &flush {
                    done.push(r.restore(set)?);
                }
                let ids: Vec<String> = flush.iter().map(|r| r.id().to_string()).collect();
                Ok(format!("flushed {}", ids.join(", ")))
            })?;
        }
        step(steps, 7, || post_verify(set, restorers, &mut done))
    })();
    let Err(e) = result else {
        // Dropping the originals: side by side (a database and a large
        // directory take their time in different places).
        std::thread::scope(|s| {
            for a in done {
                s.spawn(move || a.commit());
            }
        });
        return Ok(());
    };
    let pre = pre_name.unwrap_or_default();
    let rollback_errors: Vec<String> = done
        .into_iter()
        .rev()
        .filter_map(|a| a.undo(undo).err().map(|re| re.to_string()))
        .collect();
    let message = if rollback_errors.is_empty() {
        format!("{e}\nthe restore failed; everything it changed was rolled back to the state before it (pre-restore set `{pre}`)")
    } else {
        format!(
            "{e}\nthe restore failed AND rolling back failed: {}\nrestore the pre-restore set by hand: stack-backup restore {pre}",
            rollback_errors.join("; ")
        )
    };
    Err(match e {
        Error::LockTimeout(_) => Error::LockTimeout(message),
        _ => Error::component("restore", message),
    })
}

fn staged(restorers: &[Box<dyn Restorer>], stage: Stage) -> Vec<&dyn Restorer> {
    restorers
        .iter()
        .filter(|r| r.stage() == stage)
        .map(AsRef::as_ref)
        .collect()
}

/// Restores `wanted`, one thread per [`Lane`]. Every component runs to its
/// end even when another failed, so that the caller knows exactly what was
/// applied; results are in the order of `wanted`.
/// A component's restore: the change applied, or why it failed.
type Restored = Result<Box<dyn Applied>>;

fn restore_concurrently(set: &SetContext, wanted: &[&dyn Restorer]) -> Vec<Restored> {
    let mut lanes: BTreeMap<Lane, Vec<usize>> = BTreeMap::new();
    for (i, r) in wanted.iter().enumerate() {
        lanes.entry(r.lane()).or_default().push(i);
    }
    let slots: Vec<Mutex<Option<Restored>>> = wanted.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for members in lanes.values() {
            let slots = &slots;
            s.spawn(move || {
                for &i in members {
                    let r = wanted[i];
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.restore(set)))
                            .unwrap_or_else(|_| {
                                Err(Error::component(r.id().as_str(), "restoring it panicked"))
                            });
                    *slots[i].lock().expect("slot") = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .expect("slot")
                .expect("every component was restored")
        })
        .collect()
}

/// Step 1: every restorer can restore its target with the credentials at
/// hand (a missing privilege is named here, before anything changed), and
/// there is free space on every filesystem the restore writes to.
fn preflight(cfg: &Config, set: &SetContext, restorers: &[Box<dyn Restorer>]) -> Result<String> {
    let mut lines = Vec::new();
    for r in restorers {
        if let Some(line) = r.preflight(set)? {
            lines.push(line);
        }
    }
    lines.push(disk_check(cfg, set, restorers)?);
    Ok(lines.join("; "))
}

/// Free space on every filesystem the restore writes to.
fn disk_check(cfg: &Config, set: &SetContext, restorers: &[Box<dyn Restorer>]) -> Result<String> {
    let mut needs: BTreeMap<std::path::PathBuf, u64> = BTreeMap::new();
    for r in restorers
        .iter()
        .filter(|r| set.manifest.components.contains_key(r.id()))
    {
        for (path, bytes) in r.disk_needs(set)? {
            *needs.entry(path).or_default() += bytes;
        }
    }
    if let Location::Local(p) = Location::of(cfg) {
        needs.entry(p).or_default();
    } else if let Some(c) = repository::cache_dir(cfg) {
        needs.entry(c).or_default();
    }
    needs.entry(std::env::temp_dir()).or_default();
    let mut parts = Vec::new();
    for (path, need) in &needs {
        let s = crate::disk::ensure(path, *need, cfg.min_free_space())?;
        parts.push(format!(
            "{} needs {}, {} free",
            path.display(),
            crate::disk::human(*need),
            crate::disk::human(s.available)
        ));
    }
    Ok(parts.join("; "))
}

/// Step 2: every file of the restored components read back from the
/// repository and hashed (two threads, see [`crate::verify::hash_nodes`]);
/// the first mismatch in plan order is the error.
fn verify(set: &SetContext, restorers: &[Box<dyn Restorer>]) -> Result<String> {
    let mut work: Vec<(String, String, Node, String)> = Vec::new();
    for r in restorers
        .iter()
        .filter(|r| set.manifest.components.contains_key(r.id()))
    {
        let c = r.id();
        for (path, node) in set.files(c)? {
            let want = set.checksums.get(&path).ok_or_else(|| {
                Error::Verification(format!("{c}: {path} has no checksum in CHECKSUM.sha256"))
            })?;
            work.push((c.to_string(), path, node, want.clone()));
        }
    }
    let nodes: Vec<&Node> = work.iter().map(|w| &w.2).collect();
    let mut bytes = 0u64;
    for ((c, path, _, want), hash) in work
        .iter()
        .zip(crate::verify::hash_nodes(set.repo, &nodes, true))
    {
        match hash {
            None => {} // not read: another file failed first
            Some(Err(e)) => {
                return Err(Error::Verification(format!(
                    "{c}: reading {path} failed: {e}"
                )))
            }
            Some(Ok((got, _))) if &got != want => {
                return Err(Error::Verification(format!(
                    "{c}: {path} does not match its checksum (expected {want}, read {got}); nothing was changed"
                )))
            }
            Some(Ok((_, n))) => bytes += n,
        }
    }
    Ok(format!(
        "{} file(s), {} read back, every SHA-256 matches",
        work.len(),
        crate::disk::human(bytes)
    ))
}

/// Step 3: every component's migration report; a problem refuses the
/// restore unless allowed.
fn migration_check(
    set: &SetContext,
    restorers: &[Box<dyn Restorer>],
    allow: bool,
) -> Result<String> {
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    for r in restorers {
        let report = r.migration_check(set);
        notes.extend(report.notes);
        problems.extend(report.problems);
    }
    if !problems.is_empty() && !allow {
        return Err(Error::Refused(format!(
            "migration mismatch:\n  {}",
            problems.join("\n  ")
        )));
    }
    if !problems.is_empty() {
        notes.push(format!(
            "mismatch allowed (--allow-migration-mismatch): {}",
            problems.join("; ")
        ));
    }
    Ok(if notes.is_empty() {
        "no migration state recorded".into()
    } else {
        notes.join("; ")
    })
}

/// Step 4: a set of what will be replaced, as it is now (what does not
/// exist is left out). Returns the step's detail and the set's name.
fn pre_restore_snapshot(
    cfg: &Config,
    env: &Env,
    restorers: &[Box<dyn Restorer>],
) -> Result<(String, Option<String>)> {
    let nothing = || Ok(("nothing that will be replaced exists yet".into(), None));
    let present = Stack::resolve(cfg)?.components();
    let only: Vec<String> = staged(restorers, Stage::Restore)
        .iter()
        .filter(|r| present.contains(r.id()))
        .map(|r| r.id().to_string())
        .collect();
    if only.is_empty() {
        return nothing();
    }
    let report = crate::backup::run_locked(
        cfg,
        env,
        &crate::backup::Request {
            name: Some(format!("pre-restore-{}", crate::backup::generated_name())),
            tier: Tier::PreRestore,
            include_redis: true,
            only,
            databases_only: false,
            skip_missing: true,
            hold: false,
        },
        None,
        rustic_core::NoProgressBars,
    );
    match report {
        Ok(report) => Ok((
            format!("set `{}` ({})", report.set.name, report.set.short_id()),
            Some(report.set.name),
        )),
        Err(Error::NothingToBackUp(_)) => nothing(),
        Err(e) => Err(e),
    }
}

/// Step 7: every restorer's check; then what was paused for the restore
/// runs again (containers stopped for a volume); then the configured
/// health checks, which so see the stack as it will be left.
fn post_verify(
    set: &SetContext,
    restorers: &[Box<dyn Restorer>],
    done: &mut [Box<dyn Applied>],
) -> Result<String> {
    let mut checked = Vec::new();
    for r in restorers {
        if let Some(line) = r.post_check(set)? {
            checked.push(line);
        }
    }
    for a in done.iter_mut() {
        a.resume()?;
    }
    for h in &set.cfg.health {
        checked.push(crate::health::run(set.cfg, h)?);
    }
    Ok(if checked.is_empty() {
        "nothing to check".into()
    } else {
        checked.join("; ")
    })
}

/// The pre-restore set, read for an undo (its index is loaded anew: the
/// set was written after the plan's index was).
fn load_pre_restore(cfg: &Config, env: &Env, name: Option<&str>) -> Result<Option<PreRestore>> {
    let Some(name) = name else {
        return Ok(None);
    };
    let repo = repository::open_indexed(cfg, env)?;
    let (set, snap) = sets::find(&repo, &cfg.stack.name.0, name)?;
    let (manifest, checksums) = plan::read_set(&repo, &set, &snap)?;
    Ok(Some(PreRestore {
        repo,
        snap,
        manifest,
        checksums,
    }))
}
