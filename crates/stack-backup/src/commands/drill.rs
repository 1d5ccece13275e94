//! `drill`: restore a set into scratch, check it, report, remove it.

use stack_backup_core::config::{Config, Env};
use stack_backup_core::drill::{self, Request};
use stack_backup_core::ExitCode;

use super::ctx;
use crate::cli::DrillArgs;
use crate::output::Output;

pub fn run(cfg: &Config, args: &DrillArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    if args.clean {
        let removed = ctx(drill::clean(cfg, true), "drill --clean failed")?;
        out.json(&serde_json::json!({ "removed": removed }));
        if removed.is_empty() {
            out.say("nothing left by earlier drills");
        }
        for r in &removed {
            out.say(format!("removed {r}"));
        }
        return Ok(ExitCode::Success);
    }
    let progress = |line: &str| {
        if !out.json && !out.quiet {
            eprintln!("{line}");
        }
    };
    let report = ctx(
        drill::run(
            cfg,
            env,
            &Request {
                name: args.name.clone(),
                keep: args.keep,
            },
            &progress,
        ),
        "drill failed",
    )?;
    out.json(&serde_json::to_value(&report)?);
    out.say(report.to_markdown());
    if let Some(s) = &report.stored {
        out.say(format!(
            "report stored in the repository: snapshot {}",
            &s[..s.len().min(8)]
        ));
    }
    for k in &report.kept {
        out.say(format!("kept: {k}"));
    }
    match report.error() {
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::Success),
    }
}
