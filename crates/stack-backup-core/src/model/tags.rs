//! The tags that make a snapshot a backup set, written and parsed here
//! only. Stock `restic` shows them too, so they are part of the format:
//!
//! ```text
//! stack-backup,stack:<stack>,tier:<tier>,name:<name>   a backup set
//! … ,stack-backup-unverified                           written, not yet verified
//! stack-backup-incomplete,stack:<stack>                a backup still running
//! ```
//!
//! A snapshot that is not a whole set (incomplete, unverified) is never
//! listed as one; the next backup of the stack on the same host removes
//! those a killed run left behind.

use rustic_core::repofile::StringList;

use crate::tiers::Tier;

/// The tag every backup set carries.
pub const MARKER: &str = "stack-backup";
/// The tag of a snapshot whose backup has not finished.
pub const INCOMPLETE: &str = "stack-backup-incomplete";
/// The extra tag of a set that is written but not yet verified (an
/// immaculate being created): not a backup set yet.
pub const UNVERIFIED: &str = "stack-backup-unverified";

/// What a snapshot is to stack-backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetTags {
    /// A part of a backup that has not finished (or was killed).
    Incomplete {
        /// The stack.
        stack: String,
    },
    /// A backup set (`verified == false`: held until read back).
    Set {
        /// The stack.
        stack: String,
        /// Its tier.
        tier: Tier,
        /// Its unique name.
        name: String,
        /// False while it waits for its read-back (`immaculate create`).
        verified: bool,
    },
}

impl SetTags {
    /// The tags of a whole, verified set.
    #[must_use]
    pub fn set(stack: &str, tier: Tier, name: &str) -> Self {
        Self::Set {
            stack: stack.to_string(),
            tier,
            name: name.to_string(),
            verified: true,
        }
    }

    /// The tags of a part of a backup that is being written.
    #[must_use]
    pub fn incomplete(stack: &str) -> Self {
        Self::Incomplete {
            stack: stack.to_string(),
        }
    }

    /// The same set, waiting for its read-back (`false`) or verified.
    #[must_use]
    pub fn verified(self, verified: bool) -> Self {
        match self {
            Self::Set {
                stack, tier, name, ..
            } => Self::Set {
                stack,
                tier,
                name,
                verified,
            },
            other => other,
        }
    }

    /// The stack the snapshot belongs to.
    #[must_use]
    pub fn stack(&self) -> &str {
        match self {
            Self::Incomplete { stack } | Self::Set { stack, .. } => stack,
        }
    }

    /// Whether it is a whole, verified backup set.
    #[must_use]
    pub fn is_set(&self) -> bool {
        matches!(self, Self::Set { verified: true, .. })
    }

    /// The tags, in the order stack-backup has always written them.
    #[must_use]
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::Incomplete { stack } => vec![INCOMPLETE.into(), format!("stack:{stack}")],
            Self::Set {
                stack,
                tier,
                name,
                verified,
            } => {
                let mut v = vec![
                    MARKER.to_string(),
                    format!("stack:{stack}"),
                    tier.tag(),
                    format!("name:{name}"),
                ];
                if !verified {
                    v.push(UNVERIFIED.into());
                }
                v
            }
        }
    }

    /// The tags as a snapshot's tag list.
    #[must_use]
    pub fn to_list(&self) -> StringList {
        // Names and stacks never hold a comma (config::validate_name).
        self.to_vec()
            .join(",")
            .parse()
            .expect("a tag list parses from comma-separated tags")
    }

    /// What the tags of a snapshot say, or `None` for a snapshot that
    /// stack-backup did not write (or whose tags are damaged).
    #[must_use]
    pub fn parse<'a>(tags: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let tags: Vec<&str> = tags.into_iter().collect();
        let value = |prefix: &str| tags.iter().find_map(|t| t.strip_prefix(prefix));
        let stack = value("stack:")?.to_string();
        if tags.contains(&INCOMPLETE) {
            return Some(Self::Incomplete { stack });
        }
        if !tags.contains(&MARKER) {
            return None;
        }
        Some(Self::Set {
            stack,
            tier: value("tier:")?.parse().ok()?,
            name: value("name:")?.to_string(),
            verified: !tags.contains(&UNVERIFIED),
        })
    }

    /// [`Self::parse`] of a snapshot's tags.
    #[must_use]
    pub fn of(snap: &rustic_core::repofile::SnapshotFile) -> Option<Self> {
        Self::parse(snap.tags.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_written_in_the_historic_order_and_parse_back() {
        let t = SetTags::set("shop", Tier::Immaculate, "base-1");
        assert_eq!(
            t.to_vec().join(","),
            "stack-backup,stack:shop,tier:immaculate,name:base-1"
        );
        let held = t.clone().verified(false);
        assert_eq!(
            held.to_vec().join(","),
            "stack-backup,stack:shop,tier:immaculate,name:base-1,stack-backup-unverified"
        );
        for tags in [t, held, SetTags::incomplete("shop")] {
            let v = tags.to_vec();
            assert_eq!(SetTags::parse(v.iter().map(String::as_str)), Some(tags));
        }
    }

    #[test]
    fn sets_are_told_apart_from_parts_and_foreign_snapshots() {
        let parse = |s: &str| SetTags::parse(s.split(','));
        assert!(parse("stack-backup,stack:a,tier:backups,name:n")
            .unwrap()
            .is_set());
        assert!(
            !parse("stack-backup,stack:a,tier:backups,name:n,stack-backup-unverified")
                .unwrap()
                .is_set()
        );
        let part = parse("stack-backup-incomplete,stack:a").unwrap();
        assert!(!part.is_set());
        assert_eq!(part.stack(), "a");
        // Foreign or damaged: restic's own snapshots, a set without a tier.
        assert_eq!(parse("daily,host:x"), None);
        assert_eq!(parse("stack-backup,stack:a,name:n"), None);
        assert_eq!(parse("stack-backup,stack:a,tier:nonsense,name:n"), None);
        assert_eq!(parse("stack-backup,tier:backups,name:n"), None);
    }
}
