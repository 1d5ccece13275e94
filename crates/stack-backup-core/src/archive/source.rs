//! The `ReadSource` handed to `rustic_core`'s archiver: every artifact of a
//! backup set, in tree order, each read through a [`TrackedReader`].
//!
//! Streams (dumps, image tars, RDB files) are started only when the
//! archiver opens them, on its worker threads, and go straight from the
//! producing process into the repository: nothing is written to disk.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{
    DataId, DevIdOption, ErrorKind, Excludes, LocalSource, LocalSourceFilterOptions,
    LocalSourceSaveOptions, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticError, RusticResult,
};

use super::packed::{Names, Packed};
use crate::ledger::{ChildGuard, Ledger, TrackedReader};

/// A process whose stdout is an artifact.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// The program (absolute path or name on PATH).
    pub program: PathBuf,
    /// Its arguments: never a secret.
    pub args: Vec<String>,
    /// Extra environment: the only place a secret may go.
    pub env: Vec<(String, String)>,
    /// What it is, for messages (`pg_dump`, `docker save`).
    pub what: String,
    /// Leading bytes a valid artifact starts with.
    pub magic: Option<&'static [u8]>,
}

impl StreamSpec {
    /// The command line as shown to people (program and arguments only).
    #[must_use]
    pub fn shown(&self) -> String {
        format!("{} {}", self.program.display(), self.args.join(" "))
    }
}

/// Bytes produced inside this process (e.g. a database session's rows),
/// opened on an archiver worker thread like a stream.
///
/// Contract: the reader it returns yields the whole artifact and then
/// `Ok(0)`; a producer that fails returns an error from `read` (never a
/// clean end), so the ledger records the artifact as failed.
pub trait Produce: Send + Sync + std::fmt::Debug {
    /// Starts producing; the reader may block until the producer is free.
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>>;
}

/// Where an artifact's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    /// Bytes produced in this process, read once.
    Produced(Arc<dyn Produce>),
    /// A process's stdout.
    Stream(StreamSpec),
    /// Small content prepared in memory (git state, roles, manifests).
    Bytes(Arc<Vec<u8>>),
    /// A file on this machine.
    LocalFile(PathBuf),
    /// A gzip file on this machine, stored decompressed (`import`).
    Gunzip(PathBuf),
    /// A regular file of a walked tree (volume, directory), opened without
    /// following a symlink and read only if it is still the file the walk
    /// saw (same device and inode): a container that swaps it for a symlink
    /// to a host file (`/etc/shadow`) between walk and read makes the
    /// component fail, naming the file, instead of storing the host file.
    Walked {
        /// The path the walk found.
        path: PathBuf,
        /// `st_dev` at the walk.
        dev: u64,
        /// `st_ino` at the walk.
        ino: u64,
    },
}

/// One file in the backup set.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Path inside the snapshot, without the leading `/`
    /// (e.g. `postgres/main/shop.dump`).
    pub path: String,
    /// The component it belongs to (e.g. `postgres.main`).
    pub component: String,
    /// Its content.
    pub content: Content,
    /// Node metadata to use instead of fresh metadata: set to the parent
    /// snapshot's node to make the archiver reuse the parent's content
    /// without opening the artifact (unchanged Docker images).
    pub reuse_meta: Option<Box<Metadata>>,
}

/// An entry of the backup set, before expansion.
#[derive(Debug, Clone)]
pub enum Entry {
    /// One file.
    File(Artifact),
    /// A local directory stored at `target`, walked when reached, with
    /// ownership, modes, links and times.
    Tree {
        /// The component it belongs to.
        component: String,
        /// The directory on this machine.
        root: PathBuf,
        /// Its path inside the snapshot, without the leading `/`.
        target: String,
    },
}

impl Entry {
    fn target(&self) -> &str {
        match self {
            Entry::File(a) => &a.path,
            Entry::Tree { target, .. } => target,
        }
    }
}

/// A file the source yielded: the backup checks each one made it into the
/// snapshot. Ordered by path first (the ledger check walks two sets of
/// them in path order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Yielded {
    /// Path inside the snapshot, without the leading `/`.
    pub path: String,
    /// The component it belongs to (one allocation per component, not per
    /// file: a tree may yield 300,000 files).
    pub component: Arc<str>,
    /// True for regular files (which have content and a checksum).
    pub is_file: bool,
    /// Its size as yielded: a local file's, 0 for a stream (not known
    /// before it is read).
    pub size: u64,
}

/// The `ReadSource` of one backup set.
pub struct StackSource {
    entries: Vec<Entry>,
    ledger: Arc<Ledger>,
    yielded: Arc<Mutex<BTreeSet<Yielded>>>,
    time: jiff::Timestamp,
    /// Chunks that guide the chunker, by artifact path (see `with_guides`).
    guides: BTreeMap<String, Vec<DataId>>,
}

impl std::fmt::Debug for StackSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackSource")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl StackSource {
    /// A source over `entries` (any order: they are sorted into tree order).
    pub fn new(mut entries: Vec<Entry>, ledger: Arc<Ledger>) -> Self {
        entries.sort_by(|a, b| Path::new(a.target()).cmp(Path::new(b.target())));
        Self {
            entries,
            ledger,
            yielded: Arc::default(),
            time: jiff::Timestamp::now(),
            guides: BTreeMap::new(),
        }
    }

    /// Lets `guides` (chunks of the parent set's files, by artifact path)
    /// guide the chunker on the artifacts read afresh at those paths (see
    /// [`crate::components::Guide`]). The archiver uses a guide only where
    /// the parent holds nothing at the path: a changed file there brings
    /// its own previous content, an unchanged one is not read.
    #[must_use]
    pub fn with_guides(mut self, guides: BTreeMap<String, Vec<DataId>>) -> Self {
        self.guides = guides;
        self
    }

    /// Whether there is nothing to archive.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry yielded, taken out of the source (complete once the
    /// archiver returned; a second call returns nothing).
    pub fn take_yielded(&self) -> BTreeSet<Yielded> {
        std::mem::take(&mut *self.yielded.lock().expect("yielded lock"))
    }
}

/// Opens an entry's content on the archiver's worker thread.
pub struct EntryOpen {
    artifact: String,
    component: String,
    content: Content,
    ledger: Arc<Ledger>,
}

impl std::fmt::Debug for EntryOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntryOpen({})", self.artifact)
    }
}

fn io_error(message: String) -> Box<RusticError> {
    // RusticError treats `{…}` as placeholders; keep messages literal.
    RusticError::new(ErrorKind::InputOutput, message.replace(['{', '}'], "'"))
}

impl ReadSourceOpen for EntryOpen {
    type Reader = Box<dyn Read + Send>;

    fn open(self) -> RusticResult<Self::Reader> {
        let Self {
            artifact,
            component,
            content,
            ledger,
        } = self;
        let fail = |msg: String| {
            ledger.record(&artifact, crate::ledger::Outcome::Failed(msg.clone()));
            io_error(format!("{component}: {msg}"))
        };
        match content {
            Content::Bytes(b) => {
                let cursor = std::io::Cursor::new(ArcBytes(b));
                Ok(Box::new(TrackedReader::new(
                    cursor, artifact, component, ledger, None, None,
                )))
            }
            Content::LocalFile(p) => match std::fs::File::open(&p) {
                Ok(f) => Ok(Box::new(TrackedReader::new(
                    f, artifact, component, ledger, None, None,
                ))),
                Err(e) => Err(fail(format!("cannot open {}: {e}", p.display()))),
            },
            Content::Walked { path, dev, ino } => match open_walked(&path, dev, ino) {
                Ok(f) => Ok(Box::new(TrackedReader::new(
                    f, artifact, component, ledger, None, None,
                ))),
                Err(e) => Err(fail(e)),
            },
            Content::Gunzip(p) => match std::fs::File::open(&p) {
                Ok(f) => Ok(Box::new(TrackedReader::new(
                    flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f)),
                    artifact,
                    component,
                    ledger,
                    None,
                    None,
                ))),
                Err(e) => Err(fail(format!("cannot open {}: {e}", p.display()))),
            },
            Content::Produced(p) => match p.open() {
                Ok(r) => Ok(Box::new(TrackedReader::new(
                    r, artifact, component, ledger, None, None,
                ))),
                Err(e) => Err(fail(format!("cannot start producing it: {e}"))),
            },
            Content::Stream(spec) => {
                let mut child = match crate::process::command(&spec.program)
                    .args(&spec.args)
                    .envs(spec.env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                {
                    Ok(c) => c,
                    Err(e) => return Err(fail(format!("cannot run `{}`: {e}", spec.shown()))),
                };
                let stdout = child.stdout.take().expect("piped stdout");
                let stderr = child
                    .stderr
                    .take()
                    .map(|e| std::thread::spawn(move || tail(e)));
                let guard = ChildGuard {
                    child,
                    what: spec.what.clone(),
                    stderr,
                };
                Ok(Box::new(TrackedReader::new(
                    stdout,
                    artifact,
                    component,
                    ledger,
                    Some(guard),
                    spec.magic,
                )))
            }
        }
    }
}

/// Opens a file a tree walk found, only if it is still that file: opened
/// with `O_NOFOLLOW` (a symlink in its place fails) and `O_NONBLOCK` (a FIFO
/// in its place does not hang the open), then `fstat` must show a regular
/// file with the walked device and inode (a directory above it swapped for
/// a symlink leads elsewhere, and fails here). The error names the file.
fn open_walked(path: &Path, dev: u64, ino: u64) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                format!(
                    "{} was replaced by a symlink after it was listed; not stored",
                    path.display()
                )
            } else {
                format!("cannot open {}: {e}", path.display())
            }
        })?;
    let m = f
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    if !m.is_file() || m.dev() != dev || m.ino() != ino {
        return Err(format!(
            "{} is no longer the file that was listed (device/inode {dev}/{ino}, now {}/{}{}); not stored",
            path.display(),
            m.dev(),
            m.ino(),
            if m.is_file() { "" } else { ", not a regular file" }
        ));
    }
    Ok(f)
}

/// The last 20 lines of a child's stderr.
fn tail(stderr: impl Read) -> String {
    let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if lines.len() == 20 {
            lines.pop_front();
        }
        lines.push_back(line);
    }
    Vec::from(lines).join("\n")
}

struct ArcBytes(Arc<Vec<u8>>);
impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn file_node(name: &str, size: u64, time: jiff::Timestamp) -> Node {
    let meta = Metadata {
        mode: Some(0o644),
        mtime: Some(time),
        ctime: Some(time),
        uid: Some(0),
        gid: Some(0),
        size,
        ..Metadata::default()
    };
    Node::new_node(OsStr::new(name), NodeType::File, meta)
}

fn dir_node_from(path: &Path, name: &str) -> std::io::Result<Node> {
    let m = std::fs::symlink_metadata(path)?;
    let ts =
        |secs: i64, nanos: i64| jiff::Timestamp::new(secs, i32::try_from(nanos).unwrap_or(0)).ok();
    let meta = Metadata {
        mode: Some(m.mode() & 0o7777),
        mtime: ts(m.mtime(), m.mtime_nsec()),
        ctime: ts(m.ctime(), m.ctime_nsec()),
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        inode: m.ino(),
        device_id: m.dev(),
        ..Metadata::default()
    };
    Ok(Node::new_node(OsStr::new(name), NodeType::Dir, meta))
}

type Item = RusticResult<ReadSourceEntry<EntryOpen>>;

/// An entry between the walk and the archiver.
enum Pending {
    /// Built when expanded (single files, directories above them): few.
    Built(Box<ReadSourceEntry<EntryOpen>>),
    /// Found by the walk of tree number `tree`, packed until asked for.
    Walked { tree: u32, packed: Packed },
}

/// Pending entries in chunks: one `Vec` of 300,000 would double into
/// twice the memory it needs, and a chunk is freed once the archiver is
/// past it.
#[derive(Default)]
struct Chunks(Vec<Vec<Pending>>);

impl Chunks {
    const LEN: usize = 4096;

    fn push(&mut self, p: Pending) {
        match self.0.last_mut() {
            Some(c) if c.len() < Self::LEN => c.push(p),
            _ => {
                let mut c = Vec::with_capacity(Self::LEN);
                c.push(p);
                self.0.push(c);
            }
        }
    }
}

/// A walked tree, as [`Pending::Walked`] names it.
struct Walk {
    component: Arc<str>,
    root: PathBuf,
    target: String,
}

/// The entries of a [`StackSource`], walked in full when it was made
/// (every listing is over before the archiver opens the first file; see
/// decision 0040) and built into `ReadSourceEntry`s one at a time.
pub struct Expanded {
    pending: std::iter::Flatten<std::vec::IntoIter<Vec<Pending>>>,
    walks: Vec<Walk>,
    names: Names,
    ledger: Arc<Ledger>,
}

impl Iterator for Expanded {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        Some(Ok(match self.pending.next()? {
            Pending::Built(e) => *e,
            Pending::Walked { tree, packed } => {
                let walk = &self.walks[tree as usize];
                let rel = Path::new(&*packed.rel);
                let snap_rel = format!("{}/{}", walk.target, rel.display());
                let open = packed.is_file().then(|| EntryOpen {
                    artifact: snap_rel.clone(),
                    component: walk.component.to_string(),
                    content: Content::Walked {
                        path: walk.root.join(rel),
                        dev: packed.dev,
                        ino: packed.inode(),
                    },
                    ledger: self.ledger.clone(),
                });
                ReadSourceEntry {
                    path: PathBuf::from(format!("/{snap_rel}")),
                    node: packed.unpack(&self.names),
                    open,
                }
            }
        }))
    }
}

impl ReadSource for StackSource {
    type Open = EntryOpen;
    type Iter = Expanded;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    /// Expands every entry. Local trees are walked here (metadata only;
    /// file contents are read later by the archiver's workers).
    fn entries(&self) -> Self::Iter {
        let mut out = Chunks::default();
        let mut walks: Vec<Walk> = Vec::new();
        let mut names = Names::default();
        let mut yielded = self.yielded.lock().expect("yielded lock");
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let built = |path: String, node: Node, open: Option<EntryOpen>| {
            Pending::Built(Box::new(ReadSourceEntry {
                path: PathBuf::from(path),
                node,
                open,
            }))
        };
        for entry in &self.entries {
            // Parent directories get explicit nodes (mode 0755, this
            // backup's time) instead of the archiver's time-less ones.
            let target = entry.target();
            let mut prefix = String::new();
            for part in target
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map_or(&[][..], |(_, p)| p)
            {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                if dirs.insert(prefix.clone()) {
                    let mut node = file_node(part, 0, self.time);
                    node.node_type = NodeType::Dir;
                    node.meta.mode = Some(0o755);
                    out.push(built(format!("/{prefix}"), node, None));
                }
            }
            match entry {
                Entry::File(a) => {
                    let name = a.path.rsplit('/').next().unwrap_or(&a.path);
                    let size = match &a.content {
                        Content::Bytes(b) => b.len() as u64,
                        _ => 0,
                    };
                    let node = match &a.reuse_meta {
                        Some(meta) => {
                            Node::new_node(OsStr::new(name), NodeType::File, (**meta).clone())
                        }
                        None => {
                            // The archiver takes a new file's content as
                            // its chunker's guide (vendored patch 0008-4).
                            let mut node = file_node(name, size, self.time);
                            node.content = self.guides.get(&a.path).cloned();
                            node
                        }
                    };
                    yielded.insert(Yielded {
                        path: a.path.clone(),
                        component: a.component.as_str().into(),
                        is_file: true,
                        size: node.meta.size,
                    });
                    let open = EntryOpen {
                        artifact: a.path.clone(),
                        component: a.component.clone(),
                        content: a.content.clone(),
                        ledger: self.ledger.clone(),
                    };
                    out.push(built(format!("/{}", a.path), node, Some(open)));
                }
                Entry::Tree {
                    component,
                    root,
                    target,
                } => {
                    walks.push(Walk {
                        component: component.as_str().into(),
                        root: root.clone(),
                        target: target.clone(),
                    });
                    self.walk_tree(&walks, &mut names, &mut out, &mut yielded);
                }
            }
        }
        Expanded {
            pending: out.0.into_iter().flatten(),
            walks,
            names,
            ledger: self.ledger.clone(),
        }
    }
}

impl StackSource {
    /// Walks the last of `walks` into `out`, packed.
    fn walk_tree(
        &self,
        walks: &[Walk],
        names: &mut Names,
        out: &mut Chunks,
        yielded: &mut BTreeSet<Yielded>,
    ) {
        let Walk {
            component,
            root,
            target,
        } = &walks[walks.len() - 1];
        let tree = u32::try_from(walks.len() - 1).expect("fewer than 2^32 trees");
        let name = target.rsplit('/').next().unwrap_or(target);
        match dir_node_from(root, name) {
            Ok(node) => out.push(Pending::Built(Box::new(ReadSourceEntry {
                path: PathBuf::from(format!("/{target}")),
                node,
                open: None,
            }))),
            Err(e) => {
                self.ledger
                    .fail_component(component, format!("cannot read {}: {e}", root.display()));
                return;
            }
        }
        // The device of every entry, to check each file when it is opened;
        // stored only for hard links, as by default (below).
        let save = LocalSourceSaveOptions::default().set_devid(DevIdOption::Yes);
        let src = match LocalSource::new(
            save,
            &Excludes::default(),
            &LocalSourceFilterOptions::default(),
            &[root],
        ) {
            Ok(s) => s,
            Err(e) => {
                self.ledger.fail_component(
                    component,
                    format!("cannot walk {}: {}", root.display(), e.display_log()),
                );
                return;
            }
        };
        for item in src.entries() {
            match item {
                Ok(ReadSourceEntry { path, mut node, .. }) => {
                    let dev = node.meta.device_id;
                    // As rustic's default: directories (two or more links
                    // always) and single-link files store none, so trees
                    // stay the same across hosts and device renumbering.
                    if node.meta.links <= 1 || node.is_dir() {
                        node.meta.device_id = 0;
                    }
                    let Ok(rel) = path.strip_prefix(root) else {
                        self.ledger.fail_component(
                            component,
                            format!("{} is outside {}", path.display(), root.display()),
                        );
                        continue;
                    };
                    if rel.as_os_str().is_empty() {
                        continue;
                    }
                    let packed = Packed::pack(rel, dev, node, names);
                    if !packed.is_dir() {
                        yielded.insert(Yielded {
                            path: format!("{target}/{}", rel.display()),
                            component: component.clone(),
                            is_file: packed.is_file(),
                            size: packed.size(),
                        });
                    }
                    out.push(Pending::Walked { tree, packed });
                }
                Err(e) => self.ledger.fail_component(
                    component,
                    format!("reading {}: {}", root.display(), e.display_log()),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use super::{Entry, EntryOpen, ReadSource, ReadSourceOpen, StackSource};
    use crate::ledger::{Ledger, Outcome};

    const HOST: &str = "root:$y$host-secret-hash:19000:0:99999:7:::\n";

    /// A tree with `sub/data.txt`, walked; and a "host" directory outside
    /// it holding `data.txt` with the host's secret.
    fn walked() -> (tempfile::TempDir, Arc<Ledger>, Vec<(String, EntryOpen)>) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("volume");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/data.txt"), "the volume's own bytes\n").unwrap();
        std::fs::create_dir_all(tmp.path().join("host")).unwrap();
        std::fs::write(tmp.path().join("host/data.txt"), HOST).unwrap();
        let ledger = Arc::new(Ledger::new(None));
        let source = StackSource::new(
            vec![Entry::Tree {
                component: "docker.volume.v".into(),
                root,
                target: "docker/volumes/v".into(),
            }],
            ledger.clone(),
        );
        let opens = source
            .entries()
            .filter_map(|e| {
                let e = e.unwrap();
                e.open.map(|o| (e.path.to_string_lossy().to_string(), o))
            })
            .collect();
        (tmp, ledger, opens)
    }

    fn read(o: EntryOpen) -> Result<String, String> {
        let mut r = o.open().map_err(|e| e.to_string())?;
        let mut s = String::new();
        r.read_to_string(&mut s).map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn an_unchanged_file_is_read() {
        let (_tmp, _ledger, mut opens) = walked();
        assert_eq!(opens.len(), 1);
        let (path, o) = opens.remove(0);
        assert_eq!(path, "/docker/volumes/v/sub/data.txt");
        assert_eq!(read(o).unwrap(), "the volume's own bytes\n");
    }

    #[test]
    fn a_file_swapped_for_a_symlink_after_the_walk_is_not_read() {
        let (tmp, ledger, mut opens) = walked();
        let file = tmp.path().join("volume/sub/data.txt");
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("host/data.txt"), &file).unwrap();
        let (_, o) = opens.remove(0);
        let err = read(o).unwrap_err();
        assert!(!err.contains("host-secret"), "{err}");
        assert!(
            err.contains("sub/data.txt") && err.contains("symlink"),
            "{err}"
        );
        assert!(matches!(
            ledger.get("docker/volumes/v/sub/data.txt"),
            Some(Outcome::Failed(m)) if m.contains("replaced by a symlink")
        ));
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_walk_is_not_read() {
        let (tmp, ledger, mut opens) = walked();
        let sub = tmp.path().join("volume/sub");
        std::fs::rename(&sub, tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("host"), &sub).unwrap();
        let (_, o) = opens.remove(0);
        let err = read(o).unwrap_err();
        assert!(!err.contains("host-secret"), "{err}");
        assert!(err.contains("no longer the file that was listed"), "{err}");
        assert!(matches!(
            ledger.get("docker/volumes/v/sub/data.txt"),
            Some(Outcome::Failed(_))
        ));
    }

    #[test]
    fn a_file_swapped_for_a_fifo_fails_without_hanging() {
        let (tmp, _ledger, mut opens) = walked();
        let file = tmp.path().join("volume/sub/data.txt");
        std::fs::remove_file(&file).unwrap();
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (_, o) = opens.remove(0);
        let err = read(o).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
