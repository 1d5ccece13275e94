//! Sets are input (issue 13): a set whose manifest names what the config
//! does not have, a tampered export with recomputed checksums, special
//! files in exports, passwords of every URL form, and what child processes
//! inherit — each against the real services.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

/// A directory of wrappers (first on PATH) that log every call of the
/// programs a restore or an import would run, then run the real one.
fn logging_wrappers() -> (Wrappers, PathBuf) {
    let w = Wrappers::new();
    let log = w.file("calls.log");
    std::fs::write(&log, "").unwrap();
    for tool in [
        "docker",
        "pg_restore",
        "pg_dump",
        "psql",
        "redis-cli",
        "redis-server",
    ] {
        let real = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
        w.script(
            tool,
            &format!(
                "echo \"{tool} $*\" >> {}\nexec {real} \"$@\"",
                log.display()
            ),
        );
    }
    (w, log)
}

fn run_with(sb: &Sandbox, w: &Wrappers, args: &[&str]) -> Run {
    let mut cmd = sb.command(bin(), sb.path(), Some(w.path()));
    cmd.args(args);
    Run::from(cmd.output().unwrap())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

struct Fixture {
    sb: Sandbox,
    db: TempDb,
    other: TempDb,
    img: TempImage,
    vol: TempVolume,
    bystander: TempVolume,
    media: PathBuf,
}

fn fixture() -> Fixture {
    let sb = Sandbox::new();
    let db = TempDb::seeded(50, "a1b2c3d4e5f6");
    let other = TempDb::seeded(30, "bbbb0000cccc");
    let img = TempImage::build("untrusted");
    let vol = TempVolume::new();
    std::fs::write(vol.mountpoint().join("a.txt"), "volume file").unwrap();
    let bystander = TempVolume::new();
    std::fs::write(bystander.mountpoint().join("b.txt"), "bystander").unwrap();
    let media = sb.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("one.jpg"), "one").unwrap();
    let f = Fixture {
        sb,
        db,
        other,
        img,
        vol,
        bystander,
        media,
    };
    f.configure(&f.db.url(), true);
    f.sb.init();
    f
}

impl Fixture {
    fn configure(&self, db_url: &str, with_volume: bool) {
        let volumes = if with_volume {
            format!("\"{}\"", self.vol.name)
        } else {
            String::new()
        };
        self.sb.write_config(
            "shop",
            &format!(
                "[postgres.main]\nurl = \"{db_url}\"\n\n[docker]\nimages = [\"{}\"]\nvolumes = [{volumes}]\n\n[paths.media]\npath = \"{}\"\n",
                self.img.reference,
                self.media.display()
            ),
        );
    }

    /// Everything a refused restore or import must leave as it is.
    fn state(&self) -> String {
        format!(
            "db={} other={} vol={} bystander={} media={} image={}",
            db_tables(&self.db.name),
            db_tables(&self.other.name),
            read(&self.vol.mountpoint().join("a.txt")),
            read(&self.bystander.mountpoint().join("b.txt")),
            dir_state(&self.media, read),
            self.img.id()
        )
    }
}

#[test]
fn a_set_naming_what_the_config_lacks_is_refused_before_anything_runs() {
    let f = fixture();
    f.sb.run(&["backup", "--name", "orig"]).expect_code(0);
    // Changed since the backup: a restore that ran would put these back.
    sql(&f.db, "DELETE FROM orders");
    std::fs::write(f.vol.mountpoint().join("a.txt"), "changed").unwrap();
    std::fs::write(f.media.join("one.jpg"), "changed").unwrap();
    let before = f.state();
    let snapshots = restic_snapshot_count(&f.sb.repo());
    let (w, log) = logging_wrappers();

    // The config's database is another one now: the set's is not restored
    // into it, nor into the one the set names.
    f.configure(&f.other.url(), true);
    let r = run_with(&f.sb, &w, &["restore", "orig", "--yes"]);
    r.expect_code(4);
    assert!(
        r.stderr.contains("components.postgres.main.database"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&f.db.name), "{}", r.stderr);

    // A volume the config no longer has is not written.
    f.configure(&f.db.url(), false);
    let r = run_with(&f.sb, &w, &["restore", "orig", "--yes"]);
    r.expect_code(4);
    assert!(
        r.stderr
            .contains(&format!("components.docker.volume.{}.source", f.vol.name)),
        "{}",
        r.stderr
    );
    assert_eq!(f.state(), before);
    assert_eq!(read(&log), "", "a command ran");
    assert_eq!(restic_snapshot_count(&f.sb.repo()), snapshots);

    // The same set, with the config it was taken with, restores.
    f.configure(&f.db.url(), true);
    f.sb.run(&["restore", "orig", "--yes"]).expect_code(0);
    assert_eq!(read(&f.vol.mountpoint().join("a.txt")), "volume file");
}

/// Replaces the SHA-256 of `path` in a `sha256sum` file.
fn resum(file: &Path, path: &str, sha: &str) {
    let text: String = read(file)
        .lines()
        .map(|l| match l.split_once("  ") {
            Some((_, p)) if p == path => format!("{sha}  {p}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(file, text).unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    stack_backup_core::ledger::sha256_hex(bytes)
}

/// `mknod` of a character device or FIFO (the tests run as root).
fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod reads it only.
    let rc = unsafe { libc::mknod(c.as_ptr(), kind | 0o644, dev) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Writes a tampered manifest into a copy of an export and makes every
/// checksum agree with it, as an attacker who can edit the directory would.
fn tampered_copy(export: &Path, to: &Path, tamper: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(export)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
    let mpath = to.join("stack-backup/manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&read(&mpath)).unwrap();
    tamper(&mut m);
    let json = serde_json::to_vec_pretty(&m).unwrap();
    std::fs::write(&mpath, &json).unwrap();
    let sha = sha256(&json);
    resum(
        &to.join("stack-backup/CHECKSUM.sha256"),
        "stack-backup/manifest.json",
        &sha,
    );
    resum(
        &to.join("CHECKSUM.sha256"),
        "stack-backup/manifest.json",
        &sha,
    );
    let inner = std::fs::read(to.join("stack-backup/CHECKSUM.sha256")).unwrap();
    resum(
        &to.join("CHECKSUM.sha256"),
        "stack-backup/CHECKSUM.sha256",
        &sha256(&inner),
    );
    sha256sum_top(to).expect_code(0);
    to.to_path_buf()
}

fn sha256sum_top(dir: &Path) -> Run {
    Run::from(
        std::process::Command::new("sha256sum")
            .args(["-c", "--strict", "--quiet", "CHECKSUM.sha256"])
            .current_dir(dir)
            .output()
            .unwrap(),
    )
}

fn rename_component(m: &mut serde_json::Value, from: &str, to: &str) {
    let c = m["components"].as_object_mut().unwrap();
    let v = c.remove(from).unwrap_or_else(|| panic!("no {from}"));
    c.insert(to.to_string(), v);
}

#[test]
fn a_tampered_export_with_recomputed_checksums_is_refused() {
    let f = fixture();
    f.sb.run(&["backup", "--name", "orig"]).expect_code(0);
    let export = f.sb.path().join("export");
    f.sb.run(&["export", "orig", &export.to_string_lossy()])
        .expect_code(0);
    let before = f.state();
    let snapshots = restic_snapshot_count(&f.sb.repo());
    let (w, log) = logging_wrappers();
    let vol_id = format!("docker.volume.{}", f.vol.name);
    let by = f.bystander.name.clone();
    let other = f.other.name.clone();
    let img_id = format!("docker.image.{}", f.img.reference);

    type Tamper = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, String, Tamper)> = vec![
        (
            "database",
            "components.postgres.main.".into(),
            Box::new(move |m| m["components"]["postgres.main"]["database"] = other.into()),
        ),
        (
            "volume",
            format!("components.docker.volume.{by}.source"),
            Box::new({
                let (vol_id, by) = (vol_id.clone(), by.clone());
                move |m| {
                    let new = format!("docker.volume.{by}");
                    rename_component(m, &vol_id, &new);
                    m["components"][&new]["source"] = by.clone().into();
                    m["components"][&new]["path"] = format!("docker/volumes/{by}").into();
                }
            }),
        ),
        (
            "image",
            "components.docker.image.sbt-evil:latest.reference".into(),
            Box::new({
                let img_id = img_id.clone();
                move |m| {
                    rename_component(m, &img_id, "docker.image.sbt-evil:latest");
                    let c = &mut m["components"]["docker.image.sbt-evil:latest"];
                    c["reference"] = "sbt-evil:latest".into();
                    c["archive"] = "docker/images/sbt-evil_latest.tar".into();
                }
            }),
        ),
        (
            "tree path",
            "components.paths.media.path".into(),
            Box::new(|m| m["components"]["paths.media"]["path"] = "paths/../../outside".into()),
        ),
        (
            "artifact path",
            "artifacts[0].path".into(),
            Box::new(|m| m["artifacts"][0]["path"] = "../../etc/cron.d/evil".into()),
        ),
    ];
    for (i, (what, field, tamper)) in cases.into_iter().enumerate() {
        let dir = tampered_copy(&export, &f.sb.path().join(format!("t{i}")), tamper);
        let r = run_with(
            &f.sb,
            &w,
            &["import", &dir.to_string_lossy(), "--name", &format!("t{i}")],
        );
        r.expect_code(4);
        assert!(r.stderr.contains(&field), "{what}: {}", r.stderr);
        assert_eq!(restic_snapshot_count(&f.sb.repo()), snapshots, "{what}");
    }
    // A listed file replaced by a symlink to a host file, its checksum
    // recomputed: the host file is not stored.
    let dir = tampered_copy(&export, &f.sb.path().join("linked"), |_| {});
    let host = f.sb.path().join("host-secret");
    std::fs::write(&host, "host secret\n").unwrap();
    let listed = dir.join("paths/media/one.jpg");
    std::fs::remove_file(&listed).unwrap();
    std::os::unix::fs::symlink(&host, &listed).unwrap();
    resum(
        &dir.join("CHECKSUM.sha256"),
        "paths/media/one.jpg",
        &sha256(b"host secret\n"),
    );
    sha256sum_top(&dir).expect_code(0);
    let r = run_with(
        &f.sb,
        &w,
        &["import", &dir.to_string_lossy(), "--name", "linked"],
    );
    r.expect_code(3);
    assert!(r.stderr.contains("paths/media/one.jpg"), "{}", r.stderr);
    assert!(r.stderr.contains("symlink"), "{}", r.stderr);
    assert_eq!(restic_snapshot_count(&f.sb.repo()), snapshots);

    assert_eq!(read(&log), "", "a command ran");
    assert_eq!(f.state(), before);
    assert!(!f.sb.path().join("outside").exists());

    // The harness itself is sound: the same edit without a change in
    // meaning (the manifest re-serialised) imports.
    let dir = tampered_copy(&export, &f.sb.path().join("control"), |_| {});
    f.sb.run(&["import", &dir.to_string_lossy(), "--name", "control"])
        .expect_code(0);
}

#[test]
fn an_export_is_private_and_holds_no_setuid_bit_or_device_node() {
    let f = fixture();
    let suid = f.media.join("suid-tool");
    std::fs::write(&suid, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let sgid_dir = f.media.join("shared");
    std::fs::create_dir(&sgid_dir).unwrap();
    std::fs::set_permissions(&sgid_dir, std::fs::Permissions::from_mode(0o2775)).unwrap();
    mknod(&f.media.join("null"), libc::S_IFCHR, libc::makedev(1, 3));
    mknod(&f.media.join("pipe"), libc::S_IFIFO, 0);
    f.sb.run(&["backup", "--name", "orig"]).expect_code(0);

    let export = f.sb.path().join("export");
    f.sb.run(&["export", "orig", &export.to_string_lossy()])
        .expect_code(0);
    let root = std::fs::metadata(&export).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o700);
    assert_eq!(root.uid(), 0);
    let mut specials = Vec::new();
    let mut files = 0;
    for e in walkdir(&export) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        let ft = m.file_type();
        assert_eq!(
            m.mode() & 0o6000,
            0,
            "{} keeps a setuid/setgid bit",
            e.display()
        );
        if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
            specials.push(e.clone());
        }
        let rel = e
            .strip_prefix(&export)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if ft.is_file() && !rel.starts_with("paths/") && !rel.starts_with("docker/volumes/") {
            assert_eq!(m.mode() & 0o777, 0o600, "{rel}");
            files += 1;
        }
        if ft.is_dir() && !rel.starts_with("paths/") && !rel.starts_with("docker/volumes/") {
            assert_eq!(m.mode() & 0o777, 0o700, "{rel}");
        }
    }
    assert!(files >= 5, "{files}");
    assert_eq!(specials, Vec::<PathBuf>::new());
    // The file is there, only without its setuid bit; the directory's
    // setgid bit is gone too.
    let exported = export.join("paths/media/suid-tool");
    assert_eq!(std::fs::metadata(&exported).unwrap().mode() & 0o7777, 0o755);
    let shared = std::fs::metadata(export.join("paths/media/shared")).unwrap();
    assert_eq!(shared.mode() & 0o7777, 0o775);
    sha256sum_top(&export).expect_code(0);

    // --keep-special keeps device nodes and FIFOs, never setuid bits.
    let kept = f.sb.path().join("kept");
    f.sb.run(&["export", "orig", &kept.to_string_lossy(), "--keep-special"])
        .expect_code(0);
    let null = std::fs::symlink_metadata(kept.join("paths/media/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert!(std::fs::symlink_metadata(kept.join("paths/media/pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::metadata(kept.join("paths/media/suid-tool"))
            .unwrap()
            .mode()
            & 0o6000,
        0
    );
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.clone());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// `pw` percent-encoded for a URL's userinfo.
fn encode(pw: &str) -> String {
    pw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    walkdir(dir)
        .into_iter()
        .filter(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
                && std::fs::read(p)
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .collect()
}

#[test]
fn a_password_of_any_form_is_never_stored_shown_or_inherited() {
    // A role whose password holds every character that ends a URL part.
    let db = TempDb::seeded(10, "a1b2c3d4e5f6");
    let role = unique("sbt_pw");
    let password = "Qz/#?@:%k9";
    pg_client("postgres")
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}'; GRANT {} TO {role}",
            db.role
        ))
        .unwrap();
    let host = db.url();
    let host = host.rsplit_once('@').unwrap().1.rsplit_once('/').unwrap().0;
    let url = format!("postgres://{role}:{}@{host}/{}", encode(password), db.name);
    let sb = Sandbox::new();
    let mut sb = sb;
    // What no child may see.
    sb.env
        .push(("AWS_SECRET_ACCESS_KEY".into(), "aws-Secret-Key-42".into()));
    sb.env
        .push(("RESTIC_PASSWORD".into(), "restic-Secret-43".into()));
    sb.env
        .push(("STACK_BACKUP_SOMETHING".into(), "ours-44".into()));
    sb.env
        .push(("PGAPPNAME".into(), "inherited-pg-setting".into()));
    // pg_dump and docker print their environment, then run.
    let w = Wrappers::new();
    let envs = w.file("env.log");
    let real = pg_bin_dir();
    for tool in ["pg_dump", "pg_dumpall"] {
        w.script(
            tool,
            &format!(
                "env >> {}\nexec {}/{tool} \"$@\"",
                envs.display(),
                real.display()
            ),
        );
    }
    let media = sb.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("a"), "a").unwrap();
    let health = format!("http://probe:{}@127.0.0.1:9/health", encode(password));
    let raw_health = "http://probe:Qz/#?:k9@127.0.0.1:9/health";
    let config = |db_url: &str| {
        format!(
            "[postgres.main]\nurl = \"{db_url}\"\nbin-dir = \"{}\"\n\n[paths.media]\npath = \"{}\"\n\n[[health]]\nname = \"web\"\nhttp = \"{health}\"\n\n[[health]]\nname = \"raw\"\nhttp = \"{raw_health}\"\n",
            w.path().display(),
            media.display()
        )
    };
    sb.write_config("shop", &config(&url));
    sb.init();
    let ok = sb.run(&["--json", "backup", "--name", "first"]);
    ok.expect_code(0);
    let listed = sb.run(&["--json", "list"]);
    listed.expect_code(0);
    let shown = sb.run(&["--json", "restore", "first", "--dry-run"]);
    let export = sb.path().join("export");
    sb.run(&["export", "first", &export.to_string_lossy()])
        .expect_code(0);
    // A failing run: the database does not exist.
    sb.write_config(
        "shop",
        &config(&url.replace(&format!("/{}", db.name), "/sbt_no_such_db")),
    );
    let failed = sb.run(&["backup", "--name", "second"]);
    assert_ne!(failed.code, 0);
    assert!(
        failed.stderr.contains("sbt_no_such_db"),
        "{}",
        failed.stderr
    );
    let doctor = sb.run(&["--json", "doctor"]);

    let stored = restic(
        &sb.repo(),
        &[
            "dump",
            "--tag",
            "name:first",
            "latest",
            "/stack-backup/stack-backup.toml",
        ],
    );
    stored.expect_code(0);
    assert!(
        stored.stdout.contains("127.0.0.1:9/health"),
        "{}",
        stored.stdout
    );
    let forms = [
        password.to_string(),
        encode(password),
        "Qz/#?:k9".to_string(),
        "Qz%2F".to_string(),
        "Qz/".to_string(),
    ];
    for form in &forms {
        for (what, text) in [
            ("backup stdout", &ok.stdout),
            ("backup stderr", &ok.stderr),
            ("list", &listed.stdout),
            ("dry-run stdout", &shown.stdout),
            ("dry-run stderr", &shown.stderr),
            ("failed stdout", &failed.stdout),
            ("failed stderr", &failed.stderr),
            ("doctor stdout", &doctor.stdout),
            ("doctor stderr", &doctor.stderr),
            ("stored config", &stored.stdout),
        ] {
            assert!(
                !text.contains(form.as_str()),
                "{what} holds `{form}`: {text}"
            );
        }
        assert_eq!(
            files_holding(&export, form),
            Vec::<PathBuf>::new(),
            "{form}"
        );
    }

    // The children saw what they need and nothing of ours.
    let seen = read(&envs);
    assert!(seen.contains("PGPASSWORD="), "{seen}");
    assert!(seen.contains("PATH="), "{seen}");
    for secret in [
        "aws-Secret-Key-42",
        "restic-Secret-43",
        "ours-44",
        common::PASSWORD,
        "STACK_BACKUP_",
    ] {
        assert!(
            !seen.contains(secret),
            "a child inherited `{secret}`: {seen}"
        );
    }
    pg_client("postgres")
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .ok();
}
