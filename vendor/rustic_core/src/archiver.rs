pub(crate) mod file_archiver;
pub(crate) mod parent;
pub(crate) mod tree;
pub(crate) mod tree_archiver;

use std::path::{Path, PathBuf};
use std::thread::scope;

use jiff::Zoned;
use log::warn;
use pariter::IteratorExt;

use crate::{
    Progress,
    archiver::{
        file_archiver::FileArchiver,
        parent::{ItemWithParent, Parent, ParentResult},
        tree::{TreeIterator, TreeType},
        tree_archiver::TreeArchiver,
    },
    backend::{ReadSource, ReadSourceEntry, decrypt::DecryptFullBackend, node::NodeType},
    blob::BlobType,
    error::RusticResult,
    index::{
        ReadGlobalIndex,
        indexer::{Indexer, SharedIndexer},
    },
    repofile::{configfile::ConfigFile, snapshotfile::SnapshotFile},
};

#[derive(thiserror::Error, Debug, displaydoc::Display)]
/// Tree stack empty
pub struct TreeStackEmptyError;

/// The `Archiver` is responsible for archiving files and trees.
/// It will read the file, chunk it, and write the chunks to the backend.
///
/// # Type Parameters
///
/// * `BE` - The backend type.
/// * `I` - The index to read from.
#[allow(missing_debug_implementations)]
#[allow(clippy::struct_field_names)]
pub struct Archiver<'a, BE: DecryptFullBackend, I: ReadGlobalIndex> {
    /// The `FileArchiver` is responsible for archiving files.
    file_archiver: FileArchiver<'a, BE, I>,

    /// The `TreeArchiver` is responsible for archiving trees.
    tree_archiver: TreeArchiver<'a, BE, I>,

    /// The parent snapshot to use.
    parent: Parent,

    /// The `SharedIndexer` is used to index the data.
    indexer: SharedIndexer<BE>,

    /// The backend to write to.
    be: BE,

    /// The backend to write to.
    index: &'a I,

    /// The `SnapshotFile` to write to.
    snap: SnapshotFile,
}

impl<'a, BE: DecryptFullBackend, I: ReadGlobalIndex> Archiver<'a, BE, I> {
    /// Creates a new `Archiver`.
    ///
    /// # Arguments
    ///
    /// * `be` - The backend to write to.
    /// * `index` - The index to read from.
    /// * `config` - The config file.
    /// * `parent` - The parent snapshot to use.
    /// * `snap` - The `SnapshotFile` to write to.
    ///
    /// # Errors
    ///
    /// * If sending the message to the raw packer fails.
    /// * If converting the data length to u64 fails
    pub fn new(
        be: BE,
        index: &'a I,
        config: &ConfigFile,
        parent: Parent,
        mut snap: SnapshotFile,
    ) -> RusticResult<Self> {
        let indexer = Indexer::new(be.clone()).into_shared();
        let mut summary = snap.summary.take().unwrap_or_default();
        summary.backup_start = Zoned::now();

        let file_archiver = FileArchiver::new(be.clone(), index, indexer.clone(), config)?;
        let tree_archiver = TreeArchiver::new(be.clone(), index, indexer.clone(), config, summary)?;

        Ok(Self {
            file_archiver,
            tree_archiver,
            parent,
            indexer,
            be,
            index,
            snap,
        })
    }

    /// Archives the given source.
    ///
    /// This will archive all files and trees in the given source.
    ///
    /// # Type Parameters
    ///
    /// * `R` - The type of the source.
    ///
    /// # Arguments
    ///
    /// * `index` - The index to read from.
    /// * `src` - The source to archive.
    /// * `backup_path` - The path to the backup.
    /// * `as_path` - The path to archive the backup as.
    /// * `skip_identical_parent` - skip saving of snapshot if tree is identical to parent tree.
    /// * `p` - The progress bar.
    ///
    /// # Errors
    ///
    /// * If sending the message to the raw packer fails.
    /// * If the index file could not be serialized.
    /// * If the time is not in the range of `Local::now()`.
    pub fn archive<R>(
        mut self,
        src: &R,
        backup_path: &Path,
        as_path: Option<&PathBuf>,
        skip_identical_parent: bool,
        no_scan: bool,
        p: &Progress,
    ) -> RusticResult<SnapshotFile>
    where
        R: ReadSource + 'static,
        <R as ReadSource>::Open: Send,
        <R as ReadSource>::Iter: Send,
    {
        scope(|s| -> RusticResult<_> {
            // determine backup size in parallel to running backup
            let src_size_handle = s.spawn(|| {
                if !no_scan && !p.is_hidden() {
                    match src.size() {
                        Ok(Some(size)) => p.set_length(size),
                        Ok(None) => {}
                        Err(err) => warn!("error determining backup size: {}", err.display_log()),
                    }
                }
            });

            // filter out errors and handle as_path
            let iter = src.entries().filter_map(|item| match item {
                Err(err) => {
                    warn!("ignoring error: {}", err.display_log());
                    None
                }
                Ok(ReadSourceEntry { path, node, open }) => {
                    let snapshot_path = if let Some(as_path) = as_path {
                        as_path
                            .clone()
                            .join(path.strip_prefix(backup_path).unwrap())
                    } else {
                        path
                    };
                    Some(if node.is_dir() {
                        (snapshot_path, node, open)
                    } else {
                        (
                            snapshot_path
                                .parent()
                                .expect("file path should have a parent!")
                                .to_path_buf(),
                            node,
                            open,
                        )
                    })
                }
            });
            // handle beginning and ending of trees
            let iter = TreeIterator::new(iter);

            // use parent snapshot
            iter.filter_map(
                |item| match self.parent.process(&self.be, self.index, item) {
                    Ok(item) => Some(item),
                    Err(err) => {
                        warn!("ignoring error reading parent snapshot: {err:?}");
                        None
                    }
                },
            )
            // stack-backup patch: items travel to the workers in batches
            // (see `Batches`), each worker taking one batch in order
            .batched()
            // archive files in parallel
            .parallel_map_scoped(s, |batch| {
                batch
                    .into_iter()
                    .map(|item| self.file_archiver.process(item, p))
                    .collect::<Vec<_>>()
            })
            .readahead_scoped(s)
            .flatten()
            .filter_map(|item| match item {
                Ok(item) => Some(item),
                Err(err) => {
                    warn!("ignoring error: {}", err.display_log());
                    None
                }
            })
            .try_for_each(|item| self.tree_archiver.add(item))?;

            src_size_handle
                .join()
                .expect("Scoped Size Handler thread should not panic!");

            Ok(())
        })?;

        let stats = self.file_archiver.finalize()?;
        let (id, mut summary) = self.tree_archiver.finalize(self.parent.tree_id())?;
        stats.apply(&mut summary, BlobType::Data);
        self.snap.tree = id;

        self.indexer.write().unwrap().finalize()?;

        summary.finalize(&self.snap.time);
        self.snap.summary = Some(summary);

        if !skip_identical_parent || Some(self.snap.tree) != self.parent.tree_id() {
            let id = self.be.save_file(&self.snap)?;
            self.snap.id = id.into();
        }

        p.finish();
        Ok(self.snap)
    }
}

/// stack-backup patch: the archiver's items in batches.
///
/// Each item used to cross two thread hand-offs on its own (to a worker and
/// back through the read-ahead), four items in flight at a time. For a file
/// its parent already holds, that hand-off was all the work there was: an
/// unchanged backup of 30,000 small files spent most of its walk waking
/// threads. A batch ends after [`Self::MAX_ITEMS`] items, or once the file
/// contents it has to read add up to [`Self::MAX_BYTES`]; a file of unknown
/// size (a stream, whose node says 0) ends its batch too, so that large
/// reads still go to the workers one by one and run in parallel.
/// Order is kept: batches come back in order, and so do their items.
pub(crate) struct Batches<I> {
    iter: I,
}

impl<I> Batches<I> {
    /// Items per batch at most.
    const MAX_ITEMS: usize = 256;
    /// Bytes to read per batch at most (the item that passes it included).
    const MAX_BYTES: u64 = 1 << 20;

    /// The bytes processing `item` reads: its size for a file the parent
    /// does not match, [`Self::MAX_BYTES`] when that size is not known.
    fn cost<O>(item: &ItemWithParent<O>) -> u64 {
        match item {
            TreeType::Other((_, node, (_, parent)))
                if node.node_type == NodeType::File
                    && !matches!(parent, ParentResult::Matched(())) =>
            {
                match node.meta.size {
                    0 => Self::MAX_BYTES,
                    size => size,
                }
            }
            _ => 0,
        }
    }
}

impl<O, I: Iterator<Item = ItemWithParent<O>>> Iterator for Batches<I> {
    type Item = Vec<ItemWithParent<O>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut batch = Vec::new();
        let mut bytes = 0_u64;
        while batch.len() < Self::MAX_ITEMS && bytes < Self::MAX_BYTES {
            let Some(item) = self.iter.next() else { break };
            bytes = bytes.saturating_add(Self::cost(&item));
            batch.push(item);
        }
        (!batch.is_empty()).then_some(batch)
    }
}

/// stack-backup patch: `.batched()` on the archiver's items.
trait Batched: Sized {
    fn batched(self) -> Batches<Self>;
}

impl<O, I: Iterator<Item = ItemWithParent<O>>> Batched for I {
    fn batched(self) -> Batches<Self> {
        Batches { iter: self }
    }
}

#[cfg(test)]
mod batch_tests {
    use std::{ffi::OsStr, path::PathBuf};

    use super::{Batched, Batches};
    use crate::{
        archiver::{
            parent::{ItemWithParent, ParentResult},
            tree::TreeType,
        },
        backend::node::{Metadata, Node, NodeType},
    };

    type Item = ItemWithParent<u32>;

    fn file(tag: u32, size: u64, parent: ParentResult<()>) -> Item {
        let meta = Metadata {
            size,
            ..Metadata::default()
        };
        let node = Node::new_node(OsStr::new("f"), NodeType::File, meta);
        TreeType::Other((PathBuf::from("/d/f"), node, (tag, parent)))
    }

    fn tags(batch: &[Item]) -> Vec<u32> {
        batch
            .iter()
            .filter_map(|i| match i {
                TreeType::Other((_, _, (t, _))) => Some(*t),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn unchanged_files_travel_together_in_order() {
        let n = 3 * Batches::<()>::MAX_ITEMS as u32 + 5;
        let items: Vec<Item> = (0..n)
            .map(|t| file(t, 1 << 30, ParentResult::Matched(())))
            .collect();
        let batches: Vec<Vec<Item>> = items.into_iter().batched().collect();
        let lens: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(lens, [256, 256, 256, 5]);
        let all: Vec<u32> = batches.iter().flat_map(|b| tags(b)).collect();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn a_batch_ends_once_its_reads_reach_a_mebibyte_or_a_size_is_unknown() {
        let items = vec![
            file(0, 600 << 10, ParentResult::NotFound),
            file(1, 5, ParentResult::Matched(())),
            // 600 KiB + 500 KiB: past the mebibyte, ends the batch
            file(2, 500 << 10, ParentResult::NotMatched),
            // a stream: size unknown (0), alone
            file(3, 0, ParentResult::NotFound),
            TreeType::EndTree,
            file(4, 10, ParentResult::NotFound),
            file(5, 0, ParentResult::NotMatched),
            file(6, 10, ParentResult::NotFound),
        ];
        let batches: Vec<Vec<u32>> = items.into_iter().batched().map(|b| tags(&b)).collect();
        assert_eq!(batches, [vec![0, 1, 2], vec![3], vec![4, 5], vec![6]]);
    }
}
