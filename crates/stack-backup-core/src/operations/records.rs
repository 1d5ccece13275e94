//! What commands leave behind on this machine for `status`: the last run
//! of each command (time, duration, outcome), the sets each copy target is
//! known to hold, and the newest drill report.
//!
//! Kept in the state directory ([`crate::immaculate::state_dir`], beside
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

use crate::config::Env;
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
}

fn path(env: &Env, stack: &str, ext: &str) -> PathBuf {
    state_dir(env).join(format!("runs-{stack}.{ext}"))
}

/// The records of `stack` (empty when there are none or they are unreadable).
#[must_use]
pub fn load(env: &Env, stack: &str) -> Records {
    std::fs::read(path(env, stack, "json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The newest drill report of `stack`, when a drill has run here.
#[must_use]
pub fn drill(env: &Env, stack: &str) -> Option<DrillRecord> {
    std::fs::read(state_dir(env).join(format!("drill-{stack}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Changes the records under the lock; logs (does not return) a failure.
fn update(env: &Env, stack: &str, change: impl FnOnce(&mut Records)) {
    let file = path(env, stack, "json");
    let res = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(state_dir(env))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path(env, stack, "lock"))?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| std::io::Error::from(e))?;
        let mut r = load(env, stack);
        change(&mut r);
        let tmp = path(env, stack, "json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&r).unwrap_or_default())?;
        std::fs::rename(&tmp, &file)
    })();
    if let Err(e) = res {
        log::warn!("could not record the run in {}: {e}", file.display());
    }
}

/// Records a finished command.
pub fn record_run(env: &Env, stack: &str, run: &RunRecord) {
    update(env, stack, |r| {
        r.runs.insert(run.command.clone(), run.clone());
        if run.outcome == "success" {
            r.successes.insert(run.command.clone(), run.clone());
        }
    });
}

/// Records that `target` holds the sets `ids` (after a copy).
pub fn record_copy(env: &Env, stack: &str, target: &str, ids: impl IntoIterator<Item = String>) {
    update(env, stack, |r| {
        let c = r.copies.entry(target.to_string()).or_default();
        c.time = jiff::Timestamp::now().to_string();
        c.sets.extend(ids);
    });
}
