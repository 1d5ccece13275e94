//! A restore killed (`kill -9`) at any moment: the live database, Redis
//! and directory always exist, any other restore is refused until the
//! interrupted one is resolved, and `restore --abort` brings the stack back
//! to its state before, `restore --resume` to the set's state, leaving no
//! temporary database, directory or `redis-server` behind.
//!
//! Faults come two ways: a fault point at every step boundary
//! (`FAILPOINTS=<point>=return(kill)`, the process raises SIGKILL there)
//! and `kill -9` from outside after a random delay
//! (`CRASH_TRIALS=N cargo test --test crash random` runs N of those;
//! `scripts/crash-trials.sh` prints the figures).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Stack {
    sb: Sandbox,
    db: TempDb,
    redis: RedisServer,
    media: PathBuf,
    /// A Docker volume and its directory on the host.
    _vol: TempVolume,
    vol_dir: PathBuf,
    /// The state the backup set `good` holds.
    good: Vec<String>,
}

fn setup(name: &str) -> Stack {
    let sb = Sandbox::new();
    let media = sb.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("one.jpg"), "one").unwrap();
    std::fs::write(media.join("two.jpg"), "two").unwrap();
    let db = TempDb::seeded(60, "a1b2c3d4e5f6");
    let redis = RedisServer::start();
    redis.fill(25);
    let vol = TempVolume::new();
    let vol_dir = vol.mountpoint();
    std::fs::write(vol_dir.join("a.txt"), "original volume file").unwrap();
    // Beside, through admin-url: the swap journaled by renames.
    sb.write_config(
        name,
        &format!(
            "[postgres.main]\nurl = \"{}\"\nadmin-url = \"{}\"\n\n[redis.sessions]\nurl = \"{}\"\nrole = \"data\"\n\n[docker]\nvolumes = [\"{}\"]\n\n[paths.media]\npath = \"{}\"\n",
            db.url(),
            pg_admin_url(),
            redis.url(),
            vol.name,
            media.display()
        ),
    );
    sb.init();
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    let mut s = Stack {
        sb,
        db,
        redis,
        media,
        _vol: vol,
        vol_dir,
        good: Vec::new(),
    };
    s.good = state(&s);
    s
}

/// Changes every component after the backup (idempotent).
fn wreck(s: &Stack) {
    sql(&s.db, "UPDATE customers SET name = 'wrecked'");
    let mut c = s.redis.client().get_connection().unwrap();
    redis::cmd("DEL").arg("k0").query::<()>(&mut c).unwrap();
    redis::cmd("SET")
        .arg("intruder")
        .arg("x")
        .query::<()>(&mut c)
        .unwrap();
    std::fs::write(s.media.join("one.jpg"), "changed").unwrap();
    std::fs::write(s.media.join("new.jpg"), "new").unwrap();
    std::fs::write(s.vol_dir.join("a.txt"), "changed").unwrap();
}

fn state(s: &Stack) -> Vec<String> {
    vec![
        db_tables(&s.db.name),
        redis_state(&s.redis),
        dir_state(&s.media, |p| std::fs::read_to_string(p).unwrap()),
        dir_state(&s.vol_dir, |p| std::fs::read_to_string(p).unwrap()),
    ]
}

/// The restore of `good` (or `args`) as a child process, with `failpoint`
/// killing it there.
fn spawn(s: &Stack, args: &[&str], failpoint: Option<&str>) -> std::process::Child {
    let mut cmd = s.sb.command(bin(), s.sb.path(), None);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(p) = failpoint {
        cmd.env("FAILPOINTS", format!("{p}=return(kill)"));
    }
    cmd.spawn().expect("running stack-backup")
}

/// `kill -9` of `pid` from outside.
fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// Temporary redis-servers started by the process `pid`.
fn temp_servers_of(pid: u32) -> Vec<String> {
    let needle = format!("stack-backup-redis-{pid}-");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("redis-server") && cmd.contains(&needle) {
            out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// Entries beside `dir` whose name starts with `dir`'s name and `.sb`.
fn siblings(dir: &Path) -> Vec<String> {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&format!("{name}.sb")))
        .collect()
}

/// Redis keys of every database but 0 (the scratch databases), and the
/// restore's marker keys in database 0.
fn redis_leftovers(s: &Stack) -> Vec<String> {
    let mut c = s.redis.client().get_connection().unwrap();
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    let mut out: Vec<String> = info
        .lines()
        .filter(|l| l.starts_with("db") && !l.starts_with("db0:"))
        .map(String::from)
        .collect();
    let markers: Vec<String> = redis::cmd("KEYS")
        .arg("__stack-backup:*")
        .query(&mut c)
        .unwrap();
    out.extend(markers);
    out
}

/// What must hold after a kill, before anything resolves it: every live
/// target exists, no temporary redis-server of the killed run lives on,
/// and a plain restore is refused naming `--resume`/`--abort`.
fn after_kill(s: &Stack, pid: u32, what: &str) {
    let exists: bool = pg_client("postgres")
        .query_one(
            "SELECT count(*) = 1 FROM pg_database WHERE datname = $1",
            &[&s.db.name],
        )
        .unwrap()
        .get(0);
    assert!(exists, "{what}: the live database is missing");
    // The directories themselves, not a symlink to one.
    let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    assert!(real_dir(&s.media), "{what}: the live directory is missing");
    assert!(
        real_dir(&s.vol_dir),
        "{what}: the volume's directory is missing"
    );
    let mut c = s.redis.client().get_connection().unwrap();
    redis::cmd("PING").query::<String>(&mut c).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !temp_servers_of(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{what}: a temporary redis-server outlived the killed run: {:?}",
            temp_servers_of(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Resolves the interrupted restore (`abort` or `resume`) and checks the
/// state it must reach and that nothing temporary is left. Returns the
/// state reached.
fn resolve(s: &Stack, abort: bool, before: &[String], what: &str) -> Vec<String> {
    let state_dir = s.sb.path().join("state");
    let entries = || -> Vec<String> {
        state_dir
            .read_dir()
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    // (`immaculate` keeps its verifications here too.)
                    .filter(|n| n.starts_with("restore-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let open = entries().iter().any(|n| n.ends_with(".journal"));
    let r = if abort {
        s.sb.run(&["restore", "--abort"])
    } else {
        s.sb.run(&["restore", "--resume", "--yes"])
    };
    r.expect_code(0);
    let now = state(s);
    // A kill after the journal reached `committing` can only be finished;
    // a kill before the journal existed changed nothing.
    let finished = r.stderr.contains("Committing");
    if !open {
        // Killed before the journal existed (nothing changed yet) or after
        // it was closed (the restore had ended).
        assert!(now == before || now == s.good, "{what}: {now:?}");
    } else if abort && !finished {
        assert_eq!(now, before, "{what}: {}\n{}", r.stdout, r.stderr);
    } else {
        assert_eq!(now, s.good, "{what}: {}\n{}", r.stdout, r.stderr);
    }
    assert_eq!(
        leftover_databases_of(&[&s.db]),
        Vec::<String>::new(),
        "{what}"
    );
    assert_eq!(siblings(&s.media), Vec::<String>::new(), "{what}");
    assert_eq!(siblings(&s.vol_dir), Vec::<String>::new(), "{what}");
    assert_eq!(redis_leftovers(s), Vec::<String>::new(), "{what}");
    // Neither the journal nor a temporary of a killed write of it.
    assert_eq!(entries(), Vec::<String>::new(), "{what}");
    // Resolved: a plain restore is allowed again (dry run).
    s.sb.run(&["restore", "good", "--dry-run"]).expect_code(0);
    now
}

/// Every step-boundary fault point of a restore.
const POINTS: &[&str] = &[
    "restore-journal-written",
    "restore-postgres-beside",
    "restore-postgres-swapped",
    "redis-temp-server-up",
    "redis-copied",
    "redis-swapped",
    "restore-tree-staged",
    "restore-tree-swapped",
    "restore-applied",
    "restore-verified",
    "restore-committing",
    "restore-committed",
];

#[test]
fn a_kill_at_every_step_boundary_is_resolved_by_abort_and_by_resume() {
    let s = setup("crashpoints");
    for (i, point) in POINTS.iter().enumerate() {
        let _ = i;
        for abort in [true, false] {
            wreck(&s);
            let before = state(&s);
            assert_ne!(before, s.good);
            let child = spawn(&s, &["restore", "good", "--yes"], Some(point));
            let pid = child.id();
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&out.status),
                Some(9),
                "{point}: not killed there: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let what = format!(
                "kill at {point}, then {}",
                if abort { "abort" } else { "resume" }
            );
            after_kill(&s, pid, &what);
            if i % 3 == 0 {
                let r = s.sb.run(&["restore", "good", "--yes"]);
                r.expect_code(4);
                assert!(
                    r.stderr.contains("--resume") && r.stderr.contains("--abort"),
                    "{}",
                    r.stderr
                );
                // Read-only commands say so, and work.
                let r = s.sb.run(&["list"]);
                r.expect_code(0);
                assert!(r.stderr.contains("interrupted restore"), "{}", r.stderr);
                // A resume that would restore again asks first: without
                // a terminal or --yes it is refused before anything.
                if !abort && *point != "restore-committing" && *point != "restore-committed" {
                    let r = s.sb.run(&["restore", "--resume"]);
                    r.expect_code(4);
                    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
                    let journal_open = std::fs::read_dir(s.sb.path().join("state"))
                        .unwrap()
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().ends_with(".journal"));
                    assert!(journal_open, "{what}: the refused resume changed something");
                }
                // A dry run of the resolution changes nothing.
                let killed = state(&s);
                let r = s.sb.run(&["restore", "--abort", "--dry-run"]);
                r.expect_code(0);
                assert!(r.stderr.contains("Would resolve"), "{}", r.stderr);
                assert_eq!(state(&s), killed, "{what}");
            }
            resolve(&s, abort, &before, &what);
        }
    }
}

/// An error (not a kill) right after a component's change: the change is
/// made, the restorer reports a failure. The rollback resolves that
/// component from its journal entry too, so the stack is as before.
#[test]
fn an_error_after_a_swap_is_rolled_back_from_the_journal() {
    let s = setup("crasherror");
    for point in [
        "restore-postgres-swapped",
        "redis-swapped",
        "restore-tree-swapped",
    ] {
        wreck(&s);
        let before = state(&s);
        let mut cmd = s.sb.command(bin(), s.sb.path(), None);
        cmd.args(["restore", "good", "--yes"])
            .env("FAILPOINTS", format!("{point}=return"));
        let r = Run::from(cmd.output().unwrap());
        r.expect_code(1);
        assert!(
            r.stderr.contains(&format!("fault injected at {point}"))
                && r.stderr.contains("rolled back to the state before it"),
            "{point}: {}",
            r.stderr
        );
        assert_eq!(state(&s), before, "{point}: not rolled back");
        // Nothing temporary and no journal left (resolve checks both, and
        // that there is nothing to resolve).
        resolve(&s, true, &before, point);
    }
}

#[test]
fn a_kill_during_emergency_is_resolved_the_same_way() {
    let s = setup("crashemergency");
    s.sb.run(&["immaculate", "create", "--name", "base"])
        .expect_code(0);
    for (point, abort) in [
        ("restore-postgres-swapped", true),
        ("restore-tree-swapped", false),
    ] {
        wreck(&s);
        let before = state(&s);
        let child = spawn(
            &s,
            &["emergency", "--confirm", "--yes-i-am-sure=crashemergency"],
            Some(point),
        );
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9)
        );
        after_kill(&s, pid, point);
        let r =
            s.sb.run(&["emergency", "--confirm", "--yes-i-am-sure=crashemergency"]);
        r.expect_code(4);
        assert!(r.stderr.contains("--abort"), "{}", r.stderr);
        // The baseline holds the same state as `good` here.
        resolve(&s, abort, &before, point);
    }
}

#[test]
fn a_random_kill_9_during_restore_is_always_resolved() {
    let trials: usize = std::env::var("CRASH_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(6);
    let s = setup("crashrandom");
    // How long a whole restore takes here, to spread the kills over it.
    wreck(&s);
    let t0 = Instant::now();
    s.sb.run(&["restore", "good", "--yes"]).expect_code(0);
    let whole = t0.elapsed().as_millis() as u64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let (mut live_ok, mut resolved_ok, mut killed_mid) = (0, 0, 0);
    for i in 0..trials {
        wreck(&s);
        let before = state(&s);
        // xorshift: a delay anywhere in the restore.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = seed % whole.max(1);
        let mut child = spawn(&s, &["restore", "good", "--yes"], None);
        let pid = child.id();
        std::thread::sleep(Duration::from_millis(delay));
        kill9(pid);
        let status = child.wait().unwrap();
        if std::os::unix::process::ExitStatusExt::signal(&status) == Some(9) {
            killed_mid += 1;
        }
        let what = format!("trial {i}: kill -9 after {delay} ms of {whole}");
        after_kill(&s, pid, &what);
        live_ok += 1;
        let abort = i % 2 == 0;
        let now = resolve(&s, abort, &before, &what);
        assert!(now == before || now == s.good, "{what}");
        resolved_ok += 1;
    }
    assert!(
        killed_mid > 0,
        "no trial killed the restore before it ended"
    );
    println!(
        "CRASH-TRIALS: {trials} kill -9 trials (restore took {whole} ms; {killed_mid} killed before exiting): live database, Redis and directory present {live_ok}/{trials}; resume/abort to a verified state {resolved_ok}/{trials}"
    );
}

#[test]
fn a_symlink_beside_a_restored_directory_is_never_followed() {
    let s = setup("crashsymlink");
    let victim = s.sb.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep.txt"), "keep").unwrap();
    let victim_state = || dir_state(&victim, |p| std::fs::read_to_string(p).unwrap());
    let before_victim = victim_state();
    // An older version's `.sb-old` (here a planted symlink): refused,
    // named, never deleted or followed.
    let old = s.media.with_file_name("media.sb-old");
    std::os::unix::fs::symlink(&victim, &old).unwrap();
    let r = s.sb.run(&["restore", "good", "--yes"]);
    r.expect_code(4);
    assert!(r.stderr.contains("media.sb-old"), "{}", r.stderr);
    assert!(std::fs::symlink_metadata(&old)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(victim_state(), before_victim);
    std::fs::remove_file(&old).unwrap();
    // This restore's own staging directory replaced by a symlink after a
    // kill: the abort neither follows nor removes it.
    wreck(&s);
    let before = state(&s);
    let child = spawn(
        &s,
        &["restore", "good", "--yes", "--only", "paths.media"],
        Some("restore-tree-staged"),
    );
    child.wait_with_output().unwrap();
    let staging: Vec<String> = siblings(&s.media);
    assert_eq!(staging.len(), 1, "{staging:?}");
    let staging = s.media.with_file_name(&staging[0]);
    let moved = s.sb.path().join("moved-staging");
    std::fs::rename(&staging, &moved).unwrap();
    std::os::unix::fs::symlink(&victim, &staging).unwrap();
    s.sb.run(&["restore", "--abort"]).expect_code(0);
    assert_eq!(state(&s), before);
    assert!(std::fs::symlink_metadata(&staging)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(victim_state(), before_victim);
    std::fs::remove_file(&staging).unwrap();
    std::fs::remove_dir_all(&moved).unwrap();
    assert_eq!(leftover_databases_of(&[&s.db]), Vec::<String>::new());
    assert_eq!(redis_leftovers(&s), Vec::<String>::new());
}

#[test]
fn a_kill_during_abort_or_resume_is_finished_by_the_next_one() {
    let s = setup("crashresolve");
    for abort in [true, false] {
        wreck(&s);
        let before = state(&s);
        let child = spawn(&s, &["restore", "good", "--yes"], Some("restore-applied"));
        let pid = child.id();
        child.wait_with_output().unwrap();
        after_kill(&s, pid, "restore-applied");
        // The resolution itself killed after its first component.
        let args: &[&str] = if abort {
            &["restore", "--abort"]
        } else {
            &["restore", "--resume", "--yes"]
        };
        let out = spawn(&s, args, Some("resolve-component"))
            .wait_with_output()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        after_kill(&s, pid, "resolve-component");
        resolve(&s, abort, &before, "a second resolution");
    }
}

#[test]
fn a_state_directory_others_could_write_is_refused_before_anything_changes() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup("crashstatedir");
    wreck(&s);
    let before = state(&s);
    let open = s.sb.path().join("open-state");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = s.sb.path().join("linked-state");
    let real = s.sb.path().join("real-state");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    for (dir, why) in [
        (&open, "writable by group or others"),
        (&link, "is a symbolic link"),
    ] {
        let mut cmd = s.sb.command(bin(), s.sb.path(), None);
        cmd.args(["restore", "good", "--yes"])
            .env("STACK_BACKUP_STATE_DIR", dir);
        let r = Run::from(cmd.output().unwrap());
        r.expect_code(4);
        assert!(
            r.stderr.contains(why) && r.stderr.contains(&dir.display().to_string()),
            "{}",
            r.stderr
        );
        assert_eq!(state(&s), before);
    }
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);
}
