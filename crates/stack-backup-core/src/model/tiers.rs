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
