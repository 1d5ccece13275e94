//! Restoring one Redis database changes that database and nothing else on
//! the instance, TTLs that ran out since the backup are not a failure, and
//! no temporary `redis-server` outlives the restore (kill -9 included).
//!
//! Every test runs its own `redis-server` (tests run side by side), so the
//! database indexes used here are free.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The configured database of `[redis.app]`.
const APP_DB: u8 = 9;
/// Another application's database on the same instance.
const OTHER_DB: u8 = 3;

fn conn(r: &RedisServer, db: u8) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{}/{db}", r.port))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn run(c: &mut redis::Connection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(c)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
}

/// Keys of several types and encodings, one with a TTL of an hour.
fn fill(r: &RedisServer, db: u8, prefix: &str) {
    let mut c = conn(r, db);
    for i in 0..50 {
        run(
            &mut c,
            &["SET", &format!("{prefix}:s{i}"), &format!("v{i}")],
        );
    }
    run(&mut c, &["SET", &format!("{prefix}:int"), "12345"]);
    run(
        &mut c,
        &["HSET", &format!("{prefix}:h"), "a", "1", "b", "2"],
    );
    run(&mut c, &["RPUSH", &format!("{prefix}:l"), "x", "y", "z"]);
    run(&mut c, &["SADD", &format!("{prefix}:set"), "1", "2", "3"]);
    run(
        &mut c,
        &["ZADD", &format!("{prefix}:z"), "1", "one", "2", "two"],
    );
    run(
        &mut c,
        &["SET", &format!("{prefix}:ttl"), "t", "EX", "3600"],
    );
}

/// Changes a filled database: keys deleted, changed and added.
fn change(r: &RedisServer, db: u8, prefix: &str) {
    let mut c = conn(r, db);
    for i in 0..10 {
        run(&mut c, &["DEL", &format!("{prefix}:s{i}")]);
    }
    run(&mut c, &["HSET", &format!("{prefix}:h"), "c", "3"]);
    run(
        &mut c,
        &["SET", &format!("{prefix}:new"), "n", "EX", "7200"],
    );
    run(&mut c, &["PERSIST", &format!("{prefix}:ttl")]);
}

/// Every key of a database: its `DUMP` payload (type, encoding and value)
/// and its deadline in unix milliseconds (`None` without a TTL).
type DbState = BTreeMap<Vec<u8>, (Vec<u8>, Option<i64>)>;

fn db_state(r: &RedisServer, db: u8) -> DbState {
    let mut c = conn(r, db);
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(&mut c).unwrap();
    let now_ms = secs * 1000 + micros / 1000;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.into_iter()
        .map(|k| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut c).unwrap();
            let pttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
            (k, (dump, (pttl >= 0).then_some(now_ms + pttl)))
        })
        .collect()
}

/// Same keys, same payloads, same deadlines (to 2 s: a restore re-arms a
/// TTL from its remaining time).
fn assert_same(what: &str, got: &DbState, want: &DbState) {
    let names = |s: &DbState| -> Vec<String> {
        s.keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert_eq!(names(got), names(want), "{what}: not the same keys");
    for (k, (dump, deadline)) in want {
        let (got_dump, got_deadline) = &got[k];
        let key = String::from_utf8_lossy(k);
        assert_eq!(got_dump, dump, "{what}: {key} has another value");
        match (got_deadline, deadline) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 2000,
                "{what}: {key} expires at {a}, expected {b}"
            ),
            _ => panic!("{what}: {key}: TTL {got_deadline:?}, expected {deadline:?}"),
        }
    }
}

/// The non-empty databases of the instance with their key counts
/// (`INFO keyspace`, without the expiry statistics).
fn keyspace(r: &RedisServer) -> Vec<String> {
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(&mut conn(r, 0))
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("db"))
        .map(|l| l.split(",expires").next().unwrap_or(l).to_string())
        .collect()
}

/// A stack of one Redis database (`[redis.app]`, db 9) on its own server,
/// backed up as `good` after `setup` ran; `extra` is appended to the config.
fn stack(setup: impl Fn(&RedisServer)) -> (Sandbox, RedisServer) {
    let sb = Sandbox::new();
    let redis = RedisServer::start();
    setup(&redis);
    write_config(&sb, &redis, "");
    sb.init();
    sb.run(&["backup", "--name", "good"]).expect_code(0);
    (sb, redis)
}

fn write_config(sb: &Sandbox, redis: &RedisServer, extra: &str) {
    sb.write_config(
        "shop",
        &format!(
            "[redis.app]\nurl = \"redis://127.0.0.1:{}/{APP_DB}\"\nrole = \"data\"\n{extra}",
            redis.port
        ),
    );
}

fn two_apps(r: &RedisServer) {
    fill(r, APP_DB, "app");
    fill(r, OTHER_DB, "other");
}

#[test]
fn restoring_one_database_leaves_the_other_databases_byte_identical() {
    let (sb, redis) = stack(two_apps);
    let backed_up = db_state(&redis, APP_DB);
    change(&redis, APP_DB, "app");
    change(&redis, OTHER_DB, "other");
    let other = db_state(&redis, OTHER_DB);
    assert_ne!(db_state(&redis, APP_DB), backed_up);

    let started = Instant::now();
    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    eprintln!("restore of 56 keys: {:?} (single run)", started.elapsed());

    assert_same(
        "the restored database",
        &db_state(&redis, APP_DB),
        &backed_up,
    );
    assert_same("the other database", &db_state(&redis, OTHER_DB), &other);
    assert_eq!(
        keyspace(&redis),
        vec!["db3:keys=47".to_string(), "db9:keys=56".to_string()],
        "a scratch database was left behind or another one changed"
    );
}

#[test]
fn a_rolled_back_restore_leaves_every_database_as_it_was() {
    let (sb, redis) = stack(two_apps);
    change(&redis, APP_DB, "app");
    change(&redis, OTHER_DB, "other");
    // The failing health check is also another application writing into
    // its own database while the restore runs: that write must survive
    // the rollback.
    let w = Wrappers::new();
    w.script(
        "app-smoke",
        &format!(
            "redis-cli -p {} -n {OTHER_DB} SET other:written-during-restore 1 >/dev/null\nexit 1",
            redis.port
        ),
    );
    write_config(
        &sb,
        &redis,
        &format!(
            "\n[[health]]\nname = \"app-smoke\"\ncommand = \"{}\"\n",
            w.path().join("app-smoke").display()
        ),
    );
    let app = db_state(&redis, APP_DB);
    let keys_before = keyspace(&redis);

    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(1);
    expect_rolled_back_by(&r, "app-smoke");

    assert_same("the configured database", &db_state(&redis, APP_DB), &app);
    let mut other = db_state(&redis, OTHER_DB);
    assert_eq!(
        other.remove(b"other:written-during-restore".as_slice()),
        Some((
            redis::cmd("DUMP")
                .arg("other:written-during-restore")
                .query::<Vec<u8>>(&mut conn(&redis, OTHER_DB))
                .unwrap(),
            None
        )),
        "another application's write during the restore was lost"
    );
    run(
        &mut conn(&redis, OTHER_DB),
        &["DEL", "other:written-during-restore"],
    );
    assert_eq!(
        keyspace(&redis),
        keys_before,
        "a scratch database was left behind"
    );
}

#[test]
fn a_key_that_expired_since_the_backup_does_not_fail_the_restore() {
    // Long enough to outlive the backup, so it is in the RDB.
    let (sb, redis) = stack(|r| {
        fill(r, APP_DB, "app");
        run(
            &mut conn(r, APP_DB),
            &["SET", "app:short", "x", "PX", "8000"],
        );
    });
    let backed_up = db_state(&redis, APP_DB);
    assert!(
        backed_up.contains_key(b"app:short".as_slice()),
        "the backup took longer than the key's TTL"
    );
    change(&redis, APP_DB, "app");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pttl: i64 = redis::cmd("PTTL")
            .arg("app:short")
            .query(&mut conn(&redis, APP_DB))
            .unwrap();
        if pttl == -2 {
            break;
        }
        assert!(Instant::now() < deadline, "app:short did not expire");
        std::thread::sleep(Duration::from_millis(100));
    }

    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    assert!(
        r.stderr
            .contains("redis.app: 56 keys (1 expired since the backup)"),
        "{}",
        r.stderr
    );
    let mut want = backed_up;
    want.remove(b"app:short".as_slice());
    assert_same("the restored database", &db_state(&redis, APP_DB), &want);
}

/// Pids of the processes working in (or, before `redis-server` rewrites
/// its process title, started with) a temporary directory of the
/// `stack-backup` process `pid`.
fn temp_servers_of(pid: u32) -> Vec<u32> {
    let needle = format!("stack-backup-redis-{pid}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/cwd"))
                .is_ok_and(|c| c.to_string_lossy().contains(&needle))
                || std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// Temporary directories of the `stack-backup` process `pid`.
fn temp_dirs_of(pid: u32) -> Vec<String> {
    let prefix = format!("stack-backup-redis-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Runs `stack-backup` in the sandbox without waiting for it.
fn spawn(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(bin());
    cmd.current_dir(sb.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", sb.path())
        .env("TMPDIR", std::env::temp_dir())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &sb.env {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

#[test]
fn no_temporary_redis_server_outlives_a_restore_even_after_kill_9() {
    let (sb, redis) = stack(two_apps);
    change(&redis, APP_DB, "app");
    let changed = db_state(&redis, APP_DB);
    let other = db_state(&redis, OTHER_DB);

    // Held while the temporary server runs (the fault point sleeps there),
    // then the process is killed from outside, as an operator or the OOM
    // killer would.
    let mut child = spawn(
        &sb,
        &["restore", "good", "--yes"],
        &[("FAILPOINTS", "redis-temp-server-up=sleep(10000)")],
    );
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let servers = loop {
        let s = temp_servers_of(pid);
        if !s.is_empty() {
            break s;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before its temporary server was seen"
        );
        assert!(Instant::now() < deadline, "no temporary server seen");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Past start-up (the fault point is after it).
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !temp_servers_of(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the temporary redis-server {servers:?} outlived the killed restore"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_same(
        "the configured database",
        &db_state(&redis, APP_DB),
        &changed,
    );
    assert_same("the other database", &db_state(&redis, OTHER_DB), &other);
    assert_eq!(temp_dirs_of(pid).len(), 1, "the killed run's directory");

    // The killed restore is open in its journal: a plain restore is
    // refused until `restore --abort` resolves it, which removes the dead
    // run's directory.
    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(4);
    assert!(r.stderr.contains("restore --abort"), "{}", r.stderr);
    sb.run(&["restore", "--abort"]).expect_code(0);
    assert!(temp_dirs_of(pid).is_empty(), "{:?}", temp_dirs_of(pid));
    assert_same(
        "the configured database",
        &db_state(&redis, APP_DB),
        &changed,
    );

    // The next restore leaves neither a server nor a directory of its own.
    let child = spawn(&sb, &["restore", "good", "--yes"], &[]);
    let next = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(temp_servers_of(next).is_empty());
    assert!(temp_dirs_of(next).is_empty(), "{:?}", temp_dirs_of(next));
    assert!(temp_dirs_of(pid).is_empty(), "{:?}", temp_dirs_of(pid));
}

#[test]
fn an_instance_without_a_free_database_is_refused_before_anything_changes() {
    let (sb, redis) = stack(|r| {
        for db in 0..16 {
            run(&mut conn(r, db), &["SET", "taken", &db.to_string()]);
        }
    });
    change(&redis, APP_DB, "app");
    let before: Vec<DbState> = (0..16).map(|db| db_state(&redis, db)).collect();
    for args in [
        &["restore", "good", "--dry-run"][..],
        &["restore", "good", "--yes"][..],
    ] {
        let r = sb.run(args);
        r.expect_code(4);
        assert!(
            r.stderr.contains("none of its 16 databases is free"),
            "{}",
            r.stderr
        );
    }
    for (db, want) in (0..16).zip(&before) {
        assert_same(&format!("database {db}"), &db_state(&redis, db), want);
    }
}
