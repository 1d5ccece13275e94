//! A walked tree entry kept small between the walk and the archiver.
//!
//! The backup source walks every local tree before the archiver reads the
//! first file (decision 0040: the listing is over before a container can
//! react to the backup), so it holds one entry per file until the archiver
//! asks for it. As a rustic `Node` inside a `ReadSourceEntry` with its
//! opener that was about 0.9 KB per file, 270 MB of a backup of 300,000
//! files. [`Packed`] keeps what the walk found in about 0.2 KB: the path
//! below the tree's root once, user and group names interned, and whatever
//! is rare (a symlink's target, a device, extended attributes) boxed.
//! [`Packed::unpack`] gives back the very `Node` that was packed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use rustic_core::repofile::{Metadata, Node, NodeType};

/// User and group names of one walk, each stored once.
#[derive(Debug, Default)]
pub struct Names {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Names {
    fn intern(&mut self, name: Option<String>) -> Option<u32> {
        let name = name?;
        if let Some(&i) = self.index.get(&name) {
            return Some(i);
        }
        let i = u32::try_from(self.names.len()).expect("fewer than 2^32 user and group names");
        self.names.push(name.clone());
        self.index.insert(name, i);
        Some(i)
    }

    fn get(&self, i: Option<u32>) -> Option<String> {
        i.map(|i| self.names[i as usize].clone())
    }
}

/// What is seldom set on a walked node (a type other than file or
/// directory, a name that is not the escaped last part of the path,
/// extended attributes, content or subtree), boxed so that the common file
/// or directory does not pay for it: a node with only these set; the rest
/// of its metadata is in [`Packed`].
#[derive(Debug)]
struct Rare(Node);

/// One walked node, packed.
#[derive(Debug)]
pub struct Packed {
    /// The path below the tree's root, as the walk found it.
    pub rel: Box<OsStr>,
    /// `st_dev` as the walk saw it (the node's own is zeroed for files
    /// with one link), to check the file when it is opened.
    pub dev: u64,
    rare: Option<Box<Rare>>,
    inode: u64,
    device_id: u64,
    size: u64,
    links: u64,
    /// `mtime`, `atime`, `ctime`: seconds and nanoseconds.
    secs: [i64; 3],
    nanos: [i32; 3],
    /// `mode`, `uid`, `gid`, `user`, `group` (names interned).
    ids: [u32; 5],
    /// Bits 0-4: that id is set; 5-7: that time is set; 8: a directory.
    set: u16,
}

const DIR: u16 = 1 << 8;

impl Packed {
    /// Packs `node`, found at `rel` below the tree's root.
    pub fn pack(rel: &Path, dev: u64, node: Node, names: &mut Names) -> Self {
        // Destructured in full: a field rustic adds must be packed too.
        let Node {
            name,
            node_type,
            meta:
                Metadata {
                    mode,
                    mtime,
                    atime,
                    ctime,
                    uid,
                    gid,
                    user,
                    group,
                    inode,
                    device_id,
                    size,
                    links,
                    extended_attributes,
                },
            content,
            subtree,
        } = node;
        let derived = Node::new_node(
            rel.file_name().unwrap_or_default(),
            NodeType::File,
            Metadata::default(),
        )
        .name;
        let plain = matches!(node_type, NodeType::File | NodeType::Dir);
        let is_dir = node_type == NodeType::Dir;
        let rare = (!plain
            || name != derived
            || !extended_attributes.is_empty()
            || content.is_some()
            || subtree.is_some())
        .then(|| {
            Box::new(Rare(Node {
                name,
                node_type,
                meta: Metadata {
                    extended_attributes,
                    ..Metadata::default()
                },
                content,
                subtree,
            }))
        });
        let mut set = if is_dir { DIR } else { 0 };
        let mut ids = [0; 5];
        let given = [mode, uid, gid, names.intern(user), names.intern(group)];
        for (i, v) in given.into_iter().enumerate() {
            if let Some(v) = v {
                ids[i] = v;
                set |= 1 << i;
            }
        }
        let (mut secs, mut nanos) = ([0; 3], [0; 3]);
        for (i, t) in [mtime, atime, ctime].into_iter().enumerate() {
            if let Some(t) = t {
                secs[i] = t.as_second();
                nanos[i] = t.subsec_nanosecond();
                set |= 1 << (5 + i);
            }
        }
        Self {
            rel: rel.as_os_str().into(),
            dev,
            rare,
            inode,
            device_id,
            size,
            links,
            secs,
            nanos,
            ids,
            set,
        }
    }

    fn id(&self, i: usize) -> Option<u32> {
        (self.set & (1 << i) != 0).then_some(self.ids[i])
    }

    fn time(&self, i: usize) -> Option<jiff::Timestamp> {
        (self.set & (1 << (5 + i)) != 0).then(|| {
            jiff::Timestamp::new(self.secs[i], self.nanos[i])
                .expect("the parts of a valid timestamp make it again")
        })
    }

    /// Whether it is a regular file.
    pub fn is_file(&self) -> bool {
        match &self.rare {
            Some(r) => r.0.is_file(),
            None => self.set & DIR == 0,
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        match &self.rare {
            Some(r) => r.0.is_dir(),
            None => self.set & DIR != 0,
        }
    }

    /// Its size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The inode the walk saw.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// The node that was packed.
    pub fn unpack(&self, names: &Names) -> Node {
        let meta = Metadata {
            mode: self.id(0),
            mtime: self.time(0),
            atime: self.time(1),
            ctime: self.time(2),
            uid: self.id(1),
            gid: self.id(2),
            user: names.get(self.id(3)),
            group: names.get(self.id(4)),
            inode: self.inode,
            device_id: self.device_id,
            size: self.size,
            links: self.links,
            extended_attributes: Vec::new(),
        };
        match &self.rare {
            None => {
                let t = if self.is_dir() {
                    NodeType::Dir
                } else {
                    NodeType::File
                };
                let name = Path::new(&*self.rel).file_name().unwrap_or_default();
                Node::new_node(name, t, meta)
            }
            Some(r) => {
                let mut node = r.0.clone();
                node.meta = Metadata {
                    extended_attributes: node.meta.extended_attributes,
                    ..meta
                };
                node
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::path::Path;

    use rustic_core::repofile::{Metadata, Node, NodeType};
    use rustic_core::{
        LocalSource, LocalSourceFilterOptions, LocalSourceSaveOptions, ReadSource, ReadSourceEntry,
    };

    use super::{Names, Packed};

    fn round_trip(rel: &str, node: Node, names: &mut Names) {
        let packed = Packed::pack(Path::new(rel), 7, node.clone(), names);
        assert_eq!(packed.unpack(names), node, "{rel}");
        assert_eq!(packed.is_file(), node.is_file(), "{rel}");
        assert_eq!(packed.is_dir(), node.is_dir(), "{rel}");
    }

    /// Every node a real walk yields (file, directory, symlink, FIFO, hard
    /// link, a name that is not UTF-8) comes back equal.
    #[test]
    fn every_walked_node_unpacks_equal() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("t");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(root.join("b"), "bb").unwrap();
        std::fs::hard_link(root.join("b"), root.join("sub/b-link")).unwrap();
        std::os::unix::fs::symlink("../b", root.join("sub/to-b")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::write(root.join(OsStr::from_bytes(b"caf\xe9")), "latin-1").unwrap();
        std::fs::write(root.join("with\\backslash"), "x").unwrap();
        let src = LocalSource::new(
            LocalSourceSaveOptions::default(),
            &rustic_core::Excludes::default(),
            &LocalSourceFilterOptions::default(),
            &[&root],
        )
        .unwrap();
        let mut names = Names::default();
        let mut seen = 0;
        for item in src.entries() {
            let ReadSourceEntry { path, node, .. } = item.unwrap();
            let rel = path.strip_prefix(&root).unwrap();
            if rel.as_os_str().is_empty() {
                continue;
            }
            let packed = Packed::pack(rel, 1, node.clone(), &mut names);
            assert_eq!(packed.unpack(&names), node, "{}", path.display());
            assert_eq!(packed.is_file(), node.is_file());
            seen += 1;
        }
        assert_eq!(seen, 9);
        assert_eq!(names.names.len(), 1, "root's user and group: one name");
    }

    /// Fields a local walk does not set on this machine still survive.
    #[test]
    fn rare_fields_unpack_equal() {
        let mut names = Names::default();
        // rustic does not export its extended attribute type: made from JSON.
        let with_xattr: Node = serde_json::from_str(
            r#"{"name":"x","type":"file","extended_attributes":[{"name":"user.k","value":"dg=="}]}"#,
        )
        .unwrap();
        assert_eq!(with_xattr.meta.extended_attributes.len(), 1);
        let meta = Metadata {
            mode: Some(0o600),
            mtime: Some(jiff::Timestamp::new(-86_401, -5).unwrap()),
            ctime: Some(jiff::Timestamp::new(1_700_000_000, 999_999_999).unwrap()),
            uid: Some(1000),
            gid: None,
            user: Some("app".into()),
            group: Some("staff".into()),
            links: 2,
            extended_attributes: with_xattr.meta.extended_attributes,
            ..Metadata::default()
        };
        let dev = NodeType::Chardev { device: 42 };
        round_trip(
            "x/dev",
            Node::new_node(OsStr::new("dev"), dev, meta.clone()),
            &mut names,
        );
        let mut renamed = Node::new_node(OsStr::new("y"), NodeType::File, Metadata::default());
        renamed.name = "not-y".into();
        round_trip("x/y", renamed, &mut names);
        let mut with_content = Node::new_node(OsStr::new("c"), NodeType::File, meta);
        with_content.content = Some(Vec::new());
        round_trip("c", with_content, &mut names);
        assert_eq!(names.names, ["app", "staff"]);
    }
}
