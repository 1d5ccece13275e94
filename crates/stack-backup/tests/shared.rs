//! Shared repositories: the local process lock in a private state
//! directory (no symlink games), restic-format repository locks honoured
//! both ways with stock restic and between hosts, and prune that never
//! deletes another writer's fresh packs.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A sandbox with a `paths` component of a few files and its own state
/// directory, as another host would have.
fn host(media: &Path) -> (Sandbox, PathBuf) {
    host_with(media, "")
}

/// [`host`] with `repository` lines added to `[repository]`.
fn host_with(media: &Path, repository: &str) -> (Sandbox, PathBuf) {
    let mut sb = Sandbox::new();
    let state = sb.path().join("state");
    sb.env
        .push(("STACK_BACKUP_STATE_DIR".into(), state.display().to_string()));
    sb.write_config(
        "shop",
        &format!(
            "{repository}\n[paths.media]\npath = \"{}\"\n",
            media.display()
        ),
    );
    (sb, state)
}

/// A second host on the repository of `first`: its own sandbox, state
/// directory and temp directory, the same repository.
fn other_host(first: &Sandbox, media: &Path, repository: &str) -> Sandbox {
    let (mut sb, _) = host_with(media, repository);
    sb.env.push((
        "STACK_BACKUP_REPOSITORY".into(),
        first.repo().display().to_string(),
    ));
    let tmp = sb.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    sb.env.push(("TMPDIR".into(), tmp.display().to_string()));
    sb
}

/// The lock files in a local repository's `locks/` (not the backend's
/// temporary files of a lock being written).
fn lock_files(repo: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(repo.join("locks"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pack_files(repo: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for sub in std::fs::read_dir(repo.join("data")).unwrap().flatten() {
        for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
            v.push(f.path());
        }
    }
    v.sort();
    v
}

fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `stack-backup ARGS` in the background with fault points `failpoints`.
fn spawn(sb: &Sandbox, args: &[&str], failpoints: &str) -> Child {
    let mut cmd = sb.command(bin(), sb.path(), None);
    cmd.args(args)
        .env("FAILPOINTS", failpoints)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// [`spawn`] as a process of another host: its own UTS namespace with the
/// kernel hostname `hostname` (we run as root), so that the hostname in its
/// lock really differs, as two machines' would.
fn spawn_on_host(sb: &Sandbox, hostname: &str, args: &[&str], failpoints: &str) -> Child {
    let mut cmd = sb.command("unshare", sb.path(), None);
    cmd.arg("--uts")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "echo {hostname} > /proc/sys/kernel/hostname && exec \"$0\" \"$@\""
        ))
        .arg(bin())
        .args(args)
        .env("FAILPOINTS", failpoints)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn finish(child: Child) -> Run {
    Run::from(child.wait_with_output().unwrap())
}

/// Stock restic in the background on `repo` with the test password.
fn restic_cmd(repo: &Path) -> Command {
    let mut cmd = Command::new("restic");
    cmd.arg("-r")
        .arg(repo)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env(
            "RESTIC_CACHE_DIR",
            std::env::temp_dir().join("restic-test-cache"),
        );
    cmd
}

fn sha256(data: &[u8]) -> String {
    stack_backup_core::ledger::sha256_hex(data)
}

fn media_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for i in 0..5 {
        std::fs::write(d.path().join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
    }
    d
}

#[test]
fn a_symlink_planted_at_the_lock_path_is_never_followed() {
    let media = media_dir();
    let (sb, state) = host(media.path());
    sb.init();
    let bystander = sb.path().join("bystander");
    std::fs::write(&bystander, "precious\n").unwrap();
    let loc = stack_backup_core::repository::Location::Local(sb.repo());

    // The old path under the world-writable temp directory.
    let key = stack_backup_core::lock::RepoLock::path_in(Path::new("/x"), &loc);
    let old = std::env::temp_dir()
        .join("stack-backup-locks")
        .join(key.file_name().unwrap());
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&old);
    std::os::unix::fs::symlink(&bystander, &old).unwrap();
    // The new path in the state directory.
    let new = stack_backup_core::lock::RepoLock::path_in(&state, &loc);
    std::fs::create_dir_all(new.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&new);
    std::os::unix::fs::symlink(&bystander, &new).unwrap();

    let r = sb.run(&["backup", "--name", "one"]);
    r.expect_code(4);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&bystander).unwrap(), "precious\n");
    assert!(std::fs::symlink_metadata(&new)
        .unwrap()
        .file_type()
        .is_symlink());

    // A hard link to the bystander is refused as well.
    std::fs::remove_file(&new).unwrap();
    std::fs::hard_link(&bystander, &new).unwrap();
    let r = sb.run(&["backup", "--name", "one"]);
    r.expect_code(4);
    assert!(r.stderr.contains("hard link"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&bystander).unwrap(), "precious\n");

    // Once the plant is gone the backup runs; the old path is not used.
    std::fs::remove_file(&new).unwrap();
    sb.run(&["backup", "--name", "one"]).expect_code(0);
    assert_eq!(std::fs::read_to_string(&bystander).unwrap(), "precious\n");
    let md = std::fs::symlink_metadata(&new).unwrap();
    assert!(md.is_file());
    let _ = std::fs::remove_file(&old);

    // A state directory others can write is refused.
    let open = sb.path().join("open-state");
    std::fs::create_dir(&open).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut sb2 = Sandbox::new();
    sb2.env = sb.env.clone();
    sb2.env.retain(|(k, _)| k != "STACK_BACKUP_STATE_DIR");
    sb2.env
        .push(("STACK_BACKUP_STATE_DIR".into(), open.display().to_string()));
    std::fs::copy(sb.config(), sb2.config()).unwrap();
    let r = sb2.run(&["backup", "--name", "two"]);
    r.expect_code(4);
    assert!(
        r.stderr.contains("writable by group or others"),
        "{}",
        r.stderr
    );
}

#[test]
fn restic_and_stack_backup_honour_each_others_locks_and_prune_spares_unindexed_packs() {
    let media = media_dir();
    let (sb, _) = host_with(media.path(), "lock-wait-seconds = 2\nprune-grace-hours = 0");
    sb.init();
    sb.run(&["backup", "--name", "first"]).expect_code(0);
    let before = pack_files(&sb.repo());

    // A `restic backup` that is still running (reading its stdin).
    let mut running = restic_cmd(&sb.repo())
        .args([
            "backup",
            "--stdin",
            "--stdin-filename",
            "big.bin",
            "--pack-size",
            "4",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The chunker polynomial is random per repository, so chunk sizes vary
    // from run to run (0.5 to 8 MiB). 32 MiB fed always completes 24 MiB of
    // chunks, and two 4 MiB packs need at most 2 × (4 + 8) MiB of them:
    // 12 MiB once left a run with one pack.
    let data = noise(17, 40 << 20);
    let mut stdin = running.stdin.take().unwrap();
    stdin.write_all(&data[..32 << 20]).unwrap();
    wait_until("restic's lock", 30, || !lock_files(&sb.repo()).is_empty());

    // Our prune waits for it, then refuses with exit 5 naming restic.
    let t = Instant::now();
    let r = sb.run(&["prune", "--apply"]);
    r.expect_code(5);
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        r.stderr.contains(&format!("pid {}", running.id())) && r.stderr.contains("restic"),
        "{}",
        r.stderr
    );
    // `unlock` keeps a live lock.
    let r = sb.run(&["--json", "unlock"]);
    r.expect_code(0);
    assert_eq!(
        r.json()["removed"].as_array().unwrap().len(),
        0,
        "{}",
        r.stdout
    );

    // Someone removes restic's live lock (`unlock --remove-all`): prune
    // now runs while restic's first packs are written but not indexed.
    wait_until("restic's first packs", 60, || {
        pack_files(&sb.repo()).len() >= before.len() + 2
    });
    sb.run(&["unlock", "--remove-all"]).expect_code(0);
    assert!(lock_files(&sb.repo()).is_empty());
    let in_flight: Vec<_> = pack_files(&sb.repo())
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let r = sb.run(&["--json", "prune", "--apply"]);
    r.expect_code(0);
    let v = r.json();
    assert!(
        v["packs_marked"].as_u64().unwrap() >= in_flight.len() as u64,
        "{v}"
    );
    assert_eq!(v["packs_removed"], 0, "{v}");
    for p in &in_flight {
        assert!(
            p.exists(),
            "restic's in-flight pack {} was deleted",
            p.display()
        );
    }

    // restic finishes; its backup is whole and restorable.
    stdin.write_all(&data[32 << 20..]).unwrap();
    drop(stdin);
    let out = running.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A later prune (grace 0) finds restic's packs used: nothing lost.
    let r = sb.run(&["--json", "prune", "--apply"]);
    r.expect_code(0);
    assert_eq!(r.json()["packs_removed"], 0, "{}", r.stdout);
    for p in &in_flight {
        assert!(p.exists(), "restic's pack {} was deleted", p.display());
    }
    restic(&sb.repo(), &["check", "--read-data"]).expect_code(0);
    let dump = restic_cmd(&sb.repo())
        .args(["dump", "latest", "big.bin", "--path", "/big.bin"])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert_eq!(sha256(&dump.stdout), sha256(&data));
    let out = restic_restore(&sb.repo(), "first");
    sha256sum_check(out.path()).expect_code(0);

    // Our exclusive prune makes a `restic backup` refuse while it runs.
    let prune = spawn(&sb, &["prune", "--apply"], "prune-locked=sleep(4000)");
    wait_until("our prune's lock", 30, || {
        !lock_files(&sb.repo()).is_empty()
    });
    let r = restic(&sb.repo(), &["backup", &media.path().to_string_lossy()]);
    assert_ne!(r.code, 0, "restic backup ran beside an exclusive lock");
    assert!(r.stderr.contains("locked exclusively"), "{}", r.stderr);
    finish(prune).expect_code(0);
    assert!(lock_files(&sb.repo()).is_empty(), "our lock is removed");
    restic(&sb.repo(), &["backup", &media.path().to_string_lossy()]).expect_code(0);

    // And a `restic prune` refuses while our backup runs.
    let backup = spawn(
        &sb,
        &["backup", "--name", "second"],
        "backup-archived=sleep(4000)",
    );
    wait_until("our backup's lock", 30, || {
        !lock_files(&sb.repo()).is_empty()
    });
    let r = restic(&sb.repo(), &["prune"]);
    assert_ne!(r.code, 0, "restic prune ran beside our backup");
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    finish(backup).expect_code(0);
    restic(&sb.repo(), &["prune"]).expect_code(0);
    restic(&sb.repo(), &["check", "--read-data"]).expect_code(0);
    for name in ["first", "second"] {
        let out = restic_restore(&sb.repo(), name);
        sha256sum_check(out.path()).expect_code(0);
    }
}

#[test]
fn another_hosts_backup_holds_off_our_prune_and_its_lock_goes_stale_when_killed() {
    let media = media_dir();
    let (a, _) = host_with(media.path(), "lock-wait-seconds = 2");
    a.init();
    a.run(&["backup", "--name", "from-a"]).expect_code(0);
    let b = other_host(&a, media.path(), "lock-wait-seconds = 2");
    let b_host = format!("host-b-{}", std::process::id());

    // B (another kernel hostname) runs a backup, held at a fault point;
    // A's prune waits, then refuses naming B's host, command and pid.
    let backup = spawn_on_host(
        &b,
        &b_host,
        &["backup", "--name", "from-b"],
        "backup-archived=sleep(6000)",
    );
    let pid = backup.id();
    wait_until("B's lock", 30, || !lock_files(&a.repo()).is_empty());
    let r = a.run(&["prune", "--apply"]);
    r.expect_code(5);
    assert!(r.stderr.contains("stack-backup backup"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("host {b_host}")), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("pid {pid}")), "{}", r.stderr);
    // B finishes: A's prune runs and B's set is whole.
    finish(backup).expect_code(0);
    a.run(&["prune", "--apply"]).expect_code(0);
    restic(&a.repo(), &["check", "--read-data"]).expect_code(0);
    let out = restic_restore(&a.repo(), "from-b");
    sha256sum_check(out.path()).expect_code(0);

    // B is killed on its host: its pid means nothing here, so its lock is
    // not stale before 30 minutes, for restic as for us; only
    // `--remove-all` takes it away.
    let mut backup = spawn_on_host(
        &b,
        &b_host,
        &["backup", "--name", "killed-elsewhere"],
        "backup-archived=sleep(30000)",
    );
    wait_until("B's lock", 30, || !lock_files(&a.repo()).is_empty());
    backup.kill().unwrap();
    backup.wait().unwrap();
    restic(&a.repo(), &["unlock"]).expect_code(0);
    assert_eq!(lock_files(&a.repo()).len(), 1, "restic keeps it");
    let r = a.run(&["--json", "unlock"]);
    r.expect_code(0);
    assert_eq!(
        r.json()["kept"].as_array().unwrap().len(),
        1,
        "{}",
        r.stdout
    );
    let r = a.run(&["prune", "--apply"]);
    r.expect_code(5);
    assert!(r.stderr.contains(&format!("host {b_host}")), "{}", r.stderr);
    a.run(&["unlock", "--remove-all"]).expect_code(0);
    assert!(lock_files(&a.repo()).is_empty());

    // A process of this host (another state directory) is killed while it
    // holds its lock: the lock stays, but it is stale (same host, pid
    // gone), as restic judges it.
    let mut backup = spawn(
        &b,
        &["backup", "--name", "killed"],
        "backup-archived=sleep(30000)",
    );
    wait_until("B's lock", 30, || !lock_files(&a.repo()).is_empty());
    backup.kill().unwrap();
    backup.wait().unwrap();
    let left = lock_files(&a.repo());
    assert_eq!(left.len(), 1);
    let saved = std::fs::read(&left[0]).unwrap();
    restic(&a.repo(), &["unlock"]).expect_code(0);
    assert!(
        lock_files(&a.repo()).is_empty(),
        "restic calls it stale too"
    );
    // `unlock` removes it as restic's does.
    std::fs::write(&left[0], &saved).unwrap();
    let r = a.run(&["--json", "unlock"]);
    r.expect_code(0);
    assert_eq!(
        r.json()["removed"].as_array().unwrap().len(),
        1,
        "{}",
        r.stdout
    );
    assert!(lock_files(&a.repo()).is_empty());
    // Our exclusive prune goes past it, and removes it on the way (a
    // process of this host that is gone), so restic's exclusive commands
    // are not blocked by it either.
    std::fs::write(&left[0], &saved).unwrap();
    a.run(&["prune", "--apply"]).expect_code(0);
    assert!(lock_files(&a.repo()).is_empty());
    restic(&a.repo(), &["check", "--read-data"]).expect_code(0);
}

#[test]
fn a_lock_that_cannot_be_refreshed_in_time_stops_the_backup_before_its_snapshot() {
    let media = media_dir();
    let (sb, _) = host(media.path());
    sb.init();
    // Lock timings of seconds: refreshed every 1 s, lost 3 s after the
    // last good write; the backup spends 4.5 s archiving.
    let slow = "repo-lock-timing=return(1);backup-archived=sleep(4500)";
    // The refresh works: the lock stays ours and the backup completes.
    finish(spawn(&sb, &["backup", "--name", "refreshed"], slow)).expect_code(0);
    // Every refresh fails: the backup stops before its snapshot.
    let r = finish(spawn(
        &sb,
        &["backup", "--name", "unrefreshed"],
        &format!("{slow};repo-lock-refresh=return"),
    ));
    r.expect_code(1);
    assert!(r.stderr.contains("could not be refreshed"), "{}", r.stderr);
    let sets = sb.run(&["--json", "list"]);
    sets.expect_code(0);
    let names: Vec<String> = sets
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["refreshed"], "{}", sets.stdout);
    assert!(lock_files(&sb.repo()).is_empty(), "its lock is removed");
    restic(&sb.repo(), &["check", "--read-data"]).expect_code(0);
}

#[test]
fn a_lock_file_removed_by_another_host_is_lost_at_the_next_refresh() {
    let media = media_dir();
    let (sb, _) = host(media.path());
    sb.init();
    // Refreshed every second; the backup spends 4.5 s archiving, during
    // which another host runs `restic unlock --remove-all`.
    let child = spawn(
        &sb,
        &["backup", "--name", "unlocked"],
        "repo-lock-timing=return(1);backup-archived=sleep(4500)",
    );
    wait_until("the backup's lock", 30, || {
        !lock_files(&sb.repo()).is_empty()
    });
    let out = restic_cmd(&sb.repo())
        .args(["unlock", "--remove-all"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = finish(child);
    r.expect_code(1);
    assert!(
        r.stderr.contains("was removed by someone else"),
        "{}",
        r.stderr
    );
    let sets = sb.run(&["--json", "list"]);
    assert_eq!(sets.json().as_array().unwrap().len(), 0, "{}", sets.stdout);
    assert!(
        lock_files(&sb.repo()).is_empty(),
        "no new lock file claimed"
    );
}

#[test]
fn copy_and_import_check_their_locks_before_writing_sets() {
    let media = media_dir();
    let (sb, _) = host(media.path());
    sb.init();
    sb.run(&["backup", "--name", "one"]).expect_code(0);
    let target = sb.path().join("target");
    let copy = |failpoints: &str| {
        let mut cmd = sb.command(bin(), sb.path(), None);
        cmd.args(["--json", "copy", "--all", "--init", "--to"])
            .arg(&target)
            .env("STACK_BACKUP_TO_PASSWORD", "target-pw")
            .env("FAILPOINTS", failpoints);
        Run::from(cmd.output().unwrap())
    };
    // Every refresh fails while the copy waits: both locks are lost and
    // nothing is copied.
    let r = copy("repo-lock-timing=return(1);copy-ready=sleep(4500);repo-lock-refresh=return");
    r.expect_code(1);
    assert!(r.stderr.contains("could not be refreshed"), "{}", r.stderr);
    let out = Command::new("restic")
        .args(["-r"])
        .arg(&target)
        .args(["snapshots", "--json"])
        .env("RESTIC_PASSWORD", "target-pw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // With working refreshes the same copy goes through.
    copy("repo-lock-timing=return(1);copy-ready=sleep(2500)").expect_code(0);

    // Import: a lost lock stops it before its set is saved, and the
    // incomplete snapshot is removed.
    let export = sb.path().join("export");
    sb.run(&["export", "one", &export.to_string_lossy()])
        .expect_code(0);
    let r = finish(spawn(
        &sb,
        &["import", &export.to_string_lossy(), "--name", "imported"],
        "repo-lock-timing=return(1);import-stored=sleep(4500);repo-lock-refresh=return",
    ));
    r.expect_code(1);
    assert!(r.stderr.contains("could not be refreshed"), "{}", r.stderr);
    assert_eq!(restic_snapshot_count(&sb.repo()), 1, "only `one`");
}

#[test]
fn on_s3_our_backup_holds_a_restic_lock_that_restic_prune_honours() {
    use common::backend::Backend;
    let media = media_dir();
    let mut sb = Sandbox::new();
    let repo = Backend::S3.fresh_repo(&mut sb);
    let state = sb.path().join("state");
    sb.env
        .push(("STACK_BACKUP_STATE_DIR".into(), state.display().to_string()));
    repo.write_config(
        &sb,
        "shop",
        &format!("[paths.media]\npath = \"{}\"\n", media.path().display()),
    );
    sb.init();
    let locks = || {
        let r = repo.restic(&["list", "locks", "--no-lock"]);
        r.expect_code(0);
        r.stdout.lines().filter(|l| !l.trim().is_empty()).count()
    };
    let backup = spawn(
        &sb,
        &["backup", "--name", "on-s3"],
        "backup-archived=sleep(6000)",
    );
    wait_until("our lock in the bucket", 60, || locks() == 1);
    let r = repo.restic(&["prune"]);
    assert_ne!(r.code, 0, "restic prune ran beside our backup");
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    finish(backup).expect_code(0);
    assert_eq!(locks(), 0, "our lock is removed from the bucket");
    repo.restic(&["check", "--read-data"]).expect_code(0);
    let out = repo.restic_restore("on-s3");
    sha256sum_check(out.path()).expect_code(0);
}
