//! `redis.NAME`: a point-in-time RDB (`BGSAVE`, then wait on `LASTSAVE`).
//! A Redis with role `cache` is only taken with `--include-redis`, and can
//! be flushed instead of restored (`--flush-redis`). A restore changes the
//! configured database only (see `restore.rs`).

mod copy;
mod drill;
mod restore;
mod server;
mod temp_server;

use serde::{Deserialize, Serialize};

pub use restore::{recover, FlushRestorer, RedisEntry, RedisRestorer};
pub use server::*;

use super::restoring::{Restore, Restorer};
use super::{
    wrong_record, BackupContext, ComponentId, Kind, Planned, Record, RestoreOptions, Stack,
};
use crate::config::{Config, RedisRole};
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// `redis.NAME`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RedisRecord {
    /// URL, password redacted.
    pub url: String,
    /// `redis_version`.
    pub version: String,
    /// `cache` or `data`.
    pub role: String,
    /// The RDB file in the set.
    pub rdb: String,
    /// Keys in the configured database at backup time.
    pub keys: u64,
    /// `LASTSAVE` of the save that produced the RDB (unix seconds).
    pub lastsave: i64,
}

/// The kind `redis`.
pub struct Redis;

/// Whether a restore flushes (rather than restores) `[redis.NAME]`.
fn flushed(cfg: &Config, opts: &RestoreOptions, name: &str) -> bool {
    opts.flush_redis
        && cfg
            .redis
            .get(name)
            .is_some_and(|r| r.role == RedisRole::Cache)
}

impl Kind for Redis {
    fn prefix(&self) -> &'static str {
        "redis"
    }

    fn is_database(&self) -> bool {
        true
    }

    fn configured(&self, stack: &Stack) -> Vec<String> {
        stack.cfg.redis.keys().cloned().collect()
    }

    fn covers(&self, stack: &Stack, id: &ComponentId) -> Vec<super::Covered> {
        configured(stack.cfg, id)
            .ok()
            .and_then(|rd| rd.container.clone())
            .map(super::Covered::Container)
            .into_iter()
            .collect()
    }

    fn doctor(&self, stack: &Stack, id: &ComponentId) -> Result<String> {
        let rd = configured(stack.cfg, id)?;
        let mut conn = connect(id.name(), rd)?;
        let v = server_version(id.name(), &mut conn)?;
        Ok(format!(
            "redis-server {v} at {}, role {:?}",
            rd.url.redacted(),
            rd.role
        )
        .to_lowercase())
    }

    fn plan_backup(&self, ctx: &BackupContext, id: &ComponentId) -> Result<Option<Planned>> {
        let rd = configured(ctx.stack.cfg, id)?;
        if rd.role != RedisRole::Data && !ctx.include_redis {
            return Ok(None);
        }
        let (entry, record) = plan(id.name(), rd).map_err(Error::into_missing)?;
        Ok(Some(Planned::new(Record::Redis(record), vec![entry], 0)))
    }

    fn restorer(
        &self,
        cfg: &Config,
        opts: &RestoreOptions,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Restore> {
        let Record::Redis(record) = r else {
            return Err(wrong_record(id));
        };
        if !cfg.redis.contains_key(id.name()) {
            return Ok(Restore::Skip("not in the config".into()));
        }
        if flushed(cfg, opts, id.name()) {
            return Ok(Restore::Into(Box::new(FlushRestorer::new(cfg, id)?)));
        }
        Ok(Restore::Into(Box::new(RedisRestorer::new(
            cfg,
            id,
            record.clone(),
        )?)))
    }

    fn extra_restorers(
        &self,
        cfg: &Config,
        opts: &RestoreOptions,
        in_set: &[ComponentId],
    ) -> Result<Vec<Box<dyn Restorer>>> {
        let mut out: Vec<Box<dyn Restorer>> = Vec::new();
        for name in cfg.redis.keys() {
            let id = ComponentId::new(&Redis, name);
            if flushed(cfg, opts, name) && !in_set.contains(&id) {
                out.push(Box::new(FlushRestorer::new(cfg, &id)?));
            }
        }
        Ok(out)
    }

    fn drill(
        &self,
        _scratch: &super::Scratch,
        id: &ComponentId,
        r: &Record,
    ) -> Result<Option<Box<dyn super::Drilled>>> {
        let Record::Redis(record) = r else {
            return Err(wrong_record(id));
        };
        Ok(Some(Box::new(drill::RedisDrill::new(id, record.clone()))))
    }

    fn drill_clean(&self, _scratch: &super::Scratch) -> Result<Vec<String>> {
        Ok(drill::clean())
    }

    fn describe(&self, r: &Record) -> (String, String) {
        let Record::Redis(r) = r else {
            return (String::new(), String::new());
        };
        (
            format!("Redis at {}", r.url),
            format!("Redis {}, role {}, {} keys", r.version, r.role, r.keys),
        )
    }

    fn export_path(&self, m: &Manifest, id: &ComponentId, _set_path: &str) -> (String, bool) {
        let several = m
            .components
            .keys()
            .filter(|c| c.prefix() == "redis")
            .count()
            > 1;
        if several {
            return (
                format!("redis/{}.rdb", crate::manifest::safe_file_name(id.name())),
                false,
            );
        }
        ("redis/dump.rdb".into(), false)
    }

    fn export_howto(&self, _m: &Manifest, r: &Record, path_of: &dyn Fn(&str) -> String) -> String {
        let Record::Redis(r) = r else {
            return String::new();
        };
        format!(
            "Redis {} ({} keys at backup time). Stop Redis, copy the file over its RDB\n(`redis-cli CONFIG GET dir` and `CONFIG GET dbfilename` tell where), turn AOF off\nor it wins over the RDB, and start Redis:\n\n    cp {} /var/lib/redis/dump.rdb\n",
            r.version,
            r.keys,
            path_of(&r.rdb)
        )
    }
}

/// The config of `[redis.NAME]` for a component id.
fn configured<'c>(cfg: &'c Config, id: &ComponentId) -> Result<&'c crate::config::RedisConfig> {
    cfg.redis
        .get(id.name())
        .ok_or_else(|| Error::component(id.as_str(), "not in the config"))
}
