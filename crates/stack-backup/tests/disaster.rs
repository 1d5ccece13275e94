//! Disaster recovery: a stack whose components are gone, not only wrong —
//! the database dropped, Redis flushed, the image, volume and directory
//! removed — is brought back by `restore` and by `emergency`, and a
//! restore that created the database drops only that database when it is
//! undone.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::backend::Backend;
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
    // A backup or a baseline of a stack without its database names it,
    // and what to do.
    for cmd in [&["backup"][..], &["immaculate", "create", "--name", "none"]] {
        let r = s.sb.run(cmd);
        assert_ne!(r.code, 0);
        assert!(
            r.stderr.contains("postgres.main")
                && r.stderr
                    .contains(&format!("database `{}` does not exist", s.db.name))
                && r.stderr.contains("`stack-backup restore` creates it"),
            "{cmd:?}: {}",
            r.stderr
        );
    }

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
    eprintln!("restore: {}", r.stdout.trim());
    assert!(
        r.stderr.contains("does not exist, nothing to keep: ")
            && r.stderr.contains("postgres.main"),
        "{}",
        r.stderr
    );
    assert!(leftover_databases_of(&[&s.db]).is_empty());

    destroy(&s);
    let r =
        s.sb.run(&["emergency", "--confirm", "--yes-i-am-sure=drgone"]);
    r.expect_code(0);
    assert_eq!(state(&s), s.good, "{}\n{}", r.stdout, r.stderr);
    eprintln!("emergency: {}", r.stdout.trim());
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

// --- A new host ---------------------------------------------------------------------

/// The second PostgreSQL cluster that plays the new host's server: made
/// once with `pg_createcluster` on its own port and kept across runs
/// (made again only when missing; started when stopped), with a superuser
/// that logs in with a password. Returns its port.
fn new_host_cluster() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| {
        let port: u16 = std::env::var("SB_TEST_PG2_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(5439);
        let major = pg_bin_dir()
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap();
        let sh = |cmd: &str| {
            std::process::Command::new("sh")
                .args(["-c", cmd])
                .output()
                .unwrap()
        };
        let listed = String::from_utf8_lossy(&sh("pg_lsclusters -h").stdout).to_string();
        if !listed
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("sbnewhost"))
        {
            let out = sh(&format!(
                "pg_createcluster {major} sbnewhost --port {port} >/dev/null"
            ));
            assert!(out.status.success(), "{out:?}");
        }
        let _ = sh(&format!("pg_ctlcluster {major} sbnewhost start"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !sh(&format!("pg_isready -q -h 127.0.0.1 -p {port}"))
            .status
            .success()
        {
            assert!(std::time::Instant::now() < deadline, "cluster sbnewhost");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let out = sh(&format!(
            "runuser -u postgres -- psql -q -p {port} -v ON_ERROR_STOP=1 -c \"DO \\$\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sbnewhost') THEN CREATE ROLE sbnewhost SUPERUSER LOGIN PASSWORD 'sbnewhost-pw'; END IF; END \\$\\$\""
        ));
        assert!(out.status.success(), "{out:?}");
        port
    })
}

fn new_host_url(port: u16, db: &str) -> String {
    format!("postgres://sbnewhost:sbnewhost-pw@127.0.0.1:{port}/{db}")
}

fn new_host_client(port: u16, db: &str) -> postgres::Client {
    postgres::Client::connect(&new_host_url(port, db), postgres::NoTls).unwrap()
}

/// The tables' digests and the owner of `db` on the new host's server.
fn new_host_db(port: u16, db: &str) -> String {
    let owner: String = new_host_client(port, "postgres")
        .query_one(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&db],
        )
        .unwrap()
        .get(0);
    let mut c = new_host_client(port, db);
    let mut out = vec![format!("owner {owner}")];
    for t in ["customers", "orders", "alembic_version"] {
        out.push(
            c.query_one(
                &format!("SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), 'empty') FROM {t} t"),
                &[],
            )
            .unwrap()
            .get(0),
        );
    }
    out.join(",")
}

/// The database and role made on the new host's server, dropped on drop.
struct NewHostDb {
    port: u16,
    db: String,
    role: String,
}

impl Drop for NewHostDb {
    fn drop(&mut self) {
        if let Ok(mut c) =
            postgres::Client::connect(&new_host_url(self.port, "postgres"), postgres::NoTls)
        {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
            let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS {}", self.role));
        }
    }
}

fn old_state(s: &Stack) -> Vec<String> {
    let mut v = state(s);
    v.remove(2); // Redis: compared on the new host's server
    v
}

/// The old host's stack is backed up to `b`; then its Redis, image,
/// volume and directory are gone, and a new host (another PostgreSQL
/// cluster, another Redis, a fresh config directory) has only the
/// repository's location and password: `init --from-repository`, then
/// `restore` bring back the same digests.
fn new_host(b: Backend, name: &str) {
    let port = new_host_cluster();
    let mut old = Sandbox::new();
    let repo = b.fresh_repo(&mut old);
    let media = old.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("one.jpg"), "one").unwrap();
    let db = TempDb::seeded(50, "cafe0000beef");
    let redis = RedisServer::start();
    redis.fill(15);
    let img = TempImage::build(&format!("new host {name}"));
    let vol = TempVolume::new();
    std::fs::write(vol.mountpoint().join("a.txt"), "volume file").unwrap();
    let mut s = Stack {
        sb: old,
        db,
        redis,
        img,
        vol,
        media,
        good: Vec::new(),
    };
    // A drill check (runs a command) and a Prometheus file (rewritten by
    // every command): stored in the set, written commented out on the new
    // host.
    repo.write_config(
        &s.sb,
        name,
        &format!(
            "{}\n[status]\nprometheus-file = \"{}\"\n\n[[drill.check]]\nname = \"smoke\"\ncommand = \"/bin/true\"\n",
            config(&s, true),
            s.sb.path().join("metrics.prom").display()
        ),
    );
    s.sb.init();
    s.sb.run(&["backup", "--name", "good"]).expect_code(0);
    let good_redis = redis_state(&s.redis);
    let good_db = {
        let owner = state(&s)[0].clone();
        format!("{owner},{}", db_tables(&s.db.name))
    };
    s.good = old_state(&s);
    // The old server is gone.
    destroy(&s);
    s.redis.stop();

    // The new host: its own PostgreSQL server with the stack's role (the
    // runbook's `createuser`), its own Redis, a fresh directory.
    let _guard = NewHostDb {
        port,
        db: s.db.name.clone(),
        role: s.db.role.clone(),
    };
    new_host_client(port, "postgres")
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD '{}' NOCREATEDB NOCREATEROLE NOSUPERUSER",
            s.db.role,
            s.db.password()
        ))
        .unwrap();
    let redis2 = RedisServer::start();
    let mut sb = Sandbox::new();
    if b == Backend::S3 {
        common::backend::s3_credentials(&mut sb, common::backend::SECRET_KEY);
    }
    let app_url = format!(
        "postgres://{}:{}@127.0.0.1:{port}/{}",
        s.db.role,
        s.db.password(),
        s.db.name
    );
    sb.env.extend([
        ("STACK_BACKUP_POSTGRES_MAIN_URL".to_string(), app_url),
        (
            "STACK_BACKUP_POSTGRES_MAIN_ADMIN_URL".to_string(),
            new_host_url(port, "postgres"),
        ),
        ("STACK_BACKUP_REDIS_SESSIONS_URL".to_string(), redis2.url()),
    ]);
    let r = sb.run(&["init", "--from-repository", &repo.url()]);
    r.expect_code(0);
    assert!(r.stdout.contains("NOT READY"), "{}", r.stdout);
    let text = std::fs::read_to_string(sb.config()).unwrap();
    eprintln!("{name}: init --from-repository:\n{}\n{text}", r.stdout);
    for secret in [
        s.db.password(),
        "sbnewhost-pw",
        common::backend::SECRET_KEY,
        PASSWORD,
    ] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("/bin/true") && !line.contains("metrics.prom"),
            "written live: {line}\n{text}"
        );
    }
    assert!(text.contains("# [drill]"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(sb.config()).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never over a config without --force.
    sb.run(&["init", "--from-repository", &repo.url()])
        .expect_code(4);

    // The runbook names the set's versions and the commands, in order.
    let r = sb.run(&["recover-plan", "good"]);
    r.expect_code(0);
    let major = pg_bin_dir()
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    for want in [
        format!("PostgreSQL {major}"),
        "Redis 7".into(),
        format!(
            "init --from-repository {} --stack {name} --set good",
            repo.url()
        ),
        "stack-backup restore good".into(),
    ] {
        assert!(r.stdout.contains(&want), "{want}:\n{}", r.stdout);
    }
    let r = sb.run(&["show", "good"]);
    assert!(
        r.stdout.contains("## Recovering on a bare host"),
        "{}",
        r.stdout
    );

    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    eprintln!("{name}: {}", r.stdout.trim());
    assert_eq!(new_host_db(port, &s.db.name), good_db);
    assert_eq!(redis_state(&redis2), good_redis);
    assert_eq!(old_state_without_db(&s), drop_db_part(&s.good));
}

fn old_state_without_db(s: &Stack) -> Vec<String> {
    vec![
        docker(&["image", "inspect", "--format", "{{.Id}}", &s.img.reference])
            .stdout
            .trim()
            .to_string(),
        dir_state(&s.vol.mountpoint(), |p| std::fs::read_to_string(p).unwrap()),
        dir_state(&s.media, |p| std::fs::read_to_string(p).unwrap()),
    ]
}

fn drop_db_part(v: &[String]) -> Vec<String> {
    v[v.len() - 3..].to_vec()
}

#[test]
fn a_new_host_is_bootstrapped_from_a_local_repository() {
    new_host(Backend::Local, "drnewlocal");
}

#[test]
fn a_new_host_is_bootstrapped_from_an_s3_repository() {
    new_host(Backend::S3, "drnews3");
}
