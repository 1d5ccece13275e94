//! Reading an S3 repository as it was at a past time (`--as-of TIME`), to
//! recover after someone with the backup's credentials deleted or
//! overwrote its objects.
//!
//! [`AsOf`] is a read-only rustic backend over the bucket's object
//! versions (ListObjectVersions, read once at open): for each key, the
//! newest version whose LastModified is at or before TIME, unless that is a
//! delete marker; reads (whole and ranged) ask for that version by id.
//! Writes and deletes are refused. Versions the attacker could not remove
//! are those under Object Lock retention (decision 0026); what else the
//! bucket kept is readable too.
//!
//! Nothing is written to the repository through this view: no lock
//! (the versions it reads cannot change), no pre-restore set, no retention
//! extension (see decision 0028).

use std::collections::BTreeMap;

use bytes::Bytes;
use jiff::Timestamp;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::repo::object_lock::{Version, S3};

/// One object as it was: its version and size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pick {
    version_id: String,
    size: u64,
}

/// A read-only backend of an S3 repository as it was at a time.
pub struct AsOf {
    s3: S3,
    at: Timestamp,
    /// Key (relative to the repository) → the version current at `at`.
    objects: BTreeMap<String, Pick>,
}

impl std::fmt::Debug for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} as of {}", self.s3.describe(), self.at)
    }
}

/// For each key, the newest of `versions` written at or before `at`;
/// keys whose newest such entry is a delete marker (or that did not exist
/// yet) are left out. Of a version and a delete marker with the same time,
/// the version wins (a recovery reads what may be there).
fn pick(versions: Vec<Version>, at: Timestamp) -> BTreeMap<String, Pick> {
    let mut newest: BTreeMap<String, Version> = BTreeMap::new();
    for v in versions.into_iter().filter(|v| v.last_modified <= at) {
        let replace = newest.get(&v.key).is_none_or(|n| {
            (v.last_modified, !v.delete_marker) > (n.last_modified, !n.delete_marker)
        });
        if replace {
            newest.insert(v.key.clone(), v);
        }
    }
    newest
        .into_iter()
        .filter(|(_, v)| !v.delete_marker)
        .map(|(k, v)| {
            (
                k,
                Pick {
                    version_id: v.version_id,
                    size: v.size,
                },
            )
        })
        .collect()
}

/// The key of a file of the repository, as rustic's S3 backend names it.
fn key(tpe: FileType, id: &Id) -> String {
    let hex = id.to_hex();
    match tpe {
        FileType::Config => "config".into(),
        FileType::Pack => format!("data/{}/{}", &hex[..2], &*hex),
        _ => format!("{}/{}", tpe.dirname(), &*hex),
    }
}

fn backend_err(e: &Error) -> Box<RusticError> {
    RusticError::new(ErrorKind::Backend, "reading an object version: {message}")
        .attach_context("message", e.to_string())
}

fn refused(what: &str) -> Box<RusticError> {
    RusticError::new(
        ErrorKind::Unsupported,
        "the repository is opened read-only as of a past time (--as-of); refusing to {what}",
    )
    .attach_context("what", what.to_string())
}

impl AsOf {
    /// The repository of `cfg` as it was at `at`; a usage error (exit 2)
    /// when it is not on S3 (with credentials), since only an S3 bucket
    /// keeps versions to read.
    pub fn open(cfg: &Config, at: Timestamp) -> Result<Self> {
        let s3 = require_s3(cfg)?;
        if at > Timestamp::now() {
            return Err(Error::Usage(format!("--as-of {at} is in the future")));
        }
        let objects = pick(s3.versions()?, at);
        if !objects.contains_key("config") {
            return Err(Error::Repository {
                location: s3.describe().to_string(),
                message: format!("there was no repository (no `config` object) as of {at}"),
            });
        }
        Ok(Self { s3, at, objects })
    }

    /// How many objects the view holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    fn read(&self, tpe: FileType, id: &Id, range: Option<(u64, u64)>) -> RusticResult<Bytes> {
        let k = key(tpe, id);
        let p = self.objects.get(&k).ok_or_else(|| {
            RusticError::new(
                ErrorKind::Backend,
                "`{key}` did not exist as of the time asked for",
            )
            .attach_context("key", k.clone())
        })?;
        self.s3
            .get_version(&k, &p.version_id, range)
            .map_err(|e| backend_err(&e))
    }
}

/// The S3 bucket of `cfg`'s repository, or the usage error `--as-of` gets
/// on any other repository.
pub fn require_s3(cfg: &Config) -> Result<S3> {
    S3::for_config(cfg)?.ok_or_else(|| {
        Error::Usage(
            "--as-of needs a repository on S3 with versioning (Object Lock) and credentials: only there are past versions of the objects kept".into(),
        )
    })
}

impl ReadBackend for AsOf {
    fn location(&self) -> String {
        format!("{} as of {}", self.s3.describe(), self.at)
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        let size = |p: &Pick| u32::try_from(p.size).unwrap_or(u32::MAX);
        if tpe == FileType::Config {
            return Ok(self
                .objects
                .get("config")
                .map(|p| (Id::default(), size(p)))
                .into_iter()
                .collect());
        }
        let dir = format!("{}/", tpe.dirname());
        Ok(self
            .objects
            .range(dir.clone()..)
            .take_while(|(k, _)| k.starts_with(&dir))
            .filter_map(|(k, p)| {
                let name = k.rsplit('/').next()?;
                Some((name.parse::<Id>().ok()?, size(p)))
            })
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.read(tpe, id, None)
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        self.read(tpe, id, Some((u64::from(offset), u64::from(length))))
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        key(tpe, id)
    }
}

impl WriteBackend for AsOf {
    fn create(&self) -> RusticResult<()> {
        Err(refused("create a repository"))
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        _content: BytesList,
    ) -> RusticResult<()> {
        Err(refused(&format!("write {}", key(tpe, id))))
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        Err(refused(&format!("remove {}", key(tpe, id))))
    }
}

/// Parses a time for `--as-of`: RFC 3339 (`2026-11-29T10:00:00Z`,
/// `…+01:00`), or a date and time without offset in the system's time
/// zone (`2026-11-29 10:00`, `2026-11-29T10:00:00`).
pub fn parse_time(s: &str) -> std::result::Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::system()).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            format!("`{s}` is not a time (RFC 3339, e.g. 2026-11-29T10:00:00Z, or `2026-11-29 10:00` in local time)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, id: &str, secs: i64, marker: bool) -> Version {
        Version {
            key: key.into(),
            version_id: id.into(),
            last_modified: Timestamp::from_second(secs).unwrap(),
            delete_marker: marker,
            size: if marker { 0 } else { 7 },
        }
    }

    #[test]
    fn the_newest_version_at_the_time_unless_deleted() {
        let versions = vec![
            v("config", "c1", 10, false),
            v("config", "c2", 50, false), // overwritten after
            v("snapshots/aa", "s1", 20, false),
            v("snapshots/aa", "d1", 50, true), // deleted after
            v("snapshots/bb", "s2", 20, false),
            v("snapshots/bb", "d2", 30, true), // deleted before
            v("index/cc", "i1", 45, false),    // written after
        ];
        let at = Timestamp::from_second(40).unwrap();
        let p = pick(versions, at);
        let ids: Vec<(&str, &str)> = p
            .iter()
            .map(|(k, p)| (k.as_str(), p.version_id.as_str()))
            .collect();
        assert_eq!(ids, [("config", "c1"), ("snapshots/aa", "s1")]);
    }

    #[test]
    fn keys_and_times() {
        let id: Id = "ab".repeat(32).parse().unwrap();
        assert_eq!(
            key(FileType::Pack, &id),
            format!("data/ab/{}", "ab".repeat(32))
        );
        assert_eq!(
            key(FileType::Snapshot, &id),
            format!("snapshots/{}", "ab".repeat(32))
        );
        assert_eq!(key(FileType::Config, &id), "config");
        assert_eq!(
            parse_time("2026-11-29T10:00:00Z").unwrap(),
            Timestamp::from_second(1_795_946_400).unwrap()
        );
        assert!(parse_time("2026-11-29 10:00").is_ok());
        assert!(parse_time("yesterday").is_err());
    }
}
