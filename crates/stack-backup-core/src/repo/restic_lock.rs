//! Locks inside the repository, in restic's format, so that stack-backup,
//! stock `restic` and stack-backup on other hosts see each other.
//!
//! A lock is an encrypted JSON file `locks/<id>` (restic's `Lock`: time,
//! exclusive, hostname, username, pid, uid, gid; we add `command`, which
//! restic ignores). The rules are restic's:
//!
//! - a non-exclusive (shared) lock conflicts with any exclusive lock; an
//!   exclusive lock conflicts with every lock;
//! - a lock is stale when its time is more than 30 minutes old, or when it
//!   was taken on this host by a process that no longer exists; stale locks
//!   never conflict;
//! - taking a lock: look for conflicts, write ours, let it settle (200 ms
//!   where a listing can lag a write, none on a local filesystem: decision
//!   0050), look again (and remove ours on a conflict), so two takers that
//!   race always see at least one of each other;
//! - a held lock is refreshed every 5 minutes (a new file with the new time,
//!   then the old one removed), and removed when released.
//!
//! A refresh that fails is retried every [`RETRY_EVERY`]; once our newest
//! lock file is within [`MARGIN`] of going stale, the lock counts as lost
//! (others may now judge it stale and prune beside us): [`still_held`]
//! fails from then on, and a command calls it before each step that makes
//! its work referenced (a snapshot, a deletion), so it stops with what it
//! wrote unreferenced, which two-phase prune (decision 0018) tolerates.
//! A lock whose file someone else removed (`unlock --remove-all`) is lost
//! at the next refresh, as restic decides.
//!
//! What is durable: only the lock files. A process killed while holding a
//! lock leaves its file; it is stale at once on the same host (its pid is
//! gone) and after 30 minutes elsewhere. The next stack-backup command on
//! the same host removes it (restic 0.14 would otherwise refuse its
//! exclusive commands until `unlock`); `stack-backup unlock` removes every
//! stale lock as `restic unlock` does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use rustic_core::{FileType, Id};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::repository::{Location, OpenRepo};

/// restic's `staleTimeout`: a lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// restic's `refreshInterval`.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);
/// restic's `waitBeforeLockCheck`: how long a written lock settles before
/// the second check, where a listing may lag a write ([`settle_for`]).
const SETTLE: Duration = Duration::from_millis(200);
/// How soon a failed refresh is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);
/// A lock whose newest file is this close to [`STALE_AFTER`] is lost:
/// clocks differ between hosts, and the step we are in must finish.
pub const MARGIN: Duration = Duration::from_secs(5 * 60);

/// The timing of a held lock: restic's, or shorter in fault-injection
/// tests (`FAILPOINTS=repo-lock-timing=return(SECS)`: refresh every SECS
/// seconds, lost 3×SECS after the last good write).
#[derive(Debug, Clone, Copy)]
struct Timing {
    refresh: Duration,
    retry: Duration,
    lost_after: Duration,
}

impl Timing {
    fn now() -> Self {
        if let Some(secs) =
            crate::system::fault::value("repo-lock-timing").and_then(|v| v.parse::<u64>().ok())
        {
            let s = Duration::from_secs(secs.max(1));
            return Self {
                refresh: s,
                retry: s,
                lost_after: s * 3,
            };
        }
        Self {
            refresh: REFRESH_EVERY,
            retry: RETRY_EVERY,
            lost_after: STALE_AFTER - MARGIN,
        }
    }
}

/// Whether a held lock is still ours: shared by the refresher and
/// [`still_held`].
#[derive(Debug)]
struct Validity {
    location: String,
    /// Wall-clock time of the newest lock file written (a suspended host
    /// comes back with it old).
    written: Mutex<SystemTime>,
    lost: AtomicBool,
    /// Lost because our lock file was removed by someone else.
    removed: AtomicBool,
    lost_after: Duration,
}

impl Validity {
    fn check(&self) -> Result<()> {
        let written = *self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let age = SystemTime::now()
            .duration_since(written)
            .unwrap_or_default();
        if self.removed.load(Ordering::SeqCst) {
            return Err(Error::Repository {
                location: self.location.clone(),
                message: "the repository lock file was removed by someone else (`unlock --remove-all` on another host?), so others may act as if no one held the repository; stopped before making this run's data referenced (what it wrote is unreferenced and goes with a later prune); run again".into(),
            });
        }
        if self.lost.load(Ordering::SeqCst) || age >= self.lost_after {
            self.lost.store(true, Ordering::SeqCst);
            return Err(Error::Repository {
                location: self.location.clone(),
                message: format!(
                    "the repository lock could not be refreshed for {}s and may be judged stale by others; stopped before making this run's data referenced (what it wrote is unreferenced and goes with a later prune); check the connection to the repository and run again",
                    age.as_secs()
                ),
            });
        }
        Ok(())
    }
}

/// The locks this process holds.
static HELD: Mutex<Vec<Arc<Validity>>> = Mutex::new(Vec::new());

/// Fails when a repository lock this process holds has been lost (its
/// refresh failed until it could be judged stale). A command calls this
/// before each step that makes its work referenced: a snapshot written, a
/// deletion. Without a held lock (library callers, `init`) it passes.
pub fn still_held() -> Result<()> {
    let held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    held.iter().try_for_each(|v| v.check())
}

/// Shared (backup, restore, verify, copy) or exclusive (prune, removing
/// sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Non-exclusive: many at once, no exclusive lock beside them.
    Shared,
    /// Exclusive: no other lock at all.
    Exclusive,
}

/// A lock file's content, as restic writes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockFile {
    /// When taken or last refreshed (RFC 3339).
    pub time: String,
    /// Whether the lock is exclusive.
    pub exclusive: bool,
    /// The host of the holder.
    pub hostname: String,
    /// The user of the holder.
    #[serde(default)]
    pub username: String,
    /// The process id of the holder.
    pub pid: i64,
    /// The user id of the holder.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    /// The group id of the holder.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
    /// What the holder runs (stack-backup only; restic records none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The kernel's boot id when taken (stack-backup only): a pid means
    /// nothing on another boot of the host or on another host that happens
    /// to share its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder's pid namespace (`pid:[inode]`, stack-backup only): a
    /// container's pids are not the host's, even with the host's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The host name as restic's `os.Hostname` gives it (the kernel's).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// This boot of this kernel (shared by every container on it).
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The pid namespace this process sees pids in.
fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.display().to_string())
}

impl LockFile {
    /// A lock of this process now.
    #[must_use]
    pub fn mine(mode: Mode, command: &str) -> Self {
        let uid = nix::unistd::getuid();
        let username = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_default();
        Self {
            time: Timestamp::now().to_string(),
            exclusive: mode == Mode::Exclusive,
            hostname: hostname(),
            username,
            pid: i64::from(std::process::id()),
            uid: uid.as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            command: Some(command.to_string()),
            boot_id: boot_id(),
            pid_namespace: pid_namespace(),
        }
    }

    /// How long ago it was taken or refreshed (zero for a time in the
    /// future or one that does not parse).
    #[must_use]
    pub fn age(&self) -> Duration {
        self.time
            .parse::<Timestamp>()
            .ok()
            .and_then(|t| Duration::try_from(Timestamp::now().duration_since(t)).ok())
            .unwrap_or_default()
    }

    /// restic's staleness: older than [`STALE_AFTER`], or taken on this
    /// host by a process that is gone.
    #[must_use]
    pub fn is_stale(&self) -> bool {
        if self.age() > STALE_AFTER {
            return true;
        }
        // Signal 0: ESRCH means no such process; EPERM means it exists.
        self.is_dead_here()
    }

    /// Taken on this host by a process that is gone: no one can hold it,
    /// whatever its age.
    ///
    /// restic's rule is the hostname and the pid alone, and stays the rule
    /// for restic's locks. It misjudges a live holder on another machine
    /// that shares our hostname, or in a container given the host's name
    /// (its pids are not ours): our own locks also record the boot id and
    /// the pid namespace, and a lock whose boot id or namespace differs
    /// from ours (or cannot be compared) is judged by age only
    /// (decision 0025).
    #[must_use]
    pub fn is_dead_here(&self) -> bool {
        let same = |recorded: &Option<String>, ours: Option<String>| {
            recorded.is_none() || ours.as_ref() == recorded.as_ref()
        };
        self.hostname == hostname()
            && same(&self.boot_id, boot_id())
            && same(&self.pid_namespace, pid_namespace())
            && i32::try_from(self.pid).map_or(true, |pid| {
                matches!(
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                    Err(nix::errno::Errno::ESRCH)
                )
            })
    }

    fn conflicts_with(&self, mode: Mode) -> bool {
        (mode == Mode::Exclusive || self.exclusive) && !self.is_stale()
    }

    /// The holder as shown to users: kind, host, pid, command, age.
    #[must_use]
    pub fn describe(&self) -> String {
        let kind = if self.exclusive {
            "an exclusive"
        } else {
            "a shared"
        };
        let command = self
            .command
            .as_deref()
            .unwrap_or("restic (command not recorded)");
        let age = self.age().as_secs();
        format!(
            "{kind} lock held by `{command}` on host {} (pid {}, user {}), taken or refreshed {}s ago",
            self.hostname,
            self.pid,
            if self.username.is_empty() { "?" } else { &self.username },
            age
        )
    }
}

/// One lock file in the repository.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its id (the file name under `locks/`).
    pub id: Id,
    /// Its content; `None` when it could not be read or decrypted (another
    /// key's lock, or one removed while we looked).
    pub lock: Option<LockFile>,
}

fn err(loc: &Location, what: &str, e: &rustic_core::RusticError) -> Error {
    Error::Repository {
        location: loc.to_string(),
        message: format!("{what}: {}", e.display_log()),
    }
}

/// Every lock file in the repository, read and decrypted.
pub fn list(repo: &OpenRepo, loc: &Location) -> Result<Vec<Found>> {
    if let Location::Local(p) = loc {
        // rustic's local backend logs an error for a missing directory.
        let dir = p.join(FileType::Lock.dirname());
        if !dir.exists() {
            return Ok(Vec::new());
        }
    }
    let ids = repo
        .list_raw(FileType::Lock)
        .map_err(|e| err(loc, "listing locks", &e))?;
    Ok(ids
        .into_iter()
        .map(|id| Found {
            id,
            lock: repo
                .read_raw_file(FileType::Lock, &id)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
        })
        .collect())
}

fn write(repo: &OpenRepo, loc: &Location, lock: &LockFile) -> Result<Id> {
    let json = serde_json::to_vec(lock).map_err(|e| Error::Repository {
        location: loc.to_string(),
        message: format!("encoding a lock: {e}"),
    })?;
    repo.save_raw_file(FileType::Lock, &json)
        .map_err(|e| err(loc, "writing a lock", &e))
}

/// Whether lock file `id` is still in the repository's `locks/`.
fn still_listed(repo: &OpenRepo, loc: &Location, id: Id) -> Result<bool> {
    Ok(repo
        .list_raw(FileType::Lock)
        .map_err(|e| err(loc, "listing locks", &e))?
        .contains(&id))
}

/// The first lock other than `mine` that conflicts with `mode`.
fn conflict(
    repo: &OpenRepo,
    loc: &Location,
    mode: Mode,
    mine: Option<Id>,
) -> Result<Option<LockFile>> {
    let found: Vec<Found> = list(repo, loc)?
        .into_iter()
        .filter(|f| Some(f.id) != mine)
        .collect();
    if let Some(l) = found
        .iter()
        .filter_map(|f| f.lock.as_ref())
        .find(|l| l.conflicts_with(mode))
    {
        return Ok(Some(l.clone()));
    }
    // A lock that could not be read (a failed GET, a damaged file) is a
    // holder we cannot judge, as restic decides too: it conflicts while it
    // is still listed (one removed between the listing and the read is
    // gone, not held).
    let unreadable: Vec<Id> = found
        .iter()
        .filter(|f| f.lock.is_none())
        .map(|f| f.id)
        .collect();
    if unreadable.is_empty() {
        return Ok(None);
    }
    let still = list(repo, loc)?;
    Ok(still
        .iter()
        .find(|f| unreadable.contains(&f.id) && f.lock.is_none())
        .map(|f| LockFile {
            time: jiff::Timestamp::now().to_string(),
            exclusive: true,
            hostname: "(unknown)".into(),
            username: String::new(),
            pid: 0,
            uid: 0,
            gid: 0,
            command: Some(format!(
                "a lock file that cannot be read (locks/{}; `stack-backup unlock --remove-all` removes it once no one holds the repository)",
                f.id
            )),
            boot_id: None,
            pid_namespace: None,
        }))
}

/// A lock held in the repository; refreshed by a thread, removed on drop.
pub struct Held {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    validity: Arc<Validity>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

/// How long a lock written at `loc` settles before the second check
/// (decision 0050). restic waits 200 ms on every backend because an object
/// store's listing could lag its writes. A local filesystem's directory is
/// one kernel's: a lock renamed into `locks/` is listed at once by every
/// process of the host, and by every SFTP or REST client this host
/// serves, so two takers that each write and then list always see at least
/// one of each other, and no wait adds to that. Only filesystems known to
/// be local count; a network or FUSE filesystem (NFS, SMB, sshfs, rclone,
/// a cluster filesystem), overlayfs, one that cannot be asked, and every
/// remote backend keep restic's wait. The assumption: no other host lists
/// this directory through a cache of its own (a directory this host
/// exports over NFS or SMB to hosts that lock it there). NFS caches
/// directory listings for seconds, far beyond what restic's 200 ms covered.
#[must_use]
pub fn settle_for(loc: &Location) -> Duration {
    let Some(dir) = loc.local_path() else {
        return SETTLE;
    };
    let locks = dir.join(FileType::Lock.dirname());
    let at = if locks.exists() {
        locks
    } else {
        dir.to_path_buf()
    };
    if on_local_filesystem(&at) {
        Duration::ZERO
    } else {
        SETTLE
    }
}

/// Whether `path` is on a filesystem this kernel owns: ext2/3/4, XFS,
/// Btrfs, tmpfs, F2FS, ZFS or bcachefs. Not overlayfs, whose lower layer
/// may be a network filesystem that `statfs` does not show.
fn on_local_filesystem(path: &std::path::Path) -> bool {
    use nix::sys::statfs as fs;
    // Magic numbers the nix crate does not name (ZFS's own, linux/magic.h).
    const ZFS: u32 = 0x2fc1_2fc1;
    const BCACHEFS: u32 = 0xca45_1a4e;
    let Ok(st) = fs::statfs(path) else {
        return false;
    };
    // Magic numbers are 32 bits; the field's type varies by platform.
    let magic = |t: fs::FsType| t.0 as u32;
    let t = magic(st.filesystem_type());
    [
        fs::EXT4_SUPER_MAGIC,
        fs::XFS_SUPER_MAGIC,
        fs::BTRFS_SUPER_MAGIC,
        fs::TMPFS_MAGIC,
        fs::F2FS_SUPER_MAGIC,
    ]
    .into_iter()
    .map(magic)
    .chain([ZFS, BCACHEFS])
    .any(|m| m == t)
}

/// Takes a `mode` lock for `command`, waiting up to `wait` for conflicting
/// locks to go; then refuses with [`Error::RepoLocked`] naming the holder.
/// `repo` is moved to the refresher.
pub fn acquire(
    repo: OpenRepo,
    loc: &Location,
    mode: Mode,
    command: &str,
    wait: Duration,
) -> Result<Held> {
    let mut pending = match start(repo, loc, mode, command, wait)? {
        Started::Written(p) => *p,
        Started::Busy(raced) => raced.wait()?,
    };
    loop {
        match pending.confirm()? {
            Confirmed::Held(held) => return Ok(held),
            Confirmed::Raced(raced) => pending = raced.wait()?,
        }
    }
}

/// A lock file written after a check found no conflicting lock, not held
/// yet: restic's protocol checks once more a settle time after the write
/// ([`settle_for`]; a holder that wrote at the same moment then sees ours
/// and backs off, or we see its). Nothing may read sets from or write to
/// the repository on the strength of a pending lock; work that touches
/// neither (planning a backup) may run meanwhile. Dropped unconfirmed, its
/// file is removed.
pub struct Pending {
    repo: Option<OpenRepo>,
    loc: Location,
    mode: Mode,
    command: String,
    id: Id,
    written: Instant,
    settle: Duration,
    deadline: Instant,
    pause: Duration,
    wait: Duration,
}

/// What [`start`] found.
pub enum Started {
    /// No lock conflicted: ours is written, to be confirmed.
    Written(Box<Pending>),
    /// A conflicting lock is there: nothing is written; [`Raced::wait`]
    /// waits for its holder.
    Busy(Box<Raced>),
}

/// What [`Pending::confirm`] found.
pub enum Confirmed {
    /// The lock, refreshed from now on.
    Held(Held),
    /// A conflicting lock appeared while ours settled: ours is removed;
    /// [`Raced::wait`] waits for the holder as [`acquire`] does.
    Raced(Box<Raced>),
}

/// A lock not taken because of a conflicting holder: found by [`start`]
/// (nothing written) or by [`Pending::confirm`] (ours removed).
pub struct Raced {
    pending: Pending,
    holder: LockFile,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending(locks/{})", self.id)
    }
}

impl std::fmt::Debug for Raced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Raced({})", self.holder.describe())
    }
}

/// Removes the locks of this host's processes that are gone, then writes
/// ours unless a lock conflicts with `mode`; never waits (a caller that
/// did work meanwhile undoes it before [`Raced::wait`], which waits up to
/// what is left of `wait`).
pub fn start(
    repo: OpenRepo,
    loc: &Location,
    mode: Mode,
    command: &str,
    wait: Duration,
) -> Result<Started> {
    // restic (0.14) does not look past stale locks: until someone runs
    // `unlock`, the lock of a process killed here blocks every exclusive
    // restic command (check, prune). A lock of a process of this host that
    // is gone cannot be held by anyone, so it goes now; other hosts' locks
    // (stale only by age, which depends on clocks) are left to `unlock`.
    for f in list(&repo, loc)? {
        if f.lock.as_ref().is_some_and(LockFile::is_dead_here) {
            log::info!("removing the lock of a process that is gone: {}", f.id);
            let _ = repo.remove_raw(FileType::Lock, &f.id);
        }
    }
    let mut pending = Pending {
        repo: Some(repo),
        loc: loc.clone(),
        mode,
        command: command.to_string(),
        id: Id::default(),
        written: Instant::now(),
        settle: settle_for(loc),
        deadline: Instant::now() + wait,
        pause: Duration::from_millis(500),
        wait,
    };
    if let Some(holder) = conflict(pending.repo(), loc, mode, None)? {
        return Ok(Started::Busy(Box::new(Raced { pending, holder })));
    }
    pending.write_mine()?;
    Ok(Started::Written(Box::new(pending)))
}

impl Pending {
    fn repo(&self) -> &OpenRepo {
        self.repo
            .as_ref()
            .expect("the repository stays until confirmed")
    }

    /// Waits until no lock conflicts, then writes ours.
    fn write_when_free(&mut self) -> Result<()> {
        loop {
            let Some(holder) = conflict(self.repo(), &self.loc, self.mode, None)? else {
                return self.write_mine();
            };
            self.back_off(&holder)?;
        }
    }

    fn write_mine(&mut self) -> Result<()> {
        let lock = LockFile::mine(self.mode, &self.command);
        self.id = write(self.repo(), &self.loc, &lock)?;
        self.written = Instant::now();
        Ok(())
    }

    /// Waits a while for `holder` to go, or refuses when the time is up.
    fn back_off(&mut self, holder: &LockFile) -> Result<()> {
        if Instant::now() >= self.deadline {
            return Err(Error::RepoLocked {
                location: self.loc.to_string(),
                holder: holder.describe(),
                waited: self.wait.as_secs(),
            });
        }
        log::info!("waiting for the repository lock: {}", holder.describe());
        std::thread::sleep(
            self.pause
                .min(self.deadline.saturating_duration_since(Instant::now())),
        );
        self.pause = (self.pause * 2).min(Duration::from_secs(5));
        Ok(())
    }

    /// Waits out what is left of the settle time since the write and
    /// checks again.
    pub fn confirm(mut self) -> Result<Confirmed> {
        std::thread::sleep(self.settle.saturating_sub(self.written.elapsed()));
        let raced = crate::system::fault::point("repo-lock-raced").is_err();
        let holder = match conflict(self.repo(), &self.loc, self.mode, Some(self.id))? {
            Some(h) => Some(h),
            // A test's stand-in for a holder that wrote at the same moment.
            None if raced => Some(LockFile::mine(Mode::Exclusive, "a racing test lock")),
            None => None,
        };
        if let Some(holder) = holder {
            let _ = self.repo().remove_raw(FileType::Lock, &self.id);
            self.id = Id::default();
            return Ok(Confirmed::Raced(Box::new(Raced {
                pending: self,
                holder,
            })));
        }
        let repo = self
            .repo
            .take()
            .expect("the repository stays until confirmed");
        let id = std::mem::take(&mut self.id);
        held(repo, &self.loc, self.mode, &self.command, id).map(Confirmed::Held)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(repo) = &self.repo {
            if self.id != Id::default() {
                let _ = repo.remove_raw(FileType::Lock, &self.id);
            }
        }
    }
}

impl Raced {
    /// Waits for the holder to go (up to what is left of the wait) and
    /// writes the lock again, to be confirmed. Looks first: the caller may
    /// have spent a while since the holder was seen (a backup's plan), so
    /// neither the pause nor a refusal at the deadline goes by an old
    /// listing.
    pub fn wait(mut self) -> Result<Pending> {
        self.pending.write_when_free()?;
        Ok(self.pending)
    }
}

/// Starts the refresher of lock `id`, just confirmed.
fn held(repo: OpenRepo, loc: &Location, mode: Mode, command: &str, id: Id) -> Result<Held> {
    let timing = Timing::now();
    let validity = Arc::new(Validity {
        location: loc.to_string(),
        written: Mutex::new(SystemTime::now()),
        lost: AtomicBool::new(false),
        removed: AtomicBool::new(false),
        lost_after: timing.lost_after,
    });
    let (tx, rx) = mpsc::channel::<()>();
    let loc = loc.clone();
    let command = command.to_string();
    let v = Arc::clone(&validity);
    let thread = std::thread::Builder::new()
        .name("repo-lock-refresh".into())
        .spawn(move || refresh(&repo, &loc, mode, &command, id, &rx, &v, timing))
        .map_err(|e| Error::io("starting the lock refresher", "", e))?;
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Arc::clone(&validity));
    Ok(Held {
        stop: Some(tx),
        thread: Some(thread),
        validity,
    })
}

/// Refreshes the lock every [`REFRESH_EVERY`] (a failure again after
/// [`RETRY_EVERY`]) until told to stop (or the holder is gone), then
/// removes it. Once the lock is lost it is no longer refreshed: a new file
/// would claim a lock others may already have judged stale.
#[allow(clippy::too_many_arguments)]
fn refresh(
    repo: &OpenRepo,
    loc: &Location,
    mode: Mode,
    command: &str,
    mut id: Id,
    stop: &mpsc::Receiver<()>,
    validity: &Validity,
    timing: Timing,
) {
    let mut wait = timing.refresh;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(wait) {
        if validity.check().is_err() {
            log::error!(
                "the repository lock is lost (not refreshed in time); the command stops at its next step"
            );
            wait = timing.refresh;
            continue;
        }
        // restic's rule: a lock whose file is gone (`unlock --remove-all`
        // on another host) is lost; a new file would claim a lock others
        // already act as if no one held.
        match still_listed(repo, loc, id) {
            Ok(true) => {}
            Ok(false) => {
                validity.removed.store(true, Ordering::SeqCst);
                log::error!(
                    "the repository lock file locks/{id} was removed by someone else (`unlock --remove-all`?); the lock is lost and the command stops at its next step"
                );
                continue;
            }
            Err(e) => {
                log::warn!("refreshing the repository lock failed (trying again): {e}");
                wait = timing.retry;
                continue;
            }
        }
        // The time the new file claims, taken before the upload: a slow
        // upload must not make the lock look fresher than its file is.
        let claimed = SystemTime::now();
        let written = crate::system::fault::point("repo-lock-refresh")
            .and_then(|()| write(repo, loc, &LockFile::mine(mode, command)));
        match written {
            Ok(new) => {
                *validity
                    .written
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = claimed;
                let _ = repo.remove_raw(FileType::Lock, &id);
                id = new;
                wait = timing.refresh;
            }
            Err(e) => {
                log::warn!("refreshing the repository lock failed (trying again): {e}");
                wait = timing.retry;
            }
        }
    }
    if let Err(e) = repo.remove_raw(FileType::Lock, &id) {
        log::warn!(
            "removing the repository lock {} failed: {}",
            id,
            e.display_log()
        );
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|v| !Arc::ptr_eq(v, &self.validity));
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What `unlock` removed and left.
#[derive(Debug, Clone, Serialize)]
pub struct Unlocked {
    /// Lock files removed (their ids).
    pub removed: Vec<String>,
    /// Locks left in place (live ones), described.
    pub kept: Vec<String>,
}

/// `stack-backup unlock`: removes stale locks (restic's rule), or every
/// lock with `all` (as `restic unlock --remove-all`).
pub fn unlock(repo: &OpenRepo, loc: &Location, all: bool) -> Result<Unlocked> {
    let mut out = Unlocked {
        removed: Vec::new(),
        kept: Vec::new(),
    };
    for f in list(repo, loc)? {
        let stale = f.lock.as_ref().is_none_or(LockFile::is_stale);
        // An unreadable lock may be another key's: only --remove-all
        // removes it, as restic does.
        if all || (stale && f.lock.is_some()) {
            repo.remove_raw(FileType::Lock, &f.id)
                .map_err(|e| err(loc, "removing a lock", &e))?;
            out.removed.push(f.id.to_hex().to_string());
        } else {
            out.kept.push(
                f.lock
                    .as_ref()
                    .map_or_else(|| format!("{} (unreadable)", f.id), LockFile::describe),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_settles_only_where_a_listing_may_lag_a_write() {
        // tmpfs (/dev/shm) is this kernel's own; /proc stands in for a
        // filesystem not known to be local; a URL is a remote backend.
        // tmpfs on every Debian machine; elsewhere there is nothing to test.
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let local = Location::Local(shm.path().to_path_buf());
        assert_eq!(settle_for(&local), Duration::ZERO);
        std::fs::create_dir(shm.path().join("locks")).unwrap();
        assert_eq!(settle_for(&local), Duration::ZERO);
        assert_eq!(settle_for(&Location::Local("/proc/self".into())), SETTLE);
        assert_eq!(
            settle_for(&Location::Local("/no/such/repository".into())),
            SETTLE
        );
        assert_eq!(
            settle_for(&Location::Remote("s3:http://localhost:9000/b".into())),
            SETTLE
        );
    }

    #[test]
    fn restic_rules_for_staleness_and_conflicts() {
        let mut l = LockFile::mine(Mode::Shared, "test");
        assert!(!l.is_stale(), "our own live process");
        assert!(!l.conflicts_with(Mode::Shared));
        assert!(l.conflicts_with(Mode::Exclusive));
        l.exclusive = true;
        assert!(l.conflicts_with(Mode::Shared));
        // A pid that cannot exist on this host.
        l.pid = i64::from(i32::MAX);
        assert!(l.is_stale());
        // Another host's live-looking lock is stale only by age.
        l.hostname = "elsewhere.invalid".into();
        assert!(!l.is_stale());
        l.time = (Timestamp::now() - jiff::SignedDuration::from_secs(31 * 60)).to_string();
        assert!(l.is_stale());
        // restic's own JSON (local offset, nanoseconds, no command).
        let theirs: LockFile = serde_json::from_str(
            r#"{"time":"2026-11-29T08:00:00.123456789+01:00","exclusive":false,"hostname":"h","username":"root","pid":42}"#,
        )
        .unwrap();
        assert!(theirs.age() > Duration::ZERO);
        assert!(theirs.describe().contains("restic"));
    }

    #[test]
    fn a_dead_pid_counts_only_on_this_boot_and_in_this_pid_namespace() {
        let mut l = LockFile::mine(Mode::Exclusive, "test");
        assert!(l.boot_id.is_some() && l.pid_namespace.is_some());
        l.pid = i64::from(i32::MAX);
        assert!(l.is_dead_here(), "same host, boot and namespace");
        // Another machine with our hostname, or this host before a reboot.
        let mut other_boot = l.clone();
        other_boot.boot_id = Some("00000000-0000-0000-0000-000000000000".into());
        assert!(!other_boot.is_dead_here());
        assert!(!other_boot.is_stale(), "stale by age only");
        // A container given the host's name: its pids are not ours.
        let mut container = l.clone();
        container.pid_namespace = Some("pid:[1]".into());
        assert!(!container.is_dead_here());
        // restic's lock records neither: restic's rule (hostname and pid).
        let mut restic = l.clone();
        restic.boot_id = None;
        restic.pid_namespace = None;
        assert!(restic.is_dead_here());
        // The extra fields are optional on the way in, as for restic.
        let json = serde_json::to_string(&l).unwrap();
        assert!(json.contains("\"boot_id\"") && json.contains("\"pid_namespace\""));
    }
}
