//! `copy [NAME|--tier T|--all] --to REPO`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::copy::{self, Request, Selection};
use stack_backup_core::repository::{self, PasswordSource};
use stack_backup_core::{disk, ExitCode};

use super::ctx;
use crate::cli::CopyArgs;
use crate::output::{table, Output};

/// The target's password: `--to-password-file`, `STACK_BACKUP_TO_PASSWORD`,
/// else the source repository's own password.
fn target_password(cfg: &Config, args: &CopyArgs, env: &Env) -> anyhow::Result<String> {
    if let Some(f) = &args.to_password_file {
        return ctx(
            PasswordSource::File(f.clone()).read(env),
            "reading --to-password-file",
        );
    }
    if let Some(p) = env
        .get("STACK_BACKUP_TO_PASSWORD")
        .filter(|p| !p.is_empty())
    {
        return Ok(p.clone());
    }
    ctx(
        repository::password(cfg, env),
        "reading the repository password",
    )
}

pub fn run(cfg: &Config, args: &CopyArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let selection = match (&args.name, args.tier, args.all) {
        (_, _, true) => Selection::All,
        (_, Some(t), _) => Selection::Tier(t),
        (Some(n), None, false) => Selection::Name(n.clone()),
        (None, None, false) => Selection::Name("latest".into()),
    };
    let req = Request {
        selection,
        to: args.to.clone(),
        to_password: target_password(cfg, args, env)?,
        init: args.init,
    };
    let report = ctx(copy::run(cfg, env, &req), "copying backup sets")?;
    out.json(&serde_json::to_value(&report)?);
    if report.initialized {
        out.say(format!(
            "created restic repository (format v2) at {}",
            report.target
        ));
    }
    let rows: Vec<Vec<String>> = report
        .copied
        .iter()
        .map(|b| (b, "copied"))
        .chain(report.skipped.iter().map(|b| (b, "already there")))
        .map(|(b, what)| {
            vec![
                b.name.clone(),
                b.short_id().to_string(),
                b.tier.to_string(),
                b.size.map_or("-".into(), disk::human),
                what.to_string(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.say(table(&["NAME", "ID", "TIER", "SIZE", "COPY"], &rows));
    }
    out.say(format!(
        "{} backup set(s) copied to {}, {} already there",
        report.copied.len(),
        report.target,
        report.skipped.len()
    ));
    Ok(ExitCode::Success)
}
