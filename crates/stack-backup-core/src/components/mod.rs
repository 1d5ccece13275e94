//! Component kinds: one module per kind, each implementing [`Kind`], and
//! one registration line per kind in [`kinds!`] below.
//!
//! This is the only layer that knows what a PostgreSQL database, a Redis
//! instance, a Docker image or volume, a git tree or a plain directory is.
//! The operations (backup, restore, export, import, doctor) call the trait
//! and never match on kinds: a new kind is a new module here plus one line
//! in the registry, and every operation handles it.
//!
//! A kind answers, for one component of a stack:
//! - which components of its kind the config describes ([`Kind::configured`]);
//! - `doctor`: is it reachable ([`Kind::doctor`]);
//! - the backup plan: the entries to archive and the manifest record
//!   ([`Kind::plan_backup`]), whether a parent's content can be reused
//!   ([`Kind::same_content`]), what the archive runs add to the record
//!   ([`Kind::archived`]);
//! - the restore: a [`Restorer`] into a target — the live one for a restore
//!   ([`Kind::restorer`]), another one given by the caller for a drill —
//!   which describes the target, its disk need, restores, undoes
//!   ([`Applied`]) and checks afterwards;
//! - the export layout and how to restore it by hand ([`Kind::export_path`],
//!   [`Kind::export_howto`]); import maps the same paths back.

pub mod drilling;
mod id;
pub mod restoring;
pub mod tree;
pub mod unchanged;

pub mod docker;
pub mod git;
pub mod migrations;
pub mod mysql;
pub mod paths;
pub mod postgres;
pub mod redis;
pub mod sqlite;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use drilling::{Drilled, Scratch};
pub use id::{ComponentId, UnknownComponent};
pub use restoring::{Applied, Lane, Restore, Restorer, SetContext, Stage, UndoContext};

use crate::config::Config;
use crate::error::Result;
use crate::manifest::Manifest;
use crate::source::Entry;

/// The registry: the manifest record type of each kind (the `kind` field
/// of `manifest.json`, kebab-case of the variant) and the kind itself.
/// Components are planned, listed and restored in this order.
macro_rules! kinds {
    ($($variant:ident($record:ty) => $kind:expr),+ $(,)?) => {
        /// What one component of a backup set holds: the manifest record of
        /// its kind (`manifest.json` → `components`).
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(tag = "kind", rename_all = "kebab-case")]
        pub enum Record {
            $(
                #[allow(missing_docs)]
                $variant($record),
            )+
        }

        /// Every registered kind.
        pub static KINDS: &[&dyn Kind] = &[$(&$kind),+];

        impl Record {
            /// The kind this record belongs to.
            #[must_use]
            pub fn kind(&self) -> &'static dyn Kind {
                match self {
                    $(Record::$variant(_) => &$kind,)+
                }
            }
        }
    };
}

kinds! {
    Postgres(postgres::PostgresRecord) => postgres::Postgres,
    Redis(redis::RedisRecord) => redis::Redis,
    Sqlite(sqlite::SqliteRecord) => sqlite::Sqlite,
    DockerImage(docker::ImageRecord) => docker::Image,
    DockerVolume(tree::TreeRecord) => docker::Volume,
    Git(git::GitRecord) => git::Git,
    Path(tree::TreeRecord) => paths::Paths,
    Mysql(mysql::MysqlRecord) => mysql::Mysql,
}

/// The registered kind whose id prefix is `prefix`.
pub(crate) fn kind_of_prefix(prefix: &str) -> Option<&'static dyn Kind> {
    KINDS.iter().find(|k| k.prefix() == prefix).copied()
}

/// The stack as configured, with what the config leaves to be asked
/// (a compose project's images and volumes) resolved once per run.
pub struct Stack<'c> {
    /// The configuration.
    pub cfg: &'c Config,
    /// Docker images: configured and, with a compose project, its images.
    pub images: Vec<String>,
    /// Docker volumes: configured and the compose project's.
    pub volumes: Vec<String>,
}

impl<'c> Stack<'c> {
    /// Resolves the stack (asks Docker for a compose project's images and
    /// volumes).
    pub fn resolve(cfg: &'c Config) -> Result<Self> {
        let (mut images, mut volumes) = match &cfg.docker {
            None => (Vec::new(), Vec::new()),
            Some(d) => (d.images.clone(), d.volumes.clone()),
        };
        if let Some(p) = cfg.docker.as_ref().and_then(|d| d.compose_project.as_ref()) {
            images.extend(docker::compose_images(p)?);
            volumes.extend(docker::compose_volumes(p)?);
        }
        images.sort();
        images.dedup();
        volumes.sort();
        volumes.dedup();
        Ok(Self {
            cfg,
            images,
            volumes,
        })
    }

    /// Every component the stack has, in registry order.
    #[must_use]
    pub fn components(&self) -> Vec<ComponentId> {
        KINDS
            .iter()
            .flat_map(|k| {
                k.configured(self)
                    .into_iter()
                    .map(move |n| ComponentId::new(*k, &n))
            })
            .collect()
    }
}

/// What a backup asks of every component.
pub struct BackupContext<'s, 'c> {
    /// The stack.
    pub stack: &'s Stack<'c>,
    /// Include Redis instances whose role is `cache`.
    pub include_redis: bool,
    /// The set is the pre-restore snapshot of components about to be
    /// replaced: sessions that block reading a database (holding `ACCESS
    /// EXCLUSIVE`) are ended rather than waited for, as the restore would.
    pub replacing: bool,
    /// The code's HEAD, read once per backup (`None` without `[git]`, or
    /// when it could not be read: the git component then says why).
    pub git_head: Option<crate::git::GitHead>,
}

/// Runs once the archive runs ended (whether they succeeded or not): fills
/// in what was measured while the artifacts streamed (row counts in the
/// dump's snapshot) and releases what the plan held open.
pub type Finish = Box<dyn FnOnce(&mut Record) -> Result<()> + Send>;

/// Runs when every artifact of a component is reused, given the parent's
/// record ([`Planned::on_reuse`]).
pub type OnReuse = Box<dyn FnOnce(&Record) + Send>;

/// One component's backup plan.
pub struct Planned {
    /// The manifest record (completed by `finish` and [`Kind::archived`]).
    pub record: Record,
    /// What goes into the set.
    pub entries: Vec<Entry>,
    /// Bytes the repository may grow by (disk check).
    pub estimate: u64,
    /// Containers to stop while it is archived.
    pub stop: Vec<String>,
    /// Runs after the archive runs.
    pub finish: Option<Finish>,
    /// Runs before the archive runs when every artifact of the component
    /// is reused from the parent set (its producer will not run), given
    /// the parent's record: releases what the plan held for it (a table
    /// lock waiting for a dump) and may take from the parent what the
    /// reuse proves unchanged (row counts).
    pub on_reuse: Option<OnReuse>,
    /// Artifacts read afresh whose content is likely to repeat parts of
    /// files the parent set holds at other paths (see [`Guide`]).
    pub guides: Vec<Guide>,
}

/// A hint for the chunker: artifact `path` is likely to repeat much of
/// the parent set's files `from` (an image saved again, under another
/// path than its previous save). Their chunks guide the chunker when the
/// parent holds nothing at `path` itself. Only the work depends on it:
/// every predicted chunk is checked by its SHA-256, and the chunks cut are
/// exactly those of the rolling hash alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guide {
    /// The artifact's path in the set.
    pub path: String,
    /// Paths in the parent set, in the order their content is expected.
    pub from: Vec<String>,
}

impl Planned {
    /// A plan with nothing to finish and nothing to stop.
    #[must_use]
    pub fn new(record: Record, entries: Vec<Entry>, estimate: u64) -> Self {
        Self {
            record,
            entries,
            estimate,
            stop: Vec::new(),
            finish: None,
            on_reuse: None,
            guides: Vec::new(),
        }
    }
}

/// What the archive runs measured of one component.
#[derive(Debug, Clone, Default)]
pub struct Archived {
    /// Bytes of its files.
    pub bytes: u64,
    /// Regular files.
    pub files: u64,
    /// Every file was reused from the parent unread.
    pub reused: bool,
    /// Containers that were stopped while it was copied.
    pub stopped: Vec<String>,
}

/// A component kind. Implementations are unit structs registered in
/// [`KINDS`]; every method gets the component's id (and record, which the
/// caller took from a manifest whose ids and kinds agree:
/// [`check_manifest`]).
pub trait Kind: Sync {
    /// The id prefix: `postgres` (ids `postgres.NAME`), `docker.image`.
    fn prefix(&self) -> &'static str;

    /// A kind with one component whose id is the prefix alone (`git`).
    fn singleton(&self) -> bool {
        false
    }

    /// Taken by `dump` (a database-only set).
    fn is_database(&self) -> bool {
        false
    }

    /// Names of the components of this kind the stack has.
    fn configured(&self, stack: &Stack) -> Vec<String>;

    /// `doctor`: whether the component is reachable, with what was found.
    fn doctor(&self, stack: &Stack, id: &ComponentId) -> Result<String>;

    /// Plans the backup of one component: connects, takes a consistent
    /// point in time, and returns the entries to archive and the record.
    /// `Ok(None)`: the component is not taken (a cache Redis without
    /// `--include-redis`). An error whose [`crate::Error::is_missing`] holds
    /// means the component does not exist.
    fn plan_backup(&self, ctx: &BackupContext, id: &ComponentId) -> Result<Option<Planned>>;

    /// Whether `new`'s artifacts hold exactly what `old`'s (the parent
    /// set's) do, so the archiver may reuse them unread.
    fn same_content(&self, _new: &Record, _old: &Record) -> bool {
        false
    }

    /// Completes the record with what the archive runs measured.
    fn archived(&self, _record: &mut Record, _measured: &Archived) {}

    /// Once the parent set is known, before the archive runs: rearranges
    /// the plans of this kind's components together (`plans`, in registry
    /// order), e.g. so that one artifact serves several of them.
    /// `parent` is the parent set's manifest when its content may be
    /// reused; `reuse` marks an artifact for reuse from the parent set when
    /// the parent holds it whole at its path (and says whether it did).
    /// An artifact serving several components is planned in the entries of
    /// exactly one of them (a path is archived once); the others name it
    /// with [`Kind::shared_artifact`]. Nothing by default.
    fn plan_together(
        &self,
        _plans: &mut [(&ComponentId, &mut Planned)],
        _parent: Option<&Manifest>,
        _reuse: &dyn Fn(&mut crate::source::Artifact) -> bool,
    ) {
    }

    /// A single-file artifact of the set this component's restore reads
    /// although the manifest may attribute it to another component (one
    /// `docker save` of several images). Verification, disk checks and
    /// exports count it for this component too; readers of several
    /// components read it once.
    fn shared_artifact<'r>(&self, _record: &'r Record) -> Option<&'r str> {
        None
    }

    /// The directory tree of the set this component is (volumes, paths),
    /// or `None` when it consists of single-file artifacts.
    fn tree<'r>(&self, _record: &'r Record) -> Option<&'r str> {
        None
    }

    /// How a restore puts this component of a set back into the live stack.
    fn restorer(
        &self,
        cfg: &Config,
        opts: &RestoreOptions,
        id: &ComponentId,
        record: &Record,
    ) -> Result<Restore>;

    /// Restorers for components of this kind the set lacks but the request
    /// still touches (a cache Redis flushed with `--flush-redis`).
    fn extra_restorers(
        &self,
        _cfg: &Config,
        _opts: &RestoreOptions,
        _in_set: &[ComponentId],
    ) -> Result<Vec<Box<dyn Restorer>>> {
        Ok(Vec::new())
    }

    /// How a drill restores this component of a set into `scratch`;
    /// `Ok(None)`: this kind is not drilled. Changes nothing yet.
    fn drill(
        &self,
        _scratch: &Scratch,
        _id: &ComponentId,
        _record: &Record,
    ) -> Result<Option<Box<dyn Drilled>>> {
        Ok(None)
    }

    /// Removes what the drill `scratch.id` (killed, or kept) left of this
    /// kind, and only that: names made from the id. Returns what it
    /// removed. Idempotent.
    fn drill_clean(&self, _scratch: &Scratch) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// What of the host this component's backups hold, for `doctor`'s
    /// check of a Compose project's mounts no component covers
    /// (`operations::discover::unprotected`). Nothing by default.
    fn covers(&self, _stack: &Stack, _id: &ComponentId) -> Vec<Covered> {
        Vec::new()
    }

    /// What it is and details, for MANIFEST.md's component table.
    fn describe(&self, record: &Record) -> (String, String);

    /// Where an artifact of this component goes in an export, and whether
    /// it is gzip-compressed there (`import` maps it back the same way).
    fn export_path(&self, _m: &Manifest, _id: &ComponentId, set_path: &str) -> (String, bool) {
        (set_path.to_string(), false)
    }

    /// Files an export writes beside the component's artifacts for the
    /// restore by hand (export path, content), e.g. a load script that
    /// MANIFEST.md points at; `path_of` as in [`Kind::export_howto`].
    fn export_extras(
        &self,
        _m: &Manifest,
        _record: &Record,
        _path_of: &dyn Fn(&str) -> String,
    ) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }

    /// How to restore the exported component by hand (MANIFEST.md of an
    /// export); `path_of` maps a set path to its export path.
    fn export_howto(
        &self,
        m: &Manifest,
        record: &Record,
        path_of: &dyn Fn(&str) -> String,
    ) -> String;
}

/// What of the host a component's backups hold ([`Kind::covers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Covered {
    /// A named Docker volume, whole.
    Volume(String),
    /// A directory on the host and everything under it.
    Dir(PathBuf),
    /// The database running in this container: its data, whatever it
    /// mounts for it, is taken by the component's dump.
    Container(String),
}

/// What a restore was asked to do beyond the set's content.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Flush Redis instances with role `cache` instead of restoring them.
    pub flush_redis: bool,
    /// Give roles a restore creates the password hash of the set's
    /// `globals.sql` (they are created without one otherwise).
    pub restore_role_passwords: bool,
    /// The components of the set this restore brings back (`--only`
    /// applied): a database's data volume is left alone only when its
    /// database is among them.
    pub restoring: Vec<ComponentId>,
}

/// Checks that every component id of a manifest names a registered kind and
/// agrees with its record's kind: a manifest is input, and a mismatch would
/// send one kind's record to another kind's code.
pub fn check_manifest(m: &Manifest) -> std::result::Result<(), String> {
    for (id, record) in &m.components {
        if id.prefix() != record.kind().prefix() {
            return Err(format!(
                "component `{id}` holds a record of kind `{}`",
                record.kind().prefix()
            ));
        }
    }
    Ok(())
}

/// The error of a record handed to a kind it does not belong to (a
/// programming error: manifests are checked with [`check_manifest`]).
pub(crate) fn wrong_record(id: &ComponentId) -> crate::Error {
    crate::Error::component(id.as_str(), "the manifest record is of another kind")
}

/// Paths on the host a restore needs free space on, with bytes.
pub type DiskNeeds = Vec<(PathBuf, u64)>;

#[cfg(test)]
mod tests;
