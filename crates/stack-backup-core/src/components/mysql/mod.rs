//! `mysql.NAME`: a MariaDB or MySQL database, dumped with `mariadb-dump`
//! (or `mysqldump`) in one consistent snapshot, with exact row counts and
//! migration state taken in the same snapshot
//! (`docs/decisions/0032-mysql-counts-in-the-dumps-snapshot.md`), and
//! restored beside the live database then swapped in by one `RENAME TABLE`
//! (`docs/decisions/0033-mysql-restore-beside-and-the-dump-as-input.md`).
//! A database whose columns all round-trip as text is stored as its schema
//! plus each table's rows in `LOAD DATA`'s format, read in the counting
//! session's snapshot (`rows-v1`,
//! `docs/decisions/0046-mysql-rows-as-text-loaded-with-load-data.md`).

mod restore;
pub mod rows;
mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use restore::{recover, MysqlEntry};
pub use server::{component, connect, server_version, Options};

use super::restoring::Restore;
use super::{BackupContext, ComponentId, Kind, Planned, Record, RestoreOptions, Stack};
use crate::config::{Config, DbUrl};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, MigrationState};

/// `[mysql.NAME]`: one database of a MariaDB or MySQL server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MysqlConfig {
    /// `mysql://user[:password]@host:port/db` (`mariadb://` too); the
    /// password is a secret, also given by `STACK_BACKUP_MYSQL_<NAME>_URL`.
    pub url: DbUrl,
    /// A privileged connection used only by restores and drills (creating
    /// the database beside the live one, a user confined to it, and the
    /// swap). Never used by backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<DbUrl>,
    /// The server runs in this container: a URL host that names it is
    /// reached at its address on its network; the tools run on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Where the code keeps its migrations (compared before a restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations_dir: Option<PathBuf>,
    /// How long a statement waits for a lock held by another session.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_seconds: u64,
}

fn default_lock_timeout() -> u64 {
    crate::config::DEFAULT_LOCK_TIMEOUT
}

impl MysqlConfig {
    /// The lock timeout (at least one second).
    #[must_use]
    pub fn lock_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lock_timeout_seconds.max(1))
    }
}

/// Checks a `[mysql.NAME]` table (the config's `validate`).
pub fn validate(cfg: &MysqlConfig) -> std::result::Result<(), String> {
    for url in std::iter::once(&cfg.url).chain(cfg.admin_url.as_ref()) {
        let u = url.expose();
        if !u.starts_with("mysql://") && !u.starts_with("mariadb://") {
            return Err(format!(
                "expected a mysql:// or mariadb:// URL, not {}",
                url.redacted()
            ));
        }
    }
    Ok(())
}

/// `mysql.NAME`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MysqlRecord {
    /// Database name.
    pub database: String,
    /// Host, as configured.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User the dump ran as.
    pub user: String,
    /// `SELECT VERSION()`, e.g. `10.11.19-MariaDB-0+deb12u1`.
    pub server_version: String,
    /// `mariadb-dump --version` of the tool used.
    pub dump_version: String,
    /// The dump (SQL text): the whole database, or with `format`
    /// `rows-v1` its schema only.
    pub dump: String,
    /// Absent: `dump` is one `mariadb-dump` of the database (sets of
    /// every version before 0046 are). `rows-v1`: `dump` holds the schema
    /// and `rows` every base table's rows as text for `LOAD DATA`
    /// (`docs/decisions/0046-mysql-rows-as-text-loaded-with-load-data.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// With `rows-v1`: one file per base table, with its columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<rows::RowsFile>,
    /// Views, triggers, routines and events in the dump, by type.
    #[serde(default)]
    pub objects: BTreeMap<String, u64>,
    /// Applied migrations per tool found.
    pub migrations: Vec<MigrationState>,
    /// Exact row count of every base table, in the dump's snapshot (a
    /// reused dump: the parent's, which the equal marks prove the same).
    pub row_counts: BTreeMap<String, i64>,
    /// What proves the database unchanged since (absent: the next backup
    /// dumps whatever it finds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<server::ChangeMark>,
    /// The dump is the parent set's, reused unread (the marks agreed).
    #[serde(default)]
    pub reused: bool,
}

/// The kind `mysql`.
pub struct Mysql;

/// The config of `[mysql.NAME]` for a component id.
fn configured<'c>(cfg: &'c Config, id: &ComponentId) -> Result<&'c MysqlConfig> {
    cfg.mysql
        .get(id.name())
        .ok_or_else(|| Error::component(id.as_str(), "not in the config"))
}

impl Kind for Mysql {
    fn prefix(&self) -> &'static str {
        "mysql"
    }

    fn is_database(&self) -> bool {
        true
    }

    fn configured(&self, stack: &Stack) -> Vec<String> {
        stack.cfg.mysql.keys().cloned().collect()
    }

    fn covers(&self, stack: &Stack, id: &ComponentId) -> Vec<super::Covered> {
        configured(stack.cfg, id)
            .ok()
            .and_then(|my| my.container.clone())
            .map(super::Covered::Container)
            .into_iter()
            .collect()
    }

    fn doctor(&self, stack: &Stack, id: &ComponentId) -> Result<String> {
        let my = configured(stack.cfg, id)?;
        let opts = Options::of_config(id.name(), my, &my.url)?;
        let mut conn = connect(id.name(), &opts)?;
        let server = server_version(id.name(), &mut conn)?;
        let tool = server::DumpTool::find(id.name(), &server)?;
        // A backup that cannot be restored is not ready: say so now.
        let Some(admin) = &my.admin_url else {
            return Err(Error::component(
                id.as_str(),
                format!(
                    "server {}; {} can back it up, but a restore needs `admin-url` (a user that may create databases and users)",
                    server.version,
                    tool.program.display()
                ),
            ));
        };
        let restore = format!("restore beside through admin-url {}", admin.redacted());
        Ok(format!(
            "server {}; {} ({}); {restore}",
            server.version,
            tool.program.display(),
            tool.version
        ))
    }

    fn plan_backup(&self, ctx: &BackupContext, id: &ComponentId) -> Result<Option<Planned>> {
        let my = configured(ctx.stack.cfg, id)?;
        let state = crate::system::state::of(ctx.stack.cfg)?;
        let plan = server::plan_dump(id.name(), my, &state)?;
        Ok(Some(plan))
    }

    /// The parent set's dump is reused only when both marks exist and
    /// agree, and the database, server, user and tools are the same: any
    /// doubt dumps.
    fn same_content(&self, new: &Record, old: &Record) -> bool {
        let (Record::Mysql(n), Record::Mysql(o)) = (new, old) else {
            return false;
        };
        let (Some(nm), Some(om)) = (&n.mark, &o.mark) else {
            return false;
        };
        nm.same(om)
            && n.objects.is_empty()
            && o.objects.is_empty()
            && (&n.database, &n.host, n.port, &n.user) == (&o.database, &o.host, o.port, &o.user)
            && (&n.server_version, &n.dump_version, &n.dump)
                == (&o.server_version, &o.dump_version, &o.dump)
            && (&n.format, &n.rows) == (&o.format, &o.rows)
    }

    fn archived(&self, record: &mut Record, measured: &super::Archived) {
        if let Record::Mysql(r) = record {
            r.reused = measured.reused;
        }
    }

    fn restorer(
        &self,
        cfg: &Config,
        _opts: &RestoreOptions,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Restore> {
        let Record::Mysql(record) = r else {
            return Err(super::wrong_record(id));
        };
        let Some(my) = cfg.mysql.get(id.name()) else {
            return Ok(Restore::Skip("not in the config".into()));
        };
        Ok(Restore::Into(Box::new(restore::MysqlRestorer::new(
            id.clone(),
            record.clone(),
            my.clone(),
            None,
        )?)))
    }

    fn drill(
        &self,
        scratch: &super::Scratch,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Option<Box<dyn super::Drilled>>> {
        let Record::Mysql(record) = r else {
            return Err(super::wrong_record(id));
        };
        let Some(my) = scratch.cfg.mysql.get(id.name()) else {
            return Ok(None);
        };
        Ok(Some(Box::new(restore::MysqlDrill::new(
            scratch,
            id,
            my,
            record.clone(),
        )?)))
    }

    fn drill_clean(&self, scratch: &super::Scratch) -> Result<Vec<String>> {
        let mut dropped = Vec::new();
        for (key, my) in &scratch.cfg.mysql {
            if my.admin_url.is_none() {
                continue;
            }
            for db in restore::drop_scratch(key, my, &scratch.database_prefix())? {
                dropped.push(format!("database `{db}`"));
            }
        }
        Ok(dropped)
    }

    fn describe(&self, r: &Record) -> (String, String) {
        let Record::Mysql(p) = r else {
            return (String::new(), String::new());
        };
        let migrations = crate::migrations::summary(&p.migrations);
        (
            format!("database `{}` on {}:{}", p.database, p.host, p.port),
            format!(
                "{} ({}); {} tables{}; migrations: {migrations}",
                p.server_version,
                p.dump_version,
                p.row_counts.len(),
                if p.format.is_some() {
                    ", schema as SQL and rows as text"
                } else {
                    ""
                },
            ),
        )
    }

    fn export_path(&self, m: &Manifest, id: &ComponentId, set_path: &str) -> (String, bool) {
        let safe = crate::manifest::safe_file_name(id.name());
        let sql = (format!("database/{safe}.mysql.sql"), false);
        let Some(Record::Mysql(p)) = m.components.get(id) else {
            return sql;
        };
        if p.format.is_none() {
            return sql;
        }
        match p.rows.iter().find(|f| f.path == set_path) {
            Some(f) => {
                let file = f.path.rsplit('/').next().unwrap_or(&f.path);
                (format!("database/{safe}.mysql.rows/{file}"), false)
            }
            None => (format!("database/{safe}.mysql.schema.sql"), false),
        }
    }

    fn export_howto(&self, _m: &Manifest, r: &Record, path_of: &dyn Fn(&str) -> String) -> String {
        let Record::Mysql(p) = r else {
            return String::new();
        };
        let h = match p.host.strip_prefix("container:") {
            // The container's address, read when the command runs: it
            // changes when the container is re-created.
            Some(name) => format!(
                "\"$(docker inspect -f '{{{{range .NetworkSettings.Networks}}}}{{{{.IPAddress}}}} {{{{end}}}}' {name} | cut -d' ' -f1)\""
            ),
            None => p.host.clone(),
        };
        let head = format!(
            "MariaDB/MySQL {} database `{}`. Into a new, empty database (a user that may create it):\n\n    mariadb -h {h} -P {port} -u USER -p -e 'CREATE DATABASE `{db}`'\n",
            p.server_version,
            p.database,
            port = p.port,
            db = p.database,
        );
        let counts = format!(
            "\nExpected row counts: {} tables recorded in stack-backup/manifest.json.\n",
            p.row_counts.len()
        );
        if p.format.is_none() {
            return format!(
                "{head}    mariadb --sandbox -h {h} -P {port} -u USER -p {db} < {dump}\n{counts}",
                port = p.port,
                db = p.database,
                dump = path_of(&p.dump),
            );
        }
        // rows-v1: the schema, then each table's rows with LOAD DATA (the
        // server's `local_infile` must be ON), from the export's load
        // script: no table or column name is ever part of a shell command.
        let Some((script, _)) = load_script(p, path_of) else {
            return String::new();
        };
        format!(
            "{head}    mariadb --sandbox -h {h} -P {port} -u USER -p {db} < {schema}\n    mariadb --local-infile=1 -h {h} -P {port} -u USER -p {db} < {script}\n\nRun both from this directory: `{script}` loads each rows file by its path relative to it. The rows files are in LOAD DATA's default text format (tab-separated, `\\N` for NULL, bytes as stored: `{script}` loads them with CHARACTER SET binary).\n{counts}",
            port = p.port,
            db = p.database,
            schema = path_of(&p.dump),
        )
    }

    fn export_extras(
        &self,
        _m: &Manifest,
        r: &Record,
        path_of: &dyn Fn(&str) -> String,
    ) -> Vec<(String, Vec<u8>)> {
        match r {
            Record::Mysql(p) => load_script(p, path_of)
                .map(|(path, sql)| vec![(path, sql.into_bytes())])
                .into_iter()
                .flatten()
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The export's load script of a `rows-v1` record: its export path (beside
/// the schema, `….mysql.load.sql`) and the session settings and one
/// `LOAD DATA` per rows file, by the file's path in the export. `None` for
/// the SQL dump.
fn load_script(p: &MysqlRecord, path_of: &dyn Fn(&str) -> String) -> Option<(String, String)> {
    p.format.as_ref()?;
    let schema = path_of(&p.dump);
    let base = schema.strip_suffix(".schema.sql").unwrap_or(&schema);
    let mut sql = format!("{};\n", rows::load_session());
    for f in &p.rows {
        sql.push_str(&rows::load_statement(f, &path_of(&f.path)));
        sql.push_str(";\n");
    }
    Some((format!("{base}.load.sql"), sql))
}
