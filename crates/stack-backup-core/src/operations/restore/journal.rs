//! The restore journal: what a restore is about to change and where it
//! keeps the originals, written before anything changes and updated at
//! each step, so that a run killed at any moment can be finished
//! ([`Journal::resume`] side) or rolled back by the next one.
//!
//! Durability: the journal is one JSON file in the state directory
//! (`[state] dir`, `STACK_BACKUP_STATE_DIR`, default
//! `/var/lib/stack-backup/<stack>/`), replaced atomically at every update:
//! a temporary file created exclusively (`O_EXCL|O_NOFOLLOW`, mode 0600),
//! written, fsynced, renamed over the journal, and the directory fsynced.
//! A reader sees the previous or the next version, never a torn one.
//!
//! The state directory must be ours alone: owned by our effective user,
//! not a symlink, not writable by group or others; it is created 0700 when
//! missing, and anything else is refused before a restore changes
//! anything (a journal another user could edit would steer the rollback).
//!
//! The journal's id names every temporary a restore makes
//! (`<db>__sb_restore_<id>`, `<dir>.sb-restore-<id>`, a Redis marker
//! key), so that resume and abort find exactly the ones of this run. See
//! `docs/decisions/0013-journaled-restore.md`.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::components::restoring::{JournalEntry, Recorder};
use crate::components::ComponentId;
use crate::config::Config;
use crate::error::{Error, Result};

/// Where the restore stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Components are being replaced or checked; the originals are kept.
    /// An interrupted restore in this phase can be rolled back or redone.
    Restoring,
    /// The restore passed its checks and the originals are being dropped:
    /// only finishing is possible (the originals may be gone already).
    Committing,
}

/// The request a restore was started with (for `--resume`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Requested {
    /// `--only`.
    #[serde(default)]
    pub only: Vec<String>,
    /// `--flush-redis`.
    #[serde(default)]
    pub flush_redis: bool,
    /// `--allow-migration-mismatch`.
    #[serde(default)]
    pub allow_migration_mismatch: bool,
    /// `--restore-role-passwords`.
    #[serde(default)]
    pub restore_role_passwords: bool,
}

/// The journal's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Names this restore's temporaries.
    pub id: String,
    /// The stack.
    pub stack: String,
    /// The set being restored: its name and snapshot id.
    pub set: String,
    /// Its snapshot id.
    pub snapshot: String,
    /// The request.
    pub request: Requested,
    /// The pre-restore set (the state before), if one was taken.
    pub pre_restore: Option<String>,
    /// The phase.
    pub phase: Phase,
    /// The process that wrote it, and when it started.
    pub pid: u32,
    /// RFC 3339.
    pub started: String,
    /// Each component's entry: its target, temporaries and what was
    /// observed before the change (inodes, old image IDs, stopped
    /// containers, the Redis scratch database).
    pub components: BTreeMap<String, JournalEntry>,
}

/// An open journal, updated as the restore goes.
pub struct Journal {
    path: PathBuf,
    record: Mutex<Record>,
}

/// The state directory ([`crate::system::state::of`]: created 0700 when
/// missing; refused when it is a symlink, another user's, or writable by
/// group or others), shared with the process lock.
pub fn ensure_state_dir(cfg: &Config) -> Result<PathBuf> {
    crate::system::state::of(cfg)
}

/// The journal file of `cfg`'s stack, in its checked state directory.
fn journal_path(cfg: &Config) -> Result<PathBuf> {
    Ok(ensure_state_dir(cfg)?.join(format!("restore-{}.journal", cfg.stack.name.0)))
}

/// The interrupted restore of `cfg`'s stack, if its journal exists. A
/// journal that cannot be read is an error (never taken as "none").
pub fn find(cfg: &Config) -> Result<Option<Record>> {
    let path = journal_path(cfg)?;
    let text = match read_nofollow(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading the restore journal", &path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::Refused(format!(
            "the restore journal {} cannot be read ({e}); move it away once the stack was checked by hand",
            path.display()
        ))
    })
}

fn read_nofollow(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s)?;
    Ok(s)
}

/// Removes the temporary files of journal writes that a kill interrupted
/// (before their rename: the journal itself is the previous version).
/// The caller holds the repository lock, so no write is in flight.
pub fn remove_stale_temporaries(cfg: &Config) {
    let prefix = format!("restore-{}.tmp-", cfg.stack.name.0);
    let Ok(entries) = ensure_state_dir(cfg).and_then(|d| {
        std::fs::read_dir(&d).map_err(|e| Error::io("reading the state directory", d, e))
    }) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Refuses (exit 4) while an interrupted restore's journal is open,
/// naming how to resolve it.
pub fn refuse_if_open(cfg: &Config) -> Result<()> {
    match find(cfg)? {
        None => Ok(()),
        Some(r) => Err(Error::Refused(format!(
            "{}; nothing was changed",
            interrupted(&r)
        ))),
    }
}

/// The message naming an interrupted restore and how to resolve it.
#[must_use]
pub fn interrupted(r: &Record) -> String {
    format!(
        "an interrupted restore of set `{}` (journal {}, started {} by pid {}, phase {}) is not resolved: run `stack-backup restore --resume` to finish it or `stack-backup restore --abort` to roll it back",
        r.set,
        r.id,
        r.started,
        r.pid,
        match r.phase {
            Phase::Restoring => "restoring",
            Phase::Committing => "committing",
        }
    )
}

/// A new id: 10 lowercase hex digits (fits a database name's 63 bytes
/// beside a 40-byte base and `__sb_restore_`).
fn new_id() -> Result<String> {
    let mut b = [0u8; 5];
    getrandom::fill(&mut b).map_err(|e| Error::component("restore", format!("random: {e}")))?;
    Ok(hex::encode(b))
}

impl Journal {
    /// Writes a new journal (refused when one is open).
    pub fn create(
        cfg: &Config,
        set: &str,
        snapshot: &str,
        request: Requested,
        pre_restore: Option<String>,
    ) -> Result<Self> {
        refuse_if_open(cfg)?;
        remove_stale_temporaries(cfg);
        let record = Record {
            id: new_id()?,
            stack: cfg.stack.name.0.clone(),
            set: set.to_string(),
            snapshot: snapshot.to_string(),
            request,
            pre_restore,
            phase: Phase::Restoring,
            pid: std::process::id(),
            started: jiff::Timestamp::now().to_string(),
            components: BTreeMap::new(),
        };
        let j = Self {
            path: journal_path(cfg)?,
            record: Mutex::new(record),
        };
        j.write(&j.record.lock().expect("journal"))?;
        Ok(j)
    }

    /// Takes over the open journal of an interrupted restore.
    pub fn reopen(cfg: &Config) -> Result<Option<Self>> {
        let Some(record) = find(cfg)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            path: journal_path(cfg)?,
            record: Mutex::new(record),
        }))
    }

    /// A copy of the content.
    #[must_use]
    pub fn record(&self) -> Record {
        self.record.lock().expect("journal").clone()
    }

    /// Sets the phase, durably.
    pub fn set_phase(&self, phase: Phase) -> Result<()> {
        let mut r = self.record.lock().expect("journal");
        r.phase = phase;
        self.write(&r)
    }

    /// Drops a component's entry (its change was undone), durably.
    pub fn forget(&self, id: &str) -> Result<()> {
        let mut r = self.record.lock().expect("journal");
        r.components.remove(id);
        self.write(&r)
    }

    /// The restore is resolved: the journal goes.
    pub fn close(&self) -> Result<()> {
        std::fs::remove_file(&self.path)
            .map_err(|e| Error::io("removing the restore journal", &self.path, e))?;
        sync_dir(&self.path)
    }

    fn write(&self, r: &Record) -> Result<()> {
        let text = serde_json::to_vec_pretty(r)
            .map_err(|e| Error::component("restore", format!("journal: {e}")))?;
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        // A leftover of a killed write of this same pid (pids are reused).
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io("writing the restore journal", &tmp, e))?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("writing the restore journal", &tmp, e))?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| Error::io("writing the restore journal", &self.path, e))?;
        sync_dir(&self.path)
    }
}

fn sync_dir(file: &Path) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

impl Recorder for Journal {
    fn tag(&self) -> String {
        self.record.lock().expect("journal").id.clone()
    }

    fn record(&self, id: &ComponentId, entry: JournalEntry) -> Result<()> {
        let mut r = self.record.lock().expect("journal");
        r.components.insert(id.to_string(), entry);
        self.write(&r)
    }
}
