//! `emergency --confirm`: the newest immaculate baseline through the full
//! restore chain, after two confirmations.

use stack_backup_core::config::{Config, Env};
use stack_backup_core::restore::Request;
use stack_backup_core::{immaculate, Error, ExitCode};

use super::ctx;
use super::restore::{ask, run_with};
use crate::cli::EmergencyArgs;
use crate::output::Output;

pub fn run(
    cfg: &Config,
    args: &EmergencyArgs,
    env: &Env,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let stack = cfg.stack.name.0.clone();
    if !args.confirm && !args.dry_run {
        return Err(Error::Refused(
            "emergency restores the immaculate baseline over the live stack; it needs --confirm (or --dry-run to see the plan); nothing was changed".into(),
        )
        .into());
    }
    if let Some(s) = &args.yes_i_am_sure {
        if s != &stack {
            return Err(Error::Refused(format!(
                "--yes-i-am-sure={s} does not name this stack (`{stack}`); nothing was changed"
            ))
            .into());
        }
    }
    let baseline = ctx(
        immaculate::find(cfg, env, args.baseline.as_deref()),
        "choosing the baseline",
    )?;
    if !out.json {
        let age = baseline.time.parse::<jiff::Timestamp>().ok().map_or_else(
            || "?".into(),
            |t| age(jiff::Timestamp::now().as_second() - t.as_second()),
        );
        eprintln!(
            "EMERGENCY restore of stack `{stack}` to immaculate baseline `{}` ({}), taken {} ({age} ago){}",
            baseline.name,
            baseline.short_id(),
            baseline.time,
            baseline
                .git_commit
                .as_deref()
                .map_or(String::new(), |c| format!(" at git commit {c}"))
        );
        eprintln!(
            "The current state is saved first (a pre-restore set) and restored if anything fails."
        );
    }
    let req = Request {
        name: baseline.id.clone(),
        only: Vec::new(),
        flush_redis: false,
        dry_run: args.dry_run,
        allow_migration_mismatch: args.allow_migration_mismatch,
        restore_role_passwords: args.restore_role_passwords,
    };
    let sure = args.yes_i_am_sure.is_some();
    run_with(cfg, env, &req, out, &|| {
        if sure {
            return Ok(());
        }
        ask(
            &format!("emergency needs a second confirmation: type the stack name on a terminal, or pass --yes-i-am-sure={stack}; nothing was changed"),
            &format!("Type the stack name (`{stack}`) to replace it with the baseline: "),
            &stack,
        )
    })
}

/// A duration in seconds as `3d 4h 12m`.
fn age(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h {m}m"),
    }
}
