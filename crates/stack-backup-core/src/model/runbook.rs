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
    let mut pg_notes = Vec::new();
    let mut redis = Vec::new();
    let mut docker = false;
    let mut pg_roles = Vec::new();
    for c in m.components.values() {
        match c {
            Component::Postgres(p) => {
                pg_major.push(p.server_major);
                pg_notes.push(format!(
                    "{} (the set's server: {})",
                    p.server_major,
                    one_line(&p.server_version)
                ));
                pg_roles.push((p.user.clone(), p.database.clone()));
            }
            Component::Redis(r) => redis.push(one_line(&r.version)),
            Component::DockerImage(_) | Component::DockerVolume(_) => docker = true,
            _ => {}
        }
    }
    let mut steps = Vec::new();
    let mut packages = Vec::new();
    let mut notes = vec![
        "# stack-backup itself: its Debian package (README, Install), e.g. apt-get install ./stack-backup_*.deb"
            .to_string(),
    ];
    if !pg_major.is_empty() {
        pg_major.sort_unstable();
        pg_major.dedup();
        packages.extend(pg_major.iter().map(|v| format!("postgresql-{v}")));
        notes.push(format!(
            "# PostgreSQL {} (Debian names the major version; a newer major restores too)",
            pg_notes.join(", ")
        ));
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
    if !packages.is_empty() {
        install.push(format!("apt-get install -y {}", packages.join(" ")));
    }
    steps.push(RunbookStep {
        title: "Install the tools and services (the same major versions as the set's)".into(),
        commands: install,
    });
    if !pg_roles.is_empty() {
        let mut cmds = Vec::new();
        for (role, db) in &pg_roles {
            cmds.push(format!(
                "sudo -u postgres createuser --createdb --pwprompt {}   # the role the stack connects as (owner of `{}`); CREATEDB lets restore create the database",
                sh(role),
                one_line(db)
            ));
        }
        cmds.push(
            "# restore creates the database (CREATEDB above, or admin-url = a superuser's URL)"
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
                "stack-backup init --from-repository {} --stack {} --set {}",
                sh(repo),
                sh(&m.stack),
                sh(&m.name)
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
            format!("stack-backup restore {} --dry-run", sh(&m.name)),
            format!("stack-backup restore {}", sh(&m.name)),
        ],
    });
    steps
}

/// `v` as one shell word: as it is when it holds only characters no shell
/// treats specially, else single-quoted. A manifest is input (a role or set
/// name could hold `;`), and the runbook is pasted into a root shell.
fn sh(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/=@%+".contains(c));
    if plain {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

/// `v` for a comment: control characters (a newline would end the comment
/// and start a command) replaced.
fn one_line(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::{one_line, sh};

    #[test]
    fn values_from_a_manifest_are_one_shell_word() {
        assert_eq!(sh("shop_app"), "shop_app");
        assert_eq!(sh("s3:http://h:9000/b"), "s3:http://h:9000/b");
        assert_eq!(sh("x; curl e | sh"), "'x; curl e | sh'");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(sh(""), "''");
        assert_eq!(one_line("15.1\nrm -rf /"), "15.1 rm -rf /");
    }
}
