//! The live database file: where it is (a host path, or a path inside a
//! Docker volume), checked never to be reached through a symlink, and what
//! can be read of a database file (magic bytes, tables, row counts,
//! migrations).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::SqliteConfig;
use crate::components::ComponentId;
use crate::error::{Error, Result};
use crate::manifest::MigrationState;

/// The first 16 bytes of every SQLite 3 database file.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The files SQLite keeps beside a database (`<db>-wal`, …): they belong
/// to that one file, and one left beside another file corrupts it.
pub const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The live database file of `[sqlite.NAME]`, resolved.
#[derive(Debug, Clone)]
pub struct Live {
    /// The file on this host.
    pub path: PathBuf,
    /// As the user wrote it (`/srv/app.db`, `VOLUME:data/app.db`).
    pub shown: String,
    /// The volume it is in.
    pub volume: Option<String>,
}

impl Live {
    /// Resolves `c` to a host path whose every directory is a real
    /// directory (no symlink on the way: a volume's content belongs to its
    /// containers, which could point a link at a host file) and that no
    /// other user can rename entries in. The file itself need not exist.
    pub fn resolve(id: &ComponentId, c: &SqliteConfig) -> Result<Self> {
        let (path, shown) = match &c.volume {
            None => {
                let parent = c.path.parent().unwrap_or(Path::new("/"));
                match std::fs::canonicalize(parent) {
                    Ok(real) if real != parent => {
                        return Err(Error::Refused(format!(
                        "{id}: {} is reached through a symlink (it is {}); configure the real path",
                        parent.display(),
                        real.display()
                    )))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(Error::missing(
                            id.as_str(),
                            format!("{}: {e}", parent.display()),
                        ))
                    }
                }
                (c.path.clone(), c.path.display().to_string())
            }
            Some(v) => {
                let root = PathBuf::from(crate::docker::volume_mountpoint(v)?);
                let mut p = root.clone();
                let parts: Vec<_> = c.path.components().collect();
                for (i, part) in parts.iter().enumerate() {
                    let Component::Normal(n) = part else {
                        return Err(Error::Refused(format!(
                            "{id}: `{}` is not a plain path inside volume `{v}`",
                            c.path.display()
                        )));
                    };
                    p.push(n);
                    if i + 1 < parts.len() {
                        match std::fs::symlink_metadata(&p) {
                            Ok(m) if m.file_type().is_dir() => {}
                            Ok(_) => {
                                return Err(Error::Refused(format!(
                                    "{id}: {} in volume `{v}` is not a directory (a symlink is never followed inside a volume)",
                                    p.display()
                                )))
                            }
                            Err(e) => {
                                return Err(Error::missing(
                                    id.as_str(),
                                    format!("{}: {e}", p.display()),
                                ))
                            }
                        }
                    }
                }
                (p, format!("{v}:{}", c.path.display()))
            }
        };
        refuse_open_ancestors(id, &path)?;
        Ok(Self {
            path,
            shown,
            volume: c.volume.clone(),
        })
    }

    /// Opens the file itself (`O_NOFOLLOW`: a symlink there is refused),
    /// checks that it is a regular file starting with SQLite's magic
    /// bytes; returns its size.
    pub fn check_file(&self) -> Result<u64> {
        let (size, _) = check_file(&self.path, &self.shown, true)?;
        Ok(size)
    }

    /// A read-only connection to the live database (the final component
    /// is not followed either: `SQLITE_OPEN_NOFOLLOW`).
    pub fn open_read_only(&self) -> Result<Connection> {
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NOFOLLOW
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::component(&self.shown, format!("opening: {e}")))?;
        c.busy_timeout(std::time::Duration::from_secs(60))
            .map_err(|e| Error::component(&self.shown, e.to_string()))?;
        Ok(c)
    }
}

/// Opens `path` without following a symlink and checks it is a regular
/// file, and with `sqlite` an SQLite one (a restore replaces a broken file
/// too); returns its size and metadata.
pub fn check_file(path: &Path, shown: &str, sqlite: bool) -> Result<(u64, std::fs::Metadata)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                Error::Refused(format!(
                    "{shown}: {} is a symbolic link; configure the file itself",
                    path.display()
                ))
            } else if e.kind() == std::io::ErrorKind::NotFound {
                Error::missing(shown, format!("{} does not exist", path.display()))
            } else {
                Error::io("opening", path, e)
            }
        })?;
    let md = f.metadata().map_err(|e| Error::io("reading", path, e))?;
    if !md.is_file() {
        return Err(Error::Refused(format!(
            "{shown}: {} is not a regular file",
            path.display()
        )));
    }
    let mut head = [0u8; 16];
    if sqlite && md.len() > 0 {
        f.read_exact(&mut head)
            .map_err(|e| Error::io("reading", path, e))?;
        if &head != MAGIC {
            return Err(Error::Refused(format!(
                "{shown}: {} is not an SQLite 3 database (no `SQLite format 3` header)",
                path.display()
            )));
        }
    }
    Ok((md.len(), md))
}

/// Why the file at `path` is not a usable SQLite database, if SQLite
/// itself says so (`SQLITE_NOTADB`, `SQLITE_CORRUPT`, or `quick_check`
/// finds damage); `None` for a database that only cannot be read now
/// (busy, permission, a hot journal a read-only connection cannot roll
/// back), which a restore must not treat as broken. Reads the whole file:
/// only for a copy that failed already.
pub fn broken(path: &Path) -> Option<String> {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    );
    let checked = c.and_then(|c| {
        c.busy_timeout(std::time::Duration::ZERO)?;
        c.query_row("PRAGMA quick_check(1)", [], |r| r.get::<_, String>(0))
    });
    match checked {
        Ok(ok) if ok == "ok" => None,
        Ok(damage) => Some(damage),
        Err(e) if matches!(e.sqlite_error_code(), Some(NotADatabase | DatabaseCorrupt)) => {
            Some(e.to_string())
        }
        Err(_) => None,
    }
}

/// Refuses a path under a world-writable directory, unless it is owned by
/// root and sticky (`/tmp`: nobody can rename another's entries there):
/// anyone could swap the file or a directory for a link while we read or
/// replace it. A directory owned by the application's own user is
/// accepted (that user owns the data anyway).
fn refuse_open_ancestors(id: &ComponentId, path: &Path) -> Result<()> {
    for dir in path.ancestors().skip(1) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(dir) else {
            continue;
        };
        let sticky_root = m.mode() & 0o1000 != 0 && m.uid() == 0;
        if m.mode() & 0o002 != 0 && !sticky_root {
            return Err(Error::Refused(format!(
                "{id}: {} may be changed by another user (owner uid {}, mode {:o}); nothing was read or changed",
                dir.display(),
                m.uid(),
                m.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

/// Opens a database file that nothing else writes (a copy of ours) as
/// immutable: read-only, no lock, no `-wal`/`-shm` created beside it.
pub fn open_copy(path: &Path, shown: &str) -> Result<Connection> {
    let uri = format!(
        "file:{}?immutable=1",
        path.display()
            .to_string()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23")
    );
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NOFOLLOW
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::component(shown, format!("opening {}: {e}", path.display())))
}

/// A text pragma (`journal_mode`).
pub fn pragma_text(id: &ComponentId, c: &Connection, name: &str) -> Result<String> {
    c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, String>(0))
        .map_err(|e| Error::component(id.as_str(), format!("PRAGMA {name}: {e}")))
}

/// An integer pragma (`page_size`, `user_version`).
pub fn pragma_int(id: &ComponentId, c: &Connection, name: &str) -> Result<i64> {
    c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
        .map_err(|e| Error::component(id.as_str(), format!("PRAGMA {name}: {e}")))
}

/// Quotes an SQL identifier.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Rows per ordinary table (virtual tables are left out: counting one
/// needs its module; their shadow tables are ordinary and counted).
pub fn row_counts(id: &ComponentId, c: &Connection) -> Result<BTreeMap<String, u64>> {
    let fail = |e: rusqlite::Error| Error::component(id.as_str(), format!("counting rows: {e}"));
    let names: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
        )
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(fail)?;
    let mut out = BTreeMap::new();
    for n in names {
        let count: i64 = c
            .query_row(
                &format!("SELECT count(*) FROM main.{}", quote(&n)),
                [],
                |r| r.get(0),
            )
            .map_err(fail)?;
        out.insert(n, u64::try_from(count).unwrap_or(0));
    }
    Ok(out)
}

/// The migration tables stack-backup knows, in SQLite's dialect: (tool,
/// table, SELECT list, WHERE) — the same tools as for PostgreSQL.
const MIGRATION_TABLES: [(&str, &str, &str, &str); 7] = [
    (
        "alembic",
        "alembic_version",
        "CAST(version_num AS TEXT)",
        "1",
    ),
    ("django", "django_migrations", "app || '.' || name", "1"),
    ("rails", "schema_migrations", "CAST(version AS TEXT)", "1"),
    (
        "flyway",
        "flyway_schema_history",
        "coalesce(CAST(version AS TEXT), script)",
        "success",
    ),
    (
        "sqlx",
        "_sqlx_migrations",
        "CAST(version AS TEXT)",
        "success",
    ),
    (
        "diesel",
        "__diesel_schema_migrations",
        "CAST(version AS TEXT)",
        "1",
    ),
    (
        "prisma",
        "_prisma_migrations",
        "migration_name",
        "finished_at IS NOT NULL AND rolled_back_at IS NULL",
    ),
];

/// The applied state of every known migration tool whose table exists
/// (a table of another shape is skipped with a warning).
pub fn migrations(id: &ComponentId, c: &Connection) -> Vec<MigrationState> {
    let mut out = Vec::new();
    for (tool, table, select, filter) in MIGRATION_TABLES {
        let exists = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get::<_, i64>(0),
            )
            .unwrap_or(0)
            > 0;
        if !exists {
            continue;
        }
        let q = format!("SELECT {select} FROM main.{} WHERE {filter}", quote(table));
        let rows = c.prepare(&q).and_then(|mut s| {
            s.query_map([], |r| r.get::<_, Option<String>>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        });
        match rows {
            Ok(rows) => {
                let mut applied: Vec<String> = rows.into_iter().flatten().collect();
                applied.sort();
                out.push(MigrationState {
                    tool: tool.to_string(),
                    table: table.to_string(),
                    applied,
                });
            }
            Err(e) => log::warn!("{id}: {table} is not a {tool} table: {e}"),
        }
    }
    out
}

/// `PRAGMA integrity_check`: `ok`, or the first problems it lists.
pub fn integrity(id: &ComponentId, c: &Connection) -> Result<()> {
    let lines: Vec<String> = c
        .prepare("PRAGMA integrity_check(20)")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(|e| Error::Verification(format!("{id}: PRAGMA integrity_check: {e}")))?;
    if lines != ["ok"] {
        return Err(Error::Verification(format!(
            "{id}: PRAGMA integrity_check: {}",
            lines.join("; ")
        )));
    }
    Ok(())
}

/// Compares row counts with the manifest's; the mismatches, named.
pub fn compare_counts(
    id: &ComponentId,
    want: &BTreeMap<String, u64>,
    got: &BTreeMap<String, u64>,
) -> Result<()> {
    if want == got {
        return Ok(());
    }
    let mut diffs = Vec::new();
    for t in want
        .keys()
        .chain(got.keys().filter(|k| !want.contains_key(*k)))
    {
        let (w, g) = (want.get(t), got.get(t));
        if w != g {
            let show = |v: Option<&u64>| v.map_or("no table".to_string(), |n| format!("{n} rows"));
            diffs.push(format!("{t}: {} (manifest: {})", show(g), show(w)));
        }
    }
    Err(Error::Verification(format!(
        "{id}: row counts differ from the manifest's: {}",
        diffs.join(", ")
    )))
}

/// Processes (other than this one) that hold `paths` open, as
/// `pid (comm)`: read from `/proc/*/fd` (all of them as root; only our own
/// user's otherwise).
pub fn holders(paths: &[PathBuf]) -> Vec<String> {
    let ids: Vec<(u64, u64)> = paths
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().to_string();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let open = fds.flatten().any(|fd| {
            std::fs::metadata(fd.path()).is_ok_and(|m| ids.contains(&(m.dev(), m.ino())))
        });
        if open {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", comm.trim()));
        }
    }
    out
}

/// `<file><suffix>` (`app.db` → `app.db-wal`).
#[must_use]
pub fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}
