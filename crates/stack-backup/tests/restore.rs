//! `restore` through the safety chain against real services.

mod common;

use common::*;

struct Stack {
    sb: Sandbox,
    db1: TempDb,
    db2: TempDb,
    redis: RedisServer,
    img: TempImage,
    vol: TempVolume,
    media: std::path::PathBuf,
}

fn config(s: &Stack, extra_main: &str, extra_analytics: &str) -> String {
    format!(
        r#"
[postgres.main]
url = "{}"
{extra_main}

[postgres.analytics]
url = "{}"
{extra_analytics}

[redis.sessions]
url = "{}"
role = "data"

[docker]
images = ["{}"]
volumes = ["{}"]

[paths.media]
path = "{}"
"#,
        s.db1.url(),
        s.db2.url(),
        s.redis.url(),
        s.img.reference,
        s.vol.name,
        s.media.display()
    )
}

fn stack() -> Stack {
    let sb = Sandbox::new();
    let media = sb.path().join("media");
    let (db1, db2, redis, img, vol) = restore_fixture(&media);
    let s = Stack {
        sb,
        db1,
        db2,
        redis,
        img,
        vol,
        media,
    };
    s.sb.write_config("shop", &config(&s, "", ""));
    s.sb.init();
    s.sb.run(&["backup", "--name", "good"]).expect_code(0);
    s
}

/// Everything a test compares, as one value.
fn state(s: &Stack) -> Vec<String> {
    vec![
        db_tables(&s.db1.name),
        db_tables(&s.db2.name),
        redis_state(&s.redis),
        docker(&["image", "inspect", "--format", "{{.Id}}", &s.img.reference])
            .stdout
            .trim()
            .to_string(),
        std::fs::read_to_string(s.vol.mountpoint().join("a.txt")).unwrap_or_default(),
        dir_state(&s.media, |p| std::fs::read_to_string(p).unwrap()),
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

#[test]
fn a_failure_half_way_rolls_everything_back() {
    let s = stack();
    wreck(&s);
    let wrecked = state(&s);
    let w = Wrappers::new();
    let real = pg_bin_dir();
    for tool in ["pg_dump", "pg_dumpall", "psql"] {
        w.script(tool, &format!("exec {}/{tool} \"$@\"", real.display()));
    }
    w.script(
        "pg_restore",
        &format!("if [ \"$1\" = --version ]; then exec {}/pg_restore --version; fi\necho 'injected failure' >&2\nexit 1", real.display()),
    );
    s.sb.write_config(
        "shop",
        &config(&s, "", &format!("bin-dir = \"{}\"", w.path().display())),
    );
    let r = s.sb.run(&["restore", "good", "--yes"]);
    r.expect_code(1);
    assert!(r.stderr.contains("injected failure"), "{}", r.stderr);
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
    assert_eq!(state(&s), wrecked, "the stack is not back where it started");
    assert!(
        leftover_databases(&s).is_empty(),
        "{:?}",
        leftover_databases(&s)
    );
}

#[test]
fn a_migration_mismatch_is_refused_unless_allowed() {
    let s = stack();
    let versions = s.sb.path().join("alembic/versions");
    std::fs::create_dir_all(&versions).unwrap();
    std::fs::write(
        versions.join("1.py"),
        "revision = 'a1b2c3d4e5f6'\ndown_revision = None\n",
    )
    .unwrap();
    std::fs::write(
        versions.join("2.py"),
        "revision = 'ffee11223344'\ndown_revision = 'a1b2c3d4e5f6'\n",
    )
    .unwrap();
    s.sb.write_config(
        "shop",
        &config(
            &s,
            &format!("migrations-dir = \"{}\"", versions.display()),
            "",
        ),
    );
    wreck(&s);
    let wrecked = state(&s);
    let r = s.sb.run(&["restore", "good", "--yes"]);
    r.expect_code(4);
    assert!(r.stderr.contains("migration mismatch"), "{}", r.stderr);
    assert!(
        r.stderr.contains("a1b2c3d4e5f6") && r.stderr.contains("ffee11223344"),
        "{}",
        r.stderr
    );
    assert_eq!(state(&s), wrecked);
    s.sb.run(&["restore", "good", "--yes", "--allow-migration-mismatch"])
        .expect_code(0);
    assert_ne!(state(&s), wrecked);
}

#[test]
fn dry_run_shows_the_plan_and_changes_nothing() {
    let s = stack();
    wreck(&s);
    let wrecked = state(&s);
    let r = s.sb.run(&["restore", "good", "--dry-run"]);
    r.expect_code(0);
    for needle in [
        "Preflight",
        "Backup verify",
        "Migration check",
        "Pre-restore snapshot",
        "Post-restore verify",
        "postgres.main",
        "docker.volume.",
        "paths.media",
        "redis.sessions",
        &s.db1.name,
    ] {
        assert!(
            r.stderr.contains(needle),
            "{needle} missing from the plan:\n{}",
            r.stderr
        );
    }
    assert_eq!(state(&s), wrecked);
    assert_eq!(restic_snapshot_count(&s.sb.repo()), 1);
}

#[test]
fn without_a_terminal_and_without_yes_nothing_happens() {
    let s = stack();
    wreck(&s);
    let wrecked = state(&s);
    let r = s.sb.run(&["restore", "good"]);
    r.expect_code(4);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert_eq!(state(&s), wrecked);
}

#[test]
fn flush_redis_empties_a_cache_instead_of_restoring_it() {
    let s = stack();
    let cache = RedisServer::start();
    let mut c = cache.client().get_connection().unwrap();
    redis::cmd("SET")
        .arg("cached")
        .arg("1")
        .query::<()>(&mut c)
        .unwrap();
    let text = format!(
        "{}\n[redis.cache]\nurl = \"{}\"\nrole = \"cache\"\n",
        config(&s, "", ""),
        cache.url()
    );
    s.sb.write_config("shop", &text);
    s.sb.run(&[
        "restore",
        "good",
        "--yes",
        "--flush-redis",
        "--only",
        "redis",
    ])
    .expect_code(0);
    let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 0);
}

/// A one-shot local HTTP server answering `status` to every request.
fn http_server(status: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    port
}

#[test]
fn health_checks_must_pass_after_a_restore_or_it_is_rolled_back() {
    let s = stack();
    let port = http_server("200 OK");
    let checks = format!(
        "\n[[health]]\nname = \"web\"\nhttp = \"http://127.0.0.1:{port}/healthz\"\n\n\
         [[health]]\nname = \"customers\"\nsql = \"SELECT count(*) > 0 FROM customers\"\npostgres = \"main\"\n\n\
         [[health]]\nname = \"probe\"\ncommand = \"true\"\n"
    );
    s.sb.write_config("shop", &format!("{}{checks}", config(&s, "", "")));
    wreck(&s);
    let r = s.sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("web: GET") && r.stderr.contains("customers: SQL ok"),
        "{}",
        r.stderr
    );

    wreck_again(&s);
    let wrecked = state(&s);
    let failing = format!("{checks}\n[[health]]\nname = \"app-smoke\"\ncommand = \"false\"\n");
    s.sb.write_config("shop", &format!("{}{failing}", config(&s, "", "")));
    let r = s.sb.run(&["restore", "good", "--yes"]);
    r.expect_code(1);
    expect_rolled_back_by(&r, "app-smoke");
    assert_eq!(state(&s), wrecked);
}

/// Breaks the stack a second time (the image is already back).
fn wreck_again(s: &Stack) {
    sql(&s.db1, "DELETE FROM orders WHERE id % 3 = 0");
    std::fs::write(s.media.join("two.jpg"), "broken").unwrap();
}

/// A stack of one directory, `media`, of `count` small files named
/// `f0`… with as many digits as the last (`f00`…`f19` for 20), its
/// repository initialised; returns the directory.
fn files_only(sb: &Sandbox, count: usize) -> std::path::PathBuf {
    let media = sb.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let width = (count - 1).to_string().len();
    for i in 0..count {
        std::fs::write(media.join(format!("f{i:0width$}")), format!("file {i}\n")).unwrap();
    }
    sb.write_config(
        "files",
        &format!("[paths.media]\npath = \"{}\"\n", media.display()),
    );
    sb.init();
    media
}

/// More files than one read-back batch (4096, decision 0052): `verify`
/// and the restore's verify step read every one, and the restore brings
/// back every one, the first and the last of the set included.
#[test]
fn a_tree_of_more_files_than_a_read_back_batch_is_verified_and_restored_whole() {
    let sb = Sandbox::new();
    let media = files_only(&sb, 4500);
    sb.run(&["backup", "--name", "many"]).expect_code(0);
    let before = dir_state(&media, |p| std::fs::read_to_string(p).unwrap());

    let r = sb.run(&["--json", "verify", "many"]);
    r.expect_code(0);
    let set = &r.json()["sets"][0];
    // The 4500 and the set's own files (manifest, config).
    let files = set["files"].as_u64().unwrap();
    assert!((4500..4510).contains(&files), "{set}");
    assert_eq!(set["problem_count"], 0, "{set}");

    std::fs::write(media.join("f0000"), "changed").unwrap();
    std::fs::remove_file(media.join("f4499")).unwrap();
    let r = sb.run(&["--json", "restore", "many", "--yes"]);
    r.expect_code(0);
    let read = r.json()["steps"][1]["detail"].as_str().unwrap().to_string();
    assert!(read.starts_with("4500 file(s)"), "{read}");
    assert_eq!(
        dir_state(&media, |p| std::fs::read_to_string(p).unwrap()),
        before
    );
}

/// A set whose `CHECKSUM.sha256` disagrees with a file it holds (written
/// so through a test's knob): `verify` names the file, the restore's
/// verify step refuses before anything changes, and a drill fails the
/// component.
#[test]
fn a_file_that_disagrees_with_its_checksum_line_refuses_the_restore() {
    let sb = Sandbox::new();
    let media = files_only(&sb, 20);
    let mut cmd = sb.command(bin(), sb.path(), None);
    cmd.args(["backup", "--name", "lying"]).env(
        "FAILPOINTS",
        "backup-checksum-wrong=return(paths/media/f07)",
    );
    Run::from(cmd.output().unwrap()).expect_code(0);
    let zeros = "0".repeat(64);

    let r = sb.run(&["--json", "verify", "lying"]);
    r.expect_code(3);
    let report = r.json_report();
    let set = &report["sets"][0];
    assert_eq!(set["problem_count"], 1, "{set}");
    let problem = set["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("paths/media/f07: SHA-256 mismatch")
            && problem.contains(&format!("expected {zeros}")),
        "{problem}"
    );

    std::fs::write(media.join("f03"), "changed").unwrap();
    let before = dir_state(&media, |p| std::fs::read_to_string(p).unwrap());
    let r = sb.run(&["restore", "lying", "--yes"]);
    r.expect_code(3);
    assert!(
        r.stderr
            .contains("paths/media/f07 does not match its checksum")
            && r.stderr.contains(&format!("expected {zeros}"))
            && r.stderr.contains("nothing was changed"),
        "{}",
        r.stderr
    );
    assert_eq!(
        dir_state(&media, |p| std::fs::read_to_string(p).unwrap()),
        before,
        "a refused restore changed the directory"
    );
    let listed = sb.run(&["--json", "list"]);
    listed.expect_code(0);
    assert!(
        !listed.stdout.contains("pre-restore-"),
        "a refused restore took a pre-restore set: {}",
        listed.stdout
    );

    let r = sb.run(&["drill", "lying"]);
    r.expect_code(3);
    assert!(
        r.stdout
            .contains("paths/media/f07 does not match its checksum")
            || r.stderr
                .contains("paths/media/f07 does not match its checksum"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

/// Every entry under `dir` (symbolic links not followed): its path
/// relative to `dir`, its full path and its metadata.
fn tree_entries(dir: &std::path::Path) -> Vec<(String, std::path::PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            if m.is_dir() {
                todo.push(path.clone());
            }
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            out.push((rel, path, m));
        }
    }
    out
}

/// Every regular file under `dir` (relative path) with its inode.
fn inodes(dir: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    tree_entries(dir)
        .into_iter()
        .filter(|(_, _, m)| m.is_file())
        .map(|(rel, _, m)| (rel, m.ino()))
        .collect()
}

/// Sets the extended attribute `name` on `path` (through Python's `os`:
/// the standard library has no call for it).
fn set_xattr(path: &std::path::Path, name: &str) {
    let ok = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, sys; os.setxattr(sys.argv[1], sys.argv[2], b'x')",
        ])
        .arg(path)
        .arg(name)
        .status()
        .unwrap()
        .success();
    assert!(ok, "setting {name} on {}", path.display());
}

/// The names of `path`'s extended attributes, as Python lists them.
fn xattrs(path: &std::path::Path) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(sorted(os.listxattr(sys.argv[1])))",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `text` into `path` and puts its mtime back: a change that size
/// and mtime do not show.
fn rewrite_keeping_mtime(path: &std::path::Path, text: &str) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

/// `media` of `files_only(20)` plus `keep/` (5 files) and `sub/` (5
/// files), backed up as set `base`; returns the set's state of every file
/// and the mtime of `keep/`.
fn tree_with_subdirs(sb: &Sandbox) -> (std::path::PathBuf, String, std::time::SystemTime) {
    let media = files_only(sb, 20);
    for d in ["keep", "sub"] {
        std::fs::create_dir(media.join(d)).unwrap();
        for i in 0..5 {
            std::fs::write(media.join(d).join(format!("{d}{i}")), format!("{d} {i}\n")).unwrap();
        }
    }
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    std::fs::File::open(media.join("keep"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    sb.run(&["backup", "--name", "base"]).expect_code(0);
    let state = tree_state(&media);
    (media, state, old)
}

/// Every file under `dir` with its content and mode, and what each entry is.
fn tree_state(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut out: Vec<String> = tree_entries(dir)
        .into_iter()
        .map(|(rel, path, m)| {
            let mode = m.permissions().mode() & 0o7777;
            if m.is_dir() {
                format!("{rel}/ {mode:o}")
            } else if m.is_file() {
                let text = std::fs::read_to_string(path).unwrap();
                format!("{rel} {mode:o} {text:?}")
            } else {
                format!("{rel} not a file or directory")
            }
        })
        .collect();
    out.sort();
    out.join("\n")
}

/// Decision 0058: files the live tree holds unchanged are linked into the
/// restored tree (the same inodes); a file changed in any way the link's
/// checks see (content behind an unchanged size and mtime, mode, an
/// extended attribute, removal), and every file behind a directory
/// replaced by a symbolic link, is written from the set instead. The restored tree is the set's, file
/// modes and a linked-into directory's mtime included, and the files the
/// symbolic link pointed at are neither linked nor changed.
#[test]
fn unchanged_files_are_linked_and_changed_ones_written_from_the_set() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let sb = Sandbox::new();
    let (media, want, keep_mtime) = tree_with_subdirs(&sb);
    let before = inodes(&media);

    std::fs::write(media.join("f00"), "a longer, different content\n").unwrap();
    rewrite_keeping_mtime(&media.join("f01"), "FILE 1\n");
    std::fs::remove_file(media.join("f02")).unwrap();
    std::fs::set_permissions(media.join("f03"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(media.join("extra"), "not in the set").unwrap();
    set_xattr(&media.join("f04"), "user.note");
    // `sub` becomes a relative link to a directory outside holding the
    // same files (the very inodes the set was taken from).
    let outside = sb.path().join("outside");
    std::fs::rename(media.join("sub"), &outside).unwrap();
    std::os::unix::fs::symlink("../outside", media.join("sub")).unwrap();
    let outside_inodes = inodes(&outside);

    let r = sb.run(&["restore", "base", "--yes", "-v"]);
    r.expect_code(0);
    assert!(
        r.stderr
            .contains("paths.media: 20 unchanged file(s) linked"),
        "{}",
        r.stderr
    );
    assert_eq!(tree_state(&media), want);
    let after = inodes(&media);
    for (rel, ino) in &after {
        let written =
            ["f00", "f01", "f02", "f03", "f04"].contains(&rel.as_str()) || rel.starts_with("sub/");
        assert_eq!(
            before[rel] == *ino,
            !written,
            "{rel}: inode {ino}, before {}",
            before[rel]
        );
    }
    assert_eq!(after.len(), 30);
    assert_eq!(
        xattrs(&media.join("f04")),
        "[]",
        "f04 kept the live file's attribute"
    );
    for (rel, ino) in &outside_inodes {
        let m = std::fs::metadata(outside.join(rel)).unwrap();
        assert_eq!((m.ino(), m.nlink()), (*ino, 1), "{rel} outside was linked");
        assert!(
            after.values().all(|i| i != ino),
            "{rel} outside is in the restored tree"
        );
    }
    assert_eq!(
        std::fs::metadata(media.join("keep"))
            .unwrap()
            .modified()
            .unwrap(),
        keep_mtime
    );
    let leftovers: Vec<_> = std::fs::read_dir(sb.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("media."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A file written while the restore runs, between the hashing of the live
/// files and their linking (held there by a test's knob), is not linked:
/// its content there is not the one checked. It is restored from the set,
/// and the restored tree is the set's.
#[test]
fn a_file_changed_between_the_hash_and_the_link_is_written_from_the_set() {
    let sb = Sandbox::new();
    let (media, want, _) = tree_with_subdirs(&sb);
    let before = inodes(&media);
    std::fs::write(media.join("f00"), "changed before the restore\n").unwrap();

    let mut cmd = sb.command(bin(), sb.path(), None);
    cmd.args(["restore", "base", "--yes", "-v"])
        .env("FAILPOINTS", "restore-tree-linking=sleep(4000)")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // The staging directory holds the restored f00 once the restore has
    // written what it does not link; the knob then holds it for 4 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let staged = loop {
        let found = std::fs::read_dir(sb.path()).unwrap().find_map(|e| {
            let e = e.unwrap();
            let n = e.file_name().to_string_lossy().to_string();
            (n.starts_with("media.sb-restore-") && e.path().join("f00").exists()).then(|| e.path())
        });
        if let Some(p) = found {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no staging directory");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    rewrite_keeping_mtime(&media.join("f05"), "FILE 5\n");
    let r = Run::from(child.wait_with_output().unwrap());
    r.expect_code(0);
    assert!(!staged.exists(), "{} left", staged.display());
    assert!(
        r.stderr
            .contains("paths.media: 1 file(s) changed while the restore ran")
            && r.stderr
                .contains("paths.media: 28 unchanged file(s) linked"),
        "{}",
        r.stderr
    );
    assert_eq!(tree_state(&media), want);
    let after = inodes(&media);
    assert_ne!(after["f05"], before["f05"]);
    assert_ne!(after["f00"], before["f00"]);
    assert_eq!(after["f06"], before["f06"]);
}
