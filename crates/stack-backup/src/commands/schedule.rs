//! `schedule install|show|remove`

use std::path::PathBuf;

use stack_backup_core::config::Config;
use stack_backup_core::schedule::{self, Options};
use stack_backup_core::ExitCode;

use super::ctx;
use crate::cli::{ScheduleAction, ScheduleArgs};
use crate::output::Output;

fn options(cfg: &Config, args: &ScheduleArgs) -> anyhow::Result<Options> {
    let config = cfg
        .source
        .clone()
        .unwrap_or_else(|| PathBuf::from(stack_backup_core::config::DEFAULT_FILE));
    let config = std::fs::canonicalize(&config).unwrap_or(config);
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()?,
    };
    Ok(Options {
        binary,
        config,
        cron: args.cron,
        target: args.dir.clone(),
        flock: PathBuf::from("/usr/bin/flock"),
    })
}

pub fn run(cfg: &Config, args: &ScheduleArgs, out: &Output) -> anyhow::Result<ExitCode> {
    let o = options(cfg, args)?;
    let plan = ctx(schedule::plan(cfg, &o), "planning the schedule")?;
    for s in &plan.skipped {
        out.warn(format!("skipped {s}"));
    }
    match args.action {
        ScheduleAction::Show => {
            out.json(&serde_json::to_value(&plan)?);
            for f in &plan.files {
                out.say(format!("# {}\n{}", f.path.display(), f.text));
            }
        }
        ScheduleAction::Install => {
            out.json(&serde_json::to_value(&plan)?);
            if args.dry_run {
                for f in &plan.files {
                    out.say(format!("would write {}", f.path.display()));
                }
                return Ok(ExitCode::Success);
            }
            ctx(schedule::install(&plan), "installing the schedule")?;
            for f in &plan.files {
                out.say(format!("wrote {}", f.path.display()));
            }
            if !o.cron && !plan.timers.is_empty() {
                let enable = systemd_running() && args.dir.is_none();
                if enable {
                    let ok = std::process::Command::new("systemctl")
                        .arg("daemon-reload")
                        .status()
                        .is_ok_and(|s| s.success())
                        && std::process::Command::new("systemctl")
                            .args(["enable", "--now"])
                            .args(&plan.timers)
                            .status()
                            .is_ok_and(|s| s.success());
                    if !ok {
                        anyhow::bail!(
                            "the units are written but systemctl could not enable them; run: systemctl daemon-reload && systemctl enable --now {}",
                            plan.timers.join(" ")
                        );
                    }
                    out.say(format!("enabled {}", plan.timers.join(" ")));
                } else {
                    out.say(format!(
                        "enable them with: systemctl daemon-reload && systemctl enable --now {}",
                        plan.timers.join(" ")
                    ));
                }
            }
        }
        ScheduleAction::Remove => {
            let paths = schedule::installed(&plan, &o);
            out.json(&serde_json::json!({ "remove": paths, "dry_run": args.dry_run }));
            if paths.is_empty() {
                out.say("nothing to remove (no file written by `schedule install` here)");
                return Ok(ExitCode::Success);
            }
            if args.dry_run {
                for p in &paths {
                    out.say(format!("would remove {}", p.display()));
                }
                return Ok(ExitCode::Success);
            }
            let timers: Vec<String> = paths
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "timer"))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            if !timers.is_empty() && systemd_running() && args.dir.is_none() {
                let _ = std::process::Command::new("systemctl")
                    .args(["disable", "--now"])
                    .args(&timers)
                    .status();
            }
            ctx(schedule::remove(&paths), "removing the schedule")?;
            for p in &paths {
                out.say(format!("removed {}", p.display()));
            }
        }
    }
    Ok(ExitCode::Success)
}

fn systemd_running() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}
