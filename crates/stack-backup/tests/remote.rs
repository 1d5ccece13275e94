//! Repositories on S3-compatible object storage (a real moto server started
//! by `scripts/services.sh`, or a private one per test), off-site copies,
//! the local cache, clear errors, and a server killed mid-upload.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::backend::{endpoint, new_bucket, restic_s3, s3_credentials, ACCESS_KEY};
use common::*;

fn s3_log() -> PathBuf {
    PathBuf::from(
        std::env::var("SB_TEST_S3_LOG").unwrap_or_else(|_| "/var/log/moto-stack-backup.log".into()),
    )
}

fn moto_server() -> String {
    std::env::var("SB_TEST_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into())
}

/// A sandbox whose repository is `url`, with AWS credentials in its env.
fn s3_sandbox(url: &str, secret: &str, extra: &str) -> Sandbox {
    let mut sb = Sandbox::new();
    let text = format!(
        "[stack]\nname = \"shop\"\nmin-free-space = \"1MiB\"\n\n[repository]\nurl = \"{url}\"\ncache-dir = \"{}\"\n\n{extra}",
        sb.path().join("cache").display()
    );
    std::fs::write(sb.config(), text).unwrap();
    s3_credentials(&mut sb, secret);
    sb
}

/// Stock restic restores set `name` from the S3 repository and
/// `sha256sum -c` passes on it.
fn restic_s3_restore_verified(url: &str, secret: &str, name: &str) {
    let out = tempfile::tempdir().unwrap();
    let tag = format!("name:{name}");
    restic_s3(
        url,
        secret,
        &[
            "restore",
            "latest",
            "--tag",
            &tag,
            "--target",
            &out.path().to_string_lossy(),
        ],
    )
    .expect_code(0);
    sha256sum_check(out.path()).expect_code(0);
}

/// The server's request log from `offset` on, once it has settled.
fn log_since(log: &Path, offset: u64) -> String {
    let all = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(&all[(offset as usize).min(all.len())..]).into_owned()
}

/// [`log_since`] once the server has written its last lines.
fn settled_log_since(log: &Path, offset: u64) -> String {
    std::thread::sleep(Duration::from_millis(400));
    log_since(log, offset)
}

fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// Object GETs under `/{bucket}/{prefix}/{dir}/` in a request log.
fn gets(log: &str, bucket: &str, prefix: &str, dir: &str) -> usize {
    let needle = format!("\"GET /{bucket}/{prefix}/{dir}/");
    log.lines().filter(|l| l.contains(&needle)).count()
}

fn set_names(sb: &Sandbox, extra_env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut sb2 = Sandbox {
        dir: tempfile::tempdir().unwrap(),
        env: sb.env.clone(),
    };
    for (k, v) in extra_env {
        sb2.env.push(((*k).into(), (*v).into()));
    }
    let r = sb2.run(&["--config", &sb.config().to_string_lossy(), "--json", "list"]);
    names_and_tiers(&r)
}

/// The round trip through S3 (backup, stock restic, restore) is in
/// backends.rs; this is what only a remote repository has.
#[test]
fn the_cache_spares_the_index_and_a_read_back_fetches_whole_packs() {
    let secret = "sbtest-secret-key";
    let bucket = new_bucket(&endpoint());
    let url = format!("s3:{}/{bucket}/shop", endpoint());
    let media_dir = tempfile::tempdir().unwrap();
    let media = media_dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("one.jpg"), "one".repeat(1000)).unwrap();
    let thumbs = media.join("thumbs");
    std::fs::create_dir_all(&thumbs).unwrap();
    for i in 0..400 {
        std::fs::write(
            thumbs.join(format!("t{i}.png")),
            format!("thumb {i}\n").repeat(i % 7 + 1),
        )
        .unwrap();
    }
    let sb = s3_sandbox(
        &url,
        secret,
        &format!("[paths.media]\npath = \"{}\"\n", media.display()),
    );
    sb.init();
    sb.run(&["backup", "--name", "first"]).expect_code(0);
    std::fs::write(media.join("two.jpg"), "two").unwrap();
    sb.run(&["backup", "--name", "second"]).expect_code(0);

    // The cache: a second `list` reads no snapshot file, a second `show`
    // (which loads the index) reads no index file from the server.
    let log = s3_log();
    sb.run(&["list"]).expect_code(0);
    let at = log_len(&log);
    sb.run(&["list"]).expect_code(0);
    let second = settled_log_since(&log, at);
    assert!(
        second.contains(&format!("/{bucket}")),
        "the request log {} shows no request of the second list",
        log.display()
    );
    assert_eq!(gets(&second, &bucket, "shop", "snapshots"), 0, "{second}");
    sb.run(&["show", "second"]).expect_code(0);
    let at = log_len(&log);
    let shown = sb.run(&["show", "second"]);
    shown.expect_code(0);
    assert!(shown.stdout.contains("second"));
    let second = settled_log_since(&log, at);
    assert_eq!(gets(&second, &bucket, "shop", "index"), 0, "{second}");
    // Without the cache every index file is read again.
    let nocache = tempfile::tempdir().unwrap();
    let at = log_len(&log);
    let mut sb_nc = Sandbox {
        dir: tempfile::tempdir().unwrap(),
        env: sb.env.clone(),
    };
    sb_nc.env.push((
        "XDG_CACHE_HOME".into(),
        nocache.path().to_string_lossy().into(),
    ));
    let text = std::fs::read_to_string(sb.config())
        .unwrap()
        .replace("cache-dir", "# cache-dir");
    std::fs::write(sb_nc.config(), text).unwrap();
    sb_nc.run(&["show", "second"]).expect_code(0);
    let cold = settled_log_since(&log, at);
    assert!(gets(&cold, &bucket, "shop", "index") >= 1, "{cold}");
    assert!(
        nocache.path().join("stack-backup").is_dir(),
        "the default cache lives in $XDG_CACHE_HOME/stack-backup"
    );

    // Reading a set back (the verify step reads every file) fetches whole
    // packs, not one range per file.
    let at = log_len(&log);
    sb.run(&["restore", "first", "--dry-run"]).expect_code(0);
    let verify = settled_log_since(&log, at);
    let pack_reads = gets(&verify, &bucket, "shop", "data");
    assert!(
        (1..40).contains(&pack_reads),
        "{pack_reads} pack reads to verify 400+ files:\n{verify}"
    );
}

#[test]
fn copy_local_to_s3_and_back_keeps_names_tiers_and_manifests() {
    let secret = "sbtest-secret-key";
    let sb = {
        let mut sb = Sandbox::new();
        sb.env.push(("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()));
        sb.env.push(("AWS_SECRET_ACCESS_KEY".into(), secret.into()));
        sb
    };
    let data = sb.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "alpha").unwrap();
    sb.write_config(
        "shop",
        &format!("[paths.data]\npath = \"{}\"\n", data.display()),
    );
    sb.init();
    sb.run(&["backup", "--name", "one"]).expect_code(0);
    std::fs::write(data.join("b.txt"), "beta").unwrap();
    sb.run(&["backup", "--name", "two"]).expect_code(0);
    let local_sets = set_names(&sb, &[]);
    assert_eq!(local_sets.len(), 2);

    let bucket = new_bucket(&endpoint());
    let url = format!("s3:{}/{bucket}/offsite", endpoint());
    // Without --init a missing target is an error that says what to do.
    let r = sb.run(&["copy", "--all", "--to", &url]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("--init"), "{}", r.stderr);

    let r = sb.run(&["--json", "copy", "--all", "--to", &url, "--init"]);
    r.expect_code(0);
    let rep = r.json();
    assert_eq!(rep["copied"].as_array().unwrap().len(), 2, "{rep}");
    assert_eq!(rep["initialized"], true);
    assert_eq!(
        set_names(&sb, &[("STACK_BACKUP_REPOSITORY", &url)]),
        local_sets
    );
    restic_s3(&url, secret, &["check", "--read-data"]).expect_code(0);

    // Again: nothing new.
    let r = sb.run(&["--json", "copy", "--all", "--to", &url]);
    r.expect_code(0);
    let rep = r.json();
    assert_eq!(rep["copied"].as_array().unwrap().len(), 0, "{rep}");
    assert_eq!(rep["skipped"].as_array().unwrap().len(), 2, "{rep}");

    // Another repository's set of the same name is a conflict: refused,
    // nothing copied.
    let other = Sandbox {
        dir: tempfile::tempdir().unwrap(),
        env: sb.env.clone(),
    };
    other.write_config(
        "shop",
        &format!("[paths.data]\npath = \"{}\"\n", data.display()),
    );
    other.init();
    other.run(&["backup", "--name", "one"]).expect_code(0);
    let r = other.run(&["copy", "one", "--to", &url]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(
        r.stderr
            .contains("already holds another backup set named `one`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        set_names(&sb, &[("STACK_BACKUP_REPOSITORY", &url)]),
        local_sets
    );

    // A new set, copied by name; then back from S3 into a new local repo,
    // with a different password for the target.
    std::fs::write(data.join("c.txt"), "gamma").unwrap();
    sb.run(&["backup", "--name", "three"]).expect_code(0);
    let r = sb.run(&["--json", "copy", "three", "--to", &url]);
    r.expect_code(0);
    assert_eq!(r.json()["copied"][0]["name"], "three");

    let back = sb.path().join("back-repo");
    let pwfile = sb.path().join("back.key");
    std::fs::write(&pwfile, "another-password-5678\n").unwrap();
    let mut from_s3 = Sandbox {
        dir: tempfile::tempdir().unwrap(),
        env: sb.env.clone(),
    };
    from_s3
        .env
        .push(("STACK_BACKUP_REPOSITORY".into(), url.clone()));
    let r = from_s3.run(&[
        "--config",
        &sb.config().to_string_lossy(),
        "--json",
        "copy",
        "--tier",
        "backups",
        "--to",
        &back.to_string_lossy(),
        "--to-password-file",
        &pwfile.to_string_lossy(),
        "--init",
    ]);
    r.expect_code(0);
    assert_eq!(r.json()["copied"].as_array().unwrap().len(), 3);
    let back_sets = set_names(
        &sb,
        &[
            ("STACK_BACKUP_REPOSITORY", &back.to_string_lossy()),
            ("STACK_BACKUP_PASSWORD", "another-password-5678"),
        ],
    );
    assert_eq!(back_sets, set_names(&sb, &[]));
    // The manifest travelled: stock restic restores and verifies it.
    let out = tempfile::tempdir().unwrap();
    let r = Command::new("restic")
        .arg("-r")
        .arg(&back)
        .args(["restore", "latest", "--tag", "name:two", "--target"])
        .arg(out.path())
        .env("RESTIC_PASSWORD", "another-password-5678")
        .env("RESTIC_CACHE_DIR", out.path().join(".cache"))
        .output()
        .unwrap();
    assert!(r.status.success(), "{r:?}");
    sha256sum_check(out.path()).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(out.path().join("paths/data/b.txt")).unwrap(),
        "beta"
    );
}

#[test]
fn remote_errors_are_clear_and_secrets_never_shown() {
    let secret = unique("SbSecretValue").replace('_', "Z");
    // Unreachable endpoint.
    let port = free_port();
    let sb = s3_sandbox(&format!("s3:http://127.0.0.1:{port}/b/p"), &secret, "");
    let t = Instant::now();
    let r = sb.run(&["list"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("cannot reach"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        r.stderr
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );

    // Missing bucket.
    let sb = s3_sandbox(
        &format!("s3:{}/no-such-bucket-sbt/p", endpoint()),
        &secret,
        "",
    );
    let r = sb.run(&["init"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("bucket does not exist") && r.stderr.contains("no-such-bucket-sbt"),
        "{}",
        r.stderr
    );

    // An OpenDAL service that is not compiled in (decision 0027) fails at
    // open, naming the ones that are: exactly those the README offers.
    let sb = s3_sandbox("opendal:ftp", &secret, "");
    let r = sb.run(&["list"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("scheme: ftp")
            && r.stderr
                .contains("available: azblob, b2, file, fs, gcs, memory, s3, sftp, webdav }"),
        "{}",
        r.stderr
    );

    // Missing credentials: a usage error naming the variables.
    let bucket = new_bucket(&endpoint());
    let url = format!("s3:{}/{bucket}/p", endpoint());
    let mut sb = s3_sandbox(&url, &secret, "");
    sb.env.retain(|(k, _)| !k.starts_with("AWS_"));
    let r = sb.run(&["list"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("AWS_ACCESS_KEY_ID"), "{}", r.stderr);

    // ... found in the shared credentials file instead.
    let creds = sb.path().join(".aws");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(
        creds.join("credentials"),
        format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    sb.init();

    // A secret in [repository.options] is refused (it would be stored).
    let sb2 = s3_sandbox(&url, &secret, "");
    let text = std::fs::read_to_string(sb2.config()).unwrap().replace(
        "[repository]\n",
        "[repository]\noptions = { secret_access_key = \"x\" }\n",
    );
    std::fs::write(sb2.config(), text).unwrap();
    let r = sb2.run(&["list"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("STACK_BACKUP_REPOSITORY_OPTION_SECRET_ACCESS_KEY"),
        "{}",
        r.stderr
    );

    // The secret key appears in no output at -vv, nor in the stored config.
    let bucket = new_bucket(&endpoint());
    let url = format!("s3:{}/{bucket}/p", endpoint());
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f"), "x").unwrap();
    let sb = s3_sandbox(
        &url,
        &secret,
        &format!("[paths.data]\npath = \"{}\"\n", data.path().display()),
    );
    let mut all = String::new();
    for args in [
        &["-vv", "init"][..],
        &["-vv", "backup", "--name", "s"],
        &["-vv", "list"],
        &["-vv", "show", "s"],
        &["-vv", "--json", "list"],
        &[
            "-vv",
            "copy",
            "s",
            "--to",
            &sb.path().join("copy").to_string_lossy(),
            "--init",
        ],
    ] {
        let r = sb.run(args);
        r.expect_code(0);
        all.push_str(&r.stdout);
        all.push_str(&r.stderr);
    }
    assert!(all.contains("DEBUG"), "-vv logs at debug level");
    assert!(!all.contains(&secret), "the AWS secret key was printed");
    let stored = restic_s3(
        &url,
        &secret,
        &["dump", "latest", "/stack-backup/stack-backup.toml"],
    );
    stored.expect_code(0);
    assert!(stored.stdout.contains(&bucket), "{}", stored.stdout);
    assert!(!stored.stdout.contains(&secret), "{}", stored.stdout);
    let manifest = restic_s3(
        &url,
        &secret,
        &["dump", "latest", "/stack-backup/manifest.json"],
    );
    assert!(!manifest.stdout.contains(&secret));
}

/// A private moto server that records every request it receives, so that
/// a restart (after `kill -9`) can replay them and come back with the same
/// buckets and objects: moto keeps its state in memory only.
struct RecordingMoto {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RecordingMoto {
    fn start() -> Self {
        let mut m = Self {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        m.spawn();
        m
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("requests.log")
    }

    fn recording(&self) -> PathBuf {
        self.dir.path().join("recording.jsonl")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "1")
            .env("MOTO_RECORDER_FILEPATH", self.recording())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("moto_server is installed (scripts/services.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("{}/", self.endpoint())])
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9`: the server dies mid-request, as a crash would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and replays the recorded requests (a
    /// torn last line, written as the server died, is dropped first).
    fn restart(&mut self) {
        let text = std::fs::read_to_string(self.recording()).unwrap_or_default();
        let mut whole: Vec<&str> = text
            .lines()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
            .collect();
        if !text.ends_with('\n') && !whole.is_empty() && !text.is_empty() {
            // The last line may parse yet be cut short; keep only lines that
            // ended with a newline.
            let complete = text.rsplit_once('\n').map_or("", |(a, _)| a);
            whole = complete
                .lines()
                .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
                .collect();
        }
        std::fs::write(self.recording(), whole.join("\n") + "\n").unwrap();
        self.spawn();
        let out = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                &format!("{}/moto-api/recorder/replay-recording", self.endpoint()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "replaying the recording failed: {out:?}"
        );
    }
}

impl Drop for RecordingMoto {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn s3_server_killed_mid_upload_fails_the_backup_and_the_repository_stays_consistent() {
    let secret = "sbtest-secret-key";
    let mut moto = RecordingMoto::start();
    let bucket = new_bucket(&moto.endpoint());
    let url = format!("s3:{}/{bucket}/shop", moto.endpoint());
    let data = tempfile::tempdir().unwrap();
    // Incompressible data, so that it takes a while to upload.
    let mut bytes = vec![0u8; 48 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(data.path().join("big.bin"), &bytes).unwrap();
    std::fs::write(data.path().join("small.txt"), "small").unwrap();
    let mut sb = s3_sandbox(
        &url,
        secret,
        &format!("[paths.data]\npath = \"{}\"\n", data.path().display()),
    );
    // Few retries, so that the failure comes quickly.
    sb.env
        .push(("STACK_BACKUP_REPOSITORY_OPTION_RETRY".into(), "1".into()));
    sb.init();
    let init_log = log_len(&moto.log());

    // Start a backup; kill the server once data packs are being uploaded
    // (`init` PUTs the empty `data/XX/` directories: those don't count).
    let mut cmd = Command::new(bin());
    cmd.current_dir(sb.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", sb.path())
        .args(["backup", "--name", "killed"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &sb.env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let needle = format!("PUT /{bucket}/shop/data/");
    loop {
        let log = log_since(&moto.log(), init_log);
        if log
            .lines()
            .any(|l| l.contains(&needle) && !l.contains("/ HTTP/"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no pack upload seen:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    }
    moto.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("the interrupted backup said:\n{stderr}");
    assert_ne!(out.status.code(), Some(0), "the backup must fail: {stderr}");
    assert!(
        stderr.contains(&url) && stderr.contains("cannot reach"),
        "the error names the repository and says it is unreachable:\n{stderr}"
    );

    // The server comes back with what it had stored: the repository is
    // consistent for stock restic, and holds no set from the failed run.
    moto.restart();
    // The failed run could not remove its repository lock while the
    // server was down; its process is gone, so restic's `unlock` finds it
    // stale and removes it (restic 0.14's exclusive `check` would refuse
    // beside it otherwise).
    let r = restic_s3(&url, secret, &["list", "locks", "--no-lock"]);
    r.expect_code(0);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    restic_s3(&url, secret, &["unlock"]).expect_code(0);
    restic_s3(&url, secret, &["check"]).expect_code(0);
    assert!(set_names(&sb, &[]).is_empty());

    // The next backup succeeds and is whole.
    sb.run(&["backup", "--name", "after"]).expect_code(0);
    restic_s3(&url, secret, &["check", "--read-data"]).expect_code(0);
    assert_eq!(
        set_names(&sb, &[]),
        vec![("after".to_string(), "backups".to_string())]
    );
    restic_s3_restore_verified(&url, secret, "after");
}
