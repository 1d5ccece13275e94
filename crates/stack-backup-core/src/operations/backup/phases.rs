//! The phases of one backup run after planning: prepare, archive, ledger
//! check, manifest, commit. Every part snapshot is held by [`Parts`] from
//! the moment it exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rustic_core::repofile::{Node, NodeType, SnapshotFile};
use rustic_core::{BackupOptions, DataId, LsOptions, ParentOptions, SnapshotOptions};

use super::checksum_file::ChecksumFile;
use super::ledger_check::{self, Checked};
use super::parts::Parts;
use super::{failed, Report, Request};
use crate::checksums::Checksums;
use crate::components::{ComponentId, Planned, Record};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::git::GitHead;
use crate::ledger::{sha256_hex, Ledger, Observer, Outcome};
use crate::manifest::{self, Manifest};
use crate::repository::{self, Location, OpenRepo};
use crate::sets::{self, BackupSet, Summary};
use crate::source::{Artifact, Content, Entry, StackSource, Yielded};
use crate::system::fault::point as fault;
use crate::tags::SetTags;

type Indexed = rustic_core::Repository<rustic_core::IndexedFullStatus>;

/// What the parent set offers for reuse.
#[derive(Default)]
pub(super) struct ParentInfo {
    pub snap: Option<SnapshotFile>,
    pub checksums: Checksums,
    pub manifest: Option<Manifest>,
}

impl ParentInfo {
    /// The parent's snapshot and manifest when its content may stand in
    /// for this stack's (see [`mark_reusable`]): not an imported set.
    fn trusted(&self) -> Option<(&SnapshotFile, &Manifest)> {
        (self.snap.as_ref())
            .zip(self.manifest.as_ref())
            .filter(|(_, m)| m.imported.is_none())
    }
}

/// One backup run, after planning.
pub(super) struct Run<'a> {
    cfg: &'a Config,
    req: &'a Request,
    name: String,
    stack: String,
    started: Instant,
    ledger: Arc<Ledger>,
}

/// The archive runs' part snapshots and what each yielded.
struct ArchiveRuns {
    streams: Yields,
    trees: Yields,
}

type Yields = BTreeSet<Yielded>;

impl<'a> Run<'a> {
    pub fn new(
        cfg: &'a Config,
        req: &'a Request,
        name: String,
        started: Instant,
        observer: Option<Arc<dyn Observer>>,
    ) -> Self {
        Self {
            cfg,
            req,
            name,
            stack: cfg.stack.name.0.clone(),
            started,
            ledger: Arc::new(Ledger::new(observer)),
        }
    }

    fn phase(&self, what: &str) {
        log::info!(
            "backup: {what} at {:.2}s",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Runs the phases. Whatever happens, the part snapshots are deleted
    /// when `parts` drops; only the merged set remains.
    pub fn execute(
        mut self,
        repo: OpenRepo,
        deleter: OpenRepo,
        wanted: &[ComponentId],
        mut planned: Vec<(ComponentId, Planned)>,
        git: Option<GitHead>,
    ) -> Result<Report> {
        self.phase("repository open");
        let existing = sets::list(&repo, &self.stack)?;
        self.unique_name(&existing)?;
        remove_stale_parts(&repo, &self.stack);
        let mut parts = Parts::new(deleter);
        let repo = repo
            .to_indexed()
            .map_err(|e| repository::op_error(self.cfg, "reading the index", &e))?;
        let mut parent = parent(&repo, &existing, wanted);
        mark_reusable(&repo, &parent, &mut planned);
        // The hooks of what is not reused go unrun: a plan waiting for the
        // decision (a database's counting session) learns it by the drop.
        for (_, p) in &mut planned {
            p.on_reuse = None;
        }
        fault("backup-planned")?;

        self.phase("planned");
        self.check_disk(&planned)?;
        let (archived, finished) = self.archive(&repo, &parent, &mut planned, &mut parts);
        let runs = archived?;
        fault("backup-archived")?;

        self.phase("archived");
        let mut checked = ledger_check::check(
            &self.ledger,
            &planned,
            &parent,
            &runs.streams,
            &runs.trees,
            finished,
        )?;
        // Not needed again; a parent of 300,000 files holds tens of MB.
        parent.checksums = Checksums::default();
        let mut records: BTreeMap<ComponentId, Record> = BTreeMap::new();
        for (id, p) in planned {
            let mut record = p.record;
            record.kind().archived(&mut record, &checked.measured(&id));
            records.insert(id, record);
        }
        fault("backup-ledger-checked")?;
        // A lost repository lock: stop before anything references the
        // packs (the parts are removed on the way out).
        crate::repo::restic_lock::still_held()?;

        self.phase("manifest");
        let snap_a = parts.snaps()[0].clone();
        let m = self.manifest(&snap_a, &parent, git, records, &checked);
        let sums = std::mem::take(&mut checked.checksums);
        let repo = self.write_manifest(repo, &m, sums, &mut parts)?;
        fault("backup-manifest-written")?;

        self.phase("tree check and merge");
        crate::repo::restic_lock::still_held()?;
        let set = self.commit(repo, &m, &runs, &parts)?;
        fault("backup-committed")?;
        self.phase("done");
        Ok(self.report(set, &parts, &checked, &m, parent.snap.as_ref()))
    }

    /// Refuses a name that is taken; a generated name gets a suffix.
    fn unique_name(&mut self, existing: &[(BackupSet, SnapshotFile)]) -> Result<()> {
        let taken = |n: &str| existing.iter().any(|(b, _)| b.name == n);
        if self.req.name.is_some() && taken(&self.name) {
            return Err(Error::Refused(format!(
                "a backup set named `{}` already exists; names are unique (choose another --name)",
                self.name
            )));
        }
        if taken(&self.name) {
            self.name = (2..)
                .map(|i| format!("{}-{i}", self.name))
                .find(|n| !taken(n))
                .expect("some suffix is free");
        }
        Ok(())
    }

    /// Free space for what the repository may grow by, and the floor.
    fn check_disk(&self, planned: &[(ComponentId, Planned)]) -> Result<()> {
        let estimate: u64 = planned.iter().map(|(_, p)| p.estimate).sum();
        let floor = self.cfg.min_free_space();
        if let Location::Local(p) = Location::of(self.cfg) {
            crate::disk::ensure(&p, estimate, floor)?;
        } else if let Some(c) = repository::cache_dir(self.cfg) {
            // A remote repository's cache grows with the index and snapshots.
            crate::disk::ensure(&c, 0, floor)?;
        }
        crate::disk::ensure(&std::env::temp_dir(), 0, floor)?;
        Ok(())
    }

    /// Archives the artifacts: the streams (dumps, images, RDB files, git)
    /// into one part and, at the same time, the directory trees (volumes,
    /// paths) into another, so that a dump does not wait for the walk of a
    /// large tree (entries are archived in path order). Volume users are
    /// stopped meanwhile. Returns the runs and, separately, what the
    /// components' `finish` hooks reported (they run whether the archive
    /// succeeded or not, to release what the plans held).
    fn archive(
        &self,
        repo: &Indexed,
        parent: &ParentInfo,
        planned: &mut [(ComponentId, Planned)],
        parts: &mut Parts,
    ) -> (Result<ArchiveRuns>, Vec<(String, String)>) {
        // Read before any container is stopped: a guide only saves work.
        let guides = chunk_guides(repo, parent, planned);
        let stopped = match stop_users(planned) {
            Ok(s) => s,
            Err(e) => return (Err(e), finish_all(planned)),
        };
        let entries: Vec<Entry> = planned
            .iter()
            .flat_map(|(_, p)| p.entries.iter().cloned())
            .collect();
        let (trees, files): (Vec<Entry>, Vec<Entry>) = entries
            .iter()
            .cloned()
            .partition(|e| matches!(e, Entry::Tree { .. }));
        let (files, trees) = if files.is_empty() || trees.is_empty() {
            (entries, Vec::new())
        } else {
            (files, trees)
        };
        let source = StackSource::new(files, self.ledger.clone()).with_guides(guides);
        let tree_source = StackSource::new(trees, self.ledger.clone());
        let mut opts = BackupOptions::default();
        opts.parent_opts = match &parent.snap {
            Some(s) => ParentOptions::default().parents(vec![s.id.to_hex().to_string()]),
            None => ParentOptions::default().force(true),
        };
        let snap = match self.part_snapshot() {
            Ok(s) => s,
            Err(e) => return (Err(e), finish_all(planned)),
        };
        let (streams, trees) = std::thread::scope(|sc| {
            let trees = (!tree_source.is_empty()).then(|| {
                let (snap, opts, tree_source) = (snap.clone(), &opts, &tree_source);
                sc.spawn(move || repo.archive(opts, tree_source, snap, &[PathBuf::from("/")]))
            });
            let streams = repo.archive(&opts, &source, snap, &[PathBuf::from("/")]);
            let trees = trees.map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(rustic_core::RusticError::new(
                        rustic_core::ErrorKind::Internal,
                        "archiving the directory trees panicked",
                    ))
                })
            });
            (streams, trees)
        });
        drop(stopped); // volume users start again, also when the archive failed
        let finished = finish_all(planned);
        self.phase("archive runs ended");
        // Every part that was written is held before any error is returned.
        let streams = streams.map(|s| parts.add(s));
        let trees = trees.transpose().map(|t| {
            if let Some(t) = t {
                parts.add(t);
            }
        });
        let result = streams.and(trees).map_err(|e| {
            let mut problems = self.ledger.component_failures();
            problems.push((
                format!("repository {}", Location::of(self.cfg)),
                repository::explain(
                    self.cfg,
                    &format!("writing the snapshot failed: {}", e.display_log()),
                ),
            ));
            problems.extend(finished.iter().cloned());
            failed(problems)
        });
        (
            result.map(|()| ArchiveRuns {
                streams: source.take_yielded(),
                trees: tree_source.take_yielded(),
            }),
            finished,
        )
    }

    /// A new part snapshot's metadata, tagged incomplete.
    fn part_snapshot(&self) -> Result<SnapshotFile> {
        let mut opts = SnapshotOptions::default();
        opts.tags = vec![SetTags::incomplete(&self.stack).to_list()];
        opts.to_snapshot()
            .map_err(|e| repository::op_error(self.cfg, "preparing the snapshot", &e))
    }

    fn manifest(
        &self,
        snap_a: &SnapshotFile,
        parent: &ParentInfo,
        git: Option<GitHead>,
        components: BTreeMap<ComponentId, Record>,
        checked: &Checked,
    ) -> Manifest {
        Manifest {
            schema: manifest::SCHEMA,
            tool: format!("stack-backup {}", env!("CARGO_PKG_VERSION")),
            stack: self.stack.clone(),
            name: self.name.clone(),
            tier: self.req.tier,
            created: snap_a.time.timestamp().to_string(),
            host: snap_a.hostname.clone(),
            parent: parent.snap.as_ref().map(|s| s.id.to_hex().to_string()),
            git,
            components,
            artifacts: checked.artifacts.clone(),
            restore_command: format!("stack-backup restore {}", self.name),
            imported: None,
        }
    }

    /// Writes the manifest files into one more part (the index loaded
    /// before the archive still serves: it is only asked whether a blob
    /// exists, and these blobs are all new). `CHECKSUM.sha256` is rendered
    /// from `checksums` as it is read, and the table is freed with it.
    fn write_manifest(
        &self,
        repo: Indexed,
        m: &Manifest,
        checksums: Checksums,
        parts: &mut Parts,
    ) -> Result<OpenRepo> {
        let json = serde_json::to_vec_pretty(m).map_err(|e| Error::Repository {
            location: "repository".into(),
            message: format!("rendering manifest.json: {e}"),
        })?;
        let md = m.to_markdown().into_bytes();
        let toml = self.cfg.redacted_toml().into_bytes();
        let mut own: Vec<(String, String)> = [
            (manifest::JSON_PATH, &json),
            (manifest::MD_PATH, &md),
            (manifest::CONFIG_PATH, &toml),
        ]
        .into_iter()
        .map(|(p, b)| (p.to_string(), sha256_hex(b)))
        .collect();
        let file = |p: &str, content: Content| {
            Entry::File(Artifact {
                path: p.to_string(),
                component: "manifest".into(),
                content,
                reuse_meta: None,
            })
        };
        // A test's knob (nothing without the `failpoints` feature): the
        // line of one file written with a digest no content has, for the
        // checks that must refuse a set whose CHECKSUM.sha256 disagrees
        // with what it holds. Its own line replaces the table's.
        if let Some(path) = crate::system::fault::value("backup-checksum-wrong") {
            own.push((path, "0".repeat(64)));
        }
        let sums = ChecksumFile::new(checksums, own);
        let entries: Vec<Entry> = vec![
            file(manifest::CHECKSUM_PATH, Content::Produced(Arc::new(sums))),
            file(manifest::JSON_PATH, Content::Bytes(Arc::new(json))),
            file(manifest::MD_PATH, Content::Bytes(Arc::new(md))),
            file(manifest::CONFIG_PATH, Content::Bytes(Arc::new(toml))),
        ];
        let ledger = Arc::new(Ledger::default());
        let source = StackSource::new(entries, ledger.clone());
        let mut opts = BackupOptions::default();
        opts.parent_opts = ParentOptions::default().force(true);
        let snap = self.part_snapshot().and_then(|s| {
            repo.archive(&opts, &source, s, &[PathBuf::from("/")])
                .map_err(|e| {
                    failed(vec![(
                        "manifest".into(),
                        format!("writing the manifest failed: {}", e.display_log()),
                    )])
                })
        })?;
        parts.add(snap);
        let missing: Vec<String> = source
            .take_yielded()
            .iter()
            .filter(|y| !matches!(ledger.get(&y.path), Some(Outcome::Done { .. })))
            .map(|y| y.path.clone())
            .collect();
        if !missing.is_empty() {
            return Err(failed(vec![(
                "manifest".into(),
                format!("not written: {}", missing.join(", ")),
            )]));
        }
        Ok(repo.drop_index())
    }

    /// Checks that the archive parts hold every artifact, then merges all
    /// parts into the set's snapshot with its tags.
    fn commit(
        &self,
        repo: OpenRepo,
        m: &Manifest,
        runs: &ArchiveRuns,
        parts: &Parts,
    ) -> Result<BackupSet> {
        let repo = repo
            .to_indexed()
            .map_err(|e| repository::op_error(self.cfg, "reading the index", &e))?;
        self.phase("index reloaded");
        let archive_parts = &parts.snaps()[..parts.snaps().len() - 1];
        for (part, yields) in archive_parts.iter().zip([&runs.streams, &runs.trees]) {
            tree_holds(&repo, part, yields).map_err(failed)?;
        }
        let summary = Summary {
            components: m.components.keys().map(ToString::to_string).collect(),
            git_commit: m.git.as_ref().map(|g| g.commit.clone()),
            ..Summary::default()
        };
        let tags = SetTags::set(&self.stack, self.req.tier, &self.name).verified(!self.req.hold);
        let mut opts = SnapshotOptions::default();
        opts.tags = vec![tags.to_list()];
        opts.description = Some(serde_json::to_string(&summary).unwrap_or_default());
        opts.label = Some(self.name.clone());
        opts.delete_never = !self.req.tier.prunable();
        let mut snap = opts
            .to_snapshot()
            .map_err(|e| repository::op_error(self.cfg, "preparing the snapshot", &e))?;
        // The set's counts are those of the archive runs (the merge keeps
        // directories found in only one part unread and counts nothing).
        snap.summary = Some(summed_counts(parts.snaps()));
        snap.parent = parts.snaps()[0].parent;
        let merged = repo
            .merge_snapshots(
                parts.snaps(),
                &|a: &Node, b: &Node| a.meta.mtime.cmp(&b.meta.mtime),
                snap,
            )
            .map_err(|e| {
                failed(vec![(
                    format!("repository {}", Location::of(self.cfg)),
                    repository::explain(
                        self.cfg,
                        &format!("saving the backup set failed: {}", e.display_log()),
                    ),
                )])
            })?;
        self.phase("merged");
        BackupSet::from_snapshot_any(&merged).ok_or_else(|| Error::Repository {
            location: "repository".into(),
            message: "reading back the set: tags missing".into(),
        })
    }

    fn report(
        &self,
        set: BackupSet,
        parts: &Parts,
        checked: &Checked,
        m: &Manifest,
        parent: Option<&SnapshotFile>,
    ) -> Report {
        let secs = self.ledger.seconds();
        // What the archive runs read and added (the manifest part adds
        // little, the merge only trees).
        let archive_parts = &parts.snaps()[..parts.snaps().len() - 1];
        let mut total = rustic_core::repofile::SnapshotSummary::default();
        for t in archive_parts.iter().filter_map(|p| p.summary.as_ref()) {
            total.total_bytes_processed += t.total_bytes_processed;
            total.data_added += t.data_added;
            total.data_added_packed += t.data_added_packed;
        }
        Report {
            components: m
                .components
                .keys()
                .map(|c| {
                    let mut s = checked.measured(c);
                    // A member of a group another component carries: the
                    // group is what it consists of.
                    let shared = m
                        .components
                        .get(c)
                        .and_then(|r| r.kind().shared_artifact(r))
                        .and_then(|p| m.artifacts.iter().find(|a| a.path == p));
                    if let (0, Some(a)) = (s.files, shared) {
                        s.bytes = a.size;
                        s.files = 1;
                        s.reused = a.reused;
                    }
                    super::ComponentReport {
                        component: c.to_string(),
                        size: s.bytes,
                        files: s.files,
                        reused: s.reused && s.files > 0,
                        seconds: secs.get(c.as_str()).copied().unwrap_or(0.0),
                    }
                })
                .collect(),
            total_bytes: total.total_bytes_processed,
            data_added: total.data_added,
            data_added_packed: total.data_added_packed,
            parent: parent.map(|s| s.id.to_hex().to_string()),
            seconds: self.started.elapsed().as_secs_f64(),
            set,
        }
    }
}

/// The parent: the newest set holding the most of the wanted
/// components (its unchanged files and images are reused unread).
fn parent(
    repo: &Indexed,
    existing: &[(BackupSet, SnapshotFile)],
    wanted: &[ComponentId],
) -> ParentInfo {
    // Oldest to newest: `max_by_key` keeps the last of equal keys, so
    // the newest set covering the most of this backup's components.
    let Some(snap) = existing
        .iter()
        .max_by_key(|(b, _)| {
            wanted
                .iter()
                .filter(|c| b.components.iter().any(|bc| c == &bc.as_str()))
                .count()
        })
        .map(|(_, s)| s.clone())
    else {
        return ParentInfo::default();
    };
    let read = |path: &str| sets::read_file(repo, &snap, path).ok();
    ParentInfo {
        checksums: read(manifest::CHECKSUM_PATH)
            .map(|b| Checksums::parse(&String::from_utf8_lossy(&b)))
            .unwrap_or_default(),
        manifest: read(manifest::JSON_PATH).and_then(|b| serde_json::from_slice(&b).ok()),
        snap: Some(snap),
    }
}

/// Stops the containers that use volumes being copied (when configured);
/// they start again when the returned guards drop.
fn stop_users(
    planned: &mut [(ComponentId, Planned)],
) -> Result<Vec<crate::docker::StoppedContainers>> {
    let mut stopped = Vec::new();
    for (id, p) in planned.iter_mut().filter(|(_, p)| !p.stop.is_empty()) {
        let s = crate::docker::StoppedContainers::stop(id.as_str(), &p.stop)?;
        p.stop = s.names().to_vec();
        stopped.push(s);
    }
    Ok(stopped)
}

/// Runs every component's `finish` hook; returns the failures.
fn finish_all(planned: &mut [(ComponentId, Planned)]) -> Vec<(String, String)> {
    let mut failures = Vec::new();
    for (id, p) in planned.iter_mut() {
        if let Some(f) = p.finish.take() {
            if let Err(e) = f(&mut p.record) {
                failures.push((id.to_string(), e.detail()));
            }
        }
    }
    failures
}

/// The chunks of the parent's files that each planned
/// [`crate::components::Guide`] names, by artifact path, in the guide's
/// order. Every file but the last loses its last chunk: that one was cut
/// by the end of its file, not by the rolling hash, and must not be
/// predicted in the middle of a stream. Only a trusted parent (see
/// [`mark_reusable`]) guides; a file it does not hold is left out.
fn chunk_guides(
    repo: &Indexed,
    parent: &ParentInfo,
    planned: &[(ComponentId, Planned)],
) -> BTreeMap<String, Vec<DataId>> {
    let mut out = BTreeMap::new();
    let Some((snap, _)) = parent.trusted() else {
        return out;
    };
    for g in planned.iter().flat_map(|(_, p)| &p.guides) {
        let files = g
            .from
            .iter()
            .filter_map(|f| {
                repo.node_from_snapshot_and_path(snap, &format!("/{f}"))
                    .ok()
            })
            .filter(|n| n.node_type == NodeType::File)
            .filter_map(|n| n.content);
        let chunks = guide_chunks(files);
        if !chunks.is_empty() {
            out.insert(g.path.clone(), chunks);
        }
    }
    out
}

/// The chunks of `files` one after the other, each file but the last
/// without its last chunk (see [`chunk_guides`]).
fn guide_chunks<T>(files: impl Iterator<Item = Vec<T>>) -> Vec<T> {
    let mut files: Vec<Vec<T>> = files.filter(|c| !c.is_empty()).collect();
    let last = files.pop();
    let mut chunks = Vec::new();
    for mut c in files {
        c.pop();
        chunks.append(&mut c);
    }
    chunks.extend(last.into_iter().flatten());
    chunks
}

/// Marks the artifacts whose content the parent set holds unchanged
/// (the kind says the records agree, e.g. the same image ID): the
/// archiver reuses the parent's node without running their producer.
/// An imported parent is never trusted so: its records and files came
/// from a directory anyone may have edited, not from this stack
/// (`docs/decisions/0038-mysql-unchanged-backups.md`).
fn mark_reusable(repo: &Indexed, parent: &ParentInfo, planned: &mut [(ComponentId, Planned)]) {
    let trusted = parent.trusted();
    let reuse =
        |a: &mut Artifact| trusted.is_some_and(|(snap, m)| reuse_whole(repo, snap, m, parent, a));
    // Kinds that share artifacts between components arrange that first,
    // knowing what the parent offers.
    for kind in crate::components::KINDS {
        let mut mine: Vec<(&ComponentId, &mut Planned)> = planned
            .iter_mut()
            .filter(|(id, _)| id.prefix() == kind.prefix())
            .map(|(id, p)| (&*id, p))
            .collect();
        if !mine.is_empty() {
            kind.plan_together(&mut mine, trusted.map(|(_, m)| m), &reuse);
        }
    }
    let Some((_, m)) = trusted else {
        return;
    };
    for (id, p) in planned.iter_mut() {
        let Some(old) = m.components.get(id) else {
            continue;
        };
        if !p.record.kind().same_content(&p.record, old) {
            continue;
        }
        let estimate = p.estimate;
        for entry in &mut p.entries {
            let Entry::File(a) = entry else { continue };
            if reuse(a) {
                p.estimate = 0;
            }
        }
        let all_reused = !p.entries.is_empty()
            && p.entries
                .iter()
                .all(|e| matches!(e, Entry::File(a) if a.reuse_meta.is_some()));
        if all_reused {
            if let Some(f) = p.on_reuse.take() {
                f(old);
            }
        } else if p.on_reuse.is_some() {
            // A component that takes facts from the parent only when it
            // reuses all of it (a database's row counts) reads all of it
            // otherwise: half its files reused would have no facts.
            for entry in &mut p.entries {
                if let Entry::File(a) = entry {
                    a.reuse_meta = None;
                }
            }
            p.estimate = estimate;
        }
    }
}

/// Marks `a` for reuse from the parent set `snap` (manifest `m`) when the
/// parent holds it whole at its path: a checksum, a file node with
/// content, and the size its manifest records. Returns whether it did.
fn reuse_whole(
    repo: &Indexed,
    snap: &SnapshotFile,
    m: &Manifest,
    parent: &ParentInfo,
    a: &mut Artifact,
) -> bool {
    let Some(size) = m
        .artifacts
        .iter()
        .find(|x| x.path == a.path)
        .map(|x| x.size)
    else {
        return false;
    };
    if !parent.checksums.contains_key(&a.path) {
        return false;
    }
    let Ok(node) = repo.node_from_snapshot_and_path(snap, &format!("/{}", a.path)) else {
        return false;
    };
    // Reuse only a node that is whole: content present and its
    // recorded size equal to what the parent's manifest says.
    // An empty file (a table without rows) has no chunks.
    let whole = node.node_type == NodeType::File
        && node
            .content
            .as_ref()
            .is_some_and(|c| !c.is_empty() || size == 0)
        && node.meta.size == size;
    if whole {
        a.reuse_meta = Some(Box::new(node.meta));
    }
    whole
}

/// The file and directory counts of the snapshots merged into a set, summed
/// (their top directories are counted once per part).
fn summed_counts(parts: &[SnapshotFile]) -> rustic_core::repofile::SnapshotSummary {
    let mut sum = rustic_core::repofile::SnapshotSummary::default();
    for s in parts.iter().filter_map(|p| p.summary.as_ref()) {
        sum.files_new += s.files_new;
        sum.files_changed += s.files_changed;
        sum.files_unmodified += s.files_unmodified;
        sum.total_files_processed += s.total_files_processed;
        sum.total_bytes_processed += s.total_bytes_processed;
        sum.dirs_new += s.dirs_new;
        sum.dirs_changed += s.dirs_changed;
        sum.dirs_unmodified += s.dirs_unmodified;
        sum.total_dirs_processed += s.total_dirs_processed;
        sum.total_dirsize_processed += s.total_dirsize_processed;
        sum.data_blobs += s.data_blobs;
        sum.tree_blobs += s.tree_blobs;
        sum.data_added += s.data_added;
        sum.data_added_packed += s.data_added_packed;
        sum.data_added_files += s.data_added_files;
        sum.data_added_files_packed += s.data_added_files_packed;
        sum.data_added_trees += s.data_added_trees;
        sum.data_added_trees_packed += s.data_added_trees_packed;
    }
    sum
}

/// Checks that the snapshot's tree holds every yielded entry, regular files
/// with content. Returns the problems otherwise.
fn tree_holds(
    repo: &Indexed,
    snap: &SnapshotFile,
    yielded: &Yields,
) -> std::result::Result<(), Vec<(String, String)>> {
    let mut root = Node::new_node(
        std::ffi::OsStr::new(""),
        NodeType::Dir,
        rustic_core::repofile::Metadata::default(),
    );
    root.subtree = Some(snap.tree);
    let unreadable = |e: Box<rustic_core::RusticError>| {
        vec![(
            "repository".to_string(),
            format!("reading back the snapshot tree: {}", e.display_log()),
        )]
    };
    let mut present: BTreeMap<String, bool> = BTreeMap::new();
    for item in repo.ls(&root, &LsOptions::default()).map_err(unreadable)? {
        let (path, node) = item.map_err(unreadable)?;
        let has_content = node.node_type != NodeType::File || node.content.is_some();
        present.insert(
            path.to_string_lossy().trim_start_matches('/').to_string(),
            has_content,
        );
    }
    let missing: Vec<(String, String)> = yielded
        .iter()
        .filter(|y| present.get(&y.path) != Some(&true))
        .map(|y| {
            (
                y.component.to_string(),
                format!("{} is missing from the snapshot", y.path),
            )
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// Deletes the part snapshots of this stack written on this host by a
/// backup or an `immaculate create` that was killed (the caller holds the
/// lock, so no such run is in progress).
fn remove_stale_parts(repo: &OpenRepo, stack: &str) {
    let Ok(snaps) = repo.get_all_snapshots() else {
        return;
    };
    let host = SnapshotOptions::default()
        .to_snapshot()
        .map(|s| s.hostname)
        .unwrap_or_default();
    let stale: Vec<_> = snaps
        .iter()
        .filter(|s| {
            SetTags::of(s).is_some_and(|t| !t.is_set() && t.stack() == stack) && s.hostname == host
        })
        .map(|s| s.id)
        .collect();
    if !stale.is_empty() {
        log::warn!(
            "removing {} incomplete snapshot(s) left by an interrupted backup",
            stale.len()
        );
        if let Err(e) = repo.delete_snapshots(&stale) {
            log::warn!("could not remove them: {}", e.display_log());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn guide_chunks_drop_the_end_of_file_cut_of_all_but_the_last_file() {
        let files = vec![vec![1, 2, 3], vec![], vec![4], vec![5, 6]];
        assert_eq!(super::guide_chunks(files.into_iter()), [1, 2, 5, 6]);
        assert_eq!(super::guide_chunks(vec![vec![7, 8]].into_iter()), [7, 8]);
        assert!(super::guide_chunks(Vec::<Vec<u8>>::new().into_iter()).is_empty());
    }
}
