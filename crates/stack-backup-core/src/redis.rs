//! Redis: connecting and asking for the server version.

use std::time::Duration;

use crate::config::RedisConfig;
use crate::error::{Error, Result};

/// Connection timeout for checks.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The component name of a `[redis.NAME]` table.
#[must_use]
pub fn component(name: &str) -> String {
    format!("redis.{name}")
}

/// Connects (and authenticates) to a configured Redis.
pub fn connect(name: &str, cfg: &RedisConfig) -> Result<redis::Connection> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::component(
            component(name),
            format!("{what} {}: {e}", cfg.url.redacted()),
        )
    };
    let mut info = redis::IntoConnectionInfo::into_connection_info(cfg.url.expose())
        .map_err(|e| fail("invalid URL", &e))?;
    if let Some(file) = &cfg.password_file {
        let pw = std::fs::read_to_string(file).map_err(|e| {
            Error::component(
                component(name),
                format!("cannot read password-file {}: {e}", file.display()),
            )
        })?;
        info.redis.password = Some(pw.lines().next().unwrap_or_default().to_string());
    }
    let client = redis::Client::open(info).map_err(|e| fail("invalid URL", &e))?;
    let conn = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| fail("cannot connect to", &e))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| conn.set_write_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| fail("cannot set timeouts on", &e))?;
    Ok(conn)
}

/// `redis_version` from `INFO server`.
pub fn server_version(name: &str, conn: &mut redis::Connection) -> Result<String> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(conn)
        .map_err(|e| Error::component(component(name), format!("INFO failed: {e}")))?;
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| Error::component(component(name), "INFO has no redis_version"))
}
