//! `doctor`

use stack_backup_core::config::{Config, Env};
use stack_backup_core::{doctor, ExitCode};

use crate::output::{table, Output};

pub fn run(cfg: &Config, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    let checks = doctor::run(cfg, env);
    let ready = checks.iter().all(|c| c.ok);
    out.json(&serde_json::json!({ "stack": cfg.stack.name.0, "ready": ready, "checks": checks }));
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
    if ready {
        out.say(format!(
            "\nstack `{}` is ready to back up",
            cfg.stack.name.0
        ));
        Ok(ExitCode::Success)
    } else {
        let bad: Vec<&str> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.component.as_str())
            .collect();
        if !out.json {
            eprintln!("not ready: {}", bad.join(", "));
        }
        Ok(ExitCode::NotReady)
    }
}
