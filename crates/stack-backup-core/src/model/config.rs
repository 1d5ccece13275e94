//! `stack-backup.toml`: the stack description.
//!
//! Parsing is strict: unknown keys, wrong types and missing values are errors
//! that name the file, the line and the key ([`ConfigError`]). Relative paths
//! are resolved against the directory of the config file. Environment
//! variables override the file (see [`Config::apply_env`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default name of the config file, looked up in the current directory.
pub const DEFAULT_FILE: &str = "stack-backup.toml";

/// The default free-space floor: 1 GiB.
pub const DEFAULT_MIN_FREE: u64 = 1 << 30;

/// A configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file, or `environment` for an environment variable.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The dotted key (`stack.name`) or variable name, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error in {}", self.file)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
            if let Some(col) = self.column {
                write!(f, " column {col}")?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, ", key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn in_file(file: &Path, key: Option<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.display().to_string(),
            line: None,
            column: None,
            key,
            message: message.into(),
        }
    }

    fn env(var: &str, message: impl Into<String>) -> Self {
        Self {
            file: "environment".into(),
            line: None,
            column: None,
            key: Some(var.into()),
            message: message.into(),
        }
    }
}

/// A byte size written as `"1GiB"`, `"500 MB"` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Size(pub u64);

impl From<Size> for String {
    fn from(s: Size) -> Self {
        bytesize::ByteSize(s.0).display().iec().to_string()
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Str(s) => s
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| Size(b.0))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not a size; write e.g. \"1GiB\", \"500MiB\" or a number of bytes"
                    ))
                }),
        }
    }
}

/// `[stack]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StackSection {
    /// The stack's name; used in tags and confirmations.
    pub name: StackName,
    /// Refuse to back up or restore when less than this would stay free.
    #[serde(default = "default_min_free")]
    pub min_free_space: Size,
}

fn default_min_free() -> Size {
    Size(DEFAULT_MIN_FREE)
}

/// A stack name: letters, digits, `-`, `_`, `.`; 1–64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StackName(pub String);

impl<'de> Deserialize<'de> for StackName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        validate_name(&s).map_err(serde::de::Error::custom)?;
        Ok(Self(s))
    }
}

/// Checks a stack, component or backup-set name.
pub fn validate_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!("`{s}` must be 1 to 64 characters long"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || s.starts_with('.')
    {
        return Err(format!(
            "`{s}` may only hold letters, digits, `-`, `_` and `.` (not first)"
        ));
    }
    Ok(())
}

/// `[repository]`: where backups live and how to unlock them.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepositorySection {
    /// A local directory (the default kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// A remote repository, passed to `rustic_backend` (e.g. `opendal:s3`).
    /// Serialized redacted: it may hold credentials.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::secret::serialize_redacted"
    )]
    pub url: Option<String>,
    /// A file holding the repository password (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// A command printing the repository password (run without a shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_command: Option<String>,
    /// Local cache directory for remote repositories
    /// [default: `$XDG_CACHE_HOME/stack-backup` or `~/.cache/stack-backup`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Extra `rustic_backend` / OpenDAL options for a remote repository
    /// (`region`, `retry`, `connections`, … or a service's settings for
    /// `opendal:SERVICE`). Never secrets: see [`crate::remote`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// How long to wait for a conflicting repository lock (another host's
    /// or restic's) before refusing with exit code 5 [default: 60].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_seconds: Option<u64>,
    /// How long `prune` keeps data it found unreferenced (packs no index
    /// lists, packs it marked) before deleting it in a later run
    /// [default: 23]; protects writers that crashed or ignored locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_grace_hours: Option<u64>,
    /// Set by `--as-of TIME` (never read from or written to a file): the
    /// repository is opened read-only as it was at that time
    /// ([`crate::repo::as_of`]).
    #[serde(skip)]
    pub as_of: Option<jiff::Timestamp>,
}

impl RepositorySection {
    /// `lock-wait-seconds`, defaulted.
    #[must_use]
    pub fn lock_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_wait_seconds.unwrap_or(60))
    }

    /// `prune-grace-hours`, defaulted.
    #[must_use]
    pub fn prune_grace_hours(&self) -> u64 {
        self.prune_grace_hours.unwrap_or(23)
    }
}

/// `[postgres.NAME]`: one database.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PostgresConfig {
    /// `postgres://user[:password]@host:port/db`; the password part is a
    /// secret and never stored or logged.
    pub url: DbUrl,
    /// A file holding the database password (instead of one in the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Run `pg_dump`/`pg_restore` inside this container (`docker exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Where the code keeps its migrations (e.g. `alembic/versions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations_dir: Option<PathBuf>,
    /// Also dump roles with `pg_dumpall --globals-only` when permitted.
    #[serde(default = "yes")]
    pub roles: bool,
    /// Directory holding `pg_dump`, `pg_dumpall`, `pg_restore` to use
    /// instead of the ones found (still checked against the server version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<PathBuf>,
    /// A privileged connection used only by restores (creating the
    /// database beside the live one, swapping it in, creating roles the
    /// dump needs). Never used by backups. Its password is a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<DbUrl>,
    /// A file holding the password of `admin-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_file: Option<PathBuf>,
    /// How a restore replaces the database (`docs/decisions/0011`).
    #[serde(default)]
    pub restore_method: RestoreMethod,
    /// How long any statement or tool waits for a lock held by another
    /// session before it gives up naming the blocker.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_seconds: u64,
}

impl PostgresConfig {
    /// A database reached by `url`, everything else by default.
    #[must_use]
    pub fn new(url: DbUrl) -> Self {
        Self {
            url,
            password_file: None,
            container: None,
            migrations_dir: None,
            roles: true,
            bin_dir: None,
            admin_url: None,
            admin_password_file: None,
            restore_method: RestoreMethod::Auto,
            lock_timeout_seconds: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// The lock timeout as a duration (at least one second).
    #[must_use]
    pub fn lock_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_timeout_seconds.max(1))
    }
}

/// Default of `lock-timeout-seconds`.
pub const DEFAULT_LOCK_TIMEOUT: u64 = 30;

fn default_lock_timeout() -> u64 {
    DEFAULT_LOCK_TIMEOUT
}

/// How a restore replaces a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestoreMethod {
    /// `beside` when the role (or `admin-url`) may create and rename
    /// databases, else `in-place` when the role owns the database.
    #[default]
    Auto,
    /// A new database beside the live one, swapped in by renames; the
    /// original kept until the restore succeeded. Needs `CREATEDB` and
    /// ownership of the database (or a superuser), directly or through
    /// `admin-url`.
    Beside,
    /// Into the live database in one transaction (`pg_restore --clean
    /// --single-transaction`); needs only ownership of the database.
    InPlace,
}

fn yes() -> bool {
    true
}

/// What a Redis holds: a `cache` is flushed rather than restored on request
/// and only backed up with `--include-redis`; `data` is always backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RedisRole {
    /// Disposable cache.
    #[default]
    Cache,
    /// Data that must be kept.
    Data,
}

/// `[redis.NAME]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db`.
    pub url: DbUrl,
    /// `cache` (default) or `data`.
    #[serde(default)]
    pub role: RedisRole,
    /// A file holding the Redis password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The container Redis runs in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// `[docker]`
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DockerConfig {
    /// Images by reference (`name:tag`) or ID.
    #[serde(default)]
    pub images: Vec<String>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// A compose project whose images and volumes are included too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    /// Stop containers that use a volume while it is copied or restored.
    #[serde(default)]
    pub stop_containers: bool,
}

/// `[git]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GitConfig {
    /// The working tree whose HEAD is recorded.
    pub path: PathBuf,
}

/// `[paths.NAME]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PathConfig {
    /// The directory.
    pub path: PathBuf,
}

/// `[[health]]`: a check that must pass after a restore. Exactly one of
/// `http`, `sql` or `command`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthCheck {
    /// Shown in output.
    pub name: String,
    /// GET this URL; a 2xx answer passes. Serialized redacted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::secret::serialize_redacted"
    )]
    pub http: Option<String>,
    /// Run this query on `postgres`; it passes when it succeeds and, if it
    /// returns rows, the first column of the first row is not false/0/null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The `[postgres.NAME]` an `sql` check runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<String>,
    /// Run this program (words split on spaces, no shell); exit 0 passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Seconds to wait (default 30).
    #[serde(default = "default_health_timeout")]
    pub timeout_seconds: u64,
}

/// `[retention]`: one policy per prunable tier. A tier without a policy
/// keeps every set; immaculate and sacred sets cannot have one (they are
/// never pruned).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Retention {
    /// `[retention.data]`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<KeepPolicy>,
    /// `[retention.backups]`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<KeepPolicy>,
    /// `[retention.pre-restore]` (the newest pre-restore set is kept anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_restore: Option<KeepPolicy>,
}

impl Retention {
    /// No policy at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Which sets of a tier to keep (restic's `forget` rules): a set is kept
/// when any rule keeps it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeepPolicy {
    /// Keep the newest N sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest set of each of the last N hours that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// … days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// … weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// … months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// … years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every set newer than this, relative to the newest set of the
    /// tier (e.g. `"14d"`, `"36h"`, `"2w"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
}

impl KeepPolicy {
    /// Whether any rule is set.
    #[must_use]
    pub fn has_rule(&self) -> bool {
        self != &Self::default()
    }

    /// `keep-within` as a span, or the reason it is not one.
    pub fn within(&self) -> Result<Option<jiff::Span>, String> {
        self.keep_within
            .as_deref()
            .map(|w| {
                w.parse::<jiff::Span>().map_err(|e| {
                    format!("`{w}` is not a duration (e.g. \"14d\", \"36h\", \"2w\"): {e}")
                })
            })
            .transpose()
    }
}

fn default_health_timeout() -> u64 {
    30
}

/// A database URL with a known scheme. Its password is a secret: use
/// [`DbUrl::redacted`] for anything shown or stored.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl(String);

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.redacted())
    }
}

impl DbUrl {
    const SCHEMES: [&'static str; 7] = [
        "postgres://",
        "postgresql://",
        "mysql://",
        "mariadb://",
        "redis://",
        "rediss://",
        "unix://",
    ];

    /// Parses and checks the scheme.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !Self::SCHEMES.iter().any(|p| s.starts_with(p)) {
            return Err(format!(
                "`{}` is not a database URL; expected postgres://…, mysql://… or redis://…",
                crate::secret::redact_url(s)
            ));
        }
        Ok(Self(s.to_string()))
    }

    /// The full URL, password included. Never print or store it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    #[must_use]
    pub fn redacted(&self) -> String {
        crate::secret::redact_url(&self.0)
    }
}

impl Serialize for DbUrl {
    /// Serializes the *redacted* URL: a config written back never holds a
    /// secret.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for DbUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `[drill]`: restore drills (`stack-backup drill`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DrillSection {
    /// A server for the scratch databases instead of each database's own
    /// (`postgres://user@host:port/postgres`; the role needs CREATEDB).
    /// Its password is a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_url: Option<DbUrl>,
    /// A file holding the password of `postgres-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_password_file: Option<PathBuf>,
    /// `[[drill.check]]`: run against the scratch resources after the
    /// drill restored them: `sql` on the scratch database of `postgres`,
    /// or a `command` that gets `SB_DRILL_PG_URL`, `SB_DRILL_REDIS_SOCKET`
    /// and `SB_DRILL_DIR_<NAME>` in its environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub check: Vec<HealthCheck>,
}

impl DrillSection {
    fn is_empty(&self) -> bool {
        self.postgres_url.is_none()
            && self.postgres_password_file.is_none()
            && self.check.is_empty()
    }
}

/// `[state]`: where this machine keeps locks and journals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StateSection {
    /// The state directory (default `/var/lib/stack-backup` for root);
    /// `STACK_BACKUP_STATE_DIR` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

impl StateSection {
    fn is_empty(&self) -> bool {
        self.dir.is_none()
    }
}

/// The whole `stack-backup.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// `[stack]`
    pub stack: StackSection,
    /// `[repository]`
    pub repository: RepositorySection,
    /// `[postgres.NAME]` tables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub postgres: BTreeMap<String, PostgresConfig>,
    /// `[redis.NAME]` tables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub redis: BTreeMap<String, RedisConfig>,
    /// `[mysql.NAME]` tables (MariaDB or MySQL).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mysql: BTreeMap<String, crate::components::mysql::MysqlConfig>,
    /// `[docker]`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerConfig>,
    /// `[git]`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitConfig>,
    /// `[paths.NAME]` tables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paths: BTreeMap<String, PathConfig>,
    /// `[sqlite.NAME]` tables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sqlite: BTreeMap<String, crate::components::sqlite::SqliteConfig>,
    /// `[[health]]` checks run after a restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<HealthCheck>,
    /// `[retention.TIER]` policies applied by `prune`.
    #[serde(default, skip_serializing_if = "Retention::is_empty")]
    pub retention: Retention,
    /// `[status]`: dead-man switch ages and the Prometheus file.
    #[serde(
        default,
        skip_serializing_if = "crate::monitoring::StatusSection::is_empty"
    )]
    pub status: crate::monitoring::StatusSection,
    /// `[[notify]]` targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::monitoring::NotifyTarget>,
    /// `[schedule]`: command to calendar expression.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schedule: crate::monitoring::ScheduleSection,
    /// `[state]`: this machine's state directory (see [`crate::system::state`]).
    #[serde(default, skip_serializing_if = "StateSection::is_empty")]
    pub state: StateSection,
    /// `[tiers]`: Object Lock retention of immaculate and sacred sets.
    #[serde(default, skip_serializing_if = "crate::tiers::TiersSection::is_empty")]
    pub tiers: crate::tiers::TiersSection,
    /// `[drill]`: where restore drills restore databases, and their checks.
    #[serde(default, skip_serializing_if = "DrillSection::is_empty")]
    pub drill: DrillSection,
    /// The file this was read from (not part of the TOML).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// The environment variables read by [`Config::apply_env`], as
/// `(name, value)` pairs; [`std::env::vars`] in the binary, a fixed list in
/// tests.
pub type Env = BTreeMap<String, String>;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::in_file(path, None, format!("cannot read the config file: {e}"))
        })?;
        let mut cfg = Self::parse(&text, path)?;
        cfg.source = Some(path.to_path_buf());
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        cfg.resolve_paths(&base);
        Ok(cfg)
    }

    /// Parses TOML text; `file` is used in error messages only. Relative
    /// paths are left as written.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let de =
            toml::de::Deserializer::parse(text).map_err(|e| toml_error(e, text, file, None))?;
        let cfg: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = (key != ".").then_some(key);
            toml_error(e.into_inner(), text, file, key)
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let r = &self.repository;
        match (&r.path, &r.url) {
            (None, None) => {
                return Err(ConfigError::in_file(
                    file,
                    Some("repository.path".into()),
                    "[repository] needs `path` (a local directory) or `url` (a remote repository)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::in_file(
                    file,
                    Some("repository.url".into()),
                    "[repository] has both `path` and `url`; keep one",
                ))
            }
            _ => {}
        }
        crate::remote::check_config_options(&r.options)
            .map_err(|m| ConfigError::in_file(file, Some("repository.options".into()), m))?;
        self.tiers
            .retain_secs()
            .map_err(|m| ConfigError::in_file(file, Some("tiers.immaculate-retain".into()), m))?;
        if r.password_file.is_some() && r.password_command.is_some() {
            return Err(ConfigError::in_file(
                file,
                Some("repository.password-command".into()),
                "[repository] has both `password-file` and `password-command`; keep one",
            ));
        }
        let names = self
            .postgres
            .keys()
            .map(|k| ("postgres", k))
            .chain(self.redis.keys().map(|k| ("redis", k)))
            .chain(self.mysql.keys().map(|k| ("mysql", k)))
            .chain(self.paths.keys().map(|k| ("paths", k)))
            .chain(self.sqlite.keys().map(|k| ("sqlite", k)));
        for (table, name) in names {
            validate_name(name)
                .map_err(|m| ConfigError::in_file(file, Some(format!("{table}.{name}")), m))?;
        }
        for (name, pg) in &self.postgres {
            if !pg.url.expose().starts_with("postgres") {
                return Err(ConfigError::in_file(
                    file,
                    Some(format!("postgres.{name}.url")),
                    "expected a postgres:// URL",
                ));
            }
        }
        for (name, c) in &self.sqlite {
            crate::components::sqlite::check_config(c)
                .map_err(|m| ConfigError::in_file(file, Some(format!("sqlite.{name}.path")), m))?;
        }
        for (i, h) in self.health.iter().enumerate() {
            let kinds = [h.http.is_some(), h.sql.is_some(), h.command.is_some()];
            let key = Some(format!("health[{i}]"));
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(ConfigError::in_file(
                    file,
                    key,
                    "a [[health]] check needs exactly one of `http`, `sql`, `command`",
                ));
            }
            if h.sql.is_some()
                && !h
                    .postgres
                    .as_ref()
                    .is_some_and(|p| self.postgres.contains_key(p))
            {
                return Err(ConfigError::in_file(file, key, "an `sql` health check needs `postgres = \"NAME\"` naming a [postgres.NAME] table"));
            }
        }
        // A drill check runs against the scratch resources only: `http`
        // (or nothing) would reach the live app.
        for (i, h) in self.drill.check.iter().enumerate() {
            let key = Some(format!("drill.check[{i}]"));
            if h.http.is_some() || h.sql.is_some() == h.command.is_some() {
                return Err(ConfigError::in_file(file, key, "a [[drill.check]] needs exactly one of `sql` (on a scratch database) or `command` (with the SB_DRILL_* variables); `http` would reach the live app"));
            }
            if h.sql.is_some()
                && !h
                    .postgres
                    .as_ref()
                    .is_some_and(|p| self.postgres.contains_key(p))
            {
                return Err(ConfigError::in_file(file, key, "an `sql` drill check needs `postgres = \"NAME\"` naming a [postgres.NAME] table"));
            }
        }
        for (tier, p) in [
            ("data", &self.retention.data),
            ("backups", &self.retention.backups),
            ("pre-restore", &self.retention.pre_restore),
        ] {
            let Some(p) = p else { continue };
            let key = Some(format!("retention.{tier}"));
            if !p.has_rule() {
                return Err(ConfigError::in_file(file, key, "a retention policy needs at least one keep-* rule (keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly, keep-yearly, keep-within)"));
            }
            p.within().map_err(|m| {
                ConfigError::in_file(file, Some(format!("retention.{tier}.keep-within")), m)
            })?;
        }
        crate::monitoring::validate(&self.status, &self.notify, &self.schedule)
            .map_err(|(key, m)| ConfigError::in_file(file, Some(key), m))?;
        for (name, my) in &self.mysql {
            crate::components::mysql::validate(my)
                .map_err(|m| ConfigError::in_file(file, Some(format!("mysql.{name}")), m))?;
        }
        for (name, rd) in &self.redis {
            if !rd.url.expose().starts_with("redis") && !rd.url.expose().starts_with("unix") {
                return Err(ConfigError::in_file(
                    file,
                    Some(format!("redis.{name}.url")),
                    "expected a redis:// URL",
                ));
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let r = &mut self.repository;
        r.path.as_mut().map(fix);
        r.password_file.as_mut().map(fix);
        r.cache_dir.as_mut().map(fix);
        self.state.dir.as_mut().map(fix);
        for pg in self.postgres.values_mut() {
            pg.password_file.as_mut().map(fix);
            pg.admin_password_file.as_mut().map(fix);
            pg.migrations_dir.as_mut().map(fix);
            pg.bin_dir.as_mut().map(fix);
        }
        for my in self.mysql.values_mut() {
            my.migrations_dir.as_mut().map(fix);
        }
        for rd in self.redis.values_mut() {
            rd.password_file.as_mut().map(fix);
        }
        self.status.prometheus_file.as_mut().map(fix);
        self.drill.postgres_password_file.as_mut().map(fix);
        if let Some(g) = &mut self.git {
            fix(&mut g.path);
        }
        for p in self.paths.values_mut() {
            fix(&mut p.path);
        }
    }

    /// Applies environment overrides:
    ///
    /// - `STACK_BACKUP_REPOSITORY`: a local path, or a URL (`scheme:…`).
    /// - `STACK_BACKUP_STATE_DIR`: replaces `[state] dir`.
    /// - `STACK_BACKUP_PASSWORD_FILE`: replaces `password-file`.
    ///   (`STACK_BACKUP_PASSWORD` itself is read when the repository opens.)
    /// - `STACK_BACKUP_POSTGRES_<NAME>_URL`, `STACK_BACKUP_REDIS_<NAME>_URL`,
    ///   `STACK_BACKUP_POSTGRES_<NAME>_ADMIN_URL`:
    ///   the URL of that component (`NAME` upper-cased, `-`/`.` as `_`).
    /// - `DATABASE_URL` / `REDIS_URL`: the URL of the component named
    ///   `main` / `cache`, or of the only one; adds one when there is none.
    pub fn apply_env(&mut self, env: &Env) -> Result<(), ConfigError> {
        if let Some(v) = env.get("STACK_BACKUP_REPOSITORY").filter(|v| !v.is_empty()) {
            if looks_like_url(v) {
                self.repository.url = Some(v.clone());
                self.repository.path = None;
            } else {
                self.repository.path = Some(PathBuf::from(v));
                self.repository.url = None;
            }
        }
        if let Some(v) = env.get(crate::system::state::ENV).filter(|v| !v.is_empty()) {
            self.state.dir = Some(PathBuf::from(v));
        }
        if let Some(v) = env
            .get("STACK_BACKUP_PASSWORD_FILE")
            .filter(|v| !v.is_empty())
        {
            self.repository.password_file = Some(PathBuf::from(v));
            self.repository.password_command = None;
        }
        for (name, pg) in &mut self.postgres {
            let var = format!("STACK_BACKUP_POSTGRES_{}_URL", env_name(name));
            if let Some(v) = env.get(&var) {
                pg.url = DbUrl::parse(v).map_err(|m| ConfigError::env(&var, m))?;
            }
            let var = format!("STACK_BACKUP_POSTGRES_{}_ADMIN_URL", env_name(name));
            if let Some(v) = env.get(&var).filter(|v| !v.is_empty()) {
                pg.admin_url = Some(DbUrl::parse(v).map_err(|m| ConfigError::env(&var, m))?);
            }
        }
        for (name, my) in &mut self.mysql {
            for (var, url) in [("URL", Some(&mut my.url)), ("ADMIN_URL", None)] {
                let var = format!("STACK_BACKUP_MYSQL_{}_{var}", env_name(name));
                if let Some(v) = env.get(&var).filter(|v| !v.is_empty()) {
                    let v = DbUrl::parse(v).map_err(|m| ConfigError::env(&var, m))?;
                    match url {
                        Some(u) => *u = v,
                        None => my.admin_url = Some(v),
                    }
                }
            }
        }
        for (name, rd) in &mut self.redis {
            let var = format!("STACK_BACKUP_REDIS_{}_URL", env_name(name));
            if let Some(v) = env.get(&var) {
                rd.url = DbUrl::parse(v).map_err(|m| ConfigError::env(&var, m))?;
            }
        }
        if let Some(v) = env.get("DATABASE_URL").filter(|v| !v.is_empty()) {
            let url = DbUrl::parse(v).map_err(|m| ConfigError::env("DATABASE_URL", m))?;
            let empty = self.postgres.is_empty();
            match pick(&mut self.postgres, "main") {
                Some(pg) => pg.url = url,
                None if empty => {
                    self.postgres.insert(
                        "main".into(),
                        PostgresConfig::new(url),
                    );
                }
                None => {
                    return Err(ConfigError::env(
                        "DATABASE_URL",
                        "several [postgres.*] tables and none named `main`: use STACK_BACKUP_POSTGRES_<NAME>_URL",
                    ))
                }
            }
        }
        if let Some(v) = env.get("REDIS_URL").filter(|v| !v.is_empty()) {
            let url = DbUrl::parse(v).map_err(|m| ConfigError::env("REDIS_URL", m))?;
            let empty = self.redis.is_empty();
            match pick(&mut self.redis, "cache") {
                Some(rd) => rd.url = url,
                None if empty => {
                    self.redis.insert(
                        "cache".into(),
                        RedisConfig {
                            url,
                            role: RedisRole::Cache,
                            password_file: None,
                            container: None,
                        },
                    );
                }
                None => {
                    return Err(ConfigError::env(
                        "REDIS_URL",
                        "several [redis.*] tables and none named `cache`: use STACK_BACKUP_REDIS_<NAME>_URL",
                    ))
                }
            }
        }
        Ok(())
    }

    /// The config as TOML with every secret removed (passwords in URLs
    /// become `***`); safe to store in a backup set or print.
    #[must_use]
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render config: {e}\n"))
    }

    /// The minimum free space to keep on every filesystem written to.
    #[must_use]
    pub fn min_free_space(&self) -> u64 {
        self.stack.min_free_space.0
    }
}

fn pick<'a, T>(map: &'a mut BTreeMap<String, T>, preferred: &str) -> Option<&'a mut T> {
    if map.len() == 1 {
        return map.values_mut().next();
    }
    map.get_mut(preferred)
}

/// `NAME` as used inside an environment variable name.
#[must_use]
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// True for `scheme:…` repository locations (`opendal:s3`, `rest:http://…`,
/// `s3:…`), false for local paths.
#[must_use]
pub fn looks_like_url(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, _)) => {
            scheme.len() > 1
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
        }
        None => false,
    }
}

fn toml_error(mut e: toml::de::Error, text: &str, file: &Path, key: Option<String>) -> ConfigError {
    e.set_input(None);
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_col(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    // Name the unknown key itself when serde says which one it was.
    let mut key = key;
    let message = e.message().trim().to_string();
    if let Some(unknown) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        key = Some(match key {
            Some(k) if !k.ends_with(unknown) => format!("{k}.{unknown}"),
            Some(k) => k,
            None => unknown.to_string(),
        });
    }
    // A syntax error names no key: show the line it is on instead.
    let message = match (&key, line) {
        (None, Some(l)) => match text.lines().nth(l - 1).map(str::trim) {
            Some(src) if !src.is_empty() => format!("{message} (in `{src}`)"),
            _ => message,
        },
        _ => message,
    };
    ConfigError {
        file: file.display().to_string(),
        line,
        column,
        key,
        message,
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[stack]
name = "shop"
min-free-space = "2GiB"

[repository]
path = "/var/backups/shop"
password-file = "shop.key"

[postgres.main]
url = "postgres://shop:s3cret@127.0.0.1:5432/shop"

[redis.cache]
url = "redis://127.0.0.1:6379/0"
role = "cache"

[docker]
images = ["shop-web:latest"]
volumes = ["shop_uploads"]

[git]
path = "."

[paths.media]
path = "/srv/shop/media"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn parses_the_design_example() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.stack.name.0, "shop");
        assert_eq!(c.min_free_space(), 2 << 30);
        assert_eq!(c.redis["cache"].role, RedisRole::Cache);
        assert_eq!(c.docker.unwrap().volumes, vec!["shop_uploads"]);
    }

    #[test]
    fn redacted_config_holds_no_password() {
        let c = parse(GOOD).unwrap();
        let t = c.redacted_toml();
        assert!(!t.contains("s3cret"), "{t}");
        assert!(t.contains("postgres://shop:***@127.0.0.1:5432/shop"), "{t}");
        // and it parses back
        parse(&t).unwrap();
    }

    #[test]
    fn unknown_nested_key_names_key_and_line() {
        let text = GOOD.replace("role = \"cache\"", "role = \"cache\"\nttl = 5");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("redis.cache.ttl"), "{e}");
        assert_eq!(e.line, Some(16), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let text = GOOD.replace("path = \".\"", "path = 5");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("git.path"), "{e}");
        assert!(e.line.is_some(), "{e}");
    }

    #[test]
    fn env_overrides() {
        let mut c = parse(GOOD).unwrap();
        let env: Env = [
            ("DATABASE_URL", "postgres://other@db:5433/x"),
            ("STACK_BACKUP_REPOSITORY", "opendal:s3"),
            ("REDIS_URL", "redis://127.0.0.1:6380/1"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        c.apply_env(&env).unwrap();
        assert_eq!(
            c.postgres["main"].url.expose(),
            "postgres://other@db:5433/x"
        );
        assert_eq!(c.repository.url.as_deref(), Some("opendal:s3"));
        assert!(c.repository.path.is_none());
        assert_eq!(c.redis["cache"].url.expose(), "redis://127.0.0.1:6380/1");
    }

    #[test]
    fn bad_env_url_names_variable() {
        let mut c = parse(GOOD).unwrap();
        let env: Env = [("STACK_BACKUP_POSTGRES_MAIN_URL", "ftp://x")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let e = c.apply_env(&env).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("STACK_BACKUP_POSTGRES_MAIN_URL"));
    }

    #[test]
    fn url_detection() {
        assert!(looks_like_url("opendal:s3"));
        assert!(looks_like_url("s3:http://127.0.0.1:9000/b"));
        assert!(!looks_like_url("/var/backups/x"));
        assert!(!looks_like_url("relative/dir"));
    }
}
