//! Tiers and lifecycle against real services: immaculate baselines,
//! emergency restore, sacred milestones, export and import. Prune and
//! verify run against every backend in backends.rs.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::backend::Repo;
use common::*;

struct Stack {
    sb: Sandbox,
    db: TempDb,
    redis: RedisServer,
    img: TempImage,
    media: PathBuf,
    code: PathBuf,
    commit: String,
}

fn stack() -> Stack {
    let sb = Sandbox::new();
    let db = TempDb::new();
    seed_db(&db, 120, "a1b2c3d4e5f6");
    let redis = RedisServer::start();
    redis.fill(20);
    let img = TempImage::build("lifecycle");
    let media = sb.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("one.jpg"), "one").unwrap();
    // Big enough to get a data pack of its own.
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(media.join("big.bin"), big).unwrap();
    let code = sb.path().join("code");
    let commit = git_repo(&code);
    let s = Stack {
        sb,
        db,
        redis,
        img,
        media,
        code,
        commit,
    };
    s.sb.write_config(
        "shop",
        &format!(
            r#"
[postgres.main]
url = "{}"

[redis.sessions]
url = "{}"
role = "data"

[docker]
images = ["{}"]

[git]
path = "{}"

[paths.media]
path = "{}"
"#,
            s.db.url(),
            s.redis.url(),
            s.img.reference,
            s.code.display(),
            s.media.display()
        ),
    );
    s.sb.init();
    s
}

/// Everything a test compares, as one value.
fn state(s: &Stack) -> Vec<String> {
    let mut c = s.redis.client().get_connection().unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.sort();
    let mut media: Vec<String> = std::fs::read_dir(&s.media)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            format!(
                "{}={}",
                e.file_name().to_string_lossy(),
                sha256_file(&e.path())
            )
        })
        .collect();
    media.sort();
    let orders = pg_client(&s.db.name)
        .query_one("SELECT to_regclass('public.orders') IS NOT NULL", &[])
        .unwrap()
        .get::<_, bool>(0);
    vec![
        table_digest(&s.db.name, "customers"),
        if orders {
            table_digest(&s.db.name, "orders")
        } else {
            "orders missing".into()
        },
        format!("{keys:?}"),
        docker(&["image", "inspect", "--format", "{{.Id}}", &s.img.reference])
            .stdout
            .trim()
            .to_string(),
        media.join(";"),
    ]
}

fn sha256_file(p: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn wreck(s: &Stack) {
    sql(
        &s.db,
        "DROP TABLE orders; UPDATE customers SET name = 'wrecked'",
    );
    let mut c = s.redis.client().get_connection().unwrap();
    for i in 0..10 {
        redis::cmd("DEL")
            .arg(format!("k{i}"))
            .query::<()>(&mut c)
            .unwrap();
    }
    docker(&["image", "rm", "-f", &s.img.reference]).expect_code(0);
    std::fs::write(s.media.join("one.jpg"), "changed").unwrap();
    std::fs::write(s.media.join("new.jpg"), "new").unwrap();
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn immaculate_create_reads_back_lists_and_verifies() {
    let s = stack();
    let r =
        s.sb.run(&["--json", "immaculate", "create", "--name", "base"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v["backup"]["set"]["tier"], "immaculate");
    assert!(v["verification"]["files"].as_u64().unwrap() >= 5, "{v}");
    assert_eq!(v["verification"]["problem_count"], 0);
    // Stock restic sees one immaculate snapshot and no unverified one.
    let snaps = restic(
        &s.sb.repo(),
        &["snapshots", "--json", "--tag", "tier:immaculate"],
    );
    snaps.expect_code(0);
    let snaps: serde_json::Value = serde_json::from_str(&snaps.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    assert_eq!(restic_snapshot_count(&s.sb.repo()), 1);
    let list = s.sb.run(&["--json", "immaculate", "list"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["set"]["name"], "base");
    assert_eq!(list[0]["last_verification"]["ok"], true);
    // A later verification is recorded and shown.
    s.sb.run(&["immaculate", "verify", "base"]).expect_code(0);
    let list2 = s.sb.run(&["--json", "immaculate", "list"]).json();
    assert!(list2[0]["last_verification"]["files"].as_u64().unwrap() >= 5);
    // Not an immaculate set: refused.
    s.sb.run(&["backup", "--name", "plain"]).expect_code(0);
    s.sb.run(&["immaculate", "verify", "plain"]).expect_code(4);
    // Damage found later: verify fails with the verification code and the
    // failure is what `list` shows.
    Repo::local(&s.sb.repo()).corrupt_largest_pack();
    let r = s.sb.run(&["immaculate", "verify"]);
    r.expect_code(3);
    assert!(r.stdout.contains("FAILED"), "{}", r.stdout);
    let list3 = s.sb.run(&["--json", "immaculate", "list"]).json();
    assert_eq!(list3[0]["last_verification"]["ok"], false, "{list3}");
}

#[test]
fn immaculate_create_with_a_corrupted_blob_leaves_no_immaculate() {
    let s = stack();
    s.sb.run(&["backup", "--name", "first"]).expect_code(0);
    // The new set reuses the unchanged files' blobs (big.bin): damage one of
    // their packs, as bit rot would. Writing the set does not read them;
    // only the read-back does.
    Repo::local(&s.sb.repo()).corrupt_largest_pack();
    let r = s.sb.run(&["immaculate", "create", "--name", "base"]);
    r.expect_code(3);
    assert!(
        r.stderr.contains("no immaculate baseline was created"),
        "{}",
        r.stderr
    );
    let list = s.sb.run(&["--json", "list", "--tier", "immaculate"]).json();
    assert_eq!(list, serde_json::json!([]));
    // Nothing of the attempt is left: only the first set's snapshot.
    assert_eq!(restic_snapshot_count(&s.sb.repo()), 1);
    let list = s.sb.run(&["--json", "immaculate", "list"]).json();
    assert_eq!(list, serde_json::json!([]));
}

#[test]
fn emergency_needs_both_confirmations_then_brings_the_baseline_back() {
    let s = stack();
    // No baseline yet: refused.
    s.sb.run(&["emergency", "--confirm", "--yes-i-am-sure=shop"])
        .expect_code(4);
    s.sb.run(&["immaculate", "create", "--name", "base"])
        .expect_code(0);
    let good = state(&s);
    wreck(&s);
    let wrecked = state(&s);
    assert_ne!(good, wrecked);
    for args in [
        vec!["emergency"],
        vec!["emergency", "--yes-i-am-sure=shop"],
        vec!["emergency", "--confirm"],
        vec!["emergency", "--confirm", "--yes-i-am-sure=other"],
    ] {
        let r = s.sb.run(&args);
        r.expect_code(4);
        assert!(
            r.stderr.contains("nothing was changed"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(state(&s), wrecked, "{args:?} changed the stack");
    }
    assert_eq!(
        s.sb.run(&["--json", "list", "--tier", "pre-restore"])
            .json(),
        serde_json::json!([])
    );
    let r =
        s.sb.run(&["emergency", "--confirm", "--yes-i-am-sure=shop"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("immaculate baseline `base`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&s.commit), "{}", r.stderr);
    assert_eq!(state(&s), good);
    // The wrecked state was kept.
    let pre =
        s.sb.run(&["--json", "list", "--tier", "pre-restore"])
            .json();
    assert_eq!(pre.as_array().unwrap().len(), 1);
}

#[test]
fn sacred_pins_a_set_tags_its_commit_and_restores_by_name() {
    let s = stack();
    s.sb.run(&["backup", "--name", "v1"]).expect_code(0);
    let good = state(&s);
    // The code moves on after the backup.
    std::fs::write(s.code.join("app.py"), "print('v2')\n").unwrap();
    git(&s.code, &["commit", "-qam", "v2"]);
    let r = s.sb.run(&["--json", "sacred", "launch", "--from", "v1"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v["set"]["name"], "sacred/launch");
    assert_eq!(v["set"]["tier"], "sacred");
    assert_eq!(v["git_tag"], "sacred/launch");
    // An annotated tag at the commit the set recorded, not at HEAD.
    assert_eq!(git(&s.code, &["cat-file", "-t", "sacred/launch"]), "tag");
    assert_eq!(
        git(&s.code, &["rev-parse", "sacred/launch^{commit}"]),
        s.commit
    );
    // Names and tags are never reused.
    s.sb.run(&["sacred", "launch", "--from", "v1"])
        .expect_code(4);
    git(&s.code, &["tag", "-a", "sacred/taken", "-m", "x"]);
    s.sb.run(&["sacred", "taken"]).expect_code(4);
    assert!(!s
        .sb
        .run(&["--json", "list"])
        .stdout
        .contains("sacred/taken"));
    // A new sacred set without --from tags the current HEAD.
    s.sb.run(&["sacred", "now"]).expect_code(0);
    let head = git(&s.code, &["rev-parse", "HEAD"]);
    assert_eq!(git(&s.code, &["rev-parse", "sacred/now^{commit}"]), head);
    let list = s.sb.run(&["--json", "list", "--tier", "sacred"]).json();
    assert_eq!(names(&list), ["sacred/launch", "sacred/now"]);
    // Restore by sacred name.
    wreck(&s);
    s.sb.run(&["restore", "sacred/launch", "--yes"])
        .expect_code(0);
    assert_eq!(state(&s), good);
}

fn sh(dir: &std::path::Path, script: &str) -> Run {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    Run::from(out)
}

/// The artifacts (path, component, size, sha256) of a set's manifest, read
/// with stock restic.
fn artifacts(s: &Stack, name: &str) -> Vec<serde_json::Value> {
    let r = restic(
        &s.sb.repo(),
        &[
            "dump",
            "--tag",
            &format!("name:{name}"),
            "latest",
            "/stack-backup/manifest.json",
        ],
    );
    r.expect_code(0);
    let m: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| serde_json::json!([a["path"], a["component"], a["size"], a["sha256"]]))
        .collect()
}

#[test]
fn export_is_checkable_by_hand_and_imports_back_identically() {
    let s = stack();
    s.sb.run(&["backup", "--name", "orig"]).expect_code(0);
    let good = state(&s);
    let dir = s.sb.path().join("exported");
    s.sb.run(&["export", "orig", &dir.to_string_lossy()])
        .expect_code(0);
    let check = sh(&dir, "sha256sum -c --strict CHECKSUM.sha256");
    check.expect_code(0);
    for f in [
        "MANIFEST.md",
        "database/main.dump",
        "redis/dump.rdb",
        "git/HEAD_COMMIT",
        "paths/media/big.bin",
        "stack-backup/manifest.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("git/HEAD_COMMIT"))
            .unwrap()
            .trim(),
        s.commit
    );
    let md = std::fs::read_to_string(dir.join("MANIFEST.md")).unwrap();
    assert!(md.contains("pg_restore --exit-on-error"), "{md}");
    assert!(md.contains("| docker load"), "{md}");
    // The dump loads with plain pg_restore, the image tar with docker load.
    let images: Vec<_> = std::fs::read_dir(dir.join("docker/images"))
        .unwrap()
        .collect();
    assert_eq!(images.len(), 1);
    let tar = images[0].as_ref().unwrap().path();
    assert!(tar.to_string_lossy().ends_with(".tar.gz"));
    sh(&dir, &format!("gunzip -t {}", tar.display())).expect_code(0);
    sh(&dir, "pg_restore --list database/main.dump >/dev/null").expect_code(0);
    // A non-empty directory is not written into.
    s.sb.run(&["export", "orig", &dir.to_string_lossy()])
        .expect_code(4);

    // Import: the same artifacts, byte for byte, and it restores.
    let r =
        s.sb.run(&["--json", "import", &dir.to_string_lossy(), "--name", "back"]);
    r.expect_code(0);
    assert_eq!(r.json()["layout"], "export");
    assert_eq!(artifacts(&s, "back"), artifacts(&s, "orig"));
    s.sb.run(&["verify", "back"]).expect_code(0);
    wreck(&s);
    s.sb.run(&["restore", "back", "--yes"]).expect_code(0);
    assert_eq!(state(&s), good);

    // Tampered: refused with the file named, nothing stored.
    let before = restic_snapshot_count(&s.sb.repo());
    let mut dump = std::fs::read(dir.join("database/main.dump")).unwrap();
    let mid = dump.len() / 2;
    dump[mid] ^= 0x01;
    std::fs::write(dir.join("database/main.dump"), dump).unwrap();
    let r =
        s.sb.run(&["import", &dir.to_string_lossy(), "--name", "tampered"]);
    r.expect_code(3);
    assert!(r.stderr.contains("database/main.dump"), "{}", r.stderr);
    assert_eq!(restic_snapshot_count(&s.sb.repo()), before);
}

#[test]
fn a_legacy_script_directory_imports_and_is_restored_by_hand() {
    let s = stack();
    let dir = s.sb.path().join("legacy");
    std::fs::create_dir_all(dir.join("database")).unwrap();
    std::fs::create_dir_all(dir.join("docker/images")).unwrap();
    std::fs::create_dir_all(dir.join("git")).unwrap();
    let dump = Command::new(pg_bin_dir().join("pg_dump"))
        .arg(pg_url(&s.db.name))
        .output()
        .unwrap();
    assert!(dump.status.success());
    std::fs::write(dir.join("database/dump.sql"), &dump.stdout).unwrap();
    sh(&dir, "gzip database/dump.sql").expect_code(0);
    sh(
        &dir,
        &format!(
            "docker save {} | gzip > docker/images/web.tar.gz",
            s.img.reference
        ),
    )
    .expect_code(0);
    std::fs::write(dir.join("git/HEAD_COMMIT"), format!("{}\n", s.commit)).unwrap();
    std::fs::write(
        dir.join("MANIFEST.md"),
        "# Backup\nRestore: gunzip -c database/dump.sql.gz | psql\n",
    )
    .unwrap();
    sh(
        &dir,
        "find . -type f ! -name CHECKSUM.sha256 | sed 's|^./||' | sort | xargs sha256sum > CHECKSUM.sha256",
    )
    .expect_code(0);
    std::fs::write(dir.join("notes.txt"), "not listed").unwrap();

    let r = s.sb.run(&["--json", "import", &dir.to_string_lossy()]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v["layout"], "legacy");
    assert_eq!(v["checked"], 4);
    assert_eq!(v["unlisted"], serde_json::json!(["notes.txt"]));
    let name = v["set"]["name"].as_str().unwrap().to_string();
    assert_eq!(v["set"]["git_commit"], s.commit.as_str());
    s.sb.run(&["verify", &name]).expect_code(0);
    // Restored by hand: restore refuses with the way to do it.
    let r = s.sb.run(&["restore", &name, "--yes"]);
    r.expect_code(4);
    assert!(r.stderr.contains("restored by hand"), "{}", r.stderr);
    // Its export carries the original files and instructions.
    let out = s.sb.path().join("legacy-out");
    s.sb.run(&["export", &name, &out.to_string_lossy()])
        .expect_code(0);
    sh(&out, "sha256sum -c --strict CHECKSUM.sha256").expect_code(0);
    assert!(out.join("legacy/MANIFEST.md").is_file());
    assert!(out.join("database/dump.sql.gz").is_file());

    // A tampered legacy directory is refused, naming the file.
    std::fs::write(dir.join("git/HEAD_COMMIT"), "0000000\n").unwrap();
    let r =
        s.sb.run(&["import", &dir.to_string_lossy(), "--name", "bad"]);
    r.expect_code(3);
    assert!(r.stderr.contains("git/HEAD_COMMIT"), "{}", r.stderr);
}
