//! Restoring a database beside the live one and swapping it in
//! (`docs/decisions/0033-mysql-restore-beside-and-the-dump-as-input.md`):
//! through `admin-url`, a database `<db>__sb_restore_<journal id>` is
//! created, filled by the `mariadb` client in `--sandbox` mode connected
//! as a user that exists only for this run and may touch only that
//! database, then every table moves by ONE `RENAME TABLE` (atomic): the
//! live tables into `<db>__sb_old_<journal id>`, the restored ones into
//! the live database. The old tables stay until the restore as a whole
//! succeeded, so an undo (or the journal after a kill) renames back.
//! A `rows-v1` set (decision 0046) runs only its schema through the
//! client; its rows are loaded as data with `LOAD DATA LOCAL INFILE` by
//! the same confined user ([`super::rows::load`]).
//!
//! Views, triggers, routines and events are not restored yet: a set or a
//! live database that has any is refused before anything changes.

use std::collections::BTreeMap;

use ::mysql::prelude::Queryable;
use serde::{Deserialize, Serialize};

use super::server::{
    component, connect, error_text, exec, migration_state, objects, quote_ident, quote_str,
    row_counts, server_version, DumpTool, OptionFile, Options,
};
use super::{MysqlConfig, MysqlRecord};
use crate::components::restoring::{
    Applied, JournalEntry, Lane, MigrationReport, Recover, Restorer, SetContext, UndoContext,
};
use crate::components::{ComponentId, DiskNeeds};
use crate::error::{Error, Result};

/// A database's restore in the journal: the names, the restore user, and
/// the tables the swap moves (written before the swap).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MysqlEntry {
    /// The `[mysql.NAME]` key.
    pub key: String,
    /// The live database.
    pub database: String,
    /// The database restored beside.
    pub tmp: String,
    /// Where the live tables go at the swap.
    pub old: String,
    /// The user created for the client run (dropped afterwards).
    pub user: String,
    /// The live tables moved to `old` by the swap.
    #[serde(default)]
    pub live_tables: Vec<String>,
    /// The restored tables moved from `tmp` into the live database.
    #[serde(default)]
    pub set_tables: Vec<String>,
}

/// The admin options of a config entry (restores and drills need them).
fn admin(key: &str, cfg: &MysqlConfig) -> Result<Options> {
    let url = cfg.admin_url.as_ref().ok_or_else(|| {
        Error::Refused(format!(
            "{}: restoring a MariaDB/MySQL database needs `admin-url` (a user that may create databases and users); the stack's own user may only use its database",
            component(key)
        ))
    })?;
    Ok(Options::of_config(key, cfg, url)?.with_database(None))
}

/// `GRANT … ON` a database name: `_` and `%` are wildcards there.
fn grant_db(db: &str) -> String {
    quote_ident(
        &db.replace('\\', "\\\\")
            .replace('_', "\\_")
            .replace('%', "\\%"),
    )
}

/// The restore user of database `db` (at most 32 characters: MySQL's limit).
fn restore_user(db: &str) -> String {
    let h = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(db.as_bytes())[..10]);
    format!("sbr_{h}")
}

/// A random password for a restore user.
fn random_password() -> Result<String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| Error::component("mysql", format!("random: {e}")))?;
    Ok(hex::encode(b))
}

fn database_exists(key: &str, c: &mut ::mysql::Conn, db: &str) -> Result<bool> {
    c.exec_first::<String, _, _>(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        (db,),
    )
    .map(|r| r.is_some())
    .map_err(|e| {
        Error::component(
            component(key),
            format!("listing databases: {}", error_text(&e)),
        )
    })
}

fn tables_of(key: &str, c: &mut ::mysql::Conn, db: &str) -> Result<Vec<String>> {
    c.exec(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? \
         AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        (db,),
    )
    .map_err(|e| {
        Error::component(
            component(key),
            format!("listing the tables of `{db}`: {}", error_text(&e)),
        )
    })
}

fn drop_database(key: &str, c: &mut ::mysql::Conn, db: &str) -> Result<()> {
    exec(
        key,
        c,
        &format!("dropping `{db}`"),
        &format!("DROP DATABASE IF EXISTS {}", quote_ident(db)),
    )
}

fn drop_user(key: &str, c: &mut ::mysql::Conn, user: &str) -> Result<()> {
    exec(
        key,
        c,
        &format!("dropping user `{user}`"),
        &format!("DROP USER IF EXISTS {}@'%'", quote_str(user)),
    )
}

/// Creates database `db` (the live one's character set and collation when
/// it exists) and fills it with the set's dump: the `mariadb` client in
/// `--sandbox` mode, as a user created for this run with privileges on
/// `db` only, dropped afterwards. On an error `db` is dropped.
fn fill(
    set: &SetContext,
    id: &ComponentId,
    record: &MysqlRecord,
    key: &str,
    cfg: &MysqlConfig,
    db: &str,
    like: Option<&str>,
) -> Result<()> {
    let a = admin(key, cfg)?;
    let mut c = connect(key, &a)?;
    let server = server_version(key, &mut c)?;
    let client = DumpTool::client(key, &server)?;
    let charset: Option<(String, String)> = match like {
        Some(live) => c
            .exec_first(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (live,),
            )
            .map_err(|e| Error::component(component(key), error_text(&e)))?,
        None => None,
    };
    drop_database(key, &mut c, db)?;
    let create = match &charset {
        Some((cs, coll)) => format!(
            "CREATE DATABASE {} CHARACTER SET {cs} COLLATE {coll}",
            quote_ident(db)
        ),
        None => format!("CREATE DATABASE {}", quote_ident(db)),
    };
    exec(key, &mut c, "creating the database beside", &create)?;
    let user = restore_user(db);
    let password = random_password()?;
    let filled = (|| {
        drop_user(key, &mut c, &user)?;
        exec(
            key,
            &mut c,
            "creating the restore user",
            &format!(
                "CREATE USER {}@'%' IDENTIFIED BY {}",
                quote_str(&user),
                quote_str(&password)
            ),
        )?;
        exec(
            key,
            &mut c,
            "granting the restore user its database",
            &format!(
                "GRANT ALL PRIVILEGES ON {}.* TO {}@'%'",
                grant_db(db),
                quote_str(&user)
            ),
        )?;
        let url = crate::config::DbUrl::parse(&format!(
            "mysql://{user}:{password}@{}:{}/{db}",
            a.host, a.port
        ))
        .map_err(|m| Error::component(component(key), m))?;
        let mut o = Options::of(key, &url)?;
        if a.opts.get_socket().is_some() {
            o = a.clone();
            o.user.clone_from(&user);
            o.opts = ::mysql::OptsBuilder::from_opts(a.opts.clone())
                .user(Some(user.clone()))
                .pass(Some(password.clone()))
                .into();
        }
        let state = crate::system::state::of(set.cfg)?;
        // The schema of a rows-v1 set, or the whole dump, through the
        // confined client; then the rows as data (no statement in them).
        let rows_conn = match record.format.as_deref() {
            Some(_) => Some(connect(key, &o.with_database(Some(db)))?),
            None => None,
        };
        let options = OptionFile::write(&o, &state)?;
        let mut cmd = crate::process::command(&client.program);
        cmd.args([
            options.arg(),
            "--sandbox".into(),
            "--batch".into(),
            "--binary-mode".into(),
            format!("--database={db}"),
        ]);
        let what = client
            .program
            .file_name()
            .map_or_else(|| "mariadb".into(), |n| n.to_string_lossy().to_string());
        set.pipe_into(id, &record.dump, cmd, &what)?;
        if let Some(mut conn) = rows_conn {
            super::rows::load(set, id, &mut conn, &record.rows, &record.row_counts)?;
        }
        Ok(())
    })();
    let dropped = drop_user(key, &mut c, &user);
    if let Err(e) = filled {
        let _ = drop_database(key, &mut c, db);
        return Err(e);
    }
    dropped
}

/// Checks the set and the live database hold only what the swap moves.
fn refuse_objects(
    id: &ComponentId,
    record: &MysqlRecord,
    live: &BTreeMap<String, u64>,
) -> Result<()> {
    let say = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !record.objects.is_empty() {
        return Err(Error::Refused(format!(
            "{id}: the set's database has {}: restoring views, triggers, routines and events is not supported yet (restore the exported dump by hand)",
            say(&record.objects)
        )));
    }
    if !live.is_empty() {
        return Err(Error::Refused(format!(
            "{id}: the live database has {}: a restore would leave them pointing at the old tables; not supported yet",
            say(live)
        )));
    }
    Ok(())
}

/// Checks the set's format is one this version reads and, for rows as
/// text, that the server accepts `LOAD DATA LOCAL` (before anything
/// changes).
fn check_format(id: &ComponentId, record: &MysqlRecord, admin: &mut ::mysql::Conn) -> Result<()> {
    match record.format.as_deref() {
        None => Ok(()),
        Some(super::rows::FORMAT) => super::rows::local_infile_on(id.name(), admin),
        Some(other) => Err(Error::Refused(format!(
            "{id}: the set's dump format `{other}` is not one this version of stack-backup reads (a newer version wrote it)"
        ))),
    }
}

/// A dump of the set into the live database of `[mysql.NAME]`.
pub struct MysqlRestorer {
    id: ComponentId,
    record: MysqlRecord,
    cfg: MysqlConfig,
    database: String,
}

impl MysqlRestorer {
    /// Restores `record` into the database of `cfg.url`.
    pub fn new(
        id: ComponentId,
        record: MysqlRecord,
        cfg: MysqlConfig,
        database: Option<String>,
    ) -> Result<Self> {
        let o = Options::of(id.name(), &cfg.url)?;
        let database = match database {
            Some(d) => d,
            None => o.database(id.name())?.to_string(),
        };
        Ok(Self {
            id,
            record,
            cfg,
            database,
        })
    }

    fn key(&self) -> &str {
        self.id.name()
    }
}

impl Restorer for MysqlRestorer {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn action(&self) -> String {
        format!(
            "replace the tables of database `{}` ({}) with the dump of `{}` ({} tables): restored beside through admin-url, swapped in by one RENAME TABLE",
            self.database,
            self.cfg.url.redacted(),
            self.record.database,
            self.record.row_counts.len()
        )
    }

    fn lane(&self) -> Lane {
        Lane::Databases
    }

    fn preflight(&self, _set: &SetContext) -> Result<Option<String>> {
        let a = admin(self.key(), &self.cfg)?;
        let mut c = connect(self.key(), &a)?;
        let server = server_version(self.key(), &mut c)?;
        DumpTool::client(self.key(), &server)?;
        let o = Options::of_config(self.key(), &self.cfg, &self.cfg.url)?;
        let live = match connect(self.key(), &o) {
            Ok(mut l) => objects(self.key(), &mut l)?,
            Err(e) if e.is_missing() => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        refuse_objects(&self.id, &self.record, &live)?;
        check_format(&self.id, &self.record, &mut c)?;
        Ok(Some(format!(
            "{}: beside through admin-url ({}), then one RENAME TABLE",
            self.id, server.version
        )))
    }

    fn disk_needs(&self, set: &SetContext) -> Result<DiskNeeds> {
        let a = admin(self.key(), &self.cfg)?;
        let mut c = connect(self.key(), &a)?;
        let dir: Option<String> = c.query_first("SELECT @@datadir").ok().flatten();
        Ok(dir
            .filter(|d| std::path::Path::new(d).exists())
            .map(|d| (d.into(), set.artifact_bytes(&self.id).saturating_mul(2)))
            .into_iter()
            .collect())
    }

    fn migration_check(&self, set: &SetContext) -> MigrationReport {
        let o = Options::of_config(self.key(), &self.cfg, &self.cfg.url);
        let live = o
            .and_then(|o| connect(self.key(), &o))
            .and_then(|mut c| migration_state(self.key(), &mut c))
            .unwrap_or_default();
        crate::migrations::report(
            &self.id,
            &self.record.migrations,
            &live,
            self.cfg.migrations_dir.as_deref(),
            set.manifest,
        )
    }

    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>> {
        let key = self.key();
        let live = &self.database;
        let base = &live[..live.len().min(40)];
        let tag = set.tag();
        let mut entry = MysqlEntry {
            key: key.to_string(),
            database: live.clone(),
            tmp: format!("{base}__sb_restore_{tag}"),
            old: format!("{base}__sb_old_{tag}"),
            user: String::new(),
            live_tables: Vec::new(),
            set_tables: Vec::new(),
        };
        entry.user = restore_user(&entry.tmp);
        set.journal(&self.id, JournalEntry::Mysql(entry.clone()))?;
        let a = admin(key, &self.cfg)?;
        let mut c = connect(key, &a)?;
        if !database_exists(key, &mut c, live)? {
            exec(
                key,
                &mut c,
                "creating the database",
                &format!("CREATE DATABASE {}", quote_ident(live)),
            )?;
        }
        fill(
            set,
            &self.id,
            &self.record,
            key,
            &self.cfg,
            &entry.tmp,
            Some(live),
        )?;
        crate::system::fault::point("restore-mysql-beside")?;
        let swapped = (|| {
            drop_database(key, &mut c, &entry.old)?;
            exec(
                key,
                &mut c,
                "creating the database for the old tables",
                &format!("CREATE DATABASE {}", quote_ident(&entry.old)),
            )?;
            exec(
                key,
                &mut c,
                "setting the lock timeout",
                &format!(
                    "SET SESSION lock_wait_timeout = {}",
                    self.cfg.lock_timeout().as_secs()
                ),
            )?;
            entry.live_tables = tables_of(key, &mut c, live)?;
            entry.set_tables = tables_of(key, &mut c, &entry.tmp)?;
            set.journal(&self.id, JournalEntry::Mysql(entry.clone()))?;
            swap(key, &mut c, &entry, Direction::In)
        })();
        if let Err(e) = swapped {
            let _ = drop_database(key, &mut c, &entry.tmp);
            let _ = drop_database(key, &mut c, &entry.old);
            return Err(e);
        }
        crate::system::fault::point("restore-mysql-swapped")?;
        Ok(Box::new(Swapped {
            entry,
            cfg: self.cfg.clone(),
        }))
    }

    fn post_check(&self, _set: &SetContext) -> Result<Option<String>> {
        let c = &self.id;
        let o = Options::of_config(self.key(), &self.cfg, &self.cfg.url)?
            .with_database(Some(&self.database));
        let mut conn = connect(self.key(), &o)?;
        let mut counts = row_counts(self.key(), &mut conn)?;
        if let Some(n) = crate::system::fault::value("mysql-post-check-rows") {
            // Tests: a count that does not match, to exercise the rollback.
            if let Some(v) = counts.values_mut().next() {
                *v += n.parse::<i64>().unwrap_or(1);
            }
        }
        check_counts(c, &counts, &self.record.row_counts)?;
        let migrations = migration_state(self.key(), &mut conn)?;
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

/// Compares restored counts with the record's.
fn check_counts(
    c: &ComponentId,
    counts: &BTreeMap<String, i64>,
    expected: &BTreeMap<String, i64>,
) -> Result<()> {
    match crate::components::restoring::count_diff(expected, counts) {
        None => Ok(()),
        Some(diff) => Err(Error::Verification(format!(
            "{c}: row counts differ: {diff}"
        ))),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Live tables to `old`, restored ones from `tmp` into live.
    In,
    /// Back: restored ones to `tmp`, `old` ones into live.
    Back,
}

/// The one `RENAME TABLE` statement of a swap (atomic: every table moves,
/// or none).
fn swap(key: &str, c: &mut ::mysql::Conn, e: &MysqlEntry, dir: Direction) -> Result<()> {
    let q = |db: &str, t: &str| format!("{}.{}", quote_ident(db), quote_ident(t));
    let (out_of_live, into_live) = match dir {
        Direction::In => (
            (&e.live_tables, &e.database, &e.old),
            (&e.set_tables, &e.tmp, &e.database),
        ),
        Direction::Back => (
            (&e.set_tables, &e.database, &e.tmp),
            (&e.live_tables, &e.old, &e.database),
        ),
    };
    // Everything leaves the live database before anything enters it.
    let pairs: Vec<String> = [out_of_live, into_live]
        .into_iter()
        .flat_map(|(tables, from, to)| {
            tables
                .iter()
                .map(move |t| format!("{} TO {}", q(from, t), q(to, t)))
        })
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    exec(
        key,
        c,
        "swapping the tables",
        &format!("RENAME TABLE {}", pairs.join(", ")),
    )
}

/// Whether the swap of `e` happened: one of its moved tables is where the
/// swap puts it (the statement is atomic, so one tells for all).
fn swapped(key: &str, c: &mut ::mysql::Conn, e: &MysqlEntry) -> Result<bool> {
    if let Some(t) = e.live_tables.first() {
        return Ok(tables_of(key, c, &e.old)?.contains(t));
    }
    if let Some(t) = e.set_tables.first() {
        return Ok(
            !tables_of(key, c, &e.tmp)?.contains(t) && tables_of(key, c, &e.database)?.contains(t)
        );
    }
    Ok(false)
}

/// Resolves a journaled restore from what exists now: `Abort` renames back
/// when the swap happened; both drop the temporaries and the restore user.
pub fn recover(
    e: &MysqlEntry,
    id: &ComponentId,
    to: Recover,
    undo: &UndoContext,
) -> Result<String> {
    let cfg = undo
        .cfg
        .mysql
        .get(&e.key)
        .ok_or_else(|| Error::component(id.as_str(), "no longer in the config"))?;
    let key = e.key.as_str();
    let a = admin(key, cfg)?;
    let mut c = connect(key, &a)?;
    // A killed run's client may still be filling `tmp`.
    end_sessions_of(key, &mut c, &e.user)?;
    let mut line = format!("{id}: ");
    match to {
        Recover::Abort => {
            if swapped(key, &mut c, e)? {
                swap(key, &mut c, e, Direction::Back)?;
                line.push_str("swapped back");
            } else {
                line.push_str("nothing was swapped");
            }
        }
        Recover::Finish => line.push_str("old tables dropped"),
    }
    drop_database(key, &mut c, &e.tmp)?;
    drop_database(key, &mut c, &e.old)?;
    if !e.user.is_empty() {
        drop_user(key, &mut c, &e.user)?;
    }
    Ok(line)
}

/// Ends the sessions of `user` (the restore user of a killed run).
fn end_sessions_of(key: &str, c: &mut ::mysql::Conn, user: &str) -> Result<()> {
    if user.is_empty() {
        return Ok(());
    }
    let ids: Vec<u64> = c
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?",
            (user,),
        )
        .map_err(|e| Error::component(component(key), error_text(&e)))?;
    for id in ids {
        let _ = c.query_drop(format!("KILL {id}"));
    }
    Ok(())
}

/// A swapped database: the old tables in `entry.old` until commit.
struct Swapped {
    entry: MysqlEntry,
    cfg: MysqlConfig,
}

impl Applied for Swapped {
    fn commit(self: Box<Self>) {
        let e = &self.entry;
        let done = admin(&e.key, &self.cfg)
            .and_then(|a| connect(&e.key, &a))
            .and_then(|mut c| {
                drop_database(&e.key, &mut c, &e.old)?;
                drop_database(&e.key, &mut c, &e.tmp)
            });
        if let Err(err) = done {
            log::warn!("could not drop the old tables in `{}`: {err}", e.old);
        }
    }

    fn undo(self: Box<Self>, _undo: &UndoContext) -> Result<()> {
        let e = &self.entry;
        let a = admin(&e.key, &self.cfg)?;
        let mut c = connect(&e.key, &a)?;
        exec(
            &e.key,
            &mut c,
            "setting the lock timeout",
            &format!(
                "SET SESSION lock_wait_timeout = {}",
                self.cfg.lock_timeout().as_secs()
            ),
        )?;
        if swapped(&e.key, &mut c, e)? {
            swap(&e.key, &mut c, e, Direction::Back)?;
        }
        drop_database(&e.key, &mut c, &e.tmp)?;
        drop_database(&e.key, &mut c, &e.old)
    }
}

/// A drill: the dump restored into a scratch database, row counts and
/// migration state checked there, the database dropped.
pub struct MysqlDrill {
    id: ComponentId,
    record: MysqlRecord,
    cfg: MysqlConfig,
    db: String,
}

impl MysqlDrill {
    /// The drill of `record` into `scratch`'s database for `id`.
    pub fn new(
        scratch: &crate::components::Scratch,
        id: &ComponentId,
        cfg: &MysqlConfig,
        record: MysqlRecord,
    ) -> Result<Self> {
        Ok(Self {
            id: id.clone(),
            record,
            cfg: cfg.clone(),
            db: scratch.database(id.name()),
        })
    }
}

impl crate::components::Drilled for MysqlDrill {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn lane(&self) -> Lane {
        Lane::Databases
    }

    fn restore(&mut self, set: &SetContext) -> Result<String> {
        let a = admin(self.id.name(), &self.cfg)?;
        check_format(&self.id, &self.record, &mut connect(self.id.name(), &a)?)?;
        fill(
            set,
            &self.id,
            &self.record,
            self.id.name(),
            &self.cfg,
            &self.db,
            None,
        )?;
        Ok(format!("dump into database `{}`", self.db))
    }

    fn check(&mut self, _set: &SetContext) -> Result<String> {
        let key = self.id.name();
        let a = admin(key, &self.cfg)?.with_database(Some(&self.db));
        let mut c = connect(key, &a)?;
        let counts = row_counts(key, &mut c)?;
        check_counts(&self.id, &counts, &self.record.row_counts)?;
        if migration_state(key, &mut c)? != self.record.migrations {
            return Err(Error::Verification(format!(
                "{}: migration state differs from the manifest",
                self.id
            )));
        }
        Ok(format!(
            "{} tables: row counts and migrations match",
            counts.len()
        ))
    }

    fn remove(&mut self) -> Result<()> {
        let key = self.id.name();
        let a = admin(key, &self.cfg)?;
        let mut c = connect(key, &a)?;
        drop_database(key, &mut c, &self.db)?;
        drop_user(key, &mut c, &restore_user(&self.db))
    }

    fn kept(&self) -> String {
        format!(
            "{}: database `{}` (DROP DATABASE `{}` to remove it)",
            self.id, self.db, self.db
        )
    }
}

/// Drops the scratch databases (and their restore users) whose name starts
/// with `prefix`; returns them.
pub fn drop_scratch(key: &str, cfg: &MysqlConfig, prefix: &str) -> Result<Vec<String>> {
    let a = admin(key, cfg)?;
    let mut c = connect(key, &a)?;
    let like = format!(
        "{}%",
        prefix
            .replace('\\', "\\\\")
            .replace('_', "\\_")
            .replace('%', "\\%")
    );
    let dbs: Vec<String> = c
        .exec(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
            (like,),
        )
        .map_err(|e| Error::component(component(key), error_text(&e)))?;
    for db in &dbs {
        drop_database(key, &mut c, db)?;
        drop_user(key, &mut c, &restore_user(db))?;
    }
    Ok(dbs)
}
