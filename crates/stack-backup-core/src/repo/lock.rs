//! The repository lock: a local process lock (the fast path between
//! stack-backup processes on this machine) and a lock inside the
//! repository in restic's format ([`crate::repo::restic_lock`]), which
//! stock restic and stack-backup on other hosts honour.
//!
//! The local lock is an advisory `flock` on `<state>/locks/<key>.lock`,
//! keyed by the repository location, in the state directory of
//! [`crate::system::state`] (root-owned or ours, never group/world
//! writable; it used to live under the world-writable temp directory, where
//! a planted symlink could make root truncate any file). The file is
//! created `O_EXCL`, opened `O_NOFOLLOW` and checked to be our own regular
//! file before anything is written to it. The kernel drops the lock when
//! the process exits, killed or not.
//!
//! A caller holds a [`RepoLock`] for the whole of a command that reads or
//! changes the repository: [`Mode::Shared`] for backup, restore, verify and
//! copy, [`Mode::Exclusive`] for prune and removing sets.

use std::fs::{File, TryLockError};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{Config, Env};
use crate::error::{Error, Result};
pub use crate::repo::restic_lock::Mode;
use crate::repo::restic_lock::{self, Held};
use crate::repository::{self, Location};
use crate::system::state;

/// Holds the lock until dropped (the repository lock first, then the local
/// one).
#[derive(Debug)]
pub struct RepoLock {
    held: Option<Held>,
    _file: File,
    path: PathBuf,
}

impl RepoLock {
    /// The local lock file of a repository location under the state
    /// directory `state_dir`.
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

    /// Takes the local lock and a `mode` lock in the repository of `cfg`
    /// for `command` (e.g. `stack-backup backup`), waiting up to
    /// `lock-wait-seconds` for conflicting holders; then fails with
    /// [`Error::Locked`] (this machine) or [`Error::RepoLocked`] (the
    /// repository), both exit code 5.
    pub fn acquire(cfg: &Config, env: &Env, mode: Mode, command: &str) -> Result<Self> {
        Self::acquire_with_password(cfg, &repository::password(cfg, env)?, mode, command)
    }

    /// [`RepoLock::acquire`] with the repository password given (`copy`'s
    /// destination).
    pub fn acquire_with_password(
        cfg: &Config,
        password: &str,
        mode: Mode,
        command: &str,
    ) -> Result<Self> {
        Self::begin_local(cfg)?
            .begin(cfg, password, mode, command)?
            .wait()
    }

    /// The local lock, waited for up to `lock-wait-seconds` (other
    /// stack-backup processes of this machine, e.g. a restore, are done
    /// when it returns); the repository lock is [`LocalOnly::begin`].
    pub fn begin_local(cfg: &Config) -> Result<LocalOnly> {
        let loc = Location::of(cfg);
        let dir = state::of(cfg)?;
        let deadline = Instant::now() + cfg.repository.lock_wait();
        let lock = loop {
            match Self::local_in(&dir, &loc) {
                Ok(l) => break l,
                Err(Error::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => return Err(e),
            }
        };
        Ok(LocalOnly { lock, deadline })
    }

    /// Only the local lock, in the state directory of the environment
    /// (`STACK_BACKUP_STATE_DIR`, else the default), failing at once with
    /// [`Error::Locked`]: for `init`, before there is a repository.
    pub fn local(loc: &Location) -> Result<Self> {
        Self::local_in(&state::from_env()?, loc)
    }

    /// Only the local lock under the state directory `state_dir`, failing
    /// at once with [`Error::Locked`]; refuses ([`Error::Refused`]) a lock
    /// path that is a symlink, a hard link or another user's file.
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
        Ok(Self {
            held: None,
            _file: file,
            path,
        })
    }

    /// The local lock file.
    #[must_use]
    pub fn path(&self) -> &PathBuf {
        &self.path
    }
}

/// The local lock of [`RepoLock::begin_local`], the repository lock not
/// yet begun.
#[derive(Debug)]
pub struct LocalOnly {
    lock: RepoLock,
    deadline: Instant,
}

impl LocalOnly {
    /// Opens the repository (deriving its key) and writes the repository
    /// lock unless a conflicting lock is there; never waits for a holder:
    /// [`Starting::finish`] then reports [`Finished::Raced`] at once, so
    /// that work done meanwhile is undone before [`Starting::wait`].
    pub fn begin(
        self,
        cfg: &Config,
        password: &str,
        mode: Mode,
        command: &str,
    ) -> Result<Starting> {
        let Self { lock, deadline } = self;
        if let Some(at) = cfg.repository.as_of {
            // Nothing can be written through a past view, and the object
            // versions it reads cannot change (decision 0028): the local
            // lock only.
            log::info!("--as-of {at}: no lock is written into the repository");
            return Ok(Starting {
                lock,
                state: State::Done,
            });
        }
        let repo = repository::open(cfg, password)?;
        let left = deadline.saturating_duration_since(Instant::now());
        let state = match restic_lock::start(repo, &Location::of(cfg), mode, command, left)? {
            restic_lock::Started::Written(p) => State::Pending(p),
            restic_lock::Started::Busy(r) => State::Raced(r),
        };
        Ok(Starting { lock, state })
    }
}

/// A [`RepoLock`] half taken ([`LocalOnly::begin`]): the local lock held and
/// the repository lock file written (or a conflicting holder found), not
/// yet confirmed. Dropped, both go.
#[derive(Debug)]
pub struct Starting {
    lock: RepoLock,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Nothing more to take (a repository read as of a time: no lock in it).
    Done,
    Pending(Box<restic_lock::Pending>),
    Raced(Box<restic_lock::Raced>),
}

/// What [`Starting::finish`] found.
#[derive(Debug)]
pub enum Finished {
    /// The lock is held.
    Held(RepoLock),
    /// A conflicting lock was there at the first check (nothing written)
    /// or appeared while ours settled (ours removed): whatever was done
    /// meanwhile must be undone before [`Starting::wait`] waits for the
    /// holder.
    Raced(Box<Starting>),
}

impl Starting {
    /// Checks the repository lock again once its settle time since the
    /// write has passed ([`restic_lock::settle_for`]: none on a local
    /// filesystem); returns at once when a holder was found first.
    pub fn finish(mut self) -> Result<Finished> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => Ok(Finished::Held(self.lock)),
            State::Raced(r) => {
                self.state = State::Raced(r);
                Ok(Finished::Raced(Box::new(self)))
            }
            State::Pending(p) => match p.confirm()? {
                restic_lock::Confirmed::Held(h) => {
                    self.lock.held = Some(h);
                    Ok(Finished::Held(self.lock))
                }
                restic_lock::Confirmed::Raced(r) => {
                    self.state = State::Raced(r);
                    Ok(Finished::Raced(Box::new(self)))
                }
            },
        }
    }

    /// Finishes taking the lock, waiting for conflicting holders (up to
    /// what is left of `lock-wait-seconds`) as [`RepoLock::acquire`] does.
    pub fn wait(mut self) -> Result<RepoLock> {
        loop {
            // Only a raced state is taken out (a pending one must stay: the
            // lock file it owns goes when it drops).
            self.state = match std::mem::replace(&mut self.state, State::Done) {
                State::Raced(r) => State::Pending(Box::new(r.wait()?)),
                other => other,
            };
            match self.finish()? {
                Finished::Held(lock) => return Ok(lock),
                Finished::Raced(s) => self = *s,
            }
        }
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
