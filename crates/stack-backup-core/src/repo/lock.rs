//! A per-repository lock so that two stack-backup processes never change
//! the same repository at once.
//!
//! The lock is an advisory `flock` on a file under the system temp
//! directory, keyed by the repository location. The kernel drops it when
//! the process exits, killed or not, so a crash never leaves a stale lock.
//! It guards processes on this machine; the repository format itself stays
//! lock-free as rustic's is.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::repository::Location;

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
    path: PathBuf,
}

impl RepoLock {
    /// The lock file used for a repository location.
    #[must_use]
    pub fn path_for(loc: &Location) -> PathBuf {
        let key = match loc {
            Location::Local(p) => std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string(),
            Location::Remote(u) => u.clone(),
        };
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        std::env::temp_dir()
            .join("stack-backup-locks")
            .join(format!("{}.lock", &digest[..16]))
    }

    /// Takes the lock or fails at once with [`Error::Locked`].
    pub fn acquire(loc: &Location) -> Result<Self> {
        let path = Self::path_for(loc);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening lock file", &path, e))?;
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
        let _ = file.set_len(0);
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
        let held = RepoLock::acquire(&loc).unwrap();
        let err = RepoLock::acquire(&loc).unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        drop(held);
        // Released with the file. Another test thread that forks a child at
        // this moment shares the open file until the child's exec closes it
        // (close-on-exec), so give that a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match RepoLock::acquire(&loc) {
                Ok(_) => break,
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("not released: {e}"),
            }
        }
    }
}
