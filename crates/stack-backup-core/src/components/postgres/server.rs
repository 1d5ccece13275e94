//! PostgreSQL: connecting, server version, and choosing a `pg_dump` whose
//! major version fits the server.
//!
//! Contract: the password (from the URL or `password-file`) is handed to
//! child processes only through `PGPASSWORD` in their environment, never in
//! argv, and never appears in errors (URLs are redacted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::process;

/// Connection timeout for checks and dumps.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The component name of a `[postgres.NAME]` table.
#[must_use]
pub fn component(name: &str) -> String {
    crate::components::ComponentId::new(&super::Postgres, name).to_string()
}

/// The connection parameters of a config entry, password included. Every
/// session opened with them gives up waiting for a lock after the entry's
/// `lock-timeout-seconds` (SQLSTATE 55P03) instead of waiting forever.
pub fn client_config(name: &str, cfg: &PostgresConfig) -> Result<postgres::Config> {
    connection_config(name, cfg, &cfg.url, cfg.password_file.as_deref(), "")
}

/// The connection parameters of the entry's `admin-url`, when it has one.
pub fn admin_config(name: &str, cfg: &PostgresConfig) -> Result<Option<postgres::Config>> {
    cfg.admin_url
        .as_ref()
        .map(|url| connection_config(name, cfg, url, cfg.admin_password_file.as_deref(), "admin-"))
        .transpose()
}

fn connection_config(
    name: &str,
    cfg: &PostgresConfig,
    url: &crate::config::DbUrl,
    password_file: Option<&Path>,
    what: &str,
) -> Result<postgres::Config> {
    let mut pc = postgres::Config::from_str(url.expose()).map_err(|e| {
        Error::component(
            component(name),
            format!("invalid {what}URL {}: {e}", url.redacted()),
        )
    })?;
    if let Some(file) = password_file {
        let pw = std::fs::read_to_string(file).map_err(|e| {
            Error::component(
                component(name),
                format!("cannot read {what}password-file {}: {e}", file.display()),
            )
        })?;
        pc.password(pw.lines().next().unwrap_or_default());
    }
    if let Some(container) = &cfg.container {
        in_container(name, container, &mut pc)?;
    }
    pc.connect_timeout(CONNECT_TIMEOUT);
    let lock = lock_timeout_option(cfg);
    let options = match pc.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {lock}"),
        _ => lock,
    };
    pc.options(&options);
    Ok(pc)
}

/// Points `pc` at the container's address when its host is a name of the
/// container (`components/docker/address.rs`); the host name stays for
/// messages. Tools run inside the container ignore both.
fn in_container(name: &str, container: &str, pc: &mut postgres::Config) -> Result<()> {
    if !pc.get_hostaddrs().is_empty() {
        return Ok(());
    }
    let hosts: Vec<String> = pc
        .get_hosts()
        .iter()
        .filter_map(|h| match h {
            postgres::config::Host::Tcp(h) => Some(h.clone()),
            postgres::config::Host::Unix(_) => None,
        })
        .collect();
    // Every host is resolved (none left to this host's DNS); `hostaddr`
    // goes with every host or none, so several hosts must all name the
    // container.
    let ports = pc.get_ports().to_vec();
    let mut addrs = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let port = ports
            .get(i)
            .or_else(|| ports.first())
            .copied()
            .unwrap_or(5432);
        let at =
            crate::components::docker::address::resolve(&component(name), container, host, port)?;
        match at {
            crate::components::docker::address::Resolved::Container(ip) => addrs.push(ip),
            crate::components::docker::address::Resolved::AsWritten if hosts.len() > 1 => {
                return Err(Error::component(
                    component(name),
                    format!("container `{container}`: with several hosts in the URL, each must name the container"),
                ));
            }
            crate::components::docker::address::Resolved::AsWritten => {}
        }
    }
    for ip in addrs {
        pc.hostaddr(ip);
    }
    Ok(())
}

/// `-c lock_timeout=…` for a session's options (`PGOPTIONS` of a tool).
fn lock_timeout_option(cfg: &PostgresConfig) -> String {
    format!("-c lock_timeout={}s", cfg.lock_timeout().as_secs())
}

/// Connects to the database of a config entry.
/// A database that does not exist is [`Error::is_missing`].
pub fn connect(name: &str, cfg: &PostgresConfig) -> Result<postgres::Client> {
    client_config(name, cfg)?
        .connect(postgres::NoTls)
        .map_err(|e| {
            let message = format!(
                "cannot connect to {}: {}",
                cfg.url.redacted(),
                error_text(&e)
            );
            if e.code() == Some(&postgres::error::SqlState::INVALID_CATALOG_NAME) {
                // Said plainly: the day it happens, the next step is a restore.
                Error::missing(
                    component(name),
                    format!(
                        "database `{}` does not exist ({message}); `stack-backup restore` creates it",
                        client_config(name, cfg)
                            .ok()
                            .and_then(|pc| pc.get_dbname().map(str::to_string))
                            .unwrap_or_default()
                    ),
                )
            } else {
                Error::component(component(name), message)
            }
        })
}

/// The most useful text of a driver error (its source holds the reason).
fn error_text(e: &postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// The server's version.
#[derive(Debug, Clone, Serialize)]
pub struct ServerVersion {
    /// e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    /// e.g. `15`.
    pub major: u32,
}

/// Asks the server for its version.
pub fn server_version(name: &str, client: &mut postgres::Client) -> Result<ServerVersion> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
            &[],
        )
        .map_err(|e| {
            Error::component(
                component(name),
                format!("querying the server version: {}", error_text(&e)),
            )
        })?;
    let version: String = row.get(0);
    let num: i32 = row.get(1);
    Ok(ServerVersion {
        version,
        major: u32::try_from(num / 10000).unwrap_or(0),
    })
}

/// A PostgreSQL client tool (`pg_dump`, `pg_restore`, …) found on this host.
#[derive(Debug, Clone, Serialize)]
pub struct PgTool {
    /// Where it is.
    pub path: PathBuf,
    /// Its `--version` output, e.g. `pg_dump (PostgreSQL) 15.18`.
    pub version: String,
    /// Its major version.
    pub major: u32,
}

/// What `PATH --version` says, asked once per process and path.
fn tool_version(path: &Path) -> Option<PgTool> {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<BTreeMap<PathBuf, Option<PgTool>>>> =
        std::sync::OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(t) = seen.lock().ok().and_then(|m| m.get(path).cloned()) {
        return t;
    }
    let t = ask_version(path);
    if let Ok(mut m) = seen.lock() {
        m.insert(path.to_path_buf(), t.clone());
    }
    t
}

fn ask_version(path: &Path) -> Option<PgTool> {
    let out = process::output("postgres", &path.to_string_lossy(), &["--version"]).ok()?;
    let major = out
        .split_whitespace()
        .find_map(|w| w.split('.').next().and_then(|m| m.parse::<u32>().ok()))?;
    Some(PgTool {
        path: path.to_path_buf(),
        version: out,
        major,
    })
}

/// Candidate directories for client tools: the configured `bin-dir` only
/// when set; else Debian's versioned ones (`/usr/lib/postgresql/N/bin`),
/// newest first, then `PATH`.
fn candidates(tool: &str, bin_dir: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = bin_dir {
        return vec![dir.join(tool)];
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin").join(tool)))
        })
        .filter(|(_, p)| p.exists())
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    let mut out: Vec<PathBuf> = dirs.into_iter().map(|(_, p)| p).collect();
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(
            std::env::split_paths(&path)
                .map(|d| d.join(tool))
                .filter(|p| p.exists()),
        );
    }
    out
}

/// Finds `tool` (e.g. `pg_dump`) whose major version fits a server of
/// `server_major`: the same major if there is one, else the oldest newer
/// one. An older tool cannot dump a newer server and is never chosen.
pub fn find_tool(
    name: &str,
    tool: &str,
    server_major: u32,
    bin_dir: Option<&Path>,
) -> Result<PgTool> {
    // Candidates are asked in order and the first of the server's major
    // wins, so the usual case runs one `--version` (Debian's PATH entries
    // are Perl wrappers, slow to start).
    let mut found: Vec<PgTool> = Vec::new();
    for p in candidates(tool, bin_dir) {
        if let Some(t) = tool_version(&p) {
            if t.major == server_major {
                return Ok(t);
            }
            found.push(t);
        }
    }
    if let Some(t) = found
        .iter()
        .filter(|t| t.major > server_major)
        .min_by_key(|t| t.major)
    {
        return Ok(t.clone());
    }
    let seen: Vec<String> = found
        .iter()
        .map(|t| format!("{} ({})", t.path.display(), t.major))
        .collect();
    Err(Error::component(
        component(name),
        format!(
            "no {tool} of major version {server_major} or newer (found: {}); install postgresql-client-{server_major}",
            if seen.is_empty() { "none".into() } else { seen.join(", ") }
        ),
    ))
}

/// The environment that points a libpq tool at the configured database.
/// The password goes here (`PGPASSWORD`), never into argv. With
/// `in_container`, host and port are left to the container's defaults.
pub fn child_env(pc: &postgres::Config, in_container: bool) -> Vec<(String, String)> {
    let mut env = vec![("PGAPPNAME".to_string(), "stack-backup".to_string())];
    if let Some(options) = pc.get_options() {
        // The lock timeout of `client_config`: libpq tools honour it for
        // what they run before their own `SET`s (pg_dump and pg_restore
        // reset it; they get `--lock-wait-timeout` or a watchdog instead).
        env.push(("PGOPTIONS".into(), options.to_string()));
    }
    if !in_container {
        if let Some(host) = pc.get_hosts().first() {
            let h = match host {
                postgres::config::Host::Tcp(h) => h.clone(),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            env.push(("PGHOST".into(), h));
        }
        if let Some(addr) = pc.get_hostaddrs().first() {
            env.push(("PGHOSTADDR".into(), addr.to_string()));
        }
        if let Some(port) = pc.get_ports().first() {
            env.push(("PGPORT".into(), port.to_string()));
        }
        env.push(("PGCONNECT_TIMEOUT".into(), "10".into()));
    }
    if let Some(user) = pc.get_user() {
        env.push(("PGUSER".into(), user.to_string()));
    }
    if let Some(db) = pc.get_dbname() {
        env.push(("PGDATABASE".into(), db.to_string()));
    }
    if let Some(pw) = pc.get_password() {
        env.push((
            "PGPASSWORD".into(),
            String::from_utf8_lossy(pw).into_owned(),
        ));
    }
    env
}

/// A libpq tool to run: on this host, or inside a container.
#[derive(Debug, Clone)]
pub struct ToolRun {
    /// Program to execute.
    pub program: PathBuf,
    /// Arguments before the tool's own (for `docker exec …`).
    pub prefix: Vec<String>,
    /// Environment (holds the password).
    pub env: Vec<(String, String)>,
    /// `--version` of the tool.
    pub version: String,
}

impl ToolRun {
    /// Finds `tool` for a config entry: in its container, or a host tool
    /// whose major version fits `server_major`.
    pub fn find(
        name: &str,
        cfg: &PostgresConfig,
        pc: &postgres::Config,
        tool: &str,
        server_major: u32,
    ) -> Result<Self> {
        let env = child_env(pc, cfg.container.is_some());
        match &cfg.container {
            Some(c) => {
                let version =
                    process::output(&component(name), "docker", &["exec", c, tool, "--version"])?;
                let mut prefix = vec!["exec".to_string(), "-i".to_string()];
                for (k, _) in &env {
                    // `-e NAME` passes the value from our environment:
                    // the password never appears in docker's argv.
                    prefix.push("-e".into());
                    prefix.push(k.clone());
                }
                prefix.push(c.clone());
                prefix.push(tool.to_string());
                Ok(Self {
                    program: PathBuf::from("docker"),
                    prefix,
                    env,
                    version,
                })
            }
            None => {
                let t = find_tool(name, tool, server_major, cfg.bin_dir.as_deref())?;
                Ok(Self {
                    program: t.path,
                    prefix: Vec::new(),
                    env,
                    version: t.version,
                })
            }
        }
    }

    /// The full argument list for `args` of the tool.
    #[must_use]
    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all = self.prefix.clone();
        all.extend(args.iter().map(|a| (*a).to_string()));
        all
    }

    /// Runs the tool to completion, returning stdout.
    pub fn output(&self, component: &str, args: &[&str]) -> Result<Vec<u8>> {
        let all = self.args(args);
        let out = crate::process::command(&self.program)
            .args(&all)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                Error::component(
                    component,
                    format!("cannot run {}: {e}", self.program.display()),
                )
            })?;
        if !out.status.success() {
            return Err(Error::component(
                component,
                format!(
                    "`{} {}` failed ({}): {}",
                    self.program.display(),
                    all.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(out.stdout)
    }
}

/// Quotes an SQL identifier.
#[must_use]
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The migration tables stack-backup knows: (tool, table, SELECT list, WHERE).
const MIGRATION_TABLES: [(&str, &str, &str, &str); 7] = [
    ("alembic", "alembic_version", "version_num::text", "true"),
    ("django", "django_migrations", "app || '.' || name", "true"),
    ("rails", "schema_migrations", "version::text", "true"),
    (
        "flyway",
        "flyway_schema_history",
        "coalesce(version::text, script)",
        "success",
    ),
    ("sqlx", "_sqlx_migrations", "version::text", "success"),
    (
        "diesel",
        "__diesel_schema_migrations",
        "version::text",
        "true",
    ),
    (
        "prisma",
        "_prisma_migrations",
        "migration_name",
        "finished_at IS NOT NULL AND rolled_back_at IS NULL",
    ),
];

/// Reads the applied state of every known migration tool present in the
/// database. Runs inside the caller's transaction (each probe under a
/// savepoint, so a table of another shape does not abort it).
pub fn migration_state(
    name: &str,
    client: &mut postgres::Client,
) -> Result<Vec<crate::manifest::MigrationState>> {
    let fail = |e: postgres::Error| {
        Error::component(
            component(name),
            format!("reading migration state: {}", error_text(&e)),
        )
    };
    let mut out = Vec::new();
    for (tool, table, select, filter) in MIGRATION_TABLES {
        let schema: Option<String> = client
            .query_opt(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relname = $1 AND c.relkind IN ('r', 'p') \
                 ORDER BY (n.nspname = current_schema()) DESC, n.nspname LIMIT 1",
                &[&table],
            )
            .map_err(fail)?
            .map(|r| r.get(0));
        let Some(schema) = schema else { continue };
        client
            .batch_execute("SAVEPOINT sb_migrations")
            .map_err(fail)?;
        let q = format!(
            "SELECT ({select})::text FROM {}.{} WHERE {filter}",
            quote_ident(&schema),
            quote_ident(table)
        );
        match client.query(&q, &[]) {
            Ok(rows) => {
                client
                    .batch_execute("RELEASE SAVEPOINT sb_migrations")
                    .map_err(fail)?;
                let mut applied: Vec<String> = rows
                    .iter()
                    .filter_map(|r| r.get::<_, Option<String>>(0))
                    .collect();
                applied.sort();
                out.push(crate::manifest::MigrationState {
                    tool: tool.to_string(),
                    table: format!("{schema}.{table}"),
                    applied,
                });
            }
            Err(e) => {
                log::warn!(
                    "{}: {schema}.{table} is not a {tool} table: {}",
                    component(name),
                    error_text(&e)
                );
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT sb_migrations")
                    .map_err(fail)?;
            }
        }
    }
    Ok(out)
}

/// [`migration_state`] in a read-only transaction of its own.
pub fn migration_state_now(
    name: &str,
    client: &mut postgres::Client,
) -> Result<Vec<crate::manifest::MigrationState>> {
    client.batch_execute("BEGIN READ ONLY").map_err(|e| {
        Error::component(
            component(name),
            format!("reading migration state: {}", error_text(&e)),
        )
    })?;
    let state = migration_state(name, client);
    let _ = client.batch_execute("COMMIT");
    state
}

/// Exact row count of every user table (`schema.table`).
pub fn row_counts(
    name: &str,
    client: &mut postgres::Client,
) -> Result<std::collections::BTreeMap<String, i64>> {
    let fail = |e: postgres::Error| {
        Error::component(
            component(name),
            format!("counting rows: {}", error_text(&e)),
        )
    };
    let tables = client
        .query(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2",
            &[],
        )
        .map_err(fail)?;
    let mut counts = std::collections::BTreeMap::new();
    for t in tables {
        let (schema, table): (String, String) = (t.get(0), t.get(1));
        let n: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.{}",
                    quote_ident(&schema),
                    quote_ident(&table)
                ),
                &[],
            )
            .map_err(fail)?
            .get(0);
        counts.insert(format!("{schema}.{table}"), n);
    }
    Ok(counts)
}

/// A database ready to be dumped: its entries for the backup set, its
/// manifest record, and the session holding the exported snapshot that
/// `pg_dump` dumps (so counts, migrations and dump agree exactly).
pub struct DumpPlan {
    /// Files of the backup set.
    pub entries: Vec<crate::source::Entry>,
    /// The manifest record.
    pub record: super::PostgresRecord,
    /// Keeps the snapshot alive until the backup has read the dump.
    pub session: postgres::Client,
    /// Counts rows and reads migration state in the same snapshot, on a
    /// second connection, while the dump streams. Its results belong in
    /// `record` (`row_counts`, `migrations`).
    pub facts: std::thread::JoinHandle<Result<Facts>>,
    /// The plan's decision, which `facts` waits for with the snapshot
    /// imported: the parent's facts when the parent's dump is reused (the
    /// equal marks prove them this database's; nothing is counted), or
    /// nothing when this sender is dropped (the dump runs: count).
    pub decide: std::sync::mpsc::Sender<Option<Facts>>,
}

/// Row counts and migration state, as of the dump's snapshot.
pub type Facts = (
    std::collections::BTreeMap<String, i64>,
    Vec<crate::manifest::MigrationState>,
);

/// Reads [`Facts`] in the exported snapshot `snapshot` on a new connection.
fn facts_in_snapshot(
    name: &str,
    pc: &postgres::Config,
    snapshot: &str,
    decision: &std::sync::mpsc::Receiver<Option<Facts>>,
) -> Result<Facts> {
    let mut c = pc.connect(postgres::NoTls).map_err(|e| {
        Error::component(
            component(name),
            format!("second connection for row counts: {}", error_text(&e)),
        )
    })?;
    let fail = |e: postgres::Error| {
        Error::component(
            component(name),
            format!("importing the snapshot: {}", error_text(&e)),
        )
    };
    c.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
        snapshot.replace('\'', "''")
    ))
    .map_err(fail)?;
    if let Ok(Some(parent)) = decision.recv() {
        let _ = c.batch_execute("COMMIT");
        return Ok(parent);
    }
    let counts = row_counts(name, &mut c)?;
    let migrations = migration_state(name, &mut c)?;
    let _ = c.batch_execute("COMMIT");
    Ok((counts, migrations))
}

/// Takes `ACCESS SHARE` on every user table the role may read, in the
/// snapshot's transaction, as `pg_dump` is about to: a session holding
/// `ACCESS EXCLUSIVE` (a migration, an idle transaction) makes this fail
/// within the lock timeout, naming it, before any dump starts; and the
/// tables cannot be altered or dropped under the running dump.
fn lock_tables(
    name: &str,
    cfg: &PostgresConfig,
    client: &mut postgres::Client,
    db: &str,
) -> Result<()> {
    let fail = |e: &postgres::Error| {
        Error::component(
            component(name),
            format!("locking the tables to dump: {}", error_text(e)),
        )
    };
    let tables: Vec<String> = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
            &[],
        )
        .map_err(|e| fail(&e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for chunk in tables.chunks(500) {
        let sql = format!("LOCK TABLE {} IN ACCESS SHARE MODE", chunk.join(", "));
        if let Err(e) = client.batch_execute(&sql) {
            if !super::locks::is_lock_timeout(&e) {
                return Err(fail(&e));
            }
            let who = connect(name, cfg)
                .map(|mut c| super::locks::blockers(&mut c, db))
                .unwrap_or_default();
            return Err(super::locks::timed_out(
                &component(name),
                db,
                cfg.lock_timeout(),
                &who,
            ));
        }
    }
    Ok(())
}

/// The roles the dump refers to: owners of, and grantees on, the objects
/// of the database's own schemas (built-in `pg_*` roles left out). These
/// are the only roles a restore may create (`roles::ensure`).
fn roles_used(name: &str, client: &mut postgres::Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') \
                         AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp%'), \
                  used AS ( \
                    SELECT nspowner AS r FROM pg_namespace WHERE oid IN (SELECT oid FROM ns) \
                    UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace WHERE oid IN (SELECT oid FROM ns) AND nspacl IS NOT NULL \
                    UNION SELECT relowner FROM pg_class WHERE relnamespace IN (SELECT oid FROM ns) \
                    UNION SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relnamespace IN (SELECT oid FROM ns) AND relacl IS NOT NULL \
                    UNION SELECT proowner FROM pg_proc WHERE pronamespace IN (SELECT oid FROM ns) \
                    UNION SELECT (aclexplode(proacl)).grantee FROM pg_proc WHERE pronamespace IN (SELECT oid FROM ns) AND proacl IS NOT NULL \
                    UNION SELECT typowner FROM pg_type WHERE typnamespace IN (SELECT oid FROM ns) \
                    UNION SELECT (aclexplode(typacl)).grantee FROM pg_type WHERE typnamespace IN (SELECT oid FROM ns) AND typacl IS NOT NULL \
                    UNION SELECT defaclrole FROM pg_default_acl \
                    UNION SELECT (aclexplode(defaclacl)).grantee FROM pg_default_acl) \
             SELECT rolname FROM pg_roles WHERE oid IN (SELECT r FROM used) AND rolname NOT LIKE 'pg\\_%' ORDER BY 1",
            &[],
        )
        .map_err(|e| {
            Error::component(
                component(name),
                format!("listing the roles the database uses: {}", error_text(&e)),
            )
        })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Connects, exports a snapshot, records versions, row counts and
/// migration state, dumps roles, and prepares the streaming `pg_dump`.
pub fn plan_dump(name: &str, cfg: &PostgresConfig) -> Result<DumpPlan> {
    use crate::source::{Artifact, Content, Entry, StreamSpec};
    let comp = component(name);
    let pc = client_config(name, cfg)?;
    let mut client = connect(name, cfg)?;
    let server = server_version(name, &mut client)?;
    let dump_tool = ToolRun::find(name, cfg, &pc, "pg_dump", server.major)?;
    let fail = |e: postgres::Error| {
        Error::component(
            comp.clone(),
            format!("exporting a snapshot: {}", error_text(&e)),
        )
    };
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .map_err(fail)?;
    let snapshot: String = client
        .query_one("SELECT pg_export_snapshot()", &[])
        .map_err(fail)?
        .get(0);
    let database = pc.get_dbname().unwrap_or("postgres").to_string();
    lock_tables(name, cfg, &mut client, &database)?;
    let roles_used = roles_used(name, &mut client)?;
    // The facts wait for the plan's decision (see `DumpPlan::decide`).
    let (decide, decision) = std::sync::mpsc::channel::<Option<Facts>>();
    let facts = {
        let (name, pc, snapshot) = (name.to_string(), pc.clone(), snapshot.clone());
        std::thread::spawn(move || facts_in_snapshot(&name, &pc, &snapshot, &decision))
    };

    let dump_path = format!(
        "postgres/{name}/{}.dump",
        crate::manifest::safe_file_name(&database)
    );
    let snapshot_arg = format!("--snapshot={snapshot}");
    let lock_wait = format!("--lock-wait-timeout={}s", cfg.lock_timeout().as_secs());
    let mark = {
        // What shapes the dump: its arguments and its environment (session
        // options through PGOPTIONS), the password left out.
        let mut stable = dump_tool.args(&["--format=custom", "--compress=0", "--no-password"]);
        stable.push(format!("roles={}", cfg.roles));
        stable.extend(
            (dump_tool.env.iter())
                .filter(|(k, _)| k != "PGPASSWORD")
                .map(|(k, v)| format!("{k}={v}")),
        );
        let args = crate::ledger::sha256_hex(stable.join("\0").as_bytes());
        super::mark::read(&mut client, &args)
            .inspect_err(|e| log::debug!("{comp}: no change mark: {}", error_text(e)))
            .ok()
            .flatten()
    };
    let mut entries = vec![Entry::File(Artifact {
        path: dump_path.clone(),
        component: comp.clone(),
        content: Content::Stream(StreamSpec {
            program: dump_tool.program.clone(),
            args: dump_tool.args(&[
                "--format=custom",
                "--compress=0",
                "--no-password",
                &lock_wait,
                &snapshot_arg,
            ]),
            env: dump_tool.env.clone(),
            what: "pg_dump".into(),
            magic: Some(b"PGDMP"),
        }),
        reuse_meta: None,
    })];

    let (mut roles, mut roles_note) = (None, None);
    if cfg.roles {
        match ToolRun::find(name, cfg, &pc, "pg_dumpall", server.major) {
            Ok(t) => {
                let full = t.output(&comp, &["--globals-only", "--no-password"]);
                let taken = match full {
                    Ok(b) => Ok(b),
                    Err(first) => t
                        .output(&comp, &["--globals-only", "--no-role-passwords", "--no-password"])
                        .inspect(|_| roles_note = Some("role passwords not readable by this user; roles taken without passwords".into()))
                        .map_err(|_| first),
                };
                match taken {
                    Ok(sql) => {
                        let path = format!("postgres/{name}/globals.sql");
                        entries.push(Entry::File(Artifact {
                            path: path.clone(),
                            component: comp.clone(),
                            content: Content::Bytes(std::sync::Arc::new(sql)),
                            reuse_meta: None,
                        }));
                        roles = Some(path);
                    }
                    Err(e) => roles_note = Some(format!("roles not taken: {e}")),
                }
            }
            Err(e) => roles_note = Some(format!("roles not taken: {e}")),
        }
    }
    let (host, port) = match &cfg.container {
        Some(c) => (format!("container:{c}"), 5432),
        None => (
            pc.get_hosts()
                .first()
                .map_or_else(String::new, |h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                }),
            pc.get_ports().first().copied().unwrap_or(5432),
        ),
    };
    Ok(DumpPlan {
        entries,
        record: super::PostgresRecord {
            database,
            host,
            port,
            user: pc.get_user().unwrap_or_default().to_string(),
            server_version: server.version,
            server_major: server.major,
            pg_dump_version: dump_tool.version,
            dump: dump_path,
            roles,
            roles_note,
            roles_used: Some(roles_used),
            migrations: Vec::new(),
            row_counts: std::collections::BTreeMap::new(),
            mark,
        },
        session: client,
        facts,
        decide,
    })
}
