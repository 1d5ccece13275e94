//! Files of a set's tree that the live directory still holds unchanged:
//! hard-linked into the staging directory instead of written again
//! (decision 0058).
//!
//! A tree restore builds the whole directory beside the live one and swaps
//! it in ([`super::tree::restore_tree`]). After a bad deploy most files are
//! usually the set's already; writing them again costs the repository
//! read, the writes, a new inode each and, when the kept original is
//! dropped, as many inodes freed. A file is linked instead only when:
//!
//! - its node in the set is a plain file: mode bits only (no set-id or
//!   sticky bit), not hard-linked within the set, no extended attributes;
//! - the live entry, reached from the live directory without following any
//!   symbolic link or crossing a mount (`openat2` with `RESOLVE_BENEATH`,
//!   `RESOLVE_NO_SYMLINKS`, `RESOLVE_NO_XDEV`), is a regular file with one
//!   link, no extended attributes, and the node's size, mtime, permission
//!   bits and the owner the restore would give it;
//! - the SHA-256 of the live inode's content is the set's checksum for it;
//! - and nothing changed it between the hash and the link: the inode
//!   number and ctime (which every write, `chmod`, `chown` and link moves)
//!   are the ones seen before hashing, and the staging entry is that inode.
//!
//! **What is written:** only the link counts and ctimes of the linked live
//! inodes; their content and metadata are never set. After the swap the
//! kept original and the restored tree share these inodes, so an undo
//! gets the original back as it was, and dropping the original unlinks
//! names only. A process that still holds one of these files open for
//! writing writes into the restored tree: a volume's containers are
//! stopped before its staging directory is made, as for every tree
//! restore; a plain path's writers must be stopped by the user.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, futimens, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};
use rustic_core::repofile::Node;

use super::restoring::SetContext;
use super::ComponentId;
use crate::error::{Error, Result};

/// How many threads hash the live candidates: the reads are mostly from
/// the page cache, and two cores hash.
const HASHERS: usize = 2;

/// A live file found equal to the set's, not yet linked.
struct Found {
    /// Relative to the tree's root.
    path: Box<Path>,
    ino: u64,
    ctime: (i64, i64),
}

/// The live files that may stand for the set's (see the module doc), in the
/// set's order.
pub struct Unchanged {
    found: Vec<Found>,
    /// Directories (relative) holding a linked file, with the node's
    /// times, set again once the links are made.
    dirs: Vec<(Box<Path>, TimeSpec, TimeSpec)>,
    /// Set once [`Unchanged::link_into`] ran: the files now linked.
    linked: Vec<Box<Path>>,
}

/// A file of the set that may be linked: what its live twin must show.
struct Candidate {
    name: OsString,
    size: u64,
    mtime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The candidates in one directory of the tree.
struct Group {
    dir: PathBuf,
    files: Vec<Candidate>,
}

fn resolve_beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

/// The directory `rel` under `root`, opened without following a symbolic
/// link or leaving `root`'s mount.
fn open_dir_beneath(root: &impl AsFd, rel: &Path) -> nix::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    openat2(
        root,
        rel,
        OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(resolve_beneath()),
    )
}

fn open_root(dir: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("opening", dir, e.into()))
}

fn ctime(st: &FileStat) -> (i64, i64) {
    (st.st_ctime, st.st_ctime_nsec)
}

/// Whether the open file has extended attributes. A filesystem without
/// them has none; any other error counts as having some.
fn has_xattrs(fd: &OwnedFd) -> bool {
    // SAFETY: a null buffer of size 0 asks only for the list's length.
    let n = unsafe { nix::libc::flistxattr(fd.as_raw_fd(), std::ptr::null_mut(), 0) };
    n > 0 || (n < 0 && nix::errno::Errno::last() != nix::errno::Errno::EOPNOTSUPP)
}

/// The owner the restore gives a node: the local id of its user or group
/// name when there is one, else the recorded id (as rustic's restore does).
struct Owners {
    users: HashMap<String, Option<u32>>,
    groups: HashMap<String, Option<u32>>,
}

impl Owners {
    fn uid(&mut self, node: &Node) -> Option<u32> {
        let local = |name: &str| {
            let user = nix::unistd::User::from_name(name).ok().flatten();
            user.map(|u| u.uid.as_raw())
        };
        by_name(&mut self.users, node.meta.user.as_ref(), local).or(node.meta.uid)
    }

    fn gid(&mut self, node: &Node) -> Option<u32> {
        let local = |name: &str| {
            let group = nix::unistd::Group::from_name(name).ok().flatten();
            group.map(|g| g.gid.as_raw())
        };
        by_name(&mut self.groups, node.meta.group.as_ref(), local).or(node.meta.gid)
    }
}

/// The local id of `name`, looked up once per name.
fn by_name(
    cache: &mut HashMap<String, Option<u32>>,
    name: Option<&String>,
    lookup: impl FnOnce(&str) -> Option<u32>,
) -> Option<u32> {
    let name = name?;
    *cache.entry(name.clone()).or_insert_with(|| lookup(name))
}

/// What a node asks of a live file to stand for it, if it may be linked.
fn candidate(node: &Node, owners: &mut Owners) -> Option<Candidate> {
    let m = &node.meta;
    let mode = m.mode?;
    // Go's mode: a plain file has its permission bits and nothing else.
    if mode & !0o777 != 0 || m.links > 1 || !m.extended_attributes.is_empty() {
        return None;
    }
    let mtime = m.mtime?;
    Some(Candidate {
        name: node.name().into_owned(),
        size: m.size,
        mtime: (mtime.as_second(), i64::from(mtime.subsec_nanosecond())),
        mode,
        uid: owners.uid(node)?,
        gid: owners.gid(node)?,
    })
}

fn stands_for(st: &FileStat, c: &Candidate) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
        && st.st_nlink == 1
        && st.st_mode & 0o7777 == c.mode
        && u64::try_from(st.st_size).ok() == Some(c.size)
        && (st.st_mtime, st.st_mtime_nsec) == c.mtime
        && st.st_uid == c.uid
        && st.st_gid == c.gid
}

/// Checks one candidate against the live directory `dir`: the inode and
/// ctime it was hashed at, when its content is the set's.
fn check(
    dir: &OwnedFd,
    c: &Candidate,
    set_file: &str,
    set: &SetContext,
) -> Option<(u64, (i64, i64))> {
    let st = fstatat(
        dir,
        c.name.as_os_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ok()?;
    if !stands_for(&st, c) {
        return None;
    }
    let fd = openat(
        dir,
        c.name.as_os_str(),
        // Non-blocking: a FIFO put there since the stat is not waited on.
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .ok()?;
    let before = fstat(&fd).ok()?;
    if before.st_ino != st.st_ino || !stands_for(&before, c) || has_xattrs(&fd) {
        return None;
    }
    let mut file = std::fs::File::from(fd);
    let (sha, n) = crate::verify::sha256_of(&mut file).ok()?;
    let after = fstat(&file).ok()?;
    let same =
        n == c.size && ctime(&after) == ctime(&before) && set.checksums.matches(set_file, &sha);
    same.then_some((before.st_ino, ctime(&before)))
}

impl Unchanged {
    /// Finds the files of the set's tree `root` (at `set_path` in the set)
    /// that `live` holds unchanged. Reads the live files; changes nothing.
    /// A live directory that is missing, or not a real directory, yields
    /// none.
    pub fn find(
        set: &SetContext,
        id: &ComponentId,
        set_path: &str,
        root: &Node,
        live: &Path,
    ) -> Result<Self> {
        let mut out = Self {
            found: Vec::new(),
            dirs: Vec::new(),
            linked: Vec::new(),
        };
        if !std::fs::symlink_metadata(live).is_ok_and(|m| m.is_dir()) {
            return Ok(out);
        }
        let live_fd = open_root(live)?;
        let mut owners = Owners {
            users: HashMap::new(),
            groups: HashMap::new(),
        };
        let mut groups: Vec<Group> = Vec::new();
        let mut at: HashMap<PathBuf, usize> = HashMap::new();
        set.walk(id, root, |path, node| {
            let Some(c) = node
                .is_file()
                .then(|| candidate(&node, &mut owners))
                .flatten()
            else {
                return Ok(());
            };
            let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
            let i = *at.entry(dir.clone()).or_insert_with(|| {
                groups.push(Group {
                    dir,
                    files: Vec::new(),
                });
                groups.len() - 1
            });
            groups[i].files.push(c);
            Ok(())
        })?;
        drop(at);
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Found>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..HASHERS {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(g) = groups.get(i) else { break };
                        let Ok(dir) = open_dir_beneath(&live_fd, &g.dir) else {
                            continue;
                        };
                        for c in &g.files {
                            let rel = g.dir.join(&c.name);
                            let set_file = format!("{set_path}/{}", rel.display());
                            if let Some((ino, ctime)) = check(&dir, c, &set_file, set) {
                                mine.push(Found {
                                    path: rel.into_boxed_path(),
                                    ino,
                                    ctime,
                                });
                            }
                        }
                    }
                    results.lock().expect("no hasher panics").append(&mut mine);
                });
            }
        });
        drop(groups);
        out.found = results.into_inner().expect("no hasher panics");
        out.found.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Whether `rel` (relative to the tree's root) was found unchanged:
    /// the restore leaves it to [`Unchanged::link_into`].
    #[must_use]
    pub fn skips(&self, rel: &Path) -> bool {
        self.found
            .binary_search_by(|f| f.path.as_ref().cmp(rel))
            .is_ok()
    }

    /// Whether `rel` is linked (after [`Unchanged::link_into`]): its
    /// content was checked against the set's checksum before the link.
    #[must_use]
    pub fn linked(&self, rel: &Path) -> bool {
        self.linked
            .binary_search_by(|p| p.as_ref().cmp(rel))
            .is_ok()
    }

    /// How many files are linked.
    #[must_use]
    pub fn linked_count(&self) -> usize {
        self.linked.len()
    }

    /// Links every file found into `staging` (the set's tree restored
    /// without them, its directories made), where the live entry is still
    /// the inode hashed, unchanged since; then sets the times of the
    /// directories that received links to the set's. Returns the files
    /// that could not be linked (changed meanwhile): the caller restores
    /// them from the set. Writes nothing in `live` but link counts (and
    /// with them ctimes).
    pub fn link_into(
        &mut self,
        set: &SetContext,
        id: &ComponentId,
        root: &Node,
        live: &Path,
        staging: &Path,
    ) -> Result<Vec<PathBuf>> {
        let mut missed = Vec::new();
        if self.found.is_empty() {
            return Ok(missed);
        }
        let live_fd = open_root(live)?;
        let staging_fd = open_root(staging)?;
        let mut linked = Vec::with_capacity(self.found.len());
        let mut dirs_touched: Vec<&Path> = Vec::new();
        let mut current: Option<(&Path, Option<(OwnedFd, OwnedFd)>)> = None;
        for f in &self.found {
            let dir = f.path.parent().unwrap_or(Path::new(""));
            if current.as_ref().is_none_or(|(d, _)| *d != dir) {
                let fds = open_dir_beneath(&live_fd, dir)
                    .and_then(|l| Ok((l, open_dir_beneath(&staging_fd, dir)?)))
                    .ok();
                current = Some((dir, fds));
            }
            let Some((_, Some((from, to)))) = &current else {
                missed.push(f.path.to_path_buf());
                continue;
            };
            let name = f.path.file_name().unwrap_or_default();
            if link_one(from, to, name, f) {
                linked.push(f.path.clone());
                if dirs_touched.last() != Some(&dir) {
                    dirs_touched.push(dir);
                }
            } else {
                missed.push(f.path.to_path_buf());
            }
        }
        drop(current);
        // The directories' times, as the set has them (the links moved
        // their mtimes after the restore set them).
        dirs_touched.sort_unstable();
        dirs_touched.dedup();
        self.dirs = dir_times(set, id, root, &dirs_touched)?;
        self.linked = linked;
        self.found = Vec::new();
        self.retime_dirs(staging)?;
        Ok(missed)
    }

    /// Sets the times of the directories that received links again (after
    /// a second restore pass moved them).
    pub fn retime_dirs(&self, staging: &Path) -> Result<()> {
        let staging_fd = open_root(staging)?;
        for (dir, atime, mtime) in &self.dirs {
            let fd = open_dir_beneath(&staging_fd, dir)
                .map_err(|e| Error::io("opening", staging.join(dir), e.into()))?;
            futimens(&fd, atime, mtime)
                .map_err(|e| Error::io("setting the times of", staging.join(dir), e.into()))?;
        }
        Ok(())
    }
}

/// Links `name` from `from` into `to` when it is still the inode `f`
/// hashed, unchanged; a staging entry that turns out to be another inode
/// is removed again.
fn link_one(from: &OwnedFd, to: &OwnedFd, name: &OsStr, f: &Found) -> bool {
    use nix::fcntl::AtFlags;
    let Ok(st) = fstatat(from, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
        return false;
    };
    if st.st_ino != f.ino || ctime(&st) != f.ctime || st.st_nlink != 1 {
        return false;
    }
    if linkat(from, name, to, name, AtFlags::empty()).is_err() {
        return false;
    }
    let ok = fstatat(to, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|s| s.st_ino == f.ino);
    if !ok {
        let _ = unlinkat(to, name, UnlinkatFlags::NoRemoveDir);
    }
    ok
}

/// The set's atime and mtime of the directories `dirs` (relative, sorted)
/// of the tree `root`; the root itself is not among them.
fn dir_times(
    set: &SetContext,
    id: &ComponentId,
    root: &Node,
    dirs: &[&Path],
) -> Result<Vec<(Box<Path>, TimeSpec, TimeSpec)>> {
    let mut out = Vec::new();
    if dirs.iter().all(|d| d.as_os_str().is_empty()) {
        return Ok(out);
    }
    set.walk(id, root, |path, node| {
        if !node.is_dir() || dirs.binary_search(&path.as_path()).is_err() {
            return Ok(());
        }
        if let Some(mtime) = node.meta.mtime {
            let atime = node.meta.atime.unwrap_or(mtime);
            let spec =
                |t: jiff::Timestamp| TimeSpec::new(t.as_second(), i64::from(t.subsec_nanosecond()));
            out.push((path.into_boxed_path(), spec(atime), spec(mtime)));
        }
        Ok(())
    })?;
    Ok(out)
}
