//! Tiers: how long a backup set lives and what may touch it.

use serde::{Deserialize, Serialize};

/// The tier of a backup set, stored as the snapshot tag `tier:<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Quick database-only dumps; pruned by retention.
    Data,
    /// Named sets taken before risky operations (default of `backup`).
    Backups,
    /// Frozen, verified baselines: never modified, never pruned.
    Immaculate,
    /// Milestone rollback points tied to a git tag; never pruned.
    Sacred,
    /// The state taken automatically before a restore changed anything.
    PreRestore,
}

impl Tier {
    /// Every tier, in order.
    pub const ALL: [Tier; 5] = [
        Tier::Data,
        Tier::Backups,
        Tier::Immaculate,
        Tier::Sacred,
        Tier::PreRestore,
    ];

    /// The tier's name as used in tags and on the command line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Data => "data",
            Tier::Backups => "backups",
            Tier::Immaculate => "immaculate",
            Tier::Sacred => "sacred",
            Tier::PreRestore => "pre-restore",
        }
    }

    /// The snapshot tag for this tier, e.g. `tier:immaculate`.
    #[must_use]
    pub fn tag(self) -> String {
        format!("tier:{}", self.as_str())
    }

    /// Whether retention may ever remove a set of this tier (immaculate and
    /// sacred: never; the newest pre-restore set is protected by `prune`
    /// itself). Sets of other tiers carry restic's `delete_never`.
    #[must_use]
    pub fn prunable(self) -> bool {
        matches!(self, Tier::Data | Tier::Backups | Tier::PreRestore)
    }
}

/// How S3 Object Lock protects an object (S3's retention modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetainMode {
    /// No one can shorten or remove the retention, nor delete the version,
    /// except a principal with `s3:BypassGovernanceRetention` (the default:
    /// a mistaken date can still be undone by the bucket's owner).
    #[default]
    Governance,
    /// No one at all, the bucket's owner included, until the date passes.
    Compliance,
}

impl RetainMode {
    /// S3's spelling (`GOVERNANCE`, `COMPLIANCE`).
    #[must_use]
    pub fn s3(self) -> &'static str {
        match self {
            RetainMode::Governance => "GOVERNANCE",
            RetainMode::Compliance => "COMPLIANCE",
        }
    }
}

/// `[tiers]`: how immaculate and sacred sets are protected in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TiersSection {
    /// How long every object an immaculate or sacred set needs is kept
    /// under S3 Object Lock retention (e.g. `"365d"`), counted from when the
    /// set is written and extended by `verify` once a third of it is left.
    /// Needs a bucket with Object Lock enabled; an error otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immaculate_retain: Option<String>,
    /// The retention mode [default: governance].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_mode: Option<RetainMode>,
}

impl TiersSection {
    /// Whether nothing is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// `immaculate-retain` in seconds, when set.
    pub fn retain_secs(&self) -> Result<Option<u64>, String> {
        self.immaculate_retain
            .as_deref()
            .map(crate::monitoring::parse_duration)
            .transpose()
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown tier `{s}`; expected data, backups, immaculate, sacred or pre-restore"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Tier;

    #[test]
    fn round_trips() {
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>().unwrap(), t);
        }
        assert!("gold".parse::<Tier>().is_err());
        assert!(!Tier::Immaculate.prunable());
        assert!(Tier::Data.prunable());
    }
}
