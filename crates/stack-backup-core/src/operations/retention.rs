//! Retention: which backup sets `prune` removes.
//!
//! The decision is a pure function of the sets, the `[retention]` policies
//! and the time ([`plan`]), so it can be tested over many sets without a
//! repository. The rules, in order:
//!
//! 1. immaculate and sacred sets are always kept (and carry restic's
//!    `delete_never`, so stock restic's `forget` keeps them too);
//! 2. the newest pre-restore set is always kept;
//! 3. a tier without a policy keeps every set;
//! 4. otherwise restic's `forget` rules (`keep-last`, `keep-daily`, …,
//!    `keep-within`) decide, within the tier only.

use jiff::Zoned;
use rustic_core::repofile::SnapshotFile;
use rustic_core::KeepOptions;
use serde::Serialize;

use crate::config::{KeepPolicy, Retention};
use crate::error::{Error, Result};
use crate::sets::BackupSet;
use crate::tiers::Tier;

/// What happens to one set.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The set.
    pub set: BackupSet,
    /// Kept (`true`) or removed.
    pub keep: bool,
    /// Why: the rules that keep it, or why it goes.
    pub reasons: Vec<String>,
}

/// The policy for a tier, if it has one (only data, backups, pre-restore can).
#[must_use]
pub fn policy(retention: &Retention, tier: Tier) -> Option<&KeepPolicy> {
    match tier {
        Tier::Data => retention.data.as_ref(),
        Tier::Backups => retention.backups.as_ref(),
        Tier::PreRestore => retention.pre_restore.as_ref(),
        Tier::Immaculate | Tier::Sacred => None,
    }
}

fn keep_options(p: &KeepPolicy) -> Result<KeepOptions> {
    let n = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
    let within = p.within().map_err(Error::Usage)?;
    let mut k = KeepOptions::default()
        .keep_last(n(p.keep_last))
        .keep_hourly(n(p.keep_hourly))
        .keep_daily(n(p.keep_daily))
        .keep_weekly(n(p.keep_weekly))
        .keep_monthly(n(p.keep_monthly))
        .keep_yearly(n(p.keep_yearly));
    k.keep_within = within;
    Ok(k)
}

/// Decides, for every set (`sets` as returned by [`crate::sets::list`]),
/// whether it is kept. The result is in the order of `sets`.
pub fn plan(
    sets: &[(BackupSet, SnapshotFile)],
    retention: &Retention,
    now: &Zoned,
) -> Result<Vec<Decision>> {
    let mut decided: Vec<Option<Decision>> = vec![None; sets.len()];
    let newest_pre_restore = sets
        .iter()
        .enumerate()
        .filter(|(_, (b, _))| b.tier == Tier::PreRestore)
        .max_by(|a, b| a.1 .1.time.cmp(&b.1 .1.time))
        .map(|(i, _)| i);
    for tier in Tier::ALL {
        let members: Vec<usize> = (0..sets.len())
            .filter(|i| sets[*i].0.tier == tier)
            .collect();
        let fixed = |why: &str| {
            members
                .iter()
                .map(|i| (*i, true, vec![why.to_string()]))
                .collect::<Vec<_>>()
        };
        let verdicts: Vec<(usize, bool, Vec<String>)> =
            match (tier.prunable(), policy(retention, tier)) {
                (false, _) => fixed(&format!("{tier}: never pruned")),
                (true, None) => fixed(&format!("no [retention.{tier}] policy")),
                (true, Some(p)) => {
                    let snaps: Vec<SnapshotFile> =
                        members.iter().map(|i| sets[*i].1.clone()).collect();
                    let applied = keep_options(p)?.apply(snaps, now).map_err(|e| {
                        Error::Usage(format!("[retention.{tier}]: {}", e.display_log()))
                    })?;
                    applied
                        .into_iter()
                        .map(|f| {
                            let i = members
                                .iter()
                                .copied()
                                .find(|i| sets[*i].1.id == f.snapshot.id)
                                .expect("apply returns the snapshots it was given");
                            let reasons = if f.keep {
                                f.reasons
                            } else {
                                vec![format!("not selected by [retention.{tier}]")]
                            };
                            (i, f.keep, reasons)
                        })
                        .collect()
                }
            };
        for (i, mut keep, mut reasons) in verdicts {
            if Some(i) == newest_pre_restore && !keep {
                keep = true;
                reasons = vec!["newest pre-restore set".into()];
            }
            decided[i] = Some(Decision {
                set: sets[i].0.clone(),
                keep,
                reasons,
            });
        }
    }
    Ok(decided
        .into_iter()
        .map(|d| d.expect("every set belongs to a tier"))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use jiff::civil::date;
    use jiff::tz::TimeZone;
    use rustic_core::repofile::{DeleteOption, SnapshotFile};

    use super::*;
    use crate::config::KeepPolicy;

    /// A set named `name` of `tier`, `hours` hours after 2026-01-01 00:00 UTC.
    fn set(name: &str, tier: Tier, hours: i64) -> (BackupSet, SnapshotFile) {
        // A distinct id per set.
        let mut bytes = [0u8; 32];
        let h = name
            .bytes()
            .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
        bytes[..8].copy_from_slice(&h.to_le_bytes());
        let s = SnapshotFile {
            time: date(2026, 1, 1)
                .at(0, 0, 0, 0)
                .to_zoned(TimeZone::UTC)
                .unwrap()
                .checked_add(jiff::Span::new().hours(hours))
                .unwrap(),
            tags: crate::tags::SetTags::set("shop", tier, name).to_list(),
            delete: if tier.prunable() {
                DeleteOption::NotSet
            } else {
                DeleteOption::Never
            },
            id: rustic_core::repofile::SnapshotId::from(rustic_core::Id::new(bytes)),
            ..SnapshotFile::default()
        };
        let b = BackupSet::from_snapshot(&s).expect("tagged");
        (b, s)
    }

    fn now() -> Zoned {
        date(2026, 3, 1)
            .at(0, 0, 0, 0)
            .to_zoned(TimeZone::UTC)
            .unwrap()
    }

    /// ~30 sets over two months in every tier.
    fn fleet() -> Vec<(BackupSet, SnapshotFile)> {
        let mut v = Vec::new();
        // data: 12 dumps, every 6 hours over 3 days (day 40..43).
        for i in 0..12 {
            v.push(set(&format!("d{i:02}"), Tier::Data, 40 * 24 + i * 6));
        }
        // backups: 10 sets, one a day from day 30 (two on day 35).
        for i in 0..9 {
            v.push(set(&format!("b{i:02}"), Tier::Backups, (30 + i) * 24 + 10));
        }
        v.push(set("b09", Tier::Backups, 35 * 24 + 20));
        // immaculate: 3 (one very old), sacred: 2, pre-restore: 4.
        for (i, d) in [1, 20, 44].iter().enumerate() {
            v.push(set(&format!("imm{i}"), Tier::Immaculate, d * 24));
        }
        for (i, d) in [2, 25].iter().enumerate() {
            v.push(set(&format!("sac{i}"), Tier::Sacred, d * 24));
        }
        for (i, d) in [10, 31, 36, 45].iter().enumerate() {
            v.push(set(&format!("pre{i}"), Tier::PreRestore, d * 24 + 3));
        }
        v.sort_by(|a, b| a.1.time.cmp(&b.1.time));
        v
    }

    fn removed(sets: &[(BackupSet, SnapshotFile)], r: &Retention) -> BTreeSet<String> {
        plan(sets, r, &now())
            .unwrap()
            .into_iter()
            .filter(|d| !d.keep)
            .map(|d| d.set.name)
            .collect()
    }

    fn names(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|s| (*s).to_string()).collect()
    }

    fn p(f: impl FnOnce(&mut KeepPolicy)) -> Option<KeepPolicy> {
        let mut k = KeepPolicy::default();
        f(&mut k);
        Some(k)
    }

    #[test]
    fn policies_remove_exactly_what_they_select() {
        let sets = fleet();
        assert_eq!(sets.len(), 31);
        let all_pre = |keep: u32| Retention {
            pre_restore: p(|k| k.keep_last = Some(keep)),
            ..Retention::default()
        };
        let cases: Vec<(&str, Retention, BTreeSet<String>)> = vec![
            (
                "no policy removes nothing",
                Retention::default(),
                names(&[]),
            ),
            (
                "data keep-last 3",
                Retention {
                    data: p(|k| k.keep_last = Some(3)),
                    ..Retention::default()
                },
                names(&[
                    "d00", "d01", "d02", "d03", "d04", "d05", "d06", "d07", "d08",
                ]),
            ),
            (
                "data keep-daily 2: newest of the last two days",
                Retention {
                    data: p(|k| k.keep_daily = Some(2)),
                    ..Retention::default()
                },
                // days 40 (d00-d03), 41 (d04-d07), 42 (d08-d11): keep d11, d07.
                names(&[
                    "d00", "d01", "d02", "d03", "d04", "d05", "d06", "d08", "d09", "d10",
                ]),
            ),
            (
                "backups keep-last 2 + keep-daily 4 (two on day 35 count once)",
                Retention {
                    backups: p(|k| {
                        k.keep_last = Some(2);
                        k.keep_daily = Some(4);
                    }),
                    ..Retention::default()
                },
                // newest first: b08(d38) b07(d37) b06(d36) b09(d35 20h) b05(d35 10h) …
                // last 2: b08, b07; daily 4: b08, b07, b06, b09.
                names(&["b00", "b01", "b02", "b03", "b04", "b05"]),
            ),
            (
                "pre-restore keep-last 1",
                all_pre(1),
                names(&["pre0", "pre1", "pre2"]),
            ),
            (
                "every tier at its tightest: immaculate, sacred, newest pre-restore stay",
                Retention {
                    data: p(|k| k.keep_last = Some(1)),
                    backups: p(|k| k.keep_last = Some(1)),
                    pre_restore: p(|k| k.keep_last = Some(1)),
                },
                {
                    let mut s = names(&["pre0", "pre1", "pre2"]);
                    s.extend((0..11).map(|i| format!("d{i:02}")));
                    s.extend(
                        [
                            "b00", "b01", "b02", "b03", "b04", "b05", "b06", "b07", "b09",
                        ]
                        .map(String::from),
                    );
                    s
                },
            ),
        ];
        for (what, retention, want) in cases {
            let got = removed(&sets, &retention);
            assert_eq!(got, want, "{what}");
            for n in &got {
                assert!(
                    !n.starts_with("imm") && !n.starts_with("sac") && n != "pre3",
                    "{what}: removed a protected set {n}"
                );
            }
        }
    }

    #[test]
    fn keep_within_counts_from_the_newest_set_of_the_tier() {
        let sets = fleet();
        let r = Retention {
            backups: p(|k| k.keep_within = Some("3d".into())),
            ..Retention::default()
        };
        // newest backups set: b08 at day 38 10:00; within 3 days: b06 (36),
        // b07 (37), b08 (38), and the two of day 35 are older than 3 days
        // except b09 (day 35 20:00).
        assert_eq!(
            removed(&sets, &r),
            names(&["b00", "b01", "b02", "b03", "b04", "b05"])
        );
    }

    #[test]
    fn newest_pre_restore_survives_a_policy_that_keeps_none_of_it() {
        // keep-last = 0 selects nothing at all.
        let sets = vec![
            set("pre-a", Tier::PreRestore, 0),
            set("pre-b", Tier::PreRestore, 100),
            set("imm", Tier::Immaculate, 50),
        ];
        let r = Retention {
            pre_restore: p(|k| k.keep_last = Some(0)),
            ..Retention::default()
        };
        let d = plan(&sets, &r, &now()).unwrap();
        let by = |n: &str| d.iter().find(|d| d.set.name == n).unwrap().clone();
        assert!(!by("pre-a").keep);
        assert!(by("pre-b").keep);
        assert_eq!(
            by("pre-b").reasons,
            vec!["newest pre-restore set".to_string()]
        );
        assert!(by("imm").keep);
        assert!(by("imm").reasons[0].contains("never pruned"));
    }

    #[test]
    fn a_bad_duration_is_a_usage_error() {
        let sets = fleet();
        let r = Retention {
            data: p(|k| k.keep_within = Some("fortnight".into())),
            ..Retention::default()
        };
        assert!(matches!(plan(&sets, &r, &now()), Err(Error::Usage(_))));
    }
}

/// What `prune` decided and did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Every set with its verdict, oldest first.
    pub decisions: Vec<Decision>,
    /// Whether the plan was applied (`--apply`).
    pub applied: bool,
    /// Sets removed (0 without `--apply`).
    pub removed_sets: usize,
    /// Pack files deleted by this run: those marked unreferenced by an
    /// earlier run more than `prune-grace-hours` ago.
    pub packs_removed: u64,
    /// Pack files this run found unreferenced (no snapshot uses them, or no
    /// index lists them, as a writer's in-flight packs) and marked; a later
    /// run deletes them once the grace period has passed.
    pub packs_marked: u64,
    /// Marked pack files kept (still within the grace period).
    pub packs_waiting: u64,
    /// Marked pack files that something uses again, unmarked.
    pub packs_recovered: u64,
    /// Bytes of repository data freed.
    pub bytes_freed: u64,
    /// Packs this run would have repacked that are under Object Lock
    /// retention (an immaculate or sacred set's): not repacked, nor is
    /// anything else this run, since a repack deletes the old pack.
    pub packs_retained: usize,
    /// The latest retention date of those packs.
    pub retained_until: Option<String>,
    /// Local repository: packs this run would have repacked that are
    /// read-only or immutable (a baseline's, decision 0029): not repacked,
    /// nor is anything else this run.
    pub packs_read_only: usize,
    /// Local repository: immutable pack files no baseline needs any more
    /// (a retired baseline's). They cannot be deleted, so this run deletes
    /// nothing; [`Self::unlock_first`] says what to run first.
    pub packs_immutable_unused: usize,
    /// The command that makes those files deletable, when there are any.
    pub unlock_first: Option<String>,
    /// Local repository shared by several stacks: immutable packs this
    /// stack's baselines do not need but another stack's do, by stack. Kept
    /// (they are not stuck) and no obstacle to this run's deletions.
    pub packs_immutable_other_stacks: std::collections::BTreeMap<String, usize>,
}

/// The packs of the immaculate and sacred sets among `sets`, and the
/// bucket, when Object Lock retention is configured.
fn retained_packs(
    cfg: &crate::Config,
    env: &crate::config::Env,
    sets: &[(crate::sets::BackupSet, rustic_core::repofile::SnapshotFile)],
) -> Result<Option<(std::collections::BTreeSet<String>, crate::object_lock::S3)>> {
    let Some(policy) = crate::object_lock::policy(cfg)? else {
        return Ok(None);
    };
    let repo = crate::repository::open_indexed(cfg, env)?;
    let mut packs = std::collections::BTreeSet::new();
    for (_, snap) in sets
        .iter()
        .filter(|(b, _)| matches!(b.tier, Tier::Immaculate | Tier::Sacred))
    {
        packs.extend(crate::object_lock::set_packs(&repo, snap)?);
    }
    Ok(Some((packs, policy.s3)))
}

/// A local repository's read-only and immutable packs (a baseline's,
/// decision 0029) are never repacked: when the plan would repack one, it
/// is made again with `max-repack 0`. An immutable pack no baseline needs
/// (a retired baseline's) cannot be unlinked, and rustic's deletion would
/// stop half-way on it: when the plan deletes anything and such a pack
/// exists, nothing is deleted this run (what is marked waits) and the
/// report says which files to unlock first.
fn spare_protected_files(
    cfg: &crate::Config,
    env: &crate::config::Env,
    repo: &crate::repository::OpenRepo,
    opts: &mut rustic_core::PruneOptions,
    mut prune_plan: rustic_core::PrunePlan,
    report: &mut PruneReport,
) -> Result<rustic_core::PrunePlan> {
    use crate::read_only::{attrs, pack_path};
    let crate::repository::Location::Local(root) = crate::repository::Location::of(cfg) else {
        return Ok(prune_plan);
    };
    let root = root.as_path();
    let location = root.display().to_string();
    let repo_err = |what: &str, e: Box<rustic_core::RusticError>| Error::Repository {
        location: location.clone(),
        message: format!("{what}: {}", e.display_log()),
    };
    let protected = |id: &str| {
        attrs(&pack_path(root, id)).is_ok_and(|a| a.read_only || a.immutable == Some(true))
    };
    let hit = prune_plan
        .repack_packs()
        .iter()
        .map(|p| p.to_hex().to_string())
        .filter(|p| protected(p))
        .count();
    if hit > 0 {
        report.packs_read_only = hit;
        opts.max_repack = "0"
            .parse()
            .map_err(|e: Box<rustic_core::RusticError>| repo_err("limiting the repack", e))?;
        prune_plan = repo
            .prune_plan(opts)
            .map_err(|e| repo_err("planning the data prune", e))?;
        if prune_plan
            .repack_packs()
            .iter()
            .any(|p| protected(&p.to_hex()))
        {
            return Err(Error::Refused(format!(
                "prune would repack {hit} read-only pack(s) of baselines; nothing was deleted"
            )));
        }
    }
    if prune_plan.stats.packs_to_delete.remove == 0 {
        return Ok(prune_plan);
    }
    let indexed = crate::repository::open_indexed(cfg, env)?;
    // Every stack's baselines, not only this one's: in a repository shared
    // by several stacks, another stack's immutable packs are needed, not
    // stuck, and must not stop this stack's deletions.
    let all = indexed
        .get_all_snapshots()
        .map_err(|e| repo_err("listing snapshots", e))?;
    let own = &cfg.stack.name.0;
    let mut needed: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for snap in &all {
        let Some(crate::tags::SetTags::Set { stack, tier, .. }) = crate::tags::SetTags::of(snap)
        else {
            continue;
        };
        if !matches!(tier, Tier::Immaculate | Tier::Sacred) {
            continue;
        }
        for p in crate::object_lock::set_packs(&indexed, snap)? {
            let e = needed.entry(p).or_insert_with(|| stack.clone());
            if stack == *own {
                e.clone_from(&stack);
            }
        }
    }
    let mut stuck = Vec::new();
    let data = root.join("data");
    for dir in std::fs::read_dir(&data).map_err(|e| Error::io("listing", &data, e))? {
        let dir = dir.map_err(|e| Error::io("listing", &data, e))?.path();
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for f in files.flatten() {
            let id = f.file_name().to_string_lossy().into_owned();
            if !attrs(&f.path()).is_ok_and(|a| a.immutable == Some(true)) {
                continue;
            }
            match needed.get(&id) {
                None => stuck.push(f.path()),
                Some(stack) if stack != own => {
                    *report
                        .packs_immutable_other_stacks
                        .entry(stack.clone())
                        .or_default() += 1;
                }
                Some(_) => {}
            }
        }
    }
    if stuck.is_empty() {
        return Ok(prune_plan);
    }
    report.packs_immutable_unused = stuck.len();
    report.unlock_first = Some(format!(
        "chattr -i {}",
        stuck
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    opts.keep_delete = jiff::Span::new().years(100);
    repo.prune_plan(opts)
        .map_err(|e| repo_err("planning the data prune", e))
}

/// `stack-backup prune`: decides with [`plan`]; with `apply`, removes the
/// sets that go, then marks the data no snapshot references any more and
/// deletes what an earlier run marked more than `prune-grace-hours` ago
/// (rustic's two-phase prune). Holds the exclusive repository lock.
/// Without `apply` nothing is changed.
pub fn prune(cfg: &crate::Config, env: &crate::config::Env, apply: bool) -> Result<PruneReport> {
    use crate::repository::{self, Location};
    let location = Location::of(cfg);
    let _lock = crate::lock::RepoLock::acquire(
        cfg,
        env,
        crate::lock::Mode::Exclusive,
        "stack-backup prune",
    )?;
    crate::system::fault::point("prune-locked")?;
    let repo = repository::open_from(cfg, env)?;
    let sets = crate::sets::list(&repo, &cfg.stack.name.0)?;
    let decisions = plan(&sets, &cfg.retention, &Zoned::now())?;
    let mut report = PruneReport {
        decisions,
        applied: apply,
        removed_sets: 0,
        packs_removed: 0,
        packs_marked: 0,
        packs_waiting: 0,
        packs_recovered: 0,
        bytes_freed: 0,
        packs_retained: 0,
        retained_until: None,
        packs_read_only: 0,
        packs_immutable_unused: 0,
        unlock_first: None,
        packs_immutable_other_stacks: std::collections::BTreeMap::new(),
    };
    if !apply {
        return Ok(report);
    }
    let repo_err = |what: &str, e: Box<rustic_core::RusticError>| Error::Repository {
        location: location.to_string(),
        message: format!("{what}: {}", e.display_log()),
    };
    let gone: Vec<_> = report
        .decisions
        .iter()
        .filter(|d| !d.keep)
        .filter_map(|d| sets.iter().find(|(b, _)| b.id == d.set.id))
        .map(|(_, s)| s.id)
        .collect();
    crate::repo::restic_lock::still_held()?;
    let sets_gone = gone.len();
    // A set's drill reports go with it (decision 0021).
    let mut gone = gone;
    if !gone.is_empty() {
        let ids: Vec<String> = gone.iter().map(ToString::to_string).collect();
        let snaps = repo
            .get_all_snapshots()
            .map_err(|e| repo_err("listing the drill reports", e))?;
        gone.extend(snaps.iter().filter_map(|s| {
            crate::drill::report_of(s, &cfg.stack.name.0)
                .filter(|of| ids.contains(of))
                .map(|_| s.id)
        }));
    }
    if !gone.is_empty() {
        repo.delete_snapshots(&gone)
            .map_err(|e| repo_err("removing backup sets", e))?;
    }
    report.removed_sets = sets_gone;
    // Two phases (decision 0018): what is unreferenced now is marked, and
    // deleted by a later run once older than the grace period, so that a
    // writer whose packs are not indexed yet (restic or another host that
    // ignored or lost its lock, or crashed) loses nothing.
    let mut opts = rustic_core::PruneOptions::default();
    opts.instant_delete = false;
    opts.keep_delete = jiff::Span::new()
        .try_hours(i64::try_from(cfg.repository.prune_grace_hours()).unwrap_or(i64::MAX))
        .map_err(|e| Error::Usage(format!("prune-grace-hours: {e}")))?;
    let mut prune_plan = repo
        .prune_plan(&opts)
        .map_err(|e| repo_err("planning the data prune", e))?;
    // Packs under Object Lock retention are never repacked (a repack
    // deletes the old pack): when the plan would touch one, this run
    // repacks nothing. Unused packs are never a kept set's, so deletion
    // is unaffected and `backups` sets are pruned as usual.
    if let Some((retained, s3)) = retained_packs(cfg, env, &sets)? {
        let hit: Vec<String> = prune_plan
            .repack_packs()
            .iter()
            .map(|p| p.to_hex().to_string())
            .filter(|p| retained.contains(p))
            .collect();
        if !hit.is_empty() {
            let mut until: Option<jiff::Timestamp> = None;
            for p in &hit {
                if let Some((_, u)) = s3.retention(&format!("data/{}/{p}", &p[..2]), None)? {
                    until = until.max(Some(u));
                }
            }
            report.packs_retained = hit.len();
            report.retained_until = until.map(|u| u.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            opts.max_repack = "0"
                .parse()
                .map_err(|e: Box<rustic_core::RusticError>| repo_err("limiting the repack", e))?;
            prune_plan = repo
                .prune_plan(&opts)
                .map_err(|e| repo_err("planning the data prune", e))?;
            if prune_plan
                .repack_packs()
                .iter()
                .any(|p| retained.contains(&p.to_hex().to_string()))
            {
                return Err(Error::Refused(format!(
                    "prune would repack {} pack(s) under Object Lock retention; nothing was deleted",
                    hit.len()
                )));
            }
        }
    }
    prune_plan = spare_protected_files(cfg, env, &repo, &mut opts, prune_plan, &mut report)?;
    let stats = &prune_plan.stats;
    report.packs_removed = stats.packs_to_delete.remove;
    report.packs_marked = stats.packs.unused + stats.packs_unref;
    report.packs_waiting = stats.packs_to_delete.keep;
    report.packs_recovered = stats.packs_to_delete.recover;
    report.bytes_freed = stats.size_to_delete.remove;
    crate::repo::restic_lock::still_held()?;
    repo.prune(&opts, prune_plan)
        .map_err(|e| repo_err("removing unreferenced data", e))?;
    Ok(report)
}
