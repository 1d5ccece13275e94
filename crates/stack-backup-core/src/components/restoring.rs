//! The restore side of a component: a [`Restorer`] bound to one target,
//! the [`Applied`] change it leaves (kept undoable until the restore as a
//! whole succeeded), and the [`SetContext`] through which it reads the set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{IndexedFullStatus, LsOptions, Repository};
use serde::{Deserialize, Serialize};

use super::{ComponentId, DiskNeeds};
use crate::checksums::Checksums;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// A repository with its full index loaded.
pub type Indexed = Repository<IndexedFullStatus>;

/// What the plan decided for one component of a set.
pub enum Restore {
    /// Restore it with this restorer.
    Into(Box<dyn Restorer>),
    /// Leave it, for this reason (shown in the plan).
    Skip(String),
}

/// Which lane a component is restored in: lanes run side by side, the
/// components of one lane one after the other. Each lane loads a different
/// part of the machine (the database server, the Docker daemon, the
/// filesystem), so they overlap well; two `docker load`s or two large
/// `pg_restore`s at once only compete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    /// Database servers.
    Databases,
    /// The Docker daemon's image store.
    Images,
    /// Redis.
    Redis,
    /// Directory trees (volumes, paths).
    Files,
}

/// The step of the chain a restorer runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Step 5: replaced by the set's content (snapshotted before).
    Restore,
    /// Step 6: emptied (`--flush-redis`); not snapshotted, not undone.
    Flush,
}

/// One component of a plan, bound to its target (the live component, or
/// a scratch one for a drill). Contract: nothing is changed before
/// [`Restorer::restore`], which leaves the target either untouched (on an
/// error) or replaced, with the original kept by the returned [`Applied`].
pub trait Restorer: Send + Sync {
    /// The component (of the set).
    fn id(&self) -> &ComponentId;

    /// What the restore does to the target, naming host, database,
    /// container, volume or directory (shown before asking).
    fn action(&self) -> String;

    /// The lane it is restored in.
    fn lane(&self) -> Lane;

    /// The step it runs in.
    fn stage(&self) -> Stage {
        Stage::Restore
    }

    /// Step 1: whether the target can be restored with the credentials
    /// and services at hand (privileges, a free scratch database, …),
    /// naming what is missing; a line for the report when it can. Changes
    /// nothing.
    fn preflight(&self, _set: &SetContext) -> Result<Option<String>> {
        Ok(None)
    }

    /// Free space needed on host paths, beyond the floor.
    fn disk_needs(&self, _set: &SetContext) -> Result<DiskNeeds> {
        Ok(Vec::new())
    }

    /// A key (a set file) the disk needs of this component share with
    /// others naming the same key: of those, the needs are counted once.
    /// Images loaded one after another out of one group tar: each load
    /// unpacks the whole group in the engine's temporary directory and
    /// frees it before the next.
    fn disk_shared(&self) -> Option<&str> {
        None
    }

    /// Step 3: migration state of the set against the live target and the
    /// code. Notes are informational; problems refuse the restore unless
    /// the user allows a mismatch.
    fn migration_check(&self, _set: &SetContext) -> MigrationReport {
        MigrationReport::default()
    }

    /// Puts the set's content into the target.
    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>>;

    /// Step 7: checks the target against the record; `Ok(None)` when there
    /// is nothing to check.
    fn post_check(&self, _set: &SetContext) -> Result<Option<String>> {
        Ok(None)
    }
}

/// What step 3 found for one component.
#[derive(Debug, Default)]
pub struct MigrationReport {
    /// Informational lines.
    pub notes: Vec<String>,
    /// Mismatches that refuse the restore unless allowed.
    pub problems: Vec<String>,
}

/// A change made to a target, undoable until the restore as a whole
/// succeeded. Dropping it without either call leaves the change and the
/// kept original in place (a crash: the next run must find them).
pub trait Applied: Send {
    /// The restored targets passed their own checks: let what was paused
    /// for the change run again (containers stopped for a volume), so that
    /// `[[health]]` checks see the restored stack. An undo after this
    /// still puts the original back (pausing them again first).
    fn resume(&mut self) -> Result<()> {
        Ok(())
    }

    /// The restore succeeded: drop the original kept for an undo.
    fn commit(self: Box<Self>);

    /// The restore failed: put the original back exactly.
    fn undo(self: Box<Self>, undo: &UndoContext) -> Result<()>;
}

/// Nothing to commit or undo (a flush).
pub struct Nothing;

impl Applied for Nothing {
    fn commit(self: Box<Self>) {}
    fn undo(self: Box<Self>, _undo: &UndoContext) -> Result<()> {
        Ok(())
    }
}

/// A backup set open for reading: its snapshot, manifest and checksums.
pub struct SetContext<'a> {
    /// The repository, index loaded.
    pub repo: &'a Indexed,
    /// The configuration.
    pub cfg: &'a Config,
    /// The set's snapshot.
    pub snap: &'a SnapshotFile,
    /// Its manifest (checked: ids and kinds agree).
    pub manifest: &'a Manifest,
    /// Its `CHECKSUM.sha256`.
    pub checksums: &'a Checksums,
    docker_root: OnceLock<std::result::Result<PathBuf, String>>,
    journal: Option<&'a dyn Recorder>,
}

impl<'a> SetContext<'a> {
    /// A set open for reading.
    #[must_use]
    pub fn new(
        repo: &'a Indexed,
        cfg: &'a Config,
        snap: &'a SnapshotFile,
        manifest: &'a Manifest,
        checksums: &'a Checksums,
    ) -> Self {
        Self {
            repo,
            cfg,
            snap,
            manifest,
            checksums,
            docker_root: OnceLock::new(),
            journal: None,
        }
    }

    /// The same, recording each change in `journal` before it is made.
    #[must_use]
    pub fn with_journal(mut self, journal: &'a dyn Recorder) -> Self {
        self.journal = Some(journal);
        self
    }

    /// What names this run's temporaries: the journal's id, or (a drill,
    /// without a journal) the process id.
    #[must_use]
    pub fn tag(&self) -> String {
        self.journal
            .map_or_else(|| std::process::id().to_string(), |j| j.tag())
    }

    /// Records (durably) what a component is about to change; nothing
    /// without a journal.
    pub fn journal(&self, id: &ComponentId, entry: JournalEntry) -> Result<()> {
        match self.journal {
            Some(j) => j.record(id, entry),
            None => Ok(()),
        }
    }

    /// The node of a file or directory of the set (`path` without the
    /// leading `/`).
    pub fn node(&self, id: &ComponentId, path: &str) -> Result<Node> {
        self.repo
            .node_from_snapshot_and_path(self.snap, &format!("/{path}"))
            .map_err(|e| {
                Error::Verification(format!(
                    "{id}: {path} missing from the set: {}",
                    e.display_log()
                ))
            })
    }

    /// The single-file artifacts a component's restore reads: those the
    /// manifest attributes to it and the one it shares with others
    /// ([`crate::components::Kind::shared_artifact`]), each once.
    fn artifacts_of(&self, id: &ComponentId) -> Vec<&'a crate::manifest::ArtifactRecord> {
        let shared = self
            .manifest
            .components
            .get(id)
            .and_then(|r| r.kind().shared_artifact(r));
        self.manifest
            .artifacts
            .iter()
            .filter(|a| a.component == id.as_str() || Some(a.path.as_str()) == shared)
            .collect()
    }

    /// Bytes of the single-file artifacts of a component (a shared one
    /// counted whole).
    #[must_use]
    pub fn artifact_bytes(&self, id: &ComponentId) -> u64 {
        self.artifacts_of(id).iter().map(|a| a.size).sum()
    }

    /// The Docker Engine's data root (asked once).
    pub fn docker_root(&self) -> Result<PathBuf> {
        self.docker_root
            .get_or_init(|| {
                crate::process::output(
                    "docker",
                    "docker",
                    &["info", "--format", "{{.DockerRootDir}}"],
                )
                .map(PathBuf::from)
                .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|m| Error::component("docker", m))
    }

    /// Calls `f` with every file a component consists of in the set, with
    /// its node (the files of its tree, or its single-file artifacts), one
    /// at a time as the set's trees are read; the first error (reading the
    /// set, or `f`'s) ends it.
    pub fn for_each_file(
        &self,
        id: &ComponentId,
        mut f: impl FnMut(String, Node) -> Result<()>,
    ) -> Result<()> {
        let record = &self.manifest.components[id];
        let Some(tree) = record.kind().tree(record) else {
            for a in self.artifacts_of(id) {
                f(a.path.clone(), self.node(id, &a.path)?)?;
            }
            return Ok(());
        };
        let root = self.node(id, tree)?;
        self.walk(id, &root, |p, node| {
            if node.is_file() {
                f(format!("{tree}/{}", p.display()), node)?;
            }
            Ok(())
        })
    }

    /// Calls `f` with every entry under `root` (a directory of the set),
    /// its path relative to `root`, in the set's order; the first error
    /// (reading the set, or `f`'s) ends it.
    pub fn walk(
        &self,
        id: &ComponentId,
        root: &Node,
        mut f: impl FnMut(PathBuf, Node) -> Result<()>,
    ) -> Result<()> {
        let walk = self
            .repo
            .ls(root, &LsOptions::default())
            .map_err(|e| Error::Verification(format!("{id}: {}", e.display_log())))?;
        for item in walk {
            let (p, node) = item.map_err(|e| {
                Error::Verification(format!("{id}: reading the tree: {}", e.display_log()))
            })?;
            f(p, node)?;
        }
        Ok(())
    }

    /// Streams a file of the set into a process's stdin and waits for it;
    /// returns its stdout. The process failing, or the stream breaking, is
    /// the error.
    pub fn pipe_into(
        &self,
        id: &ComponentId,
        path: &str,
        mut cmd: Command,
        what: &str,
    ) -> Result<String> {
        let node = self.node(id, path)?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::component(id.as_str(), format!("cannot run {what}: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let written = self.repo.dump(&node, &mut stdin);
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| Error::component(id.as_str(), format!("{what}: {e}")))?;
        if !out.status.success() {
            return Err(Error::component(
                id.as_str(),
                format!(
                    "{what} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        written.map_err(|e| {
            Error::component(id.as_str(), format!("feeding {what}: {}", e.display_log()))
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }
}

/// What an undo may need: the configuration and, loaded only when asked,
/// the pre-restore set (the state before the restore, for what cannot be
/// kept aside, such as a database restored in place).
pub struct UndoContext<'a> {
    /// The configuration.
    pub cfg: &'a Config,
    pre_restore: &'a dyn Fn() -> Result<Option<PreRestore>>,
    loaded: OnceLock<std::result::Result<Option<PreRestore>, String>>,
}

/// The pre-restore set, open for reading.
pub struct PreRestore {
    /// The repository with an index that includes the set.
    pub repo: Indexed,
    /// Its snapshot.
    pub snap: SnapshotFile,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its checksums.
    pub checksums: Checksums,
}

impl<'a> UndoContext<'a> {
    /// An undo context; `pre_restore` loads the pre-restore set on first use.
    pub fn new(cfg: &'a Config, pre_restore: &'a dyn Fn() -> Result<Option<PreRestore>>) -> Self {
        Self {
            cfg,
            pre_restore,
            loaded: OnceLock::new(),
        }
    }

    /// The pre-restore set, when one was taken.
    pub fn pre_restore(&self) -> Result<Option<&PreRestore>> {
        match self
            .loaded
            .get_or_init(|| (self.pre_restore)().map_err(|e| e.to_string()))
        {
            Ok(p) => Ok(p.as_ref()),
            Err(m) => Err(Error::component("restore", m.clone())),
        }
    }
}

impl PreRestore {
    /// The set as a [`SetContext`].
    #[must_use]
    pub fn context<'a>(&'a self, cfg: &'a Config) -> SetContext<'a> {
        SetContext::new(&self.repo, cfg, &self.snap, &self.manifest, &self.checksums)
    }
}

/// Where a restorer records, before each change, what it will change and
/// where the original goes (the restore journal).
pub trait Recorder: Send + Sync {
    /// The id that names the run's temporaries.
    fn tag(&self) -> String;
    /// Replaces the entry of `id`, durably (fsynced) before returning.
    fn record(&self, id: &ComponentId, entry: JournalEntry) -> Result<()>;
}

/// One component's entry in the restore journal: enough, with what can be
/// observed (which databases exist, which inode is at a path, where a
/// marker key is), to finish or roll back its change after a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum JournalEntry {
    /// A PostgreSQL database.
    Postgres(super::postgres::PgEntry),
    /// A Redis database.
    Redis(super::redis::RedisEntry),
    /// A directory (volume or path).
    Tree(super::tree::TreeEntry),
    /// A Docker image tag.
    Image(super::docker::ImageEntry),
    /// A SQLite database file.
    Sqlite(super::sqlite::SqliteEntry),
    /// A MariaDB/MySQL database.
    Mysql(super::mysql::MysqlEntry),
}

/// Which way an interrupted change is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recover {
    /// Put the original back and remove the temporaries.
    Abort,
    /// The restore had passed: drop the kept original.
    Finish,
}

impl JournalEntry {
    /// Resolves the change `to` one side, from the entry and what is
    /// observed now; idempotent (a run killed during it is resolved by the
    /// next call). Returns what it did, for the report.
    pub fn recover(&self, id: &ComponentId, to: Recover, undo: &UndoContext) -> Result<String> {
        match self {
            Self::Postgres(e) => super::postgres::recover(e, id, to, undo),
            Self::Redis(e) => super::redis::recover(e, id, to, undo.cfg),
            Self::Tree(e) => super::tree::recover(e, to),
            Self::Image(e) => super::docker::recover_image(e, to),
            Self::Sqlite(e) => super::sqlite::recover(e, to),
            Self::Mysql(e) => super::mysql::recover(e, id, to, undo),
        }
    }

    /// What resolving it `to` one side would do (for `--dry-run`).
    #[must_use]
    pub fn describe(&self, to: Recover) -> String {
        let way = match to {
            Recover::Abort => "put back the original",
            Recover::Finish => "drop the kept original",
        };
        match self {
            Self::Postgres(e) => format!("database `{}`: {way}", e.database),
            Self::Redis(e) => format!("database {} of Redis `{}`: {way}", e.db, e.key),
            Self::Tree(e) => format!("directory {}: {way}", e.live.display()),
            Self::Image(e) => format!("image tag `{}`: {way}", e.reference),
            Self::Sqlite(e) => format!("SQLite file {}: {way}", e.live.display()),
            Self::Mysql(e) => format!("tables of database `{}`: {way}", e.database),
        }
    }
}

/// What differs between the manifest's row counts and the restored ones.
pub fn count_diff(want: &BTreeMap<String, i64>, got: &BTreeMap<String, i64>) -> Option<String> {
    if want == got {
        return None;
    }
    let diff: Vec<String> = want
        .iter()
        .filter(|(t, n)| got.get(*t) != Some(n))
        .map(|(t, n)| {
            format!(
                "{t}: {} (expected {n})",
                got.get(t).map_or("missing".into(), ToString::to_string)
            )
        })
        .chain(
            got.keys()
                .filter(|t| !want.contains_key(*t))
                .map(|t| format!("{t}: not in the set")),
        )
        .collect();
    Some(diff.join(", "))
}
