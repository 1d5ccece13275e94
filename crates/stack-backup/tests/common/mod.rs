//! Helpers for integration tests against the real services started by
//! `scripts/services.sh`: PostgreSQL, Redis, Docker Engine, restic.
//!
//! Every resource a test creates has a unique name and is removed when its
//! guard drops. Tests fail (they do not skip) when a service is missing.

#![allow(dead_code)]

pub mod backend;
pub mod mysql;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The repository password used by test sandboxes.
pub const PASSWORD: &str = "test-repo-password-1234";

/// A unique lowercase name for a throwaway resource.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The `stack-backup` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stack-backup"))
}

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with everything printed unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The report a failed `--json` run printed before its error object
    /// (README, "Exit codes": the report, then `{"error": …}`).
    pub fn json_report(&self) -> serde_json::Value {
        serde_json::Deserializer::from_str(&self.stdout)
            .into_iter()
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| {
                panic!(
                    "stdout holds no JSON report:\n{}\nstderr:\n{}",
                    self.stdout, self.stderr
                )
            })
    }
}

/// A directory with a config, a repository path and a clean environment.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // The restore journal's state directory: one per sandbox.
        let state = dir.path().join("state").display().to_string();
        Self {
            dir,
            env: vec![
                ("STACK_BACKUP_PASSWORD".into(), PASSWORD.into()),
                ("STACK_BACKUP_STATE_DIR".into(), state),
            ],
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("stack-backup.toml")
    }

    /// Writes `stack-backup.toml` with `[stack]`, `[repository]` and `extra`.
    pub fn write_config(&self, stack: &str, extra: &str) {
        let text = format!(
            "[stack]\nname = \"{stack}\"\nmin-free-space = \"1MiB\"\n\n[repository]\npath = \"{}\"\n\n{extra}",
            self.repo().display()
        );
        std::fs::write(self.config(), text).unwrap();
    }

    /// `program` in `dir` with the sandbox's environment only (`PATH`,
    /// with `path_first` before it when given, `HOME` the sandbox, the
    /// sandbox's variables); stdin is null.
    pub fn command(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        dir: &Path,
        path_first: Option<&Path>,
    ) -> Command {
        let path = std::env::var("PATH").unwrap_or_default();
        let mut cmd = Command::new(program);
        cmd.current_dir(dir)
            .env_clear()
            .env(
                "PATH",
                path_first.map_or(path.clone(), |p| format!("{}:{path}", p.display())),
            )
            .env("HOME", self.path())
            .env("TMPDIR", std::env::temp_dir())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the binary in the sandbox with its environment only.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = self.command(bin(), self.path(), None);
        cmd.args(args);
        Run::from(cmd.output().expect("running stack-backup"))
    }

    /// Runs the binary on a pseudo-terminal (`script`), typing `input`;
    /// everything it printed is in `stdout`.
    pub fn run_on_tty(&self, args: &[&str], input: &str) -> Run {
        use std::io::Write;
        let line = std::iter::once(bin().display().to_string())
            .chain(args.iter().map(|a| format!("'{a}'")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = self.command("script", self.path(), None);
        cmd.args(["-qec", &line, "/dev/null"])
            .env("TERM", "dumb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running script");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("typing");
        Run::from(child.wait_with_output().expect("waiting for script"))
    }

    /// `init` and assert it worked.
    pub fn init(&self) {
        self.run(&["init"]).expect_code(0);
    }
}

/// Asserts that a restore failed on the `[[health]]` check `check` and
/// said it rolled everything back.
pub fn expect_rolled_back_by(r: &Run, check: &str) {
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains(&format!("health check `{check}`")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("rolled back"), "{}", r.stderr);
}

/// Runs stock `restic` on a repository with the test password.
pub fn restic(repo: &Path, args: &[&str]) -> Run {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env(
            "RESTIC_CACHE_DIR",
            std::env::temp_dir().join("restic-test-cache"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("restic is installed (scripts/services.sh installs it)");
    Run::from(out)
}

// --- PostgreSQL -------------------------------------------------------------

/// The admin URL of the test server (a superuser role with a password).
pub fn pg_admin_url() -> String {
    std::env::var("SB_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://stackbackup:sbtest-pw@127.0.0.1:5432/postgres".into())
}

/// `pg_admin_url` pointed at another database.
pub fn pg_url(db: &str) -> String {
    let admin = pg_admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{db}")
}

pub fn pg_client(db: &str) -> postgres::Client {
    postgres::Client::connect(&pg_url(db), postgres::NoTls).unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable for tests ({e}); run scripts/services.sh")
    })
}

/// A throwaway database owned by its application's own role (`LOGIN`, no
/// `CREATEDB`, no `CREATEROLE`, not superuser): the credentials a real
/// stack's `DATABASE_URL` holds, and what [`TempDb::url`] gives a test's
/// config. The superuser only creates the role and the empty database;
/// [`TempDb::client`] (and so [`sql`] and [`seed_db`]) connects as the
/// application, so the tables are the application's. Both are dropped on
/// drop.
pub struct TempDb {
    pub name: String,
    pub role: String,
    password: String,
}

impl TempDb {
    pub fn new() -> Self {
        let name = unique("sbt");
        let role = format!("{name}_app");
        let password = format!("pw-{role}");
        let mut su = pg_client("postgres");
        su.batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}' NOCREATEDB NOCREATEROLE NOSUPERUSER"
        ))
        .unwrap();
        su.batch_execute(&format!("CREATE DATABASE {name} OWNER {role}"))
            .unwrap();
        Self {
            name,
            role,
            password,
        }
    }

    /// A database seeded by [`seed_db`].
    pub fn seeded(rows: i32, revision: &str) -> Self {
        let db = Self::new();
        seed_db(&db, rows, revision);
        db
    }

    /// The application's `DATABASE_URL`.
    pub fn url(&self) -> String {
        let admin = pg_admin_url();
        let host = admin
            .rsplit_once('@')
            .map_or("127.0.0.1:5432/postgres", |(_, h)| h);
        let host = host.rsplit_once('/').map_or(host, |(h, _)| h);
        format!(
            "postgres://{}:{}@{host}/{}",
            self.role, self.password, self.name
        )
    }

    /// The database through the superuser (only where a test needs it).
    pub fn superuser_url(&self) -> String {
        pg_url(&self.name)
    }

    /// The application role's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A session as the application.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&pg_url("postgres"), postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
            let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS {}", self.role));
        }
    }
}

// --- Redis --------------------------------------------------------------------

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private `redis-server` on its own port and directory, killed on drop.
pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers, from its own directory. The
    /// port is free when picked but may be taken before the server binds it
    /// (an outgoing connection of a test running beside this one gets its
    /// port from the same range): a server that exits is started again on
    /// another port; its log is in the panic message when none came up.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Redis reports the directory it changed into, symbolic links
        // resolved.
        let real_dir = std::fs::canonicalize(dir.path()).unwrap();
        let log = dir.path().join("redis-server.log");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/services.sh)");
            let deadline = Instant::now() + Duration::from_secs(20);
            let ours = loop {
                // Ours only when it runs in our directory: another test's
                // server may hold the port.
                if let Some(at) = redis_dir(port) {
                    break at == real_dir;
                }
                let exited = child.try_wait().ok().flatten().is_some();
                if exited || Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if ours {
                return Self {
                    port,
                    dir,
                    child: Some(child),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "redis-server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sets keys `k0`…`k{n-1}` to `v0`….
    pub fn fill(&self, n: usize) {
        let mut c = self.client().get_connection().unwrap();
        for i in 0..n {
            redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(format!("v{i}"))
                .query::<()>(&mut c)
                .unwrap();
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    /// Stops the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The directory of the Redis server answering on `port` (`CONFIG GET
/// dir`); `None` while none answers.
fn redis_dir(port: u16) -> Option<PathBuf> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).ok()?;
    let mut c = client.get_connection().ok()?;
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query(&mut c)
        .ok()?;
    v.get(1).map(PathBuf::from)
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// --- Docker -----------------------------------------------------------------------

/// What a test made in the Docker Engine, removed when dropped (also when
/// the test fails): containers with their anonymous volumes, then volumes,
/// images and networks.
#[derive(Default)]
pub struct DockerMade {
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub images: Vec<String>,
    pub networks: Vec<String>,
}

impl Drop for DockerMade {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
        for i in &self.images {
            let _ = docker(&["image", "rm", i]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

pub fn docker(args: &[&str]) -> Run {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker CLI is installed");
    Run::from(out)
}

/// The local base image made by `scripts/services.sh` (`docker import` of
/// busybox-static; no registry involved).
pub fn base_image() -> String {
    std::env::var("SB_TEST_BASE_IMAGE").unwrap_or_else(|_| "stack-backup-test-base:latest".into())
}

/// A throwaway image built on the base image, removed on drop.
pub struct TempImage {
    pub reference: String,
}

impl TempImage {
    /// Builds an image with `/payload` holding `content`.
    pub fn build(content: &str) -> Self {
        let name = unique("sbt-img");
        let ctx = tempfile::tempdir().unwrap();
        std::fs::write(ctx.path().join("payload"), content).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            format!("FROM {}\nCOPY payload /payload\n", base_image()),
        )
        .unwrap();
        let reference = format!("{name}:latest");
        docker(&[
            "build",
            "-q",
            "-t",
            &reference,
            &ctx.path().to_string_lossy(),
        ])
        .expect_code(0);
        Self { reference }
    }

    pub fn id(&self) -> String {
        docker(&["image", "inspect", "--format", "{{.Id}}", &self.reference])
            .expect_code(0)
            .stdout
            .trim()
            .to_string()
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = docker(&["image", "rm", "-f", &self.reference]);
    }
}

/// A throwaway named volume, removed on drop.
pub struct TempVolume {
    pub name: String,
}

impl TempVolume {
    pub fn new() -> Self {
        let name = unique("sbt-vol");
        docker(&["volume", "create", &name]).expect_code(0);
        Self { name }
    }

    pub fn mountpoint(&self) -> PathBuf {
        PathBuf::from(
            docker(&[
                "volume",
                "inspect",
                "--format",
                "{{.Mountpoint}}",
                &self.name,
            ])
            .expect_code(0)
            .stdout
            .trim(),
        )
    }
}

impl Drop for TempVolume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.name]);
    }
}

// --- git ------------------------------------------------------------------------------

/// Runs git in `dir` (with a committer identity) and returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes `dir` a git repository with one commit; returns the commit id.
pub fn git_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("app.py"), "print('hi')\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "first"]);
    git(dir, &["rev-parse", "HEAD"])
}

// --- Stack fixtures ------------------------------------------------------------------

/// Runs SQL in a database.
pub fn sql(db: &TempDb, text: &str) {
    db.client()
        .batch_execute(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
}

/// A digest of a table's full contents (order-independent).
pub fn table_digest(db: &str, table: &str) -> String {
    pg_client(db)
        .query_one(
            &format!("SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), 'empty') FROM {table} t"),
            &[],
        )
        .unwrap()
        .get(0)
}

/// Fills a database with a few tables and an Alembic revision.
pub fn seed_db(db: &TempDb, rows: i32, revision: &str) {
    sql(
        db,
        &format!(
            "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, note text);
             INSERT INTO customers (name, note) SELECT 'c' || i, repeat('x', i % 50) FROM generate_series(1, {rows}) i;
             CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers(id), total numeric(10,2));
             INSERT INTO orders (customer, total) SELECT 1 + i % {rows}, i * 1.5 FROM generate_series(1, {rows} * 3) i;
             CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
             INSERT INTO alembic_version VALUES ('{revision}');"
        ),
    );
}

/// A directory of executables placed first on PATH or used as `bin-dir`.
pub struct Wrappers {
    pub dir: tempfile::TempDir,
}

impl Wrappers {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes an executable shell script.
    pub fn script(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A file in the wrapper dir (for logs).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

/// The directory of the server's own client tools (e.g. /usr/lib/postgresql/15/bin).
pub fn pg_bin_dir() -> PathBuf {
    let mut c = pg_client("postgres");
    let num: String = c.query_one("SHOW server_version_num", &[]).unwrap().get(0);
    let major = num.parse::<u32>().unwrap() / 10000;
    PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))
}

/// Absolute path of a program on PATH.
pub fn which(program: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!p.is_empty(), "{program} not found on PATH");
    p
}

/// Restores a snapshot with stock restic into a new directory.
pub fn restic_restore(repo: &Path, tag_name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    restic(
        repo,
        &[
            "restore",
            "latest",
            "--tag",
            &format!("name:{tag_name}"),
            "--target",
            &dir.path().to_string_lossy(),
        ],
    )
    .expect_code(0);
    dir
}

/// `sha256sum -c` of the restored set's CHECKSUM.sha256, from its root.
pub fn sha256sum_check(root: &Path) -> Run {
    let out = Command::new("sha256sum")
        .args(["-c", "--strict", "stack-backup/CHECKSUM.sha256"])
        .current_dir(root)
        .output()
        .unwrap();
    Run::from(out)
}

/// Number of snapshots stock restic sees.
pub fn restic_snapshot_count(repo: &Path) -> usize {
    let r = restic(repo, &["snapshots", "--json"]);
    r.expect_code(0);
    serde_json::from_str::<serde_json::Value>(&r.stdout)
        .unwrap()
        .as_array()
        .map_or(0, Vec::len)
}

// --- A restore test's stack --------------------------------------------------------

/// The digests of a seeded database's tables (`customers`, `orders`,
/// `alembic_version`), `<table> missing` for a dropped one.
pub fn db_tables(db: &str) -> String {
    let mut out = Vec::new();
    for t in ["customers", "orders", "alembic_version"] {
        let exists: bool = pg_client(db)
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("public.{t}")],
            )
            .unwrap()
            .get(0);
        out.push(if exists {
            table_digest(db, t)
        } else {
            format!("{t} missing")
        });
    }
    out.join(",")
}

/// Breaks a restore test's stack the same way everywhere: a table dropped
/// and rows renamed, rows deleted, Redis keys deleted and a stranger added,
/// the image removed, a volume file and a media file changed, a media file
/// added.
pub fn wreck_stack(
    dbs: (&TempDb, &TempDb),
    redis: &RedisServer,
    image: &str,
    volume: &Path,
    media: &Path,
) {
    sql(
        dbs.0,
        "DROP TABLE orders; UPDATE customers SET name = 'wrecked'",
    );
    sql(dbs.1, "DELETE FROM orders WHERE id % 2 = 0");
    let mut c = redis.client().get_connection().unwrap();
    for i in 0..10 {
        redis::cmd("DEL")
            .arg(format!("k{i}"))
            .query::<()>(&mut c)
            .unwrap();
    }
    redis::cmd("SET")
        .arg("intruder")
        .arg("x")
        .query::<()>(&mut c)
        .unwrap();
    docker(&["image", "rm", "-f", image]).expect_code(0);
    std::fs::write(volume.join("a.txt"), "changed").unwrap();
    std::fs::write(media.join("one.jpg"), "changed").unwrap();
    std::fs::write(media.join("new.jpg"), "new").unwrap();
}

/// Temporary or kept-aside copies of these databases (other tests run
/// restores of their own databases at the same time).
pub fn leftover_databases_of(dbs: &[&TempDb]) -> Vec<String> {
    let mut out = Vec::new();
    for db in dbs {
        let rows = pg_client("postgres")
            .query(
                "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
                &[&format!("{}__sb_", db.name)],
            )
            .unwrap();
        out.extend(rows.iter().map(|r| r.get::<_, String>(0)));
    }
    out
}

/// Every key of a Redis with its string value, sorted.
pub fn redis_state(redis: &RedisServer) -> String {
    let mut c = redis.client().get_connection().unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    keys.sort();
    let values: Vec<String> = keys
        .iter()
        .map(|k| {
            redis::cmd("GET")
                .arg(k)
                .query::<String>(&mut c)
                .unwrap_or_default()
        })
        .collect();
    format!("{keys:?}={values:?}")
}

/// `name=<what of says of it>` for every file of a directory, sorted.
pub fn dir_state(dir: &Path, of: impl Fn(&Path) -> String) -> String {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            format!("{}={}", e.file_name().to_string_lossy(), of(&e.path()))
        })
        .collect();
    files.sort();
    files.join(";")
}

/// The services of a restore test, seeded the same way everywhere: two
/// databases, a Redis with 30 keys, an image, a volume with `a.txt`, and
/// `media` with `one.jpg` and `two.jpg`.
pub fn restore_fixture(media: &Path) -> (TempDb, TempDb, RedisServer, TempImage, TempVolume) {
    let db1 = TempDb::new();
    seed_db(&db1, 200, "a1b2c3d4e5f6");
    let db2 = TempDb::new();
    seed_db(&db2, 40, "bbbb0000cccc");
    let redis = RedisServer::start();
    redis.fill(30);
    let img = TempImage::build("restore me");
    let vol = TempVolume::new();
    std::fs::write(vol.mountpoint().join("a.txt"), "original volume file").unwrap();
    std::fs::create_dir_all(media).unwrap();
    std::fs::write(media.join("one.jpg"), "one").unwrap();
    std::fs::write(media.join("two.jpg"), "two").unwrap();
    (db1, db2, redis, img, vol)
}

/// `list --json` as (name, tier) pairs, sorted.
pub fn names_and_tiers(r: &Run) -> Vec<(String, String)> {
    r.expect_code(0);
    let mut v: Vec<(String, String)> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["tier"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Deterministic pseudo-random bytes (xorshift) that neither compress nor
/// deduplicate: `len` of them from `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Whether a `--json backup` report says component `id` was reused from
/// the parent set (a report without it fails the test).
pub fn reported_reused(report: &serde_json::Value, id: &str) -> bool {
    let c = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == id)
        .unwrap_or_else(|| panic!("no {id} in {report}"));
    c["reused"] == true
}
