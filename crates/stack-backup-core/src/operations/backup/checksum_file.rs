//! `CHECKSUM.sha256` produced as the archiver reads it: a set of 300,000
//! files has a file of about 33 MB, which as one string would sit beside
//! the table it is rendered from.

use std::io::Read;
use std::sync::Arc;

use crate::checksums::Checksums;
use crate::manifest::push_checksum_line;
use crate::source::Produce;

/// How much of the file is rendered at a time.
const CHUNK: usize = 64 * 1024;

/// The lines of a table and of the manifest's own files (which replace a
/// line of the table for the same path), merged in path order. Opened once
/// by the archiver; the table is freed when both the source that holds
/// this file and the reader are dropped (at the end of the manifest part).
#[derive(Debug)]
pub(super) struct ChecksumFile(Arc<Lines>);

#[derive(Debug)]
struct Lines {
    table: Checksums,
    own: Vec<(String, String)>,
}

impl ChecksumFile {
    /// `own` is `(path, sha256 hex)`; of two for one path the first is kept.
    pub(super) fn new(table: Checksums, mut own: Vec<(String, String)>) -> Self {
        own.sort_by(|a, b| a.0.cmp(&b.0));
        own.dedup_by(|later, first| later.0 == first.0);
        Self(Arc::new(Lines { table, own }))
    }
}

impl Produce for ChecksumFile {
    fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(Reader {
            lines: self.0.clone(),
            table: 0,
            own: 0,
            buf: String::with_capacity(CHUNK + 4096),
            at: 0,
        }))
    }
}

struct Reader {
    lines: Arc<Lines>,
    /// The next line of the table and of `own` to render.
    table: usize,
    own: usize,
    buf: String,
    /// How much of `buf` was read.
    at: usize,
}

impl Reader {
    /// Renders the next lines into the empty buffer; false at the end.
    fn fill(&mut self) -> bool {
        let table = self.lines.table.entries();
        let own = &self.lines.own;
        let mut hex = [0u8; 64];
        while self.buf.len() < CHUNK {
            match (table.get(self.table), own.get(self.own)) {
                (None, None) => break,
                (Some(t), Some(o)) if *t.0 == *o.0 => self.table += 1,
                (Some(t), o) if o.is_none_or(|o| *t.0 < *o.0) => {
                    push_checksum_line(&mut self.buf, &t.0, t.1.hex_in(&mut hex));
                    self.table += 1;
                }
                (_, Some(o)) => {
                    push_checksum_line(&mut self.buf, &o.0, &o.1);
                    self.own += 1;
                }
                (Some(_), None) => unreachable!("matched above"),
            }
        }
        !self.buf.is_empty()
    }
}

impl Read for Reader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
            if !self.fill() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf.as_bytes()[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::ChecksumFile;
    use crate::checksums::Checksums;
    use crate::manifest::render_checksums;
    use crate::source::Produce;

    /// The file read in small pieces is the whole table rendered at once,
    /// with the manifest's own lines merged in and replacing the table's.
    #[test]
    fn it_reads_as_the_table_rendered_whole() {
        let sha = |i: usize| format!("{:064x}", i * 7919);
        let paths: Vec<String> = (0..5000)
            .map(|i| match i % 3 {
                0 => format!("paths/media/{i:05}"),
                1 => format!("volumes/v/a\\b\n{i}"),
                _ => format!("zz/{i}"),
            })
            .collect();
        let mut pairs: Vec<(&str, String)> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), sha(i)))
            .collect();
        pairs.sort();
        // A digest that is not 64 lowercase hex digits is written back as
        // its line gave it.
        pairs[7].1 = "ODD".into();
        pairs[8].1 = sha(8).to_uppercase();
        let table = Checksums::parse(&render_checksums(
            pairs.iter().map(|(p, s)| (*p, s.as_str())),
        ));
        let own = vec![
            ("manifest.json".to_string(), sha(1)),
            ("paths/media/00003".to_string(), sha(2)),
            ("zzz.md".to_string(), sha(3)),
        ];
        let mut want: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(p, _)| !own.iter().any(|(o, _)| o == p))
            .map(|(p, s)| (*p, s.as_str()))
            .chain(own.iter().map(|(p, s)| (p.as_str(), s.as_str())))
            .collect();
        want.sort();
        let want = render_checksums(want);
        assert!(want.len() > 3 * 64 * 1024, "several chunks");

        let mut reader = ChecksumFile::new(table, own).open().unwrap();
        let mut got = Vec::new();
        let mut piece = [0u8; 1000];
        loop {
            let n = reader.read(&mut piece).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }
}
