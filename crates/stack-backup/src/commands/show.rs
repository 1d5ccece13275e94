//! `show NAME`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::{manifest, repository, sets, ExitCode};

use super::ctx;
use crate::cli::ShowArgs;
use crate::output::Output;

pub fn run(cfg: &Config, args: &ShowArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let repo = ctx(repository::open_indexed(cfg, env), "opening the repository")?;
    let (set, snap) = ctx(
        sets::find(&repo, &cfg.stack.name.0, &args.name),
        "finding the backup set",
    )?;
    let manifest = ctx(
        sets::read_file(&repo, &snap, manifest::MD_PATH),
        "reading MANIFEST.md",
    )?;
    let manifest = String::from_utf8_lossy(&manifest);
    out.json(&serde_json::json!({ "set": set, "manifest": manifest }));
    out.say(manifest);
    Ok(ExitCode::Success)
}
