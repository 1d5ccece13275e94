//! `restore`: show what will be replaced, ask, then run the safety chain.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;

use stack_backup_core::config::{Config, Env};
use stack_backup_core::restore::{self, Request, StepState, Steps, STEPS};
use stack_backup_core::{Error, ExitCode};

use super::ctx;
use crate::cli::RestoreArgs;
use crate::output::Output;

/// Prints each step as it runs and keeps them for `--json`; on a terminal a
/// spinner with the elapsed time shows while a step runs.
struct Printer<'a> {
    out: &'a Output,
    steps: Mutex<Vec<serde_json::Value>>,
    spinner: Mutex<Option<indicatif::ProgressBar>>,
}

impl Steps for Printer<'_> {
    fn step(&self, n: usize, name: &str, state: StepState, detail: &str) {
        if state != StepState::Running {
            self.steps.lock().expect("steps").push(serde_json::json!({
                "step": n, "name": name, "state": state, "detail": detail,
            }));
        }
        if self.out.json || self.out.quiet {
            return;
        }
        let total = STEPS.len();
        // With a spinner the step's line is printed whole when it ends.
        let had_spinner = match self.spinner.lock().expect("spinner").take() {
            Some(bar) => {
                bar.finish_and_clear();
                true
            }
            None => false,
        };
        let head = if had_spinner {
            format!("[{n}/{total}] {name} … ")
        } else {
            String::new()
        };
        match state {
            StepState::Running if self.out.progress => {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                        .expect("template"),
                );
                bar.set_message(format!("[{n}/{total}] {name}"));
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                *self.spinner.lock().expect("spinner") = Some(bar);
            }
            StepState::Running => {
                eprint!("[{n}/{total}] {name} … ");
                let _ = std::io::stderr().flush();
            }
            StepState::Ok => eprintln!("{head}ok\n      {detail}"),
            StepState::Skipped => eprintln!("[{n}/{total}] {name} … skipped: {detail}"),
            StepState::Failed => eprintln!("{head}FAILED\n      {detail}"),
        }
    }
}

pub fn run(cfg: &Config, args: &RestoreArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    if args.resume || args.abort {
        return resolve(cfg, args, env, out);
    }
    let req = Request {
        name: args.name.clone(),
        only: args.only.clone(),
        flush_redis: args.flush_redis,
        dry_run: args.dry_run,
        allow_migration_mismatch: args.allow_migration_mismatch,
        restore_role_passwords: args.restore_role_passwords,
    };
    let yes = args.yes;
    run_with(cfg, env, &req, out, &|| {
        if yes {
            return Ok(());
        }
        ask("restore replaces live data and needs confirmation: run it on a terminal, or pass --yes", "Type `yes` to restore: ", "yes")
    })
}

/// `restore --resume` / `--abort`: resolves the interrupted restore from
/// its journal; a resume that had to roll back restores the set again
/// (after the same confirmation as a restore).
fn resolve(cfg: &Config, args: &RestoreArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let how = if args.resume {
        restore::Resolve::Resume
    } else {
        restore::Resolve::Abort
    };
    // A resume that will restore the set again asks first, before the
    // rollback (never left half-way for want of a confirmation).
    if how == restore::Resolve::Resume && !args.dry_run && !args.yes {
        let open = restore::journal::find(cfg)?;
        if open.is_some_and(|j| j.phase == restore::journal::Phase::Restoring) {
            ask("resuming this restore rolls it back and restores the set again, which replaces live data: run it on a terminal, or pass --yes", "Type `yes` to resume: ", "yes")?;
        }
    }
    let r = ctx(
        restore::resolve(cfg, env, how, args.dry_run),
        "resolving the interrupted restore",
    )?;
    let Some(j) = &r.journal else {
        out.json(&serde_json::json!({"journal": null, "actions": [], "restore_again": null}));
        out.say("no interrupted restore: nothing to resolve");
        return Ok(ExitCode::Success);
    };
    if !out.json {
        eprintln!(
            "{} the interrupted restore of set `{}` (journal {}, phase {:?}):",
            match (args.dry_run, how) {
                (true, _) => "Would resolve",
                (false, restore::Resolve::Abort) => "Rolled back",
                (false, restore::Resolve::Resume) => "Resolved",
            },
            j.set,
            j.id,
            j.phase
        );
        for a in &r.actions {
            eprintln!("  - {a}");
        }
    }
    let Some(again) = &r.restore_again else {
        out.json(&serde_json::json!({
            "journal": j, "actions": r.actions, "restore_again": null, "dry_run": args.dry_run,
        }));
        out.say(if args.dry_run {
            "dry run: nothing was changed"
        } else if how == restore::Resolve::Abort {
            "the stack is back to its state before the restore"
        } else {
            "the restore is finished"
        });
        return Ok(ExitCode::Success);
    };
    if args.dry_run {
        out.json(&serde_json::json!({
            "journal": j, "actions": r.actions, "restore_again": again, "dry_run": true,
        }));
        out.say(format!(
            "dry run: nothing was changed; then set `{}` would be restored again",
            again.set
        ));
        return Ok(ExitCode::Success);
    }
    if !out.json {
        eprintln!(
            "{} set `{}` ({}) again, from the start:",
            if args.dry_run {
                "Then it would restore"
            } else {
                "Restoring"
            },
            again.set,
            &again.snapshot[..again.snapshot.len().min(8)]
        );
    }
    // Confirmed above.
    run_with(cfg, env, &again.request(), out, &|| Ok(()))
}

/// Asks on the terminal for `expected`; refuses without a terminal
/// (`no_tty`) or on any other answer.
pub fn ask(no_tty: &str, prompt: &str, expected: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Refused(no_tty.into()).into());
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != expected {
        return Err(Error::Refused("not confirmed; nothing was changed".into()).into());
    }
    Ok(())
}

/// Plans, shows what will be replaced, calls `confirm` (unless a dry run),
/// then runs the chain.
pub fn run_with(
    cfg: &Config,
    env: &Env,
    req: &Request,
    out: &Output,
    confirm: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let args = req;
    let req = req.clone();
    restore::journal::refuse_if_open(cfg)?;
    let plan = ctx(restore::plan(cfg, env, &req), "planning the restore")?;
    let set = &plan.set;
    if !out.json {
        eprintln!(
            "Restore backup set `{}` ({}) of stack `{}`, taken {}{}",
            set.name,
            set.short_id(),
            cfg.stack.name.0,
            set.time,
            set.git_commit.as_deref().map_or(String::new(), |c| format!(
                " at git commit {}",
                &c[..c.len().min(12)]
            ))
        );
        eprintln!(
            "{}:",
            if args.dry_run {
                "It would replace"
            } else {
                "This will replace"
            }
        );
        for t in &plan.targets {
            eprintln!("  - {}: {}", t.component, t.action);
        }
        for (c, why) in &plan.skipped {
            eprintln!("  (not restored: {c}: {why})");
        }
        eprintln!("Chain: {}", STEPS.join(" → "));
    }
    if !args.dry_run {
        confirm()?;
    }
    let printer = Printer {
        out,
        steps: Mutex::new(Vec::new()),
        spinner: Mutex::new(None),
    };
    // The plan shown is the plan run: the set is pinned by its snapshot id.
    let targets = plan.targets.clone();
    // The time to recover (RTO) as the user lives it, from consent to a
    // verified stack: every step of the chain, the pre-restore set included.
    let clock = std::time::Instant::now();
    let result = restore::execute(cfg, env, plan, &printer);
    let rto = (clock.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let steps = printer.steps.into_inner().expect("steps");
    match result {
        Ok(o) => {
            out.json(&serde_json::json!({
                "set": o.set, "dry_run": o.dry_run, "pre_restore": o.pre_restore,
                "restored": o.restored, "targets": targets, "steps": steps,
                "time_to_recover_seconds": (!o.dry_run).then_some(rto),
            }));
            if o.dry_run {
                out.say("dry run: nothing was changed");
            } else {
                out.say(format!(
                    "restored `{}` ({} component(s)); the state before is kept as set `{}`",
                    o.set.name,
                    o.restored.len(),
                    o.pre_restore.unwrap_or_default()
                ));
                out.say(format!(
                    "Time to recover: {rto} s (from confirmation to a verified stack)"
                ));
            }
            Ok(ExitCode::Success)
        }
        Err(e) => Err(e.into()),
    }
}
