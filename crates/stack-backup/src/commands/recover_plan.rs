//! `recover-plan [SET]`: the runbook that brings the stack back on a bare
//! machine from a set (the same one is in the set's MANIFEST.md, with the
//! repository left as `REPOSITORY`).

use stack_backup_core::config::{Config, Env};
use stack_backup_core::repository::Location;
use stack_backup_core::{manifest, repository, runbook, sets, ExitCode};

use super::ctx;
use crate::cli::RecoverPlanArgs;
use crate::output::Output;

pub fn run(
    cfg: &Config,
    args: &RecoverPlanArgs,
    env: &Env,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let repo = ctx(repository::open_indexed(cfg, env), "opening the repository")?;
    let (set, snap) = ctx(
        sets::find(&repo, &cfg.stack.name.0, &args.name),
        "finding the backup set",
    )?;
    let raw = ctx(
        sets::read_file(&repo, &snap, manifest::JSON_PATH),
        "reading manifest.json",
    )?;
    let m: manifest::Manifest = serde_json::from_slice(&raw).map_err(|e| {
        stack_backup_core::Error::Verification(format!("manifest.json of `{}`: {e}", set.name))
    })?;
    // Input: every component id must name a kind and agree with its record.
    stack_backup_core::components::check_manifest(&m).map_err(|e| {
        stack_backup_core::Error::Verification(format!("manifest.json of `{}`: {e}", set.name))
    })?;
    // Shown redacted: a URL may hold credentials.
    let steps = runbook::runbook(&m, &Location::of(cfg).to_string());
    out.json(&serde_json::json!({ "set": set, "steps": steps }));
    out.say(format!(
        "Bringing stack `{}` back on a bare Debian machine from set `{}` ({}):\n",
        m.stack,
        set.name,
        set.short_id()
    ));
    out.say(runbook::render_runbook(&steps));
    Ok(ExitCode::Success)
}
