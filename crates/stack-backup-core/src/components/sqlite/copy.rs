//! The backup's copy: SQLite's online backup API from the live database
//! into a private temporary file of the state directory
//! (`<state>/sqlite-copies/<stack>.<name>.<pid>.sqlite`), measured there and
//! archived as one file.
//!
//! The copy is taken in one step (`sqlite3_backup_step(-1)`): one read
//! transaction, so one point in time. In WAL mode writers go on meanwhile
//! and the copy reads committed pages through the WAL; in rollback-journal
//! mode writers wait (their busy timeout) while it is copied. The
//! temporary is removed once the archive runs ended, on success or not; a
//! killed run's is removed by the next backup (its pid is gone).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::file::{self, Live};
use super::{set_file, SqliteRecord};
use crate::components::{ComponentId, Planned, Record};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::source::{Artifact, Content, Entry};

/// How long the copy waits for a writer holding the database exclusively
/// (rollback-journal mode) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Removes the temporary copy (and a journal SQLite may have left beside
/// it) when dropped.
struct TempCopy(PathBuf);

impl Drop for TempCopy {
    fn drop(&mut self) {
        for p in [self.0.clone(), file::with_suffix(&self.0, "-journal")] {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("could not remove the temporary copy {}: {e}", p.display());
                }
            }
        }
    }
}

/// The directory of the temporary copies (created 0700, checked like the
/// state directory itself).
fn copies_dir(cfg: &Config) -> Result<PathBuf> {
    let state = crate::system::state::of(cfg)?;
    crate::system::state::ensure(&state.join("sqlite-copies"))
}

/// Removes the copies of killed runs: `<stack>.<name>.<pid>.sqlite[-journal]`
/// whose process is gone, and this component's own name under this pid
/// (a killed run whose pid this process reuses: this component's copy is
/// made once per run, so one there now is not this run's). Another
/// component's copy under this pid is this run's (every component is
/// planned before any is archived) and is left alone.
fn clean_stale(dir: &Path, stack: &str, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id().to_string();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().to_string();
        let Some(rest) = file.strip_prefix(&format!("{stack}.")) else {
            continue;
        };
        let base = rest
            .strip_suffix(".sqlite")
            .or_else(|| rest.strip_suffix(".sqlite-journal"));
        let Some((component, pid)) = base.and_then(|b| b.rsplit_once('.')) else {
            continue;
        };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stale = if pid == me {
            component == name
        } else {
            !Path::new("/proc").join(pid).exists()
        };
        if stale {
            log::info!("removing {}, left by a killed backup", e.path().display());
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Copies the live database, measures the copy and returns the plan that
/// archives it.
pub fn plan(cfg: &Config, id: &ComponentId, live: &Live) -> Result<Planned> {
    let (size, md) = file::check_file(&live.path, id.as_str(), true)?;
    let wal =
        std::fs::symlink_metadata(file::with_suffix(&live.path, "-wal")).map_or(0, |m| m.len());
    let dir = copies_dir(cfg)?;
    let stack = &cfg.stack.name.0;
    clean_stale(&dir, stack, id.name());
    crate::disk::ensure(&dir, size + wal, cfg.min_free_space())?;
    let temp = dir.join(format!(
        "{stack}.{}.{}.sqlite",
        id.name(),
        std::process::id()
    ));
    drop(crate::system::state::create_private(&temp)?);
    let guard = TempCopy(temp.clone());

    let src = live.open_read_only()?;
    let journal_mode = file::pragma_text(id, &src, "journal_mode")?;
    let took = copy(id, &src, &temp)?;
    drop(src);
    crate::system::fault::point("sqlite-copied")?;

    let record = measure(id, &temp, live, &md, journal_mode)?;
    log::info!(
        "{id}: copied {} ({} pages) in {took:.1?}",
        crate::disk::human(record.bytes),
        record.page_count
    );
    let entry = Entry::File(Artifact {
        path: record.file.clone(),
        component: id.to_string(),
        content: Content::LocalFile(temp),
        reuse_meta: None,
    });
    let estimate = record.bytes;
    let mut planned = Planned::new(Record::Sqlite(record), vec![entry], estimate);
    planned.finish = Some(Box::new(move |_| {
        drop(guard);
        Ok(())
    }));
    Ok(planned)
}

/// The online backup of `src` into the (empty) file `dest`, in one step;
/// retried while a writer holds the database exclusively.
fn copy(id: &ComponentId, src: &Connection, dest: &Path) -> Result<Duration> {
    let fail = |e: rusqlite::Error| Error::component(id.as_str(), format!("backup API: {e}"));
    let start = Instant::now();
    let mut to = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    {
        let backup = Backup::new(src, &mut to).map_err(fail)?;
        loop {
            match backup.step(-1).map_err(fail)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    if start.elapsed() > BUSY_TIMEOUT {
                        return Err(Error::component(
                            id.as_str(),
                            format!(
                                "the database stayed locked by a writer for {}s; nothing was copied",
                                BUSY_TIMEOUT.as_secs()
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {}
            }
        }
    }
    to.close().map_err(|(_, e)| fail(e))?;
    Ok(start.elapsed())
}

/// The record of a copy: its pages, hash, user version, rows per table
/// and migrations, all read from the copy itself.
fn measure(
    id: &ComponentId,
    temp: &Path,
    live: &Live,
    md: &std::fs::Metadata,
    journal_mode: String,
) -> Result<SqliteRecord> {
    use std::os::unix::fs::MetadataExt;
    let c = file::open_copy(temp, id.as_str())?;
    let sqlite_version: String = c
        .query_row("SELECT sqlite_version()", [], |r| r.get(0))
        .map_err(|e| Error::component(id.as_str(), e.to_string()))?;
    let page_size = file::pragma_int(id, &c, "page_size")?;
    let page_count = file::pragma_int(id, &c, "page_count")?;
    let user_version = file::pragma_int(id, &c, "user_version")?;
    let tables = file::row_counts(id, &c)?;
    let migrations = file::migrations(id, &c);
    drop(c);
    let (sha256, bytes) = std::fs::File::open(temp)
        .and_then(|mut f| crate::verify::sha256_of(&mut f))
        .map_err(|e| Error::io("reading the copy", temp, e))?;
    Ok(SqliteRecord {
        source: live.shown.clone(),
        file: set_file(id.name()),
        sqlite_version,
        journal_mode,
        page_size: u64::try_from(page_size).unwrap_or(0),
        page_count: u64::try_from(page_count).unwrap_or(0),
        bytes,
        sha256,
        user_version,
        tables,
        migrations,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    })
}
