//! `prune [--apply]`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::{disk, retention, ExitCode};

use super::ctx;
use crate::cli::PruneArgs;
use crate::output::{table, Output};

pub fn run(cfg: &Config, args: &PruneArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let report = ctx(retention::prune(cfg, env, args.apply), "prune failed")?;
    out.json(&serde_json::to_value(&report)?);
    let rows = report
        .decisions
        .iter()
        .map(|d| {
            vec![
                if d.keep { "keep" } else { "REMOVE" }.to_string(),
                d.set.name.clone(),
                d.set.tier.to_string(),
                d.set.time.clone(),
                d.reasons.join(", "),
            ]
        })
        .collect::<Vec<_>>();
    if rows.is_empty() {
        out.say("no backup sets");
    } else {
        out.say(table(&["ACTION", "NAME", "TIER", "TIME", "WHY"], &rows));
    }
    let gone = report.decisions.iter().filter(|d| !d.keep).count();
    if report.applied {
        out.say(format!(
            "\nremoved {} set(s); {} pack file(s) of unreferenced data deleted, {} freed",
            report.removed_sets,
            report.packs_removed,
            disk::human(report.bytes_freed)
        ));
        out.say(format!(
            "{} pack file(s) newly marked unreferenced, {} marked and waiting for the grace period ({}h, `prune-grace-hours`), {} back in use",
            report.packs_marked,
            report.packs_waiting,
            cfg.repository.prune_grace_hours(),
            report.packs_recovered
        ));
        if report.packs_retained > 0 {
            out.say(format!(
                "{} pack file(s) are under Object Lock retention (until {}) and would have been repacked: nothing was repacked this run",
                report.packs_retained,
                report.retained_until.as_deref().unwrap_or("an unknown date")
            ));
        }
        if report.packs_read_only > 0 {
            out.say(format!(
                "{} pack file(s) are read-only or immutable (baselines' packs) and would have been repacked: nothing was repacked this run",
                report.packs_read_only
            ));
        }
        if let Some(cmd) = &report.unlock_first {
            out.warn(format!(
                "{} immutable pack file(s) are needed by no baseline any more (a retired baseline's): nothing was deleted this run; to let prune delete them, run first: {cmd}",
                report.packs_immutable_unused
            ));
        }
        for (stack, n) in &report.packs_immutable_other_stacks {
            out.say(format!(
                "{n} immutable pack file(s) are held by stack `{stack}`'s baselines: kept, no obstacle to this run"
            ));
        }
    } else {
        out.say(format!(
            "\n{gone} set(s) would be removed; nothing was changed (run `stack-backup prune --apply` to apply)"
        ));
    }
    Ok(ExitCode::Success)
}
