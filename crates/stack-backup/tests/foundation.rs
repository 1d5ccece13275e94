//! init, doctor, list and show against the real services and stock restic.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn init_creates_a_repository_that_stock_restic_opens() {
    let sb = Sandbox::new();
    sb.write_config("shop", "");
    let r = sb.run(&["--json", "init"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v["format_version"], 2);
    assert_eq!(v["config_created"], false);

    let snaps = restic(&sb.repo(), &["snapshots", "--json"]);
    snaps.expect_code(0);
    assert_eq!(snaps.stdout.trim(), "[]", "{snaps:?}");
    let cfg = restic(&sb.repo(), &["cat", "config"]);
    cfg.expect_code(0);
    let cfg: serde_json::Value = serde_json::from_str(&cfg.stdout).unwrap();
    assert_eq!(cfg["version"], 2);
    assert_eq!(cfg["id"], v["repository_id"]);

    // A wrong password does not open it, for restic either.
    let mut wrong = Sandbox::new();
    wrong.env = vec![("STACK_BACKUP_PASSWORD".into(), "nope".into())];
    std::fs::write(
        wrong.config(),
        std::fs::read_to_string(sb.config()).unwrap(),
    )
    .unwrap();
    let r = wrong.run(&["list"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("password does not open"), "{}", r.stderr);
}

#[test]
fn init_never_overwrites_an_existing_repository() {
    let sb = Sandbox::new();
    sb.write_config("shop", "");
    sb.init();
    let before = std::fs::read(sb.repo().join("config")).unwrap();
    let r = sb.run(&["init"]);
    r.expect_code(4);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(std::fs::read(sb.repo().join("config")).unwrap(), before);

    // A non-empty directory that is not a repository is not written into.
    let sb2 = Sandbox::new();
    sb2.write_config("shop", "");
    std::fs::create_dir_all(sb2.repo()).unwrap();
    std::fs::write(sb2.repo().join("precious.txt"), "keep me").unwrap();
    let r = sb2.run(&["init"]);
    r.expect_code(4);
    assert_eq!(std::fs::read_dir(sb2.repo()).unwrap().count(), 1);
}

#[test]
fn init_generates_a_password_file_with_mode_0600_and_a_starter_config() {
    let mut sb = Sandbox::new();
    sb.env.clear(); // no STACK_BACKUP_PASSWORD
    let commit = git_repo(sb.path());
    let repo = sb.repo();
    let key = sb.path().join("keys/shop.key");
    let r = sb.run(&[
        "init",
        "--name",
        "shop",
        "--repo",
        &repo.to_string_lossy(),
        "--generate-password",
        "--password-file",
        &key.to_string_lossy(),
    ]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("lost"),
        "must warn that losing it loses backups: {}",
        r.stderr
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pw = std::fs::read_to_string(&key).unwrap();
    assert!(pw.trim().len() >= 32);
    assert!(
        !r.stdout.contains(pw.trim()) && !r.stderr.contains(pw.trim()),
        "password printed"
    );

    let cfg = std::fs::read_to_string(sb.config()).unwrap();
    assert!(
        cfg.contains("name = \"shop\"") && cfg.contains("[git]"),
        "{cfg}"
    );
    assert!(cfg.contains(&key.to_string_lossy().to_string()), "{cfg}");

    // The generated password opens the repository with stock restic.
    let out = std::process::Command::new("restic")
        .arg("-r")
        .arg(&repo)
        .arg("--password-file")
        .arg(&key)
        .args(["snapshots", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // doctor sees the git commit and the empty repository
    let r = sb.run(&["--json", "doctor"]);
    r.expect_code(0);
    let v = r.json();
    let git = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "git")
        .unwrap();
    assert!(
        git["detail"].as_str().unwrap().contains(&commit[..12]),
        "{git}"
    );

    // A second init with --generate-password refuses, and keeps the key.
    let r = sb.run(&[
        "init",
        "--generate-password",
        "--password-file",
        &key.to_string_lossy(),
    ]);
    r.expect_code(4);
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pw);
}

#[test]
fn init_without_any_password_source_is_a_usage_error() {
    let mut sb = Sandbox::new();
    sb.env.clear();
    let r = sb.run(&["init", "--repo", "repo"]);
    r.expect_code(2);
    assert!(r.stderr.contains("--generate-password"), "{}", r.stderr);
    assert!(!sb.repo().exists());
}

fn full_stack_config(
    db: &TempDb,
    redis_url: &str,
    image: &str,
    volume: &str,
    git: &str,
    path: &str,
) -> String {
    format!(
        r#"
[postgres.main]
url = "{}"

[redis.cache]
url = "{redis_url}"

[docker]
images = ["{image}"]
volumes = ["{volume}"]

[git]
path = "{git}"

[paths.media]
path = "{path}"
"#,
        db.url()
    )
}

#[test]
fn doctor_reports_every_component_ready_against_real_services() {
    let sb = Sandbox::new();
    let db = TempDb::new();
    let redis = RedisServer::start();
    let image = TempImage::build("doctor");
    let volume = TempVolume::new();
    let app = sb.path().join("app");
    git_repo(&app);
    let media = sb.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    sb.write_config(
        "shop",
        &full_stack_config(
            &db,
            &redis.url(),
            &image.reference,
            &volume.name,
            &app.to_string_lossy(),
            &media.to_string_lossy(),
        ),
    );
    sb.init();
    let r = sb.run(&["--json", "doctor"]);
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v["ready"], true, "{v}");
    let detail = |c: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["component"] == c)
            .unwrap_or_else(|| panic!("no check {c}: {v}"))["detail"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(detail("postgres.main").contains("pg_dump"), "{v}");
    assert!(detail("postgres.main").contains("major"), "{v}");
    assert!(
        detail("redis.cache").contains("redis-server 7")
            || detail("redis.cache").contains("redis-server "),
        "{v}"
    );
    assert!(detail("docker").contains("API"), "{v}");
    assert!(
        detail(&format!("docker.image.{}", image.reference)).contains(&image.id()),
        "{v}"
    );
    assert!(detail("disk").contains("free"), "{v}");
    // The database password never shows.
    assert!(
        !r.stdout.contains("sbtest-pw") && !r.stderr.contains("sbtest-pw"),
        "{}",
        r.stdout
    );
}

#[test]
fn doctor_names_a_stopped_redis_and_an_unreachable_database() {
    let sb = Sandbox::new();
    let mut redis = RedisServer::start();
    let port = free_port(); // nothing listens here
    sb.write_config(
        "shop",
        &format!(
            "[postgres.main]\nurl = \"postgres://stackbackup:sbtest-pw@127.0.0.1:{port}/nowhere\"\n\n[redis.cache]\nurl = \"{}\"\n",
            redis.url()
        ),
    );
    sb.init();
    redis.stop();
    let r = sb.run(&["--json", "doctor"]);
    r.expect_code(6);
    let v = r.json();
    assert_eq!(v["ready"], false);
    let checks = v["checks"].as_array().unwrap();
    let get = |c: &str| checks.iter().find(|x| x["component"] == c).unwrap().clone();
    assert_eq!(get("redis.cache")["ok"], false, "{v}");
    assert!(
        get("redis.cache")["detail"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{v}"
    );
    assert_eq!(get("postgres.main")["ok"], false, "{v}");
    assert!(
        get("postgres.main")["detail"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{v}"
    );
    assert_eq!(get("repository")["ok"], true, "{v}");
    assert!(
        !r.stdout.contains("sbtest-pw"),
        "password leaked: {}",
        r.stdout
    );

    // Human output names the components too.
    let r = sb.run(&["doctor"]);
    r.expect_code(6);
    assert!(
        r.stderr.contains("redis.cache") && r.stderr.contains("postgres.main"),
        "{}",
        r.stderr
    );
}

#[test]
fn doctor_reports_a_missing_repository_and_too_little_disk() {
    let sb = Sandbox::new();
    sb.write_config("shop", "");
    std::fs::write(
        sb.config(),
        std::fs::read_to_string(sb.config())
            .unwrap()
            .replace("\"1MiB\"", "\"100PiB\""),
    )
    .unwrap();
    let r = sb.run(&["--json", "doctor"]);
    r.expect_code(6);
    let v = r.json();
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks[0]["component"], "repository");
    assert_eq!(checks[0]["ok"], false);
    assert!(
        checks[0]["detail"].as_str().unwrap().contains("init"),
        "{v}"
    );
    assert_eq!(checks[1]["component"], "disk");
    assert_eq!(checks[1]["ok"], false);
    assert!(
        checks[1]["detail"]
            .as_str()
            .unwrap()
            .contains("not enough free space"),
        "{v}"
    );
}

#[test]
fn list_and_show_on_an_empty_repository() {
    let sb = Sandbox::new();
    sb.write_config("shop", "");
    sb.init();
    let r = sb.run(&["--json", "list"]);
    r.expect_code(0);
    assert_eq!(r.json(), serde_json::json!([]));
    let r = sb.run(&["show", "nothing-here"]);
    r.expect_code(1);
    assert!(r.stderr.contains("nothing-here"), "{}", r.stderr);
}

#[test]
fn a_held_repository_lock_gives_the_locked_exit_code() {
    let sb = Sandbox::new();
    sb.write_config("shop", "");
    let loc = stack_backup_core::repository::Location::Local(sb.repo());
    std::fs::create_dir_all(sb.repo()).unwrap();
    // The sandbox's own state directory, where its commands keep the lock.
    let state = stack_backup_core::system::state::ensure(&sb.path().join("state")).unwrap();
    let held = stack_backup_core::lock::RepoLock::local_in(&state, &loc).unwrap();
    let r = sb.run(&["init"]);
    r.expect_code(5);
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    drop(held);
    sb.init();
}
