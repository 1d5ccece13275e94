//! `[mysql.NAME]` against the host's MariaDB: the stack's URL is the
//! application user's (privileges on its database only), `admin-url` the
//! test admin. Each test makes its own database.

mod common;

use common::mysql::TempMysql;
use common::*;
use std::time::{Duration, Instant};

/// A sandbox with `[mysql.app]` on `db`; `extra` goes into the table.
fn sandbox(db: &TempMysql, extra: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write_config(
        "shop",
        &format!(
            "[mysql.app]\nurl = \"{}\"\nadmin-url = \"{}\"\n{extra}\n",
            db.url(),
            common::mysql::admin_url()
        ),
    );
    sb.init();
    sb
}

/// `mariadb-dump` (and `mariadb`) wrappers that log their argv, the mode
/// of the option file they were given, and run the real tool.
fn logging_wrappers() -> Wrappers {
    let w = Wrappers::new();
    for tool in ["mariadb-dump", "mariadb"] {
        w.script(
            tool,
            &format!(
                "f=${{1#--defaults-extra-file=}}\n[ \"$f\" != \"$1\" ] && echo \"mode $(stat -c %a \"$f\") $f\" >> {log}\necho \"{tool} $*\" >> {log}\nexec {real} \"$@\"",
                log = w.file("argv.log").display(),
                real = which(tool),
            ),
        );
    }
    w
}

/// Runs the binary with `w` first on PATH and `env`.
fn run_with(sb: &Sandbox, w: &Wrappers, env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = sb.command(bin(), sb.path(), Some(w.path()));
    cmd.args(args).envs(env.iter().copied());
    Run::from(cmd.output().unwrap())
}

/// Deletes and changes rows, drops a table and adds one.
fn wreck(db: &TempMysql) {
    db.sql(
        "DELETE FROM orders WHERE id % 2 = 0; UPDATE customers SET name = 'x' WHERE id < 10;
         DROP TABLE alembic_version; CREATE TABLE later (id INT PRIMARY KEY); INSERT INTO later VALUES (1);",
    );
}

#[test]
fn round_trip_restores_every_row_and_keeps_the_password_out_of_argv() {
    let db = TempMysql::new();
    db.seed(300, "a1b2c3d4e5f6");
    let before = db.digest();
    let sb = sandbox(&db, "");
    let doctor = sb.run(&["doctor"]);
    doctor.expect_code(0);
    assert!(doctor.stdout.contains("MariaDB"), "{}", doctor.stdout);
    let w = logging_wrappers();
    let r = run_with(&sb, &w, &[], &["--json", "backup", "--name", "good"]);
    r.expect_code(0);
    let log = std::fs::read_to_string(w.file("argv.log")).unwrap();
    assert!(log.contains("--single-transaction"), "{log}");
    assert!(!log.contains(db.password()), "password in argv: {log}");
    assert!(!r.stdout.contains(db.password()) && !r.stderr.contains(db.password()));
    // The option file was private while the dump ran, and is gone.
    let file = log
        .lines()
        .find_map(|l| l.strip_prefix("mode 600 "))
        .unwrap_or_else(|| panic!("no 0600 option file: {log}"));
    assert!(!std::path::Path::new(file).exists(), "{file} left behind");

    // The manifest's counts are the rows as of the dump.
    let root = restic_restore(&sb.repo(), "good");
    let root = root.path();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("stack-backup/manifest.json")).unwrap())
            .unwrap();
    let counts = &m["components"]["mysql.app"]["row_counts"];
    assert_eq!(counts["customers"], 300, "{counts}");
    assert_eq!(counts["orders"], 900, "{counts}");
    assert_eq!(
        m["components"]["mysql.app"]["migrations"][0]["applied"][0],
        "a1b2c3d4e5f6"
    );
    // Rows as text (decision 0046): the schema as SQL, one file per table.
    assert_eq!(m["components"]["mysql.app"]["format"], "rows-v1");
    let dump =
        std::fs::read_to_string(root.join(format!("mysql/app/{}.schema.sql", db.name))).unwrap();
    assert!(dump.contains("CREATE TABLE `orders`"), "{dump:.300}");
    assert!(!dump.contains("INSERT INTO"), "{dump:.300}");
    let rows = std::fs::read(root.join(format!("mysql/app/{}.rows/alembic_version.tsv", db.name)))
        .unwrap();
    assert_eq!(rows, b"a1b2c3d4e5f6\n");

    wreck(&db);
    assert_ne!(db.digest(), before);
    let r = run_with(&sb, &w, &[], &["restore", "good", "--yes"]);
    r.expect_code(0);
    assert_eq!(db.digest(), before);
    // The application still reads its (restored) tables.
    db.sql("SELECT COUNT(*) FROM orders");
    assert!(db.leftovers().is_empty(), "{:?}", db.leftovers());
    let log = std::fs::read_to_string(w.file("argv.log")).unwrap();
    assert!(log.contains("mariadb --defaults-extra-file="), "{log}");
    assert!(log.contains("--sandbox"), "{log}");
    assert!(!log.contains(db.password()), "password in argv: {log}");

    // A drill restores into scratch, checks, and leaves nothing.
    let d = sb.run(&["drill", "good"]);
    d.expect_code(0);
    let said = format!("{}{}", d.stdout, d.stderr);
    assert!(said.contains("row counts and migrations match"), "{said}");
}

#[test]
fn restore_is_refused_on_a_migration_mismatch() {
    let db = TempMysql::new();
    db.seed(20, "a1b2c3d4e5f6");
    let versions = tempfile::tempdir().unwrap();
    std::fs::write(
        versions.path().join("1.py"),
        "revision = 'a1b2c3d4e5f6'\ndown_revision = None\n",
    )
    .unwrap();
    let sb = sandbox(
        &db,
        &format!("migrations-dir = \"{}\"", versions.path().display()),
    );
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    // A migration ran since: the live database and the code are newer.
    std::fs::write(
        versions.path().join("2.py"),
        "revision = 'ffee11223344'\ndown_revision = 'a1b2c3d4e5f6'\n",
    )
    .unwrap();
    db.sql(
        "UPDATE alembic_version SET version_num = 'ffee11223344'; DELETE FROM orders WHERE id < 5",
    );
    let live = db.digest();
    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(4);
    assert!(r.stderr.contains("migration mismatch"), "{}", r.stderr);
    assert!(r.stderr.contains("ffee11223344"), "{}", r.stderr);
    assert_eq!(db.digest(), live);
    assert!(db.leftovers().is_empty(), "{:?}", db.leftovers());
}

#[test]
fn a_failed_post_check_rolls_the_swap_back() {
    let db = TempMysql::new();
    db.seed(50, "a1b2c3d4e5f6");
    let sb = sandbox(&db, "");
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    wreck(&db);
    let wrecked = db.digest();
    let w = Wrappers::new();
    let r = run_with(
        &sb,
        &w,
        &[("FAILPOINTS", "mysql-post-check-rows=return(1)")],
        &["restore", "good", "--yes"],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("row counts differ"), "{}", r.stderr);
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    // The live tables are back, rows and all; nothing is left beside.
    assert_eq!(db.digest(), wrecked);
    db.sql("SELECT COUNT(*) FROM later");
    assert!(db.leftovers().is_empty(), "{:?}", db.leftovers());
}

#[test]
fn a_dump_tool_that_fails_or_is_killed_writes_no_set() {
    let db = TempMysql::new();
    db.seed(50, "a1b2c3d4e5f6");
    let sb = sandbox(&db, "");
    let real = which("mariadb-dump");
    for (how, body) in [
        (
            "exit",
            format!("case \"$*\" in *--version*) exec {real} \"$@\";; esac\n{real} \"$@\" | head -c 300\nexit 2"),
        ),
        (
            "kill",
            format!("case \"$*\" in *--version*) exec {real} \"$@\";; esac\n{real} \"$@\" | head -c 300\nkill -9 $$"),
        ),
    ] {
        let w = Wrappers::new();
        w.script("mariadb-dump", &body);
        let r = run_with(&sb, &w, &[], &["backup", "--name", how]);
        assert_eq!(r.code, 1, "{how}: {r:?}");
        assert!(r.stderr.contains("mariadb-dump"), "{how}: {}", r.stderr);
        assert_eq!(restic_snapshot_count(&sb.repo()), 0, "{how}");
        let state = sb.path().join("state");
        let left: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".cnf"))
            .collect();
        assert!(left.is_empty(), "{how}: option file left: {left:?}");
    }
    // The tables were not left locked.
    db.sql("INSERT INTO customers (name) VALUES ('after')");
}

#[test]
fn a_restore_killed_before_or_after_the_swap_is_resolved_from_the_journal() {
    let db = TempMysql::new();
    db.seed(40, "a1b2c3d4e5f6");
    let good = db.digest();
    let sb = sandbox(&db, "");
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    wreck(&db);
    let wrecked = db.digest();
    let w = Wrappers::new();
    for (point, abort) in [
        ("restore-mysql-swapped", true),
        ("restore-mysql-beside", false),
    ] {
        let r = run_with(
            &sb,
            &w,
            &[("FAILPOINTS", &format!("{point}=return(kill)"))],
            &["restore", "good", "--yes"],
        );
        assert_ne!(r.code, 0, "{point}: {r:?}");
        // Killed after the swap: the set's tables are live; before it:
        // the live ones, untouched.
        let killed = if abort { &good } else { &wrecked };
        assert_eq!(&db.digest(), killed, "{point}");
        let r = if abort {
            sb.run(&["restore", "--abort"])
        } else {
            sb.run(&["restore", "--resume", "--yes"])
        };
        r.expect_code(0);
        assert_eq!(
            &db.digest(),
            if abort { &wrecked } else { &good },
            "{point}"
        );
        assert!(db.leftovers().is_empty(), "{point}: {:?}", db.leftovers());
    }
}

#[test]
fn doctor_wants_an_admin_url_and_a_container_name_needs_the_container() {
    let db = TempMysql::new();
    let sb = Sandbox::new();
    sb.write_config("shop", &format!("[mysql.app]\nurl = \"{}\"\n", db.url()));
    sb.init();
    let r = sb.run(&["doctor"]);
    r.expect_code(6);
    assert!(r.stdout.contains("admin-url"), "{}", r.stdout);
    assert!(!r.stdout.contains(db.password()) && !r.stderr.contains(db.password()));
    // With `container =`, the URL must reach that container: a container
    // that does not exist is an error for an IP literal as for a name.
    let container = unique("sbnone");
    let with = |url: &str| {
        sb.write_config(
            "shop",
            &format!("[mysql.app]\nurl = \"{url}\"\ncontainer = \"{container}\"\n"),
        );
    };
    assert!(db.url().contains("@127.0.0.1:"), "{}", db.url());
    for url in [db.url(), db.url().replace("@127.0.0.1:", "@db:")] {
        with(&url);
        let r = sb.run(&["backup"]);
        r.expect_code(1);
        assert!(
            r.stderr.contains(&format!("container `{container}`")),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains(db.password()));
    }
}

/// The server's InnoDB log sequence number (advanced by any write to any
/// database of the shared server).
fn lsn() -> u64 {
    use ::mysql::prelude::Queryable;
    common::mysql::admin()
        .query_first(
            "SELECT CAST(VARIABLE_VALUE AS UNSIGNED) FROM information_schema.GLOBAL_STATUS \
             WHERE VARIABLE_NAME = 'INNODB_LSN_CURRENT'",
        )
        .unwrap()
        .unwrap()
}

/// Waits (at most 60 s) until the server's LSN stood still for 2 s: the
/// other tests of this file write to the same server at the same time,
/// and InnoDB's purge goes on writing for seconds after them, so a pair
/// of backups started at a random moment rarely sees an unmoved LSN.
fn quiet() {
    let start = std::time::Instant::now();
    let mut last = lsn();
    let mut since = std::time::Instant::now();
    while since.elapsed() < std::time::Duration::from_secs(2)
        && start.elapsed() < std::time::Duration::from_secs(60)
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = lsn();
        if now != last {
            last = now;
            since = std::time::Instant::now();
        }
    }
}

#[test]
fn an_unchanged_database_reuses_its_dump_and_any_change_dumps_again() {
    let db = TempMysql::new();
    db.seed(40, "a1b2c3d4e5f6");
    let sb = sandbox(&db, "");
    let w = logging_wrappers();
    let dumps = || {
        std::fs::read_to_string(w.file("argv.log"))
            .unwrap_or_default()
            .lines()
            // Dumps of rows: the SQL dump's (a rows-v1 set's rows are read
            // by the counting session; the report's `reused`, measured by
            // the ledger, says none was read).
            .filter(|l| {
                l.starts_with("mariadb-dump ")
                    && l.contains("--single-transaction")
                    && !l.contains("--no-data")
            })
            .count()
    };
    let mut n = 0;
    let mut backup = || {
        n += 1;
        let name = format!("b{n}");
        let r = run_with(&sb, &w, &[], &["--json", "backup", "--name", &name]);
        r.expect_code(0);
        (name, reported_reused(&r.json(), "mysql.app"))
    };
    let (_, reused) = backup();
    assert!(!reused, "the first backup has nothing to reuse");

    // Unchanged: reused, and no dump runs. Other tests write to the same
    // server, which moves its log sequence number and rightly forbids the
    // shortcut: a pair whose LSN did not move at all, from before the
    // parent to after the child, must reuse.
    let mut seen = false;
    for _ in 0..6 {
        quiet();
        let before = lsn();
        backup(); // the parent
        let ran = dumps();
        let (name, reused) = backup();
        if reused {
            assert_eq!(dumps(), ran, "reused, but mariadb-dump ran");
            // Counted nowhere, the reused set's counts and migrations are
            // the parent's: they must be the database's.
            let m = manifest_of(&sb, &name);
            let r = &m["components"]["mysql.app"];
            assert_eq!(r["row_counts"], live_counts(&db), "{name}: {r}");
            assert_eq!(r["migrations"][0]["applied"][0], "a1b2c3d4e5f6", "{r}");
            seen = true;
            break;
        }
        assert_ne!(lsn(), before, "nothing was written, yet the dump ran");
    }
    assert!(seen, "an unchanged database was never reused");

    // An imported parent is never reused from (0038), even when its mark
    // agrees: export the last set, import it (now the newest set, so the
    // parent), back up. Only a pair whose LSN did not move proves it.
    let mut refused = false;
    for i in 0..6 {
        quiet();
        let before = lsn();
        let (parent, _) = backup();
        let dir = sb.path().join(format!("exported{i}"));
        sb.run(&["export", &parent, &dir.to_string_lossy()])
            .expect_code(0);
        sb.run(&[
            "import",
            &dir.to_string_lossy(),
            "--name",
            &format!("imp{i}"),
        ])
        .expect_code(0);
        let ran = dumps();
        let (name, reused) = backup();
        if lsn() != before {
            continue;
        }
        assert!(!reused, "{name} reused the dump of an imported parent");
        assert!(dumps() <= ran + 1, "{name}: more than one dump ran");
        refused = true;
        break;
    }
    assert!(refused, "no quiet window to test the imported parent in");

    // Reuse releases the table lock at once: the run pauses 3 s after the
    // decision, and a writer that waits at most 1 s for a lock gets it
    // well within the pause (held to the end, it would wait > 3 s). The
    // other tests' writes forbid reuse while they run: try until they end.
    let mut released = false;
    for i in 0..10 {
        if i > 0 {
            backup(); // a fresh parent: our write, or another test's, moved the LSN
        }
        let mut cmd = sb.command(bin(), sb.path(), Some(w.path()));
        cmd.args(["--json", "backup", "--name", &format!("held{i}")])
            .env("FAILPOINTS", "backup-mysql-reused=sleep(3000)")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let wrote = write_once_locked(&db, &mut child, i);
        let r = Run::from(child.wait_with_output().unwrap());
        r.expect_code(0);
        if reused_of(&r) {
            let waited = wrote.unwrap_or_else(|| panic!("no write got the lock during the run"));
            assert!(
                waited < Duration::from_millis(2500),
                "the lock was held {waited:?} after the reuse decision"
            );
            released = true;
            break;
        }
    }
    assert!(
        released,
        "no unchanged pair to test the lock's release with"
    );

    // Every change dumps again, and the new set holds it: an UPDATE that
    // keeps every row count, a definition-only change (a comment: MariaDB
    // 10.11 writes redo for every ALTER, measured ~1 KB, so the LSN decides
    // here; the tables digest is the second line, unit-tested in
    // `mysql/server.rs`), and a table of an engine without InnoDB's log.
    for (change, shows) in [
        (
            "UPDATE customers SET name = 'renamed-7' WHERE id = 7",
            "renamed-7",
        ),
        (
            "ALTER TABLE orders COMMENT = 'said-once'",
            "COMMENT='said-once'",
        ),
        (
            "CREATE TABLE notes (id INT PRIMARY KEY) ENGINE=Aria",
            "CREATE TABLE `notes`",
        ),
    ] {
        db.sql(change);
        let (name, reused) = backup();
        assert!(!reused, "reused after {change}");
        let dump = dump_text(&sb, &db, &name);
        assert!(dump.contains(shows), "{name} misses {shows}");
    }
    // A write to the Aria table moves no InnoDB LSN: only the engine check
    // keeps it from being reused, and the new dump holds the row.
    db.sql("INSERT INTO notes VALUES (4242)");
    let (name, reused) = backup();
    assert!(!reused, "a database with an Aria table was reused");
    let root = restic_restore(&sb.repo(), &name);
    // Not InnoDB: the SQL dump (decision 0046's rule), as every set before.
    let dump =
        std::fs::read_to_string(root.path().join(format!("mysql/app/{}.sql", db.name))).unwrap();
    assert!(dump.contains("(4242)"), "{name} misses the Aria row");
}

/// The text of the set `name`'s dump of `db`: the SQL dump, or a rows-v1
/// set's schema followed by every rows file.
fn dump_text(sb: &Sandbox, db: &TempMysql, name: &str) -> String {
    let root = restic_restore(&sb.repo(), name);
    let dir = root.path().join("mysql/app");
    if let Ok(sql) = std::fs::read(dir.join(format!("{}.sql", db.name))) {
        return String::from_utf8_lossy(&sql).into_owned();
    }
    let mut text = std::fs::read(dir.join(format!("{}.schema.sql", db.name))).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir.join(format!("{}.rows", db.name)))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        text.extend(std::fs::read(f).unwrap());
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The manifest of the set `name`.
fn manifest_of(sb: &Sandbox, name: &str) -> serde_json::Value {
    let root = restic_restore(&sb.repo(), name);
    serde_json::from_slice(&std::fs::read(root.path().join("stack-backup/manifest.json")).unwrap())
        .unwrap()
}

/// Exact row counts of `db`'s base tables, as the manifest writes them.
fn live_counts(db: &TempMysql) -> serde_json::Value {
    use ::mysql::prelude::Queryable;
    let mut c = db.client();
    let tables: Vec<String> = c
        .query(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'",
        )
        .unwrap();
    let mut counts = serde_json::Map::new();
    for t in tables {
        let n: i64 = c
            .query_first(format!("SELECT COUNT(*) FROM `{t}`"))
            .unwrap()
            .unwrap();
        counts.insert(t, n.into());
    }
    serde_json::Value::Object(counts)
}

/// Whether a backup's `--json` report says `mysql.app` was reused.
fn reused_of(r: &Run) -> bool {
    r.json()["components"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["component"] == "mysql.app" && c["reused"] == true)
}

/// Once the backup `child` holds its table lock (its counting session is
/// open), updates a row of `db` with `lock_wait_timeout = 1`, retrying
/// while `child` runs; how long after the lock was seen a write got in.
fn write_once_locked(db: &TempMysql, child: &mut std::process::Child, i: u32) -> Option<Duration> {
    use ::mysql::prelude::Queryable;
    let mut admin = common::mysql::admin();
    let sessions = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ? AND DB = ?";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: u64 = admin
            .exec_first(sessions, (&db.user, &db.name))
            .unwrap()
            .unwrap_or(0);
        if n >= 2 {
            break;
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let locked = Instant::now();
    let mut c = db.client();
    c.query_drop("SET SESSION lock_wait_timeout = 1").unwrap();
    while child.try_wait().unwrap().is_none() {
        let sql = format!("UPDATE customers SET name = 'during-{i}' WHERE id = 3");
        if c.query_drop(sql).is_ok() {
            return Some(locked.elapsed());
        }
    }
    None
}

/// A table with every column type rows-v1 encodes, and the values that
/// break naive text formats.
fn seed_every_type(db: &TempMysql) {
    db.sql(
        r#"CREATE TABLE every_type (
            id INT AUTO_INCREMENT PRIMARY KEY,
            ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, bi BIGINT, bu BIGINT UNSIGNED,
            de DECIMAL(30,10), ch CHAR(10), vc VARCHAR(100), tt TINYTEXT, tx TEXT,
            mt MEDIUMTEXT, lt LONGTEXT, la VARCHAR(20) CHARACTER SET latin1,
            bn BINARY(4), vb VARBINARY(64), tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB,
            d DATE, dt DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(2), y YEAR,
            js JSON,
            gv INT AS (ti + 1) VIRTUAL, gs VARCHAR(120) AS (CONCAT(vc, '!')) STORED
          ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
          SET SESSION time_zone = '+05:30';
          SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO,ALLOW_INVALID_DATES');
          INSERT INTO every_type (id) VALUES (0);
          INSERT INTO every_type (id) VALUES (NULL);
          INSERT INTO every_type (ti, si, mi, bi, bu, de, ch, vc, tt, tx, mt, lt, la, bn, vb, tb, bl, mb, lb,
                                  d, dt, ts, tm, y, js)
            VALUES (-128, 65535, -8388608, -9223372036854775808, 18446744073709551615,
                    -12345678901234567890.0123456789, '', 'NULL', '\\N', 'tab\there\nnew\\line\r\0end',
                    'ends with a backslash \\', '😀 ☃ 𝄞', 'é à ß', UNHEX('00FF5C0A'),
                    UNHEX('0001005C090A0D005C4E'), UNHEX('00'), UNHEX('5C'), '', UNHEX('0A0A'),
                    '0000-00-00', '2024-02-29 23:59:59.123456', '2038-01-19 03:14:07.999',
                    '-838:59:59.00', 2155, '{"a": "b\\n\\u0000"}');
          INSERT INTO every_type (d, dt) VALUES ('2024-02-31', '2023-04-31 12:00:00');
          INSERT INTO every_type (ti, vc, tx, bl, dt, ts)
            SELECT seq % 100, CONCAT('row\t', seq, '\n'), REPEAT(CONCAT('\\', seq, '\0'), 20),
                   UNHEX(MD5(seq)), '2020-01-01' + INTERVAL seq MINUTE, FROM_UNIXTIME(seq * 1000)
              FROM seq_1_to_2000;"#,
    );
}

/// `CHECKSUM TABLE … EXTENDED` of every base table of database `name`.
fn checksums(name: &str) -> Vec<(String, Option<u64>)> {
    use ::mysql::prelude::Queryable;
    let mut a = common::mysql::admin();
    let tables: Vec<String> = a
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY 1",
            (name,),
        )
        .unwrap();
    tables
        .into_iter()
        .map(|t| {
            let row: Option<(String, Option<u64>)> = a
                .query_first(format!("CHECKSUM TABLE `{name}`.`{t}` EXTENDED"))
                .unwrap();
            (t, row.and_then(|r| r.1))
        })
        .collect()
}

/// A `[client]` option file of the test admin, for stock `mariadb`.
fn admin_cnf(dir: &std::path::Path) -> std::path::PathBuf {
    let url = common::mysql::admin_url();
    let rest = url.split_once("://").unwrap().1;
    let (cred, host) = rest.rsplit_once('@').unwrap();
    let (user, pw) = cred.split_once(':').unwrap();
    let host = host.split('/').next().unwrap();
    let (host, port) = host.split_once(':').unwrap_or((host, "3306"));
    let path = dir.join("admin.cnf");
    std::fs::write(
        &path,
        format!("[client]\nuser={user}\npassword={pw}\nhost={host}\nport={port}\nprotocol=TCP\n"),
    )
    .unwrap();
    path
}

#[test]
fn rows_as_text_keep_every_supported_type_exact_through_restore_drill_and_export() {
    let db = TempMysql::new();
    db.seed(30, "a1b2c3d4e5f6");
    seed_every_type(&db);
    let before = db.digest();
    assert!(before.iter().all(|(_, sum)| sum != "none"), "{before:?}");
    let sb = sandbox(&db, "");
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    let m = manifest_of(&sb, "good");
    let r = &m["components"]["mysql.app"];
    assert_eq!(r["format"], "rows-v1", "{r}");
    assert_eq!(r["row_counts"]["every_type"], 2004, "{r}");
    let f = r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["table"] == "every_type")
        .unwrap();
    // Generated columns are computed again by the server, not loaded.
    let cols: Vec<&str> = f["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(cols.contains(&"js") && !cols.contains(&"gv") && !cols.contains(&"gs"));
    // The special values, as LOAD DATA reads them: NULL is \N, the text
    // `NULL` and `\N` stay text, bytes are escaped.
    let root = restic_restore(&sb.repo(), "good");
    let rows = std::fs::read(root.path().join(f["path"].as_str().unwrap())).unwrap();
    let text = String::from_utf8_lossy(&rows);
    let third = text.lines().nth(2).unwrap();
    assert!(third.starts_with("2\t-128\t65535\t"), "{third}");
    assert!(
        third.contains("\tNULL\t\\\\N\ttab\\there\\nnew\\\\line\\r\\0end\t"),
        "{third}"
    );
    assert!(
        text.lines().next().unwrap().starts_with("0\t\\N\t\\N\t"),
        "{text:.200}"
    );

    wreck(&db);
    db.sql("DELETE FROM every_type WHERE id < 100; UPDATE every_type SET ts = NULL");
    assert_ne!(db.digest(), before);
    sb.run(&["restore", "good", "--yes"]).expect_code(0);
    assert_eq!(db.digest(), before);
    assert!(db.leftovers().is_empty(), "{:?}", db.leftovers());

    let d = sb.run(&["drill", "good"]);
    d.expect_code(0);

    // The export loads with stock `mariadb` by the commands it comes with.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("export");
    sb.run(&["export", "good", &dir.to_string_lossy()])
        .expect_code(0);
    let howto = std::fs::read_to_string(dir.join("MANIFEST.md")).unwrap();
    // The load statements are in a file of the export, not pasted into a
    // shell (no name can end a here-document and run a command).
    assert!(
        howto.contains("mariadb --local-infile=1 ")
            && howto.contains(" < database/app.mysql.load.sql\n")
            && !howto.contains("<<")
            && !howto.contains("LOAD DATA LOCAL"),
        "{howto}"
    );
    assert!(howto.contains("mariadb --sandbox"), "{howto}");
    let sums = std::fs::read_to_string(dir.join("CHECKSUM.sha256")).unwrap();
    assert!(sums.contains("  database/app.mysql.load.sql\n"), "{sums}");
    let copy = format!("{}__export", db.name);
    let cnf = admin_cnf(out.path());
    let mariadb = |args: &[&str], stdin: std::process::Stdio| {
        let o = std::process::Command::new("mariadb")
            .arg(format!("--defaults-extra-file={}", cnf.display()))
            .args(args)
            .current_dir(&dir)
            .stdin(stdin)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    mariadb(
        &["-e", &format!("CREATE DATABASE `{copy}`")],
        std::process::Stdio::null(),
    );
    let schema = std::fs::File::open(dir.join("database/app.mysql.schema.sql")).unwrap();
    mariadb(&["--sandbox", &copy], schema.into());
    let load = std::fs::File::open(dir.join("database/app.mysql.load.sql")).unwrap();
    mariadb(&["--local-infile=1", &copy], load.into());
    let original: Vec<_> = checksums(&db.name);
    assert_eq!(checksums(&copy), original);
}

#[test]
fn a_table_of_a_type_not_proven_exact_keeps_the_sql_dump_which_restores_as_before() {
    let db = TempMysql::new();
    db.seed(40, "a1b2c3d4e5f6");
    db.sql("ALTER TABLE customers ADD score DOUBLE; UPDATE customers SET score = id / 3");
    let before = db.digest();
    let sb = sandbox(&db, "");
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    let m = manifest_of(&sb, "good");
    let r = &m["components"]["mysql.app"];
    // The layout of every set before 0046: no format, one SQL dump.
    assert!(r.get("format").is_none() && r.get("rows").is_none(), "{r}");
    assert!(dump_text(&sb, &db, "good").contains("INSERT INTO `customers`"));
    wreck(&db);
    sb.run(&["restore", "good", "--yes"]).expect_code(0);
    assert_eq!(db.digest(), before);
    assert!(db.leftovers().is_empty(), "{:?}", db.leftovers());
    sb.run(&["drill", "good"]).expect_code(0);
}

/// An ENUM's error value (index 0, read as `''`) in a column without a
/// `''` member: as rows it fails every load (a warning); the SQL dump
/// restores it exactly. (With a `''` member, or a SET's `''` member, the
/// text is ambiguous and `mariadb-dump` itself does not round-trip it.)
#[test]
fn an_enum_error_value_keeps_the_sql_dump_and_restores_exactly() {
    let db = TempMysql::new();
    db.seed(45, "a1b2c3d4e5f6");
    db.sql(
        "CREATE TABLE odd (id INT PRIMARY KEY, e ENUM('a', 'b'), s SET('x', 'y')) ENGINE=InnoDB;
         SET SESSION sql_mode = '';
         INSERT INTO odd VALUES (1, 'zzz', 'x,y'), (2, 'a', ''), (3, 'b', 'y');",
    );
    let before = db.digest();
    let sb = sandbox(&db, "");
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    let m = manifest_of(&sb, "good");
    let r = &m["components"]["mysql.app"];
    assert!(r.get("format").is_none() && r.get("rows").is_none(), "{r}");
    assert!(dump_text(&sb, &db, "good").contains("INSERT INTO `odd`"));
    wreck(&db);
    db.sql("UPDATE odd SET e = 'a', s = 'x'");
    assert_ne!(db.digest(), before);
    sb.run(&["restore", "good", "--yes"]).expect_code(0);
    assert_eq!(db.digest(), before);
    sb.run(&["drill", "good"]).expect_code(0);
}

/// A table whose name spans lines (MariaDB accepts it) keeps the SQL dump:
/// its name would be a line of the export's load script and MANIFEST.md.
#[test]
fn a_name_with_a_control_character_keeps_the_sql_dump() {
    let db = TempMysql::new();
    db.seed(46, "a1b2c3d4e5f6");
    db.sql(
        "CREATE TABLE `x\nSTACK_BACKUP_ROWS_END\ntouch pwned #` (id INT PRIMARY KEY) ENGINE=InnoDB;
         INSERT INTO `x\nSTACK_BACKUP_ROWS_END\ntouch pwned #` VALUES (1), (2);",
    );
    let before = db.digest();
    let sb = sandbox(&db, "");
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    let m = manifest_of(&sb, "good");
    let r = &m["components"]["mysql.app"];
    assert!(r.get("format").is_none() && r.get("rows").is_none(), "{r}");
    wreck(&db);
    sb.run(&["restore", "good", "--yes"]).expect_code(0);
    assert_eq!(db.digest(), before);
}

#[test]
fn a_rows_read_that_breaks_writes_no_set_and_leaves_nothing_locked() {
    let db = TempMysql::new();
    db.seed(50, "a1b2c3d4e5f6");
    let sb = sandbox(&db, "");
    let w = Wrappers::new();
    let r = run_with(
        &sb,
        &w,
        &[("FAILPOINTS", "backup-mysql-rows=return")],
        &["backup", "--name", "broken"],
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("broken (fault point)"), "{}", r.stderr);
    assert_eq!(restic_snapshot_count(&sb.repo()), 0);
    db.sql("SET SESSION lock_wait_timeout = 2; INSERT INTO customers (name) VALUES ('after')");
    // Without the fault, the same database backs up.
    sb.run(&["backup", "--name", "good"]).expect_code(0);
}

#[test]
fn a_rows_set_is_refused_without_local_infile_and_a_short_load_changes_nothing() {
    let db = TempMysql::new();
    db.seed(60, "a1b2c3d4e5f6");
    let sb = sandbox(&db, "");
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    wreck(&db);
    let wrecked = db.digest();
    let w = Wrappers::new();
    // The server's local_infile OFF: refused in preflight (exit 4), the
    // variable named, nothing touched.
    for cmd in [&["restore", "good", "--yes"][..], &["drill", "good"][..]] {
        let r = run_with(
            &sb,
            &w,
            &[("FAILPOINTS", "mysql-local-infile-off=return(0)")],
            cmd,
        );
        assert_eq!(r.code, 4, "{cmd:?}: {r:?}");
        assert!(r.stderr.contains("local_infile"), "{}", r.stderr);
        assert_eq!(db.digest(), wrecked, "{cmd:?}");
        assert!(db.leftovers().is_empty(), "{:?}", db.leftovers());
    }
    // A table that loads fewer rows than the set holds fails the fill,
    // before the swap: the live tables stay, nothing is left beside.
    let r = run_with(
        &sb,
        &w,
        &[("FAILPOINTS", "mysql-load-rows=return(1)")],
        &["restore", "good", "--yes"],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("the set holds"), "{}", r.stderr);
    assert_eq!(db.digest(), wrecked);
    assert!(db.leftovers().is_empty(), "{:?}", db.leftovers());
    // Without the faults it restores.
    sb.run(&["restore", "good", "--yes"]).expect_code(0);
}
