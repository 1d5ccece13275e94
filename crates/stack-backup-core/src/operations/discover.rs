//! Compose discovery: `init --compose` (a config written from what a
//! Compose project runs) and `doctor`'s unprotected check (mounts of the
//! project no component backs up). See
//! `docs/decisions/0034-compose-discovery.md`.
//!
//! What is read: the containers labelled `com.docker.compose.project`
//! (running and stopped: image, environment, mounts, addresses), and the
//! compose file when one is given or named by the containers' labels (for
//! services without a container and for `build:` images). What is never
//! read into the config, a log or an error: the value of an environment
//! variable whose name looks secret ([`compose::is_secret_name`]); the
//! config names the variable to set instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::components::{Covered, Stack, KINDS};
use crate::config::{env_name, validate_name, Config};
use crate::docker::compose::{self, Container, Mount};
use crate::error::{Error, Result};

/// What a service runs, as far as stack-backup is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// PostgreSQL (postgres, postgis, timescaledb, pgvector images, or
    /// the official image's environment).
    Postgres,
    /// MariaDB or MySQL.
    Mysql,
    /// Redis, Valkey or KeyDB.
    Redis,
    /// Anything else: its volumes and bind mounts are copied as files.
    Other,
}

impl ServiceKind {
    /// A database whose data a dump takes (its mounts are not read as files).
    #[must_use]
    pub fn is_database(self) -> bool {
        self != Self::Other
    }
}

/// One service of the project.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// The Compose service name.
    pub name: String,
    /// Its container (the first one, when scaled), if it has one.
    pub container: Option<String>,
    /// The container is running.
    pub running: bool,
    /// The image it runs (as given).
    pub image: String,
    /// Recognised as.
    pub kind: ServiceKind,
    /// Why it was recognised so (image name, an environment variable).
    pub kind_from: String,
    /// Non-secret settings read from its environment (`POSTGRES_USER` → value).
    pub settings: BTreeMap<String, String>,
    /// Names of the secret-looking variables it has (values never read).
    pub secret_vars: Vec<String>,
    /// A password given on its command line (`--requirepass`; not read).
    pub password_in_command: bool,
    /// How the host reaches its port: host, port, and how that was found.
    pub address: Option<(String, u16, String)>,
    /// The compose file's line of the service, when read from one.
    pub line: Option<usize>,
    /// The compose file builds its image (`build:`).
    pub built: bool,
}

/// A named volume the project uses.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    /// The volume's name in the engine.
    pub name: String,
    /// Services that mount it, with where.
    pub users: Vec<(String, String)>,
    /// Labelled with the project (`[docker] compose-project` takes it).
    pub labelled: bool,
    /// Its mount point on the host (when it exists).
    pub mountpoint: Option<PathBuf>,
}

/// A bind mount of a service.
#[derive(Debug, Clone, Serialize)]
pub struct Bind {
    /// The host path.
    pub source: PathBuf,
    /// The service.
    pub service: String,
    /// Where the container sees it.
    pub destination: String,
    /// The host path is a directory (a file's parent is backed up otherwise).
    pub is_dir: bool,
}

/// A SQLite database file found in a volume or bind mount.
#[derive(Debug, Clone, Serialize)]
pub struct Sqlite {
    /// The volume holding it, if in one.
    pub volume: Option<String>,
    /// Its path: relative to the volume, or absolute on the host.
    pub path: PathBuf,
    /// The service that mounts it.
    pub service: String,
}

/// An image the project builds (`build:` in the compose file).
#[derive(Debug, Clone, Serialize)]
pub struct Built {
    /// The reference Compose tags it with.
    pub reference: String,
    /// The service.
    pub service: String,
    /// The compose file's line of the service.
    pub line: Option<usize>,
    /// The engine has it now.
    pub present: bool,
}

/// Everything discovered of one Compose project.
#[derive(Debug, Clone, Serialize)]
pub struct Project {
    /// The project name.
    pub name: String,
    /// Where the project name came from.
    pub name_from: String,
    /// Its working directory (label, or the compose file's directory).
    pub working_dir: Option<PathBuf>,
    /// The compose file read, if any.
    pub compose_file: Option<PathBuf>,
    /// Containers found (running and stopped).
    pub containers: usize,
    /// Containers running.
    pub running: usize,
    /// Services, by name.
    pub services: Vec<Service>,
    /// Named volumes.
    pub volumes: Vec<Volume>,
    /// Bind mounts (of services that are not databases).
    pub binds: Vec<Bind>,
    /// SQLite files.
    pub sqlite: Vec<Sqlite>,
    /// Images the project builds.
    pub built: Vec<Built>,
    /// Images of its containers (`[docker] compose-project` takes them).
    pub images: Vec<String>,
}

/// How deep and how wide the SQLite scan of one volume or directory goes.
const SCAN_DEPTH: usize = 6;
const SCAN_ENTRIES: usize = 20_000;

/// The compose files Compose looks for in a directory.
const COMPOSE_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// Discovers the project `arg` names: a project name, or a compose file;
/// none: the compose file in `dir`, else the only project with containers.
pub fn discover(arg: Option<&str>, dir: &Path) -> Result<Project> {
    let (name, name_from, file) = choose(arg, dir)?;
    let containers = compose::containers(&name)?;
    let label = |l: &str| {
        containers
            .iter()
            .find_map(|c| c.labels.get(l).filter(|v| !v.is_empty()).cloned())
    };
    let file = file.or_else(|| {
        label(compose::CONFIG_FILES_LABEL).and_then(|files| {
            files
                .split(',')
                .map(PathBuf::from)
                .find(|f| std::fs::metadata(f).is_ok_and(|m| m.is_file()))
        })
    });
    let working_dir = label(compose::WORKING_DIR_LABEL)
        .map(PathBuf::from)
        .or_else(|| {
            file.as_ref()
                .and_then(|f| f.parent().map(Path::to_path_buf))
        });
    if containers.is_empty() && file.is_none() {
        return Err(Error::NotFound(format!(
            "Compose project `{name}`: no container is labelled {}={name} and no compose file was given",
            compose::PROJECT_LABEL
        )));
    }
    let parsed = match &file {
        Some(f) => Some(ComposeFile::read(f)?),
        None => None,
    };
    Ok(assemble(
        name,
        name_from,
        working_dir,
        file,
        &containers,
        parsed.as_ref(),
    ))
}

/// The project name, where it came from, and the compose file given.
fn choose(arg: Option<&str>, dir: &Path) -> Result<(String, String, Option<PathBuf>)> {
    let file = match arg {
        Some(a) if Path::new(a).is_file() => Some(absolute(Path::new(a))),
        Some(a) if a.contains('/') || a.ends_with(".yml") || a.ends_with(".yaml") => {
            return Err(Error::Usage(format!("--compose {a}: no such compose file")));
        }
        Some(a) => return Ok((a.to_string(), format!("--compose {a}"), None)),
        None => COMPOSE_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .map(|p| absolute(&p)),
    };
    let Some(file) = file else {
        let all = compose::projects()?;
        return match all.as_slice() {
            [one] => Ok((
                one.clone(),
                format!(
                    "the only project with containers (label {})",
                    compose::PROJECT_LABEL
                ),
                None,
            )),
            [] => Err(Error::NotFound(format!(
                "a Compose project: no compose file in {} and no container labelled {}",
                dir.display(),
                compose::PROJECT_LABEL
            ))),
            many => Err(Error::Usage(format!(
                "several Compose projects run here: {}; name one: --compose PROJECT",
                many.join(", ")
            ))),
        };
    };
    // The containers' label says which project a file belongs to; then
    // the file's `name:`; then Compose's default, the directory's name.
    if let Some(p) = compose::projects()?.into_iter().find(|p| {
        compose::containers(p).is_ok_and(|cs| {
            cs.iter().any(|c| {
                c.labels
                    .get(compose::CONFIG_FILES_LABEL)
                    .is_some_and(|fs| fs.split(',').any(|f| Path::new(f) == file))
            })
        })
    }) {
        return Ok((
            p,
            format!("label {} of its containers", compose::PROJECT_LABEL),
            Some(file),
        ));
    }
    if let Some(n) = ComposeFile::read(&file)?.name {
        return Ok((n, format!("`name:` in {}", file.display()), Some(file)));
    }
    let dir_name = file
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect::<String>();
    Ok((
        dir_name,
        format!("the directory of {} (Compose's default)", file.display()),
        Some(file),
    ))
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// What the compose file says (only what discovery uses).
#[derive(Debug, Default)]
struct ComposeFile {
    name: Option<String>,
    services: BTreeMap<String, FileService>,
    /// Top-level volume key → its name in the engine, when not the default.
    volume_names: BTreeMap<String, (Option<String>, bool)>,
}

#[derive(Debug, Default)]
struct FileService {
    image: Option<String>,
    build: bool,
    /// Variable → value (`None`: listed without a value, or interpolated).
    env: BTreeMap<String, Option<String>>,
    /// (source, target) of each `volumes:` entry with a source.
    mounts: Vec<(String, String)>,
    line: Option<usize>,
}

impl ComposeFile {
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let v: serde_norway::Value = serde_norway::from_str(&text)
            .map_err(|e| Error::Usage(format!("{}: not a compose file: {e}", path.display())))?;
        let s = |v: &serde_norway::Value| v.as_str().map(str::to_string);
        let mut out = Self {
            name: v.get("name").and_then(s),
            ..Self::default()
        };
        if let Some(vols) = v.get("volumes").and_then(|v| v.as_mapping()) {
            for (k, def) in vols {
                let Some(k) = k.as_str() else { continue };
                let external = def
                    .get("external")
                    .is_some_and(|e| e.as_bool().unwrap_or(true));
                out.volume_names
                    .insert(k.to_string(), (def.get("name").and_then(s), external));
            }
        }
        let Some(services) = v.get("services").and_then(|v| v.as_mapping()) else {
            return Ok(out);
        };
        for (k, def) in services {
            let Some(name) = k.as_str() else { continue };
            let mut svc = FileService {
                image: def.get("image").and_then(s),
                build: def.get("build").is_some(),
                line: service_line(&text, name),
                ..FileService::default()
            };
            match def.get("environment") {
                Some(serde_norway::Value::Mapping(m)) => {
                    for (k, v) in m {
                        if let Some(k) = k.as_str() {
                            let v = match v {
                                serde_norway::Value::String(s) => Some(s.clone()),
                                serde_norway::Value::Number(n) => Some(n.to_string()),
                                serde_norway::Value::Bool(b) => Some(b.to_string()),
                                _ => None,
                            };
                            svc.env.insert(k.to_string(), v);
                        }
                    }
                }
                Some(serde_norway::Value::Sequence(l)) => {
                    for kv in l.iter().filter_map(|v| v.as_str()) {
                        match kv.split_once('=') {
                            Some((k, v)) => svc.env.insert(k.to_string(), Some(v.to_string())),
                            None => svc.env.insert(kv.to_string(), None),
                        };
                    }
                }
                _ => {}
            }
            // `${VAR}` is filled in by Compose from `.env`: not a value here.
            for v in svc.env.values_mut() {
                if v.as_deref().is_some_and(|v| v.contains('$')) {
                    *v = None;
                }
            }
            for m in def
                .get("volumes")
                .and_then(|v| v.as_sequence())
                .into_iter()
                .flatten()
            {
                let pair = match m {
                    serde_norway::Value::String(short) => {
                        let mut parts = short.splitn(3, ':');
                        match (parts.next(), parts.next()) {
                            (Some(src), Some(dst)) => Some((src.to_string(), dst.to_string())),
                            _ => None,
                        }
                    }
                    long => long
                        .get("source")
                        .and_then(s)
                        .zip(long.get("target").and_then(s)),
                };
                svc.mounts.extend(pair);
            }
            out.services.insert(name.to_string(), svc);
        }
        Ok(out)
    }

    /// The engine's name of volume key `key` of project `project`.
    fn volume_name(&self, project: &str, key: &str) -> String {
        match self.volume_names.get(key) {
            Some((Some(n), _)) => n.clone(),
            Some((None, true)) => key.to_string(),
            _ => format!("{project}_{key}"),
        }
    }
}

/// The 1-based line of service `name` under `services:` (a text search:
/// enough to point a reader at it).
fn service_line(text: &str, name: &str) -> Option<usize> {
    let mut in_services = false;
    for (i, line) in text.lines().enumerate() {
        if !line.starts_with([' ', '\t', '#']) && !line.trim().is_empty() {
            in_services = line.trim_end().starts_with("services:");
            continue;
        }
        let t = line.trim_start();
        let key = t.trim_start_matches(['"', '\'']);
        if in_services
            && key.starts_with(name)
            && key[name.len()..]
                .trim_start_matches(['"', '\''])
                .trim_start()
                .starts_with(':')
        {
            return Some(i + 1);
        }
    }
    None
}

/// The last path component of an image reference, without tag or digest:
/// `docker.io/library/postgres:16` → `postgres`.
fn image_base(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last).to_ascii_lowercase()
}

/// What a service runs, and why it is thought so.
fn recognise(image: &str, env: &BTreeSet<String>) -> (ServiceKind, String) {
    let base = image_base(image);
    let tool = [
        "exporter",
        "admin",
        "commander",
        "insight",
        "backup",
        "bouncer",
    ]
    .iter()
    .any(|w| base.contains(w));
    if !tool {
        for (kind, names) in [
            (
                ServiceKind::Postgres,
                &["postgres", "postgis", "timescale", "pgvector", "pgvecto"][..],
            ),
            (ServiceKind::Mysql, &["mariadb", "mysql", "percona"][..]),
            (
                ServiceKind::Redis,
                &["redis", "valkey", "keydb", "dragonfly"][..],
            ),
        ] {
            if names.iter().any(|n| base.starts_with(n)) {
                return (kind, format!("image `{image}`"));
            }
        }
    }
    // The server images' own variables; an application that connects to a
    // database has `*_HOST` instead.
    let has = |v: &str| env.contains(v);
    for (kind, server_vars, client_var) in [
        (
            ServiceKind::Postgres,
            &["PGDATA", "POSTGRES_PASSWORD", "POSTGRES_INITDB_ARGS"][..],
            "POSTGRES_HOST",
        ),
        (
            ServiceKind::Mysql,
            &[
                "MARIADB_ROOT_PASSWORD",
                "MYSQL_ROOT_PASSWORD",
                "MARIADB_RANDOM_ROOT_PASSWORD",
                "MYSQL_RANDOM_ROOT_PASSWORD",
                "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD",
                "MYSQL_ALLOW_EMPTY_PASSWORD",
            ][..],
            "MYSQL_HOST",
        ),
    ] {
        if !has(client_var) && !tool {
            if let Some(v) = server_vars.iter().find(|v| has(v)) {
                return (kind, format!("environment variable {v}"));
            }
        }
    }
    (ServiceKind::Other, format!("image `{image}`"))
}

/// The non-secret settings discovery reads, per kind.
const SETTINGS: &[&str] = &[
    "POSTGRES_USER",
    "POSTGRES_DB",
    "MARIADB_USER",
    "MYSQL_USER",
    "MARIADB_DATABASE",
    "MYSQL_DATABASE",
];

fn assemble(
    name: String,
    name_from: String,
    working_dir: Option<PathBuf>,
    compose_file: Option<PathBuf>,
    containers: &[Container],
    file: Option<&ComposeFile>,
) -> Project {
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut volumes: BTreeMap<String, Volume> = BTreeMap::new();
    let mut binds: Vec<Bind> = Vec::new();
    let labelled: BTreeSet<String> = compose::labelled_volumes(&name)
        .unwrap_or_default()
        .into_iter()
        .collect();
    for c in containers {
        let svc = c.service().to_string();
        if services.contains_key(&svc) {
            // A scaled service: its first container speaks for it; the
            // mounts of every container still count.
        } else {
            let vars: BTreeSet<String> = c.env.keys().cloned().collect();
            let (kind, kind_from) = recognise(&c.image, &vars);
            let fs = file.and_then(|f| f.services.get(&svc));
            services.insert(
                svc.clone(),
                Service {
                    name: svc.clone(),
                    container: Some(c.name.clone()),
                    running: c.running,
                    image: c.image.clone(),
                    kind,
                    kind_from,
                    settings: SETTINGS
                        .iter()
                        .filter_map(|k| c.env.get(*k).map(|v| ((*k).to_string(), v.clone())))
                        .collect(),
                    secret_vars: vars
                        .iter()
                        .filter(|v| compose::is_secret_name(v))
                        .cloned()
                        .collect(),
                    password_in_command: c.cmd.iter().any(|a| a.contains("requirepass")),
                    address: address(c, &svc, kind),
                    line: fs.and_then(|f| f.line),
                    built: fs.is_some_and(|f| f.build),
                },
            );
        }
        let kind = services[&svc].kind;
        for m in &c.mounts {
            mount(&svc, kind, m, &labelled, &mut volumes, &mut binds);
        }
    }
    // Services of the compose file without a container (never started).
    if let Some(f) = file {
        for (svc, fs) in &f.services {
            if services.contains_key(svc) {
                continue;
            }
            let vars: BTreeSet<String> = fs.env.keys().cloned().collect();
            let image = fs.image.clone().unwrap_or_else(|| format!("{name}-{svc}"));
            let (kind, kind_from) = recognise(&image, &vars);
            services.insert(
                svc.clone(),
                Service {
                    name: svc.clone(),
                    container: None,
                    running: false,
                    image,
                    kind,
                    kind_from,
                    settings: SETTINGS
                        .iter()
                        .filter_map(|k| {
                            fs.env
                                .get(*k)
                                .cloned()
                                .flatten()
                                .map(|v| ((*k).to_string(), v))
                        })
                        .collect(),
                    secret_vars: vars
                        .iter()
                        .filter(|v| compose::is_secret_name(v))
                        .cloned()
                        .collect(),
                    password_in_command: false,
                    address: None,
                    line: fs.line,
                    built: fs.build,
                },
            );
            for (src, dst) in &fs.mounts {
                let m = file_mount(f, &name, working_dir.as_deref(), src, dst);
                mount(svc, kind, &m, &labelled, &mut volumes, &mut binds);
            }
        }
    }
    let built = services
        .values()
        .filter(|s| s.built)
        .map(|s| Built {
            reference: s.image.clone(),
            service: s.name.clone(),
            line: s.line,
            present: compose::image_present(&s.image),
        })
        .collect();
    let mut images: Vec<String> = containers.iter().map(|c| c.image.clone()).collect();
    images.sort();
    images.dedup();
    let sqlite = find_sqlite(&services, &volumes, &binds);
    binds.sort_by(|a, b| a.source.cmp(&b.source).then(a.service.cmp(&b.service)));
    binds.dedup_by(|a, b| a.source == b.source);
    Project {
        name,
        name_from,
        working_dir,
        compose_file,
        containers: containers.len(),
        running: containers.iter().filter(|c| c.running).count(),
        services: services.into_values().collect(),
        volumes: volumes.into_values().collect(),
        binds,
        sqlite,
        built,
        images,
    }
}

/// A mount the compose file names (`SRC:DST`) as the engine would make
/// it: a path (relative to the project's directory) is a bind mount,
/// anything else one of the project's named volumes.
fn file_mount(
    f: &ComposeFile,
    project: &str,
    working_dir: Option<&Path>,
    src: &str,
    dst: &str,
) -> Mount {
    if src.starts_with(['.', '/', '~']) {
        let p = Path::new(src);
        let p = match working_dir {
            Some(w) if p.is_relative() => w.join(p),
            _ => p.to_path_buf(),
        };
        Mount {
            kind: "bind".into(),
            name: None,
            source: p,
            destination: dst.to_string(),
            rw: true,
        }
    } else {
        let vol = f.volume_name(project, src);
        Mount {
            kind: "volume".into(),
            source: crate::docker::volume_mountpoint(&vol)
                .map(PathBuf::from)
                .unwrap_or_default(),
            name: Some(vol),
            destination: dst.to_string(),
            rw: true,
        }
    }
}

fn mount(
    svc: &str,
    kind: ServiceKind,
    m: &Mount,
    labelled: &BTreeSet<String>,
    volumes: &mut BTreeMap<String, Volume>,
    binds: &mut Vec<Bind>,
) {
    match (m.kind.as_str(), &m.name) {
        ("volume", Some(n)) => {
            let v = volumes.entry(n.clone()).or_insert_with(|| Volume {
                name: n.clone(),
                users: Vec::new(),
                labelled: labelled.contains(n),
                mountpoint: (!m.source.as_os_str().is_empty()).then(|| m.source.clone()),
            });
            v.users.push((svc.to_string(), m.destination.clone()));
        }
        ("bind", _) if !kind.is_database() && !system_path(&m.source) => {
            binds.push(Bind {
                source: m.source.clone(),
                service: svc.to_string(),
                destination: m.destination.clone(),
                is_dir: std::fs::metadata(&m.source).map_or(true, |md| md.is_dir()),
            });
        }
        _ => {}
    }
}

/// Host paths a container mounts that are the machine's, not the
/// application's data (the Docker socket, the clock, devices).
fn system_path(p: &Path) -> bool {
    let special = std::fs::symlink_metadata(p).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        t.is_socket() || t.is_block_device() || t.is_char_device() || t.is_fifo()
    });
    special
        || ["/proc", "/sys", "/dev", "/run", "/var/run"]
            .iter()
            .any(|r| p.starts_with(r))
        || [
            "/etc/localtime",
            "/etc/timezone",
            "/etc/hosts",
            "/etc/resolv.conf",
        ]
        .iter()
        .any(|f| p == Path::new(f))
}

/// How the host reaches a database container's port: its published port;
/// else the service's name, as the application itself reaches it on a
/// network of the project (the component's `container =` resolves that
/// name to the container's address at each connection, so re-creating the
/// container does not break the config); on Docker's default `bridge`
/// network, which has no names, the container's address; on the host's
/// network, 127.0.0.1.
fn address(c: &Container, service: &str, kind: ServiceKind) -> Option<(String, u16, String)> {
    let port = match kind {
        ServiceKind::Postgres => 5432,
        ServiceKind::Mysql => 3306,
        ServiceKind::Redis => 6379,
        ServiceKind::Other => return None,
    };
    if let Some((ip, host_port)) = c.published.get(&format!("{port}/tcp")) {
        let host = if ip.is_empty() || ip == "0.0.0.0" || ip == "::" {
            "127.0.0.1".to_string()
        } else {
            ip.clone()
        };
        if let Ok(p) = host_port.parse() {
            return Some((
                host,
                p,
                format!("port {port} published on the host as {host_port}"),
            ));
        }
    }
    // Compose gives a service its name as an alias on every network of
    // its own; Docker's default `bridge` network has no names.
    if let Some(net) = c.addresses.keys().find(|n| n.as_str() != "bridge") {
        return Some((
            service.to_string(),
            port,
            format!(
                "the service's name on network {net} (port not published): stack-backup resolves it to the container's address at each connection"
            ),
        ));
    }
    if let Some(ip) = c.addresses.get("bridge") {
        return Some((
            ip.clone(),
            port,
            "the container's address on network bridge (port not published; the address changes when the container is re-created)".to_string(),
        ));
    }
    Some(if c.network_mode == "host" {
        (
            "127.0.0.1".to_string(),
            port,
            "no network address: the container shares the host's network".to_string(),
        )
    } else {
        (
            service.to_string(),
            port,
            if c.running {
                "the service's name (the container has no network address: check how it is reached)"
            } else {
                "the service's name (the container is not running: check it once it runs)"
            }
            .to_string(),
        )
    })
}

/// SQLite files in the volumes and bind mounts of services that are not
/// databases.
fn find_sqlite(
    services: &BTreeMap<String, Service>,
    volumes: &BTreeMap<String, Volume>,
    binds: &[Bind],
) -> Vec<Sqlite> {
    let not_db = |svc: &str| services.get(svc).is_none_or(|s| !s.kind.is_database());
    let mut out = Vec::new();
    for v in volumes.values() {
        let Some(user) = v.users.iter().find(|(s, _)| not_db(s)) else {
            continue;
        };
        let Some(root) = &v.mountpoint else { continue };
        for rel in sqlite_files(root) {
            out.push(Sqlite {
                volume: Some(v.name.clone()),
                path: rel,
                service: user.0.clone(),
            });
        }
    }
    for b in binds.iter().filter(|b| b.is_dir) {
        for rel in sqlite_files(&b.source) {
            out.push(Sqlite {
                volume: None,
                path: b.source.join(rel),
                service: b.service.clone(),
            });
        }
    }
    out
}

/// Files under `root` that begin with SQLite's header, as paths relative
/// to it. Symlinks are never followed (a volume's content is the
/// container's, not ours to trust); the walk stops at [`SCAN_DEPTH`]
/// levels and [`SCAN_ENTRIES`] entries.
#[must_use]
pub fn sqlite_files(root: &Path) -> Vec<PathBuf> {
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    let mut found = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > SCAN_ENTRIES {
                return found;
            }
            let Ok(md) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if md.is_dir() {
                if depth + 1 < SCAN_DEPTH {
                    stack.push((e.path(), depth + 1));
                }
            } else if md.is_file() && md.len() >= 512 && is_sqlite(&e.path(), MAGIC) {
                if let Ok(rel) = e.path().strip_prefix(root) {
                    found.push(rel.to_path_buf());
                }
            }
        }
    }
    found.sort();
    found
}

fn is_sqlite(p: &Path, magic: &[u8; 16]) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let mut head = [0u8; 16];
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == magic
}

// --- the config -------------------------------------------------------------

/// What shapes the written config besides the project.
#[derive(Debug, Clone)]
pub struct Options {
    /// The stack name (default: the project's, when valid).
    pub stack: Option<String>,
    /// The repository (default `/var/backups/<stack>`).
    pub repo: Option<PathBuf>,
    /// The repository's password file, when one is to be named.
    pub password_file: Option<PathBuf>,
}

/// The config written, and what it left commented out.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// The stack name.
    pub stack: String,
    /// The text of `stack-backup.toml`.
    pub text: String,
    /// Sections written commented out, waiting for a component kind this
    /// build does not have.
    pub disabled: Vec<String>,
}

/// Whether this build has the component kind `kind`: its sections are
/// written live; the others commented out, each after a line
/// `# stack-backup: enable when this build has the <kind> component`.
#[must_use]
pub fn has_kind(kind: &str) -> bool {
    matches!(kind, "stack" | "repository" | "docker" | "paths")
        || KINDS.iter().any(|k| k.prefix() == kind)
}

/// A TOML key: bare when it may be.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        s.to_string()
    } else {
        quote(s)
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A component name from a service or directory name.
fn component_name(s: &str, taken: &mut BTreeSet<String>) -> String {
    let mut base: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(56);
    if validate_name(&base).is_err() {
        base = "data".into();
    }
    let mut n = base.clone();
    let mut i = 2;
    while !taken.insert(n.clone()) {
        n = format!("{base}-{i}");
        i += 1;
    }
    n
}

/// One section of the config: the header line, and `(line, comment)`
/// pairs (a line may be empty: a comment alone). The one place that
/// decides whether a kind's section is written live or commented out.
struct Section {
    kind: &'static str,
    about: Vec<String>,
    header: String,
    lines: Vec<(String, String)>,
}

impl Section {
    fn new(kind: &'static str, header: String) -> Self {
        Self {
            kind,
            about: Vec::new(),
            header,
            lines: Vec::new(),
        }
    }

    fn about(&mut self, c: impl Into<String>) -> &mut Self {
        self.about.push(c.into());
        self
    }

    fn line(&mut self, l: impl Into<String>, c: impl Into<String>) -> &mut Self {
        self.lines.push((l.into(), c.into()));
        self
    }

    fn render(&self, out: &mut String, disabled: &mut Vec<String>) {
        let live = has_kind(self.kind);
        out.push('\n');
        if !live {
            let _ = writeln!(
                out,
                "# stack-backup: enable when this build has the {} component",
                self.kind
            );
            disabled.push(self.header.clone());
        }
        let hash = if live { "" } else { "# " };
        for a in &self.about {
            let _ = writeln!(out, "# {a}");
        }
        let _ = writeln!(out, "{hash}{}", self.header);
        for (l, c) in &self.lines {
            match (l.is_empty(), c.is_empty()) {
                (true, _) => {
                    let _ = writeln!(out, "# {c}");
                }
                (false, true) => {
                    let _ = writeln!(out, "{hash}{l}");
                }
                (false, false) => {
                    let _ = writeln!(out, "{hash}{l}   # {c}");
                }
            }
        }
    }
}

/// Where a service was seen, for comments.
fn seen(p: &Project, s: &Service) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &s.container {
        parts.push(format!(
            "container {c} ({}, label {}={})",
            if s.running { "running" } else { "stopped" },
            compose::SERVICE_LABEL,
            s.name
        ));
    }
    if let (Some(f), Some(l)) = (&p.compose_file, s.line) {
        parts.push(format!("{} line {l} (services.{})", f.display(), s.name));
    }
    parts.join("; ")
}

/// The address part of a database URL, and its comment.
fn host_port(s: &Service, default_port: u16) -> (String, String) {
    match &s.address {
        Some((h, p, how)) => (format!("{h}:{p}"), how.clone()),
        None => (
            format!("127.0.0.1:{default_port}"),
            "the container is not running: check the address".into(),
        ),
    }
}

/// A `settings` value, else the default, with where it came from.
fn setting(s: &Service, vars: &[&str], default: &str) -> (String, String) {
    for v in vars {
        if let Some(val) = s.settings.get(*v).filter(|v| !v.is_empty()) {
            return (val.clone(), format!("env {v}"));
        }
    }
    (
        default.to_string(),
        format!("{} unset: the image's default", vars.join("/")),
    )
}

fn password_note(s: &Service, url_var: &str, scheme: &str) -> String {
    let vars: Vec<&str> = s
        .secret_vars
        .iter()
        .map(String::as_str)
        .filter(|v| !v.ends_with("_FILE"))
        .collect();
    let from = if vars.is_empty() {
        if s.password_in_command {
            "its command line (--requirepass)".to_string()
        } else {
            "none found in its environment".to_string()
        }
    } else {
        format!("the container's {}", vars.join(", "))
    };
    format!(
        "password: {from}, not copied here; set {url_var}={scheme}://…:PASSWORD@… in the environment, or password-file = \"…\""
    )
}

/// Renders the config for `p`. It holds no secret and loads (checked).
pub fn render(p: &Project, opts: &Options) -> Result<Written> {
    let stack = match &opts.stack {
        Some(s) => s.clone(),
        None if validate_name(&p.name).is_ok() => p.name.clone(),
        None => "stack".into(),
    };
    let mut out = String::new();
    let mut disabled = Vec::new();
    let _ = writeln!(
        out,
        "# stack-backup.toml for Compose project `{}`, written by `stack-backup init --compose`.\n# Read from: {} container(s) labelled {}={} ({} running){}.\n# No secret is copied: passwords stay where they are; each section names the\n# variable to set (or a password-file). Every value says where it came from.",
        p.name,
        p.containers,
        compose::PROJECT_LABEL,
        p.name,
        p.running,
        p.compose_file
            .as_ref()
            .map(|f| format!("\n#   and the compose file {}", f.display()))
            .unwrap_or_default()
    );
    let mut s = Section::new("stack", "[stack]".into());
    let from = if opts.stack.is_some() {
        "--name".to_string()
    } else {
        format!("the Compose project name, from {}", p.name_from)
    };
    s.line(format!("name = {}", quote(&stack)), from)
        .line("min-free-space = \"1GiB\"", "");
    s.render(&mut out, &mut disabled);

    let repo = opts
        .repo
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/backups").join(&stack));
    let repo_s = repo.display().to_string();
    let repo_key = if crate::config::looks_like_url(&repo_s) {
        "url"
    } else {
        "path"
    };
    let mut s = Section::new("repository", "[repository]".into());
    s.line(
        format!("{repo_key} = {}", quote(&repo_s)),
        if opts.repo.is_some() {
            "--repo"
        } else {
            "the default"
        },
    );
    match &opts.password_file {
        Some(f) => s.line(
            format!("password-file = {}", quote(&f.display().to_string())),
            "",
        ),
        None => s.line(
            "",
            "password-file = \"/etc/stack-backup/stack.key\"   # or STACK_BACKUP_PASSWORD",
        ),
    };
    s.render(&mut out, &mut disabled);

    let mut names = BTreeSet::new();
    for svc in &p.services {
        match svc.kind {
            ServiceKind::Postgres => {
                postgres_section(p, svc, &mut names).render(&mut out, &mut disabled)
            }
            ServiceKind::Mysql => mysql_section(p, svc, &mut names).render(&mut out, &mut disabled),
            ServiceKind::Redis => redis_section(p, svc, &mut names).render(&mut out, &mut disabled),
            ServiceKind::Other => {}
        }
    }
    docker_section(p).render(&mut out, &mut disabled);
    let mut path_names = BTreeSet::new();
    for s in paths_sections(p, &mut path_names) {
        s.render(&mut out, &mut disabled);
    }
    let mut sqlite_names = BTreeSet::new();
    for f in &p.sqlite {
        sqlite_section(f, &mut sqlite_names).render(&mut out, &mut disabled);
    }
    Config::parse(&out, Path::new("the discovered config"))
        .map_err(|e| Error::component("init", format!("the config written would not load: {e}")))?;
    Ok(Written {
        stack,
        text: out,
        disabled,
    })
}

fn postgres_section(p: &Project, svc: &Service, names: &mut BTreeSet<String>) -> Section {
    let name = component_name(&svc.name, names);
    let mut s = Section::new("postgres", format!("[postgres.{}]", key(&name)));
    s.about(format!(
        "PostgreSQL service `{}`: {} ({})",
        svc.name,
        seen(p, svc),
        svc.kind_from
    ));
    let (user, user_from) = setting(svc, &["POSTGRES_USER"], "postgres");
    let (db, db_from) = setting(svc, &["POSTGRES_DB"], &user);
    let (hp, how) = host_port(svc, 5432);
    s.line(
        format!("url = {}", quote(&format!("postgres://{user}@{hp}/{db}"))),
        format!("user: {user_from}; database: {db_from}; host: {how}"),
    );
    let var = format!("STACK_BACKUP_POSTGRES_{}_URL", env_name(&name));
    s.line("", password_note(svc, &var, "postgres"));
    // The official image makes POSTGRES_USER a superuser: fine for a
    // restore's admin connection, more than a backup needs.
    s.line(
        "",
        format!(
            "{user} (POSTGRES_USER) is a superuser in the official image: prefer the application's own role (owner of {db}) here; restores without CREATEDB need admin-url = \"postgres://{user}@{hp}/postgres\" (or STACK_BACKUP_POSTGRES_{}_ADMIN_URL)",
            env_name(&name)
        ),
    );
    if let Some(c) = &svc.container {
        s.line(
            format!("container = {}", quote(c)),
            "pg_dump and pg_restore run inside it (docker exec)",
        );
    }
    s
}

fn mysql_section(p: &Project, svc: &Service, names: &mut BTreeSet<String>) -> Section {
    let name = component_name(&svc.name, names);
    let mut s = Section::new("mysql", format!("[mysql.{}]", key(&name)));
    s.about(format!(
        "MariaDB/MySQL service `{}`: {} ({})",
        svc.name,
        seen(p, svc),
        svc.kind_from
    ));
    let (user, user_from) = setting(svc, &["MARIADB_USER", "MYSQL_USER"], "root");
    let (db, db_from) = setting(svc, &["MARIADB_DATABASE", "MYSQL_DATABASE"], "mysql");
    let (hp, how) = host_port(svc, 3306);
    s.line(
        format!("url = {}", quote(&format!("mysql://{user}@{hp}/{db}"))),
        format!("user: {user_from}; database: {db_from}; host: {how}"),
    );
    let var = format!("STACK_BACKUP_MYSQL_{}_URL", env_name(&name));
    s.line("", password_note(svc, &var, "mysql"));
    s.line(
        "",
        format!(
            "restores and drills need admin-url = \"mysql://root@{hp}/\" (or STACK_BACKUP_MYSQL_{}_ADMIN_URL)",
            env_name(&name)
        ),
    );
    if let Some(c) = &svc.container {
        s.line(
            format!("container = {}", quote(c)),
            "the server's container: the URL's host resolves to its address; mariadb-dump and mariadb run on this host",
        );
    }
    s
}

fn redis_section(p: &Project, svc: &Service, names: &mut BTreeSet<String>) -> Section {
    let name = component_name(&svc.name, names);
    let mut s = Section::new("redis", format!("[redis.{}]", key(&name)));
    s.about(format!(
        "Redis service `{}`: {} ({})",
        svc.name,
        seen(p, svc),
        svc.kind_from
    ));
    let (hp, how) = host_port(svc, 6379);
    s.line(
        format!("url = {}", quote(&format!("redis://{hp}/0"))),
        format!("host: {how}"),
    );
    let var = format!("STACK_BACKUP_REDIS_{}_URL", env_name(&name));
    s.line("", password_note(svc, &var, "redis"));
    s.line(
        "role = \"cache\"",
        "a guess: set \"data\" if what it holds must be kept (then every backup takes it)",
    );
    if let Some(c) = &svc.container {
        s.line(
            format!("container = {}", quote(c)),
            "its RDB file is read inside it (docker exec)",
        );
    }
    s
}

fn docker_section(p: &Project) -> Section {
    let mut s = Section::new("docker", "[docker]".into());
    s.line(
        format!("compose-project = {}", quote(&p.name)),
        format!(
            "label {}: every backup takes the images of its containers and the volumes labelled with it, as they are then",
        compose::PROJECT_LABEL),
    );
    if !p.images.is_empty() {
        s.line("", format!("images now: {}", p.images.join(", ")));
    }
    let labelled: Vec<&str> = p
        .volumes
        .iter()
        .filter(|v| v.labelled)
        .map(|v| v.name.as_str())
        .collect();
    if !labelled.is_empty() {
        s.line("", format!("labelled volumes now: {}", labelled.join(", ")));
    }
    let db_volumes: Vec<String> = p
        .volumes
        .iter()
        .filter(|v| {
            // A volume no container mounts is nobody's data directory.
            !v.users.is_empty()
                && v.users.iter().all(|(svc, _)| {
                    p.services
                        .iter()
                        .any(|s| &s.name == svc && s.kind.is_database())
                })
        })
        .map(|v| v.name.clone())
        .collect();
    if !db_volumes.is_empty() {
        s.line(
            "",
            format!(
                "{} hold(s) a database's files: the dump is what restores it; the copy of the files is taken too",
                db_volumes.join(", ")
            ),
        );
    }
    let images: Vec<&Built> = p
        .built
        .iter()
        .filter(|b| b.present && !p.images.contains(&b.reference))
        .collect();
    if !images.is_empty() {
        for b in &images {
            s.line(
                "",
                format!(
                    "{}: built by the project (services.{}.build{}), no container yet",
                    b.reference,
                    b.service,
                    b.line.map(|l| format!(", line {l}")).unwrap_or_default()
                ),
            );
        }
        let list: Vec<String> = images.iter().map(|b| quote(&b.reference)).collect();
        s.line(format!("images = [{}]", list.join(", ")), "");
    }
    let unlabelled: Vec<&Volume> = p.volumes.iter().filter(|v| !v.labelled).collect();
    if !unlabelled.is_empty() {
        for v in &unlabelled {
            let users: Vec<String> = v
                .users
                .iter()
                .map(|(svc, dst)| format!("{svc}:{dst}"))
                .collect();
            s.line(
                "",
                format!(
                    "{}: mounted by {} and not labelled with the project (external)",
                    v.name,
                    users.join(", ")
                ),
            );
        }
        let list: Vec<String> = unlabelled.iter().map(|v| quote(&v.name)).collect();
        s.line(format!("volumes = [{}]", list.join(", ")), "");
    }
    s
}

fn paths_sections(p: &Project, names: &mut BTreeSet<String>) -> Vec<Section> {
    let mut out = Vec::new();
    let wd = p.working_dir.as_ref().filter(|w| w.is_dir());
    if let Some(w) = wd {
        let name = component_name("compose", names);
        let mut s = Section::new("paths", format!("[paths.{}]", key(&name)));
        s.about(format!(
            "The project's directory: its compose file{} (label {})",
            if w.join(".env").exists() {
                " and .env"
            } else {
                ""
            },
            compose::WORKING_DIR_LABEL
        ));
        if w.join(".env").exists() {
            s.about(".env holds secrets (passwords): the repository stores it encrypted, like every file; restore brings it back");
        }
        s.line(format!("path = {}", quote(&w.display().to_string())), "");
        let inside: Vec<String> = p
            .binds
            .iter()
            .filter(|b| b.source.starts_with(w))
            .map(|b| format!("{} ({}:{})", b.source.display(), b.service, b.destination))
            .collect();
        if !inside.is_empty() {
            s.line(
                "",
                format!("also holds the bind mounts {}", inside.join(", ")),
            );
        }
        out.push(s);
    }
    let mut dirs: BTreeMap<PathBuf, Vec<&Bind>> = BTreeMap::new();
    for b in &p.binds {
        if wd.is_some_and(|w| b.source.starts_with(w)) {
            continue;
        }
        // A bind-mounted file is taken with its directory (a `paths`
        // component is a directory).
        let dir = if b.is_dir {
            b.source.clone()
        } else {
            b.source
                .parent()
                .map_or_else(|| b.source.clone(), Path::to_path_buf)
        };
        dirs.entry(dir).or_default().push(b);
    }
    // A directory inside another one taken already is not taken twice.
    let all: Vec<PathBuf> = dirs.keys().cloned().collect();
    for (dir, binds) in dirs {
        if all.iter().any(|o| o != &dir && dir.starts_with(o)) {
            continue;
        }
        let first = binds[0];
        // Named after where the service sees it (`/media` → `app-media`):
        // host paths are often temporary or generic names.
        let base = Path::new(&first.destination)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let name = component_name(&format!("{}-{base}", first.service), names);
        let mut s = Section::new("paths", format!("[paths.{}]", key(&name)));
        let what: Vec<String> = binds
            .iter()
            .map(|b| {
                format!(
                    "{}{} → {}:{}",
                    b.source.display(),
                    if b.is_dir {
                        ""
                    } else {
                        " (a file: its directory is taken)"
                    },
                    b.service,
                    b.destination
                )
            })
            .collect();
        s.about(format!("Bind mount {}", what.join(", ")));
        s.line(format!("path = {}", quote(&dir.display().to_string())), "");
        out.push(s);
    }
    out
}

fn sqlite_section(f: &Sqlite, names: &mut BTreeSet<String>) -> Section {
    let stem = f
        .path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "db".into());
    let name = component_name(&stem, names);
    let mut s = Section::new("sqlite", format!("[sqlite.{}]", key(&name)));
    match &f.volume {
        Some(v) => {
            s.about(format!(
                "A SQLite database (file header `SQLite format 3`) in volume {v}, mounted by service `{}`",
                f.service
            ));
            s.line(format!("volume = {}", quote(v)), "");
            s.line(
                format!("path = {}", quote(&f.path.display().to_string())),
                "relative to the volume",
            );
        }
        None => {
            s.about(format!(
                "A SQLite database (file header `SQLite format 3`) in a bind mount of service `{}`",
                f.service
            ));
            s.line(
                format!("path = {}", quote(&f.path.display().to_string())),
                "",
            );
        }
    }
    s
}

// --- doctor: what no component covers ----------------------------------------

/// A mount of a project's container that no component backs up.
#[derive(Debug, Clone, Serialize)]
pub struct Unprotected {
    /// The Compose project.
    pub project: String,
    /// The container.
    pub container: String,
    /// Its service.
    pub service: String,
    /// `volume` or `bind`.
    pub kind: String,
    /// The volume's name, or the bind mount's host path.
    pub what: String,
    /// Where the container sees it.
    pub destination: String,
}

/// The projects a stack belongs to: `[docker] compose-project`, and the
/// projects of the containers its components run in.
fn stack_projects(stack: &Stack, covered: &[Covered]) -> Result<Vec<String>> {
    let mut out: BTreeSet<String> = stack
        .cfg
        .docker
        .as_ref()
        .and_then(|d| d.compose_project.clone())
        .into_iter()
        .collect();
    let names: Vec<&str> = covered
        .iter()
        .filter_map(|c| match c {
            Covered::Container(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    for n in names {
        let label = format!(
            "{{{{index .Config.Labels \"{}\"}}}}",
            compose::PROJECT_LABEL
        );
        // A container that is gone is reported by its component's check.
        if let Ok(p) = crate::process::output(
            "docker",
            "docker",
            &["container", "inspect", "--format", &label, n],
        ) {
            let p = p.trim();
            if !p.is_empty() && p != "<no value>" {
                out.insert(p.to_string());
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Every volume and bind mount of the stack's Compose projects (see
/// [`stack_projects`]) that no component covers. System paths (the
/// Docker socket, `/etc/localtime`, devices) are not data and not listed.
/// Empty when the stack names no project.
pub fn unprotected(stack: &Stack) -> Result<(Vec<String>, Vec<Unprotected>)> {
    let covered: Vec<Covered> = stack
        .components()
        .iter()
        .flat_map(|id| id.kind().covers(stack, id))
        .collect();
    let projects = stack_projects(stack, &covered)?;
    let dirs: Vec<PathBuf> = covered
        .iter()
        .filter_map(|c| match c {
            Covered::Dir(d) => Some(absolute(d)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for project in &projects {
        for c in compose::containers(project)? {
            if covered.contains(&Covered::Container(c.name.clone())) {
                continue;
            }
            for m in &c.mounts {
                let is_covered = match (m.kind.as_str(), &m.name) {
                    ("volume", Some(n)) => {
                        stack.volumes.contains(n) || covered.contains(&Covered::Volume(n.clone()))
                    }
                    ("bind", _) => {
                        system_path(&m.source) || {
                            let src = absolute(&m.source);
                            dirs.iter().any(|d| src.starts_with(d))
                        }
                    }
                    _ => true,
                };
                if !is_covered {
                    out.push(Unprotected {
                        project: project.clone(),
                        container: c.name.clone(),
                        service: c.service().to_string(),
                        kind: m.kind.clone(),
                        what: m
                            .name
                            .clone()
                            .unwrap_or_else(|| m.source.display().to_string()),
                        destination: m.destination.clone(),
                    });
                }
            }
        }
    }
    Ok((projects, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_recognised() {
        let none = BTreeSet::new();
        for (img, kind) in [
            ("postgres:16", ServiceKind::Postgres),
            ("docker.io/postgis/postgis:16-3.4", ServiceKind::Postgres),
            ("timescale/timescaledb-ha:pg16", ServiceKind::Postgres),
            ("mariadb:11", ServiceKind::Mysql),
            ("mysql@sha256:abc", ServiceKind::Mysql),
            ("valkey/valkey:8", ServiceKind::Redis),
            ("redis", ServiceKind::Redis),
            ("oliver006/redis_exporter", ServiceKind::Other),
            ("nextcloud:29", ServiceKind::Other),
        ] {
            assert_eq!(recognise(img, &none).0, kind, "{img}");
        }
        let env = |vs: &[&str]| vs.iter().map(|s| (*s).to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            recognise("sbtest/db:1", &env(&["POSTGRES_PASSWORD", "PGDATA"])).0,
            ServiceKind::Postgres
        );
        // An application that connects to a database is not one.
        assert_eq!(
            recognise("nextcloud", &env(&["POSTGRES_PASSWORD", "POSTGRES_HOST"])).0,
            ServiceKind::Other
        );
        assert_eq!(
            recognise("x/db", &env(&["MARIADB_ROOT_PASSWORD"])).0,
            ServiceKind::Mysql
        );
    }

    #[test]
    fn compose_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("compose.yaml");
        std::fs::write(
            &f,
            "name: shop\nservices:\n  db:\n    image: postgres:16\n    environment:\n      POSTGRES_USER: shop\n      POSTGRES_PASSWORD: ${PW}\n    volumes:\n      - pg:/var/lib/postgresql/data\n  \"web\":\n    build: .\n    environment:\n      - SECRET_KEY=abc\n      - DEBUG\n    volumes:\n      - ./media:/media:ro\n      - type: volume\n        source: ext\n        target: /ext\nvolumes:\n  pg: {}\n  ext:\n    external: true\n",
        )
        .unwrap();
        let c = ComposeFile::read(&f).unwrap();
        assert_eq!(c.name.as_deref(), Some("shop"));
        let db = &c.services["db"];
        assert_eq!(db.line, Some(3));
        assert_eq!(db.env["POSTGRES_USER"].as_deref(), Some("shop"));
        assert_eq!(db.env["POSTGRES_PASSWORD"], None);
        let web = &c.services["web"];
        assert!(web.build);
        assert_eq!(web.line, Some(10));
        assert_eq!(web.mounts[0], ("./media".into(), "/media".into()));
        assert_eq!(c.volume_name("shop", "pg"), "shop_pg");
        assert_eq!(c.volume_name("shop", "ext"), "ext");
    }

    #[test]
    fn sqlite_scan_reads_headers_and_follows_no_link() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = b"SQLite format 3\0".to_vec();
        db.resize(4096, 0);
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/app.db"), &db).unwrap();
        std::fs::write(dir.path().join("a/not.db"), vec![0u8; 4096]).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("x.db"), &db).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("x.db"), dir.path().join("x.db")).unwrap();
        assert_eq!(sqlite_files(dir.path()), vec![PathBuf::from("a/b/app.db")]);
    }
}
