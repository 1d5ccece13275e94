//! A read-through cache of whole pack files for remote repositories.
//!
//! Reading a backup set back (restore's verify step, the restore itself,
//! `copy`) asks the backend for one byte range per blob: thousands of small
//! requests for a directory of small files, each a round trip to the object
//! store. [`PackCache`] sits between rustic and the remote backend: the
//! first range read of a pack is passed through; from the second on, the
//! whole pack is downloaded once into a private directory and every later
//! range is read from that file. Packs are dropped oldest first beyond a
//! byte budget, and the directory is removed when the cache is dropped
//! (a directory left by a killed process is removed by the next one).
//!
//! Only pack reads are affected; index, snapshot and key files go through
//! rustic's own cache, and writes pass straight through.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};

/// Default byte budget of downloaded packs kept at once.
pub const DEFAULT_BUDGET: u64 = 2 << 30;

#[derive(Default)]
struct Slot {
    /// Range reads seen for this pack.
    hits: u32,
    /// The downloaded pack, once fetched.
    file: Option<PathBuf>,
}

#[derive(Default)]
struct State {
    slots: HashMap<Id, Arc<Mutex<Slot>>>,
    /// Fetched packs, oldest first, with their sizes.
    fetched: VecDeque<(Id, u64)>,
    bytes: u64,
}

/// A [`WriteBackend`] wrapper that keeps whole packs of a remote backend.
pub struct PackCache {
    inner: Arc<dyn WriteBackend>,
    dir: PathBuf,
    budget: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for PackCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackCache")
            .field("dir", &self.dir)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Box<RusticError> {
    RusticError::with_source(
        ErrorKind::InputOutput,
        "pack cache: {what} `{path}` failed",
        e,
    )
    .attach_context("what", what.to_string())
    .attach_context("path", path.display().to_string())
}

impl PackCache {
    /// Wraps `inner`, keeping packs in a new directory `packs-<pid>-<n>`
    /// under `parent` (removing such directories of processes that are
    /// gone). `budget` bounds the bytes kept at once.
    pub fn new(inner: Arc<dyn WriteBackend>, parent: &Path, budget: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(parent)?;
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix("packs-")
                    .and_then(|r| r.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if let Some(pid) = pid {
                    if !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = parent.join(format!("packs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            inner,
            dir,
            budget,
            state: Mutex::new(State::default()),
        })
    }

    fn slot(&self, id: &Id) -> Arc<Mutex<Slot>> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.slots.entry(*id).or_default().clone()
    }

    /// Records a fetched pack and drops the oldest beyond the budget.
    fn account(&self, id: Id, size: u64) {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.fetched.push_back((id, size));
        st.bytes += size;
        while st.bytes > self.budget && st.fetched.len() > 1 {
            let Some((old, sz)) = st.fetched.pop_front() else {
                break;
            };
            st.bytes -= sz;
            if let Some(slot) = st.slots.get(&old).cloned() {
                // Never block on a pack being read right now: skip it.
                if let Ok(mut s) = slot.try_lock() {
                    if let Some(f) = s.file.take() {
                        let _ = std::fs::remove_file(f);
                    }
                    s.hits = 0;
                }
            }
        }
    }

    fn read_pack_range(&self, id: &Id, offset: u32, length: u32) -> RusticResult<Bytes> {
        let slot = self.slot(id);
        let mut s = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.hits += 1;
        if s.file.is_none() {
            if s.hits < 2 {
                drop(s);
                return self
                    .inner
                    .read_partial(FileType::Pack, id, false, offset, length);
            }
            let data = self.inner.read_full(FileType::Pack, id)?;
            let path = self.dir.join(id.to_hex().as_str());
            std::fs::write(&path, &data).map_err(|e| io_err("writing", &path, e))?;
            s.file = Some(path);
            drop(s);
            self.account(*id, data.len() as u64);
            let start = offset as usize;
            let end = start + length as usize;
            if end > data.len() {
                return Err(RusticError::new(
                    ErrorKind::Backend,
                    "pack `{id}` is shorter than the range asked for",
                )
                .attach_context("id", id.to_string()));
            }
            return Ok(data.slice(start..end));
        }
        let path = s.file.clone().unwrap_or_default();
        let f = std::fs::File::open(&path).map_err(|e| io_err("opening", &path, e))?;
        let mut buf = vec![0u8; length as usize];
        f.read_exact_at(&mut buf, u64::from(offset))
            .map_err(|e| io_err("reading", &path, e))?;
        Ok(Bytes::from(buf))
    }
}

impl Drop for PackCache {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ReadBackend for PackCache {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.inner.list_with_size(tpe)
    }

    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        self.inner.list(tpe)
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.inner.read_full(tpe, id)
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        if tpe == FileType::Pack && !cacheable {
            return self.read_pack_range(id, offset, length);
        }
        self.inner.read_partial(tpe, id, cacheable, offset, length)
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.inner.warmup_path(tpe, id)
    }

    fn needs_warm_up(&self) -> bool {
        self.inner.needs_warm_up()
    }

    fn warm_up(&self, tpe: FileType, id: &Id) -> RusticResult<()> {
        self.inner.warm_up(tpe, id)
    }
}

impl WriteBackend for PackCache {
    fn create(&self) -> RusticResult<()> {
        self.inner.create()
    }

    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        self.inner.write_bytes(tpe, id, cacheable, content)
    }

    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        if tpe == FileType::Pack {
            let mut st = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(slot) = st.slots.remove(id) {
                if let Ok(mut s) = slot.lock() {
                    if let Some(f) = s.file.take() {
                        let _ = std::fs::remove_file(f);
                    }
                }
            }
        }
        self.inner.remove(tpe, id, cacheable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend holding packs in memory and counting its reads.
    #[derive(Debug, Default)]
    struct Mem {
        packs: Mutex<HashMap<Id, Bytes>>,
        full: std::sync::atomic::AtomicUsize,
        partial: std::sync::atomic::AtomicUsize,
    }

    impl ReadBackend for Mem {
        fn location(&self) -> String {
            "mem".into()
        }
        fn list_with_size(&self, _: FileType) -> RusticResult<Vec<(Id, u32)>> {
            Ok(Vec::new())
        }
        fn read_full(&self, _: FileType, id: &Id) -> RusticResult<Bytes> {
            self.full.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.packs.lock().unwrap()[id].clone())
        }
        fn read_partial(
            &self,
            _: FileType,
            id: &Id,
            _: bool,
            offset: u32,
            length: u32,
        ) -> RusticResult<Bytes> {
            self.partial
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.packs.lock().unwrap()[id].slice(offset as usize..(offset + length) as usize))
        }
        fn warmup_path(&self, _: FileType, _: &Id) -> String {
            String::new()
        }
    }

    impl WriteBackend for Mem {
        fn write_bytes(&self, _: FileType, _: &Id, _: bool, _: BytesList) -> RusticResult<()> {
            Ok(())
        }
        fn remove(&self, _: FileType, _: &Id, _: bool) -> RusticResult<()> {
            Ok(())
        }
    }

    #[test]
    fn second_range_read_fetches_the_pack_once_and_budget_evicts() {
        let mem = Arc::new(Mem::default());
        let ids: Vec<Id> = (0u8..3).map(|i| Id::new([i; 32])).collect();
        for (i, id) in ids.iter().enumerate() {
            let data: Vec<u8> = (0..1000u32)
                .map(|b| (b as u8).wrapping_add(i as u8))
                .collect();
            mem.packs.lock().unwrap().insert(*id, Bytes::from(data));
        }
        let dir = tempfile::tempdir().unwrap();
        let pc = PackCache::new(mem.clone(), dir.path(), 1500).unwrap();
        let read =
            |id: &Id, o: u32, l: u32| pc.read_partial(FileType::Pack, id, false, o, l).unwrap();
        for (o, l) in [(0, 10), (10, 20), (500, 100), (990, 10)] {
            let want = mem.packs.lock().unwrap()[&ids[0]].slice(o as usize..(o + l) as usize);
            assert_eq!(read(&ids[0], o, l), want);
        }
        use std::sync::atomic::Ordering::SeqCst;
        assert_eq!(mem.partial.load(SeqCst), 1);
        assert_eq!(mem.full.load(SeqCst), 1);
        // Two more packs exceed the budget: the oldest is dropped.
        read(&ids[1], 0, 1);
        read(&ids[1], 1, 1);
        read(&ids[2], 0, 1);
        read(&ids[2], 1, 1);
        let kept = std::fs::read_dir(&pc.dir).unwrap().count();
        assert_eq!(kept, 1, "budget of 1500 bytes keeps one 1000-byte pack");
        let inner_dir = pc.dir.clone();
        drop(pc);
        assert!(!inner_dir.exists());
    }
}
