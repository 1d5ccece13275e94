//! `import DIR`: stores a backup directory as a backup set (tier
//! `backups`), after every checksum in its `CHECKSUM.sha256` matched.
//!
//! Two layouts are read:
//!
//! - an `export` of stack-backup (it has `stack-backup/manifest.json`): the
//!   artifacts are stored back at their original paths, decompressed, and
//!   must equal the original SHA-256s: the set is the exported one, and
//!   restores like it;
//! - a legacy shell-script directory (`database/dump.sql.gz`,
//!   `docker/images/*.tar.gz`, `git/HEAD_COMMIT`, `MANIFEST.md`,
//!   `CHECKSUM.sha256`): stored file by file as it is. Such a set is kept and
//!   verified like any other, but restored by hand (`export` it and follow
//!   its MANIFEST.md); `restore` refuses it with that advice.
//!
//! Nothing is stored unless every listed file matched; files the checksum
//! list does not name are not imported (and are reported).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustic_core::repofile::SnapshotFile;
use rustic_core::{BackupOptions, ParentOptions, SnapshotOptions};
use serde::Serialize;

use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::ledger::{sha256_hex, Ledger, Outcome};
use crate::lock::{Mode, RepoLock};
use crate::manifest::{self, ArtifactRecord, Imported, Manifest};
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet, Summary};
use crate::source::{Artifact, Content, Entry, StackSource};
use crate::tags::SetTags;
use crate::tiers::Tier;
use crate::verify;

/// What `import` stored.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The new set.
    pub set: BackupSet,
    /// `export` or `legacy`.
    pub layout: String,
    /// Files checked against CHECKSUM.sha256.
    pub checked: usize,
    /// Files in the directory that CHECKSUM.sha256 does not list (not imported).
    pub unlisted: Vec<String>,
}

/// Every regular file under `dir`, relative, `/`-separated.
fn walk(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io("reading", &d, e))? {
            let e = e.map_err(|e| Error::io("reading", &d, e))?;
            let ft = e
                .file_type()
                .map_err(|er| Error::io("reading", e.path(), er))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap_or(&e.path())
                    .to_path_buf();
                out.push(rel.to_string_lossy().to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks every file `CHECKSUM.sha256` lists; the first mismatch or missing
/// file is a verification error naming it.
fn check_all(dir: &Path, sums: &BTreeMap<String, String>) -> Result<()> {
    for (p, want) in sums {
        if !crate::validate::is_safe_relative(p) {
            return Err(Error::Verification(format!(
                "CHECKSUM.sha256 names `{p}`, outside the directory; refused"
            )));
        }
        let f = dir.join(p);
        let (got, _) = std::fs::File::open(&f)
            .and_then(|mut r| verify::sha256_of(&mut r))
            .map_err(|e| {
                Error::Verification(format!(
                    "{p}: listed in CHECKSUM.sha256 but cannot be read: {e}; nothing was imported"
                ))
            })?;
        if &got != want {
            return Err(Error::Verification(format!(
                "{p}: checksum mismatch (CHECKSUM.sha256 says {want}, the file is {got}); nothing was imported"
            )));
        }
    }
    Ok(())
}

/// Imports `dir` as a new set named `name` (default: the exported set's
/// name when free, else `imported-<time>`). Holds the repository lock.
pub fn import(cfg: &Config, env: &Env, dir: &Path, name: Option<&str>) -> Result<ImportReport> {
    let sum_path = dir.join("CHECKSUM.sha256");
    let (sums, unlisted) = read_listing(dir, &sum_path)?;

    let stack = cfg.stack.name.0.clone();
    let _lock = RepoLock::acquire(cfg, env, Mode::Shared, "stack-backup import")?;
    let repo = repository::open_from(cfg, env)?;
    let existing = sets::list(&repo, &stack)?;
    let taken = |n: &str| existing.iter().any(|(b, _)| b.name == n);
    let exported = read_exported(dir, &sums)?;
    let now = jiff::Timestamp::now();
    let name = match (name, &exported) {
        (Some(n), _) => n.to_string(),
        (None, Some(m)) if !taken(&m.name) && crate::config::validate_name(&m.name).is_ok() => {
            m.name.clone()
        }
        (None, _) => format!("imported-{}", crate::backup::generated_name()),
    };
    crate::config::validate_name(&name).map_err(|m| Error::Usage(format!("--name: {m}")))?;
    if taken(&name) {
        return Err(Error::Refused(format!(
            "a backup set named `{name}` already exists; choose another --name"
        )));
    }
    let imported = |layout: &str, original: Option<String>| Imported {
        layout: layout.into(),
        source: dir.display().to_string(),
        time: now.to_string(),
        original_name: original,
    };

    let staged = match exported {
        Some(m) => from_export(
            cfg,
            dir,
            m,
            &sums,
            &unlisted,
            &name,
            imported("export", None),
        )?,
        None => from_legacy(
            dir,
            &sums,
            &sum_path,
            &stack,
            &name,
            now,
            imported("legacy", None),
        ),
    };
    let Staged {
        manifest: m,
        mut checksums,
        mut entries,
        expected,
        layout,
    } = staged;
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::Usage(format!("manifest: {e}")))?;
    let md = m.to_markdown().into_bytes();
    checksums.insert(manifest::JSON_PATH.into(), sha256_hex(&json));
    checksums.insert(manifest::MD_PATH.into(), sha256_hex(&md));
    let sum_text =
        manifest::render_checksums(checksums.iter().map(|(p, s)| (p.as_str(), s.as_str())));
    entries.push(bytes_entry(manifest::JSON_PATH, json));
    entries.push(bytes_entry(manifest::MD_PATH, md));
    entries.push(bytes_entry(manifest::CHECKSUM_PATH, sum_text.into_bytes()));

    // One snapshot, tagged incomplete until every file is known to be in it.
    let location = Location::of(cfg).to_string();
    let repo_err = |what: &str, e: Box<rustic_core::RusticError>| Error::Repository {
        location: location.clone(),
        message: format!("{what}: {}", e.display_log()),
    };
    let repo = repo
        .to_indexed_ids()
        .map_err(|e| repo_err("reading the index", e))?;
    let ledger = Arc::new(Ledger::new(None));
    let source = StackSource::new(entries, ledger.clone());
    let mut opts = BackupOptions::default();
    opts.parent_opts = ParentOptions::default().force(true);
    let snap = SnapshotOptions::default()
        .add_tags(&SetTags::incomplete(&stack).to_vec().join(","))
        .and_then(|o| o.to_snapshot())
        .and_then(|s| repo.archive(&opts, &source, s, &[PathBuf::from("/")]))
        .map_err(|e| repo_err("storing the directory", e))?;
    let problems = stored_problems(&source, &ledger, &expected);
    if !problems.is_empty() {
        if let Err(e) = repo.delete_snapshots(&[snap.id]) {
            log::error!(
                "could not delete the incomplete import: {}",
                e.display_log()
            );
        }
        return Err(Error::Verification(format!(
            "import failed, nothing was stored: {}",
            problems.join("; ")
        )));
    }
    let summary = Summary {
        components: m.components.keys().map(ToString::to_string).collect(),
        git_commit: m.git.as_ref().map(|g| g.commit.clone()),
        ..Summary::default()
    };
    let mut done: SnapshotFile = snap.clone();
    done.tags = SetTags::set(&stack, Tier::Backups, &name).to_list();
    done.description = Some(serde_json::to_string(&summary).unwrap_or_default());
    done.label.clone_from(&name);
    // A lock lost meanwhile (decision 0025): its packs may be gone under
    // another host's prune, so no set may reference them.
    if let Err(e) = crate::system::fault::point("import-stored")
        .and_then(|()| crate::repo::restic_lock::still_held())
    {
        if let Err(d) = repo.delete_snapshots(&[snap.id]) {
            log::error!(
                "could not delete the incomplete import (the next backup removes it): {}",
                d.display_log()
            );
        }
        return Err(e);
    }
    repo.save_snapshots(vec![done])
        .map_err(|e| repo_err("saving the imported set", e))?;
    repo.delete_snapshots(&[snap.id])
        .map_err(|e| repo_err("removing the incomplete snapshot", e))?;
    let (set, _) = sets::find(&repo, &stack, &name)?;
    Ok(ImportReport {
        set,
        layout: layout.into(),
        checked: sums.len(),
        unlisted,
    })
}

fn bytes_entry(path: &str, b: Vec<u8>) -> Entry {
    Entry::File(Artifact {
        path: path.to_string(),
        component: "manifest".into(),
        content: Content::Bytes(Arc::new(b)),
        reuse_meta: None,
    })
}

/// What an import stores: the set's manifest and checksums, the entries to
/// archive, and the SHA-256 each stored file must have.
struct Staged {
    manifest: Manifest,
    checksums: BTreeMap<String, String>,
    entries: Vec<Entry>,
    /// Set path → SHA-256.
    expected: BTreeMap<String, String>,
    layout: &'static str,
}

/// A directory `export` wrote: the original artifacts under their export
/// paths (the component kinds map them back), trees as directories. Its
/// manifest is input: ids must agree with their records.
fn from_export(
    cfg: &Config,
    dir: &Path,
    mut m: Manifest,
    sums: &BTreeMap<String, String>,
    unlisted: &[String],
    name: &str,
    mut imported: Imported,
) -> Result<Staged> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let set_sums_path = dir.join(manifest::CHECKSUM_PATH);
    let set_sums = manifest::parse_checksums(
        &std::fs::read_to_string(&set_sums_path)
            .map_err(|e| Error::io("reading", &set_sums_path, e))?,
    );
    // The manifest is input: checked against this config before it
    // decides which files are stored and what a restore of it touches.
    crate::validate::check_against(
        &dir.display().to_string(),
        &m,
        set_sums.keys().map(String::as_str),
        cfg,
        &[],
    )?;
    for a in &m.artifacts {
        let (out, gz) = crate::export::export_path(&m, &a.path, &a.component);
        if !sums.contains_key(&out) {
            return Err(Error::Verification(format!(
                "{out} (artifact {}) is missing from the directory or from CHECKSUM.sha256",
                a.path
            )));
        }
        let p = dir.join(&out);
        entries.push(Entry::File(Artifact {
            path: a.path.clone(),
            component: a.component.clone(),
            content: if gz {
                Content::Gunzip(p)
            } else {
                Content::LocalFile(p)
            },
            reuse_meta: None,
        }));
        expected.insert(a.path.clone(), a.sha256.clone());
    }
    for (c, rec) in &m.components {
        if let Some(tree) = rec.kind().tree(rec) {
            let prefix = format!("{tree}/");
            if let Some(u) = unlisted.iter().find(|u| u.starts_with(&prefix)) {
                return Err(Error::Verification(format!(
                    "{u} (in {c}) is not listed in CHECKSUM.sha256; refused"
                )));
            }
            real_dirs_down(dir, tree)?;
            entries.push(Entry::Tree {
                component: c.to_string(),
                root: dir.join(tree),
                target: tree.to_string(),
            });
        }
    }
    let original = m.name.clone();
    m.name = name.to_string();
    m.tier = Tier::Backups;
    m.restore_command = format!("stack-backup restore {name}");
    imported.original_name = Some(original);
    m.imported = Some(imported);
    let listed_config = set_sums.get(manifest::CONFIG_PATH).cloned();
    let mut checksums: BTreeMap<String, String> = set_sums
        .into_iter()
        .filter(|(p, _)| {
            !matches!(
                p.as_str(),
                manifest::JSON_PATH | manifest::MD_PATH | manifest::CONFIG_PATH
            )
        })
        .collect();
    // Read once, without following a symlink, and stored only as checked.
    let cfg_path = dir.join(manifest::CONFIG_PATH);
    let toml = read_nofollow(&cfg_path)?;
    let toml_sum = sha256_hex(&toml);
    if let Some(want) = listed_config {
        if want != toml_sum {
            return Err(Error::Verification(format!(
                "{} does not match its checksum in CHECKSUM.sha256; refused",
                manifest::CONFIG_PATH
            )));
        }
    }
    checksums.insert(manifest::CONFIG_PATH.into(), toml_sum);
    entries.push(bytes_entry(manifest::CONFIG_PATH, toml));
    Ok(Staged {
        manifest: m,
        checksums,
        entries,
        expected,
        layout: "export",
    })
}

/// A shell-script backup directory: stored file by file, restored by hand.
fn from_legacy(
    dir: &Path,
    sums: &BTreeMap<String, String>,
    sum_path: &Path,
    stack: &str,
    name: &str,
    now: jiff::Timestamp,
    imported: Imported,
) -> Staged {
    let mut entries: Vec<Entry> = Vec::new();
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let mut artifacts = Vec::new();
    for (p, sha) in sums {
        let size = std::fs::metadata(dir.join(p)).map_or(0, |m| m.len());
        entries.push(Entry::File(Artifact {
            path: p.clone(),
            component: "legacy".into(),
            content: Content::LocalFile(dir.join(p)),
            reuse_meta: None,
        }));
        expected.insert(p.clone(), sha.clone());
        artifacts.push(ArtifactRecord {
            path: p.clone(),
            component: "legacy".into(),
            size,
            sha256: sha.clone(),
            reused: false,
        });
    }
    let commit = std::fs::read_to_string(dir.join("git/HEAD_COMMIT"))
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| c.len() >= 7 && c.chars().all(|x| x.is_ascii_hexdigit()));
    let m = Manifest {
        schema: manifest::SCHEMA,
        tool: format!("stack-backup {}", env!("CARGO_PKG_VERSION")),
        stack: stack.to_string(),
        name: name.to_string(),
        tier: Tier::Backups,
        created: std::fs::metadata(sum_path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .unwrap_or(now)
            .to_string(),
        host: String::new(),
        parent: None,
        git: commit.map(|commit| crate::git::GitHead {
            commit,
            branch: None,
            dirty: false,
            untracked: 0,
            status: String::new(),
        }),
        components: BTreeMap::new(),
        artifacts,
        restore_command: format!(
            "stack-backup export {name} DIR, then follow DIR/legacy/MANIFEST.md"
        ),
        imported: Some(imported),
    };
    Staged {
        manifest: m,
        checksums: sums.clone(),
        entries,
        expected,
        layout: "legacy",
    }
}

/// The directory's `CHECKSUM.sha256` (every file checked against it) and
/// the files it does not list (reported, never imported).
fn read_listing(dir: &Path, sum_path: &Path) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let text = std::fs::read_to_string(sum_path).map_err(|e| {
        Error::Refused(format!(
            "{} cannot be read ({e}); import needs a directory with CHECKSUM.sha256",
            sum_path.display()
        ))
    })?;
    let sums = manifest::parse_checksums(&text);
    if sums.is_empty() {
        return Err(Error::Refused(format!(
            "{} lists no file",
            sum_path.display()
        )));
    }
    let files = walk(dir)?;
    // Only regular files reached without a symlink: a listed name that is a
    // symlink (or below one) would store a file from elsewhere on the host.
    if let Some(p) = sums
        .keys()
        .find(|p| files.binary_search(p).is_err() && crate::validate::is_safe_relative(p))
    {
        return Err(Error::Verification(format!(
            "{p}: listed in CHECKSUM.sha256 but not a regular file of the directory (missing, or a symlink); nothing was imported"
        )));
    }
    check_all(dir, &sums)?;
    let unlisted: Vec<String> = files
        .iter()
        .filter(|f| f.as_str() != "CHECKSUM.sha256" && !sums.contains_key(*f))
        .cloned()
        .collect();
    for u in &unlisted {
        log::warn!("{u}: not listed in CHECKSUM.sha256, not imported");
    }

    Ok((sums, unlisted))
}

/// The manifest of a directory `export` wrote, when there is one.
fn read_exported(dir: &Path, sums: &BTreeMap<String, String>) -> Result<Option<Manifest>> {
    let own = dir.join(manifest::JSON_PATH);
    Ok(if own.exists() {
        if !sums.contains_key(manifest::JSON_PATH) {
            return Err(Error::Verification(format!(
                "{} is not listed in CHECKSUM.sha256; refused",
                manifest::JSON_PATH
            )));
        }
        let b = std::fs::read(&own).map_err(|e| Error::io("reading", &own, e))?;
        Some(serde_json::from_slice(&b).map_err(|e| {
            Error::Verification(format!(
                "{}: not a stack-backup manifest: {e}",
                own.display()
            ))
        })?)
    } else {
        None
    })
}

/// Every stored file that was not read whole or does not hold what the
/// set recorded.
fn stored_problems(
    source: &StackSource,
    ledger: &Ledger,
    expected: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for y in source.take_yielded().iter().filter(|y| y.is_file) {
        match ledger.get(&y.path) {
            Some(Outcome::Done { sha256, .. }) => {
                if let Some(want) = expected.get(&y.path) {
                    let sha256 = hex::encode(sha256);
                    if want != &sha256 {
                        problems.push(format!(
                            "{}: stored content has SHA-256 {sha256}, the set recorded {want}",
                            y.path
                        ));
                    }
                }
            }
            Some(Outcome::Failed(msg)) => problems.push(format!("{}: {msg}", y.path)),
            None => problems.push(format!("{}: not read", y.path)),
        }
    }
    problems
}

/// Every directory from `dir` down to `dir/tree` is a real directory (no
/// symlink): the walk that archives the tree would follow a symlinked root
/// and store whatever it points to (`/root`) as the component.
fn real_dirs_down(dir: &Path, tree: &str) -> Result<()> {
    let mut p = dir.to_path_buf();
    for part in Path::new(tree).components() {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(Error::Verification(format!(
                    "{} is not a directory (a symlink or a file); refused",
                    p.display()
                )))
            }
            Err(e) => return Err(Error::io("reading", &p, e)),
        }
    }
    Ok(())
}

/// The bytes of `path` (empty when it does not exist), refused when it is
/// a symlink.
fn read_nofollow(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Error::Verification(format!(
                "{} is a symlink; refused",
                path.display()
            )))
        }
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Err(Error::Verification(format!(
            "{} is not a regular file; refused",
            path.display()
        )));
    }
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .map_err(|e| Error::io("reading", path, e))?;
    Ok(out)
}
