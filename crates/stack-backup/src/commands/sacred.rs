//! `sacred NAME [--from BACKUP]`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::repository::NoProgress;
use stack_backup_core::{sacred, ExitCode};

use super::ctx;
use crate::cli::SacredArgs;
use crate::output::Output;

pub fn run(cfg: &Config, args: &SacredArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let pinned = ctx(
        sacred::pin(
            cfg,
            env,
            &args.name,
            args.from.as_deref(),
            super::backup::observer(out),
            NoProgress,
        ),
        "sacred failed",
    )?;
    out.json(&serde_json::to_value(&pinned)?);
    match &pinned.from {
        Some(f) => out.say(format!(
            "backup set `{f}` is pinned as `{}` ({}); it is never pruned",
            pinned.set.name,
            pinned.set.short_id()
        )),
        None => out.say(format!(
            "new sacred set `{}` ({}); it is never pruned",
            pinned.set.name,
            pinned.set.short_id()
        )),
    }
    match (&pinned.git_tag, &pinned.set.git_commit) {
        (Some(t), Some(c)) => out.say(format!("git tag `{t}` created at {c}")),
        _ => {
            if let Some(n) = &pinned.note {
                out.warn(n);
            }
        }
    }
    if let Some(r) = &pinned.retention {
        out.say(super::immaculate::retention_line(r));
    }
    if let Some(r) = &pinned.read_only {
        out.say(super::immaculate::read_only_line(r));
    }
    if let Some(w) = &pinned.protect_warning {
        out.warn(w);
    }
    out.say(format!(
        "restore it with: stack-backup restore {}",
        pinned.set.name
    ));
    Ok(ExitCode::Success)
}
