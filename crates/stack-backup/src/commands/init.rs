//! `init`: create the repository, and a starter config when there is none.

use std::path::{Path, PathBuf};

use anyhow::Context;
use stack_backup_core::config::{validate_name, Config, Env};
use stack_backup_core::lock::RepoLock;
use stack_backup_core::repository::{self, Location, PasswordSource};
use stack_backup_core::{init, Error, ExitCode};

use super::{config_path, ctx, load_config_at};
use crate::cli::{Cli, InitArgs};
use crate::output::Output;

pub fn run(cli: &Cli, args: &InitArgs, env: &Env, out: &Output) -> anyhow::Result<ExitCode> {
    if let Some(repo) = &args.from_repository {
        return from_repository(cli, args, repo, env, out);
    }
    if args.password_file.is_some() && !args.generate_password {
        return Err(Error::Usage(
            "--password-file goes with --generate-password or --from-repository".into(),
        )
        .into());
    }
    let mut composed = false;
    if let Some(project) = &args.compose {
        match compose(cli, args, project, env, out)? {
            Some(code) => return Ok(code),
            None => composed = true,
        }
    } else if args.force {
        return Err(Error::Usage("--force goes with --compose or --from-repository".into()).into());
    }
    let path = config_path(cli);
    let created_config = composed || !path.exists();
    let cfg = if composed {
        load_config_at(&path, env)?
    } else if created_config {
        new_config(&path, args, env)?
    } else {
        if args.repo.is_some() || args.name.is_some() {
            out.warn(format!(
                "{} exists; --repo and --name only shape a new config and are ignored",
                path.display()
            ));
        }
        load_config_at(&path, env)?
    };
    let loc = Location::of(&cfg);
    let _lock = ctx(
        stack_backup_core::system::state::of(&cfg).and_then(|d| RepoLock::local_in(&d, &loc)),
        "locking the repository",
    )?;
    if ctx(repository::exists(&cfg), "looking for a repository")? {
        return Err(Error::RepositoryExists(loc.to_string()).into());
    }

    let mut generated = None;
    let password = if args.generate_password {
        let file = args
            .password_file
            .clone()
            .or_else(|| cfg.repository.password_file.clone())
            .unwrap_or_else(|| {
                init::default_password_file(
                    &cfg.stack.name.0,
                    path.parent().unwrap_or(Path::new(".")),
                    env,
                )
            });
        let pw = ctx(repository::generate_password(), "generating a password")?;
        ctx(
            repository::write_password_file(&file, &pw),
            "storing the password",
        )?;
        generated = Some(file);
        pw
    } else {
        ctx(
            repository::password(&cfg, env),
            "reading the repository password",
        )?
    };

    let repo = repository::init(&cfg, &password);
    if let (Err(_), Some(file)) = (&repo, &generated) {
        // Nothing was created with it: don't leave a password for no repository.
        let _ = std::fs::remove_file(file);
    }
    let repo = ctx(repo, "creating the repository")?;
    let repo_id = repo.config().id.to_hex().to_string();

    out.json(&serde_json::json!({
        "repository": loc.to_string(),
        "repository_id": repo_id,
        "format_version": repo.config().version,
        "config": path.display().to_string(),
        "config_created": created_config,
        "password_file": generated.as_ref().map(|p| p.display().to_string()),
        "password_generated": generated.is_some(),
    }));
    if created_config {
        out.say(format!("wrote starter config {}", path.display()));
    }
    out.say(format!(
        "created restic repository (format v{}) at {loc}, id {}",
        repo.config().version,
        &repo_id[..repo_id.len().min(10)]
    ));
    if let Some(file) = &generated {
        out.say(format!(
            "stored a new repository password in {} (mode 0600)",
            file.display()
        ));
        eprintln!(
            "IMPORTANT: this password is the only key to your backups. If it is lost, \
             every backup in {loc} is lost with it. Copy it somewhere safe, off this machine."
        );
        if cfg.repository.password_file.as_deref() != Some(file.as_path())
            && PasswordSource::select(&cfg, env).is_none()
        {
            out.warn(format!(
                "{} does not name this password file; add `password-file = \"{}\"` to [repository]",
                path.display(),
                file.display()
            ));
        }
    }
    out.say("next: `stack-backup doctor` checks that every component is reachable");
    Ok(ExitCode::Success)
}

/// `init --compose [PROJECT|FILE]`: the config from a Compose project
/// (`discover`), printed with `--dry-run`, else written 0600 (never over
/// an existing file without `--force`). `None`: written, and a password
/// is at hand, so `init` goes on to create the repository.
fn compose(
    cli: &Cli,
    args: &InitArgs,
    project: &str,
    env: &Env,
    out: &Output,
) -> anyhow::Result<Option<ExitCode>> {
    use stack_backup_core::discover;
    let path = config_path(cli);
    if path.exists() && !args.force && !args.dry_run {
        return Err(Error::Refused(format!(
            "{} exists; pass --force to replace it, or --dry-run to see the config (nothing was written)",
            path.display()
        ))
        .into());
    }
    if let Some(name) = &args.name {
        validate_name(name).map_err(|m| Error::Usage(format!("--name: {m}")))?;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let found = ctx(
        discover::discover(Some(project).filter(|p| !p.is_empty()), &dir),
        "discovering the Compose project",
    )?;
    let stack = args.name.clone().unwrap_or_else(|| found.name.clone());
    let password_file = args.generate_password.then(|| {
        args.password_file
            .clone()
            .unwrap_or_else(|| init::default_password_file(&stack, &dir, env))
    });
    let written = ctx(
        discover::render(
            &found,
            &discover::Options {
                stack: args.name.clone(),
                repo: args.repo.clone(),
                password_file,
            },
        ),
        "writing the config",
    )?;
    let has_password = args.generate_password
        || ["STACK_BACKUP_PASSWORD", "STACK_BACKUP_PASSWORD_FILE"]
            .iter()
            .any(|v| env.get(*v).is_some_and(|v| !v.is_empty()));
    let json = |written_to: Option<&Path>| {
        serde_json::json!({
            "project": found,
            "config": written_to.map(|p| p.display().to_string()),
            "text": written.text,
            "stack": written.stack,
            "disabled": written.disabled,
        })
    };
    if args.dry_run {
        out.json(&json(None));
        if !out.json {
            print!("{}", written.text);
        }
        return Ok(Some(ExitCode::Success));
    }
    write_config(&path, &written.text, args.force)?;
    let cfg = load_config_at(&path, env)?;
    out.say(format!(
        "wrote {} (mode 0600) from Compose project `{}`: {} service(s), {} volume(s), {} bind mount(s), {} SQLite file(s)",
        path.display(),
        found.name,
        found.services.len(),
        found.volumes.len(),
        found.binds.len(),
        found.sqlite.len()
    ));
    if !written.disabled.is_empty() {
        out.say(format!(
            "written commented out (this build has no such component yet): {}",
            written.disabled.join(", ")
        ));
    }
    out.say(
        "database passwords are not copied: set the variables the config names before `backup`",
    );
    // A config written again (`--force`) for a stack whose repository
    // exists already: nothing more to create.
    let exists = ctx(repository::exists(&cfg), "looking for a repository")?;
    if has_password && !exists {
        // The repository next, as a plain `init` with this config; its
        // JSON is the one printed.
        return Ok(None);
    }
    if exists {
        out.say(format!(
            "the repository at {} exists already",
            Location::of(&cfg)
        ));
    }
    out.json(&json(Some(&path)));
    out.say(if exists {
        "next: `stack-backup doctor --strict`"
    } else {
        "next: `stack-backup init --generate-password` (or with STACK_BACKUP_PASSWORD set) creates the repository; then `stack-backup doctor --strict`"
    });
    Ok(Some(ExitCode::Success))
}

/// Writes a starter config at `path` (never over an existing file) and
/// loads it back.
fn new_config(path: &Path, args: &InitArgs, env: &Env) -> anyhow::Result<Config> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut found = init::discover(&dir, env);
    if let Some(name) = &args.name {
        validate_name(name).map_err(|m| Error::Refused(format!("--name: {m}")))?;
        found.stack_name = name.clone();
    }
    let repo = args
        .repo
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/backups").join(&found.stack_name));
    let password_file = if args.generate_password {
        Some(
            args.password_file
                .clone()
                .unwrap_or_else(|| init::default_password_file(&found.stack_name, &dir, env)),
        )
    } else {
        None
    };
    if password_file.is_none() && !env.contains_key("STACK_BACKUP_PASSWORD") {
        return Err(Error::NoPassword).context(
            "a new repository needs a password: pass --generate-password, or set STACK_BACKUP_PASSWORD",
        );
    }
    let text = init::starter_config(&found, &repo, password_file.as_deref());
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .map_err(|e| Error::io("writing", path, e))?;
    load_config_at(path, env)
}

/// `init --from-repository REPO`: a new host's config from the config
/// stored in a set (`recover::new_config`), written 0600 and never over
/// an existing file without `--force`; then `doctor` says what this
/// machine still lacks. The repository must exist; nothing is created.
fn from_repository(
    cli: &Cli,
    args: &InitArgs,
    repo: &str,
    env: &Env,
    out: &Output,
) -> anyhow::Result<ExitCode> {
    let path = config_path(cli);
    if path.exists() && !args.force {
        return Err(Error::Refused(format!(
            "{} exists; pass --force to replace it (nothing was written)",
            path.display()
        ))
        .into());
    }
    let password_file = args.password_file.clone().or_else(|| {
        env.get("STACK_BACKUP_PASSWORD_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if password_file.is_none()
        && env
            .get("STACK_BACKUP_PASSWORD")
            .is_none_or(String::is_empty)
    {
        return Err(Error::NoPassword).context(
            "the repository's password: set STACK_BACKUP_PASSWORD, or pass --password-file FILE",
        );
    }
    let repo_cfg = ctx(
        stack_backup_core::recover::repository_only(repo, password_file.as_deref()),
        "reading --from-repository",
    )?;
    let made = ctx(
        stack_backup_core::recover::new_config(
            &repo_cfg,
            env,
            args.stack.as_deref(),
            args.set.as_deref().unwrap_or("latest"),
        ),
        "making the config from the repository",
    )?;
    write_config(&path, &made.text, args.force)?;
    let cfg = load_config_at(&path, env)?;
    let checks = stack_backup_core::doctor::run(&cfg, env);
    out.json(&serde_json::json!({
        "config": path.display().to_string(),
        "stack": made.stack,
        "set": made.set,
        "check": made.check,
        "disabled": made.disabled,
        "doctor": checks,
        "ready": checks.iter().all(|c| c.ok),
    }));
    if !out.json {
        out.say(format!(
            "wrote {} (mode 0600) for stack `{}` from set `{}` ({})",
            path.display(),
            made.stack,
            made.set.name,
            made.set.short_id()
        ));
        if !made.check.is_empty() {
            out.say("check these values on this host (edit the file, or override them with STACK_BACKUP_POSTGRES_<NAME>_URL, STACK_BACKUP_REDIS_<NAME>_URL, …):");
            for c in &made.check {
                out.say(format!("  {c}"));
            }
        }
        if !made.disabled.is_empty() {
            out.say(format!(
                "written commented out, to review: {}",
                made.disabled.join(", ")
            ));
        }
        out.say("");
        super::doctor::run(&cfg, env, false, out)?;
        out.say(format!(
            "next: `stack-backup restore {} --dry-run`, then without --dry-run",
            made.set.name
        ));
    }
    Ok(ExitCode::Success)
}

/// Writes a new config, readable by its owner only (it may name secret
/// files and hosts); an existing one is replaced only with `force`.
fn write_config(path: &Path, text: &str, force: bool) -> stack_backup_core::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if force && path.exists() {
        std::fs::remove_file(path).map_err(|e| Error::io("replacing", path, e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
        .map_err(|e| Error::io("writing", path, e))
}
