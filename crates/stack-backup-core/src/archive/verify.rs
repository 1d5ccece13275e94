//! Verification: reading a backup set back in full.
//!
//! [`verify_set`] walks the set's whole tree (every tree blob) and reads
//! every file (every data blob, decrypted and authenticated by the
//! repository format), comparing each file's SHA-256 with the set's
//! `CHECKSUM.sha256`. [`run`] adds the repository check of `rustic_core`
//! (index, packs, optionally every pack's data) for `stack-backup verify`.

use std::collections::BTreeMap;
use std::io::Write;

use rustic_core::repofile::{Node, NodeType, SnapshotFile};
use rustic_core::{CheckOptions, IndexedFullStatus, LsOptions, Repository};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::lock::{Mode, RepoLock};
use crate::manifest;
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet};
use crate::tiers::Tier;

type Indexed = Repository<IndexedFullStatus>;

/// At most this many problems are listed per set (the count is exact).
const MAX_LISTED: usize = 20;

/// A writer that only hashes.
struct HashSink(Sha256, u64);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a file node back from the repository: its SHA-256 (hex) and size.
pub fn hash_node(repo: &Indexed, node: &Node) -> std::result::Result<(String, u64), String> {
    let mut sink = HashSink(Sha256::new(), 0);
    repo.dump(node, &mut sink).map_err(|e| e.display_log())?;
    Ok((hex::encode(sink.0.finalize()), sink.1))
}

/// What reading one file node back gave: its SHA-256 (hex) and size, or why
/// it could not be read.
pub type NodeHash = std::result::Result<(String, u64), String>;

/// [`hash_node`] for each of `nodes`, read on two threads, the largest
/// first; results in the order of `nodes`. With `stop_early`, the nodes not
/// yet started when one fails are left unread (`None`); otherwise every
/// result is `Some`.
pub fn hash_nodes(repo: &Indexed, nodes: &[&Node], stop_early: bool) -> Vec<Option<NodeHash>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(nodes[i].meta.size));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let slots: Vec<std::sync::Mutex<Option<NodeHash>>> =
        nodes.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if stop_early && failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = hash_node(repo, nodes[i]);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *slots[i].lock().expect("result slot") = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().expect("result slot"))
        .collect()
}

/// How many file nodes a reader holds at once: with [`hash_drain`], the
/// memory of reading a set back does not grow with its number of files.
pub const BATCH: usize = 4096;

/// [`hash_nodes`] of a batch, which is left empty: each item's label with
/// its result, in the batch's order.
pub fn hash_drain<T>(
    repo: &Indexed,
    batch: &mut Vec<(T, Node)>,
    stop_early: bool,
) -> Vec<(T, Option<NodeHash>)> {
    let hashes = {
        let nodes: Vec<&Node> = batch.iter().map(|(_, n)| n).collect();
        hash_nodes(repo, &nodes, stop_early)
    };
    batch.drain(..).map(|(t, _)| t).zip(hashes).collect()
}

/// The SHA-256 (hex) and length of everything `r` yields.
pub fn sha256_of(r: &mut impl std::io::Read) -> std::io::Result<(String, u64)> {
    let mut sink = HashSink(Sha256::new(), 0);
    std::io::copy(r, &mut sink)?;
    Ok((hex::encode(sink.0.finalize()), sink.1))
}

/// The outcome of reading one set back.
#[derive(Debug, Clone, Serialize)]
pub struct SetReport {
    /// The set.
    pub set: BackupSet,
    /// Files read and checked.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Number of problems found.
    pub problem_count: usize,
    /// The first problems (at most 20).
    pub problems: Vec<String>,
}

impl SetReport {
    /// Whether every file was read and matched its checksum.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(p);
        }
    }
}

/// Reads `snap` back in full: every tree, every file, every SHA-256 in its
/// `CHECKSUM.sha256` (which must cover every file of the set). Never fails:
/// what cannot be read is a problem in the report.
pub fn verify_set(repo: &Indexed, set: &BackupSet, snap: &SnapshotFile) -> SetReport {
    let mut r = SetReport {
        set: set.clone(),
        files: 0,
        bytes: 0,
        problem_count: 0,
        problems: Vec::new(),
    };
    let mut want: BTreeMap<String, String> =
        match sets::read_file(repo, snap, manifest::CHECKSUM_PATH) {
            Ok(b) => manifest::parse_checksums(&String::from_utf8_lossy(&b)),
            Err(e) => {
                r.problem(format!("{}: cannot be read: {e}", manifest::CHECKSUM_PATH));
                BTreeMap::new()
            }
        };
    match sets::read_file(repo, snap, manifest::JSON_PATH)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<manifest::Manifest>(&b).map_err(|e| e.to_string()))
    {
        Ok(m) => {
            if let Err(e) = crate::validate::check_paths(
                &format!("set `{}`", set.name),
                &m,
                want.keys().map(String::as_str),
            ) {
                r.problem(e.to_string());
            }
        }
        Err(e) => r.problem(format!("{}: cannot be read: {e}", manifest::JSON_PATH)),
    }
    let mut root = Node::new_node(
        std::ffi::OsStr::new(""),
        NodeType::Dir,
        rustic_core::repofile::Metadata::default(),
    );
    root.subtree = Some(snap.tree);
    let walk = match repo.ls(&root, &LsOptions::default()) {
        Ok(w) => w,
        Err(e) => {
            r.problem(format!("the tree cannot be read: {}", e.display_log()));
            return r;
        }
    };
    let mut batch: Vec<(String, Node)> = Vec::new();
    let mut check = |r: &mut SetReport, batch: &mut Vec<(String, Node)>| {
        for (path, hash) in hash_drain(repo, batch, false) {
            match hash.expect("every node is read") {
                Err(e) => r.problem(format!("{path}: cannot be read: {e}")),
                Ok((got, n)) => {
                    r.files += 1;
                    r.bytes += n;
                    match want.remove(&path) {
                        None => r.problem(format!("{path}: not listed in CHECKSUM.sha256")),
                        Some(w) if w != got => r.problem(format!(
                            "{path}: SHA-256 mismatch (expected {w}, read {got})"
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
    };
    for item in walk {
        let (path, node) = match item {
            Ok(v) => v,
            Err(e) => {
                r.problem(format!("the tree cannot be read: {}", e.display_log()));
                return r;
            }
        };
        if !node.is_file() {
            continue;
        }
        let path = path.to_string_lossy().trim_start_matches('/').to_string();
        if path == manifest::CHECKSUM_PATH {
            continue;
        }
        batch.push((path, node));
        if batch.len() >= BATCH {
            check(&mut r, &mut batch);
        }
    }
    check(&mut r, &mut batch);
    for path in want.keys() {
        r.problem(format!(
            "{path}: listed in CHECKSUM.sha256 but missing from the set"
        ));
    }
    r
}

/// Which sets `verify` reads back.
#[derive(Debug, Clone)]
pub enum Which {
    /// One set (name, id prefix, `latest`).
    One(String),
    /// Every set of the stack.
    All,
}

/// The repository check and the sets read back.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether the pack data was read too (`--read-data`).
    pub read_data: bool,
    /// Errors the repository check found.
    pub repository_errors: Vec<String>,
    /// Warnings the repository check found.
    pub repository_warnings: Vec<String>,
    /// One report per set.
    pub sets: Vec<SetReport>,
}

impl Report {
    /// Whether everything checked out.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.repository_errors.is_empty() && self.sets.iter().all(SetReport::ok)
    }
}

/// `stack-backup verify`: checks the repository (structure, index, and with
/// `read_data` every pack), then reads back the chosen sets. Holds the
/// repository lock so that no prune runs meanwhile; changes nothing.
pub fn run(cfg: &Config, env: &Env, which: &Which, read_data: bool) -> Result<Report> {
    let _lock = RepoLock::acquire(cfg, env, Mode::Shared, "stack-backup verify")?;
    let repo = repository::open_from(cfg, env)?;
    let stack = &cfg.stack.name.0;
    let chosen = match which {
        Which::All => sets::list(&repo, stack)?,
        Which::One(n) => vec![sets::find(&repo, stack, n)?],
    };
    let check = repo
        .check(CheckOptions::default().read_data(read_data))
        .map_err(|e| Error::Repository {
            location: Location::of(cfg).to_string(),
            message: format!("checking the repository: {}", e.display_log()),
        })?;
    let mut repository_errors = Vec::new();
    let mut repository_warnings = Vec::new();
    for (level, e) in &check.0 {
        // `CheckErrorLevel` is not exported by rustic_core; anything not a
        // warning counts as an error.
        let text = e.to_string();
        if format!("{level:?}") == "Warn" {
            repository_warnings.push(text);
        } else if let Some(at) = cfg
            .repository
            .as_of
            .filter(|_| text.contains("not present"))
        {
            // As of a past time, packs of sets whose objects were not
            // retained may be gone while an index that was retained still
            // lists them; the chosen sets are read back blob by blob
            // below, so a pack they need cannot go unnoticed.
            repository_warnings.push(format!("as of {at}, not retained: {text}"));
        } else {
            repository_errors.push(e.to_string());
        }
    }
    let repo = repo.to_indexed().map_err(|e| Error::Repository {
        location: Location::of(cfg).to_string(),
        message: format!("reading the index: {}", e.display_log()),
    })?;
    let sets: Vec<SetReport> = chosen
        .iter()
        .map(|(b, s)| verify_set(&repo, b, s))
        .collect();
    // A baseline (immaculate or sacred) read back intact keeps its Object
    // Lock retention ahead of it; a failure to extend is reported, not
    // fatal: the set itself verified.
    for ((b, s), r) in chosen.iter().zip(&sets) {
        if !r.ok() || !matches!(b.tier, Tier::Immaculate | Tier::Sacred) {
            continue;
        }
        match crate::object_lock::extend_if_due(cfg, &repo, s) {
            Ok(Some(p)) => log::warn!(
                "Object Lock retention of `{}` extended: {} object(s) retained in {} mode until {}",
                b.name,
                p.objects,
                p.mode,
                p.until
            ),
            Ok(None) => {}
            Err(e) => repository_warnings.push(format!(
                "Object Lock retention of `{}` could not be extended: {}",
                b.name,
                e.detail()
            )),
        }
    }
    Ok(Report {
        read_data,
        repository_errors,
        repository_warnings,
        sets,
    })
}
