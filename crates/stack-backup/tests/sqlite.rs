//! `[sqlite.NAME]` (issue 16) against real SQLite files: a database written
//! continuously during the backup restores whole; a restore that fails its
//! checks (a tampered copy, a row count the copy does not have) or meets a
//! process holding the file leaves the live file untouched; a kill at any
//! step of the swap is resolved by `--abort` and by `--resume`; a symlinked
//! path is refused.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rusqlite::Connection;

struct Fixture {
    sb: Sandbox,
    /// The live database file.
    db: PathBuf,
}

/// A sandbox with `[sqlite.app]` at `<sandbox>/data/app.db`: WAL mode,
/// `user_version` 7, a Rails migrations table and `rows` events.
fn fixture(stack: &str, rows: usize) -> Fixture {
    let sb = Sandbox::new();
    let data = sb.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("app.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA user_version = 7;
         CREATE TABLE schema_migrations (version TEXT PRIMARY KEY);
         INSERT INTO schema_migrations VALUES ('20240101000000'), ('20240202000000');
         CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);",
    )
    .unwrap();
    insert(&c, rows);
    drop(c);
    sb.write_config(
        stack,
        &format!("[sqlite.app]\npath = \"{}\"\n", db.display()),
    );
    sb.init();
    Fixture { sb, db }
}

fn insert(c: &Connection, n: usize) {
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..n {
        tx.execute(
            "INSERT INTO events (payload) VALUES (?1)",
            [format!("event {i} {}", "x".repeat(200))],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Rows of `events` and a digest of them, plus `integrity_check`.
fn state(db: &Path) -> (i64, String, String) {
    let c = Connection::open(db).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let (n, digest): (i64, Option<String>) = c
        .query_row(
            "SELECT count(*), group_concat(id || ':' || length(payload), ',') FROM (SELECT * FROM events ORDER BY id)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    (n, digest.unwrap_or_default(), check)
}

/// Entries beside the live file: with `all`, every one (the SQLite
/// sidecars too), else those a restore names (`app.db.sb-…`).
fn beside(db: &Path, all: bool) -> Vec<String> {
    let name = db.file_name().unwrap().to_string_lossy().to_string();
    let mut v: Vec<String> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n != &name && (all || n.contains(".sb-")))
        .collect();
    v.sort();
    v
}

fn manifest(sb: &Sandbox, set: &str) -> (serde_json::Value, tempfile::TempDir) {
    let out = restic_restore(&sb.repo(), set);
    let m = serde_json::from_slice(
        &std::fs::read(out.path().join("stack-backup/manifest.json")).unwrap(),
    )
    .unwrap();
    (m, out)
}

#[test]
fn a_database_written_during_backup_restores_whole_with_the_counted_rows() {
    let f = fixture("sqlitelive", 3000);
    // A second database in the same stack: every component is planned
    // (copied) before any is archived, so planning one must leave the
    // other's copy alone.
    let other = f.sb.path().join("other.db");
    let c = Connection::open(&other).unwrap();
    c.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);")
        .unwrap();
    insert(&c, 42);
    drop(c);
    f.sb.write_config(
        "sqlitelive",
        &format!(
            "[sqlite.app]\npath = \"{}\"\n[sqlite.other]\npath = \"{}\"\n",
            f.db.display(),
            other.display()
        ),
    );
    // A writer committing rows one by one (WAL mode) through the backup,
    // never checkpointing: every row it commits is in `app.db-wal` only, so
    // a raw copy of `app.db` would hold the fixture's 3000 rows and no more.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (db, stop, committed) = (f.db.clone(), stop.clone(), committed.clone());
        std::thread::spawn(move || {
            let c = Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            c.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
            while !stop.load(Ordering::Relaxed) {
                insert(&c, 1);
                committed.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while committed.load(Ordering::SeqCst) < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // doctor: SQLite, its journal mode, room for the copy.
    let r = f.sb.run(&["doctor"]);
    r.expect_code(0);
    assert!(r.stdout.contains("journal mode wal"), "{}", r.stdout);
    // A copy left by a killed backup (its pid gone) is removed by the next.
    let copies = f.sb.path().join("state/sqlite-copies");
    std::fs::create_dir_all(&copies).unwrap();
    let stale = copies.join("sqlitelive.app.4194304.sqlite");
    std::fs::write(&stale, "stale").unwrap();
    let before_backup = committed.load(Ordering::SeqCst) as i64;
    f.sb.run(&["backup", "--name", "live"]).expect_code(0);
    let after_backup = committed.load(Ordering::SeqCst) as i64;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    // The temporary copy is gone, and the stale one.
    assert_eq!(std::fs::read_dir(&copies).unwrap().count(), 0, "{copies:?}");

    let (m, out) = manifest(&f.sb, "live");
    let rec = &m["components"]["sqlite.app"];
    assert_eq!(rec["kind"], "sqlite");
    assert_eq!(rec["journal_mode"], "wal");
    assert_eq!(rec["user_version"], 7);
    assert_eq!(rec["tables"]["schema_migrations"], 2);
    assert_eq!(rec["migrations"][0]["tool"], "rails");
    assert_eq!(rec["migrations"][0]["applied"][1], "20240202000000");
    let counted = rec["tables"]["events"].as_i64().unwrap();
    // The copy point is inside the backup: every row committed (to the
    // WAL only) before it started is in the copy, none committed after it.
    assert!(
        (3000 + before_backup..=3000 + after_backup).contains(&counted),
        "{counted} rows, {before_backup}..{after_backup} committed in the WAL around the backup"
    );
    assert!(counted > 3000, "the rows only in the WAL are in the copy");
    // What stock restic gives back is the copy the manifest describes.
    let copy = out.path().join("sqlite/app/database.sqlite");
    let (n, digest, check) = state(&copy);
    assert_eq!((n, check.as_str()), (counted, "ok"));
    let sha = Run::from(
        std::process::Command::new("sha256sum")
            .arg(&copy)
            .output()
            .unwrap(),
    );
    assert!(sha.stdout.starts_with(rec["sha256"].as_str().unwrap()));
    assert!(state(&f.db).0 > counted, "rows were written after the copy");

    assert_eq!(m["components"]["sqlite.other"]["tables"]["events"], 42);
    let (n, _, check) = state(&out.path().join("sqlite/other/database.sqlite"));
    assert_eq!((n, check.as_str()), (42, "ok"));

    // A drill restores it into scratch and runs the same checks.
    let r = f.sb.run(&["drill", "live"]);
    r.expect_code(0);
    assert!(r.stdout.contains("integrity_check ok"), "{}", r.stdout);

    // Broken: overwritten with garbage, a stale WAL beside it.
    std::fs::write(&f.db, vec![0x5a; 8192]).unwrap();
    std::fs::write(f.db.with_file_name("app.db-wal"), b"stale").unwrap();
    f.sb.run(&["restore", "live", "--yes"]).expect_code(0);
    // Nothing beside it: the stale WAL went with the original.
    assert_eq!(beside(&f.db, true), Vec::<String>::new());
    assert_eq!(state(&f.db), (counted, digest, "ok".to_string()));
}

/// Export of `set`, tampered (the copy or the manifest, with every
/// checksum recomputed as an attacker would) and imported as `name`.
fn import_tampered(
    f: &Fixture,
    set: &str,
    name: &str,
    tamper: impl FnOnce(&Path, &mut serde_json::Value),
) {
    let dir = f.sb.path().join(format!("export-{name}"));
    f.sb.run(&["export", set, &dir.to_string_lossy()])
        .expect_code(0);
    let mpath = dir.join("stack-backup/manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    tamper(&dir, &mut m);
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    // Every checksum file recomputed over what is there now.
    for sums in ["stack-backup/CHECKSUM.sha256", "CHECKSUM.sha256"] {
        let text = std::fs::read_to_string(dir.join(sums)).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let (_, p) = line.split_once("  ").unwrap();
            // The set's own list names the copy by its set path.
            let file = if p == "sqlite/app/database.sqlite" {
                "sqlite/app.sqlite"
            } else {
                p
            };
            if !dir.join(file).exists() {
                out.push_str(&format!("{line}\n"));
                continue;
            }
            let r = Run::from(
                std::process::Command::new("sha256sum")
                    .arg(file)
                    .current_dir(&dir)
                    .output()
                    .unwrap(),
            );
            let sha = r.stdout.split_whitespace().next().unwrap().to_string();
            out.push_str(&format!("{sha}  {p}\n"));
        }
        std::fs::write(dir.join(sums), out).unwrap();
    }
    f.sb.run(&["import", &dir.to_string_lossy(), "--name", name])
        .expect_code(0);
}

#[test]
fn a_restore_failing_its_checks_or_meeting_a_holder_leaves_the_live_file_untouched() {
    let f = fixture("sqlitecheck", 200);
    f.sb.run(&["backup", "--name", "good"]).expect_code(0);
    let c = Connection::open(&f.db).unwrap();
    insert(&c, 5);
    drop(c);
    let before = state(&f.db);
    let bytes = std::fs::read(&f.db).unwrap();

    // A row count the copy does not have.
    import_tampered(&f, "good", "counted", |_, m| {
        m["components"]["sqlite.app"]["tables"]["events"] = 999.into();
    });
    let r = f.sb.run(&["restore", "counted", "--yes"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("row counts differ"), "{}", r.stderr);
    assert_eq!(state(&f.db), before);
    assert_eq!(std::fs::read(&f.db).unwrap(), bytes);
    assert_eq!(beside(&f.db, false), Vec::<String>::new());

    // A copy corrupted inside (its SHA-256 recorded anew).
    import_tampered(&f, "good", "corrupt", |dir, m| {
        let rec = &mut m["components"]["sqlite.app"];
        let copy = dir.join("sqlite/app.sqlite");
        let mut b = std::fs::read(&copy).unwrap();
        let page = rec["page_size"].as_u64().unwrap() as usize;
        for x in &mut b[page + 8..page * 2] {
            *x = 0xa5;
        }
        std::fs::write(&copy, &b).unwrap();
        let sha = Run::from(
            std::process::Command::new("sha256sum")
                .arg(&copy)
                .output()
                .unwrap(),
        );
        let sha = sha.stdout.split_whitespace().next().unwrap().to_string();
        rec["sha256"] = sha.clone().into();
        for a in m["artifacts"].as_array_mut().unwrap() {
            if a["component"] == "sqlite.app" {
                a["sha256"] = sha.clone().into();
            }
        }
    });
    let r = f.sb.run(&["restore", "corrupt", "--yes"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("integrity_check"), "{}", r.stderr);
    assert_eq!(std::fs::read(&f.db).unwrap(), bytes);
    assert_eq!(beside(&f.db, false), Vec::<String>::new());

    // Another process holds it open: refused before anything changes.
    let holder = Command::new("sqlite3")
        .arg(&f.db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder = KillOnDrop(holder);
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&f.db).unwrap());
    let fds = PathBuf::from(format!("/proc/{}/fd", holder.0.id()));
    let holds = || {
        std::fs::read_dir(&fds).unwrap().flatten().any(|fd| {
            std::fs::metadata(fd.path())
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == ino)
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !holds() {
        assert!(
            std::time::Instant::now() < deadline,
            "sqlite3 never opened the file"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = f.sb.run(&["restore", "good", "--yes"]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stderr.contains("is open in process"), "{}", r.stderr);
    assert_eq!(std::fs::read(&f.db).unwrap(), bytes);

    // The holder commits rows into the WAL and dies (`kill -9`): they are
    // in `app.db-wal` only. A failed health check after the swap puts the
    // original back with its WAL: the rows are there again.
    let stdin = holder.0.stdin.as_mut().unwrap();
    use std::io::Write;
    stdin
        .write_all(b"PRAGMA wal_autocheckpoint = 0; INSERT INTO events (payload) VALUES ('in the wal'); SELECT 'committed';\n")
        .unwrap();
    stdin.flush().unwrap();
    let wal = f.db.with_file_name("app.db-wal");
    let mut out = std::io::BufReader::new(holder.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("committed") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0,
            "sqlite3 ended"
        );
    }
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    // Every frame of the commit is in the WAL once the process is gone.
    let wal_bytes = std::fs::read(&wal).unwrap();
    assert!(wal_bytes.len() > 4096, "{}", wal_bytes.len());
    let config = std::fs::read_to_string(f.sb.config()).unwrap();
    std::fs::write(
        f.sb.config(),
        format!("{config}\n[[health]]\nname = \"fails\"\ncommand = \"false\"\n"),
    )
    .unwrap();
    let r = f.sb.run(&["restore", "good", "--yes"]);
    expect_rolled_back_by(&r, "fails");
    assert_eq!(std::fs::read(&f.db).unwrap(), bytes);
    assert_eq!(std::fs::read(&wal).unwrap(), wal_bytes);
    assert_eq!(beside(&f.db, false), Vec::<String>::new());
    assert_eq!(state(&f.db).0, before.0 + 1);
}

#[test]
fn a_missing_database_loses_the_wal_beside_it_and_a_hot_journal_fails_the_restore() {
    let f = fixture("sqlitemissing", 100);
    f.sb.run(&["backup", "--name", "good"]).expect_code(0);
    let good = state(&f.db);
    // The manifest's mode is input: a file the restore creates gets at
    // most rw for all, never setuid/setgid/sticky/exec.
    import_tampered(&f, "good", "modes", |_, m| {
        m["components"]["sqlite.app"]["mode"] = 0o7777.into();
    });
    // A WAL of 50 more rows, committed and never checkpointed, left
    // behind when the database itself is gone: valid frames that SQLite
    // would replay into whatever file is put at `app.db`.
    let wal = f.db.with_file_name("app.db-wal");
    let c = Connection::open(&f.db).unwrap();
    c.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
    insert(&c, 50);
    let frames = std::fs::read(&wal).unwrap();
    drop(c);
    for p in ["app.db", "app.db-wal", "app.db-shm"] {
        let _ = std::fs::remove_file(f.db.with_file_name(p));
    }
    std::fs::write(&wal, &frames).unwrap();

    f.sb.run(&["restore", "modes", "--yes"]).expect_code(0);
    assert_eq!(beside(&f.db, true), Vec::<String>::new());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&f.db).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o666);
    // Opened as the app opens it (not immutable): the set's rows exactly.
    assert_eq!(state(&f.db), good);

    // A hot journal (rollback mode, a writer killed inside a transaction)
    // is not a broken file: its pre-restore copy cannot be made, so the
    // restore fails rather than replace the database without one.
    let c = Connection::open(&f.db).unwrap();
    c.execute_batch("PRAGMA journal_mode = DELETE").unwrap();
    drop(c);
    let mut writer = KillOnDrop(
        Command::new("sqlite3")
            .arg(&f.db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    use std::io::{BufRead, Write};
    let stdin = writer.0.stdin.as_mut().unwrap();
    stdin
        .write_all(b"PRAGMA cache_size = 1; BEGIN; UPDATE events SET payload = payload || 'y'; SELECT 'pending';\n")
        .unwrap();
    stdin.flush().unwrap();
    let mut out = std::io::BufReader::new(writer.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("pending") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "sqlite3 ended");
    }
    writer.0.kill().unwrap();
    writer.0.wait().unwrap();
    let journal = f.db.with_file_name("app.db-journal");
    let (db_bytes, journal_bytes) = (
        std::fs::read(&f.db).unwrap(),
        std::fs::read(&journal).unwrap(),
    );
    let r = f.sb.run(&["restore", "good", "--yes"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("readonly database"), "{}", r.stderr);
    assert_eq!(std::fs::read(&f.db).unwrap(), db_bytes);
    assert_eq!(std::fs::read(&journal).unwrap(), journal_bytes);
    assert_eq!(beside(&f.db, false), Vec::<String>::new());
}

use std::process::Command;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_kill_at_each_step_of_the_swap_is_resolved_by_abort_and_by_resume() {
    let f = fixture("sqlitecrash", 100);
    f.sb.run(&["backup", "--name", "good"]).expect_code(0);
    let good = state(&f.db);
    let c = Connection::open(&f.db).unwrap();
    insert(&c, 7);
    drop(c);
    let before = state(&f.db);
    for point in ["sqlite-staged", "sqlite-aside", "sqlite-swapped"] {
        for abort in [true, false] {
            let mut cmd = f.sb.command(bin(), f.sb.path(), None);
            cmd.args(["restore", "good", "--yes"])
                .env("FAILPOINTS", format!("{point}=return(kill)"));
            let r = Run::from(cmd.output().unwrap());
            assert_eq!(r.code, -1, "{point}: not killed: {r:?}");
            // The live path always exists and is a database.
            assert!(std::fs::symlink_metadata(&f.db).unwrap().is_file());
            let r = if abort {
                f.sb.run(&["restore", "--abort"])
            } else {
                f.sb.run(&["restore", "--resume", "--yes"])
            };
            r.expect_code(0);
            let want = if abort { &before } else { &good };
            assert_eq!(&state(&f.db), want, "{point} abort={abort}: {r:?}");
            assert_eq!(beside(&f.db, false), Vec::<String>::new(), "{point}");
            if !abort {
                // Back to `before` for the next round.
                let c = Connection::open(&f.db).unwrap();
                insert(&c, 7);
                drop(c);
                assert_eq!(state(&f.db).0, before.0);
            }
        }
    }
}

#[test]
fn a_symlinked_path_is_refused() {
    let f = fixture("sqlitelink", 10);
    let real = f.db.clone();
    // The file itself a symlink.
    let link = f.sb.path().join("data/link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // A directory on the way a symlink.
    let dirlink = f.sb.path().join("datalink");
    std::os::unix::fs::symlink(f.sb.path().join("data"), &dirlink).unwrap();
    for path in [link, dirlink.join("app.db")] {
        f.sb.write_config(
            "sqlitelink",
            &format!("[sqlite.app]\npath = \"{}\"\n", path.display()),
        );
        let r = f.sb.run(&["backup", "--name", "linked"]);
        assert_ne!(r.code, 0, "{path:?}: {r:?}");
        assert!(
            r.stderr.contains("symbolic link") || r.stderr.contains("through a symlink"),
            "{path:?}: {}",
            r.stderr
        );
        let r = f.sb.run(&["doctor"]);
        assert_ne!(r.code, 0, "{path:?}: {r:?}");
    }
    // A relative path is a config error.
    f.sb.write_config("sqlitelink", "[sqlite.app]\npath = \"data/app.db\"\n");
    f.sb.run(&["doctor"]).expect_code(2);
    // So is a volume name Docker would not give.
    f.sb.write_config(
        "sqlitelink",
        "[sqlite.app]\nvolume = \"../etc\"\npath = \"app.db\"\n",
    );
    f.sb.run(&["doctor"]).expect_code(2);
}

#[test]
fn a_database_inside_a_volume_round_trips_and_a_symlink_in_it_is_refused() {
    let sb = Sandbox::new();
    let vol = TempVolume::new();
    let root = vol.mountpoint();
    std::fs::create_dir(root.join("data")).unwrap();
    let db = root.join("data/app.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);")
        .unwrap();
    insert(&c, 50);
    drop(c);
    let config = |path: &str| {
        format!(
            "[sqlite.app]\nvolume = \"{}\"\npath = \"{path}\"\n",
            vol.name
        )
    };
    sb.write_config("sqlitevol", &config("data/app.db"));
    sb.init();
    sb.run(&["backup", "--name", "vol"]).expect_code(0);
    let good = state(&db);
    let c = Connection::open(&db).unwrap();
    c.execute("DELETE FROM events WHERE id % 2 = 0", [])
        .unwrap();
    drop(c);
    sb.run(&["restore", "vol", "--yes"]).expect_code(0);
    assert_eq!(state(&db), good);
    assert_eq!(beside(&db, false), Vec::<String>::new());

    // A container using the volume is stopped for the swap (journaled);
    // the restore is killed, the container removed meanwhile: `--abort`
    // still puts the original back (nothing left to start is no error).
    let c = Connection::open(&db).unwrap();
    insert(&c, 3);
    drop(c);
    let before = state(&db);
    sb.write_config(
        "sqlitevol",
        &format!(
            "{}[docker]\nstop-containers = true\n",
            config("data/app.db")
        ),
    );
    let app = unique("sbt-sqlite-app");
    docker(&[
        "run",
        "-d",
        "--name",
        &app,
        "-v",
        &format!("{}:/data", vol.name),
        &base_image(),
        "sleep",
        "600",
    ])
    .expect_code(0);
    let mut cmd = sb.command(bin(), sb.path(), None);
    cmd.args(["restore", "vol", "--yes"])
        .env("FAILPOINTS", "sqlite-staged=return(kill)");
    let r = Run::from(cmd.output().unwrap());
    assert_eq!(r.code, -1, "not killed: {r:?}");
    docker(&["rm", "-f", &app]).expect_code(0);
    sb.run(&["restore", "--abort"]).expect_code(0);
    assert_eq!(state(&db), before);
    assert_eq!(beside(&db, false), Vec::<String>::new());
    sb.write_config("sqlitevol", &config("data/app.db"));

    // A directory inside the volume replaced by a link to the host.
    std::os::unix::fs::symlink(sb.path(), root.join("link")).unwrap();
    sb.write_config("sqlitevol", &config("link/app.db"));
    let r = sb.run(&["backup", "--name", "linked"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("never followed"), "{}", r.stderr);
}
