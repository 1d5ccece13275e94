//! Databases in containers whose ports are not published (issue 16): a
//! project made the way Compose makes one (labels on containers, volumes
//! and its network, the service names as network aliases), with real
//! PostgreSQL, Redis and MariaDB servers in images built from Debian's
//! packages (`scripts/db-images.sh`) and a busybox app with a volume
//! holding files and a SQLite database. The config is the one `init
//! --compose` writes, with the secrets supplied the way it tells a user
//! to; the URLs name the services as the application does (`db`,
//! `mariadb`, `cache`), which only the project's network resolves.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PROJECT: &str = "com.docker.compose.project";

fn image(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run `source scripts/services.sh` (it builds the database images)")
    })
}

/// The project's containers, volumes and network, removed on drop.
struct Project {
    name: String,
    network: String,
    /// Holds `project/`, the Compose working directory (a private parent:
    /// a restore refuses to build beside a directory in `/tmp`).
    root: tempfile::TempDir,
    made: DockerMade,
    /// Passwords: handed to `docker run` through its environment only.
    pg_super: String,
    pg_app: String,
    my_root: String,
    my_app: String,
}

impl Project {
    fn container_name(&self, service: &str) -> String {
        format!("{}-{service}-1", self.name)
    }

    fn volume(&mut self, key: &str) -> String {
        let name = format!("{}_{key}", self.name);
        docker(&[
            "volume",
            "create",
            "--label",
            &format!("{PROJECT}={}", self.name),
            "--label",
            &format!("com.docker.compose.volume={key}"),
            &name,
        ])
        .expect_code(0);
        self.made.volumes.push(name.clone());
        name
    }

    /// Runs service `service` as Compose would: its labels, the project's
    /// network with the service name as alias, no published port. `env`
    /// values are passed as `-e NAME` (from this child's environment).
    fn run(&mut self, service: &str, image: &str, env: &[(&str, &str)], mounts: &[String]) {
        let name = self.container_name(service);
        let wd = self.root.path().join("project").display().to_string();
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--name", &name, "--network", &self.network])
            .args(["--network-alias", service]);
        for l in [
            format!("{PROJECT}={}", self.name),
            format!("com.docker.compose.service={service}"),
            format!("com.docker.compose.project.working_dir={wd}"),
            "com.docker.compose.container-number=1".into(),
        ] {
            cmd.args(["--label", &l]);
        }
        for (k, v) in env {
            cmd.args(["-e", k]).env(k, v);
        }
        for m in mounts {
            cmd.args(["-v", m]);
        }
        cmd.arg(image);
        if service == "app" {
            cmd.args(["sleep", "3600"]);
        }
        self.made.containers.push(name);
        let r = Run::from(cmd.stdin(Stdio::null()).output().unwrap());
        r.expect_code(0);
    }

    /// `sh -c script` inside `service`'s container, `input` on stdin.
    fn exec(&self, service: &str, script: &str, input: &str) -> Run {
        use std::io::Write;
        let mut child = Command::new("docker")
            .args([
                "exec",
                "-i",
                &self.container_name(service),
                "sh",
                "-c",
                script,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    fn wait_until(&self, service: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.exec(service, script, "").code == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{service} did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SQL as PostgreSQL's superuser (trust on the container's socket).
    fn psql(&self, db: &str, sql: &str) -> String {
        let r = self.exec(
            "db",
            &format!("psql -v ON_ERROR_STOP=1 -qAt -U postgres -d {db}"),
            sql,
        );
        r.expect_code(0);
        r.stdout.trim().to_string()
    }

    /// SQL as MariaDB's root (unix socket inside the container).
    fn mariadb(&self, sql: &str) -> String {
        let r = self.exec("mariadb", "mariadb --protocol=socket -N -B shop", sql);
        r.expect_code(0);
        r.stdout.trim().to_string()
    }

    fn address(&self, service: &str) -> String {
        docker(&[
            "inspect",
            "--format",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.network
            ),
            &self.container_name(service),
        ])
        .expect_code(0)
        .stdout
        .trim()
        .to_string()
    }

    fn appdata(&self) -> PathBuf {
        let v = format!("{}_appdata", self.name);
        PathBuf::from(
            docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", &v])
                .expect_code(0)
                .stdout
                .trim(),
        )
    }
}

fn project() -> Project {
    let name = unique("sbcont");
    let mut p = Project {
        network: format!("{name}_default"),
        name: name.clone(),
        root: tempfile::tempdir().unwrap(),
        made: DockerMade::default(),
        pg_super: format!("pg-super-{name}"),
        pg_app: format!("pg-app-{name}"),
        my_root: format!("my-root-{name}"),
        my_app: format!("my-app-{name}"),
    };
    std::fs::create_dir(p.root.path().join("project")).unwrap();
    std::fs::write(p.root.path().join("project/README"), "the app\n").unwrap();
    docker(&[
        "network",
        "create",
        "--label",
        &format!("{PROJECT}={name}"),
        "--label",
        "com.docker.compose.network=default",
        &p.network,
    ])
    .expect_code(0);
    p.made.networks.push(p.network.clone());
    let (pgdata, mydata, redisdata, appdata) = (
        p.volume("pgdata"),
        p.volume("mysql"),
        p.volume("redis"),
        p.volume("appdata"),
    );
    let (pg_super, my_root, my_app) = (p.pg_super.clone(), p.my_root.clone(), p.my_app.clone());
    p.run(
        "db",
        &image("SB_TEST_PG_IMAGE"),
        &[("POSTGRES_PASSWORD", &pg_super), ("POSTGRES_DB", "app")],
        &[format!("{pgdata}:/var/lib/postgresql/data")],
    );
    p.run(
        "mariadb",
        &image("SB_TEST_MYSQL_IMAGE"),
        &[
            ("MARIADB_DATABASE", "shop"),
            ("MARIADB_USER", "shop"),
            ("MARIADB_PASSWORD", &my_app),
            ("MARIADB_ROOT_PASSWORD", &my_root),
        ],
        &[format!("{mydata}:/var/lib/mysql")],
    );
    p.run(
        "cache",
        &image("SB_TEST_REDIS_IMAGE"),
        &[],
        &[format!("{redisdata}:/data")],
    );
    p.run("app", &base_image(), &[], &[format!("{appdata}:/data")]);

    p.wait_until("db", "pg_isready -q -U postgres");
    // The app's role owns its database; not a superuser, no CREATEDB.
    p.psql(
        "app",
        &format!(
            "CREATE ROLE app LOGIN PASSWORD '{}';\nALTER DATABASE app OWNER TO app;\nALTER SCHEMA public OWNER TO app;",
            p.pg_app
        ),
    );
    let r = p.exec(
        "db",
        "psql -v ON_ERROR_STOP=1 -q -U app -d app",
        "CREATE TABLE items (id int PRIMARY KEY, name text);\n\
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g;\n\
         CREATE TABLE notes (id int PRIMARY KEY, body text);\n\
         INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 200) g;\n",
    );
    r.expect_code(0);

    p.wait_until(
        "mariadb",
        "test -e /var/lib/mysql/.sb-initialised && mariadb-admin --protocol=socket ping",
    );
    p.mariadb(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB;\n\
         INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_300;\n\
         CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) ENGINE=InnoDB;\n\
         INSERT INTO notes SELECT seq, MD5(seq) FROM seq_1_to_100;\n",
    );

    p.wait_until("cache", "redis-cli ping | grep -q PONG");
    let r = p.exec(
        "cache",
        "redis-cli",
        "SET session:1 alice\nSET session:2 bob\nHSET user:1 name alice plan pro\nRPUSH queue a b c\n",
    );
    r.expect_code(0);

    let data = p.appdata();
    std::fs::create_dir_all(data.join("files")).unwrap();
    std::fs::write(data.join("files/report.txt"), "quarterly report\n").unwrap();
    sqlite(
        &data.join("app.sqlite3"),
        "create table t(x); insert into t values ('one'), ('two'), ('three');",
    );
    p
}

/// Runs `script` on a SQLite file, returns the rows of `select x from t`.
fn sqlite(path: &std::path::Path, script: &str) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(script).unwrap();
    let mut q = c.prepare("select x from t order by x").unwrap();
    let rows: Vec<String> = q
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.join(",")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every component's content, by digest.
#[derive(Debug, PartialEq)]
struct State {
    pg: Vec<String>,
    mysql: String,
    redis: Vec<(String, String)>,
    file: String,
    sqlite: String,
}

fn state(p: &Project) -> State {
    let pg = ["items", "notes"]
        .iter()
        .map(|t| {
            let r = p.exec(
                "db",
                "psql -v ON_ERROR_STOP=1 -qAt -U postgres -d app",
                &format!("SELECT count(*) || ':' || md5(string_agg(x::text, ',' ORDER BY x.id)) FROM {t} x;"),
            );
            match r.code {
                0 => r.stdout.trim().to_string(),
                _ if r.stderr.contains("does not exist") => format!("{t}: missing"),
                _ => panic!("{r:?}"),
            }
        })
        .collect();
    let mysql = p.mariadb("CHECKSUM TABLE items, notes EXTENDED;");
    let mut conn = redis::Client::open(format!("redis://{}:6379/0", p.address("cache")))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.sort();
    let redis = keys
        .into_iter()
        .map(|k| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut conn).unwrap();
            (k, hex(&dump))
        })
        .collect();
    let data = p.appdata();
    State {
        pg,
        mysql,
        redis,
        file: Run::from(
            Command::new("sha256sum")
                .arg(data.join("files/report.txt"))
                .output()
                .unwrap(),
        )
        .expect_code(0)
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string(),
        sqlite: sqlite(&data.join("app.sqlite3"), ""),
    }
}

/// Breaks every component: rows changed and a table dropped in both SQL
/// databases, Redis keys changed and deleted, a file overwritten, SQLite
/// rows deleted.
fn break_everything(p: &Project) {
    p.psql(
        "app",
        "UPDATE items SET name = 'broken' WHERE id <= 10; DROP TABLE notes;",
    );
    p.mariadb("UPDATE items SET name = 'broken' WHERE id <= 10; DROP TABLE notes;");
    p.exec(
        "cache",
        "redis-cli",
        "SET session:1 mallory\nDEL queue user:1\nSET junk 1\n",
    )
    .expect_code(0);
    let data = p.appdata();
    std::fs::write(data.join("files/report.txt"), "overwritten\n").unwrap();
    sqlite(&data.join("app.sqlite3"), "delete from t where x <> 'one';");
}

#[test]
fn a_compose_stack_with_unpublished_databases_round_trips() {
    let t0 = Instant::now();
    let mut p = project();
    eprintln!("fixture: {:?}", t0.elapsed());
    let sb = Sandbox::new();
    let repo = sb.repo().display().to_string();
    let r = sb.run(&["init", "--compose", &p.name, "--repo", &repo]);
    r.expect_code(0);
    let written = std::fs::read_to_string(sb.config()).unwrap();
    for (kind, service) in [("postgres", "db"), ("mysql", "mariadb"), ("redis", "cache")] {
        assert!(
            written.contains(&format!("[{kind}.{service}]")),
            "no [{kind}.{service}]:\n{written}"
        );
        assert!(
            written.contains(&format!("container = \"{}\"", p.container_name(service))),
            "{kind}: no container:\n{written}"
        );
    }
    for s in [&p.pg_super, &p.pg_app, &p.my_root, &p.my_app] {
        assert!(!written.contains(s.as_str()), "a secret in the config");
    }
    // What the config says to do: keep what Redis holds, and give the
    // passwords through the variables it names. The URLs name the services
    // as the application does; restores need the servers' admin users.
    assert!(written.contains("role = \"cache\""), "{written}");
    std::fs::write(
        sb.config(),
        written.replace("role = \"cache\"", "role = \"data\""),
    )
    .unwrap();
    let mut sb = sb;
    for (k, v) in [
        (
            "STACK_BACKUP_POSTGRES_DB_URL",
            format!("postgres://app:{}@db:5432/app", p.pg_app),
        ),
        (
            "STACK_BACKUP_POSTGRES_DB_ADMIN_URL",
            format!("postgres://postgres:{}@db:5432/postgres", p.pg_super),
        ),
        (
            "STACK_BACKUP_MYSQL_MARIADB_URL",
            format!("mysql://shop:{}@mariadb:3306/shop", p.my_app),
        ),
        (
            "STACK_BACKUP_MYSQL_MARIADB_ADMIN_URL",
            format!("mysql://root:{}@mariadb:3306/", p.my_root),
        ),
        (
            "STACK_BACKUP_REDIS_CACHE_URL",
            "redis://cache:6379/0".to_string(),
        ),
    ] {
        sb.env.push((k.into(), v));
    }

    let before = state(&p);
    sb.run(&["doctor"]).expect_code(0);
    let b = sb.run(&["backup", "--name", "good"]);
    b.expect_code(0);
    eprintln!("backup: {:?}", t0.elapsed());

    break_everything(&p);
    let broken = state(&p);
    assert_ne!(broken.pg, before.pg);
    assert_ne!(broken.mysql, before.mysql);
    assert_ne!(broken.redis, before.redis);
    assert_ne!(broken.file, before.file);
    assert_ne!(broken.sqlite, before.sqlite);

    // A database's data volume alone is refused, not silently skipped:
    // nothing in this restore would bring the database back.
    let pgdata = format!("{}_pgdata", p.name);
    let only = format!("docker.volume.{pgdata}");
    let r = sb.run(&["restore", "good", "--only", &only, "--yes"]);
    r.expect_code(4);
    for what in [
        pgdata.as_str(),
        &p.container_name("db"),
        "postgres.db",
        "--only",
    ] {
        assert!(
            r.stderr.contains(what),
            "refusal lacks {what}:\n{}",
            r.stderr
        );
    }
    assert_eq!(state(&p), broken, "a refused restore changed something");

    let plan = sb.run(&["restore", "good", "--dry-run"]);
    plan.expect_code(0);
    let shown = format!("{}{}", plan.stdout, plan.stderr);
    for what in ["postgres.db", "mysql.mariadb", "redis.cache", "_appdata"] {
        assert!(shown.contains(what), "plan lacks {what}:\n{shown}");
    }
    // The databases' data volumes are restored by their dumps, not by
    // swapping a running server's files.
    assert!(
        shown.contains(&format!(
            "database container(s) {} (postgres.db)",
            p.container_name("db")
        )) && shown.contains("restored from their dumps"),
        "{shown}"
    );
    assert_eq!(state(&p), broken, "--dry-run changed something");

    // The database container is re-created with another address (Docker
    // hands out the next free one; a stand-in is started first so the old
    // one is not simply reused): the config names the service, and the
    // address is looked up at each connection, never kept.
    let old_ip = p.address("db");
    docker(&["rm", "-f", &p.container_name("db")]).expect_code(0);
    let stand_in = format!("{}-stand-in", p.name);
    docker(&[
        "run",
        "-d",
        "--name",
        &stand_in,
        "--network",
        &p.network,
        &base_image(),
        "sleep",
        "600",
    ])
    .expect_code(0);
    p.made.containers.push(stand_in);
    let pg_super = p.pg_super.clone();
    p.run(
        "db",
        &image("SB_TEST_PG_IMAGE"),
        &[("POSTGRES_PASSWORD", &pg_super), ("POSTGRES_DB", "app")],
        &[format!("{pgdata}:/var/lib/postgresql/data")],
    );
    p.wait_until("db", "pg_isready -q -U postgres");
    assert_ne!(p.address("db"), old_ip, "the container kept its address");

    let r = sb.run(&["restore", "good", "--yes"]);
    r.expect_code(0);
    eprintln!("restore: {:?}", t0.elapsed());
    assert_eq!(
        state(&p),
        before,
        "restore output:\n{}\n{}",
        r.stdout,
        r.stderr
    );

    let d = sb.run(&["--json", "drill", "good"]);
    d.expect_code(0);
    eprintln!("drill: {:?}", t0.elapsed());
    assert_eq!(state(&p), before, "a drill touched the live stack");
    let report = d.json();
    assert_eq!(report["ok"], true, "{report}");
    for id in ["postgres.db", "mysql.mariadb", "redis.cache"] {
        let c = report["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["component"] == id)
            .unwrap_or_else(|| panic!("{id} not drilled: {report}"));
        assert_eq!(c["state"], "ok", "{report}");
    }

    let secrets = [&p.pg_super, &p.pg_app, &p.my_root, &p.my_app];
    for out in [&b, &r, &d, &plan] {
        for s in secrets {
            assert!(!out.stdout.contains(s.as_str()) && !out.stderr.contains(s.as_str()));
        }
    }
    // Nor in anything stack-backup wrote beside the (encrypted) repository:
    // state, journals, logs, the config.
    let mut written = Vec::new();
    let mut dirs = vec![sb.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            if m.is_dir() && path != sb.repo() {
                dirs.push(path);
            } else if m.is_file() {
                written.push(path);
            }
        }
    }
    assert!(written.len() > 1, "{written:?}");
    for f in written {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        for s in secrets {
            assert!(!text.contains(s.as_str()), "a password in {}", f.display());
        }
    }
}
