//! The runbook that brings a stack back on a bare Debian machine, from
//! what a set's manifest records (versions, roles, components): printed by
//! `recover-plan` and written into every set's `MANIFEST.md`. Only the
//! manifest is read, so an export or a set seen from another host gives
//! the same steps.

use std::fmt::Write as _;

use serde::Serialize;

use crate::manifest::{Component, Manifest};

/// One step of the runbook.
#[derive(Debug, Clone, Serialize)]
pub struct RunbookStep {
    /// What it does.
    pub title: String,
    /// The commands, in order (shell).
    pub commands: Vec<String>,
}

/// The commands that bring the stack of `m` back on a bare Debian
/// machine, in order, naming the set's versions. `repo` is the repository
/// as the user reaches it from there (`REPOSITORY` when unknown).
#[must_use]
pub fn runbook(m: &Manifest, repo: &str) -> Vec<RunbookStep> {
    let mut pg_major = Vec::new();
    let mut redis = Vec::new();
    let mut docker = false;
    let mut pg_roles = Vec::new();
    for c in m.components.values() {
        match c {
            Component::Postgres(p) => {
                pg_major.push(format!(
                    "{} (the set's server: {})",
                    p.server_major, p.server_version
                ));
                pg_roles.push((p.user.clone(), p.database.clone()));
            }
            Component::Redis(r) => redis.push(r.version.clone()),
            Component::DockerImage(_) | Component::DockerVolume(_) => docker = true,
            _ => {}
        }
    }
    let mut steps = Vec::new();
    let mut packages = vec!["stack-backup".to_string()];
    let mut notes = Vec::new();
    if !pg_major.is_empty() {
        packages.push("postgresql postgresql-client".into());
        notes.push(format!("# PostgreSQL {}", pg_major.join(", ")));
    }
    if !redis.is_empty() {
        packages.push("redis-server".into());
        notes.push(format!("# Redis {}", redis.join(", ")));
    }
    if docker {
        packages.push("docker.io".into());
        notes.push("# Docker Engine (images and volumes)".into());
    }
    let mut install = notes;
    install.push(format!("apt-get install -y {}", packages.join(" ")));
    steps.push(RunbookStep {
        title: "Install the tools and services (the same major versions as the set's)".into(),
        commands: install,
    });
    if !pg_roles.is_empty() {
        let mut cmds = Vec::new();
        for (role, db) in &pg_roles {
            cmds.push(format!(
                "sudo -u postgres createuser --pwprompt {role}   # the role the stack connects as (owner of `{db}`)"
            ));
        }
        cmds.push(
            "# restore creates the database (needs CREATEDB, or admin-url = a superuser's URL)"
                .into(),
        );
        steps.push(RunbookStep {
            title: "Create the stack's database role".into(),
            commands: cmds,
        });
    }
    steps.push(RunbookStep {
        title: "Write the config from the repository (secrets from the environment)".into(),
        commands: vec![
            "export STACK_BACKUP_PASSWORD=…   # or --password-file FILE".into(),
            format!(
                "stack-backup init --from-repository {repo} --stack {} --set {}",
                m.stack, m.name
            ),
            "# edit stack-backup.toml where this host differs (it lists what to check)".into(),
        ],
    });
    steps.push(RunbookStep {
        title: "Check what is still missing".into(),
        commands: vec!["stack-backup doctor".into()],
    });
    steps.push(RunbookStep {
        title: "Restore (every component, through the safety chain; prints the time to recover)"
            .into(),
        commands: vec![
            format!("stack-backup restore {} --dry-run", m.name),
            format!("stack-backup restore {}", m.name),
        ],
    });
    steps
}

/// The runbook as text (Markdown-friendly: numbered steps, fenced commands).
#[must_use]
pub fn render_runbook(steps: &[RunbookStep]) -> String {
    let mut s = String::new();
    for (i, st) in steps.iter().enumerate() {
        let _ = writeln!(
            s,
            "{}. {}\n\n```sh\n{}\n```\n",
            i + 1,
            st.title,
            st.commands.join("\n")
        );
    }
    s
}
