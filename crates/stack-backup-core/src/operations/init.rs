//! `init`: discovering a stack and writing a starter config.

use std::path::{Path, PathBuf};

use crate::config::{env_name, validate_name, Env};
use crate::secret::strip_password;

/// What `init` found around it.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// A stack name derived from the directory.
    pub stack_name: String,
    /// A git working tree at the directory.
    pub git: Option<PathBuf>,
    /// `DATABASE_URL`, password stripped.
    pub database_url: Option<String>,
    /// `REDIS_URL`, password stripped.
    pub redis_url: Option<String>,
    /// A compose project (compose file in the directory, or
    /// `COMPOSE_PROJECT_NAME`).
    pub compose_project: Option<String>,
}

const COMPOSE_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// Looks at `dir` and the environment for things to back up.
#[must_use]
pub fn discover(dir: &Path, env: &Env) -> Discovery {
    let dir_name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "stack".into());
    let mut stack_name: String = dir_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if validate_name(&stack_name).is_err() {
        stack_name = "stack".into();
    }
    let git = crate::git::head(dir).ok().map(|_| PathBuf::from("."));
    let compose_project = env.get("COMPOSE_PROJECT_NAME").cloned().or_else(|| {
        COMPOSE_FILES.iter().any(|f| dir.join(f).exists()).then(|| {
            dir_name.to_lowercase().replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                "",
            )
        })
    });
    Discovery {
        stack_name,
        git,
        database_url: env.get("DATABASE_URL").map(|u| strip_password(u)),
        redis_url: env.get("REDIS_URL").map(|u| strip_password(u)),
        compose_project,
    }
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A starter `stack-backup.toml` for what was discovered. It never holds
/// a secret: database passwords stay in the environment or a password file.
#[must_use]
pub fn starter_config(d: &Discovery, repo: &Path, password_file: Option<&Path>) -> String {
    let mut t = String::new();
    t.push_str("# stack-backup configuration; see the README for every key.\n");
    t.push_str(&format!(
        "[stack]\nname = {}\nmin-free-space = \"1GiB\"\n\n",
        quote(&d.stack_name)
    ));
    let repo = repo.display().to_string();
    // `--repo s3:http://host:9000/bucket/prefix` makes a remote repository.
    let key = if crate::config::looks_like_url(&repo) {
        "url"
    } else {
        "path"
    };
    t.push_str(&format!("[repository]\n{key} = {}\n", quote(&repo)));
    match password_file {
        Some(p) => t.push_str(&format!(
            "password-file = {}\n",
            quote(&p.display().to_string())
        )),
        None => t.push_str(
            "# password-file = \"/etc/stack-backup/stack.key\"   # or STACK_BACKUP_PASSWORD\n",
        ),
    }
    t.push('\n');
    match &d.database_url {
        Some(u) => t.push_str(&format!(
            "[postgres.main]\nurl = {}   # password: DATABASE_URL / STACK_BACKUP_POSTGRES_MAIN_URL or password-file\n\n",
            quote(u)
        )),
        None => t.push_str("# [postgres.main]\n# url = \"postgres://app@127.0.0.1:5432/app\"\n\n"),
    }
    match &d.redis_url {
        Some(u) => t.push_str(&format!(
            "[redis.cache]\nurl = {}\nrole = \"cache\"\n\n",
            quote(u)
        )),
        None => t.push_str(
            "# [redis.cache]\n# url = \"redis://127.0.0.1:6379/0\"\n# role = \"cache\"\n\n",
        ),
    }
    match &d.compose_project {
        Some(p) => t.push_str(&format!("[docker]\ncompose-project = {}\n\n", quote(p))),
        None => {
            t.push_str("# [docker]\n# images = [\"app:latest\"]\n# volumes = [\"app_data\"]\n\n")
        }
    }
    match &d.git {
        Some(p) => t.push_str(&format!(
            "[git]\npath = {}\n\n",
            quote(&p.display().to_string())
        )),
        None => t.push_str("# [git]\n# path = \".\"\n\n"),
    }
    t.push_str("# [paths.media]\n# path = \"/srv/app/media\"\n");
    t
}

/// The default password file for a stack: `~/.config/stack-backup/<stack>.key`
/// (`/root/...` for root), or next to the config when there is no home.
#[must_use]
pub fn default_password_file(stack: &str, config_dir: &Path, env: &Env) -> PathBuf {
    match env.get("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Path::new(home)
            .join(".config/stack-backup")
            .join(format!("{stack}.key")),
        None => config_dir.join(format!(".{}.key", env_name(stack).to_lowercase())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starter_config_parses_and_has_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yaml"), "services: {}\n").unwrap();
        let env: Env = [
            (
                "DATABASE_URL",
                "postgres://app:topsecret@127.0.0.1:5432/app",
            ),
            ("REDIS_URL", "redis://:alsosecret@127.0.0.1:6379/0"),
        ]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
        let d = discover(dir.path(), &env);
        assert!(d.compose_project.is_some());
        let text = starter_config(&d, Path::new("/var/backups/x"), Some(Path::new("/k")));
        assert!(
            !text.contains("topsecret") && !text.contains("alsosecret"),
            "{text}"
        );
        let cfg = crate::Config::parse(&text, Path::new("starter.toml")).unwrap();
        assert_eq!(
            cfg.postgres["main"].url.expose(),
            "postgres://app@127.0.0.1:5432/app"
        );
        assert!(cfg.docker.is_some());
    }
}
