//! `list`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::{disk, repository, sets, ExitCode};

use super::ctx;
use crate::cli::ListArgs;
use crate::output::{table, Output};

pub fn run(cfg: &Config, args: &ListArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let repo = ctx(repository::open_from(cfg, env), "opening the repository")?;
    let sets: Vec<sets::BackupSet> =
        ctx(sets::list(&repo, &cfg.stack.name.0), "listing backup sets")?
            .into_iter()
            .map(|(b, _)| b)
            .filter(|b| args.tier.is_none_or(|t| b.tier == t))
            .collect();
    out.json(&serde_json::to_value(&sets)?);
    if sets.is_empty() {
        out.say(format!(
            "no backup sets of stack `{}` yet",
            cfg.stack.name.0
        ));
        return Ok(ExitCode::Success);
    }
    let rows: Vec<Vec<String>> = sets
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.short_id().to_string(),
                b.tier.to_string(),
                b.time.clone(),
                b.git_commit
                    .as_deref()
                    .map_or("-".into(), |c| c[..c.len().min(10)].to_string()),
                b.size.map_or("-".into(), disk::human),
                b.components.join(","),
            ]
        })
        .collect();
    out.say(table(
        &["NAME", "ID", "TIER", "TIME", "GIT", "SIZE", "COMPONENTS"],
        &rows,
    ));
    Ok(ExitCode::Success)
}
