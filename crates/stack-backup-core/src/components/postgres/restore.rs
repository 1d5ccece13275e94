//! Restoring a database: created beside the live one under a temporary
//! name, filled by `pg_restore --exit-on-error`, then swapped in by
//! renames; the original is kept under `<db>__sb_old_<pid>` until the
//! restore as a whole succeeded.

use std::process::Command;

use super::{client_config, component, connect, migration_state_now, quote_ident, row_counts};
use super::{server_version, PostgresRecord, ToolRun};
use crate::components::restoring::{
    Applied, Lane, MigrationReport, Restorer, SetContext, UndoContext,
};
use crate::components::{ComponentId, DiskNeeds};
use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// Where a database is restored: a server (the configured connection of
/// `[postgres.NAME]`, whose role creates the database) and a database name.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// The `[postgres.NAME]` key (names the component in errors and
    /// selects the tools).
    pub key: String,
    /// The connection to the server.
    pub server: PostgresConfig,
    /// The database to replace (created when it does not exist).
    pub database: String,
}

impl PgTarget {
    /// The live database of `[postgres.NAME]`.
    pub fn live(id: &ComponentId, pg: &PostgresConfig, recorded: &str) -> Result<Self> {
        let pc = client_config(id.name(), pg)?;
        Ok(Self {
            key: id.name().to_string(),
            server: pg.clone(),
            database: pc.get_dbname().unwrap_or(recorded).to_string(),
        })
    }

    fn admin(&self) -> Result<::postgres::Client> {
        let mut pc = client_config(&self.key, &self.server)?;
        pc.dbname("postgres");
        pc.connect(::postgres::NoTls).map_err(|e| {
            Error::component(
                component(&self.key),
                format!("cannot connect to the `postgres` database to recreate the database: {e}"),
            )
        })
    }
}

/// A dump of the set into a database.
pub struct PgRestorer {
    id: ComponentId,
    record: PostgresRecord,
    target: PgTarget,
}

impl PgRestorer {
    /// Restores the dump of `record` into `target`.
    #[must_use]
    pub fn new(id: ComponentId, record: PostgresRecord, target: PgTarget) -> Self {
        Self { id, record, target }
    }
}

impl Restorer for PgRestorer {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn action(&self) -> String {
        let host = self.target.server.container.as_ref().map_or_else(
            || self.target.server.url.redacted(),
            |c| format!("container {c}"),
        );
        format!(
            "replace database `{}` ({host}) with the dump of `{}` ({} tables)",
            self.target.database,
            self.record.database,
            self.record.row_counts.len()
        )
    }

    fn lane(&self) -> Lane {
        Lane::Databases
    }

    /// A temporary copy of the database exists beside the live one.
    fn disk_needs(&self, set: &SetContext) -> Result<DiskNeeds> {
        let mut client = connect(&self.target.key, &self.target.server)?;
        let dir: Option<String> = client
            .query_opt("SELECT current_setting('data_directory')", &[])
            .ok()
            .flatten()
            .map(|r| r.get(0));
        Ok(dir
            .filter(|d| std::path::Path::new(d).exists())
            .map(|d| (d.into(), set.artifact_bytes(&self.id).saturating_mul(2)))
            .into_iter()
            .collect())
    }

    fn migration_check(&self, set: &SetContext) -> MigrationReport {
        migration_report(&self.id, &self.record, &self.target, set)
    }

    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>> {
        restore_database(set, &self.id, &self.record, &self.target)
    }

    fn post_check(&self, _set: &SetContext) -> Result<Option<String>> {
        let c = &self.id;
        let mut client = connect(&self.target.key, &self.target.server)?;
        let counts = row_counts(&self.target.key, &mut client)?;
        if counts != self.record.row_counts {
            let diff: Vec<String> = self
                .record
                .row_counts
                .iter()
                .filter(|(t, n)| counts.get(*t) != Some(n))
                .map(|(t, n)| {
                    format!(
                        "{t}: {} (expected {n})",
                        counts.get(t).map_or("missing".into(), ToString::to_string)
                    )
                })
                .collect();
            return Err(Error::Verification(format!(
                "{c}: row counts differ: {}",
                diff.join(", ")
            )));
        }
        let migrations = migration_state_now(&self.target.key, &mut client)?;
        if migrations != self.record.migrations {
            return Err(Error::Verification(format!(
                "{c}: migration state after restore differs from the manifest"
            )));
        }
        Ok(Some(format!(
            "{c}: {} tables, row counts and migrations match",
            counts.len()
        )))
    }
}

/// The set's migration state against the live database (informational: a
/// restore exists to change it) and against the code checked out now.
fn migration_report(
    c: &ComponentId,
    p: &PostgresRecord,
    target: &PgTarget,
    set: &SetContext,
) -> MigrationReport {
    let mut report = MigrationReport::default();
    let commit = set
        .manifest
        .git
        .as_ref()
        .map_or("an unrecorded commit".to_string(), |g| {
            format!("commit {}", &g.commit[..g.commit.len().min(12)])
        });
    let live = connect(&target.key, &target.server)
        .and_then(|mut cl| migration_state_now(&target.key, &mut cl))
        .unwrap_or_default();
    for m in &p.migrations {
        let live_m = live.iter().find(|l| l.tool == m.tool);
        if live_m.map(|l| &l.applied) != Some(&m.applied) {
            report.notes.push(format!(
                "{c}: {} goes from {} (live) to {} (backup)",
                m.tool,
                live_m.map_or("none".into(), |l| l.applied.join(",")),
                m.applied.join(",")
            ));
        }
        let Some(dir) = &target.server.migrations_dir else {
            continue;
        };
        match crate::migrations::code_state(dir, &m.tool) {
            Some(code) if !crate::migrations::fits(m, &code) => report.problems.push(format!(
                "{c}: the backup's {} state is {} (taken at {commit}), but the code checked out now expects {}; \
                 restoring would leave the database out of step with the code. Check out {commit} first, \
                 or pass --allow-migration-mismatch",
                m.tool,
                m.applied.join(","),
                code.expected.iter().cloned().collect::<Vec<_>>().join(",")
            )),
            Some(_) => report.notes.push(format!("{c}: {} fits the code", m.tool)),
            None => report.notes.push(format!(
                "{c}: {} not compared with the code (no readable {})",
                m.tool,
                dir.display()
            )),
        }
    }
    report
}

/// Restores beside the live database, then swaps it in.
fn restore_database(
    set: &SetContext,
    id: &ComponentId,
    p: &PostgresRecord,
    target: &PgTarget,
) -> Result<Box<dyn Applied>> {
    let key = target.key.as_str();
    let pg = &target.server;
    let pc = client_config(key, pg)?;
    let live = target.database.clone();
    let mut admin = target.admin()?;
    let server = server_version(key, &mut admin)?;
    let tag = std::process::id();
    let base = &live[..live.len().min(40)];
    let tmp = format!("{base}__sb_restore_{tag}");
    let old = format!("{base}__sb_old_{tag}");
    let owner: Option<String> = admin
        .query_opt(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&live],
        )
        .map_err(|e| Error::component(id.as_str(), format!("reading the owner of {live}: {e}")))?
        .map(|r| r.get(0));
    exec(
        &mut admin,
        &format!("DROP DATABASE IF EXISTS {}", quote_ident(&tmp)),
    )?;
    // Roles first, so that ownership in the dump can be restored.
    if let Some(roles) = &p.roles {
        let psql = ToolRun::find(key, pg, &pc, "psql", server.major)?;
        let mut cmd = Command::new(&psql.program);
        cmd.args(psql.args(&["-X", "-q", "--no-password", "-d", "postgres", "-f", "-"]))
            .envs(psql.env.iter().map(|(k, v)| (k, v)));
        if let Err(e) = set.pipe_into(id, roles, cmd, "psql (roles)") {
            log::warn!("{id}: roles restored with errors (existing roles are kept): {e}");
        }
    }
    let create = match &owner {
        Some(o) => format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(&tmp),
            quote_ident(o)
        ),
        None => format!("CREATE DATABASE {}", quote_ident(&tmp)),
    };
    exec(&mut admin, &create)?;
    let restore_tool = ToolRun::find(key, pg, &pc, "pg_restore", server.major)?;
    let mut cmd = Command::new(&restore_tool.program);
    let dbarg = format!("--dbname={tmp}");
    cmd.args(restore_tool.args(&["--exit-on-error", "--no-password", &dbarg]))
        .envs(restore_tool.env.iter().map(|(k, v)| (k, v)));
    if let Err(e) = set.pipe_into(id, &p.dump, cmd, "pg_restore") {
        let _ = exec(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(&tmp)),
        );
        return Err(e);
    }
    // Swap: nobody may be connected to either database.
    terminate(&mut admin, &live)?;
    terminate(&mut admin, &tmp)?;
    let old = if owner.is_some() {
        exec(&mut admin, &rename(&live, &old))?;
        Some(old)
    } else {
        None
    };
    exec(&mut admin, &rename(&tmp, &live))?;
    Ok(Box::new(Swapped {
        target: target.clone(),
        old,
    }))
}

fn rename(from: &str, to: &str) -> String {
    format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(from),
        quote_ident(to)
    )
}

/// A database swapped in; the original renamed to `old`.
struct Swapped {
    target: PgTarget,
    old: Option<String>,
}

impl Applied for Swapped {
    fn commit(self: Box<Self>) {
        let Some(old) = &self.old else {
            return;
        };
        let dropped = self.target.admin().and_then(|mut a| {
            terminate(&mut a, old)?;
            exec(
                &mut a,
                &format!("DROP DATABASE IF EXISTS {}", quote_ident(old)),
            )
        });
        if let Err(e) = dropped {
            log::warn!("could not drop the old copy {old}: {e}");
        }
    }

    fn undo(self: Box<Self>, _undo: &UndoContext) -> Result<()> {
        let live = &self.target.database;
        let mut admin = self.target.admin()?;
        terminate(&mut admin, live)?;
        let failed = format!("{}__sb_failed", &live[..live.len().min(40)]);
        exec(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(&failed)),
        )?;
        exec(&mut admin, &rename(live, &failed))?;
        if let Some(old) = &self.old {
            exec(&mut admin, &rename(old, live))?;
        }
        exec(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(&failed)),
        )?;
        Ok(())
    }
}

fn exec(c: &mut ::postgres::Client, sql: &str) -> Result<()> {
    c.batch_execute(sql).map_err(|e| {
        let detail =
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
        Error::component("postgres", format!("`{sql}` failed: {detail}"))
    })
}

fn terminate(c: &mut ::postgres::Client, db: &str) -> Result<()> {
    c.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        &[&db],
    )
    .map_err(|e| Error::component("postgres", format!("terminating sessions on {db}: {e}")))?;
    Ok(())
}
