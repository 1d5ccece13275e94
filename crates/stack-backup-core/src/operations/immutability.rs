//! `verify --immutability`: does the store really refuse to destroy a
//! baseline? And `immaculate protect`: the local repository's read-only
//! and immutable files.
//!
//! On S3 a sample of each baseline's objects (its snapshot file, an index
//! file that lists its packs, up to three packs) is checked with the
//! configured credentials, without ever deleting or writing an object: a
//! check that destroys what it checks on a store that fails it, or between
//! two of its requests, is worse than none. The object's retention is read:
//! none, or none in the future, is "not protected"; ending within the hour
//! is "expiring"; the retained version's bytes must match its name. Under
//! GOVERNANCE the store is asked to shorten the retention by one second
//! with `x-amz-bypass-governance-retention` — what the credentials could
//! then do is delete the version. Refused → pass; accepted → "retention
//! can be bypassed with these credentials" and the date is put back at
//! once. COMPLIANCE retention cannot be shortened by anyone and passes.
//!
//! On a local repository every pack file and the snapshot file of each
//! baseline must be read-only (see [`crate::read_only`]); the immutable
//! attribute is reported, and required of all once any has it.
//! Decision 0029.

use std::collections::BTreeSet;

use jiff::Timestamp;
use rustic_core::repofile::SnapshotFile;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::lock::{Mode, RepoLock};
use crate::object_lock::S3;
use crate::read_only::{self, LocalProtected};
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet};
use crate::tiers::{RetainMode, Tier};

/// How many packs of each baseline the S3 check attacks.
const SAMPLE_PACKS: usize = 3;

/// What one object (S3) or file (local) showed.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// The key (`data/ab/ab…`) relative to the repository.
    pub key: String,
    /// Whether it held.
    pub ok: bool,
    /// What was found or what the store did, in words.
    pub outcome: String,
}

/// The result of `verify --immutability`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `s3` or `local`.
    pub store: String,
    /// The baselines checked.
    pub sets: Vec<String>,
    /// Every object or file checked.
    pub checked: Vec<Checked>,
    /// Remarks that are not failures (what is not protected against).
    pub notes: Vec<String>,
}

impl Report {
    /// Whether every object held.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.checked.iter().all(|c| c.ok)
    }

    /// The objects that did not hold.
    pub fn failures(&self) -> impl Iterator<Item = &Checked> {
        self.checked.iter().filter(|c| !c.ok)
    }
}

/// The baselines (immaculate and sacred sets) of the stack, or the one
/// named; refused when the named set is not a baseline.
fn baselines(
    repo: &repository::OpenRepo,
    stack: &str,
    name: Option<&str>,
) -> Result<Vec<(BackupSet, SnapshotFile)>> {
    let is_baseline = |b: &BackupSet| matches!(b.tier, Tier::Immaculate | Tier::Sacred);
    let chosen: Vec<_> = match name {
        Some(n) => {
            let (b, s) = sets::find(repo, stack, n)?;
            if !is_baseline(&b) {
                return Err(Error::Refused(format!(
                    "backup set `{}` is in tier {}, which is not kept immutable; only immaculate and sacred sets are",
                    b.name, b.tier
                )));
            }
            vec![(b, s)]
        }
        None => sets::list(repo, stack)?
            .into_iter()
            .filter(|(b, _)| is_baseline(b))
            .collect(),
    };
    if chosen.is_empty() {
        return Err(Error::NotFound("an immaculate or sacred set".into()));
    }
    Ok(chosen)
}

/// `stack-backup verify --immutability [NAME]`. Holds a shared lock (it
/// writes no object; at most a retention date is moved by a second and
/// back). A repository neither local nor on S3 with credentials is
/// a usage error. The caller turns a report that is not ok into exit 3.
pub fn check(cfg: &Config, env: &Env, name: Option<&str>) -> Result<Report> {
    if cfg.repository.as_of.is_some() {
        return Err(Error::Usage(
            "--immutability checks the repository as it is now; it does not take --as-of".into(),
        ));
    }
    let location = Location::of(cfg);
    let s3 = S3::for_config(cfg)?;
    let root = match &location {
        Location::Local(p) => Some(p.clone()),
        Location::Remote(_) if s3.is_some() => None,
        Location::Remote(_) => {
            return Err(Error::Usage(format!(
                "--immutability can check a local repository or one on S3 with credentials; {location} is neither"
            )))
        }
    };
    let _lock = RepoLock::acquire(cfg, env, Mode::Shared, "stack-backup verify --immutability")?;
    let repo = repository::open_from(cfg, env)?;
    let chosen = baselines(&repo, &cfg.stack.name.0, name)?;
    let repo = repo.to_indexed().map_err(|e| Error::Repository {
        location: location.to_string(),
        message: format!("reading the index: {}", e.display_log()),
    })?;
    let sets = chosen.iter().map(|(b, _)| b.name.clone()).collect();
    if let Some(root) = root {
        let mut checked = Vec::new();
        let mut seen = BTreeSet::new();
        for (_, snap) in &chosen {
            let (files, _) = read_only::set_files(&root, &repo, snap)?;
            for f in files {
                if seen.insert(f.clone()) {
                    checked.push(local_file(&root, &f));
                }
            }
        }
        let immutable = checked.iter().filter(|(_, i)| *i).count();
        let mut notes = vec![
            "root on this host can make any file writable again; a copy elsewhere (`stack-backup copy`) is what survives the host".to_string(),
        ];
        if immutable == 0 {
            notes.push(
                "read-only files can still be deleted by their directory's owner; `stack-backup immaculate protect --chattr` makes them immutable where the filesystem supports it"
                    .into(),
            );
        } else {
            // Once the attribute was set, a file without it was cleared
            // by someone (or is a new baseline not yet protected).
            for (c, _) in checked.iter_mut().filter(|(_, i)| !*i) {
                if c.ok {
                    c.ok = false;
                    c.outcome.push_str(", but not immutable while other files of the baselines are (`chattr -i` was run on it, or `immaculate protect --chattr` was not run since)");
                }
            }
        }
        return Ok(Report {
            store: "local".into(),
            sets,
            checked: checked.into_iter().map(|(c, _)| c).collect(),
            notes,
        });
    }
    let s3 = s3.expect("checked above");
    let mut keys = Vec::new();
    for (_, snap) in &chosen {
        for k in sample(&repo, snap)? {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let checked = keys.iter().map(|k| attack(&s3, k)).collect::<Result<_>>()?;
    Ok(Report {
        store: "s3".into(),
        sets,
        checked,
        notes: vec![
            "COMPLIANCE retention cannot be shortened or removed by anyone, the bucket's owner included; GOVERNANCE can be by credentials with s3:BypassGovernanceRetention, which this check tries".into(),
            "the account's root user can still close the account, and the bucket's lifecycle rules can still add delete markers (the retained versions stay)".into(),
        ],
    })
}

/// The keys of `snap` the S3 check attacks: the snapshot file, one index
/// file that lists its packs, and up to [`SAMPLE_PACKS`] packs spread over
/// its (sorted) packs.
fn sample<S: rustic_core::IndexedFull>(
    repo: &rustic_core::Repository<S>,
    snap: &SnapshotFile,
) -> Result<Vec<String>> {
    let (all, packs) = crate::object_lock::set_objects(repo, snap)?;
    let mut out = Vec::new();
    out.push(format!("snapshots/{}", &*snap.id.to_hex()));
    if let Some(i) = all.iter().find(|k| k.starts_with("index/")) {
        out.push(i.clone());
    }
    let pack_keys: Vec<&String> = all.iter().filter(|k| k.starts_with("data/")).collect();
    debug_assert_eq!(pack_keys.len(), packs);
    let n = pack_keys.len();
    let picks: BTreeSet<usize> = (0..SAMPLE_PACKS.min(n))
        .map(|i| i * n / SAMPLE_PACKS.min(n).max(1))
        .collect();
    out.extend(picks.into_iter().map(|i| pack_keys[i].clone()));
    Ok(out)
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn failed(key: &str, outcome: String) -> Checked {
    Checked {
        key: key.to_string(),
        ok: false,
        outcome,
    }
}

/// How close to its end a retention is reported "expiring" and left
/// alone: shortening it by a second to test the bypass would be harmless,
/// but a date this near means the protection is about to lapse anyway.
const EXPIRING: jiff::SignedDuration = jiff::SignedDuration::from_secs(3600);

/// Checks the current version of `key` with the configured credentials;
/// see the module's documentation. Never deletes or writes an object: the
/// only change it may make is a retention date one second earlier, put
/// back at once. Errors are transport failures, not verdicts.
fn attack(s3: &S3, key: &str) -> Result<Checked> {
    let Some(head) = s3.head(key)? else {
        return Ok(failed(
            key,
            "missing: the object has no current version".into(),
        ));
    };
    let now = Timestamp::now();
    let (mode, until) = match head.retention.clone() {
        Some((m, u)) if u > now => (m, u),
        Some((_, u)) => {
            return Ok(failed(
                key,
                format!("not protected: its retention ended at {u} (not touched); `immaculate verify` extends it"),
            ))
        }
        None => {
            return Ok(failed(
                key,
                "not protected: it has no retention date (not touched)".into(),
            ))
        }
    };
    let Some(version) = head.version_id else {
        return Ok(failed(
            key,
            "not protected: the bucket keeps no versions of it (not touched)".into(),
        ));
    };
    if until.duration_since(now) < EXPIRING {
        return Ok(failed(
            key,
            format!("expiring: its retention ends at {until}, within the hour (not touched); `immaculate verify` extends it"),
        ));
    }
    // The retained version's content against its name (restic names every
    // file by the SHA-256 of its stored bytes).
    let bytes = s3.get_version(key, &version, None)?;
    let id = key.rsplit('/').next().unwrap_or(key);
    if sha256(&bytes) != id {
        return Ok(failed(
            key,
            format!(
                "version {version}'s content does not match its name (SHA-256 {})",
                sha256(&bytes)
            ),
        ));
    }
    if mode.eq_ignore_ascii_case("COMPLIANCE") {
        return Ok(Checked {
            key: key.to_string(),
            ok: true,
            outcome: format!("COMPLIANCE retention until {until}, which no credentials can shorten; content intact"),
        });
    }
    // GOVERNANCE: what credentials with s3:BypassGovernanceRetention could
    // do, tried without destroying anything: shorten the retention by one
    // second. A store that accepts would as well accept a versioned delete.
    let whole = Timestamp::from_second(until.as_second()).unwrap_or(until);
    let earlier = whole - jiff::SignedDuration::from_secs(1);
    let r = s3.put_retention_bypassing(key, &version, RetainMode::Governance, earlier)?;
    if !(200..300).contains(&r.status) {
        return Ok(Checked {
            key: key.to_string(),
            ok: true,
            outcome: format!("shortening the GOVERNANCE retention (until {until}) with the bypass was refused; content intact"),
        });
    }
    // Put back, rounded up to the second so it is never earlier than it was.
    let back = if whole < until {
        whole + jiff::SignedDuration::from_secs(1)
    } else {
        whole
    };
    let restored = s3.put_retention_bypassing(key, &version, RetainMode::Governance, back);
    let restored = matches!(restored, Ok(r) if (200..300).contains(&r.status));
    Ok(failed(
        key,
        format!(
            "retention can be bypassed with these credentials: the store ALLOWED shortening version {version}'s GOVERNANCE retention (until {until}), so it would allow deleting it{}",
            if restored {
                "; the original date was put back"
            } else {
                "; putting the original date back FAILED: run `stack-backup immaculate verify` now"
            }
        ),
    ))
}

/// What `f` showed, and whether it is immutable.
fn local_file(root: &std::path::Path, f: &std::path::Path) -> (Checked, bool) {
    let key = f
        .strip_prefix(root)
        .unwrap_or(f)
        .to_string_lossy()
        .into_owned();
    match read_only::attrs(f) {
        Err(e) => (
            failed(&key, format!("missing or unreadable: {}", e.detail())),
            false,
        ),
        Ok(a) if !a.read_only && a.immutable != Some(true) => (
            failed(
                &key,
                "writable: not read-only nor immutable (`stack-backup immaculate protect` makes it read-only)".into(),
            ),
            false,
        ),
        Ok(a) => (
            Checked {
                key,
                ok: true,
                outcome: match a.immutable {
                    Some(true) => "immutable".into(),
                    Some(false) => "read-only".into(),
                    None => "read-only (the filesystem has no immutable attribute)".into(),
                },
            },
            a.immutable == Some(true),
        ),
    }
}

/// `stack-backup immaculate protect [NAME] [--chattr]`: makes the pack
/// files and snapshot files of the baselines (immaculate and sacred sets;
/// the one named) read-only again, and immutable with `chattr`. Only for a
/// local repository (usage error otherwise: S3 baselines are protected by
/// Object Lock). Never makes anything writable.
pub fn protect(
    cfg: &Config,
    env: &Env,
    name: Option<&str>,
    chattr: bool,
) -> Result<Vec<(String, LocalProtected)>> {
    let Location::Local(root) = Location::of(cfg) else {
        return Err(Error::Usage(
            "`immaculate protect` is for a local repository; on S3, `[tiers] immaculate-retain` protects baselines with Object Lock".into(),
        ));
    };
    let _lock = RepoLock::acquire(cfg, env, Mode::Shared, "stack-backup immaculate protect")?;
    let repo = repository::open_from(cfg, env)?;
    let chosen = baselines(&repo, &cfg.stack.name.0, name)?;
    let repo = repo.to_indexed().map_err(|e| Error::Repository {
        location: root.display().to_string(),
        message: format!("reading the index: {}", e.display_log()),
    })?;
    chosen
        .iter()
        .map(|(b, s)| Ok((b.name.clone(), read_only::protect(&root, &repo, s, chattr)?)))
        .collect()
}

/// After an immaculate or sacred set was written: its files made read-only
/// when the repository is local; `None` otherwise. Never an error: the set
/// is written and whole by then, so a failure to protect it is a warning
/// (the second value) naming `immaculate protect`, not a failed command.
pub fn protect_new<S: rustic_core::IndexedFull>(
    cfg: &Config,
    repo: &rustic_core::Repository<S>,
    snap: &SnapshotFile,
) -> (Option<LocalProtected>, Option<String>) {
    match Location::of(cfg) {
        Location::Local(root) => match read_only::protect(&root, repo, snap, false) {
            Ok(p) => (Some(p), None),
            Err(e) => (
                None,
                Some(format!(
                    "the set was written, but making its files read-only failed ({}); run `stack-backup immaculate protect`",
                    e.detail()
                )),
            ),
        },
        Location::Remote(_) => (None, None),
    }
}
