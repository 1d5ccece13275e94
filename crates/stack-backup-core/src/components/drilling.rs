//! The drill side of a component: the set's content restored into a
//! *scratch* target that a drill names after its id (a database
//! `sbdrill_<id>_<key>`, a directory `<state>/drill/<id>/<component>`, an
//! image tag `stack-backup-drill:<id>-<n>`, a private `redis-server`),
//! checked there, then removed. The live stack is never a target: no
//! journal, no swap, no container stopped. See
//! `docs/decisions/0021-restore-drills.md`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::restoring::{Lane, SetContext};
use super::tree::TreeRecord;
use super::ComponentId;
use crate::config::{Config, PostgresConfig, RestoreMethod};
use crate::error::{Error, Result};

/// The prefix of every scratch database a drill creates.
pub const DB_PREFIX: &str = "sbdrill_";
/// The repository of every image tag a drill creates.
pub const IMAGE_REPO: &str = "stack-backup-drill";

/// Where one drill restores: everything it creates is named after `id`,
/// so that the marker of a killed drill (its id) names all it left.
pub struct Scratch<'c> {
    /// The configuration.
    pub cfg: &'c Config,
    /// The drill's id (lowercase letters and digits).
    pub id: String,
    /// `<state>/drill/<id>`: the marker and the restored trees.
    pub dir: PathBuf,
}

impl Scratch<'_> {
    /// The scratch database of `[postgres.KEY]` (at most 63 bytes).
    #[must_use]
    pub fn database(&self, key: &str) -> String {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        // The key is cut to leave room for the restore's own
        // `__sb_restore_<tag>` suffix (63 bytes in all); the hash of the
        // whole key keeps two keys apart that are cut (or made safe) alike.
        let hash = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes())[..3]);
        let head = format!("{DB_PREFIX}{}_", self.id);
        let room = 40usize.saturating_sub(head.len() + 1 + hash.len());
        let cut: String = safe.chars().take(room).collect();
        format!("{head}{cut}_{hash}")
    }

    /// The prefix every scratch database of this drill starts with.
    #[must_use]
    pub fn database_prefix(&self) -> String {
        format!("{DB_PREFIX}{}_", self.id)
    }

    /// The server the scratch database of `[postgres.KEY]` goes to: the
    /// database's own server, or `[drill] postgres-url`; always restored
    /// beside (a new database), whatever the live `restore-method`.
    #[must_use]
    pub fn postgres_server(&self, pg: &PostgresConfig) -> PostgresConfig {
        let mut s = match &self.cfg.drill.postgres_url {
            Some(url) => {
                let mut s = PostgresConfig::new(url.clone());
                s.password_file
                    .clone_from(&self.cfg.drill.postgres_password_file);
                s.lock_timeout_seconds = pg.lock_timeout_seconds;
                s.bin_dir.clone_from(&pg.bin_dir);
                s
            }
            None => pg.clone(),
        };
        // A scratch database has nothing to replace: `in-place` (which
        // needs an existing database) would refuse every drill.
        s.restore_method = RestoreMethod::Beside;
        s
    }

    /// The drill tag for the `n`th image.
    #[must_use]
    pub fn image_tag(&self, id: &ComponentId) -> String {
        let safe: String = id
            .name()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        format!("{IMAGE_REPO}:{}-{}", self.id, safe.trim_matches('-'))
    }

    /// The scratch directory of a tree component.
    #[must_use]
    pub fn tree_dir(&self, id: &ComponentId) -> PathBuf {
        self.dir.join("trees").join(id.as_str())
    }
}

/// The name of an environment variable for a component name:
/// `SB_DRILL_DIR_` + upper-case letters, digits and `_`.
#[must_use]
pub fn env_name(prefix: &str, name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{safe}")
}

/// One component of a set restored into scratch. Contract: nothing live
/// is changed by any method; whatever [`Drilled::restore`] creates is
/// named by the drill's [`Scratch`] and removed by [`Drilled::remove`]
/// (and, after a crash, by the kind's `drill_clean`).
pub trait Drilled: Send {
    /// The component (of the set).
    fn id(&self) -> &ComponentId;

    /// The lane it would be restored in (for the report's order).
    fn lane(&self) -> Lane;

    /// Puts the set's content into the scratch target; returns what it
    /// restored, for the report.
    fn restore(&mut self, set: &SetContext) -> Result<String>;

    /// Checks the scratch target against the set; a mismatch is an
    /// [`Error::Verification`] naming the component.
    fn check(&mut self, set: &SetContext) -> Result<String>;

    /// Free space the restore into scratch needs on host paths (beyond
    /// the `min-free-space` floor), asked before anything is restored.
    fn disk_needs(&self, _set: &SetContext) -> Result<super::DiskNeeds> {
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

    /// Environment variables pointing at the scratch resource, for
    /// `[[drill.check]]` commands.
    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Removes the scratch resource (idempotent).
    fn remove(&mut self) -> Result<()>;

    /// How to reach the scratch resource and remove it by hand (`--keep`).
    fn kept(&self) -> String;
}

/// A directory tree (volume or path) restored into a scratch directory,
/// every file checked against its checksum, mode and owner.
pub struct TreeDrill {
    id: ComponentId,
    record: TreeRecord,
    dir: PathBuf,
}

impl TreeDrill {
    /// The tree of `record` into `scratch`'s directory for `id`.
    #[must_use]
    pub fn new(scratch: &Scratch, id: &ComponentId, record: TreeRecord) -> Self {
        Self {
            dir: scratch.tree_dir(id),
            id: id.clone(),
            record,
        }
    }
}

impl Drilled for TreeDrill {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn lane(&self) -> Lane {
        Lane::Files
    }

    fn restore(&mut self, set: &SetContext) -> Result<String> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&self.dir)
                .map_err(|e| Error::io("creating the scratch directory", &self.dir, e))?;
        }
        let node = set.node(&self.id, &self.record.path)?;
        super::tree::restore_node_into(set.repo, &node, &self.dir)
            .map_err(|m| Error::component(self.id.as_str(), m))?;
        Ok(format!(
            "{} files into {}",
            self.record.files,
            self.dir.display()
        ))
    }

    fn check(&mut self, set: &SetContext) -> Result<String> {
        let id = &self.id;
        // Owners can only be set (and so compared) by root.
        let owners = nix::unistd::geteuid().is_root();
        let mut n = 0u64;
        // File by file as the set's tree is listed: a tree may hold
        // 300,000 files.
        set.for_each_file(id, |path, node| {
            let rel = path
                .strip_prefix(&format!("{}/", self.record.path))
                .unwrap_or(&path);
            let file = self.dir.join(rel);
            let (got, _) = std::fs::File::open(&file)
                .and_then(|mut f| crate::verify::sha256_of(&mut f))
                .map_err(|e| {
                    Error::Verification(format!("{id}: restored {path} unreadable: {e}"))
                })?;
            if !set.checksums.matches(&path, &got) {
                return Err(Error::Verification(format!(
                    "{id}: restored {path} does not match its checksum"
                )));
            }
            let md = std::fs::symlink_metadata(&file)
                .map_err(|e| Error::io("reading restored", &file, e))?;
            if let Some(mode) = node.meta.mode {
                if md.mode() & 0o7777 != mode & 0o7777 {
                    return Err(Error::Verification(format!(
                        "{id}: restored {path} has mode {:o}, the set {:o}",
                        md.mode() & 0o7777,
                        mode & 0o7777
                    )));
                }
            }
            if owners && node.meta.uid.is_some_and(|u| u != md.uid()) {
                return Err(Error::Verification(format!(
                    "{id}: restored {path} is owned by uid {}, the set by {:?}",
                    md.uid(),
                    node.meta.uid
                )));
            }
            n += 1;
            Ok(())
        })?;
        if n != self.record.files {
            return Err(Error::Verification(format!(
                "{id}: {n} files restored, the manifest records {}",
                self.record.files
            )));
        }
        Ok(format!(
            "{n} files: SHA-256, modes{} match",
            if owners { " and owners" } else { "" }
        ))
    }

    /// A second copy of the tree in the state directory.
    fn disk_needs(&self, _set: &SetContext) -> Result<super::DiskNeeds> {
        Ok(vec![(self.dir.clone(), self.record.bytes)])
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(
            env_name("SB_DRILL_DIR_", self.id.name()),
            self.dir.display().to_string(),
        )]
    }

    fn remove(&mut self) -> Result<()> {
        remove_dir(&self.dir)
    }

    fn kept(&self) -> String {
        format!("{}: {}", self.id, self.dir.display())
    }
}

/// Removes a scratch directory, missing or not.
pub fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing the scratch directory", dir, e)),
    }
}
