//! `verify`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::verify::{self, Which};
use stack_backup_core::{Error, ExitCode};

use super::ctx;
use super::immaculate::{failed_sets, render_sets};
use crate::cli::VerifyArgs;
use crate::output::Output;

pub fn run(cfg: &Config, args: &VerifyArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    if args.immutability {
        return immutability(cfg, args, env, out);
    }
    let which = if args.all {
        Which::All
    } else {
        Which::One(args.name.clone().unwrap_or_else(|| "latest".into()))
    };
    let report = ctx(
        verify::run(cfg, env, &which, args.read_data),
        "verify failed",
    )?;
    out.json(&serde_json::to_value(&report)?);
    if report.repository_errors.is_empty() {
        out.say(format!(
            "repository: ok ({}){}",
            if args.read_data {
                "structure, index and every pack read"
            } else {
                "structure and index; --read-data reads every pack"
            },
            if report.repository_warnings.is_empty() {
                String::new()
            } else {
                format!(", {} warning(s)", report.repository_warnings.len())
            }
        ));
    } else {
        out.say(format!(
            "repository: FAILED, {} error(s)",
            report.repository_errors.len()
        ));
        for e in report.repository_errors.iter().take(20) {
            out.say(format!("    {e}"));
        }
    }
    for w in report.repository_warnings.iter().take(20) {
        out.warn(w);
    }
    render_sets(&report.sets, out);
    if !report.repository_errors.is_empty() {
        return Err(Error::Verification("the repository check found errors".into()).into());
    }
    failed_sets(&report.sets)
}

/// `verify --immutability`.
fn immutability(
    cfg: &Config,
    args: &VerifyArgs,
    env: &Env,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let report = ctx(
        stack_backup_core::immutability::check(cfg, env, args.name.as_deref()),
        "verify --immutability failed",
    )?;
    out.json(&serde_json::to_value(&report)?);
    let bad = report.failures().count();
    out.say(format!(
        "{} baseline(s) ({}), {} {} checked: {}",
        report.sets.len(),
        report.sets.join(", "),
        report.checked.len(),
        if report.store == "s3" {
            "object(s) attacked with the configured credentials"
        } else {
            "file(s)"
        },
        if bad == 0 {
            "every one held".to_string()
        } else {
            format!("{bad} NOT protected")
        }
    ));
    for c in &report.checked {
        if !c.ok || report.checked.len() <= 12 {
            out.say(format!(
                "    {} {}: {}",
                if c.ok { "ok    " } else { "FAILED" },
                c.key,
                c.outcome
            ));
        }
    }
    for n in &report.notes {
        out.say(format!("note: {n}"));
    }
    if bad > 0 {
        let first: Vec<String> = report
            .failures()
            .take(3)
            .map(|c| format!("{}: {}", c.key, c.outcome))
            .collect();
        return Err(Error::Verification(format!(
            "{bad} object(s) of the baselines are not protected: {}",
            first.join("; ")
        ))
        .into());
    }
    Ok(ExitCode::Success)
}
