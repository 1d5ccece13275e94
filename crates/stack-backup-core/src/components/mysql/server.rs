//! MariaDB/MySQL: connecting (the `mysql` crate), the server version, the
//! dump tool that fits it, the client option file that carries the
//! password to the tools, and the backup plan.
//!
//! Contract: the password reaches a child process only through a
//! `--defaults-extra-file` (mode 0600, in the checked state directory,
//! removed when its [`OptionFile`] drops, and by the next run when a
//! process was killed); never argv, environment, logs or errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::mysql::prelude::Queryable;

use super::{MysqlConfig, MysqlRecord};
use crate::config::DbUrl;
use crate::error::{Error, Result};
use crate::manifest::MigrationState;

/// Connection timeout for checks, dumps and restores.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The component name of a `[mysql.NAME]` table.
#[must_use]
pub fn component(name: &str) -> String {
    crate::components::ComponentId::new(&super::Mysql, name).to_string()
}

/// A parsed connection URL (password included: never shown).
#[derive(Clone)]
pub struct Options {
    /// The driver's options.
    pub opts: ::mysql::Opts,
    /// The URL, redacted (for messages).
    pub shown: String,
    /// Host (or socket path when `?socket=` is given).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// The database of the URL, if any.
    pub database: Option<String>,
}

impl Options {
    /// Parses `url` (`mysql://` or `mariadb://`) for `[mysql.NAME]`.
    pub fn of(name: &str, url: &DbUrl) -> Result<Self> {
        let raw = url.expose();
        let raw = raw
            .strip_prefix("mariadb://")
            .map_or_else(|| raw.to_string(), |r| format!("mysql://{r}"));
        let opts = ::mysql::Opts::from_url(&raw).map_err(|e| {
            Error::component(
                component(name),
                format!("invalid URL {}: {e}", url.redacted()),
            )
        })?;
        let opts: ::mysql::Opts = ::mysql::OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
            .into();
        Ok(Self {
            host: opts
                .get_socket()
                .map_or_else(|| opts.get_ip_or_hostname().to_string(), str::to_string),
            port: opts.get_tcp_port(),
            user: opts.get_user().unwrap_or_default().to_string(),
            database: opts.get_db_name().map(str::to_string),
            shown: url.redacted(),
            opts,
        })
    }

    /// Parses `url` of the entry `cfg`: with `container =`, a host that
    /// names the container is replaced by its address on its network, for
    /// the driver and for the tools' option file
    /// (`components/docker/address.rs`); `shown` keeps the name.
    pub fn of_config(name: &str, cfg: &MysqlConfig, url: &DbUrl) -> Result<Self> {
        let mut o = Self::of(name, url)?;
        if let (Some(container), None) = (&cfg.container, o.opts.get_socket()) {
            let at = crate::components::docker::address::resolve(
                &component(name),
                container,
                &o.host,
                o.opts.get_tcp_port(),
            )?;
            o.host = at.host(&o.host);
            o.opts = ::mysql::OptsBuilder::from_opts(o.opts)
                .ip_or_hostname(Some(o.host.clone()))
                .into();
        }
        Ok(o)
    }

    /// The same server and credentials, database `db`.
    #[must_use]
    pub fn with_database(&self, db: Option<&str>) -> Self {
        let mut o = self.clone();
        o.opts = ::mysql::OptsBuilder::from_opts(self.opts.clone())
            .db_name(db)
            .into();
        o.database = db.map(str::to_string);
        o
    }

    /// The database of the URL, required.
    pub fn database(&self, name: &str) -> Result<&str> {
        self.database.as_deref().ok_or_else(|| {
            Error::component(
                component(name),
                format!("{} names no database (`…/DBNAME`)", self.shown),
            )
        })
    }
}

/// The driver's error, said without the URL.
pub fn error_text(e: &::mysql::Error) -> String {
    match e {
        ::mysql::Error::MySqlError(m) => format!("{} (error {})", m.message, m.code),
        other => other.to_string(),
    }
}

/// The server's error code, if the error is the server's.
pub fn error_code(e: &::mysql::Error) -> Option<u16> {
    match e {
        ::mysql::Error::MySqlError(m) => Some(m.code),
        _ => None,
    }
}

/// Connects. A database that does not exist is [`Error::is_missing`].
pub fn connect(name: &str, o: &Options) -> Result<::mysql::Conn> {
    ::mysql::Conn::new(o.opts.clone()).map_err(|e| {
        let message = format!("cannot connect to {}: {}", o.shown, error_text(&e));
        if error_code(&e) == Some(1049) {
            Error::missing(component(name), message)
        } else {
            Error::component(component(name), message)
        }
    })
}

/// Runs `sql`, the error naming what was done.
pub fn exec(name: &str, c: &mut ::mysql::Conn, what: &str, sql: &str) -> Result<()> {
    c.query_drop(sql)
        .map_err(|e| Error::component(component(name), format!("{what}: {}", error_text(&e))))
}

/// Quotes an identifier with backticks.
#[must_use]
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Quotes a string literal.
#[must_use]
pub fn quote_str(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The server's version.
#[derive(Debug, Clone)]
pub struct ServerVersion {
    /// `VERSION()`, e.g. `10.11.19-MariaDB-0+deb12u1`.
    pub version: String,
    /// MariaDB (else MySQL).
    pub mariadb: bool,
    /// Major and minor.
    pub release: (u32, u32),
}

/// `X.Y` at the start of `s` (or after `Distrib ` / `Ver `).
fn release_of(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Asks the server for its version.
pub fn server_version(name: &str, c: &mut ::mysql::Conn) -> Result<ServerVersion> {
    let version: String = c
        .query_first("SELECT VERSION()")
        .map_err(|e| {
            Error::component(
                component(name),
                format!("querying the server version: {}", error_text(&e)),
            )
        })?
        .unwrap_or_default();
    Ok(ServerVersion {
        mariadb: version.contains("MariaDB"),
        release: release_of(&version).unwrap_or((0, 0)),
        version,
    })
}

/// A client tool found on this host, with its version.
#[derive(Debug, Clone)]
pub struct DumpTool {
    /// Where it is.
    pub program: PathBuf,
    /// Its `--version` line.
    pub version: String,
}

/// `program` on `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl DumpTool {
    /// The dump tool that fits `server`: `mariadb-dump` (else `mysqldump`)
    /// of the server's flavour and of its release or newer.
    pub fn find(name: &str, server: &ServerVersion) -> Result<Self> {
        Self::find_one(name, server, &["mariadb-dump", "mysqldump"])
    }

    /// The command-line client that fits `server` (restores).
    pub fn client(name: &str, server: &ServerVersion) -> Result<Self> {
        Self::find_one(name, server, &["mariadb", "mysql"])
    }

    fn find_one(name: &str, server: &ServerVersion, programs: &[&str]) -> Result<Self> {
        let mut seen = Vec::new();
        for program in programs {
            let Some(path) = on_path(program) else {
                continue;
            };
            let Ok(version) =
                crate::process::output(&component(name), &path.to_string_lossy(), &["--version"])
            else {
                continue;
            };
            // `… Ver 10.19 Distrib 10.11.19-MariaDB, …` (MariaDB);
            // `… Ver 8.0.36 for Linux …` (MySQL).
            let release = version
                .split_once("Distrib ")
                .or_else(|| version.split_once("Ver "))
                .and_then(|(_, r)| release_of(r));
            let mariadb = version.contains("MariaDB");
            if mariadb == server.mariadb && release.is_some_and(|r| r >= server.release) {
                return Ok(Self {
                    program: path,
                    version,
                });
            }
            seen.push(version);
        }
        let package = if server.mariadb {
            "mariadb-client"
        } else {
            "mysql-client"
        };
        Err(Error::component(
            component(name),
            format!(
                "no {} of release {}.{} or newer for server {} (found: {}); install {package} {}.{} or newer",
                programs.join(" or "),
                server.release.0,
                server.release.1,
                server.version,
                if seen.is_empty() { "none".into() } else { seen.join("; ") },
                server.release.0,
                server.release.1,
            ),
        ))
    }
}

/// A client option file (`[client]` user, password, host, port) for one
/// tool run, mode 0600 in the state directory; removed on drop. Files of
/// processes that died without dropping theirs are removed by the next
/// [`OptionFile::write`] in the same directory.
pub struct OptionFile {
    path: PathBuf,
}

impl OptionFile {
    /// Writes the option file of `o` in `state`.
    pub fn write(o: &Options, state: &Path) -> Result<Self> {
        use std::io::Write;
        static N: AtomicUsize = AtomicUsize::new(0);
        sweep(state);
        let path = state.join(format!(
            "mysql-{}-{}.cnf",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        // Option-file values: backslash escapes inside double quotes.
        let value = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut text = format!("[client]\nuser={}\n", value(&o.user));
        if let Some(pw) = o.opts.get_pass() {
            text.push_str(&format!("password={}\n", value(pw)));
        }
        match o.opts.get_socket() {
            Some(sock) => text.push_str(&format!("protocol=SOCKET\nsocket={}\n", value(sock))),
            None => text.push_str(&format!(
                "protocol=TCP\nhost={}\nport={}\n",
                value(&o.host),
                o.port
            )),
        }
        let guard = Self { path };
        let mut f = crate::system::state::create_private(&guard.path)?;
        f.set_len(0)
            .and_then(|()| f.write_all(text.as_bytes()))
            .map_err(|e| Error::io("writing", &guard.path, e))?;
        Ok(guard)
    }

    /// `--defaults-extra-file=PATH` (must be a tool's first argument).
    #[must_use]
    pub fn arg(&self) -> String {
        format!("--defaults-extra-file={}", self.path.display())
    }
}

impl Drop for OptionFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes option files whose process is gone (killed before its drop).
fn sweep(state: &Path) {
    let Ok(dir) = std::fs::read_dir(state) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("mysql-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if name.ends_with(".cnf") && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Base tables of the connection's database, sorted.
pub fn base_tables(name: &str, c: &mut ::mysql::Conn) -> Result<Vec<String>> {
    c.query(
        "SELECT TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
    )
    .map_err(|e| {
        Error::component(
            component(name),
            format!("listing tables: {}", error_text(&e)),
        )
    })
}

/// Views, triggers, routines and events of the connection's database.
pub fn objects(name: &str, c: &mut ::mysql::Conn) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (what, sql) in [
        (
            "views",
            "SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()",
        ),
        (
            "triggers",
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()",
        ),
        (
            "routines",
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()",
        ),
        (
            "events",
            "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()",
        ),
    ] {
        let n: u64 = c
            .query_first(sql)
            .map_err(|e| {
                Error::component(
                    component(name),
                    format!("counting {what}: {}", error_text(&e)),
                )
            })?
            .unwrap_or(0);
        if n > 0 {
            out.insert(what.to_string(), n);
        }
    }
    Ok(out)
}

/// Exact row count of every base table of the connection's database.
pub fn row_counts(name: &str, c: &mut ::mysql::Conn) -> Result<BTreeMap<String, i64>> {
    let mut counts = BTreeMap::new();
    for t in base_tables(name, c)? {
        let n: i64 = c
            .query_first(format!("SELECT COUNT(*) FROM {}", quote_ident(&t)))
            .map_err(|e| {
                Error::component(
                    component(name),
                    format!("counting rows of {t}: {}", error_text(&e)),
                )
            })?
            .unwrap_or(0);
        counts.insert(t, n);
    }
    Ok(counts)
}

/// The migration tables stack-backup knows here: (tool, table, SELECT).
const MIGRATION_TABLES: [(&str, &str, &str); 5] = [
    (
        "alembic",
        "alembic_version",
        "SELECT CAST(version_num AS CHAR) FROM alembic_version",
    ),
    (
        "django",
        "django_migrations",
        "SELECT CONCAT(app, '.', name) FROM django_migrations",
    ),
    (
        "rails",
        "schema_migrations",
        "SELECT CAST(version AS CHAR) FROM schema_migrations",
    ),
    (
        "flyway",
        "flyway_schema_history",
        "SELECT COALESCE(CAST(version AS CHAR), script) FROM flyway_schema_history WHERE success",
    ),
    ("laravel", "migrations", "SELECT migration FROM migrations"),
];

/// The applied state of every known migration tool whose table is in the
/// connection's database (a table of another shape is skipped, logged).
pub fn migration_state(name: &str, c: &mut ::mysql::Conn) -> Result<Vec<MigrationState>> {
    let tables = base_tables(name, c)?;
    let mut out = Vec::new();
    for (tool, table, select) in MIGRATION_TABLES {
        if !tables.iter().any(|t| t == table) {
            continue;
        }
        match c.query::<Option<String>, _>(select) {
            Ok(rows) => {
                let mut applied: Vec<String> = rows.into_iter().flatten().collect();
                applied.sort();
                out.push(MigrationState {
                    tool: tool.to_string(),
                    table: table.to_string(),
                    applied,
                });
            }
            Err(e) => log::warn!(
                "{}: {table} is not a {tool} table: {}",
                component(name),
                error_text(&e)
            ),
        }
    }
    Ok(out)
}

/// What proves a database unchanged between two backups (MariaDB only),
/// read while the tables are read-locked, before the dump's snapshot:
/// InnoDB's log sequence number (every committed change to an InnoDB
/// table, DDL included, writes redo and advances it, server-wide), which
/// server it is and when it started, and a digest of every table's
/// definition (`SHOW CREATE TABLE`: changes that only touch the `.frm`,
/// such as a comment or a default, write no redo). Two equal marks mean
/// no change the dump could show happened between them
/// (`docs/decisions/0038-mysql-unchanged-backups.md`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChangeMark {
    /// `Innodb_lsn_current`.
    pub lsn: u64,
    /// The server's start, Unix seconds (`UNIX_TIMESTAMP() - Uptime`: ±1).
    pub started: i64,
    /// `@@hostname:@@port:@@datadir`.
    pub server: String,
    /// SHA-256 of every table's name and `SHOW CREATE TABLE`, in order.
    pub tables: String,
    /// SHA-256 of the dump's arguments (the option file's path left out):
    /// a dump taken with other options holds other text. Absent in marks
    /// written before it existed, which then never agree.
    #[serde(default)]
    pub dump_args: String,
}

impl ChangeMark {
    /// Whether nothing the dump shows can have changed from `old` to
    /// `self` (the start time read twice may differ by a second).
    #[must_use]
    pub fn same(&self, old: &Self) -> bool {
        self.lsn == old.lsn
            && self.server == old.server
            && self.tables == old.tables
            && !self.dump_args.is_empty()
            && self.dump_args == old.dump_args
            && (self.started - old.started).abs() <= 1
    }
}

/// The [`ChangeMark`] of the connection's database, or `None` when the
/// shortcut cannot be proven sound: not MariaDB (MySQL exposes no LSN to
/// an unprivileged user), an entry that is not an InnoDB base table
/// (MyISAM/Aria/MEMORY write no InnoDB redo; views, sequences and
/// system-versioned tables are left to the dump), triggers, routines or
/// events (their definitions live outside InnoDB; `objects`, read before
/// the lock, and read again here under it), a status missing, or any
/// error (logged at debug: a mark is an optimisation, never a reason to
/// fail the backup). Call it with the tables read-locked; `dump_args` is
/// the dump's argument list without the option file.
fn change_mark(
    name: &str,
    c: &mut ::mysql::Conn,
    server: &ServerVersion,
    objects: &BTreeMap<String, u64>,
    dump_args: &[String],
) -> Option<ChangeMark> {
    if !server.mariadb || !objects.is_empty() {
        return None;
    }
    match read_mark(name, c, dump_args) {
        Ok(mark) => mark,
        Err(e) => {
            log::debug!("{}: no change mark: {}", component(name), e.detail());
            None
        }
    }
}

/// [`change_mark`]'s reads, in order: the LSN first, then everything it
/// must cover.
fn read_mark(
    name: &str,
    c: &mut ::mysql::Conn,
    dump_args: &[String],
) -> Result<Option<ChangeMark>> {
    use sha2::Digest;
    let fail = |what: &str, e: &::mysql::Error| {
        Error::component(component(name), format!("{what}: {}", error_text(e)))
    };
    // First: a change after this read advances it, whatever it touches.
    let status: Option<(Option<u64>, Option<i64>)> = c
        .query_first(
            "SELECT CAST((SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                     WHERE VARIABLE_NAME = 'INNODB_LSN_CURRENT') AS UNSIGNED), \
                    CAST(UNIX_TIMESTAMP() AS SIGNED) - CAST((SELECT VARIABLE_VALUE \
                     FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME') AS SIGNED)",
        )
        .map_err(|e| fail("reading the log sequence number", &e))?;
    let Some((Some(lsn), Some(started))) = status else {
        return Ok(None);
    };
    // Read before the lock, these could have been created since.
    if !objects(name, c)?.is_empty() {
        return Ok(None);
    }
    let entries: Vec<(String, String, Option<String>)> = c
        .query(
            "SELECT TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
        )
        .map_err(|e| fail("listing tables", &e))?;
    if entries
        .iter()
        .any(|(_, ty, engine)| ty != "BASE TABLE" || engine.as_deref() != Some("InnoDB"))
    {
        return Ok(None);
    }
    let mut digest = sha2::Sha256::new();
    for (t, _, _) in &entries {
        let create: Option<(String, String)> = c
            .query_first(format!("SHOW CREATE TABLE {}", quote_ident(t)))
            .map_err(|e| fail(&format!("reading the definition of {t}"), &e))?;
        let Some((_, create)) = create else {
            return Ok(None);
        };
        for part in [t.as_bytes(), b"\0", create.as_bytes(), b"\0"] {
            digest.update(part);
        }
    }
    let server_id: Option<String> = c
        .query_first("SELECT CONCAT(@@hostname, ':', @@port, ':', @@datadir)")
        .map_err(|e| fail("reading the server's identity", &e))?;
    let mut args = sha2::Sha256::new();
    for a in dump_args {
        args.update(a.as_bytes());
        args.update(b"\0");
    }
    Ok(server_id.map(|server| ChangeMark {
        lsn,
        started,
        server,
        tables: hex::encode(digest.finalize()),
        dump_args: hex::encode(args.finalize()),
    }))
}

/// Facts read in the dump's snapshot: row counts and migration state.
type Facts = (BTreeMap<String, i64>, Vec<MigrationState>);

/// Holds `LOCK TABLES … READ` on every base table from before the counting
/// session's snapshot until the dump's session has started reading
/// (`SELECT /*!40001 SQL_NO_CACHE */`, or its table list), so that both
/// snapshots see the same committed rows. Released when the dump is seen;
/// at once when the parent's dump is reused (`Planned::on_reuse` sets
/// `stop`: no dump will come); at the latest when the guard drops (the
/// backup's `finish`, or the plan dropped).
struct SnapshotLock {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl SnapshotLock {
    /// Releases the lock (if still held); whether the dump started under it.
    fn release(mut self) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .is_some_and(|t| t.join().unwrap_or(false))
    }
}

impl Drop for SnapshotLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits (owning `lock`, which holds the table locks) until a session
/// opened after `after` is seen running one of the dump's reads in `db`,
/// or `stop`; then unlocks. Returns whether the dump started under the
/// lock: seen, or (a quick dump the 2 ms polls missed, or the watch
/// failed) the lock's own session still answered `UNLOCK TABLES` when
/// told to stop after the dump, so it held the lock all along.
fn watch_dump(
    mut lock: ::mysql::Conn,
    mut watch: ::mysql::Conn,
    after: u64,
    db: String,
    stop: &AtomicBool,
) -> bool {
    let q = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE ID > ? AND ID <> CONNECTION_ID() AND DB = ? \
             AND (INFO LIKE 'SELECT /*!40001 SQL\\_NO\\_CACHE */%' \
                  OR INFO LIKE 'SELECT table\\_name, table\\_type FROM INFORMATION\\_SCHEMA.TABLES WHERE table\\_schema = DATABASE() ORDER BY data\\_length%' \
                  OR INFO LIKE 'show create table%' OR INFO LIKE 'SHOW CREATE TABLE%')";
    let mut seen = false;
    while !stop.load(Ordering::SeqCst) {
        match watch.exec_first::<u64, _, _>(q, (after, &db)) {
            Ok(Some(n)) if n > 0 => {
                seen = true;
                break;
            }
            Ok(_) => {}
            // Without the watch, the lock is held to the end: still exact.
            Err(_) => {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let held = lock.query_drop("UNLOCK TABLES").is_ok();
    seen || held
}

/// Read-locks every base table of the session's database (held until the
/// dump's own session is seen reading), giving up after `secs`.
fn lock_tables(
    lock: &mut ::mysql::Conn,
    tables: &[String],
    comp: &str,
    db: &str,
    secs: u64,
) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = tables
        .iter()
        .map(|t| format!("{} READ", quote_ident(t)))
        .collect();
    lock.query_drop(format!("LOCK TABLES {}", list.join(", ")))
        .map_err(|e| match error_code(&e) {
            Some(1205) => Error::LockTimeout(format!(
                "{comp}: another session held a write lock on a table of `{db}` for {secs} s; the backup waits for none"
            )),
            Some(1044 | 1142) => Error::component(
                comp,
                format!("{}: the user needs the LOCK TABLES privilege on `{db}` (for row counts in the dump's snapshot)", error_text(&e)),
            ),
            _ => Error::component(comp, format!("locking the tables: {}", error_text(&e))),
        })
}

/// The dump's arguments after the option file (part of the [`ChangeMark`]).
fn dump_args(db: &str) -> Vec<String> {
    [
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--skip-dump-date",
        "--no-tablespaces",
        "--default-character-set=utf8mb4",
        db,
    ]
    .map(str::to_string)
    .to_vec()
}

/// The set's entry for the dump: `mariadb-dump` streamed, its password in
/// the option file.
fn dump_entry(
    tool: &DumpTool,
    options: &OptionFile,
    db: &str,
    path: &str,
    comp: &str,
) -> crate::source::Entry {
    use crate::source::{Artifact, Content, Entry, StreamSpec};
    let mut args = vec![options.arg()];
    args.extend(dump_args(db));
    Entry::File(Artifact {
        path: path.to_string(),
        component: comp.to_string(),
        content: Content::Stream(StreamSpec {
            program: tool.program.clone(),
            args,
            env: Vec::new(),
            what: tool.program.file_name().map_or_else(
                || "mariadb-dump".into(),
                |n| n.to_string_lossy().to_string(),
            ),
            magic: None,
        }),
        reuse_meta: None,
    })
}

/// The schema dump's arguments after the option file (`rows-v1`).
fn schema_args(db: &str) -> Vec<String> {
    [
        "--no-data",
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--skip-dump-date",
        "--no-tablespaces",
        "--default-character-set=utf8mb4",
        db,
    ]
    .map(str::to_string)
    .to_vec()
}

/// What [`plan_dump`] has read when it chooses `rows-v1`.
struct Parts<'a> {
    name: &'a str,
    cfg: &'a MysqlConfig,
    o: &'a Options,
    /// Holds the table locks.
    lock: ::mysql::Conn,
    server: ServerVersion,
    tool: DumpTool,
    objects: BTreeMap<String, u64>,
    estimate: u64,
    files: Vec<super::rows::RowsFile>,
    state: &'a Path,
    db: String,
}

/// The `rows-v1` plan (decision 0046): under the table locks, the mark,
/// the counting session's snapshot and the schema (`mariadb-dump
/// --no-data`, into memory); then the locks are released, and that
/// session streams each table's rows into the set when the archiver reads
/// it. Row counts are the rows written.
fn plan_rows(p: Parts<'_>) -> Result<crate::components::Planned> {
    use crate::source::{Artifact, Content, Entry};
    let Parts {
        name,
        cfg,
        o,
        mut lock,
        server,
        tool,
        objects,
        estimate,
        files,
        state,
        db,
    } = p;
    let comp = component(name);
    let args = schema_args(&db);
    let mut mark_args = args.clone();
    mark_args.push(super::rows::FORMAT.to_string());
    let mark = change_mark(name, &mut lock, &server, &objects, &mark_args);
    let mut counter = connect(name, o)?;
    super::rows::prepare_reader(name, &mut counter)?;
    open_snapshot(name, &mut counter)?;
    let schema = {
        let options = OptionFile::write(o, state)?;
        super::rows::dump_schema(name, &tool.program, &options.arg(), &args)?
    };
    // The snapshot and the schema are taken: writers may go on.
    exec(name, &mut lock, "unlocking the tables", "UNLOCK TABLES")?;
    drop(lock);
    let session = super::rows::Session::start(name, counter, files.clone());
    let schema_path = super::rows::schema_path(name, &db);
    let mut entries = vec![Entry::File(Artifact {
        path: schema_path.clone(),
        component: comp.clone(),
        content: Content::Bytes(Arc::new(schema)),
        reuse_meta: None,
    })];
    for (i, f) in files.iter().enumerate() {
        entries.push(Entry::File(Artifact {
            path: f.path.clone(),
            component: comp.clone(),
            content: Content::Produced(Arc::new(session.table(i, &f.table))),
            reuse_meta: None,
        }));
    }
    let record = MysqlRecord {
        database: db,
        host: cfg
            .container
            .as_ref()
            .map_or_else(|| o.host.clone(), |c| format!("container:{c}")),
        port: o.port,
        user: o.user.clone(),
        server_version: server.version,
        dump_version: tool.version,
        dump: schema_path,
        objects,
        migrations: Vec::new(),
        row_counts: BTreeMap::new(),
        mark,
        reused: false,
        format: Some(super::rows::FORMAT.to_string()),
        rows: files,
    };
    let mut planned = crate::components::Planned::new(
        crate::components::Record::Mysql(record),
        entries,
        estimate,
    );
    // Reused: the equal marks prove the rows the parent's, whose facts
    // then stand; nothing is read.
    let parent: Arc<std::sync::Mutex<Option<Facts>>> = Arc::default();
    let from_parent = parent.clone();
    planned.on_reuse = Some(Box::new(move |old| {
        if let crate::components::Record::Mysql(p) = old {
            if let Ok(mut f) = from_parent.lock() {
                *f = Some((p.row_counts.clone(), p.migrations.clone()));
            }
        }
        let _ = crate::system::fault::point("backup-mysql-reused");
    }));
    let key = name.to_string();
    planned.finish = Some(Box::new(move |record| {
        let read = session.finish(&key);
        let reused = parent.lock().ok().and_then(|mut f| f.take());
        let crate::components::Record::Mysql(r) = record else {
            return Ok(());
        };
        let (counts, migrations) = match reused {
            Some(facts) => facts,
            None => {
                let (counts, migrations) = read?;
                // Every table's rows must have been written by this
                // session: a file the archiver did not read has no count.
                if let Some(f) = r.rows.iter().find(|f| !counts.contains_key(&f.table)) {
                    return Err(Error::component(
                        &comp,
                        format!("the rows of `{}` were not read", f.table),
                    ));
                }
                (counts, migrations)
            }
        };
        r.row_counts = counts;
        r.migrations = migrations;
        Ok(())
    }));
    Ok(planned)
}

/// The backup plan of one database: the dump streamed into the set (no
/// temporary file), row counts and migration state in its snapshot, and
/// the option file that carries the password (kept until `finish`).
pub fn plan_dump(
    name: &str,
    cfg: &MysqlConfig,
    state: &Path,
) -> Result<crate::components::Planned> {
    let comp = component(name);
    let o = Options::of_config(name, cfg, &cfg.url)?;
    let db = o.database(name)?.to_string();
    if db.starts_with('-') {
        return Err(Error::component(
            &comp,
            format!("database name `{db}` starts with `-`"),
        ));
    }
    let mut lock = connect(name, &o)?;
    let server = server_version(name, &mut lock)?;
    let tool = DumpTool::find(name, &server)?;
    let secs = cfg.lock_timeout().as_secs();
    exec(
        name,
        &mut lock,
        "setting the lock timeout",
        &format!("SET SESSION lock_wait_timeout = {secs}"),
    )?;
    let tables = base_tables(name, &mut lock)?;
    let objects = objects(name, &mut lock)?;
    let estimate: u64 = lock
        .query_first(
            "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE()",
        )
        .ok()
        .flatten()
        .unwrap_or(0);
    lock_tables(&mut lock, &tables, &comp, &db, secs)?;
    // Rows as text when every stored column round-trips (decision 0046);
    // else the SQL dump, as before.
    let rows = if server.mariadb {
        super::rows::eligible(name, &mut lock, &db, &tables)?
    } else {
        Err("the server is MySQL (rows as text are tested on MariaDB only)".to_string())
    };
    let (rows_v1, files) = match rows {
        Ok(files) => (true, files),
        Err(why) => {
            log::info!("{comp}: one SQL dump: {why}");
            (false, Vec::new())
        }
    };
    let parts = Parts {
        name,
        cfg,
        o: &o,
        lock,
        server,
        tool,
        objects,
        estimate,
        files,
        state,
        db,
    };
    if rows_v1 {
        plan_rows(parts)
    } else {
        plan_sql(parts)
    }
}

/// Opens a read-only consistent snapshot in `c`: taken while the caller
/// holds the table locks, it sees exactly the locked rows.
fn open_snapshot(name: &str, c: &mut ::mysql::Conn) -> Result<()> {
    exec(
        name,
        c,
        "opening the snapshot",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    )?;
    exec(
        name,
        c,
        "opening the snapshot",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
    )
}

/// The SQL dump's plan (decision 0032): the mark and the counting
/// session's snapshot under the table locks, released once the dump is
/// seen to hold its own snapshot (or at `finish`).
fn plan_sql(p: Parts<'_>) -> Result<crate::components::Planned> {
    let Parts {
        name,
        cfg,
        o,
        mut lock,
        server,
        tool,
        objects,
        estimate,
        files: _,
        state,
        db,
    } = p;
    let comp = component(name);
    let mark = change_mark(name, &mut lock, &server, &objects, &dump_args(&db));
    // The counting session's snapshot, taken under the lock.
    let mut counter = connect(name, o)?;
    open_snapshot(name, &mut counter)?;
    let after = u64::from(counter.connection_id().max(lock.connection_id()));
    // The counting session (its snapshot already open under the lock)
    // counts only once the plan is decided, by the first word on this
    // channel: a reused dump proves the database equal to the parent's,
    // whose facts then stand (`Some`, no `COUNT(*)`); a dump that runs
    // (seen under the lock, or the lock released at `finish`) is counted
    // (`None`, or every sender gone).
    let (decide, decision) = std::sync::mpsc::channel::<Option<Facts>>();
    let facts = {
        let name = name.to_string();
        std::thread::spawn(move || -> Result<Facts> {
            if let Ok(Some(parent)) = decision.recv() {
                let _ = counter.query_drop("COMMIT");
                return Ok(parent);
            }
            let counts = row_counts(&name, &mut counter)?;
            let migrations = migration_state(&name, &mut counter)?;
            let _ = counter.query_drop("COMMIT");
            Ok((counts, migrations))
        })
    };
    let watch = connect(name, o)?;
    let stop = Arc::new(AtomicBool::new(false));
    let reuse = stop.clone();
    let reused = Arc::new(AtomicBool::new(false));
    let reused_seen = reused.clone();
    let snapshot = SnapshotLock {
        stop: stop.clone(),
        thread: Some({
            let db = db.clone();
            let decide = decide.clone();
            std::thread::spawn(move || {
                let seen = watch_dump(lock, watch, after, db, &stop);
                // The dump runs (or the run ends): count, unless reused.
                let _ = decide.send(None);
                seen
            })
        }),
    };

    let options = OptionFile::write(o, state)?;
    let dump_path = format!("mysql/{name}/{}.sql", crate::manifest::safe_file_name(&db));
    let entries = vec![dump_entry(&tool, &options, &db, &dump_path, &comp)];
    let record = MysqlRecord {
        database: db,
        host: cfg
            .container
            .as_ref()
            .map_or_else(|| o.host.clone(), |c| format!("container:{c}")),
        port: o.port,
        user: o.user.clone(),
        server_version: server.version,
        dump_version: tool.version,
        dump: dump_path,
        objects,
        migrations: Vec::new(),
        row_counts: BTreeMap::new(),
        mark,
        reused: false,
        format: None,
        rows: Vec::new(),
    };
    let mut planned = crate::components::Planned::new(
        crate::components::Record::Mysql(record),
        entries,
        estimate,
    );
    // Reused from the parent set: no dump will come to release the lock,
    // and the parent's counts are this database's (0038's mark proves the
    // content equal), so nothing is counted.
    planned.on_reuse = Some(Box::new(move |parent| {
        if let crate::components::Record::Mysql(p) = parent {
            let _ = decide.send(Some((p.row_counts.clone(), p.migrations.clone())));
        }
        reused.store(true, Ordering::SeqCst);
        reuse.store(true, Ordering::SeqCst);
        // A test's window: the lock must already be gone here.
        let _ = crate::system::fault::point("backup-mysql-reused");
    }));
    let comp2 = comp.clone();
    planned.finish = Some(Box::new(move |record| {
        let seen = snapshot.release();
        drop(options);
        if !seen {
            log::debug!("{comp2}: the dump was not seen under the table locks: no mark");
        }
        let (counts, migrations) = facts
            .join()
            .unwrap_or_else(|_| Err(Error::component(&comp2, "counting rows panicked")))?;
        if let crate::components::Record::Mysql(r) = record {
            r.row_counts = counts;
            r.migrations = migrations;
            // The mark vouches for a dump that started under the lock (or,
            // reused, for the parent's, which did): one that may have
            // started after the lock was lost may hold a write the mark
            // did not see.
            if !seen && !reused_seen.load(Ordering::SeqCst) {
                r.mark = None;
            }
        }
        Ok(())
    }));
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::super::{Mysql, MysqlRecord};
    use super::ChangeMark;
    use crate::components::{Kind, Record};

    fn mark() -> ChangeMark {
        ChangeMark {
            lsn: 1000,
            started: 1_700_000_000,
            server: "db1:3306:/var/lib/mysql/".into(),
            tables: "aa".into(),
            dump_args: "bb".into(),
        }
    }

    fn record(mark: Option<ChangeMark>) -> Record {
        Record::Mysql(MysqlRecord {
            database: "shop".into(),
            host: "127.0.0.1".into(),
            port: 3306,
            user: "app".into(),
            server_version: "10.11.19-MariaDB".into(),
            dump_version: "mariadb-dump 10.19".into(),
            dump: "mysql/app/shop.sql".into(),
            objects: std::collections::BTreeMap::new(),
            migrations: Vec::new(),
            row_counts: std::collections::BTreeMap::new(),
            mark,
            reused: false,
            format: None,
            rows: Vec::new(),
        })
    }

    #[test]
    fn marks_agree_only_when_every_part_does() {
        let m = mark();
        assert!(m.same(&m));
        let restarted_within_a_second = ChangeMark {
            started: m.started + 1,
            ..mark()
        };
        assert!(restarted_within_a_second.same(&m));
        for (what, other) in [
            (
                "lsn",
                ChangeMark {
                    lsn: 1001,
                    ..mark()
                },
            ),
            (
                "tables digest",
                ChangeMark {
                    tables: "ab".into(),
                    ..mark()
                },
            ),
            (
                "server identity",
                ChangeMark {
                    server: "db2:3306:/var/lib/mysql/".into(),
                    ..mark()
                },
            ),
            (
                "start time",
                ChangeMark {
                    started: m.started + 2,
                    ..mark()
                },
            ),
            (
                "dump arguments",
                ChangeMark {
                    dump_args: "bc".into(),
                    ..mark()
                },
            ),
            (
                "no dump arguments",
                ChangeMark {
                    dump_args: String::new(),
                    ..mark()
                },
            ),
        ] {
            assert!(
                !other.same(&m) && !m.same(&other),
                "{what} differs, yet same"
            );
        }
        // A mark written before the arguments were recorded agrees with none.
        let old = ChangeMark {
            dump_args: String::new(),
            ..mark()
        };
        assert!(!old.same(&old));
    }

    #[test]
    fn same_content_wants_both_marks_and_no_objects() {
        let k = Mysql;
        assert!(k.same_content(&record(Some(mark())), &record(Some(mark()))));
        assert!(!k.same_content(&record(None), &record(Some(mark()))));
        assert!(!k.same_content(&record(Some(mark())), &record(None)));
        let moved = ChangeMark { lsn: 7, ..mark() };
        assert!(!k.same_content(&record(Some(moved)), &record(Some(mark()))));
        let Record::Mysql(mut with_trigger) = record(Some(mark())) else {
            unreachable!()
        };
        with_trigger.objects.insert("triggers".into(), 1);
        assert!(!k.same_content(&Record::Mysql(with_trigger.clone()), &record(Some(mark()))));
        assert!(!k.same_content(&record(Some(mark())), &Record::Mysql(with_trigger)));
        let Record::Mysql(mut other_tool) = record(Some(mark())) else {
            unreachable!()
        };
        other_tool.dump_version = "mariadb-dump 11.4".into();
        assert!(!k.same_content(&Record::Mysql(other_tool), &record(Some(mark()))));
    }
}
