//! Restoring a SQLite database file: written beside the live file,
//! checked, renamed over it; the original kept aside until the restore
//! commits.
//!
//! With `<db>` the live file and `<id>` the journal's id:
//!
//! 1. `<db>.sb-restore-<id>` is created exclusively (`O_EXCL|O_NOFOLLOW`)
//!    and filled from the set, hashed on the way (the manifest's SHA-256),
//!    fsynced, given the live file's mode and owner, opened immutable and
//!    checked: `PRAGMA integrity_check` is `ok`, the row count of every
//!    table is the manifest's. Nothing live has changed yet.
//! 2. `<db>.sb-old-<id>` is made a second hard link of the live file;
//!    the live file's `-wal`, `-shm` and `-journal` (those found, named in
//!    the journal first; also when the database itself is missing) are
//!    renamed to `<db>.sb-old-<id>-wal`… (they belong to the original: a
//!    stale WAL or hot journal beside the restored file would be replayed
//!    into it and corrupt it). The live path still exists throughout.
//! 3. `rename(<db>.sb-restore-<id>, <db>)`: one atomic step, then the
//!    directory is fsynced.
//!
//! The journal entry holds the inodes of the original and of the staged
//! copy: after a crash the inode at `<db>` tells which one is live, and
//! [`recover`] puts the original and its sidecars back (abort) or drops
//! them (finish), whichever step the crash came in, never by guessing.
//!
//! Another process writing the database during a restore would write into
//! the original's inode (kept aside, then removed) and lose those writes,
//! or, in rollback-journal mode, leave a hot journal of the original beside
//! the restored file. So a restore is refused while any process this user
//! can see (all of them, as root) holds the file or its WAL open; the
//! containers that use the volume of a `volume =` database are stopped
//! first when `[docker] stop-containers` is on (and started again after).
//! A process that opens the database after that check, during the
//! restore, is not stopped: stop the application first.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::file::{self, Live, SIDECARS};
use super::{SqliteConfig, SqliteRecord};
use crate::components::restoring::{
    Applied, JournalEntry, Lane, MigrationReport, Recover, Restorer, SetContext, UndoContext,
};
use crate::components::{ComponentId, DiskNeeds};
use crate::docker::StoppedContainers;
use crate::error::{Error, Result};

/// A SQLite restore in the journal: the three names and the inodes that
/// tell, after a crash, which file is where.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SqliteEntry {
    /// The live database file.
    pub live: PathBuf,
    /// `<live>.sb-restore-<id>`: the restored copy until the swap.
    pub staging: PathBuf,
    /// `<live>.sb-old-<id>`: the original (and its sidecars) after it.
    pub aside: PathBuf,
    /// The inode of the live file before (none: the restore creates it).
    pub live_ino: Option<u64>,
    /// The inode of the staged copy once created.
    #[serde(default)]
    pub staging_ino: Option<u64>,
    /// Containers stopped for the swap (started again when resolved).
    #[serde(default)]
    pub containers: Vec<String>,
    /// The sidecars (`-wal`…) found beside the live file and moved beside
    /// `aside` by the swap, journaled before it: only these are put back
    /// (none: a journal written before this was recorded, every sidecar).
    #[serde(default)]
    pub moved: Option<Vec<String>>,
}

impl SqliteEntry {
    /// The sidecars the swap moves (or moved) aside.
    fn moved(&self) -> Vec<&str> {
        self.moved.as_ref().map_or_else(
            || SIDECARS.to_vec(),
            |m| m.iter().map(String::as_str).collect(),
        )
    }

    /// Whether the live path is as it was before the restore: the
    /// original's inode, or nothing when there was none.
    fn original_in_place(&self) -> bool {
        ino(&self.live) == self.live_ino
    }
}

/// The set's copy into the live file of `[sqlite.NAME]`.
pub struct SqliteRestorer {
    id: ComponentId,
    record: SqliteRecord,
    target: SqliteConfig,
    /// The inode of the restored file, for the post-check.
    restored: Mutex<Option<u64>>,
}

impl SqliteRestorer {
    /// Restores `record` into the file `target` names.
    #[must_use]
    pub fn new(id: ComponentId, record: SqliteRecord, target: SqliteConfig) -> Self {
        Self {
            id,
            record,
            target,
            restored: Mutex::new(None),
        }
    }

    fn live(&self) -> Result<Live> {
        Live::resolve(&self.id, &self.target)
    }

    /// Refuses while another process holds the file (or its WAL) open.
    fn refuse_holders(&self, live: &Live) -> Result<()> {
        let held = file::holders(&[live.path.clone(), file::with_suffix(&live.path, "-wal")]);
        if held.is_empty() {
            return Ok(());
        }
        Err(Error::Refused(format!(
            "{}: {} is open in process {}: stop the application first (its writes would go to the replaced file and be lost); nothing was changed",
            self.id,
            live.shown,
            held.join(", ")
        )))
    }
}

/// The inode at `p` itself (not following a symlink).
fn ino(p: &Path) -> Option<u64> {
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// Whether `p` is a regular file (not a symlink to one).
fn regular(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
}

/// `<live>.<suffix>`.
fn beside(live: &Path, suffix: &str) -> PathBuf {
    crate::components::tree::sibling(live, suffix)
}

/// Renames `from` to `to` in the same directory, never replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    let dir = std::fs::File::open(from.parent().unwrap_or(Path::new(".")))?;
    let (Some(a), Some(b)) = (from.file_name(), to.file_name()) else {
        return Err(std::io::Error::other("a path without a name"));
    };
    renameat2(&dir, a, &dir, b, RenameFlags::RENAME_NOREPLACE).map_err(std::io::Error::from)
}

/// fsyncs the directory holding `p` (renames and links made durable).
fn sync_dir(p: &Path) -> Result<()> {
    let dir = p.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

fn remove(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", p, e)),
    }
}

/// Leftovers beside the live file of a restore whose journal is gone:
/// never deleted silently (one may be the only copy of the original).
fn refuse_leftovers(id: &ComponentId, live: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (live.parent(), live.file_name()) else {
        return Ok(());
    };
    let name = name.to_string_lossy();
    let prefixes = [format!("{name}.sb-restore-"), format!("{name}.sb-old-")];
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if prefixes.iter().any(|p| n.starts_with(p)) {
            return Err(Error::Refused(format!(
                "{id}: {} exists beside the live file (left by an interrupted restore whose journal is gone: it may be the only copy of the original); check it and remove or rename it; nothing was changed",
                e.path().display()
            )));
        }
    }
    Ok(())
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the set's copy into the new file `dest` (created exclusively,
/// 0600) and checks it: SHA-256 against the manifest and the set's
/// checksums, `PRAGMA integrity_check`, row counts. Returns the line for
/// the report.
pub(super) fn write_checked(
    set: &SetContext,
    id: &ComponentId,
    record: &SqliteRecord,
    dest: &Path,
    owner: Option<(u32, u32, u32)>,
) -> Result<String> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(dest)
        .map_err(|e| Error::io("creating (exclusively)", dest, e))?;
    let node = set.node(id, &record.file)?;
    let mut w = Hashing {
        inner: std::io::BufWriter::new(f),
        hash: <sha2::Sha256 as sha2::Digest>::new(),
        bytes: 0,
    };
    set.repo.dump(&node, &mut w).map_err(|e| {
        Error::component(
            id.as_str(),
            format!("reading the set's copy: {}", e.display_log()),
        )
    })?;
    let got = hex::encode(sha2::Digest::finalize(w.hash));
    let f = w
        .inner
        .into_inner()
        .map_err(|e| Error::io("writing", dest, e.into_error()))?;
    if let Some((mode, uid, gid)) = owner {
        use std::os::unix::fs::PermissionsExt;
        // Owners can only be given by root; the mode always.
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .map_err(|e| Error::io("chown", dest, e))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", dest, e))?;
    }
    f.sync_all().map_err(|e| Error::io("syncing", dest, e))?;
    drop(f);
    if got != record.sha256 || !set.checksums.matches(&record.file, &got) {
        return Err(Error::Verification(format!(
            "{id}: the set's copy has SHA-256 {got}, the manifest records {}",
            record.sha256
        )));
    }
    check(id, record, dest)
}

/// `PRAGMA integrity_check` and row counts of the database file `path`
/// (opened immutable: nothing is written beside it) against `record`.
pub(super) fn check(id: &ComponentId, record: &SqliteRecord, path: &Path) -> Result<String> {
    let c = file::open_copy(path, id.as_str())?;
    file::integrity(id, &c)?;
    let counts = file::row_counts(id, &c)?;
    file::compare_counts(id, &record.tables, &counts)?;
    let uv = file::pragma_int(id, &c, "user_version")?;
    if uv != record.user_version {
        return Err(Error::Verification(format!(
            "{id}: user_version is {uv}, the manifest records {}",
            record.user_version
        )));
    }
    Ok(format!(
        "{id}: integrity_check ok, {} tables, {} rows as in the manifest",
        counts.len(),
        counts.values().sum::<u64>()
    ))
}

impl Restorer for SqliteRestorer {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn action(&self) -> String {
        let shown = self
            .live()
            .map_or_else(|_| self.target.path.display().to_string(), |l| l.shown);
        format!(
            "replace SQLite database {shown} ({} tables, {} rows); its -wal/-shm kept aside with the original until the restore ends",
            self.record.tables.len(),
            self.record.tables.values().sum::<u64>()
        )
    }

    fn lane(&self) -> Lane {
        Lane::Files
    }

    /// The file is where the config says, reached without a symlink, no
    /// leftover of an earlier restore beside it, and no process holds it
    /// open (unless its containers are about to be stopped).
    fn preflight(&self, set: &SetContext) -> Result<Option<String>> {
        let live = self.live()?;
        refuse_leftovers(&self.id, &live.path)?;
        if std::fs::symlink_metadata(&live.path).is_ok() {
            file::check_file(&live.path, &live.shown, false)?;
        }
        if users(set, &live)?.is_empty() {
            self.refuse_holders(&live)?;
        }
        Ok(Some(format!(
            "{}: {} can be replaced (no process holds it open)",
            self.id, live.shown
        )))
    }

    /// A second copy beside the live file.
    fn disk_needs(&self, _set: &SetContext) -> Result<DiskNeeds> {
        Ok(vec![(self.live()?.path, self.record.bytes)])
    }

    /// The set's migration state against the live file's (informational).
    fn migration_check(&self, _set: &SetContext) -> MigrationReport {
        let mut report = MigrationReport::default();
        let live_state = self
            .live()
            .and_then(|l| l.open_read_only())
            .map(|c| file::migrations(&self.id, &c))
            .unwrap_or_default();
        for m in &self.record.migrations {
            let now = live_state.iter().find(|l| l.tool == m.tool);
            if now.map(|l| &l.applied) != Some(&m.applied) {
                report.notes.push(format!(
                    "{}: {} goes from {} (live) to {} (backup)",
                    self.id,
                    m.tool,
                    now.map_or("none".into(), |l| l.applied.join(",")),
                    m.applied.join(",")
                ));
            }
        }
        report
    }

    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>> {
        let id = &self.id;
        let live = self.live()?;
        refuse_leftovers(id, &live.path)?;
        let live_md = match file::check_file(&live.path, id.as_str(), false) {
            Ok((_, md)) => Some(md),
            Err(e) if e.is_missing() => None,
            Err(e) => return Err(e),
        };
        let tag = set.tag();
        let containers = users(set, &live)?;
        let mut entry = SqliteEntry {
            live: live.path.clone(),
            staging: beside(&live.path, &format!("sb-restore-{tag}")),
            aside: beside(&live.path, &format!("sb-old-{tag}")),
            live_ino: live_md.as_ref().map(MetadataExt::ino),
            staging_ino: None,
            containers: containers.clone(),
            moved: None,
        };
        set.journal(id, JournalEntry::Sqlite(entry.clone()))?;
        let users = if containers.is_empty() {
            None
        } else {
            Some(StoppedContainers::stop(id.as_str(), &containers)?)
        };
        self.refuse_holders(&live)?;
        let owner = match &live_md {
            Some(m) => (m.mode() & 0o7777, m.uid(), m.gid()),
            None => recorded_owner(id, &self.record)?,
        };
        let staging = entry.staging.clone();
        // Only the file this restore made is removed on failure.
        let made = |e: Error, staging_ino: Option<u64>| {
            if staging_ino.is_some() && ino(&staging) == staging_ino {
                let _ = std::fs::remove_file(&staging);
            }
            e
        };
        if std::fs::symlink_metadata(&staging).is_ok() {
            return Err(Error::Refused(format!(
                "{id}: {} exists already (not made by this restore); nothing was changed",
                staging.display()
            )));
        }
        let line =
            write_checked(set, id, &self.record, &staging, Some(owner)).inspect_err(|_| {
                // Created (exclusively) by write_checked: ours when regular.
                if regular(&staging) {
                    let _ = std::fs::remove_file(&staging);
                }
            })?;
        entry.staging_ino = ino(&staging);
        // The original's sidecars, whether or not the original itself is
        // there: a WAL or hot journal left beside a missing database would
        // be replayed into the restored file by the app's first open.
        entry.moved = Some(
            SIDECARS
                .iter()
                .filter(|s| std::fs::symlink_metadata(file::with_suffix(&live.path, s)).is_ok())
                .map(|s| (*s).to_string())
                .collect(),
        );
        set.journal(id, JournalEntry::Sqlite(entry.clone()))
            .map_err(|e| made(e, entry.staging_ino))?;
        log::info!("{line}");
        crate::system::fault::point("sqlite-staged").map_err(|e| made(e, entry.staging_ino))?;
        // Again right before the swap: the write and checks above take as
        // long as the database is large, time for the app to open it.
        self.refuse_holders(&live)
            .map_err(|e| made(e, entry.staging_ino))?;
        swap(&entry).inspect_err(|_| {
            // Put back whatever of the swap was done (nothing is lost:
            // every step is observable).
            if let Err(u) = abort(&entry) {
                log::error!("{id}: {u}");
            }
        })?;
        crate::system::fault::point("sqlite-swapped")?;
        *self.restored.lock().expect("restored") = entry.staging_ino;
        Ok(Box::new(Swapped { entry, users }))
    }

    /// The live path holds the restored file, which passes the same checks.
    fn post_check(&self, _set: &SetContext) -> Result<Option<String>> {
        let Some(want) = *self.restored.lock().expect("restored") else {
            return Ok(None);
        };
        let live = self.live()?;
        if ino(&live.path) != Some(want) {
            return Err(Error::Verification(format!(
                "{}: {} is not the restored file any more",
                self.id, live.shown
            )));
        }
        check(&self.id, &self.record, &live.path).map(Some)
    }
}

/// The mode and owner the manifest records, for a file the restore
/// creates: the manifest is input, so at most `0o666` (no setuid, setgid,
/// sticky or exec bit), and values no file has (a mode beyond `0o7777`,
/// the uid or gid `-1`) are refused.
fn recorded_owner(id: &ComponentId, r: &SqliteRecord) -> Result<(u32, u32, u32)> {
    if r.mode > 0o7777 || r.uid == u32::MAX || r.gid == u32::MAX {
        return Err(Error::Verification(format!(
            "{id}: the manifest records mode {:o}, uid {}, gid {}, which no database file has; nothing was changed",
            r.mode, r.uid, r.gid
        )));
    }
    Ok((r.mode & 0o666, r.uid, r.gid))
}

/// The running containers that use the volume of a `volume =` database,
/// when `[docker] stop-containers` is on.
fn users(set: &SetContext, live: &Live) -> Result<Vec<String>> {
    let stop = set.cfg.docker.as_ref().is_some_and(|d| d.stop_containers);
    match &live.volume {
        Some(v) if stop => crate::docker::volume_users(v),
        _ => Ok(Vec::new()),
    }
}

/// Steps 2 and 3: the original linked aside, the sidecars the journal
/// names moved beside that link (also when there is no original), the
/// staged copy renamed over the live path.
fn swap(e: &SqliteEntry) -> Result<()> {
    if ino(&e.staging) != e.staging_ino || !regular(&e.staging) {
        return Err(Error::Refused(format!(
            "{} was replaced while it was filled; nothing was swapped",
            e.staging.display()
        )));
    }
    if e.live_ino.is_some() {
        std::fs::hard_link(&e.live, &e.aside)
            .map_err(|err| Error::io("linking the original aside", &e.aside, err))?;
        if ino(&e.aside) != e.live_ino {
            return Err(Error::Refused(format!(
                "{} changed during the restore; nothing was swapped",
                e.live.display()
            )));
        }
    }
    for s in e.moved() {
        let from = file::with_suffix(&e.live, s);
        if std::fs::symlink_metadata(&from).is_ok() {
            rename_noreplace(&from, &file::with_suffix(&e.aside, s))
                .map_err(|err| Error::io("moving aside", &from, err))?;
        }
    }
    // One that appeared since the journal was written would be left
    // beside the restored file (and not be put back by an undo).
    for s in SIDECARS {
        let p = file::with_suffix(&e.live, s);
        if std::fs::symlink_metadata(&p).is_ok() {
            return Err(Error::Refused(format!(
                "{} appeared during the restore (is the database open again?); nothing was swapped",
                p.display()
            )));
        }
    }
    sync_dir(&e.live)?;
    crate::system::fault::point("sqlite-aside")?;
    if e.live_ino.is_some() {
        std::fs::rename(&e.staging, &e.live)
            .map_err(|err| Error::io("renaming the restored file over", &e.live, err))?;
    } else {
        rename_noreplace(&e.staging, &e.live)
            .map_err(|err| Error::io("renaming the restored file to", &e.live, err))?;
    }
    sync_dir(&e.live)
}

/// The restored file replaced the live one.
struct Swapped {
    entry: SqliteEntry,
    users: Option<StoppedContainers>,
}

impl Applied for Swapped {
    fn resume(&mut self) -> Result<()> {
        match &mut self.users {
            Some(u) => u.start_again("docker"),
            None => Ok(()),
        }
    }

    fn commit(self: Box<Self>) {
        if let Err(e) = finish(&self.entry) {
            log::warn!("{e}");
        }
    }

    fn undo(mut self: Box<Self>, _undo: &UndoContext) -> Result<()> {
        if let Some(u) = &mut self.users {
            u.stop_again("docker")?;
        }
        abort(&self.entry).map(|_| ())
    }
}

/// Drops the original kept aside (once the restored file is live).
fn finish(e: &SqliteEntry) -> Result<String> {
    let swapped = e.staging_ino.is_some() && ino(&e.live) == e.staging_ino;
    if !swapped {
        // Not swapped (the journal said finish after a crash before it):
        // the original stays, the restored copy goes.
        return abort(e);
    }
    if e.live_ino.is_some() && ino(&e.aside) == e.live_ino {
        remove(&e.aside)?;
    }
    for s in e.moved() {
        let p = file::with_suffix(&e.aside, s);
        if regular(&p) {
            remove(&p)?;
        }
    }
    sync_dir(&e.live)?;
    Ok(format!("{}: original removed", e.live.display()))
}

/// Puts the original and its sidecars back at the live path and removes
/// the restored copy, from the inodes observed at each name.
fn abort(e: &SqliteEntry) -> Result<String> {
    let mut did = "nothing was swapped";
    let swapped = e.staging_ino.is_some() && ino(&e.live) == e.staging_ino;
    if swapped {
        // Whatever is beside the restored file now is its own (the
        // original's were moved aside before the swap).
        for s in SIDECARS {
            remove(&file::with_suffix(&e.live, s))?;
        }
        match e.live_ino {
            Some(orig) if ino(&e.aside) == Some(orig) => {
                std::fs::rename(&e.aside, &e.live)
                    .map_err(|err| Error::io("putting the original back at", &e.live, err))?;
                did = "original put back";
            }
            None => {
                remove(&e.live)?;
                did = "restored file removed (there was none before)";
            }
            Some(_) => {
                return Err(Error::Refused(format!(
                "{}: the restored file is live but the original is not at {}; check both by hand",
                e.live.display(),
                e.aside.display()
            )))
            }
        }
    }
    if e.original_in_place() {
        for s in e.moved() {
            let kept = file::with_suffix(&e.aside, s);
            if std::fs::symlink_metadata(&kept).is_err() {
                continue;
            }
            let back = file::with_suffix(&e.live, s);
            rename_noreplace(&kept, &back).map_err(|err| {
                Error::io(
                    "moving the original's sidecar back (is the database open again?)",
                    &back,
                    err,
                )
            })?;
        }
        if e.live_ino.is_some() && ino(&e.aside) == e.live_ino {
            remove(&e.aside)?;
        }
    }
    // The staged copy: ours when it has the recorded inode, or (a crash
    // before it was recorded) a regular file under the journal's name.
    let at = ino(&e.staging);
    if at.is_some() && regular(&e.staging) && (e.staging_ino.is_none() || at == e.staging_ino) {
        remove(&e.staging)?;
    }
    if std::fs::symlink_metadata(e.live.parent().unwrap_or(Path::new("/"))).is_ok() {
        sync_dir(&e.live)?;
    }
    Ok(format!("{}: {did}", e.live.display()))
}

/// Resolves a journaled SQLite restore `to` one side, stopping the
/// containers it had stopped while the original is put back, and starting
/// them after.
pub fn recover(e: &SqliteEntry, to: Recover) -> Result<String> {
    let line = match to {
        Recover::Abort => {
            crate::components::docker::each_for_recovery("stop", &e.containers)?;
            abort(e)?
        }
        Recover::Finish => finish(e)?,
    };
    crate::components::docker::each_for_recovery("start", &e.containers)?;
    Ok(line)
}
