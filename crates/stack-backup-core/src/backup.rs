//! `backup` and `dump`: one backup set = one snapshot, whole or not at all.
//!
//! How a set is written (see `docs/decisions/0002-backup-set-in-two-steps.md`):
//!
//! 1. Plan every component (connect, export a Postgres snapshot, count rows,
//!    BGSAVE, inspect images) — nothing is written to the repository yet.
//! 2. Check free space, stop volume users if asked.
//! 3. Archive every artifact into snapshot A, tagged
//!    `stack-backup-incomplete` (never listed as a set). Streams go straight
//!    from their process into the repository through a [`TrackedReader`].
//! 4. Check the ledger: every artifact read to the end with its producer
//!    exiting 0, or reused unchanged from the parent.
//! 5. Write the manifest files into snapshot B; check A's tree holds every
//!    artifact; merge A and B into the final snapshot C with the set's tags;
//!    delete A and B.
//!
//! On any failure, A and B are deleted and the error names the component.
//! A process killed mid-way leaves at most an incomplete snapshot, which is
//! never listed and is removed by the next backup of the stack.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rustic_core::repofile::{Node, NodeType, SnapshotFile};
use rustic_core::{BackupOptions, LsOptions, ParentOptions, ProgressBars, SnapshotOptions};
use serde::Serialize;

use crate::config::{Config, Env, RedisRole};
use crate::error::{Error, Result};
use crate::ledger::{sha256_hex, Ledger, Observer, Outcome};
use crate::lock::RepoLock;
use crate::manifest::{self, ArtifactRecord, Component, Manifest, TreeRecord};
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet, Summary, MARKER_TAG};
use crate::source::{Artifact, Content, Entry, StackSource};
use crate::tiers::Tier;
use crate::{disk, docker, git, postgres, redis};

/// The tag of snapshots whose backup has not finished.
pub const INCOMPLETE_TAG: &str = "stack-backup-incomplete";

/// What to back up.
#[derive(Debug, Clone)]
pub struct Request {
    /// Set name; generated from the time when `None`.
    pub name: Option<String>,
    /// Tier of the new set.
    pub tier: Tier,
    /// Include Redis instances whose role is `cache`.
    pub include_redis: bool,
    /// Only these components (`postgres`, `postgres.main`, `docker`, …).
    pub only: Vec<String>,
    /// Only databases (`dump`: PostgreSQL, and Redis with role `data`).
    pub databases_only: bool,
    /// Skip components that do not exist (a removed image or volume, a
    /// dropped database, a stopped Redis) instead of failing: what does not
    /// exist cannot be lost. Used for the pre-restore snapshot.
    pub skip_missing: bool,
    /// Write the set tagged [`sets::UNVERIFIED_TAG`]: not a backup set until
    /// the caller verified and promoted it (`immaculate create`).
    pub hold: bool,
}

/// One component in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    /// Component name.
    pub component: String,
    /// Bytes of its artifacts.
    pub size: u64,
    /// Files.
    pub files: u64,
    /// True when its content was reused unread from the parent set.
    pub reused: bool,
    /// Seconds spent reading it (streams and files read).
    pub seconds: f64,
}

/// The result of a backup.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The new set.
    pub set: BackupSet,
    /// Per component.
    pub components: Vec<ComponentReport>,
    /// Bytes processed.
    pub total_bytes: u64,
    /// New data added to the repository, before compression.
    pub data_added: u64,
    /// New data added to the repository, as stored (compressed).
    pub data_added_packed: u64,
    /// The set whose unchanged content was reused.
    pub parent: Option<String>,
    /// Wall time.
    pub seconds: f64,
}

/// A backup that failed, with every component that failed.
fn failed(mut problems: Vec<(String, String)>) -> Error {
    problems.sort();
    problems.dedup();
    if problems.len() == 1 {
        let (c, m) = problems.remove(0);
        return Error::component(c, format!("{m}; the backup failed and left no backup set"));
    }
    let list: Vec<String> = problems.iter().map(|(c, m)| format!("{c}: {m}")).collect();
    Error::component(
        "backup",
        format!(
            "{} components failed; the backup left no backup set:\n  {}",
            problems.len(),
            list.join("\n  ")
        ),
    )
}

fn repo_err(e: impl std::fmt::Display, what: &str) -> Error {
    Error::Repository {
        location: "repository".into(),
        message: format!("{what}: {e}"),
    }
}

/// Every component the config describes, by name.
pub fn component_names(cfg: &Config) -> Result<Vec<String>> {
    let (images, volumes) = docker_lists(cfg)?;
    Ok(names_with(cfg, &images, &volumes))
}

/// [`component_names`] for Docker lists already resolved (a compose
/// project is asked once per backup).
fn names_with(cfg: &Config, images: &[String], volumes: &[String]) -> Vec<String> {
    let mut names: Vec<String> = cfg
        .postgres
        .keys()
        .map(|n| postgres::component(n))
        .collect();
    names.extend(cfg.redis.keys().map(|n| redis::component(n)));
    names.extend(images.iter().map(|i| format!("docker.image.{i}")));
    names.extend(volumes.iter().map(|v| format!("docker.volume.{v}")));
    if cfg.git.is_some() {
        names.push("git".into());
    }
    names.extend(cfg.paths.keys().map(|n| format!("paths.{n}")));
    names
}

fn docker_lists(cfg: &Config) -> Result<(Vec<String>, Vec<String>)> {
    let Some(d) = &cfg.docker else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut images = d.images.clone();
    let mut volumes = d.volumes.clone();
    if let Some(p) = &d.compose_project {
        images.extend(docker::compose_images(p)?);
        volumes.extend(docker::compose_volumes(p)?);
    }
    images.sort();
    images.dedup();
    volumes.sort();
    volumes.dedup();
    Ok((images, volumes))
}

/// Whether component `name` is picked by `--only` selectors (`postgres`
/// picks `postgres.main`; no selector picks everything).
pub(crate) fn selected(name: &str, only: &[String]) -> bool {
    only.is_empty()
        || only
            .iter()
            .any(|s| name == s || name.starts_with(&format!("{s}.")))
}

/// A name for a set taken now: `2026-11-25T18-40-02`.
#[must_use]
pub fn generated_name() -> String {
    jiff::Zoned::now().strftime("%Y-%m-%dT%H-%M-%S").to_string()
}

/// What the parent set offers for reuse.
#[derive(Default)]
struct ParentInfo {
    snap: Option<SnapshotFile>,
    checksums: BTreeMap<String, String>,
    manifest: Option<Manifest>,
}

/// Takes a backup set. Holds the repository lock for its whole run.
pub fn run<P: ProgressBars>(
    cfg: &Config,
    env: &Env,
    req: &Request,
    observer: Option<Arc<dyn Observer>>,
    progress: P,
) -> Result<Report> {
    let _lock = RepoLock::acquire(&Location::of(cfg))?;
    run_locked(cfg, env, req, observer, progress)
}

/// [`run`] for a caller that already holds the repository lock (restore's
/// pre-restore snapshot).
pub fn run_locked<P: ProgressBars>(
    cfg: &Config,
    env: &Env,
    req: &Request,
    observer: Option<Arc<dyn Observer>>,
    progress: P,
) -> Result<Report> {
    let started = Instant::now();
    let stack = cfg.stack.name.0.clone();
    let name = req.name.clone().unwrap_or_else(generated_name);
    // Sacred sets are named `sacred/NAME`; NAME follows the usual rules.
    crate::config::validate_name(name.strip_prefix("sacred/").unwrap_or(&name))
        .map_err(|m| Error::Refused(format!("--name: {m}")))?;
    if name == "latest" {
        return Err(Error::Refused(
            "`latest` is reserved; choose another --name".into(),
        ));
    }

    // Which components.
    let (images, volumes) = docker_lists(cfg)?;
    let all = names_with(cfg, &images, &volumes);
    for s in &req.only {
        if !all.iter().any(|c| selected(c, std::slice::from_ref(s))) {
            return Err(Error::Usage(format!(
                "--only {s}: no such component (components: {})",
                all.join(", ")
            )));
        }
    }
    let want = |c: &str| selected(c, &req.only);
    // The databases are planned (connect, export a snapshot, take the
    // roles, start counting rows) while the repository opens: deriving the
    // key alone takes a quarter of a second.
    let pg_planning = PostgresPlanning::start(cfg, req);

    let loc = Location::of(cfg);
    let password = repository::password(cfg, env)?;
    let repo = repository::open_with_progress(cfg, &password, progress)?;
    let phase =
        |what: &str| log::info!("backup: {what} at {:.2}s", started.elapsed().as_secs_f64());
    phase("repository open");
    let existing = sets::list(&repo, &stack)?;
    if req.name.is_some() && existing.iter().any(|(b, _)| b.name == name) {
        return Err(Error::Refused(format!(
            "a backup set named `{name}` already exists; names are unique (choose another --name)"
        )));
    }
    let name = if req.name.is_none() && existing.iter().any(|(b, _)| b.name == name) {
        (2..)
            .map(|i| format!("{name}-{i}"))
            .find(|n| !existing.iter().any(|(b, _)| &b.name == n))
            .expect("some suffix is free")
    } else {
        name
    };
    remove_stale_incomplete(&repo, &stack);
    let repo = repo
        .to_indexed()
        .map_err(|e| repository::op_error(cfg, "reading the index", &e))?;

    // The parent: the newest set holding the most of the wanted components
    // (its unchanged files and images are reused unread).
    let parent_set = existing
        .iter()
        // Oldest to newest: `max_by_key` keeps the last of equal keys, so
        // the newest set covering the most of this backup's components.
        .max_by_key(|(b, _)| {
            all.iter()
                .filter(|c| want(c) && b.components.contains(c))
                .count()
        })
        .map(|(_, s)| s.clone());
    let mut parent = ParentInfo::default();
    if let Some(snap) = parent_set {
        let read = |path: &str| sets::read_file(&repo, &snap, path).ok();
        parent.checksums = read(manifest::CHECKSUM_PATH)
            .map(|b| manifest::parse_checksums(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
        parent.manifest = read(manifest::JSON_PATH).and_then(|b| serde_json::from_slice(&b).ok());
        parent.snap = Some(snap);
    }

    // 1. Plan.
    phase("planning");
    let ledger = Arc::new(Ledger::new(observer));
    let mut entries: Vec<Entry> = Vec::new();
    let mut components: BTreeMap<String, Component> = BTreeMap::new();
    let mut sessions = Vec::new();
    let mut facts = Vec::new();
    let mut estimate: u64 = 0;
    let mut git_head = None;
    let mut reused_images: BTreeSet<String> = BTreeSet::new();

    for (comp, plan) in pg_planning.join()? {
        entries.extend(plan.entries);
        components.insert(comp.clone(), Component::Postgres(plan.record));
        sessions.push(plan.session);
        facts.push((comp, plan.facts));
    }
    for session in &mut sessions {
        if let Ok(row) = session.query_one("SELECT pg_database_size(current_database())", &[]) {
            estimate += u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        }
    }
    for (n, rd) in &cfg.redis {
        let comp = redis::component(n);
        let include = rd.role == RedisRole::Data || req.include_redis;
        if !want(&comp) || !include {
            continue;
        }
        let (entry, record) = match skip_missing(redis::plan(n, rd), req.skip_missing, &comp)? {
            Some(v) => v,
            None => continue,
        };
        entries.push(entry);
        components.insert(comp, Component::Redis(record));
    }
    let mut volume_users: Vec<(String, Vec<String>)> = Vec::new();
    if !req.databases_only {
        for reference in &images {
            let comp = format!("docker.image.{reference}");
            if !want(&comp) {
                continue;
            }
            let info = match skip_missing(docker::image_info(reference), req.skip_missing, &comp)? {
                Some(v) => v,
                None => continue,
            };
            let path = docker::image_artifact(reference);
            let reuse_meta = reusable_image(&repo, &parent, &path, &info.id);
            if reuse_meta.is_some() {
                reused_images.insert(path.clone());
            } else {
                estimate += info.size;
            }
            entries.push(Entry::File(Artifact {
                path: path.clone(),
                component: comp.clone(),
                content: Content::Stream(docker::save_stream(reference)),
                reuse_meta,
            }));
            components.insert(
                comp,
                Component::DockerImage(manifest::ImageRecord {
                    reference: reference.clone(),
                    id: info.id,
                    repo_digests: info.repo_digests.unwrap_or_default(),
                    tags: info.repo_tags.unwrap_or_default(),
                    reused: reused_images.contains(&path),
                    archive: path,
                }),
            );
        }
        let stop = cfg.docker.as_ref().is_some_and(|d| d.stop_containers);
        for vol in &volumes {
            let comp = format!("docker.volume.{vol}");
            if !want(&comp) {
                continue;
            }
            let mount = match skip_missing(docker::volume_mountpoint(vol), req.skip_missing, &comp)?
            {
                Some(v) => v,
                None => continue,
            };
            let users = docker::volume_users(vol)?;
            if !users.is_empty() && !stop {
                log::warn!(
                    "{comp}: containers {} keep running while the volume is copied; set `stop-containers = true` in [docker] for a consistent copy",
                    users.join(", ")
                );
            }
            if stop && !users.is_empty() {
                volume_users.push((comp.clone(), users));
            }
            entries.push(Entry::Tree {
                component: comp.clone(),
                root: PathBuf::from(&mount),
                target: format!("docker/volumes/{vol}"),
            });
            components.insert(
                comp,
                Component::DockerVolume(TreeRecord {
                    source: vol.clone(),
                    path: format!("docker/volumes/{vol}"),
                    files: 0,
                    bytes: 0,
                    stopped_containers: Vec::new(),
                }),
            );
        }
        if let Some(g) = &cfg.git {
            if want("git") {
                let (es, head, record) = git::plan(&g.path)?;
                entries.extend(es);
                git_head = Some(head);
                components.insert("git".into(), Component::Git(record));
            }
        }
        for (n, p) in &cfg.paths {
            let comp = format!("paths.{n}");
            if !want(&comp) {
                continue;
            }
            if !p.path.is_dir() && req.skip_missing {
                continue;
            }
            if !p.path.is_dir() {
                return Err(Error::component(
                    comp,
                    format!("{} is not a directory", p.path.display()),
                ));
            }
            entries.push(Entry::Tree {
                component: comp.clone(),
                root: p.path.clone(),
                target: format!("paths/{n}"),
            });
            components.insert(
                comp,
                Component::Path(TreeRecord {
                    source: p.path.display().to_string(),
                    path: format!("paths/{n}"),
                    files: 0,
                    bytes: 0,
                    stopped_containers: Vec::new(),
                }),
            );
        }
    } else if cfg.git.is_some() {
        // A database-only set still records the code it belongs to.
        if let Some(g) = &cfg.git {
            git_head = git::head(&g.path).ok();
        }
    }
    if components.is_empty() {
        return Err(Error::Refused(
            "nothing to back up: no component is configured or selected".into(),
        ));
    }

    // 2. Disk check, then stop volume users.
    phase("planned");
    if let Location::Local(p) = &loc {
        disk::ensure(p, estimate, cfg.min_free_space())?;
    } else if let Some(c) = repository::cache_dir(cfg) {
        // A remote repository's cache grows with the index and snapshots.
        disk::ensure(&c, 0, cfg.min_free_space())?;
    }
    disk::ensure(&std::env::temp_dir(), 0, cfg.min_free_space())?;
    let mut stopped = Vec::new();
    for (comp, users) in &volume_users {
        let s = docker::StoppedContainers::stop(comp, users)?;
        if let Some(Component::DockerVolume(r)) = components.get_mut(comp) {
            r.stopped_containers = s.names().to_vec();
        }
        stopped.push(s);
    }

    // 3. Archive the artifacts: the streams (dumps, images, RDB files, git)
    // into snapshot A and, at the same time, the directory trees (volumes,
    // paths) into snapshot A2, so that a dump does not wait for the walk of
    // a large tree (entries are archived in path order).
    phase("archiving");
    let (trees, files): (Vec<Entry>, Vec<Entry>) = entries
        .iter()
        .cloned()
        .partition(|e| matches!(e, Entry::Tree { .. }));
    let (files, trees) = if files.is_empty() || trees.is_empty() {
        (entries.clone(), Vec::new())
    } else {
        (files, trees)
    };
    let source = StackSource::new(files, ledger.clone());
    let tree_source = StackSource::new(trees, ledger.clone());
    let mut opts = BackupOptions::default();
    opts.parent_opts = match &parent.snap {
        Some(s) => ParentOptions::default().parents(vec![s.id.to_hex().to_string()]),
        None => ParentOptions::default().force(true),
    };
    let tags = format!("{INCOMPLETE_TAG},stack:{stack}");
    let snap_a = SnapshotOptions::default()
        .add_tags(&tags)
        .and_then(|o| o.to_snapshot())
        .map_err(|e| repository::op_error(cfg, "preparing the snapshot", &e))?;
    let (archived, archived_trees) = std::thread::scope(|sc| {
        let trees = (!tree_source.is_empty()).then(|| {
            let snap = snap_a.clone();
            let (repo, opts, tree_source) = (&repo, &opts, &tree_source);
            sc.spawn(move || repo.archive(opts, tree_source, snap, &[PathBuf::from("/")]))
        });
        let streams = repo.archive(&opts, &source, snap_a, &[PathBuf::from("/")]);
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
                   // Either half failing fails the backup; the other half is deleted.
    let (archived, extra) = match (archived, archived_trees) {
        (Ok(a), None) => (Ok(a), Vec::new()),
        (Ok(a), Some(Ok(t))) => (Ok(a), vec![t]),
        (Ok(a), Some(Err(e))) => {
            delete(&repo, &[a.id]);
            (Err(e), Vec::new())
        }
        (Err(e), Some(Ok(t))) => {
            delete(&repo, &[t.id]);
            (Err(e), Vec::new())
        }
        (Err(e), _) => (Err(e), Vec::new()),
    };
    phase("archive runs ended");
    let mut fact_failures = Vec::new();
    for (comp, handle) in facts {
        match handle.join() {
            Ok(Ok((counts, migrations))) => {
                if let Some(Component::Postgres(p)) = components.get_mut(&comp) {
                    p.row_counts = counts;
                    p.migrations = migrations;
                }
            }
            Ok(Err(e)) => fact_failures.push((comp, e.to_string())),
            Err(_) => fact_failures.push((comp, "counting rows panicked".into())),
        }
    }
    drop(sessions); // ends the Postgres snapshot transactions
    let snap_a = archived.map_err(|e| {
        let mut problems = ledger.component_failures();
        problems.push((
            format!("repository {loc}"),
            repository::explain(
                cfg,
                &format!("writing the snapshot failed: {}", e.display_log()),
            ),
        ));
        failed(problems)
    })?;

    // 4. The ledger.
    phase("archived");
    let stream_yields = source.yielded();
    let tree_yields = tree_source.yielded();
    let mut yielded = stream_yields.clone();
    yielded.extend(tree_yields.iter().cloned());
    // Every snapshot of this run so far (deleted on failure, merged at the end).
    let mut parts: Vec<SnapshotFile> = vec![snap_a.clone()];
    parts.extend(extra);
    let part_ids: Vec<_> = parts.iter().map(|p| p.id).collect();
    let mut problems = ledger.component_failures();
    problems.extend(fact_failures);
    let mut checksums: BTreeMap<String, String> = BTreeMap::new();
    let mut artifacts: Vec<ArtifactRecord> = Vec::new();
    let mut sizes: BTreeMap<String, (u64, u64, bool)> = BTreeMap::new(); // component → (bytes, files, reused)
    let file_artifacts: BTreeMap<&str, &Artifact> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::File(a) => Some((a.path.as_str(), a)),
            Entry::Tree { .. } => None,
        })
        .collect();
    for y in yielded.iter().filter(|y| y.is_file) {
        let single = file_artifacts.get(y.path.as_str());
        let outcome = ledger.get(&y.path);
        let (size, sha, reused) = match outcome {
            Some(Outcome::Done { size, sha256 }) => (size, sha256, false),
            Some(Outcome::Failed(m)) => {
                problems.push((y.component.clone(), m));
                continue;
            }
            None => {
                // Not opened: the archiver reused the parent's content.
                let old = parent.checksums.get(&y.path);
                let old_size = single.and_then(|_| {
                    parent
                        .manifest
                        .as_ref()
                        .and_then(|m| m.artifacts.iter().find(|a| a.path == y.path))
                        .map(|a| a.size)
                });
                match (old, single) {
                    (Some(sha), Some(a)) if a.reuse_meta.is_some() => {
                        (old_size.unwrap_or(0), sha.clone(), true)
                    }
                    (Some(sha), None) => (y.size, sha.clone(), true),
                    _ => {
                        problems.push((
                            y.component.clone(),
                            format!(
                                "{} was not read and has no checksum in the parent set",
                                y.path
                            ),
                        ));
                        continue;
                    }
                }
            }
        };
        let e = sizes.entry(y.component.clone()).or_insert((0, 0, true));
        e.0 += size;
        e.1 += 1;
        e.2 &= reused;
        if single.is_some() {
            artifacts.push(ArtifactRecord {
                path: y.path.clone(),
                component: y.component.clone(),
                size,
                sha256: sha.clone(),
                reused,
            });
        }
        checksums.insert(y.path.clone(), sha);
    }
    for c in components.keys() {
        if !sizes.contains_key(c)
            && !matches!(
                components[c],
                Component::DockerVolume(_) | Component::Path(_)
            )
        {
            problems.push((c.clone(), "produced no artifact".into()));
        }
    }
    phase("ledger checked");
    if !problems.is_empty() {
        delete(&repo, &part_ids);
        return Err(failed(problems));
    }
    for (comp, record) in &mut components {
        if let Component::DockerVolume(t) | Component::Path(t) = record {
            let (bytes, files, _) = sizes.get(comp).copied().unwrap_or_default();
            t.bytes = bytes;
            t.files = files;
        }
    }

    // 5. Manifest files into snapshot B.
    phase("manifest");
    let restore_command = format!("stack-backup restore {name}");
    let m = Manifest {
        schema: manifest::SCHEMA,
        tool: format!("stack-backup {}", env!("CARGO_PKG_VERSION")),
        stack: stack.clone(),
        name: name.clone(),
        tier: req.tier,
        created: snap_a.time.timestamp().to_string(),
        host: snap_a.hostname.clone(),
        parent: parent.snap.as_ref().map(|s| s.id.to_hex().to_string()),
        git: git_head.clone(),
        components: components.clone(),
        artifacts: artifacts.clone(),
        restore_command,
        imported: None,
    };
    let json = serde_json::to_vec_pretty(&m).map_err(|e| repo_err(e, "rendering manifest.json"))?;
    let md = m.to_markdown().into_bytes();
    let toml = cfg.redacted_toml().into_bytes();
    for (p, b) in [
        (manifest::JSON_PATH, &json),
        (manifest::MD_PATH, &md),
        (manifest::CONFIG_PATH, &toml),
    ] {
        checksums.insert(p.to_string(), sha256_hex(b));
    }
    let checksum_text =
        manifest::render_checksums(checksums.iter().map(|(p, s)| (p.as_str(), s.as_str())));
    let meta_ledger = Arc::new(Ledger::default());
    let meta_entries: Vec<Entry> = [
        (manifest::CHECKSUM_PATH, checksum_text.into_bytes()),
        (manifest::JSON_PATH, json),
        (manifest::MD_PATH, md),
        (manifest::CONFIG_PATH, toml),
    ]
    .into_iter()
    .map(|(p, b)| {
        Entry::File(Artifact {
            path: p.to_string(),
            component: "manifest".into(),
            content: Content::Bytes(Arc::new(b)),
            reuse_meta: None,
        })
    })
    .collect();
    let meta_source = StackSource::new(meta_entries, meta_ledger.clone());
    // The index loaded before A still serves B: it is only asked whether a
    // blob exists, and B's blobs are all new.
    let repo_ids = repo;
    let mut meta_opts = BackupOptions::default();
    meta_opts.parent_opts = ParentOptions::default().force(true);
    let snap_b = SnapshotOptions::default()
        .add_tags(&tags)
        .and_then(|o| o.to_snapshot())
        .and_then(|s| repo_ids.archive(&meta_opts, &meta_source, s, &[PathBuf::from("/")]));
    let repo = repo_ids.drop_index();
    let snap_b = match snap_b {
        Ok(s) => s,
        Err(e) => {
            delete(&repo, &part_ids);
            return Err(failed(vec![(
                "manifest".into(),
                format!("writing the manifest failed: {}", e.display_log()),
            )]));
        }
    };
    let meta_missing: Vec<String> = meta_source
        .yielded()
        .iter()
        .filter(|y| !matches!(meta_ledger.get(&y.path), Some(Outcome::Done { .. })))
        .map(|y| y.path.clone())
        .collect();
    let mut all_ids = part_ids.clone();
    all_ids.push(snap_b.id);
    if !meta_missing.is_empty() {
        delete(&repo, &all_ids);
        return Err(failed(vec![(
            "manifest".into(),
            format!("not written: {}", meta_missing.join(", ")),
        )]));
    }

    // Check A (and A2) hold every artifact, then merge them and B into C.
    phase("tree check and merge");
    let repo = repo
        .to_indexed()
        .map_err(|e| repository::op_error(cfg, "reading the index", &e))?;
    phase("index reloaded");
    for (part, yields) in parts.iter().zip([&stream_yields, &tree_yields]) {
        if let Err(missing) = tree_holds(&repo, part, yields) {
            delete(&repo, &all_ids);
            return Err(failed(missing));
        }
    }
    let summary = Summary {
        components: components.keys().cloned().collect(),
        git_commit: git_head.as_ref().map(|g| g.commit.clone()),
        ..Summary::default()
    };
    let hold = if req.hold {
        format!(",{}", sets::UNVERIFIED_TAG)
    } else {
        String::new()
    };
    let mut final_opts = SnapshotOptions::default()
        .add_tags(&format!(
            "{MARKER_TAG},stack:{stack},{},name:{name}{hold}",
            req.tier.tag()
        ))
        .map_err(|e| repository::op_error(cfg, "preparing the snapshot", &e))?;
    final_opts.description = Some(serde_json::to_string(&summary).unwrap_or_default());
    final_opts.label = Some(name.clone());
    final_opts.delete_never = !req.tier.prunable();
    let mut final_snap = final_opts
        .to_snapshot()
        .map_err(|e| repository::op_error(cfg, "preparing the snapshot", &e))?;
    // The set's counts are those of the archive runs (the merge keeps
    // directories found in only one part unread and counts nothing).
    parts.push(snap_b.clone());
    final_snap.summary = Some(summed_counts(&parts));
    final_snap.parent = snap_a.parent;
    phase("trees checked");
    let merged = repo.merge_snapshots(
        &parts,
        &|a: &Node, b: &Node| a.meta.mtime.cmp(&b.meta.mtime),
        final_snap,
    );
    let snap_c = match merged {
        Ok(s) => s,
        Err(e) => {
            delete(&repo, &all_ids);
            return Err(failed(vec![(
                format!("repository {}", Location::of(cfg)),
                repository::explain(
                    cfg,
                    &format!("saving the backup set failed: {}", e.display_log()),
                ),
            )]));
        }
    };
    phase("merged");
    delete(&repo, &all_ids);
    phase("done");

    let set = BackupSet::from_snapshot_any(&snap_c)
        .ok_or_else(|| repo_err("tags missing", "reading back the set"))?;
    let secs = ledger.seconds();
    // What the archive runs read and added (the merge adds only trees).
    let mut summary = snap_a.summary.clone().unwrap_or_default();
    for p in &parts[1..parts.len() - 1] {
        if let Some(t) = &p.summary {
            summary.total_bytes_processed += t.total_bytes_processed;
            summary.data_added += t.data_added;
            summary.data_added_packed += t.data_added_packed;
        }
    }
    Ok(Report {
        components: components
            .keys()
            .map(|c| {
                let (size, files, reused) = sizes.get(c).copied().unwrap_or((0, 0, false));
                ComponentReport {
                    component: c.clone(),
                    size,
                    files,
                    reused: reused && files > 0,
                    seconds: secs.get(c).copied().unwrap_or(0.0),
                }
            })
            .collect(),
        total_bytes: summary.total_bytes_processed,
        data_added: summary.data_added,
        data_added_packed: summary.data_added_packed,
        parent: parent.snap.as_ref().map(|s| s.id.to_hex().to_string()),
        seconds: started.elapsed().as_secs_f64(),
        set,
    })
}

/// The planning of the wanted databases, on a thread of its own. A backup
/// that fails before it joins leaves the thread to finish on its own: its
/// plans, and with them the sessions holding the exported snapshots, are
/// dropped when it ends.
struct PostgresPlanning(Option<std::thread::JoinHandle<Result<PostgresPlans>>>);

/// Each wanted database's component name and dump plan.
type PostgresPlans = Vec<(String, postgres::DumpPlan)>;

impl PostgresPlanning {
    fn start(cfg: &Config, req: &Request) -> Self {
        let wanted: Vec<(String, crate::config::PostgresConfig)> = cfg
            .postgres
            .iter()
            .filter(|(n, _)| selected(&postgres::component(n), &req.only))
            .map(|(n, pg)| (n.clone(), pg.clone()))
            .collect();
        if wanted.is_empty() {
            return Self(None);
        }
        let skip = req.skip_missing;
        Self(Some(std::thread::spawn(move || {
            let mut plans = Vec::new();
            for (n, pg) in &wanted {
                let comp = postgres::component(n);
                match postgres::plan_dump(n, pg) {
                    Ok(p) => plans.push((comp, p)),
                    Err(e) if skip && e.to_string().contains("does not exist") => {
                        log::info!("{comp}: skipped, it does not exist: {e}");
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(plans)
        })))
    }

    /// The plans, in config order.
    fn join(self) -> Result<PostgresPlans> {
        match self.0 {
            None => Ok(Vec::new()),
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(Error::component("postgres", "planning the dump panicked"))
            }),
        }
    }
}

/// A component's planning result; with `skip`, a failure means "it does not
/// exist" and the component is left out (`None`).
fn skip_missing<T>(r: Result<T>, skip: bool, component: &str) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if skip => {
            log::info!("{component}: skipped: {e}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Deletes snapshots of a failed or finished backup; a failure to delete is
/// logged (the next backup removes incomplete snapshots left behind).
fn delete<S: rustic_core::Open>(
    repo: &rustic_core::Repository<S>,
    ids: &[rustic_core::repofile::SnapshotId],
) {
    if let Err(e) = repo.delete_snapshots(ids) {
        log::error!(
            "could not delete the incomplete snapshot(s): {}",
            e.display_log()
        );
    }
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

/// The parent's node for an image tar with the same image ID, so the
/// archiver reuses its content without running `docker save`.
fn reusable_image(
    repo: &rustic_core::Repository<rustic_core::IndexedFullStatus>,
    parent: &ParentInfo,
    path: &str,
    id: &str,
) -> Option<Box<rustic_core::repofile::Metadata>> {
    let snap = parent.snap.as_ref()?;
    let m = parent.manifest.as_ref()?;
    let same = m
        .components
        .values()
        .any(|c| matches!(c, Component::DockerImage(i) if i.archive == path && i.id == id));
    if !same || !parent.checksums.contains_key(path) {
        return None;
    }
    let size = m.artifacts.iter().find(|a| a.path == path)?.size;
    let node = repo
        .node_from_snapshot_and_path(snap, &format!("/{path}"))
        .ok()?;
    // Reuse only a node that is whole: content present and its recorded
    // size equal to what the parent's manifest says was read.
    let whole = node.node_type == NodeType::File
        && node.content.as_ref().is_some_and(|c| !c.is_empty())
        && node.meta.size == size;
    whole.then(|| Box::new(node.meta))
}

/// Checks that the snapshot's tree holds every yielded entry, regular files
/// with content. Returns the problems otherwise.
fn tree_holds(
    repo: &rustic_core::Repository<rustic_core::IndexedFullStatus>,
    snap: &SnapshotFile,
    yielded: &BTreeSet<crate::source::Yielded>,
) -> std::result::Result<(), Vec<(String, String)>> {
    let mut root = Node::new_node(
        std::ffi::OsStr::new(""),
        NodeType::Dir,
        rustic_core::repofile::Metadata::default(),
    );
    root.subtree = Some(snap.tree);
    let mut present: BTreeMap<String, bool> = BTreeMap::new();
    let walk = repo.ls(&root, &LsOptions::default()).map_err(|e| {
        vec![(
            "repository".to_string(),
            format!("reading back the snapshot tree: {}", e.display_log()),
        )]
    })?;
    for item in walk {
        match item {
            Ok((path, node)) => {
                let has_content = node.node_type != NodeType::File || node.content.is_some();
                present.insert(
                    path.to_string_lossy().trim_start_matches('/').to_string(),
                    has_content,
                );
            }
            Err(e) => {
                return Err(vec![(
                    "repository".into(),
                    format!("reading back the snapshot tree: {}", e.display_log()),
                )]);
            }
        }
    }
    let missing: Vec<(String, String)> = yielded
        .iter()
        .filter(|y| present.get(&y.path) != Some(&true))
        .map(|y| {
            (
                y.component.clone(),
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

/// Deletes incomplete and unverified snapshots of this stack written on this
/// host by a backup or an `immaculate create` that was killed (the caller
/// holds the lock, so no such run is in progress).
fn remove_stale_incomplete(repo: &repository::OpenRepo, stack: &str) {
    let Ok(snaps) = repo.get_all_snapshots() else {
        return;
    };
    let host = rustic_core::SnapshotOptions::default()
        .to_snapshot()
        .map(|s| s.hostname)
        .unwrap_or_default();
    let stale: Vec<_> = snaps
        .iter()
        .filter(|s| {
            (s.tags.contains(INCOMPLETE_TAG) || s.tags.contains(sets::UNVERIFIED_TAG))
                && s.tags.contains(&format!("stack:{stack}"))
                && s.hostname == host
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
