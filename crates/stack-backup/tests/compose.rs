//! Compose discovery: `init --compose` on a labelled multi-container
//! project, and `doctor --strict` failing once a volume no component
//! covers joins the project.
//!
//! The project is made the way Compose makes one (labels on containers
//! and volumes, a compose file, `.env`), from the local base image tagged
//! under database image names (no registry is reachable); its "database"
//! containers are busybox `sleep`s with the environment the real images
//! have, so discovery sees what it would see on a real stack.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const PROJECT_LABEL: &str = "com.docker.compose.project";

/// Every container, volume and image tag the test made, removed on drop.
struct Project {
    name: String,
    /// A private parent (a restore refuses to build beside a directory
    /// in world-writable `/tmp`): `project/` (the Compose working
    /// directory), `media/` (a bind mount outside it).
    root: tempfile::TempDir,
    made: DockerMade,
    /// Values that must never reach a config.
    secrets: Vec<String>,
}

impl Project {
    fn workdir(&self) -> PathBuf {
        self.root.path().join("project")
    }

    fn media(&self) -> PathBuf {
        self.root.path().join("media")
    }

    fn tag(&mut self, reference: &str) -> String {
        docker(&["tag", &base_image(), reference]).expect_code(0);
        self.made.images.push(reference.to_string());
        reference.to_string()
    }

    fn volume(&mut self, key: &str, labelled: bool) -> String {
        let name = format!("{}_{key}", self.name);
        let label = format!("{PROJECT_LABEL}={}", self.name);
        let mut args = vec!["volume", "create"];
        if labelled {
            args.extend(["--label", &label]);
        }
        args.push(&name);
        docker(&args).expect_code(0);
        self.made.volumes.push(name.clone());
        name
    }

    /// A container of service `service` (started unless `stopped`), with
    /// the labels Compose sets, `env` and `mounts` (`-v` values).
    fn container(
        &mut self,
        service: &str,
        image: &str,
        env: &[(&str, &str)],
        mounts: &[String],
        cmd: &[&str],
        stopped: bool,
    ) -> String {
        let name = format!("{}-{service}-1", self.name);
        let wd = self.workdir().display().to_string();
        let mut args: Vec<String> = vec![
            if stopped { "create" } else { "run" }.into(),
            "--name".into(),
            name.clone(),
        ];
        if !stopped {
            args.push("-d".into());
        }
        for l in [
            format!("{PROJECT_LABEL}={}", self.name),
            format!("com.docker.compose.service={service}"),
            format!("com.docker.compose.project.working_dir={wd}"),
            format!("com.docker.compose.project.config_files={wd}/compose.yaml"),
        ] {
            args.extend(["--label".into(), l]);
        }
        for (k, v) in env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        for m in mounts {
            args.extend(["-v".into(), m.clone()]);
        }
        args.push(image.into());
        args.extend(cmd.iter().map(|s| (*s).to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args).expect_code(0);
        self.made.containers.push(name.clone());
        name
    }

    fn mountpoint(volume: &str) -> PathBuf {
        PathBuf::from(
            docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", volume])
                .expect_code(0)
                .stdout
                .trim(),
        )
    }
}

/// A real SQLite database (Python's sqlite3) at `path`.
fn sqlite_db(path: &Path) {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create table t(x)'); c.execute(\"insert into t values ('row')\"); c.commit()",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The rows of the SQLite fixture's table (a restore through the sqlite
/// kind copies the database, not its bytes).
fn sqlite_rows(path: &Path) -> Vec<u8> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select x from t order by x').fetchall())",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out.stdout
}

/// A project as `docker compose up` would leave it: PostgreSQL, a stopped
/// MariaDB, a Redis with a password on its command line, an app built by
/// the project with a volume holding a SQLite file, a bind mount inside
/// the project's directory and one outside it, and a built service that
/// was never started.
fn project() -> Project {
    let name = unique("sbcompose");
    let mut p = Project {
        name: name.clone(),
        root: tempfile::tempdir().unwrap(),
        made: DockerMade::default(),
        secrets: (1..=5).map(|i| format!("s3cret-{i}-{name}")).collect(),
    };
    let wd = p.workdir();
    std::fs::create_dir_all(wd.join("uploads")).unwrap();
    std::fs::create_dir(p.media()).unwrap();
    std::fs::write(wd.join("uploads/a.txt"), "upload").unwrap();
    std::fs::write(p.media().join("m.txt"), "media").unwrap();
    std::fs::write(
        wd.join(".env"),
        format!("POSTGRES_PASSWORD={}\n", p.secrets[0]),
    )
    .unwrap();
    std::fs::write(
        wd.join("compose.yaml"),
        format!(
            "services:\n  db:\n    image: {name}/postgres:16\n    environment:\n      POSTGRES_USER: shop\n      POSTGRES_DB: shopdb\n      POSTGRES_PASSWORD: ${{POSTGRES_PASSWORD}}\n    volumes:\n      - pgdata:/var/lib/postgresql/data\n  mariadb:\n    image: {name}/mariadb:11\n  cache:\n    image: {name}/redis:7\n  app:\n    build: .\n    image: {name}-app:latest\n  worker:\n    build: .\n    image: {name}-worker:latest\n    volumes:\n      - appdata:/data\nvolumes:\n  pgdata: {{}}\n  appdata: {{}}\n  mariadb: {{}}\n",
        ),
    )
    .unwrap();
    let pg_image = p.tag(&format!("{name}/postgres:16"));
    let maria_image = p.tag(&format!("{name}/mariadb:11"));
    let redis_image = p.tag(&format!("{name}/redis:7"));
    let app_image = p.tag(&format!("{name}-app:latest"));
    p.tag(&format!("{name}-worker:latest"));
    let pgdata = p.volume("pgdata", true);
    let appdata = p.volume("appdata", true);
    let mariadb = p.volume("mariadb", true);
    let mp = Project::mountpoint(&appdata);
    std::fs::create_dir(mp.join("db")).unwrap();
    sqlite_db(&mp.join("db/app.sqlite3"));
    let sleep = ["sleep", "600"];
    let (s0, s1, s2, s3, s4) = (
        p.secrets[0].clone(),
        p.secrets[1].clone(),
        p.secrets[2].clone(),
        p.secrets[3].clone(),
        p.secrets[4].clone(),
    );
    p.container(
        "db",
        &pg_image,
        &[
            ("POSTGRES_USER", "shop"),
            ("POSTGRES_DB", "shopdb"),
            ("POSTGRES_PASSWORD", &s0),
            ("PGDATA", "/var/lib/postgresql/data"),
        ],
        &[format!("{pgdata}:/var/lib/postgresql/data")],
        &sleep,
        false,
    );
    p.container(
        "mariadb",
        &maria_image,
        &[
            ("MARIADB_USER", "wp"),
            ("MARIADB_DATABASE", "wordpress"),
            ("MARIADB_PASSWORD", &s1),
            ("MARIADB_ROOT_PASSWORD", &s2),
        ],
        &[format!("{mariadb}:/var/lib/mysql")],
        &sleep,
        true,
    );
    // `sh -c 'sleep 600' --requirepass SECRET`: the secret is on the
    // command line as a real Redis service has it.
    p.container(
        "cache",
        &redis_image,
        &[],
        &[],
        &["sh", "-c", "sleep 600", "--requirepass", &s3],
        false,
    );
    p.container(
        "app",
        &app_image,
        &[
            ("SECRET_KEY", &s4),
            (
                "DATABASE_URL",
                &format!("postgres://shop:{s0}@db:5432/shopdb"),
            ),
        ],
        &[
            format!("{appdata}:/data"),
            format!("{}:/uploads", wd.join("uploads").display()),
            format!("{}:/media", p.media().display()),
            "/etc/localtime:/etc/localtime:ro".into(),
        ],
        &sleep,
        false,
    );
    p
}

/// The config's line holding `key = ` inside section `header`.
fn value_in(text: &str, header: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines() {
        let l = line.trim_start_matches("# ");
        if l.starts_with('[') {
            inside = l.trim() == header;
            continue;
        }
        if inside && l.starts_with(&format!("{key} = ")) {
            return Some(l.to_string());
        }
    }
    None
}

#[test]
fn init_compose_writes_a_config_and_doctor_strict_finds_a_new_volume() {
    let p = project();
    let sb = Sandbox::new();
    let repo = sb.repo().display().to_string();
    let name = p.name.clone();

    // --dry-run prints the config and writes nothing.
    let dry = sb.run(&["init", "--compose", &name, "--repo", &repo, "--dry-run"]);
    dry.expect_code(0);
    assert!(!sb.config().exists());

    let r = sb.run(&["init", "--compose", &name, "--repo", &repo]);
    r.expect_code(0);
    let text = std::fs::read_to_string(sb.config()).unwrap();
    assert_eq!(dry.stdout, text, "--dry-run prints what is written");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sb.config()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The repository was created too (STACK_BACKUP_PASSWORD is set).
    assert!(sb.repo().join("config").exists(), "{r:?}");
    for s in &p.secrets {
        assert!(!text.contains(s.as_str()), "secret {s} copied:\n{text}");
        assert!(!r.stdout.contains(s.as_str()) && !r.stderr.contains(s.as_str()));
    }

    // Each service and volume named, each value with where it came from.
    assert!(text.contains(&format!("name = \"{name}\"")), "{text}");
    let url = value_in(&text, "[postgres.db]", "url").expect("[postgres.db] url");
    assert!(
        url.contains("\"postgres://shop@") && url.contains(":5432/shopdb\""),
        "{url}"
    );
    assert!(
        url.contains("env POSTGRES_USER") && url.contains("env POSTGRES_DB"),
        "{url}"
    );
    assert!(
        url.contains("the container's address on network bridge"),
        "{url}"
    );
    assert!(
        text.contains("set STACK_BACKUP_POSTGRES_DB_URL=postgres://…:PASSWORD@…"),
        "{text}"
    );
    assert!(
        text.contains("the container's POSTGRES_PASSWORD, not copied"),
        "{text}"
    );
    assert_eq!(
        value_in(&text, "[postgres.db]", "container")
            .map(|l| l.contains(&format!("\"{name}-db-1\""))),
        Some(true)
    );
    assert!(
        text.contains("label com.docker.compose.service=db"),
        "{text}"
    );
    assert!(text.contains("compose.yaml line 2 (services.db)"), "{text}");

    let mysql = value_in(&text, "[mysql.mariadb]", "url").expect("[mysql.mariadb] url");
    assert!(
        mysql.contains("mysql://wp@") && mysql.contains("/wordpress\""),
        "{mysql}"
    );
    assert!(
        text.contains("stopped, label com.docker.compose.service=mariadb"),
        "{text}"
    );
    let redis = value_in(&text, "[redis.cache]", "url").expect("[redis.cache] url");
    assert!(redis.contains(":6379/0\""), "{redis}");
    assert!(
        text.contains("its command line (--requirepass), not copied"),
        "{text}"
    );

    assert!(
        text.contains(&format!("compose-project = \"{name}\"")),
        "{text}"
    );
    assert_eq!(
        value_in(&text, "[docker]", "images"),
        Some(format!("images = [\"{name}-worker:latest\"]")),
        "the built image without a container is named:\n{text}"
    );
    for v in ["pgdata", "appdata", "mariadb"] {
        assert!(text.contains(&format!("{name}_{v}")), "volume {v}:\n{text}");
    }
    let wd = p.workdir().canonicalize().unwrap();
    assert_eq!(
        value_in(&text, "[paths.compose]", "path"),
        Some(format!("path = \"{}\"", wd.display()))
    );
    assert!(text.contains(".env holds secrets"), "{text}");
    assert_eq!(
        value_in(&text, "[paths.app-media]", "path")
            .map(|l| l.contains(&p.media().display().to_string())),
        Some(true),
        "{text}"
    );
    assert!(
        !text.contains("/etc/localtime"),
        "system paths are not data:\n{text}"
    );
    let sqlite = value_in(&text, "[sqlite.app]", "path").expect("[sqlite.app] path");
    assert!(sqlite.contains("\"db/app.sqlite3\""), "{sqlite}");
    assert_eq!(
        value_in(&text, "[sqlite.app]", "volume"),
        Some(format!("volume = \"{name}_appdata\""))
    );
    for kind in ["mysql", "sqlite"] {
        // Written live only once this build has the kind.
        let marker = format!("# stack-backup: enable when this build has the {kind} component");
        let live = text.lines().any(|l| l.starts_with(&format!("[{kind}.")));
        assert!(live != text.contains(&marker), "{kind}:\n{text}");
    }

    // Refused over an existing config without --force; replaced with it.
    sb.run(&["init", "--compose", &name, "--repo", &repo])
        .expect_code(4);
    assert_eq!(std::fs::read_to_string(sb.config()).unwrap(), text);
    std::fs::write(sb.config(), "# edited\n").unwrap();
    sb.run(&["init", "--compose", &name, "--repo", &repo, "--force"])
        .expect_code(0);
    assert_eq!(std::fs::read_to_string(sb.config()).unwrap(), text);

    // The config loads; doctor on it. The database containers are busybox
    // stand-ins without pg_dump: PostgreSQL and Redis are pointed at the
    // host's real servers (PostgreSQL dumped from the host), as a user
    // whose database answers elsewhere would.
    let db = TempDb::new();
    let redis = RedisServer::start();
    // The MariaDB stand-in is a stopped busybox: once this build has the
    // mysql kind (its section then written live), it is left out here.
    let mut skipping = false;
    let text_without_mysql: String = text
        .lines()
        .filter(|l| {
            if l.starts_with("[mysql.") {
                skipping = true;
            } else if l.is_empty() {
                skipping = false;
            }
            !skipping
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let cfg = text_without_mysql
        .replace(&format!("container = \"{name}-db-1\""), "")
        // A URL with `container =` must reach that container.
        .replace(&format!("container = \"{name}-cache-1\""), "")
        // This machine's disk is shared with other test runs.
        .replace("min-free-space = \"1GiB\"", "min-free-space = \"1MiB\"");
    std::fs::write(sb.config(), cfg).unwrap();
    let mut sb = sb;
    sb.env
        .push(("STACK_BACKUP_POSTGRES_DB_URL".into(), db.url()));
    sb.env
        .push(("STACK_BACKUP_REDIS_CACHE_URL".into(), redis.url()));
    let d = sb.run(&["--json", "doctor", "--strict"]);
    let j = d.json();
    assert_eq!(d.code, 0, "{j:#}\n{}", d.stderr);
    assert_eq!(j["unprotected"], serde_json::json!([]), "{j:#}");
    assert_eq!(j["compose_projects"], serde_json::json!([name]), "{j:#}");

    // A new service with a volume Compose did not label (external) and a
    // new bind mount: unprotected until configured.
    let mut p = p;
    let extra = p.volume("extra", false);
    let newdir = p.root.path().join("new");
    std::fs::create_dir(&newdir).unwrap();
    let app_image = format!("{name}-app:latest");
    p.container(
        "extra",
        &app_image,
        &[],
        &[
            format!("{extra}:/extra"),
            format!("{}:/new", newdir.display()),
        ],
        &["sleep", "600"],
        true,
    );
    let d = sb.run(&["--json", "doctor", "--strict"]);
    assert_eq!(d.code, 6, "{}\n{}", d.stdout, d.stderr);
    let u = d.json()["unprotected"].clone();
    let mut found: Vec<(String, String)> = u
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["kind"].as_str().unwrap().to_string(),
                x["what"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("bind".to_string(), newdir.display().to_string()),
            ("volume".to_string(), extra.clone()),
        ],
        "{u:#}"
    );
    // Without --strict it is a warning naming it.
    let d = sb.run(&["doctor"]);
    d.expect_code(0);
    assert!(
        d.stderr.contains(&format!("unprotected: volume {extra}")),
        "{}",
        d.stderr
    );
    let d = sb.run(&["doctor", "--strict"]);
    assert_eq!(d.code, 6);
    assert!(
        d.stderr.contains(&format!("unprotected volume {extra}")),
        "{}",
        d.stderr
    );

    // Configured, it is protected again.
    let cfg = std::fs::read_to_string(sb.config()).unwrap().replace(
        "[docker]\n",
        &format!("[docker]\nvolumes = [\"{extra}\"]\n"),
    ) + &format!("\n[paths.new]\npath = \"{}\"\n", newdir.display());
    std::fs::write(sb.config(), cfg).unwrap();
    let d = sb.run(&["--json", "doctor", "--strict"]);
    assert_eq!(d.code, 0, "{}", d.stdout);

    // The discovered volumes, paths and images back up and restore.
    let appdata = Project::mountpoint(&format!("{name}_appdata"));
    let sqlite = appdata.join("db/app.sqlite3");
    let before = (
        sqlite_rows(&sqlite),
        std::fs::read(p.workdir().join(".env")).unwrap(),
        std::fs::read(p.media().join("m.txt")).unwrap(),
    );
    sb.run(&["backup", "--name", "discovered"]).expect_code(0);
    // A row written after the backup (the file stays a database: the
    // pre-restore snapshot takes it).
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"insert into t values ('later')\"); c.commit()",
        ])
        .arg(&sqlite)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_ne!(sqlite_rows(&sqlite), before.0);
    std::fs::write(appdata.join("later.txt"), b"after the backup").unwrap();
    std::fs::remove_file(p.workdir().join(".env")).unwrap();
    std::fs::remove_file(p.media().join("m.txt")).unwrap();
    let r = sb.run(&["restore", "discovered", "--yes"]);
    r.expect_code(0);
    let after = (
        sqlite_rows(&sqlite),
        std::fs::read(p.workdir().join(".env")).unwrap(),
        std::fs::read(p.media().join("m.txt")).unwrap(),
    );
    assert!(after == before, "{r:?}");
    assert!(!appdata.join("later.txt").exists());
}
