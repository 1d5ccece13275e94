//! The temporary `redis-server` a restore loads the set's RDB into.
//!
//! It listens on a Unix socket inside a private (0700) directory, never on
//! TCP: no port to race for, and no other local user can read the backup
//! through it. It saves nothing (`--save ''`, no AOF).
//!
//! It never outlives the restore: dropping [`TempServer`] kills it and
//! removes its directory, and the kernel kills it (`PR_SET_PDEATHSIG`)
//! when the thread that started it ends, `kill -9` of stack-backup
//! included. The signal is tied to the *thread*, not the process, so the
//! server must be started, used and dropped on one thread: a restorer's
//! [`restore`](crate::components::restoring::Restorer::restore) runs
//! entirely on its lane's thread, which is what makes that hold.
//!
//! A killed run leaves its directory (the RDB copy, the log);
//! [`remove_leftovers`] removes those of processes that no longer exist.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::components::restoring::SetContext;
use crate::components::ComponentId;
use crate::error::{Error, Result};

/// How long the server may take to accept connections once started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long loading the RDB may go without progress.
const LOAD_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The prefix of a temporary directory, followed by the pid of its owner.
const DIR_PREFIX: &str = "stack-backup-redis-";

/// A running temporary `redis-server` with the set's RDB loaded.
pub(super) struct TempServer {
    child: Child,
    // Dropped after the process is killed (fields drop after `drop`).
    dir: PrivateDir,
}

impl TempServer {
    /// Writes the RDB `rdb` of the set into a new private directory,
    /// starts a server on it and waits until the RDB is loaded. An
    /// exited server, one that does not answer within [`START_TIMEOUT`] or
    /// whose load stalls for [`LOAD_STALL_TIMEOUT`] is the error, with the
    /// end of its log.
    pub(super) fn start(set: &SetContext, id: &ComponentId, rdb: &str, db: i64) -> Result<Self> {
        let c = id.as_str();
        let dir = PrivateDir::new()?;
        let file = dir.0.join("dump.rdb");
        {
            let node = set.node(id, rdb)?;
            let mut f = File::create(&file).map_err(|e| Error::io("writing", &file, e))?;
            set.repo
                .dump(&node, &mut f)
                .map_err(|e| Error::component(c, e.display_log()))?;
        }
        let log = dir.0.join("redis.log");
        let log_file = File::create(&log).map_err(|e| Error::io("creating", &log, e))?;
        // An RDB holds every database of the instance it came from, and a
        // server with fewer databases refuses to load it. Instances with
        // more than 256 are rare; 256 empty ones cost little.
        let databases = (db + 1).max(256);
        let mut cmd = crate::process::command("redis-server");
        cmd.args(["--port", "0", "--unixsocketperm", "700"])
            .arg("--unixsocket")
            .arg(socket(&dir.0))
            .args(["--save", "", "--appendonly", "no"])
            .args(["--databases", &databases.to_string()])
            .args(["--dbfilename", "dump.rdb"])
            .arg("--dir")
            .arg(&dir.0)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(Stdio::null());
        die_with_this_thread(&mut cmd);
        let child = cmd.spawn().map_err(|e| {
            Error::component(c, format!("cannot start a temporary redis-server: {e}"))
        })?;
        let mut server = Self { child, dir };
        server.wait_loaded(id)?;
        Ok(server)
    }

    /// The server's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its private directory (socket, RDB copy, log).
    pub(super) fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Its Unix socket.
    pub(super) fn socket(&self) -> PathBuf {
        socket(&self.dir.0)
    }

    /// A connection to database `db`.
    pub(super) fn connect(&self, db: i64) -> redis::RedisResult<redis::Connection> {
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Unix(socket(&self.dir.0)),
            redis: redis::RedisConnectionInfo {
                db,
                ..Default::default()
            },
        };
        let conn = redis::Client::open(info)?.get_connection()?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(conn)
    }

    fn wait_loaded(&mut self, id: &ComponentId) -> Result<()> {
        let c = id.as_str();
        let started = Instant::now();
        let mut progress = (Instant::now(), String::new());
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(|e| Error::component(c, format!("temporary redis-server: {e}")))?
            {
                return Err(Error::component(
                    c,
                    format!(
                        "the temporary redis-server loading the set's RDB exited ({status}): {}",
                        self.log_tail()
                    ),
                ));
            }
            // INFO answers while the RDB loads (other commands say LOADING).
            let info = self.connect(0).and_then(|mut conn| {
                redis::cmd("INFO")
                    .arg("persistence")
                    .query::<String>(&mut conn)
            });
            match info {
                Ok(info) if super::info_field(&info, "loading").as_deref() == Some("0") => {
                    return Ok(());
                }
                Ok(info) => {
                    let loaded =
                        super::info_field(&info, "loading_loaded_bytes").unwrap_or_default();
                    if loaded != progress.1 {
                        progress = (Instant::now(), loaded);
                    } else if progress.0.elapsed() > LOAD_STALL_TIMEOUT {
                        return Err(Error::component(
                            c,
                            format!(
                                "the temporary redis-server made no progress loading the set's RDB for {}s: {}",
                                LOAD_STALL_TIMEOUT.as_secs(),
                                self.log_tail()
                            ),
                        ));
                    }
                }
                Err(_) if started.elapsed() > START_TIMEOUT => {
                    return Err(Error::component(
                        c,
                        format!(
                            "the temporary redis-server did not answer within {}s: {}",
                            START_TIMEOUT.as_secs(),
                            self.log_tail()
                        ),
                    ));
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's log, for an error.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.0.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() {
            "it logged nothing".into()
        } else {
            format!("its log ends: {tail}")
        }
    }
}

impl Drop for TempServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("redis.sock")
}

/// A new directory only we can read, named after our pid, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            jiff::Timestamp::now().as_nanosecond()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("creating", &dir, e))?;
        Ok(Self(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Has the kernel send SIGKILL to the process when the thread that spawns
/// it ends, however it ends. A parent already gone by the time the child
/// runs (the signal would never come) makes the spawn fail.
#[cfg(target_os = "linux")]
fn die_with_this_thread(cmd: &mut Command) {
    use nix::sys::{prctl, signal::Signal};
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: between fork and exec the closure makes two async-signal-safe
    // system calls (prctl, getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            if u32::try_from(nix::unistd::getppid().as_raw()).ok() != Some(parent) {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_this_thread(_cmd: &mut Command) {}

/// Removes the temporary directories of runs that no longer exist (killed
/// while their server ran). Best effort: a directory that cannot be
/// removed, or whose pid is alive (or was reused), is left.
pub(super) fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if gone(pid) {
            remove(&e.path());
        }
    }
}

/// The process `pid` does not exist (EPERM means it does, as another user).
fn gone(pid: i32) -> bool {
    pid > 0
        && u32::try_from(pid).ok() != Some(std::process::id())
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
}

fn remove(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => log::info!("removed {} (left by a killed restore)", dir.display()),
        Err(e) => log::debug!("could not remove {}: {e}", dir.display()),
    }
}

/// Ends the temporary server `pid` of a killed run and removes its
/// directory `dir`, after checking that `pid` is that server (its command
/// line names `redis-server` and the directory: a reused pid is left
/// alone). Normally the kernel has killed it already (`PR_SET_PDEATHSIG`).
pub(super) fn end_recorded(pid: u32, dir: &Path) {
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let c = String::from_utf8_lossy(&c);
        let name = dir.file_name().map(|n| n.to_string_lossy().to_string());
        c.contains("redis-server") && name.is_some_and(|n| c.contains(&n))
    });
    if ours {
        if let Ok(p) = i32::try_from(pid) {
            let pid = nix::unistd::Pid::from_raw(p);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            for _ in 0..50 {
                if nix::sys::signal::kill(pid, None).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let in_tmp = dir.parent() == Some(std::env::temp_dir().as_path())
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
    if in_tmp && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        remove(dir);
    }
}
