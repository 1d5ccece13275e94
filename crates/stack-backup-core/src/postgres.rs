//! PostgreSQL: connecting, server version, and choosing a `pg_dump` whose
//! major version fits the server.
//!
//! Contract: the password (from the URL or `password-file`) is handed to
//! child processes only through `PGPASSWORD` in their environment, never in
//! argv, and never appears in errors (URLs are redacted).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::config::PostgresConfig;
use crate::error::{Error, Result};
use crate::process;

/// Connection timeout for checks and dumps.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The component name of a `[postgres.NAME]` table.
#[must_use]
pub fn component(name: &str) -> String {
    format!("postgres.{name}")
}

/// The connection parameters of a config entry, password included.
pub fn client_config(name: &str, cfg: &PostgresConfig) -> Result<postgres::Config> {
    let mut pc = postgres::Config::from_str(cfg.url.expose()).map_err(|e| {
        Error::component(
            component(name),
            format!("invalid URL {}: {e}", cfg.url.redacted()),
        )
    })?;
    if let Some(file) = &cfg.password_file {
        let pw = std::fs::read_to_string(file).map_err(|e| {
            Error::component(
                component(name),
                format!("cannot read password-file {}: {e}", file.display()),
            )
        })?;
        pc.password(pw.lines().next().unwrap_or_default());
    }
    pc.connect_timeout(CONNECT_TIMEOUT);
    Ok(pc)
}

/// Connects to the database of a config entry.
pub fn connect(name: &str, cfg: &PostgresConfig) -> Result<postgres::Client> {
    client_config(name, cfg)?
        .connect(postgres::NoTls)
        .map_err(|e| {
            Error::component(
                component(name),
                format!(
                    "cannot connect to {}: {}",
                    cfg.url.redacted(),
                    error_text(&e)
                ),
            )
        })
}

/// The most useful text of a driver error (its source holds the reason).
fn error_text(e: &postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// The server's version.
#[derive(Debug, Clone, Serialize)]
pub struct ServerVersion {
    /// e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    /// e.g. `15`.
    pub major: u32,
}

/// Asks the server for its version.
pub fn server_version(name: &str, client: &mut postgres::Client) -> Result<ServerVersion> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int",
            &[],
        )
        .map_err(|e| {
            Error::component(
                component(name),
                format!("querying the server version: {}", error_text(&e)),
            )
        })?;
    let version: String = row.get(0);
    let num: i32 = row.get(1);
    Ok(ServerVersion {
        version,
        major: u32::try_from(num / 10000).unwrap_or(0),
    })
}

/// A PostgreSQL client tool (`pg_dump`, `pg_restore`, …) found on this host.
#[derive(Debug, Clone, Serialize)]
pub struct PgTool {
    /// Where it is.
    pub path: PathBuf,
    /// Its `--version` output, e.g. `pg_dump (PostgreSQL) 15.18`.
    pub version: String,
    /// Its major version.
    pub major: u32,
}

fn tool_version(path: &Path) -> Option<PgTool> {
    let out = process::output("postgres", &path.to_string_lossy(), &["--version"]).ok()?;
    let major = out
        .split_whitespace()
        .find_map(|w| w.split('.').next().and_then(|m| m.parse::<u32>().ok()))?;
    Some(PgTool {
        path: path.to_path_buf(),
        version: out,
        major,
    })
}

/// Candidate directories for client tools: Debian's versioned ones
/// (`/usr/lib/postgresql/N/bin`), newest first, then `PATH`.
fn candidates(tool: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin").join(tool)))
        })
        .filter(|(_, p)| p.exists())
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    let mut out: Vec<PathBuf> = dirs.into_iter().map(|(_, p)| p).collect();
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(
            std::env::split_paths(&path)
                .map(|d| d.join(tool))
                .filter(|p| p.exists()),
        );
    }
    out
}

/// Finds `tool` (e.g. `pg_dump`) whose major version fits a server of
/// `server_major`: the same major if there is one, else the oldest newer
/// one. An older tool cannot dump a newer server and is never chosen.
pub fn find_tool(name: &str, tool: &str, server_major: u32) -> Result<PgTool> {
    let found: Vec<PgTool> = candidates(tool)
        .iter()
        .filter_map(|p| tool_version(p))
        .collect();
    if let Some(t) = found.iter().find(|t| t.major == server_major) {
        return Ok(t.clone());
    }
    if let Some(t) = found
        .iter()
        .filter(|t| t.major > server_major)
        .min_by_key(|t| t.major)
    {
        return Ok(t.clone());
    }
    let seen: Vec<String> = found
        .iter()
        .map(|t| format!("{} ({})", t.path.display(), t.major))
        .collect();
    Err(Error::component(
        component(name),
        format!(
            "no {tool} of major version {server_major} or newer (found: {}); install postgresql-client-{server_major}",
            if seen.is_empty() { "none".into() } else { seen.join(", ") }
        ),
    ))
}
