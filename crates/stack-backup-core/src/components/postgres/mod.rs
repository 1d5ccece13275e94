//! `postgres.NAME`: a database, dumped with `pg_dump` in custom format
//! (uncompressed: the repository compresses and deduplicates) in an
//! exported snapshot, with roles, exact row counts and migration state
//! taken in the same snapshot.

mod drill;
mod locks;
mod mark;
mod privileges;
mod restore;
mod roles;
mod server;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use mark::PgMark;
pub use restore::{recover, PgEntry, PgRestorer, PgTarget};
pub use server::*;

use super::restoring::Restore;
use super::{BackupContext, ComponentId, Kind, Planned, Record, RestoreOptions, Stack};
use crate::config::{Config, PostgresConfig};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, MigrationState};

/// `postgres.NAME`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PostgresRecord {
    /// Database name.
    pub database: String,
    /// Host (as configured; `container:<name>` when dumped in a container).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Role used.
    pub user: String,
    /// `SHOW server_version`.
    pub server_version: String,
    /// Server major version.
    pub server_major: u32,
    /// `pg_dump --version` of the tool used.
    pub pg_dump_version: String,
    /// The dump: custom format, compression off.
    pub dump: String,
    /// Roles file (`pg_dumpall --globals-only`), when taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<String>,
    /// Why roles were not taken, or were taken without passwords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles_note: Option<String>,
    /// The roles the dump refers to (owners, grantees); a restore creates
    /// only these, and only when missing. Absent in sets taken before it
    /// was recorded: such a restore creates no role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles_used: Option<Vec<String>>,
    /// Applied migrations per tool found.
    pub migrations: Vec<MigrationState>,
    /// Exact row count of every table (`schema.table`), in the dump's
    /// snapshot (a reused dump: the parent's, which the equal marks prove
    /// the same).
    pub row_counts: BTreeMap<String, i64>,
    /// What proves a later database equal to this dump's
    /// ([`mark`](self::mark)); absent when it could not be read or moved
    /// during the dump, and in sets taken before it was recorded: the next
    /// backup then dumps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<PgMark>,
}

/// `doctor` of a database that does not exist: what a restore would do
/// about it (create it, or what it lacks to), as a "missing" error.
fn missing_database(name: &str, pg: &PostgresConfig) -> Error {
    let database = client_config(name, pg)
        .ok()
        .and_then(|pc| pc.get_dbname().map(str::to_string))
        .unwrap_or_else(|| "postgres".into());
    let how = match privileges::decide(name, pg, &database, None) {
        Ok(d) => format!("`restore` will create it: {}", d.describe()),
        Err(e) => format!("`restore` cannot create it: {}", e.detail()),
    };
    Error::missing(
        component(name),
        format!("database `{database}` does not exist; {how}"),
    )
}

/// The URL of database `db` on `server` (its password, when the URL holds
/// one, included; a `password-file` still applies to it), reachable from
/// this host: a container's name is replaced by its address.
pub fn scratch_database_url(
    server: &PostgresConfig,
    db: &str,
) -> std::result::Result<String, String> {
    let url = drill::scratch_url(server.url.expose(), db, None)?;
    match &server.container {
        Some(c) => super::docker::address::resolve_url("postgres", c, &url).map_err(|e| e.detail()),
        None => Ok(url),
    }
}

/// The kind `postgres`.
pub struct Postgres;

/// The config of `[postgres.NAME]` for a component id.
pub(crate) fn configured<'c>(cfg: &'c Config, id: &ComponentId) -> Result<&'c PostgresConfig> {
    cfg.postgres
        .get(id.name())
        .ok_or_else(|| Error::component(id.as_str(), "not in the config"))
}

impl Kind for Postgres {
    fn prefix(&self) -> &'static str {
        "postgres"
    }

    fn is_database(&self) -> bool {
        true
    }

    fn configured(&self, stack: &Stack) -> Vec<String> {
        stack.cfg.postgres.keys().cloned().collect()
    }

    fn covers(&self, stack: &Stack, id: &ComponentId) -> Vec<super::Covered> {
        configured(stack.cfg, id)
            .ok()
            .and_then(|pg| pg.container.clone())
            .map(super::Covered::Container)
            .into_iter()
            .collect()
    }

    fn doctor(&self, stack: &Stack, id: &ComponentId) -> Result<String> {
        let (name, pg) = (id.name(), configured(stack.cfg, id)?);
        let mut client = match connect(name, pg) {
            Err(e) if e.is_missing() => return Err(missing_database(name, pg)),
            other => other?,
        };
        let server = server_version(name, &mut client)?;
        let pc = client_config(name, pg)?;
        let t = ToolRun::find(name, pg, &pc, "pg_dump", server.major)?;
        let tool = match &pg.container {
            Some(c) => format!("pg_dump in container {c}: {}", t.version),
            None => format!("{} ({})", t.program.display(), t.version),
        };
        // A backup that cannot be restored with these credentials is not
        // ready: say so now, not on the day of the restore.
        let database = pc.get_dbname().unwrap_or("postgres").to_string();
        let how = privileges::decide(name, pg, &database, None)?;
        Ok(format!(
            "server {} (major {}); {tool}; restore: {}",
            server.version,
            server.major,
            how.describe()
        ))
    }

    fn plan_backup(&self, ctx: &BackupContext, id: &ComponentId) -> Result<Option<Planned>> {
        let pg = configured(ctx.stack.cfg, id)?;
        let plan = match plan_dump(id.name(), pg) {
            Err(Error::LockTimeout(first)) if ctx.replacing => {
                // The database is about to be replaced: its blockers go
                // now rather than at the swap; once, then it is an error.
                // The database `plan_dump` dumps (the URL's).
                let pc = client_config(id.name(), pg)?;
                let db = pc.get_dbname().unwrap_or("postgres");
                let ended = connect(id.name(), pg).map(|mut c| locks::end_blockers(&mut c, db));
                match ended {
                    Ok(ended) if !ended.is_empty() => {
                        log::warn!(
                            "{id}: ended the session(s) blocking the pre-restore snapshot: {}",
                            ended.join("; ")
                        );
                        plan_dump(id.name(), pg)?
                    }
                    _ => return Err(Error::LockTimeout(first)),
                }
            }
            other => other?,
        };
        let DumpPlan {
            entries,
            record,
            mut session,
            facts,
            decide,
        } = plan;
        let estimate = session
            .query_one("SELECT pg_database_size(current_database())", &[])
            .map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0));
        let comp = id.clone();
        let mut planned = Planned::new(Record::Postgres(record), entries, estimate);
        // Reused: the parent's facts are this database's. Not reused: the
        // hook is dropped unrun, and with it the sender: the facts count.
        planned.on_reuse = Some(Box::new(move |parent| {
            if let Record::Postgres(p) = parent {
                let _ = decide.send(Some((p.row_counts.clone(), p.migrations.clone())));
            }
        }));
        let mark_comp = id.clone();
        planned.finish = Some(Box::new(move |record: &mut Record| {
            if let Record::Postgres(p) = &mut *record {
                // The mark stands for the dump only if nothing moved while
                // it ran (read again only when there is a mark to keep).
                if let Some(m) = &p.mark {
                    let after = mark::moving(&mut session);
                    if !after.as_ref().is_ok_and(|a| m.still(a)) {
                        log::debug!("{mark_comp}: the database moved during the dump: no mark");
                        p.mark = None;
                    }
                }
            }
            let facts = facts.join();
            drop(session); // ends the snapshot transaction
            let (counts, migrations) = facts.unwrap_or_else(|_| {
                Err(Error::component(comp.as_str(), "counting rows panicked"))
            })?;
            if let Record::Postgres(p) = record {
                p.row_counts = counts;
                p.migrations = migrations;
            }
            Ok(())
        }));
        Ok(Some(planned))
    }

    /// The parent set's dump is reused only when both marks exist and
    /// agree, and the database, server, role and tools are the same: any
    /// doubt dumps (`docs/decisions/0048-postgres-unchanged-backups.md`).
    fn same_content(&self, new: &Record, old: &Record) -> bool {
        let (Record::Postgres(n), Record::Postgres(o)) = (new, old) else {
            return false;
        };
        n.mark.is_some()
            && n.mark == o.mark
            && (&n.database, &n.host, n.port, &n.user) == (&o.database, &o.host, o.port, &o.user)
            && (&n.server_version, &n.pg_dump_version, &n.dump)
                == (&o.server_version, &o.pg_dump_version, &o.dump)
            && (&n.roles, &n.roles_note) == (&o.roles, &o.roles_note)
    }

    fn restorer(
        &self,
        cfg: &Config,
        opts: &RestoreOptions,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Restore> {
        let Record::Postgres(record) = r else {
            return Err(super::wrong_record(id));
        };
        let Some(pg) = cfg.postgres.get(id.name()) else {
            return Ok(Restore::Skip("not in the config".into()));
        };
        let target = PgTarget::live(id, pg, &record.database)?;
        Ok(Restore::Into(Box::new(PgRestorer::new(
            id.clone(),
            record.clone(),
            target,
            opts.restore_role_passwords,
        ))))
    }

    fn drill(
        &self,
        scratch: &super::Scratch,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Option<Box<dyn super::Drilled>>> {
        let Record::Postgres(record) = r else {
            return Err(super::wrong_record(id));
        };
        let Some(pg) = scratch.cfg.postgres.get(id.name()) else {
            return Ok(None);
        };
        Ok(Some(Box::new(drill::PgDrill::new(
            scratch,
            id,
            pg,
            record.clone(),
        ))))
    }

    fn drill_clean(&self, scratch: &super::Scratch) -> Result<Vec<String>> {
        let mut dropped = Vec::new();
        for (key, pg) in &scratch.cfg.postgres {
            let server = scratch.postgres_server(pg);
            for db in drill::drop_databases(key, &server, &scratch.database_prefix(), None)? {
                dropped.push(format!("database `{db}`"));
            }
        }
        Ok(dropped)
    }

    fn describe(&self, r: &Record) -> (String, String) {
        let Record::Postgres(p) = r else {
            return (String::new(), String::new());
        };
        let migrations = crate::migrations::summary(&p.migrations);
        (
            format!("database `{}` on {}:{}", p.database, p.host, p.port),
            format!(
                "PostgreSQL {} (pg_dump {}); {} tables; migrations: {migrations}",
                p.server_version,
                p.pg_dump_version,
                p.row_counts.len(),
            ),
        )
    }

    fn export_path(&self, _m: &Manifest, id: &ComponentId, set_path: &str) -> (String, bool) {
        let file = set_path.rsplit('/').next().unwrap_or(set_path);
        let safe = crate::manifest::safe_file_name(id.name());
        if file.ends_with(".dump") {
            return (format!("database/{safe}.dump"), false);
        }
        (format!("database/{safe}.{file}"), false)
    }

    fn export_howto(&self, _m: &Manifest, r: &Record, path_of: &dyn Fn(&str) -> String) -> String {
        let Record::Postgres(p) = r else {
            return String::new();
        };
        let mut s = String::new();
        if let Some(roles) = &p.roles {
            s.push_str(&format!(
                "Roles: {roles} holds every role of the cluster at backup time, with password hashes. Running it whole resets the passwords of roles rotated since and brings back dropped roles; create only the roles the dump needs and that are missing, by hand, from its lines (as a superuser):\n\n    grep -E '^(CREATE|ALTER) ROLE' {roles}\n\n{needed}",
                roles = path_of(roles),
                needed = p.roles_used.as_ref().map_or(String::new(), |r| format!(
                    "The dump refers to the roles: {}.\n\n",
                    r.join(", ")
                )),
            ));
        }
        s.push_str(&format!(
            "PostgreSQL {} database `{}`. Into a new, empty database:\n\n    createdb -h {h} -p {port} -U {u} {db}\n    pg_restore --exit-on-error --no-owner -h {h} -p {port} -U {u} -d {db} {dump}\n\n(`pg_restore` {} or newer; check with `pg_restore --version`.) Expected row counts: {} tables recorded in stack-backup/manifest.json.\n",
            p.server_version,
            p.database,
            p.pg_dump_version,
            p.row_counts.len(),
            h = p.host,
            port = p.port,
            u = p.user,
            db = p.database,
            dump = path_of(&p.dump),
        ));
        s
    }
}
