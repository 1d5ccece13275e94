//! `export NAME DIR`: a backup set as a plain directory that a person can
//! check with `sha256sum -c CHECKSUM.sha256` and restore by following its
//! MANIFEST.md, without stack-backup or restic.
//!
//! ```text
//! DIR/MANIFEST.md                   how to restore by hand, component by component
//! DIR/CHECKSUM.sha256               every file below, sha256sum format
//! DIR/database/<name>.dump          pg_dump custom format (pg_restore)
//! DIR/database/<name>.globals.sql   roles (psql)
//! DIR/database/<name>.mysql.*       SQL dump, or schema + rows + load.sql
//! DIR/redis/dump.rdb                (redis/<name>.rdb with several instances)
//! DIR/docker/images/<ref>.tar.gz    docker save, gzip (gunzip -c | docker load)
//! DIR/docker/volumes/<volume>/…     the volume's files, owners and modes
//! DIR/paths/<name>/…                the directory's files, owners and modes
//! DIR/git/HEAD_COMMIT, BRANCH, …
//! DIR/stack-backup/                 the set's manifest.json, CHECKSUM.sha256, config
//! ```
//!
//! Every artifact is checked against the set's SHA-256 while it is written;
//! a mismatch stops the export (verification failure) and the directory is
//! removed again. `import` reads such a directory back into an identical set.
//!
//! An export holds dumps, RDB files and volumes: it is for root only. `DIR`
//! and every directory export creates are mode 0700, every file it writes
//! 0600; trees keep their owners and modes (for `cp -a` back) but lose
//! setuid/setgid bits, and device nodes, FIFOs and sockets are left out
//! unless `keep_special` (decision 0015). The set's manifest is checked
//! first ([`crate::validate::check_paths`]): no path it names leaves `DIR`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::components::ComponentId;
use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::manifest::{self, Manifest};
use crate::repository;
use crate::sets::{self, BackupSet};
use crate::{disk, verify};

/// Where an artifact of the set goes in an export, and whether it is
/// gzip-compressed there (the component's kind decides). The same mapping
/// is used by `import`.
#[must_use]
pub fn export_path(m: &Manifest, set_path: &str, component: &str) -> (String, bool) {
    if component == "legacy" && set_path == "MANIFEST.md" {
        return ("legacy/MANIFEST.md".into(), false);
    }
    match ComponentId::parse(component) {
        Ok(id) => id.kind().export_path(m, &id, set_path),
        Err(_) => (set_path.to_string(), false),
    }
}

/// What `export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    /// The set.
    pub set: BackupSet,
    /// The directory.
    pub dir: PathBuf,
    /// Files written (CHECKSUM.sha256 lists each).
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// A writer that hashes what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W: Write>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hash: Sha256::new(),
        n: 0,
    }
}

/// Writes set `name` into `dir` (which must not exist or be empty). Reads
/// the repository only; on any failure the partly written directory is
/// removed.
pub fn export(
    cfg: &Config,
    env: &Env,
    name: &str,
    dir: &Path,
    keep_special: bool,
) -> Result<Exported> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| Error::io("reading", dir, e))?
            .next()
            .is_some()
    {
        return Err(Error::Refused(format!(
            "{} exists and is not empty; export writes into a new or empty directory",
            dir.display()
        )));
    }
    let repo = repository::open_indexed(cfg, env)?;
    let (set, snap) = sets::find(&repo, &cfg.stack.name.0, name)?;
    let m: Manifest = serde_json::from_slice(&sets::read_file(&repo, &snap, manifest::JSON_PATH)?)
        .map_err(|e| Error::Verification(format!("{}: manifest.json: {e}", set.name)))?;
    let set_sums = manifest::parse_checksums(&String::from_utf8_lossy(&sets::read_file(
        &repo,
        &snap,
        manifest::CHECKSUM_PATH,
    )?));
    // The manifest decides where files are written: nothing leaves `dir`.
    crate::validate::check_paths(
        &format!("set `{}`", set.name),
        &m,
        set_sums.keys().map(String::as_str),
    )?;
    let needed = set.size.unwrap_or(0);
    private_dir(dir)?;
    disk::ensure(dir, needed, cfg.min_free_space())?;
    let result = write_all(&repo, &set, &snap, &m, &set_sums, dir, keep_special);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn write_all(
    repo: &rustic_core::Repository<rustic_core::IndexedFullStatus>,
    set: &BackupSet,
    snap: &rustic_core::repofile::SnapshotFile,
    m: &Manifest,
    set_sums: &BTreeMap<String, String>,
    dir: &Path,
    keep_special: bool,
) -> Result<Exported> {
    let location = repo.name.clone();
    let mut sums: BTreeMap<String, String> = BTreeMap::new();
    let mut bytes = 0u64;
    let node_of = |path: &str| {
        repo.node_from_snapshot_and_path(snap, &format!("/{path}"))
            .map_err(|e| Error::Repository {
                location: location.clone(),
                message: format!("{path}: {}", e.display_log()),
            })
    };
    // Single-file artifacts, and the set's own manifest files.
    let mut files: Vec<(String, String)> = m
        .artifacts
        .iter()
        .map(|a| (a.path.clone(), a.component.clone()))
        .collect();
    for p in [
        manifest::JSON_PATH,
        manifest::CONFIG_PATH,
        manifest::MD_PATH,
    ] {
        // An imported legacy set has no stored config.
        if set_sums.contains_key(p) {
            files.push((p.to_string(), "manifest".into()));
        }
    }
    for (path, component) in &files {
        let (out, gz) = export_path(m, path, component);
        let target = dir.join(&out);
        if let Some(parent) = target.parent() {
            private_dir(parent)?;
        }
        let node = node_of(path)?;
        let file = private_file(&target)?;
        let mut outer = hashing(std::io::BufWriter::new(file));
        let raw_sha = if gz {
            let enc = flate2::write::GzEncoder::new(&mut outer, flate2::Compression::fast());
            let mut inner = hashing(enc);
            repo.dump(&node, &mut inner)
                .map_err(|e| Error::Repository {
                    location: location.clone(),
                    message: format!("reading {path}: {}", e.display_log()),
                })?;
            let sha = hex::encode(inner.hash.finalize());
            inner
                .inner
                .finish()
                .map_err(|e| Error::io("writing", &target, e))?;
            sha
        } else {
            repo.dump(&node, &mut outer)
                .map_err(|e| Error::Repository {
                    location: location.clone(),
                    message: format!("reading {path}: {}", e.display_log()),
                })?;
            String::new()
        };
        outer
            .flush()
            .map_err(|e| Error::io("writing", &target, e))?;
        let written = hex::encode(outer.hash.clone().finalize());
        let content_sha = if gz { raw_sha } else { written.clone() };
        if let Some(want) = set_sums.get(path) {
            if want != &content_sha {
                return Err(Error::Verification(format!(
                    "{path} does not match its checksum in set `{}` (expected {want}, read {content_sha}); export stopped",
                    set.name
                )));
            }
        }
        bytes += outer.n;
        sums.insert(out, written);
    }
    // The set's CHECKSUM.sha256, as stored (import checks artifacts with it).
    let stored = dir.join(manifest::CHECKSUM_PATH);
    let text = manifest::render_checksums(set_sums.iter().map(|(p, s)| (p.as_str(), s.as_str())));
    write_private(&stored, text.as_bytes())?;
    sums.insert(
        manifest::CHECKSUM_PATH.to_string(),
        crate::ledger::sha256_hex(text.as_bytes()),
    );
    // Directory trees: restored with owners and modes, then every file
    // hashed and checked against the set.
    for c in m.components.values() {
        let Some(tree) = c.kind().tree(c) else {
            continue;
        };
        let target = dir.join(tree);
        private_dir(&target)?;
        let node = node_of(tree)?;
        crate::components::tree::restore_node_into(repo, &node, &target).map_err(|m| {
            Error::Repository {
                location: location.clone(),
                message: format!("{tree}: {m}"),
            }
        })?;
        defuse_tree(&target, keep_special)?;
        let prefix = format!("{tree}/");
        for (p, want) in set_sums.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            let file = dir.join(p);
            let (got, n) = std::fs::File::open(&file)
                .and_then(|mut f| verify::sha256_of(&mut f))
                .map_err(|e| Error::io("reading exported", &file, e))?;
            if &got != want {
                return Err(Error::Verification(format!(
                    "{p} does not match its checksum in set `{}`; export stopped",
                    set.name
                )));
            }
            bytes += n;
            sums.insert(p.clone(), got);
        }
    }
    write_extras(m, dir, &mut sums)?;
    let md = export_markdown(m, set, &sums);
    let md_path = dir.join("MANIFEST.md");
    write_private(&md_path, md.as_bytes())?;
    sums.insert(
        "MANIFEST.md".into(),
        crate::ledger::sha256_hex(md.as_bytes()),
    );
    let text = manifest::render_checksums(sums.iter().map(|(p, s)| (p.as_str(), s.as_str())));
    let sum_path = dir.join("CHECKSUM.sha256");
    write_private(&sum_path, text.as_bytes())?;
    Ok(Exported {
        set: set.clone(),
        dir: dir.to_path_buf(),
        files: sums.len(),
        bytes,
    })
}

/// Files for the restore by hand that MANIFEST.md points at (a load
/// script): written by this program from the validated manifest, each at
/// a new path inside the export, and added to `sums`.
fn write_extras(m: &Manifest, dir: &Path, sums: &mut BTreeMap<String, String>) -> Result<()> {
    for (name, c) in &m.components {
        let path_of = |set_path: &str| export_path(m, set_path, name.as_str()).0;
        for (p, bytes) in c.kind().export_extras(m, c, &path_of) {
            if !crate::validate::is_safe_relative(&p) || sums.contains_key(&p) {
                return Err(Error::Verification(format!(
                    "{name}: the export file `{p}` is not a new path inside the export"
                )));
            }
            let file = dir.join(&p);
            if let Some(parent) = file.parent() {
                private_dir(parent)?;
            }
            write_private(&file, &bytes)?;
            sums.insert(p, crate::ledger::sha256_hex(&bytes));
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents inside the export with mode 0700
/// (an existing directory is set to 0700 too).
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("setting the mode of", dir, e))
}

/// A file of mode 0600, created or truncated, never through a symlink.
fn private_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("creating", path, e))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = private_file(path)?;
    f.write_all(bytes)
        .map_err(|e| Error::io("writing", path, e))
}

/// Clears setuid and setgid bits below `root` and removes device nodes,
/// FIFOs and sockets unless `keep_special`: an export must not give
/// whoever copies it a setuid binary or a device of this host. Symlinks
/// are neither followed nor changed.
fn defuse_tree(root: &Path, keep_special: bool) -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io("reading", &d, e))? {
            let e = e.map_err(|e| Error::io("reading", &d, e))?;
            let path = e.path();
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| Error::io("reading", &path, e))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                continue;
            }
            let special =
                ft.is_block_device() || ft.is_char_device() || ft.is_fifo() || ft.is_socket();
            if special && !keep_special {
                std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
                log::warn!(
                    "{}: a device node, FIFO or socket, left out of the export (--keep-special keeps it)",
                    path.display()
                );
                continue;
            }
            let mode = meta.permissions().mode();
            if mode & 0o6000 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o1777))
                    .map_err(|e| Error::io("setting the mode of", &path, e))?;
            }
            if ft.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// MANIFEST.md of an export: what is there and how to restore each part by
/// hand.
fn export_markdown(m: &Manifest, set: &BackupSet, sums: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Export of backup set `{}` of stack `{}`\n\nTaken {} on {}{}.\n",
        set.name,
        m.stack,
        m.created,
        m.host,
        m.git
            .as_ref()
            .map_or(String::new(), |g| format!(" at git commit {}", g.commit))
    );
    let _ = writeln!(
        s,
        "This directory needs neither stack-backup nor restic. First check it:\n\n    sha256sum -c CHECKSUM.sha256\n\nThen restore what you need, as below (stop the application first).\nWith stack-backup, `stack-backup import DIR` stores it as a backup set again.\n"
    );
    let export_of = |component: &str, set_path: &str| export_path(m, set_path, component).0;
    for (name, c) in &m.components {
        let _ = writeln!(s, "## {name}\n");
        let path_of = |set_path: &str| export_of(name.as_str(), set_path);
        let _ = writeln!(s, "{}", c.kind().export_howto(m, c, &path_of));
    }
    if let Some(i) = &m.imported {
        if i.layout == "legacy" {
            let _ = writeln!(
                s,
                "## Imported from a legacy backup directory\n\nFollow `legacy/MANIFEST.md`, the original instructions.\n"
            );
        }
    }
    let _ = writeln!(s, "## Files\n");
    for p in sums.keys() {
        let _ = writeln!(s, "- `{p}`");
    }
    s
}
