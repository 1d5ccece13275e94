//! A per-repository lock so that two stack-backup processes on this
//! machine never change the same repository at once.
//!
//! The lock is an advisory `flock` on `<state>/locks/<key>.lock`, keyed by
//! the repository location, in the state directory of
//! [`crate::system::state`] (root-owned or ours, never group/world
//! writable; it used to live under the world-writable temp directory, where
//! a planted symlink could make root truncate any file). The file is
//! created `O_EXCL`, opened `O_NOFOLLOW` and checked to be our own regular
//! file before anything is written to it. The kernel drops the lock when
//! the process exits, killed or not, so a crash never leaves a stale lock.

use std::fs::{File, TryLockError};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::repository::Location;
use crate::system::state;

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
    path: PathBuf,
}

impl RepoLock {
    /// The lock file of a repository location under the state directory
    /// `state_dir`.
    #[must_use]
    pub fn path_in(state_dir: &Path, loc: &Location) -> PathBuf {
        let key = match loc {
            Location::Local(p) => std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
            Location::Remote(u) => u.clone(),
        };
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        state_dir
            .join("locks")
            .join(format!("{}.lock", &digest[..16]))
    }

    /// Takes the lock in the state directory of the environment
    /// (`STACK_BACKUP_STATE_DIR`, else the default) or fails at once with
    /// [`Error::Locked`].
    pub fn acquire(loc: &Location) -> Result<Self> {
        Self::local_in(&state::from_env()?, loc)
    }

    /// Takes the lock under the state directory `state_dir` or fails at
    /// once with [`Error::Locked`]; refuses ([`Error::Refused`]) a lock path
    /// that is a symlink, a hard link or another user's file.
    pub fn local_in(state_dir: &Path, loc: &Location) -> Result<Self> {
        let path = Self::path_in(state_dir, loc);
        let dir = state::ensure(&state_dir.join("locks"))?;
        let path = dir.join(path.file_name().unwrap_or_default());
        let mut file = state::create_private(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    location: loc.to_string(),
                    lock: path,
                })
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
        }
        // Ours, checked, and held: safe to rewrite.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &PathBuf {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_same_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let loc = Location::Local(dir.path().to_path_buf());
        let state = tempfile::tempdir().unwrap();
        let held = RepoLock::local_in(state.path(), &loc).unwrap();
        let err = RepoLock::local_in(state.path(), &loc).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(held);
        // Released with the file. Another test thread that forks a child at
        // this moment shares the open file until the child's exec closes it
        // (close-on-exec), so give that a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match RepoLock::local_in(state.path(), &loc) {
                Ok(_) => break,
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("not released: {e}"),
            }
        }
    }
}
