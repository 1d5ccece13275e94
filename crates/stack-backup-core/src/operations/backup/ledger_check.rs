//! Phase 4: the ledger (its outcomes are taken out as they are checked). rustic's archiver skips an entry whose open or
//! read fails and saves the snapshot anyway, so the backup itself checks
//! that every artifact was read to the end with its producer exiting 0, or
//! reused unchanged from the parent set (an artifact planned as reused
//! and read anyway fails: its component may have released what made the
//! read consistent), and that every component that plans files produced
//! at least one.

use std::collections::{BTreeMap, BTreeSet};

use super::failed;
use super::phases::ParentInfo;
use crate::checksums::{Checksums, Digest};
use crate::components::{Archived, ComponentId, Planned};
use crate::error::Result;
use crate::ledger::{Ledger, Outcome};
use crate::manifest::ArtifactRecord;
use crate::source::{Entry, Yielded};

/// What the ledger check established.
pub(super) struct Checked {
    /// Every single-file artifact, with size and SHA-256.
    pub artifacts: Vec<ArtifactRecord>,
    /// SHA-256 of every file (artifacts and tree files).
    pub checksums: Checksums,
    /// Per component: bytes, files, all reused.
    sizes: BTreeMap<String, (u64, u64, bool)>,
    /// Per component: the containers stopped while it was copied.
    stopped: BTreeMap<String, Vec<String>>,
}

impl Checked {
    /// What the archive runs measured of a component.
    pub fn measured(&self, id: &ComponentId) -> Archived {
        let (bytes, files, reused) = self
            .sizes
            .get(id.as_str())
            .copied()
            .unwrap_or((0, 0, false));
        Archived {
            bytes,
            files,
            reused,
            stopped: self.stopped.get(id.as_str()).cloned().unwrap_or_default(),
        }
    }
}

/// Checks the ledger against what the archive runs yielded. `earlier`
/// holds failures found before (the components' finish hooks). Any problem
/// fails the backup naming every component concerned.
pub(super) fn check(
    ledger: &Ledger,
    planned: &[(ComponentId, Planned)],
    parent: &ParentInfo,
    streams: &BTreeSet<Yielded>,
    trees: &BTreeSet<Yielded>,
    earlier: Vec<(String, String)>,
) -> Result<Checked> {
    let mut problems = ledger.component_failures();
    problems.extend(earlier);
    let mut checked = Checked {
        artifacts: Vec::new(),
        checksums: Checksums::default(),
        sizes: BTreeMap::new(),
        stopped: planned
            .iter()
            .map(|(id, p)| (id.to_string(), p.stop.clone()))
            .collect(),
    };
    let single: BTreeMap<&str, bool> = planned
        .iter()
        .flat_map(|(_, p)| &p.entries)
        .filter_map(|e| match e {
            Entry::File(a) => Some((a.path.as_str(), a.reuse_meta.is_some())),
            Entry::Tree { .. } => None,
        })
        .collect();
    // Built in path order (both sets are sorted by path first), so the
    // table needs no sort and a path yielded twice comes twice in a row.
    let mut sums: Vec<(Box<str>, Digest)> = Vec::with_capacity(streams.len() + trees.len());
    let mut previous: Option<&str> = None;
    for y in by_path(streams, trees).filter(|y| y.is_file) {
        // The planners never give one path twice; should one, its outcome
        // was taken by the first and the second must not pass as reused.
        if previous == Some(y.path.as_str()) {
            problems.push((
                y.component.to_string(),
                format!(
                    "{} was archived twice (a bug in stack-backup: please report it)",
                    y.path
                ),
            ));
            continue;
        }
        previous = Some(&y.path);
        let reusable = single.get(y.path.as_str()).copied();
        let (size, sha, reused) = match ledger.take(&y.path) {
            // Planned as reused, its hold released (a MariaDB table lock):
            // read now, it is not the content the plan vouched for.
            Some(Outcome::Done { .. }) if reusable == Some(true) => {
                problems.push((
                    y.component.to_string(),
                    format!(
                        "{} was to be reused from the parent set but was read again; run the backup again",
                        y.path
                    ),
                ));
                continue;
            }
            Some(Outcome::Done { size, sha256 }) => (size, Digest::Bytes(sha256), false),
            Some(Outcome::Failed(m)) => {
                problems.push((y.component.to_string(), m));
                continue;
            }
            // Not opened: the archiver reused the parent's content.
            None => match (parent.checksums.find(&y.path), reusable) {
                (Some(sha), Some(true)) => (parent_size(parent, &y.path), sha.clone(), true),
                (Some(sha), None) => (y.size, sha.clone(), true),
                _ => {
                    problems.push((
                        y.component.to_string(),
                        format!(
                            "{} was not read and has no checksum in the parent set",
                            y.path
                        ),
                    ));
                    continue;
                }
            },
        };
        let e = checked
            .sizes
            .entry(y.component.to_string())
            .or_insert((0, 0, true));
        e.0 += size;
        e.1 += 1;
        e.2 &= reused;
        if reusable.is_some() {
            checked.artifacts.push(ArtifactRecord {
                path: y.path.clone(),
                component: y.component.to_string(),
                size,
                sha256: sha.hex(),
                reused,
            });
        }
        sums.push((y.path.as_str().into(), sha));
    }
    checked.checksums = Checksums::from_sorted(sums);
    for (id, p) in planned {
        let has_files = p.entries.iter().any(|e| matches!(e, Entry::File(_)));
        if has_files && !checked.sizes.contains_key(id.as_str()) {
            problems.push((id.to_string(), "produced no artifact".into()));
        }
    }
    if problems.is_empty() {
        Ok(checked)
    } else {
        Err(failed(problems))
    }
}

/// The yielded files of both sets in path order (`Yielded` orders by path
/// first).
fn by_path<'a>(
    a: &'a BTreeSet<Yielded>,
    b: &'a BTreeSet<Yielded>,
) -> impl Iterator<Item = &'a Yielded> {
    let (mut a, mut b) = (a.iter().peekable(), b.iter().peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.path < x.path => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// The size the parent's manifest records for an artifact.
fn parent_size(parent: &ParentInfo, path: &str) -> u64 {
    parent
        .manifest
        .as_ref()
        .and_then(|m| m.artifacts.iter().find(|a| a.path == path))
        .map_or(0, |a| a.size)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{by_path, check};
    use crate::ledger::{Ledger, Outcome};
    use crate::operations::backup::phases::ParentInfo;
    use crate::source::Yielded;

    /// A path yielded twice fails the backup: the second must not pass as
    /// reused from the parent once the first took the ledger's outcome.
    #[test]
    fn a_path_yielded_twice_fails_the_backup() {
        let ledger = Ledger::default();
        ledger.record(
            "docker/images/x.tar",
            Outcome::Done {
                size: 3,
                sha256: [0xab; 32],
            },
        );
        let parent = ParentInfo {
            checksums: crate::checksums::Checksums::parse(&format!(
                "{}  docker/images/x.tar\n",
                "cd".repeat(32)
            )),
            ..ParentInfo::default()
        };
        let yielded = |component: &str| Yielded {
            path: "docker/images/x.tar".into(),
            component: component.into(),
            is_file: true,
            size: 3,
        };
        let streams: BTreeSet<Yielded> = [yielded("docker.image.a"), yielded("docker.image.b")]
            .into_iter()
            .collect();
        let Err(e) = check(
            &ledger,
            &[],
            &parent,
            &streams,
            &BTreeSet::new(),
            Vec::new(),
        ) else {
            panic!("a path archived twice passed");
        };
        assert!(e.to_string().contains("archived twice"), "{e}");
    }

    fn file(path: &str, component: &str) -> Yielded {
        Yielded {
            path: path.into(),
            component: component.into(),
            is_file: true,
            size: 1,
        }
    }

    /// The two sets interleave by path, whatever their components, and a
    /// path in both comes twice in a row (where the check catches it).
    #[test]
    fn the_yielded_sets_merge_in_path_order() {
        let streams: BTreeSet<Yielded> = [file("b", "z"), file("d", "a"), file("f", "a")]
            .into_iter()
            .collect();
        let trees: BTreeSet<Yielded> = [file("a", "b"), file("d", "b"), file("e", "a")]
            .into_iter()
            .collect();
        let merged: Vec<(&str, &str)> = by_path(&streams, &trees)
            .map(|y| (y.path.as_str(), &*y.component))
            .collect();
        assert_eq!(
            merged,
            [
                ("a", "b"),
                ("b", "z"),
                ("d", "a"),
                ("d", "b"),
                ("e", "a"),
                ("f", "a")
            ]
        );
    }

    /// A path in both sets fails the backup, and every other file's digest
    /// lands in the table under its own path.
    #[test]
    fn a_path_in_both_sets_fails_and_the_table_is_by_path() {
        let ledger = Ledger::default();
        for (i, p) in ["a", "b", "c"].iter().enumerate() {
            let d = u8::try_from(i).unwrap();
            ledger.record(
                p,
                Outcome::Done {
                    size: 1,
                    sha256: [d; 32],
                },
            );
        }
        let streams: BTreeSet<Yielded> = [file("c", "s"), file("a", "s")].into_iter().collect();
        let trees: BTreeSet<Yielded> = [file("b", "t")].into_iter().collect();
        let checked = check(
            &ledger,
            &[],
            &ParentInfo::default(),
            &streams,
            &trees,
            Vec::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(&str, String)> = checked
            .checksums
            .keys()
            .map(|p| (p, checked.checksums.get(p).unwrap()))
            .collect();
        let hex = |d: u8| hex::encode([d; 32]);
        assert_eq!(got, [("a", hex(0)), ("b", hex(1)), ("c", hex(2))]);

        ledger.record(
            "b",
            Outcome::Done {
                size: 1,
                sha256: [1; 32],
            },
        );
        let twice: BTreeSet<Yielded> = [file("b", "s")].into_iter().collect();
        let Err(e) = check(
            &ledger,
            &[],
            &ParentInfo::default(),
            &twice,
            &trees,
            Vec::new(),
        ) else {
            panic!("a path in both sets passed");
        };
        assert!(e.to_string().contains("b was archived twice"), "{e}");
    }
}
