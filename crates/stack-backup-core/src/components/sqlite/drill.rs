//! A drill of a SQLite database: the set's copy written to
//! `<drill dir>/sqlite/<component>.sqlite`, with the restore's checks
//! (SHA-256, `PRAGMA integrity_check`, row counts, `user_version`).

use std::path::PathBuf;

use super::restore::{check, write_checked};
use super::SqliteRecord;
use crate::components::drilling::{env_name, remove_dir, Drilled, Scratch};
use crate::components::restoring::{Lane, SetContext};
use crate::components::{ComponentId, DiskNeeds};
use crate::error::{Error, Result};

/// The set's copy in a scratch file.
pub struct SqliteDrill {
    id: ComponentId,
    record: SqliteRecord,
    dir: PathBuf,
}

/// The scratch directory of every SQLite drill of `scratch`.
fn dir_of(scratch: &Scratch) -> PathBuf {
    scratch.dir.join("sqlite")
}

impl SqliteDrill {
    /// Restores `record` under `scratch`'s directory.
    #[must_use]
    pub fn new(scratch: &Scratch, id: &ComponentId, record: SqliteRecord) -> Self {
        Self {
            id: id.clone(),
            record,
            dir: dir_of(scratch),
        }
    }

    fn file(&self) -> PathBuf {
        self.dir.join(format!("{}.sqlite", self.id.as_str()))
    }
}

impl Drilled for SqliteDrill {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn lane(&self) -> Lane {
        Lane::Files
    }

    fn restore(&mut self, set: &SetContext) -> Result<String> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&self.dir)
            .map_err(|e| Error::io("creating the scratch directory", &self.dir, e))?;
        let file = self.file();
        write_checked(set, &self.id, &self.record, &file, None)?;
        Ok(format!(
            "{} into {}",
            crate::disk::human(self.record.bytes),
            file.display()
        ))
    }

    fn check(&mut self, _set: &SetContext) -> Result<String> {
        check(&self.id, &self.record, &self.file())
    }

    fn disk_needs(&self, _set: &SetContext) -> Result<DiskNeeds> {
        Ok(vec![(self.dir.clone(), self.record.bytes)])
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(
            env_name("SB_DRILL_SQLITE_", self.id.name()),
            self.file().display().to_string(),
        )]
    }

    fn remove(&mut self) -> Result<()> {
        let file = self.file();
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("removing the scratch file", &file, e))
            }
            _ => Ok(()),
        }
    }

    fn kept(&self) -> String {
        format!("{}: {}", self.id, self.file().display())
    }
}

/// Removes what the drill `scratch.id` left of SQLite databases.
pub fn clean(scratch: &Scratch) -> Result<Vec<String>> {
    let dir = dir_of(scratch);
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(Vec::new());
    }
    remove_dir(&dir)?;
    Ok(vec![dir.display().to_string()])
}
