use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

mod fixed_size;
pub mod rabin;

use fixed_size::ChunkIter as FixedSizeChunkIter;
use rabin::{ChunkIter as RabinChunkIter, Guide, RabinTables};

use crate::{
    Id, RusticResult,
    repofile::{ConfigFile, configfile::Chunker},
};

/// The rolling hash tables for `poly`.
///
/// stack-backup patch: building them takes about 0.3 ms, and a `ChunkIter`
/// is made for every file, so a backup of 30,000 small files spent seconds
/// building the same tables. They are built once per polynomial.
fn rabin_tables(poly: u64) -> Arc<RabinTables> {
    static TABLES: OnceLock<Mutex<Vec<(u64, Arc<RabinTables>)>>> = OnceLock::new();
    let mut tables = TABLES
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, t)) = tables.iter().find(|(p, _)| *p == poly) {
        return t.clone();
    }
    let t = Arc::new(RabinTables::new(poly));
    tables.push((poly, t.clone()));
    t
}

/// `ChunkIter` is an iterator that chunks data.
pub(crate) enum ChunkIter<R: Read + Send> {
    Rabin(Box<RabinChunkIter<R>>),
    FixedSize(FixedSizeChunkIter<R>),
}

impl<R: Read + Send> ChunkIter<R> {
    /// A chunker for `reader` as the repository config says; `guide` (the
    /// chunks of the file's previous content, ID and length) speeds up the
    /// Rabin chunker on content that did not change (see [`rabin::Guide`]).
    pub(crate) fn from_config(
        config: &ConfigFile,
        reader: R,
        size_hint: usize,
        guide: Option<Vec<(Id, usize)>>,
    ) -> RusticResult<Self> {
        let iter = match config.chunker() {
            Chunker::Rabin => {
                let poly = config.poly()?;
                let rabin = rabin_tables(poly);
                let mut iter = RabinChunkIter::new(
                    rabin,
                    config.chunk_size(),
                    config.chunk_min_size(),
                    config.chunk_max_size(),
                    reader,
                    size_hint,
                )?;
                if let Some(chunks) = guide {
                    iter = iter.with_guide(Guide::new(chunks));
                }
                Self::Rabin(Box::new(iter))
            }
            Chunker::FixedSize => Self::FixedSize(FixedSizeChunkIter::new(
                config.chunk_size(),
                reader,
                size_hint,
            )),
        };
        Ok(iter)
    }
}

impl<R: Read + Send> ChunkIter<R> {
    /// The next chunk, with its ID when the chunker computed it already.
    pub(crate) fn next_with_id(&mut self) -> Option<RusticResult<(Vec<u8>, Option<Id>)>> {
        match self {
            Self::Rabin(rabin) => rabin.next_with_id(),
            Self::FixedSize(fixed_size) => fixed_size.next().map(|r| r.map(|c| (c, None))),
        }
    }
}

impl<R: Read + Send> Iterator for ChunkIter<R> {
    type Item = RusticResult<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Rabin(rabin) => rabin.next(),
            Self::FixedSize(fixed_size) => fixed_size.next(),
        }
    }
}
