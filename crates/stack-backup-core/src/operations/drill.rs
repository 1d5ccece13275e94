//! `drill`: restores every component of a backup set into a scratch
//! environment on this machine, checks it there, reports, and removes the
//! environment. The live stack is never a target: no restore journal, no
//! pre-restore set, no container stopped, no live database, Redis, volume,
//! path or image tag changed.
//!
//! ```text
//! clean leftovers → marker → verify (every SHA-256) → restore into scratch
//!   → component checks → [[drill.check]] → report (repository + local) → remove
//! ```
//!
//! Everything a drill creates is named after its id (see
//! [`crate::components::drilling`]), and the marker
//! `<state>/drill/<id>/marker.json` is written before anything is created:
//! the next drill (or `drill --clean`) removes what a killed drill left,
//! from the id alone. The report is stored in the repository as a small
//! snapshot of its own (tags `stack-backup-drill`, `stack:<stack>`,
//! `drill-of:<set id>`), which is never a backup set. See
//! `docs/decisions/0021-restore-drills.md`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{BackupOptions, ParentOptions, SnapshotOptions};
use serde::{Deserialize, Serialize};

use crate::components::drilling::remove_dir;
use crate::components::restoring::{Indexed, SetContext};
use crate::components::{check_manifest, ComponentId, Drilled, Scratch, KINDS};
use crate::config::{Config, Env, HealthCheck};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::lock::Mode;
use crate::records::DrillRecord;
use crate::source::{Artifact, Content, Entry, StackSource};
use crate::tiers::Tier;

/// The tag of a drill report's snapshot.
pub const TAG: &str = "stack-backup-drill";
/// The tag naming the set a report is about (by snapshot id).
pub const OF_PREFIX: &str = "drill-of:";

/// What to drill.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Set name, id prefix or `latest`; none: the newest set of tier
    /// `backups`.
    pub name: Option<String>,
    /// Leave the scratch environment in place.
    pub keep: bool,
}

/// One component's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentResult {
    /// The component.
    pub component: String,
    /// Passed every check.
    pub ok: bool,
    /// `ok`, `failed` (its data or check), `refused` (the credentials or
    /// services at hand cannot restore it), `not-drilled`.
    pub state: String,
    /// Seconds its restore into scratch took.
    pub restore_seconds: f64,
    /// What was restored where.
    pub restored: String,
    /// What was checked.
    pub checked: String,
}

/// One `[[drill.check]]`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    /// Its name.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// What passed, or why not.
    pub detail: String,
}

/// A drill's report (`drill.json` in the report snapshot).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The drill's id (names its scratch resources).
    pub id: String,
    /// The stack.
    pub stack: String,
    /// The set drilled.
    pub set: String,
    /// Its snapshot id.
    pub snapshot: String,
    /// Its tier.
    pub tier: Tier,
    /// When the drill started (RFC 3339).
    pub time: String,
    /// The machine it ran on.
    pub host: String,
    /// Every component and check passed.
    pub ok: bool,
    /// Seconds from the start of the verify to the last component
    /// checked: what a restore of the set into an empty stack takes here
    /// (components one after the other).
    pub rto_seconds: f64,
    /// The verify step: every file of the set read and hashed.
    pub verify: String,
    /// Per component.
    pub components: Vec<ComponentResult>,
    /// `[[drill.check]]` results.
    pub checks: Vec<CheckResult>,
    /// `--keep`: how to reach what was left, and how to remove it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    /// What the drill removed that an earlier, killed drill had left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleaned: Vec<String>,
    /// The report's snapshot id in the repository (none: storing it
    /// failed, see the warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
}

impl Report {
    /// Components that failed (not refused).
    #[must_use]
    pub fn failed(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|c| c.state == "failed")
            .map(named)
            .chain(
                self.checks
                    .iter()
                    .filter(|c| !c.ok)
                    .map(|c| format!("check `{}`: {}", c.name, c.detail)),
            )
            .collect()
    }

    /// Components refused.
    #[must_use]
    pub fn refused(&self) -> Vec<String> {
        self.components
            .iter()
            .filter(|c| c.state == "refused")
            .map(named)
            .collect()
    }

    /// The error a failed drill ends with: verification (exit 3) when any
    /// component's data or check failed, refused (exit 4) when it could
    /// only not be restored here; `None` when it passed.
    #[must_use]
    pub fn error(&self) -> Option<Error> {
        let failed = self.failed();
        if !failed.is_empty() {
            return Some(Error::Verification(format!(
                "drill of set `{}` failed: {}",
                self.set,
                failed.join("; ")
            )));
        }
        let refused = self.refused();
        (!refused.is_empty()).then(|| {
            Error::Refused(format!(
                "drill of set `{}` could not restore: {}",
                self.set,
                refused.join("; ")
            ))
        })
    }

    /// The report as Markdown (`drill.md`).
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# Restore drill {}\n\n- Stack: `{}`\n- Set: `{}` (snapshot {}, tier {})\n- Time: {} on {}\n- Result: **{}**\n- Time to restore (RTO): {:.1} s\n- Verify: {}\n\n| Component | Result | Restore | Restored | Checked |\n|---|---|---|---|---|\n",
            self.id,
            self.stack,
            self.set,
            &self.snapshot[..self.snapshot.len().min(8)],
            self.tier,
            self.time,
            self.host,
            if self.ok { "PASSED" } else { "FAILED" },
            self.rto_seconds,
            self.verify,
        );
        for c in &self.components {
            s.push_str(&format!(
                "| {} | {} | {:.1} s | {} | {} |\n",
                c.component,
                c.state,
                c.restore_seconds,
                c.restored.replace('|', "\\|"),
                c.checked.replace('|', "\\|")
            ));
        }
        if !self.checks.is_empty() {
            s.push_str("\n| Check | Result | Detail |\n|---|---|---|\n");
            for c in &self.checks {
                s.push_str(&format!(
                    "| {} | {} | {} |\n",
                    c.name,
                    if c.ok { "ok" } else { "FAILED" },
                    c.detail.replace('|', "\\|")
                ));
            }
        }
        s.push_str("\nA drill proves that the set reads back whole, that every component restores with the tools and credentials of this machine, and that the restored data matches the manifest (checksums, row counts, migration state, key counts, image IDs). It does not prove that the application runs on it, unless a `[[drill.check]]` says so.\n");
        s
    }
}

/// A component's failure, naming it once.
fn named(c: &ComponentResult) -> String {
    if c.checked.starts_with(&format!("{}: ", c.component)) {
        c.checked.clone()
    } else {
        format!("{}: {}", c.component, c.checked)
    }
}

/// The marker of a drill, written before it creates anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    id: String,
    pid: u32,
    stack: String,
    set: String,
    started: String,
    #[serde(default)]
    kept: bool,
}

/// `<state>/drill`.
fn drills_dir(cfg: &Config) -> Result<PathBuf> {
    let d = crate::system::state::of(cfg)?.join("drill");
    std::fs::create_dir_all(&d).map_err(|e| Error::io("creating", &d, e))?;
    Ok(d)
}

fn write_marker(dir: &Path, m: &Marker) -> Result<()> {
    use std::io::Write;
    let path = dir.join("marker.json");
    let tmp = dir.join("marker.json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("writing", &tmp, e))?;
    f.write_all(&serde_json::to_vec_pretty(m).unwrap_or_default())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| Error::io("writing", &path, e))
}

/// The process `pid` is this one, or alive.
fn alive(pid: u32) -> bool {
    pid == std::process::id()
        || i32::try_from(pid).is_ok_and(|p| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None)
                != Err(nix::errno::Errno::ESRCH)
        })
}

/// Removes what earlier drills of `cfg`'s stack left on this machine: of
/// every marker whose process is gone (and, with `kept`, also of drills
/// left with `--keep`), every resource named after its id, then its
/// directory. Returns what was removed.
pub fn clean(cfg: &Config, kept: bool) -> Result<Vec<String>> {
    let dir = drills_dir(cfg)?;
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))?;
    for e in entries.flatten() {
        let path = e.path();
        let Some(id) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !valid_id(&id) {
            continue;
        }
        let marker: Option<Marker> = std::fs::read(path.join("marker.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(m) = &marker {
            if m.stack != cfg.stack.name.0 || alive(m.pid) || (m.kept && !kept) {
                continue;
            }
        }
        let scratch = Scratch {
            cfg,
            id: id.clone(),
            dir: path.clone(),
        };
        for k in KINDS {
            removed.extend(k.drill_clean(&scratch)?);
        }
        remove_dir(&path)?;
        removed.push(format!("directory {}", path.display()));
    }
    Ok(removed)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 20
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A new drill id: the time and a random part, lowercase letters and digits.
fn new_id() -> String {
    let mut r = [0u8; 3];
    let _ = getrandom::fill(&mut r);
    let secs = jiff::Timestamp::now().as_second();
    format!(
        "{}{}",
        to_base36(u64::try_from(secs).unwrap_or(0)),
        hex::encode(r)
    )
}

fn to_base36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Runs a drill. Takes a shared lock in the repository (as a restore
/// does: it blocks neither a restore nor a backup, only prune) and not the
/// local process lock. `progress` gets one
/// line per step. The report is returned whether the drill passed or not
/// ([`Report::error`] says); an `Err` means it could not run.
pub fn run(cfg: &Config, env: &Env, req: &Request, progress: &dyn Fn(&str)) -> Result<Report> {
    // Only the repository's shared lock: the local process lock is
    // exclusive, and holding it for a whole drill would make a restore on
    // this machine wait for the drill (decision 0021).
    let _lock = crate::restic_lock::acquire(
        crate::repository::open(cfg, &crate::repository::password(cfg, env)?)?,
        &crate::repository::Location::of(cfg),
        Mode::Shared,
        "stack-backup drill",
        cfg.repository.lock_wait(),
    )?;
    let cleaned = clean(cfg, false)?;
    for c in &cleaned {
        progress(&format!("removed {c} (left by an earlier drill)"));
    }
    let started = Instant::now();
    let repo = crate::repository::open_indexed(cfg, env)?;
    let stack = cfg.stack.name.0.clone();
    let (set, snap) = match &req.name {
        Some(n) => crate::sets::find(&repo, &stack, n)?,
        None => crate::sets::list(&repo, &stack)?
            .into_iter()
            .rev()
            .find(|(b, _)| b.tier == Tier::Backups)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "stack `{stack}` has no set of tier `backups` to drill; name one"
                ))
            })?,
    };
    let (manifest, checksums) = crate::restore::read_set(&repo, &set, &snap)?;
    check_manifest(&manifest).map_err(Error::Verification)?;
    let id = new_id();
    let dir = drills_dir(cfg)?.join(&id);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("creating", &dir, e))?;
    }
    let mut marker = Marker {
        id: id.clone(),
        pid: std::process::id(),
        stack: stack.clone(),
        set: set.name.clone(),
        started: jiff::Timestamp::now().to_string(),
        kept: false,
    };
    write_marker(&dir, &marker)?;
    progress(&format!(
        "drill {id} of set `{}` ({}): scratch in {}",
        set.name,
        set.short_id(),
        dir.display()
    ));
    let scratch = Scratch {
        cfg,
        id: id.clone(),
        dir: dir.clone(),
    };
    let ctx = SetContext::new(&repo, cfg, &snap, &manifest, &checksums);
    let mut results: Vec<ComponentResult> = Vec::new();
    let mut drills: Vec<Box<dyn Drilled>> = Vec::new();
    for (cid, record) in &manifest.components {
        match cid.kind().drill(&scratch, cid, record)? {
            Some(d) => drills.push(d),
            None => results.push(ComponentResult {
                component: cid.to_string(),
                ok: true,
                state: "not-drilled".into(),
                restore_seconds: 0.0,
                restored: String::new(),
                checked: "not in the config: not drilled".into(),
            }),
        }
    }
    crate::system::fault::point("drill-marker-written")?;
    if let Err(e) = disk_check(cfg, &ctx, &drills) {
        // Nothing was created yet: the marker goes with the refusal.
        let _ = remove_dir(&dir);
        return Err(e);
    }
    let ids: Vec<ComponentId> = drills.iter().map(|d| d.id().clone()).collect();
    let (verify, bad) = verify(&ctx, &ids);
    progress(&format!("verify: {verify}"));
    let mut outcome = execute(&ctx, &mut drills, &bad, progress);
    let rto = started.elapsed().as_secs_f64();
    results.append(&mut outcome);
    results.sort_by(|a, b| a.component.cmp(&b.component));
    let env_vars: Vec<(String, String)> = drills.iter().flat_map(|d| d.env()).collect();
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.ok && r.state != "not-drilled")
        .map(|r| r.component.as_str())
        .collect();
    let checks = run_checks(&scratch, &drills, &env_vars, &failed, progress);
    crate::system::fault::point("drill-checked")?;
    let mut report = Report {
        id: id.clone(),
        stack: stack.clone(),
        set: set.name.clone(),
        snapshot: set.id.clone(),
        tier: set.tier,
        time: marker.started.clone(),
        host: host(),
        ok: false,
        rto_seconds: rto,
        verify,
        components: results,
        checks,
        kept: Vec::new(),
        cleaned,
        stored: None,
    };
    report.ok = report.error().is_none();
    if req.keep {
        marker.kept = true;
        write_marker(&dir, &marker)?;
        report.kept = kept(&drills, &id, &dir);
    } else {
        remove_all(&mut drills, &id, &dir)?;
    }
    match store(cfg, &repo, &report, &snap) {
        Ok(sid) => report.stored = Some(sid),
        Err(e) => log::warn!("the drill report could not be stored in the repository: {e}"),
    }
    crate::records::write_drill(cfg, &stack, &record_of(&report));
    Ok(report)
}

/// Runs the `[[drill.check]]` entries against the scratch resources; none
/// runs when a component did not restore (`failed`): a check would fail on
/// what is missing and hide the cause.
fn run_checks(
    scratch: &Scratch,
    drills: &[Box<dyn Drilled>],
    env_vars: &[(String, String)],
    failed: &[&str],
    progress: &dyn Fn(&str),
) -> Vec<CheckResult> {
    scratch
        .cfg
        .drill
        .check
        .iter()
        .map(|h| {
            let r = if failed.is_empty() {
                run_check(scratch, drills, h, env_vars)
            } else {
                Err(Error::Verification(format!(
                    "not run: {} did not restore",
                    failed.join(", ")
                )))
            };
            progress(&format!(
                "check `{}`: {}",
                h.name,
                r.as_ref()
                    .map_or_else(|e| format!("FAILED: {e}"), Clone::clone)
            ));
            CheckResult {
                name: h.name.clone(),
                ok: r.is_ok(),
                detail: r.unwrap_or_else(|e| e.to_string()),
            }
        })
        .collect()
}

/// `--keep`: how to reach each scratch resource, and how to remove them.
fn kept(drills: &[Box<dyn Drilled>], id: &str, dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = drills
        .iter()
        .map(|d| d.kept())
        .filter(|k| !k.is_empty())
        .collect();
    out.push(format!(
        "remove it all with `stack-backup drill --clean` (drill {id}, {})",
        dir.display()
    ));
    out
}

/// Removes every scratch resource, then the drill's directory (with its
/// marker) only when all of them went: what is left is retried by the
/// next drill or `drill --clean`.
fn remove_all(drills: &mut [Box<dyn Drilled>], id: &str, dir: &Path) -> Result<()> {
    let mut left = Vec::new();
    for d in drills.iter_mut() {
        if let Err(e) = d.remove() {
            left.push(format!("{}: {e}", d.id()));
        }
    }
    if left.is_empty() {
        remove_dir(dir)?;
    } else {
        log::warn!(
            "could not remove all of drill {id} (the next drill or `drill --clean` retries): {}",
            left.join("; ")
        );
    }
    Ok(())
}

/// The local record status reads.
fn record_of(r: &Report) -> DrillRecord {
    DrillRecord {
        time: r.time.clone(),
        set: r.set.clone(),
        ok: r.ok,
        rto_seconds: r.rto_seconds,
        id: Some(r.id.clone()),
        snapshot: Some(r.snapshot.clone()),
        failed: r.failed(),
        report: r.stored.clone(),
    }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Every file of the drilled components read back and hashed, in batches
/// of [`crate::verify::BATCH`] as the set's trees are listed; returns the
/// step's line and the components whose files did not match (with why):
/// those are not restored.
fn verify(set: &SetContext, ids: &[ComponentId]) -> (String, BTreeMap<String, String>) {
    use crate::verify::{hash_drain, BATCH};
    let mut bad: BTreeMap<String, String> = BTreeMap::new();
    // A file several components share (one `docker save` of several
    // images) is read once; its failure is each of theirs. A later user
    // of a file read already is marked from the failures; of one still
    // in the batch, it is found by a scan of the batch (shared files are
    // a few image archives).
    let mut seen: HashSet<String> = HashSet::new();
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let mut batch: Vec<((String, Vec<String>), Node)> = Vec::new();
    let (mut files, mut bytes) = (0usize, 0u64);
    let mut check = |batch: &mut Vec<((String, Vec<String>), Node)>,
                     bad: &mut BTreeMap<String, String>,
                     failed: &mut BTreeMap<String, String>| {
        for ((path, users), hash) in hash_drain(set.repo, batch, false) {
            let why = match hash {
                None => continue,
                Some(Err(e)) => format!("reading {path} failed: {e}"),
                Some(Ok((got, _))) if !set.checksums.matches(&path, &got) => {
                    let want = set.checksums.get(&path).unwrap_or_default();
                    format!("{path} does not match its checksum (expected {want}, read {got})")
                }
                Some(Ok((_, n))) => {
                    bytes += n;
                    continue;
                }
            };
            for c in users {
                bad.entry(c).or_insert_with(|| why.clone());
            }
            failed.insert(path, why);
        }
    };
    for c in ids {
        let listed = set.for_each_file(c, |path, node| {
            if !set.checksums.contains_key(&path) {
                bad.entry(c.to_string())
                    .or_insert_with(|| format!("{path} has no checksum in CHECKSUM.sha256"));
                return Ok(());
            }
            if !seen.insert(path.clone()) {
                if let Some(why) = failed.get(&path) {
                    bad.entry(c.to_string()).or_insert_with(|| why.clone());
                } else if let Some(((_, users), _)) =
                    batch.iter_mut().find(|((p, _), _)| *p == path)
                {
                    users.push(c.to_string());
                }
                return Ok(());
            }
            files += 1;
            batch.push(((path, vec![c.to_string()]), node));
            if batch.len() >= BATCH {
                check(&mut batch, &mut bad, &mut failed);
            }
            Ok(())
        });
        if let Err(e) = listed {
            bad.insert(c.to_string(), e.to_string());
        }
    }
    check(&mut batch, &mut bad, &mut failed);
    let line = format!(
        "{files} file(s), {} read back{}",
        crate::disk::human(bytes),
        if bad.is_empty() {
            ", every SHA-256 matches".to_string()
        } else {
            format!("; {} component(s) failed", bad.len())
        }
    );
    (line, bad)
}

/// Refuses ([`Error::Refused`], exit 4) before anything is restored when
/// a filesystem the drill writes to would fall below `min-free-space`: a
/// drill puts a second copy of each database into the live server's data
/// directory, and a full disk there takes the live database down.
fn disk_check(cfg: &Config, set: &SetContext, drills: &[Box<dyn Drilled>]) -> Result<()> {
    let mut needs: BTreeMap<PathBuf, u64> = BTreeMap::new();
    let mut shared = std::collections::BTreeSet::new();
    for d in drills {
        let n = d.disk_needs(set)?;
        if n.is_empty() || d.disk_shared().is_some_and(|k| !shared.insert(k)) {
            continue;
        }
        for (path, bytes) in n {
            *needs.entry(path).or_default() += bytes;
        }
    }
    for (path, need) in &needs {
        crate::disk::ensure(path, *need, cfg.min_free_space())?;
    }
    Ok(())
}

/// Restores and checks every component whose files verified, one after
/// the other on this thread (a temporary `redis-server` lives as long as
/// the thread that started it); the first failure of a component ends
/// that component only.
fn execute(
    set: &SetContext,
    drills: &mut [Box<dyn Drilled>],
    bad: &BTreeMap<String, String>,
    progress: &dyn Fn(&str),
) -> Vec<ComponentResult> {
    drills.sort_by_key(|d| d.lane());
    let mut out = Vec::new();
    for d in drills.iter_mut() {
        let c = d.id().to_string();
        let mut r = ComponentResult {
            component: c.clone(),
            ok: false,
            state: "failed".into(),
            restore_seconds: 0.0,
            restored: String::new(),
            checked: String::new(),
        };
        if let Some(why) = bad.get(&c) {
            r.checked = format!("verify: {why}");
            progress(&format!("{c}: FAILED {}", r.checked));
            out.push(r);
            continue;
        }
        let t = Instant::now();
        let restored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.restore(set)))
            .unwrap_or_else(|_| Err(Error::component(&c, "restoring it panicked")));
        r.restore_seconds = t.elapsed().as_secs_f64();
        let checked = restored.and_then(|line| {
            r.restored = line;
            crate::system::fault::point("drill-restored")?;
            d.check(set)
        });
        match checked {
            Ok(line) => {
                r.ok = true;
                r.state = "ok".into();
                r.checked = line;
                progress(&format!(
                    "{c}: ok ({:.1}s) {}",
                    r.restore_seconds, r.checked
                ));
            }
            Err(e) => {
                if matches!(e, Error::Refused(_)) {
                    r.state = "refused".into();
                }
                r.checked = match e {
                    Error::Verification(m) => m,
                    other => other.to_string(),
                };
                progress(&format!("{c}: {} {}", r.state.to_uppercase(), r.checked));
            }
        }
        out.push(r);
    }
    out
}

/// One `[[drill.check]]`: `sql` on the scratch database of its
/// `postgres`, or a command (no shell; words split on spaces) with the
/// scratch resources in its environment; nothing else (the live app is
/// never checked).
fn run_check(
    scratch: &Scratch,
    drills: &[Box<dyn Drilled>],
    h: &HealthCheck,
    env_vars: &[(String, String)],
) -> Result<String> {
    let fail = |m: String| Error::Verification(format!("drill check `{}`: {m}", h.name));
    if h.sql.is_some() {
        let key = h.postgres.clone().unwrap_or_default();
        let restored = drills
            .iter()
            .any(|d| d.id().prefix() == "postgres" && d.id().name() == key);
        let pg = scratch
            .cfg
            .postgres
            .get(&key)
            .filter(|_| restored)
            .ok_or_else(|| fail(format!("no restored [postgres.{key}] in this drill")))?;
        let mut server = scratch.postgres_server(pg);
        let url = crate::postgres::scratch_database_url(&server, &scratch.database(&key))
            .map_err(fail)?;
        server.url = crate::config::DbUrl::parse(&url).map_err(fail)?;
        server.container = None;
        let mut cfg = scratch.cfg.clone();
        cfg.postgres.insert(key, server);
        return crate::health::run(&cfg, h);
    }
    if let Some(command) = &h.command {
        let words: Vec<&str> = command.split_whitespace().collect();
        let (prog, args) = words
            .split_first()
            .ok_or_else(|| fail("empty command".into()))?;
        return run_command(prog, args, env_vars, h.timeout_seconds).map_err(fail);
    }
    // The config load rejects such a check; never run it as a health
    // check, which would test the live app.
    Err(fail("neither `sql` nor `command`".into()))
}

/// Runs a drill check's program with the allow-listed environment
/// ([`crate::process::command`]: no repository password, no cloud keys)
/// plus the `SB_DRILL_*` variables, in a process group of its own that is
/// killed after `timeout_seconds` (the check then fails, naming the
/// timeout).
fn run_command(
    prog: &str,
    args: &[&str],
    env_vars: &[(String, String)],
    timeout_seconds: u64,
) -> std::result::Result<String, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut child = crate::process::command(prog)
        .args(args)
        .envs(env_vars.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run `{prog}`: {e}"))?;
    // Read on a thread so that a chatty command cannot fill the pipe and
    // stall before the deadline.
    let mut pipe = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(p) = pipe.as_mut() {
            let _ = p.take(1 << 20).read_to_end(&mut b);
        }
        b
    });
    let deadline = Instant::now() + std::time::Duration::from_secs(timeout_seconds);
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if Instant::now() >= deadline {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "`{prog}` did not finish in {timeout_seconds}s (timeout-seconds); killed"
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let err = reader.join().unwrap_or_default();
    if !status.success() {
        let err = String::from_utf8_lossy(&err);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(format!(
            "`{prog}` exited with {status}: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    Ok(format!("`{prog}` ok"))
}

/// Stores the report as its own snapshot: `drill/drill.json` and
/// `drill/drill.md`, tagged so that it is never taken for a set; its
/// description holds the local record's fields (`status` of another
/// machine can read the newest drill from the snapshot list alone).
fn store(cfg: &Config, repo: &Indexed, r: &Report, of: &SnapshotFile) -> Result<String> {
    let location = crate::repository::Location::of(cfg).to_string();
    let repo_err = |what: &str, e: Box<rustic_core::RusticError>| Error::Repository {
        location: location.clone(),
        message: format!("{what}: {}", e.display_log()),
    };
    let json = serde_json::to_vec_pretty(r).unwrap_or_default();
    let md = r.to_markdown().into_bytes();
    let entries = vec![
        bytes_entry("drill/drill.json", json),
        bytes_entry("drill/drill.md", md),
    ];
    let source = StackSource::new(entries, Arc::new(Ledger::new(None)));
    let mut opts = BackupOptions::default();
    opts.parent_opts = ParentOptions::default().force(true);
    let tags = [
        TAG.to_string(),
        format!("stack:{}", r.stack),
        format!("{OF_PREFIX}{}", of.id),
    ]
    .join(",");
    let mut snap = SnapshotOptions::default()
        .add_tags(&tags)
        .and_then(|o| o.to_snapshot())
        .map_err(|e| repo_err("the drill report's snapshot", e))?;
    snap.label = format!("drill of {}", r.set);
    snap.description = serde_json::to_string(&record_of(r)).ok();
    let saved = repo
        .archive(&opts, &source, snap, &[PathBuf::from("/")])
        .map_err(|e| repo_err("storing the drill report", e))?;
    Ok(saved.id.to_string())
}

fn bytes_entry(path: &str, b: Vec<u8>) -> Entry {
    Entry::File(Artifact {
        path: path.to_string(),
        component: "drill".into(),
        content: Content::Bytes(Arc::new(b)),
        reuse_meta: None,
    })
}

/// Whether a snapshot is a drill report of `stack`, and of which set (its
/// snapshot id).
#[must_use]
pub fn report_of(snap: &SnapshotFile, stack: &str) -> Option<String> {
    let tags: Vec<&str> = snap.tags.iter().map(String::as_str).collect();
    if !tags.contains(&TAG) || !tags.contains(&format!("stack:{stack}").as_str()) {
        return None;
    }
    tags.iter()
        .find_map(|t| t.strip_prefix(OF_PREFIX))
        .map(str::to_string)
}

/// The newest drill of `stack` in `snaps`, from its snapshot's
/// description (what [`run`] also writes locally).
#[must_use]
pub fn newest(snaps: &[SnapshotFile], stack: &str) -> Option<DrillRecord> {
    snaps
        .iter()
        .filter(|s| report_of(s, stack).is_some())
        .max_by_key(|s| s.time.clone())
        .and_then(|s| s.description.as_deref())
        .and_then(|d| serde_json::from_str(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_lowercase_and_accepted_by_clean() {
        let id = new_id();
        assert!(valid_id(&id), "{id}");
        assert!(!valid_id("../x") && !valid_id("") && !valid_id("ABC"));
        assert_eq!(to_base36(35), "z");
        assert_eq!(to_base36(36), "10");
    }
}
