//! Disaster recovery on a new host: a config written from the config a
//! set stores (`init --from-repository`), and the runbook that brings a
//! stack back on a bare machine (`recover-plan`, and in every set's
//! `MANIFEST.md`).
//!
//! A set's stored config is input (decision 0015): it is parsed and
//! validated like any config, passwords are never in it (URLs are stored
//! redacted and written back without their password), and what would run
//! a command or send data somewhere on the new host (`[[health]]`,
//! `[[notify]]`, `[schedule]`, `password-command`) is written commented
//! out, to be read and enabled by hand. See
//! `docs/decisions/0023-recovery-on-a-new-host.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{looks_like_url, Config, DbUrl, Env};
use crate::error::{Error, Result};
use crate::manifest;
use crate::repository;
use crate::secret::strip_password;
use crate::sets::{self, BackupSet};

/// A config naming only the repository at `repo` (a directory or a URL),
/// for reading it before there is a config: the password comes as usual
/// (`STACK_BACKUP_PASSWORD`, or `password_file`).
pub fn repository_only(repo: &str, password_file: Option<&Path>) -> Result<Config> {
    let key = if looks_like_url(repo) { "url" } else { "path" };
    let mut text = format!(
        "[stack]\nname = \"recover\"\n\n[repository]\n{key} = {}\n",
        toml::Value::String(repo.to_string())
    );
    if let Some(f) = password_file {
        let _ = writeln!(
            text,
            "password-file = {}",
            toml::Value::String(f.display().to_string())
        );
    }
    Config::parse(&text, Path::new("--from-repository")).map_err(|e| Error::Usage(e.to_string()))
}

/// The stacks a repository holds: name → its sets, oldest first.
pub fn stacks(cfg: &Config, env: &Env) -> Result<BTreeMap<String, Vec<BackupSet>>> {
    let repo = repository::open_from(cfg, env)?;
    let snaps = repo
        .get_all_snapshots()
        .map_err(|e| repository::op_error(cfg, "listing snapshots", &e))?;
    let mut out: BTreeMap<String, Vec<(BackupSet, jiff::Timestamp)>> = BTreeMap::new();
    for s in snaps {
        if let Some(b) = BackupSet::from_snapshot(&s) {
            out.entry(b.stack.clone())
                .or_default()
                .push((b, s.time.timestamp()));
        }
    }
    Ok(out
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|(_, t)| *t);
            (k, v.into_iter().map(|(b, _)| b).collect())
        })
        .collect())
}

/// A config for this host, from a set's stored config.
#[derive(Debug, Clone, Serialize)]
pub struct NewConfig {
    /// The stack.
    pub stack: String,
    /// The set it was taken from.
    pub set: BackupSet,
    /// The config to write (no secret in it).
    pub text: String,
    /// Values that name something on the old host, to check here.
    pub check: Vec<String>,
    /// Sections written commented out (they run commands or send data).
    pub disabled: Vec<String>,
}

/// Reads the stored config of `set` (a name, id or `latest`) of `stack`
/// (needed when the repository holds several) and makes this host's
/// config from it: the repository as given (`repo_cfg`), component URLs
/// and paths as stored unless the environment overrides them (the usual
/// `STACK_BACKUP_POSTGRES_<NAME>_URL`, …), never a password.
pub fn new_config(
    repo_cfg: &Config,
    env: &Env,
    stack: Option<&str>,
    set: &str,
) -> Result<NewConfig> {
    let all = stacks(repo_cfg, env)?;
    let stack = choose_stack(&all, stack)?;
    let repo = repository::open_indexed(repo_cfg, env)?;
    let (found, snap) = sets::find(&repo, &stack, set)?;
    let raw = sets::read_file(&repo, &snap, manifest::CONFIG_PATH)?;
    if raw.len() > 1 << 20 {
        return Err(Error::Verification(format!(
            "{} of set `{}` is {} bytes; a config is never that large",
            manifest::CONFIG_PATH,
            found.name,
            raw.len()
        )));
    }
    let text = String::from_utf8(raw).map_err(|_| {
        Error::Verification(format!(
            "{} of set `{}` is not UTF-8",
            manifest::CONFIG_PATH,
            found.name
        ))
    })?;
    let file = PathBuf::from(format!("set {}: {}", found.name, manifest::CONFIG_PATH));
    let mut cfg = Config::parse(&text, &file).map_err(|e| Error::Verification(e.to_string()))?;
    if cfg.stack.name.0 != stack {
        return Err(Error::Verification(format!(
            "set `{}` of stack `{stack}` stores the config of stack `{}`",
            found.name, cfg.stack.name.0
        )));
    }
    // The repository is the one given here; the stored options (region,
    // connections: never secrets) still apply to it.
    let options = std::mem::take(&mut cfg.repository.options);
    cfg.repository = repo_cfg.repository.clone();
    cfg.repository.options = options;
    // Stored URLs are redacted (`user:***@host`): without the placeholder
    // a password comes from the environment or a password-file.
    for pg in cfg.postgres.values_mut() {
        pg.url = unredacted(&pg.url)?;
        pg.admin_url = pg.admin_url.as_ref().map(unredacted).transpose()?;
    }
    for rd in cfg.redis.values_mut() {
        rd.url = unredacted(&rd.url)?;
    }
    cfg.apply_env(env)
        .map_err(|e| Error::Usage(e.to_string()))?;
    for pg in cfg.postgres.values_mut() {
        pg.url = unredacted(&pg.url)?;
        pg.admin_url = pg.admin_url.as_ref().map(unredacted).transpose()?;
    }
    for rd in cfg.redis.values_mut() {
        rd.url = unredacted(&rd.url)?;
    }
    let (disabled, commented) = comment_out(&mut cfg)?;
    let check = to_check(&cfg);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# stack-backup.toml for stack `{stack}`, written by `stack-backup init --from-repository`\n# from backup set `{}` ({}), taken {}.\n#\n# No secret is stored in a set: database and Redis passwords come from the\n# environment (STACK_BACKUP_POSTGRES_<NAME>_URL, STACK_BACKUP_REDIS_<NAME>_URL,\n# DATABASE_URL, REDIS_URL) or a password-file; the repository password from\n# STACK_BACKUP_PASSWORD or [repository] password-file.\n#\n# These name places (as the set stores them, or as this host's environment\n# gave them); check them on this host:",
        found.name,
        found.short_id(),
        found.time
    );
    for c in &check {
        let _ = writeln!(out, "#   {c}");
    }
    out.push('\n');
    out.push_str(&cfg.redacted_toml());
    out.push_str(&commented);
    // What is written parses, and holds no placeholder for a secret.
    Config::parse(&out, Path::new("the new config"))
        .map_err(|e| Error::component("init", format!("the config written would not load: {e}")))?;
    Ok(NewConfig {
        stack,
        set: found,
        text: out,
        check,
        disabled,
    })
}

/// The stack to take: the one asked for, or the only one there is.
fn choose_stack(all: &BTreeMap<String, Vec<BackupSet>>, stack: Option<&str>) -> Result<String> {
    Ok(match (stack, all.len()) {
        (Some(s), _) if all.contains_key(s) => s.to_string(),
        (Some(s), _) => {
            return Err(Error::Usage(format!(
                "the repository holds no stack `{s}`; it holds: {}",
                names(all)
            )))
        }
        (None, 0) => {
            return Err(Error::NotFound(
                "a backup set of any stack in this repository".into(),
            ))
        }
        (None, 1) => all.keys().next().cloned().unwrap_or_default(),
        (None, _) => {
            return Err(Error::Usage(format!(
                "the repository holds several stacks: {}; choose one with --stack NAME",
                names(all)
            )))
        }
    })
}

/// Takes out of `cfg` what runs a command, sends data or writes a file on
/// this host at a place the set names (`[[health]]`, `[[notify]]`,
/// `[schedule]`, `[drill]`, `[status] prometheus-file`, postgres
/// `bin-dir`), and returns their names and the commented-out text to
/// append, to be read and enabled by hand.
fn comment_out(cfg: &mut Config) -> Result<(Vec<String>, String)> {
    let mut disabled = Vec::new();
    let mut commented = String::new();
    let mut disable = |what: &str, body: String| {
        disabled.push(what.to_string());
        let _ = writeln!(
            commented,
            "\n# {what}: stored in the set; it runs commands or sends data from this host.\n# Read it, then uncomment what you want."
        );
        for line in body.lines() {
            let _ = writeln!(commented, "# {line}");
        }
    };
    if !cfg.health.is_empty() {
        #[derive(Serialize)]
        struct H<'a> {
            health: &'a [crate::config::HealthCheck],
        }
        disable(
            "[[health]]",
            toml::to_string_pretty(&H {
                health: &cfg.health,
            })
            .unwrap_or_default(),
        );
        cfg.health.clear();
    }
    if !cfg.notify.is_empty() {
        #[derive(Serialize)]
        struct N<'a> {
            notify: &'a [crate::monitoring::NotifyTarget],
        }
        disable(
            "[[notify]]",
            toml::to_string_pretty(&N {
                notify: &cfg.notify,
            })
            .unwrap_or_default(),
        );
        cfg.notify.clear();
    }
    if !cfg.schedule.is_empty() {
        #[derive(Serialize)]
        struct S<'a> {
            schedule: &'a crate::monitoring::ScheduleSection,
        }
        disable(
            "[schedule]",
            toml::to_string_pretty(&S {
                schedule: &cfg.schedule,
            })
            .unwrap_or_default(),
        );
        cfg.schedule.clear();
    }
    if cfg.drill.postgres_url.is_some()
        || cfg.drill.postgres_password_file.is_some()
        || !cfg.drill.check.is_empty()
    {
        #[derive(Serialize)]
        struct D<'a> {
            drill: &'a crate::config::DrillSection,
        }
        // `[[drill.check]]` runs commands; `postgres-url` names the server
        // a copy of every database goes to.
        if let Some(u) = cfg.drill.postgres_url.as_mut() {
            *u = unredacted(u)?;
        }
        disable(
            "[drill]",
            toml::to_string_pretty(&D { drill: &cfg.drill }).unwrap_or_default(),
        );
        cfg.drill = crate::config::DrillSection::default();
    }
    // A file every command rewrites, at a path the set chose.
    if let Some(f) = cfg.status.prometheus_file.take() {
        disable(
            "[status] prometheus-file",
            format!("[status]\nprometheus-file = {:?}", f.display().to_string()),
        );
    }
    // `doctor` (run right after) executes `<bin-dir>/pg_dump`: a directory
    // named by the set is not run before the user has read it.
    for (k, pg) in &mut cfg.postgres {
        if let Some(b) = pg.bin_dir.take() {
            disable(
                &format!("[postgres.{k}] bin-dir"),
                format!("[postgres.{k}]\nbin-dir = {:?}", b.display().to_string()),
            );
        }
    }
    Ok((disabled, commented))
}

fn names(all: &BTreeMap<String, Vec<BackupSet>>) -> String {
    all.iter()
        .map(|(k, v)| format!("{k} ({} set(s))", v.len()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A URL as stored (`user:***@host`) or given, without its password.
fn unredacted(u: &DbUrl) -> Result<DbUrl> {
    DbUrl::parse(&strip_password(u.expose())).map_err(Error::Usage)
}

/// Every value that names a place on a host.
fn to_check(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (k, pg) in &cfg.postgres {
        out.push(format!("postgres.{k} url = {}", pg.url.redacted()));
        if let Some(a) = &pg.admin_url {
            out.push(format!("postgres.{k} admin-url = {}", a.redacted()));
        }
        if let Some(c) = &pg.container {
            out.push(format!("postgres.{k} container = {c}"));
        }
        for (what, p) in [
            ("password-file", &pg.password_file),
            ("admin-password-file", &pg.admin_password_file),
            ("migrations-dir", &pg.migrations_dir),
        ] {
            if let Some(p) = p {
                out.push(format!("postgres.{k} {what} = {}", p.display()));
            }
        }
    }
    for (k, rd) in &cfg.redis {
        out.push(format!("redis.{k} url = {}", rd.url.redacted()));
        if let Some(c) = &rd.container {
            out.push(format!("redis.{k} container = {c}"));
        }
        if let Some(p) = &rd.password_file {
            out.push(format!("redis.{k} password-file = {}", p.display()));
        }
    }
    if let Some(d) = &cfg.docker {
        if let Some(p) = &d.compose_project {
            out.push(format!("docker compose-project = {p}"));
        }
        if !d.volumes.is_empty() {
            out.push(format!("docker volumes = {}", d.volumes.join(", ")));
        }
    }
    if let Some(g) = &cfg.git {
        out.push(format!("git path = {}", g.path.display()));
    }
    for (k, p) in &cfg.paths {
        out.push(format!("paths.{k} path = {}", p.path.display()));
    }
    if let Some(d) = &cfg.state.dir {
        out.push(format!("state dir = {}", d.display()));
    }
    out
}
