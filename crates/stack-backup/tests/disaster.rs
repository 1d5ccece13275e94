//! Disaster recovery: a stack whose components are gone, not only wrong —
//! the database dropped, Redis flushed, the image, volume and directory
//! removed — is brought back by `restore` and by `emergency`, and a
//! restore that created the database drops only that database when it is
//! undone.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::*;

struct Stack {
    sb: Sandbox,
    db: TempDb,
    redis: RedisServer,
    img: TempImage,
    vol: TempVolume,
    media: PathBuf,
    /// The state the backup set `good` (and the baseline `base`) holds.
    good: Vec<String>,
}

fn config(s: &Stack, admin: bool) -> String {
    format!(
        "[postgres.main]\nurl = \"{}\"\n{}\n[redis.sessions]\nurl = \"{}\"\nrole = \"data\"\n\n[docker]\nimages = [\"{}\"]\nvolumes = [\"{}\"]\n\n[paths.media]\npath = \"{}\"\n",
        s.db.url(),
        if admin {
            format!("admin-url = \"{}\"\n", pg_admin_url())
        } else {
            String::new()
        },
        s.redis.url(),
        s.img.reference,
        s.vol.name,
        s.media.display()
    )
}

fn stack(name: &str) -> Stack {
    let sb = Sandbox::new();
    let media = sb.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("one.jpg"), "one").unwrap();
    let db = TempDb::seeded(80, "a1b2c3d4e5f6");
    let redis = RedisServer::start();
    redis.fill(20);
    let img = TempImage::build("bring me back");
    let vol = TempVolume::new();
    std::fs::write(vol.mountpoint().join("a.txt"), "volume file").unwrap();
    let mut s = Stack {
        sb,
        db,
        redis,
        img,
        vol,
        media,
        good: Vec::new(),
    };
    s.sb.write_config(name, &config(&s, true));
    s.sb.init();
    s.sb.run(&["backup", "--name", "good"]).expect_code(0);
    s.good = state(&s);
    s
}

/// The database's tables and owner, Redis, the image ID, the volume's and
/// the directory's files.
fn state(s: &Stack) -> Vec<String> {
    let owner: Option<String> = pg_client("postgres")
        .query_opt(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&s.db.name],
        )
        .unwrap()
        .map(|r| r.get(0));
    let Some(owner) = owner else {
        return vec!["no database".into()];
    };
    vec![
        format!("owner {owner}"),
        db_tables(&s.db.name),
        redis_state(&s.redis),
        docker(&["image", "inspect", "--format", "{{.Id}}", &s.img.reference])
            .stdout
            .trim()
            .to_string(),
        dir_state(&s.vol.mountpoint(), |p| std::fs::read_to_string(p).unwrap()),
        dir_state(&s.media, |p| std::fs::read_to_string(p).unwrap()),
    ]
}

/// Every component gone: the database dropped, Redis flushed, the image
/// and the volume removed, the directory deleted.
fn destroy(s: &Stack) {
    drop_database(&s.db.name);
    let mut c = s.redis.client().get_connection().unwrap();
    redis::cmd("FLUSHALL").query::<()>(&mut c).unwrap();
    docker(&["image", "rm", "-f", &s.img.reference]).expect_code(0);
    docker(&["volume", "rm", "-f", &s.vol.name]).expect_code(0);
    std::fs::remove_dir_all(&s.media).unwrap();
}

fn drop_database(name: &str) {
    pg_client("postgres")
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
}

fn oid_of(name: &str) -> Option<u32> {
    pg_client("postgres")
        .query_opt("SELECT oid FROM pg_database WHERE datname = $1", &[&name])
        .unwrap()
        .map(|r| r.get(0))
}

#[test]
fn a_stack_with_nothing_left_is_restored_by_restore_and_by_emergency() {
    let s = stack("drgone");
    s.sb.run(&["immaculate", "create", "--name", "base"])
        .expect_code(0);
    destroy(&s);

    // The app's own role may not create a database: refused before
    // anything changes, naming what would do.
    s.sb.write_config("drgone", &config(&s, false));
    let r = s.sb.run(&["restore", "good", "--yes"]);
    r.expect_code(4);
    assert!(r.stderr.contains("CREATEDB"), "{}", r.stderr);
    assert!(r.stderr.contains("admin-url"), "{}", r.stderr);
    let r = s.sb.run(&["doctor"]);
    assert!(r.stdout.contains("CREATEDB"), "{}\n{}", r.stdout, r.stderr);
    // A backup of a stack without its database names it.
    let r = s.sb.run(&["backup"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("postgres.main") && r.stderr.contains("does not exist"),
        "{}",
        r.stderr
    );

    s.sb.write_config("drgone", &config(&s, true));
    let r = s.sb.run(&["restore", "good", "--dry-run"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains(&format!(
            "database `{}` does not exist: will be created",
            s.db.name
        )),
        "{}",
        r.stderr
    );
    let r = s.sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    assert_eq!(state(&s), s.good, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("Time to recover"), "{}", r.stdout);
    assert!(leftover_databases_of(&[&s.db]).is_empty());

    destroy(&s);
    let r =
        s.sb.run(&["emergency", "--confirm", "--yes-i-am-sure=drgone"]);
    r.expect_code(0);
    assert_eq!(state(&s), s.good, "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn undoing_a_restore_that_created_the_database_drops_only_that_database() {
    let s = stack("drundo");
    // Killed after the swap: the database is the restore's, and an abort
    // drops it.
    drop_database(&s.db.name);
    let run = |point: &str| {
        let mut cmd = s.sb.command(bin(), s.sb.path(), None);
        cmd.args(["restore", "good", "--yes"])
            .env("FAILPOINTS", format!("{point}=return(kill)"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let st = cmd.status().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    };
    run("restore-postgres-swapped");
    assert!(oid_of(&s.db.name).is_some());
    s.sb.run(&["restore", "--abort"]).expect_code(0);
    assert_eq!(oid_of(&s.db.name), None);
    assert!(leftover_databases_of(&[&s.db]).is_empty());

    // Killed after the swap, and then the database was dropped and made
    // again by someone else: it is not the restore's (another OID), and
    // the abort leaves it.
    run("restore-postgres-swapped");
    drop_database(&s.db.name);
    pg_client("postgres")
        .batch_execute(&format!(
            "CREATE DATABASE {} OWNER {}",
            s.db.name, s.db.role
        ))
        .unwrap();
    let theirs = oid_of(&s.db.name);
    s.sb.run(&["restore", "--abort"]).expect_code(0);
    assert_eq!(oid_of(&s.db.name), theirs);
    assert!(leftover_databases_of(&[&s.db]).is_empty());

    // And a failed restore into a missing database leaves none.
    drop_database(&s.db.name);
    let mut cmd = s.sb.command(bin(), s.sb.path(), None);
    cmd.args(["restore", "good", "--yes"])
        .env("FAILPOINTS", "restore-applied=return");
    let r = Run::from(cmd.output().unwrap());
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    assert_eq!(oid_of(&s.db.name), None, "{}", r.stderr);
    assert!(leftover_databases_of(&[&s.db]).is_empty());
}
