//! One behaviour suite, run against every repository backend: a local
//! directory and a bucket on the S3 server. Each test is written once, as a
//! function of the [`Backend`]; `behaviours!` instantiates it as
//! `local::<name>` and `s3::<name>`.
//!
//! backup → verify → damage the stack → restore → the stack is back → stock
//! restic checks the data; prune by policy; a corrupted pack is found by
//! verify and stops a restore before it changes anything.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::backend::{Backend, Repo};
use common::*;

/// Instantiates each behaviour (a `fn(Backend)`) for every backend.
macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::Local)
                }
            )*
        }
        mod s3 {
            $(
                #[test]
                fn $name() {
                    super::$name(super::Backend::S3)
                }
            )*
        }
    };
}

behaviours!(
    round_trip_brings_every_component_back,
    a_corrupted_pack_is_refused_with_the_verification_code_and_nothing_changes,
    verify_reports_per_set_and_fails_on_damage,
    prune_removes_what_the_policy_selects_and_never_a_protected_set,
    immaculate_emergency_verify_and_prune,
);

/// A whole stack: two databases, Redis, a Docker image and volume, a git
/// checkout and a media directory, backed up into `repo`.
struct Stack {
    sb: Sandbox,
    repo: Repo,
    db1: TempDb,
    db2: TempDb,
    redis: RedisServer,
    img: TempImage,
    vol: TempVolume,
    media: PathBuf,
    code: PathBuf,
    commit: String,
}

impl Stack {
    fn components(&self) -> String {
        format!(
            r#"
[postgres.main]
url = "{}"

[postgres.analytics]
url = "{}"

[redis.sessions]
url = "{}"
role = "data"

[docker]
images = ["{}"]
volumes = ["{}"]

[git]
path = "{}"

[paths.media]
path = "{}"
"#,
            self.db1.url(),
            self.db2.url(),
            self.redis.url(),
            self.img.reference,
            self.vol.name,
            self.code.display(),
            self.media.display()
        )
    }

    /// Writes the config: the stack's components, then `extra`.
    fn write_config(&self, extra: &str) {
        self.repo
            .write_config(&self.sb, "shop", &format!("{}{extra}", self.components()));
    }
}

/// A stack with an initialised, empty repository on `backend`.
fn stack(backend: Backend) -> Stack {
    let mut sb = Sandbox::new();
    let repo = backend.fresh_repo(&mut sb);
    let media = sb.path().join("media");
    let (db1, db2, redis, img, vol) = restore_fixture(&media);
    // Big enough to get a data pack of its own.
    let big: Vec<u8> = (0..6_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(media.join("big.bin"), big).unwrap();
    let code = sb.path().join("code");
    let commit = git_repo(&code);
    let s = Stack {
        sb,
        repo,
        db1,
        db2,
        redis,
        img,
        vol,
        media,
        code,
        commit,
    };
    s.write_config("");
    s.sb.init();
    s
}

fn sha256_file(p: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Everything a test compares, as one value: the tables of both databases,
/// Redis keys and values, the image ID, the volume file, and the SHA-256 of
/// every media file.
fn state(s: &Stack) -> Vec<String> {
    vec![
        db_tables(&s.db1.name),
        db_tables(&s.db2.name),
        redis_state(&s.redis),
        docker(&["image", "inspect", "--format", "{{.Id}}", &s.img.reference])
            .stdout
            .trim()
            .to_string(),
        sha256_file(&s.vol.mountpoint().join("a.txt")),
        dir_state(&s.media, sha256_file),
    ]
}

fn wreck(s: &Stack) {
    wreck_stack(
        (&s.db1, &s.db2),
        &s.redis,
        &s.img.reference,
        &s.vol.mountpoint(),
        &s.media,
    );
}

/// Temporary or kept-aside copies of this stack's databases.
fn leftover_databases(s: &Stack) -> Vec<String> {
    leftover_databases_of(&[&s.db1, &s.db2])
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect()
}

/// (name, tier) of every set, sorted.
fn set_names(sb: &Sandbox) -> Vec<(String, String)> {
    let r = sb.run(&["--json", "list"]);
    names_and_tiers(&r)
}

// --- the behaviours ---------------------------------------------------------

fn round_trip_brings_every_component_back(b: Backend) {
    let s = stack(b);
    let r = s.sb.run(&["--json", "backup", "--name", "good"]);
    r.expect_code(0);
    assert_eq!(r.json()["set"]["name"], "good");
    let before = state(&s);
    // A later set holds a file the first one did not.
    std::fs::write(s.media.join("three.jpg"), "three").unwrap();
    s.sb.run(&["backup", "--name", "later"]).expect_code(0);

    // Both sets read back, metadata only and with every byte.
    s.sb.run(&["verify", "good"]).expect_code(0);
    s.sb.run(&["verify", "--all", "--read-data"]).expect_code(0);
    // Stock restic reads the repository: check passes, a restore verifies.
    s.repo.restic(&["check"]).expect_code(0);
    let out = s.repo.restic_restore("later");
    sha256sum_check(out.path()).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(out.path().join("paths/media/three.jpg")).unwrap(),
        "three"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("git/HEAD_COMMIT"))
            .unwrap()
            .trim(),
        s.commit
    );

    wreck(&s);
    assert_ne!(state(&s), before);
    let r = s.sb.run(&["--json", "restore", "good", "--yes"]);
    r.expect_code(0);
    assert_eq!(state(&s), before);
    assert!(
        !s.media.join("three.jpg").exists(),
        "set `good` had no three.jpg"
    );
    let v = r.json();
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "Preflight",
            "Backup verify",
            "Migration check",
            "Pre-restore snapshot",
            "Restore",
            "Redis flush",
            "Post-restore verify"
        ]
    );
    // The wrecked state was kept as a pre-restore set.
    let list =
        s.sb.run(&["--json", "list", "--tier", "pre-restore"])
            .json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(v["pre_restore"], list[0]["name"]);
    assert!(
        leftover_databases(&s).is_empty(),
        "{:?}",
        leftover_databases(&s)
    );
    assert!(!s.media.with_file_name("media.sb-old").exists());
    // Stock restic agrees the repository is whole, data included.
    s.repo.restic(&["check", "--read-data"]).expect_code(0);
}

fn a_corrupted_pack_is_refused_with_the_verification_code_and_nothing_changes(b: Backend) {
    let s = stack(b);
    s.sb.run(&["backup", "--name", "good"]).expect_code(0);
    wreck(&s);
    let wrecked = state(&s);
    // Flip bytes in the middle of every data pack.
    let mut corrupted = 0;
    for p in s.repo.packs() {
        if p.size > 4096 {
            s.repo.corrupt(&p);
            corrupted += 1;
        }
    }
    assert!(corrupted > 0);
    let r = s.sb.run(&["restore", "good", "--yes"]);
    r.expect_code(3);
    assert!(r.stderr.contains("verification failed"), "{}", r.stderr);
    assert_eq!(state(&s), wrecked, "the stack changed");
    let list = s.sb.run(&["--json", "list", "--tier", "pre-restore"]);
    assert_eq!(list.json(), serde_json::json!([]));
}

fn verify_reports_per_set_and_fails_on_damage(b: Backend) {
    let s = stack(b);
    s.sb.run(&["backup", "--name", "one"]).expect_code(0);
    s.sb.run(&["dump", "--name", "two"]).expect_code(0);
    let r = s.sb.run(&["--json", "verify", "--all"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v["sets"].as_array().unwrap().len(), 2);
    assert!(v["repository_errors"].as_array().unwrap().is_empty());
    s.sb.run(&["verify", "two", "--read-data"]).expect_code(0);
    s.sb.run(&["verify", "nope"]).expect_code(1);
    s.repo.corrupt_largest_pack();
    let r = s.sb.run(&["--json", "verify", "--all", "--read-data"]);
    r.expect_code(3);
    let v = r.json_report();
    assert!(
        !v["repository_errors"].as_array().unwrap().is_empty(),
        "{v}"
    );
    let one = v["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["set"]["name"] == "one")
        .unwrap();
    assert!(one["problem_count"].as_u64().unwrap() > 0, "{one}");
}

fn prune_removes_what_the_policy_selects_and_never_a_protected_set(b: Backend) {
    let s = stack(b);
    s.write_config("\n[retention.backups]\nkeep-last = 2\n\n[retention.data]\nkeep-last = 1\n");
    s.sb.run(&["immaculate", "create", "--name", "base"])
        .expect_code(0);
    for n in ["b1", "b2", "b3", "b4"] {
        s.sb.run(&["backup", "--name", n]).expect_code(0);
    }
    for n in ["d1", "d2"] {
        s.sb.run(&["dump", "--name", n]).expect_code(0);
    }
    s.sb.run(&["sacred", "keep", "--from", "b1"]).expect_code(0);
    // A restore leaves a pre-restore set.
    s.sb.run(&["restore", "b4", "--yes"]).expect_code(0);
    let before = names(&s.sb.run(&["--json", "list"]).json());
    assert_eq!(before.len(), 9, "{before:?}");

    // The plan alone changes nothing.
    let plan = s.sb.run(&["--json", "prune"]);
    plan.expect_code(0);
    let v = plan.json();
    let removed: Vec<&str> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .map(|d| d["set"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["b1", "b2", "d1"]);
    assert_eq!(v["applied"], false);
    assert_eq!(names(&s.sb.run(&["--json", "list"]).json()), before);

    let r = s.sb.run(&["--json", "prune", "--apply"]);
    r.expect_code(0);
    assert_eq!(r.json()["removed_sets"], 3);
    let after = names(&s.sb.run(&["--json", "list"]).json());
    let mut want: Vec<String> = before
        .iter()
        .filter(|n| !["b1", "b2", "d1"].contains(&n.as_str()))
        .cloned()
        .collect();
    want.sort();
    let mut got = after.clone();
    got.sort();
    assert_eq!(got, want);
    // Stock restic agrees the repository is whole, and every remaining set
    // still reads back (the sacred pin of b1 kept b1's data).
    s.repo.restic(&["check"]).expect_code(0);
    s.sb.run(&["verify", "--all"]).expect_code(0);
    // Running it again removes nothing more.
    let again = s.sb.run(&["--json", "prune", "--apply"]);
    again.expect_code(0);
    assert_eq!(again.json()["removed_sets"], 0);
}

fn immaculate_emergency_verify_and_prune(b: Backend) {
    let mut sb = Sandbox::new();
    let repo = b.fresh_repo(&mut sb);
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "baseline").unwrap();
    repo.write_config(
        &sb,
        "shop",
        &format!("[paths.data]\npath = \"{}\"\n", dir.display()),
    );
    sb.init();
    sb.run(&["immaculate", "create", "--name", "base"])
        .expect_code(0);
    let r = sb.run(&["immaculate", "verify"]);
    r.expect_code(0);
    assert!(r.stdout.contains("every SHA-256 matches"), "{}", r.stdout);

    std::fs::write(dir.join("a.txt"), "broken").unwrap();
    sb.run(&["emergency", "--confirm", "--yes-i-am-sure=shop"])
        .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(dir.join("a.txt")).unwrap(),
        "baseline"
    );
    sb.run(&["verify", "--all", "--read-data"]).expect_code(0);
    sb.run(&["prune"]).expect_code(0);
    let tiers: Vec<String> = set_names(&sb).into_iter().map(|(_, t)| t).collect();
    assert_eq!(tiers, ["immaculate", "pre-restore"]);
    repo.restic(&["check"]).expect_code(0);
}
