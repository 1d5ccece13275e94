//! A set's `CHECKSUM.sha256` held for lookups while a restore, a drill or
//! a backup (its parent's) runs.
//!
//! As a map of strings it took about 190 bytes a file; a restore of a set
//! of 300,000 files held two (the set's, and its pre-restore backup's
//! parent's) through the archive. [`Checksums`] keeps each path once and
//! each SHA-256 as its 32 bytes: about 100.

/// A SHA-256 as a checksum line gives it: its bytes when the line has 64
/// hex digits, else the text as written (which no read ever matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Digest {
    Bytes([u8; 32]),
    Odd(Box<str>),
}

impl Digest {
    fn parse(s: &str) -> Self {
        let mut b = [0u8; 32];
        match hex::decode_to_slice(s, &mut b) {
            Ok(()) if !s.bytes().any(|c| c.is_ascii_uppercase()) => Self::Bytes(b),
            _ => Self::Odd(s.into()),
        }
    }

    pub(crate) fn hex(&self) -> String {
        self.hex_in(&mut [0u8; 64]).to_string()
    }

    /// [`Self::hex`] without an allocation: `buf` holds the hex digits of
    /// a digest's bytes.
    pub(crate) fn hex_in<'a>(&'a self, buf: &'a mut [u8; 64]) -> &'a str {
        match self {
            Self::Bytes(b) => {
                hex::encode_to_slice(b, buf).expect("64 bytes hold 32 in hex");
                std::str::from_utf8(buf).expect("hex is ASCII")
            }
            Self::Odd(s) => s,
        }
    }
}

/// Path → SHA-256 (lowercase hex) of every file of a set, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checksums {
    entries: Vec<(Box<str>, Digest)>,
}

impl Checksums {
    /// Parses `CHECKSUM.sha256` as [`crate::manifest::parse_checksums`]
    /// does: `sha256sum`'s escapes undone, a line without a separator
    /// skipped, the last of two lines for one path kept.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut entries: Vec<(Box<str>, Digest)> = crate::manifest::checksum_lines(text)
            .map(|(path, sha)| (path.into_boxed_str(), Digest::parse(sha)))
            .collect();
        // Stable: of equal paths the later line stays later, and is kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(Box<str>, Digest)> = Vec::with_capacity(entries.len());
        for e in entries {
            match kept.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => kept.push(e),
            }
        }
        kept.shrink_to_fit();
        Self { entries: kept }
    }

    /// A table of `entries` already sorted by path, each path once.
    ///
    /// # Panics
    /// When they are not (a bug of the caller), in debug builds.
    pub(crate) fn from_sorted(entries: Vec<(Box<str>, Digest)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        Self { entries }
    }

    /// Every path with its digest, sorted by path.
    pub(crate) fn entries(&self) -> &[(Box<str>, Digest)] {
        &self.entries
    }

    /// The digest of `path`.
    pub(crate) fn find(&self, path: &str) -> Option<&Digest> {
        self.entries
            .binary_search_by(|(p, _)| (**p).cmp(path))
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// The SHA-256 of `path`, lowercase hex, as its line wrote it.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<String> {
        self.find(path).map(Digest::hex)
    }

    /// Whether `path` has a line whose SHA-256 is `hex` (64 lowercase hex
    /// digits; anything else matches nothing).
    #[must_use]
    pub fn matches(&self, path: &str, hex: &str) -> bool {
        match Digest::parse(hex) {
            d @ Digest::Bytes(_) => self.find(path) == Some(&d),
            Digest::Odd(_) => false,
        }
    }

    /// Whether `path` has a line.
    #[must_use]
    pub fn contains_key(&self, path: &str) -> bool {
        self.find(path).is_some()
    }

    /// Every path, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(p, _)| &**p)
    }

    /// How many paths.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Checksums;
    use crate::manifest::{parse_checksums, render_checksums};

    const A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const B: &str = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752";

    /// The same answers as the map of strings, for every kind of line.
    #[test]
    fn it_answers_as_the_map_of_strings_does() {
        let text = format!(
            "{}{B}  dup\n{A}  dup\nnot a line\nXYZ  odd\n{}  upper\n",
            render_checksums([("b/x", A), ("a\\b\nc", B), ("a", B)]),
            A.to_uppercase()
        );
        let map = parse_checksums(&text);
        let c = Checksums::parse(&text);
        assert_eq!(c.len(), map.len());
        assert_eq!(c.keys().collect::<Vec<_>>(), map.keys().collect::<Vec<_>>());
        for (p, s) in &map {
            assert_eq!(c.get(p).as_ref(), Some(s), "{p}");
            assert!(c.contains_key(p));
        }
        assert_eq!(c.get("dup").as_deref(), Some(A), "the last line wins");
        assert!(c.matches("b/x", A) && !c.matches("b/x", B) && !c.matches("none", A));
        assert!(
            !c.matches("odd", "XYZ"),
            "a line that is no SHA-256 matches nothing"
        );
        assert!(
            !c.matches("upper", A),
            "an uppercase line is not the lowercase read"
        );
        assert_eq!(c.get("upper"), Some(A.to_uppercase()));
        assert!(c.get("missing").is_none() && !c.contains_key("missing"));
    }
}
