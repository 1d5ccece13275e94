//! `status`: how old the newest good backup of each component is, the last
//! verify and drill, the off-site copy lag, the repository's size; and the
//! dead-man switch over it (`--max-age`, `[status.max-age]`).
//!
//! Everything comes from the snapshot files (each set's tags, time,
//! description and summary), one listing of the repository's files (sizes,
//! no reads) and the records this machine keeps ([`crate::records`]). No
//! pack file is read and the repository is not locked, so `status` can run
//! beside a backup and every minute from a monitoring system.

use std::collections::BTreeMap;

use rustic_core::repofile::SnapshotFile;
use serde::Serialize;

use crate::config::{Config, Env};
use crate::error::{Error, Result};
use crate::records::{self, DrillRecord, Records, RunRecord};
use crate::repository::{self, Location};
use crate::sets::{self, BackupSet};
use crate::tiers::Tier;

/// A window for the repository's growth: seven days.
pub const GROWTH_WINDOW_SECONDS: i64 = 7 * 86400;

/// One set, briefly, with its age.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetBrief {
    /// Name.
    pub name: String,
    /// Snapshot id.
    pub id: String,
    /// Tier.
    pub tier: Tier,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Unix time of `time`.
    pub timestamp: i64,
    /// Seconds between `time` and the status.
    pub age_seconds: i64,
    /// Bytes of data the set holds, when known.
    pub size: Option<u64>,
    /// Its components.
    pub components: Vec<String>,
}

/// One tier.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TierStatus {
    /// The tier.
    pub tier: Tier,
    /// How many sets it holds.
    pub sets: usize,
    /// Its newest set.
    pub newest: Option<SetBrief>,
    /// `[status.max-age]` of the tier, in seconds, when configured.
    pub max_age_seconds: Option<u64>,
}

/// The newest set holding a component.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComponentStatus {
    /// `postgres.main`, `docker.volume.x`, …
    pub component: String,
    /// The newest set of any tier holding it.
    pub last_success: SetBrief,
    /// Per tier, the newest set holding it.
    pub by_tier: BTreeMap<Tier, SetBrief>,
}

/// A finished command, with its age.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunStatus {
    /// What was recorded.
    #[serde(flatten)]
    pub run: RunRecord,
    /// Unix time it started.
    pub timestamp: i64,
    /// Seconds since it started.
    pub age_seconds: i64,
}

/// One copy target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CopyStatus {
    /// The target (no secret).
    pub target: String,
    /// The last copy to it (RFC 3339).
    pub last_copy: String,
    /// Sets of the tiers it receives that it does not hold yet.
    pub pending: usize,
    /// The newest of them.
    pub newest_pending: Option<SetBrief>,
    /// The age of the oldest of them: how long data has waited for its
    /// off-site copy (0 when none waits).
    pub lag_seconds: i64,
}

/// A dead-man switch violation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Violation {
    /// The component (or `tier:<tier>` for a tier with no set at all).
    pub component: String,
    /// The tier whose limit it broke; none for `--max-age`.
    pub tier: Option<Tier>,
    /// Age of its newest good set; none when there is none.
    pub age_seconds: Option<i64>,
    /// The limit.
    pub max_age_seconds: u64,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The stack.
    pub stack: String,
    /// The repository (no secret).
    pub repository: String,
    /// When this status was taken (RFC 3339) and as unix time.
    pub time: String,
    /// Unix time of `time`.
    pub timestamp: i64,
    /// Each tier.
    pub tiers: Vec<TierStatus>,
    /// Each component named by any set.
    pub components: Vec<ComponentStatus>,
    /// The last `verify` or `immaculate verify` run on this machine.
    pub last_verify: Option<RunStatus>,
    /// The newest drill report; none means "no drill yet".
    pub last_drill: Option<DrillRecord>,
    /// Each copy target copied to from this machine.
    pub copies: Vec<CopyStatus>,
    /// Bytes of the repository's files (a listing: no file is read).
    pub repository_bytes: Option<u64>,
    /// Bytes the sets taken in the last 7 days added to the repository
    /// (after deduplication and compression; prune not subtracted).
    pub added_7d_bytes: u64,
    /// The last run of each command on this machine.
    pub last_runs: Vec<RunStatus>,
    /// Every set, oldest first (the timeline).
    pub sets: Vec<SetBrief>,
    /// Limits broken (empty when none is set or all hold).
    pub violations: Vec<Violation>,
}

impl Status {
    /// Whether the dead-man switch holds.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

fn ts_of(rfc: &str) -> Option<i64> {
    rfc.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

fn brief(b: &BackupSet, snap: &SnapshotFile, now: i64) -> SetBrief {
    let ts = snap.time.timestamp().as_second();
    SetBrief {
        name: b.name.clone(),
        id: b.id.clone(),
        tier: b.tier,
        time: b.time.clone(),
        timestamp: ts,
        age_seconds: now - ts,
        size: b.size,
        components: b.components.clone(),
    }
}

fn run_status(r: &RunRecord, now: i64) -> RunStatus {
    let ts = ts_of(&r.started).unwrap_or(0);
    RunStatus {
        run: r.clone(),
        timestamp: ts,
        age_seconds: now - ts,
    }
}

/// What `status` is asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `--max-age`: one limit for every component, over every tier but
    /// pre-restore.
    pub max_age_seconds: Option<u64>,
}

/// Everything [`compute`] needs, read beforehand.
pub struct Inputs<'a> {
    /// The config.
    pub cfg: &'a Config,
    /// The sets, oldest first.
    pub sets: &'a [(BackupSet, SnapshotFile)],
    /// This machine's records.
    pub records: &'a Records,
    /// The newest drill report.
    pub drill: Option<DrillRecord>,
    /// Bytes of the repository's files.
    pub repository_bytes: Option<u64>,
    /// Now, unix time.
    pub now: i64,
}

/// Per component: its newest set in each tier, and the newest good one
/// (pre-restore sets count only when there is nothing else).
fn components(briefs: &[SetBrief]) -> BTreeMap<String, ComponentStatus> {
    let mut comps: BTreeMap<String, ComponentStatus> = BTreeMap::new();
    for b in briefs {
        for c in &b.components {
            let e = comps.entry(c.clone()).or_insert_with(|| ComponentStatus {
                component: c.clone(),
                last_success: b.clone(),
                by_tier: BTreeMap::new(),
            });
            // Oldest first: a later set is newer.
            e.last_success = b.clone();
            e.by_tier.insert(b.tier, b.clone());
        }
    }
    for e in comps.values_mut() {
        // The newest of the tiers other than pre-restore, when there is one.
        if let Some(best) = e
            .by_tier
            .iter()
            .filter(|(t, _)| **t != Tier::PreRestore)
            .map(|(_, b)| b)
            .max_by_key(|b| b.timestamp)
        {
            e.last_success = best.clone();
        }
    }
    comps
}

/// Components older than `--max-age` (any tier but pre-restore) or than
/// their tier's limit; a tier with no set at all breaks its limit too.
fn violations(
    comps: &BTreeMap<String, ComponentStatus>,
    max_age_seconds: Option<u64>,
    tier_limits: &BTreeMap<Tier, u64>,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    if let Some(limit) = max_age_seconds {
        let mut any = false;
        for c in comps.values() {
            if c.last_success.tier == Tier::PreRestore {
                continue;
            }
            any = true;
            if c.last_success.age_seconds > limit as i64 {
                violations.push(Violation {
                    component: c.component.clone(),
                    tier: None,
                    age_seconds: Some(c.last_success.age_seconds),
                    max_age_seconds: limit,
                });
            }
        }
        if !any {
            violations.push(Violation {
                component: "stack".into(),
                tier: None,
                age_seconds: None,
                max_age_seconds: limit,
            });
        }
    }
    for (tier, limit) in tier_limits {
        let in_tier: Vec<&ComponentStatus> = comps
            .values()
            .filter(|c| c.by_tier.contains_key(tier))
            .collect();
        if in_tier.is_empty() {
            violations.push(Violation {
                component: format!("tier:{tier}"),
                tier: Some(*tier),
                age_seconds: None,
                max_age_seconds: *limit,
            });
        }
        for c in in_tier {
            let age = c.by_tier[tier].age_seconds;
            if age > *limit as i64 {
                violations.push(Violation {
                    component: c.component.clone(),
                    tier: Some(*tier),
                    age_seconds: Some(age),
                    max_age_seconds: *limit,
                });
            }
        }
    }
    violations
}

/// Per copy target: the sets of the tiers it receives that it does not
/// hold yet, and the lag (the age of the oldest of them).
fn copies(recs: &Records, briefs: &[SetBrief]) -> Vec<CopyStatus> {
    recs.copies
        .iter()
        .map(|(target, rec)| {
            // The tiers this target receives: those of the sets it holds.
            let tiers: Vec<Tier> = briefs
                .iter()
                .filter(|b| rec.sets.contains(&b.id))
                .map(|b| b.tier)
                .collect();
            let pending: Vec<&SetBrief> = briefs
                .iter()
                .filter(|b| tiers.contains(&b.tier) && !rec.sets.contains(&b.id))
                .collect();
            CopyStatus {
                target: target.clone(),
                last_copy: rec.time.clone(),
                pending: pending.len(),
                newest_pending: pending.last().map(|b| (*b).clone()),
                lag_seconds: pending.first().map_or(0, |b| b.age_seconds),
            }
        })
        .collect()
}

/// The status from what was read; no I/O.
pub fn compute(inp: &Inputs<'_>, req: &Request) -> Result<Status> {
    let cfg = inp.cfg;
    let now = inp.now;
    let tier_limits = cfg.status.max_ages().map_err(Error::Usage)?;
    let briefs: Vec<SetBrief> = inp.sets.iter().map(|(b, s)| brief(b, s, now)).collect();

    let tiers: Vec<TierStatus> = Tier::ALL
        .iter()
        .map(|&t| {
            let of: Vec<&SetBrief> = briefs.iter().filter(|b| b.tier == t).collect();
            TierStatus {
                tier: t,
                sets: of.len(),
                newest: of.last().map(|b| (*b).clone()),
                max_age_seconds: tier_limits.get(&t).copied(),
            }
        })
        .collect();

    let comps = components(&briefs);
    let violations = violations(&comps, req.max_age_seconds, &tier_limits);
    let recs = inp.records;
    let last_verify = ["verify", "immaculate verify"]
        .iter()
        .filter_map(|c| recs.runs.get(*c))
        .map(|r| run_status(r, now))
        .max_by_key(|r| r.timestamp);

    let copies = copies(recs, &briefs);

    let added_7d_bytes = inp
        .sets
        .iter()
        .zip(&briefs)
        .filter(|(_, b)| b.age_seconds <= GROWTH_WINDOW_SECONDS)
        .filter_map(|((_, s), _)| s.summary.as_ref().map(|m| m.data_added_packed))
        .sum();

    let mut last_runs: Vec<RunStatus> = recs.runs.values().map(|r| run_status(r, now)).collect();
    last_runs.sort_by(|a, b| a.run.command.cmp(&b.run.command));

    Ok(Status {
        stack: cfg.stack.name.0.clone(),
        repository: Location::of(cfg).to_string(),
        time: jiff::Timestamp::from_second(now)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        timestamp: now,
        tiers,
        components: comps.into_values().collect(),
        last_verify,
        last_drill: inp.drill.clone(),
        copies,
        repository_bytes: inp.repository_bytes,
        added_7d_bytes,
        last_runs,
        sets: briefs,
        violations,
    })
}

/// Reads what status needs (snapshot files, a listing of the repository's
/// files, this machine's records) and computes it. Takes no lock and reads
/// no pack file.
pub fn run(cfg: &Config, env: &Env, req: &Request) -> Result<Status> {
    let repo = repository::open_from(cfg, env)?;
    let stack = &cfg.stack.name.0;
    let sets = sets::list(&repo, stack)?;
    let repository_bytes = match repo.infos_files() {
        Ok(infos) => Some(infos.repo.iter().map(|i| i.size).sum()),
        Err(e) => {
            log::warn!(
                "could not list the repository's files for its size: {}",
                e.display_log()
            );
            None
        }
    };
    let records = records::load(cfg, stack);
    compute(
        &Inputs {
            cfg,
            sets: &sets,
            records: &records,
            // A drill run on another machine: the newest report's
            // snapshot says (read only when this machine has none).
            drill: records::drill(cfg, stack).or_else(|| {
                repo.get_all_snapshots()
                    .ok()
                    .and_then(|s| crate::drill::newest(&s, stack))
            }),
            repository_bytes,
            now: jiff::Timestamp::now().as_second(),
        },
        req,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::CopyRecord;
    use crate::tags::SetTags;

    const NOW: i64 = 1_800_000_000;

    fn set(name: &str, tier: Tier, id: u8, age: i64, comps: &[&str]) -> (BackupSet, SnapshotFile) {
        let mut bytes = [0u8; 32];
        bytes[0] = id;
        let snap = SnapshotFile {
            time: jiff::Timestamp::from_second(NOW - age)
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC),
            tags: SetTags::set("shop", tier, name).to_list(),
            id: rustic_core::repofile::SnapshotId::from(rustic_core::Id::new(bytes)),
            description: Some(serde_json::json!({ "components": comps }).to_string()),
            ..SnapshotFile::default()
        };
        (BackupSet::from_snapshot(&snap).unwrap(), snap)
    }

    fn cfg(extra: &str) -> Config {
        Config::parse(
            &format!("[stack]\nname = \"shop\"\n[repository]\npath = \"/r\"\n{extra}"),
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn pre_restore_sets_count_only_alone_and_copy_lag_is_the_oldest_pending() {
        let sets = vec![
            set("i1", Tier::Immaculate, 1, 50_000, &["pg", "redis"]),
            set("b1", Tier::Backups, 2, 40_000, &["pg"]),
            set("i2", Tier::Immaculate, 3, 30_000, &["pg"]),
            set("i3", Tier::Immaculate, 4, 20_000, &["pg"]),
            set("pre", Tier::PreRestore, 5, 100, &["pg", "redis", "dir"]),
        ];
        let mut records = Records::default();
        records.copies.insert(
            "/offsite".into(),
            CopyRecord {
                time: "2026-01-01T00:00:00Z".into(),
                sets: [sets[0].0.id.clone()].into(),
            },
        );
        // pg's newest immaculate set (i3) is 5.6 h old, redis's (i1) 13.9 h;
        // `dir` has only a pre-restore set, which no limit checks.
        let c = cfg("[status.max-age]\nimmaculate = \"6h\"\nsacred = \"1d\"\n");
        let st = compute(
            &Inputs {
                cfg: &c,
                sets: &sets,
                records: &records,
                drill: None,
                repository_bytes: Some(10),
                now: NOW,
            },
            &Request {
                max_age_seconds: Some(45_000),
            },
        )
        .unwrap();
        let comp = |n: &str| st.components.iter().find(|c| c.component == n).unwrap();
        assert_eq!(comp("pg").last_success.name, "i3");
        assert_eq!(comp("redis").last_success.name, "i1");
        assert_eq!(comp("dir").last_success.name, "pre");
        // The copy target holds i1 (immaculate): i2 and i3 wait, b1 is of
        // a tier it does not receive.
        assert_eq!(st.copies[0].pending, 2);
        assert_eq!(st.copies[0].newest_pending.as_ref().unwrap().name, "i3");
        assert_eq!(st.copies[0].lag_seconds, 30_000);
        let v: Vec<(String, Option<Tier>)> = st
            .violations
            .iter()
            .map(|v| (v.component.clone(), v.tier))
            .collect();
        assert_eq!(
            v,
            [
                ("redis".to_string(), None),
                ("redis".to_string(), Some(Tier::Immaculate)),
                ("tier:sacred".to_string(), Some(Tier::Sacred)),
            ]
        );
    }
}
