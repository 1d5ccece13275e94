//! Restoring a database, by the method its credentials allow
//! ([`privileges::decide`]): `beside` creates it under a temporary name,
//! fills it with `pg_restore --exit-on-error` and swaps it in by two
//! renames in one transaction (the live name always exists), keeping the
//! original as `<db>__sb_old_<journal id>` until the restore as a whole
//! succeeded; `in-place` runs `pg_restore --clean --if-exists
//! --single-transaction` into the live database (all or nothing), and an
//! undo restores the pre-restore set's dump the same way. Roles the dump
//! needs and the server lacks are created first ([`roles`]); nothing else
//! about roles changes.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::privileges::{self, Decision, Method, Via};
use super::{admin_config, client_config, component, connect, locks, roles};
use super::{
    migration_state_now, quote_ident, row_counts, server_version, PostgresRecord, ToolRun,
};
use crate::components::restoring::{
    Applied, JournalEntry, Lane, MigrationReport, Recover, Restorer, SetContext, UndoContext,
};
use crate::components::{ComponentId, DiskNeeds, Record};
use crate::config::PostgresConfig;
use crate::error::{Error, Result};

/// Where a database is restored: a server (the configured connection of
/// `[postgres.NAME]`, and its `admin-url` when set) and a database name.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// The `[postgres.NAME]` key (names the component in errors and
    /// selects the tools).
    pub key: String,
    /// The connection to the server.
    pub server: PostgresConfig,
    /// The database to replace (created when it does not exist).
    pub database: String,
    /// Give objects the dump's owners and grants. Off only for a drill
    /// through `[drill] postgres-url`: that role need not be a member of
    /// the stack's roles, and a drill checks data, not ownership.
    pub owners: bool,
}

impl PgTarget {
    /// The live database of `[postgres.NAME]`.
    pub fn live(id: &ComponentId, pg: &PostgresConfig, recorded: &str) -> Result<Self> {
        let pc = client_config(id.name(), pg)?;
        Ok(Self {
            key: id.name().to_string(),
            server: pg.clone(),
            database: pc.get_dbname().unwrap_or(recorded).to_string(),
            owners: true,
        })
    }

    fn config(&self, via: Via) -> Result<::postgres::Config> {
        match via {
            Via::Role => client_config(&self.key, &self.server),
            Via::Admin => admin_config(&self.key, &self.server)?.ok_or_else(|| {
                Error::component(component(&self.key), "no admin-url is configured")
            }),
        }
    }

    /// A session on database `db` through `via`'s credentials.
    fn connect(&self, via: Via, db: &str) -> Result<::postgres::Client> {
        let mut pc = self.config(via)?;
        pc.dbname(db);
        pc.connect(::postgres::NoTls).map_err(|e| {
            let detail = std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
            Error::component(
                component(&self.key),
                format!(
                    "cannot connect to database `{db}`{}: {detail}",
                    if via == Via::Admin {
                        " through admin-url"
                    } else {
                        ""
                    }
                ),
            )
        })
    }

    /// A libpq tool run with `via`'s credentials.
    fn tool(&self, via: Via, tool: &str, major: u32) -> Result<ToolRun> {
        let pc = self.config(via)?;
        ToolRun::find(&self.key, &self.server, &pc, tool, major)
    }
}

/// A dump of the set into a database.
pub struct PgRestorer {
    id: ComponentId,
    record: PostgresRecord,
    target: PgTarget,
    role_passwords: bool,
    decision: OnceLock<std::result::Result<Decision, Error>>,
}

impl PgRestorer {
    /// Restores the dump of `record` into `target`; roles it creates get
    /// their password from the set only with `role_passwords`.
    #[must_use]
    pub fn new(
        id: ComponentId,
        record: PostgresRecord,
        target: PgTarget,
        role_passwords: bool,
    ) -> Self {
        Self {
            id,
            record,
            target,
            role_passwords,
            decision: OnceLock::new(),
        }
    }

    /// How the database will be restored (decided once, on first use).
    fn decision(&self) -> Result<&Decision> {
        self.decision
            .get_or_init(|| {
                privileges::decide(
                    &self.target.key,
                    &self.target.server,
                    &self.target.database,
                    Some(&self.record),
                )
            })
            .as_ref()
            .map_err(clone_error)
    }
}

/// A decision's error, again (decisions are cached; errors are not Clone).
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Refused(m) => Error::Refused(m.clone()),
        Error::Component { component, message } => Error::component(component, message),
        other => Error::component("postgres", other.to_string()),
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
        let (how, missing) = match self.decision() {
            Ok(d) => (d.describe(), d.create_owned_by.is_some()),
            Err(e) => (format!("CANNOT RESTORE: {e}"), false),
        };
        if missing {
            return format!(
                "database `{}` does not exist: will be created ({host}) and filled with the dump of `{}` ({} tables): {how}",
                self.target.database,
                self.record.database,
                self.record.row_counts.len()
            );
        }
        format!(
            "replace database `{}` ({host}) with the dump of `{}` ({} tables): {how}",
            self.target.database,
            self.record.database,
            self.record.row_counts.len()
        )
    }

    fn lane(&self) -> Lane {
        Lane::Databases
    }

    fn preflight(&self, _set: &SetContext) -> Result<Option<String>> {
        let d = self.decision()?;
        Ok(Some(format!("{}: {}", self.id, d.describe())))
    }

    /// `beside`: a second copy of the database exists beside the live one.
    /// `in-place`: the old rows stay until the transaction commits.
    /// A database that does not exist is asked through the maintenance
    /// database (it needs one copy, not two).
    fn disk_needs(&self, set: &SetContext) -> Result<DiskNeeds> {
        let pc = client_config(&self.target.key, &self.target.server)?;
        let mut client =
            privileges::connect_somewhere(&self.target.key, &pc, &self.target.database)?;
        let copies = if self.decision()?.create_owned_by.is_some() {
            1
        } else {
            2
        };
        let dir: Option<String> = client
            .query_opt("SELECT current_setting('data_directory')", &[])
            .ok()
            .flatten()
            .map(|r| r.get(0));
        Ok(dir
            .filter(|d| std::path::Path::new(d).exists())
            .map(|d| {
                (
                    d.into(),
                    set.artifact_bytes(&self.id).saturating_mul(copies),
                )
            })
            .into_iter()
            .collect())
    }

    fn migration_check(&self, set: &SetContext) -> MigrationReport {
        migration_report(&self.id, &self.record, &self.target, set)
    }

    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>> {
        let d = self.decision()?.clone();
        let live = &self.target.database;
        let base = &live[..live.len().min(40)];
        let tag = set.tag();
        let mut entry = PgEntry {
            key: self.target.key.clone(),
            database: live.clone(),
            in_place: d.method == Method::InPlace,
            admin: d.method == Method::Beside(Via::Admin),
            tmp: format!("{base}__sb_restore_{tag}"),
            old: format!("{base}__sb_old_{tag}"),
            had_live: true,
            roles: d.create_roles.clone(),
            roles_admin: d.roles_via == Via::Admin,
            untouched: false,
            created_oid: None,
        };
        set.journal(&self.id, JournalEntry::Postgres(entry.clone()))?;
        let created = create_roles(
            set,
            &self.id,
            &self.record,
            &self.target,
            &d,
            self.role_passwords,
        )?;
        let restored = match d.method {
            Method::Beside(via) => restore_beside(
                set,
                &self.id,
                &self.record,
                &self.target,
                via,
                d.create_owned_by.as_deref(),
                &mut entry,
            ),
            Method::InPlace => restore_in_place(set, &self.id, &self.record, &self.target)
                .map(|()| None)
                .map_err(|(e, changed)| {
                    if !changed {
                        entry.untouched = true;
                        if let Err(je) =
                            set.journal(&self.id, JournalEntry::Postgres(entry.clone()))
                        {
                            log::warn!("{je}");
                        }
                    }
                    e
                }),
        };
        match restored {
            Ok(old) => Ok(Box::new(Restored {
                id: self.id.clone(),
                target: self.target.clone(),
                method: d.method,
                old,
                tmp: entry.tmp,
                created_roles: created,
                roles_via: d.roles_via,
            })),
            Err(e) => {
                if !created.is_empty() {
                    if let Ok(mut c) = self.target.connect(d.roles_via, "postgres") {
                        roles::drop_roles(&mut c, &created);
                    }
                }
                Err(e)
            }
        }
    }

    fn post_check(&self, _set: &SetContext) -> Result<Option<String>> {
        let c = &self.id;
        let mut client = connect(&self.target.key, &self.target.server)?;
        let counts = row_counts(&self.target.key, &mut client)?;
        if let Some(diff) =
            crate::components::restoring::count_diff(&self.record.row_counts, &counts)
        {
            return Err(Error::Verification(format!(
                "{c}: row counts differ: {diff}"
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
    let live = connect(&target.key, &target.server)
        .and_then(|mut cl| migration_state_now(&target.key, &mut cl))
        .unwrap_or_default();
    crate::migrations::report(
        c,
        &p.migrations,
        &live,
        target.server.migrations_dir.as_deref(),
        set.manifest,
    )
}

/// Creates the roles the decision found missing, from the set's
/// `globals.sql` when it has one. Returns the roles created.
fn create_roles(
    set: &SetContext,
    id: &ComponentId,
    p: &PostgresRecord,
    target: &PgTarget,
    decision: &Decision,
    with_passwords: bool,
) -> Result<Vec<String>> {
    if decision.create_roles.is_empty() {
        return Ok(Vec::new());
    }
    let specs = match &p.roles {
        Some(path) => {
            let node = set.node(id, path)?;
            if node.meta.size > MAX_GLOBALS {
                return Err(Error::Verification(format!(
                    "{id}: {path} is {} bytes; a roles file is never that large",
                    node.meta.size
                )));
            }
            let mut sql = Vec::new();
            set.repo
                .dump(&node, &mut sql)
                .map_err(|e| Error::component(id.as_str(), e.display_log()))?;
            roles::parse_globals(&String::from_utf8_lossy(&sql))
        }
        None => Default::default(),
    };
    let mut conn = target.connect(decision.roles_via, "postgres")?;
    roles::create(
        &mut conn,
        id.as_str(),
        &decision.create_roles,
        &specs,
        with_passwords,
    )
}

/// A roles file larger than this is not read (it is input).
const MAX_GLOBALS: u64 = 64 << 20;

/// Restores beside the live database under `entry.tmp`, then swaps it
/// in: `BEGIN; ALTER live RENAME TO old; ALTER tmp RENAME TO live;
/// COMMIT`, so that a crash leaves either both names as they were or both
/// swapped. Returns the name of the kept original.
///
/// When the live database does not exist, the temporary is created owned
/// by `new_owner` and renamed in alone; its OID is journaled before the
/// rename, so that an undo drops that database and never another one of
/// the same name created since.
fn restore_beside(
    set: &SetContext,
    id: &ComponentId,
    p: &PostgresRecord,
    target: &PgTarget,
    via: Via,
    new_owner: Option<&str>,
    entry: &mut PgEntry,
) -> Result<Option<String>> {
    let key = target.key.as_str();
    let live = target.database.clone();
    let mut admin = target.connect(via, "postgres")?;
    let server = server_version(key, &mut admin)?;
    let (tmp, old) = (entry.tmp.clone(), entry.old.clone());
    let owner: Option<String> = admin
        .query_opt(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1",
            &[&live],
        )
        .map_err(|e| Error::component(id.as_str(), format!("reading the owner of {live}: {e}")))?
        .map(|r| r.get(0));
    entry.had_live = owner.is_some();
    set.journal(id, JournalEntry::Postgres(entry.clone()))?;
    exec(
        &mut admin,
        &format!("DROP DATABASE IF EXISTS {}", quote_ident(&tmp)),
    )?;
    let create = match owner.as_deref().or(new_owner) {
        Some(o) => format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(&tmp),
            quote_ident(o)
        ),
        None => format!("CREATE DATABASE {}", quote_ident(&tmp)),
    };
    exec(&mut admin, &create)?;
    if owner.is_none() {
        entry.created_oid = Some(oid_of(&mut admin, key, &tmp)?.ok_or_else(|| {
            Error::component(
                id.as_str(),
                format!("database `{tmp}` vanished after CREATE"),
            )
        })?);
        set.journal(id, JournalEntry::Postgres(entry.clone()))?;
    }
    let tool = target.tool(via, "pg_restore", server.major)?;
    let mut cmd = crate::process::command(&tool.program);
    let dbarg = format!("--dbname={tmp}");
    let mut args = vec!["--exit-on-error", "--no-password", dbarg.as_str()];
    if !target.owners {
        args.extend(["--no-owner", "--no-privileges"]);
    }
    cmd.args(tool.args(&args))
        .envs(tool.env.iter().map(|(k, v)| (k, v)));
    let drop_tmp = |admin: &mut ::postgres::Client| {
        let _ = exec(
            admin,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(&tmp)),
        );
    };
    if let Err(e) = set.pipe_into(id, &p.dump, cmd, "pg_restore") {
        drop_tmp(&mut admin);
        return Err(e);
    }
    crate::system::fault::point("restore-postgres-beside")?;
    // Swap: nobody may be connected to either database.
    let timeout = target.server.lock_timeout();
    let swapped = if owner.is_some() {
        swap_names(&mut admin, key, &[(&live, &old), (&tmp, &live)], timeout).map(|()| Some(old))
    } else {
        swap_names(&mut admin, key, &[(&tmp, &live)], timeout).map(|()| None)
    };
    if swapped.is_err() {
        drop_tmp(&mut admin);
    }
    let kept = swapped?;
    crate::system::fault::point("restore-postgres-swapped")?;
    Ok(kept)
}

/// `pg_restore --clean --if-exists --single-transaction` into the live
/// database: all of it or none of it. Tables the dump does not have (made
/// by a migration after the backup) are dropped afterwards, in a second
/// transaction, so that the database holds exactly the set's tables.
/// Restores the set's dump into the live database in one transaction. The
/// error says whether the database may have changed (`true` once a
/// transaction committed: extra tables dropped, or the dump restored
/// before a later statement failed).
fn restore_in_place(
    set: &SetContext,
    id: &ComponentId,
    p: &PostgresRecord,
    target: &PgTarget,
) -> std::result::Result<(), (Error, bool)> {
    let untouched = |e: Error| (e, false);
    let changed = |e: Error| (e, true);
    let key = target.key.as_str();
    let live = target.database.as_str();
    let mut conn = target.connect(Via::Role, live).map_err(untouched)?;
    let server = server_version(key, &mut conn).map_err(untouched)?;
    // The database is being replaced: the role's other sessions on it (the
    // application's) would only block the restore's locks.
    let ended = locks::terminate_sessions(&mut conn, live).map_err(untouched)?;
    if !ended.is_empty() {
        log::info!("{id}: ended {} session(s) on `{live}`", ended.len());
    }
    let mut tool = target
        .tool(Via::Role, "pg_restore", server.major)
        .map_err(untouched)?;
    let app_name = format!("stack-backup-restore-{}-{}", std::process::id(), key);
    tool.env.retain(|(k, _)| k != "PGAPPNAME");
    tool.env.push(("PGAPPNAME".into(), app_name.clone()));
    let dbarg = format!("--dbname={live}");
    let timeout = target.server.lock_timeout();
    // One run of pg_restore under the watchdog (twice at most, below).
    let run = || -> Result<String> {
        let mut cmd = crate::process::command(&tool.program);
        cmd.args(tool.args(&[
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--exit-on-error",
            "--no-password",
            &dbarg,
        ]))
        .envs(tool.env.iter().map(|(k, v)| (k, v)));
        let watchdog = locks::Watchdog::start(
            target.connect(Via::Role, live)?,
            app_name.clone(),
            live.to_string(),
            timeout,
        );
        let restored = set.pipe_into(id, &p.dump, cmd, "pg_restore");
        if let Some(blockers) = watchdog.finish() {
            return Err(locks::timed_out(id.as_str(), live, timeout, &blockers));
        }
        restored
    };
    match run() {
        Ok(_) => drop_extra_tables(&mut conn, id, p)
            .map(|_| ())
            .map_err(changed),
        // `--clean` drops only what the dump has: a table the set does not
        // have that refers to one it has (a foreign key added by a later
        // migration) stops it, atomically. Those tables go first, in a
        // transaction of their own, and the dump is restored again: the
        // only case in which an in-place restore is two transactions.
        Err(e) if e.to_string().contains("depend on it") => {
            // Its own transaction: on an error nothing was dropped.
            let dropped = drop_extra_tables(&mut conn, id, p).map_err(untouched)?;
            if dropped.is_empty() {
                return Err(untouched(e));
            }
            run().map_err(|e2| {
                changed(Error::component(
                    id.as_str(),
                    format!(
                        "{e2}\n(the tables {} that the set does not have were dropped before this second attempt; they are in the pre-restore set)",
                        dropped.join(", ")
                    ),
                ))
            })?;
            Ok(())
        }
        // One transaction (`--single-transaction`): nothing committed.
        Err(e) => Err(untouched(e)),
    }
}

/// Drops the tables the role may drop that are not in the set; returns
/// them.
fn drop_extra_tables(
    conn: &mut ::postgres::Client,
    id: &ComponentId,
    p: &PostgresRecord,
) -> Result<Vec<String>> {
    let rows = conn
        .query(
            "SELECT n.nspname || '.' || c.relname, format('%I.%I', n.nspname, c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             AND pg_has_role(c.relowner, 'USAGE')",
            &[],
        )
        .map_err(|e| Error::component(id.as_str(), format!("listing tables: {e}")))?;
    let extra: Vec<String> = rows
        .iter()
        .filter(|r| !p.row_counts.contains_key(r.get::<_, &str>(0)))
        .map(|r| r.get(1))
        .collect();
    if extra.is_empty() {
        return Ok(extra);
    }
    log::info!(
        "{id}: dropping {} table(s) the set does not have: {}",
        extra.len(),
        extra.join(", ")
    );
    exec(
        conn,
        &format!(
            "BEGIN; DROP TABLE IF EXISTS {} CASCADE; COMMIT",
            extra.join(", ")
        ),
    )?;
    Ok(extra)
}

/// Renames databases `from` to `to`, in order, in one transaction,
/// ending the sessions on each `from` first (the ones the role may end);
/// retried while sessions reconnect, up to the lock timeout, then refused
/// naming who is still connected. Either every rename happened or none.
fn swap_names(
    c: &mut ::postgres::Client,
    key: &str,
    renames: &[(&str, &str)],
    timeout: std::time::Duration,
) -> Result<()> {
    let statements: Vec<String> = renames
        .iter()
        .map(|(from, to)| {
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(from),
                quote_ident(to)
            )
        })
        .collect();
    let sql = format!("BEGIN; {}; COMMIT", statements.join("; "));
    let deadline = std::time::Instant::now() + timeout;
    loop {
        for (from, _) in renames {
            locks::terminate_sessions(c, from)?;
        }
        let Err(e) = c.batch_execute(&sql) else {
            return Ok(());
        };
        // The failed statement left the transaction aborted.
        let _ = c.batch_execute("ROLLBACK");
        if e.code() == Some(&::postgres::error::SqlState::OBJECT_IN_USE) {
            if std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(200));
                continue;
            }
            let mut who = Vec::new();
            for (from, _) in renames {
                who.extend(locks::sessions(c, from));
            }
            return Err(locks::timed_out(
                &component(key),
                renames[0].0,
                timeout,
                &who,
            ));
        }
        let detail =
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
        return Err(Error::component(
            component(key),
            format!("`{sql}` failed: {detail}"),
        ));
    }
}

/// A database's restore in the journal: its target, the temporary and
/// kept names, and the roles the restore may create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgEntry {
    /// The `[postgres.NAME]` key.
    pub key: String,
    /// The live database.
    pub database: String,
    /// Restored in place (undone from the pre-restore set's dump).
    pub in_place: bool,
    /// Beside, through `admin-url`.
    pub admin: bool,
    /// The database restored beside (`<db>__sb_restore_<journal id>`).
    pub tmp: String,
    /// The original, once swapped (`<db>__sb_old_<journal id>`).
    pub old: String,
    /// Whether the live database existed before.
    pub had_live: bool,
    /// Roles the restore creates (they did not exist).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Created through `admin-url`.
    #[serde(default)]
    pub roles_admin: bool,
    /// Written by the restorer when it failed without changing the
    /// database (an in-place `pg_restore` whose one transaction did not
    /// commit): an abort has nothing to put back. A crash never sets it,
    /// so after a kill the pre-restore dump is restored again.
    #[serde(default)]
    pub untouched: bool,
    /// When the live database did not exist: the OID of the one this
    /// restore created (journaled before it is renamed to the live name).
    /// An abort drops the live database only when it has this OID.
    #[serde(default)]
    pub created_oid: Option<u32>,
}

fn via(admin: bool) -> Via {
    if admin {
        Via::Admin
    } else {
        Via::Role
    }
}

/// Ends the statements still running on the server that name one of
/// `names` (a killed run's `CREATE DATABASE` completes on the server after
/// the client died, and would bring a dropped temporary back), and waits
/// until they are gone (up to 30 s).
fn end_statements_naming(c: &mut ::postgres::Client, key: &str, names: &[&str]) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for name in names {
        loop {
            let rows = c
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE pid <> pg_backend_pid() AND state <> 'idle' \
                     AND position($1 in query) > 0",
                    &[name],
                )
                .map_err(|e| {
                    Error::component(
                        component(key),
                        format!("ending statements on `{name}`: {e}"),
                    )
                })?;
            if rows.is_empty() {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::component(
                    component(key),
                    format!("statements of the interrupted restore naming `{name}` do not end"),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The OID of database `name`, if it exists.
fn oid_of(c: &mut ::postgres::Client, key: &str, name: &str) -> Result<Option<u32>> {
    c.query_opt("SELECT oid FROM pg_database WHERE datname = $1", &[&name])
        .map(|r| r.map(|r| r.get(0)))
        .map_err(|e| Error::component(component(key), format!("listing databases: {e}")))
}

/// Whether database `name` exists.
fn exists(c: &mut ::postgres::Client, key: &str, name: &str) -> Result<bool> {
    c.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .map(|r| r.is_some())
        .map_err(|e| Error::component(component(key), format!("listing databases: {e}")))
}

/// Resolves a journaled database restore from what exists now: beside, an
/// existing `old` means the swap happened (one transaction: both names or
/// neither), and an abort swaps back in one transaction; in place, an
/// abort restores the pre-restore set's dump in place (atomic, and
/// harmless when nothing had changed). Temporaries are dropped.
pub fn recover(e: &PgEntry, id: &ComponentId, to: Recover, undo: &UndoContext) -> Result<String> {
    let server = undo
        .cfg
        .postgres
        .get(&e.key)
        .ok_or_else(|| Error::component(id.as_str(), "no longer in the config"))?;
    let target = PgTarget {
        key: e.key.clone(),
        server: server.clone(),
        database: e.database.clone(),
        owners: true,
    };
    let key = e.key.as_str();
    let timeout = server.lock_timeout();
    let drop_db = |c: &mut ::postgres::Client, name: &str| -> Result<()> {
        locks::terminate_sessions(c, name)?;
        exec(c, &format!("DROP DATABASE IF EXISTS {}", quote_ident(name)))
    };
    let mut line = format!("{id}: ");
    if e.in_place {
        if to == Recover::Abort && e.untouched {
            line.push_str("nothing was changed (its transaction did not commit)");
        } else if to == Recover::Abort {
            let pre = undo.pre_restore()?.ok_or_else(|| {
                Error::component(
                    id.as_str(),
                    "no pre-restore set to put the database back from",
                )
            })?;
            let Some(Record::Postgres(before)) = pre.manifest.components.get(id) else {
                return Err(Error::component(
                    id.as_str(),
                    "the pre-restore set has no dump of the database",
                ));
            };
            restore_in_place(&pre.context(undo.cfg), id, before, &target)
                .map_err(|(err, _)| err)?;
            line.push_str("the pre-restore dump restored in place");
        } else {
            line.push_str("restored in place, nothing kept");
        }
    } else {
        let mut c = target.connect(via(e.admin), "postgres")?;
        end_statements_naming(&mut c, key, &[&e.tmp, &e.old])?;
        match to {
            Recover::Abort => {
                if exists(&mut c, key, &e.old)? {
                    swap_names(
                        &mut c,
                        key,
                        &[(&e.database, &e.tmp), (&e.old, &e.database)],
                        timeout,
                    )?;
                    line.push_str("swapped back");
                } else if !e.had_live
                    && e.created_oid.is_some()
                    && oid_of(&mut c, key, &e.database)? == e.created_oid
                {
                    // There was no database: the one this restore created
                    // goes (a database of the same name created by someone
                    // else since has another OID, and stays).
                    drop_db(&mut c, &e.database)?;
                    line.push_str("restored database dropped (there was none before)");
                } else {
                    line.push_str("nothing was swapped");
                }
                drop_db(&mut c, &e.tmp)?;
            }
            Recover::Finish => {
                drop_db(&mut c, &e.old)?;
                drop_db(&mut c, &e.tmp)?;
                line.push_str("original dropped");
            }
        }
    }
    if to == Recover::Abort && !e.roles.is_empty() {
        let mut c = target.connect(via(e.roles_admin), "postgres")?;
        roles::drop_roles(&mut c, &e.roles);
    }
    Ok(line)
}

/// What a restore of one database changed: swapped in beside (the
/// original renamed to `old`) or replaced in place; and the roles it
/// created.
struct Restored {
    id: ComponentId,
    target: PgTarget,
    method: Method,
    old: Option<String>,
    tmp: String,
    created_roles: Vec<String>,
    roles_via: Via,
}

impl Applied for Restored {
    fn commit(self: Box<Self>) {
        let (Method::Beside(via), Some(old)) = (self.method, &self.old) else {
            return;
        };
        let dropped = self.target.connect(via, "postgres").and_then(|mut a| {
            locks::terminate_sessions(&mut a, old)?;
            exec(
                &mut a,
                &format!("DROP DATABASE IF EXISTS {}", quote_ident(old)),
            )
        });
        if let Err(e) = dropped {
            log::warn!("could not drop the old copy {old}: {e}");
        }
    }

    fn undo(self: Box<Self>, undo: &UndoContext) -> Result<()> {
        match self.method {
            Method::Beside(via) => self.undo_beside(via)?,
            Method::InPlace => self.undo_in_place(undo)?,
        }
        if !self.created_roles.is_empty() {
            let mut c = self.target.connect(self.roles_via, "postgres")?;
            roles::drop_roles(&mut c, &self.created_roles);
        }
        Ok(())
    }
}

impl Restored {
    /// Back in one transaction: the restored database takes the temporary
    /// name again, the original its own; then the restored one is dropped.
    fn undo_beside(&self, via: Via) -> Result<()> {
        let key = self.target.key.as_str();
        let live = &self.target.database;
        let timeout = self.target.server.lock_timeout();
        let mut admin = self.target.connect(via, "postgres")?;
        exec(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(&self.tmp)),
        )?;
        match &self.old {
            Some(old) => swap_names(&mut admin, key, &[(live, &self.tmp), (old, live)], timeout)?,
            None => swap_names(&mut admin, key, &[(live, &self.tmp)], timeout)?,
        }
        locks::terminate_sessions(&mut admin, &self.tmp)?;
        exec(
            &mut admin,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(&self.tmp)),
        )?;
        Ok(())
    }

    /// The database as it was: the pre-restore set's dump of it, restored
    /// in place the same way.
    fn undo_in_place(&self, undo: &UndoContext) -> Result<()> {
        let pre = undo.pre_restore()?.ok_or_else(|| {
            Error::component(
                self.id.as_str(),
                "no pre-restore set to put the database back from",
            )
        })?;
        let Some(Record::Postgres(before)) = pre.manifest.components.get(&self.id) else {
            return Err(Error::component(
                self.id.as_str(),
                "the pre-restore set has no dump of the database",
            ));
        };
        restore_in_place(&pre.context(undo.cfg), &self.id, before, &self.target).map_err(|(e, _)| e)
    }
}

fn exec(c: &mut ::postgres::Client, sql: &str) -> Result<()> {
    c.batch_execute(sql).map_err(|e| {
        let detail =
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
        Error::component("postgres", format!("`{sql}` failed: {detail}"))
    })
}
