//! Restoring the configured database of a Redis instance, and nothing else
//! on it.
//!
//! A set's RDB holds every database of the instance, but `[redis.NAME]`
//! names one (`redis://host/9`), and other applications often share the
//! instance through other databases. So the restore:
//!
//! 1. loads the RDB into a temporary `redis-server` (see [`TempServer`]);
//! 2. picks a *scratch* database on the live instance: an empty one that
//!    no `[redis.*]` of the config uses, the highest such index (the low
//!    ones are the ones applications pick);
//! 3. copies the keys of the database the set was taken from into the
//!    scratch database, `DUMP`/`RESTORE` with their remaining TTL (keys
//!    whose TTL ran out since the backup are skipped and counted);
//! 4. checks that the scratch database holds what was copied (someone
//!    writing into it meanwhile fails the restore; the scratch is flushed
//!    and nothing else was changed);
//! 5. `SWAPDB target scratch`: one atomic command, after which the
//!    restored keys are the target and the original keys sit in the
//!    scratch database.
//!
//! Until the restore as a whole ends, the original is kept there:
//! [`Applied::undo`] swaps back (exact and instant, whatever happened
//! since to other databases) and flushes the restored keys;
//! [`Applied::commit`] flushes the original (`FLUSHDB ASYNC`). A marker
//! key written into the scratch database before the copy travels with the
//! restored keys until then: after a crash, the database it is in tells
//! whether the swap happened, and [`recover`] (restore `--abort` /
//! `--resume`) swaps back or flushes from that, never by guessing.
//!
//! Durability is Redis's own: the restored keys are in memory and in
//! whatever the instance's next save or AOF write carries; nothing of the
//! restore is written to the instance's RDB or AOF files directly, so no
//! save on shutdown can bring old data back.
//!
//! Nothing waits on a replication link. What the live instance needs:
//! Redis 4 or newer (`SWAPDB`, `FLUSHDB ASYNC`) with those commands not
//! renamed, a primary (not a replica), not a cluster (one database only),
//! `CONFIG GET databases` allowed, and a free database; these are checked
//! before anything changes, in step 1 ([`Restorer::disk_needs`]).
//!
//! A Redis inside a container is restored the same way: everything goes
//! through the configured URL (a host naming the container reaches its
//! address on its network, `components/docker/address.rs`), and the
//! temporary server, on this host, only talks to stack-backup. The RDB must be one the host's `redis-server` can load,
//! and its `DUMP` payloads ones the live server accepts (a live server
//! older than the host's refuses newer payloads: the restore then fails
//! before the swap and changes nothing).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::copy::{copy, Copied};
use super::temp_server::{end_recorded, remove_leftovers, TempServer};
use super::{connect, dbsize, info_field, query, RedisRecord};
use crate::components::restoring::{
    Applied, JournalEntry, Lane, Nothing, Recover, Restorer, SetContext, Stage, UndoContext,
};
use crate::components::{ComponentId, DiskNeeds};
use crate::config::{Config, RedisConfig};
use crate::error::{Error, Result};

/// The set's RDB into a Redis instance.
pub struct RedisRestorer {
    id: ComponentId,
    record: RedisRecord,
    target: RedisConfig,
    /// Database indexes a scratch database must not take: those of every
    /// `[redis.*]` (another one may be restored in the same run).
    reserved: Vec<i64>,
    /// What the restore copied, for the post-check.
    copied: Mutex<Option<Copied>>,
}

impl RedisRestorer {
    /// Restores the RDB of `record` into the live `[redis.NAME]` of `id`.
    pub fn new(cfg: &Config, id: &ComponentId, record: RedisRecord) -> Result<Self> {
        let target = super::configured(cfg, id)?.clone();
        let mut r = Self::into_target(id.clone(), record, target);
        r.reserved.extend(
            cfg.redis
                .values()
                .filter_map(|rd| db_index(&rd.url.redacted()).ok()),
        );
        Ok(r)
    }

    /// Restores the RDB of `record` into the Redis `target`.
    #[must_use]
    pub fn into_target(id: ComponentId, record: RedisRecord, target: RedisConfig) -> Self {
        Self {
            id,
            record,
            target,
            reserved: Vec::new(),
            copied: Mutex::new(None),
        }
    }

    fn fail(&self, message: impl Into<String>) -> Error {
        Error::component(self.id.as_str(), message)
    }

    /// The database the set was taken from, and the configured one.
    fn dbs(&self) -> Result<(i64, i64)> {
        let source = db_index(&self.record.url).map_err(|e| {
            self.fail(format!(
                "cannot tell the database of the set's URL {}: {e}",
                self.record.url
            ))
        })?;
        let target = db_index(&self.target.url.redacted()).map_err(|e| {
            self.fail(format!(
                "cannot tell the database of {}: {e}",
                self.target.url.redacted()
            ))
        })?;
        Ok((source, target))
    }

    /// Refuses, before anything changes, a live instance this restore
    /// cannot change one database of; returns the scratch database it
    /// would use now.
    fn check_instance(&self, live: &mut redis::Connection) -> Result<i64> {
        let url = self.target.url.redacted();
        let refuse = |why: String| {
            Error::Refused(format!(
                "{}: cannot restore one database of Redis {url}: {why}; nothing was changed",
                self.id
            ))
        };
        let name = self.id.name();
        let replication: String = query(
            name,
            live,
            redis::cmd("INFO").arg("replication"),
            "INFO replication",
        )?;
        if info_field(&replication, "role").as_deref() != Some("master") {
            return Err(refuse("it is a replica (restore into its primary)".into()));
        }
        let cluster: String = query(
            name,
            live,
            redis::cmd("INFO").arg("cluster"),
            "INFO cluster",
        )?;
        if info_field(&cluster, "cluster_enabled").as_deref() == Some("1") {
            return Err(refuse(
                "it runs in cluster mode (one database only, no SWAPDB)".into(),
            ));
        }
        for command in ["SWAPDB", "FLUSHDB", "RESTORE"] {
            // Unknown (older than Redis 4, or renamed) commands are nil.
            let info: Vec<redis::Value> = query(
                name,
                live,
                redis::cmd("COMMAND").arg("INFO").arg(command),
                "COMMAND INFO",
            )?;
            if matches!(info.first(), None | Some(redis::Value::Nil)) {
                return Err(refuse(format!(
                    "it has no {command} command (Redis 4 or newer, not renamed)"
                )));
            }
        }
        let (_, target) = self.dbs()?;
        scratch_db(name, live, target, &self.reserved).map_err(|e| match e {
            Error::Refused(why) => refuse(why),
            e => e,
        })
    }
}

impl Restorer for RedisRestorer {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn action(&self) -> String {
        let (source, target) = self.dbs().map_or_else(
            |_| ("?".to_string(), "?".to_string()),
            |(s, t)| (s.to_string(), t.to_string()),
        );
        format!(
            "replace the keys of database {target} of Redis {} with the RDB's database {source} ({} keys); other databases untouched",
            self.target.url.redacted(),
            self.record.keys
        )
    }

    fn lane(&self) -> Lane {
        Lane::Redis
    }

    /// The live instance can take the swap (step 1, before anything
    /// changes, dry runs included).
    fn preflight(&self, _set: &SetContext) -> Result<Option<String>> {
        let mut live = connect(self.id.name(), &self.target)?;
        let scratch = self.check_instance(&mut live)?;
        Ok(Some(format!(
            "{}: database {scratch} is free as scratch for the swap",
            self.id
        )))
    }

    /// Room for the RDB in the temporary directory.
    fn disk_needs(&self, set: &SetContext) -> Result<DiskNeeds> {
        Ok(vec![(std::env::temp_dir(), set.artifact_bytes(&self.id))])
    }

    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>> {
        let (source, target) = self.dbs()?;
        remove_leftovers();
        let mut entry = RedisEntry {
            key: self.id.name().to_string(),
            db: target,
            scratch: None,
            marker: format!("{MARKER_PREFIX}{}", set.tag()),
            server_pid: None,
            server_dir: None,
        };
        set.journal(&self.id, JournalEntry::Redis(entry.clone()))?;
        // Started, used and dropped on this thread (see TempServer).
        let server = TempServer::start(set, &self.id, &self.record.rdb, source)?;
        entry.server_pid = Some(server.pid());
        entry.server_dir = Some(server.dir().to_path_buf());
        set.journal(&self.id, JournalEntry::Redis(entry.clone()))?;
        crate::system::fault::point("redis-temp-server-up")?;
        let mut src = server
            .connect(source)
            .map_err(|e| self.fail(format!("the temporary redis-server: {e}")))?;
        let mut live = connect(self.id.name(), &self.target)?;
        let scratch = self.check_instance(&mut live)?;
        entry.scratch = Some(scratch);
        set.journal(&self.id, JournalEntry::Redis(entry.clone()))?;
        let mut dst = connect(self.id.name(), &self.target)?;
        query::<()>(
            self.id.name(),
            &mut dst,
            redis::cmd("SELECT").arg(scratch),
            "SELECT",
        )?;
        let flush_scratch = |dst: &mut redis::Connection, e: Error| {
            let _ = redis::cmd("FLUSHDB").query::<()>(dst);
            e
        };
        // The marker travels with the restored keys: where it is tells,
        // after a crash, whether the swap happened.
        query::<()>(
            self.id.name(),
            &mut dst,
            redis::cmd("SET").arg(&entry.marker).arg(1),
            "SET (the restore's marker)",
        )
        .map_err(|e| flush_scratch(&mut dst, e))?;
        let copied =
            copy(&mut src, &mut dst, &|m| self.fail(m)).map_err(|e| flush_scratch(&mut dst, e))?;
        drop(server);
        let n = dbsize(self.id.name(), &mut dst)
            .map_err(|e| flush_scratch(&mut dst, e))?
            .saturating_sub(1);
        let want = copied.expected(Instant::now());
        if !want.admits(n) {
            return Err(flush_scratch(
                &mut dst,
                self.fail(format!(
                    "database {scratch}, used as scratch, holds {n} keys after {} were copied into it (expected {want}): something else writes into it; nothing was changed",
                    copied.keys
                )),
            ));
        }
        crate::system::fault::point("redis-copied")?;
        log::info!(
            "{}: {} keys copied in {:.1?}; swapping database {target} with {scratch}: until the restore ends, the original keys of database {target} are in database {scratch}",
            self.id,
            copied.keys,
            copied.took
        );
        match redis::cmd("SWAPDB")
            .arg(target)
            .arg(scratch)
            .query::<()>(&mut live)
        {
            Ok(()) => {}
            // The server said no: nothing was swapped.
            Err(e) if e.code().is_some() => {
                return Err(flush_scratch(
                    &mut dst,
                    self.fail(format!("SWAPDB failed: {e}; nothing was changed")),
                ));
            }
            // The link broke: the swap may or may not have happened; the
            // marker tells (`restore --abort` looks).
            Err(e) => {
                return Err(self.fail(format!(
                    "SWAPDB {target} {scratch} got no answer ({e}): the restore journal's marker key `{}` tells which database holds the restored keys",
                    entry.marker
                )));
            }
        }
        crate::system::fault::point("redis-swapped")?;
        *self.copied.lock().expect("copied") = Some(copied);
        Ok(Box::new(Swapped {
            id: self.id.clone(),
            target: self.target.clone(),
            entry,
        }))
    }

    /// The keys that should still exist now: those copied without a TTL,
    /// and those whose TTL has not run out (a range for keys right at
    /// their deadline). Keys gone since the backup are reported.
    fn post_check(&self, set: &SetContext) -> Result<Option<String>> {
        let Some(copied) = self.copied.lock().expect("copied").clone() else {
            return Ok(None);
        };
        let mut conn = connect(self.id.name(), &self.target)?;
        let marker = format!("{MARKER_PREFIX}{}", set.tag());
        let marked: bool = query(
            self.id.name(),
            &mut conn,
            redis::cmd("EXISTS").arg(&marker),
            "EXISTS",
        )?;
        let n = dbsize(self.id.name(), &mut conn)?.saturating_sub(u64::from(marked));
        let want = copied.expected(Instant::now());
        if !want.admits(n) {
            return Err(Error::Verification(format!(
                "{}: {n} keys after the restore, expected {want} ({} copied, {} of them with a TTL)",
                self.id,
                copied.keys,
                copied.deadlines.len()
            )));
        }
        let mut line = format!("{}: {n} keys", self.id);
        let gone = self.record.keys.saturating_sub(want.nominal);
        if gone > 0 {
            line.push_str(&format!(" ({gone} expired since the backup)"));
        }
        // The count in the record is taken just before the save: keys
        // written in between are in the RDB but not in the count.
        if copied.keys + copied.expired > self.record.keys {
            line.push_str(&format!(
                " ({} written during the backup's save)",
                copied.keys + copied.expired - self.record.keys
            ));
        }
        Ok(Some(line))
    }
}

/// The prefix of the marker key a restore writes beside the restored
/// keys; the journal's id follows.
const MARKER_PREFIX: &str = "__stack-backup:restore:";

/// A Redis restore in the journal: the configured and the scratch
/// database, the marker key that travels with the restored keys, and the
/// temporary server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RedisEntry {
    /// The `[redis.NAME]` key.
    pub key: String,
    /// The configured database.
    pub db: i64,
    /// The scratch database, once picked.
    pub scratch: Option<i64>,
    /// The marker key (in the restored keys until the restore ends).
    pub marker: String,
    /// The temporary server's pid.
    pub server_pid: Option<u32>,
    /// Its private directory.
    pub server_dir: Option<PathBuf>,
}

/// Whether `marker` exists in database `db`.
fn marked(name: &str, conn: &mut redis::Connection, db: i64, marker: &str) -> Result<bool> {
    query::<()>(name, conn, redis::cmd("SELECT").arg(db), "SELECT")?;
    query(name, conn, redis::cmd("EXISTS").arg(marker), "EXISTS")
}

/// Resolves a journaled Redis restore from where the marker is: in the
/// configured database, the swap happened (an abort swaps back; a finish
/// flushes the original and deletes the marker); in the scratch database,
/// it did not (the scratch is flushed). Nowhere: nothing left to do.
/// The temporary server, if it still runs, is ended first.
pub fn recover(e: &RedisEntry, id: &ComponentId, to: Recover, cfg: &Config) -> Result<String> {
    if let (Some(pid), Some(dir)) = (e.server_pid, &e.server_dir) {
        end_recorded(pid, dir);
    }
    if e.scratch.is_none() {
        return Ok(format!("{id}: nothing was copied"));
    }
    resolve(e, id, to, super::configured(cfg, id)?)
}

fn resolve(e: &RedisEntry, id: &ComponentId, to: Recover, target: &RedisConfig) -> Result<String> {
    let Some(scratch) = e.scratch else {
        return Ok(format!("{id}: nothing was copied"));
    };
    let name = e.key.as_str();
    let mut conn = connect(name, target)?;
    let flush = |conn: &mut redis::Connection, async_: bool| -> Result<()> {
        query::<()>(name, conn, redis::cmd("SELECT").arg(scratch), "SELECT")?;
        let mut f = redis::cmd("FLUSHDB");
        if async_ {
            f.arg("ASYNC");
        }
        query(name, conn, &f, "FLUSHDB")
    };
    let swapped = marked(name, &mut conn, e.db, &e.marker)?;
    let line = match (to, swapped) {
        (Recover::Abort, true) => {
            query::<()>(
                name,
                &mut conn,
                redis::cmd("SWAPDB").arg(e.db).arg(scratch),
                "SWAPDB",
            )?;
            flush(&mut conn, false)?;
            "swapped back"
        }
        (Recover::Finish, true) => {
            flush(&mut conn, true)?;
            query::<()>(name, &mut conn, redis::cmd("SELECT").arg(e.db), "SELECT")?;
            query::<()>(name, &mut conn, redis::cmd("DEL").arg(&e.marker), "DEL")?;
            "original dropped"
        }
        (_, false) => {
            if marked(name, &mut conn, scratch, &e.marker)? {
                flush(&mut conn, false)?;
                "not swapped; the copy dropped"
            } else {
                "nothing left"
            }
        }
    };
    Ok(format!("{id}: database {}: {line}", e.db))
}

/// The configured database after a swap: the restored keys (and the
/// marker) in `db`, the original ones in `scratch`.
struct Swapped {
    id: ComponentId,
    target: RedisConfig,
    entry: RedisEntry,
}

impl Applied for Swapped {
    /// Drops the original keys (freed in the background) and the marker.
    fn commit(self: Box<Self>) {
        if let Err(e) = resolve(&self.entry, &self.id, Recover::Finish, &self.target) {
            log::warn!(
                "{}: the original keys of database {} may still be in database {:?}: {e}",
                self.id,
                self.entry.db,
                self.entry.scratch
            );
        }
    }

    /// Swaps the original keys back, then drops the restored ones.
    fn undo(self: Box<Self>, _undo: &UndoContext) -> Result<()> {
        resolve(&self.entry, &self.id, Recover::Abort, &self.target).map(|_| ())
    }
}

/// The database index a Redis URL selects (0 when it names none).
pub(super) fn db_index(url: &str) -> std::result::Result<i64, String> {
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|i| i.redis.db)
        .map_err(|e| e.to_string())
}

/// An empty database of the live instance to copy into: not `target`, not
/// `reserved`, the highest free index. None free is [`Error::Refused`].
fn scratch_db(
    name: &str,
    live: &mut redis::Connection,
    target: i64,
    reserved: &[i64],
) -> Result<i64> {
    let databases: Vec<String> = query(
        name,
        live,
        redis::cmd("CONFIG").arg("GET").arg("databases"),
        "CONFIG GET databases (is CONFIG renamed or disabled?)",
    )?;
    let count: i64 = databases
        .get(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Error::component(
                super::component(name),
                "CONFIG GET databases answered nothing",
            )
        })?;
    let keyspace: String = query(
        name,
        live,
        redis::cmd("INFO").arg("keyspace"),
        "INFO keyspace",
    )?;
    let used: Vec<i64> = keyspace
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split_once(':')?.0.parse().ok())
        .collect();
    (0..count)
        .rev()
        .find(|db| *db != target && !reserved.contains(db) && !used.contains(db))
        .ok_or_else(|| {
            Error::Refused(format!(
                "none of its {count} databases is free to copy into (the restore needs an empty one besides the configured ones)"
            ))
        })
}

/// `FLUSHDB` of a cache Redis (`--flush-redis`), in step 6.
pub struct FlushRestorer {
    id: ComponentId,
    target: RedisConfig,
}

impl FlushRestorer {
    /// Flushes the live `[redis.NAME]` of `id`.
    pub fn new(cfg: &Config, id: &ComponentId) -> Result<Self> {
        Ok(Self {
            id: id.clone(),
            target: super::configured(cfg, id)?.clone(),
        })
    }
}

impl Restorer for FlushRestorer {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn action(&self) -> String {
        format!(
            "flush Redis {} (role cache, --flush-redis)",
            self.target.url.redacted()
        )
    }

    fn lane(&self) -> Lane {
        Lane::Redis
    }

    fn stage(&self) -> Stage {
        Stage::Flush
    }

    fn restore(&self, _set: &SetContext) -> Result<Box<dyn Applied>> {
        let mut conn = connect(self.id.name(), &self.target)?;
        super::cmd_flushdb(self.id.name(), &mut conn)?;
        Ok(Box::new(Nothing))
    }
}

#[cfg(test)]
mod tests {
    use super::db_index;

    #[test]
    fn the_database_of_a_url() {
        assert_eq!(db_index("redis://127.0.0.1:6379/9"), Ok(9));
        assert_eq!(db_index("redis://:***@127.0.0.1:6379/3"), Ok(3));
        assert_eq!(db_index("redis://127.0.0.1:6379"), Ok(0));
        assert_eq!(db_index("redis+unix:///run/redis.sock?db=4"), Ok(4));
    }
}
