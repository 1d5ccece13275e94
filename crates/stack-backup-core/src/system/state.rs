//! The state directory: where stack-backup keeps what belongs to this
//! machine and must not be tampered with by other local users (the process
//! lock, and restore journals under `<state>/<stack>/`).
//!
//! Which directory, in order: the environment variable
//! `STACK_BACKUP_STATE_DIR`, the config's `[state] dir` (both applied to
//! the config by [`crate::Config::apply_env`]), else `/var/lib/stack-backup`
//! for root and `$XDG_STATE_HOME/stack-backup` (or
//! `~/.local/state/stack-backup`) for other users.
//!
//! Contract of [`ensure`]: the directory returned is a real directory (not
//! a symlink), owned by the current user or root, not writable by group or
//! others, and no directory above it can be renamed or replaced by another
//! user (each is owned by us or root, and group/other-writable only with
//! the sticky bit). Files created in it by [`create_private`] are opened
//! without following symlinks and checked to be our own regular files with
//! one link, so a planted symlink or hard link never redirects a write.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};

/// The environment variable that names the state directory.
pub const ENV: &str = "STACK_BACKUP_STATE_DIR";

/// The state directory of root.
pub const SYSTEM_DIR: &str = "/var/lib/stack-backup";

/// The state directory of `cfg` (`[state] dir`, with the environment
/// already applied), else of the process environment, else the default;
/// created and checked by [`ensure`].
pub fn of(cfg: &Config) -> Result<PathBuf> {
    match &cfg.state.dir {
        Some(d) => ensure(d),
        None => from_env(),
    }
}

/// The state directory named by `STACK_BACKUP_STATE_DIR`, else the default;
/// created and checked by [`ensure`].
pub fn from_env() -> Result<PathBuf> {
    let dir = match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => default_dir()?,
    };
    ensure(&dir)
}

/// The default state directory of the current user.
pub fn default_dir() -> Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from(SYSTEM_DIR));
    }
    let xdg = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    match (xdg, std::env::var_os("HOME").filter(|v| !v.is_empty())) {
        (Some(x), _) => Ok(x.join("stack-backup")),
        (None, Some(h)) => Ok(PathBuf::from(h).join(".local/state/stack-backup")),
        (None, None) => Err(Error::Refused(format!(
            "no state directory: set {ENV} (or HOME) to a directory only you can write"
        ))),
    }
}

/// Creates `dir` (mode 0700) when missing and checks it as the module doc
/// says; refuses with [`Error::Refused`] naming what is wrong.
pub fn ensure(dir: &Path) -> Result<PathBuf> {
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("reading the current directory", ".", e))?
            .join(dir)
    };
    if std::fs::symlink_metadata(&dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("creating the state directory", &dir, e))?;
    }
    check_dir(&dir)?;
    for up in dir.ancestors().skip(1) {
        check_ancestor(up)?;
    }
    Ok(dir)
}

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn refuse(path: &Path, why: &str) -> Error {
    Error::Refused(format!(
        "state directory {}: {why}; refusing to keep locks or journals there (set {ENV} or `[state] dir` to a directory only you or root can write)",
        path.display()
    ))
}

fn check_dir(dir: &Path) -> Result<()> {
    let md = std::fs::symlink_metadata(dir).map_err(|e| Error::io("reading", dir, e))?;
    if md.file_type().is_symlink() {
        return Err(refuse(dir, "is a symbolic link"));
    }
    if !md.is_dir() {
        return Err(refuse(dir, "is not a directory"));
    }
    if md.uid() != me() && md.uid() != 0 {
        return Err(refuse(
            dir,
            &format!("is owned by uid {}, not by you or root", md.uid()),
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(refuse(
            dir,
            &format!(
                "is writable by group or others (mode {:o})",
                md.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A directory above the state directory: another user must not be able
/// to rename or replace the entry below it.
fn check_ancestor(dir: &Path) -> Result<()> {
    let md = std::fs::metadata(dir).map_err(|e| Error::io("reading", dir, e))?;
    let shared = md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0;
    if (md.uid() != me() && md.uid() != 0) || shared {
        return Err(refuse(
            dir,
            &format!(
                "lies under {}, which another user can change (owner uid {}, mode {:o})",
                dir.display(),
                md.uid(),
                md.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Opens `path` (a file in a checked state directory) for reading and
/// writing, creating it with mode 0600 when missing (`O_EXCL`), never
/// following a symlink (`O_NOFOLLOW`), and refuses unless it is a regular
/// file owned by us with one link and no group/other write bit. Never
/// truncates: the caller decides what to write once it holds the file.
pub fn create_private(path: &Path) -> Result<File> {
    let flags = nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC;
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(flags)
        .open(path);
    let file = match created {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(flags | nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(nix::libc::ELOOP) {
                    refuse_file(path, "is a symbolic link")
                } else {
                    Error::io("opening", path, e)
                }
            })?,
        Err(e) => return Err(Error::io("creating", path, e)),
    };
    let md = file.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !md.is_file() {
        return Err(refuse_file(path, "is not a regular file"));
    }
    if md.uid() != me() {
        return Err(refuse_file(
            path,
            &format!("is owned by uid {}, not by you", md.uid()),
        ));
    }
    if md.nlink() != 1 {
        return Err(refuse_file(
            path,
            &format!("has {} hard links (expected 1)", md.nlink()),
        ));
    }
    if md.mode() & 0o022 != 0 {
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    Ok(file)
}

fn refuse_file(path: &Path, why: &str) -> Error {
    Error::Refused(format!(
        "{} {why}; refusing to open it (remove it if you did not put it there)",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_writable_or_symlinked_state_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let ok = ensure(&t.path().join("state")).unwrap();
        assert_eq!(
            std::fs::metadata(&ok).unwrap().mode() & 0o777,
            0o700,
            "created private"
        );
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(ensure(&open), Err(Error::Refused(_))));
        assert!(matches!(
            ensure(&open.join("below")),
            Err(Error::Refused(_))
        ));
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert!(matches!(ensure(&link), Err(Error::Refused(_))));
    }

    #[test]
    fn a_planted_symlink_or_hard_link_is_never_opened() {
        let t = tempfile::tempdir().unwrap();
        let dir = ensure(&t.path().join("state")).unwrap();
        let bystander = t.path().join("bystander");
        std::fs::write(&bystander, "keep me").unwrap();
        let sym = dir.join("sym.lock");
        std::os::unix::fs::symlink(&bystander, &sym).unwrap();
        assert!(matches!(create_private(&sym), Err(Error::Refused(_))));
        let hard = dir.join("hard.lock");
        std::fs::hard_link(&bystander, &hard).unwrap();
        assert!(matches!(create_private(&hard), Err(Error::Refused(_))));
        assert_eq!(std::fs::read_to_string(&bystander).unwrap(), "keep me");
        let mine = create_private(&dir.join("mine.lock")).unwrap();
        drop(mine);
        create_private(&dir.join("mine.lock")).unwrap();
    }
}
