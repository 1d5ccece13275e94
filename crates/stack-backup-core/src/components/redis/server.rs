//! Redis: connecting and asking for the server version.

use std::time::Duration;

use crate::config::RedisConfig;
use crate::error::{Error, Result};

/// Connection timeout for checks.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The component name of a `[redis.NAME]` table.
#[must_use]
pub fn component(name: &str) -> String {
    crate::components::ComponentId::new(&super::Redis, name).to_string()
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
    if let Some(container) = &cfg.container {
        // The name the application uses on the compose network: its
        // address there (`components/docker/address.rs`).
        // Every TCP form, TLS included: never left to this host's DNS.
        if let redis::ConnectionAddr::Tcp(host, port)
        | redis::ConnectionAddr::TcpTls { host, port, .. } = &mut info.addr
        {
            let at = crate::components::docker::address::resolve(
                &component(name),
                container,
                host,
                *port,
            )?;
            *host = at.host(host);
        }
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

pub(super) fn query<T: redis::FromRedisValue>(
    name: &str,
    conn: &mut redis::Connection,
    cmd: &redis::Cmd,
    what: &str,
) -> Result<T> {
    cmd.query(conn)
        .map_err(|e| Error::component(component(name), format!("{what} failed: {e}")))
}

pub(super) fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// How long to wait for a background save.
pub const SAVE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Takes a point-in-time RDB (`BGSAVE`, then waits until `LASTSAVE` moved
/// and no save is in progress, and checks the save succeeded) and
/// prepares the entry that streams the file into the backup set.
pub fn plan(name: &str, cfg: &RedisConfig) -> Result<(crate::source::Entry, super::RedisRecord)> {
    use crate::source::{Artifact, Content, Entry, StreamSpec};
    let comp = component(name);
    let mut conn = connect(name, cfg)?;
    let version = server_version(name, &mut conn)?;
    let keys: u64 = query(name, &mut conn, &redis::cmd("DBSIZE"), "DBSIZE")?;
    let dir: Vec<String> = query(
        name,
        &mut conn,
        redis::cmd("CONFIG").arg("GET").arg("dir"),
        "CONFIG GET dir (is CONFIG renamed or disabled?)",
    )?;
    let file: Vec<String> = query(
        name,
        &mut conn,
        redis::cmd("CONFIG").arg("GET").arg("dbfilename"),
        "CONFIG GET dbfilename",
    )?;
    let (Some(dir), Some(file)) = (dir.get(1), file.get(1)) else {
        return Err(Error::component(
            comp,
            "CONFIG GET did not return dir and dbfilename",
        ));
    };
    let rdb_path = format!("{}/{file}", dir.trim_end_matches('/'));

    // LASTSAVE has a resolution of one second: start the save in a second
    // later than the last one so that a new LASTSAVE is always greater.
    let before: i64 = query(name, &mut conn, &redis::cmd("LASTSAVE"), "LASTSAVE")?;
    loop {
        let (now, _): (String, String) = query(name, &mut conn, &redis::cmd("TIME"), "TIME")?;
        if now.parse::<i64>().unwrap_or(0) > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = std::time::Instant::now() + SAVE_TIMEOUT;
    loop {
        match redis::cmd("BGSAVE").query::<String>(&mut conn) {
            Ok(_) => break,
            Err(e)
                if e.to_string().contains("in progress")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(Error::component(comp, format!("BGSAVE failed: {e}"))),
        }
    }
    let lastsave = loop {
        let last: i64 = query(name, &mut conn, &redis::cmd("LASTSAVE"), "LASTSAVE")?;
        let info: String = query(
            name,
            &mut conn,
            redis::cmd("INFO").arg("persistence"),
            "INFO persistence",
        )?;
        let in_progress = info_field(&info, "rdb_bgsave_in_progress").as_deref() == Some("1");
        if last > before && !in_progress {
            if info_field(&info, "rdb_last_bgsave_status").as_deref() != Some("ok") {
                return Err(Error::component(
                    comp,
                    "the background save failed (rdb_last_bgsave_status is not ok); see the Redis log",
                ));
            }
            break last;
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::component(
                comp,
                "the background save did not finish in time",
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (program, args) = match &cfg.container {
        Some(c) => (
            "docker".to_string(),
            vec![
                "exec".to_string(),
                c.clone(),
                "cat".into(),
                rdb_path.clone(),
            ],
        ),
        None => ("cat".to_string(), vec![rdb_path.clone()]),
    };
    let path = format!("redis/{name}/dump.rdb");
    Ok((
        Entry::File(Artifact {
            path: path.clone(),
            component: comp,
            content: Content::Stream(StreamSpec {
                program: program.into(),
                args,
                env: Vec::new(),
                what: format!("reading {rdb_path}"),
                magic: Some(b"REDIS"),
            }),
            reuse_meta: None,
        }),
        super::RedisRecord {
            url: cfg.url.redacted(),
            version,
            role: format!("{:?}", cfg.role).to_lowercase(),
            rdb: path,
            keys,
            lastsave,
        },
    ))
}

/// `DBSIZE` of the configured database.
pub fn dbsize(name: &str, conn: &mut redis::Connection) -> Result<u64> {
    query(name, conn, &redis::cmd("DBSIZE"), "DBSIZE")
}

/// `FLUSHDB` of the configured database.
pub fn cmd_flushdb(name: &str, conn: &mut redis::Connection) -> Result<()> {
    query::<()>(name, conn, &redis::cmd("FLUSHDB"), "FLUSHDB")
}
