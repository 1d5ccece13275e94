//! `backup` and `dump` against real PostgreSQL, Redis, Docker Engine, git,
//! and stock restic reading the result.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

struct Stack {
    sb: Sandbox,
    db1: TempDb,
    db2: TempDb,
    redis: RedisServer,
    img1: TempImage,
    img2: TempImage,
    vol: TempVolume,
    commit: String,
}

fn stack_config(s: &Stack, extra_pg: &str) -> String {
    let app = s.sb.path().join("app");
    let media = s.sb.path().join("media");
    format!(
        r#"
[postgres.main]
url = "{}"
{extra_pg}

[postgres.analytics]
url = "{}"

[redis.sessions]
url = "{}"
role = "data"

[docker]
images = ["{}", "{}"]
volumes = ["{}"]

[git]
path = "{}"

[paths.media]
path = "{}"
"#,
        s.db1.url(),
        s.db2.url(),
        s.redis.url(),
        s.img1.reference,
        s.img2.reference,
        s.vol.name,
        app.display(),
        media.display()
    )
}

fn stack() -> Stack {
    let sb = Sandbox::new();
    let db1 = TempDb::new();
    seed_db(&db1, 300, "a1b2c3d4e5f6");
    let db2 = TempDb::new();
    seed_db(&db2, 50, "ffff0000aaaa");
    let redis = RedisServer::start();
    let mut c = redis.client().get_connection().unwrap();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("session:{i}"))
            .arg(format!("user-{i}"))
            .query::<()>(&mut c)
            .unwrap();
    }
    let img1 = TempImage::build("web v1");
    let img2 = TempImage::build("worker v1");
    let vol = TempVolume::new();
    let mp = vol.mountpoint();
    std::fs::write(mp.join("avatar.png"), b"\x89PNG fake image").unwrap();
    std::fs::create_dir_all(mp.join("docs")).unwrap();
    std::fs::write(mp.join("docs/invoice.pdf"), "invoice 1").unwrap();
    let commit = git_repo(&sb.path().join("app"));
    let media = sb.path().join("media");
    std::fs::create_dir_all(media.join("2026")).unwrap();
    for i in 0..20 {
        std::fs::write(
            media.join(format!("2026/photo-{i}.jpg")),
            format!("photo {i}"),
        )
        .unwrap();
    }
    let s = Stack {
        sb,
        db1,
        db2,
        redis,
        img1,
        img2,
        vol,
        commit,
    };
    s.sb.write_config("shop", &stack_config(&s, ""));
    s.sb.init();
    s
}

#[test]
fn a_full_stack_backup_is_one_snapshot_that_stock_restic_restores_and_verifies() {
    let s = stack();
    let r =
        s.sb.run(&["--json", "backup", "--name", "before-migration"]);
    r.expect_code(0);
    let report = r.json();
    assert_eq!(report["set"]["name"], "before-migration");
    assert_eq!(report["set"]["tier"], "backups");
    assert_eq!(
        report["components"].as_array().unwrap().len(),
        8,
        "{report}"
    );

    // Exactly one snapshot, tagged for stock restic.
    let snaps = restic(
        &s.sb.repo(),
        &["snapshots", "--json", "--tag", "tier:backups"],
    );
    snaps.expect_code(0);
    let snaps: serde_json::Value = serde_json::from_str(&snaps.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    let tags = snaps[0]["tags"].to_string();
    for t in [
        "stack-backup",
        "stack:shop",
        "tier:backups",
        "name:before-migration",
    ] {
        assert!(tags.contains(t), "{tags}");
    }

    // Stock restic restores it and every checksum verifies.
    let out = restic_restore(&s.sb.repo(), "before-migration");
    let root = out.path();
    let check = sha256sum_check(root);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    let sums = std::fs::read_to_string(root.join("stack-backup/CHECKSUM.sha256")).unwrap();
    for needle in [
        format!("postgres/main/{}.dump", s.db1.name),
        format!("postgres/analytics/{}.dump", s.db2.name),
        "redis/sessions/dump.rdb".to_string(),
        "git/HEAD_COMMIT".to_string(),
        format!("docker/volumes/{}/docs/invoice.pdf", s.vol.name),
        "paths/media/2026/photo-7.jpg".to_string(),
        "stack-backup/manifest.json".to_string(),
    ] {
        assert!(
            sums.contains(&needle),
            "{needle} not in CHECKSUM.sha256:\n{sums}"
        );
    }
    // The two images, saved together (decision 0045).
    assert_eq!(sums.matches("docker/saved/").count(), 1, "{sums}");
    assert_eq!(sums.matches("docker/images/").count(), 0, "{sums}");
    assert_eq!(
        std::fs::read_to_string(root.join("git/HEAD_COMMIT"))
            .unwrap()
            .trim(),
        s.commit
    );
    let rdb = std::fs::read(root.join("redis/sessions/dump.rdb")).unwrap();
    assert!(rdb.starts_with(b"REDIS"));
    let vol_file = root.join(format!("docker/volumes/{}/avatar.png", s.vol.name));
    assert_eq!(std::fs::read(vol_file).unwrap(), b"\x89PNG fake image");

    // The dump loads with plain pg_restore into a new database, identical.
    let fresh = TempDb::new();
    let restore = std::process::Command::new(pg_bin_dir().join("pg_restore"))
        .args(["--exit-on-error", "--no-owner", "-d", &fresh.url()])
        .arg(root.join(format!("postgres/main/{}.dump", s.db1.name)))
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    for table in ["customers", "orders", "alembic_version"] {
        assert_eq!(
            table_digest(&fresh.name, table),
            table_digest(&s.db1.name, table),
            "{table}"
        );
    }

    // The manifest records versions, row counts, migrations and image IDs.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("stack-backup/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["schema"], 1);
    let pg = &m["components"]["postgres.main"];
    assert_eq!(pg["kind"], "postgres");
    assert_eq!(pg["row_counts"]["public.customers"], 300);
    assert_eq!(pg["row_counts"]["public.orders"], 900);
    assert_eq!(pg["migrations"][0]["tool"], "alembic");
    assert_eq!(pg["migrations"][0]["applied"][0], "a1b2c3d4e5f6");
    assert!(pg["pg_dump_version"].as_str().unwrap().contains("pg_dump"));
    assert!(pg["server_version"].as_str().unwrap().len() >= 2);
    let img = &m["components"][format!("docker.image.{}", s.img1.reference)];
    assert_eq!(img["id"], s.img1.id());
    assert_eq!(m["components"]["redis.sessions"]["keys"], 50);
    assert_eq!(m["git"]["commit"], s.commit.as_str());
    let tar = std::process::Command::new("tar")
        .arg("-tf")
        .arg(root.join(img["archive"].as_str().unwrap()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tar.stdout).contains("manifest.json"),
        "not a docker save tar"
    );

    // list --json and show.
    let list = s.sb.run(&["--json", "list"]);
    list.expect_code(0);
    let list = list.json();
    assert_eq!(list[0]["name"], "before-migration");
    assert_eq!(list[0]["git_commit"], s.commit.as_str());
    assert!(list[0]["id"].as_str().unwrap().len() == 64);
    assert!(list[0]["time"].as_str().is_some());
    assert_eq!(list[0]["components"].as_array().unwrap().len(), 8);
    let show = s.sb.run(&["show", "before-migration"]);
    show.expect_code(0);
    assert!(
        show.stdout
            .contains("stack-backup restore before-migration"),
        "{}",
        show.stdout
    );
    let by_id = s.sb.run(&["show", &list[0]["id"].as_str().unwrap()[..8]]);
    by_id.expect_code(0);
    assert_eq!(by_id.stdout, show.stdout);

    // Names are unique.
    let again = s.sb.run(&["backup", "--name", "before-migration"]);
    again.expect_code(4);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(restic_snapshot_count(&s.sb.repo()), 1);
}

/// A pg_dump that writes part of a dump and then fails (exit 1, or killed).
fn failing_pg_dump(w: &Wrappers, how: &str) {
    let real = pg_bin_dir();
    w.script(
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {real}/pg_dump --version; fi\n\
             {real}/pg_dump \"$@\" | head -c 3000\n{how}",
            real = real.display()
        ),
    );
    w.script(
        "pg_dumpall",
        &format!("exec {}/pg_dumpall \"$@\"", real.display()),
    );
}

#[test]
fn a_failing_or_killed_pg_dump_fails_the_backup_and_leaves_no_snapshot() {
    let s = stack();
    s.sb.run(&["backup", "--name", "good"]).expect_code(0);
    let before = restic_snapshot_count(&s.sb.repo());
    for (i, how) in ["exit 1", "kill -9 $$"].iter().enumerate() {
        let w = Wrappers::new();
        failing_pg_dump(&w, how);
        s.sb.write_config(
            "shop",
            &stack_config(&s, &format!("bin-dir = \"{}\"", w.path().display())),
        );
        let name = format!("broken-{i}");
        let r = s.sb.run(&["backup", "--name", &name]);
        r.expect_code(1);
        assert!(r.stderr.contains("postgres.main"), "{}", r.stderr);
        assert!(r.stderr.contains("pg_dump failed"), "{}", r.stderr);
        assert!(r.stderr.contains("left no backup set"), "{}", r.stderr);
        assert_eq!(
            restic_snapshot_count(&s.sb.repo()),
            before,
            "a snapshot was left behind"
        );
        let list = s.sb.run(&["--json", "list"]).json();
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["name"], "good");
    }
    // The earlier set is untouched and still verifies.
    let out = restic_restore(&s.sb.repo(), "good");
    sha256sum_check(out.path()).expect_code(0);
    let check = restic(&s.sb.repo(), &["check"]);
    check.expect_code(0);
}

#[test]
fn unchanged_images_are_not_saved_again() {
    let mut s = stack();
    let w = Wrappers::new();
    let log = w.file("saves.log");
    w.script(
        "docker",
        &format!(
            "if [ \"$1\" = save ]; then echo \"$@\" >> {}; fi\nexec {} \"$@\"",
            log.display(),
            which("docker")
        ),
    );
    s.sb.env.push((
        "PATH".into(),
        format!("{}:{}", w.path().display(), std::env::var("PATH").unwrap()),
    ));
    let saves = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };

    let first = s.sb.run(&["--json", "backup", "--name", "one"]);
    first.expect_code(0);
    // Both in one `docker save`, by ID (decision 0045).
    assert_eq!(saves(), 1);
    let line = std::fs::read_to_string(&log).unwrap();
    assert!(
        line.contains(&s.img1.id()) && line.contains(&s.img2.id()),
        "{line}"
    );

    let second = s.sb.run(&["--json", "backup", "--name", "two"]);
    second.expect_code(0);
    assert_eq!(saves(), 1, "docker save ran again for unchanged images");
    let report = second.json();
    let comps = report["components"].as_array().unwrap();
    for c in comps.iter().filter(|c| {
        c["component"]
            .as_str()
            .unwrap()
            .starts_with("docker.image.")
    }) {
        assert_eq!(c["reused"], true, "{c}");
    }
    let added = report["data_added"].as_u64().unwrap();
    let total = report["total_bytes"].as_u64().unwrap();
    assert!(
        added < total / 2,
        "unchanged backup added {added} of {total} bytes"
    );

    // The reused image tars still restore and verify.
    let out = restic_restore(&s.sb.repo(), "two");
    sha256sum_check(out.path()).expect_code(0);

    // A rebuilt image (new ID) is saved again; the other is not.
    s.img1 = TempImage::build("web v2");
    s.sb.write_config("shop", &stack_config(&s, ""));
    s.sb.run(&["backup", "--name", "three"]).expect_code(0);
    assert_eq!(saves(), 2);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.lines().last().unwrap().contains(&s.img1.reference),
        "{log_text}"
    );
}

#[test]
fn secrets_appear_in_no_manifest_config_log_or_argv() {
    let s = stack();
    let w = Wrappers::new();
    let argv_log = w.file("argv.log");
    let real = pg_bin_dir();
    for tool in ["pg_dump", "pg_dumpall"] {
        w.script(
            tool,
            &format!(
                "echo \"{tool} $*\" >> {log}\nexec {real}/{tool} \"$@\"",
                log = argv_log.display(),
                real = real.display()
            ),
        );
    }
    // The database URL carries the application role's password in the
    // config.
    let db_password = s.db1.password().to_string();
    s.sb.write_config(
        "shop",
        &stack_config(&s, &format!("bin-dir = \"{}\"", w.path().display())),
    );
    assert!(std::fs::read_to_string(s.sb.config())
        .unwrap()
        .contains(&db_password));
    let r =
        s.sb.run(&["-vv", "--json", "backup", "--name", "secret-check"]);
    r.expect_code(0);
    let secrets = [db_password.as_str(), PASSWORD];
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(argv.contains("pg_dump --format=custom"), "{argv}");
    for secret in secrets {
        assert!(!argv.contains(secret), "secret in child argv: {argv}");
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "secret in output"
        );
    }
    let out = restic_restore(&s.sb.repo(), "secret-check");
    for f in [
        "manifest.json",
        "MANIFEST.md",
        "stack-backup.toml",
        "CHECKSUM.sha256",
    ] {
        let text = std::fs::read_to_string(out.path().join("stack-backup").join(f)).unwrap();
        for secret in secrets {
            assert!(!text.contains(secret), "secret in {f}");
        }
    }
    let stored =
        std::fs::read_to_string(out.path().join("stack-backup/stack-backup.toml")).unwrap();
    assert!(stored.contains(":***@127.0.0.1"), "{stored}");
    for cmd in [
        &["list"][..],
        &["show", "secret-check"][..],
        &["doctor"][..],
    ] {
        let r = s.sb.run(cmd);
        for secret in secrets {
            assert!(
                !r.stdout.contains(secret) && !r.stderr.contains(secret),
                "secret in {cmd:?}"
            );
        }
    }
}

#[test]
fn too_little_free_space_is_refused_before_anything_is_written() {
    let s = stack();
    let text = std::fs::read_to_string(s.sb.config())
        .unwrap()
        .replace("\"1MiB\"", "\"100PiB\"");
    std::fs::write(s.sb.config(), text).unwrap();
    let r = s.sb.run(&["backup"]);
    r.expect_code(4);
    assert!(
        r.stderr.contains("not enough free space") && r.stderr.contains("free"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("needed"), "{}", r.stderr);
    assert_eq!(restic_snapshot_count(&s.sb.repo()), 0);
}

#[test]
fn an_unreachable_component_fails_the_backup_naming_it() {
    let mut s = stack();
    s.redis.stop();
    let r = s.sb.run(&["backup"]);
    r.expect_code(1);
    assert!(r.stderr.contains("redis.sessions"), "{}", r.stderr);
    assert_eq!(restic_snapshot_count(&s.sb.repo()), 0);
    // --only leaves it out; an unknown component is a usage error.
    s.sb.run(&["backup", "--only", "postgres", "git"])
        .expect_code(0);
    let r = s.sb.run(&["backup", "--only", "mysql"]);
    r.expect_code(2);
    assert!(r.stderr.contains("no such component"), "{}", r.stderr);
}

#[test]
fn dump_takes_a_data_tier_set_of_the_databases_only() {
    let s = stack();
    let r = s.sb.run(&["--json", "dump", "--name", "nightly"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v["set"]["tier"], "data");
    let comps: Vec<&str> = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert_eq!(
        comps,
        ["postgres.analytics", "postgres.main", "redis.sessions"]
    );
    let snaps = restic(&s.sb.repo(), &["snapshots", "--json", "--tag", "tier:data"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&snaps.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(v["set"]["git_commit"], s.commit.as_str());
}

#[test]
fn volume_users_are_stopped_during_the_copy_and_started_again_even_on_failure() {
    let s = stack();
    let cname = unique("sbt-user");
    docker(&[
        "run",
        "-d",
        "--name",
        &cname,
        "-v",
        &format!("{}:/data", s.vol.name),
        &base_image(),
        "sleep",
        "600",
    ])
    .expect_code(0);
    let running = || {
        docker(&["inspect", "--format", "{{.State.Running}}", &cname])
            .stdout
            .trim()
            == "true"
    };
    assert!(running());
    let base = stack_config(&s, "").replace("[docker]", "[docker]\nstop-containers = true");
    s.sb.write_config("shop", &base);
    let r = s.sb.run(&["--json", "backup", "--name", "stopped"]);
    r.expect_code(0);
    assert!(running(), "container was not started again");
    let out = restic_restore(&s.sb.repo(), "stopped");
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("stack-backup/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        m["components"][format!("docker.volume.{}", s.vol.name)]["stopped_containers"][0],
        cname.as_str()
    );

    // A failing backup starts it again too.
    let w = Wrappers::new();
    failing_pg_dump(&w, "exit 1");
    let failing = base.replacen(
        "\n\n[postgres.analytics]",
        &format!(
            "\nbin-dir = \"{}\"\n\n[postgres.analytics]",
            w.path().display()
        ),
        1,
    );
    s.sb.write_config("shop", &failing);
    s.sb.run(&["backup", "--name", "fails"]).expect_code(1);
    assert!(running(), "container left stopped after a failed backup");

    // A restore of the volume stops it too (journaled); killed after the
    // swap and the container removed meanwhile, `--abort` still puts the
    // original tree back: a container that is gone is nothing to start.
    s.sb.write_config("shop", &base);
    std::fs::write(
        s.vol.mountpoint().join("avatar.png"),
        "changed since the set",
    )
    .unwrap();
    let before = dir_state(&s.vol.mountpoint(), |p| {
        stack_backup_core::ledger::sha256_hex(&std::fs::read(p).unwrap_or_default())
    });
    let mut cmd = s.sb.command(bin(), s.sb.path(), None);
    cmd.args([
        "restore",
        "stopped",
        "--only",
        &format!("docker.volume.{}", s.vol.name),
        "--yes",
    ])
    .env("FAILPOINTS", "restore-tree-swapped=return(kill)");
    let r = Run::from(cmd.output().unwrap());
    assert_eq!(r.code, -1, "not killed: {r:?}");
    docker(&["rm", "-f", &cname]).expect_code(0);
    s.sb.run(&["restore", "--abort"]).expect_code(0);
    let after = dir_state(&s.vol.mountpoint(), |p| {
        stack_backup_core::ledger::sha256_hex(&std::fs::read(p).unwrap_or_default())
    });
    assert_eq!(after, before);
}

#[test]
fn a_killed_backup_leaves_no_set_and_the_next_backup_cleans_up() {
    let s = stack();
    let w = Wrappers::new();
    let started = w.file("started");
    let real = pg_bin_dir();
    w.script(
        "pg_dump",
        &format!(
            "if [ \"$1\" = --version ]; then exec {real}/pg_dump --version; fi\ntouch {started}\n{real}/pg_dump \"$@\"\nsleep 30",
            real = real.display(),
            started = started.display()
        ),
    );
    w.script(
        "pg_dumpall",
        &format!("exec {}/pg_dumpall \"$@\"", real.display()),
    );
    s.sb.write_config(
        "shop",
        &stack_config(&s, &format!("bin-dir = \"{}\"", w.path().display())),
    );
    let mut child = std::process::Command::new(bin())
        .current_dir(s.sb.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("STACK_BACKUP_PASSWORD", PASSWORD)
        .args(["backup", "--name", "killed"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "pg_dump never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::process::Command::new("pkill")
        .args(["-f", &w.path().to_string_lossy()])
        .status();

    let list = s.sb.run(&["--json", "list"]);
    list.expect_code(0);
    assert_eq!(list.json(), serde_json::json!([]));
    // The next backup works and leaves exactly one snapshot.
    s.sb.write_config("shop", &stack_config(&s, ""));
    s.sb.run(&["backup", "--name", "after-kill"]).expect_code(0);
    assert_eq!(restic_snapshot_count(&s.sb.repo()), 1);
    restic(&s.sb.repo(), &["check"]).expect_code(0);
    assert!(Path::new(&s.sb.repo()).exists());
}

/// The cluster's WAL position and next transaction ID: what moves when
/// anything at all is written, by any test sharing the server.
fn cluster_mark() -> String {
    pg_client("postgres")
        .query_one(
            "SELECT pg_current_wal_lsn()::text || ' ' || txid_current_snapshot()::text",
            &[],
        )
        .unwrap()
        .get(0)
}

/// Waits (at most 60 s) until nothing was written to the cluster for 2 s.
fn pg_quiet() {
    let start = Instant::now();
    let mut last = cluster_mark();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        let now = cluster_mark();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// A sandbox, initialised, whose stack `stack` is database `db` alone.
fn pg_sandbox(stack: &str, db: &TempDb) -> Sandbox {
    let sb = Sandbox::new();
    sb.write_config(stack, &format!("[postgres.main]\nurl = \"{}\"\n", db.url()));
    sb.init();
    sb
}

/// Every entry in the repository's `locks/` (a backend's temporary file
/// of a lock being written counts too).
fn lock_entries(sb: &Sandbox) -> usize {
    std::fs::read_dir(sb.repo().join("locks"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn pg_record(sb: &Sandbox, set: &str) -> serde_json::Value {
    let out = restic_restore(&sb.repo(), set);
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.path().join("stack-backup/manifest.json")).unwrap(),
    )
    .unwrap();
    m["components"]["postgres.main"].clone()
}

fn live_counts(db: &TempDb) -> serde_json::Value {
    let mut c = db.client();
    let mut counts = serde_json::Map::new();
    for t in ["alembic_version", "customers", "orders"] {
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .unwrap()
            .get(0);
        counts.insert(format!("public.{t}"), n.into());
    }
    serde_json::Value::Object(counts)
}

#[test]
fn an_unchanged_postgres_database_reuses_its_dump_and_any_change_dumps_again() {
    let db = TempDb::seeded(300, "9f8e7d6c5b4a");
    sql(&db, "CREATE SEQUENCE tickets; SELECT nextval('tickets');");
    let sb = pg_sandbox("pgmark", &db);
    let mut n = 0;
    let mut backup = || {
        n += 1;
        let name = format!("b{n}");
        let r = sb.run(&["--json", "backup", "--name", &name]);
        r.expect_code(0);
        (name, reported_reused(&r.json(), "postgres.main"))
    };
    assert!(!backup().1, "the first backup has nothing to reuse");

    // Unchanged: reused. Other tests write to the same cluster, which
    // rightly forbids the shortcut (any transaction ID or WAL anywhere):
    // a pair with nothing written from before the parent to after the
    // child must reuse.
    let mut reused_set = None;
    for _ in 0..8 {
        pg_quiet();
        let before = cluster_mark();
        backup();
        let (name, reused) = backup();
        if reused {
            // Counted nowhere, the reused set's counts and migrations are
            // the parent's: they must be the database's.
            let r = pg_record(&sb, &name);
            assert_eq!(r["row_counts"], live_counts(&db), "{name}: {r}");
            assert_eq!(r["migrations"][0]["applied"][0], "9f8e7d6c5b4a", "{r}");
            // Nothing written anywhere during the pair: the child's mark
            // stands (one moved during its run is dropped, rightly).
            if cluster_mark() == before {
                assert!(r["mark"]["snapshot"].is_string(), "{name}: {r}");
            }
            reused_set = Some(name);
            break;
        }
        assert_ne!(
            cluster_mark(),
            before,
            "nothing was written, yet the dump ran"
        );
    }
    let reused_set = reused_set.expect("an unchanged database was never reused");

    // A sequence advanced (no transaction ID, and mostly no WAL) and a
    // row written: each dumps again, whatever else the cluster does.
    sql(&db, "SELECT nextval('tickets')");
    assert!(!backup().1, "a sequence moved, yet the dump was reused");
    sql(&db, "UPDATE customers SET note = 'changed' WHERE id = 7");
    assert!(!backup().1, "a row changed, yet the dump was reused");

    // A database written during the dump: the set keeps no mark (it would
    // describe the state before the dump, not what the dump holds).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, mut c) = (stop.clone(), db.client());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                c.batch_execute("SELECT nextval('tickets')").unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let (moving, _) = backup();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    let r = pg_record(&sb, &moving);
    assert!(r.get("mark").is_none(), "{moving} kept a mark: {r}");

    // The reused set restores the database it stood for.
    let mut c = db.client();
    c.batch_execute("UPDATE customers SET note = repeat('x', 7) WHERE id = 7")
        .unwrap();
    let want = (
        table_digest(&db.name, "customers"),
        table_digest(&db.name, "orders"),
    );
    c.batch_execute("DELETE FROM orders; SELECT setval('tickets', 5000)")
        .unwrap();
    drop(c);
    sb.run(&["restore", &reused_set, "--yes"]).expect_code(0);
    assert_eq!(
        (
            table_digest(&db.name, "customers"),
            table_digest(&db.name, "orders")
        ),
        want
    );
    let last: i64 = db
        .client()
        .query_one("SELECT last_value FROM tickets", &[])
        .unwrap()
        .get(0);
    assert_eq!(last, 1, "the sequence as the reused set recorded it");
}

#[test]
fn a_lock_raced_while_it_settles_drops_the_plan_and_plans_again() {
    // A holder that writes its lock while ours settles (simulated once by
    // the fault point): the plan made meanwhile goes (its snapshot and
    // table locks with it), the backup waits as restic's protocol wants,
    // plans again and finishes with the database as it is then.
    let db = TempDb::seeded(40, "0a1b2c3d4e5f");
    let mut sb = pg_sandbox("raced", &db);
    sb.env
        .push(("FAILPOINTS".into(), "repo-lock-raced=1*return".into()));
    let r = sb.run(&["-v", "--json", "backup", "--name", "raced"]);
    sb.env.pop();
    r.expect_code(0);
    assert!(
        r.stderr
            .contains("the repository is locked by another process"),
        "{}",
        r.stderr
    );
    let rec = pg_record(&sb, "raced");
    assert_eq!(rec["row_counts"]["public.customers"], 40, "{rec}");
    assert_eq!(lock_entries(&sb), 0, "a lock file stayed behind");
    let out = restic_restore(&sb.repo(), "raced");
    sha256sum_check(out.path()).expect_code(0);
}

#[test]
fn a_backup_that_finds_the_repository_locked_plans_again_after_the_wait() {
    // The plan runs while the repository lock is being taken (decision
    // 0050). An exclusive holder of another process (a prune whose local
    // lock is elsewhere, as another host's would be) is found only then:
    // the plan made meanwhile goes, and the set holds the database and the
    // code's commit as they are once the holder is gone, not as they were
    // while it held the lock.
    let db = TempDb::seeded(40, "6f7a8b9c0d1e");
    let sb = Sandbox::new();
    let app = sb.path().join("app");
    git_repo(&app);
    sb.write_config(
        "busy",
        &format!(
            "[postgres.main]\nurl = \"{}\"\n\n[git]\npath = \"{}\"\n",
            db.url(),
            app.display()
        ),
    );
    sb.init();
    let elsewhere = tempfile::tempdir().unwrap();
    let spawn = |args: &[&str], failpoints: &str, state: Option<&Path>| {
        let mut cmd = sb.command(bin(), sb.path(), None);
        cmd.args(args)
            .env("FAILPOINTS", failpoints)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(state) = state {
            cmd.env("STACK_BACKUP_STATE_DIR", state);
        }
        cmd.spawn().unwrap()
    };
    let prune = spawn(
        &["prune", "--apply"],
        "prune-locked=sleep(8000)",
        Some(elsewhere.path()),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock_entries(&sb) == 0 {
        assert!(Instant::now() < deadline, "the prune took no lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut backup = spawn(&["-v", "--json", "backup", "--name", "busy"], "", None);
    // The backup logs that it waits once its first plan (whose snapshot
    // counts 40 customers) is made and dropped: the rows go in after that,
    // while the prune still holds its lock.
    let stderr = std::io::BufReader::new(backup.stderr.take().unwrap());
    let (seen, waiting) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            if line.contains("the repository is locked by another process") {
                let _ = seen.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let waited = waiting.recv_timeout(Duration::from_secs(60)).is_ok();
    sql(
        &db,
        "INSERT INTO customers (name) SELECT 'late' || i FROM generate_series(1, 10) i;",
    );
    git(
        &app,
        &["commit", "-q", "--allow-empty", "-m", "deployed meanwhile"],
    );
    let deployed = git(&app, &["rev-parse", "HEAD"]);
    let pruned = Run::from(prune.wait_with_output().unwrap());
    pruned.expect_code(0);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut backup.stdout.take().unwrap(), &mut stdout).unwrap();
    let status = backup.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert!(waited, "the backup never waited for the prune: {stderr}");
    assert!(status.success(), "{status}: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["set"]["git_commit"], deployed.as_str(), "{report}");
    let rec = pg_record(&sb, "busy");
    assert_eq!(rec["row_counts"]["public.customers"], 50, "{rec}");
    assert_eq!(lock_entries(&sb), 0, "a lock file stayed behind");
}

#[test]
fn a_postgres_mark_that_cannot_stand_is_left_out_and_the_backup_dumps() {
    let db = TempDb::seeded(30, "5e6f7a8b9c0d");
    let mut sb = pg_sandbox("pgnomark", &db);
    // A read of the mark the server refuses (as on a standby) aborts the
    // snapshot's transaction up to its savepoint only: the dump in that
    // snapshot still runs, the set has no mark.
    sb.env
        .push(("FAILPOINTS".into(), "postgres-mark-fails=return".into()));
    let r = sb.run(&["backup", "--name", "refused"]);
    sb.env.pop();
    r.expect_code(0);
    let rec = pg_record(&sb, "refused");
    assert!(rec.get("mark").is_none(), "{rec}");
    assert_eq!(rec["row_counts"]["public.customers"], 30, "{rec}");
    let out = restic_restore(&sb.repo(), "refused");
    sha256sum_check(out.path()).expect_code(0);

    // An unlogged sequence changes with neither a transaction ID nor WAL:
    // no mark, so every backup dumps.
    sql(
        &db,
        "CREATE UNLOGGED SEQUENCE tokens; SELECT nextval('tokens');",
    );
    for name in ["u1", "u2"] {
        let r = sb.run(&["--json", "backup", "--name", name]);
        r.expect_code(0);
        assert!(!reported_reused(&r.json(), "postgres.main"), "{name}");
        assert!(pg_record(&sb, name).get("mark").is_none(), "{name}");
    }
}
