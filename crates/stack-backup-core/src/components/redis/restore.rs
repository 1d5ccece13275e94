//! Restoring a Redis instance: it becomes a replica of a temporary
//! `redis-server` that loaded the set's RDB, then is promoted again. The
//! restored data is what Redis holds in memory, so its own saves (also on
//! shutdown) write the restored data, never the old.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{connect, dbsize, replicate_from, server_version, RedisRecord};
use crate::components::restoring::{
    Applied, Lane, Nothing, Restorer, SetContext, Stage, UndoContext,
};
use crate::components::ComponentId;
use crate::config::{Config, DbUrl, RedisConfig, RedisRole};
use crate::error::{Error, Result};

/// The set's RDB into a Redis instance.
pub struct RedisRestorer {
    id: ComponentId,
    record: RedisRecord,
    target: RedisConfig,
}

impl RedisRestorer {
    /// Restores the RDB of `record` into the live `[redis.NAME]` of `id`.
    pub fn new(cfg: &Config, id: &ComponentId, record: RedisRecord) -> Result<Self> {
        let target = super::configured(cfg, id)?.clone();
        Ok(Self::into_target(id.clone(), record, target))
    }

    /// Restores the RDB of `record` into the Redis `target`.
    #[must_use]
    pub fn into_target(id: ComponentId, record: RedisRecord, target: RedisConfig) -> Self {
        Self { id, record, target }
    }
}

impl Restorer for RedisRestorer {
    fn id(&self) -> &ComponentId {
        &self.id
    }

    fn action(&self) -> String {
        format!(
            "replace every key of Redis {} with the RDB ({} keys in its db)",
            self.target.url.redacted(),
            self.record.keys
        )
    }

    fn lane(&self) -> Lane {
        Lane::Redis
    }

    fn restore(&self, set: &SetContext) -> Result<Box<dyn Applied>> {
        load_rdb(set, &self.id, &self.record, &self.target)?;
        Ok(Box::new(Replaced {
            id: self.id.clone(),
            target: self.target.clone(),
        }))
    }

    fn post_check(&self, _set: &SetContext) -> Result<Option<String>> {
        let mut conn = connect(self.id.name(), &self.target)?;
        let n = dbsize(self.id.name(), &mut conn)?;
        if n != self.record.keys {
            return Err(Error::Verification(format!(
                "{}: {n} keys after restore, expected {}",
                self.id, self.record.keys
            )));
        }
        Ok(Some(format!("{}: {n} keys", self.id)))
    }
}

/// A Redis whose keys were replaced: the undo loads the pre-restore set's
/// RDB the same way (there is no original to keep aside).
struct Replaced {
    id: ComponentId,
    target: RedisConfig,
}

impl Applied for Replaced {
    fn commit(self: Box<Self>) {}

    fn undo(self: Box<Self>, undo: &UndoContext) -> Result<()> {
        let Some(pre) = undo.pre_restore()? else {
            return Ok(());
        };
        let set = pre.context(undo.cfg);
        if let Some(crate::components::Record::Redis(r)) = pre.manifest.components.get(&self.id) {
            load_rdb(&set, &self.id, r, &self.target)?;
        }
        Ok(())
    }
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

/// Replaces every key of `target` with the RDB `record.rdb` of the set.
fn load_rdb(
    set: &SetContext,
    id: &ComponentId,
    record: &RedisRecord,
    target: &RedisConfig,
) -> Result<()> {
    let c = id.as_str();
    if target.container.is_some() {
        return Err(Error::component(c, "restoring a Redis inside a container is not supported yet; restore redis/<name>/dump.rdb by hand (see MANIFEST.md)"));
    }
    let dir = tempfile_dir()?;
    let rdb = dir.join("dump.rdb");
    {
        let node = set.node(id, &record.rdb)?;
        let mut f = std::fs::File::create(&rdb).map_err(|e| Error::io("writing", &rdb, e))?;
        set.repo
            .dump(&node, &mut f)
            .map_err(|e| Error::component(c, e.display_log()))?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::component(c, format!("no free port: {e}")))?
        .port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dbfilename",
            "dump.rdb",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::component(c, format!("cannot start a temporary redis-server: {e}")))?;
    let result = (|| -> Result<()> {
        let src = RedisConfig {
            url: DbUrl::parse(&format!("redis://127.0.0.1:{port}/0"))
                .map_err(|e| Error::component(c, e))?,
            role: RedisRole::Data,
            password_file: None,
            container: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut conn) = connect(id.name(), &src) {
                if server_version(id.name(), &mut conn).is_ok() {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(Error::component(
                    c,
                    "the temporary redis-server did not start",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut live = connect(id.name(), target)?;
        replicate_from(id.name(), &mut live, "127.0.0.1", port)
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "stack-backup-redis-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    Ok(dir)
}
