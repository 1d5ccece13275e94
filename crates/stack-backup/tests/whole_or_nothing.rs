//! Whole-or-nothing by construction: a backup stopped at any phase
//! boundary (an error, a panic, or `kill -9` through the fault-injection
//! points of the test build) leaves no snapshot, and a restore runs the set
//! the user confirmed even when a newer set arrives in between.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The phase boundaries of a backup (`operations/backup`).
const POINTS: [&str; 4] = [
    "backup-planned",
    "backup-archived",
    "backup-ledger-checked",
    "backup-manifest-written",
];

struct Stack {
    sb: Sandbox,
    db: TempDb,
    _redis: RedisServer,
    _img: TempImage,
    _vol: TempVolume,
}

/// A stack with a stream of each kind (dump, RDB, image, git) and a tree
/// of each kind (volume, path), so both archive runs are in every phase.
fn stack() -> Stack {
    let sb = Sandbox::new();
    let db = TempDb::new();
    seed_db(&db, 100, "a1b2c3d4e5f6");
    let redis = RedisServer::start();
    redis.fill(20);
    let img = TempImage::build("phases");
    let vol = TempVolume::new();
    std::fs::write(vol.mountpoint().join("v.txt"), "volume file").unwrap();
    let media = sb.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("m.txt"), "media file").unwrap();
    git_repo(&sb.path().join("app"));
    sb.write_config(
        "shop",
        &format!(
            "[postgres.main]\nurl = \"{}\"\n\n[redis.s]\nurl = \"{}\"\nrole = \"data\"\n\n[docker]\nimages = [\"{}\"]\nvolumes = [\"{}\"]\n\n[git]\npath = \"{}\"\n\n[paths.media]\npath = \"{}\"\n",
            db.url(),
            redis.url(),
            img.reference,
            vol.name,
            sb.path().join("app").display(),
            media.display()
        ),
    );
    sb.init();
    Stack {
        sb,
        db,
        _redis: redis,
        _img: img,
        _vol: vol,
    }
}

/// Every snapshot in the repository, as stock restic lists it: id and tags.
fn snapshots(s: &Stack) -> Vec<(String, Vec<String>)> {
    let r = restic(&s.sb.repo(), &["snapshots", "--json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let mut out: Vec<(String, Vec<String>)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let tags = s["tags"]
                .as_array()
                .map(|t| t.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (s["id"].as_str().unwrap().to_string(), tags)
        })
        .collect();
    out.sort();
    out
}

fn set_names(s: &Stack) -> Vec<String> {
    let r = s.sb.run(&["--json", "list"]);
    r.expect_code(0);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

/// Runs a backup with the fault `action` at `point`.
fn faulty_backup(s: &mut Stack, point: &str, action: &str, name: &str) -> Run {
    s.sb.env
        .push(("FAILPOINTS".into(), format!("{point}={action}")));
    let r = s.sb.run(&["backup", "--name", name]);
    s.sb.env.pop();
    r
}

#[test]
fn a_backup_failing_or_panicking_at_any_phase_boundary_leaves_no_snapshot() {
    let mut s = stack();
    // A parent set, so that the later runs also take the reuse path.
    s.sb.run(&["backup", "--name", "first"]).expect_code(0);
    let before = snapshots(&s);
    assert_eq!(before.len(), 1);
    for point in POINTS {
        let r = faulty_backup(&mut s, point, "return", "never");
        r.expect_code(1);
        assert!(
            r.stderr.contains(&format!("fault injected at {point}")),
            "{point}: {}",
            r.stderr
        );
        assert_eq!(snapshots(&s), before, "an error at {point} left a snapshot");

        let r = faulty_backup(&mut s, point, "panic", "never");
        assert_eq!(r.code, 101, "{point}: a panic exits 101: {}", r.stderr);
        assert_eq!(snapshots(&s), before, "a panic at {point} left a snapshot");
    }
    assert_eq!(set_names(&s), ["first"]);
    restic(&s.sb.repo(), &["check"]).expect_code(0);
}

#[test]
fn a_backup_killed_at_any_phase_boundary_leaves_no_set_and_the_next_one_cleans_up() {
    let mut s = stack();
    for point in POINTS {
        let r = faulty_backup(&mut s, point, "return(kill)", "never");
        assert_eq!(
            r.code, -1,
            "{point}: expected death by signal: {}",
            r.stderr
        );
        assert!(set_names(&s).is_empty(), "a kill at {point} left a set");
    }
    // Only parts are left, none of them a set; the next backup removes them.
    assert!(snapshots(&s)
        .iter()
        .all(|(_, tags)| tags.contains(&"stack-backup-incomplete".to_string())));
    s.sb.run(&["backup", "--name", "after"]).expect_code(0);
    let left = snapshots(&s);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].1.contains(&"name:after".to_string()), "{left:?}");
    assert_eq!(set_names(&s), ["after"]);
    restic(&s.sb.repo(), &["check"]).expect_code(0);
    // The set is whole: stock restic restores it and sha256sum agrees.
    let out = s.sb.path().join("restored");
    restic(
        &s.sb.repo(),
        &["restore", "latest", "--target", out.to_str().unwrap()],
    )
    .expect_code(0);
    let check = Command::new("sha256sum")
        .args(["-c", "--quiet", "stack-backup/CHECKSUM.sha256"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// `restore latest` on a terminal: waits for the prompt, lets `between`
/// run, then confirms. Returns everything the terminal showed.
fn restore_confirmed_after(s: &Stack, between: impl FnOnce()) -> (i32, String) {
    let line = format!("{} restore latest", bin().display());
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(s.sb.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", s.sb.path())
        .env("TMPDIR", std::env::temp_dir())
        .env("TERM", "dumb")
        .env("STACK_BACKUP_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running script");
    let shown = Arc::new(Mutex::new(String::new()));
    let reader = {
        let shown = shown.clone();
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !shown.lock().unwrap().contains("Type `yes` to restore") {
        assert!(
            Instant::now() < deadline,
            "no prompt: {}",
            shown.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    between();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"yes\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let text = shown.lock().unwrap().clone();
    (status.code().unwrap_or(-1), text)
}

#[test]
fn restore_latest_restores_the_confirmed_set_when_a_newer_one_arrives_meanwhile() {
    let s = stack();
    s.sb.run(&["backup", "--name", "confirmed"]).expect_code(0);
    let confirmed = table_digest(&s.db.name, "customers");
    sql(
        &s.db,
        "DELETE FROM orders; DELETE FROM customers WHERE id > 10;",
    );
    let changed = table_digest(&s.db.name, "customers");
    assert_ne!(confirmed, changed);
    let (code, shown) = restore_confirmed_after(&s, || {
        // A newer set (of the changed state) arrives after the plan was
        // shown and before the user confirmed.
        s.sb.run(&["backup", "--name", "newer"]).expect_code(0);
    });
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("Restore backup set `confirmed`"),
        "the plan shown: {shown}"
    );
    assert!(shown.contains("restored `confirmed`"), "{shown}");
    assert_eq!(
        table_digest(&s.db.name, "customers"),
        confirmed,
        "the database holds the confirmed set, not the newer one"
    );
    let names = set_names(&s);
    assert!(names.contains(&"newer".to_string()), "{names:?}");
}
