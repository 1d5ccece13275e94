//! `restore`: the safety chain.
//!
//! ```text
//! Disk check → Backup verify → Migration check → Pre-restore snapshot
//!   → Restore → Redis flush (if asked) → Post-restore verify
//! ```
//!
//! Each step must pass before the next starts. Nothing in the stack is
//! changed before step 5. Databases, volumes and paths are restored *beside*
//! the live ones (a temporary database, a staging directory) and swapped in;
//! the originals are kept until the post-restore verify passed, so a failure
//! puts them back exactly (images are re-tagged to their old IDs; Redis is
//! restored from the pre-restore snapshot). See
//! `docs/decisions/0004-restore-beside-then-swap.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{IndexedFullStatus, LocalDestination, LsOptions, Repository, RestoreOptions};
use serde::Serialize;

use crate::config::{Config, Env, RedisRole};
use crate::error::{Error, Result};
use crate::lock::RepoLock;
use crate::manifest::{self, Component, Manifest};
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet};
use crate::tiers::Tier;
use crate::{disk, docker, migrations, postgres, redis};

type Indexed = Repository<IndexedFullStatus>;

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
}

/// One thing the restore replaces.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Component name.
    pub component: String,
    /// What happens to it, naming host, port, database, container, volume.
    pub action: String,
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
    "Disk check",
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

/// A restore plan: the set, its manifest, and what will be replaced.
pub struct Plan {
    /// The set.
    pub set: BackupSet,
    snap: SnapshotFile,
    /// Its manifest.
    pub manifest: Manifest,
    checksums: BTreeMap<String, String>,
    /// Components to restore (in the set and configured).
    pub components: Vec<String>,
    /// What will be replaced.
    pub targets: Vec<Target>,
    /// Components in the set that are not restored, with why.
    pub skipped: Vec<(String, String)>,
}

use crate::backup::selected;

/// A manifest file of the set; failing to read it is a verification failure.
fn read_small(repo: &Indexed, snap: &SnapshotFile, path: &str) -> Result<Vec<u8>> {
    sets::read_file(repo, snap, path).map_err(|e| Error::Verification(e.to_string()))
}

/// Reads the set's manifest and works out what the restore replaces.
pub fn plan(cfg: &Config, env: &Env, req: &Request) -> Result<Plan> {
    let repo = repository::open_indexed(cfg, env)?;
    plan_with(&repo, cfg, req)
}

fn plan_with(repo: &Indexed, cfg: &Config, req: &Request) -> Result<Plan> {
    let (set, snap) = sets::find(repo, &cfg.stack.name.0, &req.name)?;
    let manifest: Manifest = serde_json::from_slice(&read_small(repo, &snap, manifest::JSON_PATH)?)
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
    let checksums = manifest::parse_checksums(&String::from_utf8_lossy(&read_small(
        repo,
        &snap,
        manifest::CHECKSUM_PATH,
    )?));
    let mut components = Vec::new();
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    for (name, c) in &manifest.components {
        if !selected(name, &req.only) {
            continue;
        }
        let action = match c {
            Component::Postgres(p) => {
                let key = name.trim_start_matches("postgres.");
                match cfg.postgres.get(key) {
                    Some(pg) => {
                        let pc = postgres::client_config(key, pg)?;
                        let db = pc.get_dbname().unwrap_or(&p.database).to_string();
                        let host = pg
                            .container
                            .as_ref()
                            .map_or_else(|| pg.url.redacted(), |c| format!("container {c}"));
                        Some(format!(
                            "replace database `{db}` ({host}) with the dump of `{}` ({} tables)",
                            p.database,
                            p.row_counts.len()
                        ))
                    }
                    None => {
                        skipped.push((name.clone(), "not in the config".to_string()));
                        None
                    }
                }
            }
            Component::Redis(r) => {
                let key = name.trim_start_matches("redis.");
                match cfg.redis.get(key) {
                    Some(rd) if req.flush_redis && rd.role == RedisRole::Cache => Some(format!(
                        "flush Redis {} (role cache, --flush-redis)",
                        rd.url.redacted()
                    )),
                    Some(rd) => Some(format!(
                        "replace every key of Redis {} with the RDB ({} keys in its db)",
                        rd.url.redacted(),
                        r.keys
                    )),
                    None => {
                        skipped.push((name.clone(), "not in the config".to_string()));
                        None
                    }
                }
            }
            Component::DockerImage(i) => Some(format!(
                "load image `{}` (ID {}) unless present, and tag it",
                i.reference,
                short(&i.id)
            )),
            Component::DockerVolume(t) => {
                let users = docker::volume_users(&t.source).unwrap_or_default();
                Some(format!(
                    "replace the contents of volume `{}` ({} files){}",
                    t.source,
                    t.files,
                    if users.is_empty() {
                        String::new()
                    } else {
                        format!("; containers {} are stopped meanwhile", users.join(", "))
                    }
                ))
            }
            Component::Path(_) => {
                let key = name.trim_start_matches("paths.");
                match cfg.paths.get(key) {
                    Some(p) => Some(format!("replace directory {}", p.path.display())),
                    None => {
                        skipped.push((name.clone(), "not in the config".to_string()));
                        None
                    }
                }
            }
            Component::Git(_) => {
                skipped.push((
                    name.clone(),
                    "code is not restored; check out the recorded commit yourself".into(),
                ));
                None
            }
        };
        if let Some(action) = action {
            components.push(name.clone());
            targets.push(Target {
                component: name.clone(),
                action,
            });
        }
    }
    // --flush-redis also applies to cache Redis instances the set lacks.
    if req.flush_redis {
        for (key, rd) in &cfg.redis {
            let name = redis::component(key);
            if rd.role == RedisRole::Cache
                && !components.contains(&name)
                && selected(&name, &req.only)
            {
                components.push(name.clone());
                targets.push(Target {
                    component: name,
                    action: format!(
                        "flush Redis {} (role cache, --flush-redis)",
                        rd.url.redacted()
                    ),
                });
            }
        }
    }
    if components.is_empty() {
        return Err(Error::Usage(format!(
            "nothing to restore from `{}` (components in the set: {})",
            set.name,
            manifest
                .components
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Plan {
        set,
        snap,
        manifest,
        checksums,
        components,
        targets,
        skipped,
    })
}

fn short(id: &str) -> &str {
    let id = id.trim_start_matches("sha256:");
    &id[..id.len().min(12)]
}

/// Runs the chain. The caller has shown the plan and obtained consent.
pub fn execute(cfg: &Config, env: &Env, req: &Request, steps: &dyn Steps) -> Result<Outcome> {
    let _lock = RepoLock::acquire(&Location::of(cfg))?;
    let repo = repository::open_indexed(cfg, env)?;
    let plan = plan_with(&repo, cfg, req)?;
    let run = |n: usize, f: &mut dyn FnMut() -> Result<String>| -> Result<()> {
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
    };

    // 1. Disk check.
    run(1, &mut || disk_check(cfg, &plan))?;
    // 2. Backup verify: every artifact read back and hashed.
    run(2, &mut || verify(&repo, &plan))?;
    // 3. Migration check.
    run(3, &mut || {
        migration_check(cfg, &plan, req.allow_migration_mismatch)
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
            set: plan.set,
            pre_restore: None,
            restored: Vec::new(),
            dry_run: true,
        });
    }
    // 4. Pre-restore snapshot of what will be replaced.
    let mut pre_name = None;
    run(4, &mut || {
        let only: Vec<String> = plan
            .components
            .iter()
            .filter(|c| !c.starts_with("redis.") || !redis_flush_only(cfg, req, c))
            .cloned()
            .collect();
        let name = format!("pre-restore-{}", crate::backup::generated_name());
        let only = present_components(cfg, &only)?;
        if only.is_empty() {
            return Ok("nothing that will be replaced exists yet".into());
        }
        let report = crate::backup::run_locked(
            cfg,
            env,
            &crate::backup::Request {
                name: Some(name.clone()),
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
            Ok(report) => {
                pre_name = Some(report.set.name.clone());
                Ok(format!(
                    "set `{}` ({})",
                    report.set.name,
                    report.set.short_id()
                ))
            }
            Err(Error::Refused(m)) if m.starts_with("nothing to back up") => {
                Ok("nothing that will be replaced exists yet".into())
            }
            Err(e) => Err(e),
        }
    })?;
    // The pre-restore set is new: reload the index to read it on rollback
    // (freeing the first index before the second is loaded).
    drop(repo);
    let repo = repository::open_indexed(cfg, env)?;

    // 5. Restore, 6. flush, 7. verify; undo everything on failure.
    let mut done: Vec<Applied> = Vec::new();
    let result = (|| -> Result<()> {
        run(5, &mut || {
            let wanted: Vec<&String> = plan
                .components
                .iter()
                .filter(|c| !redis_flush_only(cfg, req, c))
                .collect();
            let results = restore_concurrently(&repo, cfg, &plan, &wanted);
            // Keep every change that was applied (to undo it), in plan order;
            // report the first failure.
            let mut first_err = None;
            for r in results {
                match r {
                    Ok(a) => done.push(a),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(format!("{} component(s) restored", done.len())),
            }
        })?;
        let flush: Vec<&String> = plan
            .components
            .iter()
            .filter(|c| redis_flush_only(cfg, req, c))
            .collect();
        if flush.is_empty() {
            steps.step(6, STEPS[5], StepState::Skipped, "not asked (--flush-redis)");
        } else {
            run(6, &mut || {
                for c in &flush {
                    let key = c.trim_start_matches("redis.");
                    let mut conn = redis::connect(key, &cfg.redis[key])?;
                    redis::cmd_flushdb(key, &mut conn)?;
                }
                Ok(format!(
                    "flushed {}",
                    flush
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        }
        run(7, &mut || post_verify(cfg, &plan, req))
    })();
    match result {
        Ok(()) => {
            // Dropping the originals: side by side (a database and a large
            // directory take their time in different places).
            std::thread::scope(|s| {
                for a in done {
                    s.spawn(move || a.commit(cfg));
                }
            });
            Ok(Outcome {
                set: plan.set,
                pre_restore: pre_name,
                restored: plan.components.clone(),
                dry_run: false,
            })
        }
        Err(e) => {
            let pre = pre_name.clone().unwrap_or_default();
            let mut rollback_errors = Vec::new();
            for a in done.into_iter().rev() {
                if let Err(re) = a.undo(&repo, cfg, &pre) {
                    rollback_errors.push(re.to_string());
                }
            }
            if rollback_errors.is_empty() {
                Err(Error::component(
                    "restore",
                    format!("{e}\nthe restore failed; everything it changed was rolled back to the state before it (pre-restore set `{pre}`)"),
                ))
            } else {
                Err(Error::component(
                    "restore",
                    format!(
                        "{e}\nthe restore failed AND rolling back failed: {}\nrestore the pre-restore set by hand: stack-backup restore {pre}",
                        rollback_errors.join("; ")
                    ),
                ))
            }
        }
    }
}

/// The lane a component is restored in: lanes run side by side, the
/// components of one lane one after the other. Each lane loads a different
/// part of the machine (the database server, the Docker daemon, the
/// filesystem), so they overlap well; two `docker load`s or two large
/// `pg_restore`s at once only compete.
fn lane(component: &str) -> &'static str {
    if component.starts_with("postgres.") {
        "postgres"
    } else if component.starts_with("docker.image.") {
        "images"
    } else if component.starts_with("redis.") {
        "redis"
    } else {
        "files" // volumes and paths
    }
}

/// Restores `wanted`, one thread per [`lane`]. Every component runs to its
/// end even when another failed, so that the caller knows exactly what was
/// applied; results are in the order of `wanted`.
fn restore_concurrently(
    repo: &Indexed,
    cfg: &Config,
    plan: &Plan,
    wanted: &[&String],
) -> Vec<Result<Applied>> {
    let mut lanes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in wanted.iter().enumerate() {
        lanes.entry(lane(c)).or_default().push(i);
    }
    let slots: Vec<std::sync::Mutex<Option<Result<Applied>>>> =
        wanted.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for members in lanes.values() {
            let slots = &slots;
            s.spawn(move || {
                for &i in members {
                    let c = wanted[i];
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        restore_component(repo, cfg, plan, c)
                    }))
                    .unwrap_or_else(|_| Err(Error::component(c.as_str(), "restoring it panicked")));
                    *slots[i].lock().expect("slot") = Some(r);
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

fn redis_flush_only(cfg: &Config, req: &Request, component: &str) -> bool {
    req.flush_redis
        && component
            .strip_prefix("redis.")
            .and_then(|k| cfg.redis.get(k))
            .is_some_and(|r| r.role == RedisRole::Cache)
}

/// The components of `wanted` the config has now (a pre-restore snapshot
/// can only take what exists).
fn present_components(cfg: &Config, wanted: &[String]) -> Result<Vec<String>> {
    let all = crate::backup::component_names(cfg)?;
    Ok(wanted.iter().filter(|w| all.contains(w)).cloned().collect())
}

fn disk_check(cfg: &Config, plan: &Plan) -> Result<String> {
    let floor = cfg.min_free_space();
    let mut needs: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let size_of = |c: &str| -> u64 {
        plan.manifest
            .artifacts
            .iter()
            .filter(|a| a.component == c)
            .map(|a| a.size)
            .sum()
    };
    let docker_root = if plan.components.iter().any(|c| c.starts_with("docker.")) {
        Some(PathBuf::from(crate::process::output(
            "docker",
            "docker",
            &["info", "--format", "{{.DockerRootDir}}"],
        )?))
    } else {
        None
    };
    for c in &plan.components {
        let Some(component) = plan.manifest.components.get(c.as_str()) else {
            continue; // a Redis that is only flushed
        };
        match component {
            Component::Postgres(_) => {
                // A temporary copy of the database exists beside the live one.
                let key = c.trim_start_matches("postgres.");
                let mut client = postgres::connect(key, &cfg.postgres[key])?;
                let dir: Option<String> = client
                    .query_opt("SELECT current_setting('data_directory')", &[])
                    .ok()
                    .flatten()
                    .map(|r| r.get(0));
                if let Some(dir) = dir.filter(|d| Path::new(d).exists()) {
                    *needs.entry(PathBuf::from(dir)).or_default() += size_of(c).saturating_mul(2);
                }
            }
            Component::DockerImage(_) | Component::DockerVolume(_) => {
                if let Some(root) = &docker_root {
                    let bytes = match component {
                        Component::DockerVolume(t) => t.bytes,
                        _ => size_of(c),
                    };
                    *needs.entry(root.clone()).or_default() += bytes;
                }
            }
            Component::Path(t) => {
                let key = c.trim_start_matches("paths.");
                *needs.entry(cfg.paths[key].path.clone()).or_default() += t.bytes;
            }
            _ => {}
        }
    }
    if let Location::Local(p) = Location::of(cfg) {
        needs.entry(p).or_default();
    } else if let Some(c) = crate::repository::cache_dir(cfg) {
        needs.entry(c).or_default();
    }
    needs.entry(std::env::temp_dir()).or_default();
    let mut parts = Vec::new();
    for (path, need) in &needs {
        let s = disk::ensure(path, *need, floor)?;
        parts.push(format!(
            "{} needs {}, {} free",
            path.display(),
            disk::human(*need),
            disk::human(s.available)
        ));
    }
    Ok(parts.join("; "))
}

use crate::verify::hash_nodes;

/// Paths (inside the set) of every file a component consists of.
fn component_files(repo: &Indexed, plan: &Plan, c: &str) -> Result<Vec<(String, Node)>> {
    let mut out = Vec::new();
    match &plan.manifest.components[c] {
        Component::DockerVolume(t) | Component::Path(t) => {
            let root = repo
                .node_from_snapshot_and_path(&plan.snap, &format!("/{}", t.path))
                .map_err(|e| {
                    Error::Verification(format!(
                        "{c}: {} missing from the set: {}",
                        t.path,
                        e.display_log()
                    ))
                })?;
            let walk = repo
                .ls(&root, &LsOptions::default())
                .map_err(|e| Error::Verification(format!("{c}: {}", e.display_log())))?;
            for item in walk {
                let (p, node) = item.map_err(|e| {
                    Error::Verification(format!("{c}: reading the tree: {}", e.display_log()))
                })?;
                if node.is_file() {
                    out.push((format!("{}/{}", t.path, p.display()), node));
                }
            }
        }
        _ => {
            for a in plan.manifest.artifacts.iter().filter(|a| a.component == c) {
                let node = repo
                    .node_from_snapshot_and_path(&plan.snap, &format!("/{}", a.path))
                    .map_err(|e| {
                        Error::Verification(format!(
                            "{c}: {} missing from the set: {}",
                            a.path,
                            e.display_log()
                        ))
                    })?;
                out.push((a.path.clone(), node));
            }
        }
    }
    Ok(out)
}

/// Step 2: every artifact of the restored components read back from the
/// repository and hashed (two threads, see [`hash_nodes`]); the first
/// mismatch in plan order is the error.
fn verify(repo: &Indexed, plan: &Plan) -> Result<String> {
    let mut work: Vec<(String, String, Node, String)> = Vec::new();
    for c in &plan.components {
        if !plan.manifest.components.contains_key(c.as_str()) {
            continue; // a flush-only Redis
        }
        for (path, node) in component_files(repo, plan, c)? {
            let want = plan.checksums.get(&path).ok_or_else(|| {
                Error::Verification(format!("{c}: {path} has no checksum in CHECKSUM.sha256"))
            })?;
            work.push((c.clone(), path, node, want.clone()));
        }
    }
    let nodes: Vec<&Node> = work.iter().map(|w| &w.2).collect();
    let mut bytes = 0u64;
    for ((c, path, _, want), hash) in work.iter().zip(hash_nodes(repo, &nodes, true)) {
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
        disk::human(bytes)
    ))
}

fn migration_check(cfg: &Config, plan: &Plan, allow: bool) -> Result<String> {
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    let commit = plan
        .manifest
        .git
        .as_ref()
        .map_or("an unrecorded commit".to_string(), |g| {
            format!("commit {}", &g.commit[..g.commit.len().min(12)])
        });
    for c in &plan.components {
        let Some(Component::Postgres(p)) = plan.manifest.components.get(c.as_str()) else {
            continue;
        };
        let key = c.trim_start_matches("postgres.");
        let pg = &cfg.postgres[key];
        // Live state (informational: a restore exists to change it).
        let live = postgres::connect(key, pg)
            .and_then(|mut cl| postgres::migration_state_now(key, &mut cl))
            .unwrap_or_default();
        for m in &p.migrations {
            let live_m = live.iter().find(|l| l.tool == m.tool);
            if live_m.map(|l| &l.applied) != Some(&m.applied) {
                notes.push(format!(
                    "{c}: {} goes from {} (live) to {} (backup)",
                    m.tool,
                    live_m.map_or("none".into(), |l| l.applied.join(",")),
                    m.applied.join(",")
                ));
            }
            if let Some(dir) = &pg.migrations_dir {
                match migrations::code_state(dir, &m.tool) {
                    Some(code) if !migrations::fits(m, &code) => problems.push(format!(
                        "{c}: the backup's {} state is {} (taken at {commit}), but the code checked out now expects {}; \
                         restoring would leave the database out of step with the code. Check out {commit} first, \
                         or pass --allow-migration-mismatch",
                        m.tool,
                        m.applied.join(","),
                        code.expected.iter().cloned().collect::<Vec<_>>().join(",")
                    )),
                    Some(_) => notes.push(format!("{c}: {} fits the code", m.tool)),
                    None => notes.push(format!("{c}: {} not compared with the code (no readable {})", m.tool, dir.display())),
                }
            }
        }
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

/// A change made to the stack, kept undoable until the restore succeeded.
enum Applied {
    /// A database swapped in; the original renamed to `old`.
    Database {
        key: String,
        live: String,
        old: Option<String>,
    },
    /// A directory swapped in; the original moved to `old`.
    Directory {
        live: PathBuf,
        old: Option<PathBuf>,
        _users: Option<docker::StoppedContainers>,
    },
    /// An image loaded/tagged; `old_id` is what the tag pointed at before.
    Image {
        reference: String,
        old_id: Option<String>,
    },
    /// A Redis whose keys were replaced.
    Redis { key: String, component: String },
}

/// Removes the directory `dir` and everything in it, its top-level entries
/// shared out to two threads (unlinking tens of thousands of files is
/// kernel work that two CPUs do faster than one).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    let remove = |p: &PathBuf| -> std::io::Result<()> {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
            Ok(_) => std::fs::remove_file(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    };
    let halves: Vec<std::io::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = [0, 1]
            .map(|half| {
                let (entries, remove) = (&entries, &remove);
                s.spawn(move || entries.iter().skip(half).step_by(2).try_for_each(remove))
            })
            .into_iter()
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("removal panicked")))
            })
            .collect()
    });
    halves.into_iter().collect::<std::io::Result<()>>()?;
    std::fs::remove_dir(dir)
}

impl Applied {
    /// The restore succeeded: drop the originals kept for an undo.
    fn commit(self, cfg: &Config) {
        match self {
            Applied::Database {
                key,
                old: Some(old),
                ..
            } => {
                let dropped = admin_client(&key, cfg).and_then(|mut a| {
                    terminate(&mut a, &old)?;
                    exec(
                        &mut a,
                        &format!("DROP DATABASE IF EXISTS {}", postgres::quote_ident(&old)),
                    )
                });
                if let Err(e) = dropped {
                    log::warn!("could not drop the old copy {old}: {e}");
                }
            }
            Applied::Directory { old: Some(old), .. } => {
                if let Err(e) = remove_tree(&old) {
                    log::warn!("could not remove the old copy {}: {e}", old.display());
                }
            }
            _ => {}
        }
    }

    fn undo(self, repo: &Indexed, cfg: &Config, pre: &str) -> Result<()> {
        match self {
            Applied::Database { key, live, old } => {
                let mut admin = admin_client(&key, cfg)?;
                terminate(&mut admin, &live)?;
                let failed = format!("{}__sb_failed", &live[..live.len().min(40)]);
                exec(
                    &mut admin,
                    &format!("DROP DATABASE IF EXISTS {}", postgres::quote_ident(&failed)),
                )?;
                exec(
                    &mut admin,
                    &format!(
                        "ALTER DATABASE {} RENAME TO {}",
                        postgres::quote_ident(&live),
                        postgres::quote_ident(&failed)
                    ),
                )?;
                if let Some(old) = old {
                    exec(
                        &mut admin,
                        &format!(
                            "ALTER DATABASE {} RENAME TO {}",
                            postgres::quote_ident(&old),
                            postgres::quote_ident(&live)
                        ),
                    )?;
                }
                exec(
                    &mut admin,
                    &format!("DROP DATABASE IF EXISTS {}", postgres::quote_ident(&failed)),
                )?;
                Ok(())
            }
            Applied::Directory { live, old, _users } => {
                let failed = sibling(&live, "sb-failed");
                let _ = std::fs::remove_dir_all(&failed);
                if live.exists() {
                    std::fs::rename(&live, &failed)
                        .map_err(|e| Error::io("moving aside", &live, e))?;
                }
                if let Some(old) = old {
                    std::fs::rename(&old, &live).map_err(|e| Error::io("moving back", &old, e))?;
                }
                let _ = std::fs::remove_dir_all(&failed);
                Ok(())
            }
            Applied::Image { reference, old_id } => {
                match old_id {
                    Some(id) => {
                        crate::process::output("docker", "docker", &["tag", &id, &reference])?
                    }
                    // It was not there before: take it away again.
                    None => {
                        crate::process::output("docker", "docker", &["image", "rm", &reference])?
                    }
                };
                Ok(())
            }
            Applied::Redis { key, component } => {
                let req = Request {
                    name: pre.to_string(),
                    ..Request::default()
                };
                let plan = plan_with(repo, cfg, &req)?;
                if plan.manifest.components.contains_key(component.as_str()) {
                    restore_redis(repo, cfg, &plan, &key, &component)?;
                }
                Ok(())
            }
        }
    }
}

fn sibling(p: &Path, suffix: &str) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    p.with_file_name(format!("{name}.{suffix}"))
}

fn admin_client(key: &str, cfg: &Config) -> Result<::postgres::Client> {
    let pg = &cfg.postgres[key];
    let mut pc = postgres::client_config(key, pg)?;
    pc.dbname("postgres");
    pc.connect(::postgres::NoTls).map_err(|e| {
        Error::component(
            postgres::component(key),
            format!("cannot connect to the `postgres` database to recreate the database: {e}"),
        )
    })
}

fn exec(c: &mut ::postgres::Client, sql: &str) -> Result<()> {
    c.batch_execute(sql).map_err(|e| {
        let detail =
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
        Error::component("postgres", format!("`{sql}` failed: {detail}"))
    })
}

fn terminate(c: &mut ::postgres::Client, db: &str) -> Result<()> {
    c.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        &[&db],
    )
    .map_err(|e| Error::component("postgres", format!("terminating sessions on {db}: {e}")))?;
    Ok(())
}

fn restore_component(repo: &Indexed, cfg: &Config, plan: &Plan, c: &str) -> Result<Applied> {
    match &plan.manifest.components[c] {
        Component::Postgres(p) => {
            restore_postgres(repo, cfg, plan, c.trim_start_matches("postgres."), p)
        }
        Component::DockerImage(i) => restore_image(repo, plan, i),
        Component::DockerVolume(t) => {
            let mount = PathBuf::from(match docker::volume_mountpoint(&t.source) {
                Ok(m) => m,
                Err(_) => {
                    crate::process::output(c, "docker", &["volume", "create", &t.source])?;
                    docker::volume_mountpoint(&t.source)?
                }
            });
            let users = docker::volume_users(&t.source)?;
            let stopped = docker::StoppedContainers::stop(c, &users)?;
            let mut applied = restore_tree(repo, plan, c, &t.path, &mount)?;
            if let Applied::Directory { _users, .. } = &mut applied {
                *_users = Some(stopped);
            }
            Ok(applied)
        }
        Component::Path(t) => {
            let key = c.trim_start_matches("paths.");
            restore_tree(repo, plan, c, &t.path, &cfg.paths[key].path)
        }
        Component::Redis(_) => {
            let key = c.trim_start_matches("redis.");
            restore_redis(repo, cfg, plan, key, c)?;
            Ok(Applied::Redis {
                key: key.to_string(),
                component: c.to_string(),
            })
        }
        Component::Git(_) => Err(Error::component(c, "git is not restored")),
    }
}

/// Streams a file of the set into a process's stdin and waits for it.
fn pipe_into(
    repo: &Indexed,
    plan: &Plan,
    path: &str,
    mut cmd: Command,
    what: &str,
    component: &str,
) -> Result<String> {
    let node = repo
        .node_from_snapshot_and_path(&plan.snap, &format!("/{path}"))
        .map_err(|e| Error::component(component, format!("{path}: {}", e.display_log())))?;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::component(component, format!("cannot run {what}: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let written = repo.dump(&node, &mut stdin);
    drop(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| Error::component(component, format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(Error::component(
            component,
            format!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    written
        .map_err(|e| Error::component(component, format!("feeding {what}: {}", e.display_log())))?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn restore_postgres(
    repo: &Indexed,
    cfg: &Config,
    plan: &Plan,
    key: &str,
    p: &manifest::PostgresRecord,
) -> Result<Applied> {
    let comp = postgres::component(key);
    let pg = &cfg.postgres[key];
    let pc = postgres::client_config(key, pg)?;
    let live = pc.get_dbname().unwrap_or(&p.database).to_string();
    let mut admin = admin_client(key, cfg)?;
    let server = postgres::server_version(key, &mut admin)?;
    let tag = std::process::id();
    let base = &live[..live.len().min(40)];
    let tmp = format!("{base}__sb_restore_{tag}");
    let old = format!("{base}__sb_old_{tag}");
    let owner: Option<String> = admin
        .query_opt(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&live],
        )
        .map_err(|e| Error::component(comp.clone(), format!("reading the owner of {live}: {e}")))?
        .map(|r| r.get(0));
    exec(
        &mut admin,
        &format!("DROP DATABASE IF EXISTS {}", postgres::quote_ident(&tmp)),
    )?;
    // Roles first, so that ownership in the dump can be restored.
    if let Some(roles) = &p.roles {
        let psql = postgres::ToolRun::find(key, pg, &pc, "psql", server.major)?;
        let mut cmd = Command::new(&psql.program);
        cmd.args(psql.args(&["-X", "-q", "--no-password", "-d", "postgres", "-f", "-"]))
            .envs(psql.env.iter().map(|(k, v)| (k, v)));
        if let Err(e) = pipe_into(repo, plan, roles, cmd, "psql (roles)", &comp) {
            log::warn!("{comp}: roles restored with errors (existing roles are kept): {e}");
        }
    }
    let create = match &owner {
        Some(o) => format!(
            "CREATE DATABASE {} OWNER {}",
            postgres::quote_ident(&tmp),
            postgres::quote_ident(o)
        ),
        None => format!("CREATE DATABASE {}", postgres::quote_ident(&tmp)),
    };
    exec(&mut admin, &create)?;
    let restore_tool = postgres::ToolRun::find(key, pg, &pc, "pg_restore", server.major)?;
    let mut cmd = Command::new(&restore_tool.program);
    let dbarg = format!("--dbname={tmp}");
    cmd.args(restore_tool.args(&["--exit-on-error", "--no-password", &dbarg]))
        .envs(restore_tool.env.iter().map(|(k, v)| (k, v)));
    if let Err(e) = pipe_into(repo, plan, &p.dump, cmd, "pg_restore", &comp) {
        let _ = exec(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {}", postgres::quote_ident(&tmp)),
        );
        return Err(e);
    }
    // Swap: nobody may be connected to either database.
    terminate(&mut admin, &live)?;
    terminate(&mut admin, &tmp)?;
    let old = if owner.is_some() {
        exec(
            &mut admin,
            &format!(
                "ALTER DATABASE {} RENAME TO {}",
                postgres::quote_ident(&live),
                postgres::quote_ident(&old)
            ),
        )?;
        Some(old)
    } else {
        None
    };
    exec(
        &mut admin,
        &format!(
            "ALTER DATABASE {} RENAME TO {}",
            postgres::quote_ident(&tmp),
            postgres::quote_ident(&live)
        ),
    )?;
    Ok(Applied::Database {
        key: key.to_string(),
        live,
        old,
    })
}

fn restore_image(repo: &Indexed, plan: &Plan, i: &manifest::ImageRecord) -> Result<Applied> {
    let comp = format!("docker.image.{}", i.reference);
    let old_id = docker::image_id(&i.reference).ok();
    let present = docker::image_id(&i.id).is_ok();
    if !present {
        let mut cmd = Command::new("docker");
        cmd.args(["load", "--quiet"]);
        pipe_into(repo, plan, &i.archive, cmd, "docker load", &comp)?;
    }
    crate::process::output(&comp, "docker", &["tag", &i.id, &i.reference])?;
    Ok(Applied::Image {
        reference: i.reference.clone(),
        old_id,
    })
}

/// Restores the tree under `node` into the existing directory `dir`, with
/// owners, modes and times (rustic's restore; files are written in place).
/// The error says which part failed.
pub(crate) fn restore_node_into(
    repo: &Indexed,
    node: &Node,
    dir: &Path,
) -> std::result::Result<(), String> {
    let fail =
        |what: &str, e: Box<rustic_core::RusticError>| format!("{what}: {}", e.display_log());
    let dest = LocalDestination::new(&format!("{}/", dir.display()), true, false)
        .map_err(|e| fail("destination", e))?;
    let opts = RestoreOptions::default();
    let ls = repo
        .ls(node, &LsOptions::default())
        .map_err(|e| fail("reading the tree", e))?;
    let plan = repo
        .prepare_restore(&opts, ls.clone(), &dest, false)
        .map_err(|e| fail("planning", e))?;
    repo.restore(plan, &opts, ls, &dest)
        .map_err(|e| fail("restoring files", e))
}

/// Restores a directory of the set beside `live`, then swaps it in.
fn restore_tree(
    repo: &Indexed,
    plan: &Plan,
    c: &str,
    set_path: &str,
    live: &Path,
) -> Result<Applied> {
    let staging = sibling(live, "sb-restore");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| Error::io("creating", &staging, e))?;
    let node = repo
        .node_from_snapshot_and_path(&plan.snap, &format!("/{set_path}"))
        .map_err(|e| Error::component(c, format!("{set_path}: {}", e.display_log())))?;
    restore_node_into(repo, &node, &staging).map_err(|m| Error::component(c, m))?;
    // The root directory's own mode and owner.
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = node.meta.mode {
        let _ = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode & 0o7777));
    }
    if let (Some(uid), Some(gid)) = (node.meta.uid, node.meta.gid) {
        let _ = std::os::unix::fs::chown(&staging, Some(uid), Some(gid));
    }
    // Every restored file against its checksum before it replaces anything.
    for (path, _) in component_files(repo, plan, c)? {
        let rel = path.strip_prefix(&format!("{set_path}/")).unwrap_or(&path);
        let file = staging.join(rel);
        let (got, _) = std::fs::File::open(&file)
            .and_then(|mut f| crate::verify::sha256_of(&mut f))
            .map_err(|e| Error::io("reading restored", &file, e))?;
        if plan.checksums.get(&path) != Some(&got) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::Verification(format!(
                "{c}: restored {path} does not match its checksum"
            )));
        }
    }
    let old = if live.exists() {
        let old = sibling(live, "sb-old");
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(live, &old).map_err(|e| Error::io("moving aside", live, e))?;
        Some(old)
    } else {
        None
    };
    std::fs::rename(&staging, live).map_err(|e| Error::io("moving into place", &staging, e))?;
    Ok(Applied::Directory {
        live: live.to_path_buf(),
        old,
        _users: None,
    })
}

/// Restores a Redis instance by making it a replica of a temporary
/// `redis-server` that loaded the set's RDB, then promoting it again. The
/// restored data is what Redis holds in memory, so its own saves (also on
/// shutdown) write the restored data, never the old.
fn restore_redis(repo: &Indexed, cfg: &Config, plan: &Plan, key: &str, c: &str) -> Result<()> {
    let rd = &cfg.redis[key];
    if rd.container.is_some() {
        return Err(Error::component(c, "restoring a Redis inside a container is not supported yet; restore redis/<name>/dump.rdb by hand (see MANIFEST.md)"));
    }
    let Component::Redis(r) = &plan.manifest.components[c] else {
        return Err(Error::component(c, "not a Redis component"));
    };
    let dir = tempfile_dir()?;
    let rdb = dir.join("dump.rdb");
    {
        let node = repo
            .node_from_snapshot_and_path(&plan.snap, &format!("/{}", r.rdb))
            .map_err(|e| Error::component(c, e.display_log()))?;
        let mut f = std::fs::File::create(&rdb).map_err(|e| Error::io("writing", &rdb, e))?;
        repo.dump(&node, &mut f)
            .map_err(|e| Error::component(c, e.display_log()))?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::component(c, format!("no free port: {e}")))?
        .port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dbfilename",
            "dump.rdb",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::component(c, format!("cannot start a temporary redis-server: {e}")))?;
    let result = (|| -> Result<()> {
        let src = crate::config::RedisConfig {
            url: crate::config::DbUrl::parse(&format!("redis://127.0.0.1:{port}/0"))
                .map_err(|e| Error::component(c, e))?,
            role: RedisRole::Data,
            password_file: None,
            container: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut conn) = redis::connect(key, &src) {
                if redis::server_version(key, &mut conn).is_ok() {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(Error::component(
                    c,
                    "the temporary redis-server did not start",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut live = redis::connect(key, rd)?;
        redis::replicate_from(key, &mut live, "127.0.0.1", port)
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "stack-backup-redis-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    Ok(dir)
}

fn post_verify(cfg: &Config, plan: &Plan, req: &Request) -> Result<String> {
    let mut checked = Vec::new();
    for c in &plan.components {
        match plan.manifest.components.get(c.as_str()) {
            Some(Component::Postgres(p)) => {
                let key = c.trim_start_matches("postgres.");
                let mut client = postgres::connect(key, &cfg.postgres[key])?;
                let counts = postgres::row_counts(key, &mut client)?;
                if counts != p.row_counts {
                    let diff: Vec<String> = p
                        .row_counts
                        .iter()
                        .filter(|(t, n)| counts.get(*t) != Some(n))
                        .map(|(t, n)| {
                            format!(
                                "{t}: {} (expected {n})",
                                counts.get(t).map_or("missing".into(), ToString::to_string)
                            )
                        })
                        .collect();
                    return Err(Error::Verification(format!(
                        "{c}: row counts differ: {}",
                        diff.join(", ")
                    )));
                }
                let migrations = postgres::migration_state_now(key, &mut client)?;
                if migrations != p.migrations {
                    return Err(Error::Verification(format!(
                        "{c}: migration state after restore differs from the manifest"
                    )));
                }
                checked.push(format!(
                    "{c}: {} tables, row counts and migrations match",
                    counts.len()
                ));
            }
            Some(Component::Redis(r)) if !redis_flush_only(cfg, req, c) => {
                let key = c.trim_start_matches("redis.");
                let mut conn = redis::connect(key, &cfg.redis[key])?;
                let n = redis::dbsize(key, &mut conn)?;
                if n != r.keys {
                    return Err(Error::Verification(format!(
                        "{c}: {n} keys after restore, expected {}",
                        r.keys
                    )));
                }
                checked.push(format!("{c}: {n} keys"));
            }
            Some(Component::DockerImage(i)) => {
                let id = docker::image_id(&i.reference)?;
                if id != i.id {
                    return Err(Error::Verification(format!(
                        "{c}: {} is {id}, expected {}",
                        i.reference, i.id
                    )));
                }
                checked.push(format!("{c}: ID {}", short(&id)));
            }
            _ => {}
        }
    }
    for h in &cfg.health {
        checked.push(crate::health::run(cfg, h)?);
    }
    Ok(if checked.is_empty() {
        "nothing to check".into()
    } else {
        checked.join("; ")
    })
}
