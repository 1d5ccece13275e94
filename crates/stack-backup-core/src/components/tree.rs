//! Directory trees (Docker volumes, plain paths): restored beside the live
//! directory, checked file by file, then swapped in; the original is kept
//! beside it until the restore as a whole succeeded.

use std::path::{Path, PathBuf};

use rustic_core::repofile::Node;
use rustic_core::{LocalDestination, LsOptions, RestoreOptions};
use serde::{Deserialize, Serialize};

use super::restoring::{Applied, Indexed, JournalEntry, Recover, SetContext, UndoContext};
use super::unchanged::Unchanged;
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
/// Every path of the tree must stay inside `dir` ([`inside`]): the tree is
/// read from a repository someone may have tampered with, and rustic joins
/// node names to paths as they are. The error says which part failed.
pub fn restore_node_into(
    repo: &Indexed,
    node: &Node,
    dir: &Path,
) -> std::result::Result<(), String> {
    restore_node_where(repo, node, dir, |_: &Path, _: &Node| true)
}

/// [`restore_node_into`], of the entries `keep` accepts only (paths
/// relative to `node`).
fn restore_node_where(
    repo: &Indexed,
    node: &Node,
    dir: &Path,
    keep: impl Fn(&Path, &Node) -> bool + Clone,
) -> std::result::Result<(), String> {
    let fail =
        |what: &str, e: Box<rustic_core::RusticError>| format!("{what}: {}", e.display_log());
    let dest = LocalDestination::new(&format!("{}/", dir.display()), true, false)
        .map_err(|e| fail("destination", e))?;
    let opts = RestoreOptions::default();
    let ls = repo
        .ls(node, &LsOptions::default())
        .map_err(|e| fail("reading the tree", e))?
        .map(|item| item.and_then(inside))
        .filter(move |item| item.as_ref().map_or(true, |(p, n)| keep(p, n)));
    let plan = repo
        .prepare_restore(&opts, ls.clone(), &dest, false)
        .map_err(|e| fail("planning", e))?;
    repo.restore(plan, &opts, ls, &dest)
        .map_err(|e| fail("restoring files", e))
}

/// An entry of a tree about to be restored, refused unless its path is
/// relative and made of plain names only: a node named `..`, `/etc` or
/// `a/../../b` (which no archiver writes, but a tampered tree can hold)
/// would otherwise lead the restore out of its directory.
fn inside((path, node): (PathBuf, Node)) -> rustic_core::RusticResult<(PathBuf, Node)> {
    use std::path::Component;
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)))
        && path.file_name() == Some(node.name().as_ref());
    if plain {
        return Ok((path, node));
    }
    Err(rustic_core::RusticError::new(
        rustic_core::ErrorKind::InputOutput,
        "the set's tree holds an entry `{path}` that is not a plain name inside its directory; the repository may have been tampered with, nothing of it is restored",
    )
    .attach_context("path", path.display().to_string()))
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

/// A directory swap in the restore journal: the live path, the staging
/// directory beside it (named after the journal), and the inodes that
/// tell, after a crash, which of the two is where.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeEntry {
    /// The live directory.
    pub live: PathBuf,
    /// `<live>.sb-restore-<journal id>`: the restored tree until the
    /// swap, the original after it.
    pub staging: PathBuf,
    /// The inode of the live directory before the swap (none: there was
    /// none, the restore creates it).
    pub live_ino: Option<u64>,
    /// The inode of the staging directory once created.
    #[serde(default)]
    pub staging_ino: Option<u64>,
    /// Containers stopped for the swap (started again when resolved).
    #[serde(default)]
    pub containers: Vec<String>,
}

/// The inode at `p` itself (a symlink is not followed), if anything is there.
fn ino(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// Whether `p` is a real directory (not a symlink to one).
fn real_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_dir())
}

/// Leftovers of an interrupted run of an older version, or of a restore
/// whose journal is gone (`<live>.sb-restore-<id>`), beside `live`: never
/// deleted silently. Called before a new journal names its own staging
/// directory, so every such name found is someone else's.
pub fn refuse_leftovers(id: &ComponentId, live: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (live.parent(), live.file_name()) else {
        return Ok(());
    };
    let name = name.to_string_lossy();
    let fixed = ["sb-old", "sb-restore", "sb-failed"].map(|s| format!("{name}.{s}"));
    let journaled = format!("{name}.sb-restore-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if fixed.contains(&n) || n.starts_with(&journaled) {
            return Err(Error::Refused(format!(
                "{id}: {} exists beside the live directory (left by an interrupted restore whose journal is gone, or of an older version: it may be the only copy of the original); check it and remove or rename it; nothing was changed",
                e.path().display()
            )));
        }
    }
    Ok(())
}

/// Refuses a live path that is not a real directory (a symlink, a file),
/// or whose parent another user can change (see [`restore_tree`]).
fn refuse_unsafe_live(id: &ComponentId, live: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::symlink_metadata(live) {
        if !m.file_type().is_dir() {
            return Err(Error::Refused(format!(
                "{id}: {} is not a directory (a symlink or a file); configure the directory itself; nothing was changed",
                live.display()
            )));
        }
    }
    let parent = live.parent().unwrap_or(Path::new("/"));
    let m = std::fs::symlink_metadata(parent).map_err(|e| Error::io("reading", parent, e))?;
    let me = nix::unistd::geteuid().as_raw();
    let others_write = m.mode() & 0o022 != 0;
    if !m.file_type().is_dir() || (m.uid() != me && m.uid() != 0) || others_write {
        return Err(Error::Refused(format!(
            "{id}: {} may be changed by another user (owner uid {}, mode {:o}): the restore would build its copy there; nothing was changed",
            parent.display(),
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Exchanges the directory entries `a` and `b` (same parent) atomically
/// (`renameat2(RENAME_EXCHANGE)`): both paths exist before and after.
/// With `b` missing, `a` is renamed to `b` (`RENAME_NOREPLACE`). Symlinks
/// are exchanged as entries, never followed.
fn exchange(a: &Path, b: &Path, b_exists: bool) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    let parent = a.parent().unwrap_or(Path::new("."));
    let dir = std::fs::File::open(parent)?;
    let (Some(na), Some(nb)) = (a.file_name(), b.file_name()) else {
        return Err(std::io::Error::other("a path without a name"));
    };
    let flags = if b_exists {
        RenameFlags::RENAME_EXCHANGE
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    renameat2(&dir, na, &dir, nb, flags).map_err(std::io::Error::from)
}

/// Restores the directory `set_path` of the set beside `live`, checks every
/// restored file against its checksum, then swaps it in with one
/// `renameat2(RENAME_EXCHANGE)`: the live path always exists. Files the
/// live tree holds unchanged are hard-linked, not written again; their
/// inodes are then shared with the kept original (see [`Unchanged`],
/// decision 0058). The staging directory `<live>.sb-restore-<journal id>`
/// is created exclusively (`mkdir`: a symlink or anything else planted
/// there is refused, never followed) and, after the swap, holds the
/// original until the commit removes it. The journal entry is written before each change, the first
/// one before the running containers `users` are stopped (they start again
/// when the change is resumed, committed or undone, and when a crash is
/// resolved).
///
/// The live path must be a real directory (or missing) in a parent only we
/// (or root) can change: a symlink there would be swapped as a link, and a
/// parent others can write would let them replace the staging directory
/// while root fills it.
pub fn restore_tree(
    set: &SetContext,
    id: &ComponentId,
    set_path: &str,
    live: &Path,
    users: &[String],
) -> Result<Box<dyn Applied>> {
    refuse_leftovers(id, live)?;
    refuse_unsafe_live(id, live)?;
    let staging = sibling(live, &format!("sb-restore-{}", set.tag()));
    let live_ino = ino(live);
    let mut entry = TreeEntry {
        live: live.to_path_buf(),
        staging: staging.clone(),
        live_ino,
        staging_ino: None,
        containers: users.to_vec(),
    };
    set.journal(id, JournalEntry::Tree(entry.clone()))?;
    let users = if users.is_empty() {
        None
    } else {
        Some(StoppedContainers::stop(id.as_str(), users)?)
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| Error::io("creating (exclusively) the staging directory", &staging, e))?;
    }
    entry.staging_ino = ino(&staging);
    set.journal(id, JournalEntry::Tree(entry.clone()))?;
    let cleanup = |e: Error| {
        if real_dir(&staging) && ino(&staging) == entry.staging_ino {
            let _ = remove_tree(&staging);
        }
        e
    };
    let node = set.node(id, set_path).map_err(cleanup)?;
    // Files the live tree holds unchanged are linked, not written again
    // (decision 0058); the restore writes the others.
    let mut unchanged = Unchanged::find(set, id, set_path, &node, live).map_err(cleanup)?;
    restore_node_where(set.repo, &node, &staging, |p: &Path, _: &Node| {
        !unchanged.skips(p)
    })
    .map_err(|m| cleanup(Error::component(id.as_str(), m)))?;
    crate::system::fault::point("restore-tree-linking").map_err(cleanup)?;
    let missed = unchanged
        .link_into(set, id, &node, live, &staging)
        .map_err(cleanup)?;
    if !missed.is_empty() {
        log::info!(
            "{id}: {} file(s) changed while the restore ran, restored from the set",
            missed.len()
        );
        restore_node_where(set.repo, &node, &staging, |p: &Path, n: &Node| {
            n.is_file() && missed.binary_search_by(|m| m.as_path().cmp(p)).is_ok()
        })
        .map_err(|m| cleanup(Error::component(id.as_str(), m)))?;
        unchanged.retime_dirs(&staging).map_err(cleanup)?;
    }
    if unchanged.linked_count() > 0 {
        log::info!(
            "{id}: {} unchanged file(s) linked from {}",
            unchanged.linked_count(),
            live.display()
        );
    }
    // The root directory's own mode and owner.
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = node.meta.mode {
        let _ = std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode & 0o7777));
    }
    if let (Some(uid), Some(gid)) = (node.meta.uid, node.meta.gid) {
        let _ = std::os::unix::fs::lchown(&staging, Some(uid), Some(gid));
    }
    // Every restored file against its checksum before it replaces anything.
    // A linked file was checked before it was linked (the same inode).
    set.for_each_file(id, |path, _| {
        let rel = path.strip_prefix(&format!("{set_path}/")).unwrap_or(&path);
        if unchanged.linked(Path::new(rel)) {
            return Ok(());
        }
        let file = staging.join(rel);
        let (got, _) = std::fs::File::open(&file)
            .and_then(|mut f| crate::verify::sha256_of(&mut f))
            .map_err(|e| Error::io("reading restored", &file, e))?;
        if !set.checksums.matches(&path, &got) {
            return Err(Error::Verification(format!(
                "{id}: restored {path} does not match its checksum"
            )));
        }
        Ok(())
    })
    .map_err(cleanup)?;
    crate::system::fault::point("restore-tree-staged").map_err(cleanup)?;
    // The staging directory is still the one made above (not replaced by
    // something else while it was filled).
    if ino(&staging) != entry.staging_ino || !real_dir(&staging) {
        return Err(Error::Refused(format!(
            "{id}: {} was replaced while it was filled; nothing was swapped",
            staging.display()
        )));
    }
    exchange(&staging, live, live_ino.is_some())
        .map_err(|e| cleanup(Error::io("swapping in (renameat2)", live, e)))?;
    crate::system::fault::point("restore-tree-swapped")?;
    Ok(Box::new(Swapped { entry, users }))
}

/// A directory swapped in; the original at the staging path.
struct Swapped {
    entry: TreeEntry,
    /// Containers stopped for the swap: started by `resume`, or when this
    /// is dropped after the commit or undo.
    users: Option<StoppedContainers>,
}

impl Applied for Swapped {
    fn commit(self: Box<Self>) {
        if let Err(e) = finish(&self.entry) {
            log::warn!("{e}");
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
        abort(&self.entry).map(|_| ())
    }
}

/// Drops the original kept at the staging path (only when it is the
/// original directory: its inode was recorded).
fn finish(e: &TreeEntry) -> Result<String> {
    let kept = ino(&e.staging);
    if kept.is_some() && kept == e.live_ino && real_dir(&e.staging) {
        remove_tree(&e.staging)
            .map_err(|err| Error::io("removing the kept original", &e.staging, err))?;
        return Ok(format!("{}: original removed", e.live.display()));
    }
    // Not swapped yet (a crash before the swap, resolved as finished only
    // when the journal said so): the restored copy is dropped too.
    if kept.is_some() && kept == e.staging_ino && real_dir(&e.staging) {
        remove_tree(&e.staging).map_err(|err| Error::io("removing", &e.staging, err))?;
    }
    Ok(format!("{}: nothing kept", e.live.display()))
}

/// Puts the original back at the live path (exchanging again when the
/// restored tree is there) and removes the staging directory; decided by
/// the inodes at both paths, never by guessing.
fn abort(e: &TreeEntry) -> Result<String> {
    let (at_live, at_staging) = (ino(&e.live), ino(&e.staging));
    let mut did = "nothing was swapped";
    if e.staging_ino.is_some() && at_live == e.staging_ino {
        match e.live_ino {
            Some(orig) if at_staging == Some(orig) => {
                exchange(&e.staging, &e.live, true)
                    .map_err(|err| Error::io("swapping back (renameat2)", &e.live, err))?;
                did = "swapped back";
            }
            // There was no original: the restored tree goes.
            None => {
                remove_tree(&e.live).map_err(|err| Error::io("removing", &e.live, err))?;
                did = "restored directory removed (there was none before)";
            }
            Some(_) => {
                return Err(Error::Refused(format!(
                "{}: the restored tree is live but the original is not at {}; check both by hand",
                e.live.display(),
                e.staging.display()
            )))
            }
        }
    }
    // Whatever is at the staging path now is the restored copy (or a
    // partial one): ours only when it is a real directory with the inode
    // recorded (or, when the crash came before the inode was recorded,
    // the directory made under the journal's unique name).
    let at_staging = ino(&e.staging);
    if at_staging.is_some() && real_dir(&e.staging) && at_staging != e.live_ino {
        if e.staging_ino.is_none() || at_staging == e.staging_ino {
            remove_tree(&e.staging).map_err(|err| Error::io("removing", &e.staging, err))?;
        } else {
            log::warn!(
                "{} is not the staging directory this restore made; left alone",
                e.staging.display()
            );
        }
    }
    Ok(format!("{}: {did}", e.live.display()))
}

/// Resolves a journaled directory swap, then starts the containers it
/// stopped.
pub(crate) fn recover(e: &TreeEntry, to: Recover) -> Result<String> {
    let line = match to {
        Recover::Abort => {
            // They may have been started again (a crash during the
            // `[[health]]` checks): none may write into a tree while it is
            // swapped back and removed. Stopping a stopped one is a no-op.
            crate::components::docker::each_for_recovery("stop", &e.containers)?;
            abort(e)?
        }
        Recover::Finish => finish(e)?,
    };
    crate::components::docker::each_for_recovery("start", &e.containers)?;
    Ok(line)
}

/// Threads that remove a tree. Unlinking is mostly waiting on the
/// filesystem (its inode and bitmap blocks, the discards of a `discard`
/// mount), not CPU: a copy of the bench's 30,000 files took 2.0 s on one
/// thread, 1.7 s on two, 1.1 s on four and 0.9–1.1 s on eight.
const REMOVERS: usize = 8;

/// Removes the directory `dir` and everything in it (symbolic links
/// inside are removed, never followed). The entries one level below the
/// top are shared out to [`REMOVERS`] threads, so that a tree of a few
/// large top-level directories is spread as well.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let gone_ok = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    let is_dir = |p: &Path| -> std::io::Result<Option<bool>> {
        match std::fs::symlink_metadata(p) {
            Ok(m) => Ok(Some(m.is_dir())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let mut work: Vec<PathBuf> = Vec::new();
    let mut tops: Vec<PathBuf> = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if is_dir(&p)? == Some(true) {
            for c in std::fs::read_dir(&p)? {
                work.push(c?.path());
            }
            tops.push(p);
        } else {
            work.push(p);
        }
    }
    let remove = |p: &Path| -> std::io::Result<()> {
        match is_dir(p)? {
            Some(true) => gone_ok(std::fs::remove_dir_all(p)),
            Some(false) => gone_ok(std::fs::remove_file(p)),
            None => Ok(()),
        }
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::io::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..REMOVERS.min(work.len()))
            .map(|_| {
                let (work, next, remove) = (&work, &next, &remove);
                s.spawn(move || loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    match work.get(i) {
                        Some(p) => remove(p)?,
                        None => return Ok(()),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("removal panicked")))
            })
            .collect()
    });
    results.into_iter().collect::<std::io::Result<()>>()?;
    for t in &tops {
        gone_ok(std::fs::remove_dir(t))?;
    }
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::PathBuf;

    use rustic_core::repofile::{Metadata, Node, NodeType};

    use super::inside;

    fn entry(path: &str, name: &str) -> (PathBuf, Node) {
        (
            PathBuf::from(path),
            Node::new_node(OsStr::new(name), NodeType::File, Metadata::default()),
        )
    }

    #[test]
    fn only_plain_names_inside_the_directory_are_restored() {
        // As rustic's streamer builds them: the parent's path joined with
        // the node's name.
        for (path, name) in [("a", "a"), ("dir/b.txt", "b.txt"), ("d/.hidden", ".hidden")] {
            assert!(inside(entry(path, name)).is_ok(), "{path}");
        }
        for (path, name) in [
            ("..", ".."),
            ("dir/..", ".."),
            ("dir/../../etc/passwd", "../../etc/passwd"),
            ("/etc/shadow", "/etc/shadow"),
            ("dir/./x", "./x"),
            ("dir/a/b", "a/b"),
        ] {
            let err = inside(entry(path, name)).unwrap_err();
            assert!(err.to_string().contains("tampered"), "{path}: {err}");
        }
    }

    #[test]
    fn remove_tree_removes_everything_and_follows_no_link() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"keep").unwrap();
        let tree = base.path().join("tree");
        for d in 0..3 {
            for s in 0..20 {
                let leaf = tree.join(format!("d{d}/s{s}"));
                std::fs::create_dir_all(leaf.join("deeper")).unwrap();
                std::fs::write(leaf.join("f"), b"x").unwrap();
                std::fs::write(leaf.join("deeper/g"), b"y").unwrap();
            }
            std::fs::write(tree.join(format!("d{d}/file")), b"z").unwrap();
            std::os::unix::fs::symlink(&outside, tree.join(format!("d{d}/link"))).unwrap();
        }
        std::fs::write(tree.join("top-file"), b"t").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("top-link")).unwrap();
        std::fs::create_dir(tree.join("empty")).unwrap();
        super::remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
    }
}
