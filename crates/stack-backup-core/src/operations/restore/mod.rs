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
//!
//! From step 5 on, every change is recorded first in the restore
//! [`journal`] (fsynced), so that a run killed at any moment is resolved by
//! the next one: [`resolve`] rolls it back (`restore --abort`) or finishes
//! it (`restore --resume`), and nothing else restores while it is open.
//! See `docs/decisions/0013-journaled-restore.md`.

pub mod journal;
mod plan;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use rustic_core::repofile::Node;
use serde::Serialize;

pub(crate) use plan::read_set;
pub use plan::{plan, Plan, Target};

use crate::components::restoring::{
    Applied, Lane, PreRestore, Recover, SetContext, Stage, UndoContext,
};
use crate::components::{ComponentId, Restorer, Stack};
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
    let result = f();
    crate::system::memory::give_back();
    match result {
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
    journal::refuse_if_open(cfg)?;
    if !plan.request.dry_run {
        journal::ensure_state_dir(cfg)?;
    }
    pinned(cfg, &plan)?;
    let Plan {
        set: planned,
        snap,
        manifest,
        checksums,
        restorers,
        repo,
        request: req,
        components,
        ..
    } = plan;
    let set = SetContext::new(&repo, cfg, &snap, &manifest, &checksums);
    step(steps, 1, || preflight(cfg, &set, &restorers))?;
    step(steps, 2, || verify(&set, &restorers))?;
    step(steps, 3, || {
        migration_check(&set, &restorers, req.allow_migration_mismatch)
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
            set: planned,
            pre_restore: None,
            restored: Vec::new(),
            dry_run: true,
        });
    }
    // The index goes while the pre-restore backup loads its own (a set of
    // 300,000 files has one of about 18 MiB), and is loaded again after
    // it, under the lock, with the pre-restore set in it: steps 5 to 7
    // read through that one.
    drop(set);
    let repo = repo.drop_index();
    let mut pre_name = None;
    step(steps, 4, || {
        let (detail, name) = pre_restore_snapshot(cfg, env, &restorers)?;
        pre_name = name;
        Ok(detail)
    })?;
    let repo = repo.to_indexed().map_err(|e| {
        let kept = pre_name
            .as_deref()
            .map(|p| format!("; the pre-restore set `{p}` was taken and stays"))
            .unwrap_or_default();
        let what = format!("reading the index again (nothing was changed{kept})");
        repository::op_error(cfg, &what, &e)
    })?;
    let set = SetContext::new(&repo, cfg, &snap, &manifest, &checksums);
    // Before anything changes: the journal, with the pre-restore set that
    // an abort may need.
    let jnl = journal::Journal::create(
        cfg,
        &planned.name,
        &snap.id.to_string(),
        journal::Requested {
            only: req.only.clone(),
            flush_redis: req.flush_redis,
            allow_migration_mismatch: req.allow_migration_mismatch,
            restore_role_passwords: req.restore_role_passwords,
        },
        pre_name.clone(),
    )?;
    crate::system::fault::point("restore-journal-written")?;
    let set = set.with_journal(&jnl);
    let load_pre = || load_pre_restore(cfg, env, pre_name.as_deref());
    let undo = UndoContext::new(cfg, &load_pre);
    apply(&set, &restorers, steps, &undo, pre_name.as_deref(), &jnl)?;
    Ok(Outcome {
        set: planned,
        pre_restore: pre_name.clone(),
        restored: components,
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

/// Steps 5 to 7, and what follows: on success the journal goes to
/// `committing` and the kept originals are dropped; on failure every
/// change is undone in reverse order, then whatever the journal still
/// holds (a component that failed half-way) is rolled back from it. The
/// journal is closed only when everything was resolved.
fn apply(
    set: &SetContext,
    restorers: &[Box<dyn Restorer>],
    steps: &dyn Steps,
    undo: &UndoContext,
    pre_name: Option<&str>,
    jnl: &journal::Journal,
) -> Result<()> {
    let mut done: Vec<(ComponentId, Box<dyn Applied>)> = Vec::new();
    let result = (|| -> Result<()> {
        step(steps, 5, || {
            let wanted: Vec<&dyn Restorer> = staged(restorers, Stage::Restore);
            // Keep every change that was applied (to undo it), in plan
            // order; report the first failure.
            let mut first_err = None;
            for (r, w) in restore_concurrently(set, &wanted).into_iter().zip(&wanted) {
                match r {
                    Ok(a) => done.push((w.id().clone(), a)),
                    Err(e) => {
                        // Its entry stays: an error can come after the
                        // change (a swap whose reply was lost, an in-place
                        // restore that committed before a later statement
                        // failed), and the rollback below resolves the
                        // entry from what it observes, as after a crash.
                        first_err.get_or_insert(e);
                    }
                }
            }
            first_err.map_or_else(|| Ok(format!("{} component(s) restored", done.len())), Err)
        })?;
        crate::system::fault::point("restore-applied")?;
        let flush = staged(restorers, Stage::Flush);
        if flush.is_empty() {
            steps.step(6, STEPS[5], StepState::Skipped, "not asked (--flush-redis)");
        } else {
            step(steps, 6, || {
                for r in &flush {
                    done.push((r.id().clone(), r.restore(set)?));
                }
                let ids: Vec<String> = flush.iter().map(|r| r.id().to_string()).collect();
                Ok(format!("flushed {}", ids.join(", ")))
            })?;
        }
        step(steps, 7, || post_verify(set, restorers, &mut done))?;
        crate::system::fault::point("restore-verified")
    })();
    let Err(e) = result else {
        jnl.set_phase(journal::Phase::Committing)?;
        crate::system::fault::point("restore-committing")?;
        // Dropping the originals: side by side (a database and a large
        // directory take their time in different places).
        std::thread::scope(|s| {
            for (_, a) in done {
                s.spawn(move || a.commit());
            }
        });
        crate::system::fault::point("restore-committed")?;
        // Whatever a commit left (it only logs) is dropped from the
        // journal's entries, which also says whether anything remains.
        let errors = sweep(jnl, Recover::Finish, undo);
        if !errors.is_empty() {
            return Err(Error::component(
                "restore",
                format!(
                    "the restore succeeded, but dropping the kept originals failed: {}\nrun `stack-backup restore --resume` to finish",
                    errors.join("; ")
                ),
            ));
        }
        return jnl.close();
    };
    let pre = pre_name.unwrap_or_default();
    let mut rollback_errors: Vec<String> = Vec::new();
    for (id, a) in done.into_iter().rev() {
        match a.undo(undo) {
            Ok(()) => {
                if let Err(je) = jnl.forget(id.as_str()) {
                    rollback_errors.push(je.to_string());
                }
            }
            Err(re) => rollback_errors.push(re.to_string()),
        }
    }
    if rollback_errors.is_empty() {
        rollback_errors = sweep(jnl, Recover::Abort, undo);
    }
    let message = if rollback_errors.is_empty() {
        match jnl.close() {
            Ok(()) => format!("{e}\nthe restore failed; everything it changed was rolled back to the state before it (pre-restore set `{pre}`)"),
            Err(ce) => format!("{e}\nthe restore failed and was rolled back, but its journal could not be closed: {ce}"),
        }
    } else {
        format!(
            "{e}\nthe restore failed AND rolling back failed: {}\nrun `stack-backup restore --abort` to roll back again, or restore the pre-restore set by hand: stack-backup restore {pre}",
            rollback_errors.join("; ")
        )
    };
    Err(match e {
        Error::LockTimeout(_) => Error::LockTimeout(message),
        _ => Error::component("restore", message),
    })
}

/// Resolves every entry of the journal `to` one side, in reverse order of
/// component id (entries are independent of each other: each is decided
/// by what is observed of its own target); returns the errors (the
/// journal is left as it is).
fn sweep(jnl: &journal::Journal, to: Recover, undo: &UndoContext) -> Vec<String> {
    let mut errors = Vec::new();
    for (id, entry) in jnl.record().components.iter().rev() {
        let resolved = ComponentId::parse(id)
            .map_err(|e| Error::component(id.as_str(), e.to_string()))
            .and_then(|cid| entry.recover(&cid, to, undo));
        match resolved {
            Ok(line) => log::info!("{line}"),
            Err(e) => errors.push(format!("{id}: {e}")),
        }
    }
    errors
}

/// How an interrupted restore is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolve {
    /// Every component back to its original (`restore --abort`).
    Abort,
    /// To the set's state (`restore --resume`): a restore that had passed
    /// its checks drops the originals; one that had not is rolled back and
    /// the set restored again (see [`Resolution::restore_again`]).
    Resume,
}

/// What resolving an interrupted restore did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The journal found (none: nothing to resolve).
    pub journal: Option<journal::Record>,
    /// One line per component.
    pub actions: Vec<String>,
    /// For a resume that rolled back: the set to restore again, as a
    /// request (by snapshot id) for [`plan`] and [`execute`].
    pub restore_again: Option<RequestSummary>,
}

/// A request, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    /// The set, by snapshot id.
    pub snapshot: String,
    /// Its name.
    pub set: String,
    /// `--only`.
    pub only: Vec<String>,
    #[serde(skip)]
    request: Option<Request>,
}

impl RequestSummary {
    /// The request to run.
    #[must_use]
    pub fn request(&self) -> Request {
        self.request.clone().unwrap_or_default()
    }
}

/// Resolves the interrupted restore of `cfg`'s stack, if there is one:
/// every component from its journal entry and what is observed now.
/// Idempotent: a run killed during it is resolved by the next. Takes the
/// repository lock. With `dry_run`, says what it would do and changes
/// nothing.
pub fn resolve(cfg: &Config, env: &Env, how: Resolve, dry_run: bool) -> Result<Resolution> {
    let _lock = RepoLock::acquire(
        cfg,
        env,
        Mode::Shared,
        "stack-backup restore --resume/--abort",
    )?;
    if !dry_run {
        journal::remove_stale_temporaries(cfg);
    }
    let Some(jnl) = journal::Journal::reopen(cfg)? else {
        return Ok(Resolution {
            journal: None,
            actions: Vec::new(),
            restore_again: None,
        });
    };
    let rec = jnl.record();
    let to = if rec.phase == journal::Phase::Committing {
        Recover::Finish
    } else {
        Recover::Abort
    };
    let again = (how == Resolve::Resume && to == Recover::Abort).then(|| RequestSummary {
        snapshot: rec.snapshot.clone(),
        set: rec.set.clone(),
        only: rec.request.only.clone(),
        request: Some(Request {
            name: rec.snapshot.clone(),
            only: rec.request.only.clone(),
            flush_redis: rec.request.flush_redis,
            dry_run,
            allow_migration_mismatch: rec.request.allow_migration_mismatch,
            restore_role_passwords: rec.request.restore_role_passwords,
        }),
    });
    if dry_run {
        return Ok(Resolution {
            actions: rec
                .components
                .iter()
                .rev()
                .map(|(id, e)| format!("{id}: {}", e.describe(to)))
                .collect(),
            journal: Some(rec),
            restore_again: again,
        });
    }
    let load_pre = || load_pre_restore(cfg, env, rec.pre_restore.as_deref());
    let undo = UndoContext::new(cfg, &load_pre);
    let mut actions = Vec::new();
    let mut errors = Vec::new();
    for (id, entry) in rec.components.iter().rev() {
        let resolved = ComponentId::parse(id)
            .map_err(|e| Error::component(id.as_str(), e.to_string()))
            .and_then(|cid| entry.recover(&cid, to, &undo));
        match resolved {
            Ok(line) => actions.push(line),
            Err(e) => errors.push(format!("{id}: {e}")),
        }
        crate::system::fault::point("resolve-component")?;
    }
    if !errors.is_empty() {
        return Err(Error::component(
            "restore",
            format!(
                "resolving the interrupted restore (journal {}) failed: {}; the journal stays open: run the same command again once the cause is fixed",
                rec.id,
                errors.join("; ")
            ),
        ));
    }
    jnl.close()?;
    Ok(Resolution {
        journal: Some(rec),
        actions,
        restore_again: again,
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
    let mut shared = std::collections::BTreeSet::new();
    for r in restorers
        .iter()
        .filter(|r| set.manifest.components.contains_key(r.id()))
    {
        let n = r.disk_needs(set)?;
        if n.is_empty() || r.disk_shared().is_some_and(|k| !shared.insert(k)) {
            continue;
        }
        for (path, bytes) in n {
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
    use crate::verify::{hash_drain, BATCH};
    // A file shared by several components (one `docker save` of several
    // images) is read once, for the first.
    let mut seen: HashSet<String> = HashSet::new();
    let mut batch: Vec<((String, String), Node)> = Vec::new();
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut check = |batch: &mut Vec<((String, String), Node)>| -> Result<()> {
        for ((c, path), hash) in hash_drain(set.repo, batch, true) {
            match hash {
                None => {} // not read: another file failed first
                Some(Err(e)) => {
                    return Err(Error::Verification(format!(
                        "{c}: reading {path} failed: {e}"
                    )))
                }
                Some(Ok((got, _))) if !set.checksums.matches(&path, &got) => {
                    let want = set.checksums.get(&path).unwrap_or_default();
                    return Err(Error::Verification(format!(
                        "{c}: {path} does not match its checksum (expected {want}, read {got}); nothing was changed"
                    )));
                }
                Some(Ok((_, n))) => {
                    files += 1;
                    bytes += n;
                }
            }
        }
        Ok(())
    };
    for r in restorers
        .iter()
        .filter(|r| set.manifest.components.contains_key(r.id()))
    {
        let c = r.id();
        set.for_each_file(c, |path, node| {
            if !seen.insert(path.clone()) {
                return Ok(());
            }
            if !set.checksums.contains_key(&path) {
                return Err(Error::Verification(format!(
                    "{c}: {path} has no checksum in CHECKSUM.sha256"
                )));
            }
            batch.push(((c.to_string(), path), node));
            if batch.len() >= BATCH {
                check(&mut batch)?;
            }
            Ok(())
        })?;
    }
    check(&mut batch)?;
    Ok(format!(
        "{files} file(s), {} read back, every SHA-256 matches",
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
    if let Some(at) = cfg.repository.as_of {
        // The repository is read as it was (decision 0028): nowhere to
        // write the set; the CLI asks for --no-pre-restore to accept this.
        return Ok((
            format!("none: the repository is read-only as of {at}, so what is replaced cannot be undone"),
            None,
        ));
    }
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
            // Generated: two restores in one second (an abort and the
            // next restore) get `…-2` rather than a refusal.
            name: None,
            tier: Tier::PreRestore,
            include_redis: true,
            only: only.clone(),
            databases_only: false,
            skip_missing: true,
            hold: false,
        },
        None,
        rustic_core::NoProgressBars,
    );
    match report {
        Ok(report) => {
            // What is gone (a dropped database, a removed volume) has
            // nothing to keep: said, so that the user knows an undo
            // removes it again rather than bringing anything back.
            let absent: Vec<&str> = only
                .iter()
                .filter(|c| !report.components.iter().any(|r| &&r.component == c))
                .map(String::as_str)
                .collect();
            let mut detail = format!("set `{}` ({})", report.set.name, report.set.short_id());
            if !absent.is_empty() {
                detail.push_str(&format!(
                    "; does not exist, nothing to keep: {}",
                    absent.join(", ")
                ));
            }
            Ok((detail, Some(report.set.name)))
        }
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
    done: &mut [(ComponentId, Box<dyn Applied>)],
) -> Result<String> {
    let mut checked = Vec::new();
    for r in restorers {
        if let Some(line) = r.post_check(set)? {
            checked.push(line);
        }
    }
    for (_, a) in done.iter_mut() {
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
