//! `immaculate create|list|verify`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::repository::NoProgress;
use stack_backup_core::verify::SetReport;
use stack_backup_core::{disk, immaculate, Error, ExitCode};

use super::ctx;
use crate::cli::ImmaculateCommand;
use crate::output::{table, Output};

pub fn run(
    cfg: &Config,
    cmd: &ImmaculateCommand,
    env: &Env,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    match cmd {
        ImmaculateCommand::Create(a) => {
            let name = a.name.clone().or_else(|| {
                Some(format!(
                    "immaculate-{}",
                    stack_backup_core::backup::generated_name()
                ))
            });
            let created = ctx(
                immaculate::create(
                    cfg,
                    env,
                    name,
                    a.include_redis,
                    super::backup::observer(out),
                    NoProgress,
                ),
                "immaculate create failed",
            )?;
            out.json(&serde_json::json!({
                "backup": created.backup,
                "verification": created.verification,
                "retention": created.retention,
                "read_only": created.read_only,
                "protect_warning": created.protect_warning,
            }));
            super::backup::render(&created.backup, out);
            out.say(format!(
                "read back in full: {} file(s), {}, every SHA-256 matches; `{}` is immaculate",
                created.verification.files,
                disk::human(created.verification.bytes),
                created.backup.set.name
            ));
            if let Some(r) = &created.retention {
                out.say(retention_line(r));
            }
            if let Some(r) = &created.read_only {
                out.say(read_only_line(r));
            }
            if let Some(w) = &created.protect_warning {
                out.warn(w);
            }
            Ok(ExitCode::Success)
        }
        ImmaculateCommand::List => {
            let list = ctx(immaculate::list(cfg, env), "listing immaculate baselines")?;
            out.json(&serde_json::to_value(&list)?);
            if list.is_empty() {
                out.say(
                    "no immaculate baselines yet; create one with `stack-backup immaculate create`",
                );
                return Ok(ExitCode::Success);
            }
            let rows = list
                .iter()
                .map(|b| {
                    vec![
                        b.set.name.clone(),
                        b.set.short_id().to_string(),
                        b.set.time.clone(),
                        b.set
                            .git_commit
                            .as_deref()
                            .map_or("-".into(), |c| c[..c.len().min(10)].to_string()),
                        b.set.size.map_or("-".into(), disk::human),
                        b.last_verification.as_ref().map_or("never".into(), |v| {
                            format!("{} {}", if v.ok { "ok" } else { "FAILED" }, v.time)
                        }),
                    ]
                })
                .collect::<Vec<_>>();
            out.say(table(
                &["NAME", "ID", "TIME", "GIT", "SIZE", "LAST VERIFIED"],
                &rows,
            ));
            Ok(ExitCode::Success)
        }
        ImmaculateCommand::Protect(a) => {
            let done = ctx(
                stack_backup_core::immutability::protect(cfg, env, a.name.as_deref(), a.chattr),
                "immaculate protect failed",
            )?;
            out.json(&serde_json::to_value(&done)?);
            for (name, r) in &done {
                out.say(format!("{name}: {}", read_only_line(r)));
            }
            Ok(ExitCode::Success)
        }
        ImmaculateCommand::Verify(a) => {
            let reports = ctx(
                immaculate::verify(cfg, env, a.name.as_deref()),
                "immaculate verify failed",
            )?;
            out.json(&serde_json::to_value(&reports)?);
            render_sets(&reports, out);
            failed_sets(&reports)
        }
    }
}

/// One line per set read back, with its problems.
pub fn render_sets(reports: &[SetReport], out: &Output) {
    for r in reports {
        if r.ok() {
            out.say(format!(
                "{} ({}): ok, {} file(s), {} read back, every SHA-256 matches",
                r.set.name,
                r.set.short_id(),
                r.files,
                disk::human(r.bytes)
            ));
        } else {
            out.say(format!(
                "{} ({}): FAILED, {} problem(s)",
                r.set.name,
                r.set.short_id(),
                r.problem_count
            ));
            for p in &r.problems {
                out.say(format!("    {p}"));
            }
        }
    }
}

/// The verification-failure error when any set failed.
pub fn failed_sets(reports: &[SetReport]) -> anyhow::Result<ExitCode> {
    let bad: Vec<&str> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.set.name.as_str())
        .collect();
    if bad.is_empty() {
        Ok(ExitCode::Success)
    } else {
        Err(Error::Verification(format!("backup set(s) damaged: {}", bad.join(", "))).into())
    }
}

/// The line that says how a set's objects are locked in the bucket.
pub fn retention_line(r: &stack_backup_core::object_lock::Protected) -> String {
    format!(
        "Object Lock: {} object(s) ({} pack(s)) retained in {} mode until {}; the backup's credentials cannot delete or overwrite those versions",
        r.objects, r.packs, r.mode, r.until
    )
}

/// The line that says how a set's files are protected in a local repository.
pub fn read_only_line(r: &stack_backup_core::read_only::LocalProtected) -> String {
    format!(
        "{} file(s) ({} pack(s) and the snapshot file) {}",
        r.files,
        r.packs,
        if r.immutable {
            "read-only and immutable (`chattr +i`): only root can change or delete them"
        } else {
            "read-only (0444); `stack-backup immaculate protect --chattr` makes them immutable"
        }
    )
}
