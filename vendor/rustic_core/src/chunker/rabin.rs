use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

use rand::{RngExt, rng};
use rustic_cdc::{Polynom, Polynom64, Rabin64};

use crate::crypto::hasher::hash;
use crate::error::{ErrorKind, RusticError, RusticResult};
use crate::id::Id;

pub(super) mod constants {
    /// The size of a kilobyte.
    pub(super) const KB: usize = 1024;
    /// Buffer size used for reading - TODO: Find out optimal size for best performance!
    pub(super) const BUF_SIZE: usize = 64 * KB;
    /// Random polynomial maximum tries.
    pub(super) const RAND_POLY_MAX_TRIES: i32 = 1_000_000;
}

pub(crate) fn check_rabin_params(
    chunk_size: usize,
    chunk_min_size: usize,
    chunk_max_size: usize,
) -> RusticResult<()> {
    if (chunk_size & (chunk_size - 1)) != 0 {
        return Err(RusticError::new(
            ErrorKind::Unsupported,
            "Chunk size must be a power of 2 for the rabin chunker. chunk size = {chunk_size}.",
        )
        .attach_context("chunk_size", chunk_size.to_string()));
    }
    if chunk_min_size > chunk_size {
        return Err(RusticError::new(
            ErrorKind::Unsupported,
            "Chunk min size must be smaller or equal than the chunk size.",
        ));
    }
    if chunk_max_size < chunk_size {
        return Err(RusticError::new(
            ErrorKind::Unsupported,
            "Chunk max size must be larger or equal than the chunk size.",
        ));
    }
    Ok(())
}

/// The window of the rolling hash: 64 bytes (`Rabin64::new_with_polynom(6, ..)`).
const WINDOW: usize = 64;

/// The precomputed tables of the Rabin fingerprint of one polynomial.
///
/// stack-backup patch: the rolling hash used to be a `rustic_cdc::Rabin64`
/// built for every file (two 256-entry tables, about 0.3 ms each time) and
/// slid one byte at a time through a `Vec::push`. The tables are now built
/// once per polynomial (see `chunker::rabin_tables`) and the chunker scans
/// its read buffer in a tight loop. The fingerprint, and so every chunk
/// boundary, is unchanged: `chunk_random` below checks the boundaries
/// against the stored snapshot and `same_chunks_as_rustic_cdc` against the
/// old byte-at-a-time loop over `Rabin64`.
#[derive(Debug)]
pub(crate) struct RabinTables {
    /// Takes the byte leaving the window out of the hash.
    out: [Polynom64; 256],
    /// Reduces the hash after a byte came in.
    modulo: [Polynom64; 256],
    /// Degree of the polynomial minus 8.
    shift: i32,
}

impl RabinTables {
    /// The tables for `poly`, as `Rabin64::new_with_polynom(6, &poly)` builds them.
    pub(crate) fn new(poly: Polynom64) -> Self {
        Self {
            out: Rabin64::calculate_out_table(WINDOW, &poly),
            modulo: Rabin64::calculate_mod_table(&poly),
            shift: poly.degree() - 8,
        }
    }
}

/// The rolling hash state: the window as a ring, where the next byte goes.
struct Rolling {
    window: [u8; WINDOW],
    index: usize,
    hash: Polynom64,
}

impl Rolling {
    /// `Rabin64::reset_and_prefill_window`: the hash of the first 63 bytes of
    /// `bytes` (which holds 64), the oldest slot of the window left empty.
    fn prefill(&mut self, t: &RabinTables, bytes: &[u8]) {
        self.hash = 0;
        for &b in &bytes[..WINDOW - 1] {
            self.window[self.index] = b;
            let m = (self.hash >> t.shift) & 255;
            self.hash = (self.hash << 8 | Polynom64::from(b)) ^ t.modulo[m as usize];
            self.index = (self.index + 1) & (WINDOW - 1);
        }
        self.window[self.index] = 0;
    }

    /// Slides the bytes of `data` in, one by one, and stops after the first
    /// byte that leaves `hash & mask == 0`. Returns how many were slid in.
    #[inline]
    fn scan(&mut self, t: &RabinTables, data: &[u8], mask: u64) -> usize {
        let (mut hash, mut index) = (self.hash, self.index);
        let window = &mut self.window;
        let mut n = 0;
        for &b in data {
            hash ^= t.out[window[index] as usize];
            window[index] = b;
            let m = (hash >> t.shift) & 255;
            hash = (hash << 8 | Polynom64::from(b)) ^ t.modulo[m as usize];
            index = (index + 1) & (WINDOW - 1);
            n += 1;
            if hash & mask == 0 {
                break;
            }
        }
        self.hash = hash;
        self.index = index;
        n
    }
}

/// `ChunkIter` is an iterator that chunks data.
pub(crate) struct ChunkIter<R: Read + Send> {
    /// The buffer used for reading (allocated when first needed: a file
    /// smaller than the minimum chunk size never needs it).
    buf: Vec<u8>,

    /// The position in the buffer.
    pos: usize,

    /// The end of the data in the buffer.
    end: usize,

    /// The reader.
    reader: R,

    /// The split mask used to determine if a chunk is a chunk boundary.
    split_mask: u64,

    /// The tables of the rolling hash.
    tables: Arc<RabinTables>,

    /// The rolling hash.
    rolling: Rolling,

    /// The size hint is used to optimize memory allocation; this should be an upper bound on the size.
    size_hint: usize,

    /// The minimum size of a chunk.
    min_size: usize,

    /// The maximum size of a chunk.
    max_size: usize,

    /// If the reader reached its end (the buffer may still hold data).
    finished: bool,

    /// The chunks of the file's previous content, when it has one.
    guide: Option<Guide>,
}

/// stack-backup patch: the previous content of a changed file guides the
/// chunker.
///
/// A content-defined cut depends only on the bytes of the chunk it ends
/// (the rolling hash starts afresh at every cut), so when the bytes after a
/// cut are exactly an old chunk that was followed by another, the chunker
/// would cut at its end again. The chunker therefore predicts, after every
/// chunk that equals an old chunk, the old chunk that followed it: it reads
/// that many bytes and compares their SHA-256 with the old chunk's ID. On a
/// match the chunk is taken without running the rolling hash; otherwise the
/// bytes are put back and the rolling hash cuts as usual from the same
/// place. The old last chunk (ended by the end of the file, not by a cut)
/// is taken only when the new file ends there too. The chunks are therefore
/// exactly those the rolling hash alone would cut; only the work differs (an
/// unchanged stream, such as a dump of an unchanged database, is hashed but
/// never run through the rolling hash).
#[derive(Debug)]
pub(crate) struct Guide {
    /// The old chunks: ID and length.
    chunks: Vec<(Id, usize)>,
    /// Where each old chunk ID first appears in `chunks`.
    by_id: HashMap<Id, usize>,
    /// The old chunk predicted next.
    next: Option<usize>,
    /// How many predictions were right.
    hits: usize,
}

impl Guide {
    /// A guide from the old content's chunks (ID and length, in order).
    pub(crate) fn new(chunks: Vec<(Id, usize)>) -> Self {
        let mut by_id = HashMap::with_capacity(chunks.len());
        for (i, (id, _)) in chunks.iter().enumerate() {
            _ = by_id.entry(*id).or_insert(i);
        }
        Self {
            chunks,
            by_id,
            next: Some(0),
            hits: 0,
        }
    }
}

impl<R: Read + Send> ChunkIter<R> {
    /// Creates a new `ChunkIter`.
    ///
    /// # Arguments
    ///
    /// * `tables` - The tables of the rolling hash.
    /// * `reader` - The reader to read from.
    /// * `size_hint` - The size hint is used to optimize memory allocation; this should be an upper bound on the size.
    pub(crate) fn new(
        tables: Arc<RabinTables>,
        chunk_size: usize,
        chunk_min_size: usize,
        chunk_max_size: usize,
        reader: R,
        size_hint: usize,
    ) -> RusticResult<Self> {
        check_rabin_params(chunk_size, chunk_min_size, chunk_max_size)?;
        let chunk_size: u64 = chunk_size.try_into().unwrap();
        let split_mask: u64 = chunk_size - 1;
        Ok(Self {
            buf: Vec::new(),
            pos: 0,
            end: 0,
            reader,
            split_mask,
            tables,
            rolling: Rolling {
                window: [0; WINDOW],
                index: 0,
                hash: 0,
            },
            size_hint, // size hint is used to optimize memory allocation; this should be an upper bound on the size
            min_size: chunk_min_size,
            max_size: chunk_max_size,
            finished: false,
            guide: None,
        })
    }

    /// How many chunks the guide predicted right.
    pub(crate) fn guided_chunks(&self) -> usize {
        self.guide.as_ref().map_or(0, |g| g.hits)
    }

    /// Lets the chunks of the file's previous content guide the chunker.
    pub(crate) fn with_guide(mut self, guide: Guide) -> Self {
        self.guide = Some(guide);
        self
    }

    /// The next chunk, with its ID when the chunker computed it (it does
    /// when guided).
    pub(crate) fn next_with_id(&mut self) -> Option<RusticResult<(Vec<u8>, Option<Id>)>> {
        if let Some(m) = self.guide.as_ref().and_then(|g| g.next) {
            match self.try_predicted(m) {
                Ok(Some(chunk)) => return Some(Ok(chunk)),
                Ok(None) => {}
                Err(err) => return Some(Err(err)),
            }
        }
        let chunk = match self.cut_next()? {
            Ok(chunk) => chunk,
            Err(err) => return Some(Err(err)),
        };
        let id = self.guide.as_mut().map(|g| {
            let id = hash(&chunk);
            g.next = g.by_id.get(&id).map(|i| i + 1);
            id
        });
        Some(Ok((chunk, id)))
    }

    /// Takes old chunk `m` when the next bytes are exactly it (see [`Guide`]).
    fn try_predicted(&mut self, m: usize) -> RusticResult<Option<(Vec<u8>, Option<Id>)>> {
        let Some(guide) = self.guide.as_mut() else {
            return Ok(None);
        };
        let Some(&(id, len)) = guide.chunks.get(m) else {
            guide.next = None;
            return Ok(None);
        };
        let last = m + 1 == guide.chunks.len();
        let bytes = self.take_bytes(len)?;
        let same = bytes.len() == len && hash(&bytes) == id && (!last || self.at_end()?);
        let guide = self.guide.as_mut().expect("checked above");
        if same {
            guide.next = Some(m + 1);
            guide.hits += 1;
            self.size_hint = self.size_hint.saturating_sub(len);
            Ok(Some((bytes, Some(id))))
        } else {
            guide.next = None;
            self.unread(bytes);
            Ok(None)
        }
    }

    /// Up to `n` bytes: from the buffer, then from the reader.
    fn take_bytes(&mut self, n: usize) -> RusticResult<Vec<u8>> {
        let mut bytes = Vec::with_capacity(n);
        let from_buf = (self.end - self.pos).min(n);
        bytes.extend_from_slice(&self.buf[self.pos..self.pos + from_buf]);
        self.pos += from_buf;
        if bytes.len() < n && !self.finished {
            _ = (&mut self.reader)
                .take((n - bytes.len()) as u64)
                .read_to_end(&mut bytes)
                .map_err(|err| {
                    RusticError::with_source(
                        ErrorKind::InputOutput,
                        "Failed to read from reader in iterator",
                        err,
                    )
                })?;
        }
        Ok(bytes)
    }

    /// Whether nothing follows (reads ahead into the buffer to know).
    fn at_end(&mut self) -> RusticResult<bool> {
        if self.pos < self.end {
            return Ok(false);
        }
        if self.finished {
            return Ok(true);
        }
        if self.buf.len() < constants::BUF_SIZE {
            self.buf = vec![0; constants::BUF_SIZE];
        }
        loop {
            match self.reader.read(&mut self.buf[..]) {
                Ok(0) => {
                    self.finished = true;
                    self.pos = 0;
                    self.end = 0;
                    return Ok(true);
                }
                Ok(size) => {
                    self.pos = 0;
                    self.end = size;
                    return Ok(false);
                }
                Err(ref e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(RusticError::with_source(
                        ErrorKind::InputOutput,
                        "Failed to read from reader in iterator",
                        err,
                    ));
                }
            }
        }
    }

    /// Puts `bytes` back in front of what is buffered.
    fn unread(&mut self, mut bytes: Vec<u8>) {
        bytes.extend_from_slice(&self.buf[self.pos..self.end]);
        self.pos = 0;
        self.end = bytes.len();
        if bytes.len() < constants::BUF_SIZE {
            bytes.resize(constants::BUF_SIZE, 0);
        }
        self.buf = bytes;
    }

    /// The next chunk as the rolling hash cuts it.
    fn cut_next(&mut self) -> Option<RusticResult<Vec<u8>>> {
        if self.finished && self.pos == self.end {
            return None;
        }

        let mut min_size = self.min_size;
        let mut vec = Vec::with_capacity(self.size_hint.min(min_size));

        // check if some bytes exist in the buffer and if yes, use them
        // (at most the minimum size: the buffer may hold more)
        let open_buf_len = (self.end - self.pos).min(min_size);
        if open_buf_len > 0 {
            vec.extend_from_slice(&self.buf[self.pos..self.pos + open_buf_len]);
            self.pos += open_buf_len;
            min_size -= open_buf_len;
        }

        let size = match (&mut self.reader)
            .take(min_size as u64)
            .read_to_end(&mut vec)
        {
            Ok(size) => size,
            Err(err) => {
                return Some(Err(RusticError::with_source(
                    ErrorKind::InputOutput,
                    "Failed to read from reader in iterator",
                    err,
                )));
            }
        };

        // If self.min_size is not reached, we are done.
        // Note that the read data is of size size + open_buf_len and self.min_size = minsize + open_buf_len
        if size < min_size {
            self.finished = true;
            vec.truncate(size + open_buf_len);
            return if vec.is_empty() { None } else { Some(Ok(vec)) };
        }

        self.rolling
            .prefill(&self.tables, &vec[vec.len() - WINDOW..vec.len()]);

        loop {
            if vec.len() >= self.max_size {
                break;
            }

            if (self.rolling.hash & self.split_mask) == 0 {
                break;
            }

            if self.end == self.pos {
                if self.buf.is_empty() {
                    self.buf = vec![0; constants::BUF_SIZE];
                }
                match self.reader.read(&mut self.buf[..]) {
                    Ok(0) => {
                        self.finished = true;
                        break;
                    }
                    Ok(size) => {
                        self.pos = 0;
                        self.end = size;
                    }

                    Err(ref e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => {
                        return Some(Err(RusticError::with_source(
                            ErrorKind::InputOutput,
                            "Failed to read from reader in iterator",
                            err,
                        )));
                    }
                }
            }

            let room = self.max_size - vec.len();
            let avail = &self.buf[self.pos..self.end.min(self.pos + room)];
            let n = self.rolling.scan(&self.tables, avail, self.split_mask);
            vec.extend_from_slice(&avail[..n]);
            self.pos += n;
        }
        self.size_hint = self.size_hint.saturating_sub(vec.len()); // size_hint can be too small!
        Some(Ok(vec))
    }
}

impl<R: Read + Send> Iterator for ChunkIter<R> {
    type Item = RusticResult<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with_id().map(|r| r.map(|(chunk, _)| chunk))
    }
}

/// [`random_poly`] returns an random irreducible polynomial of degree 53
/// (largest prime number below 64-8)
/// There are (2^53-2/53) irreducible polynomials of degree 53 in
/// `F_2[X]`, c.f. Michael O. Rabin (1981): "Fingerprinting by Random
/// Polynomials", page 4.
///
/// # Errors
///
/// * If no polynomial could be found in one million tries.
pub fn random_poly() -> RusticResult<u64> {
    for _ in 0..constants::RAND_POLY_MAX_TRIES {
        let mut poly: u64 = rng().random();

        // mask away bits above bit 53
        poly &= (1 << 54) - 1;

        // set highest and lowest bit so that the degree is 53 and the
        // polynomial is not trivially reducible
        poly |= (1 << 53) | 1;

        if poly.irreducible() {
            return Ok(poly);
        }
    }

    Err(RusticError::new(
        ErrorKind::Internal,
        "No suitable polynomial found, this should essentially never happen. Please try again.",
    )
    .ask_report())
}

/// A trait for extending polynomials.
pub(crate) trait PolynomExtend {
    /// Returns true IFF x is irreducible over `F_2`.
    fn irreducible(&self) -> bool;

    /// Returns the degree of the polynomial.
    fn gcd(self, other: Self) -> Self;

    /// Adds two polynomials.
    fn add(self, other: Self) -> Self;

    /// Multiplies two polynomials modulo another polynomial.
    fn mulmod(self, other: Self, modulo: Self) -> Self;
}

// implementation goes along the lines of
// https://github.com/restic/chunker/blob/master/polynomials.go
impl PolynomExtend for Polynom64 {
    // Irreducible returns true IFF x is irreducible over F_2. This function
    // uses Ben Or's reducibility test.
    //
    // For details see "Tests and Constructions of Irreducible Polynomials over
    // Finite Fields".
    fn irreducible(&self) -> bool {
        for i in 1..=self.degree() / 2 {
            if self.gcd(qp(i, *self)) != 1 {
                return false;
            }
        }
        true
    }

    fn gcd(self, other: Self) -> Self {
        if other == 0 {
            return self;
        }

        if self == 0 {
            return other;
        }

        if self.degree() < other.degree() {
            self.gcd(other.modulo(&self))
        } else {
            other.gcd(self.modulo(&other))
        }
    }

    fn add(self, other: Self) -> Self {
        self ^ other
    }

    fn mulmod(self, other: Self, modulo: Self) -> Self {
        if self == 0 || other == 0 {
            return 0;
        }

        let mut res: Self = 0;
        let mut a = self;
        let mut b = other;

        if b & 1 > 0 {
            res = res.add(a).modulo(&modulo);
        }

        while b != 0 {
            a = (a << 1).modulo(&modulo);
            b >>= 1;
            if b & 1 > 0 {
                res = res.add(a).modulo(&modulo);
            }
        }

        res
    }
}

// qp computes the polynomial (x^(2^p)-x) mod g. This is needed for the
// reducibility test.
fn qp(p: i32, g: Polynom64) -> Polynom64 {
    // start with x
    let mut res: Polynom64 = 2;

    for _ in 0..p {
        // repeatedly square res
        res = res.mulmod(res, g);
    }

    // add x
    res.add(2).modulo(&g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hasher::hash;
    use insta::assert_ron_snapshot;
    use rand::prelude::*;
    use std::io::{Cursor, repeat};

    /// The Splitmask is used to determine if a chunk is a chunk boundary.
    const SIZE: usize = 1 << 20;
    /// The size of a megabyte.
    const MB: usize = 1024 * constants::KB;
    /// The minimum size of a chunk.
    const MIN_SIZE: usize = 512 * constants::KB;
    /// The maximum size of a chunk.
    const MAX_SIZE: usize = 8 * MB;

    fn chunker<R: Read + Send>(reader: R, size_hint: usize) -> ChunkIter<R> {
        let poly = 0x003D_A335_8B4D_C173;
        let tables = Arc::new(RabinTables::new(poly));
        ChunkIter::new(tables, SIZE, MIN_SIZE, MAX_SIZE, reader, size_hint).unwrap()
    }

    /// The chunk lengths of rustic_core 0.13.0's loop: `Rabin64` slid one
    /// byte at a time (the reference for the stack-backup patch).
    fn reference_chunks(data: &[u8], poly: u64, min: usize, max: usize, mask: u64) -> Vec<usize> {
        use rustic_cdc::RollingHash64;
        let mut rabin = Rabin64::new_with_polynom(6, &poly);
        let mut lens = Vec::new();
        let mut at = 0;
        while at < data.len() {
            if data.len() - at < min {
                lens.push(data.len() - at);
                break;
            }
            let mut len = min;
            _ = rabin.reset_and_prefill_window(&mut data[at + min - 64..at + min].iter().copied());
            while len < max && (rabin.hash & mask) != 0 && at + len < data.len() {
                rabin.slide(data[at + len]);
                len += 1;
            }
            lens.push(len);
            at += len;
        }
        lens
    }

    /// A reader that hands out its data in pieces of varying size.
    struct Ragged {
        data: Vec<u8>,
        at: usize,
        rng: StdRng,
    }

    impl Read for Ragged {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let want = self.rng.random_range(1..=100_000usize).min(buf.len());
            let n = want.min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn same_chunks_as_rustic_cdc() {
        let mut rng = StdRng::seed_from_u64(7);
        for (len, min, size, max) in [
            (3 * 1024 * 1024, 4096, 8192, 65536),
            (5 * 1024 * 1024 + 17, 1024, 65536, 300_000),
            (300, 1024, 4096, 8192),
            (20_000, 128, 256, 512),
        ] {
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            // Some long runs, which end chunks at the minimum or the maximum.
            let run = len / 5;
            data[run..2 * run].fill(0);
            let poly = 0x003D_A335_8B4D_C173;
            let expected = reference_chunks(&data, poly, min, max, size as u64 - 1);
            let reader = Ragged { data: data.clone(), at: 0, rng: StdRng::seed_from_u64(len as u64) };
            let chunks: Vec<Vec<u8>> =
                ChunkIter::new(Arc::new(RabinTables::new(poly)), size, min, max, reader, 0)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
            let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
            assert_eq!(lens, expected, "chunk lengths for {len} bytes");
            assert_eq!(chunks.concat(), data);
        }
    }

    #[test]
    fn chunk_random() {
        const RANDOM_DATA_SIZE: usize = 32 * 1024 * 1024;
        const SEED: u64 = 23;
        let mut rng = StdRng::seed_from_u64(SEED);
        let mut data = vec![0u8; RANDOM_DATA_SIZE];
        rng.fill_bytes(&mut data);
        let mut reader = Cursor::new(data);
        let chunker = chunker(&mut reader, 0);
        let chunks: Vec<_> = chunker
            .map(|chunk| {
                let chunk = chunk.unwrap();
                (chunk.len(), hash(&chunk))
            })
            .collect();

        assert_ron_snapshot!(chunks);
    }

    #[test]
    fn chunk_empty() {
        let empty: Vec<u8> = vec![];
        let mut reader = Cursor::new(empty);
        let chunker = chunker(&mut reader, 0);

        assert_eq!(0, chunker.into_iter().count());
    }

    #[test]
    fn chunk_empty_wrong_hint() {
        let empty: Vec<u8> = vec![];
        let mut reader = Cursor::new(empty);
        let chunker = chunker(&mut reader, 100);

        assert_eq!(0, chunker.into_iter().count());
    }

    #[test]
    fn chunk_zeros() {
        let mut reader = repeat(0u8);
        let mut chunker = chunker(&mut reader, usize::MAX);

        let chunk = chunker.next().unwrap().unwrap();
        assert_eq!(MIN_SIZE, chunk.len());
    }
}
