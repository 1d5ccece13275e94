//! Directory trees (Docker volumes, plain paths): restored beside the live
//! directory, checked file by file, then swapped in; the original is kept
//! beside it until the restore as a whole succeeded.

use std::path::{Path, PathBuf};

use rustic_core::repofile::Node;
use rustic_core::{LocalDestination, LsOptions, RestoreOptions};
use serde::{Deserialize, Serialize};

use super::restoring::{Applied, Indexed, SetContext, UndoContext};
use super::ComponentId;
use crate::docker::StoppedContainers;
use crate::error::{Error, Result};

/// A directory tree (volume or path).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeRecord {
    /// Volume name or directory on the host.
    pub source: String,
    /// Where it is in the set.
    pub path: String,
    /// Regular files.
    pub files: u64,
    /// Bytes in regular files.
    pub bytes: u64,
    /// Containers stopped while it was copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_containers: Vec<String>,
}

impl TreeRecord {
    /// A record before the archive runs measured it.
    #[must_use]
    pub fn new(source: String, path: String) -> Self {
        Self {
            source,
            path,
            files: 0,
            bytes: 0,
            stopped_containers: Vec::new(),
        }
    }

    /// Takes what the archive runs measured.
    pub fn measured(&mut self, m: &super::Archived) {
        self.bytes = m.bytes;
        self.files = m.files;
        self.stopped_containers.clone_from(&m.stopped);
    }
}

/// Restores the tree under `node` into the existing directory `dir`, with
/// owners, modes and times (rustic's restore; files are written in place).
/// The error says which part failed.
pub fn restore_node_into(
    repo: &Indexed,
    node: &Node,
    dir: &Path,
) -> std::result::Result<(), String> {
    let fail =
        |what: &str, e: Box<rustic_core::RusticError>| format!("{what}: {}", e.display_log());
    let dest = LocalDestination::new(&format!("{}/", dir.display()), true, false)
        .map_err(|e| fail("destination", e))?;
    let opts = RestoreOptions::default();
    let ls = repo
        .ls(node, &LsOptions::default())
        .map_err(|e| fail("reading the tree", e))?;
    let plan = repo
        .prepare_restore(&opts, ls.clone(), &dest, false)
        .map_err(|e| fail("planning", e))?;
    repo.restore(plan, &opts, ls, &dest)
        .map_err(|e| fail("restoring files", e))
}

/// `dir.suffix` beside `dir`.
#[must_use]
pub fn sibling(p: &Path, suffix: &str) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    p.with_file_name(format!("{name}.{suffix}"))
}

/// Restores the directory `set_path` of the set beside `live`, checks every
/// restored file against its checksum, then swaps it in. The original is
/// moved to `live.sb-old` and kept by the returned change; `users` (stopped
/// containers) start again when the change is committed or undone.
pub fn restore_tree(
    set: &SetContext,
    id: &ComponentId,
    set_path: &str,
    live: &Path,
    users: Option<StoppedContainers>,
) -> Result<Box<dyn Applied>> {
    let staging = sibling(live, "sb-restore");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| Error::io("creating", &staging, e))?;
    let node = set.node(id, set_path)?;
    restore_node_into(set.repo, &node, &staging).map_err(|m| Error::component(id.as_str(), m))?;
    // The root directory's own mode and owner.
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = node.meta.mode {
        let _ = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode & 0o7777));
    }
    if let (Some(uid), Some(gid)) = (node.meta.uid, node.meta.gid) {
        let _ = std::os::unix::fs::chown(&staging, Some(uid), Some(gid));
    }
    // Every restored file against its checksum before it replaces anything.
    for (path, _) in set.files(id)? {
        let rel = path.strip_prefix(&format!("{set_path}/")).unwrap_or(&path);
        let file = staging.join(rel);
        let (got, _) = std::fs::File::open(&file)
            .and_then(|mut f| crate::verify::sha256_of(&mut f))
            .map_err(|e| Error::io("reading restored", &file, e))?;
        if set.checksums.get(&path) != Some(&got) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::Verification(format!(
                "{id}: restored {path} does not match its checksum"
            )));
        }
    }
    let old = if live.exists() {
        let old = sibling(live, "sb-old");
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(live, &old).map_err(|e| Error::io("moving aside", live, e))?;
        Some(old)
    } else {
        None
    };
    std::fs::rename(&staging, live).map_err(|e| Error::io("moving into place", &staging, e))?;
    Ok(Box::new(Swapped {
        live: live.to_path_buf(),
        old,
        users,
    }))
}

/// A directory swapped in; the original moved to `old`.
struct Swapped {
    live: PathBuf,
    old: Option<PathBuf>,
    /// Containers stopped for the swap: started by `resume`, or when this
    /// is dropped after the commit or undo.
    users: Option<StoppedContainers>,
}

impl Applied for Swapped {
    fn commit(self: Box<Self>) {
        if let Some(old) = &self.old {
            if let Err(e) = remove_tree(old) {
                log::warn!("could not remove the old copy {}: {e}", old.display());
            }
        }
    }

    fn resume(&mut self) -> Result<()> {
        match &mut self.users {
            Some(u) => u.start_again("docker"),
            None => Ok(()),
        }
    }

    fn undo(mut self: Box<Self>, _undo: &UndoContext) -> Result<()> {
        if let Some(u) = &mut self.users {
            u.stop_again("docker")?;
        }
        let failed = sibling(&self.live, "sb-failed");
        let _ = std::fs::remove_dir_all(&failed);
        if self.live.exists() {
            std::fs::rename(&self.live, &failed)
                .map_err(|e| Error::io("moving aside", &self.live, e))?;
        }
        if let Some(old) = &self.old {
            std::fs::rename(old, &self.live).map_err(|e| Error::io("moving back", old, e))?;
        }
        let _ = std::fs::remove_dir_all(&failed);
        Ok(())
    }
}

/// Removes the directory `dir` and everything in it, its top-level entries
/// shared out to two threads (unlinking tens of thousands of files is
/// kernel work that two CPUs do faster than one).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    let remove = |p: &PathBuf| -> std::io::Result<()> {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
            Ok(_) => std::fs::remove_file(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    };
    let halves: Vec<std::io::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = [0, 1]
            .map(|half| {
                let (entries, remove) = (&entries, &remove);
                s.spawn(move || entries.iter().skip(half).step_by(2).try_for_each(remove))
            })
            .into_iter()
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("removal panicked")))
            })
            .collect()
    });
    halves.into_iter().collect::<std::io::Result<()>>()?;
    std::fs::remove_dir(dir)
}

/// The entry that archives directory `root` as `target` of the set.
#[must_use]
pub fn entry(id: &ComponentId, root: PathBuf, target: &str) -> crate::source::Entry {
    crate::source::Entry::Tree {
        component: id.to_string(),
        root,
        target: target.to_string(),
    }
}
