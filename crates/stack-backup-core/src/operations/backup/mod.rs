//! `backup` and `dump`: one backup set = one snapshot, whole or not at all.
//!
//! A backup runs in phases (see `docs/decisions/0002-backup-set-in-two-steps.md`
//! and `0010-components-and-phases.md`):
//!
//! 1. **plan**: every wanted component plans itself through its kind
//!    ([`crate::components::Kind::plan_backup`]: connect, export a Postgres
//!    snapshot, count rows, BGSAVE, inspect images) while the repository
//!    opens. Nothing is written yet.
//! 2. **prepare**: the set's unique name, the parent set whose unchanged
//!    content is reused unread, the disk check, volume users stopped.
//! 3. **archive**: every artifact into part snapshots tagged
//!    `stack-backup-incomplete` (never listed as a set). Streams go straight
//!    from their process into the repository through a `TrackedReader`.
//! 4. **ledger check**: every artifact read to the end with its producer
//!    exiting 0, or reused unchanged from the parent.
//! 5. **manifest**: the manifest files into one more part.
//! 6. **commit**: the parts' trees checked to hold every artifact, then
//!    merged into the set's snapshot with its tags.
//!
//! The parts are held by [`parts::Parts`], which deletes them on every exit
//! from the run (success, error, panic): no partial snapshot outlives the
//! run unless the process is killed outright, and then the next backup of
//! the stack removes it. Each phase boundary is a fault-injection point for
//! the tests ([`crate::system::fault`]).

mod checksum_file;
mod ledger_check;
mod parts;
mod phases;

use std::sync::Arc;
use std::time::Instant;

use rustic_core::ProgressBars;
use serde::Serialize;

use crate::components::{BackupContext, ComponentId, Planned, Stack};
use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::ledger::Observer;
use crate::lock::{Finished, LocalOnly, Mode, RepoLock, Starting};
use crate::repository;
use crate::sets::BackupSet;
use crate::tiers::Tier;

/// What to back up.
#[derive(Debug, Clone)]
pub struct Request {
    /// Set name; generated from the time when `None` (`pre-restore-TIME`
    /// for that tier), with a suffix when two runs share a second.
    pub name: Option<String>,
    /// Tier of the new set.
    pub tier: Tier,
    /// Include Redis instances whose role is `cache`.
    pub include_redis: bool,
    /// Only these components (`postgres`, `postgres.main`, `docker`, …).
    pub only: Vec<String>,
    /// Only databases (`dump`: PostgreSQL, and Redis with role `data`).
    pub databases_only: bool,
    /// Skip components that do not exist (a removed image or volume, a
    /// dropped database, a stopped Redis) instead of failing: what does not
    /// exist cannot be lost. Used for the pre-restore snapshot.
    pub skip_missing: bool,
    /// Write the set tagged unverified: not a backup set until the caller
    /// verified and promoted it (`immaculate create`).
    pub hold: bool,
}

/// One component in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    /// Component name.
    pub component: String,
    /// Bytes of its artifacts.
    pub size: u64,
    /// Files.
    pub files: u64,
    /// True when its content was reused unread from the parent set.
    pub reused: bool,
    /// Seconds spent reading it (streams and files read).
    pub seconds: f64,
}

/// The result of a backup.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The new set.
    pub set: BackupSet,
    /// Per component.
    pub components: Vec<ComponentReport>,
    /// Bytes processed.
    pub total_bytes: u64,
    /// New data added to the repository, before compression.
    pub data_added: u64,
    /// New data added to the repository, as stored (compressed).
    pub data_added_packed: u64,
    /// The set whose unchanged content was reused.
    pub parent: Option<String>,
    /// Wall time.
    pub seconds: f64,
}

/// A name for a set taken now: `2026-11-25T18-40-02`.
#[must_use]
pub fn generated_name() -> String {
    jiff::Zoned::now().strftime("%Y-%m-%dT%H-%M-%S").to_string()
}

/// Takes a backup set. Holds the repository lock for its whole run.
pub fn run<P: ProgressBars>(
    cfg: &Config,
    env: &Env,
    req: &Request,
    observer: Option<Arc<dyn Observer>>,
    progress: P,
) -> Result<Report> {
    // The local lock first: a restore of this machine is over before the
    // plan reads the databases. The repository lock is taken beside the
    // planning, which reads no set and writes nothing (decision 0050).
    let local = RepoLock::begin_local(cfg)?;
    backup(cfg, env, req, observer, progress, Some(local))
}

/// [`run`] for a caller that already holds the repository lock (restore's
/// pre-restore snapshot, `immaculate create`, `sacred`).
pub fn run_locked<P: ProgressBars>(
    cfg: &Config,
    env: &Env,
    req: &Request,
    observer: Option<Arc<dyn Observer>>,
    progress: P,
) -> Result<Report> {
    backup(cfg, env, req, observer, progress, None)
}

/// A backup; `local`, when given, is the local lock held, the repository
/// lock to take before the repository's sets are read.
fn backup<P: ProgressBars>(
    cfg: &Config,
    env: &Env,
    req: &Request,
    observer: Option<Arc<dyn Observer>>,
    progress: P,
    local: Option<LocalOnly>,
) -> Result<Report> {
    let started = Instant::now();
    let name = requested_name(req)?;
    let stack = Stack::resolve(cfg)?;
    let wanted = select(&stack, req)?;
    // 1. Plan while the repository opens and its lock is taken: deriving
    // the key alone takes a third of a second, connecting and exporting a
    // snapshot as long. The code's HEAD is read with the plan, for the
    // manifest and the git component.
    let password = repository::password(cfg, env)?;
    let context = || BackupContext {
        stack: &stack,
        include_redis: req.include_redis,
        replacing: req.tier == Tier::PreRestore,
        git_head: cfg
            .git
            .as_ref()
            .and_then(|g| crate::git::head(&g.path).ok()),
    };
    let ctx = context();
    let (planned, repo, lock) = std::thread::scope(|s| {
        let planning = s.spawn(|| plan_all(&ctx, &wanted, req.skip_missing));
        let lock = local
            .map(|l| {
                l.begin(cfg, &password, Mode::Shared, "stack-backup backup")
                    .and_then(Starting::finish)
            })
            .transpose();
        // Not opened again (deriving the key again) for a lock that failed.
        let repo = match &lock {
            Ok(_) => repository::open_with_progress(cfg, &password, progress),
            Err(_) => Err(Error::component("backup", "not opened")),
        };
        let planned = planning
            .join()
            .unwrap_or_else(|_| Err(Error::component("backup", "planning panicked")));
        (planned, repo, lock)
    });
    // A lock that could not be taken first: the plan goes with the return.
    let (planned, git, _lock) = match lock? {
        None => (planned?, ctx.git_head, None),
        Some(Finished::Held(l)) => (planned?, ctx.git_head, Some(l)),
        Some(Finished::Raced(s)) => {
            // A holder was there at the first check, or wrote beside ours.
            // The plan may hold a database's table locks (MariaDB), which
            // must not block the application while we wait, and the set
            // must show the stack as it is when the backup runs, not as it
            // was before the wait: the plan (or its failure) goes, and the
            // plan and the code's HEAD are read again after the wait.
            log::info!("the repository is locked by another process: waiting for it");
            drop(planned);
            let l = s.wait()?;
            let ctx = context();
            (
                plan_all(&ctx, &wanted, req.skip_missing)?,
                ctx.git_head,
                Some(l),
            )
        }
    };
    let repo = repo?;
    if planned.is_empty() {
        return Err(Error::NothingToBackUp(
            "no component is configured or selected".into(),
        ));
    }
    // A second handle (the key is cached) that only deletes parts.
    let deleter = repository::open(cfg, &password)?;
    phases::Run::new(cfg, req, name, started, observer)
        .execute(repo, deleter, &wanted, planned, git)
}

/// The name asked for (checked), or one generated from the time.
fn requested_name(req: &Request) -> Result<String> {
    let name = req.name.clone().unwrap_or_else(|| match req.tier {
        Tier::PreRestore => format!("pre-restore-{}", generated_name()),
        _ => generated_name(),
    });
    // Sacred sets are named `sacred/NAME`; NAME follows the usual rules.
    crate::config::validate_name(name.strip_prefix("sacred/").unwrap_or(&name))
        .map_err(|m| Error::Refused(format!("--name: {m}")))?;
    if name == "latest" {
        return Err(Error::Refused(
            "`latest` is reserved; choose another --name".into(),
        ));
    }
    Ok(name)
}

/// The components a request wants, in registry order. A selector that
/// picks nothing is a usage error naming the components there are.
fn select(stack: &Stack, req: &Request) -> Result<Vec<ComponentId>> {
    let all = stack.components();
    for s in &req.only {
        if !all.iter().any(|c| c.selected_by(std::slice::from_ref(s))) {
            let names: Vec<&str> = all.iter().map(ComponentId::as_str).collect();
            return Err(Error::Usage(format!(
                "--only {s}: no such component (components: {})",
                names.join(", ")
            )));
        }
    }
    Ok(all
        .into_iter()
        .filter(|c| c.selected_by(&req.only))
        .filter(|c| !req.databases_only || c.kind().is_database())
        .collect())
}

/// Every wanted component's plan; with `skip_missing`, a component that
/// does not exist is left out.
fn plan_all(
    ctx: &BackupContext,
    wanted: &[ComponentId],
    skip_missing: bool,
) -> Result<Vec<(ComponentId, Planned)>> {
    let mut out = Vec::new();
    for id in wanted {
        match id.kind().plan_backup(ctx, id) {
            Ok(Some(p)) => out.push((id.clone(), p)),
            Ok(None) => {}
            Err(e) if skip_missing && e.is_missing() => {
                log::info!("{id}: skipped, it does not exist: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A backup that failed, with every component that failed.
fn failed(mut problems: Vec<(String, String)>) -> Error {
    problems.sort();
    problems.dedup();
    if problems.len() == 1 {
        let (c, m) = problems.remove(0);
        return Error::component(c, format!("{m}; the backup failed and left no backup set"));
    }
    let list: Vec<String> = problems.iter().map(|(c, m)| format!("{c}: {m}")).collect();
    Error::component(
        "backup",
        format!(
            "{} components failed; the backup left no backup set:\n  {}",
            problems.len(),
            list.join("\n  ")
        ),
    )
}
