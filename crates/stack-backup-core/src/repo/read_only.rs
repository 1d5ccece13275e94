//! Baselines in a local repository: the pack files and the snapshot file
//! of an immaculate or sacred set are made read-only (write bits cleared) when it is
//! written, and immutable (`chattr +i`, the filesystem's immutable
//! attribute) on request (`immaculate protect --chattr`).
//!
//! What this protects against: a stray write, `rm -f` by a user other than
//! the files' owner's root, restic's or stack-backup's own prune (an
//! immutable file cannot be unlinked, so `restic prune` and `restic forget`
//! fail instead of deleting it). What it does not: root on the host, who
//! can clear the attribute (`chattr -i`) and the mode; read-only alone does
//! not stop an unlink by the directory's owner. See the README ("Immutable
//! baselines") and decision 0029.
//!
//! What is durable: the modes and attributes on the files. Nothing here
//! ever makes a file writable again: that is done by hand, deliberately,
//! when a baseline is retired (prune says which files).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustic_core::repofile::SnapshotFile;
use rustic_core::{IndexedFull, Repository};
use serde::Serialize;

use crate::error::{Error, Result};

/// `FS_IMMUTABLE_FL` of `linux/fs.h`.
const IMMUTABLE: nix::libc::c_int = 0x10;

// `FS_IOC_GETFLAGS` / `FS_IOC_SETFLAGS` are numbered `_IOR('f', 1, long)`
// and `_IOW('f', 2, long)`, but the kernel reads and writes an int through
// the pointer: the number says long, the data is an int.
nix::ioctl_read_bad!(
    get_flags,
    nix::request_code_read!(b'f', 1, std::mem::size_of::<nix::libc::c_long>()),
    nix::libc::c_int
);
nix::ioctl_write_ptr_bad!(
    set_flags,
    nix::request_code_write!(b'f', 2, std::mem::size_of::<nix::libc::c_long>()),
    nix::libc::c_int
);

/// A file's protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Attrs {
    /// No write permission bit set (mode 0444 or less).
    pub read_only: bool,
    /// The immutable attribute; `None` where the filesystem has no such
    /// attribute (tmpfs on older kernels, many FUSE and network
    /// filesystems).
    pub immutable: Option<bool>,
}

/// Whether `e` means "this filesystem has no inode flags".
fn unsupported(e: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(e, Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL)
}

fn flags(file: &File) -> std::result::Result<nix::libc::c_int, nix::errno::Errno> {
    use std::os::fd::AsRawFd;
    let mut f: nix::libc::c_int = 0;
    // SAFETY: the descriptor is open for the call's duration and `f` is a
    // valid, writable int the kernel fills.
    unsafe { get_flags(file.as_raw_fd(), &mut f) }?;
    Ok(f)
}

/// The protection of `path` (not following a symlink).
pub fn attrs(path: &Path) -> Result<Attrs> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("reading", path, e))?;
    if !meta.is_file() {
        return Err(Error::io(
            "reading",
            path,
            std::io::Error::other("not a regular file"),
        ));
    }
    let file = open(path)?;
    let immutable = match flags(&file) {
        Ok(f) => Some(f & IMMUTABLE != 0),
        Err(e) if unsupported(e) => None,
        Err(e) => return Err(Error::io("reading the attributes of", path, e.into())),
    };
    Ok(Attrs {
        read_only: meta.permissions().mode() & 0o222 == 0,
        immutable,
    })
}

fn open(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("opening", path, e))
}

/// Makes `path` read-only by clearing its write bits only (0644 → 0444,
/// 0600 → 0400: never readable by more than before) unless it already is
/// or is immutable (an immutable file's mode cannot be changed, and need
/// not be).
pub fn make_read_only(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io("reading", path, e))?;
    if meta.permissions().mode() & 0o222 == 0 || attrs(path)?.immutable == Some(true) {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777 & !0o222;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("making read-only", path, e))
}

/// Sets the immutable attribute of `path` (`chattr +i`). A filesystem
/// without it, or a process without `CAP_LINUX_IMMUTABLE` (root has it),
/// is a usage error that says so.
pub fn make_immutable(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file = open(path)?;
    let f = match flags(&file) {
        Ok(f) => f,
        Err(e) if unsupported(e) => return Err(no_attribute(path)),
        Err(e) => return Err(Error::io("reading the attributes of", path, e.into())),
    };
    if f & IMMUTABLE != 0 {
        return Ok(());
    }
    let new = f | IMMUTABLE;
    // SAFETY: as in `flags`; the kernel only reads `new`.
    match unsafe { set_flags(file.as_raw_fd(), &new) } {
        Ok(_) => Ok(()),
        Err(e) if unsupported(e) => Err(no_attribute(path)),
        Err(nix::errno::Errno::EPERM) => Err(Error::Usage(format!(
            "setting the immutable attribute of {} needs root (CAP_LINUX_IMMUTABLE); the files stay read-only only",
            path.display()
        ))),
        Err(e) => Err(Error::io("setting the immutable attribute of", path, e.into())),
    }
}

fn no_attribute(path: &Path) -> Error {
    Error::Usage(format!(
        "the filesystem of {} has no immutable attribute (`chattr +i`; tmpfs on older kernels, many FUSE and network filesystems); the files stay read-only only",
        path.display()
    ))
}

/// The files of `snap` in the local repository at `root`: its packs, then
/// its snapshot file.
pub fn set_files<S: IndexedFull>(
    root: &Path,
    repo: &Repository<S>,
    snap: &SnapshotFile,
) -> Result<(Vec<PathBuf>, usize)> {
    let packs = crate::object_lock::set_packs(repo, snap)?;
    let n = packs.len();
    let mut files: Vec<PathBuf> = packs.iter().map(|p| pack_path(root, p)).collect();
    files.push(root.join("snapshots").join(&*snap.id.to_hex()));
    Ok((files, n))
}

/// The file of pack `id` (hex) in the local repository at `root`.
#[must_use]
pub fn pack_path(root: &Path, id: &str) -> PathBuf {
    root.join("data").join(&id[..2]).join(id)
}

/// What [`protect`] did.
#[derive(Debug, Clone, Serialize)]
pub struct LocalProtected {
    /// Files made read-only (packs and the snapshot file).
    pub files: usize,
    /// Of which packs.
    pub packs: usize,
    /// Whether they were also made immutable (`chattr +i`).
    pub immutable: bool,
}

/// Makes the pack files and the snapshot file of `snap` read-only, and
/// immutable with `chattr`, when the repository is local (`root`). Packs
/// shared with other sets are protected too: a baseline needs them.
pub fn protect<S: IndexedFull>(
    root: &Path,
    repo: &Repository<S>,
    snap: &SnapshotFile,
    chattr: bool,
) -> Result<LocalProtected> {
    let (files, packs) = set_files(root, repo, snap)?;
    for f in &files {
        make_read_only(f)?;
        if chattr {
            make_immutable(f)?;
        }
    }
    Ok(LocalProtected {
        files: files.len(),
        packs,
        immutable: chattr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_made_read_only_and_its_attributes_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, b"x").unwrap();
        assert!(!attrs(&f).unwrap().read_only);
        make_read_only(&f).unwrap();
        let a = attrs(&f).unwrap();
        assert!(a.read_only);
        assert_ne!(a.immutable, Some(true));
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(attrs(&link).is_err(), "a symlink is not followed");
    }
}
