//! `sqlite.NAME`: one SQLite database file, on the host or inside a Docker
//! named volume.
//!
//! - Backup: SQLite's online backup API copies the live database, in one
//!   read transaction (a consistent point in time; in WAL mode the writers
//!   go on meanwhile, and the copy reads through the WAL), into a private
//!   temporary file of the state directory, which is counted and hashed
//!   there and streamed into the set as one file (`copy.rs`). Never a raw
//!   copy of a file being written.
//! - Restore: the set's copy is written beside the live file, checked
//!   (`PRAGMA integrity_check`, row counts, SHA-256), then renamed over the
//!   live path; the original and its `-wal`/`-shm`/`-journal` are kept
//!   aside until the restore commits (`restore.rs`).
//! - Drill: the same checks on a copy restored under the drill directory.
//!
//! See `docs/decisions/0031-sqlite-component.md`.

mod copy;
mod drill;
mod file;
mod restore;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use restore::{recover, SqliteEntry, SqliteRestorer};

use super::restoring::Restore;
use super::{wrong_record, BackupContext, ComponentId, Kind, Planned, Record, Stack};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, MigrationState};

/// `[sqlite.NAME]`: where the database file is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SqliteConfig {
    /// The database file: an absolute host path, or (with `volume`) a
    /// path relative to the volume's root.
    pub path: PathBuf,
    /// A Docker named volume the file is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
}

/// Checks the shape of `[sqlite.NAME]` at config load: an absolute,
/// normalised path, or a relative one made of plain names inside a volume.
pub fn check_config(c: &SqliteConfig) -> std::result::Result<(), String> {
    use std::path::Component;
    if let Some(v) = &c.volume {
        crate::config::validate_name(v).map_err(|m| format!("volume {m}"))?;
    }
    let plain = |skip_root: bool| {
        c.path.components().all(|p| match p {
            Component::Normal(_) => true,
            Component::RootDir => skip_root,
            _ => false,
        })
    };
    match &c.volume {
        None if !c.path.is_absolute() || !plain(true) => Err(format!(
            "`{}` must be an absolute path without `.` or `..` (or set `volume` and give the path inside it)",
            c.path.display()
        )),
        Some(v) if c.path.is_absolute() || !plain(false) || c.path.as_os_str().is_empty() => {
            Err(format!(
                "`{}` must be a path relative to the root of volume `{v}`, without `.` or `..`",
                c.path.display()
            ))
        }
        _ => Ok(()),
    }
}

/// `sqlite.NAME`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SqliteRecord {
    /// The live file backed up (a host path, or `VOLUME:relative/path`).
    pub source: String,
    /// The copy in the set.
    pub file: String,
    /// The library that made the copy (`sqlite_version()`).
    pub sqlite_version: String,
    /// `PRAGMA journal_mode` of the live database (`wal`, `delete`…).
    pub journal_mode: String,
    /// `PRAGMA page_size` of the copy.
    pub page_size: u64,
    /// `PRAGMA page_count` of the copy.
    pub page_count: u64,
    /// Bytes of the copy.
    pub bytes: u64,
    /// SHA-256 of the copy (hex).
    pub sha256: String,
    /// `PRAGMA user_version` of the copy.
    pub user_version: i64,
    /// Rows per table, counted on the copy (so consistent with it).
    pub tables: BTreeMap<String, u64>,
    /// Applied migrations of the known tools found in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<MigrationState>,
    /// Mode, owner and group of the live file (a restore that creates the
    /// file gives it these).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
}

/// The set path of the copy of `[sqlite.NAME]`.
#[must_use]
pub fn set_file(name: &str) -> String {
    format!("sqlite/{name}/database.sqlite")
}

/// The kind `sqlite`.
pub struct Sqlite;

/// The config of `[sqlite.NAME]` for a component id.
fn configured<'c>(cfg: &'c Config, id: &ComponentId) -> Result<&'c SqliteConfig> {
    cfg.sqlite
        .get(id.name())
        .ok_or_else(|| Error::component(id.as_str(), "not in the config"))
}

fn record<'r>(id: &ComponentId, r: &'r Record) -> Result<&'r SqliteRecord> {
    match r {
        Record::Sqlite(s) => Ok(s),
        _ => Err(wrong_record(id)),
    }
}

impl Kind for Sqlite {
    fn prefix(&self) -> &'static str {
        "sqlite"
    }

    fn is_database(&self) -> bool {
        true
    }

    fn configured(&self, stack: &Stack) -> Vec<String> {
        stack.cfg.sqlite.keys().cloned().collect()
    }

    /// The file exists, is readable and is SQLite (magic bytes); its
    /// journal mode; free space in the state directory for the copy.
    fn doctor(&self, stack: &Stack, id: &ComponentId) -> Result<String> {
        let live = file::Live::resolve(id, configured(stack.cfg, id)?)?;
        let bytes = live.check_file()?;
        let conn = live.open_read_only()?;
        let mode = file::pragma_text(id, &conn, "journal_mode")?;
        let state = crate::system::state::of(stack.cfg)?;
        let space = crate::disk::available(&state)?;
        let want = bytes.saturating_add(stack.cfg.min_free_space());
        if space.available < want {
            return Err(Error::Refused(format!(
                "{id}: {} free in {}, the copy of {} needs {} (with the `min-free-space` floor)",
                crate::disk::human(space.available),
                state.display(),
                live.path.display(),
                crate::disk::human(want)
            )));
        }
        Ok(format!(
            "{}: SQLite, {}, journal mode {mode}; {} free for the copy",
            live.shown,
            crate::disk::human(bytes),
            crate::disk::human(space.available)
        ))
    }

    fn plan_backup(&self, ctx: &BackupContext, id: &ComponentId) -> Result<Option<Planned>> {
        let cfg = configured(ctx.stack.cfg, id)?;
        let live = match file::Live::resolve(id, cfg) {
            Err(e) if e.is_missing() => return Err(e),
            r => r?,
        };
        // The pre-restore set of a restore that replaces a broken file
        // (not SQLite, or so corrupt SQLite cannot copy it) leaves it out
        // rather than failing the restore that is there to repair it; the
        // restore keeps the file itself aside until it ends. Only a file
        // SQLite itself calls no database or corrupt: one that cannot be
        // copied now (busy, permission, a hot journal) fails the restore,
        // which would otherwise remove it without a safety copy.
        let broken = |why: String| {
            Error::missing(
                id.as_str(),
                format!(
                    "{} cannot be read as a database ({why}); the restore keeps the file itself until it ends",
                    live.shown
                ),
            )
        };
        if ctx.replacing {
            if let Err(e @ Error::Refused(_)) = live.check_file() {
                return Err(broken(e.to_string()));
            }
        }
        match copy::plan(ctx.stack.cfg, id, &live) {
            Err(e @ Error::Component { .. }) if ctx.replacing => {
                Err(file::broken(&live.path).map_or(e, broken))
            }
            r => r.map(Some),
        }
    }

    fn restorer(
        &self,
        cfg: &Config,
        _opts: &super::RestoreOptions,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Restore> {
        let Some(c) = cfg.sqlite.get(id.name()) else {
            return Ok(Restore::Skip("not in the config".into()));
        };
        Ok(Restore::Into(Box::new(SqliteRestorer::new(
            id.clone(),
            record(id, r)?.clone(),
            c.clone(),
        ))))
    }

    fn drill(
        &self,
        scratch: &super::Scratch,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Option<Box<dyn super::Drilled>>> {
        Ok(Some(Box::new(drill::SqliteDrill::new(
            scratch,
            id,
            record(id, r)?.clone(),
        ))))
    }

    fn drill_clean(&self, scratch: &super::Scratch) -> Result<Vec<String>> {
        drill::clean(scratch)
    }

    fn describe(&self, r: &Record) -> (String, String) {
        let Record::Sqlite(s) = r else {
            return (String::new(), String::new());
        };
        (
            format!("SQLite `{}`", s.source),
            format!(
                "{} tables, {} rows, {}, user_version {}",
                s.tables.len(),
                s.tables.values().sum::<u64>(),
                crate::disk::human(s.bytes),
                s.user_version
            ),
        )
    }

    fn export_path(&self, _m: &Manifest, id: &ComponentId, _set_path: &str) -> (String, bool) {
        (
            format!(
                "sqlite/{}.sqlite",
                crate::manifest::safe_file_name(id.name())
            ),
            false,
        )
    }

    fn export_howto(&self, _m: &Manifest, r: &Record, path_of: &dyn Fn(&str) -> String) -> String {
        let Record::Sqlite(s) = r else {
            return String::new();
        };
        let copy = path_of(&s.file);
        format!(
            "SQLite database `{}` ({} tables, {} rows; SHA-256 {}). A consistent copy\n\
             made with SQLite's backup API. Into a database that may be open, with the\n\
             sqlite3 shell (it writes through SQLite's locks and the WAL):\n\n    \
             sqlite3 /path/to/app.db \".restore '{copy}'\"\n\n\
             Or with the application stopped: remove the live file's `-wal`, `-shm` and\n\
             `-journal` files (a stale WAL beside the new file would corrupt it), then\n\n    \
             cp {copy} /path/to/app.db && sqlite3 /path/to/app.db 'PRAGMA integrity_check'\n",
            s.source,
            s.tables.len(),
            s.tables.values().sum::<u64>(),
            s.sha256,
        )
    }
}
