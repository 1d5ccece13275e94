//! `unlock [--remove-all]`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::repository::{self, Location};
use stack_backup_core::{restic_lock, ExitCode};

use super::ctx;
use crate::cli::UnlockArgs;
use crate::output::Output;

pub fn run(cfg: &Config, args: &UnlockArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let repo = ctx(repository::open_from(cfg, env), "opening the repository")?;
    let report = ctx(
        restic_lock::unlock(&repo, &Location::of(cfg), args.remove_all),
        "unlock failed",
    )?;
    out.json(&serde_json::to_value(&report)?);
    out.say(format!("removed {} lock(s)", report.removed.len()));
    for k in &report.kept {
        out.say(format!("kept (live): {k}"));
    }
    Ok(ExitCode::Success)
}
