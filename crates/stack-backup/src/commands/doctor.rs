//! `doctor`

use stack_backup_core::components::Stack;
use stack_backup_core::config::{Config, Env};
use stack_backup_core::discover::{self, Unprotected};
use stack_backup_core::{doctor, ExitCode};

use crate::output::{table, Output};

pub fn run(cfg: &Config, env: &Env, strict: bool, out: &Output) -> anyhow::Result<ExitCode> {
    let checks = doctor::run(cfg, env);
    let ready = checks.iter().all(|c| c.ok);
    // A Docker failure is already a check of its own: here it only means
    // the mounts could not be listed.
    let (projects, unprotected, unknown) =
        match Stack::resolve(cfg).and_then(|s| discover::unprotected(&s)) {
            Ok((p, u)) => (p, u, None),
            Err(e) => (Vec::new(), Vec::new(), Some(e.detail())),
        };
    out.json(&serde_json::json!({
        "stack": cfg.stack.name.0,
        "ready": ready,
        "checks": checks,
        "compose_projects": projects,
        "unprotected": unprotected,
        "unprotected_unknown": unknown,
        "strict": strict,
    }));
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.component.clone(),
                if c.ok {
                    "ok".into()
                } else {
                    "NOT READY".into()
                },
                c.detail.clone(),
            ]
        })
        .collect();
    out.say(table(&["COMPONENT", "STATUS", "DETAIL"], &rows));
    report_unprotected(&projects, &unprotected, unknown.as_deref(), out);
    let strict_fail = strict && !unprotected.is_empty();
    if ready && !strict_fail {
        out.say(format!(
            "\nstack `{}` is ready to back up",
            cfg.stack.name.0
        ));
        return Ok(ExitCode::Success);
    }
    if !out.json {
        let mut bad: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.component.clone())
            .collect();
        if strict_fail {
            bad.extend(
                unprotected
                    .iter()
                    .map(|u| format!("unprotected {} {}", u.kind, u.what)),
            );
        }
        eprintln!("not ready: {}", bad.join(", "));
    }
    Ok(ExitCode::NotReady)
}

fn report_unprotected(projects: &[String], u: &[Unprotected], unknown: Option<&str>, out: &Output) {
    if let Some(e) = unknown {
        out.warn(format!(
            "the Compose project's mounts could not be listed: {e}"
        ));
        return;
    }
    if projects.is_empty() {
        return;
    }
    if u.is_empty() {
        out.say(format!(
            "\nCompose project {}: every volume and bind mount is backed up",
            projects.join(", ")
        ));
        return;
    }
    for x in u {
        let hint = if x.kind == "volume" {
            "add it to [docker] volumes"
        } else {
            "add its directory as a [paths.NAME]"
        };
        out.warn(format!(
            "unprotected: {} {} of service `{}` (container {}, mounted at {}) in Compose project {}: no component backs it up; {hint}, or see `stack-backup init --compose {} --dry-run`",
            x.kind, x.what, x.service, x.container, x.destination, x.project, x.project
        ));
    }
}
