//! What commands leave behind on this machine for `status`: the last run
//! of each command (time, duration, outcome), the sets each copy target is
//! known to hold, and the newest drill report.
//!
//! Kept in the state directory ([`crate::system::state`], beside
//! `verifications.json`) as `runs-<stack>.json`, never in the repository:
//! status must answer without writing to, or reading packs from, the
//! repository, and a backup set is never rewritten. The file is replaced
//! atomically (written beside, renamed) under an exclusive `flock` on
//! `runs-<stack>.lock`, so two commands finishing together both land. A
//! failure to record is logged, never fatal: the command's own outcome
//! stands. See `docs/decisions/0019-status-from-snapshots-and-local-records.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::immaculate::state_dir;

/// One finished command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// The command (`backup`, `verify`, `immaculate verify`, …).
    pub command: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// How long it ran.
    pub duration_seconds: f64,
    /// `success` or `failure`.
    pub outcome: String,
    /// The process exit code.
    pub exit_code: u8,
    /// The set it made or worked on, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
}

impl RunRecord {
    /// Whether the run succeeded (`outcome` is `success`).
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.outcome == "success"
    }
}

/// The sets one copy target is known to hold (copied or found there).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopyRecord {
    /// The last copy to it (RFC 3339).
    pub time: String,
    /// Snapshot ids of the source's sets the target holds.
    pub sets: BTreeSet<String>,
}

/// Everything recorded for one stack.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Records {
    /// The last run of each command.
    #[serde(default)]
    pub runs: BTreeMap<String, RunRecord>,
    /// The last successful run of each command.
    #[serde(default)]
    pub successes: BTreeMap<String, RunRecord>,
    /// Copy targets (as shown: no secret) and what they hold.
    #[serde(default)]
    pub copies: BTreeMap<String, CopyRecord>,
}

/// A drill's report, as the drill command is to leave it: the newest one
/// in `drill-<stack>.json` in the state directory (written beside and
/// renamed). Status reads it when it exists and says "no drill yet"
/// otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillRecord {
    /// When the drill ran (RFC 3339).
    pub time: String,
    /// The set restored.
    pub set: String,
    /// Whether every check passed in the scratch target.
    pub ok: bool,
    /// Seconds from the start of the restore to the stack answering.
    pub rto_seconds: f64,
    /// The drill's id (absent in records written before drills existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The set's snapshot id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// What failed, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    /// The report's snapshot id in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

fn path(cfg: &Config, stack: &str, ext: &str) -> crate::error::Result<PathBuf> {
    Ok(state_dir(cfg)?.join(format!("runs-{stack}.{ext}")))
}

/// The records of `stack` (empty when there are none or they are unreadable).
#[must_use]
pub fn load(cfg: &Config, stack: &str) -> Records {
    path(cfg, stack, "json")
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The newest drill report of `stack`, when a drill has run here.
#[must_use]
pub fn drill(cfg: &Config, stack: &str) -> Option<DrillRecord> {
    state_dir(cfg)
        .ok()
        .and_then(|d| std::fs::read(d.join(format!("drill-{stack}.json"))).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Replaces the newest drill report of `stack` (written beside and
/// renamed); logs (does not return) a failure.
pub fn write_drill(cfg: &Config, stack: &str, rec: &DrillRecord) {
    let res = state_dir(cfg).and_then(|d| {
        let file = d.join(format!("drill-{stack}.json"));
        let tmp = d.join(format!("drill-{stack}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(rec).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|e| crate::error::Error::io("writing", &file, e))
    });
    if let Err(e) = res {
        log::warn!("could not record the drill: {e}");
    }
}

/// Changes the records under the lock; logs (does not return) a failure.
fn update(cfg: &Config, stack: &str, change: impl FnOnce(&mut Records)) {
    let res = (|| -> crate::error::Result<()> {
        let file = path(cfg, stack, "json")?;
        let lock_path = path(cfg, stack, "lock")?;
        let lock = crate::system::state::create_private(&lock_path)?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| crate::error::Error::io("locking", &lock_path, e.into()))?;
        let mut r = load(cfg, stack);
        change(&mut r);
        let tmp = path(cfg, stack, "json.tmp")?;
        std::fs::write(&tmp, serde_json::to_vec_pretty(&r).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|e| crate::error::Error::io("writing", &file, e))
    })();
    if let Err(e) = res {
        log::warn!("could not record the run: {e}");
    }
}

/// Records a finished command.
pub fn record_run(cfg: &Config, stack: &str, run: &RunRecord) {
    update(cfg, stack, |r| {
        r.runs.insert(run.command.clone(), run.clone());
        if run.succeeded() {
            r.successes.insert(run.command.clone(), run.clone());
        }
    });
}

/// Records that `target` holds the sets `ids` (after a copy).
pub fn record_copy(cfg: &Config, stack: &str, target: &str, ids: impl IntoIterator<Item = String>) {
    update(cfg, stack, |r| {
        let c = r.copies.entry(target.to_string()).or_default();
        c.time = jiff::Timestamp::now().to_string();
        c.sets.extend(ids);
    });
}
