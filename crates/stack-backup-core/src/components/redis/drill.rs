//! The set's RDB loaded into a temporary `redis-server` on a private Unix
//! socket (the restore's [`TempServer`]) and checked there; the live
//! instance is never connected to. The server dies with the thread that
//! started it, so a drill keeps it on one thread until it is removed.

use super::restore::db_index;
use super::temp_server::{remove_leftovers, TempServer};
use super::{dbsize, info_field, RedisRecord};
use crate::components::drilling::{env_name, Drilled};
use crate::components::restoring::{Lane, SetContext};
use crate::components::ComponentId;
use crate::error::{Error, Result};

/// The drill of one `[redis.NAME]`.
pub(super) struct RedisDrill {
    id: ComponentId,
    record: RedisRecord,
    server: Option<TempServer>,
}

impl RedisDrill {
    pub(super) fn new(id: &ComponentId, record: RedisRecord) -> Self {
        Self {
            id: id.clone(),
            record,
            server: None,
        }
    }

    fn source(&self) -> Result<i64> {
        db_index(&self.record.url).map_err(|e| {
            Error::component(
                self.id.as_str(),
                format!("cannot tell the database of the set's URL: {e}"),
            )
        })
    }
}

impl Drilled for RedisDrill {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn lane(&self) -> Lane {
        Lane::Redis
    }

    /// The RDB in the temporary server's directory.
    fn disk_needs(&self, set: &SetContext) -> Result<crate::components::DiskNeeds> {
        Ok(vec![(std::env::temp_dir(), set.artifact_bytes(&self.id))])
    }

    fn restore(&mut self, set: &SetContext) -> Result<String> {
        remove_leftovers();
        let source = self.source()?;
        let server = TempServer::start(set, &self.id, &self.record.rdb, source)?;
        let line = format!(
            "RDB loaded by a temporary redis-server (pid {})",
            server.pid()
        );
        self.server = Some(server);
        Ok(line)
    }

    /// Keys written between the count and the save are in the RDB, and
    /// keys with a TTL may have expired since: fewer keys than recorded
    /// is a failure only when no key has a TTL.
    fn check(&mut self, _set: &SetContext) -> Result<String> {
        let c = self.id.as_str();
        let source = self.source()?;
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| Error::component(c, "not restored"))?;
        let mut conn = server
            .connect(source)
            .map_err(|e| Error::component(c, format!("the temporary redis-server: {e}")))?;
        let n = dbsize(self.id.name(), &mut conn)?;
        let info: String = redis::cmd("INFO")
            .arg("keyspace")
            .query(&mut conn)
            .map_err(|e| Error::component(c, format!("INFO keyspace: {e}")))?;
        let expires: u64 = info_field(&info, &format!("db{source}"))
            .and_then(|v| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix("expires="))
                    .and_then(|x| x.parse().ok())
            })
            .unwrap_or(0);
        if n < self.record.keys && expires == 0 {
            return Err(Error::Verification(format!(
                "{c}: the RDB holds {n} keys in database {source}, the manifest records {} (no key has a TTL that could have expired)",
                self.record.keys
            )));
        }
        Ok(format!(
            "{n} keys in database {source} ({} recorded, {expires} with a TTL)",
            self.record.keys
        ))
    }

    fn env(&self) -> Vec<(String, String)> {
        let Some(s) = &self.server else {
            return Vec::new();
        };
        let sock = s.socket().display().to_string();
        vec![
            (
                env_name("SB_DRILL_REDIS_SOCKET_", self.id.name()),
                sock.clone(),
            ),
            ("SB_DRILL_REDIS_SOCKET".into(), sock),
        ]
    }

    fn remove(&mut self) -> Result<()> {
        self.server = None;
        Ok(())
    }

    fn kept(&self) -> String {
        self.server.as_ref().map_or_else(String::new, |s| {
            format!(
                "{}: redis-server pid {} on {} (it ends when stack-backup exits: a temporary server never outlives its run)",
                self.id,
                s.pid(),
                s.socket().display()
            )
        })
    }
}

/// What a killed drill left: the temporary servers' directories (the
/// kernel ended the servers with the drill).
pub(super) fn clean() -> Vec<String> {
    remove_leftovers();
    Vec::new()
}
